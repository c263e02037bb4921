"""Differential privacy: the assumptions checked before TensorFlow loads, and the accountant of epsilon per round."""

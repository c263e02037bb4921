"""fedlab: a Hydra experiment runner for federated image classification on TensorFlow Federated."""

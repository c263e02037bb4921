"""Configuration before TensorFlow: the typed schema, the checks, the efficiency keys, launchers, components."""

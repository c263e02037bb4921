"""Every use of TensorFlow Federated's private modules, behind one version gate."""

"""Every use of TensorFlow Federated's private modules and attributes, behind one version gate.

The only package of fedlab that imports `tensorflow_federated.python...` or touches a private attribute of a TFF
object (tests/test_tff_internals.py checks that). Each module asks `version_gate.supported()` first; on any other
TFF than `version_gate.SUPPORTED_TFF` each falls back to TFF's public API:

    resident_state      the training state kept in TFF's worker between calls  -> not imported; plain calls
    serialization       in-place serialization of nested values                -> TFF's own serializers
    keras_forward_pass  the client loops' forward pass with plain-op metrics   -> the model's own forward_pass
    worker_launch       TFF's worker in a session of its own, with intra_op_threads, and stopped through TFF's
                        manager                                                -> TFF's Popen; stopped by pid
    remote_context      runtime=remote                                         -> refused (FedlabError)

Importing this package imports neither TensorFlow nor TFF (the config checks run before they load).
"""

"""The parts every algorithm is composed from: the local-training loop, client work, composition, the packed round;
and `algorithm_state`, the one way they build a learning process's state."""

import tensorflow_federated as tff

_STATE_PARTS = ('global_model_weights', 'distributor', 'client_work', 'aggregator', 'finalizer')


def algorithm_state(state=None, **parts) -> tff.learning.templates.LearningAlgorithmState:
    """A `tff.learning.templates.LearningAlgorithmState` built by keyword: the `parts` given (by their names,
    `global_model_weights=`, `distributor=`, `client_work=`, `aggregator=`, `finalizer=`), the others `state`'s."""
    if state is not None:
        parts = {name: parts[name] if name in parts else getattr(state, name) for name in _STATE_PARTS}
    return tff.learning.templates.LearningAlgorithmState(**parts)

"""Federated evaluation with `tff.learning.algorithms.build_fed_eval`."""

import tensorflow_federated as tff

from fedlab.models import ACCURACY, ModelFn

# TFF/Keras metric names -> the short names fedlab logs.
_SHORT_NAMES = {ACCURACY: 'accuracy', 'num_examples': 'examples', 'num_batches': 'batches'}


_COUNTS = ('examples', 'batches')


def rename_metrics(metrics) -> dict[str, float]:
    """TFF's metrics with fedlab's short names; counts as ints."""
    renamed = {_SHORT_NAMES.get(name, name): float(value) for name, value in metrics.items()}
    return {name: int(value) if name in _COUNTS else value for name, value in renamed.items()}


class FederatedEvaluator:
    """Evaluates model weights on a fixed set of client datasets, one federated computation per call."""

    def __init__(self, model_fn: ModelFn, datasets: list):
        self._process = tff.learning.algorithms.build_fed_eval(model_fn)
        self._state = self._process.initialize()
        self._datasets = datasets

    def __call__(self, model_weights) -> dict[str, float]:
        state = self._process.set_model_weights(self._state, model_weights)
        output = self._process.next(state, self._datasets)
        return rename_metrics(output.metrics['client_work']['eval']['current_round_metrics'])


class ShardEvaluator:
    """`FederatedEvaluator` for clients whose data are shards (`client_data.ClientShards` of the evaluation
    pipeline): the same metrics, without a tf.data.Dataset per client crossing into TFF's worker (measured
    on the default run: ~10x faster, and it stopped TFF's worker from growing ~0.26 MB per evaluation)."""

    def __init__(self, model_fn: ModelFn, shard_paths: list[str], *, batch_size: int):
        from fedlab import tensor_client_work

        self._evaluate = tensor_client_work.build_shard_evaluation(model_fn, batch_size=batch_size)
        self._shard_paths = shard_paths

    def __call__(self, model_weights) -> dict[str, float]:
        return rename_metrics(self._evaluate(model_weights, self._shard_paths))

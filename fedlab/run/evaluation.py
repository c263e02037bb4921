"""Federated evaluation: TFF's `build_fed_eval`, its equivalent over shard files, and `ClientsEvaluator`, which
evaluates a population every few rounds on a fixed sample of its clients and on all of them at the end."""

import collections
import math

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from fedlab import seeds
from fedlab.algorithms.templates import local_training
from fedlab.models import ACCURACY, ModelFn

# TFF/Keras metric names -> the short names fedlab logs.
_SHORT_NAMES = {ACCURACY: 'accuracy', 'num_examples': 'examples', 'num_batches': 'batches'}


_COUNTS = ('examples', 'batches')


def rename_metrics(metrics) -> dict[str, float]:
    """TFF's metrics with fedlab's short names; counts as ints."""
    renamed = {_SHORT_NAMES.get(name, name): float(value) for name, value in metrics.items()}
    return {name: int(value) if name in _COUNTS else value for name, value in renamed.items()}


class FederatedEvaluator:
    """Evaluates model weights on client datasets, one federated computation per call: the `datasets` given
    here, or those passed to `evaluate`."""

    def __init__(self, model_fn: ModelFn, datasets: list | None = None):
        self._process = tff.learning.algorithms.build_fed_eval(model_fn)
        self._state = self._process.initialize()
        self._datasets = datasets

    def __call__(self, model_weights) -> dict[str, float]:
        return self.evaluate(model_weights, self._datasets)

    def evaluate(self, model_weights, datasets: list) -> dict[str, float]:
        state = self._process.set_model_weights(self._state, model_weights)
        output = self._process.next(state, datasets)
        return rename_metrics(output.metrics['client_work']['eval']['current_round_metrics'])


class ShardEvaluator:
    """`FederatedEvaluator` for clients whose data are shards (`client_data.ClientShards` of the evaluation
    pipeline): the same metrics, without a tf.data.Dataset per client crossing into TFF's worker (measured
    on the default run: ~10x faster, and it stopped TFF's worker from growing ~0.26 MB per evaluation).

    Clients can be evaluated in several calls (`sums` per group of shards, added, then `finalize`d): the
    metrics of all of them at once, without all their shards on disk at once."""

    def __init__(self, model_fn: ModelFn, shard_paths: list[str] | None = None, *, batch_size: int):
        self._sums, self._finalize = build_shard_metric_sums(model_fn, batch_size=batch_size)
        self._shard_paths = shard_paths

    def __call__(self, model_weights) -> dict[str, float]:
        return self.finalize(self.sums(model_weights, self._shard_paths))

    def sums(self, model_weights, shard_paths: list[str]):
        """The clients' unfinalized metrics (e.g. a loss total and count), summed."""
        return self._sums(model_weights, shard_paths)

    def finalize(self, sums) -> dict[str, float]:
        return rename_metrics(self._finalize(sums))


def add_sums(a, b):
    return tf.nest.map_structure(lambda x, y: np.asarray(x) + np.asarray(y), a, b)


def build_shard_metric_sums(model_fn: ModelFn, *, batch_size: int) -> tuple[tff.Computation, tff.Computation]:
    """`(model weights at SERVER, shard paths at CLIENTS) -> the clients' unfinalized metrics summed at SERVER`,
    and the computation that finalizes such sums: together, what `tff.learning.algorithms.build_fed_eval`
    reports (`tff.learning.metrics.sum_then_finalize` split in two)."""
    from fedlab.fast_paths import shards

    with tf.Graph().as_default():
        model = model_fn()
        input_spec = model.input_spec
        weights_type = tff.learning.models.weights_type_from_model(model)
        finalizers = model.metric_finalizers()

    @tff.tensorflow.computation(weights_type, np.str_)
    def client_evaluation(weights, shard_path):
        model = model_fn()

        def evaluate_batch(batch, carry, forward):
            del forward  # the model's own forward pass, as build_fed_eval's: it updates the model's metrics itself
            model.forward_pass(batch, training=False)
            return carry

        @tf.function(autograph=False)
        def evaluate():
            local_training.load_weights(model, weights)
            local_training.run_batches(shards.read_shard(shard_path, input_spec), batch_size, evaluate_batch)
            return model.report_local_unfinalized_metrics()

        return evaluate()

    @tff.federated_computation(tff.FederatedType(weights_type, tff.SERVER), tff.FederatedType(np.str_, tff.CLIENTS))
    def metric_sums(weights, shard_paths):
        return tff.federated_sum(tff.federated_map(client_evaluation, (tff.federated_broadcast(weights), shard_paths)))

    @tff.tensorflow.computation(metric_sums.type_signature.result.member)
    def finalize(sums):
        return collections.OrderedDict((name, finalizer(sums[name])) for name, finalizer in finalizers.items())

    return metric_sums, finalize


class ClientsEvaluator:
    """Evaluates model weights on the clients of a population that have examples.

    With `sample_size` N, each evaluation before `final_round` uses the same N clients, drawn once from
    `seed` (an estimate of the population's metrics, cheaper by the population / N); evaluations at
    `final_round` (or with `round_num` None) use every client. Inputs are built at the first evaluation that
    needs them, not before. With shards (`store` given), clients are evaluated in groups whose shards fit
    the store's disk budget, their metric sums added, and the group's shards may then be evicted.
    `last_clients` is the number of clients behind the last evaluation.
    """

    def __init__(
        self,
        model_fn: ModelFn,
        client_data: tff.simulation.datasets.ClientData,
        *,
        batch_size: int,
        store=None,
        sample_size: int | None = None,
        seed: int = 0,
        final_round: int | None = None,
        name: str = 'test',
        max_clients_per_call: int = 1000,
    ):
        from fedlab.run import round_inputs as inputs

        self._model_fn = model_fn
        self._client_data = client_data
        self._batch_size = batch_size
        self._sample_size = sample_size
        self._seed = seed
        self._final_round = final_round
        self._max_clients_per_call = max_clients_per_call
        self._pipeline = lambda dataset: inputs.eval_pipeline(dataset, batch_size)
        self._store = store
        self._shards = inputs.ClientShards(client_data, self._pipeline, store=store, name=name) if store else None
        self._evaluator = None  # built at the first call
        self._client_ids = None
        self._sample = None
        self.last_clients, self.last_round = 0, None

    def annotators(self) -> tuple:
        """What the run records of this evaluator each round: `EvalCoverage` when it samples, else nothing."""
        return (EvalCoverage(self),) if self._sample_size else ()

    @property
    def sample_size(self) -> int | None:
        return self._sample_size

    @property
    def sample_seed(self) -> int | None:
        return seeds.derive(self._seed, 'eval_clients') if self._sample_size else None

    def __call__(self, model_weights, round_num: int | None = None) -> dict[str, float]:
        everyone = self._sample_size is None or round_num is None or round_num >= (self._final_round or 0)
        client_ids = self.client_ids() if everyone else self.sample()
        self.last_clients, self.last_round = len(client_ids), round_num
        if self._shards is None:
            from fedlab.run import round_inputs as inputs

            if self._evaluator is None:
                self._evaluator = FederatedEvaluator(self._model_fn)
            datasets = inputs.ClientDatasets(self._client_data, self._pipeline, max_clients=0)
            return self._evaluator.evaluate(model_weights, datasets(client_ids))
        if self._evaluator is None:
            self._evaluator = ShardEvaluator(self._model_fn, batch_size=self._batch_size)
        total = None
        try:
            for group in self._groups(client_ids):
                sums = self._evaluator.sums(model_weights, self._shards(group))
                total = sums if total is None else add_sums(total, sums)
        finally:
            self._shards.release()
        return self._evaluator.finalize(total)

    def client_ids(self) -> list[str]:
        """The population's clients that have examples (an evaluation of none has no meaning)."""
        if self._client_ids is None:
            from fedlab.data.federated_data import known_counts

            counts = known_counts(self._client_data)
            if counts is not None:
                self._client_ids = [c for c in self._client_data.client_ids if counts[c] > 0]
            else:
                self._client_ids = [
                    c for c in self._client_data.client_ids
                    if self._client_data.create_tf_dataset_for_client(c).cardinality() != 0
                ]
        return self._client_ids

    def sample(self) -> list[str]:
        """The fixed sample of `sample_size` clients (all of them when there are not more), in population order."""
        if self._sample is None:
            client_ids = self.client_ids()
            if self._sample_size >= len(client_ids):
                self._sample = client_ids
            else:
                rng = np.random.default_rng(seeds.derive(self._seed, 'eval_clients'))
                chosen = np.sort(rng.choice(len(client_ids), size=self._sample_size, replace=False))
                self._sample = [client_ids[i] for i in chosen]
        return self._sample

    def _groups(self, client_ids: list[str]):
        """Consecutive groups of clients whose shards take at most a quarter of the store's budget (by their
        example counts, when known; training keeps two rounds' clients pinned) and at most
        `max_clients_per_call` clients."""
        from fedlab.data.federated_data import PIXELS, known_counts

        counts = known_counts(self._client_data) or {}
        example_bytes = 4 * (math.prod(self._client_data.element_type_structure[PIXELS].shape) + 2)
        limit = self._store.budget_bytes / 4
        group, size = [], 0
        for client_id in client_ids:
            client_bytes = counts.get(client_id, 0) * example_bytes + 3 * 4096
            if group and (len(group) >= self._max_clients_per_call or size + client_bytes > limit):
                yield group
                group, size = [], 0
            group.append(client_id)
            size += client_bytes
        if group:
            yield group


class EvalCoverage:
    """metrics.csv's `eval_clients` column (a `recorder.RoundAnnotator`, in runs with `eval_clients` set): how
    many test clients the round's evaluation covered, fewer than the population when it is an estimate on the
    sampled clients, empty in rounds without one; TensorBoard's `evaluation` run plots it. results.json's
    `evaluation` says how evaluation was done."""

    tensorboard_run = 'evaluation'
    columns = ('eval_clients',)

    def __init__(self, evaluator: ClientsEvaluator):
        self._evaluator = evaluator

    def round_values(self, round_num: int, client_ids: list[str]) -> dict[str, int | str]:
        del client_ids
        evaluated = self._evaluator.last_round == round_num
        return {'eval_clients': self._evaluator.last_clients if evaluated else ''}

    def restore(self, row: dict[str, str] | None) -> None:
        del row  # nothing accumulates

    def summary(self) -> dict:
        return {
            'sampled_test_clients': self._evaluator.sample_size,
            'sample_seed': self._evaluator.sample_seed,
            'note': 'evaluations before the last round use the sampled test clients (an estimate); the last round '
                    'evaluates every test client' if self._evaluator.sample_size else 'every test client, every time',
        }

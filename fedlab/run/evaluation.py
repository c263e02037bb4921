"""Federated evaluation, client by client: `ClientsEvaluator` evaluates a population every few rounds (on a fixed
sample of its clients, and on all of them at the end) with fedlab.run.client_metrics' computations, and returns
each client's metrics, the population's example-weighted figure (what TFF's `build_fed_eval` reports) and their
distribution over clients; `FederatedEvaluator` is TFF's own `build_fed_eval`, the reference."""

import dataclasses
import math

import numpy as np
import tensorflow_federated as tff

from fedlab import seeds
from fedlab.models import ACCURACY, ModelFn
from fedlab.run import client_distribution
from fedlab.run.client_metrics import ClientMetrics, add_sums, sum_in_order

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


@dataclasses.dataclass(frozen=True)
class ClientEvaluation:
    """One client's evaluation: its own metrics (what `build_fed_eval` reports for it alone) and their unfinalized
    sums, with what the run knew of the client at that round."""

    client_id: str
    metrics: dict[str, float]  # loss, accuracy, examples, batches
    sums: object  # the model's unfinalized metrics (e.g. a loss total and count), as numpy values
    trained_before: bool = False  # sampled for training in a round up to and including the evaluated one
    held_out: bool = False  # one of the `holdout_clients`, which never train
    accuracy_gain: float | None = None  # personalized: its accuracy minus the global model's on the same client


@dataclasses.dataclass(frozen=True)
class PopulationEvaluation:
    """A population's evaluation: the example-weighted metrics (today's figure, TFF's `sum_then_finalize` of every
    client's sums), the distribution over its clients (fedlab.run.client_distribution), and each client's row.
    `part_of`: the population this one is a part of (its clients' rows are that population's), None for a whole."""

    metrics: dict[str, float]
    clients: list[ClientEvaluation]
    part_of: str | None = None


class ShardEvaluator:
    """`FederatedEvaluator` for clients whose data are shards (`client_data.ClientShards` of the evaluation
    pipeline): the same metrics, without a tf.data.Dataset per client crossing into TFF's worker (measured
    on the default run: ~10x faster, and it stopped TFF's worker from growing ~0.26 MB per evaluation)."""

    def __init__(self, model_fn: ModelFn, shard_paths: list[str] | None = None, *, batch_size: int):
        self._computations = ClientMetrics(model_fn, batch_size=batch_size, inputs='shards')
        self._shard_paths = shard_paths

    def __call__(self, model_weights) -> dict[str, float]:
        total, _ = self._computations.evaluate(model_weights, self._shard_paths)
        return rename_metrics(self._computations.finalize(total))


class Participation:
    """Which clients take part in training: `held_out`, the `holdout_clients` that never train, and
    `trained_through(round)`, the clients sampled in rounds 1..round (replayed from the sampler, which depends only
    on the seed and the round, so a resumed run knows them too)."""

    def __init__(self, sampler=None, held_out: frozenset[str] = frozenset()):
        self._sampler = sampler
        self.held_out = frozenset(held_out)
        self._trained: set[str] = set()
        self._through = 0

    def trained_through(self, round_num: int | None) -> frozenset[str]:
        if self._sampler is None or round_num is None:
            return frozenset(self._trained)
        if round_num < self._through:
            self._trained, self._through = set(), 0
        for r in range(self._through + 1, round_num + 1):
            self._trained.update(self._sampler(r))
        self._through = max(self._through, round_num)
        return frozenset(self._trained)


class ClientsEvaluator:
    """Evaluates model weights on the clients of a population that have examples, client by client.

    With `sample_size` N, each evaluation before `final_round` uses the same N clients, drawn once from
    `seed` (an estimate of the population's metrics, cheaper by the population / N); evaluations at
    `final_round` (or with `round_num` None) use every client. Inputs are built at the first evaluation that
    needs them, not before. With shards (`store` given), clients are evaluated in groups whose shards fit
    the store's disk budget, their metric sums added, and the group's shards may then be evicted.

    A call returns `{population: PopulationEvaluation}`: `population` itself (its example-weighted metrics as
    `build_fed_eval` reports them, bit for bit, their distribution over clients, and every client's own), and each
    of `parts` (name -> the client ids in it, e.g. the clients that train and those held out) evaluated apart.
    `participation` (a `Participation`) says which clients had trained before the round and which are held out.
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
        population: str = 'eval',
        parts: dict[str, frozenset[str]] | None = None,
        participation: 'Participation | None' = None,
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
        self._population = population
        self._parts = dict(parts or {})
        self._participation = participation or Participation()
        self._pipeline = lambda dataset: inputs.eval_pipeline(dataset, batch_size)
        self._store = store
        self._shards = inputs.ClientShards(client_data, self._pipeline, store=store, name=name) if store else None
        self._computations = None  # built at the first call
        self._client_ids = None
        self._sample = None
        self.last_clients, self.last_round = 0, None

    def annotators(self) -> tuple:
        """What the run records of this evaluator each round: `EvalCoverage` when it samples, else nothing."""
        return (EvalCoverage(self),) if self._sample_size else ()

    @property
    def populations(self) -> list[str]:
        """The populations a call returns."""
        return [self._population, *self._parts]

    @property
    def sample_size(self) -> int | None:
        return self._sample_size

    @property
    def sample_seed(self) -> int | None:
        return seeds.derive(self._seed, 'eval_clients') if self._sample_size else None

    def __call__(self, model_weights, round_num: int | None = None) -> dict[str, PopulationEvaluation]:
        everyone = self._sample_size is None or round_num is None or round_num >= (self._final_round or 0)
        client_ids = self.client_ids() if everyone else self.sample()
        self.last_clients, self.last_round = len(client_ids), round_num
        total, outputs = self._evaluate(model_weights, client_ids)
        trained = self._participation.trained_through(round_num)
        clients = [
            ClientEvaluation(
                client_id, rename_metrics(output['metrics']), output['sums'],
                trained_before=client_id in trained, held_out=client_id in self._participation.held_out,
            )
            for client_id, output in zip(client_ids, outputs)
        ]
        found = {self._population: self._population_evaluation(total, clients)}
        for part, members in self._parts.items():
            in_part = [c for c in clients if c.client_id in members]
            found[part] = self._population_evaluation(sum_in_order([c.sums for c in in_part]), in_part,
                                                      part_of=self._population)
        return found

    def _population_evaluation(self, total, clients: list[ClientEvaluation], part_of: str | None = None):
        metrics = rename_metrics(self._computations.finalize(total)) if clients else {}
        metrics.update(client_distribution.distribution([c.metrics for c in clients]))
        return PopulationEvaluation(metrics, clients, part_of)

    def _evaluate(self, model_weights, client_ids: list[str]) -> tuple[object, list[dict]]:
        """(the clients' unfinalized metrics summed, each client's outputs)."""
        if self._shards is None:
            from fedlab.run import round_inputs as inputs

            if self._computations is None:
                self._computations = ClientMetrics(self._model_fn, batch_size=self._batch_size, inputs='dataset')
            datasets = inputs.ClientDatasets(self._client_data, self._pipeline, max_clients=0)
            return self._computations.evaluate(model_weights, datasets(client_ids))
        if self._computations is None:
            self._computations = ClientMetrics(self._model_fn, batch_size=self._batch_size, inputs='shards')
        total, outputs = None, []
        try:
            for group in groups_within_budget(self._client_data, client_ids, self._store,
                                              max_clients=self._max_clients_per_call):
                sums, group_outputs = self._computations.evaluate(model_weights, self._shards(group))
                total = sums if total is None else add_sums(total, sums)
                outputs.extend(group_outputs)
        finally:
            self._shards.release()
        return total, outputs

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


def groups_within_budget(client_data, client_ids: list[str], store, *, share: int = 4, max_clients: int = 1000):
    """Consecutive groups of `client_ids` whose shards of `client_data` take at most 1/`share` of the store's budget
    (by their example counts, when known; training keeps two rounds' clients pinned) and at most `max_clients`
    clients."""
    from fedlab.data.federated_data import PIXELS, known_counts

    counts = known_counts(client_data) or {}
    example_bytes = 4 * (math.prod(client_data.element_type_structure[PIXELS].shape) + 2)
    limit = store.budget_bytes / share
    group, size = [], 0
    for client_id in client_ids:
        client_bytes = counts.get(client_id, 0) * example_bytes + 3 * 4096
        if group and (len(group) >= max_clients or size + client_bytes > limit):
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

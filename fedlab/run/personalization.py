"""Personalization evaluation (config group `personalization`): each evaluated client adapts a model on its own
training split, then is evaluated on its test split, as google-research/federated's personalization benchmark and
FLSim's fine-tuner do.

- `finetune`: a copy of the current global model, trained with SGD at `lr` for `epochs` passes over the client's
  training examples (in their order, batches of the run's batch_size), all its layers or only the `last` (the output
  layer's kernel and bias);
- `local_only`: the same budget from the initial model, the client's data alone: the baseline every personalization
  paper shows (it does not depend on the rounds, so each client's is computed once).

Each client's computation runs in TFF's worker on shard files (fedlab.fast_paths.shards): the personalized model's
test metrics come back per client and summed, as fedlab.run.evaluation's do. What it computes is
`tff.learning.algorithms.build_personalization_eval_computation` with an SGD personalize_fn (tests/test_personalization
checks it).
"""

import collections
import dataclasses

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from fedlab.algorithms.templates import local_training
from fedlab.models import ModelFn, model_to_load
from fedlab.run import client_distribution
from fedlab.run.client_metrics import sum_in_order
from fedlab.run.evaluation import ClientEvaluation, PopulationEvaluation, groups_within_budget, rename_metrics

NONE, FINETUNE, LOCAL_ONLY = 'none', 'finetune', 'local_only'
METHODS = (NONE, FINETUNE, LOCAL_ONLY)
POPULATION = 'personalized'


@dataclasses.dataclass(frozen=True)
class PersonalizationConfig:
    """The `personalization` group's keys."""

    method: str = NONE
    epochs: int = 2  # passes over the client's training examples
    lr: float = 0.02  # SGD's learning rate
    layers: str = 'all'  # all | last: which of the model's trainable variables adapt
    every: int = 0  # also every N rounds (a multiple of eval_every); 0: after the last round only

    @property
    def enabled(self) -> bool:
        return self.method != NONE


def adapted_variables(model, layers: str) -> list:
    """The variables personalization trains: all trainable ones, or the last layer's (its kernel and, when the last
    variable is a vector, its bias)."""
    variables = list(model.trainable_variables)
    if layers == 'all':
        return variables
    return variables[-2:] if len(variables) >= 2 and variables[-1].shape.rank == 1 else variables[-1:]


class PersonalizedMetrics:
    """The TFF computations: `each(weights, [{train, test} shard paths])` -> (the personalized models' unfinalized
    test metrics summed at SERVER, each client's `{sums, metrics}` at CLIENTS); `finalize(sums)`."""

    def __init__(self, model_fn: ModelFn, config: PersonalizationConfig, *, batch_size: int):
        from fedlab.fast_paths import shards

        with tf.Graph().as_default():
            model = model_fn()
            input_spec = model.input_spec
            weights_type = tff.learning.models.weights_type_from_model(model)
            finalizers = model.metric_finalizers()

        def finalized(sums):
            return collections.OrderedDict((name, finalizer(sums[name])) for name, finalizer in finalizers.items())

        paths_type = tff.StructWithPythonType([('train', np.str_), ('test', np.str_)], collections.OrderedDict)

        @tff.tensorflow.computation(weights_type, paths_type)
        def personalize(weights, paths):
            model = model_to_load(model_fn)
            variables = adapted_variables(model, config.layers)

            def sgd_step(batch, carry, forward):
                del forward
                with tf.GradientTape() as tape:
                    output = model.forward_pass(batch, training=True)
                for variable, gradient in zip(variables, tape.gradient(output.loss, variables)):
                    variable.assign_sub(config.lr * gradient)
                return carry

            def evaluate_batch(batch, carry, forward):
                del forward
                model.forward_pass(batch, training=False)
                return carry

            @tf.function(autograph=False)
            def adapt_then_evaluate():
                local_training.load_weights(model, weights)
                train = shards.read_shard(paths['train'], input_spec)
                for _ in range(config.epochs):
                    local_training.run_batches(train, batch_size, sgd_step)
                model.reset_metrics()  # training updated them; the test split's alone are reported
                local_training.run_batches(shards.read_shard(paths['test'], input_spec), batch_size, evaluate_batch)
                return model.report_local_unfinalized_metrics()

            sums = adapt_then_evaluate()
            return collections.OrderedDict(sums=sums, metrics=finalized(sums))

        @tff.federated_computation(tff.FederatedType(weights_type, tff.SERVER),
                                   tff.FederatedType(paths_type, tff.CLIENTS))
        def each(weights, client_paths):
            outputs = tff.federated_map(personalize, (tff.federated_broadcast(weights), client_paths))
            return tff.federated_sum(outputs.sums), outputs

        @tff.tensorflow.computation(personalize.type_signature.result.sums)
        def finalize(sums):
            return finalized(sums)

        self.each, self.finalize = each, finalize


class Personalization:
    """Runs personalization after the evaluations of the rounds it is due (`due`): the last round, every
    `config.every` rounds, and the round a run stops at its target (`stop_target`), on the clients the global
    evaluation (population `eval`) covered. Returns `{personalized: PopulationEvaluation}`, each client's row
    with its accuracy gain over the global model, and the gain's distribution among the metrics; and each of
    `parts` (e.g. participating, unseen) apart, as `personalized_<part>`."""

    def __init__(
        self,
        config: PersonalizationConfig,
        model_fn: ModelFn,
        data,
        *,
        batch_size: int,
        initial_weights,
        final_round: int,
        store=None,
        shard_dir: str | None = None,
        stop_target: float | None = None,
        global_population: str = 'eval',
        parts: dict[str, frozenset[str]] | None = None,
    ):
        from fedlab.run import round_inputs as inputs

        self._config = config
        self._model_fn = model_fn
        self._data = data
        self._batch_size = batch_size
        self._initial_weights = initial_weights
        self._final_round = final_round
        self._stop_target = stop_target
        self._global = global_population
        self._parts = dict(parts or {})  # evaluated apart too, as personalized_<part> (e.g. participating, unseen)
        pipeline = lambda dataset: inputs.eval_pipeline(dataset, batch_size)  # noqa: E731 (one pass, in order)
        # With shards, the run's store (the test split's files are the evaluation's); else a store of its own.
        self._train = inputs.ClientShards(data.train, pipeline, store=store, shard_dir=shard_dir, name='train_eval')
        self._test = inputs.ClientShards(data.test, pipeline, store=self._train.store, name='test')
        self._computations = None
        self._local_only: dict[str, dict] = {}  # client -> output: the local-only model does not change with rounds

    def populations(self) -> list[str]:
        return [POPULATION, *(f'{POPULATION}_{part}' for part in self._parts)]

    def due(self, round_num: int, evaluations: dict) -> bool:
        if round_num >= self._final_round or (self._config.every and round_num % self._config.every == 0):
            return True
        accuracy = evaluations.get(self._global).metrics.get('accuracy') if self._global in evaluations else None
        return self._stop_target is not None and accuracy is not None and accuracy >= self._stop_target

    def __call__(self, model_weights, round_num: int, evaluations: dict) -> dict[str, PopulationEvaluation]:
        if self._global not in evaluations or not self.due(round_num, evaluations):
            return {}
        global_clients = {c.client_id: c for c in evaluations[self._global].clients}
        client_ids = list(global_clients)
        outputs = self._outputs(model_weights, client_ids)
        clients = []
        for client_id in client_ids:
            metrics = rename_metrics(outputs[client_id]['metrics'])
            seen = global_clients[client_id]
            clients.append(ClientEvaluation(
                client_id, metrics, outputs[client_id]['sums'], trained_before=seen.trained_before,
                held_out=seen.held_out, accuracy_gain=metrics['accuracy'] - seen.metrics['accuracy'],
            ))
        found = {POPULATION: self._population(clients)}
        for part, members in self._parts.items():
            found[f'{POPULATION}_{part}'] = self._population([c for c in clients if c.client_id in members], POPULATION)
        return found

    def _population(self, clients: list[ClientEvaluation], part_of: str | None = None) -> PopulationEvaluation:
        weighted = {}
        if clients:
            weighted = rename_metrics(self._computations.finalize(sum_in_order([c.sums for c in clients])))
        weighted.update(client_distribution.distribution([c.metrics for c in clients]))
        weighted.update(client_distribution.gain_distribution([c.accuracy_gain for c in clients]))
        return PopulationEvaluation(weighted, clients, part_of)

    def _outputs(self, model_weights, client_ids: list[str]) -> dict[str, dict]:
        if self._computations is None:
            self._computations = PersonalizedMetrics(self._model_fn, self._config, batch_size=self._batch_size)
        local_only = self._config.method == LOCAL_ONLY
        found = {c: self._local_only[c] for c in client_ids if local_only and c in self._local_only}
        todo = [c for c in client_ids if c not in found]
        start = self._initial_weights if local_only else model_weights
        try:
            for group in groups_within_budget(self._data.train, todo, self._train.store, share=8):
                paths = [collections.OrderedDict(train=train, test=test)
                         for train, test in zip(self._train(group), self._test(group))]
                _, group_outputs = self._computations.each(start, paths)
                found.update(zip(group, group_outputs))
        finally:
            self._train.release()
            self._test.release()
        if local_only:
            self._local_only.update(found)
        return found

    def close(self) -> None:
        self._train.close()

"""FedAvg client work fed with each client's batch stream as tensors, or read from a shard file, instead of
a tf.data.Dataset.

Profiled: a TFF client call that receives a `tf.data.Dataset` spends most of its time in the worker
serialising and rebuilding the dataset graph (about 30 ms per client vs about 1 ms for tensors), which
dominates small models. Here each client's pipeline is run once in Python (`materialize`), its batch stream
kept as arrays, and the client loops over batches in-graph. Tensors still cross gRPC into TFF's worker
every round (~340 KB per 100 digits); a shard (`write_shard`) is written once and read by the client's
computation inside the worker, so only its path crosses. Same batches in the same order, same model,
optimizer, weighting and metrics as `tff.learning.templates.build_model_delta_client_work`.
"""

import collections
from typing import NamedTuple

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from fedlab.models import ModelFn


def materialize(dataset: tf.data.Dataset) -> collections.OrderedDict:
    """A client's batch stream `{x, y}` concatenated into arrays: exactly the examples, in the order,
    that TFF's dataset path sees in one round (a seeded shuffle gives the same order every round)."""
    xs, ys = [], []
    for batch in dataset.as_numpy_iterator():
        xs.append(batch['x'])
        ys.append(batch['y'])
    if not ys:  # a client without examples: empty arrays of the stream's shapes (it trains on 0 batches)
        spec = dataset.element_spec
        return collections.OrderedDict(
            (key, np.zeros([0, *spec[key].shape[1:]], spec[key].dtype.as_numpy_dtype)) for key in ('x', 'y')
        )
    return collections.OrderedDict(x=np.concatenate(xs), y=np.concatenate(ys))


def write_shard(stem: str, stream: collections.OrderedDict) -> str:
    """Writes a client's batch stream as one serialized tensor file per key (`{stem}.x`, `{stem}.y`);
    returns `stem`, which `read_shard` reads back inside the client's computation."""
    for key, array in stream.items():
        with open(f'{stem}.{key}', 'wb') as f:
            f.write(tf.io.serialize_tensor(array).numpy())
    return str(stem)


def read_shard(stem: tf.Tensor, input_spec) -> collections.OrderedDict:
    """In-graph inverse of `write_shard`, with the shapes and dtypes of the model's `input_spec`."""
    return collections.OrderedDict(
        (key, tf.ensure_shape(tf.io.parse_tensor(tf.io.read_file(stem + f'.{key}'), spec.dtype), spec.shape))
        for key, spec in input_spec.items()
    )


class _ModelTypes(NamedTuple):
    metrics_aggregation_fn: object  # tff.learning.metrics.sum_then_finalize of the model's finalizers
    input_spec: object
    weights_type: tff.types.Type


def _model_types(model_fn: ModelFn) -> _ModelTypes:
    """What the federated computations need to know of the model, read from one built outside the global
    graph."""
    with tf.Graph().as_default():
        model = model_fn()
        return _ModelTypes(
            tff.learning.metrics.sum_then_finalize(model.metric_finalizers()),
            model.input_spec,
            tff.learning.models.weights_type_from_model(model),
        )


def _num_batches(data, batch_size: int) -> tf.Tensor:
    return (tf.shape(data['y'])[0] + batch_size - 1) // batch_size


def _batch(data, i: tf.Tensor, batch_size: int) -> collections.OrderedDict:
    """Batch `i` of a batch stream held as tensors (the last one may be smaller)."""
    start = i * batch_size
    return collections.OrderedDict((key, value[start : start + batch_size]) for key, value in data.items())


def _zero_if_any_non_finite(update):
    """TFF's rule: a client whose update has NaN or Inf contributes nothing (update 0, weight 0)."""
    flat = tf.nest.flatten(update)
    finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(t)) for t in flat])
    zeroed = tf.nest.map_structure(tf.zeros_like, update)
    return tf.cond(finite, lambda: update, lambda: zeroed), tf.logical_not(finite)


def _build_client_update(model_fn: ModelFn, batch_size: int):
    model = model_fn()

    # autograph=False, with tf.while_loop and tf.cond written out: autograph would also convert every
    # function this calls (the model's forward pass, the optimizer), which took most of the process's build.
    @tf.function(autograph=False)
    def client_update(optimizer, initial_weights, data, optimizer_hparams):
        model_weights = tff.learning.models.ModelWeights.from_model(model)
        tf.nest.map_structure(lambda a, b: a.assign(b), model_weights, initial_weights)
        trainable = tuple(tf.nest.flatten(model_weights.trainable))
        specs = tf.nest.map_structure(lambda v: tf.TensorSpec(v.shape, v.dtype), trainable)
        optimizer_state = optimizer.set_hparams(optimizer.initialize(specs), optimizer_hparams)

        num_batches = _num_batches(data, batch_size)

        def train_on_batch(i, num_examples, optimizer_state):
            with tf.GradientTape() as tape:
                output = model.forward_pass(_batch(data, i, batch_size), training=True)
            gradients = tape.gradient(output.loss, model_weights.trainable)
            optimizer_state, updated = optimizer.next(optimizer_state, trainable, tuple(tf.nest.flatten(gradients)))
            for variable, value in zip(trainable, updated):
                variable.assign(value)
            return i + 1, num_examples + tf.cast(output.num_examples, tf.int64), optimizer_state

        _, num_examples, _ = tf.while_loop(
            lambda i, *_: i < num_batches, train_on_batch, (tf.constant(0), tf.zeros([], tf.int64), optimizer_state)
        )

        delta = tf.nest.map_structure(tf.subtract, initial_weights.trainable, model_weights.trainable)
        delta, non_finite = _zero_if_any_non_finite(delta)
        weight = tf.where(non_finite, 0.0, tf.cast(num_examples, tf.float32))

        def reset_metrics():
            model.reset_metrics()
            return tf.constant(True)

        tf.cond(non_finite, reset_metrics, lambda: tf.constant(False))
        metrics = model.report_local_unfinalized_metrics()
        return tff.learning.templates.ClientResult(update=delta, update_weight=weight), metrics

    return client_update


def build_shard_evaluation(model_fn: ModelFn, *, batch_size: int) -> tff.Computation:
    """Federated evaluation whose clients read their data from shards (`write_shard` of the evaluation
    pipeline's stream): `(model weights at SERVER, shard paths at CLIENTS) -> metrics at SERVER`, summed over
    clients then finalized, as `tff.learning.algorithms.build_fed_eval` reports them."""
    metrics_aggregation_fn, input_spec, weights_type = _model_types(model_fn)

    @tff.tensorflow.computation(weights_type, np.str_)
    def client_evaluation(weights, shard_path):
        model = model_fn()

        @tf.function(autograph=False)
        def evaluate():
            model_weights = tff.learning.models.ModelWeights.from_model(model)
            tf.nest.map_structure(lambda a, b: a.assign(b), model_weights, weights)
            data = read_shard(shard_path, input_spec)
            num_batches = _num_batches(data, batch_size)

            def evaluate_batch(i):
                model.forward_pass(_batch(data, i, batch_size), training=False)
                return i + 1

            tf.while_loop(lambda i: i < num_batches, evaluate_batch, (tf.constant(0),))
            return model.report_local_unfinalized_metrics()

        return evaluate()

    @tff.federated_computation(
        tff.FederatedType(weights_type, tff.SERVER), tff.FederatedType(np.str_, tff.CLIENTS)
    )
    def evaluate(weights, shard_paths):
        metrics = tff.federated_map(client_evaluation, (tff.federated_broadcast(weights), shard_paths))
        return metrics_aggregation_fn(metrics)

    return evaluate


class TensorClientWork(NamedTuple):
    """The parts of a `tff.learning.templates.ClientWorkProcess`. Not one itself: TFF's templates insist
    that client data be a sequence, which is exactly the cost this module avoids."""

    initialize: tff.Computation
    next: tff.Computation
    get_hparams: tff.Computation
    set_hparams: tff.Computation


def build_tensor_client_work(
    model_fn: ModelFn, optimizer: tff.learning.optimizers.Optimizer, *, batch_size: int, from_shards: bool = False
) -> TensorClientWork:
    """Weighted FedAvg client work whose client data is `{x: [n, ...], y: [n]}` tensors, the client's batch
    stream (see `materialize`), trained in batches of `batch_size`. With `from_shards`, client data is the
    path of the stream's shard (see `write_shard`) instead."""
    metrics_aggregation_fn, input_spec, weights_type = _model_types(model_fn)
    data_type = tff.TensorType(np.str_) if from_shards else tff.types.tensorflow_to_type(input_spec)
    initial_hparams = optimizer.get_hparams(optimizer.initialize(tf.TensorSpec([], tf.float32)))

    @tff.federated_computation
    def init_fn():
        return tff.federated_value(initial_hparams, tff.SERVER)

    state_type = init_fn.type_signature.result.member

    @tff.tensorflow.computation(state_type)
    def get_hparams_fn(state):
        return state

    @tff.tensorflow.computation(state_type, state_type)
    def set_hparams_fn(state, hparams):
        del state
        return hparams

    @tff.tensorflow.computation(state_type, weights_type, data_type)
    def client_update_computation(hparams, initial_weights, data):
        if from_shards:
            data = read_shard(data, input_spec)
        return _build_client_update(model_fn, batch_size)(optimizer, initial_weights, data, hparams)

    @tff.federated_computation(
        init_fn.type_signature.result,
        tff.FederatedType(weights_type, tff.CLIENTS),
        tff.FederatedType(data_type, tff.CLIENTS),
    )
    def next_fn(state, weights, client_data):
        state_at_clients = tff.federated_broadcast(state)
        client_result, model_outputs = tff.federated_map(
            client_update_computation, (state_at_clients, weights, client_data)
        )
        measurements = tff.federated_zip(collections.OrderedDict(train=metrics_aggregation_fn(model_outputs)))
        return tff.templates.MeasuredProcessOutput(state, client_result, measurements)

    return TensorClientWork(init_fn, next_fn, get_hparams_fn, set_hparams_fn)


def build_tensor_fed_avg(
    model_fn: ModelFn,
    client_optimizer: tff.learning.optimizers.Optimizer,
    server_optimizer: tff.learning.optimizers.Optimizer,
    model_aggregator: tff.aggregators.WeightedAggregationFactory,
    *,
    batch_size: int,
    from_shards: bool = False,
) -> tff.learning.templates.LearningProcess:
    """`tff.learning.algorithms.build_weighted_fed_avg` with `build_tensor_client_work`: the composition of
    `tff.learning.templates.compose_learning_process`, minus its check that client data is a sequence."""

    @tff.tensorflow.computation
    def initial_model_weights_fn():
        return tff.learning.models.ModelWeights.from_model(model_fn())

    weights_type = initial_model_weights_fn.type_signature.result
    distributor = tff.learning.templates.build_broadcast_process(weights_type)
    client_work = build_tensor_client_work(model_fn, client_optimizer, batch_size=batch_size, from_shards=from_shards)
    aggregator = model_aggregator.create(weights_type.trainable, tff.TensorType(np.float32))
    finalizer = tff.learning.templates.build_apply_optimizer_finalizer(server_optimizer, weights_type)
    state_cls = tff.learning.templates.LearningAlgorithmState

    @tff.federated_computation
    def init_fn():
        weights = tff.federated_eval(initial_model_weights_fn, tff.SERVER)
        return tff.federated_zip(
            state_cls(
                weights,
                distributor.initialize(),
                client_work.initialize(),
                aggregator.initialize(),
                finalizer.initialize(),
            )
        )

    client_data_type = client_work.next.type_signature.parameter[2]

    @tff.federated_computation(init_fn.type_signature.result, client_data_type)
    def next_fn(state, client_data):
        distributed = distributor.next(state.distributor, state.global_model_weights)
        trained = client_work.next(state.client_work, distributed.result, client_data)
        aggregated = aggregator.next(state.aggregator, trained.result.update, trained.result.update_weight)
        finalized = finalizer.next(state.finalizer, state.global_model_weights, aggregated.result)
        new_state = tff.federated_zip(
            state_cls(finalized.result, distributed.state, trained.state, aggregated.state, finalized.state)
        )
        metrics = tff.federated_zip(
            collections.OrderedDict(
                distributor=distributed.measurements,
                client_work=trained.measurements,
                aggregator=aggregated.measurements,
                finalizer=finalized.measurements,
            )
        )
        return tff.learning.templates.LearningProcessOutput(new_state, metrics)

    state_type = next_fn.type_signature.parameter[0].member

    @tff.tensorflow.computation(state_type)
    def get_model_weights_fn(state):
        return state.global_model_weights

    @tff.tensorflow.computation(state_type, state_type.global_model_weights)
    def set_model_weights_fn(state, model_weights):  # TFF's parameter names: the same type signature
        return state_cls(model_weights, state.distributor, state.client_work, state.aggregator, state.finalizer)

    @tff.tensorflow.computation(state_type)
    def get_hparams_fn(state):
        return collections.OrderedDict(
            client_work=client_work.get_hparams(state.client_work), finalizer=finalizer.get_hparams(state.finalizer)
        )

    @tff.tensorflow.computation(state_type, get_hparams_fn.type_signature.result)
    def set_hparams_fn(state, hparams):
        return state_cls(
            state.global_model_weights,
            state.distributor,
            client_work.set_hparams(state.client_work, hparams['client_work']),
            state.aggregator,
            finalizer.set_hparams(state.finalizer, hparams['finalizer']),
        )

    return tff.learning.templates.LearningProcess(
        init_fn,
        next_fn,
        get_model_weights_fn,
        set_model_weights_fn,
        get_hparams_fn=get_hparams_fn,
        set_hparams_fn=set_hparams_fn,
    )

"""Every algorithm's client work on fedlab's fast client paths (client_inputs=tensors|shards), in one place.

Each variant does the maths of its TFF counterpart on `tf.data.Dataset`s, batch for batch, with the same
weighting, non-finite rule and metrics, but loops over the client's batch stream (`tensor_inputs.ClientInputs`)
in-graph, as per-batch steps of the one local-training loop (fedlab.algorithms.templates.local_training). The
client works that keep state per client (SCAFFOLD, FedDyn) are in `stateful_client_work`.

    build_model_delta_client_work   FedAvg (TFF's model_delta_client_work) and FedProx (proximal_client_work)
    build_normalized_client_work    FedNova: the model delta divided by the client's steps, rescaled at the server
    build_gradient_client_work      FedSGD (the client work of TFF's build_fed_sgd)
    build_mime_lite_client_work     Mime Lite (the client work of TFF's build_weighted_mime_lite)

The client updates are traced with autograph=False, as the loop is (local_training says why): tf.cond written out.
"""

import collections
from typing import NamedTuple

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from fedlab.algorithms import UNIFORM
from fedlab.algorithms.templates import local_training
from fedlab.fast_paths.tensor_inputs import ClientInputs, model_types
from fedlab.models import ModelFn, model_to_load
from fedlab.tff_internals import keras_forward_pass


class TensorClientWork(NamedTuple):
    """The parts of a `tff.learning.templates.ClientWorkProcess`. Not one itself: TFF's templates insist
    that client data be a sequence, which is exactly the cost the fast paths avoid.

    `group_update`, for packed clients only: the TF computation `(state, weights, group data) -> (ClientResult,
    unfinalized metrics)` that `next` runs at each group with the state broadcast
    (fedlab.algorithms.templates.packed_round fuses a round around it).

    `adjust_aggregate`, for algorithms whose server step needs more than the aggregated update: the TF computation
    `(state, measurements, aggregate) -> (state, update)` run at SERVER between the aggregator and the finalizer
    (FedNova scales the aggregate, FedDyn adds its correction and advances its state).

    `client_state`, for algorithms that keep state per client (fedlab.algorithms.templates.stateful_client_work):
    a client's state before it first trains (numpy arrays). `next` then takes `(data, client state)` per client
    and returns `(MeasuredProcessOutput, each client's new state at CLIENTS)`."""

    initialize: tff.Computation
    next: tff.Computation
    get_hparams: tff.Computation
    set_hparams: tff.Computation
    group_update: tff.Computation | None = None
    adjust_aggregate: tff.Computation | None = None
    client_state: object = None


def _zero_if_any_non_finite(update):
    """TFF's rule: a client whose update has NaN or Inf contributes nothing (update 0, weight 0)."""
    flat = tf.nest.flatten(update)
    finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(t)) for t in flat])
    zeroed = tf.nest.map_structure(tf.zeros_like, update)
    return tf.cond(finite, lambda: update, lambda: zeroed), tf.logical_not(finite)


def _client_weight(weighting: str, num_examples: tf.Tensor, non_finite: tf.Tensor) -> tf.Tensor:
    weight = tf.constant(1.0) if weighting == UNIFORM else tf.cast(num_examples, tf.float32)
    return tf.where(non_finite, 0.0, weight)


def _assign(variables, values) -> None:
    tf.nest.map_structure(lambda variable, value: variable.assign(value), variables, values)


def _specs(tensors) -> tuple:
    return tuple(tf.TensorSpec(t.shape, t.dtype) for t in tf.nest.flatten(tensors))


# ---------------------------------------------------------------------------------------------------------------
# In-graph client updates: (inputs of one client) -> (ClientResult, unfinalized metrics[, extra upload]), each a
# step or two of fedlab.algorithms.templates.local_training's loop.


def model_delta_update(model_fn: ModelFn, batch_size: int, *, weighting: str, proximal_strength: float):
    model = model_to_load(model_fn)
    forward_pass = keras_forward_pass.ForwardPass(model)  # metrics by plain ops, carried by the loop

    @tf.function(autograph=False)
    def client_update(optimizer, initial_weights, data, optimizer_hparams, gradient_offset=None):
        # gradient_offset: a constant added to every gradient (flat, as the trainable variables): the drift
        # corrections of SCAFFOLD (c - c_i) and FedDyn (-h_i), fedlab.algorithms.templates.stateful_client_work.
        model.reset_metrics()  # each call reports one client's metrics (several per model when packed)
        model_weights = local_training.load_weights(model, initial_weights)
        trainable = tuple(tf.nest.flatten(model_weights.trainable))
        server_trainable = tuple(tf.nest.flatten(initial_weights.trainable))
        optimizer_state = optimizer.set_hparams(optimizer.initialize(_specs(trainable)), optimizer_hparams)

        def train_on_batch(batch, carry, forward):
            num_examples, optimizer_state = carry
            with tf.GradientTape() as tape:
                output = forward(batch, training=True)
            gradients = tuple(tf.nest.flatten(tape.gradient(output.loss, model_weights.trainable)))
            if proximal_strength:  # FedProx: the gradient of mu/2 ||w - w_server||^2
                gradients = tuple(
                    g + proximal_strength * (w - w_server)
                    for g, w, w_server in zip(gradients, trainable, server_trainable)
                )
            if gradient_offset is not None:
                gradients = tuple(g + offset for g, offset in zip(gradients, gradient_offset))
            optimizer_state, updated = optimizer.next(optimizer_state, trainable, gradients)
            _assign(trainable, updated)
            return num_examples + tf.cast(output.num_examples, tf.int64), optimizer_state

        initial_carry = (tf.zeros([], tf.int64), optimizer_state)
        num_examples, _ = local_training.run_batches(data, batch_size, train_on_batch, initial_carry, forward_pass)
        delta = tf.nest.map_structure(tf.subtract, initial_weights.trainable, model_weights.trainable)
        delta, non_finite = _zero_if_any_non_finite(delta)

        def reset_metrics():  # as TFF's FedAvg: a non-finite client's training is not reported either
            model.reset_metrics()
            return tf.constant(True)

        tf.cond(non_finite, reset_metrics, lambda: tf.constant(False))
        metrics = model.report_local_unfinalized_metrics()
        weight = _client_weight(weighting, num_examples, non_finite)
        return tff.learning.templates.ClientResult(update=delta, update_weight=weight), metrics

    return client_update


def _build_gradient_update(model_fn: ModelFn, batch_size: int, *, weighting: str):
    model = model_to_load(model_fn)
    forward_pass = keras_forward_pass.ForwardPass(model)  # metrics by plain ops, carried by the loop

    @tf.function(autograph=False)
    def client_update(initial_weights, data):
        model.reset_metrics()  # each call reports one client's metrics (several per model when packed)
        model_weights = local_training.load_weights(model, initial_weights)

        def accumulate(batch, carry, forward):
            gradient_sums, num_examples = carry
            with tf.GradientTape() as tape:
                output = forward(batch, training=True)
            gradients = tape.gradient(
                output.loss, model_weights.trainable, unconnected_gradients=tf.UnconnectedGradients.ZERO
            )
            batch_examples = tf.cast(output.num_examples, tf.float32)
            gradient_sums = tuple(s + batch_examples * g for s, g in zip(gradient_sums, tf.nest.flatten(gradients)))
            return gradient_sums, num_examples + batch_examples

        zeros = tuple(tf.zeros_like(v) for v in tf.nest.flatten(model_weights.trainable))
        gradient_sums, num_examples = local_training.run_batches(
            data, batch_size, accumulate, (zeros, tf.constant(0.0)), forward_pass
        )
        average = tf.nest.pack_sequence_as(initial_weights.trainable, [s / num_examples for s in gradient_sums])
        metrics = model.report_local_unfinalized_metrics()
        average, non_finite = _zero_if_any_non_finite(average)
        weight = _client_weight(weighting, num_examples, non_finite)
        return tff.learning.templates.ClientResult(update=average, update_weight=weight), metrics

    return client_update


def _build_mime_lite_update(model_fn: ModelFn, batch_size: int, *, weighting: str):
    model = model_to_load(model_fn)
    forward_pass = keras_forward_pass.ForwardPass(model)  # metrics by plain ops, carried by the loop

    @tf.function(autograph=False)
    def client_update(optimizer, optimizer_state, initial_weights, data):
        model_weights = local_training.load_weights(model, initial_weights)
        trainable = tuple(tf.nest.flatten(model_weights.trainable))

        # 1. The full-batch gradient at the server's weights (the second upload, which updates the server's
        # copy of the base optimizer's state).
        def accumulate(batch, carry, forward):
            gradient_sums, num_examples = carry
            with tf.GradientTape() as tape:
                output = forward(batch, training=True)
            batch_examples = tf.cast(output.num_examples, tf.int64)
            gradients = tf.nest.flatten(tape.gradient(output.loss, model_weights.trainable))
            gradient_sums = tuple(s + g * tf.cast(batch_examples, g.dtype) for s, g in zip(gradient_sums, gradients))
            return gradient_sums, num_examples + batch_examples

        zeros = tuple(tf.zeros_like(v) for v in trainable)
        gradient_sums, num_examples = local_training.run_batches(
            data, batch_size, accumulate, (zeros, tf.zeros([], tf.int64)), forward_pass
        )
        full_gradient = tuple(tf.math.divide_no_nan(s, tf.cast(num_examples, s.dtype)) for s in gradient_sums)
        # Metrics report the local training only, as TFF's Mime Lite (tf.function runs stateful ops in order).
        model.reset_metrics()

        # 2. Local training with the base optimizer's state held fixed.
        def train_on_batch(batch, carry, forward):
            with tf.GradientTape() as tape:
                output = forward(batch, training=True)
            gradients = tuple(tf.nest.flatten(tape.gradient(output.loss, model_weights.trainable)))
            _, updated = optimizer.next(optimizer_state, trainable, gradients)
            _assign(trainable, updated)
            return carry

        local_training.run_batches(data, batch_size, train_on_batch, (), forward_pass)
        delta = tf.nest.map_structure(tf.subtract, initial_weights.trainable, model_weights.trainable)
        metrics = model.report_local_unfinalized_metrics()
        delta, non_finite = _zero_if_any_non_finite(delta)
        weight = _client_weight(weighting, num_examples, non_finite)
        result = tff.learning.templates.ClientResult(update=delta, update_weight=weight)
        return result, metrics, tf.nest.pack_sequence_as(initial_weights.trainable, list(full_gradient))

    return client_update


# ---------------------------------------------------------------------------------------------------------------
# Client work processes: (state at SERVER, model weights at CLIENTS, client data at CLIENTS) -> MeasuredProcessOutput


def build_model_delta_client_work(
    model_fn: ModelFn,
    optimizer: tff.learning.optimizers.Optimizer,
    inputs: ClientInputs,
    *,
    weighting: str,
    proximal_strength: float = 0.0,
) -> TensorClientWork:
    """Clients train with `optimizer` from the server's weights and send their model delta, weighted by example
    count or uniformly. `proximal_strength` mu adds mu * (w - w_server) to each gradient (FedProx; 0 is FedAvg,
    the same graph). The state is the optimizer's hyper-parameters, broadcast every round."""
    metrics_aggregation_fn, input_spec, weights_type = model_types(model_fn)
    data_type = inputs.data_type(input_spec)
    init_fn, get_hparams_fn, set_hparams_fn = optimizer_hparams_state(optimizer)
    state_type = init_fn.type_signature.result.member

    @tff.tensorflow.computation(state_type, weights_type, data_type)
    def client_update(hparams, initial_weights, data):
        update = model_delta_update(
            model_fn, inputs.batch_size, weighting=weighting, proximal_strength=proximal_strength
        )
        return inputs.for_each_client(
            lambda client: update(optimizer, initial_weights, client, hparams), data, input_spec
        )

    @tff.federated_computation(
        init_fn.type_signature.result,
        tff.FederatedType(weights_type, tff.CLIENTS),
        tff.FederatedType(data_type, tff.CLIENTS),
    )
    def next_fn(state, weights, client_data):
        state_at_clients = tff.federated_broadcast(state)
        client_result, model_outputs = tff.federated_map(client_update, (state_at_clients, weights, client_data))
        measurements = tff.federated_zip(collections.OrderedDict(train=metrics_aggregation_fn(model_outputs)))
        return tff.templates.MeasuredProcessOutput(state, client_result, measurements)

    group_update = client_update if inputs.packed else None
    return TensorClientWork(init_fn, next_fn, get_hparams_fn, set_hparams_fn, group_update)


def optimizer_hparams_state(optimizer: tff.learning.optimizers.Optimizer):
    """(init_fn, get_hparams_fn, set_hparams_fn) of a client work whose state is `optimizer`'s hyper-parameters
    (broadcast every round, so that a learning-rate schedule reaches the clients)."""
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

    return init_fn, get_hparams_fn, set_hparams_fn


def normalized_steps(steps: tf.Tensor, momentum: tf.Tensor | None) -> tf.Tensor:
    """FedNova's ||a_i||_1 for `steps` local SGD steps: the steps themselves, or with heavy-ball momentum rho
    (m <- rho m + g), (steps - rho (1 - rho^steps) / (1 - rho)) / (1 - rho) (Wang et al. 2020, section 4)."""
    if momentum is None:
        return steps
    rho = tf.cast(momentum, steps.dtype)
    return (steps - rho * (1.0 - tf.pow(rho, steps)) / (1.0 - rho)) / (1.0 - rho)


def build_normalized_client_work(
    model_fn: ModelFn, optimizer: tff.learning.optimizers.Optimizer, inputs: ClientInputs, *, weighting: str
) -> TensorClientWork:
    """FedNova (Wang et al. 2020): clients train as FedAvg's and send their model delta divided by ||a_i||_1 (their
    number of local steps, `normalized_steps`); the server multiplies the aggregate by the clients' weighted mean
    of ||a_i||_1 (tau_eff, a second, scalar upload: measurement `effective_steps`). With equal steps everywhere it
    is FedAvg; with unequal work, no client pulls the model further for having taken more steps."""
    if inputs.packed:
        raise ValueError('FedNova cannot pack clients: each client\'s delta is normalized by its own steps')
    metrics_aggregation_fn, input_spec, weights_type = model_types(model_fn)
    data_type = inputs.data_type(input_spec)
    init_fn, get_hparams_fn, set_hparams_fn = optimizer_hparams_state(optimizer)
    state_type = init_fn.type_signature.result.member
    has_momentum = 'momentum' in optimizer.get_hparams(optimizer.initialize(tf.TensorSpec([], tf.float32)))

    @tff.tensorflow.computation(state_type, weights_type, data_type)
    def client_update(hparams, initial_weights, data):
        update = model_delta_update(model_fn, inputs.batch_size, weighting=weighting, proximal_strength=0.0)
        stream = inputs.read(data, input_spec)
        result, metrics = update(optimizer, initial_weights, stream, hparams)
        steps = tf.cast(local_training.num_batches(stream, inputs.batch_size), tf.float32)
        norm = normalized_steps(steps, hparams['momentum'] if has_momentum else None)
        normalized = tf.nest.map_structure(lambda delta: tf.math.divide_no_nan(delta, norm), result.update)
        return tff.learning.templates.ClientResult(normalized, result.update_weight), metrics, norm

    @tff.federated_computation(
        init_fn.type_signature.result,
        tff.FederatedType(weights_type, tff.CLIENTS),
        tff.FederatedType(data_type, tff.CLIENTS),
    )
    def next_fn(state, weights, client_data):
        client_result, model_outputs, norms = tff.federated_map(
            client_update, (tff.federated_broadcast(state), weights, client_data)
        )
        measurements = tff.federated_zip(collections.OrderedDict(
            train=metrics_aggregation_fn(model_outputs),
            effective_steps=tff.federated_mean(norms, client_result.update_weight),
        ))  # fmt: skip
        return tff.templates.MeasuredProcessOutput(state, client_result, measurements)

    measurements_type = next_fn.type_signature.result.measurements.member

    @tff.tensorflow.computation(state_type, measurements_type, weights_type.trainable)
    def adjust_aggregate(state, measurements, aggregate):
        tau_eff = measurements['effective_steps']
        return state, tf.nest.map_structure(lambda x: x * tau_eff, aggregate)

    return TensorClientWork(init_fn, next_fn, get_hparams_fn, set_hparams_fn, adjust_aggregate=adjust_aggregate)


def build_gradient_client_work(model_fn: ModelFn, inputs: ClientInputs, *, weighting: str) -> TensorClientWork:
    """FedSGD: each client sends the average gradient of its batch stream at the server's weights, without
    updating them; the weight is its example count (TFF's) or 1. No state, no hyper-parameters."""
    metrics_aggregation_fn, input_spec, weights_type = model_types(model_fn)
    data_type = inputs.data_type(input_spec)

    @tff.federated_computation
    def init_fn():
        return tff.federated_value((), tff.SERVER)

    state_type = init_fn.type_signature.result.member

    @tff.tensorflow.computation(state_type)
    def get_hparams_fn(state):
        del state
        return collections.OrderedDict()

    @tff.tensorflow.computation(state_type, get_hparams_fn.type_signature.result)
    def set_hparams_fn(state, hparams):
        del hparams
        return state

    @tff.tensorflow.computation(weights_type, data_type)
    def client_update(initial_weights, data):
        update = _build_gradient_update(model_fn, inputs.batch_size, weighting=weighting)
        return inputs.for_each_client(lambda client: update(initial_weights, client), data, input_spec)

    @tff.federated_computation(
        init_fn.type_signature.result,
        tff.FederatedType(weights_type, tff.CLIENTS),
        tff.FederatedType(data_type, tff.CLIENTS),
    )
    def next_fn(state, weights, client_data):
        client_result, model_outputs = tff.federated_map(client_update, (weights, client_data))
        measurements = tff.federated_zip(collections.OrderedDict(train=metrics_aggregation_fn(model_outputs)))
        return tff.templates.MeasuredProcessOutput(state, client_result, measurements)

    group_update = None
    if inputs.packed:

        @tff.tensorflow.computation(state_type, weights_type, data_type)
        def group_update(state, initial_weights, data):
            del state  # no state: the same signature as the other client works'
            return client_update(initial_weights, data)

    return TensorClientWork(init_fn, next_fn, get_hparams_fn, set_hparams_fn, group_update)


def build_mime_lite_client_work(
    model_fn: ModelFn,
    base_optimizer: tff.learning.optimizers.Optimizer,
    inputs: ClientInputs,
    *,
    weighting: str,
    full_gradient_aggregator: tff.aggregators.WeightedAggregationFactory,
) -> TensorClientWork:
    """Mime Lite (Karimireddy et al. 2021): the server keeps the base optimizer's state (e.g. SGD momentum) and
    broadcasts it; clients train with that state held fixed and send their model delta and, second upload, the
    full-batch gradient at the server's weights, whose aggregate advances the state. The hyper-parameters are
    the base optimizer's (its learning rate is the client learning rate)."""
    if inputs.packed:
        raise ValueError('Mime Lite cannot pack clients: its second upload is aggregated per client')
    metrics_aggregation_fn, input_spec, weights_type = model_types(model_fn)
    data_type = inputs.data_type(input_spec)
    gradient_aggregator = full_gradient_aggregator.create(weights_type.trainable, tff.TensorType(np.float32))
    trainable_specs = tuple(tf.nest.flatten(tff.types.type_to_tf_tensor_specs(weights_type.trainable)))

    @tff.tensorflow.computation
    def initial_optimizer_state():
        return base_optimizer.initialize(trainable_specs)

    @tff.federated_computation
    def init_fn():
        return tff.federated_zip(
            (tff.federated_eval(initial_optimizer_state, tff.SERVER), gradient_aggregator.initialize())
        )

    state_type = init_fn.type_signature.result.member
    optimizer_state_type = state_type[0]

    @tff.tensorflow.computation(state_type)
    def get_hparams_fn(state):
        return base_optimizer.get_hparams(state[0])

    @tff.tensorflow.computation(state_type, get_hparams_fn.type_signature.result)
    def set_hparams_fn(state, hparams):
        return base_optimizer.set_hparams(state[0], hparams), state[1]

    @tff.tensorflow.computation(optimizer_state_type, weights_type, data_type)
    def client_update(optimizer_state, initial_weights, data):
        update = _build_mime_lite_update(model_fn, inputs.batch_size, weighting=weighting)
        return update(base_optimizer, optimizer_state, initial_weights, inputs.read(data, input_spec))

    @tff.tensorflow.computation(optimizer_state_type, weights_type.trainable)
    def advance_optimizer_state(optimizer_state, aggregate_gradient):
        gradient = tuple(tf.nest.flatten(aggregate_gradient))
        updated_state, _ = base_optimizer.next(optimizer_state, tuple(tf.zeros_like(g) for g in gradient), gradient)
        return updated_state

    @tff.federated_computation(
        init_fn.type_signature.result,
        tff.FederatedType(weights_type, tff.CLIENTS),
        tff.FederatedType(data_type, tff.CLIENTS),
    )
    def next_fn(state, weights, client_data):
        optimizer_state, aggregator_state = state
        client_result, model_outputs, full_gradient = tff.federated_map(
            client_update, (tff.federated_broadcast(optimizer_state), weights, client_data)
        )
        aggregated_gradient = gradient_aggregator.next(aggregator_state, full_gradient, client_result.update_weight)
        new_optimizer_state = tff.federated_map(advance_optimizer_state, (optimizer_state, aggregated_gradient.result))
        new_state = tff.federated_zip((new_optimizer_state, aggregated_gradient.state))
        measurements = tff.federated_zip(collections.OrderedDict(train=metrics_aggregation_fn(model_outputs)))
        return tff.templates.MeasuredProcessOutput(new_state, client_result, measurements)

    return TensorClientWork(init_fn, next_fn, get_hparams_fn, set_hparams_fn)

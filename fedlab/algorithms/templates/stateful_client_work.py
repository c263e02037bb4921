"""Client work that keeps state per client between the rounds it is sampled in: SCAFFOLD and FedDyn.

Both are FedAvg's local SGD (`client_work.model_delta_update`, the one local-training loop) with a constant added to
every gradient that corrects the client's drift, computed from the client's own state and the server's:

    build_scaffold_client_work  SCAFFOLD (Karimireddy et al. 2020), option II: gradient + c - c_i; then
                                c_i+ = c_i - c + (x - y_i) / (K_i lr); the server's c += sum(c_i+ - c_i) / N
    build_feddyn_client_work    FedDyn (Acar et al. 2021): gradient - g_i + alpha (w - x); then g_i -= alpha (y_i - x);
                                the server's h -= alpha |P| / N mean(y_i - x), and x = mean(y_i) - h / alpha

(x the server's model, y_i the client's after K_i local steps, N the clients that can train, P this round's.)
A client's state is a flat tuple of float32 tensors shaped as the trainable weights, zeros before it first trains.
`next` takes `(data, client state)` per client and returns `(MeasuredProcessOutput, new client states at CLIENTS)`;
the states live outside TFF, in fedlab.run.client_states. The composed process is
fedlab.algorithms.templates.composition.StatefulLearningProcess.
"""

import collections

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from fedlab.algorithms.templates import local_training
from fedlab.algorithms.templates.client_work import TensorClientWork, model_delta_update
from fedlab.fast_paths.tensor_inputs import ClientInputs, model_types
from fedlab.models import ModelFn


def zero_state(weights_type) -> tuple[np.ndarray, ...]:
    """A client's (or the server's) state before any training: zeros shaped as the trainable weights."""
    specs = tf.nest.flatten(tff.types.type_to_tf_tensor_specs(weights_type.trainable))
    return tuple(np.zeros(spec.shape, spec.dtype.as_numpy_dtype) for spec in specs)


def _stateful_parts(model_fn: ModelFn, optimizer, inputs: ClientInputs, server_part: str):
    """What SCAFFOLD's and FedDyn's client work share: the types, and a server state `{hparams, <server_part>}`
    (the client optimizer's hyper-parameters and a zero tensor per trainable weight) with its computations."""
    if inputs.packed:
        raise ValueError('clients that keep state cannot be packed: each one trains from its own state')
    metrics_aggregation_fn, input_spec, weights_type = model_types(model_fn)
    zeros = zero_state(weights_type)
    initial_hparams = optimizer.get_hparams(optimizer.initialize(tf.TensorSpec([], tf.float32)))

    @tff.tensorflow.computation
    def initial_state():
        return collections.OrderedDict(hparams=initial_hparams, **{server_part: tuple(tf.constant(z) for z in zeros)})

    @tff.federated_computation
    def init_fn():
        return tff.federated_eval(initial_state, tff.SERVER)

    state_type = init_fn.type_signature.result.member

    @tff.tensorflow.computation(state_type)
    def get_hparams_fn(state):
        return state['hparams']

    @tff.tensorflow.computation(state_type, state_type['hparams'])
    def set_hparams_fn(state, hparams):
        return collections.OrderedDict(hparams=hparams, **{server_part: state[server_part]})

    data_type = inputs.data_type(input_spec)
    client_data_type = tff.StructType([data_type, state_type[server_part]])
    return (metrics_aggregation_fn, input_spec, weights_type, zeros, init_fn, get_hparams_fn, set_hparams_fn,
            client_data_type)  # fmt: skip


def build_scaffold_client_work(
    model_fn: ModelFn,
    optimizer: tff.learning.optimizers.Optimizer,
    inputs: ClientInputs,
    *,
    weighting: str,
    num_clients: int,
) -> TensorClientWork:
    """SCAFFOLD with control variates option II. `optimizer` is plain SGD (the option II update divides by its
    learning rate); `num_clients` is N, the clients that can train. The server's control variate c is the mean of
    every client's c_i (zeros included), exactly, as each round adds sum(c_i+ - c_i) / N. The download carries c
    beside the model and the upload c_i+ - c_i beside the delta: twice FedAvg's bits each way."""
    (metrics_aggregation_fn, input_spec, weights_type, zeros, init_fn, get_hparams_fn, set_hparams_fn,
     client_data_type) = _stateful_parts(model_fn, optimizer, inputs, 'control')  # fmt: skip
    state_type = init_fn.type_signature.result.member

    @tff.tensorflow.computation(state_type, weights_type, client_data_type)
    def client_update(state, initial_weights, client):
        data, client_control = client
        update = model_delta_update(model_fn, inputs.batch_size, weighting=weighting, proximal_strength=0.0)
        stream = inputs.read(data, input_spec)
        offset = tuple(c - c_i for c, c_i in zip(state['control'], client_control))
        result, metrics = update(optimizer, initial_weights, stream, state['hparams'], offset)
        steps = tf.cast(local_training.num_batches(stream, inputs.batch_size), tf.float32)
        trained = tf.logical_and(steps > 0, result.update_weight > 0)  # no examples, or a non-finite update: kept
        scale = tf.math.divide_no_nan(1.0, steps * state['hparams']['learning_rate'])
        delta = tf.nest.flatten(result.update)  # x - y_i
        updated = tuple(c_i - c + d * scale for c_i, c, d in zip(client_control, state['control'], delta))
        new_control = tf.cond(trained, lambda: updated, lambda: tuple(client_control))
        control_delta = tuple(new - old for new, old in zip(new_control, client_control))
        return result, metrics, control_delta, new_control

    @tff.tensorflow.computation(state_type, client_data_type[1])
    def add_control_deltas(state, control_delta_sum):
        control = tuple(c + s / float(num_clients) for c, s in zip(state['control'], control_delta_sum))
        return collections.OrderedDict(hparams=state['hparams'], control=control)

    @tff.federated_computation(
        init_fn.type_signature.result,
        tff.FederatedType(weights_type, tff.CLIENTS),
        tff.FederatedType(client_data_type, tff.CLIENTS),
    )
    def next_fn(state, weights, client_data):
        client_result, model_outputs, control_delta, new_control = tff.federated_map(
            client_update, (tff.federated_broadcast(state), weights, client_data)
        )
        new_state = tff.federated_map(add_control_deltas, (state, tff.federated_sum(control_delta)))
        measurements = tff.federated_zip(collections.OrderedDict(train=metrics_aggregation_fn(model_outputs)))
        return tff.templates.MeasuredProcessOutput(new_state, client_result, measurements), new_control

    return TensorClientWork(init_fn, next_fn, get_hparams_fn, set_hparams_fn, client_state=zeros)


def build_feddyn_client_work(
    model_fn: ModelFn,
    optimizer: tff.learning.optimizers.Optimizer,
    inputs: ClientInputs,
    *,
    weighting: str,
    alpha: float,
    num_clients: int,
) -> TensorClientWork:
    """FedDyn with regularisation strength `alpha` >= 0; `num_clients` is N, the clients that can train. Each client's
    state g_i is its last gradient of the linear term (zeros at first); the server's h and its correction -h / alpha
    of the aggregate are applied in `adjust_aggregate`, so that any server optimizer takes the corrected step (SGD
    with learning rate 1 is the paper's x = mean(y_i) - h / alpha). With alpha = 0 nothing is corrected: FedAvg."""
    (metrics_aggregation_fn, input_spec, weights_type, zeros, init_fn, get_hparams_fn, set_hparams_fn,
     client_data_type) = _stateful_parts(model_fn, optimizer, inputs, 'correction')  # fmt: skip
    state_type = init_fn.type_signature.result.member

    @tff.tensorflow.computation(state_type['hparams'], weights_type, client_data_type)
    def client_update(hparams, initial_weights, client):
        data, gradient_state = client
        update = model_delta_update(model_fn, inputs.batch_size, weighting=weighting, proximal_strength=float(alpha))
        offset = tuple(-g for g in gradient_state)
        result, metrics = update(optimizer, initial_weights, inputs.read(data, input_spec), hparams, offset)
        # g_i - alpha (y_i - x) = g_i + alpha (x - y_i); a non-finite client's delta is zeros: its state is kept
        new_state = tuple(g + alpha * d for g, d in zip(gradient_state, tf.nest.flatten(result.update)))
        return result, metrics, new_state

    @tff.federated_computation(
        init_fn.type_signature.result,
        tff.FederatedType(weights_type, tff.CLIENTS),
        tff.FederatedType(client_data_type, tff.CLIENTS),
    )
    def next_fn(state, weights, client_data):
        client_result, model_outputs, new_states = tff.federated_map(
            client_update, (tff.federated_broadcast(state.hparams), weights, client_data)
        )
        measurements = tff.federated_zip(collections.OrderedDict(
            train=metrics_aggregation_fn(model_outputs),
            clients=tff.federated_sum(tff.federated_value(1, tff.CLIENTS)),  # |P|, for the server's h
        ))  # fmt: skip
        return tff.templates.MeasuredProcessOutput(state, client_result, measurements), new_states

    measurements_type = next_fn.type_signature.result[0].measurements.member

    @tff.tensorflow.computation(state_type, measurements_type, weights_type.trainable)
    def adjust_aggregate(state, measurements, aggregate):
        mean_delta = tf.nest.flatten(aggregate)  # mean(x - y_i) = -mean(y_i - x)
        share = tf.cast(measurements['clients'], tf.float32) / float(num_clients)
        h = tuple(h + alpha * share * d for h, d in zip(state['correction'], mean_delta))
        if alpha > 0:
            mean_delta = [d + h_k / alpha for d, h_k in zip(mean_delta, h)]
        new_state = collections.OrderedDict(hparams=state['hparams'], correction=h)
        return new_state, tf.nest.pack_sequence_as(aggregate, mean_delta)

    return TensorClientWork(
        init_fn, next_fn, get_hparams_fn, set_hparams_fn, adjust_aggregate=adjust_aggregate, client_state=zeros
    )

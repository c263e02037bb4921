"""A learning process from fedlab's fast client work: TFF's `compose_learning_process`, minus its check that
client data is a sequence (the check the fast paths exist to avoid); and `build_for_inputs`, the fork between TFF's
own builder (client_inputs=dataset) and fedlab's client work (tensors, shards) that every algorithm's builder takes."""

import collections
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import tensorflow_federated as tff

from fedlab.algorithms import aggregation
from fedlab.algorithms.templates import algorithm_state, packed_round
from fedlab.algorithms.templates.client_work import TensorClientWork
from fedlab.fast_paths import client_packing
from fedlab.fast_paths.tensor_inputs import ClientInputs
from fedlab.models import ModelFn


class ServerParts(NamedTuple):
    """What a composed process builds around its client work: the model weights' type, TFF's broadcast
    distributor, the update aggregator (None: the algorithm aggregates in its own way, e.g. FedBuff's buffer),
    TFF's apply-optimizer finalizer, and `initialize` (the initial `LearningAlgorithmState` at the server)."""

    weights_type: tff.Type
    distributor: tff.templates.MeasuredProcess
    aggregator: tff.templates.AggregationProcess | None
    finalizer: tff.templates.MeasuredProcess
    initialize: tff.Computation


def server_parts(
    model_fn: ModelFn,
    client_work: TensorClientWork,
    model_aggregator: tff.aggregators.WeightedAggregationFactory | None,
    server_optimizer: tff.learning.optimizers.Optimizer,
) -> ServerParts:
    """The distributor, aggregator (of `model_aggregator`; None: none, and an empty aggregator state), finalizer
    and initial state of a process built around `client_work`."""

    @tff.tensorflow.computation
    def initial_model_weights_fn():
        return tff.learning.models.ModelWeights.from_model(model_fn())

    weights_type = initial_model_weights_fn.type_signature.result
    distributor = tff.learning.templates.build_broadcast_process(weights_type)
    aggregator = None
    if model_aggregator is not None:
        aggregator = model_aggregator.create(weights_type.trainable, tff.TensorType(np.float32))
    finalizer = tff.learning.templates.build_apply_optimizer_finalizer(server_optimizer, weights_type)

    @tff.federated_computation
    def init_fn():
        weights = tff.federated_eval(initial_model_weights_fn, tff.SERVER)
        return tff.federated_zip(
            algorithm_state(
                global_model_weights=weights,
                distributor=distributor.initialize(),
                client_work=client_work.initialize(),
                aggregator=aggregator.initialize() if aggregator else tff.federated_value((), tff.SERVER),
                finalizer=finalizer.initialize(),
            )
        )

    return ServerParts(weights_type, distributor, aggregator, finalizer, init_fn)


def compose(
    model_fn: ModelFn,
    client_work: TensorClientWork,
    model_aggregator: tff.aggregators.WeightedAggregationFactory,
    server_optimizer: tff.learning.optimizers.Optimizer,
) -> tff.learning.templates.LearningProcess:
    """Broadcast the model, run `client_work`, aggregate the updates with `model_aggregator`, and apply the
    aggregate with `server_optimizer` (TFF's apply-optimizer finalizer): the structure, state, metrics and
    hyper-parameters of TFF's own processes, so fedlab reads both the same way. A packed `client_work` (with a
    `group_update`) gets the same round in fewer federated steps (fedlab.algorithms.templates.packed_round)."""
    _, distributor, aggregator, finalizer, init_fn = server_parts(model_fn, client_work, model_aggregator,
                                                                  server_optimizer)
    client_data_type = client_work.next.type_signature.parameter[2]
    stateful = client_work.client_state is not None

    @tff.federated_computation(init_fn.type_signature.result, client_data_type)
    def composed_next_fn(state, client_data):
        distributed = distributor.next(state.distributor, state.global_model_weights)
        trained = client_work.next(state.client_work, distributed.result, client_data)
        if stateful:  # (the round's output, each client's new state)
            trained, client_states = trained[0], trained[1]
        aggregated = aggregator.next(state.aggregator, trained.result.update, trained.result.update_weight)
        client_work_state, update = trained.state, aggregated.result
        if client_work.adjust_aggregate is not None:
            client_work_state, update = tff.federated_map(
                client_work.adjust_aggregate, (trained.state, trained.measurements, aggregated.result)
            )
        finalized = finalizer.next(state.finalizer, state.global_model_weights, update)
        new_state = tff.federated_zip(
            algorithm_state(
                global_model_weights=finalized.result,
                distributor=distributed.state,
                client_work=client_work_state,
                aggregator=aggregated.state,
                finalizer=finalized.state,
            )
        )
        metrics = tff.federated_zip(
            collections.OrderedDict(
                distributor=distributed.measurements,
                client_work=trained.measurements,
                aggregator=aggregated.measurements,
                finalizer=finalized.measurements,
            )
        )
        output = tff.learning.templates.LearningProcessOutput(new_state, metrics)
        return (output, client_states) if stateful else output

    next_fn = composed_next_fn
    if client_work.group_update is not None:  # packed clients: the same round in fewer federated steps
        client_packing.check_linear(model_aggregator)
        next_fn = packed_round.build_next(
            model_fn,
            client_work,
            state_type=init_fn.type_signature.result,
            distributor=distributor,
            aggregator=aggregator,
            finalizer=finalizer,
        )
        if next_fn.type_signature != composed_next_fn.type_signature:
            raise TypeError(
                f'the fused packed round has type {next_fn.type_signature}, not {composed_next_fn.type_signature}'
            )
    state_type = next_fn.type_signature.parameter[0].member
    parts = (init_fn, next_fn, *weights_and_hparams(state_type, client_work, finalizer))
    if stateful:
        return StatefulLearningProcess(*parts, initial_client_state=client_work.client_state)
    get_model_weights_fn, set_model_weights_fn, get_hparams_fn, set_hparams_fn = parts[2:]
    return tff.learning.templates.LearningProcess(
        init_fn,
        next_fn,
        get_model_weights_fn,
        set_model_weights_fn,
        get_hparams_fn=get_hparams_fn,
        set_hparams_fn=set_hparams_fn,
    )


def weights_and_hparams(state_type, client_work: TensorClientWork, finalizer) -> tuple:
    """get_model_weights, set_model_weights, get_hparams and set_hparams of a composed process's state."""

    @tff.tensorflow.computation(state_type)
    def get_model_weights_fn(state):
        return state.global_model_weights

    @tff.tensorflow.computation(state_type, state_type.global_model_weights)
    def set_model_weights_fn(state, model_weights):  # TFF's parameter names: the same type signature
        return algorithm_state(state, global_model_weights=model_weights)

    @tff.tensorflow.computation(state_type)
    def get_hparams_fn(state):
        return collections.OrderedDict(
            client_work=client_work.get_hparams(state.client_work), finalizer=finalizer.get_hparams(state.finalizer)
        )

    @tff.tensorflow.computation(state_type, get_hparams_fn.type_signature.result)
    def set_hparams_fn(state, hparams):
        return algorithm_state(
            state,
            client_work=client_work.set_hparams(state.client_work, hparams['client_work']),
            finalizer=finalizer.set_hparams(state.finalizer, hparams['finalizer']),
        )

    return get_model_weights_fn, set_model_weights_fn, get_hparams_fn, set_hparams_fn


class StatefulLearningProcess(NamedTuple):
    """A learning process whose clients keep state between the rounds they are sampled in (SCAFFOLD, FedDyn):
    TFF's LearningProcess's parts, but `next(state, [(data, client state) per client])` returns
    `(LearningProcessOutput, [each client's new state])`, the second at CLIENTS, which TFF's template does not allow.
    fedlab.run.client_states keeps the states and feeds them to `next`; `initial_client_state` is a client's before
    it first trains."""

    initialize: tff.Computation
    next: tff.Computation
    get_model_weights: tff.Computation
    set_model_weights: tff.Computation
    get_hparams: tff.Computation
    set_hparams: tff.Computation
    initial_client_state: tuple


CLIENT_INPUTS = ('dataset', 'tensors', 'shards')


def fast_inputs(client_inputs: str, batch_size: int, *, packed: bool = False) -> ClientInputs | None:
    """The fast paths' `ClientInputs` for `client_inputs` tensors or shards; None for TFF's dataset path.
    `packed`: each TFF client trains a group of clients (fedlab.fast_paths.client_packing; the fast paths only)."""
    if client_inputs not in CLIENT_INPUTS:
        raise ValueError(f'client_inputs must be dataset, tensors or shards, got {client_inputs!r}')
    if client_inputs == 'dataset':
        if packed:
            raise ValueError('packed clients need client_inputs=shards or tensors')
        return None
    return ClientInputs(batch_size=batch_size, from_shards=client_inputs == 'shards', packed=packed)


def build_own_client_work(
    model_fn: ModelFn,
    server_optimizer: tff.learning.optimizers.Optimizer,
    client_work_builder: Callable[[ClientInputs], TensorClientWork],
    *,
    client_inputs: str,
    batch_size: int,
    weighting: str,
    model_aggregator: aggregation.AggregationFactory | None,
):
    """`build_for_inputs` for an algorithm TFF has no builder for: fedlab's client work on every path, reading
    TFF's datasets into tensors on client_inputs=dataset (`tensor_inputs.stream_of`)."""
    inputs = fast_inputs(client_inputs, batch_size) or ClientInputs(batch_size=batch_size, from_datasets=True)
    aggregation.check_weighting(weighting, model_aggregator)
    work = client_work_builder(inputs)
    return compose(model_fn, work, aggregation.as_weighted(model_aggregator), server_optimizer)


def build_for_inputs(
    model_fn: ModelFn,
    server_optimizer: tff.learning.optimizers.Optimizer,
    tff_builder: Callable[[], tff.learning.templates.LearningProcess],
    client_work_builder: Callable[[ClientInputs], TensorClientWork],
    *,
    client_inputs: str,
    batch_size: int,
    weighting: str,
    model_aggregator: aggregation.AggregationFactory | None,
    pack_clients: bool = False,
) -> tff.learning.templates.LearningProcess:
    """The fork every algorithm's builder shares: `weighting` checked against `model_aggregator` (and, for packed
    clients, that it is a weighted mean: fedlab.fast_paths.client_packing); then on client_inputs=dataset
    `tff_builder()`, TFF's own process, and on tensors or shards `client_work_builder(inputs)` composed with
    `model_aggregator` (as weighted) and `server_optimizer`."""
    aggregation.check_weighting(weighting, model_aggregator)
    if pack_clients:
        client_packing.check_linear(model_aggregator)
    inputs = fast_inputs(client_inputs, batch_size, packed=pack_clients)
    if inputs is None:
        return tff_builder()
    work = client_work_builder(inputs)
    return compose(model_fn, work, aggregation.as_weighted(model_aggregator), server_optimizer)

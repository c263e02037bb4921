"""FedBuff (Nguyen et al. 2022, "Federated Learning with Buffered Asynchronous Aggregation"): clients train from the
model version they downloaded, at their own pace; the server applies its optimizer to the staleness-weighted mean of
every `buffer_size` updates that arrive.

Composed from the templates: TFF's broadcast distributor, fedlab's model-delta client work (any client_inputs path)
and TFF's apply-optimizer finalizer. The buffer between them is the algorithm's own: each client's update is
computed when it starts (from the version it downloads) and waits in a slot of the state until the server applies
it. Who starts and arrives when is the simulated clock's (fedlab.heterogeneity.async_clock.BufferedRounds), given
to the process as its `schedule` before it trains; round r is server update r.
"""

import collections
from typing import NamedTuple

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from fedlab.algorithms.aggregation import NUM_EXAMPLES
from fedlab.algorithms.templates import algorithm_state, client_work, composition
from fedlab.fast_paths.tensor_inputs import ClientInputs
from fedlab.models import ModelFn


class FedBuffState(NamedTuple):
    """The server's state, the number of server updates made, and the updates waiting: `pending[i][slot]` is
    trainable tensor i of the update in `slot`, `pending_weight[slot]` its client weight."""

    server: tff.learning.templates.LearningAlgorithmState
    version: np.ndarray  # int64 scalar
    pending: tuple[np.ndarray, ...]
    pending_weight: np.ndarray


def staleness_weight(staleness: int, exponent: float) -> float:
    """FedBuff's weight of an update `staleness` server updates old: 1 / (1 + s)^exponent (0.5: 1/sqrt(1 + s))."""
    return float((1.0 + staleness) ** -exponent)


def buffered_mean(pending, weights: np.ndarray, arrivals, exponent: float) -> list[np.ndarray]:
    """The server's update: sum over the arrived slots of staleness weight x client weight x update, over the sum of
    the client weights (weighting=uniform: weights 1, the paper's mean over the buffer)."""
    total = float(sum(weights[a.slot] for a in arrivals))
    aggregate = [np.zeros(p.shape[1:], np.float32) for p in pending]
    for arrival in arrivals:
        coefficient = np.float32(staleness_weight(arrival.staleness, exponent) * weights[arrival.slot] / total)
        for sum_, tensor in zip(aggregate, pending):
            sum_ += coefficient * tensor[arrival.slot]
    return aggregate


class BufferedProcess:
    """FedBuff as fedlab's round loop drives a learning process: `initialize()`, `next(state, client_data)` (round r:
    train the clients that start in it, then apply the K updates that arrive), `get_model_weights(state)`, and the
    hyper-parameters of the client optimizer and server optimizer (`get_hparams`, `set_hparams`)."""

    def __init__(self, init_fn, train_fn, apply_fn, weights_parts, *, concurrency: int, buffer_size: int,
                 staleness_exponent: float, client_result_type):
        self._init, self._train, self._apply = init_fn, train_fn, apply_fn
        self._get_weights, self._set_weights, self._get_hparams, self._set_hparams = weights_parts
        self.concurrency, self.buffer_size, self.staleness_exponent = concurrency, buffer_size, staleness_exponent
        self.client_computation = train_fn  # what the ledger walks: the broadcast and the metrics' sums
        self.client_outputs_type = client_result_type  # and what each client sends when it finishes
        self.model_weights_type = init_fn.type_signature.result.member.global_model_weights
        self.schedule = None  # fedlab.heterogeneity.async_clock.BufferedRounds, set before training

    @property
    def slots(self) -> int:
        return self.concurrency + self.buffer_size

    def initialize(self) -> FedBuffState:
        server = self._init()
        trainable = self._get_weights(server).trainable
        return FedBuffState(server, np.int64(0), tuple(np.zeros((self.slots, *np.shape(t)), np.float32)
                                                       for t in trainable), np.zeros(self.slots, np.float32))

    def next(self, state: FedBuffState, client_data) -> tff.learning.templates.LearningProcessOutput:
        update = self.schedule.update(int(state.version) + 1)
        pending = tuple(p.copy() for p in state.pending)
        weights = state.pending_weight.copy()
        client_work_metrics = collections.OrderedDict()
        if update.slots:  # the clients that start now train from this version
            results, client_work_metrics = self._train(state.server, client_data)
            for slot, result in zip(update.slots, results):
                for tensor, value in zip(pending, tf.nest.flatten(result.update)):
                    tensor[slot] = value
                weights[slot] = result.update_weight
        aggregate = buffered_mean(pending, weights, update.arrivals, self.staleness_exponent)
        server, finalizer_metrics = self._apply(state.server, aggregate)
        metrics = collections.OrderedDict(client_work=client_work_metrics, finalizer=finalizer_metrics)
        return tff.learning.templates.LearningProcessOutput(
            FedBuffState(server, np.int64(state.version + 1), pending, weights), metrics)

    def get_model_weights(self, state: FedBuffState):
        return self._get_weights(state.server)

    def get_hparams(self, state: FedBuffState):
        return self._get_hparams(state.server)

    def set_hparams(self, state: FedBuffState, hparams) -> FedBuffState:
        return FedBuffState(self._set_hparams(state.server, hparams), state.version, state.pending,
                            state.pending_weight)


def build_fed_buff(
    model_fn: ModelFn,
    client_optimizer: tff.learning.optimizers.Optimizer,
    server_optimizer: tff.learning.optimizers.Optimizer,
    *,
    concurrency: int = 20,
    buffer_size: int = 10,
    staleness_exponent: float = 0.5,
    model_aggregator=None,
    weighting: str = NUM_EXAMPLES,
    client_inputs: str = 'shards',
    batch_size: int = 20,
) -> BufferedProcess:
    """FedBuff with `concurrency` clients training at once and the server applying every `buffer_size` updates,
    each weighted by 1 / (1 + staleness)^`staleness_exponent` (and by example count with weighting=num_examples).
    `model_aggregator` must be the plain mean (None): the buffer is FedBuff's aggregator (checked before this)."""
    del model_aggregator
    inputs = composition.fast_inputs(client_inputs, batch_size) or ClientInputs(batch_size=batch_size,
                                                                                   from_datasets=True)
    work = client_work.build_model_delta_client_work(model_fn, client_optimizer, inputs, weighting=weighting)
    # No update aggregator: the buffer, in FedBuffState, is FedBuff's.
    weights_type, distributor, _, finalizer, init_fn = composition.server_parts(model_fn, work, None, server_optimizer)
    state_type = init_fn.type_signature.result
    data_type = work.next.type_signature.parameter[2]

    @tff.federated_computation(state_type, data_type)
    def train_fn(state, client_data):
        distributed = distributor.next(state.distributor, state.global_model_weights)
        trained = work.next(state.client_work, distributed.result, client_data)
        return trained.result, trained.measurements

    @tff.federated_computation(state_type, tff.FederatedType(weights_type.trainable, tff.SERVER))
    def apply_fn(state, update):
        finalized = finalizer.next(state.finalizer, state.global_model_weights, update)
        new_state = tff.federated_zip(algorithm_state(
            global_model_weights=finalized.result, distributor=state.distributor, client_work=state.client_work,
            aggregator=state.aggregator, finalizer=finalized.state,
        ))
        return new_state, finalized.measurements

    weights_parts = composition.weights_and_hparams(state_type.member, work, finalizer)
    return BufferedProcess(
        init_fn, train_fn, apply_fn, weights_parts, concurrency=concurrency, buffer_size=buffer_size,
        staleness_exponent=staleness_exponent, client_result_type=train_fn.type_signature.result[0],
    )

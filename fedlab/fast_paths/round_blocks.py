"""Several rounds in one TFF call: the state crosses gRPC into TFF's worker and back once per block of rounds
instead of once per round, with every round's metrics returned.

A block is a `tff.federated_computation` taking the state and, for each of its k rounds, the round's learning-rate
hyper-parameters (at SERVER) and client data (at CLIENTS), and calling the process's `set_hparams` and `next` k
times: the same computations, in the same order, as k separate calls, so every value is bitwise the same (measured
in ../shared/measurements.md; tests/test_efficiency.py checks metrics.csv byte for byte). Every round of a block
must have the same number of clients (TFF infers one CLIENTS cardinality per call); a block is traced once per k
and kept.

`plan` says where blocks end: where the state must come back to Python (an evaluation, a checkpoint, the last
round), where the client count changes, and at `rounds_per_call`. The training loop (fedlab.run.round_loop.RoundLoop) records
each round of a block as before, once the block returns.
"""

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from fedlab.tff_internals import version_gate


@dataclasses.dataclass(frozen=True)
class PlannedRound:
    round_num: int
    client_ids: list[str]


def plan(
    start_round: int,
    last_round: int,
    sampler: Callable[[int], list[str]],
    *,
    rounds_per_call: int,
    state_needed_after: Callable[[int], bool],
) -> list[PlannedRound]:
    """The rounds of the block that starts at `start_round`: up to `rounds_per_call`, ending at `last_round`, at
    the first round after which `state_needed_after` holds, or before the client count changes. A round without
    clients (sampling=poisson) is a block of its own."""
    rounds = [PlannedRound(start_round, sampler(start_round))]
    count = len(rounds[0].client_ids)
    while (
        count
        and len(rounds) < rounds_per_call
        and rounds[-1].round_num < last_round
        and not state_needed_after(rounds[-1].round_num)
    ):
        following = PlannedRound(rounds[-1].round_num + 1, sampler(rounds[-1].round_num + 1))
        if len(following.client_ids) != count:
            break
        rounds.append(following)
    return rounds


class RoundBlocks:
    """Runs blocks of rounds of `process` in single TFF calls; one computation per block length, traced once."""

    def __init__(self, process: tff.learning.templates.LearningProcess, *, resident: bool = False):
        """`resident`: the state stays in TFF's worker between calls (fedlab.tff_internals.resident_state); `next` then takes
        and returns a handle, which `fetch` turns into the state. Where that cannot be (another TFF than
        fedlab.tff_internals.version_gate's, whose one warning says so; a context other than TFF's local one), the
        blocks are plain calls with the state in Python, and `resident` is False."""
        self._process = process
        self._resident = None
        if resident and version_gate.supported():
            from fedlab.tff_internals import resident_state

            self._resident = resident_state.ResidentCaller() if resident_state.available() else None
        state_type, data_type = process.next.type_signature.parameter
        self._state_type = state_type
        self._data_type = data_type
        self._metrics_vector = MetricsVector.of(process.next.type_signature.result.metrics.member)
        self._hparams_type = process.get_hparams.type_signature.result if process.get_hparams else None
        self._computations: dict[tuple[int, bool], tff.Computation] = {}

    def next(self, state, client_data: Sequence, hparams: Sequence | None = None):
        """Trains len(client_data) rounds from `state`: round i on `client_data[i]`, with its hyper-parameters
        set to `hparams[i]` first if given (None: the state's own). Returns (state after the last round, each
        round's metrics as `process.next` returns them)."""
        k = len(client_data)
        computation = self._computation(k, hparams is not None)
        args = [*client_data] + (list(hparams) if hparams is not None else [])
        if self._resident is not None:
            state, metrics = self._resident.call(computation, state, tuple(args))
        else:
            state, *metrics = computation((state, *args))
        if self._metrics_vector is not None:
            metrics = self._metrics_vector.decode(metrics[0], k)
        return state, metrics

    @property
    def resident(self) -> bool:
        return self._resident is not None

    def is_handle(self, state) -> bool:
        return self._resident is not None and self._resident.is_handle(state)

    def fetch(self, state):
        """The state as a Python value, from a handle `next` returned (or the state itself)."""
        return self._resident.fetch(state) if self._resident is not None else state

    def _computation(self, k: int, with_hparams: bool) -> tff.Computation:
        key = (k, with_hparams)
        if key not in self._computations:
            self._computations[key] = self._build(k, with_hparams)
        return self._computations[key]

    def _build(self, k: int, with_hparams: bool) -> tff.Computation:
        process = self._process
        parameter = [self._state_type, *[self._data_type] * k]
        if with_hparams:
            parameter += [tff.FederatedType(self._hparams_type, tff.SERVER)] * k

        @tff.federated_computation(tff.StructType(parameter))  # one argument: TFF has no varargs
        def block(arg):
            state = arg[0]
            client_data = [arg[1 + i] for i in range(k)]
            hparams = [arg[1 + k + i] for i in range(k)] if with_hparams else []
            metrics = []
            for i in range(k):
                if with_hparams:
                    state = tff.federated_map(process.set_hparams, (state, hparams[i]))
                output = process.next(state, client_data[i])
                state = output.state
                metrics.append(output.metrics)
            if self._metrics_vector is not None:
                return state, self._metrics_vector.encode(metrics)
            return (state, *metrics)

        return block


class MetricsVector:
    """A block's metrics, every round's, as one float64 vector at SERVER: TFF's worker returns a result leaf by
    leaf (measured: fetching 5 rounds' metrics of FedAvg on linear, 30 scalars, took 8 ms of a 55 ms block; one
    vector, one leaf). Exact: float64 holds every float32, bool and integer below 2**53 (counts) as it is, and
    `decode` casts each value back to its leaf's dtype. `of` returns None for metrics with other dtypes."""

    EXACT_DTYPES = (np.float32, np.float64, np.int32, np.int64, np.bool_)

    def __init__(self, metrics_type: tff.types.Type, specs):
        """Use `of`. `specs`: the metrics' TensorSpecs in the Python containers TFF returns."""
        self._type = metrics_type
        self._specs = specs
        self._leaves = tf.nest.flatten(specs)
        self._encoders: dict[int, tff.Computation] = {}

    @classmethod
    def of(cls, metrics_type: tff.types.Type) -> 'MetricsVector | None':
        try:
            specs = tff.types.type_to_tf_tensor_specs(metrics_type)
        except (TypeError, ValueError):  # e.g. a structure without Python containers: the plain results
            return None
        leaves = tf.nest.flatten(specs)
        exact = all(spec.dtype.as_numpy_dtype in cls.EXACT_DTYPES and spec.shape.is_fully_defined() for spec in leaves)
        return cls(metrics_type, specs) if leaves and exact else None

    def encode(self, metrics: list):
        """In a federated computation: the rounds' metrics (each at SERVER) as one vector at SERVER."""
        k = len(metrics)
        if k not in self._encoders:

            @tff.tensorflow.computation(tff.types.StructWithPythonType([self._type] * k, tuple))
            def to_vector(rounds):
                leaves = [leaf for round_metrics in rounds for leaf in tf.nest.flatten(round_metrics)]
                return tf.concat([tf.reshape(tf.cast(leaf, tf.float64), [-1]) for leaf in leaves], axis=0)

            self._encoders[k] = to_vector
        return tff.federated_map(self._encoders[k], tff.federated_zip(tuple(metrics)))

    def decode(self, vector: np.ndarray, k: int) -> list:
        """The k rounds' metrics, with the containers and dtypes `process.next` returns."""
        rounds, offset = [], 0
        for _ in range(k):
            values = []
            for spec in self._leaves:
                size = spec.shape.num_elements()
                value = vector[offset : offset + size].astype(spec.dtype.as_numpy_dtype).reshape(spec.shape)
                values.append(value[()] if spec.shape.rank == 0 else value)
                offset += size
            rounds.append(tf.nest.pack_sequence_as(self._specs, values))
        return rounds

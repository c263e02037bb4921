"""The training state kept in TFF's worker between calls, and each computation sent to it once.

TFF's sync context sends the whole computation and the state to its C++ worker on every call and fetches the
whole result back (6.6 MB each way for fedavg_cnn). TFF 0.87 has no public API to avoid either, so this module
reaches into its internals: the sync context's async context (its compiler pipeline, executor
factory and event loop). A call here compiles the computation once, creates it in the worker's executor once,
passes the state as the executor value the previous call left there, and fetches only the other results; the
state comes back to Python only when `fetch` is called (evaluation, checkpoint, the end of the run).

Fallbacks to the plain path: a call whose client count differs from the state's (another executor) fetches the
state first; a call that fails (the worker restarted, and its values died with it) is retried from the last
state Python holds, replaying the calls since then (a first call that fails on an executor an earlier run left
behind, whose worker is gone, is run again the same way, as TFF's own calls are). That log is bounded: after
REPLAY_CALLS calls, or once their arguments pass REPLAY_BYTES (client_inputs=tensors sends the pixels), the state
is fetched into Python again. Replaying repeats the same computations on the same inputs, so it gives the same
values, except under a DP aggregator, whose noise TFF draws unseeded (fedlab.config.efficiency keeps the state in Python
there). On any other TFF than fedlab.tff_internals.version_gate's, importing this module raises ImportError:
fedlab.fast_paths.round_blocks asks the gate first and uses the plain path (the state in Python, `computation(...)`).
"""

import dataclasses
import logging

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from fedlab.tff_internals import version_gate

# Checked before the private modules are imported: on another TFF they may not exist, or differ.
if not version_gate.supported():
    raise ImportError(
        f'fedlab.tff_internals.resident_state uses internals of TFF {version_gate.SUPPORTED_TFF}; '
        f'TFF {version_gate.installed_tff()} is installed'
    )

from tensorflow_federated.python.core.impl.execution_contexts import (  # noqa: E402
    async_execution_context,
    sync_execution_context,
)
from tensorflow_federated.python.core.impl.types import type_conversions  # noqa: E402

# The replay log's bounds: one state fetch per REPLAY_CALLS calls costs little; the log must not keep a long run's
# client data alive.
REPLAY_CALLS = 20
REPLAY_BYTES = 256 * 2**20

log = logging.getLogger(__name__)


@dataclasses.dataclass
class _Resident:
    """A state living in one executor of TFF's worker."""

    value: object  # the executor's value
    executor: object
    state_type: object  # its TFF type, with Python containers


def available() -> bool:
    """Whether the current TFF context is the local sync context this module knows (not runtime=remote's)."""
    return isinstance(tff.framework.get_context_stack().current, sync_execution_context.SyncExecutionContext)


class ResidentCaller:
    """Calls computations `(state, *args) -> (state, *results)` with the state kept in the worker.

    `call` returns (a handle to the new state, the other results as Python values); `fetch(handle)` returns
    the state as `computation(...)` would have. Handles may be passed to any computation of this caller whose
    state type is the same."""

    def __init__(self):
        context = tff.framework.get_context_stack().current
        self._context = context._async_context
        self._runner = context._async_runner
        self._compiled: dict[int, tuple] = {}  # id(computation) -> (computation, compiled, result type)
        self._sent: dict[tuple[int, int], object] = {}  # (id(executor), id(computation)) -> executor value
        self._python_state = None  # the last state Python holds, and the calls since (for a replay)
        self._since: list[tuple] = []
        self._since_bytes = 0

    def call(self, computation: tff.Computation, state, args: tuple):
        if not isinstance(state, _Resident):
            self._python_state, self._since, self._since_bytes = state, [], 0
        self._since.append((computation, args))
        self._since_bytes += _nbytes(args)
        try:
            new_state, results = self._runner.run_coro_and_return_result(self._call(computation, state, args))
        except Exception as error:  # the worker restarted (its values died with it), or the call itself fails
            # With a Python state this is an executor whose worker an earlier run stopped: TFF retries those quietly.
            if isinstance(state, _Resident):
                log.warning(
                    "a call with the state in TFF's worker failed (%s): running the last %d calls again the plain way",
                    str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__,
                    len(self._since),
                )
            return self._replay()
        if len(self._since) >= REPLAY_CALLS or self._since_bytes >= REPLAY_BYTES:
            self.fetch(new_state)  # a fresh start for a replay; the state stays in the worker too
        return new_state, results

    def _replay(self):
        """The calls since the last state Python holds, again in plain calls: after a worker restart, whose values
        (the state) died with it, they give the same values; a call that itself fails raises its error there."""
        state, results = self._python_state, None
        for logged, logged_args in self._since:
            state, *results = logged((state, *logged_args))
        self._python_state, self._since, self._since_bytes = state, [], 0
        return state, results

    @staticmethod
    def is_handle(state) -> bool:
        return isinstance(state, _Resident)

    def fetch(self, state):
        """The state as a Python value (a state Python holds is returned as it is)."""
        if not isinstance(state, _Resident):
            return state
        value = self._runner.run_coro_and_return_result(state.value.compute())
        python_state = self._context._transform_result(type_conversions.type_to_py_container(value, state.state_type))
        self._python_state, self._since, self._since_bytes = python_state, [], 0
        return python_state

    @property
    def calls_since_fetch(self) -> int:
        return len(self._since)

    async def _call(self, computation, state, args):
        original, compiled, result_type = self._compile(computation)
        parameter_type = compiled.type_signature.parameter
        python_args = self._context._transform_args(tuple(args))
        cardinalities = self._context._cardinality_inference_fn(python_args, tff.StructType(list(parameter_type)[1:]))
        factory = self._context._executor_factory
        executor = factory.create_executor(cardinalities)
        try:
            return await self._call_on(executor, original, compiled, result_type, state, python_args)
        except Exception:  # as TFF's own invoke does: the next call gets a new executor (and worker, if it died)
            factory.clean_up_executor(cardinalities)
            self._sent = {key: value for key, value in self._sent.items() if key[0] != id(executor)}
            raise

    async def _call_on(self, executor, original, compiled, result_type, state, python_args):
        parameter_type = compiled.type_signature.parameter
        state_type = result_type[0]
        if isinstance(state, _Resident) and state.executor is not executor:  # another client count
            state = await state.value.compute()  # the raw value, ingested below like any other
        key = (id(executor), id(original))
        if key not in self._sent:
            self._sent[key] = await executor.create_value(compiled, compiled.type_signature)
        state_value = (
            state.value
            if isinstance(state, _Resident)
            else await async_execution_context._ingest(executor, state, parameter_type[0])
        )
        arg_values = [
            await async_execution_context._ingest(executor, value, parameter_type[1 + i])
            for i, value in enumerate(python_args)
        ]
        arg = await executor.create_struct([state_value, *arg_values])
        result = await executor.create_call(self._sent[key], arg)
        new_state = await executor.create_selection(result, 0)
        results = []
        for i in range(1, len(result_type)):
            value = await (await executor.create_selection(result, i)).compute()
            results.append(
                self._context._transform_result(type_conversions.type_to_py_container(value, result_type[i]))
            )
        return _Resident(new_state, executor, state_type), results

    def _compile(self, computation):
        if id(computation) not in self._compiled:
            compiled = self._context._compiler_pipeline.compile(computation)
            self._compiled[id(computation)] = (computation, compiled, computation.type_signature.result)
        return self._compiled[id(computation)]


def _nbytes(args) -> int:
    return sum(np.asarray(leaf).nbytes for leaf in tf.nest.flatten(args) if isinstance(leaf, np.ndarray | tf.Tensor))

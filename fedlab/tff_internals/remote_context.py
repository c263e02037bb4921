"""runtime=remote: TFF computations run on TFF worker services (`fedlab-worker`) on other machines.

TFF 0.87 has no public API for this, so this module reaches into TFF's internals: it builds, for each worker, the
context TFF's local C++ context is made of (`RemoteExecutor` over a gRPC stub, in an `AsyncExecutionContext`), but
pointed at the worker's address instead of a child process; and it runs them under TFF's
`create_mergeable_comp_execution_context`, which splits each call's clients into contiguous chunks, one per worker,
and merges the chunks' aggregates. These are `tff.framework` names, but what this module relies on (how the remote
executor blocks, retries and disposes, the cardinalities its stack expects) is how TFF 0.87 works inside, checked
against no other: on any other TFF than fedlab.tff_internals.version_gate's, importing this module raises
ImportError, and fedlab.runtime refuses runtime=remote in one line before it gets here.

What it adds to TFF's pieces: TLS channels when runtime.tls is set (fedlab-worker's mutual TLS); a worker that
dies, cannot be reached or refuses this client raises `fedlab.errors.WorkerLost` naming it, instead of TFF retrying
forever (fedlab.remote.reachability tells a refusal, reported at once, from a worker not answering yet); and
each worker's calls run in a thread of their own, so that the workers compute their chunks at the same time
(TFF's remote executor makes blocking gRPC calls inside its coroutines).
"""

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator, Sequence

import grpc
import tensorflow_federated as tff

from fedlab.errors import WorkerLost
from fedlab.remote import reachability
from fedlab.tff_internals import version_gate

if not version_gate.supported():
    raise ImportError(
        f'fedlab.tff_internals.remote_context uses internals of TFF {version_gate.SUPPORTED_TFF}, and TFF '
        f'{version_gate.installed_tff()} is installed: runtime=remote needs checking against this TFF (see the module '
        f'docstring), or TFF {version_gate.SUPPORTED_TFF}'
    )

# As TFF's local context: values (model weights, client data) cross gRPC in single messages of up to 2 GB.
_GRPC_OPTIONS = [
    ('grpc.max_message_length', 2_000_000_000),
    ('grpc.max_receive_message_length', 2_000_000_000),
    ('grpc.max_send_message_length', 2_000_000_000),
]
# The worker is gone (refused, reset, no route); DEADLINE_EXCEEDED only arises when connecting, where we set one.
_LOST_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


def _rpc_code(error: grpc.RpcError) -> grpc.StatusCode | None:
    return error.code() if isinstance(error, grpc.Call) else None


class _WorkerStub(tff.framework.RemoteExecutorGrpcStub):
    """TFF's gRPC stub for one worker, which names the worker when it is lost.

    An UNAVAILABLE call waits up to `reconnect_timeout` seconds for the worker to answer again: if it does (a
    network blip, or the worker restarted), TFF retries the whole call, with a new executor, as it does locally;
    if not, the call raises WorkerLost. Disposing of values on a lost worker is a no-op: they died with it.
    """

    def __init__(self, address: str, *, reconnect_timeout: float, credentials: grpc.ChannelCredentials | None):
        self.address = address
        self._reconnect_timeout = reconnect_timeout
        self._unavailable_since: float | None = None  # the first failed call since the last that succeeded
        self._channel = (grpc.secure_channel(address, credentials, _GRPC_OPTIONS) if credentials is not None
                         else grpc.insecure_channel(address, _GRPC_OPTIONS))
        super().__init__(self._channel)

    @property
    def _port(self) -> str:
        return self.address.rpartition(':')[2]

    def answers_within(self, timeout: float) -> bool:
        try:
            grpc.channel_ready_future(self._channel).result(timeout=timeout)
            return True
        except grpc.FutureTimeoutError:
            return False

    def wait_until_reachable(self, timeout: float) -> None:
        reachability.wait_until_reachable(self._channel, self.address, timeout)

    @contextlib.contextmanager
    def _naming_the_worker(self) -> Iterator[None]:
        try:
            yield
        except grpc.RpcError as error:
            if _rpc_code(error) not in _LOST_CODES:
                raise
            # Just after a connection breaks, the channel may still report READY: time from the first failure.
            now = time.monotonic()
            self._unavailable_since = self._unavailable_since or now
            remaining = self._unavailable_since + self._reconnect_timeout - now
            if remaining > 0 and self.answers_within(remaining):
                raise  # it answers again: TFF retries the call (with a new executor), as it does locally
            reason = (error.details() or '').rpartition(': ')[2]  # gRPC's last words, e.g. Connection refused (111)
            raise WorkerLost(
                f'TFF worker {self.address} is lost: no answer for {self._reconnect_timeout:g} s'
                f' ({_rpc_code(error).name}: {reason}); start `fedlab-worker --port {self._port}` there again and'
                ' resume the run'
            ) from None
        self._unavailable_since = None

    def get_executor(self, request):
        with self._naming_the_worker():
            return super().get_executor(request)

    def create_value(self, request):
        with self._naming_the_worker():
            return super().create_value(request)

    def create_struct(self, request):
        with self._naming_the_worker():
            return super().create_struct(request)

    def create_call(self, request):
        with self._naming_the_worker():
            return super().create_call(request)

    def create_selection(self, request):
        with self._naming_the_worker():
            return super().create_selection(request)

    def compute(self, request):
        with self._naming_the_worker():
            return super().compute(request)

    def dispose(self, request):
        with contextlib.suppress(grpc.RpcError):  # called from finalizers too, where raising helps no one
            return super().dispose(request)

    def dispose_executor(self, request):
        with contextlib.suppress(grpc.RpcError):
            return super().dispose_executor(request)

    def close(self) -> None:
        self._channel.close()


def _worker_context(stub: _WorkerStub) -> tff.framework.AsyncExecutionContext:
    """The context TFF's local C++ context is built from, over `stub` instead of a local child process."""

    def executor_stack(cardinalities):
        cardinalities.setdefault(tff.CLIENTS, 0)  # as TFF's local stack: a call with no client values
        executor = tff.framework.RemoteExecutor(stub)
        executor.set_cardinalities(cardinalities)
        return executor

    return tff.framework.AsyncExecutionContext(
        tff.framework.ResourceManagingExecutorFactory(executor_stack_fn=executor_stack),
        compiler_fn=tff.backends.native.desugar_and_transform_to_native,
        transform_args=tff.tensorflow.transform_args,
        transform_result=tff.tensorflow.transform_result,
    )


class _OwnThreadContext(tff.framework.AsyncContext):
    """Runs another async context's calls on an event loop in a thread of its own.

    TFF's RemoteExecutor blocks its event loop during each gRPC call (a round's `compute` lasts the whole chunk),
    so contexts sharing one loop would take turns; on loops of their own, the workers compute at the same time.
    """

    def __init__(self, context: tff.framework.AsyncContext, name: str):
        self._context = context
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=name, daemon=True)
        self._thread.start()

    async def invoke(self, comp, arg):
        future = asyncio.run_coroutine_threadsafe(self._context.invoke(comp, arg), self._loop)
        return await asyncio.wrap_future(future)

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)


@contextlib.contextmanager
def remote_execution(
    workers: Sequence[str], *, connect_timeout: float = 30.0, reconnect_timeout: float = 10.0,
    credentials: grpc.ChannelCredentials | None = None,
) -> Iterator[tff.framework.SyncContext]:
    """Within the block, TFF computations called from this thread run on `workers` ('host:port' each), over TLS
    with `credentials` (grpc.ssl_channel_credentials), else plain gRPC.

    Every worker must answer within `connect_timeout` seconds first, or WorkerLost names the first that does not
    (at once for one that refuses the connection or this client's TLS). Each call's clients are split into
    len(workers) contiguous chunks, in the order given; chunks are computed in parallel and their aggregates
    merged, so results equal the local context's up to summation order.
    """
    stubs = [_WorkerStub(address, reconnect_timeout=reconnect_timeout, credentials=credentials)
             for address in workers]
    contexts = []
    try:
        for stub in stubs:
            stub.wait_until_reachable(connect_timeout)
        contexts = [_OwnThreadContext(_worker_context(stub), name=f'tff-worker {stub.address}') for stub in stubs]
        context = tff.backends.native.create_mergeable_comp_execution_context(contexts)
        with tff.framework.get_context_stack().install(context):
            yield context
    finally:
        for own_thread in contexts:
            own_thread.close()
        for stub in stubs:
            stub.close()

"""Stops the C++ `worker_binary` that TFF's default execution context starts and never stops itself."""

import contextlib
import gc
import os
import signal
import subprocess
import sys
import threading
import time

WORKER_NAME = 'worker_binary'

# Runs in a separate small process per worker: it blocks reading a pipe whose write end only fedlab holds.
# When fedlab dies, even by SIGKILL, the pipe closes and the watchdog kills the worker if it still runs.
_WATCHDOG = """
import os, signal, sys
pid = int(sys.argv[1])
sys.stdin.buffer.read()
try:
    with open(f'/proc/{pid}/cmdline', 'rb') as f:
        if b'worker_binary' in f.read():
            os.kill(pid, signal.SIGKILL)
except (OSError, ProcessLookupError):
    pass
"""


def child_workers(parent_pid: int | None = None) -> list[int]:
    """PIDs of TFF worker processes whose parent is `parent_pid` (default: this process)."""
    parent_pid = os.getpid() if parent_pid is None else parent_pid
    pids = []
    for entry in os.scandir('/proc'):
        if not entry.name.isdigit():
            continue
        try:
            with open(f'/proc/{entry.name}/stat') as f:
                stat = f.read()
        except OSError:  # The process ended while we looked.
            continue
        # Format: pid (comm) state ppid ...; comm may contain spaces, so split after the last ')'.
        comm = stat[stat.index('(') + 1 : stat.rindex(')')]
        ppid = int(stat[stat.rindex(')') + 2 :].split()[1])
        if ppid == parent_pid and comm.startswith(WORKER_NAME[:15]):  # comm is cut to 15 characters
            pids.append(int(entry.name))
    return pids


def workers_with_env(marker: str) -> list[int]:
    """Live TFF workers (anyone's child, or orphaned) whose environment contains `marker`.

    Tests and benchmarks start fedlab with a unique variable in its environment, which its worker inherits,
    to find workers that fedlab left running.
    """
    found = []
    for entry in os.scandir('/proc'):
        if not entry.name.isdigit():
            continue
        try:
            with open(f'/proc/{entry.name}/cmdline', 'rb') as f:
                cmdline = f.read()
            with open(f'/proc/{entry.name}/environ', 'rb') as f:
                environ = f.read()
        except OSError:
            continue
        if WORKER_NAME.encode() in cmdline and marker.encode() in environ:
            found.append(int(entry.name))
    return found


def _stop(pid: int, wait, timeout: float) -> None:
    """SIGINT (how TFF stops its worker), then SIGKILL if it is still running after `timeout`."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGINT)
    deadline = time.monotonic() + timeout
    while not wait(block=False):
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            wait(block=True)
            return
        time.sleep(0.02)


def _tff_service_managers() -> list:
    """TFF's per-context managers of the local worker (TFF 0.87 keeps the Popen in `_process`)."""
    if 'tensorflow_federated' not in sys.modules:  # Nothing can have started a worker.
        return []
    return [o for o in gc.get_objects() if type(o).__name__ == 'ServiceManager' and hasattr(o, '_process')]


def stop_workers(timeout: float = 5.0) -> list[int]:
    """Stops the TFF workers this process started and returns their pids.

    Each is stopped through TFF's own manager, which is then reset: TFF's finalizer has nothing left to
    kill, and a later computation starts a fresh worker. Any other child worker is stopped by pid.
    """
    stopped = []
    for manager in _tff_service_managers():
        process = manager._process
        if isinstance(process, subprocess.Popen) and process.poll() is None:
            _stop(process.pid, lambda block: process.wait() if block else process.poll() is not None, timeout)
            stopped.append(process.pid)
        manager._process, manager._stub = None, None
        # TFF's finalizer would kill the worker only if it ran before interpreter teardown, which it
        # rarely does; fedlab stops workers itself, so the finalizer has nothing left to do.
        type(manager).__del__ = lambda self: None

    def reaped(pid, block):
        try:
            return os.waitpid(pid, 0 if block else os.WNOHANG)[0] != 0
        except ChildProcessError:  # Not our child any more, or already reaped.
            return True

    for pid in child_workers():
        _stop(pid, lambda block, pid=pid: reaped(pid, block), timeout)
        stopped.append(pid)
    return stopped


class _Watchdogs:
    """Gives every TFF worker this process starts a watchdog, checking for new workers periodically."""

    def __init__(self, interval: float = 0.5):
        self._interval = interval
        self._watchdogs: dict[int, subprocess.Popen] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name='tff-worker-watchdogs', daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(self._interval):
            for pid in child_workers():
                if pid not in self._watchdogs:
                    self._watchdogs[pid] = subprocess.Popen(
                        [sys.executable, '-c', _WATCHDOG, str(pid)],
                        stdin=subprocess.PIPE,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                        start_new_session=True,  # Ctrl-C in the terminal must not reach it first
                    )

    def stop(self) -> None:
        """Ends the watchdogs without letting them act (the workers are stopped by stop_workers)."""
        self._stop.set()
        self._thread.join()
        for watchdog in self._watchdogs.values():
            watchdog.kill()
            watchdog.wait()
            watchdog.stdin.close()


@contextlib.contextmanager
def worker_cleanup():
    """Runs the body, then stops TFF workers whatever happened: success, error, Ctrl-C, SIGTERM or SystemExit.
    While the body runs, each worker has a watchdog that stops it if this process is killed outright (SIGKILL)."""
    from fedlab.run import interrupts

    watchdogs = _Watchdogs()
    watchdogs.start()
    try:
        yield
    finally:
        with interrupts.uncuttable():  # a Ctrl-C here must not leave a worker running
            stop_workers()
            watchdogs.stop()  # after the workers: if fedlab is killed meanwhile, the watchdogs still act


# Variables added to the environment of the workers TFF starts from now on (see `set_intra_op_threads`).
_worker_environment: dict[str, str] = {}


def set_intra_op_threads(threads: int | None) -> None:
    """The threads per TensorFlow op in the TFF workers started from now on (a running one keeps its own); None:
    TensorFlow's default (one per core) or the user's TF_NUM_INTRAOP_THREADS.

    The worker already runs clients (or packed groups) in parallel, one per core; splitting each of their small ops
    among threads on top mostly hands work between threads (1 was faster for every model, packed: docs/performance.md).
    Installs `shield_workers_from_terminal_signals`, whose Popen passes the environment."""
    shield_workers_from_terminal_signals()
    _worker_environment.pop('TF_NUM_INTRAOP_THREADS', None)
    if threads is not None:
        _worker_environment['TF_NUM_INTRAOP_THREADS'] = str(threads)


class _OwnSessionPopen(subprocess.Popen):
    """Popen that starts the child in a session of its own, out of the terminal's process group, with
    `_worker_environment` added to its environment."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault('start_new_session', True)
        if _worker_environment:
            kwargs['env'] = {**(kwargs.get('env') or os.environ), **_worker_environment}
        super().__init__(*args, **kwargs)


def shield_workers_from_terminal_signals() -> None:
    """Makes TFF start its worker in a session of its own, so that a Ctrl-C typed in the terminal (sent to the whole
    foreground process group) reaches fedlab only: fedlab finishes the round, then stops the worker itself.

    TFF 0.87 starts the worker with the `subprocess` module of its executor_factory, with no way to pass Popen
    options; this swaps in a `subprocess` whose Popen starts a new session. Checked against TFF's version, because
    it reaches into TFF's internals.
    """
    import types

    import tensorflow_federated as tff
    from tensorflow_federated.python.core.impl.executor_stacks import executor_factory

    if tff.__version__ != SHIELDED_TFF_VERSION:
        raise RuntimeError(
            f'fedlab.run.worker_processes.shield_workers_from_terminal_signals knows TFF {SHIELDED_TFF_VERSION}, not {tff.__version__}'
        )
    if executor_factory.subprocess is not subprocess:  # already shielded
        return
    shielded = types.ModuleType('subprocess')
    shielded.__dict__.update(subprocess.__dict__)
    shielded.Popen = _OwnSessionPopen
    executor_factory.subprocess = shielded


SHIELDED_TFF_VERSION = '0.87.0'

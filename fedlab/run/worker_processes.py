"""Stops the C++ `worker_binary` that TFF's default execution context starts and never stops itself, and sets how
it starts.

Finding and stopping workers by pid reads /proc; stopping them through TFF's manager, the worker's own session and
its environment (intra_op_threads) need TFF's internals (fedlab.tff_internals.worker_launch), used only where
fedlab.tff_internals.version_gate says the installed TFF is the one they are written for.
"""

import contextlib
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


def stop_workers(timeout: float = 5.0) -> list[int]:
    """Stops the TFF workers this process started and returns their pids.

    Each is stopped through TFF's own manager, which is then reset: TFF's finalizer has nothing left to
    kill, and a later computation starts a fresh worker. Any other child worker is stopped by pid. On another TFF
    than the gate's, every one is, and TFF's default local context is then made anew through its public API, so
    that a later computation in this process (the next job of an in-process sweep) starts a fresh worker instead
    of reaching for the stopped one."""
    stopped = []
    internals = False
    if 'tensorflow_federated' in sys.modules:  # else nothing can have started a worker (and TFF stays unloaded)
        from fedlab.tff_internals import version_gate

        internals = version_gate.supported()
        if internals:
            from fedlab.tff_internals import worker_launch

            stopped += worker_launch.stop_managed_workers(_stop, timeout)

    def reaped(pid, block):
        try:
            return os.waitpid(pid, 0 if block else os.WNOHANG)[0] != 0
        except ChildProcessError:  # Not our child any more, or already reaped.
            return True

    by_pid = child_workers()
    for pid in by_pid:
        _stop(pid, lambda block, pid=pid: reaped(pid, block), timeout)
        stopped.append(pid)
    if by_pid and 'tensorflow_federated' in sys.modules and not internals:
        import tensorflow_federated as tff

        tff.backends.native.set_sync_local_cpp_execution_context()
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


def set_intra_op_threads(threads: int | None) -> None:
    """The threads per TensorFlow op in the TFF workers started from now on (a running one keeps its own); None:
    TensorFlow's default (one per core) or the user's TF_NUM_INTRAOP_THREADS.

    The worker already runs clients (or packed groups) in parallel, one per core; splitting each of their small ops
    among threads on top mostly hands work between threads (1 was faster for every model, packed: docs/performance.md).
    Also starts the worker in a session of its own, out of reach of a Ctrl-C typed in the terminal
    (fedlab.tff_internals.worker_launch, whose Popen passes the environment). Both need TFF's internals: on another
    TFF than fedlab.tff_internals.version_gate's (whose one warning says so) neither is done, and the worker starts
    with TensorFlow's default threads, in the terminal's process group."""
    from fedlab.tff_internals import version_gate, worker_launch

    if not version_gate.supported():
        worker_launch.set_worker_variable('TF_NUM_INTRAOP_THREADS', None)  # none for the worker (fedlab's own dict)
        return
    worker_launch.shield_workers_from_terminal_signals()
    worker_launch.set_worker_variable('TF_NUM_INTRAOP_THREADS', None if threads is None else str(threads))

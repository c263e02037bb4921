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


class _Terminated(BaseException):
    """Raised in the main thread on SIGTERM so that cleanup code runs as it does for Ctrl-C."""


_signals_received: list[int] = []


def raise_if_signalled() -> None:
    """Raises again for a SIGINT or SIGTERM whose exception was lost.

    A signal's exception is raised wherever the main thread is; if that is a finalizer (TFF disposes of
    its remote values in weakref callbacks, with a gRPC call), Python prints "Exception ignored" and
    carries on. Called between rounds, this stops the run after the round at the latest.
    """
    if _signals_received:
        raise _Terminated() if _signals_received[-1] == signal.SIGTERM else KeyboardInterrupt()


@contextlib.contextmanager
def worker_cleanup():
    """Runs the body, then stops TFF workers whatever happened: success, error, Ctrl-C or SIGTERM.

    SIGTERM becomes exit status 143 and Ctrl-C 130, after the body's own cleanup has run. While the body
    runs, each worker has a watchdog that stops it if this process is killed outright (SIGKILL).
    """

    def on_signal(signum, frame):
        _signals_received.append(signum)
        raise_if_signalled()

    previous = {signum: signal.signal(signum, on_signal) for signum in (signal.SIGTERM, signal.SIGINT)}
    watchdogs = _Watchdogs()
    watchdogs.start()
    try:
        yield
    except _Terminated:
        raise SystemExit(128 + signal.SIGTERM)
    except KeyboardInterrupt:
        raise SystemExit(128 + signal.SIGINT)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _signals_received.clear()
        watchdogs.stop()
        stop_workers()


@contextlib.contextmanager
def job_cleanup():
    """For a sweep job that a Hydra launcher runs in a process of its own (submitit, Ray, joblib), where `main()`
    and its `worker_cleanup` never run: stops the TFF workers the job started when the job ends, and gives each a
    watchdog meanwhile, as that process may be killed outright. Signals stay the launcher's (submitit requeues on
    them), and the process may live on to run other jobs (Ray reuses its workers)."""
    watchdogs = _Watchdogs()
    watchdogs.start()
    try:
        yield
    finally:
        watchdogs.stop()
        stop_workers()

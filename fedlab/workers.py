"""Stops the C++ `worker_binary` that TFF's default execution context starts and never stops itself."""

import contextlib
import gc
import os
import signal
import subprocess
import sys
import time

WORKER_NAME = 'worker_binary'


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


class _Terminated(BaseException):
    """Raised in the main thread on SIGTERM so that cleanup code runs as it does for Ctrl-C."""


@contextlib.contextmanager
def worker_cleanup():
    """Runs the body, then stops TFF workers whatever happened: success, error, Ctrl-C or SIGTERM.

    SIGTERM becomes exit status 143 and Ctrl-C 130, after the body's own cleanup has run.
    """

    def on_sigterm(signum, frame):
        raise _Terminated()

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    except _Terminated:
        raise SystemExit(128 + signal.SIGTERM)
    except KeyboardInterrupt:
        raise SystemExit(128 + signal.SIGINT)
    finally:
        signal.signal(signal.SIGTERM, previous)
        stop_workers()

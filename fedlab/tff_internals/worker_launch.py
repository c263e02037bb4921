"""How TFF starts and keeps its local C++ worker, changed where fedlab needs it: TFF 0.87 offers no option for either.

- The worker starts in a session of its own, with variables fedlab adds to its environment (intra_op_threads):
  TFF starts it with the `subprocess` module of its private executor_factory module, with no way to pass Popen
  options, so `shield_workers_from_terminal_signals` swaps in a `subprocess` whose Popen does both.
- The worker is stopped through TFF's own manager of it (a `ServiceManager`, whose Popen and stub are private
  attributes), which is then reset, so that a later computation in the process starts a fresh worker.

Callers (fedlab.run.worker_processes) ask fedlab.tff_internals.version_gate first; on another TFF they use neither:
TFF's own Popen starts the worker (in the terminal's process group, with the environment as it is), and the worker
is stopped by pid alone.
"""

import gc
import os
import subprocess
import sys
import types
from collections.abc import Callable

# Variables added to the environment of the workers TFF starts from now on (see `set_worker_variable`).
_worker_environment: dict[str, str] = {}


def set_worker_variable(name: str, value: str | None) -> None:
    """`name=value` in the environment of the workers started from now on (None: not set by fedlab)."""
    if value is None:
        _worker_environment.pop(name, None)
    else:
        _worker_environment[name] = value


def worker_environment() -> dict[str, str]:
    """The variables fedlab adds to a new worker's environment."""
    return dict(_worker_environment)


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
    foreground process group) reaches fedlab only: fedlab finishes the round, then stops the worker itself. The
    worker also gets `_worker_environment`. Idempotent. Only on the TFF version_gate supports."""
    from tensorflow_federated.python.core.impl.executor_stacks import executor_factory

    if executor_factory.subprocess is not subprocess:  # already shielded
        return
    shielded = types.ModuleType('subprocess')
    shielded.__dict__.update(subprocess.__dict__)
    shielded.Popen = _OwnSessionPopen
    executor_factory.subprocess = shielded


def _tff_service_managers() -> list:
    """TFF's per-context managers of the local worker (TFF 0.87 keeps the Popen in `_process`)."""
    if 'tensorflow_federated' not in sys.modules:  # Nothing can have started a worker.
        return []
    return [o for o in gc.get_objects() if type(o).__name__ == 'ServiceManager' and hasattr(o, '_process')]


def stop_managed_workers(stop: Callable[[int, Callable[[bool], bool], float], None], timeout: float) -> list[int]:
    """Stops the workers TFF's managers started, with `stop(pid, wait, timeout)`, resets the managers, and returns
    the pids. Only on the TFF version_gate supports.

    Reset, TFF's finalizer has nothing left to kill, and a later computation starts a fresh worker."""
    stopped = []
    for manager in _tff_service_managers():
        process = manager._process
        if isinstance(process, subprocess.Popen) and process.poll() is None:
            stop(process.pid, lambda block: process.wait() if block else process.poll() is not None, timeout)
            stopped.append(process.pid)
        manager._process, manager._stub = None, None
        # TFF's finalizer would kill the worker only if it ran before interpreter teardown, which it
        # rarely does; fedlab stops workers itself, so the finalizer has nothing left to do.
        type(manager).__del__ = lambda self: None
    return stopped

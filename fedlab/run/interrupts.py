"""Ctrl-C and SIGTERM: inside a training loop, a request to stop at the next round boundary; a second signal stops
at once. Either way only complete rounds are kept.

Why not raise wherever the main thread is: a signal that lands in the run's bookkeeping (between writing round N's
rows and marking the round complete) duplicated a round after resume, and one that landed while TensorFlow loaded a
checkpoint killed the process from inside TensorFlow's C++ code (exit 134). So the handler only records the signal;
the loop honours it between rounds, and sections that must not be cut (checkpoint save and load) raise a second
signal only once they are done.
"""

import contextlib
import functools
import signal
import sys

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Terminated(BaseException):
    """SIGTERM, raised like KeyboardInterrupt so that every cleanup runs; the CLI exits 143."""


class _State:
    received: list[int] = []  # signals since handlers were installed, in order
    at_round_boundaries = False  # inside a training loop: the first signal waits for the round to end
    uncuttable_depth = 0  # inside checkpoint save/load: even a second signal waits for the section to end
    boundary = 'this round'  # what the first signal waits for (fedlab.fast_paths.round_blocks: a block of rounds)


def _exception(signum: int) -> BaseException:
    return Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def _must_stop_now() -> bool:
    """A signal is pending and nothing asks it to wait."""
    if not _State.received or _State.uncuttable_depth:
        return False
    return not _State.at_round_boundaries or len(_State.received) > 1


def _on_signal(signum, frame) -> None:
    _State.received.append(signum)
    if _State.at_round_boundaries and len(_State.received) == 1:
        name = 'SIGTERM' if signum == signal.SIGTERM else 'Ctrl-C'
        print(f'fedlab: {name}: stopping after {_State.boundary} ({name} again stops at once; complete rounds are kept)',
              file=sys.stderr, flush=True)  # fmt: skip
    if _must_stop_now():
        raise _exception(signum)


def remember(signum, frame) -> None:
    """The handler before `handled` is installed (fedlab.__main__, while Python imports the CLI): the signal is only
    recorded, never raised inside a library's import, and `handled` honours it as soon as it starts."""
    _State.received.append(signum)


def forget_swallowed_keyboard_interrupt() -> None:
    """Clears CPython's "unhandled KeyboardInterrupt" flag before the process exits with fedlab's own status.

    A Ctrl-C landing in code a C extension evaluates through PyRun_* (pybind11's exec while TensorFlow imports) sets
    the flag even though fedlab then handles the interrupt; at exit CPython would kill the process with SIGINT
    (status -2, nothing printed) instead of exiting 130. No-op where the interpreter has no such flag."""
    import ctypes

    try:
        ctypes.c_int.in_dll(ctypes.pythonapi, '_Py_UnhandledKeyboardInterrupt').value = 0
    except (ValueError, AttributeError):  # another interpreter or build: nothing to clear
        pass


def ignore_while_exiting() -> None:
    """From here the process only exits (fedlab.__main__, after the CLI returned or raised): Ctrl-C and SIGTERM are
    ignored. Python's finalization resets every handler it installed to the default before it tears down TensorFlow
    (about a second), so a Ctrl-C then killed the finished process by SIGINT (status -2) instead of letting it exit
    with its own status; an ignored signal stays ignored. The run's files are complete by now, or the status says
    how the run stopped. SIGKILL still ends a teardown that hangs."""
    for signum in SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


def stop_requested() -> bool:
    return bool(_State.received)


def raise_if_requested() -> None:
    """Raises KeyboardInterrupt or Terminated for a pending signal. Called at round boundaries; it also re-raises a
    signal whose exception Python swallowed (one that landed in a finalizer: TFF disposes of its remote values in
    weakref callbacks, where Python prints "Exception ignored" and carries on)."""
    if _State.received:
        raise _exception(_State.received[-1])


@contextlib.contextmanager
def round_boundaries():
    """While the body runs (a training loop), the first signal asks the loop to stop at its next boundary."""
    previous = _State.at_round_boundaries
    _State.at_round_boundaries = True
    try:
        yield
    finally:
        _State.at_round_boundaries = previous


@contextlib.contextmanager
def boundary(description: str):
    """While the body runs (one TFF call training several rounds), the first signal's message says the run stops
    after `description` (e.g. 'this block of rounds (5-8)')."""
    previous = _State.boundary
    _State.boundary = description
    try:
        yield
    finally:
        _State.boundary = previous


@contextlib.contextmanager
def uncuttable():
    """A section no signal may cut (a checkpoint being written or read, workers being stopped): a signal that must
    stop the run now is raised when the section ends, unless an exception is already on its way up (the section's
    own, or the one whose cleanup the section is)."""
    _State.uncuttable_depth += 1
    try:
        yield
    finally:
        _State.uncuttable_depth -= 1
    if _must_stop_now() and sys.exc_info()[1] is None:
        raise _exception(_State.received[-1])


@contextlib.contextmanager
def handled(*, process_exits: bool = False):
    """Installs the handlers for the body; Ctrl-C then exits with status 130 and SIGTERM with 143, after the body's
    own cleanup has run. `process_exits` (the CLI): once a signal ended the body, later ones are ignored while the
    process exits, instead of Python's default handler turning a second Ctrl-C into death by SIGINT (-2)."""
    previous = {signum: signal.signal(signum, _on_signal) for signum in SIGNALS}
    previous_hook = sys.unraisablehook
    sys.unraisablehook = functools.partial(_quiet_about_signals, previous_hook)
    stopped = False
    try:
        raise_if_requested()  # a signal `remember` recorded before the handlers were installed
        yield
    except Terminated:
        stopped = True
        raise SystemExit(128 + signal.SIGTERM) from None
    except KeyboardInterrupt:
        stopped = True
        raise SystemExit(128 + signal.SIGINT) from None
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_IGN if stopped and process_exits else handler)
        sys.unraisablehook = previous_hook
        _State.received.clear()


def _quiet_about_signals(previous_hook, unraisable) -> None:
    """sys.unraisablehook: a signal's exception raised inside a finalizer or a gc callback (JAX's, while TensorFlow
    loads) is swallowed by Python, which prints "Exception ignored ... KeyboardInterrupt". The signal is recorded:
    raise_if_requested honours it at the next check, so nothing is printed here; other exceptions go to the hook."""
    if isinstance(unraisable.exc_value, (KeyboardInterrupt, Terminated)) and _State.received:
        return
    previous_hook(unraisable)

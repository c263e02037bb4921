"""Ctrl-C and SIGTERM: inside a training loop the first one is a request honoured at the round boundary, a second
one stops at once, and sections that must not be cut finish first."""

import os
import signal
import sys

import pytest

from fedlab.run import interrupts


def _send(signum=signal.SIGINT):
    os.kill(os.getpid(), signum)  # delivered to the main thread before the next bytecode


def test_outside_a_training_loop_a_signal_stops_at_once_with_its_exit_code():
    for signum, code in [(signal.SIGINT, 130), (signal.SIGTERM, 143)]:
        reached = False
        with pytest.raises(SystemExit) as exit_info:
            with interrupts.handled():
                _send(signum)
                reached = True
        assert exit_info.value.code == code and not reached


def test_in_a_training_loop_the_first_signal_waits_for_the_round_boundary(capsys):
    steps = []
    with pytest.raises(SystemExit) as exit_info:
        with interrupts.handled(), interrupts.round_boundaries():
            for round_num in (1, 2, 3):
                interrupts.raise_if_requested()  # the boundary
                steps.append(f'{round_num} start')
                if round_num == 2:
                    _send()
                steps.append(f'{round_num} end')
    assert exit_info.value.code == 130
    assert steps == ['1 start', '1 end', '2 start', '2 end']  # round 2 finished, round 3 never started
    assert 'stopping after this round' in capsys.readouterr().err


def test_a_second_signal_stops_at_once_but_not_inside_an_uncuttable_section():
    steps = []
    with pytest.raises(SystemExit):
        with interrupts.handled(), interrupts.round_boundaries():
            _send()
            steps.append('after first')
            with interrupts.uncuttable():
                _send()
                steps.append('checkpoint written')  # the second signal waits for the section to end
            steps.append('never')
    assert steps == ['after first', 'checkpoint written']


def test_sigterm_waits_like_ctrl_c_and_exits_143():
    with pytest.raises(SystemExit) as exit_info:
        with interrupts.handled(), interrupts.round_boundaries():
            _send(signal.SIGTERM)
            finished_round = True
            interrupts.raise_if_requested()
    assert finished_round and exit_info.value.code == 143


@pytest.mark.filterwarnings('ignore::pytest.PytestUnraisableExceptionWarning')  # the ignored KeyboardInterrupt
def test_a_ctrl_c_lost_in_a_finalizer_still_stops_the_run_at_the_boundary():
    class InterruptedWhileFinalized:
        def __del__(self):  # Python ignores (prints) exceptions raised here, KeyboardInterrupt included
            _send()

    with pytest.raises(SystemExit) as exit_info:
        with interrupts.handled():
            InterruptedWhileFinalized()
            reached_the_round_boundary = True
            interrupts.raise_if_requested()
    assert reached_the_round_boundary and exit_info.value.code == 130


def test_handlers_are_restored_and_requests_forgotten_after_the_body():
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(SystemExit):
        with interrupts.handled(), interrupts.round_boundaries():
            _send()
            interrupts.raise_if_requested()
    assert signal.getsignal(signal.SIGINT) is before and not interrupts.stop_requested()


def test_a_ctrl_c_lost_in_a_finalizer_prints_no_ignored_exception(monkeypatch):
    """JAX's gc callback, running while TensorFlow loads, swallowed a Ctrl-C with "Exception ignored ...
    KeyboardInterrupt" on stderr (Python's unraisable hook): the signal is recorded and honoured, so the hook is not
    given it."""
    class InterruptedWhileFinalized:
        def __del__(self):
            _send()

    unraisable = []
    monkeypatch.setattr(sys, 'unraisablehook', unraisable.append)  # what prints "Exception ignored"
    with pytest.raises(SystemExit) as exit_info:
        with interrupts.handled():
            InterruptedWhileFinalized()
            interrupts.raise_if_requested()
    assert exit_info.value.code == 130 and unraisable == []


def test_a_signal_before_the_handlers_is_remembered_and_stops_the_body_before_it_starts():
    """fedlab.__main__ records a Ctrl-C that arrives while the CLI is imported (never raised inside the import)."""
    interrupts.remember(signal.SIGINT, None)
    started = False
    with pytest.raises(SystemExit) as exit_info:
        with interrupts.handled():
            started = True
    assert exit_info.value.code == 130 and not started and not interrupts.stop_requested()


@pytest.mark.parametrize('signum', [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_the_finished_process_exits_leaves_its_exit_status(signum):
    """Python's finalization (a second of TensorFlow's teardown after a run) restores the default handlers: a Ctrl-C
    then killed a finished fedlab by SIGINT (status -2). Here a stand-in CLI returns, and an object torn down with
    the modules holds the process in finalization while the signal arrives."""
    import subprocess
    import textwrap

    code = textwrap.dedent("""
        import os, sys, time, types
        sys.modules['fedlab.cli'] = types.SimpleNamespace(main=lambda: None)  # the run, done
        from fedlab import __main__ as command

        class TornDownLast:
            def __del__(self, write=os.write, sleep=time.sleep):
                write(2, b'finalizing\\n')
                sleep(3)

        held = TornDownLast()
        command.main()
    """)
    env = {**os.environ, 'PYTHONPATH': os.path.dirname(os.path.dirname(os.path.abspath(__file__)))}
    proc = subprocess.Popen([sys.executable, '-c', code], stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stderr.readline() == 'finalizing\n'
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr

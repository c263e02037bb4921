"""fedlab finds and stops the TFF worker processes it started, and only those."""

import os
import shutil
import signal
import subprocess

import pytest

from fedlab import workers


def _fake_worker(tmp_path):
    binary = tmp_path / workers.WORKER_NAME
    shutil.copy('/bin/sleep', binary)
    return subprocess.Popen([str(binary), '60'])


def test_finds_and_stops_own_workers(tmp_path):
    worker = _fake_worker(tmp_path)
    other = subprocess.Popen(['sleep', '60'])
    try:
        assert worker.pid in workers.child_workers()
        assert other.pid not in workers.child_workers()
        stopped = workers.stop_workers(timeout=2)  # also TFF's own worker, if an earlier test started one
        assert worker.pid in stopped and other.pid not in stopped
        assert not os.path.exists(f'/proc/{worker.pid}')  # stopped and reaped
    finally:
        other.kill()
        other.wait()


def test_cleanup_runs_on_error(tmp_path):
    worker = _fake_worker(tmp_path)
    try:
        with workers.worker_cleanup():
            raise RuntimeError('boom')
    except RuntimeError:
        pass
    assert not os.path.exists(f'/proc/{worker.pid}')


def test_interrupt_becomes_exit_130(tmp_path):
    worker = _fake_worker(tmp_path)
    try:
        with workers.worker_cleanup():
            raise KeyboardInterrupt
    except SystemExit as exit:
        assert exit.code == 130
    assert not os.path.exists(f'/proc/{worker.pid}')


@pytest.mark.filterwarnings('ignore::pytest.PytestUnraisableExceptionWarning')  # the ignored KeyboardInterrupt
def test_a_ctrl_c_lost_in_a_finalizer_still_stops_the_run_between_rounds():
    class InterruptedWhileFinalized:
        def __del__(self):  # Python ignores (prints) exceptions raised here, KeyboardInterrupt included
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(SystemExit) as exit_info:
        with workers.worker_cleanup():
            InterruptedWhileFinalized()
            reached_the_round_boundary = True
            workers.raise_if_signalled()
    assert reached_the_round_boundary and exit_info.value.code == 130

"""fedlab finds and stops the TFF worker processes it started, and only those."""

import os
import shutil
import subprocess

import pytest

from fedlab.run import worker_processes
from fedlab.tff_internals import worker_launch


def _fake_worker(tmp_path):
    binary = tmp_path / worker_processes.WORKER_NAME
    shutil.copy('/bin/sleep', binary)
    return subprocess.Popen([str(binary), '60'])


def test_finds_and_stops_own_workers(tmp_path):
    worker = _fake_worker(tmp_path)
    other = subprocess.Popen(['sleep', '60'])
    try:
        assert worker.pid in worker_processes.child_workers()
        assert other.pid not in worker_processes.child_workers()
        stopped = worker_processes.stop_workers(timeout=2)  # also TFF's own worker, if an earlier test started one
        assert worker.pid in stopped and other.pid not in stopped
        assert not os.path.exists(f'/proc/{worker.pid}')  # stopped and reaped
    finally:
        other.kill()
        other.wait()


@pytest.mark.parametrize('error', [RuntimeError('boom'), KeyboardInterrupt(), SystemExit(3)])
def test_cleanup_stops_workers_however_the_body_ends(tmp_path, error):
    worker = _fake_worker(tmp_path)
    with pytest.raises(type(error)):
        with worker_processes.worker_cleanup():
            raise error
    assert not os.path.exists(f'/proc/{worker.pid}')


def test_tffs_worker_starts_in_a_session_of_its_own():
    """A Ctrl-C typed in the terminal goes to the whole foreground process group: TFF's worker must not be in it,
    or it would die mid-round instead of letting fedlab finish the round."""
    import tensorflow as tf
    import tensorflow_federated as tff

    worker_processes.stop_workers()  # one an earlier test may have started before shielding
    worker_launch.shield_workers_from_terminal_signals()
    assert tff.tensorflow.computation(lambda: tf.constant(1))() == 1  # starts the worker if none runs yet
    (pid,) = [p for p in worker_processes.child_workers()]
    assert os.getsid(pid) == pid != os.getsid(0)

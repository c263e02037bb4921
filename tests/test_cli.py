"""The installed `fedlab` command, run as a user runs it: in a subprocess, through a pipe."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time
import uuid

import pytest

from fedlab.run import worker_processes
from tests.conftest import REPO

FEDLAB = pathlib.Path(sys.executable).with_name('fedlab')


def _workers_with_token(token: str) -> list[int]:
    return worker_processes.workers_with_env(token)


def _env(token):
    return {**os.environ, 'FEDLAB_TEST_TOKEN': token}


def _run(args, tmp_path, extra_env=None):
    """Runs fedlab with piped output; returns the process and the workers it left alive."""
    token = uuid.uuid4().hex
    # Piped stdout: if a worker kept the pipe open, run() would not return.
    proc = subprocess.run(
        [str(FEDLAB), *args, f'hydra.run.dir={tmp_path}/run', f'hydra.sweep.dir={tmp_path}/multirun'],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, env={**_env(token), **(extra_env or {})},
    )
    return proc, _workers_with_token(token)


def test_multirun_writes_one_directory_per_job(tmp_path):
    proc, leaked = _run(['-m', 'experiment=debug', 'model=linear,simple_cnn', 'rounds=1'], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not leaked
    jobs = sorted(p for p in (tmp_path / 'multirun').iterdir() if p.is_dir())
    assert len(jobs) == 2
    models = {json.loads((job / 'results.json').read_text())['choices']['model'] for job in jobs}
    assert models == {'linear', 'simple_cnn'}


@pytest.mark.slow
def test_failure_inside_tff_leaves_no_worker(tmp_path):
    # The worker is running (evaluation is built first) when round 1 fails inside the TFF computation.
    proc, leaked = _run(['experiment=debug', 'model=custom', 'model._target_=tests.exploding_model.model_fn'],
                        tmp_path, extra_env={'PYTHONPATH': str(REPO)})
    assert proc.returncode == 1
    assert 'injected failure' in proc.stderr
    assert not leaked
    results = json.loads((tmp_path / 'run' / 'results.json').read_text())
    assert results['status'] == 'failed' and results['rounds_completed'] == 0


def test_sigint_finishes_the_round_exits_130_and_a_second_fedlab_on_the_directory_is_refused(tmp_path):
    token = uuid.uuid4().hex
    run_dir = tmp_path / 'run'
    proc = subprocess.Popen(
        [str(FEDLAB), 'rounds=500', 'eval_every=0', f'hydra.run.dir={run_dir}'],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path, env=_env(token),
    )
    # Wait until training has started: the first round line appears.
    deadline = time.monotonic() + 240
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith('round ') or time.monotonic() > deadline:
            break
    assert any(line.startswith('round ') for line in lines), ''.join(lines)[-2000:]

    # A second fedlab on the live run's directory: one line naming it and the owner, exit 2, nothing touched.
    hydra_record = (run_dir / '.hydra' / 'overrides.yaml').read_text()
    second = subprocess.run([str(FEDLAB), 'rounds=7', f'hydra.run.dir={run_dir}'], capture_output=True, text=True,
                            timeout=60, cwd=tmp_path, env=_env(token))  # fmt: skip
    assert second.returncode == 2
    assert second.stderr.strip().splitlines() == [f'fedlab: error: {run_dir} is in use by process {proc.pid}']
    assert (run_dir / '.hydra' / 'overrides.yaml').read_text() == hydra_record

    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, rest[-2000:]
    assert 'stopping after this round' in rest
    assert not _workers_with_token(token)
    results = json.loads((run_dir / 'results.json').read_text())
    assert results['status'] == 'interrupted' and results['rounds_completed'] >= 1
    rows = (run_dir / 'metrics.csv').read_text().splitlines()
    assert len(rows) == 1 + results['rounds_completed']  # every finished round, no partial row
    assert f'round_{results["rounds_completed"]}' in os.listdir(run_dir / 'checkpoints')


def test_leak_detector_sees_a_worker_that_plain_tff_leaves_behind():
    """Control for the tests above: TFF alone leaves its worker running after Python exits."""
    token = uuid.uuid4().hex
    script = (
        'import tensorflow as tf, tensorflow_federated as tff\n'
        'print(tff.tensorflow.computation(lambda: tf.constant(1))())\n'
    )
    # Output to DEVNULL: with a pipe, the orphan would keep run() waiting forever.
    subprocess.run([sys.executable, '-c', script], env=_env(token), timeout=120,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    leaked = _workers_with_token(token)
    for pid in leaked:
        os.kill(pid, signal.SIGKILL)
    assert leaked


def test_default_run_through_a_pipe_writes_a_new_run_dir_and_leaves_no_worker(tmp_path):
    """No hydra.run.dir: the run gets runs/<date>_<time>_<task>_<model>_<aggregator>/ under the cwd.
    Output is piped: if a TFF worker kept the pipe open, run() would not return."""
    token = uuid.uuid4().hex
    proc = subprocess.run([str(FEDLAB), 'experiment=debug', 'model=custom'],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path, env=_env(token))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not _workers_with_token(token)
    (run,) = (tmp_path / 'runs').iterdir()
    assert run.name.endswith('_train_custom_mean')
    results = json.loads((run / 'results.json').read_text())
    assert results['status'] == 'completed'
    assert results['choices']['model'] == 'custom' and results['choices']['data'] == 'digits'
    assert (run / '.hydra' / 'config.yaml').exists() and (run / 'metrics.csv').exists()
    assert list((run / 'tensorboard' / 'train').glob('events.out.tfevents.*'))
    assert list((run / 'tensorboard' / 'eval').glob('events.out.tfevents.*'))
    assert 'round 2/2' in proc.stdout

"""Scaling out, end to end: sweeps through submitit, Ray and Optuna, each with a failing job, leave no TFF worker;
one experiment on two `fedlab-worker` services gives the local metrics, and survives losing a worker."""

import csv
import importlib.util
import json
import subprocess
import uuid

import pytest

from fedlab.errors import WorkerLost
from fedlab.run import worker_processes
from tests.conftest import REPO
from tests.test_cli import FEDLAB, _env, _run
from tests.worker_services import worker_services

pytestmark = pytest.mark.slow

# One job trains, the other fails inside TFF's computation in round 1, while its TFF worker runs.
FAILING_MODEL = ['model=custom', 'model._target_=fedlab.models.custom_model_fn,tests.exploding_model.model_fn']


def _jobs(sweep_dir):
    return {job.name.split('_')[0]: json.loads((job / 'results.json').read_text())
            for job in sweep_dir.iterdir() if (job / '.hydra').is_dir()}


def _check_one_completed_one_failed(proc, leaked, sweep_dir):
    assert proc.returncode == 1, proc.stderr[-3000:]  # a sweep with a failed job
    assert not leaked
    jobs = _jobs(sweep_dir)
    assert {num: job['status'] for num, job in jobs.items()} == {'0': 'completed', '1': 'failed'}
    assert jobs['1']['rounds_completed'] == 0 and jobs['1']['error']  # failed in round 1, inside TFF
    assert 'sweep ' in proc.stdout and '1 of 2 jobs completed' in proc.stdout


def test_submitit_local_sweep_with_a_failing_job_in_waves_leaves_no_worker(tmp_path):
    # max_batch_size=1: Hydra's sweeper hands the launcher one job at a time (submitit_local starts a batch at once).
    proc, leaked = _run(
        ['-m', 'experiment=debug', 'rounds=1', *FAILING_MODEL, 'hydra/launcher=submitit_local',
         'hydra.sweeper.max_batch_size=1'],
        tmp_path, extra_env={'PYTHONPATH': str(REPO)},
    )
    _check_one_completed_one_failed(proc, leaked, tmp_path / 'multirun')
    assert proc.stdout.count("Submitit 'local' sweep output dir") == 2  # two waves of one job


@pytest.mark.skipif(importlib.util.find_spec('ray') is None, reason='needs the ray extra: make install EXTRAS=ray')
def test_ray_local_sweep_with_a_failing_job_leaves_no_worker(tmp_path):
    token = uuid.uuid4().hex
    # Ray's workers do not inherit this environment: the preset's runtime_env passes variables on.
    env_vars = 'hydra.launcher.ray.init.runtime_env.env_vars'
    proc = subprocess.run(
        [str(FEDLAB), '-m', 'experiment=debug', 'rounds=1', *FAILING_MODEL, 'hydra/launcher=ray_local',
         f'+{env_vars}.FEDLAB_TEST_TOKEN={token}', f'+{env_vars}.PYTHONPATH={REPO}',
         f'hydra.sweep.dir={tmp_path}/multirun'],
        capture_output=True, text=True, timeout=600, cwd=tmp_path, env=_env(token),
    )
    _check_one_completed_one_failed(proc, worker_processes.workers_with_env(token), tmp_path / 'multirun')


def test_optuna_sweep_with_a_failing_trial_completes_and_leaves_no_worker(tmp_path):
    # With seed 0 the sampler draws the exploding model for one trial of three.
    proc, leaked = _run(
        ['-m', 'hydra/sweeper=optuna_accuracy', 'hydra.sweeper.n_trials=3', 'experiment=debug', 'rounds=1',
         'model=custom', 'model._target_=choice(fedlab.models.custom_model_fn,tests.exploding_model.model_fn)'],
        tmp_path, extra_env={'PYTHONPATH': str(REPO)},
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert not leaked and 'Traceback' not in proc.stderr
    jobs = _jobs(tmp_path / 'multirun')
    statuses = sorted(job['status'] for job in jobs.values())
    assert len(jobs) == 3 and 'failed' in statuses and 'completed' in statuses, statuses
    best = (tmp_path / 'multirun' / 'optimization_results.yaml').read_text()
    completed = [job['final_eval']['eval']['accuracy'] for job in jobs.values() if job['status'] == 'completed']
    assert f'best_value: {max(completed)}' in best


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def _assert_same_metrics(rows, expected, tolerance=1e-5):
    assert [r['round'] for r in rows] == [r['round'] for r in expected]
    for row, other in zip(rows, expected):
        for key, value in other.items():
            if value and key != 'round':
                assert abs(float(row[key]) - float(value)) <= tolerance, (row['round'], key, row[key], value)


def test_one_experiment_on_two_workers_matches_local_and_resumes_after_losing_one(tmp_path):
    token = uuid.uuid4().hex  # in the fedlab runs' environment, not the services': finds any local TFF worker
    run = ['rounds=12', 'eval_every=2', 'checkpoint_every=1', 'seed=3']
    local, _ = _run(run, tmp_path)
    assert local.returncode == 0, local.stderr[-2000:]
    local_rows = _rows(tmp_path / 'run' / 'metrics.csv')

    def fedlab(*args, **popen):
        return subprocess.Popen([str(FEDLAB), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                cwd=tmp_path, env=_env(token), **popen)

    with worker_services(2) as (first, second):
        remote = ['runtime=remote', f'runtime.workers=[{first.address},{second.address}]',
                  'runtime.reconnect_timeout=2']
        # A client killed mid-round: the services go on serving the next run.
        victim = fedlab(*remote, 'rounds=200', f'hydra.run.dir={tmp_path}/victim')
        next(line for line in victim.stdout if line.startswith('round '))
        victim.kill()
        victim.communicate(timeout=60)

        # The acceptance run: 3 rounds on two workers, the local metrics to 1e-5.
        out, err = fedlab(*remote, *run, 'rounds=3', f'hydra.run.dir={tmp_path}/remote3').communicate(timeout=300)
        assert 'split into 2 contiguous chunks; client data reach them as tensors' in out, err[-2000:]
        _assert_same_metrics(_rows(tmp_path / 'remote3' / 'metrics.csv'), local_rows[:3])

        # Kill the second worker during round 4 or later.
        lost = fedlab(*remote, *run, f'hydra.run.dir={tmp_path}/remote')
        next(line for line in lost.stdout if line.startswith('round  3/'))
        second.kill()
        out, err = lost.communicate(timeout=120)
        assert lost.returncode == WorkerLost.exit_code == 4, err[-2000:]
        assert err.strip().splitlines()[-1].startswith(f'fedlab: error: TFF worker {second.address} is lost: no answer')
        assert 'Traceback' not in err
        done = int(json.loads((tmp_path / 'remote' / 'results.json').read_text())['rounds_completed'])
        assert 3 <= done < 12

        # A new worker, on another port: the run resumes after its last complete round, and ends as local did.
        with worker_services(1) as (replacement,):
            remote[1] = f'runtime.workers=[{first.address},{replacement.address}]'
            resumed = fedlab(*remote, *run, f'hydra.run.dir={tmp_path}/remote')
            out, err = resumed.communicate(timeout=300)
        assert first.process.poll() is None  # served every run
    assert resumed.returncode == 0, err[-2000:]
    assert f'resuming {tmp_path}/remote after round {done}' in out
    _assert_same_metrics(_rows(tmp_path / 'remote' / 'metrics.csv'), local_rows)
    assert (tmp_path / 'remote' / 'clients.csv').read_text() == (tmp_path / 'run' / 'clients.csv').read_text()
    assert not worker_processes.workers_with_env(token)  # runtime=remote starts no TFF worker on this machine

"""A sweep keeps each failure's cause, counts what it ran (and only that), and exit codes say what went wrong."""

import json
import subprocess

import pytest

from tests.conftest import REPO
from tests.test_cli import FEDLAB, _env


def _fedlab(args, cwd, timeout=600):
    env = {**_env('sweep-errors'), 'PYTHONPATH': str(REPO)}
    return subprocess.run([str(FEDLAB), *args], capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env)


@pytest.mark.slow
def test_a_sweep_keeps_the_traceback_of_a_bug_counts_explore_as_done_and_only_its_own_jobs(tmp_path):
    sweep = tmp_path / 'sweep'
    proc = _fedlab(['-m', 'experiment=debug', 'task=explore,train', 'sampling._target_=tests.buggy_sampler.buggy',
                    '+sampling.fail=true,false', f'hydra.sweep.dir={sweep}'], tmp_path)  # fmt: skip
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert '3 of 4 jobs completed' in proc.stdout
    assert 'Traceback' not in proc.stderr + proc.stdout
    (failed_line,) = [line for line in proc.stderr.splitlines() if line.startswith('fedlab: job')]
    (failed_job,) = [p for p in sweep.iterdir() if 'task=train' in p.name and 'fail=True' in p.name]
    assert failed_line.endswith(f'failed: RuntimeError: injected bug (traceback in {failed_job / "fedlab.log"})')
    log = (failed_job / 'fedlab.log').read_text()
    assert 'Traceback (most recent call last)' in log and 'buggy_sampler.py' in log
    results = json.loads((failed_job / 'results.json').read_text())
    assert results['status'] == 'failed' and results['error'] == 'RuntimeError: injected bug'
    assert 'buggy_sampler.py' in results['traceback'] and 'with a second line' in results['traceback']
    explore_jobs = [p for p in sweep.iterdir() if 'task=explore' in p.name]
    assert len(explore_jobs) == 2
    assert all(json.loads((p / 'results.json').read_text())['status'] == 'completed' for p in explore_jobs)

    # The same sweep directory again, for another multirun: it counts its own two jobs only.
    again = _fedlab(['-m', 'experiment=debug', 'rounds=1', 'seed=5,6', f'hydra.sweep.dir={sweep}'], tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert '2 of 2 jobs completed' in again.stdout


@pytest.mark.slow
def test_a_diverged_run_exits_3_with_one_line(tmp_path):
    proc = _fedlab(['experiment=debug', 'rounds=4', 'client_lr=1e30', 'server_lr=1e30', f'hydra.run.dir={tmp_path}/run'],
                   tmp_path, timeout=300)  # fmt: skip
    assert proc.returncode == 3, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('fedlab: error: training diverged in round')
    assert 'the last good checkpoint is round' in lines[0]
    assert json.loads((tmp_path / 'run' / 'results.json').read_text())['status'] == 'diverged'

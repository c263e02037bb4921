"""A sweep through Hydra's joblib launcher: every job runs, and no TFF worker outlives the sweep."""

import json

import pytest

from tests.test_cli import _run


@pytest.mark.slow
def test_joblib_sweep_runs_every_job_and_leaves_no_worker(tmp_path):
    proc, leaked = _run(
        ['-m', 'experiment=debug', 'rounds=1', 'seed=0,1', 'hydra/launcher=joblib', 'hydra.launcher.n_jobs=2'], tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not leaked  # each joblib worker process stops the TFF worker it started
    jobs = sorted(p for p in (tmp_path / 'multirun').iterdir() if p.is_dir())
    assert len(jobs) == 2
    assert {json.loads((job / 'results.json').read_text())['status'] for job in jobs} == {'completed'}

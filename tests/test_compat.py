"""Run directories written before the redesign (main 17c7a06, tests/fixtures/main_17c7a06) still resume and still
group with new runs in fedlab-report: the `_target_` paths they stored resolve, their tables and checkpoints read."""

import csv
import json
import shutil
import subprocess

import pytest

from fedlab.config import components
from fedlab.reporting import report
from tests.conftest import REPO
from tests.test_cli import FEDLAB, _env

FIXTURE = REPO / 'tests' / 'fixtures' / 'main_17c7a06'
KILLED = ['model=linear', 'data.num_clients=6', 'clients_per_round=3', 'rounds=4', 'eval_every=2',
          'checkpoint_every=2', 'client_epochs=2']  # fmt: skip
COMPLETED = ['model=linear', 'data.num_clients=6', 'clients_per_round=3', 'rounds=2', 'eval_every=1',
             'client_epochs=2']  # fmt: skip


def _targets(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == '_target_':
                yield value
            else:
                yield from _targets(value)


def test_every_target_an_old_run_stored_still_resolves():
    for run in ('killed', 'completed_seed0'):
        stored = json.loads((FIXTURE / run / 'results.json').read_text())['config']
        for target in _targets(stored):
            assert components.importable(components.resolve(target)), target


def test_a_run_killed_under_the_old_layout_resumes_to_the_uninterrupted_tables(tmp_path):
    """Resumed the way a user would (the command again on the same directory): the tables end byte for byte as
    the old fedlab's uninterrupted run wrote them."""
    run_dir = tmp_path / 'killed'
    shutil.copytree(FIXTURE / 'killed', run_dir)
    proc = subprocess.run([FEDLAB, *KILLED, f'hydra.run.dir={run_dir}'], capture_output=True, text=True,
                          env=_env('compat'), timeout=300, cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f'resuming {run_dir} after round 2' in proc.stdout
    results = json.loads((run_dir / 'results.json').read_text())
    assert results['status'] == 'completed' and results['rounds_completed'] == 4
    assert results['resumed_after_round'] == 2
    for table in ('metrics', 'clients'):
        expected = list(csv.DictReader((FIXTURE / 'expected' / f'killed_{table}.csv').open()))
        got = list(csv.DictReader((run_dir / f'{table}.csv').open()))
        # Columns added since (the distribution over clients) follow the old ones, whose values are unchanged.
        assert [{k: row[k] for k in expected[0]} for row in got] == expected, table
        added = [k for k in got[0] if k not in expected[0]]
        assert list(got[0])[: len(expected[0])] == list(expected[0]) and (table == 'clients') == (not added)


@pytest.mark.slow
def test_an_old_run_and_a_new_seed_form_one_group_in_the_report(tmp_path):
    sweep = tmp_path / 'sweep'
    shutil.copytree(FIXTURE / 'completed_seed0', sweep / 'seed0')
    proc = subprocess.run(
        [FEDLAB, '-m', *COMPLETED, 'seed=1', f'hydra.sweep.dir={sweep}', 'hydra.sweep.subdir=seed1'],
        capture_output=True, text=True, env=_env('compat'), timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    groups = report.group_runs(report.find_runs(sweep))
    assert [sorted(str(run.seed) for run in group.runs) for group in groups] == [['0', '1']]

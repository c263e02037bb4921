"""fedlab-report reads run directories (here: synthetic ones with known numbers, and one tiny real sweep)."""

import csv
import json
import subprocess
import sys

import pytest

from fedlab.record import ledger, tables
from fedlab.reporting import report
from tests.conftest import REPO

FEDLAB = REPO / '.venv' / 'bin' / 'fedlab'


def _write_run(path, *, model, aggregator, task='train', accuracies, uplink_per_client=None, clients=10, seed=0,
               status='completed', extra_config=None):  # fmt: skip
    """A run directory as fedlab writes it: results.json and metrics.csv (eval every round)."""
    path.mkdir(parents=True)
    columns = tables.metrics_columns(['train', 'eval'])
    rows, cumulative = [], 0
    for round_num, accuracy in enumerate(accuracies, start=1):
        row = {'round': round_num, 'clients': clients, 'eval_accuracy': accuracy, 'eval_loss': 1 - accuracy}
        if uplink_per_client:
            cumulative += uplink_per_client * clients
            row.update(uplink_bits_per_client=uplink_per_client, cumulative_uplink_bits=cumulative,
                       cumulative_downlink_bits=2 * cumulative)  # fmt: skip
        rows.append(row)
    with open(path / 'metrics.csv', 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    results = {
        'status': 'completed',
        'rounds_completed': len(accuracies),
        'final_train': {},
        'final_eval': {'eval': {'accuracy': accuracies[-1], 'loss': 1 - accuracies[-1]}},
        'wall_seconds': 12.5,
        'choices': {'task': task, 'model': model, 'aggregator': aggregator, 'sampling': 'uniform', 'data': 'digits'},
        'overrides': [f'model={model}', f'seed={seed}'],
        'config': {'seed': seed, 'rounds': len(accuracies), 'data': {'num_clients': 50, 'seed': seed},
                   'sampling': {'seed': seed}, **(extra_config or {})},
    }
    if status != 'completed':
        results.update(status=status, error='training diverged in round 3')
    if uplink_per_client:
        results['communication'] = {
            'uplink_bits_per_client': uplink_per_client,
            'cumulative_uplink_bits': cumulative,
            'cumulative_downlink_bits': 2 * cumulative,
        }
    (path / 'results.json').write_text(json.dumps(results))


@pytest.fixture
def sweep(tmp_path):
    sweep = tmp_path / 'sweep'
    _write_run(sweep / '0_a', model='cnn', aggregator='mean', accuracies=[0.2, 0.6, 0.9, 0.85], uplink_per_client=4000)
    _write_run(sweep / '1_b', model='cnn', aggregator='compression', accuracies=[0.2, 0.5, 0.7, 0.88],
               uplink_per_client=1000)  # fmt: skip
    _write_run(sweep / '2_c', model='cnn', aggregator='mean', task='centralized', accuracies=[0.5, 0.95])
    return sweep


def test_report_numbers(sweep, tmp_path):
    out = tmp_path / 'out'
    result = report.write_report(sweep, out, target=0.8)
    by_run = {s['run']: s for s in result['summaries']}
    mean, compressed, central = by_run['0_a'], by_run['1_b'], by_run['2_c']
    assert (mean['final_eval_accuracy'], mean['best_round'], mean['best_eval_accuracy']) == (0.85, 3, 0.9)
    assert mean['rounds_to_target'] == 3 and compressed['rounds_to_target'] == 4
    assert mean['cumulative_uplink_bits'] == 4 * 4000 * 10 and compressed['cumulative_uplink_bits'] == 4 * 1000 * 10
    assert central['aggregator'] == '' and central['cumulative_uplink_bits'] is None

    comparison = {row['aggregator']: row for row in result['comparison']}
    assert comparison['compression']['uplink_smaller_than_mean'] == pytest.approx(4.0)
    assert comparison['mean']['uplink_smaller_than_mean'] == pytest.approx(1.0)
    assert comparison['mean']['gap_to_centralized'] == pytest.approx(0.95 - 0.85)
    assert comparison['compression']['gap_to_centralized'] == pytest.approx(0.95 - 0.88)

    with open(out / 'report.csv', newline='') as f:
        rows = list(csv.DictReader(f))
    assert [r['run'] for r in rows] == ['0_a', '1_b', '2_c'] and list(rows[0]) == report.COLUMNS
    markdown = (out / 'report.md').read_text()
    assert '4.00x' in markdown and '| task=train aggregator=compression rounds=4 | 0.8800 (n=1) |' in markdown
    for name in result['figures']:
        assert (out / name).read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_report_does_not_import_tensorflow_and_runs_as_a_command(sweep):
    code = (
        'import sys\nfrom fedlab.reporting import report\n'
        f'report.main([{str(sweep)!r}])\n'
        'print("TF" if any(m.split(".")[0] in ("tensorflow", "tensorflow_federated") for m in sys.modules) else "NO TF")'
    )
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith('NO TF')
    assert '3 runs in 3 groups' in proc.stdout and (sweep / 'report.md').exists()


def test_report_on_an_empty_directory_fails_clearly(tmp_path):
    with pytest.raises(report.ReportError, match='no run directory'):
        report.write_report(tmp_path, tmp_path)


def test_seeds_of_one_experiment_are_a_group_with_mean_and_std_and_failed_runs_are_listed_apart(tmp_path):
    sweep = tmp_path / 'sweep'
    for seed, accuracies in [(0, [0.5, 0.8]), (1, [0.6, 0.9])]:
        _write_run(sweep / f'mean_{seed}', model='cnn', aggregator='mean', accuracies=accuracies, seed=seed,
                   uplink_per_client=4000, extra_config={'client_lr': 0.02})  # fmt: skip
        _write_run(sweep / f'lr_{seed}', model='cnn', aggregator='mean', accuracies=[0.1, 0.2 + seed / 10], seed=seed,
                   uplink_per_client=4000, extra_config={'client_lr': 0.5})  # fmt: skip
    _write_run(sweep / 'mean_2', model='cnn', aggregator='mean', accuracies=[0.5, 0.1], seed=2, status='diverged',
               extra_config={'client_lr': 0.02})  # fmt: skip
    result = report.write_report(sweep, tmp_path / 'out')

    groups = result['groups']
    assert sorted(groups) == ['client_lr=0.02', 'client_lr=0.5']  # named by what tells them apart
    default = groups['client_lr=0.02']
    assert default['seeds'] == 2  # the diverged seed 2 is not averaged in
    assert default['final_eval_accuracy_mean'] == pytest.approx(0.85)
    assert default['final_eval_accuracy_std'] == pytest.approx(0.0707107, rel=1e-5)  # sample std of 0.8, 0.9
    assert groups['client_lr=0.5']['final_eval_accuracy_mean'] == pytest.approx(0.25)
    assert [(r['run'], r['status']) for r in result['not_completed']] == [('mean_2', 'diverged')]
    markdown = (tmp_path / 'out' / 'report.md').read_text()
    assert '0.8500 ± 0.0707 (n=2)' in markdown
    assert '## Runs that did not complete' in markdown and 'training diverged in round 3' in markdown


def test_an_ambiguous_comparison_is_refused_on_one_line(tmp_path):
    sweep = tmp_path / 'sweep'
    _write_run(sweep / 'fed', model='cnn', aggregator='mean', accuracies=[0.5, 0.8])
    for epochs in (10, 100):  # two centralized baselines for the same model: which one?
        _write_run(sweep / f'central_{epochs}', model='cnn', aggregator='mean', task='centralized',
                   accuracies=[0.9, 0.95], extra_config={'task': {'epochs': epochs}})  # fmt: skip
    proc = subprocess.run([sys.executable, '-m', 'fedlab.reporting.report', str(sweep)], capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('fedlab-report: error: 2 centralized baselines')
    assert 'task.epochs' in lines[0]


def test_the_same_seed_twice_in_a_group_is_refused(tmp_path):
    sweep = tmp_path / 'sweep'
    for name in ('a', 'b'):
        _write_run(sweep / name, model='cnn', aggregator='mean', accuracies=[0.5, 0.8], seed=3)
    with pytest.raises(report.ReportError, match='same seed'):
        report.write_report(sweep, tmp_path / 'out')


@pytest.mark.slow
def test_tiny_real_sweep_with_centralized_baseline(tmp_path):
    """The `make compare` recipe, shrunk: two aggregators and the centralized baseline into one sweep dir."""
    common = ['experiment=compare', 'model=simple_cnn', 'rounds=2', 'clients_per_round=3', 'client_epochs=1',
              'eval_every=1', 'data.num_clients=10', f'hydra.sweep.dir={tmp_path}/sweep']
    for extra in [[], ['task=centralized', 'aggregator=mean']]:
        proc = subprocess.run([str(FEDLAB), '-m', *common, *extra], capture_output=True, text=True, timeout=600,
                              cwd=tmp_path)  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-2000:]
    result = report.write_report(tmp_path / 'sweep', tmp_path / 'out')
    tasks = sorted(s['task'] for s in result['summaries'])
    assert tasks == ['centralized', 'train', 'train']
    comparison = {row['aggregator']: row for row in result['comparison']}
    assert comparison['compression']['uplink_smaller_than_mean'] == pytest.approx(1.0, abs=0.01)  # 16,384 < 20,000
    assert comparison['compression']['seeds'] == 1
    assert comparison['mean']['centralized_accuracy'] is not None
    assert all(0 <= s['final_eval_accuracy'] <= 1 for s in result['summaries'])
    assert ledger.COLUMNS[-1] in (tmp_path / 'sweep').rglob('metrics.csv').__next__().read_text()

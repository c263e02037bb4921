"""Paper presets: experiment=leaf_femnist and its centralized pair, Reddi et al. 2021's EMNIST presets with the figure
they reproduce, and `make reproduce`'s printing (fedlab/reporting/reproduce.py) on synthetic run directories."""

import json
import subprocess
import sys

import pytest

from fedlab import cli
from fedlab.reporting import reproduce
from tests.conftest import LEAF_SAMPLE, REPO, compose_config, needs_leaf_sample

REDDI_PRESETS = ['fedavg', 'fedavgm', 'fedadam', 'fedyogi', 'fedadagrad']
COMPOSED = [[f'experiment={p}'] for p in REDDI_PRESETS] + [
    ['experiment=leaf_femnist', 'data.path=.'],
    ['experiment=leaf_femnist', 'data.path=.', 'task=centralized'],
]


@pytest.mark.parametrize('overrides', COMPOSED, ids=[' '.join(o) for o in COMPOSED])
def test_presets_compose_and_pass_the_checks(overrides, tmp_path):
    cli.check_before_tensorflow(compose_config(overrides), tmp_path)


def test_leaf_femnist_is_all_62_classes_and_its_pair_sees_the_same_training_data():
    federated = compose_config(['experiment=leaf_femnist', 'data.path=.'])
    centralized = compose_config(['experiment=leaf_femnist', 'data.path=.', 'task=centralized'])
    assert federated.data.digits_only is False and federated.data._target_ == 'fedlab.data.leaf.load_leaf'
    assert centralized.data == federated.data and centralized.model == federated.model
    assert centralized.batch_size == federated.batch_size and centralized.seed == federated.seed


@pytest.mark.parametrize('preset', REDDI_PRESETS)
def test_each_reddi_preset_states_the_paper_figure_it_reproduces(preset):
    paper = reproduce.paper_figure(reproduce.preset_file(preset).read_text())
    assert 'EMNIST CR' in paper['figure'] and 'Reddi et al. 2021' in paper['source']
    assert paper['accuracy'] is None or 0 < paper['accuracy'] <= 1


def test_a_paper_figure_that_is_not_a_number_is_refused_naming_the_key():
    text = '# paper.figure: x\n# paper.accuracy: 85%\n# paper.source: y\n'
    with pytest.raises(reproduce.ReproduceError, match='paper.accuracy is .85%.; allowed: a number'):
        reproduce.paper_figure(text)
    with pytest.raises(reproduce.ReproduceError, match='no "# paper.source:" line'):
        reproduce.paper_figure('# paper.figure: x\n# paper.accuracy: 0.85\n')


def test_data_is_emnist_when_its_database_is_cached_else_the_leaf_sample(tmp_path):
    assert reproduce.data_overrides('LEAF', str(tmp_path)) == ['data=leaf', 'data.path=LEAF', 'data.digits_only=false']
    (tmp_path / 'emnist_all.sqlite').write_bytes(b'')
    assert reproduce.data_overrides('LEAF', str(tmp_path)) == [
        'data=emnist', 'data.digits_only=false', f'data.cache_dir={tmp_path}']  # fmt: skip


def _fake_run(directory, *, seed, accuracy, data='leaf', status='completed', rounds=20):
    directory.mkdir(parents=True)
    results = {'status': status, 'choices': {'task': 'train', 'data': data}, 'config': {'seed': seed},
               'rounds_completed': rounds, 'final_eval': {'eval': {'accuracy': accuracy}}}  # fmt: skip
    (directory / 'results.json').write_text(json.dumps(results))
    (directory / 'metrics.csv').write_text('round\n')  # a completed run has its table (else the report skips it)


def _report(argv, capsys) -> tuple[int, str, str]:
    """`python -m fedlab.reporting.reproduce <argv>` in this process: (exit code, stdout, stderr)."""
    try:
        reproduce.main(argv)
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def test_report_prints_mean_and_std_over_seeds_against_the_paper_and_says_the_leaf_sample_is_not_its_setup(tmp_path):
    for seed, accuracy in enumerate([0.70, 0.74, 0.78]):
        _fake_run(tmp_path / f'seed={seed}', seed=seed, accuracy=accuracy)
    _fake_run(tmp_path / 'seed=3', seed=3, accuracy=None, status='interrupted')
    text = reproduce.render('fedavg', {'figure': 'FedAvg, EMNIST CR', 'accuracy': 0.85, 'source': 'the paper'},
                            reproduce.measured(tmp_path))  # fmt: skip
    assert 'measured: 0.7400 ± 0.0400 final eval accuracy over 3 seeds (0.7000, 0.7400, 0.7800), data=leaf' in text
    assert 'paper:    0.8500 (the paper); measured - paper: -0.1100' in text
    assert "is not the paper's setup" in text and '1 run(s) did not complete' in text


def test_report_on_emnist_has_no_caveat_and_an_unknown_figure_is_said_so(tmp_path, capsys):
    for seed in range(2):
        _fake_run(tmp_path / f'seed={seed}', seed=seed, accuracy=0.85, data='emnist', rounds=1500)
    code, out, err = _report(['report', str(tmp_path), 'fedadam'], capsys)
    assert code == 0, err
    assert 'measured: 0.8500 ± 0.0000 final eval accuracy over 2 seeds' in out
    assert 'data=emnist, 1500 rounds' in out and 'paper:    unknown: no number stated (Reddi et al. 2021' in out
    assert "not the paper's setup" not in out


@pytest.mark.parametrize('argv,expected', [
    (['report', '.', 'nosuch'], 'PRESET=nosuch: no conf/experiment/nosuch.yaml'),
    (['report', 'no/such/dir', 'fedavg'], 'no/such/dir: no such directory'),
])  # fmt: skip
def test_bad_input_is_one_line_and_exit_2(argv, expected, capsys):
    code, out, err = _report(argv, capsys)
    assert code == 2 and err.startswith(f'reproduce: error: {expected}') and not out
    assert len(err.strip().splitlines()) == 1

@pytest.mark.slow
@needs_leaf_sample
def test_leaf_femnist_and_its_centralized_pair_run_on_the_real_sample(tmp_path):
    common = ['experiment=leaf_femnist', f'data.path={LEAF_SAMPLE}', 'rounds=2', 'eval_every=1']
    # 2 rounds; the pair 1 epoch instead of its 30 (about a minute each on 2 shared cores).
    pair = ['task=centralized', 'task.epochs=1']
    for task, run_dir in [(['task=train'], tmp_path / 'fed'), (pair, tmp_path / 'cen')]:
        proc = subprocess.run([sys.executable, '-m', 'fedlab.cli', *common, *task, f'hydra.run.dir={run_dir}'],
                              capture_output=True, text=True, timeout=600, cwd=REPO)  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        results = json.loads((run_dir / 'results.json').read_text())
        assert results['status'] == 'completed' and results['data']['num_classes'] == 62
        assert results['final_eval']['eval']['accuracy'] > 1 / 62  # better than chance after 2 rounds

"""What a new user runs into (issue 24): more rounds on a finished run, the report's labels and checks, the centralized
baseline's fair budget and progress, populations smaller than asked, the help's TensorBoard command."""

import csv
import functools
import json
import pathlib

import pytest
from omegaconf import OmegaConf

from fedlab import cli
from fedlab.config import identity
from fedlab.errors import FedlabError
from fedlab.record import checkpoints
from tests.conftest import TINY, compose_config


def _identity(overrides=(), **changes) -> dict:
    """A run's identity, composed once per `overrides` (composing takes ~0.5 s), with top-level `changes`."""
    return {**_composed_identity(tuple(overrides)), **changes}


@functools.cache
def _composed_identity(overrides: tuple) -> dict:
    return identity.run_identity(OmegaConf.to_container(compose_config(overrides), resolve=True))


def _fake_checkpoint(run_dir: pathlib.Path, round_num: int, saved: dict) -> None:
    """A checkpoint with its saved config (an identity) and its manifest only: enough for the config check, which
    needs no TF."""
    directory = run_dir / 'checkpoints' / f'round_{round_num}'
    directory.mkdir(parents=True)
    (directory / checkpoints.CONFIG_FILE).write_text(json.dumps(saved))
    checkpoints.write_manifest(directory)


def _resumable(run_dir: pathlib.Path, config: dict) -> int:
    return checkpoints.CheckpointStore(run_dir / 'checkpoints').resumable_round(config)


# 1. More rounds on a run directory.
def test_more_rounds_continue_a_run_and_fewer_are_refused(tmp_path):
    _fake_checkpoint(tmp_path, 10, _identity(rounds=10))
    assert _resumable(tmp_path, _identity(rounds=10)) == 10
    assert _resumable(tmp_path, _identity(rounds=15)) == 10  # continues after round 10
    with pytest.raises(FedlabError, match=r'^rounds=5 is fewer than the 10 rounds .* holds'):
        _resumable(tmp_path, _identity(rounds=5))
    with pytest.raises(FedlabError, match=r'client_lr \(0.02 -> 0.5\)'):  # another change is still another run
        _resumable(tmp_path, _identity(rounds=15, client_lr=0.5))


def test_more_rounds_are_refused_when_a_schedule_follows_rounds(tmp_path):
    saved = _identity(['client_lr_schedule=exponential_decay', 'client_lr_schedule.decay_rounds=${rounds}'])
    assert saved['rounds'] == saved['client_lr_schedule']['decay_rounds'] == 10  # as the config resolves it
    schedule = saved['client_lr_schedule']
    _fake_checkpoint(tmp_path, 10, saved)
    with pytest.raises(FedlabError, match=r'client_lr_schedule\.decay_rounds follows rounds \(10 -> 15\)'):
        _resumable(tmp_path, {**saved, 'rounds': 15, 'client_lr_schedule': {**schedule, 'decay_rounds': 15}})
    # A schedule of its own number of rounds (the default: decay_rounds=500) is a function of the round alone.
    fixed = {**saved, 'client_lr_schedule': {**schedule, 'decay_rounds': 500}}
    _fake_checkpoint(tmp_path / 'fixed', 10, fixed)
    assert _resumable(tmp_path / 'fixed', {**fixed, 'rounds': 15}) == 10


def test_fewer_rounds_than_done_is_one_line_exit_2_before_tensorflow(tmp_path):
    import subprocess
    import sys

    _fake_checkpoint(tmp_path / 'run', 10, _identity(rounds=10))
    (tmp_path / 'run' / '.hydra').mkdir()
    (tmp_path / 'run' / '.hydra' / 'config.yaml').write_text('rounds: 10\n')  # the run's record, kept as it was
    code = (
        'import sys\nfrom fedlab import cli\n'
        f'sys.argv = ["fedlab", "rounds=5", "hydra.run.dir={tmp_path / "run"}"]\n'
        'try:\n    cli.main()\nexcept SystemExit as e:\n    code = e.code\nelse:\n    code = 0\n'
        'print("RESULT", code, sum(m.split(".")[0] == "tensorflow" for m in sys.modules))\n'
    )
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
    assert proc.stdout.rsplit('RESULT', 1)[1].split() == ['2', '0'], proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f'fedlab: error: rounds=5 is fewer than the 10 rounds {tmp_path / "run"} holds: a run is not cut back;'
        ' use rounds>=10 to continue it, or a new run directory']
    assert checkpoints.CheckpointStore(tmp_path / 'run' / 'checkpoints').rounds() == [10]
    assert (tmp_path / 'run' / '.hydra' / 'config.yaml').read_text() == 'rounds: 10\n'


def _tables(run_dir: pathlib.Path) -> dict[str, bytes]:
    return {name: (run_dir / name).read_bytes() for name in ('metrics.csv', 'clients.csv', 'clients_eval.csv')}


@pytest.mark.slow
def test_a_finished_run_extended_equals_the_longer_run(tmp_path):
    # A varying learning rate (its column and the state's hparams), uniform sampling (a per-round draw), the
    # ledger's cumulative bits; checkpoint_every=0: only the last round is checkpointed, and that is enough.
    setting = [*TINY, 'eval_every=2', 'checkpoint_every=0', 'sampling=uniform', 'client_lr_schedule=inverse_sqrt',
               'client_lr_schedule.timescale_rounds=1']
    cli.train(compose_config([*setting, 'rounds=4']), tmp_path / 'longer')
    cli.train(compose_config([*setting, 'rounds=2']), tmp_path / 'extended')
    assert checkpoints.CheckpointStore(tmp_path / 'extended' / 'checkpoints').rounds() == [2]  # the last round's
    outputs = cli.train(compose_config([*setting, 'rounds=4']), tmp_path / 'extended')
    assert outputs.rounds_completed == 4
    assert _tables(tmp_path / 'extended') == _tables(tmp_path / 'longer')
    results = json.loads((tmp_path / 'extended' / 'results.json').read_text())
    assert results['status'] == 'completed' and results['rounds_completed'] == 4
    with pytest.raises(FedlabError, match='rounds=3 is fewer than the 4 rounds'):
        cli.check_before_tensorflow(compose_config([*setting, 'rounds=3']), tmp_path / 'extended')


def _rows(path):
    with open(path, newline='') as f:
        return list(csv.DictReader(f))


# 4. fedlab-report.
def test_report_shows_one_seed_without_a_spread_and_labels_centralized_without_an_aggregator(tmp_path):
    from fedlab.reporting import markdown, runs

    assert markdown.plus_minus(0.8, 0.0, 1) == '0.8000 (n=1)'
    assert markdown.plus_minus(0.85, 0.0707, 2) == '0.8500 ± 0.0707 (n=2)'
    from fedlab.reporting import privacy

    row = {'group': 'g', 'noise_multiplier': 0.5, 'sampling_rate': 0.1, 'delta': 1e-3, 'rounds': 2, 'epsilon_rdp': 1.0,
           'epsilon_pld': 0.9, 'seeds': 1, 'accuracy_mean': 0.8, 'accuracy_std': 0.0, 'best_accuracy_mean': 0.8}
    assert '| 0.8000 | 0.8000 | 1 |' in privacy.markdown([row])
    assert '| 0.8000 ± 0.1000 | 0.8000 | 2 |' in privacy.markdown([dict(row, seeds=2, accuracy_std=0.1)])
    for name, task in [('fed', 'train'), ('central', 'centralized')]:  # results.json as fedlab writes it, in short
        (tmp_path / name).mkdir()
        choices = {'task': task, 'model': 'cnn', 'aggregator': 'compression' if task == 'train' else 'mean'}
        (tmp_path / name / 'results.json').write_text(json.dumps(
            {'status': 'completed', 'choices': choices, 'config': {'seed': 0, 'rounds': 2}}))
        (tmp_path / name / 'metrics.csv').write_text('round\n')  # a completed run has its table (else: skipped)
    groups = runs.group_runs(runs.find_runs(tmp_path))
    assert {g.label for g in groups} == {'task=train aggregator=compression', 'task=centralized'}


@pytest.mark.parametrize('target', ['5', '0', '-0.1'])
def test_report_refuses_a_target_outside_0_1_in_one_line(target, tmp_path, capsys):
    from fedlab.reporting import report

    with pytest.raises(SystemExit) as stopped:
        report.main([str(tmp_path), '--target', target])
    assert stopped.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    expected = f'fedlab-report: error: --target {float(target):g} is not allowed: an accuracy in (0, 1], e.g. 0.8'
    assert lines == [expected]


# 3. The help's TensorBoard command.
def test_help_footer_names_the_tensorboard_installed_beside_fedlab(monkeypatch, tmp_path):
    import os
    import sys

    from hydra import compose, initialize_config_module

    beside = pathlib.Path(sys.executable).parent / 'tensorboard'
    assert os.access(beside, os.X_OK)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv('PATH', '/usr/bin:/bin')  # the venv not active: its path
    assert cli.command_beside_python('tensorboard') == str(beside)
    monkeypatch.setenv('PATH', f'{beside.parent}:/usr/bin:/bin')  # active: the bare name
    assert cli.command_beside_python('tensorboard') == 'tensorboard'
    monkeypatch.setenv('PATH', '/usr/bin:/bin')
    with initialize_config_module('fedlab.conf', version_base='1.3'):
        footer = compose('config', return_hydra_config=True).hydra.help.footer
    assert f"'{beside} --logdir runs'" in footer and "'make tensorboard'" in footer


# 6. Populations smaller than asked.
def _leaf_with_writers(root: pathlib.Path, writers=('w0', 'w1')) -> pathlib.Path:
    """LEAF json with `writers`, two examples each, in train/ and test/."""
    data = {w: {'x': [[1.0] * 784, [0.0] * 784], 'y': [1, 2]} for w in writers}
    text = json.dumps({'users': list(writers), 'num_samples': [2] * len(writers), 'user_data': data})
    for split in ('train', 'test'):
        (root / split).mkdir(parents=True)
        (root / split / 'part_0.json').write_text(text)
    return root


def test_fewer_clients_than_data_num_clients_are_announced(capsys):
    from fedlab.data import selection

    assert selection.first_clients(['a', 'b', 'c'], 2, source='leaf') == ['a', 'b']
    assert capsys.readouterr().out == ''
    assert selection.first_clients(['a', 'b'], 10, source='leaf', what='writers in x') == ['a', 'b']
    assert capsys.readouterr().out == 'leaf: data.num_clients=10, but there are only 2 writers in x: using all 2\n'


def test_eval_clients_beyond_the_population_is_refused_before_tensorflow_where_known():
    from fedlab.config import checks

    config = OmegaConf.to_container(compose_config(['eval_clients=51']), resolve=True)
    with pytest.raises(FedlabError, match=r'^eval_clients=51 is larger than the population: data.num_clients=50'):
        checks.check_before_tensorflow(config)
    checks.check_before_tensorflow(OmegaConf.to_container(compose_config(['eval_clients=50']), resolve=True))


def test_leaf_with_fewer_writers_says_so_and_eval_clients_beyond_them_is_refused_at_load(tmp_path, capsys):
    leaf = _leaf_with_writers(tmp_path / 'leaf')
    overrides = ['data=leaf', f'data.path={leaf}', 'data.array_cache=null', 'data.num_clients=10',
                 'clients_per_round=1', 'eval_clients=3']
    with pytest.raises(FedlabError, match=r'^eval_clients=3 is larger than the population: 2 test clients of data='):
        cli.train(compose_config(overrides), tmp_path / 'run')
    assert f'leaf: data.num_clients=10, but there are only 2 writers in {leaf}: using all 2' in capsys.readouterr().out
    assert not (tmp_path / 'run').exists()


# 2. README's compression example compresses (the ratio itself: tests/test_ledger.py, 3.22 for fedavg_cnn on digits).
def test_readme_compression_example_uses_a_model_that_compresses_on_digits():
    from tests.conftest import REPO

    examples = [line for line in (REPO / 'README.md').read_text().splitlines()
                if line.startswith('    .venv/bin/fedlab model=') and 'aggregator=compression' in line]
    assert examples and all('model=fedavg_cnn' in line and '3.22x' in line for line in examples)


# 5. The centralized baseline: the federated budget to the example, and a line per epoch.
def test_matched_epochs_keep_the_fraction_and_the_last_epoch_trains_its_share():
    from fedlab.run import centralized

    # experiment=debug: 2 rounds x 3 of 10 clients x 1 epoch = 0.6 passes over the pooled data, not 1.
    assert centralized.matched_epochs(rounds=2, clients_per_round=3, client_epochs=1, num_clients=10) == 0.6
    assert centralized.matched_epochs(rounds=10, clients_per_round=10, client_epochs=5, num_clients=50) == 10
    assert type(centralized.matched_epochs(rounds=10, clients_per_round=10, client_epochs=5, num_clients=50)) is int
    assert centralized.epoch_sizes(0.6, 1439) == [863]
    assert centralized.epoch_sizes(2.4, 1000) == [1000, 1000, 400]
    assert centralized.epoch_sizes(3, 1000) == [1000] * 3
    assert centralized.epoch_sizes(0.0001, 1000) == [1]  # a tiny budget still trains


@pytest.mark.slow  # Keras trains (2-8 s): the default suite has no room; the epoch sizes are tested above
def test_centralized_with_a_fraction_of_an_epoch_trains_that_share_and_prints_each_epoch(tmp_path, capsys):
    # TINY with 1 round of 1 epoch: 3 of 6 clients once = 0.5 passes over the pooled data.
    from fedlab.run import centralized

    cfg = compose_config([*TINY, 'rounds=1', 'client_epochs=1', 'task=centralized'])
    cli.centralized(cfg, tmp_path)
    pooled = json.loads((tmp_path / 'results.json').read_text())['centralized']['train_examples']
    rows = _rows(tmp_path / 'metrics.csv')
    assert [(int(r['round']), int(r['train_examples'])) for r in rows] == [(1, round(pooled / 2))]
    assert int(rows[0]['train_batches']) == -(-round(pooled / 2) // cfg.batch_size)
    out = capsys.readouterr().out
    assert f'0.5 epochs (the last: {round(pooled / 2)} of {pooled} examples)' in out
    assert f'epoch 1/1  train loss {float(rows[0]["train_loss"]):.4f}' in out
    assert centralized.epoch_sizes(0.5, pooled) == [round(pooled / 2)]

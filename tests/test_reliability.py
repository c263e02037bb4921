"""Bad input is refused in one line before TensorFlow loads; runs checkpoint, resume and stop cleanly."""

import csv
import json
import pathlib
import signal
import subprocess
import sys
import time
import uuid

import pytest
from omegaconf import OmegaConf

from fedlab import cli
from fedlab.config import identity
from fedlab.errors import FedlabError, TrainingDiverged
from fedlab.record import checkpoints
from tests.conftest import TINY, compose_config
from tests.test_cli import FEDLAB, _env, _workers_with_token


def _write_leaf(root: pathlib.Path, train: str, test: str | None = None) -> pathlib.Path:
    (root / 'train').mkdir(parents=True)
    (root / 'test').mkdir()
    (root / 'train' / 'part_0.json').write_text(train)
    (root / 'test' / 'part_0.json').write_text(test if test is not None else train)
    return root


def _leaf_json(num_samples, x, y, users=('w0',)):
    return json.dumps({'users': list(users), 'num_samples': num_samples, 'user_data': {users[0]: {'x': x, 'y': y}}})


PIXELS = [1.0] * 784


def _fake_checkpoint(run_dir: pathlib.Path, config: dict) -> None:
    """A checkpoint directory with the saved config only: enough for the config check, which needs no TF."""
    saved = run_dir / 'checkpoints' / 'round_2'
    saved.mkdir(parents=True)
    (saved / checkpoints.CONFIG_FILE).write_text(json.dumps(config))


# (case, overrides, what the one line must say). `{tmp}` is a fresh temporary directory.
BAD_INPUT = [
    ('unknown group option', ['model=resnet'], "Available options in 'model'"),
    ('unknown key', ['learning_rate=0.1'], "Key 'learning_rate' not in"),
    ('wrong type', ['rounds=ten'], 'rounds=ten'),
    ('rounds zero', ['rounds=0'], 'rounds must be an integer >= 1'),
    ('rounds negative', ['rounds=-3'], 'rounds must be an integer >= 1'),
    ('clients_per_round zero', ['clients_per_round=0'], 'clients_per_round must be an integer >= 1'),
    ('clients_per_round over population', ['clients_per_round=51'], 'larger than the population'),
    ('client_lr zero', ['client_lr=0'], 'client_lr must be a number > 0'),
    ('server_lr negative', ['server_lr=-1'], 'server_lr must be a number > 0'),
    ('client_lr not a number', ['client_lr=fast'], 'client_lr=fast'),
    ('batch_size zero', ['batch_size=0'], 'batch_size must be an integer >= 1'),
    ('eval_every negative', ['eval_every=-1'], 'eval_every must be an integer >= 0'),
    ('missing data path', ['data=leaf'], 'data.path'),
    ('data path does not exist', ['data=leaf', 'data.path={tmp}/nowhere'], 'no such file or directory'),
    ('corrupt data file', ['data=leaf', 'data.path={tmp}/corrupt'], 'part_0.json'),
    ('empty client', ['data=leaf', 'data.path={tmp}/empty_client'], 'part_0.json'),
    ('resume dir does not exist', ['resume={tmp}/no_run'], 'no fedlab run with checkpoints'),
    ('resume dir of another config', ['resume={tmp}/other_run'], 'client_lr (0.5 -> 0.02)'),
    ('wrong _target_', ['model._target_=nowhere.model_fn'], "no such module 'nowhere'"),
    ('fedsgd with client epochs', ['algorithm=fedsgd', 'client_epochs=3'], 'use algorithm=fedavg client_epochs=3'),
    ('momentum with adam', ['server_optimizer=adam', 'server_momentum=0.9'], 'use server_optimizer=sgd'),
    ('target accuracy zero', ['target_accuracy=0'], 'target_accuracy must be null or an accuracy in (0, 1]'),
    ('target accuracy above one', ['target_accuracy=1.5'], 'target_accuracy must be'),
    ('stop at target without one', ['stop_at_target=true'], 'stop_at_target=true needs target_accuracy'),
    ('holdout of everyone', ['holdout_clients=1'], 'holdout_clients must be a fraction in [0, 1)'),
    ('holdout leaving too few', ['holdout_clients=0.9'], 'holdout_clients=0.9 leaves 5 of 50 clients'),
    ('personalization epochs zero', ['personalization=finetune', 'personalization.epochs=0'],
     'personalization.epochs must be an integer >= 1'),
    ('personalization centralized', ['personalization=finetune', 'task=centralized'],
     'personalization=finetune needs task=train'),
    ('scaffold with momentum', ['algorithm=scaffold', 'client_momentum=0.9'],
     'client_momentum=0.9 does not fit algorithm=scaffold'),
    ('fednova with adam', ['algorithm=fednova', 'client_optimizer=adam'], 'client_optimizer=adam does not fit'),
    ('feddyn alpha negative', ['algorithm=feddyn', 'algorithm.alpha=-1'], "FedDyn's alpha must be a number >= 0"),
    ('scaffold with dp', ['algorithm=scaffold', 'aggregator=dp', 'weighting=uniform', 'sampling=poisson'],
     'algorithm=scaffold with aggregator=dp'),
    ('client state budget', ['algorithm=scaffold', 'client_state_budget_mb=0'], 'client_state_budget_mb must be'),
    ('trace missing', ['system=trace', 'system.path={tmp}/no_trace.csv'], 'no_trace.csv: no such file'),
    ('deadline zero', ['system=heterogeneous', 'system.deadline_s=0'], 'system.deadline_s=0 is not allowed'),
    ('partial work with scaffold', ['system=heterogeneous', 'system.partial_work=true', 'system.deadline_s=1',
                                    'algorithm=scaffold'], 'system.partial_work=true with algorithm=scaffold'),
    ('fedbuff without a clock', ['algorithm=fedbuff'], 'algorithm=fedbuff needs system=heterogeneous or trace'),
    ('fedbuff with a deadline', ['algorithm=fedbuff', 'system=heterogeneous', 'system.deadline_s=3'],
     'system.deadline_s=3.0 does not fit algorithm=fedbuff'),
    ('dp with over-selection', ['system=heterogeneous', 'system.over_selection=0.3', 'aggregator=dp',
                                'weighting=uniform', 'sampling=poisson'],
     'aggregator=dp with system.over_selection=0.3'),
]


@pytest.fixture(scope='module')
def bad_inputs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('bad')
    _write_leaf(tmp / 'corrupt', '{"users": ["w0"], "num_samples": [1], "user_data": {')
    _write_leaf(tmp / 'empty_client', _leaf_json([0], [], []))
    other = compose_config(['client_lr=0.5'])
    _fake_checkpoint(tmp / 'other_run', identity.run_identity(OmegaConf.to_container(other, resolve=True)))
    return tmp


@pytest.mark.parametrize('case,overrides,expected', BAD_INPUT, ids=[c[0] for c in BAD_INPUT])
def test_bad_input_is_one_line_exit_2_before_tensorflow(case, overrides, expected, bad_inputs, tmp_path):
    overrides = [o.replace('{tmp}', str(bad_inputs)) for o in overrides]
    run_dir = tmp_path / 'run'
    if not any(o.startswith('resume=') for o in overrides):
        overrides.append(f'hydra.run.dir={run_dir}')
    code = (
        'import sys\n'
        'from fedlab import cli\n'
        f'sys.argv = ["fedlab", *{overrides!r}]\n'
        'try:\n    cli.main()\nexcept SystemExit as e:\n    code = e.code\nelse:\n    code = 0\n'
        'tf = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "tensorflow_federated"))\n'
        'print("RESULT", code, len(tf))\n'
    )
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=60)
    exit_code, tf_modules = proc.stdout.rsplit('RESULT', 1)[1].split()
    assert exit_code == '2', proc.stderr
    assert tf_modules == '0', 'TensorFlow was imported before the error'
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('fedlab: error: '), proc.stderr
    assert expected in lines[0]
    assert 'Traceback' not in proc.stderr
    assert not run_dir.exists(), 'a run directory was left behind'
    assert not (bad_inputs / 'no_run').exists()


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_interrupt_checkpoints_the_last_complete_round(tmp_path):
    overrides = [*TINY, 'rounds=6', 'checkpoint_every=0', 'sampling._target_=tests.interrupting_sampler.interrupting',
                 '+sampling.interrupt_at=4']
    with pytest.raises(KeyboardInterrupt):
        cli.train(compose_config(overrides), tmp_path)
    results = json.loads((tmp_path / 'results.json').read_text())
    assert results['status'] == 'interrupted' and results['rounds_completed'] == 3
    assert [int(r['round']) for r in _rows(tmp_path / 'metrics.csv')] == [1, 2, 3]
    assert checkpoints.CheckpointStore(tmp_path / 'checkpoints').rounds() == [3]


def test_resume_refuses_another_config_and_continues_the_same(tmp_path):
    cli.train(compose_config([*TINY, 'rounds=2', 'checkpoint_every=1']), tmp_path)
    with pytest.raises(FedlabError, match=r'client_lr \(0.02 -> 0.5\)'):
        cli.train(compose_config([*TINY, 'rounds=2', 'checkpoint_every=1', 'client_lr=0.5']), tmp_path)
    before = (tmp_path / 'metrics.csv').read_text()
    outputs = cli.train(compose_config([*TINY, 'rounds=2', 'checkpoint_every=1']), tmp_path)  # already complete
    assert outputs.rounds_completed == 2 and (tmp_path / 'metrics.csv').read_text() == before


def test_divergence_stops_with_the_round_and_keeps_the_last_good_checkpoint(tmp_path):
    overrides = [*TINY, 'rounds=4', 'checkpoint_every=1', 'client_lr=1e30', 'server_lr=1e30']
    with pytest.raises(TrainingDiverged, match=r'training diverged in round \d+.*last good checkpoint is round \d+'):
        cli.train(compose_config(overrides), tmp_path)
    results = json.loads((tmp_path / 'results.json').read_text())
    assert results['status'] == 'diverged' and results['error'].startswith('training diverged in round')
    saved = checkpoints.CheckpointStore(tmp_path / 'checkpoints').rounds()
    assert saved == sorted(saved) and (not saved or saved[-1] == results['rounds_completed'])


@pytest.mark.slow
def test_different_seed_samples_different_clients(tmp_path):
    for seed in (0, 1):
        cli.train(compose_config([*TINY, 'sampling=uniform', 'data.num_clients=12', f'seed={seed}']), tmp_path / str(seed))
    clients = {seed: (tmp_path / str(seed) / 'clients.csv').read_text() for seed in (0, 1)}
    assert clients[0] != clients[1]
    assert len(_rows(tmp_path / '0' / 'clients.csv')) == 2


def _start(args, run_dir, token):
    return subprocess.Popen(
        [str(FEDLAB), *args, f'hydra.run.dir={run_dir}'],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(token),
    )


def _wait_for_round(proc, round_num, timeout=400):
    """Reads fedlab's output until the line of `round_num` ('round   5/500  train ...')."""
    deadline = time.monotonic() + timeout
    for line in proc.stdout:
        words = line.split()
        if len(words) > 1 and words[0] == 'round' and words[1].split('/')[0] == str(round_num):
            return
        assert time.monotonic() < deadline, f'no line for round {round_num}'
    raise AssertionError(f'fedlab ended before round {round_num}')


def run_killed_and_resumed(args, tmp_path) -> tuple[pathlib.Path, pathlib.Path]:
    """Runs fedlab with `args` (8 rounds or fewer past 5, checkpoint_every=2) to the end in `full`, and again in
    `killed`, SIGKILLed after round 5 (checkpoint 4 saved, no TFF worker left) and rerun, resuming; returns the two
    run directories and checks that no TFF worker outlived them."""
    token = uuid.uuid4().hex
    full = _start(args, tmp_path / 'full', token)
    full.communicate(timeout=300)
    assert full.returncode == 0

    killed = _start(args, tmp_path / 'killed', token)
    _wait_for_round(killed, 5)
    killed.send_signal(signal.SIGKILL)
    killed.communicate(timeout=60)
    time.sleep(1.5)  # the watchdog reacts to the closed pipe
    assert not _workers_with_token(token), 'the killed run left its TFF worker running'
    assert checkpoints.CheckpointStore(tmp_path / 'killed' / 'checkpoints').latest_round() == 4

    rerun = _start(args, tmp_path / 'killed', token)
    out, _ = rerun.communicate(timeout=300)
    assert rerun.returncode == 0 and 'resuming' in out
    assert not _workers_with_token(token)
    return tmp_path / 'full', tmp_path / 'killed'


@pytest.mark.slow
def test_sigkill_then_rerun_gives_the_uninterrupted_metrics(tmp_path):
    # Compression carries adaptive clipping and zeroing state, uniform sampling a per-round draw: both must resume.
    args = ['model=linear', 'aggregator=compression', 'sampling=uniform', 'rounds=8', 'eval_every=2',
            'checkpoint_every=2', 'data.num_clients=20', 'clients_per_round=4', 'client_epochs=1']
    full, killed = run_killed_and_resumed(args, tmp_path)
    for table in ['metrics.csv', 'clients.csv', 'clients_eval.csv']:
        assert (killed / table).read_bytes() == (full / table).read_bytes(), table


@pytest.mark.slow  # a full CLI run; SIGINT is checked in the default suite (test_cli)
def test_sigterm_exits_143_with_complete_files(tmp_path):
    token = uuid.uuid4().hex
    proc = _start(['rounds=500', 'eval_every=0', 'checkpoint_every=0'], tmp_path / 'run', token)
    _wait_for_round(proc, 2)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == 143
    assert not _workers_with_token(token)
    results = json.loads((tmp_path / 'run' / 'results.json').read_text())
    assert results['status'] == 'interrupted'
    done = results['rounds_completed']
    assert len(_rows(tmp_path / 'run' / 'metrics.csv')) == done
    assert checkpoints.CheckpointStore(tmp_path / 'run' / 'checkpoints').rounds() == [done]


@pytest.mark.slow
def test_multirun_reports_a_failed_job_and_runs_the_others(tmp_path):
    token = uuid.uuid4().hex
    proc = subprocess.run(
        [str(FEDLAB), '-m', 'experiment=debug', 'rounds=1', 'client_lr=0.02,-1,0.05', f'hydra.sweep.dir={tmp_path}'],
        capture_output=True, text=True, timeout=300, env=_env(token),
    )
    assert proc.returncode == 1
    assert '2 of 3 jobs completed' in proc.stdout
    assert 'client_lr must be a number > 0' in proc.stdout + proc.stderr
    statuses = {p.parent.name: json.loads(p.read_text())['status'] for p in tmp_path.glob('*/results.json')}
    assert sorted(statuses.values()) == ['completed', 'completed', 'failed']
    assert not _workers_with_token(token)


@pytest.mark.slow
def test_a_second_ctrl_c_stops_at_once_keeping_only_complete_rounds(tmp_path):
    """fedavg_cnn rounds of 40 local epochs take over half a second: both signals land inside round 3's TFF
    computation, where round 2's state is in TFF's worker (resident_state); the stop fetches it for its checkpoint
    (it was once missing: a run with checkpoint_every=0 then resumed from its start)."""
    token = uuid.uuid4().hex
    overrides = ['model=fedavg_cnn', 'client_epochs=40', 'rounds=200', 'eval_every=0', 'checkpoint_every=0']
    proc = _start(overrides, tmp_path / 'run', token)
    _wait_for_round(proc, 2)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=120) == 130  # never a C++ abort (134); wait(): a leaked worker would hold stdout open
    assert not _workers_with_token(token)
    results = json.loads((tmp_path / 'run' / 'results.json').read_text())
    done = results['rounds_completed']
    assert results['status'] == 'interrupted' and done >= 2
    assert [int(r['round']) for r in _rows(tmp_path / 'run' / 'metrics.csv')] == list(range(1, done + 1))
    assert checkpoints.CheckpointStore(tmp_path / 'run' / 'checkpoints').rounds() == [done]


@pytest.mark.slow
def test_sigint_at_random_moments_then_resume_gives_the_uninterrupted_tables(tmp_path):
    """The acceptance run, shortened: SIGINT at random moments of a linear run with checkpoint_every=3 (during
    start-up, checkpoint loading, rounds and bookkeeping), resumed each time; every attempt exits 130 (never a C++
    abort) and the tables end equal to an uninterrupted run's."""
    import random

    args = ['rounds=60', 'eval_every=7', 'checkpoint_every=3', 'sampling=uniform']
    token = uuid.uuid4().hex
    full = _start(args, tmp_path / 'full', token)
    assert full.wait(timeout=300) == 0
    rng = random.Random(0)
    attempts = []
    for _ in range(5):
        proc = _start(args, tmp_path / 'interrupted', token)
        proc.stdout.readline()  # the data summary: the signal handlers are in place
        time.sleep(rng.uniform(0.0, 6.0))
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
        attempts.append(proc.returncode)
        assert proc.returncode in (0, 130), out[-2000:]
        if proc.returncode == 0:
            break
    final = _start(args, tmp_path / 'interrupted', token)
    out, _ = final.communicate(timeout=300)
    assert final.returncode == 0, out[-2000:]
    assert 130 in attempts
    for table in ['metrics.csv', 'clients.csv', 'clients_eval.csv']:
        assert (tmp_path / 'interrupted' / table).read_bytes() == (tmp_path / 'full' / table).read_bytes(), table
    assert not _workers_with_token(token)

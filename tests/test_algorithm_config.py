"""The algorithm, optimizer and schedule groups: what composes, what is refused before TensorFlow loads, and the
learning rates of every round, set through the process's hparams and recorded in metrics.csv and TensorBoard."""

import json
import math

import pytest

from fedlab import cli
from fedlab.algorithms import schedules
from fedlab.errors import FedlabError
from tests.conftest import TINY, compose_config

REFUSED = [
    (['algorithm=fedsgd', 'client_epochs=3'], 'client_epochs=3 has no meaning with algorithm=fedsgd'),
    (['algorithm=fedsgd', 'client_lr=0.1'], 'use algorithm=fedavg client_lr=0.1'),
    (['algorithm=fedsgd', 'client_momentum=0.9'], 'client_momentum=0.9 has no meaning with algorithm=fedsgd'),
    (['algorithm=fedsgd', 'client_optimizer=adam'], 'client_optimizer=adam has no meaning with algorithm=fedsgd'),
    (['algorithm=fedsgd', 'client_lr_schedule=inverse_sqrt'], 'client_lr_schedule has no meaning'),
    (['server_optimizer=adam', 'server_momentum=0.9'], "server_momentum=0.9 applies to server_optimizer=sgd, not adam"),
    (['client_optimizer=adam', 'client_momentum=0.5'], 'client_momentum=0.5 applies to client_optimizer=sgd'),
    (['algorithm=fedprox', 'client_inputs=dataset'], 'algorithm.mu=0.01 runs on client_inputs=shards or tensors'),
    (['algorithm=fedprox', 'algorithm.mu=-1'], 'mu must be a number >= 0'),
    (['algorithm=fedprox', 'algorithm.mu=0', 'client_inputs=dataset', 'client_lr_schedule=exponential_decay'],
     'client_lr_schedule with algorithm=fedprox runs on client_inputs=shards or tensors'),
    (['weighting=size'], 'weighting must be num_examples or uniform'),
    (['server_lr_schedule=exponential_decay', 'server_lr_schedule.decay_rate=2'], 'decay_rate must be'),
    (['client_lr_schedule=constant', 'client_lr_schedule.warmup_rounds=-1'], 'warmup_rounds must be'),
    (['client_epochs=null'], 'client_epochs=null is not allowed with algorithm=fedavg'),
    (['task=centralized', 'client_optimizer=adam'], 'task=centralized trains with SGD'),
    (['algorithm=mime_lite', 'aggregator=dp_fixed', 'sampling=poisson'], 'the DP noise does not cover'),
]  # fmt: skip

ACCEPTED = [
    ['algorithm=fedsgd'],
    ['algorithm=fedsgd', 'server_optimizer=adam', 'server_lr_schedule=inverse_sqrt'],
    ['algorithm=mime_lite'],
    ['algorithm=mime_lite', 'client_optimizer=adam', 'client_inputs=dataset', 'client_lr_schedule=inverse_sqrt'],
    ['algorithm=fedprox', 'algorithm.mu=0', 'client_inputs=dataset'],
    ['server_optimizer=yogi', 'weighting=uniform', 'client_optimizer=sgdm'],
    ['experiment=fedadam'], ['experiment=fedyogi'], ['experiment=fedadagrad'], ['experiment=fedavgm'],
    ['experiment=leaf_digits', 'data.path=.'], ['experiment=leaf_digits', 'data.path=.', 'task=centralized'],
]  # fmt: skip


@pytest.mark.parametrize('overrides,expected', REFUSED, ids=[' '.join(o) for o, _ in REFUSED])
def test_meaningless_combinations_are_refused_naming_one_that_works(overrides, expected, tmp_path):
    with pytest.raises(FedlabError, match=expected.replace('(', r'\(').replace(')', r'\)')) as error:
        cli.check_before_tensorflow(compose_config(overrides), tmp_path)
    assert '\n' not in str(error.value)


@pytest.mark.parametrize('overrides', ACCEPTED, ids=[' '.join(o) for o in ACCEPTED])
def test_meaningful_combinations_compose_and_pass_the_checks(overrides, tmp_path):
    cfg = compose_config(overrides)
    cli.check_before_tensorflow(cfg, tmp_path)
    if 'algorithm=fedsgd' in overrides:  # the keys FedSGD has no use for are null, and so not refused
        assert cfg.client_lr is None and cfg.client_epochs is None and cfg.client_optimizer is None


def test_server_lr_and_momentum_still_set_sgd_and_each_optimizer_has_its_own_default():
    sgd = cli.optimizer(compose_config(['server_lr=0.5', 'server_momentum=0.9']), 'server')
    assert sgd.get_hparams(sgd.initialize(())) == {'learning_rate': 0.5, 'momentum': 0.9}
    adam_config = compose_config(['server_optimizer=adam'])
    assert adam_config.server_lr == 0.00316 and adam_config.server_momentum is None
    adam = cli.optimizer(compose_config(['server_optimizer=adam', 'server_lr=0.01']), 'server')
    assert {k: float(v) for k, v in adam.get_hparams(adam.initialize(())).items()} == pytest.approx(
        {'learning_rate': 0.01, 'beta_1': 0.9, 'beta_2': 0.999, 'epsilon': 1e-3}
    )
    mime = compose_config(['algorithm=mime_lite'])
    assert mime.client_momentum == 0.9 and cli.optimizer(mime, 'client') is not None
    assert cli.optimizer(compose_config(['algorithm=fedsgd']), 'client') is None


def test_schedules_are_factors_of_the_round():
    constant = schedules.Constant(warmup_rounds=4)
    assert [constant(r) for r in (1, 2, 4, 5, 100)] == pytest.approx([0.25, 0.5, 1.0, 1.0, 1.0])
    decay = schedules.ExponentialDecay(decay_rate=0.5, decay_rounds=10)
    assert [decay(r) for r in (1, 11, 21)] == pytest.approx([1.0, 0.5, 0.25])
    assert decay(6) == pytest.approx(0.5**0.5)
    stairs = schedules.ExponentialDecay(decay_rate=0.5, decay_rounds=10, staircase=True, warmup_rounds=2)
    assert [stairs(r) for r in (1, 2, 3, 12, 13)] == pytest.approx([0.5, 1.0, 1.0, 1.0, 0.5])
    inverse = schedules.InverseSqrt(timescale_rounds=10)
    assert [inverse(r) for r in (1, 31)] == pytest.approx([1.0, 0.5])
    assert not schedules.Constant().varies and schedules.ExponentialDecay(decay_rate=0.5).varies
    with pytest.raises(FedlabError, match='decay_rounds=0 is not allowed'):
        schedules.ExponentialDecay(decay_rounds=0)


def test_learning_rates_are_set_through_the_processs_hparams_only_when_they_vary():
    class Process:
        def __init__(self):
            self.calls = []

        def get_hparams(self, state):
            return {'client_work': {'learning_rate': 0.0, 'momentum': 0.9}, 'finalizer': {'learning_rate': 0.0}}

        def set_hparams(self, state, hparams):
            self.calls.append(json.loads(json.dumps(hparams, default=float)))
            return state + 1

    process = Process()
    constant = schedules.LearningRates(client_lr=0.1, server_lr=1.0)
    assert constant.apply(process, 0, 1) == 0 and not process.calls
    assert constant.values(7) == {'client_lr': 0.1, 'server_lr': 1.0}
    fedsgd = schedules.LearningRates(client_lr=None, server_lr=1.0, server=schedules.InverseSqrt(10))
    assert fedsgd.apply(process, 0, 31) == 1
    assert process.calls[-1]['finalizer']['learning_rate'] == pytest.approx(0.5)
    assert process.calls[-1]['client_work'] == {'learning_rate': 0.0, 'momentum': 0.9}  # FedSGD: no client rate
    assert fedsgd.values(31) == {'server_lr': pytest.approx(0.5)}
    assert set(fedsgd.summary()) == {'server_lr'} and fedsgd.summary()['server_lr']['schedule'] == 'InverseSqrt'


def test_learning_rates_are_set_every_round_and_recorded_in_metrics_csv_and_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from fedlab.record import tables

    overrides = [
        *TINY, 'rounds=3', 'eval_every=0', 'checkpoint_every=0', 'server_optimizer=adam', 'server_lr=0.01',
        'server_lr_schedule=exponential_decay', 'server_lr_schedule.decay_rounds=2', 'client_lr_schedule=inverse_sqrt',
        'client_lr_schedule.warmup_rounds=1',
    ]  # fmt: skip
    cli.train(compose_config(overrides), tmp_path)
    rows = tables.read_rows(tmp_path / 'metrics.csv')
    assert [float(r['server_lr']) for r in rows] == pytest.approx([0.01 * 0.1 ** (r / 2) for r in range(3)])
    assert [float(r['client_lr']) for r in rows] == pytest.approx([0.02, 0.02, 0.02 * math.sqrt(10 / 11)])
    accumulator = EventAccumulator(str(tmp_path / 'tensorboard' / schedules.LearningRates.tensorboard_run))
    accumulator.Reload()
    assert set(accumulator.Tags()['tensors']) == {'client_lr', 'server_lr'}
    assert [e.step for e in accumulator.Tensors('server_lr')] == [1, 2, 3]


ADAM_DECAYING = [
    'model=linear', 'sampling=uniform', 'rounds=8', 'eval_every=2', 'checkpoint_every=2', 'data.num_clients=20',
    'clients_per_round=4', 'client_epochs=1', 'server_optimizer=adam', 'server_lr=0.01',
    'server_lr_schedule=exponential_decay', 'server_lr_schedule.decay_rounds=3', 'client_lr_schedule=inverse_sqrt',
    'client_lr_schedule.warmup_rounds=2',
]  # fmt: skip


@pytest.mark.slow
def test_a_killed_adam_run_with_schedules_resumes_to_the_uninterrupted_metrics(tmp_path):
    """Adam's moments live in the checkpointed state; the learning rates are set again from the round number."""
    from tests.test_reliability import run_killed_and_resumed

    full, killed = run_killed_and_resumed(ADAM_DECAYING, tmp_path)
    for table in ['metrics.csv', 'clients.csv']:
        assert (killed / table).read_bytes() == (full / table).read_bytes(), table


@pytest.mark.slow
def test_a_sweep_over_server_optimizers_records_which_ran_with_its_hyperparameters(tmp_path):
    import subprocess
    import uuid

    import yaml

    from tests.test_cli import FEDLAB, _env, _workers_with_token

    token = uuid.uuid4().hex
    proc = subprocess.run(
        [str(FEDLAB), '-m', 'server_optimizer=sgd,adam,yogi,adagrad', 'rounds=3', f'hydra.sweep.dir={tmp_path}'],
        capture_output=True, text=True, timeout=900, env=_env(token),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    runs = sorted(p.parent for p in tmp_path.glob('*/results.json'))
    assert len(runs) == 4
    seen = set()
    for run in runs:
        results = json.loads((run / 'results.json').read_text())
        assert results['status'] == 'completed' and results['rounds_completed'] == 3
        name = results['choices']['server_optimizer']
        optimizer = results['config']['server_optimizer']
        assert optimizer['_target_'] == f'fedlab.algorithms.optimizers.{name}'
        assert results['learning_rate']['server_lr']['learning_rate'] == results['config']['server_lr']
        saved = yaml.safe_load((run / '.hydra' / 'config.yaml').read_text())
        assert saved['server_optimizer'] == optimizer and saved['server_lr'] == results['config']['server_lr']
        if name != 'sgd':
            assert 'epsilon' in optimizer and results['config']['server_momentum'] is None
        seen.add(name)
    assert seen == {'sgd', 'adam', 'yogi', 'adagrad'}
    assert not _workers_with_token(token)

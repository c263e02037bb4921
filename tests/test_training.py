"""Short real FedAvg runs of every model with every aggregator; the numbers that come out are checked."""

import csv
import json
import math

import pytest

from fedlab import cli
from fedlab.data.federated_data import examples_per_client
from fedlab.record import ledger
from fedlab.run import client_distribution
from tests.conftest import TINY, compose_config

MODELS = ['linear', 'custom', 'fedavg_cnn', 'simple_cnn']
AGGREGATORS = ['mean', 'compression']


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


# Every model with the mean; compression on simple_cnn in the default suite (the others' are slow).
TWO_ROUND_CASES = [
    pytest.param(model, aggregator, marks=pytest.mark.slow if aggregator == 'compression' and model != 'simple_cnn' else ())
    for model in MODELS
    for aggregator in AGGREGATORS
]  # fmt: skip


@pytest.mark.parametrize('model,aggregator', TWO_ROUND_CASES)
def test_two_rounds_learn_and_count_every_example(model, aggregator, tmp_path):
    cfg = compose_config([*TINY, f'model={model}', f'aggregator={aggregator}'])
    outputs = cli.train(cfg, tmp_path)

    rows = _rows(tmp_path / 'metrics.csv')
    assert [int(r['round']) for r in rows] == [1, 2]
    losses = [float(r['train_loss']) for r in rows]
    assert all(math.isfinite(x) for x in losses)
    assert losses[1] < losses[0], f'train loss did not fall: {losses}'

    # Example counts are the data's: fixed sampling takes the first clients, each seen client_epochs times.
    from hydra.utils import instantiate

    data = instantiate(cfg.data)
    train_sizes = examples_per_client(data.train)
    sampled = sorted(data.client_ids)[: cfg.clients_per_round]
    for r in rows:
        assert int(r['clients']) == cfg.clients_per_round
        assert int(r['train_examples']) == cfg.client_epochs * sum(train_sizes[c] for c in sampled)
        assert int(r['eval_examples']) == sum(examples_per_client(data.test).values())
        assert 0.0 <= float(r['eval_accuracy']) <= 1.0

    results = json.loads((tmp_path / 'results.json').read_text())
    assert results['status'] == 'completed' and results['rounds_completed'] == 2
    assert results['final_eval']['eval']['accuracy'] == pytest.approx(float(rows[-1]['eval_accuracy']))
    assert outputs.final_train['loss'] == pytest.approx(losses[-1])
    # One TensorBoard run per population written, no empty one (eval_on_train is off).
    assert sorted(p.name for p in (tmp_path / 'tensorboard').iterdir() if p.is_dir()) == ['communication', 'eval',
                                                                                         'learning_rate', 'train']  # fmt: skip


def test_linear_learns_well_above_chance(tmp_path):
    """The default run's recipe (linear, mean, fixed clients) on the full digits population."""
    cfg = compose_config(['rounds=10', 'eval_every=0'])
    outputs = cli.train(cfg, tmp_path)
    assert outputs.final_eval['eval']['accuracy'] > 0.25  # chance is 0.10


def test_uniform_sampling_draws_different_clients_each_round(tmp_path):
    cfg = compose_config([*TINY, 'sampling=uniform', 'rounds=3', 'data.num_clients=12'])
    from hydra.utils import instantiate

    data = instantiate(cfg.data)
    sampler = instantiate(cfg.sampling)(data.client_ids, cfg.clients_per_round)
    draws = [tuple(sampler(r)) for r in (1, 2, 3)]
    assert all(len(set(d)) == cfg.clients_per_round for d in draws)
    assert len(set(draws)) > 1
    assert draws == [tuple(sampler(r)) for r in (1, 2, 3)]  # a function of (seed, round) only
    other_seed = instantiate(compose_config([*TINY, 'sampling=uniform', 'seed=1', 'data.num_clients=12']).sampling)
    assert [tuple(other_seed(data.client_ids, 3)(r)) for r in (1, 2, 3)] != draws


def test_custom_model_gives_the_same_metrics_as_linear(tmp_path):
    runs = {}
    for model in ['linear', 'custom']:
        cfg = compose_config([*TINY, f'model={model}', 'rounds=3'])
        cli.train(cfg, tmp_path / model)
        runs[model] = _rows(tmp_path / model / 'metrics.csv')
    for linear, custom in zip(runs['linear'], runs['custom']):
        for column, value in linear.items():
            if column.endswith('_seconds') or column in ledger.COLUMNS:
                continue
            assert float(custom[column]) == pytest.approx(float(value), rel=1e-5), column
        # Same weights on the wire; custom reports its example and batch counts as float32, Keras as int64.
        assert int(linear['uplink_bits_per_client']) - int(custom['uplink_bits_per_client']) == 2 * (64 - 32)
        assert linear['downlink_bits_per_client'] == custom['downlink_bits_per_client']


def test_same_seed_same_metrics_byte_for_byte(tmp_path):
    for name in ['a', 'b']:
        cli.train(compose_config([*TINY, 'model=simple_cnn', 'sampling=uniform', 'data.num_clients=8']), tmp_path / name)
    for table in ['metrics.csv', 'clients.csv']:
        assert (tmp_path / 'a' / table).read_bytes() == (tmp_path / 'b' / table).read_bytes(), table


def test_eval_on_train_and_tensorboard_tags(tmp_path):
    cfg = compose_config([*TINY, 'task.eval_on_train=true'])
    outputs = cli.train(cfg, tmp_path)
    assert set(outputs.final_eval) == {'eval', 'eval_on_train'}

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = {}
    for population in ['train', 'eval', 'eval_on_train']:
        accumulator = EventAccumulator(str(tmp_path / 'tensorboard' / population))
        accumulator.Reload()
        tags[population] = set(accumulator.Tags()['tensors'])
    assert {'loss', 'accuracy', 'examples'} <= tags['train']
    assert tags['train'] < tags['eval'] == tags['eval_on_train']  # shared tags: the curves overlay
    assert tags['eval'] - tags['train'] == set(client_distribution.DISTRIBUTION_KEYS)  # spread over clients

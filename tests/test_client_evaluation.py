"""Per-client evaluation (issue 21): each client's metrics are what TFF's `build_fed_eval` reports for it alone, the
population's example-weighted figure is unchanged, and the distribution over clients is what numpy says."""

import csv
import functools
import json

import numpy as np
import pytest

from fedlab import cli
from fedlab.run import client_distribution
from tests.conftest import TINY, compose_config


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope='module')
def small_federation():
    from fedlab import aggregators, models
    from fedlab.data import federated_data
    from fedlab.run import round_loop

    rng = np.random.default_rng(3)
    sizes = [9, 13, 4, 17, 6]
    arrays = {f'c{i}': (rng.random((n, 8, 8, 1), np.float32), rng.integers(0, 10, n)) for i, n in enumerate(sizes)}
    data = federated_data.client_data_from_arrays(arrays)
    model_fn = models.keras_model_fn((8, 8, 1), 10, architecture='simple_cnn')
    process = round_loop.build_fed_avg(model_fn, round_loop.FedAvgConfig(), model_aggregator=aggregators.mean())
    state = process.initialize()
    # Weights a round away from the initial ones, so that the clients' accuracies differ.
    from fedlab.run import round_inputs

    pipeline = functools.partial(round_inputs.eval_pipeline, batch_size=4)
    state = process.next(state, round_inputs.ClientDatasets(data, pipeline)(sorted(arrays))).state
    return data, model_fn, process.get_model_weights(state), sorted(arrays)


@pytest.mark.parametrize('inputs', ['shards', 'dataset'])
def test_each_clients_metrics_are_build_fed_eval_on_that_client_alone(inputs, small_federation, tmp_path):
    from fedlab.fast_paths import shards as shard_files
    from fedlab.run import evaluation, round_inputs

    data, model_fn, weights, client_ids = small_federation
    pipeline = functools.partial(round_inputs.eval_pipeline, batch_size=4)
    datasets = round_inputs.ClientDatasets(data, pipeline)
    with shard_files.ShardStore(tmp_path, budget_bytes=1 << 26) as store:
        evaluator = evaluation.ClientsEvaluator(model_fn, data, batch_size=4,
                                                store=store if inputs == 'shards' else None,
                                                parts={'odd': frozenset(client_ids[1::2])})
        evaluated = evaluator(weights, 1)
    stock = evaluation.FederatedEvaluator(model_fn)
    whole = evaluated['eval']
    assert [c.client_id for c in whole.clients] == client_ids
    for client in whole.clients:
        alone = stock.evaluate(weights, datasets([client.client_id]))
        assert client.metrics == alone, client.client_id  # bit for bit
    everyone = stock.evaluate(weights, datasets(client_ids))
    assert {k: whole.metrics[k] for k in everyone} == everyone  # today's figure, unchanged
    accuracies = [c.metrics['accuracy'] for c in whole.clients]
    assert len(set(accuracies)) > 1
    assert whole.metrics['accuracy_mean'] == pytest.approx(np.mean(accuracies), abs=1e-12)
    assert whole.metrics['accuracy_p10'] == pytest.approx(np.percentile(accuracies, 10), abs=1e-12)
    assert whole.metrics['accuracy_worst10'] == pytest.approx(min(accuracies), abs=1e-12)
    odd = evaluated['odd']
    assert odd.part_of == 'eval' and [c.client_id for c in odd.clients] == client_ids[1::2]
    odd_alone = stock.evaluate(weights, datasets(client_ids[1::2]))
    for name, value in odd_alone.items():
        assert odd.metrics[name] == pytest.approx(value, rel=1e-6), name


def test_distribution_statistics():
    values = [0.9, 0.1, 0.5, 0.7, 0.3, 1.0, 0.2, 0.8, 0.6, 0.4, 0.0]
    stats = client_distribution.summarize(values, lower_is_worse=True)
    assert stats['mean'] == pytest.approx(np.mean(values))
    assert stats['std'] == pytest.approx(np.std(values))
    assert (stats['p10'], stats['p50'], stats['p90']) == pytest.approx(tuple(np.percentile(values, [10, 50, 90])))
    assert stats['worst10'] == pytest.approx(np.mean([0.0, 0.1]))  # 11 clients: the worst 2 (ceil of 1.1)
    assert client_distribution.summarize([0.5, 2.0, 1.0], lower_is_worse=False)['worst10'] == 2.0  # a loss: highest
    assert client_distribution.summarize([], lower_is_worse=True) == {}


def test_a_run_writes_each_evaluated_clients_row_and_the_distribution(tmp_path):
    cfg = compose_config([*TINY, 'rounds=3', 'eval_every=2', 'eval_clients=4', 'sampling=uniform',
                          'task.eval_on_train=true'])
    outputs = cli.train(cfg, tmp_path)
    rows = _rows(tmp_path / 'clients_eval.csv')
    by_round = {r: [row for row in rows if row['round'] == r and row['population'] == 'eval'] for r in ('2', '3')}
    assert len(by_round['2']) == 4 and len(by_round['3']) == 6  # the sample, then every test client at the end
    sampled = [set(row['client_ids'].split()) for row in _rows(tmp_path / 'clients.csv')]
    for round_num, evaluated in by_round.items():
        trained = set().union(*sampled[: int(round_num)])
        assert {row['client_id'] for row in evaluated if row['trained_before'] == '1'} == \
            trained & {row['client_id'] for row in evaluated}
    assert len([row for row in rows if row['population'] == 'train']) == 6  # eval_on_train's clients
    metrics = _rows(tmp_path / 'metrics.csv')
    last = metrics[-1]
    accuracies = [float(row['accuracy']) for row in by_round['3']]
    assert float(last['eval_accuracy_p50']) == pytest.approx(np.median(accuracies))
    assert float(last['eval_loss_worst10']) == pytest.approx(max(float(row['loss']) for row in by_round['3']))
    assert metrics[0]['eval_accuracy_mean'] == ''  # round 1 is not evaluated
    results = json.loads((tmp_path / 'results.json').read_text())
    assert results['final_eval']['eval']['accuracy_p10'] == pytest.approx(float(last['eval_accuracy_p10']))
    assert 'accuracy_worst10' in results['final_eval']['eval_on_train']
    assert outputs.final_eval['eval']['accuracy'] == float(last['eval_accuracy'])


def test_a_run_recorded_before_the_distribution_columns_resumes_with_them(tmp_path):
    from fedlab.record import tables

    path = tmp_path / 'metrics.csv'
    path.write_text('round,clients,eval_loss\n1,3,0.5\n')
    table = tables.CsvTable(path, ['round', 'clients', 'eval_loss', 'eval_loss_mean'])
    table.write({'round': 2, 'clients': 3, 'eval_loss': 0.4, 'eval_loss_mean': 0.41})
    table.close()
    assert path.read_text().splitlines() == ['round,clients,eval_loss,eval_loss_mean', '1,3,0.5,', '2,3,0.4,0.41']

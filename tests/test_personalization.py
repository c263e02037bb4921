"""Personalization (issue 21): fedlab's per-client fine-tuning on shard files computes what TFF's
`build_personalization_eval_computation` computes with an SGD personalize_fn; runs record it per client with the
gain over the global model; holdout clients and a target accuracy are reported."""

import collections
import csv
import json

import numpy as np
import pytest

from fedlab import cli
from tests.conftest import TINY, compose_config


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def _tff_personalize_fn(layers: str, epochs: int, lr: float, batch_size: int):
    """TFF's side of the comparison: a personalize_fn as its docs describe one, written here from its contract."""
    import tensorflow as tf

    from fedlab.run.personalization import adapted_variables

    def build():
        @tf.function
        def personalize(model, train_data, test_data):
            variables = adapted_variables(model, layers)
            for _ in range(epochs):
                for batch in train_data.batch(batch_size):
                    with tf.GradientTape() as tape:
                        output = model.forward_pass(batch, training=True)
                    for variable, gradient in zip(variables, tape.gradient(output.loss, variables)):
                        variable.assign_sub(lr * gradient)
            return _evaluate(model, test_data, batch_size)

        return personalize

    return build


def _evaluate(model, test_data, batch_size):
    model.reset_metrics()
    for batch in test_data.batch(batch_size):
        model.forward_pass(batch, training=False)
    sums = model.report_local_unfinalized_metrics()
    accuracy = [v for k, v in sums.items() if 'accuracy' in k][0]
    return collections.OrderedDict(accuracy=accuracy[0] / accuracy[1], examples=sums['num_examples'])


@pytest.mark.parametrize('layers', ['all', pytest.param('last', marks=pytest.mark.slow)])
def test_finetuning_is_tffs_personalization_eval_with_sgd(layers, tmp_path):
    import tensorflow as tf
    import tensorflow_federated as tff

    from fedlab import models
    from fedlab.data import federated_data
    from fedlab.run import personalization

    rng = np.random.default_rng(5)
    arrays = {}
    for i, n in enumerate([11, 7, 15]):  # distinct test sizes: TFF's reservoir may reorder the clients
        arrays[f'c{i}'] = (rng.random((n + 3 * i, 8, 8, 1), np.float32), rng.integers(0, 10, n + 3 * i))
    train = federated_data.client_data_from_arrays(arrays)
    test = federated_data.client_data_from_arrays({c: (x[: 4 + i], y[: 4 + i]) for i, (c, (x, y)) in
                                                   enumerate(arrays.items())})
    data = federated_data.FederatedData(name='tiny', train=train, test=test, image_shape=(8, 8, 1), num_classes=10)
    model_fn = models.keras_model_fn((8, 8, 1), 10, architecture='simple_cnn')
    with tf.Graph().as_default():
        weights_type = tff.learning.models.weights_type_from_model(model_fn())
    weights = tff.learning.models.ModelWeights.from_model(model_fn())
    weights = tf.nest.map_structure(lambda v: v.numpy(), weights)
    config = personalization.PersonalizationConfig(method='finetune', epochs=2, lr=0.1, layers=layers)
    del weights_type

    from fedlab.run.evaluation import ClientEvaluation, PopulationEvaluation

    client_ids = sorted(arrays)
    fake_global = {'eval': PopulationEvaluation({}, [ClientEvaluation(c, {'accuracy': 0.0}, None) for c in client_ids])}
    ours = personalization.Personalization(config, model_fn, data, batch_size=4, initial_weights=weights,
                                           final_round=1, shard_dir=str(tmp_path))
    try:
        got = ours(weights, 1, fake_global)['personalized']
    finally:
        ours.close()

    def unbatched(client_data, client_id):
        return client_data.create_tf_dataset_for_client(client_id).map(lambda e: collections.OrderedDict(
            x=e[federated_data.PIXELS], y=e[federated_data.LABEL]))

    stock = tff.learning.algorithms.build_personalization_eval_computation(
        model_fn, collections.OrderedDict(finetune=_tff_personalize_fn(layers, 2, 0.1, 4)),
        tf.function(lambda model, data: _evaluate(model, data, 4)), max_num_clients=10,
    )
    expected = stock(weights, [collections.OrderedDict(train_data=unbatched(train, c), test_data=unbatched(test, c))
                               for c in client_ids])
    theirs = sorted(zip(np.ravel(expected['finetune']['examples']), np.ravel(expected['finetune']['accuracy'])))
    mine = sorted((c.metrics['examples'], c.metrics['accuracy']) for c in got.clients)
    assert [n for n, _ in mine] == [n for n, _ in theirs]
    np.testing.assert_allclose([a for _, a in mine], [a for _, a in theirs], atol=1e-6)
    baseline = sorted(zip(np.ravel(expected['baseline_metrics']['examples']),
                          np.ravel(expected['baseline_metrics']['accuracy'])))
    assert not np.allclose([a for _, a in mine], [a for _, a in baseline])  # fine-tuning changed something


def test_a_run_with_holdout_personalization_and_a_target(tmp_path):
    cfg = compose_config([*TINY, 'rounds=4', 'eval_every=2', 'holdout_clients=0.34', 'personalization=finetune',
                          'personalization.every=2', 'target_accuracy=0.01', 'data.num_clients=9'])
    cli.train(cfg, tmp_path)
    rows = _rows(tmp_path / 'clients_eval.csv')
    held_out = {r['client_id'] for r in rows if r['held_out'] == '1'}
    assert len(held_out) == 3  # round(0.34 * 9)
    trained = set().union(*(set(r['client_ids'].split()) for r in _rows(tmp_path / 'clients.csv')))
    assert not trained & held_out
    personalized = [r for r in rows if r['population'] == 'personalized']
    assert {r['round'] for r in personalized} == {'2', '4'}
    global_accuracy = {(r['round'], r['client_id']): float(r['accuracy']) for r in rows if r['population'] == 'eval'}
    for r in personalized:
        gain = float(r['accuracy']) - global_accuracy[r['round'], r['client_id']]
        assert float(r['accuracy_gain']) == pytest.approx(gain, abs=1e-6)
    metrics = _rows(tmp_path / 'metrics.csv')
    last = metrics[-1]
    unseen = [float(r['accuracy']) for r in rows
              if r['round'] == '4' and r['population'] == 'eval' and r['held_out'] == '1']
    assert float(last['unseen_accuracy_mean']) == pytest.approx(np.mean(unseen))
    examples = int(last['participating_examples']) + int(last['unseen_examples'])
    assert examples == int(last['eval_examples'])
    results = json.loads((tmp_path / 'results.json').read_text())
    assert set(results['final_eval']) == {'eval', 'participating', 'unseen', 'personalized',
                                          'personalized_participating', 'personalized_unseen'}
    assert 'accuracy_gain_p50' in results['final_eval']['personalized']
    to_target = results['to_target']
    assert to_target['reached'] and to_target['round'] == 2
    assert to_target['cumulative_uplink_bits'] == int(metrics[1]['cumulative_uplink_bits'])


def test_stop_at_target_ends_the_run_completed_and_a_rerun_does_nothing(tmp_path):
    args = [*TINY, 'rounds=6', 'eval_every=2', 'target_accuracy=0.01', 'stop_at_target=true',
            'personalization=local_only']
    cli.train(compose_config(args), tmp_path)
    results = json.loads((tmp_path / 'results.json').read_text())
    assert results['status'] == 'completed' and results['rounds_completed'] == 2
    assert results['stopped_early']['after_round'] == 2 and results['to_target']['round'] == 2
    assert 'personalized' in results['final_eval']  # the stopping round is the last: personalized there
    before = (tmp_path / 'metrics.csv').read_bytes()
    cli.train(compose_config(args), tmp_path)
    assert (tmp_path / 'metrics.csv').read_bytes() == before


@pytest.mark.slow
def test_the_report_shows_the_distribution_the_gap_personalization_and_the_target(tmp_path):
    from fedlab.reporting import report

    sweep = tmp_path / 'sweep'
    for seed in (0, 1):
        cfg = compose_config([*TINY, 'rounds=2', 'eval_every=2', 'holdout_clients=0.34', 'data.num_clients=9',
                              'personalization=finetune', 'target_accuracy=0.01', f'seed={seed}'])
        from omegaconf import OmegaConf

        run_info = {'choices': {'task': 'train', 'model': 'linear', 'aggregator': 'mean', 'data': 'digits',
                                'personalization': 'finetune'},
                    'config': OmegaConf.to_container(cfg, resolve=True)}
        cli.train(cfg, sweep / f'seed{seed}', run_info)
    written = report.write_report(sweep, sweep)
    assert 'client_accuracy_cdf.png' in written['figures'] and (sweep / 'client_accuracy_cdf.png').stat().st_size
    (group,) = written['clients']
    assert group['seeds'] == 2 and group['participation_gap_std'] is not None
    finals = [json.loads((sweep / f'seed{s}' / 'results.json').read_text())['final_eval'] for s in (0, 1)]
    expected = np.mean([f['participating']['accuracy'] - f['unseen']['accuracy'] for f in finals])
    assert group['participation_gap_mean'] == pytest.approx(expected)
    assert group['personalization_gain_mean_mean'] == pytest.approx(
        np.mean([f['personalized']['accuracy_gain_mean'] for f in finals]))
    assert group['round_to_target_mean'] == 2
    text = (sweep / 'report.md').read_text()
    for heading in ('Accuracy over clients', 'Participation gap', 'Personalization', 'Cost to the target accuracy'):
        assert f'## {heading}' in text, heading

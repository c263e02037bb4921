"""The fast client paths (client_inputs=tensors and shards) train exactly as TFF's dataset path does."""

import csv

import numpy as np
import pytest

from fedlab import cli
from tests.conftest import TINY, compose_config


def _rows(path):
    with open(path) as f:
        return [{k: v for k, v in row.items() if not k.endswith('_seconds')} for row in csv.DictReader(f)]


# Every model x both aggregators (README's claim); one case, which also varies momentum, runs in the default suite,
# the rest with the slow tests.
EQUIVALENCE_CASES = [
    ('linear', 'mean', ['client_momentum=0.9', 'server_momentum=0.5']),
    pytest.param('simple_cnn', 'compression', ['sampling=uniform'], marks=pytest.mark.slow),
    pytest.param('fedavg_cnn', 'mean', ['client_momentum=0.9', 'server_momentum=0.5'], marks=pytest.mark.slow),
    *[
        pytest.param(model, aggregator, [], marks=pytest.mark.slow)
        for model, aggregator in [('linear', 'compression'), ('custom', 'mean'), ('custom', 'compression'),
                                  ('simple_cnn', 'mean'), ('fedavg_cnn', 'compression'), ('cifar_cnn', 'mean'),
                                  ('cifar_cnn', 'compression')]
    ],
]  # fmt: skip


@pytest.mark.parametrize('model,aggregator,extra', EQUIVALENCE_CASES)
def test_tensors_and_shards_give_the_same_metrics_as_datasets(model, aggregator, extra, tmp_path):
    if model == 'cifar_cnn':  # valid padding needs images from about 28x28 up: CIFAR-10's format, tiny
        from tests.test_cifar10 import write_tiny_cache

        write_tiny_cache(tmp_path / 'keras')
        extra = [*extra, 'data=cifar10', f'data.cache_dir={tmp_path / "keras"}', 'data.partition=iid']
    runs = {}
    for inputs in ['dataset', 'tensors', 'shards']:
        cfg = compose_config([*TINY, f'model={model}', f'aggregator={aggregator}', f'client_inputs={inputs}', *extra])
        cli.train(cfg, tmp_path / inputs)
        runs[inputs] = _rows(tmp_path / inputs / 'metrics.csv')
    assert len(runs['tensors']) == len(runs['shards']) == len(runs['dataset']) == 2
    for fast_path in ['tensors', 'shards']:
        for round_index, (fast, stock) in enumerate(zip(runs[fast_path], runs['dataset'])):
            # Compression rounds each update to a quantization level: a sum that differs in its last float bit
            # (TFF sums clients as they finish, so not even the dataset path repeats itself: tests/test_efficiency.py)
            # can land on the neighbouring level, so from the second round on metrics agree to a few quantization
            # steps (fedavg_cnn: 1-3 training examples in 1,316), not to float precision; counts stay exact.
            rel = 2e-2 if aggregator == 'compression' and round_index > 0 else 1e-5
            assert fast.keys() == stock.keys()
            for column, value in stock.items():
                if value in ('', None):
                    assert fast[column] == value, (fast_path, column)
                elif column in ('clients', 'train_examples', 'train_batches', 'eval_examples') or column.endswith('_bits'):
                    assert fast[column] == value, (fast_path, column)
                else:  # a spread over clients (`_std`) is a difference of their values: its rounding is their mean's
                    scale = abs(float(stock.get(column[: -len('_std')] + '_mean', 0))) if column.endswith('_std') else 0
                    assert float(fast[column]) == pytest.approx(float(value), rel=rel, abs=1e-6 + rel * scale), (
                        fast_path, column)


@pytest.mark.parametrize('aggregator', ['mean', pytest.param('compression', marks=pytest.mark.slow)])
def test_fast_processes_have_tffs_types_but_for_the_client_data(aggregator):
    """State, metrics, weights and hparams have the types of TFF's own process: a TFF change that moves them shows
    here. Only the clients' data differs: a dataset of batches, the batch stream as tensors, or a shard's path."""
    from fedlab import aggregators, models
    from fedlab.run import round_loop

    model_fn = models.keras_model_fn((8, 8, 1), 10, architecture='simple_cnn')
    processes = {
        inputs: round_loop.build_fed_avg(model_fn, round_loop.FedAvgConfig(), client_inputs=inputs,
                                       model_aggregator=getattr(aggregators, aggregator)())
        for inputs in ['dataset', 'tensors', 'shards']
    }  # fmt: skip
    stock = processes.pop('dataset')
    for inputs, fast in processes.items():
        for name in ['initialize', 'get_model_weights', 'set_model_weights', 'get_hparams', 'set_hparams']:
            assert getattr(fast, name).type_signature.is_equivalent_to(getattr(stock, name).type_signature), name
        fast_next, stock_next = fast.next.type_signature, stock.next.type_signature
        assert fast_next.result.is_equivalent_to(stock_next.result), inputs
        assert fast_next.parameter[0].is_equivalent_to(stock_next.parameter[0]), inputs  # the state
        client_data = fast_next.parameter[1].member
        assert str(stock_next.parameter[1].member).startswith('<x=float32[?,8,8,1],y=int32[?]>*')  # a sequence
        expected = 'str' if inputs == 'shards' else '<x=float32[?,8,8,1],y=int32[?]>'
        assert str(client_data) == expected, inputs


def test_client_tensors_hold_the_pipelines_batch_stream():
    import functools

    from fedlab.data import federated_data
    from fedlab.run import round_inputs

    rng = np.random.default_rng(0)
    arrays = {f'c{i}': (rng.random((7 + i, 2, 2, 1), np.float32), np.arange(7 + i, dtype=np.int32)) for i in range(3)}
    data = federated_data.client_data_from_arrays(arrays)
    config = round_inputs.PipelineConfig(epochs=2, batch_size=3, shuffle_buffer=5, seed=1)
    pipeline = functools.partial(round_inputs.train_pipeline, config=config)
    tensors = round_inputs.ClientTensors(data, pipeline, max_bytes=0)(['c2', 'c0'])
    datasets = round_inputs.ClientDatasets(data, pipeline)(['c2', 'c0'])
    for stream, dataset in zip(tensors, datasets):
        batches = list(dataset.as_numpy_iterator())
        np.testing.assert_array_equal(stream['y'], np.concatenate([b['y'] for b in batches]))
        np.testing.assert_array_equal(stream['x'], np.concatenate([b['x'] for b in batches]))
    assert len(tensors[0]['y']) == 2 * 9 and sorted(tensors[0]['y']) == sorted(list(range(9)) * 2)


def test_client_shards_hold_the_batch_stream_and_are_deleted_on_close():
    import functools
    import os

    import tensorflow as tf

    from fedlab.data import federated_data
    from fedlab.fast_paths import tensor_inputs
    from fedlab.run import round_inputs

    rng = np.random.default_rng(0)
    arrays = {f'c{i}': (rng.random((5 + i, 2, 2, 1), np.float32), np.arange(5 + i, dtype=np.int32)) for i in range(2)}
    data = federated_data.client_data_from_arrays(arrays)
    pipeline = functools.partial(round_inputs.train_pipeline, config=round_inputs.PipelineConfig(epochs=2, batch_size=3))
    spec = {'x': tf.TensorSpec([None, 2, 2, 1], tf.float32), 'y': tf.TensorSpec([None], tf.int32)}
    with round_inputs.ClientShards(data, pipeline) as shards:
        paths = shards(['c1', 'c0'])
        assert shards(['c0']) == paths[1:]  # written once, then reused
        streams = round_inputs.ClientTensors(data, pipeline)(['c1', 'c0'])
        for path, stream in zip(paths, streams):
            read = tensor_inputs.read_shard(tf.constant(path), spec)
            for key in spec:
                np.testing.assert_array_equal(read[key].numpy(), stream[key])
    assert not any(os.path.exists(f'{path}.x') for path in paths)


def test_shard_evaluation_reports_what_tffs_fed_eval_reports():
    import functools

    from fedlab import aggregators, models
    from fedlab.data import federated_data
    from fedlab.run import evaluation, round_inputs, round_loop

    rng = np.random.default_rng(1)
    arrays = {f'c{i}': (rng.random((9 + 4 * i, 8, 8, 1), np.float32), rng.integers(0, 10, 9 + 4 * i)) for i in range(3)}
    data = federated_data.client_data_from_arrays(arrays)
    model_fn = models.keras_model_fn((8, 8, 1), 10, architecture='simple_cnn')
    process = round_loop.build_fed_avg(model_fn, round_loop.FedAvgConfig(), model_aggregator=aggregators.mean())
    weights = process.get_model_weights(process.initialize())
    pipeline = functools.partial(round_inputs.eval_pipeline, batch_size=4)
    stock = evaluation.FederatedEvaluator(model_fn, round_inputs.ClientDatasets(data, pipeline)(sorted(arrays)))
    with round_inputs.ClientShards(data, pipeline) as shards:
        fast = evaluation.ShardEvaluator(model_fn, shards(sorted(arrays)), batch_size=4)
        expected, got = stock(weights), fast(weights)
    assert got.keys() == expected.keys() and got['examples'] == 9 + 13 + 17 and got['batches'] == 3 + 4 + 5
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, rel=1e-6), name


def test_a_client_without_examples_gets_an_empty_stream():
    import tensorflow as tf

    from fedlab.fast_paths import tensor_inputs

    empty = tf.data.Dataset.from_tensor_slices({'x': np.zeros((0, 8, 8, 1), np.float32), 'y': np.zeros(0, np.int32)})
    stream = tensor_inputs.materialize(empty.batch(4))
    assert stream['x'].shape == (0, 8, 8, 1) and stream['x'].dtype == np.float32
    assert stream['y'].shape == (0,) and stream['y'].dtype == np.int32

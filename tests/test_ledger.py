"""The communication ledger counts what the built TFF process transmits; the numbers are checked from first principles."""

import functools
import json
import logging
import math

import pytest

from fedlab import aggregators, cli, models
from fedlab.record import ledger, tables
from fedlab.run import round_loop
from tests.conftest import TINY, compose_config

DIGITS = (8, 8, 1)
MNIST = (28, 28, 1)
# TFMOT's bit-packing stores 28 bits in each int32 (so every value serializes to 4 bytes): 8-bit values take
# ceil(n * 8 / 28) int32s, which caps 8-bit quantization at 32 / (8 * 32 / 28) = 3.5x, not 4x.
PACKED_BITS_PER_INT32 = 28
METRICS_BITS = 4 * 32 + 2 * 64  # loss and accuracy as (sum, count) float32 pairs, examples and batches int64


@functools.cache
def _cost(architecture: str, aggregator: str, image_shape=DIGITS) -> ledger.CommunicationCost:
    model_fn = models.keras_model_fn(image_shape, 10, architecture=architecture)
    process = round_loop.build_fed_avg(
        model_fn, round_loop.FedAvgConfig(), model_aggregator=getattr(aggregators, aggregator)()
    )
    return ledger.measure(process)


def _weights(architecture, image_shape=DIGITS) -> list[int]:
    """Element counts of the trainable tensors, from Keras (independent of TFF's types)."""
    model = models.build_keras_model(architecture, image_shape, 10)
    return [int(math.prod(w.shape)) for w in model.trainable_weights]


def _quantized_bits(elements: int) -> int:
    packed_int32s = math.ceil(elements * 8 / PACKED_BITS_PER_INT32)
    return packed_int32s * 32 + 2 * 32  # the packed values plus the tensor's float32 min and max


def test_mean_sends_every_weight_in_float32():
    cost = _cost('fedavg_cnn', 'mean')
    weights = _weights('fedavg_cnn')
    assert sum(weights) == 188_810  # conv 5x5x1x32, conv 5x5x32x64, dense 256x512, dense 512x10, biases
    # Down: the weights and the client learning rate. Up: the weighted update, its weight and the metrics.
    assert cost.bits_per_client(ledger.DOWNLINK) == 32 * sum(weights) + 32
    assert cost.bits_per_client(ledger.UPLINK) == 32 * sum(weights) + 32 + METRICS_BITS
    assert cost.raw_update_bits == 32 * sum(weights)
    assert not cost.encodes_update


def test_compression_quantizes_fedavg_cnn_tensors_over_20000_elements():
    cost = _cost('fedavg_cnn', 'compression')
    weights = _weights('fedavg_cnn')
    large = [n for n in weights if n > 20_000]
    assert large == [51_200, 131_072]
    encoded = sum(_quantized_bits(n) for n in large) + 32 * sum(n for n in weights if n <= 20_000)
    # What is not the update: the metrics, the mean's weight, and the adaptive zeroing and clipping
    # aggregators' estimates (two (float32, float32) sums and two int32 counts).
    overhead = METRICS_BITS + 32 + 2 * 64 + 2 * 32
    assert cost.bits_per_client(ledger.UPLINK) == encoded + overhead
    assert cost.encodes_update

    ratio = _cost('fedavg_cnn', 'mean').bits_per_client(ledger.UPLINK) / cost.bits_per_client(ledger.UPLINK)
    assert ratio == pytest.approx(3.22, abs=0.01)  # on 8x8 digits 3.5% of the weights stay float32
    assert cost.bits_per_client(ledger.DOWNLINK) >= 32 * sum(weights)  # the download is not compressed


def test_linear_gains_nothing_from_compression_and_says_so_once(caplog):
    mean, compressed = _cost('linear', 'mean'), _cost('linear', 'compression')
    ratio = mean.bits_per_client(ledger.UPLINK) / compressed.bits_per_client(ledger.UPLINK)
    assert 0.95 < ratio <= 1.0  # nothing is quantized; the adaptive aggregators add a few scalars
    assert compressed.uplink_ratio == pytest.approx(1.0, abs=0.05)
    with caplog.at_level(logging.WARNING, logger='fedlab.record.ledger'):
        assert ledger.warn_if_compression_is_idle(compressed)
        assert not ledger.warn_if_compression_is_idle(mean)  # mean never promised compression
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and 'compression does nothing for this model' in warnings[0]
    assert 'largest: 640 elements' in warnings[0]


def test_simple_cnn_dense_layer_is_quantized_at_28x28_but_not_on_8x8_digits():
    assert max(_weights('simple_cnn', MNIST)) == 200_704 and max(_weights('simple_cnn')) == 16_384
    assert _cost('simple_cnn', 'compression', MNIST).uplink_ratio == pytest.approx(3.46, abs=0.01)
    assert _cost('simple_cnn', 'compression').uplink_ratio == pytest.approx(1.0, abs=0.01)


@pytest.mark.slow
def test_fedavg_cnn_on_28x28_reproduces_the_tutorials_3_47x():
    mean, compressed = _cost('fedavg_cnn', 'mean', MNIST), _cost('fedavg_cnn', 'compression', MNIST)
    ratio = mean.bits_per_client(ledger.UPLINK) / compressed.bits_per_client(ledger.UPLINK)
    assert 3.4 < ratio < 3.5


def test_rounds_bits_times_clients_add_up_to_the_totals(tmp_path):
    cfg = compose_config([*TINY, 'rounds=3', 'sampling=uniform', 'model=linear', 'aggregator=compression'])
    run_info = {'choices': {'model': 'linear', 'aggregator': 'compression'}, 'config': {'rounds': 3, 'data': {}}}
    cli.train(cfg, tmp_path, run_info)
    rows = tables.read_rows(tmp_path / 'metrics.csv')
    assert set(ledger.COLUMNS) <= set(rows[0])
    cumulative_up = cumulative_down = 0
    for row in rows:
        clients = int(row['clients'])
        assert int(row['uplink_bits']) == clients * int(row['uplink_bits_per_client'])
        assert int(row['downlink_bits']) == clients * int(row['downlink_bits_per_client'])
        cumulative_up += int(row['uplink_bits'])
        cumulative_down += int(row['downlink_bits'])
        assert int(row['cumulative_uplink_bits']) == cumulative_up
        assert int(row['cumulative_downlink_bits']) == cumulative_down
    results = json.loads((tmp_path / 'results.json').read_text())['communication']
    assert results['cumulative_uplink_bits'] == cumulative_up == 3 * 3 * results['uplink_bits_per_client']
    assert results['cumulative_downlink_bits'] == cumulative_down
    assert results['uplink_bits_per_client'] == _cost('linear', 'compression').bits_per_client(ledger.UPLINK)

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(tmp_path / 'tensorboard' / 'communication'))
    accumulator.Reload()
    assert set(ledger.COLUMNS) == set(accumulator.Tags()['tensors'])

    # The HParams dashboard's session summary sits at the run's TensorBoard root, above train/ and eval/.
    from tensorboard.plugins.hparams import plugin_data_pb2

    hparams = EventAccumulator(str(tmp_path / 'tensorboard'))
    hparams.Reload()
    content = hparams.SummaryMetadata('_hparams_/session_start_info').plugin_data.content
    session = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    assert session.hparams['model'].string_value == 'linear' and session.hparams['rounds'].number_value == 3
    assert 'data' not in session.hparams  # groups are recorded by their choice, not their nested keys

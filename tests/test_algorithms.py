"""Every algorithm with every server optimizer trains on fedlab's fast client paths exactly as TFF's own builders
do on datasets; the communication ledger sees Mime Lite's second upload; FedProx pulls towards the server."""

import functools
import math

import numpy as np
import pytest

from fedlab import models
from fedlab.algorithms import NUM_EXAMPLES, UNIFORM, optimizers
from fedlab.data import federated_data
from fedlab.record import ledger
from fedlab.run import evaluation, round_inputs

IMAGE = (8, 8, 1)
BATCH = 4
MU = 0.5
NUM_WEIGHTS = 8 * 8 * 10 + 10  # the linear model: kernel and bias
METRICS_BITS = 4 * 32 + 2 * 64  # loss and accuracy as (sum, count) float32 pairs, examples and batches int64

SERVER_OPTIMIZERS = {
    'sgd': lambda: optimizers.sgd(1.0, momentum=0.5),
    'adam': lambda: optimizers.adam(0.02, epsilon=1e-3),
    'yogi': lambda: optimizers.yogi(0.02, epsilon=1e-3),
    'adagrad': lambda: optimizers.adagrad(0.1, epsilon=1e-6, initial_preconditioner_value=0.0),
    'rmsprop': lambda: optimizers.rmsprop(0.01, epsilon=1e-3),
}
ALGORITHMS = ['fedavg', 'fedprox', 'fedsgd', 'mime_lite']


@functools.cache
def _data():
    rng = np.random.default_rng(0)
    sizes = {'c0': 9, 'c1': 13, 'c2': 6}
    arrays = {
        c: (rng.random((n, *IMAGE), np.float32), rng.integers(0, 10, n).astype(np.int32)) for c, n in sizes.items()
    }
    return federated_data.client_data_from_arrays(arrays)


def _model_fn():
    return models.keras_model_fn(IMAGE, 10, architecture='linear')


def _aggregator(kind: str):
    import tensorflow_federated as tff

    if kind == 'dp':  # an unweighted factory of TFF's, as the privacy work plugs in (no noise: deterministic)
        return tff.learning.dp_aggregator(noise_multiplier=0.0, clients_per_round=3)
    return tff.aggregators.MeanFactory()


def _build(algorithm: str, server: str, client_inputs: str, *, weighting: str, aggregator: str):
    """fedlab's builder; for FedProx on datasets TFF's own, whose sign fedlab's client work reproduces with -mu."""
    import tensorflow_federated as tff

    from fedlab.algorithms import aggregation, fedavg, fedsgd, mime_lite
    from fedlab.algorithms.templates import client_work, composition

    model_fn, server_optimizer = _model_fn(), SERVER_OPTIMIZERS[server]()
    client_optimizer = optimizers.sgd(0.1, momentum=0.5)
    common = dict(model_aggregator=_aggregator(aggregator), weighting=weighting)
    if algorithm == 'fedprox':
        if client_inputs == 'dataset' and aggregation.is_unweighted(common['model_aggregator']):
            return tff.learning.algorithms.build_unweighted_fed_prox(
                model_fn, MU, client_optimizer, server_optimizer, model_aggregator=common['model_aggregator']
            )
        if client_inputs == 'dataset':
            return tff.learning.algorithms.build_weighted_fed_prox(
                model_fn, MU, client_optimizer, server_optimizer,
                client_weighting=aggregation.client_weighting(weighting), model_aggregator=common['model_aggregator'],
            )  # fmt: skip
        inputs = composition.fast_inputs(client_inputs, BATCH)
        work = client_work.build_model_delta_client_work(
            model_fn, client_optimizer, inputs, weighting=weighting, proximal_strength=-MU
        )
        aggregator_ = aggregation.as_weighted(common['model_aggregator'])
        return composition.compose(model_fn, work, aggregator_, server_optimizer)
    common.update(client_inputs=client_inputs, batch_size=BATCH)
    if algorithm == 'fedavg':
        return fedavg.build_fed_avg(model_fn, client_optimizer, server_optimizer, **common)
    if algorithm == 'fedsgd':
        return fedsgd.build_fed_sgd(model_fn, server_optimizer, **common)
    return mime_lite.build_mime_lite(model_fn, optimizers.sgd(0.1, momentum=0.9), server_optimizer, **common)


@functools.cache
def _run(algorithm: str, server: str, client_inputs: str, weighting: str = NUM_EXAMPLES, aggregator: str = 'mean'):
    # Mime Lite's dataset path iterates each client's dataset twice (full gradient, then training) and a seeded
    # shuffle reshuffles on the second pass; the fast path trains on the first order. Unshuffled, they match.
    shuffle_buffer = 1 if algorithm == 'mime_lite' else 8
    process = _build(algorithm, server, client_inputs, weighting=weighting, aggregator=aggregator)
    return _two_rounds(process, client_inputs, shuffle_buffer=shuffle_buffer)


def _two_rounds(process, client_inputs: str, *, shuffle_buffer: int = 8):
    """Train metrics of 2 rounds of all 3 clients (2 local epochs), the final weights, and the process's ledger."""
    config = round_inputs.PipelineConfig(epochs=2, batch_size=BATCH, shuffle_buffer=shuffle_buffer, seed=3)
    pipeline = functools.partial(round_inputs.train_pipeline, config=config)
    inputs = round_inputs.CLIENT_INPUTS[client_inputs](_data(), pipeline)
    try:
        state, metrics = process.initialize(), []
        for _ in range(2):
            output = process.next(state, inputs(['c0', 'c1', 'c2']))
            state = output.state
            metrics.append(evaluation.rename_metrics(output.metrics['client_work']['train']))
        return metrics, process.get_model_weights(state).trainable, ledger.measure(process)
    finally:
        if isinstance(inputs, round_inputs.ClientShards):
            inputs.close()


def _assert_same_training(fast, stock, label):
    (fast_metrics, fast_weights, _), (stock_metrics, stock_weights, _) = fast, stock
    assert len(fast_metrics) == len(stock_metrics) == 2
    for got, expected in zip(fast_metrics, stock_metrics):
        assert got.keys() == expected.keys(), label
        for name, value in expected.items():
            assert got[name] == pytest.approx(value, rel=1e-5, abs=1e-6), (label, name)
    for got, expected in zip(fast_weights, stock_weights):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6, err_msg=label)


def _check(algorithm, server, fast_paths, *, weighting=NUM_EXAMPLES, aggregator='mean'):
    runs = {inputs: _run(algorithm, server, inputs, weighting, aggregator) for inputs in ['dataset', *fast_paths]}
    stock_cost = runs['dataset'][2]
    for inputs in fast_paths:
        _assert_same_training(runs[inputs], runs['dataset'], f'{algorithm} {server} {inputs}')
        cost = runs[inputs][2]
        assert cost.bits_per_client(ledger.UPLINK) == stock_cost.bits_per_client(ledger.UPLINK)
        # fedlab's FedProx broadcasts its client optimizer's hyper-parameters as FedAvg does (TFF's FedProx has
        # none), so that client_lr_schedule works: SGD's learning rate and momentum, two float32 more.
        extra = 2 * 32 if algorithm == 'fedprox' else 0
        assert cost.bits_per_client(ledger.DOWNLINK) == stock_cost.bits_per_client(ledger.DOWNLINK) + extra
    return runs


# One fast-vs-dataset case per algorithm and per server optimizer, on shards (two process builds a case); the
# cross product on tensors and shards, and with uniform weighting, is test_every_combination (slow).
DEFAULT_CASES = [
    ('fedavg', 'sgd', ['shards'], NUM_EXAMPLES, 'mean'),
    ('fedprox', 'adam', ['shards'], NUM_EXAMPLES, 'mean'),
    ('fedsgd', 'yogi', ['shards'], NUM_EXAMPLES, 'mean'),
    ('mime_lite', 'adagrad', ['shards'], NUM_EXAMPLES, 'mean'),
    ('fedavg', 'rmsprop', ['shards'], UNIFORM, 'dp'),
]


@pytest.mark.parametrize('algorithm,server,fast_paths,weighting,aggregator', DEFAULT_CASES)
def test_fast_paths_train_as_tffs_builders(algorithm, server, fast_paths, weighting, aggregator):
    runs = _check(algorithm, server, fast_paths, weighting=weighting, aggregator=aggregator)
    losses = [m['loss'] for m in runs['shards'][0]]
    assert all(math.isfinite(x) for x in losses)
    if algorithm == 'mime_lite':
        # Two uploads: the model delta (+ its weight and the metrics) and the full-batch gradient (+ its weight);
        # the download carries the base optimizer's state (learning rate, momentum, accumulator) with the model.
        cost = runs['shards'][2]
        assert cost.bits_per_client(ledger.UPLINK) == 2 * (32 * NUM_WEIGHTS + 32) + METRICS_BITS
        assert cost.bits_per_client(ledger.DOWNLINK) == 2 * 32 * NUM_WEIGHTS + 2 * 32
        uploads = [t for t in cost.transfers if t.direction == ledger.UPLINK]
        model_sized = [t for t in uploads if t.bits_per_client >= 32 * NUM_WEIGHTS]
        assert len(model_sized) == 2


@pytest.mark.slow
@pytest.mark.parametrize('server', list(SERVER_OPTIMIZERS))
@pytest.mark.parametrize('algorithm', ALGORITHMS)
def test_every_combination(algorithm, server):
    _check(algorithm, server, ['tensors', 'shards'])
    _check(algorithm, server, ['shards'], weighting=UNIFORM, aggregator='dp')


def test_fedprox_with_mu_0_is_fedavg_and_pulls_clients_towards_the_server_model_as_mu_grows():
    """mu=0 is FedAvg to the bit; the paper's proximal term shrinks the drift from the server's model as mu
    grows (TFF 0.87's sign grows it: see fedlab/algorithms/fedprox.py)."""
    from fedlab.algorithms import fedprox

    fedavg_metrics, fedavg_weights, _ = _run('fedavg', 'sgd', 'shards')
    drift = {}
    for mu in (0.0, 5.0):
        process = fedprox.build_fed_prox(
            _model_fn(), optimizers.sgd(0.1, momentum=0.5), SERVER_OPTIMIZERS['sgd'](), mu=mu, batch_size=BATCH
        )
        metrics, weights, _ = _two_rounds(process, 'shards')
        if mu == 0:
            assert metrics == fedavg_metrics
            assert all(np.array_equal(a, b) for a, b in zip(weights, fedavg_weights))
        drift[mu] = math.sqrt(sum(float(np.sum(np.square(w))) for w in weights))  # from the zero initial model
    assert drift[5.0] < 0.9 * drift[0.0]

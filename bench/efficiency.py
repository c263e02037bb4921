"""Figure 1: simulation efficiency η = FedAvg examples/s ÷ the physical limit (in-graph centralized loop), for
fedlab's plain shard path, each way of making fewer TFF calls (docs/performance.md) and all of them together,
beside TFF's stock FedAvg; every method timed interleaved round by round in one run, so compare ratios.

TFF's worker runs with a default run's efficiency.intra_op_threads (1). The physical limit is the faster of the
central loop timed here (TensorFlow's default threads) and the same loop with that thread setting, timed in a
process of its own right after (TensorFlow fixes its threads when it starts)."""

import argparse
import functools
import json
import os
import subprocess
import sys

import numpy as np

from bench import common

GOALS = {'fedavg_cnn': 0.92, 'simple_cnn': 0.85, 'linear': 0.40}  # issue 15
WORKER_THREADS = 1  # conf/config.yaml's efficiency.intra_op_threads
STOCK_FACTOR = {'fedavg_cnn': 2, 'simple_cnn': 4, 'linear': 8}  # ... and ahead of TFF stock by these factors


def _central_loop(model, batch_size: int, lr: float):
    """The physical limit: SGD over in-memory tensors in one tf.function, one in-graph loop."""
    import tensorflow as tf

    loss_fn = tf.keras.losses.SparseCategoricalCrossentropy()
    optimizer = tf.keras.optimizers.SGD(lr)

    @tf.function
    def epoch(x, y):
        n = tf.shape(y)[0]
        for i in tf.range((n + batch_size - 1) // batch_size):
            xb, yb = x[i * batch_size : (i + 1) * batch_size], y[i * batch_size : (i + 1) * batch_size]
            with tf.GradientTape() as tape:
                loss = loss_fn(yb, model(xb, training=True))
            optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
        return loss

    return epoch


def _empty_round(model_fn):
    """A TFF round of FedAvg's shape with no work in it: broadcast the weights, each client returns a zero
    update for its shard path, weighted mean, server applies it, in one plain call a round with 10 clients. Its
    time is what TFF's runtime costs such a round whatever the clients do: physical-limit time / its time bounds
    the η of TFF's own loop (fedlab's packed, resident blocks of rounds pay less per round)."""
    import tensorflow as tf
    import tensorflow_federated as tff

    @tff.tensorflow.computation
    def initial_weights():
        return tff.learning.models.ModelWeights.from_model(model_fn()).trainable

    weights_type = initial_weights.type_signature.result

    @tff.tensorflow.computation(weights_type, np.str_)
    def client_update(weights, shard_path):
        del shard_path
        return tf.nest.map_structure(tf.zeros_like, weights), tf.constant(1.0)

    @tff.tensorflow.computation(weights_type, weights_type)
    def apply_update(weights, update):
        return tf.nest.map_structure(tf.add, weights, update)

    @tff.federated_computation(tff.FederatedType(weights_type, tff.SERVER), tff.FederatedType(np.str_, tff.CLIENTS))
    def empty_round(weights, shard_paths):
        updates = tff.federated_map(client_update, (tff.federated_broadcast(weights), shard_paths))
        mean = tff.federated_mean(updates[0], updates[1])
        return tff.federated_map(apply_update, (weights, mean))

    return initial_weights(), empty_round


def measure(architecture: str, clients: dict, *, rounds: int, rounds_per_call: int, batch_size: int = 20):
    """Examples/s of each method, measured interleaved (first calls excluded: tracing and compiling)."""
    import tensorflow as tf
    import tensorflow_federated as tff

    from fedlab import client_data, client_packing, models, round_blocks, tensor_client_work
    from fedlab.algorithms import fedavg, optimizers
    from fedlab.data import federated_data

    ids = sorted(clients)
    data = federated_data.client_data_from_arrays(clients)
    pipeline = functools.partial(client_data.train_pipeline, config=client_data.PipelineConfig(epochs=1))
    datasets = client_data.ClientDatasets(data, pipeline)(ids)
    tensors = [tensor_client_work.materialize(d) for d in datasets]
    x = np.concatenate([t['x'] for t in tensors])
    y = np.concatenate([t['y'] for t in tensors])
    n = len(y)
    model_fn = models.keras_model_fn((28, 28, 1), 10, architecture=architecture)
    client_lr, server_lr = 0.02, 1.0

    def build(**keywords):
        return fedavg.build_fed_avg(model_fn, optimizers.sgd(client_lr), optimizers.sgd(server_lr), **keywords)

    stock = build(client_inputs='dataset')
    plain = build(client_inputs='shards', batch_size=batch_size)
    packed = build(client_inputs='shards', batch_size=batch_size, pack_clients=True)
    shards = client_data.ClientShards(data, pipeline)
    shard_paths = shards(ids)
    groups = client_packing.PackedInputs(shards)(ids)
    empty_weights, empty_round = _empty_round(model_fn)  # before the Keras models below: it builds in a graph
    central = _central_loop(models.build_keras_model(architecture, (28, 28, 1), 10), batch_size, client_lr)
    x_t, y_t = tf.constant(x), tf.constant(y)

    k = rounds_per_call
    blocks = round_blocks.RoundBlocks(plain)
    resident = round_blocks.RoundBlocks(plain, resident=True)
    packed_blocks = round_blocks.RoundBlocks(packed, resident=True)  # all three
    # method -> (one step, rounds per step)
    states = {'stock': stock.initialize(), 'plain': plain.initialize(), 'blocks': plain.initialize(),
              'packed': packed.initialize(), 'resident': plain.initialize(), 'all': packed.initialize()}  # fmt: skip

    def round_of(name, process, inputs):
        states[name] = process.next(states[name], inputs).state

    def block_of(name, runner, inputs, rounds=k):
        states[name] = runner.next(states[name], [inputs] * rounds)[0]

    steps = {
        'stock': (lambda: round_of('stock', stock, datasets), 1),
        'plain': (lambda: round_of('plain', plain, shard_paths), 1),
        'blocks': (lambda: block_of('blocks', blocks, shard_paths), k),
        'packed': (lambda: round_of('packed', packed, groups), 1),
        'resident': (lambda: block_of('resident', resident, shard_paths, rounds=1), 1),
        'all': (lambda: block_of('all', packed_blocks, groups), k),
        'empty': (lambda: empty_round(empty_weights, shard_paths), 1),
        'central': (lambda: central(x_t, y_t).numpy(), 1),
    }
    for step, _ in steps.values():  # tracing, compiling: excluded
        step()
    timer = common.Timer()
    for i in range(rounds):
        for name, (step, per_step) in steps.items():
            if per_step == 1 or i % k == 0:  # a block of k rounds every k-th time: the same rounds for each method
                timer.time(name, step)
    shards.close()
    del tff
    return {name: n * per_step * timer.count[name] / timer.seconds[name] for name, (_, per_step) in steps.items()}


def _bench_clients():
    if common.LEAF.exists():
        _, writers, _ = common.leaf_federation(max_writers=14)
        clients = {u: writers[u] for u in sorted(writers) if len(writers[u][1]) >= 50}
        return {u: clients[u] for u in sorted(clients)[:10]}, 'LEAF digits'
    return common.synthetic_clients(10, 100), 'synthetic'


def central_rate_with_threads(architecture: str, threads: int, rounds: int) -> float:
    """Examples/s of the central loop in a process whose TensorFlow runs `threads` threads per op."""
    command = [sys.executable, '-m', 'bench.efficiency', '--central-only', architecture, '--rounds', str(rounds)]
    env = {**os.environ, 'TF_NUM_INTRAOP_THREADS': str(threads)}
    output = subprocess.run(command, env=env, cwd=common.REPO, capture_output=True, text=True, check=True).stdout
    return json.loads(output.strip().splitlines()[-1])['examples_per_second']


def _central_only(architecture: str, rounds: int) -> None:
    import tensorflow as tf

    from fedlab import client_data, models, tensor_client_work
    from fedlab.data import federated_data

    clients, _ = _bench_clients()
    data = federated_data.client_data_from_arrays(clients)
    pipeline = functools.partial(client_data.train_pipeline, config=client_data.PipelineConfig(epochs=1))
    tensors = [tensor_client_work.materialize(d) for d in client_data.ClientDatasets(data, pipeline)(sorted(clients))]
    x = tf.constant(np.concatenate([t['x'] for t in tensors]))
    y = tf.constant(np.concatenate([t['y'] for t in tensors]))
    central = _central_loop(models.build_keras_model(architecture, (28, 28, 1), 10), 20, 0.02)
    central(x, y).numpy()  # tracing: excluded
    timer = common.Timer()
    for _ in range(rounds):
        timer.time('central', lambda: central(x, y).numpy())
    rate = int(y.shape[0]) * timer.count['central'] / timer.seconds['central']
    print(json.dumps({'examples_per_second': rate}))


def main(argv=None) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--models', default='fedavg_cnn,simple_cnn,linear')
    parser.add_argument('--rounds', type=int, default=5 if common.QUICK else 20)
    parser.add_argument('--rounds-per-call', type=int, default=5)
    parser.add_argument('--central-only', metavar='MODEL', help=argparse.SUPPRESS)  # central_rate_with_threads
    args = parser.parse_args(argv)
    if args.central_only:
        _central_only(args.central_only, args.rounds)
        return []
    from fedlab import workers

    workers.shield_workers_from_terminal_signals()  # TFF's worker as a default run starts it:
    workers.set_intra_op_threads(WORKER_THREADS)  # efficiency.intra_op_threads
    clients, source = _bench_clients()
    examples = sum(len(v[1]) for v in clients.values())
    k = args.rounds_per_call
    lines = [f'# 1. simulation efficiency: 10 clients x {examples // 10} {source} examples, batch 20, 1 epoch, '
             f'{args.rounds} interleaved rounds after the first calls; rounds_per_call={k}, '
             f'pack_clients into {client_groups()} groups; all three: with resident_state too']
    print(lines[0], flush=True)
    for architecture in args.models.split(','):
        rates = measure(architecture, clients, rounds=args.rounds, rounds_per_call=k)
        threaded = central_rate_with_threads(architecture, WORKER_THREADS, args.rounds)
        rates['central'] = max(rates['central'], threaded)  # the physical limit: the faster thread setting
        ms = {name: 1000 * examples / rate for name, rate in rates.items()}
        lines.append(
            f'   {architecture}: ms per round: central loop {ms["central"]:.1f} (with {WORKER_THREADS} thread per op '
            f'{1000 * examples / threaded:.1f}), TFF stock {ms["stock"]:.1f}, '
            f'empty TFF round {ms["empty"]:.1f}, fedlab plain {ms["plain"]:.1f}, rounds_per_call {ms["blocks"]:.1f}, '
            f'pack_clients {ms["packed"]:.1f}, resident_state {ms["resident"]:.1f}, all three {ms["all"]:.1f}'
        )
        for label, name in [
            ('TFF stock', 'stock'),
            ('empty TFF round (plain call)', 'empty'),
            ('fedlab plain (shards)', 'plain'),
            (f'fedlab rounds_per_call={k}', 'blocks'),
            ('fedlab pack_clients', 'packed'),
            ('fedlab resident_state', 'resident'),
        ]:
            lines.append(common.figure(f'eta {architecture} {label}', rates[name] / rates['central'], '(ref)', None))
        eta = rates['all'] / rates['central']
        goal, factor = GOALS[architecture], STOCK_FACTOR[architecture]
        vs_stock = rates['all'] / rates['stock']
        lines.append(common.figure(f'eta {architecture} fedlab all three', eta, f'>={goal}', eta >= goal,
                                   f'{vs_stock:.1f}x TFF stock, goal >={factor}x: {"MET" if vs_stock >= factor else "MISS"}'))
        print('\n'.join(lines[-8:]), flush=True)
    return lines


def client_groups() -> int:
    from fedlab import client_packing

    return client_packing.cores()


if __name__ == '__main__':
    from fedlab import workers

    # TFF's worker inherits stdout and outlives Python: stop it, or whoever reads our output waits forever.
    with workers.worker_cleanup():
        main()

"""Figure 1: simulation efficiency η = FedAvg examples/s ÷ the physical limit (in-graph centralized loop), for
fedlab's plain shard path, each way of making fewer TFF calls (docs/performance.md) and all of them together,
beside TFF's stock FedAvg; every method timed interleaved round by round in one run, so compare ratios.

TFF's worker runs with a default run's efficiency.intra_op_threads (1). TensorFlow fixes its threads when a
process starts, so two methods run in processes of their own, a step at a time when asked (`StepServer`), still
interleaved with the others: TFF stock as it comes (TensorFlow's default threads), and the central loop at one
thread per op. The physical limit is the faster central loop: this process's (default threads) or that one."""

import argparse
import functools
import os
import subprocess
import sys
import time

import numpy as np

from bench import common

GOALS = {'fedavg_cnn': 0.92, 'simple_cnn': 0.85, 'linear': 0.40}  # issue 15
WORKER_THREADS = 1  # conf/config.yaml's efficiency.intra_op_threads
BATCH_SIZE, CLIENT_LR, SERVER_LR = 20, 0.02, 1.0  # FedAvg's and the central loop's, in every process
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


def _federation(clients: dict):
    """The clients' data, their training pipeline (one epoch) and each client's dataset, in sorted id order."""
    from fedlab.data import federated_data
    from fedlab.run import round_inputs

    data = federated_data.client_data_from_arrays(clients)
    pipeline = functools.partial(round_inputs.train_pipeline, config=round_inputs.PipelineConfig(epochs=1))
    return data, pipeline, round_inputs.ClientDatasets(data, pipeline)(sorted(clients))


def _pooled(datasets) -> tuple[np.ndarray, np.ndarray]:
    """Every client's batch stream concatenated: the central loop's data."""
    from fedlab.fast_paths import tensor_inputs

    tensors = [tensor_inputs.materialize(d) for d in datasets]
    return np.concatenate([t['x'] for t in tensors]), np.concatenate([t['y'] for t in tensors])


def _fed_avg(architecture: str, **keywords):
    from fedlab import models
    from fedlab.algorithms import fedavg, optimizers

    model_fn = models.keras_model_fn((28, 28, 1), 10, architecture=architecture)
    return fedavg.build_fed_avg(model_fn, optimizers.sgd(CLIENT_LR), optimizers.sgd(SERVER_LR), **keywords)


def measure(architecture: str, clients: dict, *, rounds: int, rounds_per_call: int):
    """Examples/s of each method, measured interleaved (first calls excluded: tracing and compiling)."""
    import tensorflow as tf
    import tensorflow_federated as tff

    from fedlab import models
    from fedlab.fast_paths import client_packing, round_blocks
    from fedlab.run import round_inputs

    ids = sorted(clients)
    data, pipeline, datasets = _federation(clients)  # in `ids` order
    x, y = _pooled(datasets)
    n = len(y)
    model_fn = models.keras_model_fn((28, 28, 1), 10, architecture=architecture)

    stock = StepServer(architecture, 'stock', None)  # TFF as it comes, with its own worker
    central_threads = StepServer(architecture, 'central', WORKER_THREADS)
    plain = _fed_avg(architecture, client_inputs='shards', batch_size=BATCH_SIZE)
    packed = _fed_avg(architecture, client_inputs='shards', batch_size=BATCH_SIZE, pack_clients=True)
    shards = round_inputs.ClientShards(data, pipeline)
    shard_paths = shards(ids)
    groups = client_packing.PackedInputs(shards)(ids)
    empty_weights, empty_round = _empty_round(model_fn)  # before the Keras models below: it builds in a graph
    central = _central_loop(models.build_keras_model(architecture, (28, 28, 1), 10), BATCH_SIZE, CLIENT_LR)
    x_t, y_t = tf.constant(x), tf.constant(y)

    k = rounds_per_call
    blocks = round_blocks.RoundBlocks(plain)
    resident = round_blocks.RoundBlocks(plain, resident=True)
    packed_blocks = round_blocks.RoundBlocks(packed, resident=True)  # all three
    # method -> (one step, rounds per step)
    states = {'plain': plain.initialize(), 'blocks': plain.initialize(), 'packed': packed.initialize(),
              'resident': plain.initialize(), 'all': packed.initialize()}  # fmt: skip

    def round_of(name, process, inputs):
        states[name] = process.next(states[name], inputs).state

    def block_of(name, runner, inputs, rounds=k):
        states[name] = runner.next(states[name], [inputs] * rounds)[0]

    steps = {
        'stock': (stock.step, 1),  # seconds measured in its process
        'plain': (lambda: round_of('plain', plain, shard_paths), 1),
        'blocks': (lambda: block_of('blocks', blocks, shard_paths), k),
        'packed': (lambda: round_of('packed', packed, groups), 1),
        'resident': (lambda: block_of('resident', resident, shard_paths, rounds=1), 1),
        'all': (lambda: block_of('all', packed_blocks, groups), k),
        'empty': (lambda: empty_round(empty_weights, shard_paths), 1),
        'central': (lambda: central(x_t, y_t).numpy(), 1),
        'central threads': (central_threads.step, 1),
    }
    served = (stock.step, central_threads.step)
    for name, (step, _) in steps.items():  # tracing, compiling: excluded (the servers did theirs)
        if step not in served:
            step()
    timer = common.Timer()
    for i in range(rounds):
        for name, (step, per_step) in steps.items():
            if per_step == 1 or i % k == 0:  # a block of k rounds every k-th time: the same rounds for each method
                if step in served:
                    timer.add(name, step())
                else:
                    timer.time(name, step)
    stock.close()
    central_threads.close()
    shards.close()
    del tff
    return {name: n * per_step * timer.count[name] / timer.seconds[name] for name, (_, per_step) in steps.items()}


def _bench_clients():
    if common.LEAF.exists():
        _, writers, _ = common.leaf_federation(max_writers=14)
        clients = {u: writers[u] for u in sorted(writers) if len(writers[u][1]) >= 50}
        return {u: clients[u] for u in sorted(clients)[:10]}, 'LEAF digits'
    return common.synthetic_clients(10, 100), 'synthetic'


class StepServer:
    """One method of `measure` in a Python process of its own, with `threads` TensorFlow threads per op (None:
    TensorFlow's default): `step()` runs one step there and returns its seconds, measured there."""

    def __init__(self, architecture: str, method: str, threads: int | None):
        env = {key: value for key, value in os.environ.items() if key != 'TF_NUM_INTRAOP_THREADS'}
        env.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')  # its stderr is this bench's
        if threads is not None:
            env['TF_NUM_INTRAOP_THREADS'] = str(threads)
        command = [sys.executable, '-m', 'bench.efficiency', '--serve', f'{architecture}:{method}']
        self._process = subprocess.Popen(
            command, env=env, cwd=common.REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        self._reply()  # built and traced

    def step(self) -> float:
        self._process.stdin.write('step\n')
        self._process.stdin.flush()
        return self._reply()

    def close(self) -> None:
        self._process.stdin.close()  # the server's loop ends; it stops its TFF worker
        self._process.wait()

    def _reply(self) -> float:
        for line in self._process.stdout:  # skip anything else printed (data loading, TFF's worker)
            if line.startswith(_REPLY):
                return float(line[len(_REPLY) :])
        raise RuntimeError(f'the step server exited with {self._process.wait()}')


_REPLY = 'bench.efficiency step seconds: '


def _serve(architecture: str, method: str) -> None:
    """StepServer's process: builds `method` ('stock' or 'central') on the bench's clients, then runs one step
    per line read."""
    import tensorflow as tf

    from fedlab import models

    _, _, datasets = _federation(_bench_clients()[0])
    if method == 'stock':
        stock = _fed_avg(architecture, client_inputs='dataset')
        state = [stock.initialize()]

        def step():
            state[0] = stock.next(state[0], datasets).state

    else:
        x, y = (tf.constant(a) for a in _pooled(datasets))
        central = _central_loop(models.build_keras_model(architecture, (28, 28, 1), 10), BATCH_SIZE, CLIENT_LR)

        def step():
            central(x, y).numpy()

    step()  # tracing, compiling: excluded
    print(f'{_REPLY}0', flush=True)
    for _ in sys.stdin:
        start = time.perf_counter()
        step()
        print(f'{_REPLY}{time.perf_counter() - start}', flush=True)


def main(argv=None) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--models', default='fedavg_cnn,simple_cnn,linear')
    parser.add_argument('--rounds', type=int, default=5 if common.QUICK else 20)
    parser.add_argument('--rounds-per-call', type=int, default=5)
    parser.add_argument('--serve', metavar='MODEL:METHOD', help=argparse.SUPPRESS)  # StepServer's process
    args = parser.parse_args(argv)
    if args.serve:
        _serve(*args.serve.split(':'))
        return []
    from fedlab.run import worker_processes

    worker_processes.set_intra_op_threads(WORKER_THREADS)  # TFF's worker as a default run starts it
    clients, source = _bench_clients()
    examples = sum(len(v[1]) for v in clients.values())
    k = args.rounds_per_call
    lines = [f'# 1. simulation efficiency: 10 clients x {examples // 10} {source} examples, batch 20, 1 epoch, '
             f'{args.rounds} interleaved rounds after the first calls; rounds_per_call={k}, '
             f'pack_clients into {client_groups()} groups; all three: with resident_state too']
    print(lines[0], flush=True)
    for architecture in args.models.split(','):
        rates = measure(architecture, clients, rounds=args.rounds, rounds_per_call=k)
        default_threads, one_thread = rates['central'], rates.pop('central threads')
        rates['central'] = max(default_threads, one_thread)  # the physical limit: the faster thread setting
        ms = {name: 1000 * examples / rate for name, rate in rates.items()}
        lines.append(
            f'   {architecture}: ms per round: central loop {ms["central"]:.1f} (default threads '
            f'{1000 * examples / default_threads:.1f}, {WORKER_THREADS} per op {1000 * examples / one_thread:.1f}), '
            f'TFF stock {ms["stock"]:.1f}, '
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
    from fedlab.fast_paths import client_packing

    return client_packing.cores()


if __name__ == '__main__':
    from fedlab.run import worker_processes

    # TFF's worker inherits stdout and outlives Python: stop it, or whoever reads our output waits forever.
    with worker_processes.worker_cleanup():
        main()

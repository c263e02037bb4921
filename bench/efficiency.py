"""Figure 1: simulation efficiency of fedlab's plain shard path, each way of making fewer TFF calls
(docs/performance.md) and all of them together, beside TFF's stock FedAvg (as it comes, with its DATASET_ITERATOR
loop, with the tutorial's 5 local epochs); every method timed interleaved round by round in one run, so compare ratios.

Two yardsticks: η = examples/s ÷ the single chain (one in-graph loop of SGD over all examples, one step after
another: what one core's worth of dependent steps costs), and η2 = examples/s ÷ the 2-core limit (the same FedAvg
round without TFF, as two concurrent streams of half the clients: `bench/two_streams.py`; checked to compute
fedlab's weights to float rounding). Each is the faster of its thread settings (and for the limit, XLA on/off).
Per model, a third line reads the round as arithmetic: its FLOPs and each method's share of what the cores do on
matrix products (`bench/arithmetic.py`).

TFF's worker runs with a default run's efficiency.intra_op_threads (1). TensorFlow fixes its threads when a
process starts, so methods with other threads run in processes of their own, a step at a time when asked
(`StepServer`), still interleaved with the others: TFF stock (TensorFlow's default threads), and the single chain
and the limit at one thread per op. This process runs them at TensorFlow's default threads."""

import argparse
import functools
import os
import subprocess
import sys
import time
import typing

import numpy as np

from bench import arithmetic, common

GOALS = {'fedavg_cnn': 0.92, 'simple_cnn': 0.85, 'linear': 0.40}  # issue 15, against the single chain
ETA2_GOALS = {'fedavg_cnn': 0.90, 'simple_cnn': 0.85, 'linear': 0.50}  # issue 26, against the 2-core limit
WORKER_THREADS = 1  # conf/config.yaml's efficiency.intra_op_threads
BATCH_SIZE, CLIENT_LR, SERVER_LR = 20, 0.02, 1.0  # FedAvg's and the central loop's, in every process
STOCK_FACTOR = {'fedavg_cnn': 2, 'simple_cnn': 4, 'linear': 8}  # ... and ahead of TFF stock by these factors
STOCK_FACTOR_26 = {'fedavg_cnn': 3, 'simple_cnn': 10, 'linear': 20}  # issue 26's factors


def _central_loop(model, batch_size: int, lr: float):
    """The single chain: SGD over in-memory tensors in one tf.function, one in-graph loop."""
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
    time is what TFF's runtime costs such a round whatever the clients do: single-chain time / its time bounds
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


def _pooled(datasets) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Every client's batch stream concatenated (the central loop's and the limit's data), and each one's length."""
    from fedlab.fast_paths import tensor_inputs

    tensors = [tensor_inputs.materialize(d) for d in datasets]
    sizes = [len(t['y']) for t in tensors]
    return np.concatenate([t['x'] for t in tensors]), np.concatenate([t['y'] for t in tensors]), sizes


def _fed_avg(architecture: str, **keywords):
    from fedlab import models
    from fedlab.algorithms import fedavg, optimizers

    model_fn = models.keras_model_fn((28, 28, 1), 10, architecture=architecture)
    return fedavg.build_fed_avg(model_fn, optimizers.sgd(CLIENT_LR), optimizers.sgd(SERVER_LR), **keywords)


class Step(typing.NamedTuple):
    """One method's step: `fn` runs it (a served step returns its seconds, measured in its process), `examples`
    trained per step, run every `every`-th time through the interleaved loop."""

    fn: typing.Callable
    examples: int
    every: int = 1
    served: bool = False


def measure(architecture: str, clients: dict, *, rounds: int, rounds_per_call: int, repetitions: int):
    """Examples/s of each method per repetition, all measured interleaved (first calls excluded: tracing and
    compiling), and a description of the 2-core limit (its streams' concurrency, its weights against fedlab's)."""
    import tensorflow as tf
    import tensorflow_federated as tff

    from fedlab import models
    from fedlab.fast_paths import client_packing, round_blocks
    from fedlab.run import round_inputs

    ids = sorted(clients)
    data, pipeline, datasets = _federation(clients)  # in `ids` order
    x, y, sizes = _pooled(datasets)
    n = len(y)
    model_fn = models.keras_model_fn((28, 28, 1), 10, architecture=architecture)

    stock = StepServer(architecture, 'stock', None)  # TFF as it comes, with its own worker
    one_thread = StepServer(architecture, 'one_thread', WORKER_THREADS)  # the central loop and the limit
    plain = _fed_avg(architecture, client_inputs='shards', batch_size=BATCH_SIZE)
    packed = _fed_avg(architecture, client_inputs='shards', batch_size=BATCH_SIZE, pack_clients=True)
    shards = round_inputs.ClientShards(data, pipeline)
    shard_paths = shards(ids)
    groups = client_packing.PackedInputs(shards)(ids)
    empty_weights, empty_round = _empty_round(model_fn)  # before the Keras models below: it builds in a graph
    central = _central_loop(models.build_keras_model(architecture, (28, 28, 1), 10), BATCH_SIZE, CLIENT_LR)
    limits = {jit: _two_streams(architecture, x, y, sizes, jit=jit) for jit in (False, True)}
    limit_check = _limit_check(packed, groups, limits[False])
    x_t, y_t = tf.constant(x), tf.constant(y)

    k = rounds_per_call
    blocks = round_blocks.RoundBlocks(plain)
    resident = round_blocks.RoundBlocks(plain, resident=True)
    packed_blocks = round_blocks.RoundBlocks(packed, resident=True)  # all three
    states = {'plain': plain.initialize(), 'blocks': plain.initialize(), 'packed': packed.initialize(),
              'resident': plain.initialize(), 'all': packed.initialize()}  # fmt: skip

    def round_of(name, process, inputs):
        states[name] = process.next(states[name], inputs).state

    def block_of(name, runner, inputs, rounds=k):
        states[name] = runner.next(states[name], [inputs] * rounds)[0]

    def served(server, method, examples=n, every=1):
        return Step(functools.partial(server.step, method), examples, every, served=True)

    steps = {
        'stock': served(stock, 'stock'),
        'stock iterator': served(stock, 'stock iterator'),
        'stock epochs5': served(stock, 'stock epochs5', 5 * n, k),  # 5 epochs a round: every k-th time only
        'plain': Step(lambda: round_of('plain', plain, shard_paths), n),
        'blocks': Step(lambda: block_of('blocks', blocks, shard_paths), k * n, k),
        'packed': Step(lambda: round_of('packed', packed, groups), n),
        'resident': Step(lambda: block_of('resident', resident, shard_paths, rounds=1), n),
        'all': Step(lambda: block_of('all', packed_blocks, groups), k * n, k),
        'empty': Step(lambda: empty_round(empty_weights, shard_paths), n),
        'central': Step(lambda: central(x_t, y_t).numpy(), n),
        'central threads': served(one_thread, 'central'),
        'limit default': Step(limits[False].step, n),
        'limit default jit': Step(limits[True].step, n),
        'limit threads': served(one_thread, 'limit'),
        'limit threads jit': served(one_thread, 'limit jit'),
    }
    for step in steps.values():  # tracing, compiling: excluded (the servers did theirs)
        if not step.served:
            step.fn()
    timers = []
    for _ in range(repetitions):  # each repetition its own figures; all interleaved round by round
        timers.append(common.Timer())
        for i in range(rounds):
            for name, step in steps.items():
                if i % step.every == 0:  # a block of k rounds every k-th time: the same rounds for each method
                    if step.served:
                        timers[-1].add(name, step.fn())
                    else:
                        timers[-1].time(name, step.fn)
    stock.close()
    one_thread.close()
    shards.close()
    for limit in limits.values():
        limit.close()
    del tff
    examples = {name: step.examples for name, step in steps.items()}
    per_repetition = [
        {name: examples[name] * timer.count[name] / timer.seconds[name] for name in steps} for timer in timers
    ]
    return per_repetition, limit_check


class _LimitSteps:
    """The 2-core limit in this process (TensorFlow's default threads), as steps of `measure`."""

    def __init__(self, streams, weights):
        self.streams, self.weights = streams, weights

    def step(self):
        self.weights = self.streams.round(self.weights)

    def close(self):
        self.streams.close()


def _two_streams(architecture: str, x, y, sizes, *, jit: bool) -> _LimitSteps:
    import tensorflow as tf

    from bench import two_streams
    from fedlab import models

    def build_model():
        return models.build_keras_model(architecture, (28, 28, 1), 10)

    streams = two_streams.TwoStreams(build_model, x, y, sizes, batch_size=BATCH_SIZE, lr=CLIENT_LR, jit=jit)
    return _LimitSteps(streams, [tf.constant(w) for w in build_model().get_weights()])


def _limit_check(packed, groups, limit: _LimitSteps) -> str:
    """One round of fedlab's packed FedAvg and of the limit from the same weights and data: their largest weight
    difference (float rounding if both do the same work), and how concurrently the limit's two streams ran."""
    import tensorflow as tf

    from bench import two_streams

    state = packed.initialize()
    start = [tf.constant(w) for w in packed.get_model_weights(state).trainable]
    fedlab_next = packed.get_model_weights(packed.next(state, groups).state).trainable
    limit_next = limit.streams.round(start)
    difference = max(float(np.max(np.abs(np.asarray(a) - b.numpy()))) for a, b in zip(fedlab_next, limit_next))
    scale = max(float(np.max(np.abs(np.asarray(a)))) for a in fedlab_next)
    concurrency = two_streams.concurrency(limit.streams, start)
    return (f'max abs weight difference after one round, limit vs fedlab {difference:.1e} (largest weight '
            f'{scale:.2g}); streams\' concurrency {concurrency:.2f} (2 = both cores busy)')


def _bench_clients():
    if common.LEAF.exists():
        _, writers, _ = common.leaf_federation(max_writers=14)
        clients = {u: writers[u] for u in sorted(writers) if len(writers[u][1]) >= 50}
        return {u: clients[u] for u in sorted(clients)[:10]}, 'LEAF digits'
    return common.synthetic_clients(10, 100), 'synthetic'


class StepServer:
    """Methods of `measure` in a Python process of its own, with `threads` TensorFlow threads per op (None:
    TensorFlow's default): `step(method)` runs one step of `method` there and returns its seconds, measured there."""

    def __init__(self, architecture: str, role: str, threads: int | None):
        env = {key: value for key, value in os.environ.items() if key != 'TF_NUM_INTRAOP_THREADS'}
        env.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')  # its stderr is this bench's
        if threads is not None:
            env['TF_NUM_INTRAOP_THREADS'] = str(threads)
        command = [sys.executable, '-m', 'bench.efficiency', '--serve', f'{architecture}:{role}']
        self._process = subprocess.Popen(
            command, env=env, cwd=common.REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        self._reply()  # built and traced

    def step(self, method: str) -> float:
        self._process.stdin.write(f'{method}\n')
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


def _stock_steps(architecture: str, clients: dict) -> dict:
    """TFF as users meet it: `build_weighted_fed_avg` as it comes, with TFF's DATASET_ITERATOR loop, and with the
    tutorial's 5 local epochs (its examples/s count 5 passes a round)."""
    import tensorflow_federated as tff

    from fedlab import models
    from fedlab.algorithms import optimizers
    from fedlab.run import round_inputs

    data, _, datasets = _federation(clients)
    five_epochs = functools.partial(round_inputs.train_pipeline, config=round_inputs.PipelineConfig(epochs=5))
    datasets_5 = round_inputs.ClientDatasets(data, five_epochs)(sorted(clients))
    model_fn = models.keras_model_fn((28, 28, 1), 10, architecture=architecture)
    iterator = tff.learning.algorithms.build_weighted_fed_avg(
        model_fn, optimizers.sgd(CLIENT_LR), optimizers.sgd(SERVER_LR),
        loop_implementation=tff.learning.LoopImplementation.DATASET_ITERATOR,
    )  # fmt: skip
    processes = {'stock': (_fed_avg(architecture, client_inputs='dataset'), datasets),
                 'stock iterator': (iterator, datasets),
                 'stock epochs5': (_fed_avg(architecture, client_inputs='dataset'), datasets_5)}  # fmt: skip
    states = {name: process.initialize() for name, (process, _) in processes.items()}

    def step(name):
        process, inputs = processes[name]
        states[name] = process.next(states[name], inputs).state

    return {name: functools.partial(step, name) for name in processes}


def _one_thread_steps(architecture: str, clients: dict) -> dict:
    """The single chain and the 2-core limit (with and without XLA) at one thread per op."""
    import tensorflow as tf

    from fedlab import models

    _, _, datasets = _federation(clients)
    x, y, sizes = _pooled(datasets)
    central = _central_loop(models.build_keras_model(architecture, (28, 28, 1), 10), BATCH_SIZE, CLIENT_LR)
    x_t, y_t = tf.constant(x), tf.constant(y)
    limits = {jit: _two_streams(architecture, x, y, sizes, jit=jit) for jit in (False, True)}
    return {'central': lambda: central(x_t, y_t).numpy(), 'limit': limits[False].step, 'limit jit': limits[True].step}


def _serve(architecture: str, role: str) -> None:
    """StepServer's process: builds the steps of `role` ('stock' or 'one_thread') on the bench's clients, then runs
    the step named by each line read."""
    clients = _bench_clients()[0]
    steps = _stock_steps(architecture, clients) if role == 'stock' else _one_thread_steps(architecture, clients)
    for step in steps.values():
        step()  # tracing, compiling: excluded
    print(f'{_REPLY}0', flush=True)
    for line in sys.stdin:
        step = steps[line.strip()]
        start = time.perf_counter()
        step()
        print(f'{_REPLY}{time.perf_counter() - start}', flush=True)


def _best_limit(rates: dict) -> tuple[str, float]:
    """The fastest setting of the 2-core limit: (its name, its examples/s)."""
    name = max(LIMIT_SETTINGS, key=lambda setting: rates[setting])
    return LIMIT_SETTINGS[name], rates[name]


LIMIT_SETTINGS = {'limit default': 'default threads', 'limit default jit': 'default threads, XLA',
                  'limit threads': f'{WORKER_THREADS} thread per op',
                  'limit threads jit': f'{WORKER_THREADS} thread per op, XLA'}  # fmt: skip


def _pooled_rates(per_repetition: list[dict]) -> dict:
    """Examples/s over all repetitions (each repetition ran the same steps: the harmonic mean of its rates)."""
    return {name: len(per_repetition) / sum(1 / rates[name] for rates in per_repetition) for name in per_repetition[0]}


def _limit_ms(per_repetition: list[dict], examples: int) -> list[float]:
    """The 2-core limit's ms per round in each repetition (its fastest setting there)."""
    return [1000 * examples / _best_limit(rates)[1] for rates in per_repetition]


def _limit_lines(architecture: str, per_repetition: list[dict], limit_check: str, examples: int) -> list[str]:
    """The 2-core limit's ms per round and eta2 = fedlab all three ÷ the limit: median and spread of repetitions."""
    import statistics

    eta2 = [rates['all'] / _best_limit(rates)[1] for rates in per_repetition]
    limit_ms = _limit_ms(per_repetition, examples)
    pooled = _pooled_rates(per_repetition)
    settings = ', '.join(f'{label} {1000 * examples / pooled[name]:.1f}' for name, label in LIMIT_SETTINGS.items())
    median = statistics.median(eta2)
    goal = ETA2_GOALS[architecture]
    return [
        f'   {architecture}: 2-core limit (two streams, no TFF) ms per round: median {statistics.median(limit_ms):.1f} '
        f'(range {min(limit_ms):.1f}-{max(limit_ms):.1f}; by setting over all repetitions: {settings}); {limit_check}',
        common.figure(f'eta2 {architecture} fedlab all three', median, f'>={goal}', median >= goal,
                      f'median of {len(eta2)} interleaved repetitions, range {min(eta2):.3f}-{max(eta2):.3f}; '
                      f'load average {os.getloadavg()[0]:.1f}'),
    ]


def main(argv=None) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--models', default='fedavg_cnn,simple_cnn,linear')
    parser.add_argument('--rounds', type=int, default=5 if common.QUICK else 10, help='rounds per repetition')
    parser.add_argument('--repetitions', type=int, default=3)
    parser.add_argument('--rounds-per-call', type=int, default=5)
    parser.add_argument('--serve', metavar='MODEL:ROLE', help=argparse.SUPPRESS)  # StepServer's process
    args = parser.parse_args(argv)
    if args.serve:
        _serve(*args.serve.split(':'))
        return []
    import statistics

    from fedlab import models
    from fedlab.run import worker_processes

    worker_processes.set_intra_op_threads(WORKER_THREADS)  # TFF's worker as a default run starts it
    clients, source = _bench_clients()
    examples = sum(len(v[1]) for v in clients.values())
    k = args.rounds_per_call
    lines = [f'# 1. simulation efficiency: 10 clients x {examples // 10} {source} examples, batch 20, 1 epoch, '
             f'{args.repetitions} repetitions of {args.rounds} interleaved rounds after the first calls; '
             f'rounds_per_call={k}, pack_clients into {client_groups()} groups; all three: with resident_state too; '
             f'load average {os.getloadavg()[0]:.1f}']
    print(lines[0], flush=True)
    gemm = arithmetic.gemm_rate()
    for architecture in args.models.split(','):
        per_repetition, limit_check = measure(architecture, clients, rounds=args.rounds, rounds_per_call=k,
                                              repetitions=args.repetitions)
        rates = _pooled_rates(per_repetition)
        default_threads, one_thread = rates['central'], rates.pop('central threads')
        rates['central'] = max(default_threads, one_thread)  # the single chain: the faster thread setting
        ms = {name: 1000 * examples / rate for name, rate in rates.items()}
        first = len(lines)
        lines.append(
            f'   {architecture}: ms per round: single chain (central loop) {ms["central"]:.1f} (default threads '
            f'{1000 * examples / default_threads:.1f}, {WORKER_THREADS} per op {1000 * examples / one_thread:.1f}), '
            f'TFF stock {ms["stock"]:.1f}, TFF stock DATASET_ITERATOR {ms["stock iterator"]:.1f}, TFF stock '
            f'client_epochs=5 {ms["stock epochs5"]:.1f} per epoch, '
            f'empty TFF round {ms["empty"]:.1f}, fedlab plain {ms["plain"]:.1f}, rounds_per_call {ms["blocks"]:.1f}, '
            f'pack_clients {ms["packed"]:.1f}, resident_state {ms["resident"]:.1f}, all three {ms["all"]:.1f}'
        )
        for label, name in [
            ('TFF stock', 'stock'),
            ('TFF stock DATASET_ITERATOR', 'stock iterator'),
            ('TFF stock client_epochs=5', 'stock epochs5'),
            ('empty TFF round (plain call)', 'empty'),
            ('fedlab plain (shards)', 'plain'),
            (f'fedlab rounds_per_call={k}', 'blocks'),
            ('fedlab pack_clients', 'packed'),
            ('fedlab resident_state', 'resident'),
        ]:
            lines.append(common.figure(f'eta {architecture} {label}', rates[name] / rates['central'], '(ref)', None,
                                       'vs single chain'))
        eta = rates['all'] / rates['central']
        goal, factor, factor_26 = GOALS[architecture], STOCK_FACTOR[architecture], STOCK_FACTOR_26[architecture]
        vs_stock = rates['all'] / rates['stock']
        lines.append(common.figure(f'eta {architecture} fedlab all three', eta, f'>={goal}', eta >= goal,
                                   f'vs single chain; {vs_stock:.1f}x TFF stock, goal >={factor}x (issue 15): '
                                   f'{"MET" if vs_stock >= factor else "MISS"}, >={factor_26}x (issue 26): '
                                   f'{"MET" if vs_stock >= factor_26 else "MISS"}; '
                                   f'{rates["all"] / rates["stock iterator"]:.1f}x TFF DATASET_ITERATOR'))
        lines += _limit_lines(architecture, per_repetition, limit_check, examples)
        flops = arithmetic.training_flops(models.build_keras_model(architecture, (28, 28, 1), 10), examples)
        limit_ms = statistics.median(_limit_ms(per_repetition, examples))
        lines.append(arithmetic.ceiling_line(architecture, flops, {'fedlab': ms['all'], 'limit': limit_ms,
                                                                   'TFF stock': ms['stock']}, gemm, factor_26))
        print('\n'.join(lines[first:]), flush=True)
    return lines


def client_groups() -> int:
    from fedlab.fast_paths import client_packing

    return client_packing.cores()


if __name__ == '__main__':
    from fedlab.run import worker_processes

    # TFF's worker inherits stdout and outlives Python: stop it, or whoever reads our output waits forever.
    with worker_processes.worker_cleanup():
        main()

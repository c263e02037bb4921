"""Figure: examples per second of each algorithm's fast path, as a ratio to FedAvg's, measured in one run with the
rounds interleaved (algorithm A round r, algorithm B round r, ...), so a loaded machine slows them alike.

`--baseline-commit <sha>` adds FedAvg's fast path as it was at that commit (its fedlab/tensor_client_work.py,
read with `git show`, run with TFF's own value serialization, one round per call), the "before" of
fedlab.algorithms; the others run as fedlab.run.round_loop.RoundLoop runs them, with fedlab.tff_internals.serialization installed
and the efficiency settings given (fedlab.config.efficiency; by default a default run's: clients packed where the
algorithm allows it, one round per call, the state kept in TFF's worker).
"""

import argparse
import contextlib
import functools
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time

from bench import common

GOAL = 1.0  # FedProx and the adaptive server optimizers: at least FedAvg's examples per second


PACKABLE = ('fedavg', 'fedprox', 'fedavgm', 'fedadam', 'fedyogi', 'fedadagrad', 'fedsgd')  # not Mime Lite


def _processes(model_fn, client_inputs: str, batch_size: int, baseline_commit: str | None, pack: bool) -> dict:
    import tensorflow_federated as tff

    from fedlab.algorithms import fedavg, fedprox, fedsgd, mime_lite, optimizers

    sgd = functools.partial(optimizers.sgd, 0.05)
    common_kw = dict(client_inputs=client_inputs, batch_size=batch_size, pack_clients=pack)
    builders = {
        'fedavg': lambda: fedavg.build_fed_avg(model_fn, sgd(), optimizers.sgd(1.0), **common_kw),
        'fedprox mu=0.01': lambda: fedprox.build_fed_prox(model_fn, sgd(), optimizers.sgd(1.0), mu=0.01, **common_kw),
        'fedavgm': lambda: fedavg.build_fed_avg(model_fn, sgd(), optimizers.sgd(0.3, 0.9), **common_kw),
        'fedadam': lambda: fedavg.build_fed_avg(model_fn, sgd(), optimizers.adam(0.003, epsilon=1e-3), **common_kw),
        'fedyogi': lambda: fedavg.build_fed_avg(model_fn, sgd(), optimizers.yogi(0.003), **common_kw),
        'fedadagrad': lambda: fedavg.build_fed_avg(model_fn, sgd(), optimizers.adagrad(0.1, 1e-6, 0.0), **common_kw),
        'fedsgd': lambda: fedsgd.build_fed_sgd(model_fn, optimizers.sgd(1.0), **common_kw),
        'mime_lite': lambda: mime_lite.build_mime_lite(
            model_fn, sgd(0.9), optimizers.sgd(1.0), client_inputs=client_inputs, batch_size=batch_size
        ),
    }
    if baseline_commit:
        old = _module_at(baseline_commit, 'fedlab/tensor_client_work.py')
        builders['fedavg before (' + baseline_commit[:7] + ')'] = lambda: old.build_tensor_fed_avg(
            model_fn, sgd(), optimizers.sgd(1.0), tff.aggregators.MeanFactory(), batch_size=batch_size,
            from_shards=client_inputs == 'shards',
        )  # fmt: skip
    return {name: build() for name, build in builders.items()}


def _module_at(commit: str, path: str):
    source = subprocess.run(['git', 'show', f'{commit}:{path}'], cwd=common.REPO, check=True, capture_output=True)
    file = tempfile.NamedTemporaryFile('wb', suffix='.py', delete=False)
    file.write(source.stdout)
    file.close()
    spec = importlib.util.spec_from_file_location(f'before_{commit[:7]}', file.name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv=None) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--model', default='simple_cnn')
    parser.add_argument('--client-inputs', default='shards', choices=['shards', 'tensors'])
    parser.add_argument('--clients', type=int, default=10)
    parser.add_argument('--examples', type=int, default=100, help='per client')
    parser.add_argument('--rounds', type=int, default=8 if common.QUICK else 30)
    parser.add_argument('--baseline-commit', default=None)
    parser.add_argument(
        '--pack-clients',
        action=argparse.BooleanOptionalAction,
        default=True,
        help='efficiency.pack_clients (default on, as in a default run; not for Mime Lite)',
    )
    parser.add_argument('--rounds-per-call', type=int, default=1, help='efficiency.rounds_per_call')
    parser.add_argument(
        '--resident-state',
        action=argparse.BooleanOptionalAction,
        default=True,
        help='efficiency.resident_state (default on, as in a default run)',
    )
    parser.add_argument(
        '--intra-op-threads', type=int, default=1, help="efficiency.intra_op_threads (0: TensorFlow's default)"
    )
    args = parser.parse_args(argv)
    k = args.rounds_per_call
    args.rounds = -(-args.rounds // k) * k  # whole blocks

    from fedlab import models
    from fedlab.data import federated_data
    from fedlab.fast_paths import client_packing, round_blocks
    from fedlab.run import round_inputs, worker_processes
    from fedlab.tff_internals import serialization

    worker_processes.set_intra_op_threads(args.intra_op_threads or None)  # TFF's worker as a default run starts it

    arrays = common.synthetic_clients(args.clients, args.examples)
    data = federated_data.client_data_from_arrays(arrays)
    config = round_inputs.PipelineConfig(epochs=1, batch_size=20)
    pipeline = functools.partial(round_inputs.train_pipeline, config=config)
    inputs = round_inputs.CLIENT_INPUTS[args.client_inputs](data, pipeline)
    model_fn = models.keras_model_fn((28, 28, 1), 10, architecture=args.model)
    processes = _processes(model_fn, args.client_inputs, config.batch_size, args.baseline_commit, args.pack_clients)
    states = {name: p.initialize() for name, p in processes.items()}
    client_ids = sorted(arrays)
    batch = inputs(client_ids)
    packed_batch = client_packing.PackedInputs(inputs)(client_ids) if args.pack_clients else batch
    seconds = {name: [] for name in processes}
    serialization.install()  # as RoundLoop does; the "before" runs with TFF's own

    def step_of(name, process):
        """One call of `name`'s process, and how many rounds it trains."""
        if name.startswith('fedavg before'):
            return lambda state: process.next(state, batch).state, 1
        data = packed_batch if name.startswith(PACKABLE) else batch
        if k == 1 and not args.resident_state:
            return lambda state: process.next(state, data).state, 1
        blocks = round_blocks.RoundBlocks(process, resident=args.resident_state)
        return lambda state: blocks.next(state, [data] * k)[0], k

    steps = {name: step_of(name, process) for name, process in processes.items()}
    for call in range(args.rounds // k + 1):  # call 0 warms each process up and is not counted
        for name, (step, rounds) in steps.items():
            before = name.startswith('fedavg before')
            with serialization.tffs_own() if before else contextlib.nullcontext():
                for _ in range(k // rounds):  # the "before" runs k single rounds meanwhile
                    start = time.perf_counter()
                    states[name] = step(states[name])
                    if call:
                        seconds[name].extend([(time.perf_counter() - start) / rounds] * rounds)
    if isinstance(inputs, round_inputs.ClientShards):
        inputs.close()

    examples = args.clients * args.examples
    medians = {name: statistics.median(times) for name, times in seconds.items()}
    before = next((name for name in medians if name.startswith('fedavg before')), None)
    reference = before or 'fedavg'  # the goal is today's FedAvg when measured, else this FedAvg
    lines = [
        f'# algorithms: {args.model}, {args.clients} clients x {args.examples} synthetic 28x28 examples, batch 20, '
        f'1 epoch, client_inputs={args.client_inputs}; median of {args.rounds} interleaved rounds; efficiency: '
        f'pack_clients={args.pack_clients} (not Mime Lite), rounds_per_call={k}, resident_state={args.resident_state}'
        f"{' (not the before)' if before else ''}; TFF's worker at intra_op_threads="
        f"{args.intra_op_threads or 'default'} for all; examples/s as a ratio to {reference}'s"
    ]
    for name, median in medians.items():
        ratio = medians[reference] / median  # the same examples every round: examples/s ratio
        goal = name.startswith(('fedprox', 'fedadam', 'fedyogi', 'fedadagrad', 'fedavgm'))
        detail = f'{median * 1000:.1f} ms per round, {examples / median:,.0f} examples/s'
        lines.append(common.figure(f'{name} / {reference.split(" (")[0]}', ratio, f'>={GOAL:.2f}' if goal else 'ref',
                                   (ratio >= GOAL) if goal else None, detail))  # fmt: skip
    print('\n'.join(lines), flush=True)
    return lines


if __name__ == '__main__':
    from fedlab.run import worker_processes

    with worker_processes.worker_cleanup():
        main(sys.argv[1:])

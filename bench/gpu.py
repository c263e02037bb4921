"""`make bench ARGS=gpu`: absolute figures on a GPU, when TensorFlow sees one; a one-line no-op on a CPU machine.

Prints, per model, examples/s and ms per round (compile time apart: the first call) of the 2-core limit's FedAvg round
(`bench/two_streams.py`, here on the GPU: two streams of half the clients) and of fedlab's default round (packed
clients, resident state, rounds_per_call=5), with the device's name and the versions. fedlab's rounds run in TFF's
C++ worker: TFF 0.87's wheel ships that worker built without CUDA (docs/performance.md, "GPU"), so expect its
figures to be the CPU's whatever the GPU; the limit's line shows what the GPU itself gives."""

import argparse
import os
import sys
import time

from bench import common, efficiency

NO_GPU = '# gpu: no GPU visible to TensorFlow; nothing measured'


def visible_gpus() -> list:
    import tensorflow as tf

    return tf.config.list_physical_devices('GPU')


def versions(gpu) -> str:
    """The device's name and TensorFlow's, TFF's, CUDA's and cuDNN's versions."""
    import tensorflow as tf
    import tensorflow_federated as tff

    details = tf.config.experimental.get_device_details(gpu)
    build = tf.sysconfig.get_build_info()
    return (f'{details.get("device_name", gpu.name)} (compute capability {details.get("compute_capability")}); '
            f'TensorFlow {tf.__version__}, TFF {tff.__version__}, CUDA {build.get("cuda_version")}, '
            f'cuDNN {build.get("cudnn_version")}')


def _timed(step, rounds: int, rounds_per_step: int = 1) -> tuple[float, float]:
    """(seconds of the first call, seconds per round after it)."""
    start = time.perf_counter()
    step()
    first = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(max(1, rounds // rounds_per_step)):
        step()
    return first, (time.perf_counter() - start) / (max(1, rounds // rounds_per_step) * rounds_per_step)


def measure(architecture: str, clients: dict, rounds: int, k: int) -> list[str]:
    from fedlab.fast_paths import client_packing, round_blocks
    from fedlab.run import round_inputs

    data, pipeline, datasets = efficiency._federation(clients)
    x, y, sizes = efficiency._pooled(datasets)
    n = len(y)
    limit = efficiency._two_streams(architecture, x, y, sizes, jit=False)  # on the GPU: TensorFlow's default device
    packed = efficiency._fed_avg(architecture, client_inputs='shards', batch_size=efficiency.BATCH_SIZE,
                                 pack_clients=True)
    shards = round_inputs.ClientShards(data, pipeline)
    groups = client_packing.PackedInputs(shards)(sorted(clients))
    runner = round_blocks.RoundBlocks(packed, resident=True)
    state = [packed.initialize()]

    def fedlab_block():
        state[0] = runner.next(state[0], [groups] * k)[0]

    lines = []
    for label, step, per_step in [('2-core limit (no TFF)', limit.step, 1), ('fedlab all three', fedlab_block, k)]:
        first, per_round = _timed(step, rounds, per_step)
        lines.append(f'   gpu {architecture} {label}: {n / per_round:,.0f} examples/s, {1000 * per_round:.1f} ms per '
                     f'round; first call (tracing, compiling) {first:.1f} s')
    limit.close()
    shards.close()
    return lines


def main(argv=None, gpus=visible_gpus) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--models', default='fedavg_cnn,simple_cnn,linear')
    parser.add_argument('--rounds', type=int, default=5 if common.QUICK else 20)
    args = parser.parse_args(argv)
    found = gpus()
    if not found:
        print(NO_GPU, flush=True)
        return [NO_GPU]
    from fedlab.run import worker_processes

    worker_processes.set_intra_op_threads(efficiency.WORKER_THREADS)
    clients, source = efficiency._bench_clients()
    lines = [f'# gpu: {len(found)} GPU(s): {versions(found[0])}; 10 clients of {source}, batch 20, 1 epoch, '
             f'{args.rounds} rounds; load average {os.getloadavg()[0]:.1f}']
    print(lines[0], flush=True)
    for architecture in args.models.split(','):
        lines += measure(architecture, clients, args.rounds, 5)
        print('\n'.join(lines[-2:]), flush=True)
    return lines


if __name__ == '__main__':
    from fedlab.run import worker_processes

    with worker_processes.worker_cleanup():
        sys.exit(main() and 0)

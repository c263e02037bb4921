"""Figure 6: uplink bits and round time of the compression aggregator ÷ the weighted mean, fedavg_cnn."""

import argparse
import functools

from bench import common


def _bits(process) -> tuple[int, str]:
    """Uplink bits per client: fedlab.record.ledger when it is there, else the model's tensor sizes."""
    try:
        from fedlab.record import ledger

        return ledger.measure(process).bits_per_client(ledger.UPLINK), 'fedlab.record.ledger'
    except ImportError:
        weights = process.get_model_weights(process.initialize()).trainable
        # compression_aggregator: tensors over 20,000 elements go as 8 bits, the rest as float32.
        bits = sum(w.size * (8 if w.size > 20000 else 32) for w in weights)
        return bits, 'tensor sizes'


def aggregation_seconds(trainable: list, *, clients: int = 10, repeats: int = 5) -> dict[str, float]:
    """Seconds per call of each aggregator's own process on `clients` random updates shaped like `trainable`,
    interleaved (first call excluded): where the compression aggregator's extra time goes."""
    import numpy as np
    import tensorflow_federated as tff

    rng = np.random.default_rng(0)
    updates = [[rng.normal(0, 0.01, w.shape).astype(np.float32) for w in trainable] for _ in range(clients)]
    value_type = tff.StructWithPythonType([tff.TensorType(np.float32, w.shape) for w in trainable], list)
    factories = {
        'mean': tff.aggregators.MeanFactory(),
        'compression': tff.learning.compression_aggregator(),
        'compression without zeroing and clipping': tff.learning.compression_aggregator(zeroing=False, clipping=False),
    }
    processes = {name: f.create(value_type, tff.TensorType(np.float32)) for name, f in factories.items()}
    states = {name: process.initialize() for name, process in processes.items()}
    timer = common.Timer()
    for repeat in range(repeats + 1):
        for name, process in processes.items():
            if repeat == 0:
                states[name] = process.next(states[name], updates, [1.0] * clients).state
            else:
                states[name] = timer.time(name, process.next, states[name], updates, [1.0] * clients).state
    return {name: timer.seconds[name] / timer.count[name] for name in processes}


def main(argv=None) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--rounds', type=int, default=5 if common.QUICK else 15)
    args = parser.parse_args(argv)

    from fedlab import aggregators, models, sampling
    from fedlab.run import round_inputs, round_loop

    data, _, test = common.leaf_federation()
    model_fn = models.keras_model_fn((28, 28, 1), 10, architecture='fedavg_cnn')
    config = round_loop.FedAvgConfig(client_lr=0.05)
    pipeline = functools.partial(round_inputs.train_pipeline, config=round_inputs.PipelineConfig(epochs=1))
    inputs = round_inputs.ClientShards(data.train, pipeline)
    sampler = sampling.uniform(data.client_ids, 10, seed=0)
    processes = {
        name: round_loop.build_fed_avg(model_fn, config, model_aggregator=factory(), client_inputs='shards')
        for name, factory in [('mean', aggregators.mean), ('compression', aggregators.compression)]
    }
    states = {name: p.initialize() for name, p in processes.items()}
    timer = common.Timer()
    for round_num in range(1, args.rounds + 1):
        clients = inputs(sampler(round_num))
        for name, process in processes.items():
            if round_num == 1:  # round 1 (first execution) is not timed
                states[name] = process.next(states[name], clients).state
            else:
                states[name] = timer.time(name, process.next, states[name], clients).state
    inputs.close()
    evaluate = common.evaluator(model_fn, test)
    accuracy = {name: evaluate(p.get_model_weights(states[name]))['accuracy'] for name, p in processes.items()}
    bits = {name: _bits(p) for name, p in processes.items()}
    bits_ratio = bits['compression'][0] / bits['mean'][0]
    time_ratio = timer.seconds['compression'] / timer.seconds['mean']
    gap = abs(accuracy['compression'] - accuracy['mean']) * 100
    lines = [
        f'# 6. compression, fedavg_cnn on LEAF digits, {args.rounds} rounds x 10 writers, interleaved; uplink bits/client '
        f'mean {bits["mean"][0]:,} compression {bits["compression"][0]:,} ({bits["mean"][1]}); test accuracy '
        f'mean {accuracy["mean"]:.4f} compression {accuracy["compression"]:.4f}',
        common.figure('uplink bits compression / mean', bits_ratio, '<=0.29', bits_ratio <= 0.29 and gap <= 0.5,
                      f'accuracy gap {gap:.2f} points, goal <=0.5'),
        common.figure('round time compression / mean', time_ratio, '<=1.10', time_ratio <= 1.10),
    ]
    print('\n'.join(lines), flush=True)
    trainable = processes['mean'].get_model_weights(states['mean']).trainable
    seconds = aggregation_seconds(trainable)
    lines.append('   aggregator alone, 10 clients, ms per call: '
                 + ', '.join(f'{name} {1000 * value:.0f}' for name, value in seconds.items()))
    print(lines[-1], flush=True)
    return lines


if __name__ == '__main__':
    from fedlab.run import worker_processes

    # TFF's worker inherits stdout and outlives Python: stop it, or whoever reads our output waits forever.
    with worker_processes.worker_cleanup():
        main()

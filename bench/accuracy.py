"""Figure 2: time to accuracy of fedavg_cnn on the LEAF writers' digits, against centralized training."""

import argparse
import functools
import time

import numpy as np

from bench import common


def centralized_accuracy(train: dict, test: dict, *, epochs: int, lr: float, batch_size: int = 20) -> tuple[float, float]:
    """Test accuracy of the same model trained on all writers' data pooled (shuffled), and its seconds."""
    import tensorflow as tf

    from fedlab import models

    x = np.concatenate([v[0] for v in train.values()])
    y = np.concatenate([v[1] for v in train.values()])
    xt = np.concatenate([v[0] for v in test.values()])
    yt = np.concatenate([v[1] for v in test.values()])
    model = models.build_keras_model('fedavg_cnn', (28, 28, 1), 10)
    model.compile(tf.keras.optimizers.SGD(lr), tf.keras.losses.SparseCategoricalCrossentropy(), metrics=['accuracy'])
    start = time.perf_counter()
    best = 0.0
    for _ in range(epochs):
        model.fit(x, y, batch_size=batch_size, epochs=1, shuffle=True, verbose=0)
        best = max(best, model.evaluate(xt, yt, batch_size=200, verbose=0)[1])
    return best, time.perf_counter() - start


def main(argv=None) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--max-rounds', type=int, default=30 if common.QUICK else 150)
    parser.add_argument('--central-epochs', type=int, default=3 if common.QUICK else 10)
    parser.add_argument('--client-epochs', type=int, default=1)
    parser.add_argument('--lr', type=float, default=0.05)
    parser.add_argument('--eval-every', type=int, default=5)
    args = parser.parse_args(argv)

    from fedlab import aggregators, client_data, models, sampling, training

    data, train, test = common.leaf_federation()
    central, central_seconds = centralized_accuracy(train, test, epochs=args.central_epochs, lr=args.lr)
    target = 0.97 * central
    print(f'   centralized fedavg_cnn: test accuracy {central:.4f} after {args.central_epochs} epochs '
          f'({central_seconds / 60:.1f} min); target 0.97 x = {target:.4f}', flush=True)

    model_fn = models.keras_model_fn((28, 28, 1), 10, architecture='fedavg_cnn')
    process = training.build_fed_avg(
        model_fn, training.FedAvgConfig(client_lr=args.lr), model_aggregator=aggregators.mean(), client_inputs='shards'
    )
    pipeline = functools.partial(client_data.train_pipeline, config=client_data.PipelineConfig(epochs=args.client_epochs))
    inputs = client_data.ClientShards(data.train, pipeline)
    sampler = sampling.uniform(data.client_ids, 10, seed=0)
    evaluate = common.evaluator(model_fn, test)
    start = time.perf_counter()
    state = process.initialize()
    reached, accuracy, round_num = None, 0.0, 0
    for round_num in range(1, args.max_rounds + 1):
        state = process.next(state, inputs(sampler(round_num))).state
        if round_num % args.eval_every == 0:
            accuracy = evaluate(process.get_model_weights(state))['accuracy']
            print(f'   round {round_num}: federated eval accuracy {accuracy:.4f} '
                  f'({(time.perf_counter() - start) / 60:.1f} min)', flush=True)
            if accuracy >= target:
                reached = round_num
                break
    minutes = (time.perf_counter() - start) / 60
    inputs.close()
    ratio = accuracy / central
    lines = [
        f'# 2. time to accuracy: fedavg_cnn, {len(data.client_ids)} LEAF writers (digits), 10 per round, '
        f'{args.client_epochs} local epoch(s), lr {args.lr}; centralized {central:.4f}; federated {accuracy:.4f} '
        + (f'reached at round {reached} in {minutes:.1f} min' if reached else f'not reached in {round_num} rounds '
           f'({minutes:.1f} min)'),
        common.figure('federated / centralized accuracy', ratio, '>=0.97', ratio >= 0.97,
                      f'rounds {round_num}, {minutes:.1f} min on 2 shared cores'),
    ]
    print('\n'.join(lines), flush=True)
    return lines


if __name__ == '__main__':
    from fedlab import workers

    # TFF's worker inherits stdout and outlives Python: stop it, or whoever reads our output waits forever.
    with workers.worker_cleanup():
        main()

"""Figure 1: simulation efficiency η = FedAvg examples/s ÷ the physical limit (in-graph centralized loop)."""

import argparse
import functools

import numpy as np

from bench import common

GOALS = {'fedavg_cnn': 0.90, 'simple_cnn': 0.70, 'linear': 0.25}


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
    update for its shard path, weighted mean, server applies it. Its time is what TFF's runtime costs
    whatever the clients do, so physical-limit time / its time bounds the η any TFF process can reach."""
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


def measure(architecture: str, clients: dict, *, rounds: int, batch_size: int = 20) -> dict[str, float]:
    """Examples/s of each method, measured interleaved round by round (round 1 and warm-ups excluded)."""
    import tensorflow as tf
    import tensorflow_federated as tff

    from fedlab import aggregators, client_data, models, tensor_client_work, training
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
    config = training.FedAvgConfig()
    stock = training.build_fed_avg(model_fn, config, model_aggregator=aggregators.mean())
    iterator = tff.learning.algorithms.build_weighted_fed_avg(
        model_fn,
        client_optimizer_fn=tff.learning.optimizers.build_sgdm(learning_rate=config.client_lr),
        server_optimizer_fn=tff.learning.optimizers.build_sgdm(learning_rate=config.server_lr),
        loop_implementation=tff.learning.LoopImplementation.DATASET_ITERATOR,
    )
    fast = training.build_fed_avg(
        model_fn, config, model_aggregator=aggregators.mean(), client_inputs='tensors', batch_size=batch_size
    )
    sharded = training.build_fed_avg(
        model_fn, config, model_aggregator=aggregators.mean(), client_inputs='shards', batch_size=batch_size
    )
    shards = client_data.ClientShards(data, pipeline)
    empty_weights, empty_round = _empty_round(model_fn)  # before the Keras models below: it builds in a graph
    central_model = models.build_keras_model(architecture, (28, 28, 1), 10)
    central = _central_loop(central_model, batch_size, config.client_lr)
    fit_model = models.build_keras_model(architecture, (28, 28, 1), 10)
    fit_model.compile(tf.keras.optimizers.SGD(config.client_lr), tf.keras.losses.SparseCategoricalCrossentropy())
    x_t, y_t = tf.constant(x), tf.constant(y)

    processes = {
        'stock': (stock, datasets),
        'iterator': (iterator, datasets),
        'tensors': (fast, tensors),
        'shards': (sharded, shards(ids)),
    }
    states = {name: process.initialize() for name, (process, _) in processes.items()}
    steps = {
        **{
            name: (lambda name=name: states.__setitem__(name, processes[name][0].next(states[name], processes[name][1]).state))
            for name in processes
        },
        'empty': lambda: empty_round(empty_weights, processes['shards'][1]),
        'central': lambda: central(x_t, y_t).numpy(),
        'fit': lambda: fit_model.fit(x, y, batch_size=batch_size, epochs=1, shuffle=False, verbose=0),
    }
    for step in steps.values():  # round 1 / tracing: excluded
        step()
    timer = common.Timer()
    for _ in range(rounds):
        for name, step in steps.items():
            timer.time(name, step)
    shards.close()
    return {name: n * timer.count[name] / timer.seconds[name] for name in steps}


def main(argv=None) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--models', default='fedavg_cnn,simple_cnn,linear')
    parser.add_argument('--rounds', type=int, default=3 if common.QUICK else 8)
    args = parser.parse_args(argv)
    if common.LEAF.exists():
        _, writers, _ = common.leaf_federation(max_writers=14)
        clients = {u: writers[u] for u in sorted(writers) if len(writers[u][1]) >= 50}
        clients = {u: clients[u] for u in sorted(clients)[:10]}
        source = 'LEAF digits'
    else:
        clients, source = common.synthetic_clients(10, 100), 'synthetic'
    examples = sum(len(v[1]) for v in clients.values())
    lines = [f'# 1. simulation efficiency: 10 clients x {examples // 10} {source} examples, batch 20, 1 epoch, '
             f'{args.rounds} interleaved rounds after round 1']
    for architecture in args.models.split(','):
        rates = measure(architecture, clients, rounds=args.rounds)
        lines.append(
            f'   {architecture}: examples/s central loop {rates["central"]:.0f}, keras fit {rates["fit"]:.0f}, '
            f'TFF stock {rates["stock"]:.0f}, TFF DATASET_ITERATOR {rates["iterator"]:.0f}, '
            f'fedlab tensors {rates["tensors"]:.0f}, fedlab shards {rates["shards"]:.0f}; '
            f'ms per round: central loop {1000 * examples / rates["central"]:.0f}, empty TFF round {1000 * examples / rates["empty"]:.0f}'
        )
        for label, name in [
            ('TFF stock', 'stock'),
            ('TFF iterator', 'iterator'),
            ('fedlab tensors', 'tensors'),
            ('ceiling: empty TFF round', 'empty'),
        ]:
            lines.append(common.figure(f'eta {architecture} {label}', rates[name] / rates['central'], '(ref)', None))
        eta = rates['shards'] / rates['central']
        goal = GOALS[architecture]
        lines.append(common.figure(f'eta {architecture} fedlab client_inputs=shards', eta, f'>={goal}', eta >= goal,
                                   f'vs keras fit {rates["shards"] / rates["fit"]:.2f}'))
        print('\n'.join(lines[-6:]), flush=True)
    return lines


if __name__ == '__main__':
    from fedlab import workers

    # TFF's worker inherits stdout and outlives Python: stop it, or whoever reads our output waits forever.
    with workers.worker_cleanup():
        main()

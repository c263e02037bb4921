"""TFF computations that evaluate model weights on each client of a group and return every client's metrics with
their sum: `ClientMetrics`, on shard files (read inside TFF's worker) or on `tf.data.Dataset`s (the loop of TFF's own
`build_fed_eval`); and the sums' arithmetic in Python."""

import collections

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from fedlab.algorithms.templates import local_training
from fedlab.models import ModelFn, model_to_load


class ClientMetrics:
    """TFF computations that evaluate model weights on each client of a group: `each(weights, inputs)` -> (the
    clients' unfinalized metrics summed at SERVER, each client's `{sums, metrics}` at CLIENTS, a list), where the
    inputs are shard paths (`inputs='shards'`, the evaluation pipeline's shard files, read inside TFF's worker) or
    `tf.data.Dataset`s of batches (`inputs='dataset'`, the loop of TFF's own `build_fed_eval`). `finalize(sums)`
    turns summed unfinalized metrics into metrics. Summed and finalized, the group's metrics are what
    `tff.learning.algorithms.build_fed_eval` reports for the group; a client's own are its report alone."""

    def __init__(self, model_fn: ModelFn, *, batch_size: int, inputs: str = 'shards'):
        with tf.Graph().as_default():
            model = model_fn()
            input_spec = model.input_spec
            weights_type = tff.learning.models.weights_type_from_model(model)
            finalizers = model.metric_finalizers()
        self._finalizers = finalizers

        def finalized(sums):
            return collections.OrderedDict((name, finalizer(sums[name])) for name, finalizer in finalizers.items())

        if inputs == 'shards':
            client = _shard_client(model_fn, weights_type, input_spec, batch_size, finalized)
            client_type = np.str_
        else:
            batch_type = tff.types.tensorflow_to_type(input_spec)
            client = _dataset_client(model_fn, weights_type, batch_type, finalized)
            client_type = tff.SequenceType(batch_type)

        @tff.federated_computation(tff.FederatedType(weights_type, tff.SERVER),
                                   tff.FederatedType(client_type, tff.CLIENTS))
        def each(weights, client_inputs):
            outputs = tff.federated_map(client, (tff.federated_broadcast(weights), client_inputs))
            return tff.federated_sum(outputs.sums), outputs

        sums_type = client.type_signature.result.sums

        @tff.tensorflow.computation(sums_type)
        def finalize(sums):
            return finalized(sums)

        self.each, self.finalize = each, finalize

    def evaluate(self, model_weights, client_inputs: list) -> tuple[object, list[dict]]:
        """(the clients' unfinalized metrics summed, each client's `{sums, metrics}`), in the order of the inputs."""
        total, clients = self.each(model_weights, client_inputs)
        return total, list(clients)


def _shard_client(model_fn, weights_type, input_spec, batch_size, finalized):
    from fedlab.fast_paths import shards

    @tff.tensorflow.computation(weights_type, np.str_)
    def client_evaluation(weights, shard_path):
        model = model_to_load(model_fn)

        def evaluate_batch(batch, carry, forward):
            del forward  # the model's own forward pass, as build_fed_eval's: it updates the model's metrics itself
            model.forward_pass(batch, training=False)
            return carry

        @tf.function(autograph=False)
        def evaluate():
            local_training.load_weights(model, weights)
            local_training.run_batches(shards.read_shard(shard_path, input_spec), batch_size, evaluate_batch)
            return model.report_local_unfinalized_metrics()

        sums = evaluate()
        return collections.OrderedDict(sums=sums, metrics=finalized(sums))

    return client_evaluation


def _dataset_client(model_fn, weights_type, batch_type, finalized):
    @tff.tensorflow.computation(weights_type, tff.SequenceType(batch_type))
    def client_evaluation(weights, dataset):
        model = model_to_load(model_fn)

        @tf.function
        def evaluate(dataset):
            # build_fed_eval's client loop (tff.learning's dataset reduce), its example count included
            local_training.load_weights(model, weights)

            def reduce_fn(num_examples, batch):
                output = model.forward_pass(batch, training=False)
                if output.num_examples is None:
                    return num_examples + tf.shape(output.predictions, out_type=tf.int64)[0]
                return num_examples + tf.cast(output.num_examples, tf.int64)

            dataset.reduce(tf.zeros([], dtype=tf.int64), reduce_fn)
            return model.report_local_unfinalized_metrics()

        sums = evaluate(dataset)
        return collections.OrderedDict(sums=sums, metrics=finalized(sums))

    return client_evaluation


def add_sums(a, b):
    return tf.nest.map_structure(lambda x, y: np.asarray(x) + np.asarray(y), a, b)


def sum_in_order(sums: list):
    """Clients' unfinalized metrics added one after the other in their dtypes (float32 stays float32): what
    `tff.federated_sum` computes for these clients in this order."""
    total = None
    for client_sums in sums:
        total = client_sums if total is None else add_sums(total, client_sums)
    return total

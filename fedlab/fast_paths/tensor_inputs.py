"""The data side of fedlab's fast client paths: each client's batch stream as tensors, or read from a shard
file, instead of a tf.data.Dataset. The algorithms' client work on these inputs lives in
`fedlab.algorithms.templates.client_work`, the loop over their batches in `fedlab.algorithms.templates.local_training`.

Profiled: a TFF client call that receives a `tf.data.Dataset` spends most of its time in the worker
serialising and rebuilding the dataset graph (about 30 ms per client vs about 1 ms for tensors), which
dominates small models. Here each client's pipeline is run once in Python (`materialize`), its batch stream
kept as arrays, and the client loops over batches in-graph. Tensors still cross gRPC into TFF's worker
every round (~340 KB per 100 digits); a shard (`write_shard`) is written once and read by the client's
computation inside the worker, so only its path crosses. Same batches in the same order as TFF's dataset path.
"""

import collections
from typing import NamedTuple

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from fedlab.models import ModelFn


def materialize(dataset: tf.data.Dataset) -> collections.OrderedDict:
    """A client's batch stream `{x, y}` concatenated into arrays: exactly the examples, in the order,
    that TFF's dataset path sees in one round (a seeded shuffle gives the same order every round)."""
    xs, ys = [], []
    for batch in dataset.as_numpy_iterator():
        xs.append(batch['x'])
        ys.append(batch['y'])
    if not ys:  # a client without examples: empty arrays of the stream's shapes (it trains on 0 batches)
        spec = dataset.element_spec
        return collections.OrderedDict(
            (key, np.zeros([0, *spec[key].shape[1:]], spec[key].dtype.as_numpy_dtype)) for key in ('x', 'y')
        )
    return collections.OrderedDict(x=np.concatenate(xs), y=np.concatenate(ys))


def write_shard(stem: str, stream: collections.OrderedDict) -> str:
    """Writes a client's batch stream as a shard (`fedlab.fast_paths.shards`: here with the identity order) at `stem`;
    returns `stem`, which `read_shard` reads back inside the client's computation."""
    from fedlab.fast_paths import shards

    for suffix, content in shards.serialize(stream, np.arange(len(stream['y']))).items():
        with open(f'{stem}.{suffix}', 'wb') as f:
            f.write(content)
    return str(stem)


def read_shard(stem: tf.Tensor, input_spec) -> collections.OrderedDict:
    """In-graph: the batch stream of a shard (`fedlab.fast_paths.shards.read_shard`), with the model's `input_spec`."""
    from fedlab.fast_paths import shards

    return shards.read_shard(stem, input_spec)


def stream_of(dataset: tf.data.Dataset, input_spec) -> collections.OrderedDict:
    """In-graph: a dataset of batches as one `{x, y}` batch stream (`materialize`'s, inside the computation); cut
    again in batches of the same size, it gives the same batches. A dataset without examples gives empty tensors."""
    empty = tf.data.Dataset.from_tensors(collections.OrderedDict(
        (key, tf.zeros([0, *spec.shape[1:]], spec.dtype)) for key, spec in input_spec.items()
    ))  # fmt: skip
    every = dataset.unbatch().batch(np.iinfo(np.int32).max)
    return every.concatenate(empty).take(1).get_single_element()


class ClientInputs(NamedTuple):
    """How each client's batch stream reaches its computation inside TFF's worker, and in what batches it trains:
    `{x: [n, ...], y: [n]}` tensors (see `materialize`), or the path of the stream's shard (see `write_shard`).
    `packed`: each TFF client is a group of clients (fedlab.fast_paths.client_packing). `from_datasets`: the
    client_inputs=dataset path of algorithms TFF has no builder for (SCAFFOLD, FedDyn, FedNova): clients receive
    TFF's `tf.data.Dataset` of batches, read into tensors inside their computation (`stream_of`)."""

    batch_size: int
    from_shards: bool = False
    packed: bool = False
    from_datasets: bool = False

    def data_type(self, input_spec) -> tff.types.Type:
        if self.packed:
            from fedlab.fast_paths import client_packing

            return client_packing.group_type(input_spec, from_shards=self.from_shards)
        if self.from_datasets:
            return tff.SequenceType(tff.types.tensorflow_to_type(input_spec))
        return tff.TensorType(np.str_) if self.from_shards else tff.types.tensorflow_to_type(input_spec)

    def read(self, data, input_spec) -> collections.OrderedDict:
        """The client's batch stream as tensors, inside its computation."""
        if self.from_datasets:
            return stream_of(data, input_spec)
        if self.from_shards:
            return read_shard(data, input_spec)
        if not isinstance(data, dict):  # a tff Struct: what a struct nested in a parameter arrives as
            return collections.OrderedDict((key, getattr(data, key)) for key in input_spec)
        return data

    def for_each_client(self, update_one, data, input_spec):
        """`update_one(batch stream) -> (ClientResult, metrics)` of the TFF client's data: of the one client, or
        summed over a packed group's clients."""
        if not self.packed:
            return update_one(self.read(data, input_spec))
        from fedlab.fast_paths import client_packing

        return client_packing.for_each_client(
            update_one, data, lambda path: read_shard(path, input_spec), from_shards=self.from_shards
        )


class ModelTypes(NamedTuple):
    metrics_aggregation_fn: object  # tff.learning.metrics.sum_then_finalize of the model's finalizers
    input_spec: object
    weights_type: tff.types.Type


def model_types(model_fn: ModelFn) -> ModelTypes:
    """What the federated computations need to know of the model, read from one built outside the global
    graph."""
    with tf.Graph().as_default():
        model = model_fn()
        return ModelTypes(
            tff.learning.metrics.sum_then_finalize(model.metric_finalizers()),
            model.input_spec,
            tff.learning.models.weights_type_from_model(model),
        )


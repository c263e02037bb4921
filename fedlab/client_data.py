"""Client-side input pipelines: raw (pixels, label) elements into shuffled, batched (x, y) batches."""

import collections
import dataclasses
import pathlib
import tempfile

import tensorflow as tf
import tensorflow_federated as tff

from fedlab import seeds
from fedlab.data.federated_data import LABEL, PIXELS


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """How each client iterates its local data in one round (the tutorial's preprocess)."""

    epochs: int = 5
    batch_size: int = 20
    shuffle_buffer: int = 100
    seed: int = 0
    # How each client's batches reach its computation in TFF's worker; the same batches every way.
    # 'dataset': a tf.data.Dataset (TFF as it comes); 'tensors': the batch stream as arrays (ClientTensors),
    # several times faster; 'shards': the path of a file holding them (ClientShards), fastest.
    client_inputs: str = 'dataset'


def _to_batch_structure(element):
    return collections.OrderedDict(x=element[PIXELS], y=element[LABEL])


def train_pipeline(dataset: tf.data.Dataset, config: PipelineConfig) -> tf.data.Dataset:
    """Repeat for the local epochs, shuffle with a fixed seed, batch (the tutorial's order of operations)."""
    return (
        dataset.repeat(config.epochs)
        .shuffle(config.shuffle_buffer, seed=seeds.derive(config.seed, 'shuffle'))
        .batch(config.batch_size)
        .map(_to_batch_structure)
    )


def eval_pipeline(dataset: tf.data.Dataset, batch_size: int) -> tf.data.Dataset:
    """One deterministic pass over the data."""
    return dataset.batch(batch_size).map(_to_batch_structure)


class ClientDatasets:
    """Builds each client's pipeline once and hands out the datasets of the clients asked for."""

    def __init__(self, client_data: tff.simulation.datasets.ClientData, pipeline):
        self._client_data = client_data
        self._pipeline = pipeline
        self._cache: dict[str, tf.data.Dataset] = {}

    def __call__(self, client_ids: list[str]) -> list[tf.data.Dataset]:
        for client_id in client_ids:
            if client_id not in self._cache:
                raw = self._client_data.create_tf_dataset_for_client(client_id)
                self._cache[client_id] = self._pipeline(raw)
        return [self._cache[client_id] for client_id in client_ids]


class ClientTensors:
    """Like `ClientDatasets`, but hands out each client's batch stream as arrays {x, y} (for
    `build_fed_avg(client_inputs='tensors')`); the most recently used streams are kept up to `max_bytes`."""

    def __init__(self, client_data: tff.simulation.datasets.ClientData, pipeline, *, max_bytes: int = 1 << 30):
        self._datasets = ClientDatasets(client_data, pipeline)
        self._cache: collections.OrderedDict[str, dict] = collections.OrderedDict()
        self._max_bytes = max_bytes

    def __call__(self, client_ids: list[str]) -> list[dict]:
        from fedlab import tensor_client_work

        for client_id in client_ids:
            if client_id in self._cache:
                self._cache.move_to_end(client_id)
            else:
                self._cache[client_id] = tensor_client_work.materialize(self._datasets([client_id])[0])
        streams = [self._cache[client_id] for client_id in client_ids]
        while len(self._cache) > len(client_ids) and self._nbytes() > self._max_bytes:
            self._cache.popitem(last=False)
        return streams

    def _nbytes(self) -> int:
        return sum(a.nbytes for stream in self._cache.values() for a in stream.values())


class ClientShards:
    """Like `ClientTensors`, but writes each client's batch stream once to a shard file in a private
    temporary directory and hands out its path (for `build_fed_avg(client_inputs='shards')`): the client's
    computation reads the file inside TFF's worker, so the pixels no longer cross gRPC every round.
    The directory is deleted by `close()` (or leaving the `with` block)."""

    def __init__(self, client_data: tff.simulation.datasets.ClientData, pipeline):
        self._tensors = ClientTensors(client_data, pipeline, max_bytes=0)
        self._directory = tempfile.TemporaryDirectory(prefix='fedlab-shards-')
        self._paths: dict[str, str] = {}

    def __call__(self, client_ids: list[str]) -> list[str]:
        from fedlab import tensor_client_work

        for client_id in client_ids:
            if client_id not in self._paths:
                stem = pathlib.Path(self._directory.name) / f'client_{len(self._paths):06d}'
                self._paths[client_id] = tensor_client_work.write_shard(stem, self._tensors([client_id])[0])
        return [self._paths[client_id] for client_id in client_ids]

    def close(self) -> None:
        self._directory.cleanup()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


CLIENT_INPUTS = {'dataset': ClientDatasets, 'tensors': ClientTensors, 'shards': ClientShards}

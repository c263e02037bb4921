"""The interface every data source returns, and the helper that builds it from per-client arrays."""

import collections
import dataclasses
from collections.abc import Mapping

import numpy as np
import tensorflow_federated as tff

from fedlab.data.arrays import ArrayClients

# Every source yields elements of this structure, so models and training never depend on the source.
PIXELS = 'pixels'  # float32 [height, width, channels]
LABEL = 'label'  # int32 []


@dataclasses.dataclass(frozen=True)
class FederatedData:
    """A federated population: each client's training and held-out data, plus what models need to know."""

    name: str
    train: tff.simulation.datasets.ClientData
    test: tff.simulation.datasets.ClientData
    image_shape: tuple[int, int, int]
    num_classes: int
    # {'train': {client_id: n}, 'test': {...}} when the source knows them without reading every example
    # (EMNIST's database index): counting 3,383 SQL-backed clients one dataset at a time takes many minutes.
    known_counts: Mapping[str, Mapping[str, int]] | None = dataclasses.field(default=None, compare=False, repr=False)

    @property
    def client_ids(self) -> list[str]:
        return list(self.train.client_ids)

    def summary(self) -> str:
        known = self.known_counts or {}
        train_sizes = known.get('train') or known_counts(self.train) or examples_per_client(self.train)
        test_sizes = known.get('test') or known_counts(self.test) or examples_per_client(self.test)
        sizes = np.array(list(train_sizes.values()))
        return (
                f'{self.name}: {len(sizes)} clients, image {self.image_shape}, {self.num_classes} classes, '
                f'{sizes.sum()} train / {sum(test_sizes.values())} test examples, '
                f'train examples per client min {sizes.min()} median {int(np.median(sizes))} max {sizes.max()}'
        )


ClientArrays = Mapping[str, tuple[np.ndarray, np.ndarray]]


class ArrayClientData(tff.simulation.datasets.ClientData):
    """A `ClientData` over `arrays.ArrayClients` (every client's examples back to back in one array): a client's
    dataset is built from its slice when asked for, nothing is kept per client, counts are known at once."""

    def __init__(self, clients: ArrayClients):
        import tensorflow as tf

        self.clients = clients
        self._element_spec = collections.OrderedDict([
                (PIXELS, tf.TensorSpec(clients.image_shape, tf.float32)),
                (LABEL, tf.TensorSpec([], tf.int32)),
        ])

    @property
    def client_ids(self) -> list[str]:
        return list(self.clients.client_ids)

    def create_tf_dataset_for_client(self, client_id: str):
        import tensorflow as tf

        if client_id not in self.clients:
            raise ValueError(f'ID [{client_id}] is not a client in this ClientData.')
        pixels, labels = self.clients.arrays(client_id)
        return tf.data.Dataset.from_tensor_slices(collections.OrderedDict([(PIXELS, pixels), (LABEL, labels)]))

    @property
    def serializable_dataset_fn(self):
        """Traceable, as TFF asks, through a py_function: the arrays stay in this process, out of any graph."""
        import tensorflow as tf

        image_shape = self.clients.image_shape

        def read(client_id):
            return self.clients.arrays(client_id.numpy().decode())

        def dataset_fn(client_id):
            pixels, labels = tf.py_function(read, [client_id], [tf.float32, tf.int32])
            pixels.set_shape([None, *image_shape])
            labels.set_shape([None])
            return tf.data.Dataset.from_tensor_slices(collections.OrderedDict([(PIXELS, pixels), (LABEL, labels)]))

        return dataset_fn

    @property
    def element_type_structure(self):
        return self._element_spec

    def counts(self) -> dict[str, int]:
        """{client_id: number of examples}, without reading any."""
        return dict(zip(self.clients.client_ids, self.clients.counts.tolist()))

    def arrays(self, client_id: str) -> tuple[np.ndarray, np.ndarray]:
        """The client's (pixels float32 [n, h, w, c], labels int32 [n]) as new arrays, in dataset order."""
        return self.clients.arrays(client_id)


def client_data_from_arrays(clients: ClientArrays | ArrayClients) -> ArrayClientData:
    """ClientData from {client_id: (pixels [n, h, w, c] float32, labels [n] int)} (or `ArrayClients`), in memory."""
    if not isinstance(clients, ArrayClients):
        clients = ArrayClients.from_dict(clients)
    return ArrayClientData(clients)


def known_counts(client_data) -> dict[str, int] | None:
    """{client_id: examples} when `client_data` knows them without reading (ArrayClientData), else None."""
    return client_data.counts() if isinstance(client_data, ArrayClientData) else None


def examples_per_client(client_data: tff.simulation.datasets.ClientData) -> dict[str, int]:
    """Counts each client's examples: the dataset's cardinality when it is known (in-memory data),
    else by iterating it, which works for every ClientData."""
    known = known_counts(client_data)
    if known is not None:
        return known
    counts = {}
    for client_id in client_data.client_ids:
        dataset = client_data.create_tf_dataset_for_client(client_id)
        cardinality = int(dataset.cardinality())
        counts[client_id] = cardinality if cardinality >= 0 else int(dataset.reduce(0, lambda n, _: n + 1))
    return counts


def from_centralized(
        name: str, pixels: np.ndarray, labels: np.ndarray, num_classes: int, num_clients: int, **partition_options
) -> FederatedData:
    """Splits a centralized labelled dataset into `num_clients` clients (`partition.federate_arrays` options)."""
    from fedlab.data.partition import federate_arrays

    train, test = federate_arrays(pixels, labels, num_clients, **partition_options)
    return FederatedData(
            name=name,
            train=client_data_from_arrays(train),
            test=client_data_from_arrays(test),
            image_shape=tuple(pixels.shape[1:]),
            num_classes=num_classes,
    )

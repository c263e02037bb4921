"""The interface every data source returns, and the helper that builds it from per-client arrays."""

import collections
import dataclasses
from collections.abc import Mapping

import numpy as np
import tensorflow_federated as tff

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
        train_sizes = known.get('train') or examples_per_client(self.train)
        test_sizes = known.get('test') or examples_per_client(self.test)
        sizes = np.array(list(train_sizes.values()))
        return (
                f'{self.name}: {len(sizes)} clients, image {self.image_shape}, {self.num_classes} classes, '
                f'{sizes.sum()} train / {sum(test_sizes.values())} test examples, '
                f'train examples per client min {sizes.min()} median {int(np.median(sizes))} max {sizes.max()}'
        )


ClientArrays = Mapping[str, tuple[np.ndarray, np.ndarray]]


def client_data_from_arrays(clients: ClientArrays) -> tff.simulation.datasets.ClientData:
    """ClientData from {client_id: (pixels [n, h, w, c] float32, labels [n] int)}, kept in memory."""
    tensors = {
            client_id: collections.OrderedDict([
                    (PIXELS, np.asarray(pixels, dtype=np.float32)),
                    (LABEL, np.asarray(labels, dtype=np.int32)),
            ])
            for client_id, (pixels, labels) in clients.items()
    }
    return tff.simulation.datasets.TestClientData(tensors)


def examples_per_client(client_data: tff.simulation.datasets.ClientData) -> dict[str, int]:
    """Counts each client's examples: the dataset's cardinality when it is known (in-memory data),
    else by iterating it, which works for every ClientData."""
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

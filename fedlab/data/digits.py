"""The embedded default: scikit-learn's real handwritten digits, split into non-IID clients."""

import numpy as np
from sklearn import datasets as sklearn_datasets

from fedlab.data import federated_data
from fedlab.data import partition


def load_digits(
        *, num_clients: int = 50, alpha: float = 0.5, test_fraction: float = 0.2, seed: int = 0
) -> federated_data.FederatedData:
    """1,797 real 8x8 digits (UCI, bundled with scikit-learn), Dirichlet label skew across clients.

    Pixels are scaled from 0..16 to [0, 1] (1 = ink). Each client keeps `test_fraction` of its own
    examples as held-out data for federated evaluation.
    """
    digits = sklearn_datasets.load_digits()
    pixels = (digits.images / 16.0).astype(np.float32)[..., np.newaxis]
    labels = digits.target.astype(np.int32)
    parts = partition.dirichlet_label_skew(labels, num_clients, alpha=alpha, seed=seed)
    split_rng = np.random.default_rng([seed, 1])
    train, test = {}, {}
    width = len(str(num_clients - 1))
    for client, indices in enumerate(parts):
        client_id = f'client_{client:0{width}d}'
        train_idx, test_idx = partition.split_train_test(indices, test_fraction=test_fraction, rng=split_rng)
        train[client_id] = (pixels[train_idx], labels[train_idx])
        test[client_id] = (pixels[test_idx], labels[test_idx])
    return federated_data.FederatedData(
            name='digits',
            train=federated_data.client_data_from_arrays(train),
            test=federated_data.client_data_from_arrays(test),
            image_shape=pixels.shape[1:],
            num_classes=10,
    )

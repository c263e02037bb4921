"""The embedded default: scikit-learn's real handwritten digits, split into non-IID clients."""

import numpy as np
from sklearn import datasets as sklearn_datasets

from fedlab.data import federated_data


def load_digits(
        *,
        num_clients: int = 50,
        partition: str = 'dirichlet',
        alpha: float = 0.5,
        shards_per_client: int = 2,
        test_fraction: float = 0.2,
        seed: int = 0,
        drop_nonfinite: bool = False,  # accepted for data.drop_nonfinite; scikit-learn's embedded digits are finite
) -> federated_data.FederatedData:
    """1,797 real 8x8 digits (UCI, bundled with scikit-learn), split by `partition` (iid, dirichlet, shards).

    Pixels are scaled from 0..16 to [0, 1] (1 = ink). Each client keeps `test_fraction` of its own
    examples as held-out data for federated evaluation.
    """
    digits = sklearn_datasets.load_digits()
    pixels = (digits.images / 16.0).astype(np.float32)[..., np.newaxis]
    labels = digits.target.astype(np.int32)
    return federated_data.from_centralized(
            'digits',
            pixels,
            labels,
            10,
            num_clients,
            scheme=partition,
            alpha=alpha,
            shards_per_client=shards_per_client,
            test_fraction=test_fraction,
            seed=seed,
    )

"""Partitioners that split a centralized labelled dataset into clients."""

import numpy as np


def dirichlet_label_skew(
        labels: np.ndarray, num_clients: int, *, alpha: float, seed: int, min_examples: int = 2
) -> list[np.ndarray]:
    """Splits example indices across clients with label proportions drawn from Dirichlet(alpha).

    For each class, its examples are divided among clients in proportions drawn from a symmetric
    Dirichlet; smaller alpha gives each client fewer dominant labels. Every example is used exactly once.
    Draws are repeated (with the same generator) until every client has at least `min_examples`.
    """
    if num_clients < 1:
        raise ValueError(f'num_clients must be >= 1, got {num_clients}')
    if alpha <= 0:
        raise ValueError(f'alpha must be > 0, got {alpha}')
    if len(labels) < num_clients * min_examples:
        raise ValueError(
                f'{len(labels)} examples cannot give {num_clients} clients {min_examples} examples each'
        )
    rng = np.random.default_rng(seed)
    for _ in range(1000):
        client_indices = [[] for _ in range(num_clients)]
        for label in np.unique(labels):
            indices = rng.permutation(np.flatnonzero(labels == label))
            proportions = rng.dirichlet(np.full(num_clients, alpha))
            cuts = (np.cumsum(proportions)[:-1] * len(indices)).astype(int)
            for client, part in enumerate(np.split(indices, cuts)):
                client_indices[client].extend(part.tolist())
        if min(len(c) for c in client_indices) >= min_examples:
            return [np.sort(np.array(c, dtype=np.int64)) for c in client_indices]
    raise ValueError(
            f'could not give every one of {num_clients} clients {min_examples} examples with alpha={alpha};'
            ' use fewer clients or a larger alpha'
    )


def split_train_test(
        indices: np.ndarray, *, test_fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Splits one client's indices into train and held-out test (at least one of each when possible)."""
    shuffled = rng.permutation(indices)
    num_test = int(round(len(shuffled) * test_fraction))
    if test_fraction > 0 and len(shuffled) >= 2:
        num_test = min(max(num_test, 1), len(shuffled) - 1)
    return np.sort(shuffled[num_test:]), np.sort(shuffled[:num_test])

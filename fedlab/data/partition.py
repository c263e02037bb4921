"""Partitioners that split a centralized labelled dataset into clients: iid, dirichlet label skew, shards."""

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


def iid(num_examples: int, num_clients: int, *, seed: int) -> list[np.ndarray]:
    """Shuffles the examples and deals them into `num_clients` near-equal parts (sizes differ by at most one)."""
    if num_clients < 1 or num_examples < num_clients:
        raise ValueError(f'{num_examples} examples cannot give {num_clients} clients one example each')
    shuffled = np.random.default_rng(seed).permutation(num_examples)
    return [np.sort(part) for part in np.array_split(shuffled, num_clients)]


def shards(labels: np.ndarray, num_clients: int, *, shards_per_client: int, seed: int) -> list[np.ndarray]:
    """McMahan et al. 2017's pathological non-IID split: sort by label, cut into shards, deal k shards per client.

    Shards are cut within each label (each label gets a share of the `num_clients * shards_per_client` shards
    proportional to its size), so every shard holds one label and every client at most `shards_per_client`
    labels. Every example is used exactly once.
    """
    num_shards = num_clients * shards_per_client
    classes, counts = np.unique(labels, return_counts=True)
    if num_clients < 1 or shards_per_client < 1:
        raise ValueError(f'need num_clients >= 1 and shards_per_client >= 1, got {num_clients} and {shards_per_client}')
    if num_shards < len(classes) or len(labels) < num_shards:
        raise ValueError(
                f'{num_clients} clients x {shards_per_client} shards = {num_shards} shards; need between the number of'
                f' labels ({len(classes)}) and the number of examples ({len(labels)})'
        )
    # Largest-remainder allocation of shards to labels, at least one shard per label.
    quota = counts / counts.sum() * (num_shards - len(classes))
    per_label = 1 + np.floor(quota).astype(int)
    for i in np.argsort(-(quota - np.floor(quota)))[:num_shards - per_label.sum()]:
        per_label[i] += 1
    rng = np.random.default_rng(seed)
    all_shards = []
    for label, count in zip(classes, per_label):
        indices = rng.permutation(np.flatnonzero(labels == label))
        all_shards.extend(np.array_split(indices, min(count, len(indices))))
    # A label with fewer examples than its quota gives fewer shards; split the largest shards to make up.
    while len(all_shards) < num_shards:
        largest = max(range(len(all_shards)), key=lambda i: len(all_shards[i]))
        all_shards.extend(np.array_split(all_shards.pop(largest), 2))
    order = rng.permutation(num_shards)
    return [
            np.sort(np.concatenate([all_shards[i] for i in order[c * shards_per_client:(c + 1) * shards_per_client]]))
            for c in range(num_clients)
    ]


PARTITIONS = ('iid', 'dirichlet', 'shards')


def partition_labels(
        labels: np.ndarray, num_clients: int, *, scheme: str, alpha: float, shards_per_client: int, seed: int
) -> list[np.ndarray]:
    """Each client's example indices under `scheme` (one of PARTITIONS); bad settings raise FedlabError."""
    from fedlab.errors import FedlabError

    try:
        if scheme == 'iid':
            return iid(len(labels), num_clients, seed=seed)
        if scheme == 'dirichlet':
            return dirichlet_label_skew(labels, num_clients, alpha=alpha, seed=seed)
        if scheme == 'shards':
            return shards(labels, num_clients, shards_per_client=shards_per_client, seed=seed)
    except ValueError as error:
        raise FedlabError(f'data.partition={scheme}: {error}') from None
    raise FedlabError(f'data.partition={scheme!r} is not a partition; allowed: {", ".join(PARTITIONS)}')


def federate_arrays(
        pixels: np.ndarray,
        labels: np.ndarray,
        num_clients: int,
        *,
        scheme: str,
        alpha: float,
        shards_per_client: int,
        test_fraction: float,
        seed: int,
) -> tuple[dict, dict]:
    """Splits a centralized dataset into clients, each holding out `test_fraction` of its own examples.

    Returns ({client_id: (pixels, labels)} for train, the same for test), ready for `client_data_from_arrays`.
    """
    parts = partition_labels(
            labels, num_clients, scheme=scheme, alpha=alpha, shards_per_client=shards_per_client, seed=seed
    )
    split_rng = np.random.default_rng([seed, 1])
    train, test = {}, {}
    width = len(str(num_clients - 1))
    for client, indices in enumerate(parts):
        client_id = f'client_{client:0{width}d}'
        train_idx, test_idx = split_train_test(indices, test_fraction=test_fraction, rng=split_rng)
        train[client_id] = (pixels[train_idx], labels[train_idx])
        test[client_id] = (pixels[test_idx], labels[test_idx])
    return train, test

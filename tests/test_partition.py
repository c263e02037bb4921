"""The Dirichlet partitioner keeps its promises, and the digits source splits real data into clients."""

import numpy as np
import pytest

from fedlab.data import partition


def _labels(n=2000, classes=10, seed=0):
    return np.random.default_rng(seed).integers(0, classes, size=n)


@pytest.mark.parametrize('alpha', [0.1, 1.0, 100.0])
def test_every_example_used_exactly_once(alpha):
    labels = _labels()
    parts = partition.dirichlet_label_skew(labels, 20, alpha=alpha, seed=3)
    joined = np.concatenate(parts)
    assert len(joined) == len(labels)
    assert np.array_equal(np.sort(joined), np.arange(len(labels)))
    assert min(len(p) for p in parts) >= 2


def _mean_dominant_label_share(labels, parts):
    return np.mean([np.bincount(labels[p], minlength=10).max() / len(p) for p in parts])


def test_smaller_alpha_gives_more_label_skew():
    labels = _labels()
    shares = {
        alpha: _mean_dominant_label_share(labels, partition.dirichlet_label_skew(labels, 20, alpha=alpha, seed=0))
        for alpha in (0.1, 1.0, 100.0)
    }
    # IID would give ~0.1-0.15; alpha=0.1 should make most clients dominated by one label.
    assert shares[0.1] > shares[1.0] > shares[100.0]
    assert shares[0.1] > 0.5 and shares[100.0] < 0.25


def test_seeded():
    labels = _labels()
    a = partition.dirichlet_label_skew(labels, 10, alpha=0.5, seed=1)
    b = partition.dirichlet_label_skew(labels, 10, alpha=0.5, seed=1)
    c = partition.dirichlet_label_skew(labels, 10, alpha=0.5, seed=2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_too_many_clients_is_an_error():
    with pytest.raises(ValueError, match='cannot give 600 clients'):
        partition.dirichlet_label_skew(_labels(1000), 600, alpha=0.5, seed=0)


def test_train_test_split_keeps_both_sides():
    rng = np.random.default_rng(0)
    train, test = partition.split_train_test(np.arange(10), test_fraction=0.2, rng=rng)
    assert len(train) == 8 and len(test) == 2 and set(train) | set(test) == set(range(10))
    train, test = partition.split_train_test(np.arange(2), test_fraction=0.01, rng=rng)
    assert len(train) == 1 and len(test) == 1


def test_digits_population():
    from fedlab.data import digits
    from fedlab.data.federated_data import examples_per_client

    data = digits.load_digits(num_clients=12, alpha=0.5, test_fraction=0.2, seed=0)
    assert data.image_shape == (8, 8, 1) and data.num_classes == 10
    assert len(data.client_ids) == 12 and list(data.test.client_ids) == data.client_ids
    train, test = examples_per_client(data.train), examples_per_client(data.test)
    assert sum(train.values()) + sum(test.values()) == 1797  # every real image, once
    assert all(n >= 1 for n in train.values())
    element = next(iter(data.train.create_tf_dataset_for_client(data.client_ids[0])))
    assert element['pixels'].shape == (8, 8, 1) and 0.0 <= float(element['pixels'].numpy().min())
    assert float(element['pixels'].numpy().max()) <= 1.0

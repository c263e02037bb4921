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


@pytest.mark.parametrize('scheme', ['iid', 'dirichlet', 'shards'])
def test_every_scheme_uses_every_example_exactly_once(scheme):
    labels = _labels()
    parts = partition.partition_labels(labels, 20, scheme=scheme, alpha=0.5, shards_per_client=2, seed=0)
    assert len(parts) == 20 and all(len(p) > 0 for p in parts)
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(len(labels)))


def test_iid_parts_are_balanced_and_unskewed():
    labels = _labels()
    parts = partition.iid(len(labels), 20, seed=0)
    assert {len(p) for p in parts} == {100}
    assert _mean_dominant_label_share(labels, parts) < 0.25


@pytest.mark.parametrize('k', [1, 2, 3])
def test_shard_clients_hold_at_most_k_labels(k):
    labels = np.sort(_labels())  # also with a sorted input, as in McMahan et al.
    parts = partition.shards(labels, 20, shards_per_client=k, seed=0)
    assert max(len(np.unique(labels[p])) for p in parts) <= k
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(len(labels)))
    sizes = [len(p) for p in parts]
    assert max(sizes) <= 1.5 * min(sizes)  # shards are near-equal, so clients are too


def test_partitions_are_seeded():
    labels = _labels()
    for scheme in partition.PARTITIONS:
        run = [partition.partition_labels(labels, 10, scheme=scheme, alpha=0.5, shards_per_client=2, seed=s)
               for s in (1, 1, 2)]
        assert all(np.array_equal(x, y) for x, y in zip(run[0], run[1]))
        assert not all(np.array_equal(x, y) for x, y in zip(run[0], run[2]))


def test_bad_partition_settings_are_one_line_errors():
    from fedlab.errors import FedlabError

    labels = _labels(100)
    with pytest.raises(FedlabError, match="data.partition='nope' is not a partition; allowed: iid, dirichlet"):
        partition.partition_labels(labels, 5, scheme='nope', alpha=0.5, shards_per_client=2, seed=0)
    with pytest.raises(FedlabError, match=r'data.partition=shards: 2 clients x 2 shards = 4 shards'):
        partition.partition_labels(labels, 2, scheme='shards', alpha=0.5, shards_per_client=2, seed=0)
    with pytest.raises(FedlabError, match='data.partition=iid: 100 examples cannot give 200 clients'):
        partition.partition_labels(labels, 200, scheme='iid', alpha=0.5, shards_per_client=2, seed=0)


@pytest.mark.parametrize('scheme', ['iid', 'shards'])
def test_digits_with_other_partitions(scheme):
    from fedlab.data import digits
    from fedlab.data.federated_data import examples_per_client

    data = digits.load_digits(num_clients=10, partition=scheme, shards_per_client=2, seed=0)
    train, test = examples_per_client(data.train), examples_per_client(data.test)
    assert len(train) == 10 and sum(train.values()) + sum(test.values()) == 1797
    if scheme == 'shards':
        for client_id in data.client_ids:
            labels = {int(e['label']) for e in data.train.create_tf_dataset_for_client(client_id)}
            assert len(labels) <= 2

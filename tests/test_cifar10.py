"""CIFAR-10 from Keras' cache format (python pickle batches), split by every partitioner; offline failures."""

import pickle
import time

import numpy as np
import pytest

from fedlab.data import cifar10
from fedlab.errors import FedlabError

PER_BATCH = 40  # the real batches hold 10,000 images each; the format is the same


def write_tiny_cache(keras_home, per_batch=PER_BATCH):
    """<keras_home>/datasets/cifar-10-batches-py as Keras unpacks it: pickled dicts with bytes keys."""
    directory = keras_home / 'datasets' / cifar10.DIRECTORY
    directory.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for index, name in enumerate(cifar10.BATCHES):
        labels = [(index * per_batch + i) % 10 for i in range(per_batch)]
        # Channel-major rows of 3 x 32 x 32 bytes; the red plane encodes the label, so it can be checked.
        data = rng.integers(0, 256, size=(per_batch, 3, 32, 32), dtype=np.uint8)
        data[:, 0] = np.array(labels, dtype=np.uint8)[:, None, None] * 20
        batch = {b'batch_label': name.encode(), b'labels': labels, b'data': data.reshape(per_batch, 3072),
                 b'filenames': [f'{i}.png'.encode() for i in range(per_batch)]}
        (directory / name).write_bytes(pickle.dumps(batch, protocol=2))
    return directory


@pytest.mark.parametrize('scheme', ['iid', 'dirichlet', 'shards'])
def test_tiny_cache_through_keras_reader(tmp_path, scheme):
    from fedlab.data.federated_data import examples_per_client

    write_tiny_cache(tmp_path)
    data = cifar10.load_cifar10(cache_dir=str(tmp_path), num_clients=8, partition=scheme, alpha=0.5,
                                shards_per_client=2, test_fraction=0.25, seed=0)
    assert data.image_shape == (32, 32, 3) and data.num_classes == 10 and len(data.client_ids) == 8
    train, test = examples_per_client(data.train), examples_per_client(data.test)
    assert sum(train.values()) + sum(test.values()) == 5 * PER_BATCH  # the training batches, each image once
    for client_id in data.client_ids:
        for element in data.train.create_tf_dataset_for_client(client_id).as_numpy_iterator():
            assert element['pixels'].shape == (32, 32, 3) and element['pixels'].max() <= 1.0
            # Channels-last after the transpose: the red plane still carries the label.
            assert element['pixels'][5, 7, 0] == pytest.approx(element['label'] * 20 / 255)
    if scheme == 'shards':
        for client_id in data.client_ids:
            labels = {int(e['label']) for c in (data.train, data.test) for e in c.create_tf_dataset_for_client(client_id)}
            assert len(labels) <= 2


def test_keras_home_is_the_default_cache(tmp_path, monkeypatch):
    write_tiny_cache(tmp_path)
    monkeypatch.setenv('KERAS_HOME', str(tmp_path))
    assert len(cifar10.load_cifar10(num_clients=4, partition='iid').client_ids) == 4


def test_incomplete_or_damaged_cache_is_one_line(tmp_path):
    directory = write_tiny_cache(tmp_path)
    (directory / 'data_batch_3').write_bytes(b'\x80\x02}q\x00')  # a pickle cut short
    with pytest.raises(FedlabError, match=r'data_batch_3: unreadable CIFAR-10 batch') as error:
        cifar10.load_cifar10(cache_dir=str(tmp_path), num_clients=4)
    assert '\n' not in str(error.value)
    (directory / 'test_batch').unlink()
    with pytest.raises(FedlabError, match=r'cifar-10-batches-py: incomplete, missing test_batch; delete it'):
        cifar10.load_cifar10(cache_dir=str(tmp_path), num_clients=4)


def test_no_cache_and_no_network_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(cifar10, 'ORIGIN', 'http://127.0.0.1:9/cifar-10-python.tar.gz')  # refused at once
    keras_home = tmp_path / 'keras'
    started = time.monotonic()
    with pytest.raises(FedlabError) as error:
        cifar10.load_cifar10(cache_dir=str(keras_home), download_timeout=5)
    assert time.monotonic() - started < 20
    message = str(error.value)
    assert '\n' not in message and message.startswith('cannot download CIFAR-10')
    assert f'in {keras_home / "datasets" / cifar10.DIRECTORY}' in message and 'data.cache_dir' in message
    assert list(tmp_path.iterdir()) == []


def test_cifar_cnn_learns_on_it_federated(tmp_path):
    from fedlab import cli
    from fedlab.record import tables
    from tests.conftest import compose_config

    write_tiny_cache(tmp_path / 'keras')  # the red plane carries the label: learnable
    cfg = compose_config(['data=cifar10', f'data.cache_dir={tmp_path / "keras"}', 'data.num_clients=4',
                          'data.partition=iid', 'model=cifar_cnn', 'clients_per_round=2', 'rounds=3', 'client_epochs=2',
                          'eval_every=1', 'client_lr=0.05'])  # fmt: skip
    outputs = cli.train(cfg, tmp_path / 'run')
    rows = tables.read_rows(tmp_path / 'run' / 'metrics.csv')
    assert outputs.rounds_completed == 3
    losses = [float(r['train_loss']) for r in rows]
    assert losses[-1] < losses[0], losses
    assert float(rows[-1]['eval_loss']) < float(rows[0]['eval_loss'])

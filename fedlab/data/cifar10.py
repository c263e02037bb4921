"""CIFAR-10 from Keras' download cache (the python pickle batches), split into clients by a partitioner."""

import os
import pathlib
import shutil
import socket

import numpy as np

from fedlab.data.cache import cache_lock
from fedlab.errors import FedlabError, one_line_text

# What tf.keras.datasets.cifar10.load_data fetches, and the directory it unpacks under <keras home>/datasets.
ORIGIN = 'https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz'
SHA256 = '6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce'
DIRECTORY = 'cifar-10-batches-py'
BATCHES = tuple(f'data_batch_{i}' for i in range(1, 6)) + ('test_batch',)
NUM_CLASSES = 10


def load_cifar10(
        *,
        cache_dir: str | None = None,
        num_clients: int = 100,
        partition: str = 'dirichlet',
        alpha: float = 0.5,
        shards_per_client: int = 2,
        test_fraction: float = 0.2,
        seed: int = 0,
        download_timeout: float = 10.0,
        drop_nonfinite: bool = False,  # accepted for data.drop_nonfinite; CIFAR-10's 8-bit pixels are always finite
):
    """CIFAR-10's 50,000 training images (32x32x3, scaled to [0, 1]) split into `num_clients` clients.

    Reads `<cache_dir>/datasets/cifar-10-batches-py` (cache_dir default: $KERAS_HOME or ~/.keras, Keras'
    cache), downloading it with Keras' `get_file` when absent. Each client holds out `test_fraction` of its
    examples for federated evaluation; the official test batch is not used, so eval data follows each
    client's own label mix.
    """
    keras_home = pathlib.Path(os.path.expanduser(cache_dir or os.environ.get('KERAS_HOME', '~/.keras')))
    batches = keras_home / 'datasets' / DIRECTORY
    with cache_lock(batches):  # a concurrent sweep job may be downloading the same files
        present = [name for name in BATCHES if (batches / name).is_file()]
        if present and len(present) < len(BATCHES):
            missing = ', '.join(sorted(set(BATCHES) - set(present)))
            raise FedlabError(f'{batches}: incomplete, missing {missing}; delete it. {_where_it_comes_from(batches)}')
        if not present:
            _download(keras_home, timeout=download_timeout)

    # Keras' own reader for the pickle batches. (load_data() itself assumes 50,000 images in ~/.keras.)
    from keras.src.datasets.cifar import load_batch

    pixels, labels = [], []
    for name in BATCHES[:-1]:
        try:
            data, batch_labels = load_batch(str(batches / name))
        except Exception as error:  # a damaged pickle can raise almost anything
            problem = f'{type(error).__name__}: {one_line_text(error)}'
            raise FedlabError(f'{batches / name}: unreadable CIFAR-10 batch ({problem})') from None
        pixels.append(data)
        batch_labels = np.asarray(batch_labels)
        if batch_labels.dtype.kind not in 'iu' and np.any(batch_labels != np.round(batch_labels)):
            raise FedlabError(f'{batches / name}: non-integer labels, expected integers 0-{NUM_CLASSES - 1}')
        labels.append(batch_labels)
    # Batches are [n, 3, 32, 32] uint8; fedlab's images are [h, w, c] floats.
    pixels = (np.concatenate(pixels).transpose(0, 2, 3, 1) / 255.0).astype(np.float32)
    labels = np.concatenate(labels).astype(np.int32)
    if labels.min() < 0 or labels.max() >= NUM_CLASSES:
        raise FedlabError(f'{batches}: labels outside 0-{NUM_CLASSES - 1}')

    from fedlab.data import federated_data

    return federated_data.from_centralized(
            'cifar10',
            pixels,
            labels,
            NUM_CLASSES,
            num_clients,
            scheme=partition,
            alpha=alpha,
            shards_per_client=shards_per_client,
            test_fraction=test_fraction,
            seed=seed,
    )


def _download(keras_home: pathlib.Path, *, timeout: float) -> None:
    """Keras' get_file with a socket timeout; on failure, removes whatever it created and raises FedlabError."""
    import tensorflow as tf

    datasets = keras_home / 'datasets'
    created = [p for p in [datasets, *datasets.parents] if not p.exists()]
    previous_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)  # urlretrieve has no timeout of its own
    try:
        tf.keras.utils.get_file(DIRECTORY, origin=ORIGIN, untar=True, file_hash=SHA256, cache_dir=str(keras_home))
    except Exception as error:  # get_file re-raises download errors as bare Exceptions
        # get_file deletes a partial archive, but not a partial extraction.
        shutil.rmtree(datasets / DIRECTORY, ignore_errors=True)
        where = _where_it_comes_from(datasets / DIRECTORY)
        raise FedlabError(f'cannot download CIFAR-10 ({one_line_text(error)}): {where}') from None
    finally:
        socket.setdefaulttimeout(previous_timeout)
        for directory in created:  # only directories this call made, and only if empty
            if directory.exists() and not any(directory.iterdir()):
                directory.rmdir()


def _where_it_comes_from(batches: pathlib.Path) -> str:
    return (
            f'expected the python batches ({", ".join(BATCHES)}) in {batches} (set data.cache_dir to the directory'
            f' holding datasets/{DIRECTORY}); get {ORIGIN} on a machine with internet and unpack it there'
            f' with `tar xzf`'
    )

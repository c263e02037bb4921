"""TFF's federated EMNIST (3,383 writers in the digits set), from TFF's SQLite file, checked before use."""

import lzma
import os
import pathlib
import shutil
import sqlite3
import tempfile
import urllib.request

from fedlab.data import selection
from fedlab.data.cache import cache_lock
from fedlab.errors import FedlabError, one_line_text

# What tff.simulation.datasets.emnist.load_data downloads and where it keeps it (see TFF's download.py).
ORIGIN = 'https://storage.googleapis.com/tff-datasets-public/emnist_all.sqlite.lzma'
FILE_NAME = 'emnist_all.sqlite'
DEFAULT_CACHE_DIR = '~/.tff'
SPLITS = {True: ('digits_only_train', 'digits_only_test'), False: ('all_train', 'all_test')}
SIDE = 28


def load_emnist(
        *,
        digits_only: bool = True,
        cache_dir: str | None = None,
        num_clients: int | None = None,
        download_timeout: float = 10.0,
        origin: str = ORIGIN,
        array_cache: str | None = None,
        drop_nonfinite: bool = False,
):
    """Federated EMNIST from TFF's database; returns `FederatedData`.

    The database is downloaded only when it is not in `cache_dir` (default ~/.tff, TFF's): into a temporary
    file that is checked and then renamed, so a failed or interrupted download never leaves a half-written
    database behind (TFF itself writes in place). `num_clients` keeps the first writers by id.

    Without `array_cache`, clients come from `tff.simulation.datasets.emnist.load_data` (each client's
    examples read from SQLite and parsed when its dataset is built: ~0.1 s a client). With it (fedlab's
    data cache directory), the split is parsed once into arrays, exactly the examples and order TFF's loader
    gives, and kept there (see `read_split_arrays`): every client is then a slice in memory.
    """
    cache = pathlib.Path(os.path.expanduser(cache_dir or DEFAULT_CACHE_DIR))
    database = cache / FILE_NAME
    train_split, test_split = SPLITS[bool(digits_only)]
    with cache_lock(database):  # a concurrent sweep job may be downloading the same file
        if not database.exists():
            _download(database, origin=origin, timeout=download_timeout)
        check_database(database, train_split)

    if array_cache is not None:
        return _from_arrays(database, (train_split, test_split), digits_only, num_clients, array_cache,
                            drop_nonfinite=drop_nonfinite)

    # Imported here: the checks above answer in a fraction of a second, TensorFlow Federated takes ~13 s.
    import tensorflow_federated as tff

    from fedlab.data import federated_data

    train, test = tff.simulation.datasets.emnist.load_data(only_digits=bool(digits_only), cache_dir=str(cache))
    counts = {'train': _client_counts(database, train_split), 'test': _client_counts(database, test_split)}
    if num_clients is not None:
        client_ids = selection.first_clients(train.client_ids, num_clients, source='emnist', what='writers')
        train = _only_clients(train, client_ids)
        test_ids = set(test.client_ids)
        test = _only_clients(test, [c for c in client_ids if c in test_ids])
    return federated_data.FederatedData(
            name='emnist' + ('_digits' if digits_only else ''),
            train=train.preprocess(_to_fedlab_elements),
            test=test.preprocess(_to_fedlab_elements),
            image_shape=(SIDE, SIDE, 1),
            num_classes=10 if digits_only else 62,
            known_counts={
                    'train': {c: counts['train'][c] for c in train.client_ids},
                    'test': {c: counts['test'][c] for c in test.client_ids},
            },
    )


def _from_arrays(database: pathlib.Path, splits: tuple[str, str], digits_only: bool, num_clients, array_cache: str,
                 *, drop_nonfinite: bool = False):
    import time

    from fedlab.data import cache, example_checks, federated_data
    from fedlab.data.arrays import ArrayClients

    started = time.perf_counter()
    stat = database.stat()
    key = {'reader': _ARRAY_READER, 'database': [stat.st_size, stat.st_mtime_ns], 'splits': list(splits)}
    store = cache.ArrayCache(array_cache, 'emnist', database, key, variant=splits[0])

    def build():
        arrays, meta = {}, {}
        for prefix, split in zip(('train_', 'test_'), splits):
            split_arrays, split_meta = read_split_arrays(database, split).to_arrays(prefix)
            arrays.update(split_arrays)
            meta.update(split_meta)
        return arrays, meta

    arrays, meta = store.load_or_build(build)
    train = ArrayClients.from_arrays('train_', arrays, meta)
    test = ArrayClients.from_arrays('test_', arrays, meta)
    how = 'read from the data cache' if store.status == 'hit' else f'parsed (data cache {store.status})'
    print(f'emnist: {len(train.client_ids)} writers {how} in {time.perf_counter() - started:.1f} s ({store.entry})')
    # Checked after the cache too (example_checks): NaN pixels in the database are refused, or dropped.
    train, test = (example_checks.checked(clients, num_classes=10 if digits_only else 62, split=split,
                                          source=lambda _: str(database), drop=drop_nonfinite)
                   for clients, split in ((train, splits[0]), (test, splits[1])))
    client_ids = example_checks.nonempty(train)
    client_ids = selection.first_clients(client_ids, num_clients, source='emnist', what='writers')
    test_ids = set(test.client_ids)
    return federated_data.FederatedData(
            name='emnist' + ('_digits' if digits_only else ''),
            train=federated_data.client_data_from_arrays(train.subset(client_ids)),
            test=federated_data.client_data_from_arrays(test.subset([c for c in client_ids if c in test_ids])),
            image_shape=(SIDE, SIDE, 1),
            num_classes=10 if digits_only else 62,
    )


_ARRAY_READER = 1  # the version of what read_split_arrays produces; part of the cache key


def read_split_arrays(database: pathlib.Path, split: str, *, batch: int = 8192):
    """A split of TFF's database as `arrays.ArrayClients`: the clients in the order TFF's `SqlClientData`
    lists them, each client's examples in the order its per-client query returns them (rowid order), parsed
    as TFF's `emnist._add_proto_parsing` parses them (pixels [28, 28, 1] float32, label int32)."""
    import numpy as np
    import tensorflow as tf

    from fedlab.data.arrays import ArrayClients, PixelCodes, leaf_table

    spec = {'pixels': tf.io.FixedLenFeature(shape=(SIDE, SIDE), dtype=tf.float32),
            'label': tf.io.FixedLenFeature(shape=(), dtype=tf.int64)}
    table = leaf_table()
    connection = sqlite3.connect(f'file:{database}?mode=ro', uri=True)
    try:
        client_ids = [row[0] for row in connection.execute(
                'SELECT DISTINCT client_id FROM client_metadata WHERE split_name = ?', (split,))]
        position = {client_id: i for i, client_id in enumerate(client_ids)}
        owners, parts, labels = [], [], []
        rows = connection.execute(
                'SELECT client_id, serialized_example_proto FROM examples WHERE split_name = ? ORDER BY rowid',
                (split,))
        while chunk := rows.fetchmany(batch):
            parsed = tf.io.parse_example([proto for _, proto in chunk], spec)
            owners.append(np.array([position.get(client_id, -1) for client_id, _ in chunk], np.int64))
            pixels = parsed['pixels'].numpy()
            # 8-bit codes while every value is one of LEAF's k/255 (a quarter of the memory), else float32.
            codes = PixelCodes.encode(pixels, table) if table is not None else None
            if codes is None and table is not None:
                parts, table = [table[p] for p in parts], None
            parts.append(codes.codes if codes is not None else pixels)
            labels.append(tf.cast(parsed['label'], tf.int32).numpy())
    finally:
        connection.close()
    owners = np.concatenate(owners) if owners else np.zeros(0, np.int64)
    dtype = np.uint8 if table is not None else np.float32
    pixels = np.concatenate(parts) if parts else np.zeros((0, SIDE, SIDE), dtype)
    labels = np.concatenate(labels) if labels else np.zeros(0, np.int32)
    del parts
    counts = np.bincount(owners[owners >= 0], minlength=len(client_ids))
    if len(owners) and not (np.all(owners >= 0) and np.all(np.diff(owners) >= 0)):
        # Not stored client by client in the clients' order: sort (stably, so each client keeps its order).
        keep = np.flatnonzero(owners >= 0)  # examples of clients without metadata are not in TFF's client list
        order = keep[np.argsort(owners[keep], kind='stable')]
        pixels, labels = pixels[order], labels[order]
    pixels = pixels[..., np.newaxis]
    return ArrayClients(client_ids, counts, PixelCodes(pixels, table) if table is not None else pixels, labels)


def check_database(database: pathlib.Path, split: str) -> None:
    """Raises FedlabError unless `database` is a complete SQLite file with TFF's tables and the split's clients."""
    size = database.stat().st_size
    with database.open('rb') as file:
        header = file.read(100)
    if len(header) < 100 or not header.startswith(b'SQLite format 3\x00'):
        raise FedlabError(f'{database}: not a SQLite database; {_where_it_comes_from(database)}')
    # The header records the page size and page count: a truncated download is shorter than they say.
    page_size = int.from_bytes(header[16:18], 'big') or 65536
    page_count = int.from_bytes(header[28:32], 'big')
    if page_count and size < page_size * page_count:
        raise FedlabError(
                f'{database}: incomplete ({size} of {page_size * page_count} bytes); delete it. '
                + _where_it_comes_from(database)
        )
    try:
        connection = sqlite3.connect(f'file:{database}?mode=ro', uri=True)
        try:
            tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if not {'examples', 'client_metadata'} <= tables:
                raise FedlabError(f'{database}: no examples and client_metadata tables, so not TFF\'s EMNIST file')
            (clients,) = connection.execute(
                    'SELECT COUNT(DISTINCT client_id) FROM client_metadata WHERE split_name = ?', (split,)
            ).fetchone()
        finally:
            connection.close()
    except sqlite3.DatabaseError as error:
        raise FedlabError(f'{database}: unreadable SQLite database ({error}); delete it. '
                          + _where_it_comes_from(database)) from None
    if not clients:
        raise FedlabError(f'{database}: no clients in split {split!r}')


def _client_counts(database: pathlib.Path, split: str) -> dict[str, int]:
    """Each client's example count, from the database's client_metadata table (no example is read)."""
    connection = sqlite3.connect(f'file:{database}?mode=ro', uri=True)
    try:
        rows = connection.execute(
                'SELECT client_id, SUM(num_examples) FROM client_metadata WHERE split_name = ? GROUP BY client_id',
                (split,),
        ).fetchall()
    finally:
        connection.close()
    return {client_id: int(n) for client_id, n in rows}


def _download(database: pathlib.Path, *, origin: str, timeout: float) -> None:
    """Downloads and decompresses `origin` into `database`; on failure, FedlabError and a clean cache."""
    created = [p for p in [database.parent, *database.parent.parents] if not p.exists()]
    temporary = None
    try:
        database.parent.mkdir(parents=True, exist_ok=True)
        decompressor = lzma.LZMADecompressor()
        with urllib.request.urlopen(origin, timeout=timeout) as response:
            with tempfile.NamedTemporaryFile('wb', dir=database.parent, prefix=f'.{FILE_NAME}.', delete=False) as out:
                temporary = pathlib.Path(out.name)
                print(f'downloading {origin} into {database.parent}')
                while chunk := response.read(1 << 20):
                    out.write(decompressor.decompress(chunk))
        if not decompressor.eof:
            raise OSError('the download ended early')
        os.replace(temporary, database)
    except (OSError, lzma.LZMAError) as error:  # URLError, timeouts and disk errors are OSErrors
        raise FedlabError(
                f'{database} is not in the cache and cannot be downloaded'
                + (f' from {origin}' if origin != ORIGIN else '') + f' ({one_line_text(error)}); '
                + _where_it_comes_from(database)
        ) from None
    finally:
        if temporary is not None and temporary.exists():
            temporary.unlink()
        for directory in created:  # innermost first; only directories this call made, and only if empty
            if directory.exists() and not any(directory.iterdir()):
                shutil.rmtree(directory)


def _where_it_comes_from(database: pathlib.Path) -> str:
    return (
            f'put {FILE_NAME} in {database.parent} (or set data.cache_dir to the directory that holds it); '
            f'it comes from {ORIGIN} (download it on a machine with internet, then `unxz -S .lzma` it)'
    )


def _only_clients(client_data, client_ids: list[str]):
    import tensorflow_federated as tff

    return tff.simulation.datasets.ClientData.from_clients_and_tf_fn(client_ids, client_data.serializable_dataset_fn)


def _to_fedlab_elements(dataset):
    """TFF's (label, pixels [28, 28]) into fedlab's (pixels [28, 28, 1], label)."""
    import collections

    import tensorflow as tf

    from fedlab.data.federated_data import LABEL, PIXELS

    return dataset.map(
            lambda element: collections.OrderedDict([
                    (PIXELS, tf.expand_dims(element['pixels'], -1)),
                    (LABEL, element['label']),
            ])
    )

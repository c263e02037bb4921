"""The user's own images: <root>/<client_id>/<label>/*.png, with an optional <root>/test/ mirror."""

import pathlib

import numpy as np

from fedlab.data import example_checks, selection
from fedlab.data.arrays import ArrayClients, PixelCodes, image_table, splits_to_arrays
from fedlab.errors import FedlabError

TEST_DIR = 'test'  # reserved: <root>/test/<client_id>/<label>/*.png is the held-out mirror, not a client


def load_folder(
        root: str, *, test_fraction: float = 0.2, num_classes: int | None = None, num_clients: int | None = None,
        seed: int = 0, array_cache: str | None = None, drop_nonfinite: bool = False,
):
    """One client per directory of `root`, one integer label per sub-directory, PNGs of one size inside.

    Grayscale images give 1 channel; if any image is colour, all are read as RGB (3 channels). Pixels are
    scaled to [0, 1] (0 = black). Held-out data comes from `root`/test/ when it exists, otherwise each client
    keeps `test_fraction` of its images. `num_classes` defaults to the largest label + 1. `array_cache`:
    fedlab's data cache directory, where the decoded images are kept for the next run (None: decode every time).
    """
    root_path = pathlib.Path(root)
    if not root_path.is_dir():
        raise FedlabError(f'{root_path}: no such directory (data.root must hold <client_id>/<label>/*.png)')
    train_files = _list_images(root_path, skip={TEST_DIR})
    if num_clients is not None:
        kept = selection.first_clients(sorted(train_files), num_clients, source='folder',
                                       what=f'client directories in {root_path}')
        train_files = {client_id: train_files[client_id] for client_id in kept}
    test_root = root_path / TEST_DIR
    test_files = _list_images(test_root, skip=set()) if test_root.is_dir() else {}
    for client_id in list(test_files):
        if client_id in train_files:
            continue
        if num_clients is None:
            raise FedlabError(f'{test_root / client_id}: no training directory {root_path / client_id} for this client')
        del test_files[client_id]  # a client left out by num_clients
    labels_seen = {label for clients in (train_files, test_files) for files in clients.values() for _, label in files}
    classes = num_classes if num_classes is not None else max(labels_seen) + 1
    train_labels = {label for files in train_files.values() for _, label in files}
    for client_id, files in test_files.items():
        for path, label in files:
            if label >= classes or label not in train_labels:
                raise FedlabError(f'{path.parent}: label {label} is not a label of the training images')
    for client_files in train_files.values():
        for path, label in client_files:
            if label >= classes:
                raise FedlabError(f'{path.parent}: label {label} is not below data.num_classes={classes}')

    listed = {'train': train_files, 'test': test_files}
    if array_cache is None:
        arrays = _decode(listed)
    else:
        from fedlab.data import cache

        all_paths = [path for clients in listed.values() for files in clients.values() for path, _ in files]
        labels = [[str(path.relative_to(root_path)), label] for path, label in _all_files(listed)]
        key = {'files': cache.fingerprint(all_paths, root_path), 'labels': cache.digest_of(labels)}
        store = cache.ArrayCache(array_cache, 'folder', root_path, key, variant=f'clients={num_clients}')
        stored, meta = store.load_or_build(lambda: splits_to_arrays(_decode(listed)))
        arrays = {split: ArrayClients.from_arrays(f'{split}_', stored, meta) for split in ('train', 'test')}

    # Checked after the cache too (example_checks); 8-bit PNG pixels are finite, labels are checked again.
    train, test = (example_checks.checked(arrays[split], num_classes=classes, split=split, drop=drop_nonfinite,
                                          source=lambda client, split=split: str(root_path / client))
                   for split in ('train', 'test'))
    if not test_files:
        rng = np.random.default_rng(seed)
        from fedlab.data.partition import split_train_test

        train_rows, test_rows = [], []
        for client_id, start, count in zip(train.client_ids, train.offsets, train.counts):
            train_idx, test_idx = split_train_test(np.arange(count), test_fraction=test_fraction, rng=rng)
            train_rows.append(start + train_idx)
            test_rows.append(start + test_idx)
        train, test = train.take(train_rows), train.take(test_rows)
    test = test.subset(train.client_ids)

    from fedlab.data import federated_data

    return federated_data.FederatedData(
            name=f'folder:{root_path.name}',
            train=federated_data.client_data_from_arrays(train),
            test=federated_data.client_data_from_arrays(test),
            image_shape=train.image_shape,
            num_classes=classes,
    )


def _all_files(listed):
    for clients in listed.values():
        for files in clients.values():
            yield from files


def _decode(listed: dict[str, dict[str, list]]) -> dict[str, ArrayClients]:
    """Every listed image as 8-bit codes of `image_table()` (a PNG's own values), checked for one size."""
    mode = 'L' if all(_mode(path) == 'L' for path, _ in _all_files(listed)) else 'RGB'
    shape = None
    arrays = {}
    for name, clients in listed.items():
        parts = []
        for client_id, files in clients.items():
            images = []
            for path, _ in files:
                image = _read(path, mode)
                if shape is None:
                    shape, first = image.shape, path
                elif image.shape != shape:
                    raise FedlabError(
                            f'{path}: image is {_size(image.shape)}, but {first} is {_size(shape)}; all images must'
                            ' have one size'
                    )
                images.append(image)
            parts.append((client_id, np.stack(images), np.array([label for _, label in files], dtype=np.int32)))
        arrays[name] = parts
    return {
        name: ArrayClients.concatenate(parts, shape, image_table()) if parts
        else ArrayClients([], [], PixelCodes(np.zeros((0, *shape), np.uint8), image_table()), np.zeros(0, np.int32))
        for name, parts in arrays.items()
    }



def _list_images(root: pathlib.Path, *, skip: set[str]) -> dict[str, list[tuple[pathlib.Path, int]]]:
    """{client_id: [(png path, label)]}, checking the directory layout."""
    clients = {}
    # Hidden directories (.git, .ipynb_checkpoints, ...) are not clients.
    client_dirs = [p for p in root.iterdir() if p.is_dir() and p.name not in skip and not p.name.startswith('.')]
    for client_dir in sorted(client_dirs):
        files = []
        for label_dir in sorted(p for p in client_dir.iterdir() if p.is_dir() and not p.name.startswith('.')):
            if not label_dir.name.isdigit():
                raise FedlabError(f'{label_dir}: label directories must be named by integers 0, 1, 2, ...')
            files.extend((path, int(label_dir.name)) for path in sorted(label_dir.glob('*.png')))
        if not files:
            raise FedlabError(f'{client_dir}: no <label>/*.png images in this client directory')
        clients[client_dir.name] = files
    if not clients:
        raise FedlabError(f'{root}: no client directories with <label>/*.png images')
    return clients


def _mode(path: pathlib.Path) -> str:
    from PIL import Image

    try:
        with Image.open(path) as image:
            return 'L' if image.mode in ('1', 'L', 'I;16', 'I') else 'RGB'
    except OSError as error:
        raise FedlabError(f'{path}: not a readable PNG ({error})') from None


def _read(path: pathlib.Path, mode: str) -> np.ndarray:
    """The image's 8-bit values [h, w, channels]; `image_table()` gives their float32 pixels (value / 255)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            pixels = np.asarray(image.convert(mode), dtype=np.uint8)
    except OSError as error:  # e.g. a file cut short after its header
        raise FedlabError(f'{path}: not a readable PNG ({error})') from None
    return pixels[..., np.newaxis] if mode == 'L' else pixels


def _size(shape: tuple[int, ...]) -> str:
    return f'{shape[1]}x{shape[0]}'

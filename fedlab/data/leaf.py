"""LEAF's FEMNIST: a directory of train/*.json and test/*.json shards, one client per writer."""

import json
import pathlib

import numpy as np

from fedlab.errors import FedlabError

SIDE = 28  # LEAF's FEMNIST images are 28x28, stored row-major as 784 floats
NUM_CLASSES = 62  # 0-9 digits, 10-35 upper case, 36-61 lower case
NUM_DIGITS = 10


def load_leaf(path: str, *, digits_only: bool = False, num_clients: int | None = None):
    """Every writer in `path`/train/*.json and `path`/test/*.json as a client; returns `FederatedData`.

    Pixels keep LEAF's convention (1.0 = background, as TFF's federated EMNIST). `digits_only` keeps labels
    0-9 (10 classes) and drops writers left without digits; `num_clients` keeps the first writers by id.
    Broken files raise `FedlabError` naming the file and the problem.
    """
    root = pathlib.Path(path)
    if not root.is_dir():
        raise FedlabError(f'{root}: no such directory (data.path must hold LEAF train/*.json and test/*.json)')
    splits = {split: read_split(root / split) for split in ('train', 'test')}
    if digits_only:
        splits = {split: _keep_digits(writers) for split, writers in splits.items()}
    client_ids = sorted(splits['train'])
    if num_clients is not None:
        client_ids = client_ids[:num_clients]
    if not client_ids:
        raise FedlabError(f'{root / "train"}: no writer has {"digits" if digits_only else "examples"}')
    empty = np.zeros([0, SIDE, SIDE, 1], np.float32), np.zeros([0], np.int32)
    # Imported here: TensorFlow Federated is only loaded once a source is actually built.
    from fedlab.data import federated_data

    return federated_data.FederatedData(
            name='leaf' + ('_digits' if digits_only else ''),
            train=federated_data.client_data_from_arrays({c: splits['train'][c] for c in client_ids}),
            test=federated_data.client_data_from_arrays({c: splits['test'].get(c, empty) for c in client_ids}),
            image_shape=(SIDE, SIDE, 1),
            num_classes=NUM_DIGITS if digits_only else NUM_CLASSES,
    )


def read_split(directory: pathlib.Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{writer: (pixels [n, 28, 28, 1] float32, labels [n] int32)} from every *.json file in `directory`."""
    files = sorted(directory.glob('*.json'))
    if not files:
        raise FedlabError(f'{directory}: no *.json files (expected LEAF {directory.name} shards)')
    writers: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for file in files:
        for writer, arrays in read_file(file).items():
            if writer in writers:
                raise FedlabError(f'{file}: writer {writer!r} also appears in another file of {directory}')
            writers[writer] = arrays
    return writers


def read_file(file: pathlib.Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """One LEAF json shard, checked: {"users": [...], "num_samples": [...], "user_data": {user: {x, y}}}."""
    try:
        content = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise FedlabError(f'{file}: not valid JSON ({_one_line(error)})') from None
    if not isinstance(content, dict) or not {'users', 'num_samples', 'user_data'} <= content.keys():
        raise FedlabError(f'{file}: expected a JSON object with keys users, num_samples and user_data')
    users, num_samples, user_data = content['users'], content['num_samples'], content['user_data']
    if len(users) != len(num_samples):
        raise FedlabError(f'{file}: {len(users)} users but {len(num_samples)} num_samples entries')
    writers = {}
    for user, expected in zip(users, num_samples):
        record = user_data.get(user)
        if not isinstance(record, dict) or 'x' not in record or 'y' not in record:
            raise FedlabError(f'{file}: user {user!r} has no user_data entry with x and y')
        x, y = record['x'], record['y']
        if expected == 0 or not y:
            raise FedlabError(f'{file}: user {user!r} has no examples')
        if not len(x) == len(y) == expected:
            raise FedlabError(
                    f'{file}: user {user!r} has num_samples {expected} but {len(x)} x rows and {len(y)} y labels'
            )
        bad_row = next((i for i, row in enumerate(x) if len(row) != SIDE * SIDE), None)
        if bad_row is not None:
            raise FedlabError(
                    f'{file}: user {user!r} example {bad_row} has {len(x[bad_row])} pixels, expected {SIDE * SIDE}'
                    f' ({SIDE}x{SIDE})'
            )
        try:
            pixels = np.asarray(x, dtype=np.float32)
            labels = np.asarray(y, dtype=np.float64)
        except (TypeError, ValueError):
            raise FedlabError(f'{file}: user {user!r} has non-numeric pixels or labels') from None
        bad_label = np.flatnonzero((labels != np.round(labels)) | (labels < 0) | (labels >= NUM_CLASSES))
        if len(bad_label):
            raise FedlabError(
                    f'{file}: user {user!r} example {bad_label[0]} has label {y[bad_label[0]]!r},'
                    f' expected an integer 0-{NUM_CLASSES - 1}'
            )
        if pixels.min() < 0 or pixels.max() > 1:
            raise FedlabError(f'{file}: user {user!r} has pixel values outside [0, 1]')
        writers[user] = pixels.reshape(-1, SIDE, SIDE, 1), labels.astype(np.int32)
    return writers


def _keep_digits(writers: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    kept = {}
    for writer, (pixels, labels) in writers.items():
        digits = labels < NUM_DIGITS
        if digits.any():
            kept[writer] = pixels[digits], labels[digits]
    return kept


def _one_line(error: Exception) -> str:
    return ' '.join(str(error).split())

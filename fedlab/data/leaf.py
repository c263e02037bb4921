"""LEAF's FEMNIST: a directory of train/*.json and test/*.json shards, one client per writer.

Full FEMNIST is ~3,500 writers in several GB of json. Parsing that json into Python lists of floats took
minutes and several times the pixels' memory, so each file is read in LEAF's own layout: the json around
the pixel arrays is parsed as json, the pixel arrays (`"x": [[...], ...]`, 784 values a row, each written
as `repr(k / 255)`) are decoded with numpy into 8-bit codes, exactly (see `_pixel_codes`). A file in any
other layout, or with any other value, goes through the plain json reader, which also words every error.
The parsed arrays are kept in fedlab's data cache (`cache.ArrayCache`), so the next run reads them in
seconds.
"""

import json
import pathlib
import time

import numpy as np

from fedlab.data import example_checks, selection
from fedlab.data.arrays import ArrayClients, PixelCodes, leaf_table, splits_to_arrays
from fedlab.errors import FedlabError, one_line_text

SIDE = 28  # LEAF's FEMNIST images are 28x28, stored row-major as 784 floats
NUM_CLASSES = 62  # 0-9 digits, 10-35 upper case, 36-61 lower case
NUM_DIGITS = 10
PIXELS_PER_ROW = SIDE * SIDE
# The version of what read_split produces; part of the cache key. (Each writer's file name, added to the metadata
# since, is read when present: entries without it stay valid and name the split's *.json instead.)
_PARSER = 2

Writer = tuple[str, np.ndarray, np.ndarray]  # (writer, pixels [n, 784] uint8 codes or float32, labels [n] int32)


def load_leaf(path: str, *, digits_only: bool = False, num_clients: int | None = None, array_cache: str | None = None,
              drop_nonfinite: bool = False):
    """Every writer in `path`/train/*.json and `path`/test/*.json as a client; returns `FederatedData`.

    Pixels keep LEAF's convention (1.0 = background, as TFF's federated EMNIST). `digits_only` keeps labels
    0-9 (10 classes) and drops writers left without digits; `num_clients` keeps the first writers by id.
    `array_cache`: fedlab's data cache directory (None: parse every time). Broken files raise `FedlabError`
    naming the file and the problem, and so does a non-finite pixel (`drop_nonfinite`: drop such examples instead,
    with a warning; example_checks).
    """
    root = pathlib.Path(path)
    if not root.is_dir():
        raise FedlabError(f'{root}: no such directory (data.path must hold LEAF train/*.json and test/*.json)')
    files = {split: _json_files(root / split) for split in ('train', 'test')}
    started = time.perf_counter()
    if array_cache is None:
        (arrays, meta), status = _parse(root, files), None
    else:
        from fedlab.data import cache

        key = {'parser': _PARSER, 'files': cache.fingerprint(files['train'] + files['test'], root)}
        store = cache.ArrayCache(array_cache, 'leaf', root, key)
        arrays, meta = store.load_or_build(lambda: _parse(root, files))
        status = store.status
    splits = {split: ArrayClients.from_arrays(f'{split}_', arrays, meta) for split in ('train', 'test')}
    seconds = time.perf_counter() - started
    if status == 'hit':
        writers = len(splits['train'].client_ids)
        print(f'leaf: {writers} writers read from the data cache in {seconds:.1f} s ({store.entry})')
    else:
        where = '' if status is None else f'; data cache {status}: {store.entry}'
        print(f'leaf: {len(splits["train"].client_ids)} writers parsed in {seconds:.1f} s{where}')

    # Checked here, after the cache too: a cached entry holds what the files held.
    train, test = (example_checks.checked(
        splits[split], num_classes=NUM_CLASSES, split=split, drop=drop_nonfinite,
        source=lambda writer, split=split: str(root / split / meta.get(f'{split}_files', {}).get(writer, '*.json')),
    ) for split in ('train', 'test'))
    keep = (lambda labels: labels < NUM_DIGITS) if digits_only else None
    client_ids = example_checks.nonempty(train)
    if digits_only:
        client_ids = [c for c, n in zip(client_ids, _digit_counts(train)) if n]
    writers = f'writers{" with digits" if digits_only else ""} in {root}'
    client_ids = selection.first_clients(sorted(client_ids), num_clients, source='leaf', what=writers)
    if not client_ids:
        raise FedlabError(f'{root / "train"}: no writer has {"digits" if digits_only else "examples"}')
    # Imported here: TensorFlow Federated is only loaded once a source is actually built.
    from fedlab.data import federated_data

    return federated_data.FederatedData(
            name='leaf' + ('_digits' if digits_only else ''),
            train=federated_data.client_data_from_arrays(train.subset(client_ids, keep)),
            test=federated_data.client_data_from_arrays(test.subset(client_ids, keep)),
            image_shape=(SIDE, SIDE, 1),
            num_classes=NUM_DIGITS if digits_only else NUM_CLASSES,
    )


def _json_files(directory: pathlib.Path) -> list[pathlib.Path]:
    files = sorted(directory.glob('*.json'))
    if not files:
        raise FedlabError(f'{directory}: no *.json files (expected LEAF {directory.name} shards)')
    return files


def _parse(root: pathlib.Path, files: dict[str, list[pathlib.Path]]) -> tuple[dict, dict]:
    """Both splits as the data cache stores them: their arrays, and in the metadata each writer's file name."""
    sources = {split: {} for split in files}
    arrays, meta = splits_to_arrays(read_splits(root, files, sources))
    return arrays, {**meta, **{f'{split}_files': names for split, names in sources.items()}}


def read_splits(root: pathlib.Path, files: dict[str, list[pathlib.Path]],
                sources: dict[str, dict[str, str]] | None = None) -> dict[str, ArrayClients]:
    sources = sources if sources is not None else {split: {} for split in files}
    return {split: read_split(root / split, files[split], sources=sources[split]) for split in files}


def read_split(directory: pathlib.Path, files: list[pathlib.Path] | None = None,
               sources: dict[str, str] | None = None) -> ArrayClients:
    """Every writer of every *.json file in `directory`, sorted by id, pixels [n, 28, 28, 1]; `sources` gets each
    writer's file name."""
    files = _json_files(directory) if files is None else files
    sources = {} if sources is None else sources
    writers: dict[str, Writer] = {}
    for file in files:
        for writer in read_file(file):
            if writer[0] in writers:
                raise FedlabError(f'{file}: writer {writer[0]!r} also appears in another file of {directory}')
            writers[writer[0]] = writer
            sources[writer[0]] = file.name
    return ArrayClients.concatenate([writers[w] for w in sorted(writers)], (SIDE, SIDE, 1), leaf_table())


def read_file(file: pathlib.Path) -> list[Writer]:
    """One LEAF json shard, checked: {"users": [...], "num_samples": [...], "user_data": {user: {x, y}}}."""
    try:
        raw = file.read_bytes()
    except OSError as error:
        raise FedlabError(f'{file}: not valid JSON ({one_line_text(error)})') from None
    writers = _read_leaf_layout(raw)
    return writers if writers is not None else _read_json(file)


# -- The fast reader: LEAF's own layout, checked as strictly as the json reader; None for anything else. --

_X = b'"x": [['
_PLACEHOLDER = '\x00fedlab-x-'
# Every value LEAF writes, `repr(k / 255)` for k = 0..255, as bytes padded to one width, and its length.
_CANONICAL = [repr(k / 255.0).encode() for k in range(256)]
_WIDTH = max(map(len, _CANONICAL))
_CANONICAL_BYTES = np.zeros((256, _WIDTH), np.uint8)
for _k, _text in enumerate(_CANONICAL):
    _CANONICAL_BYTES[_k, : len(_text)] = np.frombuffer(_text, np.uint8)
_CANONICAL_LENGTH = np.array([len(t) for t in _CANONICAL])
# The first three decimals of k / 255 (steps of 0.0039) tell k apart: decimals -> k.
_K_BY_DECIMALS = np.full(1000, -1, np.int64)
for _k, _text in enumerate(_CANONICAL[:-1]):  # all but 1.0
    _K_BY_DECIMALS[int((_text[2:5] + b'000')[:3])] = _k
_COMMA, _SEMICOLON, _SPACE, _ZERO, _ONE, _DOT = b',; 01.'


def _read_leaf_layout(raw: bytes) -> list[Writer] | None:
    # Cut the pixel arrays out and parse the rest as json, with a placeholder string where each array was.
    pieces, spans, position = [], [], 0
    while (start := raw.find(_X, position)) >= 0:
        end = raw.find(b']]', start)
        if end < 0:
            return None
        pieces += [raw[position : start + 5], json.dumps(f'{_PLACEHOLDER}{len(spans)}').encode()]
        spans.append((start + len(_X), end))
        position = end + 2
    pieces.append(raw[position:])
    try:
        content = json.loads(b''.join(pieces))
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(content, dict) or not {'users', 'num_samples', 'user_data'} <= content.keys():
        return None
    users, num_samples, user_data = content['users'], content['num_samples'], content['user_data']
    if not (isinstance(users, list) and isinstance(num_samples, list) and isinstance(user_data, dict)):
        return None
    if len(users) != len(num_samples) or len(set(map(str, users))) != len(users) or len(users) != len(spans):
        return None
    writers, used = [], set()
    for user, expected in zip(users, num_samples):
        record = user_data.get(user) if isinstance(user, str) else None
        if not isinstance(record, dict) or not isinstance(record.get('x'), str) or 'y' not in record:
            return None
        index = record['x'].removeprefix(_PLACEHOLDER)
        if not index.isdigit() or int(index) >= len(spans) or index in used:
            return None
        used.add(index)
        y = record['y']
        if not isinstance(y, list) or not y or expected == 0 or expected != len(y):
            return None
        try:
            labels = np.asarray(y, dtype=np.float64)
        except (TypeError, ValueError):
            return None
        if labels.ndim != 1 or np.any((labels != np.round(labels)) | (labels < 0) | (labels >= NUM_CLASSES)):
            return None
        start, end = spans[int(index)]
        codes = _pixel_codes(raw[start:end], len(y))
        if codes is None:  # other values than LEAF's k/255: read this writer's pixels as json
            codes = _json_pixels(raw[start - 2 : end + 2], len(y))
            if codes is None:
                return None
        writers.append((user, codes, labels.astype(np.int32)))
    return writers


def _pixel_codes(rows_text: bytes, rows: int) -> np.ndarray | None:
    """`rows` rows of 784 values as LEAF writes them (`a, b, ...], [c, d, ...`, the outer brackets cut
    off) as uint8 codes k of the values k/255; None unless every value is written exactly so."""
    if b';' in rows_text:
        return None
    flat = rows_text.replace(b'], [', b'; ')
    text = np.frombuffer(flat + bytes(_WIDTH), np.uint8)  # zero padding: every token can be read _WIDTH wide
    size = len(flat)
    separators = np.flatnonzero((text[:size] == _COMMA) | (text[:size] == _SEMICOLON))
    if len(separators) + 1 != rows * PIXELS_PER_ROW:
        return None
    row_ends = np.flatnonzero(text[separators] == _SEMICOLON)
    if not np.array_equal(row_ends, np.arange(1, rows) * PIXELS_PER_ROW - 1):
        return None
    if not np.all(text[separators + 1] == _SPACE):
        return None
    starts = np.concatenate([[0], separators + 2])
    lengths = np.concatenate([separators, [size]]) - starts
    codes = np.empty(len(starts), np.uint8)
    # Most values are 1.0 (background) or 0.0: recognised by three bytes.
    first = text[starts]
    short = (lengths == 3) & (text[starts + 1] == _DOT) & (text[starts + 2] == _ZERO)
    short &= (first == _ZERO) | (first == _ONE)
    codes[short] = np.where(first[short] == _ONE, 255, 0)
    others = np.flatnonzero(~short)
    if len(others):
        tokens = text[starts[others, None] + np.arange(_WIDTH)]  # [n, _WIDTH]: each token and what follows
        token_lengths = lengths[others]
        if np.any(token_lengths < 3) or np.any(token_lengths > _WIDTH):
            return None
        digits = tokens[:, 2:5].astype(np.int64) - _ZERO
        digits[np.arange(2, 5)[None, :] >= token_lengths[:, None]] = 0  # 0.2 -> 200
        if np.any((tokens[:, 0] != _ZERO) | (tokens[:, 1] != _DOT)) or np.any((digits < 0) | (digits > 9)):
            return None
        k = _K_BY_DECIMALS[digits @ np.array([100, 10, 1])]
        if np.any(k < 0):
            return None
        # Exactly the text of k/255, byte for byte, and nothing more.
        inside = np.arange(_WIDTH)[None, :] < token_lengths[:, None]
        if np.any(_CANONICAL_LENGTH[k] != token_lengths) or np.any((tokens != _CANONICAL_BYTES[k]) & inside):
            return None
        codes[others] = k
    return codes.reshape(rows, PIXELS_PER_ROW)


def _json_pixels(x_text: bytes, rows: int) -> np.ndarray | None:
    """One writer's pixel rows parsed as json: uint8 codes if every value is a float32 k/255, else float32;
    None if they would fail a check of the json reader (which then words the error)."""
    try:
        x = json.loads(x_text)
        if len(x) != rows or any(len(row) != PIXELS_PER_ROW for row in x):
            return None
        pixels = np.asarray(x, dtype=np.float32)
    except (ValueError, TypeError, UnicodeDecodeError):
        return None
    if pixels.ndim != 2 or _outside_unit_range(pixels):
        return None
    codes = PixelCodes.encode(pixels, leaf_table())
    return codes.codes if codes is not None else pixels


# -- The json reader: any valid LEAF json, and the wording of every error. --


def _read_json(file: pathlib.Path) -> list[Writer]:
    try:
        content = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise FedlabError(f'{file}: not valid JSON ({one_line_text(error)})') from None
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
        bad_row = next((i for i, row in enumerate(x) if len(row) != PIXELS_PER_ROW), None)
        if bad_row is not None:
            raise FedlabError(
                    f'{file}: user {user!r} example {bad_row} has {len(x[bad_row])} pixels, expected {PIXELS_PER_ROW}'
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
        if _outside_unit_range(pixels):
            raise FedlabError(f'{file}: user {user!r} has pixel values outside [0, 1]')
        codes = PixelCodes.encode(pixels, leaf_table())
        writers[user] = (user, codes.codes if codes is not None else pixels, labels.astype(np.int32))
    return list(writers.values())



def _outside_unit_range(pixels: np.ndarray) -> bool:
    """A finite pixel below 0 or above 1 (NaN and inf are example_checks', which names the example)."""
    finite = pixels[np.isfinite(pixels)] if not np.isfinite(pixels).all() else pixels
    return bool(finite.size) and (finite.min() < 0 or finite.max() > 1)


def _digit_counts(clients: ArrayClients) -> np.ndarray:
    owner = np.repeat(np.arange(len(clients.client_ids)), clients.counts)
    return np.bincount(owner, weights=clients.labels < NUM_DIGITS, minlength=len(clients.client_ids))

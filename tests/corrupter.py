"""A seeded file corrupter for tests: damages one file the way disks, copies and editors do.

    corrupt(path, seed) -> str   # what it did, e.g. 'truncate metrics.csv to 312 of 1044 bytes'

Kinds: `truncate` (cut at a random length, possibly 0), `flip` (flip a few random bytes), `empty` (0 bytes),
`wrong_type` (the file replaced by a directory of the same name), `nan` (a numeric token replaced by NaN, for
text data files). The same (file, seed, kinds) always does the same thing, so a failing seed can be replayed.
"""

import pathlib
import random
import re
import shutil

KINDS = ('truncate', 'flip', 'empty', 'wrong_type')
_NUMBER = re.compile(rb'(?<![\w.])\d+\.\d+(?![\w.])')


def corrupt(path: pathlib.Path, seed: int, kinds: tuple[str, ...] = KINDS) -> str:
    """Damages `path` in one of `kinds`, chosen by `seed`; returns one line saying what was done."""
    rng = random.Random(f'{path.name}:{seed}')
    kind = rng.choice(kinds)
    return _CORRUPTERS[kind](path, rng)


def _truncate(path: pathlib.Path, rng: random.Random) -> str:
    size = path.stat().st_size
    keep = rng.randrange(size) if size else 0
    with open(path, 'r+b') as f:
        f.truncate(keep)
    return f'truncate {path.name} to {keep} of {size} bytes'


def _flip(path: pathlib.Path, rng: random.Random) -> str:
    data = bytearray(path.read_bytes())
    if not data:
        return _empty(path, rng)
    positions = sorted(rng.randrange(len(data)) for _ in range(rng.randint(1, 4)))
    for position in positions:
        data[position] ^= 1 << rng.randrange(8)
    path.write_bytes(bytes(data))
    return f'flip bits at {positions} of {path.name}'


def _empty(path: pathlib.Path, rng: random.Random) -> str:
    path.write_bytes(b'')
    return f'empty {path.name}'


def _wrong_type(path: pathlib.Path, rng: random.Random) -> str:
    path.unlink()
    path.mkdir()
    return f'replace {path.name} by a directory'


def _nan(path: pathlib.Path, rng: random.Random) -> str:
    """A decimal number of a text file replaced by NaN (what a broken export writes into LEAF json)."""
    data = path.read_bytes()
    numbers = list(_NUMBER.finditer(data))
    if not numbers:
        return _flip(path, rng)
    match = rng.choice(numbers)
    path.write_bytes(data[: match.start()] + b'NaN' + data[match.end():])
    return f'NaN at byte {match.start()} of {path.name}'


_CORRUPTERS = {'truncate': _truncate, 'flip': _flip, 'empty': _empty, 'wrong_type': _wrong_type, 'nan': _nan}


def files_under(root: pathlib.Path) -> list[pathlib.Path]:
    """Every file under `root`, in a stable order (a seed picks one)."""
    return sorted(p for p in root.rglob('*') if p.is_file())


def restore(source: pathlib.Path, target: pathlib.Path) -> None:
    """`target` made again a copy of the directory `source` (undoing a corruption between seeds)."""
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target)

"""fedlab's data caches: a lock around checking and filling a cache entry (concurrent sweep jobs never build
or download into each other), and `ArrayCache`, which keeps a source's parsed arrays in a binary format so
that the next run reads them in seconds instead of parsing its files again."""

import contextlib
import fcntl
import hashlib
import json
import os
import pathlib
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence

import numpy as np

from fedlab.system.scratch_dirs import default_root

_FORMAT = 1  # bump when the layout of an entry changes: older entries are then rebuilt


@contextlib.contextmanager
def cache_lock(target: pathlib.Path, *, lock_dir: pathlib.Path | None = None):
    """Holds an exclusive lock for `target` (a cached file or directory) while the body runs.

    The lock file lives in `lock_dir`, by default `<fedlab cache>/locks` rather than next to the target, so
    that a failed download leaves a cache exactly as it was (and not in the temporary directory, which is
    private to each fedlab process: see `fedlab.system.scratch_dirs`). Jobs waiting on the lock find the finished file
    when they get it.
    """
    key = hashlib.sha256(str(target.expanduser().resolve()).encode()).hexdigest()[:16]
    directory = default_root() / 'locks' if lock_dir is None else lock_dir
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / f'fedlab-cache-{key}.lock', 'w') as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def fingerprint(files: Sequence[pathlib.Path], root: pathlib.Path) -> str:
    """What identifies a source's content without reading it: a digest of each file's path below `root`,
    size and modification time (nanoseconds). Any edit, copy over or touch changes it."""
    rows = []
    for file in files:
        stat = file.stat()
        rows.append([str(file.relative_to(root)), stat.st_size, stat.st_mtime_ns])
    return f'{len(rows)} files, ' + digest_of(rows)


def digest_of(value) -> str:
    """A digest of a json-able value."""
    return hashlib.sha256(json.dumps(value).encode()).hexdigest()


Arrays = dict[str, np.ndarray]


class ArrayCache:
    """One source's parsed arrays under `<root>/<kind>/<entry>/`: a raw binary file per array and a
    manifest.json (dtype, shape and SHA-256 digest of each, the source's `key`, free-form `meta`).

    The entry is named after the source's location (and `variant`, e.g. a selection of its clients that
    changes what is parsed) and is rebuilt when the source's `key` (e.g. its
    `fingerprint`) changes, or when a file is missing, short or its digest differs (a corrupt cache). An
    entry is built in a temporary directory and renamed into place, under a lock, so concurrent jobs build
    it once and never read half an entry. If the cache cannot be written (read-only, disk full), the
    arrays are used without caching and a warning says why.
    """

    def __init__(self, root: str | os.PathLike, kind: str, source: pathlib.Path, key: dict, *, variant: str = ''):
        self.directory = pathlib.Path(root).expanduser() / kind
        name = hashlib.sha256(f'{source.resolve()}\n{variant}'.encode()).hexdigest()[:20]
        self.entry = self.directory / name
        self.key = {'format': _FORMAT, 'source': str(source.resolve()), **key}
        self.status = 'unused'  # after load_or_build: 'hit', 'built', 'rebuilt (<why>)' or 'not cached (<why>)'

    def load_or_build(self, build: Callable[[], tuple[Arrays, dict]]) -> tuple[Arrays, dict]:
        """The cached (arrays, meta), or `build()`'s, stored for next time."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            return self._uncached(build, error)
        with cache_lock(self.entry, lock_dir=self.directory):
            found, why = self._read()
            if found is not None:
                self.status = 'hit'
                return found
            arrays, meta = build()
            try:
                self._write(arrays, meta)
            except OSError as error:
                self.status = f'not cached ({_one_line(error)})'
                _warn(f'{self.entry}: could not store the parsed arrays ({_one_line(error)}); '
                      'the next run parses again')
                return arrays, meta
            self.status = 'built' if why == 'absent' else f'rebuilt ({why})'
            return arrays, meta

    def _uncached(self, build, error):
        self.status = f'not cached ({_one_line(error)})'
        _warn(f'{self.directory}: cannot use the data cache ({_one_line(error)}); parsing without it')
        return build()

    def _read(self) -> tuple[tuple[Arrays, dict] | None, str]:
        manifest_path = self.entry / 'manifest.json'
        if not manifest_path.exists():
            return None, 'absent'
        try:
            manifest = json.loads(manifest_path.read_text())
            if manifest.get('key') != self.key:
                return None, 'the source changed'
            arrays = {}
            for name, info in manifest['arrays'].items():
                arrays[name] = _read_array(self.entry / info['file'], info)
                if arrays[name] is None:
                    return None, f'{info["file"]} is corrupt'
            return (arrays, manifest['meta']), 'hit'
        except (OSError, ValueError, KeyError, TypeError) as error:
            return None, f'unreadable manifest ({_one_line(error)})'

    def _write(self, arrays: Arrays, meta: dict) -> None:
        staging = pathlib.Path(tempfile.mkdtemp(prefix=f'.{self.entry.name}.', dir=self.directory))
        try:
            manifest = {'key': self.key, 'meta': meta, 'arrays': {}}
            for name, array in arrays.items():
                array = np.asarray(array)
                file = f'{name}.bin'
                with open(staging / file, 'wb') as f:
                    f.write(_bytes(array))
                manifest['arrays'][name] = {
                    'file': file, 'dtype': array.dtype.str, 'shape': list(array.shape), 'digest': _digest(array),
                }
            (staging / 'manifest.json').write_text(json.dumps(manifest))
            old = None
            if self.entry.exists():
                old = self.entry.with_name(f'.{self.entry.name}.old.{os.getpid()}')
                os.replace(self.entry, old)
            os.replace(staging, self.entry)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)


def _read_array(path: pathlib.Path, info: dict) -> np.ndarray | None:
    """The array stored at `path` if its size and digest are those of the manifest, else None."""
    dtype = np.dtype(info['dtype'])
    shape = tuple(info['shape'])
    expected = dtype.itemsize * int(np.prod(shape, dtype=np.int64))
    if not path.exists() or path.stat().st_size != expected:
        return None
    buffer = bytearray(expected)
    with open(path, 'rb') as f:
        if f.readinto(buffer) != expected:
            return None
    array = np.frombuffer(buffer, dtype).reshape(shape)
    return array if _digest(array) == info['digest'] else None


def _bytes(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array).reshape(-1).view(np.uint8)


def _digest(array: np.ndarray) -> str:
    return hashlib.sha256(_bytes(array)).hexdigest()


def _warn(message: str) -> None:
    print(f'fedlab: warning: {message}', file=sys.stderr)


def _one_line(error: BaseException) -> str:
    return ' '.join(str(error).split())

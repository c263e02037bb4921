"""Shard files, the clients' inputs read inside TFF's worker (client_inputs=shards), on a disk budget.

A shard holds one pass over a client's examples and the order in which its batch stream visits them:
`{stem}.x` and `{stem}.y` (serialized tensors, one pass) and `{stem}.i` (int32 positions; the stream is
`x[i]`, `y[i]`). The stream of `repeat(epochs).shuffle(buffer, seed).batch(b)` is exactly a gather of one
pass: tf.data's shuffle draws its order from the seed and the buffer, never from the values, so running
the same pipeline over the positions 0..n-1 gives the order (`client_data.stream_order`). That stores
one epoch instead of `epochs` copies, and the client's computation gathers the stream in-graph.

`ShardStore` keeps the files of one process in a directory of its own under a parent directory (default
`<fedlab cache>/shards`, never the system temp): at most `budget_bytes` on disk, least recently used clients'
files deleted first, the directory removed by `close()`. A run killed before `close()` (SIGKILL, power loss)
leaves its directory behind; the next `ShardStore` opened under the same parent removes it (`fedlab.system.scratch_dirs`).
"""

import collections
import contextlib
import os
import pathlib
import threading
from collections.abc import Callable, Sequence

import numpy as np

from fedlab.errors import FedlabError
from fedlab.system import scratch_dirs

KEYS = ('x', 'y')  # the model's input keys, in the shard's file names
ORDER = 'i'
_BLOCK = 4096  # disk usage is counted in filesystem blocks, as `du` counts it


def default_parent() -> pathlib.Path:
    from fedlab.system.scratch_dirs import default_root

    return default_root() / 'shards'


def serialize(pixels_and_labels: dict[str, np.ndarray], order: np.ndarray) -> dict[str, bytes]:
    """The files of a shard: {suffix: bytes}, for one pass `{x, y}` and the stream's `order`."""
    import tensorflow as tf

    files = {key: tf.io.serialize_tensor(pixels_and_labels[key]).numpy() for key in KEYS}
    files[ORDER] = tf.io.serialize_tensor(np.asarray(order, np.int32)).numpy()
    return files


def read_shard(stem, input_spec) -> collections.OrderedDict:
    """In-graph: the batch stream `{x, y}` of the shard at `stem` (a string tensor), with the shapes and dtypes
    of the model's `input_spec`."""
    import tensorflow as tf

    order = tf.io.parse_tensor(tf.io.read_file(stem + f'.{ORDER}'), tf.int32)
    return collections.OrderedDict(
        (key, tf.ensure_shape(tf.gather(tf.io.parse_tensor(tf.io.read_file(stem + f'.{key}'), spec.dtype), order),
                              spec.shape))
        for key, spec in input_spec.items()
    )


def disk_bytes(files: dict[str, bytes]) -> int:
    return sum(-(-len(content) // _BLOCK) * _BLOCK for content in files.values())


class ShardBudgetExceeded(FedlabError):
    """The clients of one call need more shard disk than the whole budget."""


class ShardStore:
    """Shard files of this process under `parent`, at most `budget_bytes` on disk (see the module doc)."""

    def __init__(self, parent: str | os.PathLike | None = None, *, budget_bytes: int):
        self.parent = pathlib.Path(parent).expanduser() if parent is not None else default_parent()
        self.budget_bytes = int(budget_bytes)
        try:
            self.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise FedlabError(f'shard_dir={self.parent}: cannot create it ({error.strerror})') from None
        self.removed_stale = scratch_dirs.remove_stale(self.parent)
        self._claim = scratch_dirs.Claim(self.parent)
        self.directory = self._claim.directory
        self._entries: collections.OrderedDict[str, tuple[str, int]] = collections.OrderedDict()  # key -> (stem, bytes)
        self._pins: dict[str, collections.deque] = {}  # pin name -> the keys of its last calls
        # How many calls' keys each pin name keeps: a block of rounds (efficiency.rounds_per_call) asks for each
        # round's shards in turn, then the worker reads them all in one TFF call.
        self.calls_pinned = 1
        self._mutex = threading.Lock()
        self._names = iter(range(1 << 62))
        self.used_bytes = 0
        self.peak_bytes = 0
        self.written = 0
        self.evicted = 0

    def paths(self, keys: Sequence[str], make: Callable[[str], dict[str, bytes]], *, pin: str) -> list[str]:
        """The shard stems of `keys`, writing missing ones with `make(key)` (their files, see `serialize`).

        The keys stay pinned under the name `pin` (not evicted) for the next `calls_pinned` - 1 calls with the same
        `pin`; other files are evicted, least recently used first, to stay within the budget.
        """
        with self._mutex:
            calls = self._pins.get(pin)
            if calls is None or calls.maxlen != self.calls_pinned:
                calls = self._pins[pin] = collections.deque(calls or (), maxlen=self.calls_pinned)
            calls.append(frozenset(keys))
            stems = []
            for key in keys:
                if key in self._entries:
                    self._entries.move_to_end(key)
                else:
                    self._write(key, make(key))
                stems.append(self._entries[key][0])
            return stems

    def unpin(self, pin: str) -> None:
        with self._mutex:
            self._pins.pop(pin, None)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def _write(self, key: str, files: dict[str, bytes]) -> None:
        size = disk_bytes(files)
        self._evict_for(size)
        stem = str(self.directory / f's{next(self._names):07d}')
        try:
            for suffix, content in files.items():
                with open(f'{stem}.{suffix}', 'wb') as f:
                    f.write(content)
        except OSError as error:
            _remove(stem, files)
            raise FedlabError(f'shard_dir={self.parent}: cannot write shard files ({error.strerror})') from None
        self._entries[key] = (stem, size)
        self.used_bytes += size
        self.peak_bytes = max(self.peak_bytes, self.used_bytes)
        self.written += 1

    def _evict_for(self, size: int) -> None:
        pinned = frozenset().union(*(keys for calls in self._pins.values() for keys in calls))
        for key in list(self._entries):
            if self.used_bytes + size <= self.budget_bytes:
                return
            if key not in pinned:
                stem, entry_size = self._entries.pop(key)
                _remove(stem, (*KEYS, ORDER))
                self.used_bytes -= entry_size
                self.evicted += 1
        if self.used_bytes + size > self.budget_bytes:
            need = (sum(s for k, (_, s) in self._entries.items() if k in pinned) + size) / 2**20
            raise ShardBudgetExceeded(
                f'shard_budget_mb={self.budget_bytes / 2**20:g} is too small: the clients of one TFF call need '
                f'{need:.0f} MB of shard files; raise shard_budget_mb'
            )

    def close(self) -> None:
        """Deletes this process's shard directory."""
        self._claim.release()
        self._entries.clear()
        self.used_bytes = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def __del__(self):
        with contextlib.suppress(Exception):
            self.close()


def _remove(stem: str, suffixes) -> None:
    for suffix in suffixes:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f'{stem}.{suffix}')

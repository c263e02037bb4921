"""Each client's state between the rounds it is sampled in (SCAFFOLD's c_i, FedDyn's g_i): `ClientStateStore`, and
`StatefulRounds`, which feeds a stateful learning process (fedlab.algorithms.templates.composition's) its clients'
states and keeps what it returns.

A state is written once, when a round makes it, to `<run_dir>/client_states/<client>.r<round>.npy` and never changed:
a checkpoint records only which file holds each client's state (`index_as_of`), so saving one costs an index however
many clients have state, and a run killed at any moment resumes from its last checkpoint's index. The most recently
used states stay in memory, up to `budget_bytes`; the others are read back from their files. Files no checkpoint
and no live state refer to are deleted after each checkpoint (`collect_garbage`).
"""

import collections
import hashlib
import json
import os
import pathlib
import shutil

import numpy as np

from fedlab.errors import FedlabError

DIRECTORY = 'client_states'
INDEX_FILE = 'client_states.json'  # inside a checkpoint: client id -> file name


class ClientStateStore:
    """`states(ids)` -> each client's state (`initial` for a client that never trained); `put(round, ids, states)`."""

    def __init__(self, run_dir: pathlib.Path, initial: tuple, *, budget_bytes: int):
        self._dir = run_dir / DIRECTORY
        self._initial = tuple(np.asarray(a) for a in initial)
        self._shapes = [a.shape for a in self._initial]
        self._splits = np.cumsum([a.size for a in self._initial])[:-1]
        self.state_bytes = sum(a.nbytes for a in self._initial)
        self._budget = budget_bytes
        self._index: dict[str, str] = {}  # client -> file name, as of the last round put
        self._cache: collections.OrderedDict[str, np.ndarray] = collections.OrderedDict()  # client -> flat state
        self._unsynced: set[str] = set()
        self._last_round, self._undo = 0, {}  # the last round put, and the files its clients had before it

    def start(self, index: dict[str, str] | None) -> None:
        """A new run (None: no state anywhere, files of an earlier attempt removed) or one resumed at a checkpoint's
        index."""
        if index is None:
            shutil.rmtree(self._dir, ignore_errors=True)
        self._dir.mkdir(parents=True, exist_ok=True)
        missing = [name for name in (index or {}).values() if not (self._dir / name).exists()]
        if missing:
            raise FedlabError(f'{self._dir / missing[0]} is missing: the checkpoint\'s client states are incomplete; '
                              'start the run again in a new directory')
        self._index, self._cache, self._last_round, self._undo = dict(index or {}), collections.OrderedDict(), 0, {}

    def states(self, client_ids: list[str]) -> list[tuple]:
        return [self._unflatten(self._flat(c)) if c in self._index else self._initial for c in client_ids]

    def put(self, round_num: int, client_ids: list[str], states: list) -> None:
        """The states `round_num` made for `client_ids` (each a structure of arrays, as `initial`)."""
        self._undo = {client: self._index.get(client) for client in client_ids}
        self._last_round = round_num
        for client, state in zip(client_ids, states):
            flat = np.concatenate([np.asarray(a, dtype=np.float32).ravel() for a in state])
            name = f'{_file_stem(client)}.r{round_num}.npy'
            with open(self._dir / name, 'wb') as f:
                np.save(f, flat, allow_pickle=False)
            self._unsynced.add(name)
            self._index[client] = name
            self._remember(client, flat)

    def index_as_of(self, round_num: int) -> dict[str, str]:
        """Which file holds each client's state after `round_num`: the last round put, or the one before it (a run
        interrupted between training a round and recording it checkpoints the round before). Its files are flushed
        to disk first."""
        index = dict(self._index)
        if round_num == self._last_round:
            self._undo = {}  # that round is recorded: no checkpoint of the one before can follow
        elif round_num < self._last_round:
            if round_num < self._last_round - 1:
                raise ValueError(f'client states of round {round_num} are gone (the store is at {self._last_round})')
            for client, name in self._undo.items():
                if name is None:
                    index.pop(client, None)
                else:
                    index[client] = name
        for name in sorted(self._unsynced & set(index.values())):
            with open(self._dir / name, 'rb') as f:
                os.fsync(f.fileno())
        self._unsynced -= set(index.values())
        return index

    def collect_garbage(self, kept_indexes: list[dict[str, str]]) -> None:
        """Deletes the files that neither the live states nor `kept_indexes` (the checkpoints') refer to."""
        referenced = set(self._index.values()) | set(self._undo.values())
        for index in kept_indexes:
            referenced |= set(index.values())
        for path in self._dir.glob('*.npy'):
            if path.name not in referenced:
                path.unlink(missing_ok=True)
                self._unsynced.discard(path.name)

    def bytes_on_disk(self) -> int:
        return sum(p.stat().st_size for p in self._dir.glob('*.npy'))

    def _flat(self, client: str) -> np.ndarray:
        if client in self._cache:
            self._cache.move_to_end(client)
            return self._cache[client]
        flat = np.load(self._dir / self._index[client], allow_pickle=False)
        self._remember(client, flat)
        return flat

    def _remember(self, client: str, flat: np.ndarray) -> None:
        self._cache[client] = flat
        self._cache.move_to_end(client)
        while len(self._cache) * self.state_bytes > self._budget and self._cache:
            self._cache.popitem(last=False)

    def _unflatten(self, flat: np.ndarray) -> tuple:
        return tuple(part.reshape(shape) for part, shape in zip(np.split(flat, self._splits), self._shapes))


def check_room(store: ClientStateStore, clients: int, run_dir: pathlib.Path) -> None:
    """Refuses, in one line with the size needed, a run whose `clients` (those that can train) would not all fit a
    state on `run_dir`'s disk: twice the states, as two checkpoints may each refer to a version of every one."""
    needed = 2 * clients * store.state_bytes
    free = shutil.disk_usage(run_dir).free
    if needed > free:
        raise FedlabError(
            f'the clients\' states need up to {needed / 2**30:.1f} GiB on disk ({clients:,} clients x '
            f'{store.state_bytes / 2**20:.2f} MiB, two versions each) and {run_dir} has {free / 2**30:.1f} GiB free: '
            'use a run directory on a larger disk (hydra.run.dir=...)'
        )


def _file_stem(client_id: str) -> str:
    # Client ids are the data's (folder names, LEAF writers): a hash keeps every one a safe file name.
    return hashlib.sha1(client_id.encode()).hexdigest()[:20]


def save_index(checkpoint_dir: pathlib.Path, index: dict[str, str]) -> None:
    (checkpoint_dir / INDEX_FILE).write_text(json.dumps(index, sort_keys=True))


def load_index(checkpoint_dir: pathlib.Path) -> dict[str, str] | None:
    path = checkpoint_dir / INDEX_FILE
    return json.loads(path.read_text()) if path.exists() else None


class StatefulRounds:
    """Trains a round of a stateful process (fedlab.algorithms.templates.composition.StatefulLearningProcess): its
    clients' inputs zipped with their states, and the states it returns put in `store`."""

    def __init__(self, store: ClientStateStore):
        self.store = store

    def next(self, process, state, round_num: int, client_ids: list[str], inputs: list):
        output, new_states = process.next(state, list(zip(inputs, self.store.states(client_ids))))
        self.store.put(round_num, client_ids, list(new_states))
        return output

"""Atomic checkpoints of the training state and the run's tables, with TFF's FileProgramStateManager: the store
(`CheckpointStore`) and when a run uses it (`RoundCheckpoints`)."""

import dataclasses
import hashlib
import json
import os
import pathlib
import re
import shutil
import sys

from fedlab.errors import FedlabError, one_line_text
from fedlab.record import extending, table_checks
from fedlab.run import interrupts
from fedlab.system import malloc_arenas

PREFIX = 'round_'
STATE_DIR = 'state'  # inside a checkpoint: the program state, as FileProgramStateManager writes it
CONFIG_FILE = 'config.json'
# Written last into a checkpoint: every other file's size and sha256. A checkpoint whose files do not match it is
# damaged; checkpoints of fedlab before it (main 17c7a06) have none and get the checks their files allow (`_problem`).
MANIFEST_FILE = 'manifest.json'
DAMAGED_PREFIX = 'damaged_'  # a damaged checkpoint set aside: checkpoints/damaged_round_<N>/


@dataclasses.dataclass(frozen=True)
class ResumePoint:
    """The checkpoint a run continues from (round 0: none) and the newer ones that are damaged (round, why)."""

    round_num: int
    damaged: tuple[tuple[int, str], ...] = ()


class CheckpointStore:
    """Checkpoints in `<run_dir>/checkpoints/round_<N>/`, each complete or absent.

    TFF's FileProgramStateManager writes a SavedModel in place, so a kill mid-write would leave half a
    checkpoint. Each checkpoint is therefore written into a staging directory, with copies of the files
    listed in `tables`, and renamed into place in one step; leftovers from an interrupted write are
    removed on the next start.
    """

    def __init__(self, root: pathlib.Path, *, keep: int = 2):
        self._root = root
        self._staging = root / '.staging'
        self._keep = keep
        shutil.rmtree(self._staging, ignore_errors=True)

    def rounds(self) -> list[int]:
        if not self._root.is_dir():
            return []
        found = (re.fullmatch(f'{PREFIX}(\\d+)', p.name) for p in self._root.iterdir() if p.is_dir())
        return sorted(int(m.group(1)) for m in found if m)

    def latest_round(self) -> int:
        return max(self.rounds(), default=0)

    def resumable_round(self, config: dict) -> int:
        """The round of the latest sound checkpoint (0: none), after checking it was saved under the same config."""
        return self.resume_point(config).round_num

    def resume_point(self, config: dict) -> ResumePoint:
        """The latest sound checkpoint, saved under the same `config`, and the damaged ones after it. Raises
        FedlabError when every checkpoint is damaged: one line naming each and why."""
        damaged = []
        for round_num in reversed(self.rounds()):
            problem = self.problem(round_num)
            if problem is None or not (self.path(round_num) / MANIFEST_FILE).exists():
                self._refuse_another_config(round_num, config)  # another run's directory: say that, not damage
            if problem:
                damaged.append((round_num, problem))
                continue
            return ResumePoint(round_num, tuple(damaged))
        if damaged:
            reasons = '; '.join(f'{PREFIX}{r}: {why}' for r, why in damaged)
            raise FedlabError(f'{self._root}: no checkpoint can be resumed from, all are damaged ({reasons})')
        return ResumePoint(0)

    def _refuse_another_config(self, round_num: int, config: dict) -> None:
        """FedlabError naming the keys that differ if the checkpoint's readable config is not `config`."""
        try:
            saved = self.saved_config(round_num)
        except (OSError, ValueError):
            return  # unreadable: a damaged checkpoint (`problem`)
        if not isinstance(saved, dict):
            return
        # Another number of rounds continues the run (fedlab.record.extending); fewer rounds are refused there.
        saved = extending.with_rounds_of(saved, config, done=round_num, run_dir=self._root.parent)
        differences = config_differences(saved, config)
        if differences:
            raise FedlabError(
                f'{self._root.parent} holds a run with a different config: {", ".join(differences)};'
                ' use a new run directory or the same settings'
            )

    def problem(self, round_num: int) -> str | None:
        """Why the checkpoint of `round_num` cannot be resumed from (its files against its manifest, its config and
        tables); None if it is sound."""
        directory = self.path(round_num)
        if (directory / MANIFEST_FILE).exists():
            problem = manifest_problem(directory)
        else:  # an older fedlab's checkpoint: its state files are there and not empty
            problem = _legacy_state_problem(directory)
        if problem is None:
            try:
                if not isinstance(self.saved_config(round_num), dict):
                    problem = f'{CONFIG_FILE} is not a JSON object'
            except (OSError, ValueError) as error:
                problem = f'{CONFIG_FILE} unreadable ({one_line_text(error)})'
        if problem is None:
            problem = _carried_files_problem(directory, round_num)
        return problem

    def set_aside(self, round_num: int, why: str) -> None:
        """Moves a damaged checkpoint to checkpoints/damaged_round_<N> (kept for a look, never resumed from) and
        says so in one line: the run continues from an older one and will write round N's again."""
        path = self.path(round_num)
        aside = self._root / f'{DAMAGED_PREFIX}{path.name}'
        shutil.rmtree(aside, ignore_errors=True)
        os.rename(path, aside)
        print(f'fedlab: warning: checkpoint {path} is damaged ({why}); moved to {aside.name}', file=sys.stderr)

    def path(self, round_num: int) -> pathlib.Path:
        return self._root / f'{PREFIX}{round_num}'

    def save(self, round_num: int, state, *, tables: list[pathlib.Path], config: dict, extra_files=None) -> None:
        """Saves `state` after `round_num`, with copies of `tables`, the run's config and `extra_files` (name ->
        text, e.g. the clients' state index: fedlab.run.client_states)."""
        if round_num in self.rounds():
            return
        with interrupts.uncuttable():
            self._save(round_num, state, tables=tables, config=config, extra_files=extra_files or {})

    def _save(self, round_num: int, state, *, tables: list[pathlib.Path], config: dict, extra_files: dict) -> None:
        shutil.rmtree(self._staging, ignore_errors=True)
        staging = self._staging / f'{PREFIX}{round_num}'
        staging.mkdir(parents=True)
        import tensorflow_federated as tff  # Here, not at the top: the CLI reads saved configs before TF loads.

        manager = tff.program.FileProgramStateManager(staging, prefix=STATE_DIR, keep_total=0)
        # FileProgramStateManager names its directory prefix + version; version 0 keeps the name fixed.
        import asyncio  # here, not at the top: `fedlab --help` imports this module and does not need asyncio

        asyncio.run(manager.save(state, 0))
        for table in tables:
            if table.exists():
                shutil.copy2(table, staging / table.name)
        (staging / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True))
        for name, text in extra_files.items():
            (staging / name).write_text(text)
        _fsync_tree(staging)
        write_manifest(staging)  # last: a checkpoint whose files match its manifest is complete
        os.rename(staging, self.path(round_num))
        for old in self.rounds()[: -self._keep]:
            shutil.rmtree(self.path(old), ignore_errors=True)
        malloc_arenas.release_freed_memory()

    def load(self, round_num: int, structure):
        """The state saved after `round_num`, restored into the structure (and types) of `structure`."""
        import asyncio

        import tensorflow_federated as tff

        manager = tff.program.FileProgramStateManager(self.path(round_num), prefix=STATE_DIR)
        with interrupts.uncuttable():
            try:
                return asyncio.run(manager.load(0, structure))
            except Exception as error:  # an older checkpoint without a manifest: its state is checked by loading it
                raise FedlabError(f'checkpoint {self.path(round_num)} is damaged: its state does not load'
                                  f' ({type(error).__name__}: {one_line_text(error)[:200]})') from None

    def saved_config(self, round_num: int) -> dict:
        return json.loads((self.path(round_num) / CONFIG_FILE).read_text())

    def restore_tables(self, round_num: int, run_dir: pathlib.Path, names: list[str]) -> None:
        """Puts the tables as they were at `round_num` back into `run_dir` (later rows are dropped)."""
        for name in names:
            saved = self.path(round_num) / name
            if saved.exists():
                shutil.copy2(saved, run_dir / name)
            else:
                (run_dir / name).unlink(missing_ok=True)


@dataclasses.dataclass(frozen=True)
class _Committed:
    round_num: int
    state: object  # the training state after that round (None: before round 1, or kept in TFF's worker)


class RoundCheckpoints:
    """A run's checkpoints in `<run_dir>/checkpoints/`: the state after the last committed round, with the run's
    `tables` (file names in `run_dir`) as they were then and its `config`; saved after every `every` rounds and the
    last of `rounds` (`due_after`), and when the run ends (`save`)."""

    def __init__(self, run_dir: pathlib.Path, *, rounds: int, every: int, config: dict, tables: list[str]):
        self._run_dir = run_dir
        self._store = CheckpointStore(run_dir / 'checkpoints')
        self._rounds = rounds
        self._every = every
        self._config = config
        self._tables = tables
        self._committed = _Committed(0, None)
        self._client_states = None  # a stateful algorithm's fedlab.run.client_states.ClientStateStore

    def keep_client_states(self, store, resume_round: int) -> None:
        """Checkpoints also record which file holds each client's state (`store`'s index as of their round); the
        store starts from `resume_round`'s checkpoint (0: empty)."""
        from fedlab.run import client_states

        index = None
        if resume_round:
            index = client_states.load_index(self._store.path(resume_round))
            if index is None:
                raise FedlabError(f'{self._store.path(resume_round)} holds no client states to resume from')
        store.start(index)
        self._client_states = store

    @property
    def last_saved_round(self) -> int:
        return self._store.latest_round()

    @property
    def committed_round(self) -> int:
        return self._committed.round_num

    def due_after(self, round_num: int) -> bool:
        """Whether round `round_num` is checkpointed when it is committed (every `every`, the last)."""
        return round_num == self._rounds or bool(self._every and round_num % self._every == 0)

    def restore(self, round_num: int, structure):
        """The state saved after `round_num` (in the structure of `structure`), with the tables put back as they were
        then; that round is the committed one."""
        state = self._store.load(round_num, structure)
        self._store.restore_tables(round_num, self._run_dir, self._tables)
        self._committed = _Committed(round_num, state)
        return state

    def commit(self, round_num: int, state) -> None:
        """Round `round_num` is complete, with the state after it (None if it stayed in TFF's worker); saved if due."""
        self._committed = _Committed(round_num, state)
        if self.due_after(round_num):
            self.save()

    def attach(self, round_num: int, state) -> None:
        """The state after committed round `round_num`, committed without it (kept in TFF's worker:
        fedlab.tff_internals.resident_state) and fetched since; a checkpoint of that round is possible again."""
        if self._committed.round_num == round_num and self._committed.state is None:
            self._committed = _Committed(round_num, state)

    def save(self) -> None:
        """Checkpoints the committed round, unless it is saved already or its state is not in Python."""
        committed = self._committed
        # State None: a round inside a block of rounds (fedlab.fast_paths.round_blocks), whose state stayed in TFF's
        # worker. Blocks end at checkpoint rounds; if the run stops inside one, it resumes from the last checkpoint.
        if committed.state is not None and committed.round_num > self._store.latest_round():
            extra_files = {}
            if self._client_states is not None:
                from fedlab.run import client_states

                index = self._client_states.index_as_of(committed.round_num)
                extra_files[client_states.INDEX_FILE] = json.dumps(index, sort_keys=True)
            self._store.save(
                committed.round_num,
                committed.state,
                tables=[self._run_dir / table for table in self._tables],
                config=self._config,
                extra_files=extra_files,
            )
            if self._client_states is not None:  # the files only older, deleted checkpoints referred to
                kept = [client_states.load_index(self._store.path(r)) or {} for r in self._store.rounds()]
                self._client_states.collect_garbage(kept)


def write_manifest(directory: pathlib.Path) -> None:
    """`directory`/manifest.json: every file's size and sha256, written through a temporary file and a rename."""
    files = {path.relative_to(directory).as_posix(): {'bytes': path.stat().st_size, 'sha256': _sha256(path)}
             for path in sorted(directory.rglob('*')) if path.is_file() and path.name != MANIFEST_FILE}
    staged = directory / (MANIFEST_FILE + '.tmp')
    with open(staged, 'w') as f:
        json.dump({'files': files}, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(staged, directory / MANIFEST_FILE)


def manifest_problem(directory: pathlib.Path) -> str | None:
    """Why `directory`'s files do not match its manifest (a file missing, shorter or longer, other bytes); None."""
    try:
        files = json.loads((directory / MANIFEST_FILE).read_text())['files']
        expected = {name: (int(entry['bytes']), str(entry['sha256'])) for name, entry in files.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        return f'{MANIFEST_FILE} unreadable ({one_line_text(error)})'
    for name, (size, digest) in sorted(expected.items()):
        path = directory / name
        if not path.is_file():
            return f'{name} is missing'
        if path.stat().st_size != size:
            return f'{name} has {path.stat().st_size} bytes, the manifest says {size}'
        if _sha256(path) != digest:
            return f'{name} does not match its sha256 in the manifest'
    return None


def _carried_files_problem(directory: pathlib.Path, round_num: int) -> str | None:
    """The first problem of the tables (table_checks) and JSON files a checkpoint carries besides its state."""
    for table in sorted(directory.glob('*.csv')):
        problem = table_checks.table_problem(table, round_num)
        if problem:
            return problem
    for carried in sorted(directory.glob('*.json')):
        if carried.name in (CONFIG_FILE, MANIFEST_FILE):
            continue
        try:
            if not isinstance(json.loads(carried.read_text()), dict):
                return f'{carried.name} is not a JSON object'
        except (OSError, ValueError) as error:
            return f'{carried.name} unreadable ({one_line_text(error)})'
    return None


# An older checkpoint's state (FileProgramStateManager's SavedModel): files that must be there and not empty.
_STATE_FILES = ('saved_model.pb', 'variables/variables.index')


def _legacy_state_problem(directory: pathlib.Path) -> str | None:
    for name in _STATE_FILES:
        path = directory / f'{STATE_DIR}0' / name
        if not path.is_file() or path.stat().st_size == 0:
            return f'{STATE_DIR}0/{name} is {"empty" if path.is_file() else "missing"} (and there is no manifest)'
    return None


def _sha256(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def _fsync_tree(root: pathlib.Path) -> None:
    """Flushes the files to disk before the rename publishes them."""
    for path in sorted(root.rglob('*')):
        if path.is_file():
            with open(path, 'rb') as f:
                os.fsync(f.fileno())


def config_differences(saved: dict, current: dict, prefix: str = '') -> list[str]:
    """Dotted keys whose values differ between two nested config dicts."""
    keys = sorted(set(saved) | set(current))
    differences = []
    for key in keys:
        a, b = saved.get(key, '<absent>'), current.get(key, '<absent>')
        if isinstance(a, dict) and isinstance(b, dict):
            differences += config_differences(a, b, f'{prefix}{key}.')
        elif a != b:
            differences.append(f'{prefix}{key} ({a!r} -> {b!r})')
    return differences

"""Directories owned by one live process under a shared parent, removed by the next process that looks once
their owner is gone, however it ended (SIGKILL, OOM killer, power loss).

Each directory `<parent>/<host>-<pid>-<random>/` has a sibling lock file `<name>.lock` that its process holds
(flock) for its life: a lock that can be taken belongs to a dead process, whose directory `remove_stale`
deletes. The lock file is locked before it gets its final name and before the directory exists, so a
`remove_stale` running at the same time never takes a live directory for a dead one. Use local disks: flock
over NFS is not reliable.

`private_tempdir()` points this process's temporary files (Python's `tempfile`, TensorFlow's autograph
sources, and through TMPDIR those of TFF's worker) into such a directory under fedlab's cache, so that a
killed run leaves nothing in the system's temporary directory, and what it leaves in fedlab's is removed at
the next start.
"""

import atexit
import contextlib
import fcntl
import os
import pathlib
import secrets
import shutil
import socket
import tempfile

LOCK_SUFFIX = '.lock'


class Claim:
    """A directory of this process under `parent`, and the lock that says so."""

    def __init__(self, parent: pathlib.Path):
        parent.mkdir(parents=True, exist_ok=True)
        name = f'{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}'
        staging = parent / f'.{name}{LOCK_SUFFIX}.tmp'
        self._lock_file = open(staging, 'w')
        fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.rename(staging, parent / f'{name}{LOCK_SUFFIX}')
        self.directory = parent / name
        self.directory.mkdir()
        self._owner = os.getpid()

    def release(self) -> None:
        """Deletes the directory and its lock (only in the process that claimed it, not in a forked child)."""
        if self._lock_file is None or os.getpid() != self._owner:
            return
        shutil.rmtree(self.directory, ignore_errors=True)
        with contextlib.suppress(OSError):
            os.unlink(self.directory.with_name(self.directory.name + LOCK_SUFFIX))
        self._lock_file.close()
        self._lock_file = None


def remove_stale(parent: pathlib.Path) -> list[str]:
    """Removes the directories under `parent` whose process is gone; returns their names."""
    removed = []
    if not parent.is_dir():
        return removed
    for entry in sorted(parent.iterdir()):
        name = entry.name
        if name.endswith(LOCK_SUFFIX) and not name.startswith('.'):
            directory = parent / name[: -len(LOCK_SUFFIX)]
            if _owner_is_gone(entry, then=lambda: shutil.rmtree(directory, ignore_errors=True)):
                removed.append(directory.name)
        elif name.endswith(f'{LOCK_SUFFIX}.tmp'):  # a process that died while claiming its directory
            _owner_is_gone(entry, then=lambda: None)
        elif entry.is_dir() and not (parent / f'{name}{LOCK_SUFFIX}').exists():
            # No lock file: its owner died after a remover deleted the lock but before the directory (a live
            # directory always has its lock file, created first).
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(name)
    return removed


def _owner_is_gone(lock_path: pathlib.Path, *, then) -> bool:
    """If nobody holds `lock_path`'s lock: runs `then()` while holding it, deletes the lock file, True."""
    try:
        lock_file = open(lock_path, 'r+')
    except OSError:
        return False
    with lock_file:
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False  # held: its process is alive
        then()
        with contextlib.suppress(OSError):
            os.unlink(lock_path)
        return True


_private: Claim | None = None


CACHE_ENV = 'FEDLAB_CACHE_DIR'  # overrides the default root of fedlab's caches (tests point it at a temp dir)


def default_root() -> pathlib.Path:
    """fedlab's cache directory: $FEDLAB_CACHE_DIR, else ~/.cache/fedlab (config.yaml's default too). Here, with
    no numpy, because `fedlab --help` makes its temporary directory under it before anything heavy loads."""
    return pathlib.Path(os.environ.get(CACHE_ENV) or '~/.cache/fedlab').expanduser()


def private_tempdir(parent: str | os.PathLike | None = None) -> pathlib.Path:
    """Makes a directory of this process under `parent` (default `<fedlab cache>/tmp`) its temporary directory,
    for Python's `tempfile` and, through TMPDIR, for its children; removes the stale ones of dead processes
    first, and its own at exit. Call it before anything creates a temporary file (TensorFlow's import)."""
    global _private
    if _private is None:
        if parent is None:
            parent = default_root() / 'tmp'
        parent = pathlib.Path(parent).expanduser()
        try:
            remove_stale(parent)
            _private = Claim(parent)
        except OSError:  # an unwritable cache: the system's temporary directory, as before
            return pathlib.Path(tempfile.gettempdir())
        os.environ['TMPDIR'] = str(_private.directory)
        tempfile.tempdir = str(_private.directory)
        atexit.register(_private.release)
    return _private.directory

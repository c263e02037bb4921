"""A run directory's own files: its lock, its Hydra config record and atomic JSON (no TensorFlow here)."""

import contextlib
import fcntl
import json
import os
import pathlib
import shutil

from omegaconf import OmegaConf

from fedlab.errors import FedlabError

LOCK_FILE = '.fedlab.lock'
HYDRA_DIR = '.hydra'  # where Hydra itself would write it; fedlab writes it once it holds the lock
LOG_FILE = 'fedlab.log'  # hydra.job_logging's file
RESULTS_JSON = 'results.json'  # how the run ended, and its final figures


class RunDirectoryLock:
    """One fedlab process per run directory, for the whole run.

    A second process (a re-launched sweep, a second terminal) would delete the first one's checkpoint staging and
    append to the same tables. The lock is `flock` on a file in the directory: the kernel releases it when its
    holder exits, however it exits, so a lock left by a killed process is simply taken over.
    """

    def __init__(self, run_dir: pathlib.Path):
        self._path = run_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        """Takes the lock, or raises FedlabError naming the process that holds it."""
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:  # check_run_dir foresees these; a directory changed since is reported the same way
            raise FedlabError(f'{self._path.parent}: {error.strerror}') from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors='replace').strip() or 'unknown'
            os.close(fd)
            raise FedlabError(f'{self._path.parent} is in use by process {holder}') from None
        os.ftruncate(fd, 0)
        os.write(fd, f'{os.getpid()}\n'.encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the last descriptor releases the flock
            self._fd = None

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc_info):
        self.release()


def write_hydra_config(run_dir: pathlib.Path, task_config, hydra_config, overrides: list[str]) -> None:
    """`.hydra/config.yaml`, `hydra.yaml` and `overrides.yaml`, as Hydra writes them. conf/config.yaml sets
    hydra.output_subdir to null so that Hydra does not write them before fedlab holds the run directory's lock:
    a refused second process must not overwrite the record of the run that owns the directory."""
    directory = run_dir / HYDRA_DIR
    directory.mkdir(parents=True, exist_ok=True)
    for name, node in [
        ('config.yaml', task_config),
        ('hydra.yaml', OmegaConf.create({'hydra': hydra_config})),
        ('overrides.yaml', OmegaConf.create(list(overrides))),
    ]:
        (directory / name).write_text(OmegaConf.to_yaml(node))


def hydra_record(run_dir: pathlib.Path) -> dict[str, str]:
    """The `.hydra/` files of a run directory, by name (none: {})."""
    directory = run_dir / HYDRA_DIR
    return {p.name: p.read_text() for p in directory.glob('*.yaml')} if directory.is_dir() else {}


def restore_hydra_record(run_dir: pathlib.Path, record: dict[str, str]) -> None:
    """Puts back the `.hydra/` files `hydra_record` read (a refused command must not rewrite a run's record)."""
    if record and run_dir.is_dir():
        for name, text in record.items():
            (run_dir / HYDRA_DIR / name).write_text(text)


def remove_if_fresh(run_dir: pathlib.Path) -> None:
    """Removes a run directory that holds nothing of a run: only what was written when the job started."""
    if run_dir.resolve() == pathlib.Path.cwd().resolve():  # never the directory fedlab was started from
        return
    if run_dir.is_dir() and {p.name for p in run_dir.iterdir()} <= {HYDRA_DIR, LOG_FILE, LOCK_FILE}:
        shutil.rmtree(run_dir)


def write_json(path: pathlib.Path, payload: dict) -> None:
    """Writes JSON through a temporary file and a rename, so readers never see half a file."""
    tmp = path.with_name(path.name + '.tmp')
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=False) + '\n')
    os.replace(tmp, path)


def read_json(path: pathlib.Path) -> dict | None:
    """A JSON file written by `write_json`, or None if there is none (or it is not a JSON object)."""
    with contextlib.suppress(OSError, ValueError):
        payload = json.loads(path.read_text())
        if isinstance(payload, dict):
            return payload
    return None


def check_run_dir(path: str, key: str) -> None:
    """Raises FedlabError, naming `key` (the config key that chose `path`), if fedlab could not make `path` its run
    directory: empty (an unset shell variable would put the run's files in the current directory), a file, under a
    file, on a read-only or unwritable place, or a name too long for the file system. Checked before Hydra creates
    the directory, so a refused run writes nothing."""
    if not path.strip():
        raise FedlabError(f'{key} is empty (an unset shell variable?): give a directory, or leave {key} out')
    absolute = pathlib.Path(os.path.abspath(os.path.expanduser(path)))
    ancestor = _nearest_existing(absolute)
    _check_name_lengths(absolute, ancestor, key, path)
    if absolute.exists() and not absolute.is_dir():
        raise FedlabError(f'{key}={path} is a file, not a directory')
    if not ancestor.is_dir():
        raise FedlabError(f'{key}={path} is under {ancestor}, which is a file, not a directory')
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise FedlabError(f'{key}={path}: {ancestor} is not writable (read-only file system or permissions)')


def make_run_dir(path: str, key: str) -> None:
    """Checks `path` (check_run_dir) and creates it, as Hydra would next, so that a failure the checks cannot foresee
    (a special file system such as /proc) is one line naming `key` too."""
    check_run_dir(path, key)
    try:
        os.makedirs(os.path.expanduser(path), exist_ok=True)
    except OSError as error:
        raise FedlabError(f'{key}={path}: cannot create it: {error.strerror}') from None


def _nearest_existing(path: pathlib.Path) -> pathlib.Path:
    """`path` itself or its closest ancestor that exists (as a file or a directory)."""
    for candidate in (path, *path.parents):
        with contextlib.suppress(OSError):  # absent, too long, or under a file: its parent tells
            os.stat(candidate)
            return candidate
    return pathlib.Path('/')


def _check_name_lengths(absolute: pathlib.Path, ancestor: pathlib.Path, key: str, path: str) -> None:
    """The file system's limits on one name (usually 255 bytes) and a whole path (4096), read where it is."""
    limits = [255, 4096]
    for i, name in enumerate(('PC_NAME_MAX', 'PC_PATH_MAX')):
        with contextlib.suppress(OSError, ValueError):
            limits[i] = os.pathconf(ancestor if ancestor.is_dir() else ancestor.parent, name)
    name_max, path_max = limits
    longest = max(absolute.parts, key=lambda part: len(os.fsencode(part)))
    if len(os.fsencode(longest)) > name_max:
        raise FedlabError(f'{key}={path}: a name in it is {len(os.fsencode(longest))} bytes long; the file system '
                          f'allows {name_max}')
    if len(os.fsencode(str(absolute))) >= path_max:
        raise FedlabError(f'{key}={path}: the path is {len(os.fsencode(str(absolute)))} bytes long; the file system '
                          f'allows {path_max - 1}')

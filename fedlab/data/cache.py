"""A lock around checking and filling a data cache, so concurrent sweep jobs never download into each other."""

import contextlib
import fcntl
import hashlib
import pathlib
import tempfile


@contextlib.contextmanager
def cache_lock(target: pathlib.Path):
    """Holds an exclusive lock for `target` (a cached file or directory) while the body runs.

    The lock file lives in the temporary directory, not in the cache, so a failed download leaves the cache
    exactly as it was. Jobs waiting on the lock find the finished file when they get it.
    """
    key = hashlib.sha256(str(target.expanduser().resolve()).encode()).hexdigest()[:16]
    with open(pathlib.Path(tempfile.gettempdir()) / f'fedlab-cache-{key}.lock', 'w') as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)

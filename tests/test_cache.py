"""The data cache lock serialises jobs that check and fill the same cache entry."""

import multiprocessing
import pathlib
import time

from fedlab.data.cache import cache_lock


def _increment(target: str, times: int) -> None:
    path = pathlib.Path(target)
    for _ in range(times):
        with cache_lock(path):
            value = int(path.read_text())
            time.sleep(0.01)  # a read-modify-write window that unlocked jobs would interleave in
            path.write_text(str(value + 1))


def test_concurrent_jobs_do_not_interleave(tmp_path):
    target = tmp_path / 'counter'
    target.write_text('0')
    jobs = [multiprocessing.get_context('fork').Process(target=_increment, args=(str(target), 15)) for _ in range(3)]
    for job in jobs:
        job.start()
    for job in jobs:
        job.join(timeout=60)
    assert [job.exitcode for job in jobs] == [0, 0, 0]
    assert target.read_text() == '45'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['counter']  # the lock file is not in the cache


def test_lock_is_per_target(tmp_path):
    with cache_lock(tmp_path / 'a'):
        with cache_lock(tmp_path / 'b'):  # would deadlock if both mapped to one lock
            pass

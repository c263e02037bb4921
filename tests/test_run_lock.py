"""One fedlab process per run directory: a second one is refused at once, and a dead holder's lock is taken over."""

import os
import subprocess
import sys

import pytest

from fedlab.errors import FedlabError
from fedlab.record import rundir


def test_a_second_lock_is_refused_naming_the_holder_and_is_free_once_released(tmp_path):
    with rundir.RunDirectoryLock(tmp_path):
        with pytest.raises(FedlabError, match=f'^{tmp_path} is in use by process {os.getpid()}$'):
            rundir.RunDirectoryLock(tmp_path).acquire()
    with rundir.RunDirectoryLock(tmp_path):
        pass


def test_a_lock_left_by_a_killed_process_is_taken_over(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, '-c', 'import pathlib, sys, time\nfrom fedlab.record import rundir\n'
         'rundir.RunDirectoryLock(pathlib.Path(sys.argv[1])).acquire()\nprint("held", flush=True)\ntime.sleep(60)',
         str(tmp_path)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == 'held'
        with pytest.raises(FedlabError, match=f'in use by process {holder.pid}'):
            rundir.RunDirectoryLock(tmp_path).acquire()
    finally:
        holder.kill()
        holder.wait()
    with rundir.RunDirectoryLock(tmp_path):  # the kernel released the dead process's lock
        assert (tmp_path / rundir.LOCK_FILE).read_text().strip() == str(os.getpid())

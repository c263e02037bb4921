"""A Hydra callback that ends a multirun with a summary of the jobs that did not complete."""

import pathlib

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from fedlab.record import rundir

# Set at the end of a multirun in this process; the CLI exits 1 when it is not zero.
failed_jobs = 0
# Jobs of this process's multirun refused because another live process held their run directory: they write
# nothing there, so the summary counts them from here (the basic launcher runs jobs in this process).
refused_jobs: list[str] = []


def _job_dirs(sweep_dir: pathlib.Path) -> dict[pathlib.Path, int]:
    """{job directory: mtime of its .hydra/config.yaml (ns)} for every job directory under a sweep (at any depth: an
    override with a `/` in its value, e.g. system.path=traces/x.csv, nests the job's directory)."""
    return {p.parent.parent: p.stat().st_mtime_ns for p in sweep_dir.glob(f'**/{rundir.HYDRA_DIR}/config.yaml')}


def job_statuses(jobs: list[pathlib.Path]) -> dict[str, tuple[str, str]]:
    """{job directory name: (status, error)}: what each job's results.json says."""
    statuses = {}
    for job in sorted(jobs):
        results = rundir.read_json(job / rundir.RESULTS_JSON)
        if results is None:
            statuses[job.name] = ('no results.json', 'the job stopped before writing results')
        else:
            statuses[job.name] = (results.get('status', 'unknown'), results.get('error', ''))
    return statuses


class SweepSummary(Callback):
    """Lists the jobs of this multirun that did not complete, and sets `failed_jobs`.

    A sweep directory may be reused by several multiruns: a job belongs to this one if its `.hydra/` record was
    written since the multirun started (fedlab writes it when the job starts), compared on the same file system.
    """

    def __init__(self):
        self._before: dict[pathlib.Path, int] = {}

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        refused_jobs.clear()
        self._before = _job_dirs(pathlib.Path(config.hydra.sweep.dir))

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        global failed_jobs
        sweep_dir = pathlib.Path(config.hydra.sweep.dir)
        jobs = [job for job, mtime in _job_dirs(sweep_dir).items() if self._before.get(job) != mtime]
        statuses = job_statuses(jobs)
        for job in refused_jobs:
            statuses[job] = ('refused', 'its run directory is in use by another process')
        failed = {job: s for job, s in statuses.items() if s[0] != 'completed'}
        failed_jobs = len(failed)
        print(f'sweep {sweep_dir}: {len(statuses) - len(failed)} of {len(statuses)} jobs completed')
        for job, (status, error) in failed.items():
            print(f'  {job}: {status}' + (f': {error}' if error else ''))

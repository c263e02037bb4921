"""A Hydra callback that ends a multirun with a summary of the jobs that did not complete."""

import json
import pathlib

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

# Set at the end of a multirun in this process; the CLI exits 1 when it is not zero.
failed_jobs = 0


def job_statuses(sweep_dir: pathlib.Path) -> dict[str, tuple[str, str]]:
    """{job directory name: (status, error)} for every job of a sweep (a job is a dir with .hydra/)."""
    statuses = {}
    for job in sorted(p.parent for p in sweep_dir.glob('*/.hydra')):
        results = job / 'results.json'
        if results.exists():
            payload = json.loads(results.read_text())
            statuses[job.name] = (payload.get('status', 'unknown'), payload.get('error', ''))
        else:
            statuses[job.name] = ('no results.json', 'the job stopped before writing results')
    return statuses


class SweepSummary(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        global failed_jobs
        statuses = job_statuses(pathlib.Path(config.hydra.sweep.dir))
        failed = {job: s for job, s in statuses.items() if s[0] != 'completed'}
        failed_jobs = len(failed)
        print(f'sweep {config.hydra.sweep.dir}: {len(statuses) - len(failed)} of {len(statuses)} jobs completed')
        for job, (status, error) in failed.items():
            print(f'  {job}: {status}' + (f': {error}' if error else ''))

"""tracker=wandb: one Weights & Biases run per fedlab job, offline by default (no network, no account): its files go
under the run directory's wandb/, ready for `wandb sync`; a sweep's jobs share a group. Imported only when chosen."""

import os
import pathlib

from fedlab.record.trackers import JobContext

# Offline unless the user chose otherwise, before wandb reads its settings; no usage statistics, no update check.
os.environ.setdefault('WANDB_SILENT', 'true')
os.environ.setdefault('WANDB_DISABLE_GIT', 'true')

import wandb  # noqa: E402

EXIT_CODES = {'completed': 0, 'interrupted': 130}  # other statuses (failed, diverged): 1


class WandbTracker:
    name = 'wandb'

    def __init__(self, run, job: JobContext):
        self._run = run
        self._job = job

    @classmethod
    def start(cls, settings: dict, job: JobContext) -> 'WandbTracker':
        options = settings['wandb']
        run_id = job.stored_id('wandb') or wandb.util.generate_id()
        run = wandb.init(
            project=options.get('project', 'fedlab'), dir=str(job.run_dir), id=run_id, resume='allow',
            name=job.name, group=_group(job.sweep_dir), config=job.params, mode=options.get('mode', 'offline'),
            tags=['sweep'] if job.sweep_dir else None, notes=' '.join(job.overrides) or None,
            # No console capture and no system metrics: fedlab's own lines and files are the record.
            settings=wandb.Settings(console='off', x_disable_stats=True, x_disable_meta=True,
                                    x_disable_machine_info=True, silent=True),
        )
        job.store_id('wandb', run_id)
        return cls(run, job)

    def log_round(self, round_num: int, scalars: dict[str, float]) -> None:
        self._run.log({**scalars, 'round': round_num}, step=round_num)

    def end(self, status: str) -> None:
        self._run.summary['fedlab_status'] = status
        self._run.finish(exit_code=EXIT_CODES.get(status, 1))


def _group(sweep_dir: pathlib.Path | None) -> str | None:
    return sweep_dir.name if sweep_dir is not None else None

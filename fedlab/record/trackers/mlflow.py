"""tracker=mlflow: one MLflow run per fedlab job in a real store (SQLite beside runs/ and multirun/ by default, or a
tracking server at tracker.uri); a sweep is a parent run with a child per job. Imported only when chosen."""

import contextlib
import fcntl
import logging
import os
import pathlib
import time

from fedlab.record.trackers import STORE_DIR, JobContext, mlflow_status, runs_root, store_uri

# An unreachable server is one line at once, not minutes of retries (read by MLflow's REST client at each request).
os.environ.setdefault('MLFLOW_HTTP_REQUEST_MAX_RETRIES', '0')
os.environ.setdefault('MLFLOW_HTTP_REQUEST_TIMEOUT', '15')

from mlflow.entities import Metric, Param  # noqa: E402 (after the environment above)
from mlflow.tracking import MlflowClient  # noqa: E402

logging.getLogger('alembic').setLevel(logging.WARNING)  # the store's schema migrations, at its creation

SWEEP_TAG = 'fedlab.sweep_dir'  # the parent run of a sweep is found by this tag (the sweep directory)
ROUND_METRIC = 'round'  # logged each round: a resumed run knows which rounds its MLflow run already holds
ARTIFACTS = ('metrics.csv', 'clients.csv', 'results.json')  # (named here: fedlab.record.tables imports TensorFlow)
PARAM_VALUE_LIMIT = 6000  # MLflow 2's limit on a parameter's value
BATCH = 100  # MLflow's limit on parameters per log_batch call


class MlflowTracker:
    name = 'mlflow'

    def __init__(self, client: MlflowClient, run_id: str, job: JobContext, parent_id: str | None, last_round: int):
        self._client = client
        self._run_id = run_id
        self._job = job
        self._parent_id = parent_id
        self._last_round = last_round

    @classmethod
    def start(cls, settings: dict, job: JobContext) -> 'MlflowTracker':
        """Opens the store, finds or creates the experiment (and, in a sweep, its parent run), then continues the run
        directory's MLflow run or starts one with the job's parameters."""
        uri = settings.get('uri') or store_uri.default_uri(runs_root(job.run_dir, job.sweep_dir) / STORE_DIR)
        path = store_uri.sqlite_path(uri)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        # Jobs of a sweep may start together: one at a time creates the store's tables, experiment and parent run.
        with _locked(path.parent / '.fedlab.lock' if path else None), _locked(_sweep_lock(job)):
            client = MlflowClient(tracking_uri=uri)
            artifacts = (path.parent / store_uri.ARTIFACTS).as_uri() if path else None
            experiment_id = _experiment(client, settings['mlflow'].get('experiment', 'fedlab'), artifacts)
            parent_id = _parent_run(client, experiment_id, job.sweep_dir) if job.sweep_dir else None
        run_id = job.stored_id('mlflow')
        if run_id is not None and _exists(client, run_id):
            client.update_run(run_id, status='RUNNING')
            last_round = max((m.step for m in client.get_metric_history(run_id, ROUND_METRIC)), default=0)
        else:
            run_id = _new_run(client, experiment_id, job, parent_id)
            job.store_id('mlflow', run_id)
            last_round = 0
        if parent_id is not None:
            client.update_run(parent_id, status='RUNNING')
        return cls(client, run_id, job, parent_id, last_round)

    def log_round(self, round_num: int, scalars: dict[str, float]) -> None:
        if round_num <= self._last_round:  # already in the run (rounds after the checkpoint a resumed run restarted)
            return
        now = int(time.time() * 1000)
        metrics = [Metric(key, float(value), now, round_num) for key, value in scalars.items()]
        metrics.append(Metric(ROUND_METRIC, float(round_num), now, round_num))
        self._client.log_batch(self._run_id, metrics=metrics)
        self._last_round = round_num

    def end(self, status: str) -> None:
        for path in _artifacts(self._job.run_dir):
            self._client.log_artifact(self._run_id, str(path))
        self._client.set_tag(self._run_id, 'fedlab.status', status)
        self._client.set_terminated(self._run_id, mlflow_status(status))
        if self._parent_id is not None:  # the parent ends with its last job (set RUNNING again by a job starting)
            self._client.set_terminated(self._parent_id, 'FINISHED')


def _experiment(client: MlflowClient, name: str, artifact_location: str | None) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifact_location)
    except Exception:  # another job's process created it meanwhile (a tracking server shared by several machines)
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


def _parent_run(client: MlflowClient, experiment_id: str, sweep_dir: pathlib.Path) -> str:
    """The sweep's parent run, found by its tag, or created (under the sweep's lock, so once per sweep)."""
    key = str(sweep_dir.resolve())
    found = client.search_runs([experiment_id], filter_string=f"tags.`{SWEEP_TAG}` = '{key}'", max_results=1)
    if found:
        return found[0].info.run_id
    run = client.create_run(experiment_id, run_name=sweep_dir.name, tags={SWEEP_TAG: key, 'fedlab.kind': 'sweep'})
    return run.info.run_id


def _new_run(client: MlflowClient, experiment_id: str, job: JobContext, parent_id: str | None) -> str:
    tags = {'fedlab.run_dir': str(job.run_dir.resolve()), 'fedlab.overrides': ' '.join(job.overrides) or '(none)',
            'fedlab.status': 'running'}
    if parent_id is not None:
        tags['mlflow.parentRunId'] = parent_id
    run = client.create_run(experiment_id, run_name=job.name, tags=tags)
    params = [Param(key[:250], value[:PARAM_VALUE_LIMIT]) for key, value in job.params.items()]
    for start in range(0, len(params), BATCH):
        client.log_batch(run.info.run_id, params=params[start:start + BATCH])
    return run.info.run_id


def _exists(client: MlflowClient, run_id: str) -> bool:
    try:
        client.get_run(run_id)
        return True
    except Exception:  # e.g. the store was deleted since: the resumed run starts a new MLflow run
        return False


def _artifacts(run_dir: pathlib.Path) -> list[pathlib.Path]:
    """metrics.csv, clients.csv, results.json and the run's figures, those that exist."""
    return [run_dir / name for name in ARTIFACTS if (run_dir / name).exists()] + sorted(run_dir.glob('*.png'))


def _sweep_lock(job: JobContext) -> pathlib.Path | None:
    return job.sweep_dir / '.mlflow.lock' if job.sweep_dir else None


@contextlib.contextmanager
def _locked(path: pathlib.Path | None):
    """An exclusive lock on `path` (none: no lock) for the block: jobs of one sweep, even in other processes."""
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, 'a') as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


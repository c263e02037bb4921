"""Experiment trackers a run also reports to (the `tracker` group: none, mlflow, wandb, or a list of them;
docs/trackers.md). A view of the run like TensorBoard: each committed round's scalars under TensorBoard's names, the
flattened config and derived seeds as parameters, the status and the run's main files at the end.

A tracker never costs a run: one that cannot start or fails later says so in one line and the run goes on with its
own files, unless `tracker.required=true`, which refuses the run before training (exit 2). This module imports
neither MLflow nor W&B (seconds to import): only the chosen tracker's module does, when it is opened.
"""

import json
import pathlib
import sys
from collections.abc import Iterable

from fedlab.errors import FedlabError, one_line_text

NAMES = ('mlflow', 'wandb')
STATE_FILE = 'trackers.json'  # in the run directory: each tracker's run id, so a resumed run continues its run
STORE_DIR = 'mlruns'  # the default MLflow store (mlflow.db) and its artifacts, beside runs/ and multirun/


def chosen(config: dict) -> tuple[str, ...]:
    """The trackers `config` chose (its `tracker` node holds a section per tracker); () for tracker=none."""
    node = config.get('tracker') or {}
    return tuple(name for name in NAMES if isinstance(node.get(name), dict))


def without_tracker(config: dict) -> dict:
    """`config` without an empty `tracker` key: tracker=none leaves what a run writes as it was before trackers."""
    return {k: v for k, v in config.items() if k != 'tracker' or v}


def flatten(node, prefix: str = '') -> dict[str, str]:
    """A nested config as {dotted key: value as text}: the trackers' parameters."""
    if isinstance(node, dict):
        items = node.items()
    elif isinstance(node, list):
        items = ((str(i), v) for i, v in enumerate(node))
    else:
        return {prefix: str(node)}
    flat = {}
    for key, value in items:
        flat.update(flatten(value, f'{prefix}.{key}' if prefix else str(key)))
    return flat


def runs_root(run_dir: pathlib.Path, sweep_dir: pathlib.Path | None) -> pathlib.Path:
    """The folder that holds the runs/ and multirun/ folders: the parent of a single run's parent (runs/<run>), of a
    sweep's parent (multirun/<sweep>/<job>). The default MLflow store is there, so one store holds both."""
    top = sweep_dir if sweep_dir is not None else run_dir
    return top.resolve().parent.parent


class JobContext:
    """What a tracker knows of the fedlab job it reports: its directory, its sweep's (None: a single run), the
    parameters and tags it logs once."""

    def __init__(self, run_dir: pathlib.Path, sweep_dir: pathlib.Path | None, params: dict[str, str],
                 overrides: list[str]):
        self.run_dir = run_dir
        self.sweep_dir = sweep_dir
        self.params = params
        self.overrides = overrides

    @property
    def name(self) -> str:
        return self.run_dir.name

    def stored_id(self, tracker: str) -> str | None:
        """The run id `tracker` recorded in this run directory (a resumed run), or None."""
        try:
            return json.loads((self.run_dir / STATE_FILE).read_text()).get(tracker)
        except (OSError, ValueError):
            return None

    def store_id(self, tracker: str, run_id: str) -> None:
        path = self.run_dir / STATE_FILE
        try:
            ids = json.loads(path.read_text())
        except (OSError, ValueError):
            ids = {}
        ids[tracker] = run_id
        tmp = path.with_name(path.name + '.tmp')
        tmp.write_text(json.dumps(ids, indent=2) + '\n')
        tmp.replace(path)


class RunTrackers:
    """The trackers of one job, each guarded: an exception turns that tracker off after one line on stderr."""

    def __init__(self, trackers: Iterable = ()):
        self._trackers = list(trackers)

    def __bool__(self) -> bool:
        return bool(self._trackers)

    def log_round(self, round_num: int, scalars: dict[str, float]) -> None:
        """A committed round's scalars, {`<tensorboard run>/<tag>`: value}, at step `round_num`."""
        self._each('log a round', lambda t: t.log_round(round_num, scalars))

    def end(self, status: str) -> None:
        """The run's end: its files as artifacts, its status (results.json's), the tracker's run closed."""
        self._each('end the run', lambda t: t.end(status))
        self._trackers = []

    def _each(self, what: str, call) -> None:
        for tracker in list(self._trackers):
            try:
                call(tracker)
            except Exception as error:  # the run's own files are the record; the tracker is a view of them
                warn(f'tracker {tracker.name}: could not {what} ({_one_line(error)}); '
                     'it is off for this run, which goes on with its own files')
                self._trackers.remove(tracker)


def open_trackers(config: dict, job: JobContext) -> RunTrackers:
    """Starts the chosen trackers' runs (continuing the run directory's, if resumed). One that cannot start is left
    out with one line; with tracker.required=true that is a FedlabError instead (bad input: exit 2)."""
    settings = config.get('tracker') or {}
    check(settings)
    opened = []
    for name in chosen(config):
        try:
            opened.append(_start(name, settings, job))
        except FedlabError:
            raise
        except Exception as error:
            message = f'tracker {name}: {_one_line(error)}'
            if settings.get('required'):
                raise FedlabError(f'{message} (tracker.required=true: the run is refused)') from None
            warn(f'{message}; the run goes on with its own files')
    return RunTrackers(opened)


def check(settings: dict) -> None:
    """The tracker keys' values, before anything starts (FedlabError: one line, exit 2)."""
    uri = settings.get('uri')
    if uri is not None and 'mlflow' in settings:
        from fedlab.record.trackers import store_uri

        store_uri.check(uri)
    mode = (settings.get('wandb') or {}).get('mode', 'offline')
    if 'wandb' in settings and mode not in ('offline', 'online', 'disabled'):
        raise FedlabError(f'tracker.wandb.mode={mode} is not allowed: offline, online or disabled')


def _start(name: str, settings: dict, job: JobContext):
    if name == 'mlflow':
        from fedlab.record.trackers.mlflow import MlflowTracker

        return MlflowTracker.start(settings, job)
    from fedlab.record.trackers.wandb import WandbTracker

    return WandbTracker.start(settings, job)


def mlflow_status(status: str) -> str:
    """results.json's status as an MLflow run status."""
    return {'completed': 'FINISHED', 'interrupted': 'KILLED'}.get(status, 'FAILED')


def warn(message: str) -> None:
    print(f'fedlab: {message}', file=sys.stderr)


def _one_line(error: BaseException) -> str:
    text = one_line_text(error)
    text = text if len(text) <= 300 else text[:297] + '...'
    return f'{type(error).__name__}: {text}' if text else type(error).__name__

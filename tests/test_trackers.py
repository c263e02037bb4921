"""Experiment trackers (tracker group, fedlab.record.trackers): the config, bad input, and the MLflow tracker against
a temporary SQLite store with fake rounds (in-process; the end-to-end runs are in test_trackers_cli.py, slow)."""

import pathlib
import socket
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from fedlab.errors import FedlabError
from fedlab.record import trackers
from fedlab.record.trackers import store_uri
from tests.conftest import compose_config


def _config(overrides=()) -> dict:
    return OmegaConf.to_container(compose_config(overrides), resolve=True)


@pytest.fixture(scope='module')
def composed() -> dict:
    """The default config and tracker=[mlflow,wandb]'s, composed once (each composition takes a second or two)."""
    none = compose_config()
    return {'none': OmegaConf.to_container(none, resolve=True), 'none_cfg': none,
            'both': _config(['tracker=[mlflow,wandb]'])}


def test_tracker_none_adds_nothing_to_what_a_run_writes(composed):
    config = composed['none']
    assert not config['tracker'] and trackers.chosen(config) == ()
    assert 'tracker' not in trackers.without_tracker(config)  # results.json's config
    from fedlab import cli

    assert 'tracker' not in OmegaConf.to_yaml(cli._without_null_tracker(composed['none_cfg']))  # .hydra/config.yaml


def test_tracker_list_form_chooses_both(composed):
    both = composed['both']
    assert trackers.chosen(both) == ('mlflow', 'wandb')
    assert both['tracker']['uri'] is None and both['tracker']['wandb']['mode'] == 'offline'
    assert both['tracker']['mlflow']['experiment'] == 'fedlab' and both['tracker']['required'] is False


def test_tracker_is_not_part_of_a_runs_identity(composed):
    from fedlab.config import identity

    assert identity.run_identity(composed['both']) == identity.run_identity(composed['none'])
    assert identity.experiment_identity(composed['both']) == identity.experiment_identity(composed['none'])


def test_unknown_tracker_is_one_line_naming_the_options():
    from fedlab import cli

    with pytest.raises(Exception) as raised:
        compose_config(['tracker=neptune'])
    line = cli.one_line(raised.value)
    assert cli._is_config_error(raised.value) and '\n' not in line
    assert "tracker/neptune" in line and 'mlflow, none, wandb' in line


def test_no_tracker_library_is_imported_until_chosen():
    code = ('import sys, fedlab.cli; from fedlab.record import trackers; '
            'print(any(m in sys.modules for m in ("mlflow", "wandb")))')
    assert subprocess.run([sys.executable, '-c', code], capture_output=True, text=True).stdout.strip() == 'False'


@pytest.mark.parametrize('uri, says', [
    ('ftp://example/x', 'is not allowed'),
    ('mlflow.db', 'is not allowed'),
    ('http://', 'is not allowed'),
    ('sqlite:///{file}/mlflow.db', 'cannot write the SQLite store'),  # a folder that is a file
])
def test_bad_store_uri_is_one_line(uri, says, tmp_path):
    (tmp_path / 'file').write_text('')
    uri = uri.format(file=tmp_path / 'file')
    with pytest.raises(FedlabError, match=says) as raised:
        trackers.check({'mlflow': {}, 'uri': uri})
    assert '\n' not in str(raised.value) and 'tracker.uri=' in str(raised.value)


def _job(run_dir: pathlib.Path, sweep_dir=None) -> trackers.JobContext:
    run_dir.mkdir(parents=True, exist_ok=True)
    return trackers.JobContext(run_dir, sweep_dir, {'rounds': '3', 'model._target_': 'fedlab.models.x',
                                                    'seeds.sampling': '7'}, ['rounds=3'])


def _settings(uri: str) -> dict:
    return {'mlflow': {'experiment': 'fedlab'}, 'uri': uri, 'required': False}


def _fake_rounds(tracking, rounds):
    for round_num in rounds:
        tracking.log_round(round_num, {'train/loss': 2.0 - 0.1 * round_num, 'eval/accuracy': 0.1 * round_num,
                                       'privacy/epsilon': 0.5 * round_num})


@pytest.mark.slow  # importing MLflow and creating a store take 10-50 s on a loaded machine
def test_mlflow_run_in_a_sqlite_store_with_params_metrics_status_and_a_resume(tmp_path):
    from mlflow import MlflowClient

    uri = store_uri.default_uri(tmp_path / 'mlruns')
    job = _job(tmp_path / 'runs' / 'run1')
    (job.run_dir / 'metrics.csv').write_text('round\n1\n')
    first = trackers.open_trackers({'tracker': _settings(uri)}, job)
    _fake_rounds(first, [1, 2])
    first.end('interrupted')
    again = trackers.open_trackers({'tracker': _settings(uri)}, job)  # the same run directory, resumed
    _fake_rounds(again, [2, 3])  # round 2 again: rounds after the checkpoint, trained again
    again.end('completed')

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name('fedlab')
    [run] = client.search_runs([experiment.experiment_id])
    assert run.info.status == 'FINISHED' and run.data.tags['fedlab.status'] == 'completed'
    assert run.data.params['seeds.sampling'] == '7' and run.data.tags['fedlab.overrides'] == 'rounds=3'
    history = client.get_metric_history(run.info.run_id, 'privacy/epsilon')
    assert [(m.step, m.value) for m in history] == [(1, 0.5), (2, 1.0), (3, 1.5)]
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ['metrics.csv']
    assert experiment.artifact_location == (tmp_path / 'mlruns' / 'artifacts').as_uri()


@pytest.mark.slow
def test_mlflow_sweep_is_one_parent_with_a_child_per_job(tmp_path):
    from mlflow import MlflowClient

    uri = store_uri.default_uri(tmp_path / 'mlruns')
    sweep = tmp_path / 'multirun' / 'sweep1'
    for job_name, status in [('0_seed=0', 'completed'), ('1_seed=1', 'failed')]:
        tracking = trackers.open_trackers({'tracker': _settings(uri)}, _job(sweep / job_name, sweep))
        _fake_rounds(tracking, [1])
        tracking.end(status)
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name('fedlab').experiment_id])
    parents = [r for r in runs if 'mlflow.parentRunId' not in r.data.tags]
    assert len(parents) == 1 and parents[0].data.tags['fedlab.sweep_dir'] == str(sweep)
    children = {r.info.run_name: r.info.status for r in runs if r.data.tags.get('mlflow.parentRunId')
                == parents[0].info.run_id}
    assert children == {'0_seed=0': 'FINISHED', '1_seed=1': 'FAILED'}


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_dead_store_is_one_line_and_the_run_goes_on_unless_required(tmp_path, capsys):
    settings = _settings(f'http://127.0.0.1:{_closed_port()}')
    tracking = trackers.open_trackers({'tracker': settings}, _job(tmp_path / 'r'))
    assert not tracking
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and 'tracker mlflow' in err and 'goes on with its own files' in err
    with pytest.raises(FedlabError, match='tracker.required=true'):
        trackers.open_trackers({'tracker': {**settings, 'required': True}}, _job(tmp_path / 'r2'))


def test_a_tracker_that_fails_later_is_turned_off_with_one_line(capsys):
    class Broken:
        name = 'broken'

        def log_round(self, round_num, scalars):
            raise OSError('database is locked')

    tracking = trackers.RunTrackers([Broken()])
    tracking.log_round(1, {'train/loss': 1.0})
    tracking.log_round(2, {'train/loss': 1.0})
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and 'database is locked' in err and not tracking

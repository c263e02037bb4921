"""Trackers end to end through the `fedlab` command (slow): an MLflow tracking server over a SQLite store, read back
through its REST API; a sweep's parent and children; a resumed run continuing its MLflow run; a W&B offline run read
back with wandb's own transaction-log reader."""

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow
QUICK = ['rounds=2', 'eval_every=1', 'checkpoint_every=1']


def _fedlab(args, cwd=REPO, check=True):
    env = {k: v for k, v in os.environ.items() if k != 'TF_CPP_MIN_LOG_LEVEL'}
    proc = subprocess.run([sys.executable, '-m', 'fedlab.cli', *args], capture_output=True, text=True, timeout=900,
                          cwd=cwd, env=env)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture
def mlflow_server(tmp_path):
    """`mlflow server` over a SQLite store on a free loopback port; its URL."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [str(pathlib.Path(sys.executable).parent / 'mlflow'), 'server', '--backend-store-uri',
         f'sqlite:///{tmp_path}/server.db', '--default-artifact-root', str(tmp_path / 'artifacts'),
         '--host', '127.0.0.1', '--port', str(port), '--workers', '1'],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f'http://127.0.0.1:{port}'
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(f'{url}/health', timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        yield url
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)


def _rest(url, path, body=None):
    request = urllib.request.Request(f'{url}/api/2.0/mlflow/{path}', method='POST' if body else 'GET',
                                     data=json.dumps(body).encode() if body else None,
                                     headers={'Content-Type': 'application/json'})
    return json.loads(urllib.request.urlopen(request, timeout=30).read())


def _runs(url):
    experiment = _rest(url, 'experiments/get-by-name?experiment_name=fedlab')['experiment']
    return _rest(url, 'runs/search', {'experiment_ids': [experiment['experiment_id']]})['runs']


def _tags(run):
    return {t['key']: t['value'] for t in run['data'].get('tags', [])}


def test_mlflow_server_run_params_metrics_and_status(mlflow_server, tmp_path):
    run_dir = tmp_path / 'runs' / 'r'
    _fedlab(['tracker=mlflow', f'tracker.uri={mlflow_server}', *QUICK, f'hydra.run.dir={run_dir}'])
    [run] = _runs(mlflow_server)
    run_id = run['info']['run_id']
    params = {p['key']: p['value'] for p in run['data']['params']}
    assert params['rounds'] == '2' and params['model._target_'] and 'seeds.sampling' in params
    assert run['info']['status'] == 'FINISHED' and _tags(run)['fedlab.status'] == 'completed'
    history = _rest(mlflow_server, f'metrics/get-history?run_id={run_id}&metric_key=eval/accuracy')['metrics']
    assert [m['step'] for m in history] == [1, 2]
    assert json.loads((run_dir / 'trackers.json').read_text())['mlflow'] == run_id


def test_interrupted_run_is_killed_then_resumed_into_the_same_mlflow_run(mlflow_server, tmp_path):
    args = ['tracker=mlflow', f'tracker.uri={mlflow_server}', 'rounds=4', 'eval_every=1',
            'checkpoint_every=1', f'hydra.run.dir={tmp_path}/r']
    env = {k: v for k, v in os.environ.items() if k != 'TF_CPP_MIN_LOG_LEVEL'}
    process = subprocess.Popen([sys.executable, '-m', 'fedlab.cli', *args], stdout=subprocess.PIPE, text=True,
                               stderr=subprocess.DEVNULL, cwd=REPO, env=env)
    for line in process.stdout:  # SIGTERM once round 1 is recorded: the run stops after the current round
        if line.startswith('round 1/4'):
            process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=600) == 143
    [run] = _runs(mlflow_server)
    assert run['info']['status'] == 'KILLED' and _tags(run)['fedlab.status'] == 'interrupted'

    _fedlab(args)  # the same command continues the run directory, and its MLflow run
    [resumed] = _runs(mlflow_server)
    assert resumed['info']['run_id'] == run['info']['run_id'] and resumed['info']['status'] == 'FINISHED'
    history = _rest(mlflow_server, f'metrics/get-history?run_id={run["info"]["run_id"]}&metric_key=train/loss')
    assert sorted(m['step'] for m in history['metrics']) == [1, 2, 3, 4]  # each round once


def test_mlflow_sweep_parent_and_children_in_the_default_store(tmp_path):
    _fedlab(['-m', 'tracker=mlflow', 'seed=0,1', *QUICK, f'hydra.sweep.dir={tmp_path}/multirun/s'])
    from mlflow import MlflowClient

    client = MlflowClient(f'sqlite:///{tmp_path}/mlruns/mlflow.db')  # the default store: beside multirun/
    runs = client.search_runs([client.get_experiment_by_name('fedlab').experiment_id])
    [parent] = [r for r in runs if 'mlflow.parentRunId' not in r.data.tags]
    children = [r for r in runs if r.data.tags.get('mlflow.parentRunId') == parent.info.run_id]
    assert len(children) == 2 and {r.data.params['seed'] for r in children} == {'0', '1'}
    assert all(len(client.get_metric_history(r.info.run_id, 'train/loss')) == 2 for r in children)
    assert parent.data.tags['fedlab.sweep_dir'] == str(tmp_path / 'multirun' / 's')


def test_required_tracker_with_a_dead_server_refuses_before_training(tmp_path):
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    proc = _fedlab(['tracker=mlflow', f'tracker.uri=http://127.0.0.1:{port}', 'tracker.required=true',
                    f'hydra.run.dir={tmp_path}/r'], check=False)
    assert proc.returncode == 2 and proc.stderr.count('\n') == 1 and 'tracker.required' in proc.stderr
    assert not (tmp_path / 'r').exists()


def test_wandb_offline_run_read_back_with_wandbs_reader(tmp_path):
    run_dir = tmp_path / 'r'
    _fedlab(['tracker=wandb', *QUICK, f'hydra.run.dir={run_dir}'])
    from wandb.proto import wandb_internal_pb2
    from wandb.sdk.internal import datastore

    [log] = run_dir.glob('wandb/offline-run-*/run-*.wandb')
    store = datastore.DataStore()
    store.open_for_scan(str(log))
    config, history, exit_code = {}, [], None
    while (data := store.scan_data()) is not None:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(data)
        kind = record.WhichOneof('record_type')
        if kind == 'run':
            config.update({i.key: i.value_json for i in record.run.config.update})
        elif kind == 'history':
            history.append({(i.key or '/'.join(i.nested_key)): i.value_json for i in record.history.item})
        elif kind == 'exit':
            exit_code = record.exit.exit_code
    assert json.loads(config['rounds']) == '2'
    assert [h['round'] for h in history] == ['1', '2'] and all('eval/accuracy' in h for h in history)
    assert exit_code == 0

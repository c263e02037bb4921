"""The README's TensorBoard command serves a finished run: the real `tensorboard`, over HTTP."""

import contextlib
import json
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest

from fedlab import cli
from fedlab.record import ledger, tables
from tests.conftest import TINY, compose_config

TENSORBOARD = f'{sys.prefix}/bin/tensorboard'


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _get(port: int, path: str, **query):
    url = f'http://127.0.0.1:{port}{path}' + (f'?{urllib.parse.urlencode(query)}' if query else '')
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


@contextlib.contextmanager
def served_tensorboard(logdir, tmp_path, *, until: str | None = None):
    """The real `tensorboard --logdir logdir` on a free port: yields (port, its runs) once it lists a run (`until`:
    that run); stopped on leaving."""
    port = _free_port()
    with open(tmp_path / 'tensorboard.log', 'w') as log:
        server = subprocess.Popen([TENSORBOARD, '--logdir', str(logdir), '--host', '127.0.0.1', '--port', str(port)],
                                  stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        deadline, runs = time.monotonic() + 120, []
        while time.monotonic() < deadline and (not runs or (until and until not in runs)):  # it loads the files
            assert server.poll() is None, (tmp_path / 'tensorboard.log').read_text()[-3000:]
            try:
                runs = _get(port, '/data/runs')
            except OSError:
                pass
            time.sleep(0.5)
        yield port, runs
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.slow
def test_tensorboard_serves_the_train_eval_and_communication_scalars_of_a_run(tmp_path):
    logdir = tmp_path / 'runs'
    cli.train(compose_config([*TINY, 'task.eval_on_train=false']), logdir / 'run')
    with served_tensorboard(logdir, tmp_path) as (port, runs):
        assert {'run/tensorboard/train', 'run/tensorboard/eval', 'run/tensorboard/communication'} <= set(runs), runs
        assert 'run/tensorboard/eval_on_train' not in runs  # not evaluated, so no empty run
        tags = _get(port, '/data/plugin/scalars/tags')
        for population in ('train', 'eval'):
            assert {'loss', 'accuracy', 'examples', 'batches'} <= set(tags[f'run/tensorboard/{population}']), population
        assert set(ledger.COLUMNS) <= set(tags['run/tensorboard/communication'])

        served = _get(port, '/data/plugin/scalars/scalars', run='run/tensorboard/eval', tag='accuracy')
        recorded = [float(row['eval_accuracy']) for row in tables.read_rows(logdir / 'run' / 'metrics.csv')]
        assert [step for _, step, _ in served] == [1, 2]
        assert [value for _, _, value in served] == pytest.approx(recorded)

"""Every config group option composes and points at a real callable; the CLI starts without TensorFlow."""

import subprocess
import sys

import pytest
from hydra.utils import get_method

from tests.conftest import REPO, compose_config

CONF = REPO / 'conf'
GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir() and not p.name.startswith('_'))
OPTIONS = [(g, f.stem) for g in GROUPS for f in sorted((CONF / g).glob('*.yaml'))]


def test_groups_are_the_documented_menu():
    assert {'data', 'model', 'aggregator', 'sampling', 'task', 'experiment'} <= set(GROUPS)
    options = {g: {o for gg, o in OPTIONS if gg == g} for g in GROUPS}
    assert {'linear', 'custom', 'fedavg_cnn', 'simple_cnn'} <= options['model']
    assert {'mean', 'compression'} <= options['aggregator']
    assert {'fixed', 'uniform'} <= options['sampling']
    assert 'digits' in options['data'] and 'train' in options['task'] and 'debug' in options['experiment']


@pytest.mark.parametrize('group,option', OPTIONS)
def test_every_option_composes(group, option):
    cfg = compose_config([f'{group}={option}'])
    if group == 'experiment':
        return
    node = cfg[group]
    if '_target_' in node:
        assert callable(get_method(node._target_))


def test_defaults_follow_the_tutorial():
    cfg = compose_config()
    assert cfg.model._target_ == 'fedlab.models.keras_model_fn' and cfg.model.architecture == 'linear'
    assert (cfg.clients_per_round, cfg.client_epochs, cfg.batch_size, cfg.shuffle_buffer) == (10, 5, 20, 100)
    assert (cfg.client_lr, cfg.server_lr) == (0.02, 1.0)
    for key in ['rounds', 'eval_every', 'seed', 'client_momentum', 'server_momentum', 'print_type_signature']:
        assert key in cfg


def test_debug_preset_is_global():
    cfg = compose_config(['experiment=debug'])
    assert cfg.rounds == 2 and cfg.data.num_clients == 10


def _run_cli_in_process(*args: str) -> tuple[str, list[str]]:
    """Runs `fedlab ARGS` in a fresh interpreter; returns its output and any TensorFlow modules it imported."""
    code = (
        'import sys\n'
        'from fedlab import cli\n'
        f'sys.argv = ["fedlab", *{list(args)!r}]\n'
        'try:\n    cli.main()\nexcept SystemExit:\n    pass\n'
        'print("IMPORTED:", sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "tensorflow_federated")))\n'
    )
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=60)
    imported = proc.stdout.rsplit('IMPORTED:', 1)[1].strip()
    return proc.stdout + proc.stderr, imported


@pytest.mark.parametrize(
    'args,expected',
    [
        (['--help'], 'model: cifar_cnn, custom, fedavg_cnn, linear, simple_cnn'),
        (['--cfg', 'job'], 'client_lr: 0.02'),
        (['model=nope'], "Could not find 'model/nope'"),
        (['data=leaf', 'hydra.run.dir=/tmp/fedlab-test-no-run'],
         'fedlab: error: data=leaf needs data.path=<directory>'),
        (['data=emnist', 'data.cache_dir=/nonexistent/tff', 'data.origin=http://127.0.0.1:9/x.lzma',
          'hydra.run.dir=/tmp/fedlab-test-no-run'],
         'fedlab: error: /nonexistent/tff/emnist_all.sqlite is not in the cache'),
    ],
)
def test_cli_answers_without_importing_tensorflow(args, expected):
    out, imported = _run_cli_in_process(*args)
    assert expected in out
    assert imported == '[]'


HYDRA_FLAGS = [
    (['--help'], 'model: cifar_cnn, custom, fedavg_cnn, linear, simple_cnn'),
    (['--hydra-help'], "Use '--cfg hydra' to Show the Hydra config."),
    (['--cfg', 'job'], 'client_lr: 0.02'),
    (['--cfg', 'hydra'], 'output_subdir: null'),
    (['--cfg', 'all'], 'sweep_summary:'),
    (['--cfg', 'job', '--resolve', 'rounds=7'], 'rounds: 7'),
    (['--info'], 'Defaults Tree'),
    (['--info', 'all'], 'Defaults Tree'),
    (['--info', 'config'], 'client_lr: 0.02'),
    (['--info', 'defaults'], 'fedlab_schema'),
    (['--info', 'defaults-tree'], 'fedlab_schema'),
    (['--info', 'plugins'], 'basic_launcher'),
    (['--info', 'searchpath'], 'pkg://fedlab.conf'),
    (['-sc', 'install=bash'], 'complete -o nospace -o default -F hydra_bash_completion fedlab'),
]


@pytest.mark.parametrize('args,expected', HYDRA_FLAGS, ids=[' '.join(a) for a, _ in HYDRA_FLAGS])
def test_hydras_own_flags_answer_without_tensorflow(args, expected):
    out, imported = _run_cli_in_process(*args)
    assert expected in out
    assert 'error' not in out.lower() and 'Traceback' not in out, out
    assert imported == '[]'

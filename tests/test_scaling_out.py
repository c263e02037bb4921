"""Scaling out: launcher and sweeper presets, where sweep jobs stop their TFF worker, the runtime group, the
`fedlab-worker` service and the remote context (fast parts; the sweeps and remote runs are in test_scaling_out_slow)."""

import importlib
import os
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict

from fedlab import runtime
from fedlab.config import launchers
from fedlab.errors import FedlabError, WorkerLost
from tests.conftest import compose_config
from tests.test_cli import _run
from tests.worker_services import FEDLAB_WORKER, WorkerService, worker_services

HAS_RAY = importlib.util.find_spec('ray') is not None


def _hydra_config(overrides, mode):
    cfg = compose_config_with_hydra(overrides)
    with open_dict(cfg):
        cfg.hydra.mode = mode
    return cfg.hydra


def compose_config_with_hydra(overrides):
    from hydra import compose, initialize_config_module

    with initialize_config_module('fedlab.conf', version_base='1.3'):
        return compose('config', overrides=list(overrides), return_hydra_config=True)


@pytest.mark.parametrize(
    'launcher, in_process',
    [
        ('basic', True),
        ('joblib', False),
        ('submitit_local', False),
        ('slurm', False),
        pytest.param('ray_local', False, marks=pytest.mark.skipif(not HAS_RAY, reason='make install EXTRAS=ray')),
        pytest.param('ray_cluster', False, marks=pytest.mark.skipif(not HAS_RAY, reason='make install EXTRAS=ray')),
    ],
)
def test_where_a_sweep_job_runs_is_read_from_hydras_config(launcher, in_process):
    hydra_cfg = _hydra_config([f'hydra/launcher={launcher}'], RunMode.MULTIRUN)
    assert launchers.job_runs_in_launching_process(hydra_cfg) is in_process
    # A single run is always in-process, whatever the launcher.
    assert launchers.job_runs_in_launching_process(_hydra_config([f'hydra/launcher={launcher}'], RunMode.RUN))


def test_slurm_preset_sets_the_keys_a_cluster_user_sets():
    launcher = _hydra_config(['hydra/launcher=slurm', 'hydra.launcher.partition=cpu'], RunMode.MULTIRUN).launcher
    assert launcher._target_.endswith('SlurmLauncher')
    for key in ('partition', 'account', 'qos', 'timeout_min', 'cpus_per_task', 'gpus_per_node', 'mem_gb',
                'array_parallelism', 'setup', 'additional_parameters'):
        assert key in launcher, key
    assert launcher.partition == 'cpu' and launcher.cpus_per_task == 2 and launcher.array_parallelism == 16


def test_slurm_sweep_writes_the_sbatch_script_a_cluster_would_run(tmp_path):
    """No SLURM here: fake `srun` and `sbatch` on PATH; sbatch keeps the script submitit wrote and refuses it."""
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    (bin_dir / 'srun').write_text('#!/bin/sh\nexit 0\n')
    (bin_dir / 'sbatch').write_text(f'#!/bin/sh\ncp "$1" {tmp_path}/submitted.sh\necho refused >&2\nexit 1\n')
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    proc, leaked = _run(
        ['-m', 'hydra/launcher=slurm', 'hydra.launcher.partition=cpu', 'hydra.launcher.timeout_min=30',
         'hydra.launcher.array_parallelism=1', 'seed=0,1', 'rounds=1'],
        tmp_path, extra_env={'PATH': f'{bin_dir}:{os.environ["PATH"]}'},
    )
    assert proc.returncode != 0 and not leaked
    script = (tmp_path / 'submitted.sh').read_text()
    for line in ('#SBATCH --partition=cpu', '#SBATCH --time=30', '#SBATCH --cpus-per-task=2', '#SBATCH --mem=8GB',
                 '#SBATCH --array=0-1%1'):
        assert line in script, script
    assert f'{sys.executable} -u -m submitit.core._submit' in script  # this environment's Python runs the job


def test_optuna_preset_maximizes_accuracy_with_a_seeded_sampler():
    cfg = compose_config_with_hydra(['hydra/sweeper=optuna_accuracy', 'seed=7'])
    sweeper = cfg.hydra.sweeper
    assert sweeper.direction == 'maximize' and sweeper.max_failure_rate == 1.0
    assert set(sweeper.params) >= {'client_lr', 'server_lr'}
    assert OmegaConf.select(cfg, 'hydra.sweeper.sampler.seed') == 7
    first, second = (instantiate(sweeper.sampler) for _ in range(2))
    import optuna

    draws = [optuna.create_study(sampler=s).ask().suggest_float('x', 0, 1) for s in (first, second)]
    assert draws[0] == draws[1]


def test_an_optuna_study_whose_trials_all_fail_ends_with_the_summary_not_a_crash(tmp_path):
    # Each trial fails before TensorFlow loads: 2 clients cannot give 3 per round.
    proc, leaked = _run(
        ['-m', 'hydra/sweeper=optuna_accuracy', 'hydra.sweeper.n_trials=2',
         'data.num_clients=choice(1,2)', 'clients_per_round=3'],
        tmp_path,
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert 'Traceback' not in proc.stderr and not leaked
    assert proc.stderr.count('failed: clients_per_round=3 is larger than the population') == 2
    assert proc.stderr.strip().endswith('fedlab: error: no Optuna trial completed; the failed jobs are listed above')


def test_runtime_group_composes_local_by_default_and_remote_with_tensors():
    assert instantiate(compose_config().runtime) == runtime.LocalRuntime()
    cfg = compose_config(['runtime=remote', 'runtime.workers=[10.0.0.5:8000,node7:8001]'])
    remote = instantiate(cfg.runtime)
    assert remote.workers == ('10.0.0.5:8000', 'node7:8001') and not remote.shared_filesystem
    assert cfg.client_inputs == 'tensors'  # the workers cannot read shard files written here
    remote.check(client_inputs=cfg.client_inputs)
    assert compose_config(['runtime=remote', 'client_inputs=shards']).client_inputs == 'shards'


@pytest.mark.parametrize(
    'workers, client_inputs, shared, message',
    [
        ([], 'tensors', False, 'runtime=remote needs runtime.workers'),
        (['node7'], 'tensors', False, r"runtime.workers\[0\]='node7' is not allowed"),
        (['a:1', 'a:1'], 'tensors', False, 'names a worker twice'),
        (['a:70000'], 'tensors', False, 'is not allowed'),
        (['a:1'], 'shards', False, 'client_inputs=shards is not allowed on runtime=remote'),
    ],
)
def test_remote_runtime_refuses_what_cannot_work(workers, client_inputs, shared, message):
    with pytest.raises(FedlabError, match=message):
        runtime.RemoteRuntime(workers=workers, shared_filesystem=shared).check(client_inputs=client_inputs)
    runtime.RemoteRuntime(workers=['a:1', '[::1]:2'], shared_filesystem=True).check(client_inputs='shards')


def test_bad_remote_settings_are_one_line_and_exit_2_before_tensorflow(tmp_path):
    proc, _ = _run(['runtime=remote', 'runtime.workers=[localhost:1]', 'client_inputs=shards'], tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.startswith('fedlab: error: client_inputs=shards is not allowed on runtime=remote')
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / 'run').exists()


def test_fedlab_worker_stops_on_sigterm_and_ctrl_c_and_never_orphans_its_binary():
    # SIGKILL: test_remote_tls.test_the_worker_listens_on_loopback_only_and_its_binary_is_off_the_network_...
    for signum in (signal.SIGTERM, signal.SIGINT):
        service = WorkerService()
        assert service.stop(signum) == 0
        assert not os.path.exists(f'/proc/{service.binary_pid}')


def test_fedlab_worker_refuses_a_port_in_use():
    with worker_services(1) as (service,):
        proc = subprocess.run([str(FEDLAB_WORKER), '--port', str(service.port)],
                              capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    expected = f'fedlab-worker: error: --port={service.port} is in use on 127.0.0.1'
    assert proc.stderr.startswith(expected) and len(proc.stderr.strip().splitlines()) == 1


@pytest.fixture(scope='module')
def sum_of_squares():
    import tensorflow_federated as tff

    @tff.tensorflow.computation(np.float32)
    def square(x):
        return x * x

    @tff.federated_computation(tff.FederatedType(np.float32, tff.CLIENTS))
    def computation(values):
        return tff.federated_sum(tff.federated_map(square, values))

    return computation


def test_remote_workers_compute_what_the_local_context_computes(sum_of_squares):
    from fedlab.tff_internals import remote_context

    values = [float(v) for v in range(1, 8)]  # 7 clients: chunks of 4 and 3
    local = sum_of_squares(values)
    with worker_services(2) as services:
        with remote_context.remote_execution([s.address for s in services]):
            assert sum_of_squares(values) == local == sum(v * v for v in values)


def test_a_lost_worker_is_named_and_an_unreachable_one_too(sum_of_squares):
    from fedlab.tff_internals import remote_context

    with worker_services(2) as (first, second):
        with remote_context.remote_execution([first.address, second.address], reconnect_timeout=1):
            assert sum_of_squares([1.0, 2.0]) == 5.0
            second.kill()
            with pytest.raises(WorkerLost, match=f'TFF worker {second.address} is lost: no answer for 1 s'):
                sum_of_squares([1.0, 2.0])
        # Nothing listens there any more: refused at once, not after connect_timeout (which would say 'cannot be
        # reached (no answer in 30 s)').
        with pytest.raises(WorkerLost, match=f'TFF worker {second.address} refused the connection: nothing listens'):
            with remote_context.remote_execution([first.address, second.address], connect_timeout=30):
                pass
    assert WorkerLost.exit_code == 4


def test_a_worker_that_does_not_answer_yet_is_waited_for_until_connect_timeout():
    from fedlab.tff_internals import remote_context

    with socket.create_server(('127.0.0.1', 0)) as silent:  # accepts TCP (the kernel's backlog), never answers
        address = f'127.0.0.1:{silent.getsockname()[1]}'
        with pytest.raises(WorkerLost, match=f'TFF worker {address} cannot be reached \\(no answer in 1 s\\)'):
            with remote_context.remote_execution([address], connect_timeout=1):
                pass


def test_remote_context_refuses_another_tff_version(monkeypatch):
    import tensorflow_federated as tff

    from fedlab.tff_internals import remote_context

    monkeypatch.setattr(tff, '__version__', '0.88.0')
    with pytest.raises(ImportError, match='uses internals of TFF 0.87.0, and TFF 0.88.0 is installed'):
        importlib.reload(remote_context)
    monkeypatch.undo()
    importlib.reload(remote_context)

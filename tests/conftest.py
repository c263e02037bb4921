"""Shared fixtures: composing fedlab's packaged config the way the CLI does, without a subprocess."""

import os
import pathlib

import pytest
from hydra import compose, initialize_config_module

REPO = pathlib.Path(__file__).resolve().parents[1]
LEAF_SAMPLE = REPO.parent / 'shared' / 'data' / 'femnist_leaf_sample'
# The real LEAF sample is not in the repo (it must not be copied there): it lives beside it, in ../shared, on the
# team's machines and in CI. Elsewhere its tests skip; CI sets FEDLAB_REQUIRE_LEAF_SAMPLE=1 (.ci/run), so there a
# missing sample fails them instead of skipping them unnoticed.
needs_leaf_sample = pytest.mark.skipif(
    not LEAF_SAMPLE.is_dir() and not os.environ.get('FEDLAB_REQUIRE_LEAF_SAMPLE'),
    reason=f'the real LEAF sample is not beside the repo here ({LEAF_SAMPLE}); CI has it as ../shared',
)

# Small enough that a process builds and trains in seconds, large enough to see learning.
TINY = ['data.num_clients=6', 'clients_per_round=3', 'rounds=2', 'eval_every=1', 'client_epochs=2']


def modules_loaded_by(code: str, roots=('tensorflow', 'tensorflow_federated')) -> list[str]:
    """The modules under `roots` that a fresh Python process has loaded after running `code` (boundary tests: the
    parts that answer before TensorFlow loads must never import it)."""
    import json
    import subprocess
    import sys

    roots = json.dumps(list(roots))
    report = f"\nimport json, sys\nprint(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {roots})))\n"
    proc = subprocess.run([sys.executable, '-c', code + report], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def compose_config(overrides=()):
    with initialize_config_module('fedlab.conf', version_base='1.3'):
        return compose('config', overrides=list(overrides))


@pytest.fixture(scope='session', autouse=True)
def _private_fedlab_cache(tmp_path_factory):
    """fedlab's data cache and shard files go to a temporary directory, not the user's ~/.cache/fedlab."""
    import os

    os.environ['FEDLAB_CACHE_DIR'] = str(tmp_path_factory.mktemp('fedlab-cache'))
    yield


@pytest.fixture(scope='session', autouse=True)
def _stop_tff_workers():
    """Tests that run TFF computations in this process start its worker: the CLI's cleanup applies here too,
    so it is stopped at the end, on SIGTERM (e.g. `timeout`), and by its watchdog if pytest is killed."""
    from fedlab.run import interrupts, worker_processes

    with interrupts.handled(), worker_processes.worker_cleanup():
        yield

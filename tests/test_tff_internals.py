"""TFF's internals behind one version gate (fedlab.tff_internals): only that package imports TFF's private modules or
touches private attributes, the supported version is written once, and with the gate saying no (another TFF
installed, here a patched `tensorflow_federated.__version__`) every optimisation falls back to TFF's public API, with
one warning line, and a training job still completes with the same metrics."""

import ast
import csv
import json
import logging
import math
import pathlib
import re
import shutil
import subprocess

import pytest

from fedlab.tff_internals import version_gate
from tests.conftest import REPO, TINY, compose_config, modules_loaded_by

PACKAGE = REPO / 'fedlab'
INTERNALS = PACKAGE / 'tff_internals'
PRIVATE_MODULES = 'tensorflow_federated.python'
OTHER_TFF = '0.88.0'


def _python_files():
    return sorted(PACKAGE.rglob('*.py'))


def _outside_internals(path: pathlib.Path) -> bool:
    return INTERNALS not in path.parents


# 1. The rules, read from the source.


def private_tff_imports(source: str) -> list[str]:
    """Every import of TFF's private modules in `source`, in any form, as its line of code."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names = [node.module or ''] + [f'{node.module}.{alias.name}' for alias in node.names]
        elif (  # importlib.import_module('tensorflow_federated.python...'), __import__(...)
            isinstance(node, ast.Call)
            and (getattr(node.func, 'attr', None) or getattr(node.func, 'id', None)) in ('import_module', '__import__')
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            names = [str(node.args[0].value)]
        else:
            continue
        if any(name == PRIVATE_MODULES or name.startswith(PRIVATE_MODULES + '.') for name in names):
            found.append(ast.unparse(node))
    return found


def private_attributes(source: str) -> list[str]:
    """Every private attribute `source` reads or writes on an object other than `self` or `cls` (`x._name`,
    `getattr(x, '_name')`), as its code. Hydra's `_target_`-style keys are not private."""

    def private(name) -> bool:
        return isinstance(name, str) and name.startswith('_') and not name.endswith('_')

    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and private(node.attr):
            if not (isinstance(node.value, ast.Name) and node.value.id in ('self', 'cls')):
                found.append(ast.unparse(node))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ('getattr', 'hasattr', 'setattr', 'delattr')
            and len(node.args) > 1
            and isinstance(node.args[1], ast.Constant)
            and private(node.args[1].value)
        ):
            found.append(ast.unparse(node))
    return found


def test_the_checks_see_every_form():
    for code in (
        'import tensorflow_federated.python.core.impl.types',
        'import tensorflow_federated.python as p',
        'from tensorflow_federated.python.core.impl.compiler import building_blocks',
        'from tensorflow_federated import python',
        'from tensorflow_federated import python as p',
        "importlib.import_module('tensorflow_federated.python.core.impl.executors.value_serialization')",
    ):
        assert private_tff_imports(code), code
    for code in ('import tensorflow_federated as tff', 'from tensorflow_federated import framework, types'):
        assert not private_tff_imports(code), code
    for code in ('manager._process = None', 'x = model._keras_model', "hasattr(o, '_process')",
                 'self._context._executor_factory', 'value_serialization._serialize_struct_type = f'):  # fmt: skip
        assert private_attributes(code), code
    for code in ('self._process = p', 'cls._cache', 'cfg.data._target_', 'tff.__version__', "getattr(m, 'name')"):
        assert not private_attributes(code), code


def test_only_tff_internals_imports_tffs_private_modules():
    offenders = {
        str(path.relative_to(REPO)): private_tff_imports(path.read_text())
        for path in _python_files()
        if _outside_internals(path)
    }
    assert not {path: found for path, found in offenders.items() if found}
    inside = [path for path in _python_files() if not _outside_internals(path) and private_tff_imports(path.read_text())]
    assert inside, 'the check found no private import even in fedlab/tff_internals: it checks nothing'


def test_only_tff_internals_touches_private_attributes_of_other_objects():
    """TFF's objects above all (its Keras wrapper's model and loss, its worker manager's Popen and stub, its
    serializers): outside fedlab.tff_internals, fedlab touches no private attribute but its own objects' (self)."""
    offenders = {
        str(path.relative_to(REPO)): private_attributes(path.read_text())
        for path in _python_files()
        if _outside_internals(path)
    }
    assert not {path: found for path, found in offenders.items() if found}
    inside = ' '.join(' '.join(private_attributes(p.read_text())) for p in INTERNALS.glob('*.py'))
    for known in ('_keras_model', '_loss_fns', '_process', '_stub', '_serialize_struct_type', '_async_context'):
        assert known in inside, known  # the check sees the ones fedlab.tff_internals does use


def test_the_supported_version_is_written_once_and_read_by_the_gate_only():
    gate = INTERNALS / 'version_gate.py'
    literal = re.compile(r"""['"]0\.87\.0['"]""")
    assert len(literal.findall(gate.read_text())) == 1
    assert [str(p.relative_to(REPO)) for p in _python_files() if p != gate and literal.search(p.read_text())] == []
    readers = []
    for path in _python_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Attribute)
                and node.attr == '__version__'
                and isinstance(node.value, ast.Name)
                and node.value.id in ('tff', 'tf', 'tensorflow_federated', 'tensorflow')
                and path != gate
            ):
                readers.append(f'{path.relative_to(REPO)}: {ast.unparse(node)}')
    assert readers == []


def test_importing_the_package_and_its_gate_loads_no_tensorflow():
    code = (
        'import sys\n'
        'import fedlab.tff_internals, fedlab.tff_internals.version_gate, fedlab.runtime, fedlab.run.worker_processes\n'
    )
    assert modules_loaded_by(code) == []


# 2. The gate saying no.


def _version_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and OTHER_TFF in r.getMessage()]


def test_the_gate_warns_once_naming_both_versions(caplog):
    import tensorflow_federated as tff

    assert tff.__version__ == version_gate.SUPPORTED_TFF, 'these tests expect the supported TFF installed'
    assert version_gate.supported()
    with caplog.at_level(logging.WARNING):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(tff, '__version__', OTHER_TFF)
            version_gate.forget()
            assert [version_gate.supported() for _ in range(3)] == [False] * 3
            assert not version_gate.keras_supported()
        assert version_gate.supported()  # the real version again
    version_gate.forget()
    (warning,) = _version_warnings(caplog)
    assert f'TFF {OTHER_TFF} is installed, not {version_gate.SUPPORTED_TFF}' in warning and '\n' not in warning
    assert "internal optimisations are off" in warning and "TFF's public API" in warning


def test_with_the_gate_off_the_internals_stand_aside(tmp_path, monkeypatch):
    import tensorflow_federated as tff
    from tensorflow_federated.python.core.impl.executors import value_serialization

    from fedlab import models, runtime
    from fedlab.errors import FedlabError
    from fedlab.fast_paths import round_blocks
    from fedlab.run import worker_processes
    from fedlab.tff_internals import keras_forward_pass, serialization, worker_launch

    process, model = _process(), models.keras_model_fn((8, 8, 1), 10, architecture='linear')()
    assert serialization.install() and value_serialization._serialize_struct_type is serialization._serialize_struct
    assert keras_forward_pass.ForwardPass(model).plain and round_blocks.RoundBlocks(process, resident=True).resident

    monkeypatch.setattr(tff, '__version__', OTHER_TFF)
    version_gate.forget()
    try:
        # In-place serialization: TFF's own serializers again.
        assert not serialization.install()
        assert value_serialization._serialize_struct_type is not serialization._serialize_struct

        # The client loops' forward pass: the model's own. Resident state: plain calls, the state in Python.
        forward_pass = keras_forward_pass.ForwardPass(model)
        assert not forward_pass.plain and forward_pass.initial_sums() == ()
        assert not round_blocks.RoundBlocks(process, resident=True).resident

        # The worker: TFF's Popen, no variables from fedlab, and stopped by pid without TFF's manager.
        def no_manager(*args):
            raise AssertionError("TFF's worker manager touched with the gate off")

        monkeypatch.setattr(worker_launch, 'stop_managed_workers', no_manager)
        worker_processes.set_intra_op_threads(1)
        assert worker_launch.worker_environment() == {}
        binary = tmp_path / worker_processes.WORKER_NAME
        shutil.copy('/bin/sleep', binary)
        worker = subprocess.Popen([str(binary), '60'])
        assert worker.pid in worker_processes.stop_workers(timeout=2)
        assert worker.poll() is not None

        # runtime=remote: refused in one line.
        with pytest.raises(FedlabError) as refused:
            with runtime.RemoteRuntime(workers=('localhost:1',)).activate(client_inputs='tensors'):
                pass
        message = str(refused.value)
        assert f'runtime=remote needs TFF {version_gate.SUPPORTED_TFF}' in message and OTHER_TFF in message
        assert '\n' not in message
    finally:
        version_gate.forget()
        monkeypatch.undo()
    worker_processes.set_intra_op_threads(None)  # as the other tests expect: the shield on, no variables


def _process():
    import tensorflow_federated as tff

    from fedlab import models

    model_fn = models.keras_model_fn((8, 8, 1), 10, architecture='linear')
    return tff.learning.algorithms.build_weighted_fed_avg(
        model_fn, client_optimizer_fn=tff.learning.optimizers.build_sgdm(0.1)
    )


def test_the_ledger_counts_through_tffs_public_api_or_says_why_not(monkeypatch, caplog):
    import tensorflow_federated as tff

    from fedlab.record import ledger

    process = _process()
    counted = ledger.measure(process)
    weights = 8 * 8 * 10 + 10
    assert counted.counted and counted.raw_update_bits == 32 * weights
    assert counted.bits_per_client(ledger.DOWNLINK) >= 32 * weights

    # TFF's public API moved (here: no tff.framework.Intrinsic): on the gate's TFF that is an error of fedlab's ...
    monkeypatch.delattr(tff.framework, 'Intrinsic')
    with pytest.raises(AttributeError):
        ledger.measure(process)
    # ... on another TFF, the run goes on without a count, and says why in its communication line.
    monkeypatch.setattr(tff, '__version__', OTHER_TFF)
    version_gate.forget()
    try:
        cost = ledger.measure(process)
    finally:
        version_gate.forget()
    assert not cost.counted and not ledger.warn_if_compression_is_idle(cost)
    assert 'Intrinsic' in cost.not_counted and OTHER_TFF in cost.not_counted
    communication = ledger.Ledger(cost)
    line = communication.describe()
    assert line.startswith('communication per client and round: not counted: ') and '\n' not in line
    assert communication.round_values(1, ['a', 'b']) == dict.fromkeys(ledger.COLUMNS, '')
    communication.restore({c: '' for c in ledger.COLUMNS})
    assert communication.summary() == {'not_counted': cost.not_counted}


def _rows(path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_a_training_job_completes_on_tffs_public_api_when_the_gate_says_no(tmp_path, monkeypatch, caplog):
    """The default efficiency settings (resident_state, pack_clients, client_inputs=shards, intra_op_threads=1),
    first with the internals on, then off: the same metrics (the forward pass's metrics differ by float rounding
    only), one warning line, and the ledger counts the same bits through TFF's public API."""
    import tensorflow_federated as tff

    from fedlab import cli
    from fedlab.record import ledger
    from fedlab.tff_internals import keras_forward_pass, resident_state, serialization

    cfg = compose_config([*TINY, 'rounds=3'])
    assert cfg.efficiency.resident_state and cfg.efficiency.pack_clients and cfg.client_inputs == 'shards'

    plain_forward_passes = []  # ForwardPass.plain of every client loop traced
    built = keras_forward_pass.ForwardPass.__init__

    def recording(self, model):
        built(self, model)
        plain_forward_passes.append(self.plain)

    monkeypatch.setattr(keras_forward_pass.ForwardPass, '__init__', recording)
    residents = []
    caller = resident_state.ResidentCaller.__init__
    monkeypatch.setattr(resident_state.ResidentCaller, '__init__', lambda self: residents.append(caller(self)))
    in_place = []
    serialize_into = serialization._serialize_into
    monkeypatch.setattr(serialization, '_serialize_into', lambda *args: in_place.append(serialize_into(*args)))

    cli.train(cfg, tmp_path / 'on')
    assert plain_forward_passes and all(plain_forward_passes) and residents and in_place  # the internals were used

    plain_forward_passes.clear(), residents.clear(), in_place.clear()
    monkeypatch.setattr(tff, '__version__', OTHER_TFF)
    version_gate.forget()
    try:
        with caplog.at_level(logging.WARNING):
            cli.train(cfg, tmp_path / 'off')
    finally:
        version_gate.forget()
    assert plain_forward_passes and not any(plain_forward_passes) and not residents and not in_place

    (warning,) = _version_warnings(caplog)
    assert f'TFF {OTHER_TFF} is installed, not {version_gate.SUPPORTED_TFF}' in warning

    on, off = (json.loads((tmp_path / run / 'results.json').read_text()) for run in ('on', 'off'))
    assert on['status'] == off['status'] == 'completed' and off['rounds_completed'] == 3
    assert off['communication'] == on['communication'] and off['communication']['uplink_bits_per_client'] > 0
    rows_on, rows_off = _rows(tmp_path / 'on' / 'metrics.csv'), _rows(tmp_path / 'off' / 'metrics.csv')
    assert len(rows_off) == len(rows_on) == 3 and [list(r) for r in rows_off] == [list(r) for r in rows_on]
    for got, want in zip(rows_off, rows_on):
        for column, value in want.items():
            if column.endswith('_seconds'):
                continue
            if column in ledger.COLUMNS or column in ('round', 'clients'):
                assert got[column] == value, column
            elif value:
                assert math.isfinite(float(got[column])), column
                assert float(got[column]) == pytest.approx(float(value), rel=1e-5, abs=1e-6), column
            else:
                assert got[column] == value, column

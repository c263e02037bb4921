"""fedlab.config.components: every `_target_` under conf/ declared once, with the properties the checks read; the
checks compare no `_target_` string of their own; a user's own `_target_` keeps working. No TensorFlow here."""

import ast

import pytest
import yaml

from fedlab.config import combinations, components, efficiency
from fedlab.errors import FedlabError
from fedlab.privacy import checks
from tests.conftest import REPO, modules_loaded_by

CONF = REPO / 'conf'
PACKAGE = REPO / 'fedlab'
TABLE_MODULE = PACKAGE / 'config' / 'components.py'
GROUP_OF_DIRECTORY = {**components.KEY_GROUPS, 'hydra': 'callback'}  # conf/<directory>/ -> the rows' group


def _targets(node, path=()):
    """(key path, `_target_`) of every `_target_` in a parsed yaml file."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == '_target_':
                yield path, value
            else:
                yield from _targets(value, (*path, key))
    elif isinstance(node, list):
        for item in node:
            yield from _targets(item, path)


def _conf_targets() -> list[tuple[str, str, str]]:
    """(yaml file, group its directory is, `_target_`) for every `_target_` under conf/."""
    found = []
    for path in sorted(CONF.rglob('*.yaml')):
        relative = path.relative_to(CONF)
        directory = relative.parts[0] if len(relative.parts) > 1 else relative.stem
        for keys, target in _targets(yaml.safe_load(path.read_text()) or {}):
            group = 'callback' if 'callbacks' in keys else GROUP_OF_DIRECTORY.get(directory, directory)
            found.append((str(relative), group, target))
    return found


def _source_modules():
    """(path, parsed module) of every module under fedlab/ but the table's."""
    for path in sorted(PACKAGE.rglob('*.py')):
        if path != TABLE_MODULE:
            yield path, ast.parse(path.read_text())


def _docstrings(tree) -> set[int]:
    kinds = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    return {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, kinds) and node.body and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }  # fmt: skip


def _strings(tree):
    """Every string literal but docstrings (f-strings' literal parts included), with its line."""
    docstrings = _docstrings(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node.lineno, node.value


# --- the table against conf/ and the code ----------------------------------------------------------------------


def test_every_target_under_conf_has_a_row_of_its_group():
    found = _conf_targets()
    assert len(found) > 30  # the parse found them: every group's options
    for file, group, target in found:
        component = components.of(target)
        assert component is not None, f'{file}: {target} has no row in fedlab.config.components.TABLE'
        assert component.group == group, f'{file}: {target} is a row of {component.group}, not {group}'


def test_every_row_is_a_target_under_conf_that_exists():
    targets = [c.target for c in components.TABLE]
    assert len(targets) == len(set(targets)), 'a target has two rows'
    used = {target for _, _, target in _conf_targets()}
    for component in components.TABLE:
        assert component.group in components.GROUPS, component
        assert component.target in used, f'{component.target}: a row no yaml file under conf/ names'
        assert components.importable(component.target), f'{component.target}: no such module or name'


def test_properties_have_their_values_and_groups():
    for component in components.TABLE:
        assert component.dp in (None, 'adaptive', 'fixed'), component
        aggregator_only = component.dp or component.unweighted or component.linear or component.local_only
        assert not aggregator_only or component.group == 'aggregator', component
        algorithm_only = component.packable or component.proximal or component.dp_uncovered
        assert not algorithm_only or component.group == 'algorithm', component
        assert not (component.sgd or component.first_moment or component.adaptive) or component.group == 'optimizer'
    names = [(c.group, c.name) for c in components.TABLE]
    assert len(names) == len(set(names)), 'two rows of one group share a name'


def _functions(path):
    return {node.name: node for node in ast.parse(path.read_text()).body if isinstance(node, ast.FunctionDef)}


def test_aggregator_rows_say_what_fedlab_aggregators_builds():
    """DP (and how it clips), unweighted and local-only, read from fedlab/aggregators.py's source (no TFF)."""
    functions = _functions(PACKAGE / 'aggregators.py')
    for component in components.rows('aggregator'):
        source = ast.unparse(functions[component.target.rpartition('.')[2]])
        returns = ast.unparse(functions[component.target.rpartition('.')[2]].returns)
        clipping = 'adaptive' if 'gaussian_adaptive' in source else 'fixed' if 'gaussian_fixed' in source else None
        assert component.dp == clipping, component
        assert component.unweighted == ('UnweightedAggregationFactory' in returns), component
        assert component.local_only == ('set_sync_test_cpp_execution_context' in source), component
    assert [c.name for c in components.rows('aggregator', linear=True)] == ['mean']  # TFF's MeanFactory


def test_algorithm_and_optimizer_rows_say_what_their_builders_take():
    for component in components.rows('algorithm'):
        module, _, builder = component.target.rpartition('.')
        function = _functions(REPO / (module.replace('.', '/') + '.py'))[builder]
        parameters = {a.arg for a in function.args.args + function.args.kwonlyargs}
        assert component.packable == ('pack_clients' in parameters), component
        assert component.client_training == ('client_optimizer' in parameters), component
    functions = _functions(PACKAGE / 'algorithms' / 'optimizers.py')
    for component in components.rows('optimizer'):
        parameters = {a.arg for a in functions[component.name].args.args}
        assert component.sgd == ('momentum' in parameters), component
        assert component.first_moment == ('beta_1' if 'beta_1' in parameters else None), component


# --- no `_target_` compared anywhere else ----------------------------------------------------------------------


def test_no_module_but_the_table_names_a_target_path():
    """A string starting with a path the table's targets live under (or a prefix of one, as 'fedlab.algorithms.')
    is a `_target_` compared by hand. Docstrings may name them; messages naming other modules may too."""
    modules = {c.module for c in components.TABLE}
    found = []
    for path, tree in _source_modules():
        for line, value in _strings(tree):
            text = value.rstrip('.')
            if value.startswith('fedlab.') and any(
                text == m or text.startswith(m + '.') or m.startswith(text + '.') for m in modules
            ):
                found.append(f'{path.relative_to(REPO)}:{line}: {value!r}')
    assert not found, 'target paths outside fedlab/config/components.py: ' + '; '.join(found)


def test_no_module_but_the_table_matches_a_target_by_its_class_name():
    """runtime.endswith('RemoteRuntime') and the like: the table's classes are not named in strings elsewhere."""
    classes = {c.target.rpartition('.')[2] for c in components.TABLE if c.target.rpartition('.')[2][0].isupper()}
    found = [
        f'{path.relative_to(REPO)}:{line}: {value!r}'
        for path, tree in _source_modules()
        for line, value in _strings(tree)
        if value in classes
    ]
    assert not found, '; '.join(found)


def test_the_dp_aggregators_are_listed_once():
    """Only the table says which aggregators are DP: no list, tuple, set or dict elsewhere holds two of them."""
    dp = {c.name for c in components.rows('aggregator')} - {c.name for c in components.rows('aggregator', dp=None)}
    assert dp == {'dp', 'dp_fixed'}
    found = []
    for path, tree in _source_modules():
        for node in ast.walk(tree):
            elements = node.keys if isinstance(node, ast.Dict) else getattr(node, 'elts', None)
            if isinstance(node, (ast.Tuple, ast.List, ast.Set, ast.Dict)) and elements:
                values = {e.value for e in elements if isinstance(e, ast.Constant) and isinstance(e.value, str)}
                names = {v.rpartition('.')[2] for v in values}
                if len(names & dp) >= 2:
                    found.append(f'{path.relative_to(REPO)}:{node.lineno}')
    assert not found, 'DP aggregators listed outside fedlab/config/components.py: ' + ', '.join(found)
    assert not hasattr(checks, 'DP_AGGREGATORS') and not hasattr(efficiency, '_PACKABLE_ALGORITHMS')


# --- lookups, aliases, a user's own targets --------------------------------------------------------------------


def test_lookups_read_the_table_by_config_key():
    config = {
        'aggregator': {'_target_': 'fedlab.aggregators.dp', 'noise_multiplier': 1.0},
        'server_optimizer': {'_target_': 'fedlab.algorithms.optimizers.adam'},
        'client_lr_schedule': {'_target_': 'fedlab.algorithms.schedules.Constant'},
        'sampling': {'_target_': 'fedlab.aggregators.mean'},  # a row, but of another group
        'runtime': None,
    }
    assert components.of_config(config, 'aggregator').dp == 'adaptive'
    assert components.of_config(config, 'server_optimizer').adaptive
    assert components.of_config(config, 'client_lr_schedule').constant
    assert components.of_config(config, 'sampling') is None
    assert components.of_config(config, 'runtime') is None and components.of_config(config, 'algorithm') is None
    assert components.name_of(config, 'aggregator') == 'dp' and components.name_of(config, 'runtime') == '?'
    assert components.listed(components.rows('algorithm', packable=True), 'and') == 'fedavg, fedprox and fedsgd'
    assert components.listed(components.rows('algorithm', dp_uncovered=None)) == 'fedavg, fedprox or fedsgd'


def test_a_moved_target_resolves_through_the_alias_map_in_one_place(monkeypatch):
    for old, new in components.ALIASES.items():  # each alias leads to a row
        assert components.of(old) is components.of(new) is not None, old
    for component in components.TABLE:
        assert components.resolve(component.target) == component.target
    monkeypatch.setitem(components.ALIASES, 'fedlab.privacy.aggregators.dp', 'fedlab.aggregators.dp')
    assert components.resolve('fedlab.privacy.aggregators.dp') == 'fedlab.aggregators.dp'
    assert components.of('fedlab.privacy.aggregators.dp').dp == 'adaptive'
    config = {'aggregator': {'_target_': 'fedlab.privacy.aggregators.dp', 'noise_multiplier': 0.5}}
    assert checks.settings({**config, 'clients_per_round': 20}, population=50).clipping == 'adaptive'


def test_importable_reads_the_source_and_imports_nothing_heavy():
    assert components.importable('tests.interrupting_sampler.interrupting')
    assert not components.importable('fedlab.aggregators.no_such_aggregator')
    assert not components.importable('nowhere.model_fn') and not components.importable('model_fn')
    code = (
        'import sys\nfrom fedlab.config import components\n'
        'assert all(components.importable(c.target) for c in components.TABLE)\n'
    )
    assert modules_loaded_by(code, ('tensorflow', 'tensorflow_federated', 'numpy')) == []


def test_the_checks_load_without_tensorflow_or_numpy():
    code = (
        'import sys\n'
        'import fedlab.config.components, fedlab.config.efficiency, fedlab.config.combinations, fedlab.privacy.checks\n'
    )
    assert modules_loaded_by(code, ('tensorflow', 'tensorflow_federated', 'numpy')) == []


USER_SAMPLER = {'_target_': 'tests.interrupting_sampler.interrupting', '_partial_': True}
DP_CONFIG = {
    'aggregator': {'_target_': 'fedlab.aggregators.dp_fixed', 'noise_multiplier': 0.5, 'clip': 1.0},
    'algorithm': {'_target_': 'fedlab.algorithms.fedavg.build_fed_avg'},
    'weighting': 'uniform',
    'clients_per_round': 5,
    'client_epochs': 1,
    'client_lr': 0.1,
}


def test_a_users_own_targets_get_the_least_and_keep_working():
    assert components.of(USER_SAMPLER['_target_']) is None
    # A sampler of one's own is not assumed Poisson: refused under amplification, accounted with q = 1 without.
    with pytest.raises(FedlabError, match='sampling=interrupting: the accountant assumes'):
        checks.check({**DP_CONFIG, 'sampling': USER_SAMPLER})
    plain = {**DP_CONFIG, 'sampling': USER_SAMPLER, 'privacy': {'amplification': 'none'}}
    assert checks.check(plain) == []
    assert checks.settings(plain, population=50).sampling_rate == 1.0
    combinations.check(plain)
    # An aggregator or algorithm of one's own: not DP, not linear, not packable; no algorithm key required.
    own = {'aggregator': {'_target_': 'mine.dp'}, 'algorithm': {'_target_': 'mine.build'}, 'weighting': 'uniform'}
    assert checks.check(own) == [] and checks.settings(own, population=50) is None
    combinations.check({**own, 'client_lr': None, 'client_epochs': None})
    settings = efficiency.settings({**own, 'efficiency': {'pack_clients': True, 'resident_state': True}})
    assert not settings.pack_clients and settings.resident_state
    assert settings.notes == (
        "pack_clients: off, aggregator=dp treats each client's update on its own (only mean is linear in them)",
    )
    mean = {'_target_': 'fedlab.aggregators.mean'}
    settings = efficiency.settings({**own, 'aggregator': mean, 'efficiency': {'pack_clients': True}})
    assert settings.notes == (
        'pack_clients: off, algorithm=of your own (only fedavg, fedprox and fedsgd pack clients)',
    )

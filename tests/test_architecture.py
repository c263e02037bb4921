"""The package's boundaries (docs/architecture.md): layers in subpackages, no import cycle, and the parts that answer
before TensorFlow loads (the config checks, fedlab-report) never import it."""

import ast

from tests.conftest import REPO, modules_loaded_by

PACKAGE = REPO / 'fedlab'


def _module_name(path) -> str:
    parts = path.relative_to(REPO).with_suffix('').parts
    return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def _imports(path) -> set[str]:
    """Every fedlab module `path` imports, at the top or inside a function (a lazy import still makes a cycle)."""
    tree = ast.parse(path.read_text())
    this = _module_name(path)
    package = this if path.name == '__init__.py' else this.rpartition('.')[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level:
                base = '.'.join(package.split('.')[: len(package.split('.')) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found.update(f'{base}.{alias.name}' for alias in node.names)
    return {name for name in found if name.split('.')[0] == 'fedlab'}


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob('*.py')}
    return {name: {i for i in _imports(path) if i in modules and i != name} for name, path in modules.items()}


def test_at_most_twelve_modules_at_the_top():
    top = sorted(p.name for p in PACKAGE.glob('*.py'))
    assert len(top) <= 12, top


def test_no_import_cycle():
    graph = _graph()
    # A package's __init__ importing its own modules is not a cycle of the layers: only module -> module edges count.
    edges = {m: {i for i in deps if not m.startswith(i + '.')} for m, deps in graph.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def visit(module, path):
        state[module] = 1
        for dep in sorted(edges.get(module, ())):
            if state.get(dep) == 1:
                cycles.append(path[path.index(dep):] + [dep] if dep in path else [module, dep])
            elif dep not in state:
                visit(dep, path + [dep])
        state[module] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    assert not cycles, ' ; '.join(' -> '.join(c) for c in cycles)


def test_the_config_layer_never_imports_tensorflow():
    code = (
        'import sys\n'
        'from hydra import compose, initialize_config_module\n'
        'from omegaconf import OmegaConf\n'
        'from fedlab import cli\n'
        "with initialize_config_module('fedlab.conf', version_base='1.3'):\n"
        "    cfg = compose('config', overrides=['aggregator=dp', 'sampling=poisson', 'weighting=uniform',"
        " 'client_inputs=dataset'])\n"
        'import pathlib, tempfile\n'
        'cli.check_before_tensorflow(cfg, pathlib.Path(tempfile.mkdtemp()))\n'
        "import fedlab.config, pkgutil, importlib\n"
        "for m in pkgutil.iter_modules(fedlab.config.__path__):\n"
        "    importlib.import_module('fedlab.config.' + m.name)\n"
    )
    assert modules_loaded_by(code) == []


def test_fedlab_report_never_imports_tensorflow():
    code = (
        'import sys, pkgutil, importlib\n'
        'import fedlab.reporting\n'
        'for m in pkgutil.iter_modules(fedlab.reporting.__path__):\n'
        "    importlib.import_module('fedlab.reporting.' + m.name)\n"
    )
    assert modules_loaded_by(code) == []

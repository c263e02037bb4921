"""Every `_target_` fedlab's config names, declared once, with the properties the checks before TensorFlow read.

fedlab.config.combinations, fedlab.config.efficiency and fedlab.privacy.checks ask this table what a component is
(DP, linear, packable, local-only, unweighted, ...) and compare no `_target_` string themselves. A new algorithm
or aggregator is its builder, its yaml file and one row of `TABLE`; tests/test_components.py checks that every
`_target_` under conf/ has a row and that every row names a module that exists.

A `_target_` of one's own (a sampler, model, data source, aggregator or algorithm in the user's code) has no row:
`of` and `of_config` return None and every check then assumes the least of it. Nothing that depends on a property
is turned on (its clients are not packed, it is not accounted as DP), nothing is required or refused for it (no
algorithm's keys, no DP key), and messages name it by the last part of its path.

`resolve` maps a `_target_` that a run directory stored before a component moved to where it is now (`ALIASES`),
so that such runs still resume and group with new ones in fedlab-report. No `_target_` has moved so far: the
map is empty, and the line a move adds goes there.

Pure Python: imported before TensorFlow loads, so nothing here imports TensorFlow, TFF or numpy.
"""

import ast
import dataclasses
import importlib.util

# Groups, as a row's `group`: a config key (`client_optimizer`, ...) names its group in KEY_GROUPS, else itself.
GROUPS = ('aggregator', 'algorithm', 'optimizer', 'lr_schedule', 'sampling', 'runtime', 'model', 'data', 'callback')
KEY_GROUPS = {
    'client_optimizer': 'optimizer',
    'server_optimizer': 'optimizer',
    'client_lr_schedule': 'lr_schedule',
    'server_lr_schedule': 'lr_schedule',
}


@dataclasses.dataclass(frozen=True)
class Component:
    """One `_target_` and what the checks need to know of it. Every property defaults to the least it can be."""

    target: str  # the `_target_` path: module, then the callable or class
    group: str  # one of GROUPS
    name: str  # as the config and the messages name it: aggregator=dp, algorithm=fedavg, sampling=poisson, ...

    # Aggregators.
    dp: str | None = None  # a DP aggregator: how it clips, 'adaptive' or 'fixed' (fedlab.privacy accounts it)
    unweighted: bool = False  # each client counts once (a TFF unweighted factory): it needs weighting=uniform
    linear: bool = False  # the aggregate is a weighted sum of the updates: clients may be packed into groups
    # Runs only in this process's TFF context on this machine (secure: TFF's test context, which simulates the
    # secure sums): not with runtime=remote, and one round a TFF call without resident state.
    local_only: bool = False

    # Algorithms.
    packable: bool = False  # fedlab.fast_paths.client_packing packs its client work (with a linear aggregator)
    client_training: bool = True  # clients train: client_epochs and client_lr; False (fedsgd): those keys refused
    proximal: bool = False  # FedProx: algorithm.mu; client_inputs=dataset is TFF 0.87's build_weighted_fed_prox
    dp_uncovered: str | None = None  # what of its uploads a DP aggregator does not cover (then DP is refused)
    client_state: str | None = None  # what each client keeps between rounds (fedlab.run.client_states): one round/call
    client_sgd: str | None = None  # why its client optimizer must be SGD ('no momentum' in it: plain SGD)
    # Asynchronous (FedBuff): clients train from the version they downloaded on the simulated clock; one server
    # update a call, the updates waiting in Python; it needs system=heterogeneous or trace.
    asynchronous: bool = False

    # Optimizers.
    sgd: bool = False  # heavy-ball SGD: `{side}_momentum` is its momentum; task=centralized trains with the same
    first_moment: str | None = None  # its own momentum key (adam, yogi: beta_1), named when {side}_momentum is not
    adaptive: bool = False  # rescales each coordinate by its history (TFF's DP guidance: server SGD with momentum)

    # Learning-rate schedules.
    constant: bool = False  # the same rate every round after its warm-up rounds (none: it does not vary)

    # Samplers.
    poisson: bool = False  # each client joins each round independently: what DP's amplification assumes

    # Runtimes.
    remote: bool = False  # TFF computations run on fedlab-worker services on other machines

    @property
    def module(self) -> str:
        return self.target.rpartition('.')[0]


_MIME_LITE_UPLOAD = (
    "Mime Lite's second upload, the full-batch gradient, is aggregated by a plain mean that the DP noise does not "
    'cover'
)

TABLE: tuple[Component, ...] = (
    # aggregator: fedlab/aggregators.py
    Component('fedlab.aggregators.mean', 'aggregator', 'mean', linear=True),
    Component('fedlab.aggregators.compression', 'aggregator', 'compression'),
    Component('fedlab.aggregators.robust', 'aggregator', 'robust'),
    Component('fedlab.aggregators.secure', 'aggregator', 'secure', local_only=True),
    Component('fedlab.aggregators.dp', 'aggregator', 'dp', dp='adaptive', unweighted=True),
    Component('fedlab.aggregators.dp_fixed', 'aggregator', 'dp_fixed', dp='fixed', unweighted=True),
    # algorithm: fedlab/algorithms/
    Component('fedlab.algorithms.fedavg.build_fed_avg', 'algorithm', 'fedavg', packable=True),
    Component('fedlab.algorithms.fedprox.build_fed_prox', 'algorithm', 'fedprox', packable=True, proximal=True),
    Component('fedlab.algorithms.fedsgd.build_fed_sgd', 'algorithm', 'fedsgd', packable=True, client_training=False),
    Component('fedlab.algorithms.mime_lite.build_mime_lite', 'algorithm', 'mime_lite', dp_uncovered=_MIME_LITE_UPLOAD),
    Component('fedlab.algorithms.scaffold.build_scaffold', 'algorithm', 'scaffold',
              dp_uncovered="SCAFFOLD's second upload, c_i+ - c_i, is summed without the DP noise",
              client_state='its control variate c_i',
              client_sgd='option II divides by the client learning rate of plain SGD: no momentum'),
    Component('fedlab.algorithms.feddyn.build_fed_dyn', 'algorithm', 'feddyn',
              dp_uncovered="FedDyn's server step uses the count of the round's clients, which DP's sampling hides",
              client_state='its gradient state g_i'),
    Component('fedlab.algorithms.fednova.build_fed_nova', 'algorithm', 'fednova',
              dp_uncovered="FedNova's second upload, each client's step count, is averaged without the DP noise",
              client_sgd='its normalisation is known for SGD with or without momentum'),
    Component('fedlab.algorithms.fedbuff.build_fed_buff', 'algorithm', 'fedbuff', asynchronous=True,
              dp_uncovered="FedBuff's buffer is its own aggregator, which the DP aggregator does not replace"),
    # client_optimizer, server_optimizer: fedlab/algorithms/optimizers.py
    Component('fedlab.algorithms.optimizers.sgd', 'optimizer', 'sgd', sgd=True),
    Component('fedlab.algorithms.optimizers.adam', 'optimizer', 'adam', first_moment='beta_1', adaptive=True),
    Component('fedlab.algorithms.optimizers.yogi', 'optimizer', 'yogi', first_moment='beta_1', adaptive=True),
    Component('fedlab.algorithms.optimizers.adagrad', 'optimizer', 'adagrad', adaptive=True),
    Component('fedlab.algorithms.optimizers.rmsprop', 'optimizer', 'rmsprop', adaptive=True),
    # client_lr_schedule, server_lr_schedule: fedlab/algorithms/schedules.py
    Component('fedlab.algorithms.schedules.Constant', 'lr_schedule', 'constant', constant=True),
    Component('fedlab.algorithms.schedules.ExponentialDecay', 'lr_schedule', 'exponential_decay'),
    Component('fedlab.algorithms.schedules.InverseSqrt', 'lr_schedule', 'inverse_sqrt'),
    # sampling: fedlab/sampling.py
    Component('fedlab.sampling.fixed', 'sampling', 'fixed'),
    Component('fedlab.sampling.uniform', 'sampling', 'uniform'),
    Component('fedlab.sampling.poisson', 'sampling', 'poisson', poisson=True),
    # runtime: fedlab/runtime.py
    Component('fedlab.runtime.LocalRuntime', 'runtime', 'local'),
    Component('fedlab.runtime.RemoteRuntime', 'runtime', 'remote', remote=True),
    # model: fedlab/models.py (cifar_cnn, fedavg_cnn, linear and simple_cnn are keras_model_fn's architectures)
    Component('fedlab.models.keras_model_fn', 'model', 'keras'),
    Component('fedlab.models.custom_model_fn', 'model', 'custom'),
    # data: fedlab/data/
    Component('fedlab.data.cifar10.load_cifar10', 'data', 'cifar10'),
    Component('fedlab.data.digits.load_digits', 'data', 'digits'),
    Component('fedlab.data.emnist.load_emnist', 'data', 'emnist'),
    Component('fedlab.data.folder.load_folder', 'data', 'folder'),
    Component('fedlab.data.leaf.load_leaf', 'data', 'leaf'),
    # hydra.callbacks: fedlab/sweep.py, fedlab/config/launchers.py
    Component('fedlab.sweep.SweepSummary', 'callback', 'sweep_summary'),
    Component('fedlab.config.launchers.StartChecks', 'callback', 'start_checks'),
)

# A `_target_` a run directory may have stored -> where that component is now. Runs written before a move keep
# their paths (results.json, the checkpoints' config): resume and fedlab-report resolve them through here. Empty:
# no `_target_` has moved (the redesign's step 1 moved modules, none that a config names).
ALIASES: dict[str, str] = {}

_BY_TARGET = {component.target: component for component in TABLE}


def resolve(target: str) -> str:
    """`target` as the config names it today: through ALIASES if it moved, else itself."""
    return ALIASES.get(target, target)


def of(target: str | None) -> Component | None:
    """The row of `target` (resolved), or None for a `_target_` of one's own (or none)."""
    return _BY_TARGET.get(resolve(target)) if target else None


def of_config(config: dict, key: str) -> Component | None:
    """The row of `config[key]._target_` (`config`: the resolved config as plain containers; `key`: a config key
    such as 'aggregator' or 'server_optimizer'), or None where the key is absent, null or one's own, or where its
    `_target_` is a row of another group."""
    node = config.get(key)
    component = of(node.get('_target_')) if isinstance(node, dict) else None
    return component if component is not None and component.group == KEY_GROUPS.get(key, key) else None


def name_of(config: dict, key: str, unknown: str = '?') -> str:
    """How messages name `config[key]`: its row's name, else the last part of its `_target_`, else `unknown`."""
    component = of_config(config, key)
    if component is not None:
        return component.name
    node = config.get(key)
    target = str(node.get('_target_') or '') if isinstance(node, dict) else ''
    return target.rpartition('.')[2] or unknown


def rows(group: str, **properties) -> tuple[Component, ...]:
    """The rows of `group` whose properties have the given values, in table order: rows('aggregator', linear=True)."""
    return tuple(
        c for c in TABLE if c.group == group and all(getattr(c, key) == value for key, value in properties.items())
    )


def listed(components: tuple[Component, ...], last: str = 'or') -> str:
    """Their names as a message lists them: 'fedavg, fedprox or fedsgd'."""
    names = [c.name for c in components]
    return names[0] if len(names) == 1 else f'{", ".join(names[:-1])} {last} {names[-1]}'


def importable(target: str) -> bool:
    """Whether `target` names a module that exists and a name it defines at its top level, read from the module's
    source: nothing is imported but its parent packages (TensorFlow stays unloaded)."""
    module, _, attribute = target.rpartition('.')
    try:
        spec = importlib.util.find_spec(module) if module else None
    except (ImportError, ValueError):
        return False
    if spec is None:
        return False
    if not (spec.origin or '').endswith('.py'):
        return True  # an extension or namespace module: that it exists is what can be told without importing it
    with open(spec.origin, encoding='utf-8') as f:
        tree = ast.parse(f.read())
    defined = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defined.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            defined.update(t.id for t in targets if isinstance(t, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            defined.update((alias.asname or alias.name).split('.')[0] for alias in node.names)
    return attribute in defined

"""The checks of a run's config that need no data and no TensorFlow, so that bad input is reported in a second.

They read the resolved config as plain containers (the CLI converts Hydra's config once); a value the user must
still give (OmegaConf's `???`) stays the string MISSING there.
"""

import importlib.util
import os
import pathlib
import sys

from hydra.errors import InstantiationException
from hydra.utils import instantiate, to_absolute_path

from fedlab.algorithms.schedules import LearningRates
from fedlab.config import combinations, components, efficiency, schema, values
from fedlab.errors import FedlabError
from fedlab.heterogeneity import settings as system_settings
from fedlab.privacy import checks as privacy_checks

MISSING = '???'
PATH_KEYS = ('path', 'root', 'cache_dir')  # data keys that name files or directories
ALGORITHM_GROUPS = ('algorithm', 'client_optimizer', 'server_optimizer', 'client_lr_schedule', 'server_lr_schedule')


def check_before_tensorflow(config: dict) -> None:
    """Raises FedlabError for the first problem of `config` (the resolved config as plain containers) found without
    data or TensorFlow; prints the warnings of DP's assumptions to stderr."""
    values.check_numbers(config)  # NaN, infinity, integers beyond int64: at any key
    schema.check_ranges({k: v for k, v in config.items() if not isinstance(v, dict)})
    for group in ('data', 'model', 'aggregator', 'sampling', *ALGORITHM_GROUPS):
        target = config[group].get('_target_') if config[group] is not None else None
        module = target.rpartition('.')[0] if target else ''
        if target and not _module_exists(module):
            raise FedlabError(f'{group}._target_={target}: no such module {module!r}')
    for warning in privacy_checks.check(config):  # DP's assumptions
        print(f'fedlab: warning: {warning}', file=sys.stderr)
    num_clients = config['data'].get('num_clients')
    if isinstance(num_clients, int) and config['clients_per_round'] > num_clients:
        raise FedlabError(
            f'clients_per_round={config["clients_per_round"]} is larger than the population: '
            f'data.num_clients={num_clients}'
        )
    if isinstance(num_clients, int):
        check_training_population(config['holdout_clients'], config['clients_per_round'], num_clients)
        check_eval_clients(config['eval_clients'], f'data.num_clients={num_clients}', num_clients)
    check_task(config)
    personalization(config)
    _check_system(config)
    if config['stop_at_target'] and config['target_accuracy'] is None:
        raise FedlabError('stop_at_target=true needs target_accuracy=<accuracy in (0, 1]>')
    for key in PATH_KEYS:
        value = config['data'].get(key)
        if key != 'cache_dir' and value is not None and value != MISSING:
            path = pathlib.Path(to_absolute_path(os.path.expanduser(str(value))))
            try:
                path.stat()
            except OSError as error:  # absent, a name too long, under a file
                reason = 'no such file or directory' if isinstance(error, FileNotFoundError) else error.strerror
                raise FedlabError(f'data.{key}={value}: {reason}') from None
    combinations.check(config)  # what fits together (fedlab.algorithms)
    learning_rates(config)  # the schedules check their own values
    efficiency.settings(config)  # rounds per call, packed clients
    instantiate(config['runtime']).check(client_inputs=config['client_inputs'])  # runtime=remote: workers, inputs


def _module_exists(module: str) -> bool:
    """Whether `module` can be imported, found without importing it (a missing parent package too: `a.b`)."""
    try:
        return bool(module) and importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _check_system(config: dict) -> None:
    """The `system` group's keys and a trace file's format; partial work with an algorithm whose clients keep state;
    what FedBuff needs."""
    system = system_settings.settings(config.get('system'))
    algorithm = components.of_config(config, 'algorithm')
    if algorithm is not None and algorithm.asynchronous:
        _check_asynchronous(config, system, algorithm.name)
    if system is not None and system.rules.partial_work and algorithm is not None and algorithm.client_state:
        raise FedlabError(
            f'system.partial_work=true with algorithm={algorithm.name}: a partial client would update '
            f'{algorithm.client_state} from part of its work, which the algorithm does not define; use '
            'algorithm=fednova or fedavg'
        )


def _check_asynchronous(config: dict, system, name: str) -> None:
    """FedBuff: a simulated clock without rounds' rules, the plain mean, a sampler that draws one client at a time,
    and its own keys in range."""
    if system is None:
        raise FedlabError(f'algorithm={name} needs system=heterogeneous or trace: its clients finish at their '
                          'devices\' pace on the simulated clock')
    rules = system.rules
    for key, value, default in (('deadline_s', rules.deadline_s, None), ('over_selection', rules.over_selection, 0),
                                ('partial_work', rules.partial_work, False)):
        if value != default:
            raise FedlabError(f'system.{key}={value} does not fit algorithm={name}: an asynchronous server has no '
                              f'rounds to cut (system.dropout applies)')
    aggregator = components.of_config(config, 'aggregator')
    if aggregator is None or aggregator.name != 'mean':
        raise FedlabError(f'aggregator={components.name_of(config, "aggregator", "of your own")} does not fit '
                          f'algorithm={name}: its staleness-weighted buffer is its aggregator; use aggregator=mean')
    sampler = components.of_config(config, 'sampling')
    if sampler is not None and sampler.poisson:
        raise FedlabError(f'sampling={sampler.name} does not fit algorithm={name}: a freed place draws one client '
                          '(sampling=fixed: the first idle by id; uniform: one at random)')
    keys = config.get('algorithm') or {}
    for key, is_allowed, allowed in (('concurrency', lambda v: v >= 1, 'an integer >= 1'),
                                     ('buffer_size', lambda v: v >= 1, 'an integer >= 1'),
                                     ('staleness_exponent', lambda v: v >= 0, 'a number >= 0')):
        value = keys.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not is_allowed(value):
            raise FedlabError(f'algorithm.{key}={value} is not allowed: it must be {allowed}')
    training = config['data'].get('num_clients')
    if isinstance(training, int) and keys['concurrency'] > training:
        raise FedlabError(f'algorithm.concurrency={keys["concurrency"]} is larger than the population: '
                          f'data.num_clients={training}')


def check_eval_clients(eval_clients: int | None, population_name: str, population: int) -> None:
    """Raises FedlabError when `eval_clients` asks for more test clients than the population has (as
    clients_per_round is: before TensorFlow when data.num_clients says it, else when the data is loaded)."""
    if eval_clients is not None and eval_clients > population:
        raise FedlabError(f'eval_clients={eval_clients} is larger than the population: {population_name}'
                          f' (null evaluates every test client)')


def check_training_population(holdout_clients: float, clients_per_round: int, population: int) -> None:
    """Raises FedlabError when `holdout_clients` leaves fewer training clients than a round samples."""
    if holdout_clients <= 0:
        return
    held = min(population, max(1, round(holdout_clients * population)))  # as fedlab.sampling.held_out
    if population - held < max(1, clients_per_round):
        raise FedlabError(
            f'holdout_clients={holdout_clients} leaves {population - held} of {population} clients to train, fewer '
            f'than clients_per_round={clients_per_round}: holdout_clients must leave at least that many'
        )


# Keys that only federated training reads: given to another task, they would be silently ignored.
_FEDERATED_ONLY = {'holdout_clients': 0, 'target_accuracy': None, 'stop_at_target': False}


def check_task(config: dict) -> None:
    """Refuses keys that the task does not read (e.g. holdout_clients with task=centralized)."""
    task = (config.get('task') or {}).get('name')
    if task == 'train':
        return
    for key, default in _FEDERATED_ONLY.items():
        if config.get(key, default) != default:
            raise FedlabError(f'{key}={config[key]} needs task=train (federated training); task={task} ignores it')


_PERSONALIZATION_RULES = {
    'method': (lambda v: v in ('none', 'finetune', 'local_only'), 'none, finetune or local_only'),
    'epochs': (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1, 'an integer >= 1'),
    'lr': (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0, 'a number > 0'),
    'layers': (lambda v: v in ('all', 'last'), 'all or last (the output layer only)'),
    'every': (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
              'an integer >= 0 (0: after the last round only)'),
}


def personalization(config: dict) -> dict:
    """The `personalization` group's keys, checked (fedlab.run.personalization.PersonalizationConfig's fields)."""
    node = dict(config.get('personalization') or {'method': 'none'})
    for key in node:
        if key not in _PERSONALIZATION_RULES:
            raise FedlabError(f'personalization.{key}: no such key; personalization has '
                              f'{", ".join(_PERSONALIZATION_RULES)}')
    for key, value in node.items():
        is_allowed, allowed = _PERSONALIZATION_RULES[key]
        if not is_allowed(value):
            raise FedlabError(f'personalization.{key}={value} is not allowed: personalization.{key} must be {allowed}')
    if node['method'] == 'none':
        return node
    task = (config.get('task') or {}).get('name')
    if task != 'train':
        raise FedlabError(f'personalization={node["method"]} needs task=train (federated training); task={task} has no '
                          'clients to personalize')
    runtime = config.get('runtime') or {}
    if runtime.get('workers') and not runtime.get('shared_filesystem'):
        raise FedlabError(f'personalization={node["method"]} reads each client\'s shard files in TFF\'s worker: with '
                          'runtime=remote it needs runtime.shared_filesystem=true (the workers see these files)')
    every, eval_every = node.get('every', 0), config['eval_every']
    if every and (eval_every == 0 or every % eval_every):
        raise FedlabError(f'personalization.every={every} is not allowed: personalization runs after evaluations, so '
                          f'it must be 0 or a multiple of eval_every={eval_every}')
    return node


def learning_rates(config: dict) -> LearningRates:
    """The client and server learning rates per round (fedlab.algorithms.schedules, no TensorFlow), built from the
    `*_lr` and `*_lr_schedule` keys; a schedule's bad value raises FedlabError."""
    return LearningRates(
        client_lr=config['client_lr'],
        server_lr=config['server_lr'],
        client=_instantiate(config['client_lr_schedule']),
        server=_instantiate(config['server_lr_schedule']),
    )


def _instantiate(node):
    """Hydra's instantiate, with a FedlabError raised by the callable passed on as it is (one line for the user)."""
    try:
        return instantiate(node)
    except InstantiationException as error:
        if isinstance(error.__cause__, FedlabError):
            raise error.__cause__ from None
        raise

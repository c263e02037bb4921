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
from fedlab.config import combinations, efficiency, schema
from fedlab.errors import FedlabError
from fedlab.privacy import checks as privacy_checks

MISSING = '???'
PATH_KEYS = ('path', 'root', 'cache_dir')  # data keys that name files or directories
ALGORITHM_GROUPS = ('algorithm', 'client_optimizer', 'server_optimizer', 'client_lr_schedule', 'server_lr_schedule')


def check_before_tensorflow(config: dict) -> None:
    """Raises FedlabError for the first problem of `config` (the resolved config as plain containers) found without
    data or TensorFlow; prints the warnings of DP's assumptions to stderr."""
    schema.check_ranges({k: v for k, v in config.items() if not isinstance(v, dict)})
    for group in ('data', 'model', 'aggregator', 'sampling', *ALGORITHM_GROUPS):
        target = config[group].get('_target_') if config[group] is not None else None
        module = target.rpartition('.')[0] if target else ''
        if target and (not module or importlib.util.find_spec(module) is None):  # finds, does not import
            raise FedlabError(f'{group}._target_={target}: no such module {module!r}')
    for warning in privacy_checks.check(config):  # DP's assumptions
        print(f'fedlab: warning: {warning}', file=sys.stderr)
    num_clients = config['data'].get('num_clients')
    if isinstance(num_clients, int) and config['clients_per_round'] > num_clients:
        raise FedlabError(
            f'clients_per_round={config["clients_per_round"]} is larger than the population: '
            f'data.num_clients={num_clients}'
        )
    for key in PATH_KEYS:
        value = config['data'].get(key)
        if key != 'cache_dir' and value is not None and value != MISSING:
            path = pathlib.Path(to_absolute_path(os.path.expanduser(str(value))))
            if not path.exists():
                raise FedlabError(f'data.{key}={value}: no such file or directory')
    combinations.check(config)  # what fits together (fedlab.algorithms)
    learning_rates(config)  # the schedules check their own values
    efficiency.settings(config)  # rounds per call, packed clients
    instantiate(config['runtime']).check(client_inputs=config['client_inputs'])  # runtime=remote: workers, inputs


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

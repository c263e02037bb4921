"""The typed schema of fedlab's top-level config keys, and the range checks Hydra's types cannot express."""

import dataclasses
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from fedlab.errors import FedlabError

SCHEMA_NAME = 'fedlab_schema'


@dataclasses.dataclass
class RunConfig:
    """Top-level keys with their types; Hydra rejects a value of the wrong type when it composes."""

    # Config groups: each option's own keys are checked by the callable it names.
    data: Any = None
    model: Any = None
    aggregator: Any = None
    sampling: Any = None
    algorithm: Any = None
    client_optimizer: Any = None
    server_optimizer: Any = None
    client_lr_schedule: Any = None
    server_lr_schedule: Any = None
    task: Any = None
    runtime: Any = None
    personalization: Any = None  # checked by fedlab.config.checks.personalization
    system: Any = None  # checked by fedlab.heterogeneity.settings
    experiment: Any = None
    tracker: Any = None  # none (null) | mlflow | wandb: checked by fedlab.record.trackers

    rounds: int = 10
    clients_per_round: int = 10
    eval_every: int = 5
    client_epochs: Optional[int] = 5  # null where it has no meaning (algorithm=fedsgd)
    batch_size: int = 20
    shuffle_buffer: int = 100
    client_inputs: str = 'shards'
    client_lr: Optional[float] = 0.02
    server_lr: float = 1.0
    client_momentum: Optional[float] = 0.0
    server_momentum: Optional[float] = 0.0
    weighting: str = 'num_examples'
    seed: int = 0
    print_type_signature: bool = False
    checkpoint_every: int = 5
    resume: Optional[str] = None
    privacy: Any = None  # accounting keys of the DP aggregators, checked by fedlab.privacy.checks
    efficiency: Any = None  # rounds per TFF call, packed clients: checked by fedlab.config.efficiency
    eval_clients: Optional[int] = None
    holdout_clients: float = 0.0
    target_accuracy: Optional[float] = None
    stop_at_target: bool = False
    data_cache: Optional[str] = None
    shard_dir: Optional[str] = None
    shard_budget_mb: int = 1024
    client_state_budget_mb: int = 512


def register() -> None:
    """Registers the schema and the `if_null` resolver that config.yaml uses (once per process)."""
    ConfigStore.instance().store(name=SCHEMA_NAME, node=RunConfig)
    # hydra.run.dir is `resume` when given, else a new directory; oc.select would return the null itself.
    if not OmegaConf.has_resolver('if_null'):
        OmegaConf.register_new_resolver('if_null', lambda value, default: default if value is None else value)


# key -> (check, what is allowed)
_RULES = {
    'rounds': (lambda v: v >= 1, 'an integer >= 1'),
    'clients_per_round': (lambda v: v >= 1, 'an integer >= 1'),
    'eval_every': (lambda v: v >= 0, 'an integer >= 0 (0: evaluate only after the last round)'),
    'client_epochs': (lambda v: v >= 1, 'an integer >= 1'),
    'batch_size': (lambda v: v >= 1, 'an integer >= 1'),
    'shuffle_buffer': (lambda v: v >= 1, 'an integer >= 1 (1: no shuffling)'),
    'client_inputs': (lambda v: v in ('shards', 'tensors', 'dataset'), 'shards, tensors or dataset'),
    'client_lr': (lambda v: v > 0, 'a number > 0'),
    'server_lr': (lambda v: v > 0, 'a number > 0'),
    'client_momentum': (lambda v: 0 <= v < 1, 'a number in [0, 1)'),
    'server_momentum': (lambda v: 0 <= v < 1, 'a number in [0, 1)'),
    'seed': (lambda v: 0 <= v < 2**31, 'an integer in [0, 2**31)'),
    'checkpoint_every': (lambda v: v >= 0, 'an integer >= 0 (0: only at the end and on interrupt)'),
    'eval_clients': (lambda v: v is None or v >= 1, 'null (every test client) or an integer >= 1'),
    'target_accuracy': (lambda v: 0 < v <= 1, 'null or an accuracy in (0, 1]'),
    'holdout_clients': (lambda v: 0 <= v < 1, 'a fraction in [0, 1) of the clients that never train (0: none)'),
    'shard_budget_mb': (lambda v: v >= 64, 'an integer >= 64 (megabytes of disk for shard files)'),
    'client_state_budget_mb': (lambda v: v >= 1, 'an integer >= 1 (megabytes of memory for clients\' states)'),
}


def check_ranges(values: dict) -> None:
    """Raises FedlabError for the first top-level value outside its allowed range."""
    for key, (is_allowed, allowed) in _RULES.items():
        if values.get(key) is not None and not is_allowed(values[key]):  # null: not used (algorithms.combinations)
            raise FedlabError(f'{key}={values[key]} is not allowed: {key} must be {allowed}')

"""Which settings fit together, checked on the composed config before TensorFlow loads.

fedlab's rule: a key that has no meaning for the chosen algorithm or optimizer is null in the composed config
(`fedlab --cfg job algorithm=fedsgd` shows client_lr: null, client_epochs: null), and giving it a value is
refused, with the combination that would use it, instead of being silently ignored. What each algorithm, optimizer,
schedule and aggregator is (client training, momentum, DP, ...) is read from fedlab.config.components.
"""

from fedlab.algorithms import WEIGHTINGS
from fedlab.config import components
from fedlab.errors import FedlabError

_NO_CLIENT_TRAINING_NOTE = 'its clients send one average gradient and do not train; the step is server_lr\'s'


def _schedule_varies(config: dict, side: str) -> bool:
    """Whether the `side` learning rate changes between rounds (anything but a constant without warm-up)."""
    schedule = config.get(f'{side}_lr_schedule') or {}
    component = components.of_config(config, f'{side}_lr_schedule')
    constant = component is not None and component.constant
    return bool(schedule) and not (constant and not schedule.get('warmup_rounds'))


def check(config: dict) -> None:
    """Raises FedlabError, one line naming the combination that works, for settings that do not fit together.
    `config` is the resolved composed config as plain containers."""
    algorithm = components.of_config(config, 'algorithm')  # None: a builder of one's own
    task = (config.get('task') or {}).get('name')
    weighting = config.get('weighting')
    if weighting not in WEIGHTINGS:
        raise FedlabError(f'weighting={weighting} is not allowed: weighting must be num_examples or uniform')

    if algorithm is not None and not algorithm.client_training:
        for key in ('client_epochs', 'client_lr', 'client_momentum'):
            if config.get(key) is not None:
                raise FedlabError(
                    f'{key}={config[key]} has no meaning with algorithm={algorithm.name} ({_NO_CLIENT_TRAINING_NOTE}): '
                    f'drop {key}, or use algorithm=fedavg {key}={config[key]}'
                )
        if config.get('client_optimizer') is not None:
            optimizer = components.of_config(config, 'client_optimizer')  # None: one's own
            name = optimizer.name if optimizer is not None else 'one'
            raise FedlabError(
                f'client_optimizer={name} has no meaning with algorithm={algorithm.name} ({_NO_CLIENT_TRAINING_NOTE}): '
                f'drop it, or use algorithm=fedavg or mime_lite with client_optimizer={name}'
            )
        if _schedule_varies(config, 'client'):
            raise FedlabError(
                f'client_lr_schedule has no meaning with algorithm={algorithm.name} (there is no client learning '
                'rate): schedule the server\'s with server_lr_schedule'
            )
    elif algorithm is not None:
        for key, allowed in (('client_epochs', 'an integer >= 1'), ('client_lr', 'a number > 0')):
            if config.get(key) is None:
                raise FedlabError(f'{key}=null is not allowed with algorithm={algorithm.name}: {key} must be {allowed}')

    for side in ('client', 'server'):
        momentum = config.get(f'{side}_momentum')
        optimizer = components.of_config(config, f'{side}_optimizer')  # None: absent or one's own
        if momentum and optimizer is not None and not optimizer.sgd:
            own = optimizer.first_moment
            alternative = f'; {optimizer.name}\'s own is {side}_optimizer.{own}' if own else ''
            raise FedlabError(
                f'{side}_momentum={momentum} applies to {side}_optimizer=sgd, not {optimizer.name}: use '
                f'{side}_optimizer=sgd {side}_momentum={momentum}{alternative}'
            )

    if algorithm is not None and algorithm.name == 'feddyn':
        alpha = (config.get('algorithm') or {}).get('alpha')
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha >= 0:
            raise FedlabError(f'algorithm.alpha={alpha} is not allowed: FedDyn\'s alpha must be a number >= 0')

    if algorithm is not None and algorithm.client_sgd:
        client = components.of_config(config, 'client_optimizer')  # None: one's own
        plain = 'no momentum' in algorithm.client_sgd
        if client is None or not client.sgd or (plain and config.get('client_momentum')):
            given = f'client_momentum={config.get("client_momentum")}' if client is not None and client.sgd else (
                f'client_optimizer={components.name_of(config, "client_optimizer", "of your own")}')
            raise FedlabError(
                f'{given} does not fit algorithm={algorithm.name} ({algorithm.client_sgd}): use client_optimizer=sgd'
                + (' client_momentum=0' if plain else '')
            )

    aggregator = components.of_config(config, 'aggregator')
    if algorithm is not None and algorithm.dp_uncovered and aggregator is not None and aggregator.dp:
        covered = components.listed(components.rows('algorithm', dp_uncovered=None))
        raise FedlabError(
            f'algorithm={algorithm.name} with aggregator={aggregator.name}: {algorithm.dp_uncovered}; use '
            f'algorithm={covered} with DP'
        )

    if algorithm is not None and algorithm.proximal:
        mu = (config.get('algorithm') or {}).get('mu')
        if not isinstance(mu, (int, float)) or mu < 0:
            raise FedlabError(f'algorithm.mu={mu} is not allowed: the proximal strength mu must be a number >= 0')
        if mu > 0 and config.get('client_inputs') == 'dataset':
            raise FedlabError(
                f'algorithm={algorithm.name} algorithm.mu={mu} runs on client_inputs=shards or tensors: TFF 0.87\'s '
                'build_weighted_fed_prox adds mu * (w_server - w), pushing clients away from the server model '
                '(docs/algorithms.md)'
            )
        if config.get('client_inputs') == 'dataset' and _schedule_varies(config, 'client'):
            raise FedlabError(
                f'client_lr_schedule with algorithm={algorithm.name} runs on client_inputs=shards or tensors: the '
                'client work of TFF\'s build_weighted_fed_prox has no hyper-parameters to set'
            )

    if task == 'centralized':
        client = components.of_config(config, 'client_optimizer')  # None: absent or one's own
        if client is not None and not client.sgd:
            raise FedlabError(
                f'task=centralized trains with SGD at client_lr and client_momentum: client_optimizer={client.name} '
                'is not supported there; use client_optimizer=sgd'
            )
        if (config.get('task') or {}).get('learning_rate') is None:
            raise FedlabError(
                f'task=centralized with algorithm={algorithm.name if algorithm else None} has no client learning rate '
                'to copy: set task.learning_rate=<lr>'
            )


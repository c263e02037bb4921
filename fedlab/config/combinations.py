"""Which settings fit together, checked on the composed config before TensorFlow loads.

fedlab's rule: a key that has no meaning for the chosen algorithm or optimizer is null in the composed config
(`fedlab --cfg job algorithm=fedsgd` shows client_lr: null, client_epochs: null), and giving it a value is
refused, with the combination that would use it, instead of being silently ignored.
"""

from fedlab.algorithms import WEIGHTINGS
from fedlab.errors import FedlabError
from fedlab.privacy.checks import DP_AGGREGATORS

_ALGORITHMS = 'fedlab.algorithms.'
_OPTIMIZERS = 'fedlab.algorithms.optimizers.'
_SCHEDULES = 'fedlab.algorithms.schedules.'
_FEDSGD_NOTE = 'its clients send one average gradient and do not train; the step is server_lr\'s'


def algorithm_name(config: dict) -> str | None:
    """fedavg, fedprox, fedsgd or mime_lite, from the algorithm's builder (None for a builder of one's own)."""
    target = (config.get('algorithm') or {}).get('_target_', '')
    return target.removeprefix(_ALGORITHMS).split('.')[0] if target.startswith(_ALGORITHMS) else None


def optimizer_name(config: dict, side: str) -> str | None:
    """sgd, adam, ... of `client_optimizer` or `server_optimizer` (None if absent or one's own)."""
    target = (config.get(f'{side}_optimizer') or {}).get('_target_', '')
    return target.removeprefix(_OPTIMIZERS) if target.startswith(_OPTIMIZERS) else None


def _schedule_varies(config: dict, side: str) -> bool:
    """Whether the `side` learning rate changes between rounds (anything but a constant without warm-up)."""
    schedule = config.get(f'{side}_lr_schedule') or {}
    constant = schedule.get('_target_', '') == f'{_SCHEDULES}Constant'
    return bool(schedule) and not (constant and not schedule.get('warmup_rounds'))


def check(config: dict) -> None:
    """Raises FedlabError, one line naming the combination that works, for settings that do not fit together.
    `config` is the resolved composed config as plain containers."""
    algorithm = algorithm_name(config)
    task = (config.get('task') or {}).get('name')
    weighting = config.get('weighting')
    if weighting not in WEIGHTINGS:
        raise FedlabError(f'weighting={weighting} is not allowed: weighting must be num_examples or uniform')

    if algorithm == 'fedsgd':
        for key in ('client_epochs', 'client_lr', 'client_momentum'):
            if config.get(key) is not None:
                raise FedlabError(
                    f'{key}={config[key]} has no meaning with algorithm=fedsgd ({_FEDSGD_NOTE}): drop {key}, '
                    f'or use algorithm=fedavg {key}={config[key]}'
                )
        if config.get('client_optimizer') is not None:
            name = optimizer_name(config, 'client') or 'one'
            raise FedlabError(
                f'client_optimizer={name} has no meaning with algorithm=fedsgd ({_FEDSGD_NOTE}): drop it, or use '
                f'algorithm=fedavg or mime_lite with client_optimizer={name}'
            )
        if _schedule_varies(config, 'client'):
            raise FedlabError(
                'client_lr_schedule has no meaning with algorithm=fedsgd (there is no client learning rate): '
                'schedule the server\'s with server_lr_schedule'
            )
    elif algorithm is not None:
        for key, allowed in (('client_epochs', 'an integer >= 1'), ('client_lr', 'a number > 0')):
            if config.get(key) is None:
                raise FedlabError(f'{key}=null is not allowed with algorithm={algorithm}: {key} must be {allowed}')

    for side in ('client', 'server'):
        momentum = config.get(f'{side}_momentum')
        optimizer = optimizer_name(config, side)
        if momentum and optimizer not in (None, 'sgd'):
            beta = 'beta_1' if optimizer in ('adam', 'yogi') else None
            alternative = f'; {optimizer}\'s own is {side}_optimizer.{beta}' if beta else ''
            raise FedlabError(
                f'{side}_momentum={momentum} applies to {side}_optimizer=sgd, not {optimizer}: use '
                f'{side}_optimizer=sgd {side}_momentum={momentum}{alternative}'
            )

    aggregator = (config.get('aggregator') or {}).get('_target_', '')
    if algorithm == 'mime_lite' and aggregator in DP_AGGREGATORS:
        raise FedlabError(
            f'algorithm=mime_lite with aggregator={aggregator.rpartition(".")[2]}: Mime Lite\'s second upload, the '
            'full-batch gradient, is aggregated by a plain mean that the DP noise does not cover; use algorithm=fedavg, '
            'fedprox or fedsgd with DP'
        )

    if algorithm == 'fedprox':
        mu = (config.get('algorithm') or {}).get('mu')
        if not isinstance(mu, (int, float)) or mu < 0:
            raise FedlabError(f'algorithm.mu={mu} is not allowed: the proximal strength mu must be a number >= 0')
        if mu > 0 and config.get('client_inputs') == 'dataset':
            raise FedlabError(
                f'algorithm=fedprox algorithm.mu={mu} runs on client_inputs=shards or tensors: TFF 0.87\'s '
                'build_weighted_fed_prox adds mu * (w_server - w), pushing clients away from the server model '
                '(docs/algorithms.md)'
            )
        if config.get('client_inputs') == 'dataset' and _schedule_varies(config, 'client'):
            raise FedlabError(
                'client_lr_schedule with algorithm=fedprox runs on client_inputs=shards or tensors: the client work '
                'of TFF\'s build_weighted_fed_prox has no hyper-parameters to set'
            )

    if task == 'centralized':
        client = optimizer_name(config, 'client')
        if client not in (None, 'sgd'):
            raise FedlabError(
                f'task=centralized trains with SGD at client_lr and client_momentum: client_optimizer={client} '
                'is not supported there; use client_optimizer=sgd'
            )
        if (config.get('task') or {}).get('learning_rate') is None:
            raise FedlabError(
                f'task=centralized with algorithm={algorithm} has no client learning rate to copy: '
                'set task.learning_rate=<lr>'
            )

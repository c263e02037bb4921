"""Differential privacy's assumptions, checked before TensorFlow loads, and what the accountant of a run needs.

Pure Python (no numpy, no TensorFlow): `check` runs from the CLI's check_before_tensorflow, on the resolved config
as plain dicts. The accountant itself is fedlab.privacy.accounting. Which aggregators are DP (and how they clip),
unweighted or local-only, which sampler is Poisson and which runtime remote is read from fedlab.config.components.
"""

import dataclasses

from fedlab.config import components
from fedlab.errors import FedlabError

ACCOUNTANTS = ('rdp', 'pld')
AMPLIFICATIONS = ('poisson', 'none')
# Server optimizers that rescale each coordinate by its history: TFF's DP guidance is server SGD with momentum.
# fedlab's own are marked `adaptive` in fedlab.config.components; these names catch one's own (or a bare name).
ADAPTIVE_OPTIMIZERS = ('adam', 'adagrad', 'yogi', 'rmsprop', 'adafactor', 'lamb', 'lars')
# TFF's default stddev of the noised count of unclipped clients, as a fraction of clients per round
# (DifferentiallyPrivateFactory.gaussian_adaptive).
DEFAULT_CLIPPED_COUNT_STDDEV_FRACTION = 0.05
DP_WITH_COMPRESSION = (
    'compressing the clipped updates (quantization) can raise their norm above the clip, which the noise and the '
    'accountant do not cover'
)
ZEROING_CAVEAT = (
    "adaptive zeroing (TFF's dp_aggregator default) estimates its norm from exact counts, without noise: epsilon "
    'covers the noised update and clip estimate, not that release'
)


@dataclasses.dataclass(frozen=True)
class DpSettings:
    """One round of a DP aggregator as the accountant sees it: a Gaussian mechanism of multiplier
    `noise_multiplier` on a Poisson sample of rate `sampling_rate`, composed over the rounds."""

    noise_multiplier: float  # z, the total (effective) noise multiplier
    sampling_rate: float  # q: each client's chance to take part in a round (1: every round)
    delta: float
    accountant: str = 'rdp'  # rdp | pld: the epsilon written every round
    clipping: str = 'fixed'  # fixed | adaptive
    # Adaptive clipping only: the noise TFF adds to the update (> z) and to the count of unclipped clients.
    update_noise_multiplier: float | None = None
    clipped_count_stddev: float | None = None
    caveats: tuple[str, ...] = ()


def default_delta(population: int) -> float:
    """delta = population^-1.1: below 1/population, the usual rule for user-level DP."""
    return float(population) ** -1.1


def adaptive_noise_split(noise_multiplier: float, clipped_count_stddev: float) -> float:
    """The noise multiplier TFF adds to the update for a total z (gaussian_adaptive's adaptive_clip_noise_params):
    the clip estimate's count, of sensitivity 1/2, is a Gaussian of multiplier 2 x clipped_count_stddev, and two
    Gaussians on the same sample compose to one of multiplier (z_update^-2 + (2 stddev)^-2)^-1/2 = z."""
    if noise_multiplier == 0:
        return 0.0
    return (noise_multiplier**-2 - (2 * clipped_count_stddev) ** -2) ** -0.5


def _aggregator(values: dict) -> tuple[str | None, dict]:
    """How the aggregator clips if it is DP ('adaptive', 'fixed'; None: not DP or one's own), and its keys."""
    component = components.of_config(values, 'aggregator')
    return (component.dp if component is not None else None), values.get('aggregator') or {}


def _privacy_keys(values: dict) -> dict:
    keys = {'accountant': 'rdp', 'delta': None, 'amplification': 'poisson'}
    keys.update(values.get('privacy') or {})
    return keys


def _server_optimizer(values: dict) -> tuple[str, bool]:
    """The server optimizer as a message names it, wherever the config keeps it (a `server_optimizer` group or key),
    and whether it is adaptive: fedlab's own as the table says, one's own (or a bare name) by its name."""
    optimizer = values.get('server_optimizer')
    if isinstance(optimizer, dict):
        text = ' '.join(str(optimizer.get(k) or '') for k in ('name', '_target_', 'optimizer')).strip()
    else:
        text = str(optimizer or '')
    component = components.of_config(values, 'server_optimizer')
    if component is not None:
        return text, component.adaptive
    return text, any(adaptive in text.lower() for adaptive in ADAPTIVE_OPTIMIZERS)


def check(values: dict) -> list[str]:
    """Raises FedlabError (one line) for a DP setup whose epsilon would not hold; returns warnings to print."""
    keys = _privacy_keys(values)
    _check_privacy_keys(keys)
    clipping, aggregator = _aggregator(values)
    _check_local_only(values)
    if clipping is None:
        return []
    _check_dp_keys(aggregator)
    _check_dp_assumptions(values, keys, aggregator)
    warnings = []
    if clipping == 'adaptive':
        warnings += _adaptive_clipping_warnings(values, aggregator)
    optimizer, adaptive = _server_optimizer(values)
    if adaptive:
        warnings.append(
            f'server optimizer {optimizer} with aggregator={components.name_of(values, "aggregator")}: TFF recommends '
            'server SGD with momentum for DP (an adaptive optimizer rescales the noise coordinate by coordinate); '
            'epsilon is unchanged'
        )
    return warnings


def _check_privacy_keys(keys: dict) -> None:
    if keys['accountant'] not in ACCOUNTANTS:
        raise FedlabError(
            f'privacy.accountant={keys["accountant"]} is not allowed: privacy.accountant must be rdp or pld'
        )
    if keys['amplification'] not in AMPLIFICATIONS:
        raise FedlabError(
            f'privacy.amplification={keys["amplification"]} is not allowed: privacy.amplification must be poisson '
            '(sampling=poisson, q = clients_per_round / population) or none (q = 1)'
        )
    delta = keys['delta']
    if delta is not None and not (isinstance(delta, (int, float)) and 0 < delta < 1):
        raise FedlabError(f'privacy.delta={delta} is not allowed: privacy.delta must be a number in (0, 1) or null')


def _check_local_only(values: dict) -> None:
    """A local-only aggregator (secure: TFF's test context) with a remote runtime."""
    aggregator = components.of_config(values, 'aggregator')
    runtime = components.of_config(values, 'runtime')
    if aggregator is not None and aggregator.local_only and runtime is not None and runtime.remote:
        raise FedlabError(
            f'aggregator={aggregator.name} runs in TFF\'s test context on this machine\'s worker, which simulates the '
            'secure sums; remote workers cannot run them: use the local runtime'
        )


def _check_dp_keys(aggregator: dict) -> None:
    z = aggregator.get('noise_multiplier')
    if not isinstance(z, (int, float)) or z < 0:
        raise FedlabError(f'aggregator.noise_multiplier={z} is not allowed: it must be a number >= 0')
    for key, allowed, ok in [
        ('clip', 'a number > 0', lambda v: v > 0),
        ('initial_clip', 'a number > 0', lambda v: v > 0),
        ('target_unclipped_quantile', 'a number in [0, 1]', lambda v: 0 <= v <= 1),
        ('clip_learning_rate', 'a number >= 0', lambda v: v >= 0),
        ('clipped_count_stddev', 'a number >= 0 or null', lambda v: v >= 0),
    ]:
        value = aggregator.get(key)
        if value is not None and not (isinstance(value, (int, float)) and ok(value)):
            raise FedlabError(f'aggregator.{key}={value} is not allowed: aggregator.{key} must be {allowed}')


def _check_dp_assumptions(values: dict, keys: dict, aggregator: dict) -> None:
    """What the accountant's epsilon assumes: the exact sum, Poisson sampling, each client counted once."""
    name = components.name_of(values, 'aggregator')
    if aggregator.get('compression'):
        raise FedlabError(
            f'aggregator={name} with aggregator.compression=true: {DP_WITH_COMPRESSION}; DP runs with the exact sum'
        )
    sampler = components.of_config(values, 'sampling')  # None: one's own, which the accountant cannot assume Poisson
    if keys['amplification'] == 'poisson' and (sampler is None or not sampler.poisson):
        raise FedlabError(
            f'aggregator={name} with sampling={components.name_of(values, "sampling")}: the accountant assumes each '
            'client joins each round independently (Poisson sampling, which is what makes epsilon small); choose '
            'sampling=poisson, or add privacy.amplification=none to account every round with q = 1'
        )
    _check_system(values, name)
    component = components.of_config(values, 'aggregator')
    # fedlab.algorithms' builders take an unweighted factory as such: each client counts once
    if component is not None and component.unweighted and values.get('weighting', 'uniform') != 'uniform':
        raise FedlabError(
            f'aggregator={name} is unweighted (each client counts once) and weighting={values["weighting"]} weights '
            'clients by examples: use weighting=uniform'
        )


def _check_system(values: dict, name: str) -> None:
    """A simulated system (fedlab.heterogeneity): dropout and deadlines only lower a client's chance to contribute,
    so epsilon at q = clients_per_round / population still bounds it; over-selection and availability windows raise
    that chance, or make it depend on other clients, which the accountant does not model."""
    from fedlab.heterogeneity import settings as system_settings

    system = system_settings.settings(values.get('system'))
    if system is None:
        return
    if system.rules.over_selection > 0:
        raise FedlabError(
            f'aggregator={name} with system.over_selection={system.rules.over_selection:g}: keeping the first N of a '
            'larger sample makes a client\'s chance to contribute depend on the others, which the accountant does not '
            'model; use system.over_selection=0 (dropout and deadlines keep epsilon an upper bound)'
        )
    if system.has_availability:
        raise FedlabError(
            f'aggregator={name} with system.path={system.trace}: its availability windows raise an online client\'s '
            'chance to be sampled above q = clients_per_round / population; use a trace without windows'
        )


def _adaptive_clipping_warnings(values: dict, aggregator: dict) -> list[str]:
    """Refuses TFF's limit between the noise and the clipped-count noise; warns when the clip estimate is costly."""
    warnings = []
    z = aggregator['noise_multiplier']
    if z > 0:
        clients = values.get('clients_per_round', 1)
        stddev = aggregator.get('clipped_count_stddev')
        default_stddev = stddev is None
        if default_stddev:
            stddev = DEFAULT_CLIPPED_COUNT_STDDEV_FRACTION * clients
        if z >= 2 * stddev:
            fix = (
                f'raise clients_per_round above {z / (2 * DEFAULT_CLIPPED_COUNT_STDDEV_FRACTION):g}, '
                if default_stddev else ''
            )
            raise FedlabError(
                f'aggregator=dp: noise_multiplier={z} must be below 2 x clipped_count_stddev = {2 * stddev:g} '
                f'(TFF\'s adaptive clipping spends part of the noise on the clip estimate; clipped_count_stddev '
                f'{"defaults to 0.05 x clients_per_round" if default_stddev else "is set"}): {fix}set '
                f'aggregator.clipped_count_stddev above {z / 2:g}, or use aggregator=dp_fixed'
            )
        factor = adaptive_noise_split(z, stddev) / z
        if factor >= 2:
            warnings.append(
                f'aggregator=dp: the update gets {factor:.2f}x the noise of noise_multiplier={z} to pay for the clip '
                'estimate; more clients_per_round or a larger clipped_count_stddev would lower it'
            )
    if aggregator.get('zeroing'):
        warnings.append(f'aggregator.zeroing=true: {ZEROING_CAVEAT}')
    return warnings


def settings(values: dict, *, population: int) -> DpSettings | None:
    """The accountant's settings for a run of a DP aggregator (None for other aggregators); `values` has passed
    `check`. q = clients_per_round / population under Poisson sampling, 1 with privacy.amplification=none."""
    clipping, aggregator = _aggregator(values)
    if clipping is None:
        return None
    keys = _privacy_keys(values)
    z = float(aggregator['noise_multiplier'])
    q = 1.0 if keys['amplification'] == 'none' else min(1.0, values['clients_per_round'] / population)
    update_z = stddev = None
    caveats = []
    if clipping == 'adaptive':
        stddev = aggregator.get('clipped_count_stddev')
        if stddev is None:
            stddev = DEFAULT_CLIPPED_COUNT_STDDEV_FRACTION * values['clients_per_round'] if z > 0 else 0.0
        update_z = adaptive_noise_split(z, stddev)
        if aggregator.get('zeroing'):
            caveats.append(ZEROING_CAVEAT)
    if z == 0:
        caveats.append('noise_multiplier=0: no noise, no privacy (epsilon is infinite)')
    return DpSettings(
        noise_multiplier=z,
        sampling_rate=q,
        delta=float(keys['delta']) if keys['delta'] is not None else default_delta(population),
        accountant=keys['accountant'],
        clipping=clipping,
        update_noise_multiplier=update_z,
        clipped_count_stddev=None if stddev is None else float(stddev),
        caveats=tuple(caveats),
    )

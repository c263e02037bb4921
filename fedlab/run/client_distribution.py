"""How a metric is spread over clients: the figures federated-learning papers report beside the example-weighted
one (LEAF's 10th and 90th percentiles, fairness papers' worst 10% of clients). Pure numpy.

Each client counts once (an unweighted distribution over clients, not examples). `worst10` is the mean of the worst
10% of clients (at least one): the lowest accuracies, the highest losses.
"""

import math

import numpy as np

STATS = ('mean', 'std', 'p10', 'p50', 'p90', 'worst10')
# The per-client metrics with a distribution, and which end of each is the worst.
LOWER_IS_WORSE = {'loss': False, 'accuracy': True}


def columns(metric: str) -> list[str]:
    """`accuracy` -> accuracy_mean, accuracy_std, ... (a population's keys, after its name)."""
    return [f'{metric}_{stat}' for stat in STATS]


DISTRIBUTION_KEYS = tuple(key for metric in LOWER_IS_WORSE for key in columns(metric))
GAIN_KEYS = tuple(columns('accuracy_gain'))  # personalized - global accuracy, per client


def summarize(values, *, lower_is_worse: bool) -> dict[str, float]:
    """The STATS of `values` (one per client); {} for no clients. std is the population's (ddof 0); percentiles
    interpolate linearly (numpy's default)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return {}
    worst = np.sort(values) if lower_is_worse else -np.sort(-values)
    p10, p50, p90 = np.percentile(values, [10, 50, 90])
    return {
        'mean': float(values.mean()),
        'std': float(values.std()),
        'p10': float(p10),
        'p50': float(p50),
        'p90': float(p90),
        'worst10': float(worst[: max(1, math.ceil(0.1 * values.size))].mean()),
    }


def distribution(per_client: list[dict[str, float]]) -> dict[str, float]:
    """`{loss_mean: ..., accuracy_p10: ...}` of clients' finalized metrics."""
    found = {}
    for metric, lower_is_worse in LOWER_IS_WORSE.items():
        stats = summarize([m[metric] for m in per_client], lower_is_worse=lower_is_worse)
        found.update({f'{metric}_{stat}': value for stat, value in stats.items()})
    return found


def gain_distribution(gains) -> dict[str, float]:
    """The STATS of per-client accuracy gains (personalized - global): worst is the lowest gain."""
    return {f'accuracy_gain_{stat}': v for stat, v in summarize(gains, lower_is_worse=True).items()}

"""Client samplers: each returns a function round_num -> list of client ids for that round.

Every draw depends only on (seed, round), so a resumed or repeated run samples the same clients.
"""

from collections.abc import Callable, Sequence

from fedlab import seeds

Sampler = Callable[[int], list[str]]


def fixed(client_ids: Sequence[str], clients_per_round: int) -> Sampler:
    """The tutorial's choice: the same first `clients_per_round` clients (sorted by id) every round."""
    chosen = sorted(client_ids)[:clients_per_round]
    return lambda round_num: list(chosen)


def uniform(client_ids: Sequence[str], clients_per_round: int, *, seed: int) -> Sampler:
    """`clients_per_round` distinct clients drawn uniformly each round."""
    import tensorflow_federated as tff

    sample = tff.simulation.build_uniform_sampling_fn(
        sorted(client_ids), replace=False, random_seed=seeds.derive(seed, 'sampling')
    )
    return lambda round_num: list(sample(round_num, clients_per_round))


def poisson(client_ids: Sequence[str], clients_per_round: int, *, seed: int) -> Sampler:
    """Each client joins each round independently with probability q = clients_per_round / population: the
    sampling DP accounting assumes. A round has clients_per_round clients on average, and may have none."""
    import numpy as np

    ids = sorted(client_ids)
    rate = clients_per_round / len(ids)
    stream = seeds.derive(seed, 'sampling')

    def sample(round_num: int) -> list[str]:
        joins = np.random.default_rng([stream, round_num]).random(len(ids)) < rate
        return [client_id for client_id, joined in zip(ids, joins) if joined]

    return sample


def held_out(client_ids: Sequence[str], fraction: float, *, seed: int) -> frozenset[str]:
    """`holdout_clients`: a seeded share `fraction` of the clients (at least one when it is > 0) that never train, so
    that evaluation can compare the clients that take part with clients never seen (the participation gap)."""
    if fraction <= 0:
        return frozenset()
    import numpy as np

    ids = sorted(client_ids)
    count = min(len(ids), max(1, round(fraction * len(ids))))
    chosen = np.random.default_rng(seeds.derive(seed, 'holdout')).choice(len(ids), size=count, replace=False)
    return frozenset(ids[i] for i in chosen)

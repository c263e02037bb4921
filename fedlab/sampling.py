"""Client samplers: each returns a function round_num -> list of client ids for that round."""

from collections.abc import Callable, Sequence

import tensorflow_federated as tff

from fedlab import seeds

Sampler = Callable[[int], list[str]]


def fixed(client_ids: Sequence[str], clients_per_round: int) -> Sampler:
    """The tutorial's choice: the same first `clients_per_round` clients (sorted by id) every round."""
    chosen = sorted(client_ids)[:clients_per_round]
    return lambda round_num: list(chosen)


def uniform(client_ids: Sequence[str], clients_per_round: int, *, seed: int) -> Sampler:
    """`clients_per_round` distinct clients drawn uniformly each round; the draw depends only on
    (seed, round), so a resumed or repeated run samples the same clients."""
    sample = tff.simulation.build_uniform_sampling_fn(
        sorted(client_ids), replace=False, random_seed=seeds.derive(seed, 'sampling')
    )
    return lambda round_num: list(sample(round_num, clients_per_round))

"""A sampler with a bug, for testing what fedlab does with an exception it did not foresee."""

from fedlab import sampling


def buggy(client_ids, clients_per_round, *, fail: bool):
    sample = sampling.fixed(client_ids, clients_per_round)

    def sampler(round_num):
        if fail:
            raise RuntimeError('injected bug\nwith a second line')
        return sample(round_num)

    return sampler

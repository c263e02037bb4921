"""A sampler that raises KeyboardInterrupt at a given round, as Ctrl-C would in the middle of a run."""

from fedlab import sampling


def interrupting(client_ids, clients_per_round, *, interrupt_at: int):
    sample = sampling.fixed(client_ids, clients_per_round)

    def sampler(round_num):
        if round_num == interrupt_at:
            raise KeyboardInterrupt
        return sample(round_num)

    return sampler


def interrupting_once(client_ids, clients_per_round, *, interrupt_at: int, marker: str):
    """Interrupts at `interrupt_at` unless `marker` exists (and creates it): a rerun with the same config resumes."""
    import pathlib

    sample = sampling.fixed(client_ids, clients_per_round)

    def sampler(round_num):
        if round_num == interrupt_at and not pathlib.Path(marker).exists():
            pathlib.Path(marker).touch()
            raise KeyboardInterrupt
        return sample(round_num)

    return sampler

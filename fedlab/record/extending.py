"""More rounds on a run directory: `fedlab hydra.run.dir=<a run of 10 rounds> rounds=15` continues it from its last
checkpoint (a completed run's is its last round) to the run of 15 rounds. No TensorFlow here: the CLI checks it
before TensorFlow loads.

Why continuing gives the longer run: every round is a function of its number, never of the total (the sampler's
draw is (seed, round), the learning-rate schedules are functions of the round, the ledger's totals come back from
metrics.csv), so rounds 1..10 of a 15-round run are the 10-round run's. Only what the shorter run did *because*
round 10 was its last stays as it was: its final evaluation (all test clients, personalization) in round 10's row.

Refused, in one line: fewer rounds than the directory holds (a run is not cut back), and a config whose other values
follow `rounds` (e.g. `client_lr_schedule.decay_rounds=${rounds}`), which would have made the rounds done differ.
"""

from fedlab.errors import FedlabError

ROUNDS = 'rounds'


def with_rounds_of(saved: dict, current: dict, *, done: int, run_dir) -> dict:
    """The `saved` identity (of a checkpoint after round `done`) with `current`'s rounds when `current` may continue
    it with another number of rounds; `saved` as it is when the rounds are the same. Raises FedlabError when
    `current` asks for fewer rounds than `done`, or when values besides `rounds` change with it."""
    before, after = saved.get(ROUNDS), current.get(ROUNDS)
    if before == after or not isinstance(before, int) or not isinstance(after, int):
        return saved
    if after < done:
        raise FedlabError(f'rounds={after} is fewer than the {done} rounds {run_dir} holds: a run is not cut back;'
                          f' use rounds>={done} to continue it, or a new run directory')
    extended = {**saved, ROUNDS: after}
    following = [key for key, a, b in _changes(extended, current) if (a, b) == (before, after)]
    if following:
        raise FedlabError(f'rounds={after} cannot continue the {done} rounds {run_dir} holds:'
                          f' {", ".join(following)} follows rounds ({before} -> {after}), so the rounds done would'
                          f' have been trained differently; use a new run directory')
    return extended


def _changes(saved: dict, current: dict, prefix: str = '') -> list[tuple[str, object, object]]:
    """(dotted key, saved value, current value) of every value that differs between two nested dicts."""
    changes = []
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changes += _changes(a, b, f'{prefix}{key}.')
        elif a != b:
            changes.append((f'{prefix}{key}', a, b))
    return changes

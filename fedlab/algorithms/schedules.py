"""Learning rates per round for the client and the server optimizer, applied between rounds.

A schedule is a frozen dataclass and a pure function of the round number (1, 2, ...): the factor that multiplies
the optimizer's learning rate (`client_lr`, `server_lr`) in that round. A resumed run, which sets the learning
rates again at the start of every round, continues exactly where the interrupted one was. Every schedule can start
with a linear warm-up: rounds 1..warmup_rounds take round / warmup_rounds; the decay then counts the rounds after
the warm-up (`s` below, 0 in the first of them).

No TensorFlow here: the CLI builds the schedules to check their values before TensorFlow loads.
"""

import dataclasses
import math

from fedlab.errors import FedlabError


@dataclasses.dataclass(frozen=True)
class Constant:
    """The optimizer's learning rate every round (after the warm-up, if any)."""

    warmup_rounds: int = 0

    def __post_init__(self):
        _check(self, 'warmup_rounds', self.warmup_rounds >= 0, 'an integer >= 0')

    def __call__(self, round_num: int) -> float:
        return _warmed_up(self, round_num, lambda rounds_after_warmup: 1.0)

    @property
    def varies(self) -> bool:
        return self.warmup_rounds > 0


@dataclasses.dataclass(frozen=True)
class ExponentialDecay:
    """decay_rate ** (s / decay_rounds) times the learning rate; with `staircase`, the exponent is rounded down."""

    decay_rate: float = 0.1
    decay_rounds: int = 500
    staircase: bool = False
    warmup_rounds: int = 0

    def __post_init__(self):
        _check(self, 'decay_rate', 0 < self.decay_rate <= 1, 'a number in (0, 1]')
        _check(self, 'decay_rounds', self.decay_rounds >= 1, 'an integer >= 1')
        _check(self, 'warmup_rounds', self.warmup_rounds >= 0, 'an integer >= 0')

    def __call__(self, round_num: int) -> float:
        def factor(rounds_after_warmup: int) -> float:
            exponent = rounds_after_warmup / self.decay_rounds
            return self.decay_rate ** (math.floor(exponent) if self.staircase else exponent)

        return _warmed_up(self, round_num, factor)

    @property
    def varies(self) -> bool:
        return self.decay_rate < 1 or self.warmup_rounds > 0


@dataclasses.dataclass(frozen=True)
class InverseSqrt:
    """sqrt(timescale_rounds / (timescale_rounds + s)) times the learning rate: halved after 3 x timescale_rounds."""

    timescale_rounds: int = 10
    warmup_rounds: int = 0

    def __post_init__(self):
        _check(self, 'timescale_rounds', self.timescale_rounds >= 1, 'an integer >= 1')
        _check(self, 'warmup_rounds', self.warmup_rounds >= 0, 'an integer >= 0')

    def __call__(self, round_num: int) -> float:
        return _warmed_up(self, round_num, lambda s: math.sqrt(self.timescale_rounds / (self.timescale_rounds + s)))

    @property
    def varies(self) -> bool:
        return True


Schedule = Constant | ExponentialDecay | InverseSqrt


def _warmed_up(schedule, round_num: int, decay) -> float:
    """The factor of round `round_num` (1, 2, ...) that multiplies the optimizer's learning rate."""
    if round_num <= schedule.warmup_rounds:
        return round_num / schedule.warmup_rounds
    return decay(round_num - 1 - schedule.warmup_rounds)


def _check(schedule, key: str, allowed: bool, what: str) -> None:
    if not allowed:
        name = type(schedule).__name__
        raise FedlabError(f'{name}.{key}={getattr(schedule, key)} is not allowed: {key} must be {what}')


CLIENT_LR, SERVER_LR = 'client_lr', 'server_lr'
_LEARNING_RATE = 'learning_rate'  # tff.learning.optimizers' hparams key, the same for every optimizer


class LearningRates:
    """The client and server learning rate of every round: set in the process's state through
    `process.set_hparams` before the round (`apply`), and recorded with it (a `recorder.RoundAnnotator`: its
    `columns` in metrics.csv, the TensorBoard run `tensorboard_run`, its `summary()` in results.json): `client_lr`
    times the `client` schedule's factor, `server_lr` times `server`'s (default: constant). A learning rate of None
    (FedSGD's clients have none) is neither set nor recorded."""

    columns = (CLIENT_LR, SERVER_LR)
    tensorboard_run = 'learning_rate'

    def __init__(
        self,
        *,
        client_lr: float | None = None,
        server_lr: float | None = None,
        client: Schedule | None = None,
        server: Schedule | None = None,
    ):
        self._rates = {CLIENT_LR: (client_lr, client or Constant()), SERVER_LR: (server_lr, server or Constant())}
        self._hparams = None  # the process's hyper-parameters, read once; only the learning rates change

    @property
    def varies(self) -> bool:
        return any(lr is not None and schedule.varies for lr, schedule in self._rates.values())

    def values(self, round_num: int) -> dict[str, float]:
        """The round's learning rates, by column (an absent optimizer's is left out)."""
        return {column: lr * schedule(round_num) for column, (lr, schedule) in self._rates.items() if lr is not None}

    def apply(self, process, state, round_num: int):
        """The state with the round's learning rates set. Constant schedules leave the state as it is (the
        optimizers were built with those rates), so a run without schedules costs no extra TFF calls."""
        hparams = self.hparams(process, state, round_num)
        return state if hparams is None else process.set_hparams(state, hparams)

    def hparams(self, process, state, round_num: int):
        """The process's hyper-parameters with the round's learning rates (a new structure each call), for
        `process.set_hparams`; None when the schedules are constant."""
        if not self.varies:
            return None
        import copy

        import numpy as np

        if self._hparams is None:
            self._hparams = process.get_hparams(state)
        rates = self.values(round_num)
        for part, column in (('client_work', CLIENT_LR), ('finalizer', SERVER_LR)):
            if column in rates:
                if _LEARNING_RATE not in self._hparams[part]:
                    raise FedlabError(f'{column} cannot be scheduled: this process has no {part} learning rate')
                self._hparams[part][_LEARNING_RATE] = np.float32(rates[column])
        return copy.deepcopy(self._hparams)

    # recorder.RoundAnnotator
    def round_values(self, round_num: int, client_ids: list[str]) -> dict[str, float]:
        del client_ids
        return self.values(round_num)

    def restore(self, row: dict[str, str] | None) -> None:
        """Nothing to restore: the rates are a function of the round number."""

    def summary(self) -> dict:
        """The schedules, for results.json."""
        return {
            column: {'learning_rate': lr, 'schedule': type(schedule).__name__, **dataclasses.asdict(schedule)}
            for column, (lr, schedule) in self._rates.items()
            if lr is not None
        }

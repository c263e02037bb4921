"""What the round loop (fedlab.run.round_loop.RoundLoop) tells the rest of a run: each round's `RoundResult`, handed
to its `RoundObserver`s (the run's record, the progress lines), and the `Evaluations` that fill the result's
`evaluations` after an evaluation round."""

import dataclasses
from collections.abc import Callable

import tqdm


@dataclasses.dataclass(frozen=True)
class RoundResult:
    """What one round produced: training metrics of the sampled clients and, if run, evaluations."""

    round_num: int
    client_ids: list[str]
    train: dict[str, float]
    evaluations: dict[str, dict[str, float]]  # population name -> metrics
    train_seconds: float
    eval_seconds: float
    # population name -> each client's evaluation (fedlab.run.evaluation.ClientEvaluation), for whole populations
    client_evaluations: dict[str, list] = dataclasses.field(default_factory=dict)


class RoundObserver:
    """One concern of a run that follows its rounds; a subclass overrides what it needs.

    The loop keeps the training state in TFF's worker where it can (a block of rounds, a resident state): a round
    then reaches `on_round_end` with the state None. An observer that needs the state after some round says so in
    `needs_state_after`; a block of rounds then ends there and the state comes back to Python.
    """

    def needs_state_after(self, round_num: int) -> bool:
        """Whether `on_round_end` of round `round_num` must receive the state after it."""
        return False

    def on_round_end(self, result: RoundResult, state) -> None:
        """A complete round, as soon as it is complete, and the state after it (or None, see the class doc)."""

    def on_state_fetched(self, round_num: int, state) -> None:
        """The state after round `round_num`, which reached `on_round_end` without it, fetched since (before a stop
        or a round trained alone)."""

    def stop_reason(self) -> str | None:
        """Why the run should end after the round just handed on (e.g. it reached its target accuracy), or None."""
        return None


class StopAtTarget(RoundObserver):
    """`stop_at_target`: ends the run after the first evaluation whose `population` accuracy reaches `target`."""

    def __init__(self, target: float, population: str = 'eval'):
        self._target = target
        self._population = population
        self._reason = None

    def on_round_end(self, result: RoundResult, state) -> None:
        accuracy = result.evaluations.get(self._population, {}).get('accuracy')
        if accuracy is not None and accuracy >= self._target:
            self._reason = (f'reached target_accuracy={self._target} in round {result.round_num} '
                            f'({self._population} accuracy {accuracy:.4f})')

    def stop_reason(self) -> str | None:
        return self._reason


class Evaluations:
    """The evaluations after an evaluation round (round_loop.Schedule.evaluates_after): each evaluator (e.g.
    fedlab.run.evaluation.ClientsEvaluator), called with the model weights and the round number, returns its
    populations' `PopulationEvaluation`s; then, if given, `personalization` (fedlab.run.personalization) with the
    model weights, the round and those evaluations, returns its own (none in rounds it skips)."""

    def __init__(self, evaluators: dict[str, Callable] | list[Callable], personalization: Callable | None = None):
        self._evaluators = list(evaluators.values()) if isinstance(evaluators, dict) else list(evaluators)
        self._personalization = personalization

    def __call__(self, model_weights, round_num: int) -> dict:
        """`PopulationEvaluation` per population."""
        found = {}
        for evaluate in self._evaluators:
            found.update(evaluate(model_weights, round_num))
        if self._personalization is not None:
            found.update(self._personalization(model_weights, round_num, found))
        return found


class ProgressPrinter(RoundObserver):
    """A progress bar on a terminal (none in a pipe or log file) and one line per round; a context manager that
    closes the bar."""

    def __init__(self, rounds: int, done: int):
        self._rounds = rounds
        self._bar = tqdm.tqdm(total=rounds, initial=done, desc='rounds', unit='round', leave=False, disable=None)

    def on_round_end(self, result: RoundResult, state) -> None:
        self._bar.update()
        line = f'round {result.round_num:>{len(str(self._rounds))}}/{self._rounds}  train {metrics_text(result.train)}'
        for population, metrics in result.evaluations.items():
            line += f'  | {population} {metrics_text(metrics)}'
        self._bar.write(line + f'  ({result.train_seconds:.2f} s)')

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self._bar.close()


def metrics_text(metrics: dict[str, float]) -> str:
    """Loss, accuracy and examples, as the round lines print them."""
    if 'loss' not in metrics:  # a round without clients (sampling=poisson)
        return 'no clients'
    return f'loss {metrics["loss"]:.4f} accuracy {metrics["accuracy"]:.4f} examples {int(metrics["examples"])}'

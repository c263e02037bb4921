"""Run a TFF learning process round by round (the processes themselves: fedlab.algorithms)."""

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Sequence

import tensorflow_federated as tff

from fedlab.algorithms.schedules import LearningRates
from fedlab.config.efficiency import Efficiency
from fedlab.errors import TrainingDiverged, one_line_text
from fedlab.fast_paths import round_blocks
from fedlab.models import ModelFn
from fedlab.run import evaluation, interrupts
from fedlab.run.client_states import StatefulRounds
from fedlab.run.observers import Evaluations, RoundObserver, RoundResult
from fedlab.sampling import Sampler
from fedlab.tff_internals import serialization

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class FedAvgConfig:
    """Optimizers of weighted FedAvg: client SGD and server SGD, each with optional momentum."""

    client_lr: float = 0.02
    server_lr: float = 1.0
    client_momentum: float = 0.0
    server_momentum: float = 0.0


@dataclasses.dataclass(frozen=True)
class Schedule:
    """How long to train and how often to evaluate."""

    rounds: int = 10
    clients_per_round: int = 10
    eval_every: int = 5  # 0: evaluate only after the last round

    def evaluates_after(self, round_num: int) -> bool:
        is_last = round_num == self.rounds
        return is_last or (self.eval_every > 0 and round_num % self.eval_every == 0)


def build_fed_avg(
    model_fn: ModelFn,
    config: FedAvgConfig,
    *,
    model_aggregator: tff.aggregators.WeightedAggregationFactory,
    client_inputs: str = 'dataset',
    batch_size: int = 20,
) -> tff.learning.templates.LearningProcess:
    """Weighted FedAvg (clients weighted by example count) with `build_sgdm` optimizers: a shorthand for
    `fedlab.algorithms.fedavg.build_fed_avg`, which has the other optimizers and weightings.

    `client_inputs='dataset'`: TFF's own process, clients receive `tf.data.Dataset`s of batches.
    `client_inputs='tensors'`: the same maths, clients receive their batch stream as tensors
    (`tensor_client_work.materialize`) and train in batches of `batch_size` in-graph; several times faster.
    `client_inputs='shards'`: the same again, clients receive the path of their stream's shard file
    (`client_data.ClientShards`) and read it inside TFF's worker; fastest, no pixels cross gRPC.
    """
    from fedlab.algorithms import NUM_EXAMPLES, UNIFORM, aggregation, fedavg, optimizers

    return fedavg.build_fed_avg(
        model_fn,
        optimizers.sgd(config.client_lr, config.client_momentum),
        optimizers.sgd(config.server_lr, config.server_momentum),
        model_aggregator=model_aggregator,
        weighting=UNIFORM if aggregation.is_unweighted(model_aggregator) else NUM_EXAMPLES,  # e.g. DP: once each
        client_inputs=client_inputs,
        batch_size=batch_size,
    )


def train_metrics(metrics) -> dict[str, float]:
    """The clients' training metrics of one round (`process.next(...).metrics`), with the names every model
    shares."""
    return evaluation.rename_metrics(metrics['client_work']['train'])


def _check_finite(round_num: int, metrics, train: dict[str, float]) -> None:
    # FedAvg's finalizer skips a non-finite update and counts it; a NaN loss shows the same thing.
    non_finite_update = int(metrics.get('finalizer', {}).get('update_non_finite', 0))
    if non_finite_update or not math.isfinite(train['loss']):
        raise TrainingDiverged(
            f'training diverged in round {round_num}: loss {train["loss"]}, non-finite update '
            f'{bool(non_finite_update)}; try a smaller client_lr or server_lr'
        )


class RoundLoop:
    """Trains rounds one TFF call at a time: a round alone, or a block of rounds (fedlab.fast_paths.round_blocks).

    `run(state, start_round)` trains rounds `start_round`..`schedule.rounds` from `state` (None: a fresh
    initial state) and returns the final state; it raises TrainingDiverged, before the observers hear of it, for a
    non-finite round.

    `learning_rates` sets each round's client and server learning rates in the state before the round (a
    function of the round number, so a resumed run continues the schedule). After an evaluation round,
    `evaluations` fill the round's `RoundResult.evaluations`. Every round's result then goes to each of `observers`
    (fedlab.run.observers.RoundObserver), in order, with the state after it, as soon as the round is complete.

    `client_states` (fedlab.run.client_states.StatefulRounds), for a process whose clients keep state (SCAFFOLD,
    FedDyn): each round's clients get theirs, and the states the round returns are kept.

    After a round (or block) for which an observer gives a `stop_reason`, the loop ends there and says why in
    `stopped`.

    `efficiency.rounds_per_call` > 1 trains up to that many rounds in one TFF call, the same values bitwise; a block
    ends after an evaluation, the last round and every round an observer `needs_state_after`. Its rounds reach the
    observers together when it returns, with the state None but after the last. A stop request (Ctrl-C) is honoured
    between blocks; a block with a non-finite round is trained again round by round, so that divergence is reported
    at the same round as without blocks. `efficiency.resident_state`: the state stays in TFF's worker between calls
    (fedlab.tff_internals.resident_state), fetched only where it is needed (those rounds, and a stop request); other
    rounds reach the observers with the state None, and their `on_state_fetched` receives such a state when it is
    fetched later (before a round trained alone).
    """

    def __init__(
        self,
        process: tff.learning.templates.LearningProcess,
        train_inputs: Callable[[list[str]], list],
        sampler: Sampler,
        schedule: Schedule,
        *,
        evaluations: Evaluations,
        observers: Sequence[RoundObserver] = (),
        learning_rates: LearningRates | None = None,
        efficiency: Efficiency = Efficiency(),
        client_states: StatefulRounds | None = None,
    ):
        self._process = process
        self._client_states = client_states
        self._train_inputs = train_inputs
        self._sampler = sampler
        self._schedule = schedule
        self._evaluations = evaluations
        self._observers = tuple(observers)
        self._learning_rates = learning_rates
        self._rounds_per_call = efficiency.rounds_per_call
        use_blocks = efficiency.rounds_per_call > 1 or efficiency.resident_state
        self._blocks = round_blocks.RoundBlocks(process, resident=efficiency.resident_state) if use_blocks else None

    def run(self, state=None, start_round: int = 1):
        """Trains; `stopped` is then why the loop ended before the last round (an observer's `stop_reason`), or None."""
        self.stopped = None
        serialization.install()  # the state crosses to TFF's worker every round: serialize it without copies
        if state is None:
            state = self._process.initialize()
        round_num = start_round
        self._last_complete = (start_round - 1, state)  # the latest recorded round and its state (maybe a handle)
        while round_num <= self._schedule.rounds:
            # The round (or block) boundary, where a Ctrl-C or SIGTERM stops the run: with the state in TFF's worker,
            # it comes back first, so that the stop checkpoints the last round.
            if interrupts.stop_requested():
                state = self._state_in_python(state, after_round=round_num - 1)
            interrupts.raise_if_requested()
            try:
                state, round_num = self._train_and_record(state, round_num)
            except (KeyboardInterrupt, interrupts.Terminated):
                self._fetch_on_stop()
                raise
            self.stopped = next(filter(None, (observer.stop_reason() for observer in self._observers)), None)
            if self.stopped:  # (an evaluation ends a block, so a target is reached at a block's last round)
                return self._state_in_python(state, after_round=round_num - 1)
        return state

    def _train_and_record(self, state, round_num: int):
        """The next round, or block of rounds, from `round_num`: (the state after it, the round after it)."""
        planned = round_blocks.plan(
            round_num,
            self._schedule.rounds,
            self._sampler,
            rounds_per_call=self._rounds_per_call,
            state_needed_after=self._state_needed_after,
        )
        trained = None
        if self._blocks and (len(planned) > 1 or self._blocks.resident) and planned[0].client_ids:
            trained = self._train_block(state, planned)
        if trained is None:  # no blocks, a block of one, or a block with a non-finite round
            state = self._train_one_by_one(state, planned)
        else:
            state = self._record_block(planned, *trained)
        return state, round_num + len(planned)

    def _fetch_on_stop(self) -> None:
        """A signal that stops at once (a second Ctrl-C, inside a TFF call) leaves the state of the last complete
        round in TFF's worker, out of the stop's checkpoint: it is fetched first, unless the worker died with the
        signal (then the run resumes from its last checkpoint)."""
        after_round, state = self._last_complete
        try:
            self._state_in_python(state, after_round=after_round)
        except Exception as error:
            log.warning("round %d's state could not be fetched from TFF's worker at the stop (%s)", after_round,
                        one_line_text(error) or type(error).__name__)  # fmt: skip

    def _state_needed_after(self, round_num: int) -> bool:
        """Whether the state after `round_num` must reach Python: for an evaluation, or an observer."""
        return self._schedule.evaluates_after(round_num) or any(
            observer.needs_state_after(round_num) for observer in self._observers
        )

    def _state_in_python(self, state, *, after_round: int):
        """The state as a Python value: fetched from TFF's worker if it is kept there, and then handed to the
        observers' `on_state_fetched` (the round it follows reached them without it)."""
        if self._blocks and self._blocks.is_handle(state):
            state = self._blocks.fetch(state)
            for observer in self._observers:
                observer.on_state_fetched(after_round, state)
        return state

    def _train_one_by_one(self, state, planned: list[round_blocks.PlannedRound]):
        state = self._state_in_python(state, after_round=planned[0].round_num - 1)
        for i, planned_round in enumerate(planned):
            if i:
                interrupts.raise_if_requested()
            if self._learning_rates is not None:
                state = self._learning_rates.apply(self._process, state, planned_round.round_num)
            start = time.perf_counter()
            inputs = self._train_inputs(planned_round.client_ids)
            if self._client_states is None:
                output = self._process.next(state, inputs)
            else:  # each client's state in, the new ones kept
                output = self._client_states.next(
                    self._process, state, planned_round.round_num, planned_round.client_ids, inputs
                )
            state = output.state
            self._finish_round(planned_round, output.metrics, time.perf_counter() - start, state)
            self._last_complete = (planned_round.round_num, state)
        return state

    def _train_block(self, state, planned: list[round_blocks.PlannedRound]):
        """The planned rounds in one TFF call: (state after the last, each round's metrics, seconds), or None if a
        round is not finite (the caller trains the block again round by round, which raises TrainingDiverged)."""
        hparams = None
        if self._learning_rates is not None and self._learning_rates.varies:
            hparams = [self._learning_rates.hparams(self._process, state, r.round_num) for r in planned]
        start = time.perf_counter()
        first, last = planned[0].round_num, planned[-1].round_num
        with interrupts.boundary('this round' if first == last else f'this block of rounds ({first}-{last})'):
            after, metrics = self._blocks.next(state, [self._train_inputs(r.client_ids) for r in planned], hparams)
        seconds = time.perf_counter() - start
        for r, round_metrics in zip(planned, metrics):
            try:
                _check_finite(r.round_num, round_metrics, train_metrics(round_metrics))
            except TrainingDiverged:
                return None
        return after, metrics, seconds

    def _record_block(self, planned: list[round_blocks.PlannedRound], state, block_metrics, seconds):
        """Hands on a block's rounds; the state comes back to Python where the run needs it."""
        last = planned[-1].round_num
        if last == self._schedule.rounds or self._state_needed_after(last):
            state = self._blocks.fetch(state)  # (a stop request fetches it at the boundary: see `run`)
        with interrupts.uncuttable():  # recorded together: Python holds a state only after the block's last round
            for planned_round, metrics in zip(planned, block_metrics):
                after = state if planned_round is planned[-1] and not self._blocks.is_handle(state) else None
                self._finish_round(planned_round, metrics, seconds / len(planned), after)
            self._last_complete = (last, state)  # before the section ends, where a second Ctrl-C is raised
        return state

    def _finish_round(self, planned: round_blocks.PlannedRound, metrics, train_seconds: float, state) -> None:
        """Checks, evaluates (after an evaluation round) and hands on one trained round."""
        # A round without clients (sampling=poisson) trains nothing: TFF reports zeros and, for a mean, a 0/0
        # update that it skips; a DP aggregator still applies its noise.
        train = train_metrics(metrics) if planned.client_ids else {'examples': 0, 'batches': 0}
        if planned.client_ids:
            _check_finite(planned.round_num, metrics, train)
        evaluations, eval_seconds = {}, 0.0
        if self._schedule.evaluates_after(planned.round_num):
            start = time.perf_counter()
            evaluations = self._evaluations(self._process.get_model_weights(state), planned.round_num)
            eval_seconds = time.perf_counter() - start
        result = RoundResult(
            round_num=planned.round_num,
            client_ids=planned.client_ids,
            train=train,
            evaluations={population: evaluated.metrics for population, evaluated in evaluations.items()},
            train_seconds=train_seconds,
            eval_seconds=eval_seconds,
            client_evaluations={population: evaluated.clients for population, evaluated in evaluations.items()
                                if evaluated.part_of is None},
        )
        for observer in self._observers:
            observer.on_round_end(result, state)

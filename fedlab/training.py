"""Run a TFF learning process round by round (the processes themselves: fedlab.algorithms)."""

import dataclasses
import math
import time
from collections.abc import Callable

import tensorflow_federated as tff

from fedlab import evaluation, interrupts, tff_serialization
from fedlab.algorithms.schedules import LearningRates
from fedlab.errors import TrainingDiverged
from fedlab.models import ModelFn
from fedlab.sampling import Sampler


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


@dataclasses.dataclass(frozen=True)
class RoundResult:
    """What one round produced: training metrics of the sampled clients and, if run, evaluations."""

    round_num: int
    client_ids: list[str]
    train: dict[str, float]
    evaluations: dict[str, dict[str, float]]  # population name -> metrics
    train_seconds: float
    eval_seconds: float


def train_metrics(process_output: tff.learning.templates.LearningProcessOutput) -> dict[str, float]:
    """The clients' training metrics of one round, with the names every model shares."""
    return evaluation.rename_metrics(process_output.metrics['client_work']['train'])


def _check_finite(round_num: int, output, train: dict[str, float]) -> None:
    # FedAvg's finalizer skips a non-finite update and counts it; a NaN loss shows the same thing.
    non_finite_update = int(output.metrics.get('finalizer', {}).get('update_non_finite', 0))
    if non_finite_update or not math.isfinite(train['loss']):
        raise TrainingDiverged(
            f'training diverged in round {round_num}: loss {train["loss"]}, non-finite update '
            f'{bool(non_finite_update)}; try a smaller client_lr or server_lr'
        )


def run(
    process: tff.learning.templates.LearningProcess,
    train_datasets: Callable[[list[str]], list],
    sampler: Sampler,
    schedule: Schedule,
    *,
    evaluate: Callable[[object, int], dict[str, dict[str, float]]],
    on_round: Callable[[RoundResult, object], None],
    state=None,
    start_round: int = 1,
    learning_rates: LearningRates | None = None,
):
    """Trains rounds `start_round`..`schedule.rounds` from `state` (default: a fresh initial state).

    `learning_rates` sets each round's client and server learning rates in the state before the round (a
    function of the round number, so a resumed run continues the schedule).

    `evaluate(model_weights, round_num)` returns metrics per evaluated population; `on_round(result, state)`
    receives every round's result and the state after it as soon as the round is complete.
    Returns the final state. Raises TrainingDiverged, before `on_round`, for a non-finite round.
    """
    tff_serialization.install()  # the state crosses to TFF's worker every round: serialize it without copies
    if state is None:
        state = process.initialize()
    for round_num in range(start_round, schedule.rounds + 1):
        interrupts.raise_if_requested()  # the round boundary, where a Ctrl-C or SIGTERM stops the run
        client_ids = sampler(round_num)
        if learning_rates is not None:
            state = learning_rates.apply(process, state, round_num)
        start = time.perf_counter()
        output = process.next(state, train_datasets(client_ids))
        train_seconds = time.perf_counter() - start
        # A round without clients (sampling=poisson) trains nothing: TFF reports zeros and, for a mean, a 0/0
        # update that it skips; a DP aggregator still applies its noise.
        train = train_metrics(output) if client_ids else {'examples': 0, 'batches': 0}
        if client_ids:
            _check_finite(round_num, output, train)
        state = output.state
        evaluations, eval_seconds = {}, 0.0
        if schedule.evaluates_after(round_num):
            start = time.perf_counter()
            evaluations = evaluate(process.get_model_weights(state), round_num)
            eval_seconds = time.perf_counter() - start
        on_round(
            RoundResult(
                round_num=round_num,
                client_ids=client_ids,
                train=train,
                evaluations=evaluations,
                train_seconds=train_seconds,
                eval_seconds=eval_seconds,
            ),
            state,
        )
    return state

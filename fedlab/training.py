"""Federated averaging: build the TFF learning process and run it round by round."""

import dataclasses
import time
from collections.abc import Callable

import tensorflow_federated as tff

from fedlab import evaluation
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
) -> tff.learning.templates.LearningProcess:
    """Weighted FedAvg (clients weighted by example count) with `build_sgdm` optimizers."""
    return tff.learning.algorithms.build_weighted_fed_avg(
        model_fn,
        client_optimizer_fn=tff.learning.optimizers.build_sgdm(
            learning_rate=config.client_lr, momentum=config.client_momentum or None
        ),
        server_optimizer_fn=tff.learning.optimizers.build_sgdm(
            learning_rate=config.server_lr, momentum=config.server_momentum or None
        ),
        model_aggregator=model_aggregator,
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


def run(
    process: tff.learning.templates.LearningProcess,
    train_datasets: Callable[[list[str]], list],
    sampler: Sampler,
    schedule: Schedule,
    *,
    evaluate: Callable[[object], dict[str, dict[str, float]]],
    on_round: Callable[[RoundResult], None],
):
    """Trains for `schedule.rounds` rounds, evaluating on schedule; returns the final process state.

    `evaluate(model_weights)` returns metrics per evaluated population; `on_round` receives every
    round's result as soon as it is complete, so nothing finished is lost if training stops later.
    """
    state = process.initialize()
    for round_num in range(1, schedule.rounds + 1):
        client_ids = sampler(round_num)
        start = time.perf_counter()
        output = process.next(state, train_datasets(client_ids))
        state = output.state
        train_seconds = time.perf_counter() - start
        evaluations, eval_seconds = {}, 0.0
        if schedule.evaluates_after(round_num):
            start = time.perf_counter()
            evaluations = evaluate(process.get_model_weights(state))
            eval_seconds = time.perf_counter() - start
        on_round(
            RoundResult(
                round_num=round_num,
                client_ids=client_ids,
                train=train_metrics(output),
                evaluations=evaluations,
                train_seconds=train_seconds,
                eval_seconds=eval_seconds,
            )
        )
    return state

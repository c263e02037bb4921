"""One federated training run, from built components to the files in its run directory."""

import dataclasses
import functools
import pathlib
import time

import tensorflow_federated as tff
import tqdm

from fedlab import client_data, evaluation, recording, training
from fedlab.data.federated_data import FederatedData
from fedlab.models import ModelFn
from fedlab.sampling import Sampler

EVAL = 'eval'  # the clients' held-out data
EVAL_ON_TRAIN = 'eval_on_train'  # the clients' training data, after the last round


@dataclasses.dataclass(frozen=True)
class RunOutputs:
    """What `train_and_evaluate` leaves behind, besides the files."""

    rounds_completed: int
    final_train: dict[str, float]
    final_eval: dict[str, dict[str, float]]


def train_and_evaluate(
    data: FederatedData,
    model_fn: ModelFn,
    model_aggregator: tff.aggregators.WeightedAggregationFactory,
    sampler: Sampler,
    run_dir: pathlib.Path,
    *,
    fed_avg: training.FedAvgConfig,
    pipeline: client_data.PipelineConfig,
    schedule: training.Schedule,
    eval_on_train: bool = False,
    print_type_signature: bool = False,
    run_info: dict | None = None,
) -> RunOutputs:
    """Trains with FedAvg, evaluates on the clients' test data, writes metrics.csv, TensorBoard and
    results.json into `run_dir`. results.json is written even if training stops early, with its status."""
    started = time.perf_counter()
    run_dir.mkdir(parents=True, exist_ok=True)
    print(data.summary())

    # 1. The learning process and the federated evaluation.
    process = training.build_fed_avg(model_fn, fed_avg, model_aggregator=model_aggregator)
    if print_type_signature:
        print(process.initialize.type_signature.formatted_representation())
    eval_pipeline = functools.partial(client_data.eval_pipeline, batch_size=pipeline.batch_size)
    test_ids = [c for c in data.test.client_ids if data.test.create_tf_dataset_for_client(c).cardinality() != 0]
    evaluate_test = evaluation.FederatedEvaluator(model_fn, client_data.ClientDatasets(data.test, eval_pipeline)(test_ids))

    # 2. The clients' training pipelines, built once and reused every round.
    train_datasets = client_data.ClientDatasets(
        data.train, functools.partial(client_data.train_pipeline, config=pipeline)
    )

    # 3. Train, recording every round as soon as it is complete.
    populations = ['train', EVAL]
    csv_file = recording.MetricsCsv(run_dir / 'metrics.csv', populations)
    tensorboard = recording.TensorBoardLogger(run_dir / 'tensorboard', populations + [EVAL_ON_TRAIN])
    history: list[training.RoundResult] = []
    # disable=None: a bar on a terminal, none in a pipe or log file.
    progress = tqdm.tqdm(total=schedule.rounds, desc='rounds', unit='round', leave=False, disable=None)

    def on_round(result: training.RoundResult) -> None:
        history.append(result)
        row = {'round': result.round_num, 'clients': len(result.client_ids)}
        row.update({f'train_{k}': v for k, v in result.train.items()})
        for population, metrics in result.evaluations.items():
            row.update({f'{population}_{k}': v for k, v in metrics.items()})
        row.update(train_seconds=round(result.train_seconds, 3), eval_seconds=round(result.eval_seconds, 3))
        csv_file.write(row)
        tensorboard.write(result.round_num, 'train', result.train)
        for population, metrics in result.evaluations.items():
            tensorboard.write(result.round_num, population, metrics)
        progress.update()
        progress.write(_round_line(result, schedule.rounds))

    status = 'running'
    final_eval: dict[str, dict[str, float]] = {}
    try:
        state = training.run(
            process,
            train_datasets,
            sampler,
            schedule,
            evaluate=lambda weights: {EVAL: evaluate_test(weights)},
            on_round=on_round,
        )
        final_eval = dict(history[-1].evaluations)
        # 4. Optionally, the tutorial's evaluation of the final model on the clients' training data.
        if eval_on_train:
            train_ids = data.client_ids
            evaluate_train = evaluation.FederatedEvaluator(
                model_fn, client_data.ClientDatasets(data.train, eval_pipeline)(train_ids)
            )
            final_eval[EVAL_ON_TRAIN] = evaluate_train(process.get_model_weights(state))
            tensorboard.write(schedule.rounds, EVAL_ON_TRAIN, final_eval[EVAL_ON_TRAIN])
            print(f'evaluation on training data: {_metrics_text(final_eval[EVAL_ON_TRAIN])}')
        status = 'completed'
    except Exception:
        status = 'failed'
        raise
    except BaseException:  # Ctrl-C or SIGTERM: what finished is kept and marked as such.
        status = 'interrupted'
        raise
    finally:
        progress.close()
        csv_file.close()
        tensorboard.close()
        # 5. results.json: final metrics, timing and what was run.
        final_train = history[-1].train if history else {}
        recording.write_json(
            run_dir / 'results.json',
            {
                'status': status,
                'rounds_completed': len(history),
                'rounds': schedule.rounds,
                'final_train': final_train,
                'final_eval': final_eval,
                'wall_seconds': round(time.perf_counter() - started, 3),
                'train_seconds': round(sum(r.train_seconds for r in history), 3),
                'eval_seconds': round(sum(r.eval_seconds for r in history), 3),
                'data': _data_info(data),
                **(run_info or {}),
            },
        )
    return RunOutputs(rounds_completed=len(history), final_train=final_train, final_eval=final_eval)


def _metrics_text(metrics: dict[str, float]) -> str:
    return f'loss {metrics["loss"]:.4f} accuracy {metrics["accuracy"]:.4f} examples {int(metrics["examples"])}'


def _round_line(result: training.RoundResult, rounds: int) -> str:
    line = f'round {result.round_num:>{len(str(rounds))}}/{rounds}  train {_metrics_text(result.train)}'
    if EVAL in result.evaluations:
        line += f'  | eval {_metrics_text(result.evaluations[EVAL])}'
    return line + f'  ({result.train_seconds:.2f} s)'


def _data_info(data: FederatedData) -> dict:
    return {
        'name': data.name,
        'clients': len(data.client_ids),
        'image_shape': list(data.image_shape),
        'num_classes': data.num_classes,
    }

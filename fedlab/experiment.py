"""One federated training run, from built components to the files in its run directory."""

import dataclasses
import functools
import pathlib
import shutil
import time
from collections.abc import Callable

import tensorflow_federated as tff
import tqdm

from fedlab import checkpoints, client_data, evaluation, ledger, recording, training, workers
from fedlab.algorithms.schedules import LearningRates
from fedlab.data.federated_data import FederatedData
from fedlab.errors import FedlabError, TrainingDiverged
from fedlab.models import ModelFn
from fedlab.sampling import Sampler

EVAL = 'eval'  # the clients' held-out data
EVAL_ON_TRAIN = 'eval_on_train'  # the clients' training data, after the last round
COMMUNICATION = 'communication'  # the ledger's bits: a TensorBoard run of its own, as its tags are not metrics
POPULATIONS = ['train', EVAL]
METRICS_CSV, TIMING_CSV, CLIENTS_CSV = 'metrics.csv', 'timing.csv', 'clients.csv'
TABLES = [METRICS_CSV, TIMING_CSV, CLIENTS_CSV]


@dataclasses.dataclass(frozen=True)
class RunOutputs:
    """What `train_and_evaluate` leaves behind, besides the files."""

    rounds_completed: int
    final_train: dict[str, float]
    final_eval: dict[str, dict[str, float]]


def train_and_evaluate(
    data: FederatedData,
    model_fn: ModelFn,
    sampler: Sampler,
    run_dir: pathlib.Path,
    *,
    build_process: Callable[..., tff.learning.templates.LearningProcess],
    pipeline: client_data.PipelineConfig,
    schedule: training.Schedule,
    checkpoint_every: int = 5,
    eval_on_train: bool = False,
    print_type_signature: bool = False,
    config: dict | None = None,
    run_info: dict | None = None,
    learning_rates: LearningRates | None = None,
) -> RunOutputs:
    """Trains the process `build_process(client_inputs=..., batch_size=...)` builds (fedlab.algorithms), evaluates
    on the clients' test data, and writes the run directory.

    If `run_dir` holds a checkpoint of the same `config`, training continues from it. Every round is
    written to metrics.csv, timing.csv, clients.csv and TensorBoard when it ends; the full state is
    checkpointed every `checkpoint_every` rounds, after the last round and when interrupted; results.json
    is written however the run ends, with its status.
    """
    started = time.perf_counter()
    run_dir.mkdir(parents=True, exist_ok=True)
    config = config or {}
    store = checkpoints.CheckpointStore(run_dir / 'checkpoints')
    resume_round = store.resumable_round(config)
    if resume_round == schedule.rounds and (run_dir / 'results.json').exists():
        print(f'{run_dir} already holds all {schedule.rounds} rounds of this run; nothing to do.')
        return _outputs_from_files(run_dir)
    print(data.summary())

    # 1. The learning process and the federated evaluation.
    process = build_process(client_inputs=pipeline.client_inputs, batch_size=pipeline.batch_size)
    learning_rates = learning_rates or LearningRates(client=None, server=None)
    if print_type_signature:
        print(process.initialize.type_signature.formatted_representation())
    # What each round transmits, read from the process itself (see ledger.measure).
    communication = ledger.Ledger(ledger.measure(process))
    print(communication.describe())
    ledger.warn_if_compression_is_idle(communication.cost)
    eval_pipeline = functools.partial(client_data.eval_pipeline, batch_size=pipeline.batch_size)
    test_ids = [c for c in data.test.client_ids if data.test.create_tf_dataset_for_client(c).cardinality() != 0]
    if pipeline.client_inputs == 'shards':  # the same metrics, ~10x faster (see evaluation.ShardEvaluator)
        test_shards = client_data.ClientShards(data.test, eval_pipeline)
        evaluate_test = evaluation.ShardEvaluator(model_fn, test_shards(test_ids), batch_size=pipeline.batch_size)
    else:
        test_shards = None
        evaluate_test = evaluation.FederatedEvaluator(
            model_fn, client_data.ClientDatasets(data.test, eval_pipeline)(test_ids)
        )

    # 2. The clients' training pipelines, built once and reused every round.
    clients = client_data.CLIENT_INPUTS[pipeline.client_inputs]
    train_datasets = clients(data.train, functools.partial(client_data.train_pipeline, config=pipeline))

    # 3. The starting point: a fresh state, or the last checkpoint with the tables as they were then.
    state = None
    if resume_round:
        state = store.load(resume_round, process.initialize())
        store.restore_tables(resume_round, run_dir, TABLES)
        print(f'resuming {run_dir} after round {resume_round}')
    else:  # Rows of an earlier attempt that never reached a checkpoint are not this run's.
        for table in TABLES:
            (run_dir / table).unlink(missing_ok=True)
    shutil.rmtree(run_dir / 'tensorboard', ignore_errors=True)  # rebuilt from metrics.csv below
    tensorboard = recording.TensorBoardLogger(
        run_dir / 'tensorboard', POPULATIONS + [EVAL_ON_TRAIN, COMMUNICATION, learning_rates.TENSORBOARD_RUN]
    )
    recording.write_hparams(run_dir / 'tensorboard', recording.hparams_from_run_info(run_info))
    if resume_round:
        tensorboard.replay(recording.read_rows(run_dir / METRICS_CSV))
        for row in recording.read_rows(run_dir / METRICS_CSV):
            tensorboard.write(int(row['round']), COMMUNICATION, communication.resume(row))
            round_num = int(row['round'])
            tensorboard.write(round_num, learning_rates.TENSORBOARD_RUN, learning_rates.values(round_num))
    tables = {
        METRICS_CSV: recording.CsvTable(
            run_dir / METRICS_CSV, recording.metrics_columns(POPULATIONS) + list(learning_rates.columns)
        ),
        TIMING_CSV: recording.CsvTable(run_dir / TIMING_CSV, recording.TIMING_COLUMNS),
        CLIENTS_CSV: recording.CsvTable(run_dir / CLIENTS_CSV, recording.CLIENTS_COLUMNS),
    }
    # disable=None: a bar on a terminal, none in a pipe or log file.
    progress = tqdm.tqdm(
        total=schedule.rounds, initial=resume_round, desc='rounds', unit='round', leave=False, disable=None
    )
    last_complete = {'round': resume_round, 'state': state}

    def save_checkpoint() -> None:
        if last_complete['round'] > store.latest_round():
            store.save(
                last_complete['round'], last_complete['state'], tables=[run_dir / t for t in TABLES], config=config
            )

    # 4. Train, recording every round as soon as it is complete.
    def on_round(result: training.RoundResult, state) -> None:
        row = {'round': result.round_num, 'clients': len(result.client_ids)}
        row.update({f'train_{k}': v for k, v in result.train.items()})
        for population, metrics in result.evaluations.items():
            row.update({f'{population}_{k}': v for k, v in metrics.items()})
        bits = communication.record(len(result.client_ids))
        row.update(bits)
        rates = learning_rates.values(result.round_num)
        row.update(rates)
        tables[METRICS_CSV].write(row)
        tensorboard.write(result.round_num, COMMUNICATION, bits)
        tensorboard.write(result.round_num, learning_rates.TENSORBOARD_RUN, rates)
        tables[TIMING_CSV].write(
            {'round': result.round_num, 'train_seconds': result.train_seconds, 'eval_seconds': result.eval_seconds}
        )
        tables[CLIENTS_CSV].write({'round': result.round_num, 'client_ids': ' '.join(result.client_ids)})
        tensorboard.write(result.round_num, 'train', result.train)
        for population, metrics in result.evaluations.items():
            tensorboard.write(result.round_num, population, metrics)
        last_complete.update(round=result.round_num, state=state)
        if result.round_num == schedule.rounds or (checkpoint_every and result.round_num % checkpoint_every == 0):
            save_checkpoint()
        progress.update()
        progress.write(_round_line(result, schedule.rounds))
        workers.raise_if_signalled()

    status = 'running'
    eval_on_train_metrics = {}
    try:
        state = training.run(
            process,
            train_datasets,
            sampler,
            schedule,
            evaluate=lambda weights: {EVAL: evaluate_test(weights)},
            on_round=on_round,
            state=state,
            start_round=resume_round + 1,
            learning_rates=learning_rates,
        )
        # 5. Optionally, the tutorial's evaluation of the final model on the clients' training data.
        if eval_on_train:
            evaluate_train = evaluation.FederatedEvaluator(
                model_fn, client_data.ClientDatasets(data.train, eval_pipeline)(data.client_ids)
            )
            eval_on_train_metrics = evaluate_train(process.get_model_weights(state))
            tensorboard.write(schedule.rounds, EVAL_ON_TRAIN, eval_on_train_metrics)
            print(f'evaluation on training data: {_metrics_text(eval_on_train_metrics)}')
        status = 'completed'
    except TrainingDiverged as diverged:
        status = 'diverged'
        raise FedlabError(f'{diverged}; the last good checkpoint is round {store.latest_round()}') from None
    except Exception:
        status = 'failed'
        raise
    except BaseException:  # Ctrl-C or SIGTERM: keep every complete round, checkpoint included.
        status = 'interrupted'
        save_checkpoint()
        raise
    finally:
        for shards in (train_datasets, test_shards):
            if isinstance(shards, client_data.ClientShards):
                shards.close()
        progress.close()
        for table in tables.values():
            table.close()
        tensorboard.close()
        # 6. results.json: final metrics, timing and what was run.
        outputs = _outputs_from_files(run_dir, eval_on_train_metrics)
        timing = recording.read_rows(run_dir / TIMING_CSV)
        recording.write_json(
            run_dir / 'results.json',
            {
                'status': status,
                'rounds_completed': outputs.rounds_completed,
                'rounds': schedule.rounds,
                'resumed_after_round': resume_round,
                'final_train': outputs.final_train,
                'final_eval': outputs.final_eval,
                'wall_seconds': round(time.perf_counter() - started, 3),
                'train_seconds': round(sum(float(r['train_seconds']) for r in timing), 3),
                'eval_seconds': round(sum(float(r['eval_seconds']) for r in timing), 3),
                'data': _data_info(data),
                'communication': {**communication.cost.summary(), **communication.totals()},
                **(run_info or {}),
            },
        )
    return outputs


def _outputs_from_files(run_dir: pathlib.Path, eval_on_train_metrics: dict | None = None) -> RunOutputs:
    """Final metrics as recorded in metrics.csv (its last row holds the last round and its evaluation)."""
    rows = recording.read_rows(run_dir / METRICS_CSV) if (run_dir / METRICS_CSV).exists() else []
    if not rows:
        return RunOutputs(rounds_completed=0, final_train={}, final_eval={})
    last = rows[-1]

    def population(name):
        values = {m: float(last[f'{name}_{m}']) for m in recording.METRICS if last.get(f'{name}_{m}')}
        return {m: int(v) if m in ('examples', 'batches') else v for m, v in values.items()}

    final_eval = {EVAL: population(EVAL)} if last.get(f'{EVAL}_loss') else {}
    if eval_on_train_metrics:
        final_eval[EVAL_ON_TRAIN] = eval_on_train_metrics
    return RunOutputs(rounds_completed=int(last['round']), final_train=population('train'), final_eval=final_eval)


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

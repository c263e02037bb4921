"""One federated training run, from built components to the files in its run directory."""

import contextlib
import pathlib
from collections.abc import Callable

import tensorflow_federated as tff
import tqdm

from fedlab.record import checkpoints, ledger, recorder
from fedlab.run import round_inputs, evaluation, interrupts, round_loop, worker_processes
from fedlab.fast_paths import client_packing
from fedlab.algorithms.schedules import LearningRates
from fedlab.data.federated_data import FederatedData
from fedlab.config.efficiency import Efficiency
from fedlab.errors import TrainingDiverged
from fedlab.models import ModelFn
from fedlab.record.recorder import EVAL, RunOutputs
from fedlab.sampling import Sampler

EVAL_ON_TRAIN = 'eval_on_train'  # the clients' training data, after the last round


def train_and_evaluate(
    data: FederatedData,
    model_fn: ModelFn,
    sampler: Sampler,
    run_dir: pathlib.Path,
    *,
    build_process: Callable[..., tff.learning.templates.LearningProcess],
    learning_rates: LearningRates | None = None,
    pipeline: round_inputs.PipelineConfig,
    schedule: round_loop.Schedule,
    checkpoint_every: int = 5,
    eval_on_train: bool = False,
    eval_clients: int | None = None,
    print_type_signature: bool = False,
    config: dict | None = None,
    run_info: dict | None = None,
    privacy_ledger=None,
    efficiency: Efficiency = Efficiency(),
) -> RunOutputs:
    """Trains the process `build_process(client_inputs=, batch_size=)` builds (fedlab.algorithms), with the
    learning rates of `learning_rates` set before every round, evaluates on the clients' test data, and writes the
    run directory.

    If `run_dir` holds a checkpoint of the same `config`, training continues from it. Each round is recorded in
    one step when it ends (metrics.csv, timing.csv, clients.csv, TensorBoard; see recorder.RunRecorder); the full
    state is checkpointed every `checkpoint_every` rounds, after the last round and however the run stops;
    results.json is written however the run ends, with its status. Ctrl-C or SIGTERM stops the run after the
    current round (a second one at once), keeping every complete round. `privacy_ledger`
    (fedlab.privacy.accounting.PrivacyLedger, for DP aggregators) adds epsilon and its parameters to every round.
    `efficiency` (fedlab.config.efficiency): rounds per TFF call and packed clients, the same results in fewer calls.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    config = config or {}
    resume_round = checkpoints.CheckpointStore(run_dir / 'checkpoints').resumable_round(config)
    if resume_round == schedule.rounds and (run_dir / recorder.RESULTS_JSON).exists():
        print(f'{run_dir} already holds all {schedule.rounds} rounds of this run; nothing to do.')
        return recorder.outputs_from_files(run_dir)
    print(data.summary())
    worker_processes.set_intra_op_threads(efficiency.intra_op_threads)  # also shields the worker from terminal signals
    run = recorder.RunRecorder(
        run_dir,
        rounds=schedule.rounds,
        checkpoint_every=checkpoint_every,
        config=config,
        run_info=run_info,
        data_info=_data_info(data),
    )
    try:
        with interrupts.round_boundaries(), contextlib.ExitStack() as cleanup:
            cleanup.enter_context(run)  # last out: results.json says how the run ended, whenever that was
            # 1. The learning process, and what each round transmits (read from the process, see ledger.measure).
            packing = {'pack_clients': True} if efficiency.pack_clients else {}  # fedlab.fast_paths.client_packing
            process = build_process(client_inputs=pipeline.client_inputs, batch_size=pipeline.batch_size, **packing)
            learning_rates = learning_rates or LearningRates()  # none given: none recorded or set
            if print_type_signature:
                print(process.initialize.type_signature.formatted_representation())
            communication = ledger.Ledger(ledger.measure(process))
            print(communication.describe())
            print(efficiency.describe())
            ledger.warn_if_compression_is_idle(communication.cost)
            annotators = (communication, learning_rates, *([privacy_ledger] if privacy_ledger else []))
            if privacy_ledger:
                print(privacy_ledger.describe())
            interrupts.raise_if_requested()

            # 2. The clients' inputs (shards on a disk budget; the next round's prepared while a round trains) and
            # the test clients' evaluation (a fixed sample of eval_clients, all after the last round; built lazily).
            inputs = cleanup.enter_context(
                round_inputs.RunInputs(data.train, pipeline, sampler, rounds=(resume_round + 1, schedule.rounds))
            )
            if inputs.store is not None:  # a block of rounds reads every round's shards in one call
                inputs.store.calls_pinned = efficiency.rounds_per_call
            evaluate_test = evaluation.ClientsEvaluator(
                model_fn, data.test, batch_size=pipeline.batch_size, store=inputs.store, sample_size=eval_clients,
                seed=pipeline.seed, final_round=schedule.rounds,
            )
            interrupts.raise_if_requested()

            # 3. The record: a new run, or the last checkpoint with the files as they were then.
            state = run.open(resume_round, process.initialize() if resume_round else None,
                             annotators=(*annotators, *evaluate_test.annotators()))
            if resume_round:
                print(f'resuming {run_dir} after round {resume_round}')

            # 4. Train, each round recorded in one step as soon as it is complete.
            progress = cleanup.enter_context(_Progress(schedule.rounds, resume_round))
            state = round_loop.RoundLoop(
                process,
                client_packing.PackedInputs(inputs.train) if efficiency.pack_clients else inputs.train,
                sampler,
                schedule,
                evaluate=lambda weights, round_num: {EVAL: evaluate_test(weights, round_num)},
                on_round=lambda result, state: (run.record(result, state), progress.show(result)),
                learning_rates=learning_rates,
                rounds_per_call=efficiency.rounds_per_call,
                state_needed_after=run.checkpoints_after,
                resident_state=efficiency.resident_state,
                on_state=run.attach_state,
            ).run(state, start_round=resume_round + 1)

            # 5. Optionally, the tutorial's evaluation of the final model on the clients' training data.
            if eval_on_train:
                evaluate_train = evaluation.ClientsEvaluator(model_fn, data.train, batch_size=pipeline.batch_size,
                                                             store=inputs.store, name='train_eval')
                metrics = evaluate_train(process.get_model_weights(state))
                run.record_final_evaluation(EVAL_ON_TRAIN, metrics)
                print(f'evaluation on training data: {_metrics_text(metrics)}')
    except TrainingDiverged as diverged:
        raise TrainingDiverged(f'{diverged}; the last good checkpoint is round {run.last_checkpoint}') from None
    except Exception:
        interrupts.raise_if_requested()  # a failure a Ctrl-C or SIGTERM caused is an interruption
        raise
    return run.outputs


class _Progress:
    """A progress bar on a terminal (none in a pipe or log file) and one line per round."""

    def __init__(self, rounds: int, done: int):
        self._rounds = rounds
        self._bar = tqdm.tqdm(total=rounds, initial=done, desc='rounds', unit='round', leave=False, disable=None)

    def show(self, result: round_loop.RoundResult) -> None:
        self._bar.update()
        line = f'round {result.round_num:>{len(str(self._rounds))}}/{self._rounds}  train {_metrics_text(result.train)}'
        if EVAL in result.evaluations:
            line += f'  | eval {_metrics_text(result.evaluations[EVAL])}'
        self._bar.write(line + f'  ({result.train_seconds:.2f} s)')

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self._bar.close()


def _metrics_text(metrics: dict[str, float]) -> str:
    if 'loss' not in metrics:  # a round without clients (sampling=poisson)
        return 'no clients'
    return f'loss {metrics["loss"]:.4f} accuracy {metrics["accuracy"]:.4f} examples {int(metrics["examples"])}'


def _data_info(data: FederatedData) -> dict:
    return {
        'name': data.name,
        'clients': len(data.client_ids),
        'image_shape': list(data.image_shape),
        'num_classes': data.num_classes,
    }

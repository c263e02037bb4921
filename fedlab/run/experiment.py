"""One federated training run as a plan, built then run: from built components to the files in its run directory."""

import contextlib
import dataclasses
import pathlib
from collections.abc import Callable
from typing import TYPE_CHECKING

import tensorflow_federated as tff

from fedlab.algorithms.schedules import LearningRates
from fedlab.config.efficiency import Efficiency
from fedlab.data.federated_data import FederatedData
from fedlab.errors import TrainingDiverged
from fedlab.fast_paths import client_packing
from fedlab.models import ModelFn
from fedlab.record import checkpoints, ledger, recorder
from fedlab.record.recorder import EVAL, RunOutputs, RunRecorder
from fedlab.run import evaluation, interrupts, observers, round_inputs, round_loop, worker_processes
from fedlab.sampling import Sampler

if TYPE_CHECKING:
    from fedlab.privacy.accounting import PrivacyLedger

EVAL_ON_TRAIN = 'eval_on_train'  # the clients' training data, after the last round


@dataclasses.dataclass(frozen=True)
class Federation:
    """What is trained: the clients' data, the model, the learning process and which clients train each round."""

    data: FederatedData
    model_fn: ModelFn
    # fedlab.algorithms' builder, called with client_inputs=, batch_size= (and pack_clients=True when packed).
    build_process: Callable[..., tff.learning.templates.LearningProcess]
    sampler: Sampler
    # Set in the state before every round and recorded (none given: none set or recorded).
    learning_rates: LearningRates = dataclasses.field(default_factory=LearningRates)
    # For DP aggregators: epsilon and its parameters, recorded every round.
    privacy_ledger: 'PrivacyLedger | None' = None


@dataclasses.dataclass(frozen=True)
class Settings:
    """How it is trained, evaluated and recorded."""

    schedule: round_loop.Schedule
    pipeline: round_inputs.PipelineConfig
    # Rounds per TFF call, packed clients, resident state: the same results in fewer calls (fedlab.config.efficiency).
    efficiency: Efficiency = Efficiency()
    checkpoint_every: int = 5
    eval_clients: int | None = None  # test clients of the evaluations before the last round (None: all)
    eval_on_train: bool = False  # also evaluate the final model on the clients' training data
    print_type_signature: bool = False


@dataclasses.dataclass(frozen=True)
class ExperimentPlan:
    """One federated run: `federation` trained as `settings` say, written to `run_dir`; `run()` executes it.

    If `run_dir` holds a checkpoint of the same `identity` (the settings that define the run, saved with each
    checkpoint), training continues from it. Each round is recorded in one step when it ends (recorder.RunRecorder);
    results.json is written however the run ends, with its status and `run_info`. Ctrl-C or SIGTERM stops the run
    after the current round (a second one at once), keeping every complete round.
    """

    federation: Federation
    settings: Settings
    run_dir: pathlib.Path
    identity: dict = dataclasses.field(default_factory=dict)
    run_info: dict = dataclasses.field(default_factory=dict)

    def run(self) -> RunOutputs:
        """Trains, evaluates on the clients' test data and writes the run directory; returns the final metrics."""
        rounds = self.settings.schedule.rounds
        self.run_dir.mkdir(parents=True, exist_ok=True)
        resume_round = checkpoints.CheckpointStore(self.run_dir / 'checkpoints').resumable_round(self.identity)
        if resume_round == rounds and (self.run_dir / recorder.RESULTS_JSON).exists():
            print(f'{self.run_dir} already holds all {rounds} rounds of this run; nothing to do.')
            return recorder.outputs_from_files(self.run_dir)
        print(self.federation.data.summary())
        worker_processes.set_intra_op_threads(self.settings.efficiency.intra_op_threads)  # also shields it from signals
        record = RunRecorder(
            self.run_dir,
            rounds=rounds,
            checkpoint_every=self.settings.checkpoint_every,
            config=self.identity,
            run_info=self.run_info,
            data_info=_data_info(self.federation.data),
        )
        try:
            with interrupts.round_boundaries(), contextlib.ExitStack() as cleanup:
                cleanup.enter_context(record)  # last out: results.json says how the run ended, whenever that was
                self._train(record, resume_round, cleanup)
        except TrainingDiverged as diverged:
            raise TrainingDiverged(f'{diverged}; the last good checkpoint is round {record.last_checkpoint}') from None
        except Exception:
            interrupts.raise_if_requested()  # a failure a Ctrl-C or SIGTERM caused is an interruption
            raise
        return record.outputs

    def _train(self, record: RunRecorder, resume_round: int, cleanup: contextlib.ExitStack) -> None:
        """Builds the process and inputs, opens the record and trains rounds `resume_round` + 1 to the last; what
        must be closed goes on `cleanup`."""
        federation, settings = self.federation, self.settings
        # 1. The learning process, and what each round records besides its metrics.
        process, annotators = self._build_process()
        interrupts.raise_if_requested()

        # 2. The clients' inputs (shards on a disk budget; the next round's prepared while a round trains) and
        # the test clients' evaluation (a fixed sample of eval_clients, all after the last round; built lazily).
        inputs = cleanup.enter_context(round_inputs.RunInputs(
            federation.data.train, settings.pipeline, federation.sampler,
            rounds=(resume_round + 1, settings.schedule.rounds), rounds_per_call=settings.efficiency.rounds_per_call,
        ))
        evaluate_test = evaluation.ClientsEvaluator(
            federation.model_fn, federation.data.test, batch_size=settings.pipeline.batch_size, store=inputs.store,
            sample_size=settings.eval_clients, seed=settings.pipeline.seed, final_round=settings.schedule.rounds,
        )
        interrupts.raise_if_requested()

        # 3. The record: a new run, or the last checkpoint with the files as they were then.
        state = record.open(resume_round, process.initialize() if resume_round else None,
                            annotators=(*annotators, *evaluate_test.annotators()))
        if resume_round:
            print(f'resuming {self.run_dir} after round {resume_round}')

        # 4. Train, each round recorded in one step as soon as it is complete.
        progress = cleanup.enter_context(observers.ProgressPrinter(settings.schedule.rounds, resume_round))
        state = round_loop.RoundLoop(
            process,
            client_packing.PackedInputs(inputs.train) if settings.efficiency.pack_clients else inputs.train,
            federation.sampler,
            settings.schedule,
            evaluations=observers.Evaluations({EVAL: evaluate_test}),
            observers=[record, progress],
            learning_rates=federation.learning_rates,
            efficiency=settings.efficiency,
        ).run(state, start_round=resume_round + 1)

        # 5. Optionally, the tutorial's evaluation of the final model on the clients' training data.
        if settings.eval_on_train:
            self._evaluate_on_train(process.get_model_weights(state), inputs.store, record)

    def _evaluate_on_train(self, model_weights, store, record: RunRecorder) -> None:
        """The final model on every client's training data: results.json, TensorBoard and one line."""
        evaluate_train = evaluation.ClientsEvaluator(self.federation.model_fn, self.federation.data.train,
                                                     batch_size=self.settings.pipeline.batch_size, store=store,
                                                     name='train_eval')
        metrics = evaluate_train(model_weights)
        record.record_final_evaluation(EVAL_ON_TRAIN, metrics)
        print(f'evaluation on training data: {observers.metrics_text(metrics)}')

    def _build_process(self) -> tuple[tff.learning.templates.LearningProcess, tuple]:
        """The learning process, and the annotators (recorder.RoundAnnotator) of what each round transmits
        (read from the process, see ledger.measure), its learning rates and, with DP, the privacy spent."""
        federation, efficiency, pipeline = self.federation, self.settings.efficiency, self.settings.pipeline
        packing = {'pack_clients': True} if efficiency.pack_clients else {}  # fedlab.fast_paths.client_packing
        process = federation.build_process(client_inputs=pipeline.client_inputs, batch_size=pipeline.batch_size,
                                           **packing)
        if self.settings.print_type_signature:
            print(process.initialize.type_signature.formatted_representation())
        communication = ledger.Ledger(ledger.measure(process))
        print(communication.describe())
        print(efficiency.describe())
        ledger.warn_if_compression_is_idle(communication.cost)
        if federation.privacy_ledger:
            print(federation.privacy_ledger.describe())
        privacy = (federation.privacy_ledger,) if federation.privacy_ledger else ()
        return process, (communication, federation.learning_rates, *privacy)


def _data_info(data: FederatedData) -> dict:
    return {
        'name': data.name,
        'clients': len(data.client_ids),
        'image_shape': list(data.image_shape),
        'num_classes': data.num_classes,
    }

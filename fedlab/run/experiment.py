"""One federated training run as a plan, built then run: from built components to the files in its run directory."""

import contextlib
import dataclasses
import pathlib
from collections.abc import Callable
from typing import TYPE_CHECKING

import tensorflow_federated as tff

from fedlab.algorithms.fedbuff import BufferedProcess
from fedlab.algorithms.schedules import LearningRates
from fedlab.algorithms.templates.composition import StatefulLearningProcess
from fedlab.config.efficiency import Efficiency
from fedlab.data.federated_data import FederatedData, examples_per_client, known_counts
from fedlab.errors import TrainingDiverged
from fedlab.fast_paths import client_packing
from fedlab.models import ModelFn
from fedlab.record import checkpoints, ledger, recorder
from fedlab.record.recorder import TRAIN, RunOutputs, RunRecorder
from fedlab.run import client_states, evaluation, interrupts, observers, round_inputs, round_loop, worker_processes
from fedlab.run.personalization import Personalization, PersonalizationConfig
from fedlab.sampling import Sampler

if TYPE_CHECKING:
    from fedlab.heterogeneity.settings import System
    from fedlab.privacy.accounting import PrivacyLedger

EVAL_ON_TRAIN = 'eval_on_train'  # the clients' training data, after the last round
PARTICIPATING, UNSEEN = 'participating', 'unseen'  # with holdout_clients: the test clients that train, and the others


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
    # `holdout_clients`: clients that never train (the sampler never draws them); evaluation reports the clients
    # that take part and these apart.
    held_out: frozenset[str] = frozenset()
    # `system=heterogeneous | trace`: devices on a simulated clock decide which sampled clients train (None: all).
    system: 'System | None' = None

    def parts(self) -> dict[str, frozenset[str]]:
        """The test population's parts evaluated apart: with held-out clients, those that take part in training and
        those never seen (the participation gap); else none."""
        if not self.held_out:
            return {}
        return {PARTICIPATING: frozenset(self.data.client_ids) - self.held_out, UNSEEN: self.held_out}


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
    # The accuracy whose first evaluation reaching it results.json's `to_target` records (None: none); with
    # `stop_at_target` the run ends there, completed.
    target_accuracy: float | None = None
    stop_at_target: bool = False
    # Each evaluated client's adaptation of the model on its own data, evaluated apart (population `personalized`).
    personalization: PersonalizationConfig = PersonalizationConfig()
    # A stateful algorithm's (SCAFFOLD, FedDyn) clients' states kept in memory; the rest are read from the run
    # directory (fedlab.run.client_states).
    client_state_budget_mb: int = 512
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
    trackers: object = None  # fedlab.record.trackers.RunTrackers: each committed round also goes there

    def run(self) -> RunOutputs:
        """Trains, evaluates on the clients' test data and writes the run directory; returns the final metrics."""
        rounds = self.settings.schedule.rounds
        self.run_dir.mkdir(parents=True, exist_ok=True)
        store = checkpoints.CheckpointStore(self.run_dir / 'checkpoints')
        resume_from = store.resume_point(self.identity)
        for damaged_round, why in resume_from.damaged:  # a run completed before stays complete: rounds are rerun
            store.set_aside(damaged_round, f'{why}; resuming from round {resume_from.round_num}')
        resume_round = resume_from.round_num
        if resume_round == rounds and (self.run_dir / recorder.RESULTS_JSON).exists():
            print(f'{self.run_dir} already holds all {rounds} rounds of this run; nothing to do.')
            return recorder.outputs_from_files(self.run_dir)
        if resume_round and recorder.stopped_early_at(self.run_dir) == resume_round:
            print(f'{self.run_dir} holds this run, stopped at its target after round {resume_round}; nothing to do.')
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
            target_accuracy=self.settings.target_accuracy,
            trackers=self.trackers,
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
        sampler, input_sampler, annotators = self._samplers(process, annotators)
        interrupts.raise_if_requested()

        # 2. The clients' inputs (shards on a disk budget; the next round's prepared while a round trains) and
        # the test clients' evaluation (a fixed sample of eval_clients, all after the last round; built lazily).
        inputs = cleanup.enter_context(round_inputs.RunInputs(
            federation.data.train, settings.pipeline, input_sampler,
            rounds=(resume_round + 1, settings.schedule.rounds), rounds_per_call=settings.efficiency.rounds_per_call,
        ))
        participation = evaluation.Participation(sampler, federation.held_out)
        evaluate_test = evaluation.ClientsEvaluator(
            federation.model_fn, federation.data.test, batch_size=settings.pipeline.batch_size, store=inputs.store,
            sample_size=settings.eval_clients, seed=settings.pipeline.seed, final_round=settings.schedule.rounds,
            parts=federation.parts(), participation=participation,
        )
        interrupts.raise_if_requested()

        # 3. The record: a new run, or the last checkpoint with the files as they were then (with the clients'
        # states, for an algorithm whose clients keep some).
        personalize = self._personalization(process, inputs.store, cleanup)
        states = self._client_state_store(process)
        state = record.open(resume_round, process.initialize() if resume_round else None,
                            annotators=(*annotators, *evaluate_test.annotators()),
                            populations=evaluate_test.populations + (personalize.populations() if personalize else []),
                            client_states=states)
        if resume_round:
            print(f'resuming {self.run_dir} after round {resume_round}')

        # 4. Train, each round recorded in one step as soon as it is complete.
        progress = cleanup.enter_context(observers.ProgressPrinter(settings.schedule.rounds, resume_round))
        stop = [observers.StopAtTarget(settings.target_accuracy)] if settings.stop_at_target else []
        loop = round_loop.RoundLoop(
            process,
            client_packing.PackedInputs(inputs.train) if settings.efficiency.pack_clients else inputs.train,
            input_sampler,
            settings.schedule,
            evaluations=observers.Evaluations([evaluate_test], personalization=personalize),
            observers=[record, progress, *stop],
            learning_rates=federation.learning_rates,
            efficiency=settings.efficiency,
            client_states=client_states.StatefulRounds(states) if states is not None else None,
        )
        state = loop.run(state, start_round=resume_round + 1)
        if loop.stopped:
            record.stopped_early(loop.stopped)
            print(f'stopped: {loop.stopped}')

        # 5. Optionally, the tutorial's evaluation of the final model on the clients' training data.
        if settings.eval_on_train:
            self._evaluate_on_train(process.get_model_weights(state), inputs.store, record, participation)

    def _samplers(self, process, annotators: tuple) -> tuple[Sampler, Sampler, tuple]:
        """Which clients train each round, the ids their inputs are asked for by, and the round annotators: the
        federation's sampler, or, on a simulated system, the clients its clock keeps (their inputs' ids marking a
        partial client's batches) and the clock, which annotates the rounds and counts the downloads."""
        system = self.federation.system
        if system is None:
            return self.federation.sampler, self.federation.sampler, annotators
        communication = annotators[0]
        data = self.federation.data
        bits = {'downlink_bits': communication.cost.bits_per_client(ledger.DOWNLINK),
                'uplink_bits': communication.cost.bits_per_client(ledger.UPLINK),
                'examples': known_counts(data.train) or examples_per_client(data.train)}
        if isinstance(process, BufferedProcess):  # FedBuff: its clock is its schedule; uploads are its arrivals
            rounds = process.schedule = system.buffered_rounds(concurrency=process.concurrency,
                                                               buffer_size=process.buffer_size, **bits)
            communication.count_uploads(rounds.uploads)
            input_sampler = rounds.sampler
        else:
            rounds = system.rounds(**bits, batch_size=self.settings.pipeline.batch_size)
            input_sampler = rounds.input_sampler
        communication.count_downloads(rounds.downloads)
        print(rounds.describe())
        return rounds.sampler, input_sampler, (*annotators, rounds)

    def _client_state_store(self, process) -> client_states.ClientStateStore | None:
        """For a process whose clients keep state: its store, after checking that every client that can train
        could keep one on the run directory's disk; else None."""
        if not isinstance(process, StatefulLearningProcess):
            return None
        store = client_states.ClientStateStore(self.run_dir, process.initial_client_state,
                                               budget_bytes=self.settings.client_state_budget_mb * 2**20)
        training = len(self.federation.data.client_ids) - len(self.federation.held_out)
        client_states.check_room(store, training, self.run_dir)
        return store

    def _personalization(self, process, store, cleanup: contextlib.ExitStack) -> Personalization | None:
        """The personalization evaluation (None when `settings.personalization` is none), from the process's initial
        model for local_only."""
        settings = self.settings
        if not settings.personalization.enabled:
            return None
        personalize = Personalization(
            settings.personalization, self.federation.model_fn, self.federation.data,
            batch_size=settings.pipeline.batch_size, initial_weights=process.get_model_weights(process.initialize()),
            final_round=settings.schedule.rounds, store=store, shard_dir=settings.pipeline.shard_dir,
            stop_target=settings.target_accuracy if settings.stop_at_target else None,
            parts=self.federation.parts(),
        )
        cleanup.callback(personalize.close)
        return personalize

    def _evaluate_on_train(self, model_weights, store, record: RunRecorder, participation) -> None:
        """The final model on every client's training data: results.json, TensorBoard, clients_eval.csv (population
        `train`) and one line."""
        evaluate_train = evaluation.ClientsEvaluator(self.federation.model_fn, self.federation.data.train,
                                                     batch_size=self.settings.pipeline.batch_size, store=store,
                                                     name='train_eval', population=TRAIN,
                                                     participation=participation)
        evaluated = evaluate_train(model_weights, self.settings.schedule.rounds)[TRAIN]
        record.record_final_evaluation(EVAL_ON_TRAIN, evaluated.metrics, evaluated.clients, rows_as=TRAIN)
        print(f'evaluation on training data: {observers.metrics_text(evaluated.metrics)}')

    def _build_process(self) -> tuple[tff.learning.templates.LearningProcess, tuple]:
        """The learning process, and the annotators (recorder.RoundAnnotator) of what each round transmits
        (read from the process, see ledger.measure), its learning rates and, with DP, the privacy spent."""
        federation, efficiency, pipeline = self.federation, self.settings.efficiency, self.settings.pipeline
        packing = {'pack_clients': True} if efficiency.pack_clients else {}  # fedlab.fast_paths.client_packing
        process = federation.build_process(client_inputs=pipeline.client_inputs, batch_size=pipeline.batch_size,
                                           **packing)
        if self.settings.print_type_signature:  # (FedBuff: the computation that trains its starting clients)
            computation = getattr(process, 'client_computation', process.initialize)
            print(computation.type_signature.formatted_representation())
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

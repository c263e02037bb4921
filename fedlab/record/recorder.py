"""A federated run's record, with one owner: metrics.csv, timing.csv, clients.csv, TensorBoard, checkpoints and
results.json.

A round becomes part of the run in one step, `RunRecorder.on_round_end`: its rows and scalars are written, then the
round is committed, and a checkpoint, an interrupted run or a resumed one goes back to the last committed round. If
anything stops the run between the two, the uncommitted rows are removed again, so every file holds exactly the
committed rounds and a resumed run writes each round once.
"""

import dataclasses
import logging
import pathlib
import time
from typing import Protocol

from fedlab import errors
from fedlab.record import checkpoints, rundir, tables, targets
from fedlab.run import interrupts
from fedlab.run.observers import RoundObserver, RoundResult

log = logging.getLogger(__name__)

TRAIN, EVAL = 'train', 'eval'  # the sampled clients' training metrics; the clients' held-out data
POPULATIONS = [TRAIN, EVAL]  # the populations with metrics.csv columns
RESULTS_JSON = rundir.RESULTS_JSON
TENSORBOARD_DIR = 'tensorboard'


class RoundAnnotator(Protocol):
    """A part of the run with values of its own each round (the ledger's bits, a learning-rate schedule, a privacy
    accountant): its `columns` follow the metrics in metrics.csv, its values go to the TensorBoard run
    `tensorboard_run`, and its `summary()` into results.json under the same name."""

    tensorboard_run: str
    columns: tuple[str, ...]

    def round_values(self, round_num: int, client_ids: list[str]) -> dict[str, float | int]:
        """The round's values of `columns`; may advance running totals."""

    # Optionally, `client_columns` (a tuple of clients.csv columns) and `client_values(round_num) -> dict` of them.

    def restore(self, row: dict[str, str] | None) -> None:
        """Running totals as of the last recorded round's metrics.csv row (None: no round yet)."""

    def summary(self) -> dict:
        """What results.json says of this part."""


@dataclasses.dataclass(frozen=True)
class RunOutputs:
    """What a run leaves behind, besides the files."""

    rounds_completed: int
    final_train: dict[str, float]
    final_eval: dict[str, dict[str, float]]


class RunRecorder(RoundObserver):
    """Writes a federated run's files, each round in one step (`on_round_end`): its tables (tables.RoundTables),
    TensorBoard (tables.TensorBoardView) and checkpoints (checkpoints.RoundCheckpoints, every `checkpoint_every`
    rounds and the last). Use as a context manager: leaving it writes results.json with the status the run ended
    with, after checkpointing the last committed round."""

    def __init__(
        self,
        run_dir: pathlib.Path,
        *,
        rounds: int,
        checkpoint_every: int,
        config: dict,
        run_info: dict | None = None,
        data_info: dict | None = None,
        target_accuracy: float | None = None,
        trackers=None,
    ):
        self._run_dir = run_dir
        self._target_accuracy = target_accuracy
        # Experiment trackers (fedlab.record.trackers.RunTrackers): each committed round's scalars, after the commit.
        self._trackers = trackers
        self._stopped: str | None = None
        self._rounds = rounds
        self._checkpoints = checkpoints.RoundCheckpoints(
            run_dir, rounds=rounds, every=checkpoint_every, config=config, tables=tables.TABLES
        )
        self._annotators: tuple[RoundAnnotator, ...] = ()
        self._run_info = run_info or {}
        self._data_info = data_info or {}
        self._started = time.perf_counter()
        self._resumed_after = 0
        self._tables: tables.RoundTables | None = None
        self._tensorboard: tables.TensorBoardView | None = None
        self._uncommitted = False  # rows or scalars written since the last commit
        self._final_evaluations: dict[str, dict[str, float]] = {}
        self.outputs: RunOutputs | None = None  # set by close()

    @property
    def last_checkpoint(self) -> int:
        return self._checkpoints.last_saved_round

    # 1. Opening: a new run, or a resumed one with its files as they were at its checkpoint.
    def open(self, resume_round: int, initial_state, *, annotators: tuple[RoundAnnotator, ...] = (),
             populations: list[str] = (EVAL,), client_states=None) -> object | None:
        """Prepares the files. Resuming after `resume_round`: the tables as saved with that checkpoint and the state
        saved with it, restored into the structure of `initial_state` (returned); else empty tables (None).
        `annotators` add their columns to metrics.csv, and so do the evaluated `populations` after `eval` (e.g.
        participating, unseen, personalized). `client_states` (a stateful algorithm's
        fedlab.run.client_states.ClientStateStore) starts from the same checkpoint and is checkpointed with it."""
        self._annotators = annotators
        if client_states is not None:
            self._checkpoints.keep_client_states(client_states, resume_round)
        later = tuple(p for p in populations if p != EVAL)
        state = None
        if resume_round:
            state = self._checkpoints.restore(resume_round, initial_state)
        else:  # Rows of an earlier attempt that never reached a checkpoint are not this run's.
            tables.RoundTables.remove(self._run_dir)
        columns = tables.metrics_columns(POPULATIONS, tuple(c for a in self._annotators for c in a.columns), later)
        client_columns = tuple(c for a in self._annotators for c in getattr(a, 'client_columns', ()))
        self._tables = tables.RoundTables(self._run_dir, columns, tables.CLIENTS_COLUMNS + list(client_columns))
        self._tensorboard = tables.TensorBoardView(
            self._run_dir / TENSORBOARD_DIR,
            populations=POPULATIONS + list(later),
            annotators=self._annotators,
            hparams=tables.hparams_from_run_info(self._run_info),
        )
        self._restore_from(self._tables.metrics_rows())
        self._resumed_after = resume_round
        return state

    # 2. Each round, in one step.
    def on_round_end(self, result: RoundResult, state) -> None:
        """Writes the round to every table and TensorBoard, then commits it with the state after it (None for a
        round whose state stayed in TFF's worker: see checkpoints.RoundCheckpoints)."""
        self._uncommitted = True
        try:
            row = self._metrics_row(result)
            clients = {k: v for a in self._annotators if hasattr(a, 'client_values')
                       for k, v in a.client_values(result.round_num).items()}
            self._tables.write(row, result, clients)
            self._tensorboard.write_row(row)
        except BaseException:
            self._roll_back()
            raise
        with interrupts.uncuttable():
            self._tables.commit()
            self._uncommitted = False
            self._checkpoints.commit(result.round_num, state)
        if self._trackers:
            self._trackers.log_round(result.round_num, self._tensorboard.scalars(row))

    def needs_state_after(self, round_num: int) -> bool:
        return self._checkpoints.due_after(round_num)

    def on_state_fetched(self, round_num: int, state) -> None:
        self._checkpoints.attach(round_num, state)

    def _metrics_row(self, result: RoundResult) -> dict:
        """The round's metrics.csv row: its populations' metrics, then the annotators' values."""
        row = {'round': result.round_num, 'clients': len(result.client_ids)}
        row.update({f'{TRAIN}_{k}': v for k, v in result.train.items()})
        for population, metrics in result.evaluations.items():
            row.update({f'{population}_{k}': v for k, v in metrics.items()})
        for annotator in self._annotators:
            row.update(annotator.round_values(result.round_num, result.client_ids))
        return row

    def _roll_back(self) -> None:
        """Removes what was written of an uncommitted round: table rows, running totals, TensorBoard scalars."""
        with interrupts.uncuttable():
            self._tables.roll_back()
            self._restore_from(self._tables.metrics_rows())
            self._uncommitted = False

    def _restore_from(self, rows: list[dict[str, str]]) -> None:
        """The annotators' running totals and TensorBoard as of metrics.csv's `rows`."""
        for annotator in self._annotators:
            annotator.restore(rows[-1] if rows else None)
        self._tensorboard.rebuild(rows)

    def record_final_evaluation(self, population: str, metrics: dict[str, float], clients: list = (),
                                *, rows_as: str | None = None) -> None:
        """An evaluation of the final model (e.g. on the clients' training data): results.json, TensorBoard and its
        `clients`' rows in clients_eval.csv, as population `rows_as` (default: `population`)."""
        self._final_evaluations[population] = metrics
        self._tensorboard.write(self._checkpoints.committed_round, population, metrics)
        if clients:
            with interrupts.uncuttable():
                self._tables.write_client_evaluations(self._checkpoints.committed_round, rows_as or population, clients)
                self._tables.commit()

    def stopped_early(self, reason: str) -> None:
        """The run ends before its last round, completed (e.g. at its target accuracy): results.json says why."""
        self._stopped = reason

    # 3. The end, however the run ended.
    def __enter__(self):
        return self

    def __exit__(self, error_type, error, error_traceback) -> None:
        self.close(error)

    def close(self, error: BaseException | None = None) -> RunOutputs | None:
        """Checkpoints the last committed round, closes the files and writes results.json with the run's status."""
        if self._tensorboard is None and isinstance(error, errors.FedlabError):
            return None  # refused before the files were opened (e.g. a checkpoint that does not load): nothing written
        with interrupts.uncuttable():
            if self._tables is not None:
                if self._uncommitted:
                    self._roll_back()
                try:
                    self._checkpoints.save()
                except Exception:
                    if error is None:
                        raise
                    log.exception('could not checkpoint round %d', self._checkpoints.committed_round)
                self._tables.close()
                self._tables = None
            if self._tensorboard is not None:
                self._tensorboard.close()
            self.outputs = outputs_from_files(self._run_dir, self._final_evaluations)
            rundir.write_json(self._run_dir / RESULTS_JSON, self._results(self.outputs, error))
        return self.outputs

    def _results(self, outputs: RunOutputs, error: BaseException | None) -> dict:
        timing_csv = self._run_dir / tables.TIMING_CSV
        timing = tables.read_rows(timing_csv) if timing_csv.exists() else []
        results = {
            'status': errors.run_status(error),
            'rounds_completed': outputs.rounds_completed,
            'rounds': self._rounds,
            'resumed_after_round': self._resumed_after,
            'final_train': outputs.final_train,
            'final_eval': outputs.final_eval,
            'wall_seconds': round(time.perf_counter() - self._started, 3),
            'train_seconds': round(sum(float(r['train_seconds']) for r in timing), 3),
            'eval_seconds': round(sum(float(r['eval_seconds']) for r in timing), 3),
            'data': self._data_info,
            **{annotator.tensorboard_run: annotator.summary() for annotator in self._annotators},
        }
        if self._stopped and error is None:
            results['stopped_early'] = {'after_round': outputs.rounds_completed, 'reason': self._stopped}
        if self._target_accuracy is not None:
            metrics_csv = self._run_dir / tables.METRICS_CSV
            rows = tables.read_rows(metrics_csv) if metrics_csv.exists() else []
            results['to_target'] = targets.to_target(rows, timing, self._target_accuracy)
        if error is not None and results['status'] in ('failed', 'diverged'):
            results.update(errors.error_fields(error))
        return {**results, **self._run_info}


def stopped_early_at(run_dir: pathlib.Path) -> int | None:
    """The round after which a completed run in `run_dir` stopped early (at its target), or None."""
    results = rundir.read_json(run_dir / RESULTS_JSON) or {}
    stopped = results.get('stopped_early') if results.get('status') == 'completed' else None
    return stopped.get('after_round') if stopped else None


def outputs_from_files(run_dir: pathlib.Path, final_evaluations: dict | None = None) -> RunOutputs:
    """Final metrics as recorded in metrics.csv (its last row holds the last round and its evaluation)."""
    path = run_dir / tables.METRICS_CSV
    rows = tables.read_rows(path) if path.exists() else []
    if not rows:
        return RunOutputs(rounds_completed=0, final_train={}, final_eval=dict(final_evaluations or {}))
    last = rows[-1]
    final_eval = {population: tables.population_metrics(last, population)
                  for population in tables.evaluated_populations(last)}
    final_eval.update(final_evaluations or {})
    return RunOutputs(
        rounds_completed=int(last['round']),
        final_train=tables.population_metrics(last, TRAIN),
        final_eval=final_eval,
    )

"""A federated run's record, with one owner: metrics.csv, timing.csv, clients.csv, TensorBoard, checkpoints and
results.json.

A round becomes part of the run in one step, `RunRecorder.record`: its rows and scalars are written, then the round
is committed, and a checkpoint, an interrupted run or a resumed one goes back to the last committed round. If
anything stops the run between the two, the uncommitted rows are removed again, so every file holds exactly the
committed rounds and a resumed run writes each round once.
"""

import dataclasses
import logging
import math
import pathlib
import shutil
import time
from typing import TYPE_CHECKING, Protocol

from fedlab.record import checkpoints, tables, rundir
from fedlab import errors
from fedlab.run import interrupts

if TYPE_CHECKING:
    from fedlab.run import round_loop

log = logging.getLogger(__name__)

TRAIN, EVAL = 'train', 'eval'  # the sampled clients' training metrics; the clients' held-out data
POPULATIONS = [TRAIN, EVAL]  # the populations with metrics.csv columns
METRICS_CSV, TIMING_CSV, CLIENTS_CSV = 'metrics.csv', 'timing.csv', 'clients.csv'
TABLES = [METRICS_CSV, TIMING_CSV, CLIENTS_CSV]
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


@dataclasses.dataclass(frozen=True)
class _Committed:
    round_num: int
    state: object  # the training state after that round (None before round 1)


class RunRecorder:
    """Writes a federated run's files; use as a context manager: leaving it writes results.json with the status
    the run ended with, after checkpointing the last committed round."""

    def __init__(
        self,
        run_dir: pathlib.Path,
        *,
        rounds: int,
        checkpoint_every: int,
        config: dict,
        run_info: dict | None = None,
        data_info: dict | None = None,
    ):
        self._run_dir = run_dir
        self._store = checkpoints.CheckpointStore(run_dir / 'checkpoints')
        self._rounds = rounds
        self._checkpoint_every = checkpoint_every
        self._config = config
        self._annotators: tuple[RoundAnnotator, ...] = ()
        self._run_info = run_info or {}
        self._data_info = data_info or {}
        self._started = time.perf_counter()
        self._resumed_after = 0
        self._committed = _Committed(0, None)
        self._tables: dict[str, tables.CsvTable] = {}
        self._tensorboard: tables.TensorBoardLogger | None = None
        self._uncommitted = False  # rows or scalars written since the last commit
        self._final_evaluations: dict[str, dict[str, float]] = {}
        self.outputs: RunOutputs | None = None  # set by close()

    @property
    def last_checkpoint(self) -> int:
        return self._store.latest_round()

    # 1. Opening: a new run, or a resumed one with its files as they were at its checkpoint.
    def open(self, resume_round: int, initial_state, *, annotators: tuple[RoundAnnotator, ...] = ()) -> object | None:
        """Prepares the files. Resuming after `resume_round`: the tables as saved with that checkpoint and the state
        saved with it, restored into the structure of `initial_state` (returned); else empty tables (None).
        `annotators` add their columns to metrics.csv."""
        self._annotators = annotators
        state = None
        if resume_round:
            state = self._store.load(resume_round, initial_state)
            self._store.restore_tables(resume_round, self._run_dir, TABLES)
        else:  # Rows of an earlier attempt that never reached a checkpoint are not this run's.
            for table in TABLES:
                (self._run_dir / table).unlink(missing_ok=True)
        columns = tables.metrics_columns(POPULATIONS, tuple(c for a in self._annotators for c in a.columns))
        self._tables = {
            METRICS_CSV: tables.CsvTable(self._run_dir / METRICS_CSV, columns),
            TIMING_CSV: tables.CsvTable(self._run_dir / TIMING_CSV, tables.TIMING_COLUMNS),
            CLIENTS_CSV: tables.CsvTable(self._run_dir / CLIENTS_CSV, tables.CLIENTS_COLUMNS),
        }
        rows = self._metrics_rows()
        for annotator in self._annotators:
            annotator.restore(rows[-1] if rows else None)
        self._rebuild_tensorboard(rows)
        self._resumed_after = resume_round
        self._committed = _Committed(resume_round, state)
        return state

    # 2. Each round, in one step.
    def record(self, result: 'round_loop.RoundResult', state) -> None:
        """Writes the round to every table and TensorBoard, then commits it with the state after it (None for a
        round inside a block of rounds: see `_save_checkpoint`)."""
        row = {'round': result.round_num, 'clients': len(result.client_ids)}
        row.update({f'{TRAIN}_{k}': v for k, v in result.train.items()})
        for population, metrics in result.evaluations.items():
            row.update({f'{population}_{k}': v for k, v in metrics.items()})
        self._uncommitted = True
        try:
            for annotator in self._annotators:
                row.update(annotator.round_values(result.round_num, result.client_ids))
            self._tables[METRICS_CSV].write(row)
            self._tables[TIMING_CSV].write(
                {'round': result.round_num, 'train_seconds': result.train_seconds, 'eval_seconds': result.eval_seconds}
            )
            self._tables[CLIENTS_CSV].write({'round': result.round_num, 'client_ids': ' '.join(result.client_ids)})
            self._write_tensorboard(row)
        except BaseException:
            self._roll_back()
            raise
        self._commit(result.round_num, state)

    def _commit(self, round_num: int, state) -> None:
        with interrupts.uncuttable():
            for table in self._tables.values():
                table.commit()
            self._committed = _Committed(round_num, state)
            self._uncommitted = False
            if self.checkpoints_after(round_num):
                self._save_checkpoint()

    def attach_state(self, round_num: int, state) -> None:
        """The state after committed round `round_num`, committed without it (the state was then kept in TFF's
        worker: fedlab.tff_internals.resident_state) and fetched since; a checkpoint of that round is possible again."""
        if self._committed.round_num == round_num and self._committed.state is None:
            self._committed = _Committed(round_num, state)

    def checkpoints_after(self, round_num: int) -> bool:
        """Whether round `round_num` is checkpointed when it is committed (every `checkpoint_every`, the last)."""
        return round_num == self._rounds or bool(self._checkpoint_every and round_num % self._checkpoint_every == 0)

    def _roll_back(self) -> None:
        """Removes what was written of an uncommitted round: table rows, running totals, TensorBoard scalars."""
        with interrupts.uncuttable():
            for table in self._tables.values():
                table.roll_back()
            rows = self._metrics_rows()
            for annotator in self._annotators:
                annotator.restore(rows[-1] if rows else None)
            self._rebuild_tensorboard(rows)
            self._uncommitted = False

    def _save_checkpoint(self) -> None:
        committed = self._committed
        # State None: a round inside a block of rounds (fedlab.fast_paths.round_blocks), whose state stayed in TFF's worker.
        # Blocks end at checkpoint rounds; if the run stops inside one, it resumes from the last checkpoint.
        if committed.state is not None and committed.round_num > self._store.latest_round():
            self._store.save(
                committed.round_num,
                committed.state,
                tables=[self._run_dir / table for table in TABLES],
                config=self._config,
            )

    def record_final_evaluation(self, population: str, metrics: dict[str, float]) -> None:
        """An evaluation of the final model (e.g. on the clients' training data): results.json and TensorBoard."""
        self._final_evaluations[population] = metrics
        self._tensorboard.write(self._committed.round_num, population, metrics)

    # 3. The end, however the run ended.
    def __enter__(self):
        return self

    def __exit__(self, error_type, error, error_traceback) -> None:
        self.close(error)

    def close(self, error: BaseException | None = None) -> RunOutputs:
        """Checkpoints the last committed round, closes the files and writes results.json with the run's status."""
        with interrupts.uncuttable():
            if self._tables:
                if self._uncommitted:
                    self._roll_back()
                try:
                    self._save_checkpoint()
                except Exception:
                    if error is None:
                        raise
                    log.exception('could not checkpoint round %d', self._committed.round_num)
                for table in self._tables.values():
                    table.close()
                self._tables = {}
            if self._tensorboard is not None:
                self._tensorboard.close()
            self.outputs = outputs_from_files(self._run_dir, self._final_evaluations)
            rundir.write_json(self._run_dir / RESULTS_JSON, self._results(self.outputs, error))
        return self.outputs

    def _results(self, outputs: RunOutputs, error: BaseException | None) -> dict:
        timing = tables.read_rows(self._run_dir / TIMING_CSV) if (self._run_dir / TIMING_CSV).exists() else []
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
        if error is not None and results['status'] in ('failed', 'diverged'):
            results.update(errors.error_fields(error))
        return {**results, **self._run_info}

    # TensorBoard is a view of metrics.csv: rebuilt from it when a run resumes or a round is rolled back.
    def _rebuild_tensorboard(self, rows: list[dict[str, str]]) -> None:
        if self._tensorboard is not None:
            self._tensorboard.close()
        log_dir = self._run_dir / TENSORBOARD_DIR
        shutil.rmtree(log_dir, ignore_errors=True)
        self._tensorboard = tables.TensorBoardLogger(log_dir)
        tables.write_hparams(log_dir, tables.hparams_from_run_info(self._run_info))
        for row in rows:
            self._write_tensorboard(row)

    def _write_tensorboard(self, row: dict) -> None:
        round_num = int(row['round'])
        for population in POPULATIONS:
            metrics = tables.population_metrics(row, population)
            if metrics:
                self._tensorboard.write(round_num, population, metrics)
        for annotator in self._annotators:
            values = {c: float(row[c]) for c in annotator.columns if _plottable(row.get(c))}
            if values:
                self._tensorboard.write(round_num, annotator.tensorboard_run, values)

    def _metrics_rows(self) -> list[dict[str, str]]:
        return tables.read_rows(self._run_dir / METRICS_CSV)


def _plottable(value) -> bool:
    """A finite number: not empty, not a label (the privacy accountant's name), not an infinite epsilon."""
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def outputs_from_files(run_dir: pathlib.Path, final_evaluations: dict | None = None) -> RunOutputs:
    """Final metrics as recorded in metrics.csv (its last row holds the last round and its evaluation)."""
    path = run_dir / METRICS_CSV
    rows = tables.read_rows(path) if path.exists() else []
    if not rows:
        return RunOutputs(rounds_completed=0, final_train={}, final_eval=dict(final_evaluations or {}))
    last = rows[-1]
    final_eval = {EVAL: tables.population_metrics(last, EVAL)} if last.get(f'{EVAL}_loss') else {}
    final_eval.update(final_evaluations or {})
    return RunOutputs(
        rounds_completed=int(last['round']),
        final_train=tables.population_metrics(last, TRAIN),
        final_eval=final_eval,
    )

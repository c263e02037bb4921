"""What a run writes each round: metrics.csv, timing.csv and clients.csv (a row per round each, `RoundTables`), and
TensorBoard scalars per population (`TensorBoardView`, a view of metrics.csv)."""

import csv
import math
import pathlib
import shutil
from typing import TYPE_CHECKING

import tensorflow as tf

from fedlab.errors import FedlabError
from fedlab.record import ledger
from fedlab.run.client_distribution import DISTRIBUTION_KEYS, GAIN_KEYS

if TYPE_CHECKING:
    from fedlab.run.observers import RoundResult

METRICS = ('loss', 'accuracy', 'examples', 'batches')
METRICS_CSV, TIMING_CSV, CLIENTS_CSV = 'metrics.csv', 'timing.csv', 'clients.csv'
CLIENTS_EVAL_CSV = 'clients_eval.csv'
TABLES = [METRICS_CSV, TIMING_CSV, CLIENTS_CSV, CLIENTS_EVAL_CSV]
# Timing lives in its own table so that metrics.csv is the same, byte for byte, for the same seed.
TIMING_COLUMNS = ['round', 'train_seconds', 'eval_seconds']
CLIENTS_COLUMNS = ['round', 'client_ids']
# One row per evaluated client per evaluation; trained_before and held_out are 0 or 1, accuracy_gain is the
# personalized model's accuracy minus the global model's on the same client (empty for other populations).
CLIENTS_EVAL_COLUMNS = ['round', 'population', 'client_id', 'examples', 'loss', 'accuracy', 'trained_before',
                        'held_out', 'accuracy_gain']
PERSONALIZED = 'personalized'  # the populations whose keys include the per-client gain (and its parts')
ALL_KEYS = METRICS + DISTRIBUTION_KEYS + GAIN_KEYS


def population_keys(population: str) -> tuple[str, ...]:
    """A population's metrics.csv keys: the training clients' metrics; an evaluated population's metrics, their
    distribution over clients and, personalized, the gain's."""
    if population == 'train':
        return METRICS
    return METRICS + DISTRIBUTION_KEYS + (GAIN_KEYS if population.startswith(PERSONALIZED) else ())


def metrics_columns(populations: list[str], extra_columns: tuple[str, ...] = ledger.COLUMNS,
                    later_populations: tuple[str, ...] = ()) -> list[str]:
    """metrics.csv's columns: `populations`' metrics, the run's other parts' per-round values (by default the
    communication ledger's bits, empty where nothing is transmitted, e.g. centralized), then the columns added since:
    the distributions over clients of `populations`, and `later_populations`' keys (participating, unseen,
    personalized), so that the columns of earlier runs keep their places."""
    columns = ['round', 'clients'] + [f'{p}_{m}' for p in populations for m in METRICS] + list(extra_columns)
    columns += [f'{p}_{k}' for p in populations for k in population_keys(p) if k not in METRICS]
    return columns + [f'{p}_{k}' for p in later_populations for k in population_keys(p)]


def population_metrics(row: dict[str, str], population: str) -> dict[str, float | int]:
    """A population's metrics from a metrics.csv row (as read back), with counts as ints; {} if not evaluated."""
    values = {m: float(row[f'{population}_{m}']) for m in ALL_KEYS if row.get(f'{population}_{m}') not in (None, '')}
    return {m: int(v) if m in ('examples', 'batches') else v for m, v in values.items()}


def evaluated_populations(row: dict[str, str]) -> list[str]:
    """The populations with evaluated metrics in a metrics.csv row (eval, participating, ..., not train)."""
    return [c[: -len('_loss')] for c in row if c.endswith('_loss') and c != 'train_loss' and row[c] not in (None, '')]


class CsvTable:
    """Appends one row per round and flushes it, so an interrupted run keeps every finished round.

    Opening an existing table (a resumed run) appends to it; a new one starts with the header. `commit()` marks
    the rows written so far as final; `roll_back()` removes the rows written after the last commit.
    """

    def __init__(self, path: pathlib.Path, columns: list[str]):
        exists = path.exists() and path.stat().st_size > 0
        if exists:
            _add_columns(path, columns)
        self._file = open(path, 'a', newline='')
        self._writer = csv.DictWriter(self._file, fieldnames=columns)
        if not exists:
            self._writer.writeheader()
            self._file.flush()
        self._committed = self._file.tell()

    def write(self, row: dict, *, flush: bool = True) -> None:
        self._writer.writerow(row)
        if flush:
            self._file.flush()

    def flush(self) -> None:
        self._file.flush()

    def commit(self) -> None:
        self._committed = self._file.tell()

    def roll_back(self) -> None:
        self._file.flush()
        self._file.truncate(self._committed)

    def close(self) -> None:
        self._file.close()


def _add_columns(path: pathlib.Path, columns: list[str]) -> None:
    """A table written before some of `columns` existed (a run of an earlier fedlab, resumed), rewritten with them,
    empty in its rows; a table with other columns is refused."""
    with open(path, newline='') as f:
        header = next(csv.reader(f), [])
    if header == columns:
        return
    if header != columns[: len(header)] and not set(header) <= set(columns):
        raise FedlabError(f'{path} has columns {",".join(header)[:200]}, not this run\'s; it belongs to another run')
    rows = read_rows(path)
    staged = path.with_name(path.name + '.new')
    with open(staged, 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    staged.replace(path)


def read_rows(path: pathlib.Path) -> list[dict[str, str]]:
    with open(path, newline='') as f:
        return list(csv.DictReader(f))


class RoundTables:
    """A run's metrics.csv, timing.csv and clients.csv, opened for appending (see `CsvTable`): a row each per round,
    committed or rolled back together."""

    def __init__(self, run_dir: pathlib.Path, metrics_columns: list[str],
                 clients_columns: list[str] = CLIENTS_COLUMNS):
        self._run_dir = run_dir
        self._tables = {
            METRICS_CSV: CsvTable(run_dir / METRICS_CSV, metrics_columns),
            TIMING_CSV: CsvTable(run_dir / TIMING_CSV, TIMING_COLUMNS),
            CLIENTS_CSV: CsvTable(run_dir / CLIENTS_CSV, clients_columns),
            CLIENTS_EVAL_CSV: CsvTable(run_dir / CLIENTS_EVAL_CSV, CLIENTS_EVAL_COLUMNS),
        }

    @staticmethod
    def remove(run_dir: pathlib.Path) -> None:
        """Deletes the tables in `run_dir` (the rows of an earlier attempt that never reached a checkpoint)."""
        for table in TABLES:
            (run_dir / table).unlink(missing_ok=True)

    def write(self, metrics_row: dict, result: 'RoundResult', clients: dict | None = None) -> None:
        """The round's row of each table: `metrics_row` as it is, then the round's timing and clients (the clients
        that trained, and the `clients` columns of a simulated system: every sampled client's status)."""
        self._tables[METRICS_CSV].write(metrics_row)
        self._tables[TIMING_CSV].write(
            {'round': result.round_num, 'train_seconds': result.train_seconds, 'eval_seconds': result.eval_seconds}
        )
        self._tables[CLIENTS_CSV].write({'round': result.round_num, 'client_ids': ' '.join(result.client_ids),
                                         **(clients or {})})
        for population, clients in result.client_evaluations.items():
            self.write_client_evaluations(result.round_num, population, clients)

    def write_client_evaluations(self, round_num: int, population: str, clients: list) -> None:
        """clients_eval.csv's rows of one population's evaluation (fedlab.run.evaluation.ClientEvaluation each)."""
        table = self._tables[CLIENTS_EVAL_CSV]
        for client in clients:
            table.write({
                'round': round_num, 'population': population, 'client_id': client.client_id,
                'examples': client.metrics.get('examples', ''), 'loss': client.metrics.get('loss', ''),
                'accuracy': client.metrics.get('accuracy', ''), 'trained_before': int(client.trained_before),
                'held_out': int(client.held_out),
                'accuracy_gain': '' if client.accuracy_gain is None else client.accuracy_gain,
            }, flush=False)
        table.flush()

    def commit(self) -> None:
        for table in self._tables.values():
            table.commit()

    def roll_back(self) -> None:
        for table in self._tables.values():
            table.roll_back()

    def metrics_rows(self) -> list[dict[str, str]]:
        """metrics.csv's rows as written so far."""
        return read_rows(self._run_dir / METRICS_CSV)

    def close(self) -> None:
        for table in self._tables.values():
            table.close()


class TensorBoardLogger:
    """One writer per population (train, eval, ...) with the same tags, so their curves overlay. A writer is made
    when its population is first written, so TensorBoard lists no empty runs."""

    def __init__(self, log_dir: pathlib.Path):
        self._log_dir = log_dir
        self._writers: dict[str, tf.summary.SummaryWriter] = {}

    def write(self, round_num: int, population: str, metrics: dict[str, float]) -> None:
        if population not in self._writers:
            self._writers[population] = tf.summary.create_file_writer(str(self._log_dir / population))
        with self._writers[population].as_default():
            for name, value in metrics.items():
                tf.summary.scalar(name, value, step=round_num)
        self._writers[population].flush()

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()


class TensorBoardView:
    """The run's TensorBoard scalars in `log_dir`, a view of metrics.csv's rows: each of `populations`' metrics,
    and each annotator's (recorder.RoundAnnotator) plottable columns in its run `tensorboard_run`, with `hparams` at
    the root. `rebuild`
    writes it anew from the rows (a resumed run, a round rolled back)."""

    def __init__(
        self,
        log_dir: pathlib.Path,
        *,
        populations: list[str],
        annotators: tuple,
        hparams: dict[str, str | float | int | bool],
    ):
        self._log_dir = log_dir
        self._populations = populations
        self._annotators = annotators
        self._hparams = hparams
        self._logger: TensorBoardLogger | None = None

    def rebuild(self, rows: list[dict[str, str]]) -> None:
        self.close()
        shutil.rmtree(self._log_dir, ignore_errors=True)
        self._logger = TensorBoardLogger(self._log_dir)
        write_hparams(self._log_dir, self._hparams)
        for row in rows:
            self.write_row(row)

    def write_row(self, row: dict) -> None:
        """A metrics.csv row (as written, or as read back)."""
        round_num = int(row['round'])
        for population in self._populations:
            metrics = population_metrics(row, population)
            if metrics:
                self._logger.write(round_num, population, metrics)
        for annotator in self._annotators:
            values = {c: float(row[c]) for c in annotator.columns if _plottable(row.get(c))}
            if values:
                self._logger.write(round_num, annotator.tensorboard_run, values)
        self._write_against_cost(row)

    def _write_against_cost(self, row: dict) -> None:
        """On a simulated clock (a `sim_time_s` column): each evaluated population's accuracy and loss with the
        simulated milliseconds as the step (run `<population>_by_sim_time_ms`; a step is an integer), and with the
        cumulative uplink bits (run `<population>_by_uplink_bits`): TensorBoard's x axis is the step, so these
        curves are against cost."""
        if not _plottable(row.get('sim_time_s')):
            return
        steps = {'sim_time_ms': round(1000 * float(row['sim_time_s']))}
        if _plottable(row.get('cumulative_uplink_bits')):
            steps['uplink_bits'] = int(float(row['cumulative_uplink_bits']))
        for population in self._populations[1:]:  # (not train: its metrics are the round's training)
            metrics = population_metrics(row, population)
            if 'accuracy' in metrics:
                for name, step in steps.items():
                    self._logger.write(step, f'{population}_by_{name}',
                                       {'accuracy': metrics['accuracy'], 'loss': metrics['loss']})

    def scalars(self, row: dict) -> dict[str, float]:
        """A metrics.csv row's scalars as `write_row` logs them, named `<run>/<tag>` (e.g. train/loss,
        communication/uplink_bits, privacy/epsilon): what an experiment tracker logs (fedlab.record.trackers)."""
        named = {f'{p}/{k}': float(v) for p in self._populations for k, v in population_metrics(row, p).items()}
        for annotator in self._annotators:
            named.update({f'{annotator.tensorboard_run}/{c}': float(row[c]) for c in annotator.columns
                          if _plottable(row.get(c))})
        return named

    def write(self, round_num: int, population: str, metrics: dict[str, float]) -> None:
        """Metrics that are not in metrics.csv (an evaluation of the final model)."""
        self._logger.write(round_num, population, metrics)

    def close(self) -> None:
        if self._logger is not None:
            self._logger.close()


def _plottable(value) -> bool:
    """A finite number: not empty, not a label (the privacy accountant's name), not an infinite epsilon."""
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def hparams_from_run_info(run_info: dict | None) -> dict[str, str | float | int | bool]:
    """A run's hyperparameters for TensorBoard's HParams dashboard: its config choices and top-level scalars."""
    run_info = run_info or {}
    values = {group: str(choice) for group, choice in (run_info.get('choices') or {}).items()}
    for key, value in (run_info.get('config') or {}).items():
        if isinstance(value, (bool, int, float, str)) and key not in values:
            values[key] = value
    return values


def write_hparams(log_dir: pathlib.Path, hparams: dict[str, str | float | int | bool]) -> None:
    """Writes the HParams summary at the root of a run's TensorBoard dir; its train/eval runs hold the metrics,
    so `tensorboard --logdir <sweep>` compares every run of a sweep in the HParams dashboard."""
    from tensorboard.plugins.hparams import api as hp

    if not hparams:
        return
    writer = tf.summary.create_file_writer(str(log_dir))
    with writer.as_default():
        hp.hparams(hparams)
    writer.close()

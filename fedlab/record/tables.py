"""What a run writes: metrics.csv (a row per round), TensorBoard scalars per population, JSON files."""

import csv
import pathlib

import tensorflow as tf

from fedlab.record import ledger

METRICS = ('loss', 'accuracy', 'examples', 'batches')
# Timing lives in its own table so that metrics.csv is the same, byte for byte, for the same seed.
TIMING_COLUMNS = ['round', 'train_seconds', 'eval_seconds']
CLIENTS_COLUMNS = ['round', 'client_ids']


def metrics_columns(populations: list[str], extra_columns: tuple[str, ...] = ledger.COLUMNS) -> list[str]:
    # Per-round values of the run's other parts follow the metrics: by default the communication ledger's bits
    # (empty where nothing is transmitted, e.g. centralized).
    return ['round', 'clients'] + [f'{p}_{m}' for p in populations for m in METRICS] + list(extra_columns)


def population_metrics(row: dict[str, str], population: str) -> dict[str, float | int]:
    """A population's metrics from a metrics.csv row (as read back), with counts as ints; {} if not evaluated."""
    values = {m: float(row[f'{population}_{m}']) for m in METRICS if row.get(f'{population}_{m}') not in (None, '')}
    return {m: int(v) if m in ('examples', 'batches') else v for m, v in values.items()}


class CsvTable:
    """Appends one row per round and flushes it, so an interrupted run keeps every finished round.

    Opening an existing table (a resumed run) appends to it; a new one starts with the header. `commit()` marks
    the rows written so far as final; `roll_back()` removes the rows written after the last commit.
    """

    def __init__(self, path: pathlib.Path, columns: list[str]):
        exists = path.exists() and path.stat().st_size > 0
        self._file = open(path, 'a', newline='')
        self._writer = csv.DictWriter(self._file, fieldnames=columns)
        if not exists:
            self._writer.writeheader()
            self._file.flush()
        self._committed = self._file.tell()

    def write(self, row: dict) -> None:
        self._writer.writerow(row)
        self._file.flush()

    def commit(self) -> None:
        self._committed = self._file.tell()

    def roll_back(self) -> None:
        self._file.flush()
        self._file.truncate(self._committed)

    def close(self) -> None:
        self._file.close()


def read_rows(path: pathlib.Path) -> list[dict[str, str]]:
    with open(path, newline='') as f:
        return list(csv.DictReader(f))


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

"""What a run writes: metrics.csv (a row per round), TensorBoard scalars per population, JSON files."""

import csv
import json
import os
import pathlib

import tensorflow as tf

from fedlab import ledger

METRICS = ('loss', 'accuracy', 'examples', 'batches')
# Timing lives in its own table so that metrics.csv is the same, byte for byte, for the same seed.
TIMING_COLUMNS = ['round', 'train_seconds', 'eval_seconds']
CLIENTS_COLUMNS = ['round', 'client_ids']


def metrics_columns(populations: list[str]) -> list[str]:
    # The communication ledger's bits follow the metrics (empty where nothing is transmitted, e.g. centralized).
    return ['round', 'clients'] + [f'{p}_{m}' for p in populations for m in METRICS] + list(ledger.COLUMNS)


class CsvTable:
    """Appends one row per round and flushes it, so an interrupted run keeps every finished round.

    Opening an existing table (a resumed run) appends to it; a new one starts with the header.
    """

    def __init__(self, path: pathlib.Path, columns: list[str]):
        exists = path.exists() and path.stat().st_size > 0
        self._file = open(path, 'a', newline='')
        self._writer = csv.DictWriter(self._file, fieldnames=columns)
        if not exists:
            self._writer.writeheader()
            self._file.flush()

    def write(self, row: dict) -> None:
        self._writer.writerow(row)
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def read_rows(path: pathlib.Path) -> list[dict[str, str]]:
    with open(path, newline='') as f:
        return list(csv.DictReader(f))


class TensorBoardLogger:
    """One writer per population (train, eval, ...) with the same tags, so their curves overlay."""

    def __init__(self, log_dir: pathlib.Path, populations: list[str]):
        self._writers = {p: tf.summary.create_file_writer(str(log_dir / p)) for p in populations}

    def write(self, round_num: int, population: str, metrics: dict[str, float]) -> None:
        with self._writers[population].as_default():
            for name, value in metrics.items():
                tf.summary.scalar(name, value, step=round_num)
        self._writers[population].flush()

    def replay(self, rows: list[dict[str, str]]) -> None:
        """Writes the scalars of metrics.csv rows again (a resumed run rebuilds TensorBoard from them)."""
        for row in rows:
            for population in self._writers:
                metrics = {m: float(row[f'{population}_{m}']) for m in METRICS if row.get(f'{population}_{m}')}
                if metrics:
                    self.write(int(row['round']), population, metrics)

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()


def write_json(path: pathlib.Path, payload: dict) -> None:
    """Writes JSON through a temporary file and a rename, so readers never see half a file."""
    tmp = path.with_name(path.name + '.tmp')
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=False) + '\n')
    os.replace(tmp, path)


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

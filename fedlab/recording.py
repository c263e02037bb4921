"""What a run writes: metrics.csv (a row per round), TensorBoard scalars per population, JSON files."""

import csv
import json
import os
import pathlib

import tensorflow as tf

METRICS = ('loss', 'accuracy', 'examples', 'batches')
TIMING_COLUMNS = ('train_seconds', 'eval_seconds')


def metrics_columns(populations: list[str]) -> list[str]:
    return ['round', 'clients'] + [f'{p}_{m}' for p in populations for m in METRICS] + list(TIMING_COLUMNS)


class MetricsCsv:
    """Appends one row per round and flushes it, so an interrupted run keeps every finished round."""

    def __init__(self, path: pathlib.Path, populations: list[str]):
        self._file = open(path, 'w', newline='')
        self._writer = csv.DictWriter(self._file, fieldnames=metrics_columns(populations))
        self._writer.writeheader()
        self._file.flush()

    def write(self, row: dict) -> None:
        self._writer.writerow(row)
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class TensorBoardLogger:
    """One writer per population (train, eval, ...) with the same tags, so their curves overlay."""

    def __init__(self, log_dir: pathlib.Path, populations: list[str]):
        self._writers = {p: tf.summary.create_file_writer(str(log_dir / p)) for p in populations}

    def write(self, round_num: int, population: str, metrics: dict[str, float]) -> None:
        with self._writers[population].as_default():
            for name, value in metrics.items():
                tf.summary.scalar(name, value, step=round_num)
        self._writers[population].flush()

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()


def write_json(path: pathlib.Path, payload: dict) -> None:
    """Writes JSON through a temporary file and a rename, so readers never see half a file."""
    tmp = path.with_name(path.name + '.tmp')
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=False) + '\n')
    os.replace(tmp, path)

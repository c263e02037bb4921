"""Centralized baseline: the same Keras model trained with SGD on all clients' data pooled in one place."""

import dataclasses
import fractions
import math
import pathlib
import time

import numpy as np
import tensorflow as tf

from fedlab import errors
from fedlab.data.federated_data import LABEL, PIXELS, FederatedData
from fedlab.record import rundir, tables

EVAL = 'eval'  # the pooled held-out data: the same examples federated evaluation uses
POPULATIONS = ['train', EVAL]
CURVES_PNG = 'curves.png'


@dataclasses.dataclass(frozen=True)
class CentralizedConfig:
    """Keras SGD on the pooled data: as many epochs, the same batch size and step size as the clients use."""

    epochs: int | float  # a fraction: the last epoch trains that share of the pooled examples (matched_epochs)
    batch_size: int = 20
    learning_rate: float = 0.02
    momentum: float = 0.0
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class RunOutputs:
    """What `train_and_evaluate` leaves behind, besides the files (the federated run's shape)."""

    rounds_completed: int  # epochs
    final_train: dict[str, float]
    final_eval: dict[str, dict[str, float]]


def matched_epochs(*, rounds: int, clients_per_round: int, client_epochs: int, num_clients: int) -> int | float:
    """Epochs over the pooled data with as many example-passes as the federated run makes.

    Each round, `clients_per_round` of `num_clients` clients (on average that share of the pooled data) each
    pass over their data `client_epochs` times, so R rounds make R x clients_per_round x client_epochs /
    num_clients passes over the pooled data: an int when whole, else a float (e.g. 0.6: `experiment=debug`'s 2
    rounds x 3 of 10 clients x 1 epoch), whose last epoch trains that share of the examples (`epoch_sizes`);
    rounding 0.6 up to 1 would give the centralized side 1.7 times the federated budget.
    """
    passes = fractions.Fraction(rounds * clients_per_round * client_epochs, num_clients)
    return int(passes) if passes.denominator == 1 else float(passes)


def epoch_sizes(epochs: int | float, examples: int) -> list[int]:
    """The examples each epoch trains: every one of `examples` per whole epoch, then the fraction's share of them
    (at least one example, so that a tiny budget still trains)."""
    whole = math.floor(epochs)
    last = round((epochs - whole) * examples)
    return [examples] * whole + ([max(1, last)] if epochs > whole and (last or not whole) else [])


def pooled_arrays(client_data) -> tuple[np.ndarray, np.ndarray]:
    """Every client's (pixels, labels) concatenated, clients in id order."""
    pixels, labels = [], []
    for client_id in sorted(client_data.client_ids):
        for element in client_data.create_tf_dataset_for_client(client_id).batch(10_000):
            pixels.append(element[PIXELS].numpy())
            labels.append(element[LABEL].numpy())
    return np.concatenate(pixels), np.concatenate(labels)


class _EpochRecorder(tf.keras.callbacks.Callback):
    """Writes each epoch to metrics.csv, timing.csv and TensorBoard as soon as it ends, like a federated round."""

    def __init__(self, run_dir: pathlib.Path, *, num_clients: int, counts: dict[str, tuple[int, int]], epochs: int):
        super().__init__()
        self.rows: list[dict] = []
        self._num_clients = num_clients
        self.counts = counts  # population -> (examples, batches) per epoch (a partial last epoch sets its own)
        self._epochs = epochs  # epochs in all, a partial last one included: the progress lines' "epoch 3/10"
        self._metrics = tables.CsvTable(run_dir / 'metrics.csv', tables.metrics_columns(POPULATIONS))
        self._timing = tables.CsvTable(run_dir / 'timing.csv', tables.TIMING_COLUMNS)
        self._tensorboard = tables.TensorBoardLogger(run_dir / 'tensorboard')
        self._started = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        epoch_num = epoch + 1
        populations = {'train': '', EVAL: 'val_'}
        row = {'round': epoch_num, 'clients': self._num_clients}
        for population, prefix in populations.items():
            examples, batches = self.counts[population]
            metrics = {
                'loss': float(logs[f'{prefix}loss']),
                'accuracy': float(logs[f'{prefix}accuracy']),
                'examples': examples,
                'batches': batches,
            }
            row.update({f'{population}_{k}': v for k, v in metrics.items()})
            self._tensorboard.write(epoch_num, population, metrics)
        self._metrics.write(row)
        seconds = time.perf_counter() - self._started
        self._timing.write({'round': epoch_num, 'train_seconds': seconds, 'eval_seconds': 0})
        self.rows.append(row)
        print(_progress_line(row, epoch_num, self._epochs, seconds))

    def close(self):
        self._metrics.close()
        self._timing.close()
        self._tensorboard.close()


def train_and_evaluate(
    data: FederatedData,
    model: tf.keras.Model,
    run_dir: pathlib.Path,
    *,
    config: CentralizedConfig,
    run_info: dict | None = None,
) -> RunOutputs:
    """Trains `model` (uncompiled, outputs probabilities) on the pooled training data, evaluating on the pooled
    held-out data after every epoch; writes metrics.csv (a row per epoch), TensorBoard, curves.png, results.json."""
    started = time.perf_counter()
    run_dir.mkdir(parents=True, exist_ok=True)
    print(data.summary())
    tf.keras.utils.set_random_seed(config.seed)  # the epoch shuffles
    x_train, y_train = pooled_arrays(data.train)
    x_test, y_test = pooled_arrays(data.test)
    sizes = epoch_sizes(config.epochs, len(x_train))
    partial = f' (the last: {sizes[-1]} of {len(x_train)} examples)' if sizes[-1] < len(x_train) else ''
    print(
        f'centralized: {len(x_train)} pooled training examples, {config.epochs} epochs{partial} of batch '
        f'{config.batch_size}, SGD learning rate {config.learning_rate}; evaluating on {len(x_test)} pooled held-out '
        'examples'
    )
    model.compile(
        optimizer=tf.keras.optimizers.SGD(learning_rate=config.learning_rate, momentum=config.momentum),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(),
        metrics=[tf.keras.metrics.SparseCategoricalAccuracy(name='accuracy')],
    )
    for path in ['metrics.csv', 'timing.csv']:
        (run_dir / path).unlink(missing_ok=True)
    recorder = _EpochRecorder(
        run_dir,
        num_clients=len(data.client_ids),
        counts={
            'train': (len(x_train), math.ceil(len(x_train) / config.batch_size)),
            EVAL: (len(x_test), math.ceil(len(x_test) / config.batch_size)),
        },
        epochs=len(sizes),
    )
    tables.write_hparams(run_dir / 'tensorboard', tables.hparams_from_run_info(run_info))
    results = _Results(run_dir, started=started, data=data, model=model, config=config, run_info=run_info,
                       examples={'train_examples': len(x_train), 'test_examples': len(x_test)})
    fit = dict(batch_size=config.batch_size, shuffle=True, validation_data=(x_test, y_test),
               validation_batch_size=config.batch_size, callbacks=[recorder], verbose=0)
    whole = sum(1 for size in sizes if size == len(x_train))
    try:
        if whole:
            model.fit(x_train, y_train, epochs=whole, **fit)
        if len(sizes) > whole:  # a fraction of an epoch: a seeded share of the examples, once
            chosen = np.sort(np.random.default_rng(config.seed).permutation(len(x_train))[: sizes[-1]])
            recorder.counts['train'] = (sizes[-1], math.ceil(sizes[-1] / config.batch_size))
            model.fit(x_train[chosen], y_train[chosen], initial_epoch=whole, epochs=whole + 1, **fit)
    except BaseException as error:
        recorder.close()
        results.write(recorder.rows, error)
        raise
    recorder.close()
    return results.write(recorder.rows, None)


@dataclasses.dataclass(frozen=True)
class _Results:
    """Writes a centralized run's curves and results.json from the epochs recorded, whatever ended the run."""

    run_dir: pathlib.Path
    started: float
    data: FederatedData
    model: tf.keras.Model
    config: CentralizedConfig
    run_info: dict | None
    examples: dict

    def write(self, rows: list[dict], error: BaseException | None) -> RunOutputs:
        outputs = RunOutputs(
            rounds_completed=len(rows),
            final_train=_population(rows[-1], 'train') if rows else {},
            final_eval={EVAL: _population(rows[-1], EVAL)} if rows else {},
        )
        if rows:
            save_curves(rows, self.run_dir / CURVES_PNG, title=f'centralized {self.model.name} on {self.data.name}')
            last = rows[-1]
            print(
                f'centralized after {len(rows)} epochs: train accuracy {last["train_accuracy"]:.4f}, '
                f'test accuracy {last[f"{EVAL}_accuracy"]:.4f} (loss {last[f"{EVAL}_loss"]:.4f})'
            )
        timing = tables.read_rows(self.run_dir / 'timing.csv') if (self.run_dir / 'timing.csv').exists() else []
        status = errors.run_status(error)
        rundir.write_json(
            self.run_dir / 'results.json',
            {
                'status': status,
                **(errors.error_fields(error) if status in ('failed', 'diverged') else {}),
                'rounds_completed': len(rows),
                'rounds': self.config.epochs,
                'final_train': outputs.final_train,
                'final_eval': outputs.final_eval,
                'wall_seconds': round(time.perf_counter() - self.started, 3),
                'train_seconds': round(sum(float(r['train_seconds']) for r in timing), 3),
                'eval_seconds': 0.0,
                'data': {
                    'name': self.data.name,
                    'clients': len(self.data.client_ids),
                    'image_shape': list(self.data.image_shape),
                    'num_classes': self.data.num_classes,
                },
                'centralized': {'keras_model': self.model.name, **dataclasses.asdict(self.config), **self.examples},
                **(self.run_info or {}),
            },
        )
        return outputs


def _progress_line(row: dict, epoch_num: int, epochs: int, seconds: float) -> str:
    """One line per epoch, as federated rounds print theirs (fedlab.run.observers.ProgressPrinter)."""
    from fedlab.run.observers import metrics_text

    line = f'epoch {epoch_num:>{len(str(epochs))}}/{epochs}  train {metrics_text(_population(row, "train"))}'
    return line + f'  | {EVAL} {metrics_text(_population(row, EVAL))}  ({seconds:.2f} s)'


def _population(row: dict, population: str) -> dict[str, float]:
    return {m: row[f'{population}_{m}'] for m in tables.METRICS}


def save_curves(rows: list[dict], path: pathlib.Path, *, title: str) -> None:
    """Train and validation accuracy and loss per epoch, side by side."""
    import matplotlib

    matplotlib.use('Agg')
    from matplotlib import pyplot as plt

    epochs = [int(r['round']) for r in rows]
    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    for axis, metric in zip(axes, ['accuracy', 'loss']):
        axis.plot(epochs, [float(r[f'train_{metric}']) for r in rows], label='train (pooled training data)')
        axis.plot(epochs, [float(r[f'{EVAL}_{metric}']) for r in rows], label='validation (pooled held-out data)')
        axis.set_xlabel('epoch')
        axis.set_ylabel(metric)
        axis.grid(alpha=0.3)
        axis.legend()
    axes[0].set_ylim(0, 1)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)

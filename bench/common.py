"""Shared helpers of the benchmarks: LEAF digits, interleaved timing, and printing a figure beside its goal."""

import glob
import json
import os
import pathlib
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
LEAF = pathlib.Path(os.environ.get('FEDLAB_LEAF', REPO.parent / 'shared' / 'data' / 'femnist_leaf_sample'))
QUICK = os.environ.get('BENCH_QUICK', '') not in ('', '0')


def load_leaf_digits(split: str, *, max_writers: int | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{writer: (pixels [n, 28, 28, 1] float32 with 1 = ink, labels [n] int32)}, digits (0-9) only.

    Read straight from LEAF's json: fedlab's own LEAF source is another engineer's work in progress.
    """
    writers = {}
    for path in sorted(glob.glob(str(LEAF / split / '*.json'))):
        with open(path) as f:
            shard = json.load(f)
        for user in shard['users']:
            x = np.asarray(shard['user_data'][user]['x'], np.float32)
            y = np.asarray(shard['user_data'][user]['y'], np.int32)
            keep = y < 10
            if keep.sum() >= 2:
                # LEAF: 1.0 = background; flip to 1 = ink like fedlab's digits.
                writers[user] = ((1.0 - x[keep]).reshape(-1, 28, 28, 1), y[keep])
            if max_writers and len(writers) >= max_writers:
                return writers
    return writers


def synthetic_clients(num_clients: int, examples: int, *, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """28x28x1 images with 10 classes of random data, when the LEAF sample is not there."""
    rng = np.random.default_rng(seed)
    return {
        f'client_{i:02d}': (rng.random((examples, 28, 28, 1), np.float32), rng.integers(0, 10, examples, np.int32))
        for i in range(num_clients)
    }


class Timer:
    """Accumulates wall time of named blocks, so that interleaved measurements can be compared as ratios."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.count: dict[str, int] = {}

    def time(self, name: str, fn, *args):
        start = time.perf_counter()
        out = fn(*args)
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
        self.count[name] = self.count.get(name, 0) + 1
        return out


def figure(name: str, value: float, goal: str, ok: bool | None, detail: str = '') -> str:
    """One printed line: the figure, its goal and whether it holds (ok=None: a reference, no goal)."""
    line = f'{name:<48} {value:>9.3f}   goal {goal:<8} {"    " if ok is None else "MET " if ok else "MISS"}'
    return line + (f'   ({detail})' if detail else '')


def leaf_federation(max_writers: int | None = None):
    """fedlab `FederatedData` of the LEAF sample's digits: each writer's train and test split."""
    from fedlab.data import federated_data

    train = load_leaf_digits('train', max_writers=max_writers)
    test = load_leaf_digits('test')
    test = {u: test[u] for u in train if u in test}
    train = {u: train[u] for u in test}
    return federated_data.FederatedData(
        name='leaf_digits',
        train=federated_data.client_data_from_arrays(train),
        test=federated_data.client_data_from_arrays(test),
        image_shape=(28, 28, 1),
        num_classes=10,
    ), train, test


def evaluator(model_fn, client_arrays: dict, batch_size: int = 100):
    """fedlab's federated evaluation over the clients' arrays."""
    import functools

    from fedlab import client_data, evaluation
    from fedlab.data import federated_data

    data = federated_data.client_data_from_arrays(client_arrays)
    pipeline = functools.partial(client_data.eval_pipeline, batch_size=batch_size)
    return evaluation.FederatedEvaluator(model_fn, client_data.ClientDatasets(data, pipeline)(sorted(client_arrays)))

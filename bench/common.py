"""Shared helpers of the benchmarks: LEAF digits, interleaved timing, and printing a figure beside its goal."""

import os
import pathlib
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
LEAF = pathlib.Path(os.environ.get('FEDLAB_LEAF', REPO.parent / 'shared' / 'data' / 'femnist_leaf_sample'))
QUICK = os.environ.get('BENCH_QUICK', '') not in ('', '0')


def leaf_federation(max_writers: int | None = None):
    """The LEAF sample's digits exactly as `fedlab data=leaf data.digits_only=true` loads them (fedlab's own LEAF
    source: LEAF's pixels, 1.0 = background), with {writer: (pixels, labels)} arrays of its train and test splits."""
    from fedlab.data import leaf

    data = leaf.load_leaf(str(LEAF), digits_only=True, num_clients=max_writers)
    return data, client_arrays(data.train), client_arrays(data.test)


def client_arrays(client_data) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{client: (pixels, labels)} of a ClientData, clients with examples only."""
    arrays = {}
    for client_id in client_data.client_ids:
        elements = list(client_data.create_tf_dataset_for_client(client_id).batch(100_000).as_numpy_iterator())
        if elements and len(elements[0]['label']):
            arrays[client_id] = (elements[0]['pixels'], elements[0]['label'])
    return arrays


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
        self.add(name, time.perf_counter() - start)
        return out

    def add(self, name: str, seconds: float) -> None:
        """One measurement taken elsewhere (e.g. in another process)."""
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds
        self.count[name] = self.count.get(name, 0) + 1


def figure(name: str, value: float, goal: str, ok: bool | None, detail: str = '') -> str:
    """One printed line: the figure, its goal and whether it holds (ok=None: a reference, no goal)."""
    line = f'{name:<48} {value:>9.3f}   goal {goal:<8} {"    " if ok is None else "MET " if ok else "MISS"}'
    return line + (f'   ({detail})' if detail else '')


def evaluator(model_fn, client_arrays: dict, batch_size: int = 100):
    """fedlab's federated evaluation over the clients' arrays."""
    import functools

    from fedlab.data import federated_data
    from fedlab.run import evaluation, round_inputs

    data = federated_data.client_data_from_arrays(client_arrays)
    pipeline = functools.partial(round_inputs.eval_pipeline, batch_size=batch_size)
    return evaluation.FederatedEvaluator(model_fn, round_inputs.ClientDatasets(data, pipeline)(sorted(client_arrays)))

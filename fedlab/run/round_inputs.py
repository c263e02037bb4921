"""Client-side input pipelines: raw (pixels, label) elements into shuffled, batched (x, y) batches, and the
objects that hand each round's clients their inputs (datasets, tensors or shard files), with bounded memory
and disk whatever the population and the sampling."""

import collections
import concurrent.futures
import dataclasses
import threading
from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from fedlab import seeds
from fedlab.data.federated_data import LABEL, PIXELS
from fedlab.fast_paths import shards
from fedlab.heterogeneity.clock import STEPS_MARK


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """How each client iterates its local data in one round (the tutorial's preprocess)."""

    epochs: int = 5
    batch_size: int = 20
    shuffle_buffer: int = 100
    seed: int = 0
    # How each client's batches reach its computation in TFF's worker; the same batches every way.
    # 'dataset': a tf.data.Dataset (TFF as it comes); 'tensors': the batch stream as arrays (ClientTensors),
    # several times faster; 'shards': the path of a file holding them (ClientShards), fastest.
    client_inputs: str = 'dataset'
    # client_inputs=shards: where this run's shard directory goes (None: <fedlab cache>/shards) and how much
    # disk its files may take (least recently used clients' files are deleted to stay within it).
    shard_dir: str | None = None
    shard_budget_mb: float = 1024


def _to_batch_structure(element):
    return collections.OrderedDict(x=element[PIXELS], y=element[LABEL])


def train_pipeline(dataset: tf.data.Dataset, config: PipelineConfig) -> tf.data.Dataset:
    """Repeat for the local epochs, shuffle with a fixed seed, batch (the tutorial's order of operations)."""
    return (
        dataset.repeat(config.epochs)
        .shuffle(config.shuffle_buffer, seed=seeds.derive(config.seed, 'shuffle'))
        .batch(config.batch_size)
        .map(_to_batch_structure)
    )


def eval_pipeline(dataset: tf.data.Dataset, batch_size: int) -> tf.data.Dataset:
    """One deterministic pass over the data."""
    return dataset.batch(batch_size).map(_to_batch_structure)


Pipeline = Callable[[tf.data.Dataset], tf.data.Dataset]


def split_steps(client_id: str) -> tuple[str, int | None]:
    """A client's id and the batches it trains: a simulated system's partial client is asked for as
    `<id>#steps=<k>` (fedlab.heterogeneity.clock), its stream cut to its first k batches; else (id, None)."""
    base, mark, steps = client_id.partition(STEPS_MARK)
    return (base, int(steps)) if mark else (client_id, None)


def client_arrays(client_data: tff.simulation.datasets.ClientData, client_id: str) -> dict[str, np.ndarray]:
    """One pass over a client's examples as arrays {x, y}, in its dataset's order."""
    if hasattr(client_data, 'arrays'):  # data.federated_data.ArrayClientData: a slice, no tf.data
        pixels, labels = client_data.arrays(client_id)
        return collections.OrderedDict(x=pixels, y=labels)
    dataset = client_data.create_tf_dataset_for_client(client_id)
    return materialize(eval_pipeline(dataset, 256))


def materialize(dataset: tf.data.Dataset) -> collections.OrderedDict:
    """A client's batch stream `{x, y}` concatenated into arrays: exactly the examples, in the order,
    that TFF's dataset path sees in one round (a seeded shuffle gives the same order every round)."""
    from fedlab.fast_paths import tensor_inputs

    return tensor_inputs.materialize(dataset)


def stream_order(num_examples: int, pipeline: Pipeline) -> np.ndarray:
    """The positions, in one pass of `num_examples` examples, that `pipeline`'s batch stream visits in turn:
    the pipeline run over the positions themselves (its shuffle depends on its seed, not on the values)."""
    positions = tf.range(num_examples, dtype=tf.int64)
    dataset = tf.data.Dataset.from_tensor_slices(collections.OrderedDict([(PIXELS, positions), (LABEL, positions)]))
    batches = [batch['y'] for batch in pipeline(dataset).as_numpy_iterator()]
    return np.concatenate(batches).astype(np.int32) if batches else np.zeros(0, np.int32)


class ClientStreams:
    """Each client's batch stream as one pass of its examples plus the order the stream visits them
    (`stream_order`, computed once per number of examples). The first client is checked against the
    pipeline run as it is: a pipeline that does more than repeat, shuffle and batch (that changes values)
    makes every client's stream materialized in full instead, so the result is always the pipeline's."""

    def __init__(self, client_data: tff.simulation.datasets.ClientData, pipeline: Pipeline):
        self._client_data = client_data
        self._pipeline = pipeline
        self._orders: dict[int, np.ndarray] = {}
        self._exact: bool | None = None  # None until the first client is checked
        self._lock = threading.Lock()

    def one_pass(self, client_id: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """({x, y} one pass, order) with `{k: v[order]}` the client's batch stream."""
        if self._exact is None:
            with self._lock:
                if self._exact is None:
                    self._exact = self._check(client_id)
        if not self._exact:
            stream = self._materialized(client_id)
            return stream, np.arange(len(stream['y']), dtype=np.int32)
        arrays = client_arrays(self._client_data, client_id)
        return arrays, self._order(len(arrays['y']))

    def stream(self, client_id: str) -> dict[str, np.ndarray]:
        arrays, order = self.one_pass(client_id)
        return collections.OrderedDict((key, value[order]) for key, value in arrays.items())

    def _order(self, num_examples: int) -> np.ndarray:
        order = self._orders.get(num_examples)
        if order is None:
            order = self._orders[num_examples] = stream_order(num_examples, self._pipeline)
        return order

    def _materialized(self, client_id: str) -> dict[str, np.ndarray]:
        return materialize(self._pipeline(self._client_data.create_tf_dataset_for_client(client_id)))

    def _check(self, client_id: str) -> bool:
        expected = self._materialized(client_id)
        try:
            arrays = client_arrays(self._client_data, client_id)
            order = self._order(len(arrays['y']))
            return all(
                expected[key].dtype == arrays[key].dtype and np.array_equal(expected[key], arrays[key][order])
                for key in ('x', 'y')
            )
        except (IndexError, KeyError, ValueError, tf.errors.OpError):
            return False


class _LeastRecentlyUsed:
    """A thread-safe mapping that drops its least recently used entries beyond `max_cost` (each entry's cost
    given when stored), but never the ones just asked for."""

    def __init__(self, max_cost: float):
        self._entries: collections.OrderedDict = collections.OrderedDict()
        self._max_cost = max_cost
        self._cost = 0.0
        self._lock = threading.RLock()

    def get_many(self, keys: Sequence[str], make: Callable[[str], tuple[object, float]]) -> list:
        with self._lock:
            values = []
            for key in keys:
                if key in self._entries:
                    self._entries.move_to_end(key)
                else:
                    value, cost = make(key)
                    self._entries[key] = (value, cost)
                    self._cost += cost
                values.append(self._entries[key][0])
            keep = set(keys)
            for key in list(self._entries):
                if self._cost <= self._max_cost:
                    break
                if key not in keep:
                    self._cost -= self._entries.pop(key)[1]
            return values

    def __len__(self) -> int:
        return len(self._entries)


class ClientDatasets:
    """Hands out the datasets of the clients asked for; the `max_clients` most recently used are kept."""

    def __init__(self, client_data: tff.simulation.datasets.ClientData, pipeline: Pipeline, *, max_clients: int = 64):
        self._client_data = client_data
        self._pipeline = pipeline
        self._cache = _LeastRecentlyUsed(max_clients)

    def __call__(self, client_ids: list[str]) -> list[tf.data.Dataset]:
        return self._cache.get_many(client_ids, self._make)

    def prepare(self, client_ids: list[str]) -> None:
        self(client_ids)

    def _make(self, client_id: str):
        client_id, steps = split_steps(client_id)
        dataset = self._pipeline(self._client_data.create_tf_dataset_for_client(client_id))
        return (dataset if steps is None else dataset.take(steps)), 1

    def close(self) -> None:
        pass


class ClientTensors:
    """Like `ClientDatasets`, but hands out each client's batch stream as arrays {x, y} (for
    `build_fed_avg(client_inputs='tensors')`); the most recently used streams are kept up to `max_bytes`."""

    def __init__(self, client_data: tff.simulation.datasets.ClientData, pipeline: Pipeline, *,
                 max_bytes: int = 256 << 20, batch_size: int | None = None):
        self._streams = ClientStreams(client_data, pipeline)
        self._cache = _LeastRecentlyUsed(max_bytes)
        self._batch_size = batch_size  # the pipeline's, for a partial client's cut stream

    def __call__(self, client_ids: list[str]) -> list[dict]:
        return self._cache.get_many(client_ids, self._make)

    def prepare(self, client_ids: list[str]) -> None:
        """Computes these clients' streams ahead of time (see `RoundAhead`)."""
        self(client_ids)

    def _make(self, client_id: str):
        client_id, steps = split_steps(client_id)
        stream = self._streams.stream(client_id)
        if steps is not None:
            stream = collections.OrderedDict((k, v[: steps * self._batch_size]) for k, v in stream.items())
        return stream, sum(a.nbytes for a in stream.values())

    def close(self) -> None:
        pass


class ClientShards:
    """Like `ClientTensors`, but writes each client's inputs once to a shard file (`fedlab.fast_paths.shards`: one pass
    of its examples and the stream's order) and hands out its path (for `build_fed_avg(client_inputs='shards')`):
    the client's computation reads the file inside TFF's worker, so the pixels no longer cross gRPC every round.

    Files live in `store` (a `shards.ShardStore`: disk budget, least recently used evicted); without one, a
    store of its own is opened (`shard_dir`, `budget_bytes`) and deleted by `close()` (or leaving the `with`
    block). `name` keeps the keys of several populations in one store apart.
    """

    def __init__(
        self,
        client_data: tff.simulation.datasets.ClientData,
        pipeline: Pipeline,
        *,
        store: shards.ShardStore | None = None,
        shard_dir: str | None = None,
        budget_bytes: int = 1 << 30,
        name: str = 'train',
        batch_size: int | None = None,
    ):
        self._streams = ClientStreams(client_data, pipeline)
        self._batch_size = batch_size  # the pipeline's, for a partial client's cut stream
        self._own_store = store is None
        self.store = store if store is not None else shards.ShardStore(shard_dir, budget_bytes=budget_bytes)
        self._name = name

    def __call__(self, client_ids: list[str], *, pin: str | None = None) -> list[str]:
        keys = [f'{self._name}/{client_id}' for client_id in client_ids]
        return self.store.paths(keys, self._make, pin=pin or self._name)

    def prepare(self, client_ids: list[str]) -> None:
        """Writes these clients' shards ahead of time (see `RoundAhead`), pinned until the next `prepare`."""
        self(client_ids, pin=f'{self._name}/next')

    def release(self) -> None:
        """Lets the clients of the last call be evicted."""
        self.store.unpin(self._name)

    def _make(self, key: str) -> dict[str, bytes]:
        client_id, steps = split_steps(key.split('/', 1)[1])
        arrays, order = self._streams.one_pass(client_id)
        return shards.serialize(arrays, order if steps is None else order[: steps * self._batch_size])

    def close(self) -> None:
        if self._own_store:
            self.store.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


CLIENT_INPUTS = {'dataset': ClientDatasets, 'tensors': ClientTensors, 'shards': ClientShards}


def training_inputs(
    client_data: tff.simulation.datasets.ClientData,
    config: PipelineConfig,
    *,
    store: shards.ShardStore | None = None,
):
    """The run's training inputs of the kind `config.client_inputs`, shards in `store`."""
    pipeline = lambda dataset: train_pipeline(dataset, config)  # noqa: E731
    if config.client_inputs == 'shards':
        return ClientShards(client_data, pipeline, store=store, shard_dir=config.shard_dir,
                            budget_bytes=int(config.shard_budget_mb * 2**20), batch_size=config.batch_size)
    if config.client_inputs == 'tensors':
        return ClientTensors(client_data, pipeline, batch_size=config.batch_size)
    return ClientDatasets(client_data, pipeline)


def open_store(config: PipelineConfig, *, calls_pinned: int = 1) -> shards.ShardStore | None:
    """The run's shard store (client_inputs=shards), keeping each pin's clients of the last `calls_pinned` calls;
    else None."""
    if config.client_inputs != 'shards':
        return None
    store = shards.ShardStore(config.shard_dir, budget_bytes=int(config.shard_budget_mb * 2**20))
    store.calls_pinned = calls_pinned
    return store


class RunInputs:
    """A run's client inputs, closed together (a context manager): `train`, each round's clients' inputs of the
    kind `config.client_inputs`, the next round's prepared while a round trains (`RoundAhead`), for rounds
    `rounds` = (first, last); and `store`, the shard store they share with evaluation (None unless shards).
    `rounds_per_call`: the rounds of one TFF call (efficiency.rounds_per_call), whose shards stay on disk until the
    call reads them all."""

    def __init__(self, client_data: tff.simulation.datasets.ClientData, config: PipelineConfig, sampler, *,
                 rounds: tuple[int, int], rounds_per_call: int = 1):
        self.store = open_store(config, calls_pinned=rounds_per_call)
        try:
            self.train = RoundAhead(training_inputs(client_data, config, store=self.store), sampler,
                                    first_round=rounds[0], last_round=rounds[1])
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if getattr(self, 'train', None) is not None:
            self.train.close()
        if self.store is not None:
            self.store.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


class RoundAhead:
    """Training inputs that prepare the next round's clients while this round trains.

    The sampler is a pure function of the round, so round r+1's clients are known when round r starts:
    a background thread calls `inputs.prepare(sampler(r + 1))` (writing their shards, for example) while
    TFF's worker trains round r, and the next call finds them ready. Only a head start: whatever the thread
    does or raises, each call returns exactly `inputs(client_ids)`. Calls are expected once per round from
    `first_round`; if the clients asked for are not the ones predicted, it stops preparing.
    """

    def __init__(self, inputs, sampler: Callable[[int], list[str]], *, first_round: int, last_round: int):
        self.inputs = inputs
        self._sampler = sampler
        self._next_round = first_round
        self._last_round = last_round
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix='fedlab-round-ahead')
        self._pending: concurrent.futures.Future | None = None  # -> the clients predicted for _next_round
        self._in_step = True

    def __call__(self, client_ids: list[str]):
        if self._pending is not None:
            predicted = _result_or_none(self._pending)
            self._pending = None
            self._in_step = predicted == list(client_ids)
        result = self.inputs(client_ids)
        round_num, self._next_round = self._next_round, self._next_round + 1
        if self._in_step and round_num < self._last_round:
            self._pending = self._executor.submit(self._prepare, round_num + 1)
        return result

    def _prepare(self, round_num: int) -> list[str] | None:
        try:
            client_ids = list(self._sampler(round_num))
        except BaseException:  # e.g. a sampler that stops the run at that round: it does so in the main thread
            return None
        try:
            self.inputs.prepare(client_ids)
        except Exception:  # the main thread's call redoes it, and raises what it raises
            pass
        return client_ids

    def close(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
        self._executor.shutdown(wait=True)
        self.inputs.close()


def _result_or_none(future: concurrent.futures.Future):
    try:
        return future.result()
    except BaseException:
        return None

"""Full-size federations: shard files on a disk budget, stale shard directories, one-epoch shards that give the
pipeline's batches, the LEAF reader and the data cache, bounded client caches, eval_clients, rounds prepared
ahead. Small data here; the full-size figures are `make bench ARGS=scale`."""

import csv
import functools
import json
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from fedlab.config import identity
from fedlab.errors import FedlabError
from fedlab.fast_paths import shards
from fedlab.system import scratch_dirs
from tests.conftest import LEAF_SAMPLE, REPO, TINY, compose_config

needs_sample = pytest.mark.skipif(not LEAF_SAMPLE.is_dir(), reason=f'{LEAF_SAMPLE} is not on this machine')


def _files(size: int) -> dict[str, bytes]:
    return {'x': b'x' * size, 'y': b'y', 'i': b'i'}


def _du(directory: pathlib.Path) -> int:
    total = 0
    for entry in os.scandir(directory):
        try:
            total += entry.stat().st_blocks * 512
        except FileNotFoundError:  # evicted meanwhile (a round being prepared ahead)
            pass
    return total


def test_shard_store_keeps_within_its_budget_evicting_least_recently_used(tmp_path):
    block = 4096
    budget = 3 * (3 * block) + 2 * block  # three shards of three blocks each, plus a little
    with shards.ShardStore(tmp_path, budget_bytes=budget) as store:
        for key in 'abc':
            store.paths([key], lambda k: _files(block), pin='train')
        assert store.used_bytes == 9 * block and store.evicted == 0
        store.paths(['a'], lambda k: _files(block), pin='train')  # a is now the most recently used
        store.paths(['d'], lambda k: _files(block), pin='train')
        assert 'b' not in store and {'a', 'c', 'd'} <= {k for k in 'acd' if k in store}
        assert store.peak_bytes <= budget and _du(store.directory) <= budget
        # Pinned keys are never evicted: two pinned sets that fill the budget leave no room for a third.
        store.paths(['a'], lambda k: _files(block), pin='next')
        store.paths(['c', 'd'], lambda k: _files(block), pin='train')
        with pytest.raises(FedlabError, match=r'shard_budget_mb=[\d.]+ is too small: the clients of one TFF call need'):
            store.paths(['e', 'f'], lambda k: _files(block), pin='eval')
        assert {k for k in 'acd' if k in store} == {'a', 'c', 'd'} and _du(store.directory) <= budget
        directory = store.directory
    assert not directory.exists() and list(tmp_path.iterdir()) == []  # close() leaves nothing


def test_a_block_of_rounds_keeps_every_rounds_shards_until_its_call(tmp_path):
    """efficiency.rounds_per_call: the worker reads a block's shards after all its rounds were asked for, so the
    store keeps the last `calls_pinned` calls' clients: a block too large for the budget is a clear error, never
    an earlier round's shard evicted for a later one's."""
    block = 4096
    with shards.ShardStore(tmp_path, budget_bytes=2 * 3 * block) as store:  # room for two shards of three blocks
        for key in 'abc':  # one call a round: each round's shard is read before the next call
            store.paths([key], lambda k: _files(block), pin='train')
        assert 'a' not in store and {k for k in 'bc' if k in store} == {'b', 'c'}
    with shards.ShardStore(tmp_path, budget_bytes=2 * 3 * block) as store:
        store.calls_pinned = 3  # a block of three rounds
        for key in 'ab':
            store.paths([key], lambda k: _files(block), pin='train')
        with pytest.raises(FedlabError, match='the clients of one TFF call need'):
            store.paths(['c'], lambda k: _files(block), pin='train')
        assert {k for k in 'ab' if k in store} == {'a', 'b'}


_HOLDER = textwrap.dedent('''
    import sys, time
    from fedlab.system import scratch_dirs
    from fedlab.fast_paths import shards
    store = shards.ShardStore(sys.argv[1], budget_bytes=1 << 20)
    store.paths(['k'], lambda key: {'x': b'1', 'y': b'2', 'i': b'3'}, pin='p')
    print(store.directory.name, flush=True)
    time.sleep(120)
''')


def _holder(parent: pathlib.Path) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, '-c', _HOLDER, str(parent)], stdout=subprocess.PIPE, text=True, cwd=REPO)
    return proc, proc.stdout.readline().strip()


def test_a_killed_runs_shard_directory_is_removed_at_the_next_start(tmp_path):
    killed, killed_dir = _holder(tmp_path)
    alive, alive_dir = _holder(tmp_path)
    try:
        killed.send_signal(signal.SIGKILL)
        killed.wait()
        assert (tmp_path / killed_dir).is_dir()  # SIGKILL: nothing could clean up
        with shards.ShardStore(tmp_path, budget_bytes=1 << 20) as store:
            assert store.removed_stale == [killed_dir]
            assert not (tmp_path / killed_dir).exists() and not (tmp_path / f'{killed_dir}.lock').exists()
            assert (tmp_path / alive_dir).is_dir()  # a live process's directory is kept
    finally:
        alive.kill()
        alive.wait()
        for proc in (killed, alive):
            proc.stdout.close()
    scratch_dirs.remove_stale(tmp_path)
    assert list(tmp_path.iterdir()) == []


def _client_data(sizes, shape=(3, 3, 1), seed=0):
    from fedlab.data import federated_data

    rng = np.random.default_rng(seed)
    return federated_data.client_data_from_arrays(
        {f'c{i}': (rng.random((n, *shape), np.float32), rng.integers(0, 10, n).astype(np.int32))
         for i, n in enumerate(sizes)}
    )


@pytest.mark.parametrize('epochs,buffer,batch', [(5, 100, 20), (2, 3, 4), (3, 1, 7), (1, 1000, 1)])
def test_one_pass_and_the_order_give_exactly_the_pipelines_stream(epochs, buffer, batch):
    from fedlab.run import round_inputs

    data = _client_data([0, 1, 7, 40, 41])
    config = round_inputs.PipelineConfig(epochs=epochs, batch_size=batch, shuffle_buffer=buffer, seed=3)
    pipeline = functools.partial(round_inputs.train_pipeline, config=config)
    streams = round_inputs.ClientStreams(data, pipeline)
    for client_id in data.client_ids:
        expected = round_inputs.materialize(pipeline(data.create_tf_dataset_for_client(client_id)))
        got = streams.stream(client_id)
        for key in ('x', 'y'):
            assert got[key].dtype == expected[key].dtype and np.array_equal(got[key], expected[key]), (client_id, key)
        arrays, order = streams.one_pass(client_id)
        assert len(arrays['y']) == [0, 1, 7, 40, 41][int(client_id[1:])]  # one epoch stored, not `epochs`


def test_a_pipeline_that_changes_values_is_stored_as_it_streams():
    from fedlab.run import round_inputs

    data = _client_data([5, 6])

    def doubling(dataset):
        return round_inputs.eval_pipeline(dataset.map(lambda e: {**e, 'pixels': 2 * e['pixels']}), 2)

    streams = round_inputs.ClientStreams(data, doubling)
    expected = round_inputs.materialize(doubling(data.create_tf_dataset_for_client('c1')))
    got = streams.stream('c1')
    assert np.array_equal(got['x'], expected['x']) and isinstance(expected['x'], np.ndarray)
    assert not streams._exact  # noticed on the first client


def test_shard_files_read_in_graph_give_the_stream(tmp_path):
    import tensorflow as tf

    from fedlab.run import round_inputs

    data = _client_data([9, 0])
    config = round_inputs.PipelineConfig(epochs=3, batch_size=4, shuffle_buffer=5, seed=1)
    pipeline = functools.partial(round_inputs.train_pipeline, config=config)
    spec = {'x': tf.TensorSpec([None, 3, 3, 1], tf.float32), 'y': tf.TensorSpec([None], tf.int32)}
    with round_inputs.ClientShards(data, pipeline, shard_dir=str(tmp_path), budget_bytes=1 << 20) as inputs:
        stems = inputs(['c0', 'c1'])
        for stem, client_id in zip(stems, ['c0', 'c1']):
            read = shards.read_shard(tf.constant(stem), spec)
            expected = round_inputs.materialize(pipeline(data.create_tf_dataset_for_client(client_id)))
            for key in spec:
                np.testing.assert_array_equal(read[key].numpy(), expected[key])
    assert list(tmp_path.iterdir()) == []


def test_client_caches_in_memory_are_bounded():
    from fedlab.run import round_inputs

    data = _client_data([4] * 12)
    pipeline = functools.partial(round_inputs.train_pipeline, config=round_inputs.PipelineConfig(epochs=2))
    datasets = round_inputs.ClientDatasets(data, pipeline, max_clients=3)
    stream_bytes = 2 * 4 * (9 * 4 + 4)
    tensors = round_inputs.ClientTensors(data, pipeline, max_bytes=2 * stream_bytes)
    for round_num in range(6):
        ids = [f'c{(2 * round_num + k) % 12}' for k in range(2)]
        assert len(datasets(ids)) == len(tensors(ids)) == 2
        assert len(datasets._cache) <= 3 and len(tensors._cache) <= 2


class _Recording:
    def __init__(self):
        self.prepared = []

    def __call__(self, client_ids):
        return [f'input of {c}' for c in client_ids]

    def prepare(self, client_ids):
        self.prepared.append(list(client_ids))

    def close(self):
        pass


def test_round_ahead_prepares_the_next_round_and_raises_only_what_the_round_raises():
    from fedlab.run import round_inputs

    def sampler(round_num):
        if round_num == 3:
            raise KeyboardInterrupt  # as tests/interrupting_sampler.py: must reach the main thread in round 3 only
        return [f'r{round_num}a', f'r{round_num}b']

    inputs = _Recording()
    ahead = round_inputs.RoundAhead(inputs, sampler, first_round=1, last_round=5)
    assert ahead(sampler(1)) == ['input of r1a', 'input of r1b']
    assert ahead(sampler(2)) == ['input of r2a', 'input of r2b']
    ahead.close()
    assert inputs.prepared == [['r2a', 'r2b']]  # round 3's sampling raised in the thread, silently
    # Clients other than predicted (e.g. a caller out of step): served as asked, no more preparing.
    inputs = _Recording()
    ahead = round_inputs.RoundAhead(inputs, lambda r: [f'r{r}'], first_round=1, last_round=9)
    assert ahead(['r1']) == ['input of r1'] and ahead(['other']) == ['input of other'] and ahead(['r3'])
    ahead.close()
    assert inputs.prepared == [['r2']]



def test_round_ahead_with_poisson_sampling_serves_every_round_its_clients_and_empty_rounds_nothing(tmp_path):
    """Poisson rounds vary in size and may be empty (sampling=poisson, DP): each call gives exactly that round's
    shards, an empty round none, and the next round's are written ahead."""
    import tensorflow as tf

    from fedlab import sampling
    from fedlab.run import round_inputs

    data = _client_data([3, 5, 0, 4, 6, 2])
    sampler = sampling.poisson(data.client_ids, 1, seed=_seed_with_empty_and_full_rounds(data.client_ids))
    pipeline = functools.partial(round_inputs.train_pipeline, config=round_inputs.PipelineConfig(epochs=2))
    sizes = []
    with round_inputs.ClientShards(data, pipeline, shard_dir=str(tmp_path), budget_bytes=1 << 20) as inputs:
        ahead = round_inputs.RoundAhead(inputs, sampler, first_round=1, last_round=12)
        for round_num in range(1, 13):
            client_ids = sampler(round_num)
            stems = ahead(client_ids)
            sizes.append(len(stems))
            assert len(stems) == len(client_ids)
            for stem, client_id in zip(stems, client_ids):  # this client's examples
                labels = tf.io.parse_tensor(tf.io.read_file(f'{stem}.y'), tf.int32).numpy()
                np.testing.assert_array_equal(labels, data.arrays(client_id)[1])
            if round_num < 12:
                ahead._pending.result()  # the next round's shards, written while this round would train
                assert all(f'train/{c}' in inputs.store for c in sampler(round_num + 1))
        ahead.close()
    assert 0 in sizes and max(sizes) >= 2  # the seed gives empty and multi-client rounds


def _seed_with_empty_and_full_rounds(client_ids):
    from fedlab import sampling

    for seed in range(200):
        sizes = [len(sampling.poisson(client_ids, 1, seed=seed)(r)) for r in range(1, 13)]
        if 0 in sizes and max(sizes) >= 2:
            return seed
    raise AssertionError('no such seed')


@pytest.mark.parametrize('algorithm', ['mime_lite', pytest.param('fedsgd', marks=pytest.mark.slow),
                                       pytest.param('fedprox', marks=pytest.mark.slow)])
def test_one_epoch_shards_train_every_algorithm_on_the_pipelines_own_stream(tmp_path, algorithm):
    """An algorithm's client work on one-epoch shards (gathered in-graph) trains exactly as on the pipeline's
    stream materialized by tf.data itself, shuffled over 2 epochs (tests/test_algorithms.py compares with TFF's
    dataset path, which for Mime Lite needs an unshuffled pipeline)."""
    from fedlab.algorithms import fedprox, fedsgd, mime_lite, optimizers
    from fedlab.fast_paths import tensor_inputs
    from fedlab.run import round_inputs

    data = _client_data([9, 13, 6])
    config = round_inputs.PipelineConfig(epochs=2, batch_size=4, shuffle_buffer=8, seed=3)
    pipeline = functools.partial(round_inputs.train_pipeline, config=config)
    model_fn = _linear_model_fn()
    builders = {
        'mime_lite': lambda inputs: mime_lite.build_mime_lite(model_fn, optimizers.sgd(0.1, momentum=0.9),
                                                              optimizers.sgd(1.0), client_inputs=inputs, batch_size=4),
        'fedsgd': lambda inputs: fedsgd.build_fed_sgd(model_fn, optimizers.sgd(0.5), client_inputs=inputs,
                                                      batch_size=4),
        'fedprox': lambda inputs: fedprox.build_fed_prox(model_fn, optimizers.sgd(0.1), optimizers.sgd(1.0), mu=0.5,
                                                         client_inputs=inputs, batch_size=4),
    }
    streams = [tensor_inputs.materialize(pipeline(data.create_tf_dataset_for_client(c))) for c in data.client_ids]
    results = {}
    with round_inputs.ClientShards(data, pipeline, shard_dir=str(tmp_path), budget_bytes=1 << 20) as shard_inputs:
        for kind, inputs in [('tensors', lambda ids: streams), ('shards', shard_inputs)]:
            process = builders[algorithm](kind)
            state, metrics = process.initialize(), []
            for _ in range(2):
                output = process.next(state, inputs(data.client_ids))
                state, metrics = output.state, [*metrics, output.metrics['client_work']]
            results[kind] = metrics, process.get_model_weights(state).trainable
    assert results['shards'][0] == results['tensors'][0]
    for got, expected in zip(results['shards'][1], results['tensors'][1]):
        np.testing.assert_array_equal(got, expected)


def _linear_model_fn():
    from fedlab import models

    return models.keras_model_fn((3, 3, 1), 10, architecture='linear')


# -- LEAF: the fast reader gives the json reader's arrays; the data cache. --


def _leaf_dir(root: pathlib.Path, users: dict[str, list], split_users=None, indent=None) -> pathlib.Path:
    for split in ('train', 'test'):
        chosen = split_users or users
        content = {'users': list(chosen), 'num_samples': [len(chosen[u][1]) for u in chosen],
                   'user_data': {u: {'x': x, 'y': y} for u, (x, y) in chosen.items()}}
        (root / split).mkdir(parents=True, exist_ok=True)
        (root / split / 'a.json').write_text(json.dumps(content, indent=indent))
    return root


def _canonical(k):
    return k / 255.0


@pytest.mark.parametrize('layout', ['leaf', 'other_values', 'indented'])
def test_leaf_reader_gives_the_json_readers_arrays(tmp_path, layout):
    from fedlab.data import leaf

    rng = np.random.default_rng(0)
    users = {f'w{i}': ([[_canonical(int(k)) for k in rng.integers(0, 256, 784)] for _ in range(3)], [1, 5, 61])
             for i in range(3)}
    if layout == 'other_values':
        users['w1'][0][1][5] = 0.123456789  # not a k/255: this writer goes through json, float32
    root = _leaf_dir(tmp_path, users, indent=2 if layout == 'indented' else None)
    fast = leaf.read_file(root / 'train' / 'a.json')
    slow = leaf._read_json(root / 'train' / 'a.json')
    assert [w for w, _, _ in fast] == [w for w, _, _ in slow] == ['w0', 'w1', 'w2']
    table = leaf.leaf_table()
    for (_, a, la), (_, b, lb), (_, (x, _)) in zip(fast, slow, users.items()):
        decoded = [table[p] if p.dtype == np.uint8 else p for p in (a, b)]
        assert np.array_equal(decoded[0], decoded[1]) and np.array_equal(la, lb)
        assert np.array_equal(decoded[0], np.asarray(x, np.float32))
    assert (fast[1][1].dtype == np.float32) == (layout == 'other_values') and fast[0][1].dtype == np.uint8


@needs_sample
def test_leaf_sample_through_the_fast_reader_is_exact():
    from fedlab.data import leaf

    file = sorted((LEAF_SAMPLE / 'test').glob('*.json'))[0]
    fast = leaf._read_leaf_layout(file.read_bytes())
    assert fast is not None  # LEAF's own files take the fast path
    content = json.loads(file.read_text())
    for writer, codes, labels in fast:
        x = np.asarray(content['user_data'][writer]['x'], np.float32)
        assert codes.dtype == np.uint8 and np.array_equal(leaf.leaf_table()[codes], x)
        assert np.array_equal(labels, content['user_data'][writer]['y'])


def _cache_lines(capsys):
    return [line for line in capsys.readouterr().out.splitlines() if line.startswith('leaf:')]


def test_data_cache_is_reused_rebuilt_when_stale_or_corrupt(tmp_path, capsys):
    from fedlab.data import leaf

    rng = np.random.default_rng(1)
    users = {f'w{i}': ([[_canonical(int(k)) for k in rng.integers(0, 256, 784)] for _ in range(2)], [i, 3])
             for i in range(4)}
    root = _leaf_dir(tmp_path / 'leaf', users)
    cache = tmp_path / 'cache'

    def load():
        data = leaf.load_leaf(str(root), array_cache=str(cache))
        return {c: data.train.arrays(c) for c in data.client_ids}

    def same(loaded):
        return loaded.keys() == first.keys() and all(np.array_equal(loaded[c][0], first[c][0]) for c in first)

    first = load()
    assert 'data cache built' in _cache_lines(capsys)[-1]
    assert same(load())
    assert 'read from the data cache' in _cache_lines(capsys)[-1]
    entry = next(p for p in (cache / 'leaf').iterdir() if p.is_dir())
    codes = entry / 'train_codes.bin'
    damaged = bytearray(codes.read_bytes())
    damaged[100] ^= 0xFF
    codes.write_bytes(bytes(damaged))
    assert same(load())
    assert 'rebuilt (train_codes.bin is corrupt)' in _cache_lines(capsys)[-1]
    codes.write_bytes(codes.read_bytes()[:-10])  # truncated
    assert same(load())
    assert 'rebuilt (train_codes.bin is corrupt)' in _cache_lines(capsys)[-1]
    users['w0'] = (users['w0'][0], [7, 7])  # the source changes
    _leaf_dir(root, users)
    assert [int(v) for v in load()['w0'][1]] == [7, 7]
    assert 'rebuilt (the source changed)' in _cache_lines(capsys)[-1]
    assert sorted(p.name for p in (cache / 'leaf').iterdir() if p.is_dir()) == [entry.name]  # no stray entries


def _build_once(cache_dir: str, log: str) -> None:
    from fedlab.data import cache

    def build():
        with open(log, 'a') as f:
            f.write('built\n')
        time.sleep(0.3)  # concurrent jobs that did not wait would build too
        return {'a': np.arange(10)}, {'n': 10}

    store = cache.ArrayCache(cache_dir, 'test', pathlib.Path(cache_dir), {'v': 1})
    arrays, meta = store.load_or_build(build)
    assert np.array_equal(arrays['a'], np.arange(10)) and meta == {'n': 10}


def test_data_cache_concurrent_jobs_build_it_once(tmp_path):
    import multiprocessing

    log = tmp_path / 'log'
    jobs = [multiprocessing.get_context('spawn').Process(target=_build_once, args=(str(tmp_path / 'c'), str(log)))
            for _ in range(3)]
    for job in jobs:
        job.start()
    for job in jobs:
        job.join(timeout=120)
    assert [job.exitcode for job in jobs] == [0, 0, 0]
    assert log.read_text() == 'built\n'


def test_unwritable_data_cache_warns_and_goes_on(tmp_path, capsys):
    from fedlab.data import cache

    blocker = tmp_path / 'file'
    blocker.write_text('not a directory')
    store = cache.ArrayCache(blocker, 'leaf', tmp_path, {})
    arrays, _ = store.load_or_build(lambda: ({'a': np.ones(2)}, {}))
    assert arrays['a'].tolist() == [1.0, 1.0] and store.status.startswith('not cached')
    assert 'cannot use the data cache' in capsys.readouterr().err


def test_emnist_arrays_are_tffs_examples_in_tffs_order(tmp_path):
    from fedlab.data import emnist
    from tests.test_emnist import write_tiny_database

    write_tiny_database(tmp_path)
    for digits_only in (True, False):
        stock = emnist.load_emnist(digits_only=digits_only, cache_dir=str(tmp_path))
        cached = emnist.load_emnist(digits_only=digits_only, cache_dir=str(tmp_path), array_cache=str(tmp_path / 'c'))
        assert cached.client_ids == stock.client_ids and cached.test.client_ids == stock.test.client_ids
        for split in ('train', 'test'):
            for client_id in getattr(stock, split).client_ids:
                a = list(getattr(cached, split).create_tf_dataset_for_client(client_id).as_numpy_iterator())
                b = list(getattr(stock, split).create_tf_dataset_for_client(client_id).as_numpy_iterator())
                assert [int(e['label']) for e in a] == [int(e['label']) for e in b]
                assert all(np.array_equal(x['pixels'], y['pixels']) and x['pixels'].dtype == y['pixels'].dtype
                           for x, y in zip(a, b))


def test_folder_cache_gives_the_decoded_images(tmp_path):
    from PIL import Image

    from fedlab.data import folder

    rng = np.random.default_rng(2)
    for client in ('a', 'b'):
        for label in (0, 1):
            for i in range(3):
                path = tmp_path / 'img' / client / str(label) / f'{i}.png'
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 256, (5, 4), dtype=np.uint8), 'L').save(path)
    plain = folder.load_folder(str(tmp_path / 'img'), test_fraction=0.3, seed=4)
    for _ in range(2):  # built, then read from the cache
        cached = folder.load_folder(str(tmp_path / 'img'), test_fraction=0.3, seed=4, array_cache=str(tmp_path / 'c'))
        for split in ('train', 'test'):
            for client_id in plain.client_ids:
                a, b = getattr(cached, split).arrays(client_id), getattr(plain, split).arrays(client_id)
                assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[0].dtype == np.float32


# -- eval_clients through the run. --


def _column(path, name):
    with open(path) as f:
        return [row[name] for row in csv.DictReader(f)]


def test_eval_clients_samples_every_few_rounds_and_takes_all_at_the_end(tmp_path):
    from fedlab import cli

    cfg = compose_config([*TINY, 'rounds=3', 'eval_clients=2', 'data.num_clients=6'])
    cli.train(cfg, tmp_path / 'run')
    metrics = tmp_path / 'run' / 'metrics.csv'
    assert _column(metrics, 'eval_clients') == ['2', '2', '6']
    examples = [int(v) for v in _column(metrics, 'eval_examples')]
    assert examples[0] == examples[1] < examples[2]  # the same fixed sample, then everyone
    assert list((pathlib.Path(os.environ['FEDLAB_CACHE_DIR']) / 'shards').glob('*-*')) == []  # removed at the end


@pytest.mark.parametrize('overrides,message', [
    (['eval_clients=0'], 'eval_clients=0 is not allowed: eval_clients must be null'),
    (['shard_budget_mb=10'], 'shard_budget_mb=10 is not allowed: shard_budget_mb must be an integer >= 64'),
])
def test_bad_scale_keys_are_refused_before_tensorflow(overrides, message):
    from fedlab.config import schema

    cfg = compose_config(overrides)
    with pytest.raises(FedlabError, match=message):
        schema.check_ranges({k: cfg[k] for k in ('eval_clients', 'shard_budget_mb')})


def test_resuming_ignores_where_files_go():
    from omegaconf import OmegaConf

    def run_identity(overrides):
        return identity.run_identity(OmegaConf.to_container(compose_config(overrides), resolve=True))

    a = run_identity(['shard_dir=/a', 'shard_budget_mb=100', 'data_cache=/x'])
    b = run_identity(['shard_dir=/b', 'shard_budget_mb=200', 'data_cache=null'])
    assert a == b and a != run_identity(['eval_clients=5'])


# -- Slow: a real-size population. --


@pytest.mark.slow
@needs_sample
def test_emnist_with_3400_writers_trains_and_evaluates_everyone_at_the_end(tmp_path):
    from bench import scale
    from fedlab import cli

    scale.write_emnist_database(tmp_path / 'tff' / 'emnist_all.sqlite', 3400, 4, 1)
    cfg = compose_config(['data=emnist', f'data.cache_dir={tmp_path / "tff"}', 'sampling=uniform', 'rounds=3',
                          'eval_every=1', 'eval_clients=100', 'client_epochs=1', 'model=linear'])
    outputs = cli.train(cfg, tmp_path / 'run')
    assert outputs.rounds_completed == 3 and outputs.final_eval['eval']['examples'] == 3400
    assert _column(tmp_path / 'run' / 'metrics.csv', 'eval_clients') == ['100', '100', '3400']


@pytest.mark.slow
@needs_sample
def test_shard_disk_stays_within_budget_over_many_uniform_rounds(tmp_path):
    from fedlab import sampling
    from fedlab.data import leaf
    from fedlab.run import round_inputs

    data = leaf.load_leaf(str(LEAF_SAMPLE))
    budget = 12 << 20  # a quarter of the sample's one-epoch shards
    pipeline = functools.partial(round_inputs.train_pipeline, config=round_inputs.PipelineConfig())
    sampler = sampling.uniform(data.client_ids, 10, seed=0)
    with round_inputs.ClientShards(data.train, pipeline, shard_dir=str(tmp_path), budget_bytes=budget) as inputs:
        ahead = round_inputs.RoundAhead(inputs, sampler, first_round=1, last_round=60)
        for round_num in range(1, 61):
            stems = ahead(sampler(round_num))
            assert all(os.path.exists(f'{stem}.x') for stem in stems)
            assert _du(inputs.store.directory) <= budget and inputs.store.used_bytes <= budget
        ahead.close()
        assert inputs.store.evicted > 0

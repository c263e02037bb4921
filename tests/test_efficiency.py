"""Fewer TFF calls, the same results: several rounds per call (fedlab.fast_paths.round_blocks) gives metrics.csv byte for
byte; packed clients (fedlab.fast_paths.client_packing) the same to 1e-6 relative; interrupts, resume and divergence behave as
without them. Each case runs the plain path (one round and one client per call) and the techniques on tiny data."""

import csv
import functools
import gc
import math
import os
import signal
import time

import numpy as np
import pytest

from fedlab import cli
from fedlab.config import efficiency
from fedlab.errors import FedlabError, TrainingDiverged
from fedlab.fast_paths import round_blocks
from fedlab.record import checkpoints, recorder
from fedlab.run import interrupts, round_loop, worker_processes
from fedlab.tff_internals import resident_state
from tests.conftest import compose_config

# 5 rounds in blocks of 2 (1-2, 3-4 and the last, 5, alone: it is evaluated) with 3 of 6 clients a round.
BASE = ['data.num_clients=6', 'clients_per_round=3', 'rounds=5', 'eval_every=0', 'checkpoint_every=0',
        'client_epochs=1']  # fmt: skip
PLAIN = ['efficiency.rounds_per_call=1', 'efficiency.pack_clients=false']
BLOCKS = ['efficiency.rounds_per_call=2', 'efficiency.pack_clients=false']
PACKED = ['efficiency.rounds_per_call=1', 'efficiency.pack_clients=true']
RESIDENT = ['efficiency.rounds_per_call=1', 'efficiency.pack_clients=false', 'efficiency.resident_state=true']
BOTH = ['efficiency.rounds_per_call=2', 'efficiency.pack_clients=true', 'efficiency.resident_state=true']
SCHEDULES = ['client_lr_schedule=exponential_decay', 'client_lr_schedule.decay_rounds=2',
             'server_lr_schedule=inverse_sqrt']  # fmt: skip
# Without noise (TFF draws DP noise unseeded: two plain runs differ), but clipped to an adaptive norm.
DP = ['aggregator=dp', 'sampling=poisson', 'aggregator.noise_multiplier=0', 'aggregator.clipped_count_stddev=0']

# (model, aggregator, sampler, more overrides). The default suite: a learning-rate schedule with an adaptive server
# optimizer (its hyper-parameters are set in each round of a block), and DP with Poisson sampling; the slow one has
# every model x aggregator x sampler and every algorithm.
DEFAULT_CASES = [
    ('linear', 'mean', 'poisson', ['server_optimizer=adam', *SCHEDULES]),
    ('linear', 'dp', 'poisson', DP[2:]),  # slow
]
ALGORITHM_CASES = [
    ('linear', 'mean', 'uniform', ['algorithm=fedprox', 'algorithm.mu=0.1']),
    ('linear', 'mean', 'fixed', ['algorithm=fedsgd']),
    ('linear', 'mean', 'uniform', ['algorithm=mime_lite']),
    ('simple_cnn', 'mean', 'poisson', ['algorithm=fedsgd', 'server_optimizer=yogi', *SCHEDULES[2:]]),
]
MODELS = ['linear', 'custom', 'fedavg_cnn', 'simple_cnn', 'cifar_cnn']
SLOW_CASES = [
    (model, aggregator, sampler, [])
    for model in MODELS
    for aggregator in ('mean', 'compression')
    for sampler in ('fixed', 'uniform', 'poisson')
] + ALGORITHM_CASES


def _overrides(model, aggregator, sampler, more):
    base = [o for o in BASE if not (o.startswith('client_epochs') and 'algorithm=fedsgd' in more)]  # it has none
    return [*base, f'model={model}', f'aggregator={aggregator}', f'sampling={sampler}', *more]


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def _assert_close(plain_rows, rows, rel=1e-6):
    assert [r['round'] for r in rows] == [r['round'] for r in plain_rows]
    for plain, row in zip(plain_rows, rows):
        assert plain.keys() == row.keys()
        for key, value in plain.items():
            try:
                expected, got = float(value), float(row[key])
            except ValueError:
                assert row[key] == value, key
                continue
            if math.isnan(expected) and math.isnan(got):
                continue
            # A spread over clients (`_std`) is a difference of the clients' values: its rounding is their mean's.
            scale = abs(float(plain.get(key[: -len('_std')] + '_mean', value))) if key.endswith('_std') else 0.0
            assert got == pytest.approx(expected, rel=rel, abs=1e-9 + rel * scale), key


def _check(tmp_path, overrides, *, pack: bool, resident: bool):
    cli.train(compose_config([*overrides, *PLAIN]), tmp_path / 'plain')
    cli.train(compose_config([*overrides, *BLOCKS]), tmp_path / 'blocks')
    plain = (tmp_path / 'plain' / 'metrics.csv').read_text()
    assert _blocks_formed(tmp_path / 'blocks'), 'no two rounds ran in one call: the case tests nothing'
    if _reproducible(overrides):
        assert (tmp_path / 'blocks' / 'metrics.csv').read_text() == plain
    else:
        _assert_same_where_reproducible(
            _rows(tmp_path / 'plain' / 'metrics.csv'), _rows(tmp_path / 'blocks' / 'metrics.csv')
        )
    assert (tmp_path / 'blocks' / 'clients.csv').read_text() == (tmp_path / 'plain' / 'clients.csv').read_text()
    if resident:  # the state kept in the worker, fetched at round 5 (evaluated, last) and when the count changes
        cli.train(compose_config([*overrides, *RESIDENT]), tmp_path / 'resident')
        if _reproducible(overrides):
            assert (tmp_path / 'resident' / 'metrics.csv').read_text() == plain
    if pack:  # all techniques together
        cli.train(compose_config([*overrides, *BOTH]), tmp_path / 'both')
        _assert_close(_rows(tmp_path / 'plain' / 'metrics.csv'), _rows(tmp_path / 'both' / 'metrics.csv'))


def _reproducible(overrides) -> bool:
    """Whether the plain path itself gives the same metrics.csv twice: not with compression on a model whose
    tensors it quantizes (over 20,000 values; measured on cifar_cnn: two plain runs differ by ~1e-7, TFF's
    federated_aggregate summing clients as they finish, and a quantization step may then flip: fedavg_cnn's
    accuracy by one example in 658, more than 5e-3 in some runs). There blocks are compared where the plain
    path is reproducible: see `_assert_same_where_reproducible`."""
    large = any(o in overrides for o in ('model=fedavg_cnn', 'model=simple_cnn', 'model=cifar_cnn'))
    return not (large and 'aggregator=compression' in overrides)


def _assert_same_where_reproducible(plain_rows, rows):
    """Round 1's training metrics (before any aggregation), and every round's clients, examples, batches and
    ledger bits, exactly."""
    assert [r['round'] for r in rows] == [r['round'] for r in plain_rows]
    for plain, row in zip(plain_rows, rows):
        exact = [k for k in plain if k in ('clients', 'train_examples', 'train_batches') or k.endswith('_bits')]
        if plain['round'] == '1':
            exact += [k for k in plain if k.startswith('train_')]
        assert {k: row[k] for k in exact} == {k: plain[k] for k in exact}


def _blocks_formed(run_dir) -> bool:
    """Whether two rounds shared a TFF call (a block's rounds are timed together, each its share)."""
    seconds = [r['train_seconds'] for r in _rows(run_dir / 'timing.csv')]
    return any(a == b for a, b in zip(seconds, seconds[1:]))


def _packable(aggregator, more):
    return aggregator == 'mean' and not any(o in ('algorithm=mime_lite',) for o in more)


def _id(case):
    model, aggregator, sampler, more = case
    return '-'.join([model, aggregator, sampler, *(o.partition('=')[2] for o in more if o.startswith('algorithm='))])


@pytest.mark.parametrize(
    'model,aggregator,sampler,more',
    [pytest.param(*c, id=_id(c), marks=pytest.mark.slow if c[1] == 'dp' else ()) for c in DEFAULT_CASES],
)
def test_blocks_byte_identical_and_packed_within_1e6(model, aggregator, sampler, more, tmp_path):
    _check(tmp_path, _overrides(model, aggregator, sampler, more), pack=_packable(aggregator, more),
           resident=aggregator != 'dp')  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize('model,aggregator,sampler,more', SLOW_CASES, ids=[_id(c) for c in SLOW_CASES])
def test_every_model_aggregator_and_sampler(model, aggregator, sampler, more, tmp_path):
    if model == 'cifar_cnn':  # 32x32x3 images: a tiny CIFAR-10 cache in the real format
        from tests.test_cifar10 import write_tiny_cache

        write_tiny_cache(tmp_path / 'keras')
        more = [*more, 'data=cifar10', f'data.cache_dir={tmp_path / "keras"}', 'data.partition=iid']
    _check(tmp_path, _overrides(model, aggregator, sampler, more), pack=_packable(aggregator, more), resident=True)


@pytest.mark.slow
@pytest.mark.parametrize('client_inputs', ['shards', 'tensors'])
def test_packed_clients_match_on_both_fast_paths(client_inputs, tmp_path):
    overrides = [*BASE, 'rounds=2', 'eval_every=1', f'client_inputs={client_inputs}', 'sampling=uniform']
    cli.train(compose_config([*overrides, *PLAIN]), tmp_path / 'plain')
    cli.train(compose_config([*overrides, *PACKED]), tmp_path / 'packed')
    _assert_close(_rows(tmp_path / 'plain' / 'metrics.csv'), _rows(tmp_path / 'packed' / 'metrics.csv'))


def test_a_non_finite_client_is_dropped_as_unpacked():
    """One client's pixels are NaN: its update is non-finite, so it counts with weight 0 and no metrics, packed in a
    group with a finite client exactly as alone."""
    from fedlab import models
    from fedlab.algorithms import fedavg, optimizers
    from fedlab.data import federated_data
    from fedlab.fast_paths import client_packing
    from fedlab.run import round_inputs

    rng = np.random.default_rng(0)
    arrays = {
        f'c{i}': (rng.random((12, 8, 8, 1), np.float32), rng.integers(0, 10, 12).astype(np.int32)) for i in range(4)
    }
    arrays['c1'][0][3] = np.nan
    data = federated_data.client_data_from_arrays(arrays)
    pipeline = functools.partial(round_inputs.train_pipeline, config=round_inputs.PipelineConfig(epochs=1))
    model_fn = models.keras_model_fn((8, 8, 1), 10, architecture='linear')
    ids = sorted(arrays)
    with round_inputs.ClientShards(data, pipeline) as shards:
        outputs = []
        for pack in (False, True):
            process = fedavg.build_fed_avg(model_fn, optimizers.sgd(0.1), optimizers.sgd(1.0), pack_clients=pack)
            inputs = client_packing.PackedInputs(shards, groups=2) if pack else shards
            outputs.append(process.next(process.initialize(), inputs(ids)))
    plain, packed = (o.metrics['client_work']['train'] for o in outputs)
    assert plain['num_examples'] == packed['num_examples'] == 36  # the NaN client's 12 are not reported
    assert packed['loss'] == pytest.approx(plain['loss'], rel=1e-6)
    assert np.isfinite(plain['loss'])
    weights = [process.get_model_weights(o.state).trainable for o in outputs]
    for a, b in zip(*(w for w in weights)):
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-7)


def _tiny_federation(num_clients=4):
    from fedlab.data import federated_data
    from fedlab.run import round_inputs

    rng = np.random.default_rng(0)
    arrays = {
        f'c{i}': (rng.random((10 + 3 * i, 8, 8, 1), np.float32), rng.integers(0, 10, 10 + 3 * i).astype(np.int32))
        for i in range(num_clients)
    }
    pipeline = functools.partial(round_inputs.train_pipeline, config=round_inputs.PipelineConfig(epochs=1))
    return round_inputs.ClientShards(federated_data.client_data_from_arrays(arrays), pipeline), sorted(arrays)


@pytest.mark.parametrize('algorithm', ['fedavg', 'fedprox', 'fedsgd'])
def test_the_fused_packed_round_is_the_composed_one_bit_for_bit(algorithm):
    """fedlab.algorithms.templates.packed_round: one broadcast, one map, one sum; the composed round's types, state and
    metrics, bitwise (server momentum: a finalizer with state)."""
    import tensorflow as tf
    import tensorflow_federated as tff

    from fedlab import models
    from fedlab.algorithms import optimizers
    from fedlab.algorithms.templates import client_work, composition
    from fedlab.fast_paths import client_packing

    model_fn = models.keras_model_fn((8, 8, 1), 10, architecture='linear')
    inputs = composition.fast_inputs('shards', 4, packed=True)
    if algorithm == 'fedsgd':
        work = client_work.build_gradient_client_work(model_fn, inputs, weighting='num_examples')
    else:
        proximal = 0.1 if algorithm == 'fedprox' else 0.0
        work = client_work.build_model_delta_client_work(
            model_fn, optimizers.sgd(0.1), inputs, weighting='num_examples', proximal_strength=proximal
        )
    assert work.group_update is not None
    mean, server_optimizer = tff.aggregators.MeanFactory(), optimizers.sgd(1.0, 0.9)
    build = functools.partial(composition.compose, model_fn, model_aggregator=mean, server_optimizer=server_optimizer)
    fused, composed = build(work), build(work._replace(group_update=None))
    assert fused.next.type_signature == composed.next.type_signature
    shards, ids = _tiny_federation()
    with shards:
        groups = client_packing.PackedInputs(shards, groups=2)(ids)
        states = [fused.initialize(), composed.initialize()]
        for _ in range(3):
            outputs = [fused.next(states[0], groups), composed.next(states[1], groups)]
            assert repr(outputs[0].metrics) == repr(outputs[1].metrics)
            states = [o.state for o in outputs]
    for a, b in zip(tf.nest.flatten(states[0]), tf.nest.flatten(states[1])):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize('resident', [False, True])
def test_a_blocks_metrics_come_back_as_one_vector_with_their_types(resident):
    """round_blocks.MetricsVector: every round's metrics of a block in one float64 vector, decoded to the values,
    containers and dtypes `process.next` returns."""
    from fedlab import models
    from fedlab.algorithms import fedavg, optimizers
    from fedlab.fast_paths import client_packing

    model_fn = models.keras_model_fn((8, 8, 1), 10, architecture='linear')
    process = fedavg.build_fed_avg(model_fn, optimizers.sgd(0.1), optimizers.sgd(1.0), pack_clients=True, batch_size=4)
    shards, ids = _tiny_federation()
    with shards:
        groups = client_packing.PackedInputs(shards, groups=2)(ids)
        state, expected = process.initialize(), []
        for _ in range(3):
            output = process.next(state, groups)
            state, expected = output.state, [*expected, output.metrics]
        blocks = round_blocks.RoundBlocks(process, resident=resident)
        _, metrics = blocks.next(process.initialize(), [groups] * 3)
    assert repr(metrics) == repr(expected)
    train = metrics[2]['client_work']['train']
    assert isinstance(train['num_examples'], np.int64) and isinstance(train['loss'], np.float32)


def test_a_metric_of_another_dtype_keeps_the_plain_results():
    import tensorflow_federated as tff

    def metrics(**dtypes):
        return tff.types.StructWithPythonType([(k, tff.TensorType(v)) for k, v in dtypes.items()], dict)

    assert round_blocks.MetricsVector.of(metrics(count=np.int64, loss=np.float32)) is not None
    assert round_blocks.MetricsVector.of(metrics(count=np.int64, name=np.str_)) is None
    assert round_blocks.MetricsVector.of(metrics()) is None
    assert round_blocks.MetricsVector.of(tff.StructType([('count', tff.TensorType(np.int64))])) is None  # no containers


@pytest.mark.parametrize('threads,expected', [(1, '1'), (None, 'unset')])
def test_the_worker_is_started_with_the_intra_op_threads(threads, expected, monkeypatch):
    """efficiency.intra_op_threads reaches the environment of the worker TFF starts (through fedlab's Popen)."""
    import subprocess

    from tensorflow_federated.python.core.impl.executor_stacks import executor_factory

    monkeypatch.delenv('TF_NUM_INTRAOP_THREADS', raising=False)
    worker_processes.set_intra_op_threads(threads)
    try:
        child = executor_factory.subprocess.Popen(
            ['sh', '-c', 'echo ${TF_NUM_INTRAOP_THREADS:-unset}'], stdout=subprocess.PIPE, text=True
        )
        assert child.communicate()[0].strip() == expected
    finally:
        worker_processes.set_intra_op_threads(None)


def _interrupted_in_a_call(overrides, run_dir, monkeypatch, *, call: int, signals: int,
                           method=(round_blocks.RoundBlocks, 'next')) -> None:  # fmt: skip
    """Runs cli.train with `signals` SIGINTs sent as `method`'s `call`-th call starts (RoundBlocks.next: a TFF
    call; the first signal asks to stop after it, a second stops at once); the run must end in KeyboardInterrupt."""
    owner, name = method
    original = getattr(owner, name)
    calls = []

    def interrupted(self, *args, **kwargs):
        calls.append(True)
        if len(calls) == call:
            for _ in range(signals):
                os.kill(os.getpid(), signal.SIGINT)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(owner, name, interrupted)
    try:
        with pytest.raises(KeyboardInterrupt):
            cli.train(compose_config(overrides), run_dir)
    finally:
        interrupts._State.received.clear()  # as the CLI's handlers do when the command ends
        monkeypatch.setattr(owner, name, original)


@pytest.mark.slow  # two runs of 6 rounds; blocks stay byte-identical in the default suite
def test_interrupt_inside_a_block_stops_after_it_and_resumes_to_the_same_tables(tmp_path, monkeypatch, capfd):
    overrides = [*BASE, 'rounds=6', 'checkpoint_every=0', 'sampling=uniform', *BOTH]
    cli.train(compose_config(overrides), tmp_path / 'uninterrupted')

    _interrupted_in_a_call(overrides, tmp_path / 'run', monkeypatch, call=2, signals=1)  # the block of rounds 3-4
    assert 'stopping after this block of rounds (3-4)' in capfd.readouterr().err
    assert [int(r['round']) for r in _rows(tmp_path / 'run' / 'metrics.csv')] == [1, 2, 3, 4]
    cli.train(compose_config(overrides), tmp_path / 'run')  # resumes after round 4
    for table in ('metrics.csv', 'clients.csv'):
        assert (tmp_path / 'run' / table).read_text() == (tmp_path / 'uninterrupted' / table).read_text()


@pytest.mark.parametrize(
    'method,complete',
    [((round_blocks.RoundBlocks, 'next'), 2), ((round_loop.RoundLoop, '_finish_round'), 3)],
    ids=['training', 'recording'],
)
def test_a_second_ctrl_c_in_round_3_checkpoints_the_last_round_kept_in_tffs_worker(
    method, complete, tmp_path, monkeypatch, capfd
):
    """Two signals while round 3 trains (or is recorded) with the state in TFF's worker: the second stops at once,
    and the stop's checkpoint is the last complete round's, fetched from the worker (it was once missing: the run
    resumed from its start)."""
    overrides = [*BASE, 'rounds=4', *RESIDENT]
    _interrupted_in_a_call(overrides, tmp_path / 'run', monkeypatch, call=3, signals=2, method=method)
    assert 'stopping after this round' in capfd.readouterr().err
    assert [int(r['round']) for r in _rows(tmp_path / 'run' / 'metrics.csv')] == list(range(1, complete + 1))
    assert checkpoints.CheckpointStore(tmp_path / 'run' / 'checkpoints').rounds() == [complete]
    cli.train(compose_config(overrides), tmp_path / 'run')  # resumes after the last complete round
    cli.train(compose_config(overrides), tmp_path / 'uninterrupted')
    for table in ('metrics.csv', 'clients.csv'):
        assert (tmp_path / 'run' / table).read_text() == (tmp_path / 'uninterrupted' / table).read_text()


@pytest.mark.slow  # two runs; make test stays under 10 minutes
def test_divergence_in_a_block_stops_at_the_same_round_as_without_blocks(tmp_path):
    overrides = [*BASE, 'rounds=4', 'client_lr=1e30', 'server_lr=1e30', 'checkpoint_every=2']
    messages = []
    for name, setting in (('plain', PLAIN), ('blocks', ['efficiency.rounds_per_call=4']), ('resident', RESIDENT)):
        with pytest.raises(TrainingDiverged) as diverged:
            cli.train(compose_config([*overrides, *setting]), tmp_path / name)
        messages.append(str(diverged.value))
    assert messages[0] == messages[1] == messages[2] and 'training diverged in round' in messages[0]
    for name in ('blocks', 'resident'):
        assert (tmp_path / name / 'metrics.csv').read_text() == (tmp_path / 'plain' / 'metrics.csv').read_text()


# The dead worker's values are disposed of (over gRPC, failing) when Python collects them: expected here.
@pytest.mark.slow
@pytest.mark.filterwarnings('ignore::pytest.PytestUnraisableExceptionWarning')
def test_a_killed_worker_is_replayed_to_the_same_metrics(tmp_path, monkeypatch):
    """TFF restarts a worker that died, without the values it held: the state kept there is rebuilt by replaying
    the calls since the last state Python holds (fetched every REPLAY_CALLS calls, 3 here)."""
    overrides = [*BASE, 'rounds=8']
    cli.train(compose_config([*overrides, *PLAIN]), tmp_path / 'plain')
    cli.train(compose_config([*overrides, *BOTH]), tmp_path / 'packed_before')  # an executor for 2 client groups
    monkeypatch.setattr(resident_state, 'REPLAY_CALLS', 3)
    replayed, killed = [], []
    original_replay, original_record = resident_state.ResidentCaller._replay, recorder.RunRecorder.on_round_end

    def replay(self):
        replayed.append(self.calls_since_fetch)
        return original_replay(self)

    def record(self, result, state):
        original_record(self, result, state)
        if result.round_num == 4 and not killed:  # rounds 1-3 fetched after round 3; round 4's state is in the worker
            killed.extend(pid for pid in worker_processes.child_workers() if _alive(pid))
            for pid in killed:
                os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while any(_alive(pid) for pid in killed) and time.monotonic() < deadline:
                time.sleep(0.05)

    monkeypatch.setattr(resident_state.ResidentCaller, '_replay', replay)
    monkeypatch.setattr(recorder.RunRecorder, 'on_round_end', record)
    cli.train(compose_config([*overrides, *RESIDENT]), tmp_path / 'resident')
    assert len(killed) == 1 and replayed == [2], (killed, replayed)  # rounds 4-5 replayed from round 3's state
    assert (tmp_path / 'resident' / 'metrics.csv').read_text() == (tmp_path / 'plain' / 'metrics.csv').read_text()
    # The 2-group executor made before the kill still points at the dead worker: its first call falls back too.
    cli.train(compose_config([*overrides, *BOTH]), tmp_path / 'packed_after')
    assert replayed[1:] == [1]
    after = (tmp_path / 'packed_after' / 'metrics.csv').read_text()
    assert after == (tmp_path / 'packed_before' / 'metrics.csv').read_text()
    gc.collect()  # the dead worker's values are disposed of here, under this test's warning filter


def _alive(pid: int) -> bool:
    try:
        with open(f'/proc/{pid}/stat') as f:
            return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
    except OSError:
        return False


def test_plan_ends_blocks_where_the_state_is_needed_and_the_client_count_changes():
    counts = {1: 3, 2: 3, 3: 3, 4: 2, 5: 2, 6: 0, 7: 2, 8: 2, 9: 2}

    def sampler(round_num):
        return [f'c{i}' for i in range(counts[round_num])]

    def blocks(start, *, needed=(), per_call=10):
        planned = round_blocks.plan(
            start, 9, sampler, rounds_per_call=per_call, state_needed_after=lambda r: r in needed
        )
        return [r.round_num for r in planned]

    assert blocks(1) == [1, 2, 3]  # the client count changes after round 3
    assert blocks(1, needed={2}) == [1, 2]
    assert blocks(1, per_call=2) == [1, 2]
    assert blocks(4) == [4, 5] and blocks(6) == [6]  # a round without clients is a block of its own
    assert blocks(7) == [7, 8, 9]  # the last round


@pytest.mark.parametrize(
    'config,expected',
    [
        ({'efficiency': {'rounds_per_call': 0}}, 'efficiency.rounds_per_call=0 is not allowed'),
        ({'efficiency': {'pack_clients': 'yes'}}, 'efficiency.pack_clients=yes is not allowed'),
        ({'efficiency': {'rounds': 2}}, 'efficiency.rounds is not a key'),
        ({'efficiency': {'intra_op_threads': 0}}, 'efficiency.intra_op_threads=0 is not allowed'),
        ({'efficiency': {'intra_op_threads': 'all'}}, 'efficiency.intra_op_threads=all is not allowed'),
    ],
)
def test_bad_efficiency_values_are_refused(config, expected):
    with pytest.raises(FedlabError, match=expected):
        efficiency.settings(config)


def test_packing_falls_back_where_it_is_not_linear_and_says_why():
    def settings(**config):
        return efficiency.settings({'efficiency': {'rounds_per_call': 4, 'pack_clients': True}, **config})

    mean = {'_target_': 'fedlab.aggregators.mean'}
    fedavg = {'_target_': 'fedlab.algorithms.fedavg.build_fed_avg'}
    on = settings(aggregator=mean, algorithm=fedavg, client_inputs='shards')
    assert on.pack_clients and on.rounds_per_call == 4 and not on.notes
    off = settings(aggregator={'_target_': 'fedlab.aggregators.compression'}, algorithm=fedavg)
    assert not off.pack_clients and 'aggregator=compression' in off.notes[0] and off.rounds_per_call == 4
    mime = settings(aggregator=mean, algorithm={'_target_': 'fedlab.algorithms.mime_lite.build_mime_lite'})
    assert not mime.pack_clients and 'algorithm=mime_lite' in mime.notes[0]
    dp = efficiency.settings(
        {'efficiency': {'resident_state': True}, 'aggregator': {'_target_': 'fedlab.aggregators.dp'}}
    )
    assert not dp.resident_state and 'DP' in dp.notes[0]
    remote = settings(aggregator=mean, algorithm=fedavg, runtime={'_target_': 'fedlab.runtime.RemoteRuntime'})
    assert (remote.rounds_per_call, remote.pack_clients) == (1, False) and 'runtime=remote' in remote.notes[0]
    threads = efficiency.settings({'efficiency': {'intra_op_threads': 1}})
    assert threads.intra_op_threads == 1 and 'intra_op_threads=1' in threads.describe()
    remote_threads = efficiency.settings(
        {'efficiency': {'intra_op_threads': 1}, 'runtime': {'_target_': 'fedlab.runtime.RemoteRuntime'}}
    )
    assert remote_threads.intra_op_threads is None and 'TF_NUM_INTRAOP_THREADS' in remote_threads.notes[-1]

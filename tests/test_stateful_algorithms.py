"""SCAFFOLD, FedDyn and FedNova: the checks that say their maths is right (each reduces to FedAvg where the papers
say it does, SCAFFOLD's server control variate is the mean of every client's), the same training on every
client_inputs, the ledger's bits, the per-client state store, and runs that are interrupted and resume."""

import functools
import json
import pathlib

import numpy as np
import pytest

from fedlab import cli
from fedlab.algorithms import optimizers
from fedlab.data import federated_data
from fedlab.record import ledger
from fedlab.run import client_states, evaluation, round_inputs
from tests.conftest import TINY, compose_config
from tests.test_algorithms import BATCH, IMAGE, METRICS_BITS, NUM_WEIGHTS, _model_fn

SIZES = {'c0': 9, 'c1': 13, 'c2': 6}  # unequal: FedNova's steps differ
EQUAL = {'c0': 8, 'c1': 8, 'c2': 8}  # equal: every client takes the same steps


@functools.cache
def _data(sizes: tuple):
    rng = np.random.default_rng(0)
    arrays = {c: (rng.random((n, *IMAGE), np.float32), rng.integers(0, 10, n).astype(np.int32)) for c, n in sizes}
    return federated_data.client_data_from_arrays(arrays)


def _build(algorithm: str, client_inputs: str = 'shards', *, alpha: float = 0.1, client_momentum: float = 0.0):
    from fedlab.algorithms import fedavg, feddyn, fednova, scaffold

    model_fn, client, server = _model_fn(), optimizers.sgd(0.1, client_momentum), optimizers.sgd(1.0)
    common = dict(client_inputs=client_inputs, batch_size=BATCH)
    if algorithm == 'fedavg':
        return fedavg.build_fed_avg(model_fn, client, server, **common)
    if algorithm == 'scaffold':
        return scaffold.build_scaffold(model_fn, client, server, num_clients=4, **common)
    if algorithm == 'feddyn':
        return feddyn.build_fed_dyn(model_fn, client, server, alpha=alpha, num_clients=4, **common)
    return fednova.build_fed_nova(model_fn, client, server, **common)


def _train(process, tmp_path, client_inputs: str = 'shards', *, rounds: int = 3, sizes=SIZES, budget=10**6):
    """Each round's train metrics, the final trainable weights, the state and the client store (None: stateless).
    Every round trains c0, c1, c2 of 4 clients (c3 never trains: SCAFFOLD's c averages it in as zeros)."""
    config = round_inputs.PipelineConfig(epochs=2, batch_size=BATCH, shuffle_buffer=8, seed=3)
    pipeline = functools.partial(round_inputs.train_pipeline, config=config)
    inputs = round_inputs.CLIENT_INPUTS[client_inputs](_data(tuple(sizes.items())), pipeline)
    store = rounds_ = None
    if hasattr(process, 'initial_client_state'):
        store = client_states.ClientStateStore(tmp_path, process.initial_client_state, budget_bytes=budget)
        store.start(None)
        rounds_ = client_states.StatefulRounds(store)
    ids = list(sizes)
    try:
        state, metrics = process.initialize(), []
        for round_num in range(1, rounds + 1):
            data = inputs(ids)
            output = rounds_.next(process, state, round_num, ids, data) if store else process.next(state, data)
            state = output.state
            metrics.append(evaluation.rename_metrics(output.metrics['client_work']['train']))
        return metrics, process.get_model_weights(state).trainable, state, store
    finally:
        if isinstance(inputs, round_inputs.ClientShards):
            inputs.close()


def _same_weights(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a, b))


def test_feddyn_with_alpha_0_is_fedavg_to_the_bit(tmp_path):
    fedavg_metrics, fedavg_weights, _, _ = _train(_build('fedavg'), tmp_path / 'a')
    metrics, weights, _, _ = _train(_build('feddyn', alpha=0.0), tmp_path / 'b')
    assert metrics == fedavg_metrics
    assert _same_weights(weights, fedavg_weights)
    other, _, _, _ = _train(_build('feddyn', alpha=0.1), tmp_path / 'c')
    assert other[1] != fedavg_metrics[1]  # (and with alpha > 0 it is not)


def test_scaffold_first_round_is_fedavgs_and_c_is_the_mean_of_every_clients_c_i(tmp_path):
    fedavg_metrics, _, _, _ = _train(_build('fedavg'), tmp_path / 'a', rounds=2)
    metrics, _, state, store = _train(_build('scaffold'), tmp_path / 'b', rounds=2)
    assert metrics[0] == fedavg_metrics[0]  # all control variates zero: FedAvg's round
    assert metrics[1] != fedavg_metrics[1]
    control = state.client_work['control']
    every = store.states(['c0', 'c1', 'c2', 'c3'])  # c3 never trained: zeros
    assert not np.any(every[3][0])
    for k, c in enumerate(control):
        np.testing.assert_allclose(c, np.mean([s[k] for s in every], axis=0), atol=1e-7)
    assert any(np.any(c) for c in control)


@pytest.mark.parametrize('client_momentum', [0.0, pytest.param(0.5, marks=pytest.mark.slow)])
def test_fednova_with_equal_steps_is_fedavg_and_with_unequal_steps_is_not(client_momentum, tmp_path):
    from fedlab.algorithms import fedavg

    fedavg_process = fedavg.build_fed_avg(
        _model_fn(), optimizers.sgd(0.1, client_momentum), optimizers.sgd(1.0), batch_size=BATCH
    )
    nova = _build('fednova', client_momentum=client_momentum)
    for sizes, equal in ((EQUAL, True), (SIZES, False)):
        expected = _train(fedavg_process, tmp_path / 'a', sizes=sizes)
        got = _train(nova, tmp_path / 'b', sizes=sizes)
        weights_close = all(np.allclose(a, b, rtol=1e-5, atol=1e-6) for a, b in zip(got[1], expected[1]))
        assert weights_close == equal, sizes
        if equal:
            for a, b in zip(got[0], expected[0]):
                assert a == pytest.approx(b, rel=1e-5)


@pytest.mark.parametrize(
    'algorithm',
    [pytest.param('scaffold', marks=pytest.mark.slow), 'feddyn', pytest.param('fednova', marks=pytest.mark.slow)],
)
def test_every_client_inputs_trains_the_same(algorithm, tmp_path):
    """TFF has no builder for these: its datasets (client_inputs=dataset) go through fedlab's client work too."""
    shards = _train(_build(algorithm, 'shards'), tmp_path / 'shards')
    for client_inputs in ('dataset', 'tensors'):
        other = _train(_build(algorithm, client_inputs), tmp_path / client_inputs, client_inputs)
        for a, b in zip(other[0], shards[0]):
            assert a == pytest.approx(b, rel=1e-5, abs=1e-6), client_inputs
        for a, b in zip(other[1], shards[1]):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=client_inputs)


def test_the_ledger_counts_scaffolds_control_variates_both_ways():
    fedavg_cost = ledger.measure(_build('fedavg'))
    model_bits = 32 * NUM_WEIGHTS
    cost = ledger.measure(_build('scaffold'))
    # Down: the model and c (and SGD's learning rate); up: the delta, its weight, the metrics and c_i+ - c_i.
    assert cost.bits_per_client(ledger.DOWNLINK) == 2 * model_bits + 32
    assert cost.bits_per_client(ledger.UPLINK) == 2 * model_bits + 32 + METRICS_BITS
    assert cost.bits_per_client(ledger.DOWNLINK) - fedavg_cost.bits_per_client(ledger.DOWNLINK) == model_bits
    assert cost.bits_per_client(ledger.UPLINK) - fedavg_cost.bits_per_client(ledger.UPLINK) == model_bits
    # FedDyn: FedAvg's bits and the round's client count (a 1 per client, summed); FedNova: and each client's
    # ||a_i||_1 with its weight (TFF's weighted mean sends both).
    for algorithm, extra in (('feddyn', 32), ('fednova', 64)):
        other = ledger.measure(_build(algorithm))
        assert other.bits_per_client(ledger.DOWNLINK) == fedavg_cost.bits_per_client(ledger.DOWNLINK)
        assert other.bits_per_client(ledger.UPLINK) == fedavg_cost.bits_per_client(ledger.UPLINK) + extra, algorithm


def test_the_store_keeps_states_beyond_its_memory_budget_and_indexes_the_round_before(tmp_path):
    initial = (np.zeros((2, 3), np.float32), np.zeros(4, np.float32))
    store = client_states.ClientStateStore(tmp_path, initial, budget_bytes=2 * 40)  # two states in memory
    store.start(None)
    made = {f'c{i}': (np.full((2, 3), i, np.float32), np.arange(4, dtype=np.float32) + i) for i in range(5)}
    store.put(1, list(made), list(made.values()))
    for client, state in zip(made, store.states(list(made))):  # three of them read back from their files
        assert all(np.array_equal(a, b) for a, b in zip(state, made[client]))
    assert all(not np.any(a) for a in store.states(['never'])[0])
    first = store.index_as_of(1)
    store.put(2, ['c0', 'new'], [made['c4'], made['c3']])
    assert store.index_as_of(1) == first  # a stop between training round 2 and recording it checkpoints round 1
    assert store.index_as_of(2)['c0'].endswith('.r2.npy') and 'new' in store.index_as_of(2)
    store.collect_garbage([first])
    assert {p.name for p in (tmp_path / client_states.DIRECTORY).iterdir()} == (
        set(first.values()) | set(store.index_as_of(2).values())
    )
    resumed = client_states.ClientStateStore(tmp_path, initial, budget_bytes=0)
    resumed.start(first)
    assert np.array_equal(resumed.states(['c0'])[0][1], made['c0'][1])
    assert all(not np.any(a) for a in resumed.states(['new'])[0])


class _Injected(KeyboardInterrupt):
    pass


def _rows(path: pathlib.Path) -> bytes:
    return path.read_bytes()


STATEFUL = [*TINY, 'rounds=4', 'checkpoint_every=2', 'sampling=uniform', 'data.num_clients=8', 'eval_every=2']


def test_a_scaffold_run_interrupted_after_training_a_round_resumes_to_the_uninterrupted_run(tmp_path, monkeypatch):
    """A stop after round 3 trained (its clients' new states kept) but before it was recorded: the checkpoint of
    round 2 must not see round 3's states, and the resumed run must equal an uninterrupted one."""
    overrides = [*STATEFUL, 'algorithm=scaffold', 'checkpoint_every=0']
    cli.train(compose_config(overrides), tmp_path / 'whole')

    from fedlab.record import recorder

    original = recorder.RunRecorder.on_round_end

    def interrupted(self, result, state):
        if result.round_num == 3:
            raise _Injected()
        return original(self, result, state)

    with monkeypatch.context() as patch:
        patch.setattr(recorder.RunRecorder, 'on_round_end', interrupted)
        with pytest.raises(_Injected):
            cli.train(compose_config(overrides), tmp_path / 'cut')
    saved = json.loads((tmp_path / 'cut' / 'checkpoints' / 'round_2' / client_states.INDEX_FILE).read_text())
    assert saved and all(name.endswith(('.r1.npy', '.r2.npy')) for name in saved.values())
    cli.train(compose_config(overrides), tmp_path / 'cut')
    for table in ('metrics.csv', 'clients.csv'):
        assert _rows(tmp_path / 'cut' / table) == _rows(tmp_path / 'whole' / table), table


def test_feddyn_alpha_0_run_has_fedavgs_losses_and_accuracies(tmp_path):
    import csv

    columns = {}
    # fedavg unpacked: packing (FedAvg's default) sums the same updates in another order (docs/performance.md)
    for algorithm, extra in (('fedavg', ['efficiency.pack_clients=false']), ('feddyn', ['algorithm.alpha=0'])):
        cli.train(compose_config([*STATEFUL, f'algorithm={algorithm}', *extra]), tmp_path / algorithm)
        with open(tmp_path / algorithm / 'metrics.csv') as f:
            rows = list(csv.DictReader(f))
        columns[algorithm] = [{k: v for k, v in r.items() if 'loss' in k or 'accuracy' in k} for r in rows]
    assert columns['feddyn'] == columns['fedavg']


SCAFFOLD_KILLED = ['algorithm=scaffold', 'model=linear', 'sampling=uniform', 'rounds=8', 'eval_every=2',
                   'checkpoint_every=2', 'data.num_clients=20', 'clients_per_round=4', 'client_epochs=1',
                   'client_state_budget_mb=1']  # fmt: skip


@pytest.mark.slow
def test_a_scaffold_run_killed_with_sigkill_resumes_to_the_uninterrupted_metrics(tmp_path):
    """The clients' control variates are on disk, indexed by each checkpoint: a SIGKILL loses none of them, and the
    round-5 states that outlived the kill are not used (nor kept, once a new checkpoint is saved)."""
    from tests.test_reliability import run_killed_and_resumed

    full, killed = run_killed_and_resumed(SCAFFOLD_KILLED, tmp_path)
    for table in ['metrics.csv', 'clients.csv']:
        assert (killed / table).read_bytes() == (full / table).read_bytes(), table
    kept = {p.name for p in (tmp_path / 'killed' / client_states.DIRECTORY).iterdir()}
    referenced = set()
    for checkpoint in (tmp_path / 'killed' / 'checkpoints').glob('round_*'):
        referenced |= set(client_states.load_index(checkpoint).values())
    assert kept == referenced


def test_a_run_whose_states_would_not_fit_the_disk_is_refused_with_the_size_it_needs(tmp_path, monkeypatch):
    import collections
    import shutil

    from fedlab.errors import FedlabError

    store = client_states.ClientStateStore(tmp_path, (np.zeros(2**18, np.float32),), budget_bytes=2**20)  # 1 MiB each
    usage = collections.namedtuple('usage', 'total used free')
    monkeypatch.setattr(shutil, 'disk_usage', lambda path: usage(2**40, 0, 2**30))  # 1 GiB free
    client_states.check_room(store, 500, tmp_path)  # 2 x 500 MiB fit
    with pytest.raises(FedlabError, match=r'need up to 1\.2 GiB on disk \(600 clients x 1\.00 MiB'):
        client_states.check_room(store, 600, tmp_path)

"""FedBuff (fedlab.algorithms.fedbuff, fedlab.heterogeneity.async_clock): its schedule on the simulated clock, its
server step against TFF's FedAvg and a plain reference, and the CLI (its SIGKILL test: test_heterogeneity)."""

import functools
import math

import numpy as np
import pytest

from fedlab.heterogeneity import devices as device_profiles
from fedlab.heterogeneity.async_clock import STARTED, Arrival, BufferedRounds
from fedlab.heterogeneity.clock import DROPPED, PoolDraw
from tests.test_heterogeneity import TINY, _fedlab, _rows, _train


def _first_idle(pool, count):
    chosen = sorted(pool)[:count]
    return lambda draw_index: list(chosen)


def _schedule(speeds, *, concurrency, buffer_size, dropout=0.0, examples=1):
    devices = device_profiles.Devices({f'c{i}': device_profiles.Device(s, 1e12, 1e12) for i, s in enumerate(speeds)})
    return BufferedRounds(devices, dropout, PoolDraw(_first_idle), list(devices.by_client), concurrency=concurrency,
                          buffer_size=buffer_size, downlink_bits=0, uplink_bits=0,
                          examples=dict.fromkeys(devices.by_client, examples), epochs=1, seed=0)


def test_the_schedule_matches_a_hand_worked_timeline():
    # c0 takes 1 s, c1 4 s, c2 2 s; two train at once, the server applies every update (K = 1).
    rounds = _schedule([1.0, 0.25, 0.5], concurrency=2, buffer_size=1)
    first = rounds.update(1)
    # t=0: c0 and c1 start from version 0; t=1: c0 arrives, update 1.
    assert [(s.client_id, s.status) for s in first.starts] == [('c0', STARTED), ('c1', STARTED)]
    assert first.arrivals == (Arrival('c0', 0, 0),) and first.time_s == 1.0
    # t=1: the first idle client by id, c0, starts from version 1 and arrives at t=2: update 2, fresh.
    second = rounds.update(2)
    assert second.trained == ['c0'] and second.arrivals[0].client_id == 'c0' and second.arrivals[0].staleness == 0
    assert second.time_s == 2.0
    assert rounds.update(3).time_s == 3.0
    # t=4: c1, from version 0, arrives before c0 (started at t=3 from version 3, pushed later): staleness 3, then c0
    # at the same time with staleness 1.
    fourth, fifth = rounds.update(4), rounds.update(5)
    assert fourth.arrivals == (Arrival('c1', 1, 3),) and fourth.time_s == 4.0
    assert fifth.arrivals[0].client_id == 'c0' and fifth.arrivals[0].staleness == 1 and fifth.seconds == 0.0


def test_slots_are_never_shared_by_two_waiting_updates():
    rounds = _schedule([1, 2, 3, 5, 7, 11, 13], concurrency=4, buffer_size=3, dropout=0.2)
    waiting = {}  # slot -> client whose update waits there
    for r in range(1, 40):
        update = rounds.update(r)
        for start in update.starts:
            if start.status == STARTED:
                assert start.slot not in waiting and 0 <= start.slot < rounds.slots
                waiting[start.slot] = start.client_id
        assert len(update.arrivals) == 3
        for arrival in update.arrivals:
            assert waiting.pop(arrival.slot) == arrival.client_id
    assert any(s.status == DROPPED for r in range(1, 40) for s in rounds.update(r).starts)


def test_a_replayed_schedule_is_the_same():
    a = _schedule([1, 2, 3, 4, 5], concurrency=3, buffer_size=2, dropout=0.3)
    b = _schedule([1, 2, 3, 4, 5], concurrency=3, buffer_size=2, dropout=0.3)
    assert b.update(10) == a.update(10) and [b.update(r) for r in range(1, 10)] == [a.update(r) for r in range(1, 10)]


class _Schedule:
    """A schedule given by hand: round r's starts (client, slot) and arrivals (slot, staleness)."""

    def __init__(self, rounds):
        self._rounds = rounds

    def update(self, round_num):
        starts, arrivals = self._rounds[round_num - 1]
        return type('U', (), {'slots': [slot for _, slot in starts],
                              'arrivals': [Arrival(f'slot{s}', s, st) for s, st in arrivals]})()


@functools.cache
def _clients():
    from tests.test_stateful_algorithms import SIZES, _data

    return _data(tuple(SIZES.items()))


def _inputs(client_ids):
    from fedlab.run import round_inputs

    config = round_inputs.PipelineConfig(epochs=2, batch_size=4, shuffle_buffer=8, seed=3, client_inputs='tensors')
    return round_inputs.training_inputs(_clients(), config)(client_ids)


def _fedbuff(concurrency, buffer_size, exponent=0.5, server_lr=1.0, weighting='num_examples'):
    from fedlab.algorithms import fedbuff, optimizers
    from tests.test_algorithms import _model_fn

    return fedbuff.build_fed_buff(_model_fn(), optimizers.sgd(0.1), optimizers.sgd(server_lr), concurrency=concurrency,
                                  buffer_size=buffer_size, staleness_exponent=exponent, client_inputs='tensors',
                                  batch_size=4, weighting=weighting)


def _fedavg_alone(weights, client_id):
    """TFF's own FedAvg (build_weighted_fed_avg, on tf.data), one round of `client_id` alone from `weights`: the
    model after it (server lr 1: the client's trained model)."""
    import tensorflow_federated as tff

    from fedlab.algorithms import optimizers
    from fedlab.run import round_inputs
    from tests.test_algorithms import _model_fn

    process = tff.learning.algorithms.build_weighted_fed_avg(_model_fn(), optimizers.sgd(0.1), optimizers.sgd(1.0))
    state = process.set_model_weights(process.initialize(), weights)
    config = round_inputs.PipelineConfig(epochs=2, batch_size=4, shuffle_buffer=8, seed=3)
    data = round_inputs.training_inputs(_clients(), config)([client_id])
    return process.get_model_weights(process.next(state, data).state)


def test_one_at_a_time_fedbuff_is_tffs_fedavg_with_one_client_a_round():
    process = _fedbuff(concurrency=1, buffer_size=1)
    order = ['c1', 'c0', 'c2']
    process.schedule = _Schedule([([(c, 0)], [(0, 0)]) for c in order])
    state = process.initialize()
    for client_id in order:
        expected = _fedavg_alone(process.get_model_weights(state), client_id)
        state = process.next(state, _inputs([client_id])).state
        for got, want in zip(process.get_model_weights(state).trainable, expected.trainable):
            np.testing.assert_allclose(got, want, atol=1e-6)


def test_stale_updates_are_weighted_as_the_paper_says():
    # Round 1: c0 and c1 start from version 0 (slots 0, 1); c0's update is applied alone.
    # Round 2: c2 starts from version 1 (slot 2); c1's (staleness 1) and c2's (fresh) are applied together.
    exponent, server_lr = 0.5, 0.7
    process = _fedbuff(concurrency=2, buffer_size=2, exponent=exponent, server_lr=server_lr)
    process.schedule = _Schedule([([('c0', 0), ('c1', 1)], [(0, 0)]), ([('c2', 2)], [(1, 1), (2, 0)])])
    initial = process.initialize()
    w0 = process.get_model_weights(initial)
    after_1 = process.next(initial, _inputs(['c0', 'c1'])).state
    w1 = process.get_model_weights(after_1)
    after_2 = process.next(after_1, _inputs(['c2'])).state
    from tests.test_stateful_algorithms import SIZES

    def delta(start, client_id):
        trained = _fedavg_alone(start, client_id)
        return [a - b for a, b in zip(start.trainable, trained.trainable)]

    d0, d1, d2 = delta(w0, 'c0'), delta(w0, 'c1'), delta(w1, 'c2')
    n = {c: 2 * SIZES[c] for c in SIZES}  # examples over two epochs
    for got, start, u0 in zip(w1.trainable, w0.trainable, d0):
        np.testing.assert_allclose(got, start - server_lr * u0, atol=1e-6)  # one update: its own weight cancels
    coefficient = {c: (1 + s) ** -exponent * n[c] / (n['c1'] + n['c2']) for c, s in (('c1', 1), ('c2', 0))}
    for got, start, u1, u2 in zip(process.get_model_weights(after_2).trainable, w1.trainable, d1, d2):
        np.testing.assert_allclose(got, start - server_lr * (coefficient['c1'] * u1 + coefficient['c2'] * u2),
                                   atol=1e-6)
    assert math.isclose(coefficient['c1'] / coefficient['c2'], 2 ** -0.5 * n['c1'] / n['c2'])


def test_fedbuff_through_the_cli_records_its_server_updates(tmp_path):
    _train([*TINY, 'algorithm=fedbuff', 'system=heterogeneous', 'algorithm.concurrency=8', 'system.dropout=0.1',
            'sampling=uniform'], tmp_path)
    rows, clients = _rows(tmp_path / 'metrics.csv'), _rows(tmp_path / 'clients.csv')
    times = [float(r['sim_time_s']) for r in rows]
    assert all(b >= a for a, b in zip([0.0, *times], times)) and times[-1] > 0
    for row, client_row in zip(rows, clients):
        arrived = client_row['arrived_ids'].split()
        assert len(arrived) == 5 == len(client_row['staleness'].split())  # buffer_size = clients_per_round
        assert int(row['uplink_bits']) == 5 * int(row['uplink_bits_per_client'])
        downloads = len(client_row['sampled_ids'].split())
        assert int(row['downlink_bits']) == downloads * int(row['downlink_bits_per_client'])
        assert float(row['staleness_max']) == max(int(s) for s in client_row['staleness'].split())
    assert float(rows[-1]['eval_accuracy']) > 0.2


def test_with_nobody_online_the_server_waits_for_the_first_to_come_online():
    devices = device_profiles.Devices({
        'c0': device_profiles.Device(1.0, 1e12, 1e12, ((10.0, 50.0),)),
        'c1': device_profiles.Device(1.0, 1e12, 1e12, ((30.0, 90.0),)),
    }, period_s=100.0)
    rounds = BufferedRounds(devices, 0.0, PoolDraw(_first_idle), ['c0', 'c1'], concurrency=2, buffer_size=1,
                            downlink_bits=0, uplink_bits=0, examples={'c0': 5, 'c1': 5}, epochs=1, seed=0)
    first = rounds.update(1)
    # Nobody at t=0; c0 comes online at 10 and takes 5 s; c1 at 30.
    assert first.trained == ['c0'] and first.time_s == 15.0
    assert rounds.update(2).time_s == 20.0  # c0 again, at once
    # c0 restarts at 45 and would finish at 50: its window ends there, not before (a window's end is exclusive).
    times = [rounds.update(r).time_s for r in range(3, 8)]
    assert all(b >= a for a, b in zip(times, times[1:]))


@pytest.mark.slow
def test_fedbuff_gives_the_same_metrics_on_every_client_path(tmp_path):
    args = [*TINY, 'algorithm=fedbuff', 'system=heterogeneous', 'algorithm.concurrency=6', 'sampling=uniform']
    for client_inputs in ('dataset', 'shards'):
        _fedlab([*args, f'client_inputs={client_inputs}'], tmp_path / client_inputs)
    dataset, shards = _rows(tmp_path / 'dataset' / 'metrics.csv'), _rows(tmp_path / 'shards' / 'metrics.csv')
    for a, b in zip(dataset, shards):
        for column in ('train_loss', 'train_accuracy', 'eval_loss', 'eval_accuracy', 'sim_time_s', 'uplink_bits'):
            if a[column]:
                assert float(a[column]) == pytest.approx(float(b[column]), rel=1e-5, abs=1e-6), column


def test_server_updates_asked_from_several_threads_are_simulated_once():
    import concurrent.futures

    expected = _schedule([1, 2, 3, 5, 7, 11, 13, 17], concurrency=4, buffer_size=2, dropout=0.2)
    expected = [expected.update(r) for r in range(1, 201)]
    shared = _schedule([1, 2, 3, 5, 7, 11, 13, 17], concurrency=4, buffer_size=2, dropout=0.2)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(shared.update, [r for r in range(1, 201) for _ in range(8)]))
    assert [shared.update(r) for r in range(1, 201)] == expected

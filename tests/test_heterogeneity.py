"""System heterogeneity on a simulated clock (fedlab.heterogeneity): the clock against a plain reference, the rules
(deadline, over-selection, dropout, availability), the CLI's files, exactness at the defaults, and resumption."""

import csv
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from fedlab.heterogeneity import devices as device_profiles
from fedlab.heterogeneity import example_traces
from fedlab.heterogeneity.clock import DROPPED, LATE, OFFLINE, PARTIAL, TRAINED, PoolDraw, SimulatedRounds, SystemRules
from tests.conftest import LEAF_SAMPLE, REPO, needs_leaf_sample
from tests.test_algorithms import BATCH


def _devices(speeds, up=1e6, down=1e6, available=None, period_s=math.inf):
    return device_profiles.Devices({
        f'c{i}': device_profiles.Device(speed, up, down, (available or {}).get(f'c{i}', device_profiles.ALWAYS))
        for i, speed in enumerate(speeds)
    }, period_s=period_s)


def _fixed(pool, count):
    chosen = sorted(pool)[:count]
    return lambda round_num: list(chosen)


def _rounds(devices, rules=SystemRules(), n=3, *, down=2e6, up=1e6, examples=None, epochs=2, seed=0, draw=_fixed,
            batch_size=20):
    clients = sorted(devices.by_client)
    return SimulatedRounds(devices, rules, PoolDraw(draw), clients, n, downlink_bits=down, uplink_bits=up,
                           examples=examples or dict.fromkeys(clients, 10), epochs=epochs, seed=seed,
                           batch_size=batch_size)


def _reference_seconds(device, *, down, up, examples, epochs):
    return (down / device.downlink_bits_per_s + examples * epochs / device.compute_examples_per_s
            + up / device.uplink_bits_per_s)


def test_each_clients_time_and_a_synchronous_round_match_a_plain_reference():
    devices = _devices([10, 5, 20, 1], up=5e5, down=2e6)
    examples = {'c0': 30, 'c1': 7, 'c2': 100, 'c3': 2}
    rounds = _rounds(devices, n=3, examples=examples, epochs=3)
    first = rounds.outcome(1)
    assert first.sampled == ('c0', 'c1', 'c2') and first.trained == ['c0', 'c1', 'c2']
    expected = [_reference_seconds(devices.by_client[c], down=2e6, up=1e6, examples=examples[c], epochs=3)
                for c in first.sampled]
    assert first.client_seconds == pytest.approx(expected, rel=1e-12)
    assert first.seconds == max(expected)  # until its slowest client
    assert rounds.outcome(2).start_s == first.seconds
    third = rounds.outcome(3)
    assert third.start_s + third.seconds == pytest.approx(3 * max(expected))


def test_a_deadline_drops_the_late_clients_and_the_round_lasts_until_it():
    devices = _devices([100, 1, 100, 1])  # c1, c3: 20 examples / 1 per s
    rounds = _rounds(devices, SystemRules(deadline_s=5.0), n=4)
    outcome = rounds.outcome(1)
    assert outcome.status == (TRAINED, LATE, TRAINED, LATE) and outcome.trained == ['c0', 'c2']
    assert outcome.seconds == 5.0
    everyone = _rounds(devices, SystemRules(deadline_s=100.0), n=4).outcome(1)
    assert everyone.trained == ['c0', 'c1', 'c2', 'c3'] and everyone.seconds == max(everyone.client_seconds) < 100


def test_over_selection_keeps_the_first_n_to_finish_and_ends_at_the_nth():
    devices = _devices([1, 2, 4, 8, 16, 32])
    rounds = _rounds(devices, SystemRules(over_selection=0.5), n=4)  # ceil(4 x 1.5) = 6 sampled
    outcome = rounds.outcome(1)
    assert len(outcome.sampled) == 6
    assert outcome.status == (LATE, LATE, TRAINED, TRAINED, TRAINED, TRAINED)
    assert outcome.seconds == outcome.client_seconds[2]  # the 4th to finish
    assert math.ceil(10 * 1.1 - 1e-9) == 11 and len(_rounds(_devices([1] * 12), SystemRules(over_selection=0.1),
                                                            n=10).outcome(1).sampled) == 11


def test_dropout_is_seeded_per_round_and_near_its_rate():
    devices = _devices([10] * 200)
    rules = SystemRules(dropout=0.3)
    a, b = _rounds(devices, rules, n=200, seed=4), _rounds(devices, rules, n=200, seed=4)
    assert [a.outcome(r).status for r in (1, 2)] == [b.outcome(r).status for r in (1, 2)]
    assert a.outcome(1).status != a.outcome(2).status
    dropped = sum(a.outcome(r).count(DROPPED) for r in range(1, 11)) / 2000
    assert 0.27 < dropped < 0.33
    # A dropped client leaves once it has the model: the round lasts until the slowest client that trained.
    outcome = a.outcome(1)
    assert outcome.seconds == max(s for s, st in zip(outcome.client_seconds, outcome.status) if st == TRAINED)
    assert a.downloads(1) == 200 and len(a.sampler(1)) == 200 - outcome.count(DROPPED)


def test_availability_windows_decide_who_is_sampled_and_who_goes_offline():
    # c0 online all the time, c1 in [0, 10) of each 100 s, c2 in [50, 100): c1 needs 20 s, so it goes offline.
    windows = {'c1': ((0.0, 10.0),), 'c2': ((50.0, 100.0),)}
    devices = _devices([100, 1, 100], down=1e12, up=1e12, available=windows, period_s=100.0)
    rounds = _rounds(devices, n=3, examples={'c0': 200, 'c1': 20, 'c2': 1}, epochs=1, down=1.0, up=1.0)
    first = rounds.outcome(1)
    assert first.sampled == ('c0', 'c1')  # c2 is offline at 0: never sampled
    assert first.status == (TRAINED, OFFLINE) and first.seconds == pytest.approx(10.0)
    assert first.seconds == max(first.client_seconds)
    assert rounds.outcome(2).start_s == pytest.approx(first.seconds)
    # Nobody online: the round waits for the first to come online, and trains no one.
    nobody = _devices([1, 1], available={'c0': ((50.0, 60.0),), 'c1': ((70.0, 80.0),)}, period_s=100.0)
    empty = _rounds(nobody, n=2).outcome(1)
    assert empty.sampled == () and empty.seconds == 50.0
    assert devices.offline_from('c1', 105.0) == 110.0 and devices.online_at('c2', 160.0)


def test_a_window_ending_at_the_period_continues_into_one_starting_at_zero():
    devices = _devices([1], available={'c0': ((0.0, 10.0), (90.0, 100.0))}, period_s=100.0)
    assert devices.offline_from('c0', 95.0) == 110.0
    assert devices.offline_from('c0', 5.0) == 10.0


def test_rounds_are_the_same_asked_in_any_order():
    devices = _devices([1, 2, 3, 4, 5, 6], available={'c0': ((0.0, 3.0),)}, period_s=7.0)
    rules = SystemRules(deadline_s=4.0, over_selection=0.5, dropout=0.2)
    in_order = _rounds(devices, rules, n=2)
    [in_order.outcome(r) for r in range(1, 9)]
    at_once = _rounds(devices, rules, n=2)
    assert at_once.outcome(8) == in_order.outcome(8)


def test_heterogeneous_devices_are_seeded_by_client_and_follow_the_distribution():
    spec = {rate: {'median': 100.0, 'sigma': 1.0} for rate in device_profiles.RATES}
    ids = [f'w{i}' for i in range(2000)]
    devices = device_profiles.draw(ids, spec, seed=3)
    assert device_profiles.draw(ids[:5], spec, seed=3).by_client['w1'] == devices.by_client['w1']
    assert device_profiles.draw(ids[:5], spec, seed=4).by_client['w1'] != devices.by_client['w1']
    logs = sorted(math.log(d.compute_examples_per_s) for d in devices.by_client.values())
    assert logs[1000] == pytest.approx(math.log(100), abs=0.1)
    flat = device_profiles.draw(ids[:3], {r: {'median': 7.0, 'sigma': 0.0} for r in device_profiles.RATES}, seed=0)
    assert {d.compute_examples_per_s for d in flat.by_client.values()} == {7.0}


def test_a_trace_round_trips_and_its_clients_must_be_the_datas(tmp_path):
    devices = example_traces.example_trace([f'client_{i:02d}' for i in range(6)], seed=1, part_time=0.5)
    device_profiles.write_trace(tmp_path / 't.csv', devices)
    read = device_profiles.read_trace(tmp_path / 't.csv', period_s=3600.0)
    assert read.by_client.keys() == devices.by_client.keys()
    for client_id, device in devices.by_client.items():
        assert read.by_client[client_id].compute_examples_per_s == pytest.approx(device.compute_examples_per_s, 1e-5)
        assert read.by_client[client_id].available == device.available
    with pytest.raises(Exception, match=r'has no row for 1 of the data\'s clients \(e.g. client_06\)'):
        read.check_clients([f'client_{i:02d}' for i in range(7)], 'system.path=t.csv')
    with pytest.raises(Exception, match=r'names 2 clients the data lacks \(e.g. client_04, client_05\)'):
        read.check_clients([f'client_{i:02d}' for i in range(4)], 'system.path=t.csv')


@needs_leaf_sample
def test_the_shipped_traces_are_what_their_generator_writes(tmp_path):
    example_traces.main([str(LEAF_SAMPLE), str(tmp_path)])
    for name in ('digits_10x.csv', 'leaf_sample_10x.csv', 'leaf_sample_digits_10x.csv'):
        assert (tmp_path / name).read_text() == (REPO / 'conf' / 'system' / 'traces' / name).read_text()
    speeds = [d.compute_examples_per_s for d in device_profiles.read_trace(
        tmp_path / 'leaf_sample_10x.csv', period_s=3600.0).by_client.values()]
    assert 8 < max(speeds) / min(speeds) <= 10  # the comparison's 10x spread


# Through the CLI.
TINY = ['rounds=4', 'eval_every=2', 'client_epochs=1', 'data.num_clients=20', 'clients_per_round=5']


def _fedlab(args, run_dir, check=True):
    """The `fedlab` command as a user's shell runs it (no TF_CPP_MIN_LOG_LEVEL that another test's import set)."""
    env = {k: v for k, v in os.environ.items() if k != 'TF_CPP_MIN_LOG_LEVEL'}
    proc = subprocess.run([sys.executable, '-m', 'fedlab.cli', *args, f'hydra.run.dir={run_dir}'],
                          capture_output=True, text=True, timeout=600, cwd=REPO, env=env)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _train(args, run_dir):
    """fedlab's training as the command runs it, in this process (no TensorFlow import per run)."""
    from fedlab import cli
    from tests.conftest import compose_config

    return cli.train(compose_config(args), run_dir)


def _rows(path):
    with open(path, newline='') as f:
        return list(csv.DictReader(f))


def test_system_ideal_writes_todays_files_byte_for_byte(tmp_path):
    _train([*TINY, 'system=ideal'], tmp_path / 'ideal')
    _train(TINY, tmp_path / 'default')
    for table in ('metrics.csv', 'clients.csv', 'clients_eval.csv'):
        assert (tmp_path / 'ideal' / table).read_bytes() == (tmp_path / 'default' / table).read_bytes(), table


def test_a_deadline_run_records_its_clock_statuses_and_downloads(tmp_path):
    # Without rules the clock changes nothing that trains: the same metrics as ideal, plus the clock's columns.
    _train([*TINY, 'system=heterogeneous'], tmp_path / 'clock')
    _train(TINY, tmp_path / 'ideal')
    clock_rows, ideal_rows = _rows(tmp_path / 'clock' / 'metrics.csv'), _rows(tmp_path / 'ideal' / 'metrics.csv')
    for clocked, plain in zip(clock_rows, ideal_rows):
        assert {k: clocked[k] for k in plain} == plain

    _train([*TINY, 'system=heterogeneous', 'system.deadline_s=0.45', 'system.dropout=0.2', 'sampling=uniform',
            'system.over_selection=0.4', 'eval_every=1'], tmp_path / 'deadline')
    rows = _rows(tmp_path / 'deadline' / 'metrics.csv')
    clients = _rows(tmp_path / 'deadline' / 'clients.csv')
    times = [float(r['sim_time_s']) for r in rows]
    assert all(b > a for a, b in zip([0.0, *times], times))  # it increases every round
    statuses = [s for r in clients for s in r['status'].split()]
    assert {TRAINED, LATE} <= set(statuses)
    for row, client_row in zip(rows, clients):
        status = client_row['status'].split()
        sampled = client_row['sampled_ids'].split()
        trained = [c for c, s in zip(sampled, status) if s == TRAINED]
        assert client_row['client_ids'].split() == trained and int(row['clients']) == len(trained) <= 5
        assert len(sampled) == 7 == int(row['clients_sampled'])  # ceil(5 x 1.4)
        assert int(row['downlink_bits']) == 7 * int(row['downlink_bits_per_client'])
        assert int(row['uplink_bits']) == len(trained) * int(row['uplink_bits_per_client'])
        seconds = [float(s) for s in client_row['sim_client_s'].split()]
        late = [t for t, s in zip(seconds, status) if s == LATE]
        if len(trained) < 5 and late:
            assert float(row['sim_round_s']) == pytest.approx(0.45)


def test_a_round_where_nobody_finishes_is_recorded_and_the_run_goes_on(tmp_path, capsys):
    _train([*TINY, 'system=heterogeneous', 'system.deadline_s=0.001'], tmp_path)
    assert 'no clients' in capsys.readouterr().out
    rows = _rows(tmp_path / 'metrics.csv')
    assert [int(r['clients']) for r in rows] == [0, 0, 0, 0]
    assert [float(r['sim_time_s']) for r in rows] == pytest.approx([0.001 * r for r in (1, 2, 3, 4)])
    assert {s for r in _rows(tmp_path / 'clients.csv') for s in r['status'].split()} == {LATE}


# The system group's bad input, checked before TensorFlow (tests/test_reliability.py runs some of these through the
# command: one line, exit 2, TensorFlow not loaded, nothing written); (case, overrides, what the message says).
BAD_SYSTEM = [
    ('trace header', ['system=trace', 'system.path={tmp}/trace_header.csv'], 'trace_header.csv:1: the header must be'),
    ('trace negative speed', ['system=trace', 'system.path={tmp}/trace_negative.csv'],
     "trace_negative.csv:3: compute_examples_per_s='-5' is not allowed"),
    ('trace window', ['system=trace', 'system.path={tmp}/trace_window.csv'], "trace_window.csv:2: available window"),
    ('over-selection negative', ['system=heterogeneous', 'system.over_selection=-0.5'],
     'system.over_selection=-0.5 is not allowed'),
    ('dropout one', ['system=heterogeneous', 'system.dropout=1'], 'system.dropout=1 is not allowed'),
    ('system key of another kind', ['system=heterogeneous', '+system.period_s=10'],
     'system.period_s is not a key of system=heterogeneous'),
    ('partial work without deadline', ['system=heterogeneous', 'system.partial_work=true'],
     'system.partial_work=true needs system.deadline_s'),
    ('fedbuff concurrency zero', ['algorithm=fedbuff', 'system=heterogeneous', 'algorithm.concurrency=0'],
     'algorithm.concurrency=0 is not allowed'),
    ('fedbuff with compression', ['algorithm=fedbuff', 'system=heterogeneous', 'aggregator=compression'],
     'aggregator=compression does not fit algorithm=fedbuff'),
]


@pytest.mark.parametrize('case,overrides,expected', BAD_SYSTEM, ids=[c[0] for c in BAD_SYSTEM])
def test_bad_system_input_is_refused_before_tensorflow(case, overrides, expected, tmp_path):
    from omegaconf import OmegaConf

    from fedlab.config import checks
    from fedlab.errors import FedlabError
    from tests.conftest import compose_config

    header = 'client_id,compute_examples_per_s,uplink_bits_per_s,downlink_bits_per_s,available\n'
    (tmp_path / 'trace_header.csv').write_text('client,speed\nclient_00,1\n')
    (tmp_path / 'trace_negative.csv').write_text(header + 'client_00,5,1e6,1e6,\nclient_01,-5,1e6,1e6,\n')
    (tmp_path / 'trace_window.csv').write_text(header + 'client_00,5,1e6,1e6,3000-100\n')
    config = compose_config([o.replace('{tmp}', str(tmp_path)) for o in overrides])
    with pytest.raises(FedlabError) as refused:
        checks.check_before_tensorflow(OmegaConf.to_container(config, resolve=True))
    assert expected in str(refused.value) and '\n' not in str(refused.value)


def test_a_trace_lacking_the_datas_clients_is_one_line_exit_2_nothing_written(tmp_path):
    trace = tmp_path / 'short.csv'
    device_profiles.write_trace(trace, example_traces.example_trace(['client_00', 'client_01'], seed=0))
    run_dir = tmp_path / 'run'
    proc = _fedlab([*TINY, 'system=trace', f'system.path={trace}'], run_dir, check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "has no row for 18 of the data's clients (e.g. client_02" in lines[0], proc.stderr
    assert not run_dir.exists()


@pytest.mark.slow
def test_the_shipped_digits_trace_runs_and_the_report_plots_simulated_time(tmp_path):
    sweep = tmp_path / 'sweep'
    for name, extra in (('ideal', []), ('trace', ['system=trace', 'system.deadline_s=1.0'])):
        _fedlab(['rounds=4', 'eval_every=2', 'client_epochs=1', *extra], sweep / name)
    report = subprocess.run([sys.executable, '-m', 'fedlab.reporting.report', str(sweep)], capture_output=True,
                            text=True, timeout=300, cwd=REPO)
    assert report.returncode == 0, report.stderr
    assert (sweep / 'eval_accuracy_vs_sim_time.png').stat().st_size > 0


KILLED = {  # synchronous rounds with every rule, and FedBuff (tests/test_fedbuff.py) with dropout
    'deadline, dropout, over-selection': ['clients_per_round=4', 'system.deadline_s=0.3', 'system.over_selection=0.5'],
    'fedbuff': ['clients_per_round=3', 'algorithm=fedbuff', 'algorithm.concurrency=6'],
}


@pytest.mark.slow
@pytest.mark.parametrize('extra', KILLED.values(), ids=KILLED.keys())
def test_a_run_on_the_clock_killed_with_sigkill_resumes_to_the_uninterrupted_files(extra, tmp_path):
    from tests.test_reliability import run_killed_and_resumed

    full, killed = run_killed_and_resumed(
        ['rounds=8', 'eval_every=2', 'checkpoint_every=2', 'data.num_clients=20', 'client_epochs=1',
         'sampling=uniform', 'system=heterogeneous', 'system.dropout=0.2', *extra], tmp_path)
    for table in ('metrics.csv', 'clients.csv', 'clients_eval.csv'):
        assert (killed / table).read_bytes() == (full / table).read_bytes(), table


def test_partial_work_keeps_a_late_clients_finished_batches_in_order_of_finishing():
    # 10 examples x 2 epochs, batches of 5: c0 0.2 s, c1 20 s, c2 10 s, c3 40 s; the deadline at 8 s.
    devices = _devices([100, 1, 2, 0.5], up=1e9, down=1e9)
    rules = SystemRules(deadline_s=8.0, partial_work=True)
    outcome = _rounds(devices, rules, n=4, batch_size=5).outcome(1)
    # By 8 s, c2 trained 16 examples (3 batches), c1 8 (1 batch), c3 4 (none: late).
    assert outcome.status == (TRAINED, PARTIAL, PARTIAL, LATE) and outcome.steps == (0, 1, 3, 0)
    assert outcome.input_ids == ['c0', 'c1#steps=1', 'c2#steps=3'] and outcome.trained == ['c0', 'c1', 'c2']
    assert outcome.seconds == 8.0 and outcome.client_seconds[1:3] == (8.0, 8.0)
    # Partial clients only fill the round up to N, the closest to done first.
    two = _rounds(devices, SystemRules(deadline_s=8.0, partial_work=True, over_selection=1.0), n=2, batch_size=5)
    assert two.outcome(1).status == (TRAINED, LATE, PARTIAL, LATE)
    assert _rounds(devices, SystemRules(deadline_s=8.0), n=4, batch_size=5).outcome(1).trained == ['c0']


@pytest.mark.parametrize('client_inputs', ['tensors', 'shards'])
def test_a_partial_clients_inputs_are_its_first_batches_on_every_path(client_inputs, tmp_path):
    from tests.test_stateful_algorithms import SIZES, _build

    marked = {'c1': 'c1#steps=2'}
    dataset_metrics, dataset_weights = _train_ids(_build('fednova', 'dataset'), tmp_path / 'd', 'dataset', marked)
    metrics, weights = _train_ids(_build('fednova', client_inputs), tmp_path / 'p', client_inputs, marked)
    assert metrics == pytest.approx(dataset_metrics, rel=1e-6)
    for a, b in zip(weights, dataset_weights):
        assert np.allclose(a, b, atol=1e-6)
    full_metrics, _ = _train_ids(_build('fednova', client_inputs), tmp_path / 'f', client_inputs, {})
    assert full_metrics[0]['examples'] - metrics[0]['examples'] == 2 * SIZES['c1'] - 2 * BATCH


def _train_ids(process, tmp_path, client_inputs, marked):
    """Two rounds of `process` over the three clients of tests.test_stateful_algorithms, a client asked for by
    its `marked` id: each round's train metrics and the final trainable weights."""
    from fedlab.run import evaluation, round_inputs
    from tests.test_stateful_algorithms import SIZES, _data

    config = round_inputs.PipelineConfig(epochs=2, batch_size=BATCH, shuffle_buffer=8, seed=3,
                                         client_inputs=client_inputs, shard_dir=str(tmp_path))
    inputs = round_inputs.training_inputs(_data(tuple(SIZES.items())), config)
    try:
        state, metrics = process.initialize(), []
        for _ in range(2):
            output = process.next(state, inputs([marked.get(c, c) for c in SIZES]))
            state = output.state
            metrics.append(evaluation.rename_metrics(output.metrics['client_work']['train']))
        return metrics, process.get_model_weights(state).trainable
    finally:
        inputs.close()


@pytest.mark.slow
def test_tensorboard_serves_accuracy_against_simulated_time_and_bits(tmp_path):
    from tests.test_tensorboard import _get, served_tensorboard

    logdir = tmp_path / 'runs'
    _fedlab([*TINY, 'eval_every=1', 'system=heterogeneous'], logdir / 'run')
    with served_tensorboard(logdir, tmp_path, until='run/tensorboard/eval_by_uplink_bits') as (port, runs):
        assert {'run/tensorboard/system', 'run/tensorboard/eval_by_sim_time_ms'} <= set(runs), runs
        rows = _rows(logdir / 'run' / 'metrics.csv')
        served = _get(port, '/data/plugin/scalars/scalars', run='run/tensorboard/eval_by_sim_time_ms', tag='accuracy')
        assert [step for _, step, _ in served] == [round(1000 * float(r['sim_time_s'])) for r in rows]
        assert [value for _, _, value in served] == pytest.approx([float(r['eval_accuracy']) for r in rows])
        served = _get(port, '/data/plugin/scalars/scalars', run='run/tensorboard/eval_by_uplink_bits', tag='accuracy')
        assert [step for _, step, _ in served] == [int(r['cumulative_uplink_bits']) for r in rows]
        tags = _get(port, '/data/plugin/scalars/tags')
        assert {'sim_time_s', 'clients_late'} <= set(tags['run/tensorboard/system'])


def test_rounds_asked_from_several_threads_are_decided_once_each():
    # The next round's inputs are prepared in another thread (fedlab.run.round_inputs.RoundAhead) while the round
    # loop plans it: both ask the clock for the same round.
    import concurrent.futures

    devices = _devices([1 + i % 7 for i in range(30)])
    rules = SystemRules(deadline_s=30.0, over_selection=0.5, dropout=0.2)
    expected = _rounds(devices, rules, n=6)
    expected = [expected.outcome(r) for r in range(1, 301)]
    shared = _rounds(devices, rules, n=6)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda r: shared.outcome(r), [r for r in range(1, 301) for _ in range(8)]))
    assert [shared.outcome(r) for r in range(1, 301)] == expected

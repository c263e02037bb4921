"""Recording a round is one step: an interruption at any point of the bookkeeping loses nothing and duplicates
nothing. Each case raises KeyboardInterrupt (what a second Ctrl-C does) at one point of round 3's bookkeeping, then
resumes; the resumed run's metrics.csv and clients.csv must equal an uninterrupted run's, byte for byte."""

import json
import pathlib

import pytest

from fedlab import cli
from fedlab.record import checkpoints, ledger, tables
from tests.conftest import TINY, compose_config

OVERRIDES = [*TINY, 'rounds=4', 'checkpoint_every=2', 'sampling=uniform', 'data.num_clients=8']
INTERRUPTED_ROUND = 3


class _Injected(KeyboardInterrupt):
    pass


def _raise_in(monkeypatch, owner, name: str, *, when, after: bool = True):
    """Makes owner.name raise _Injected the first time `when(*args)` holds, after (or before) doing its work."""
    original = getattr(owner, name)
    fired = []

    def patched(*args, **kwargs):
        if fired or not when(*args, **kwargs):
            return original(*args, **kwargs)
        fired.append(True)
        result = original(*args, **kwargs) if after else None
        raise _Injected()
        return result

    monkeypatch.setattr(owner, name, patched)
    return fired


def _table_write(table_name):
    def when(table, row, **_):
        return table._file.name.endswith(table_name) and int(row['round']) == INTERRUPTED_ROUND

    return when


INJECTION_POINTS = {
    'metrics.csv row written': (tables.CsvTable, 'write', _table_write('metrics.csv'), True),
    'timing.csv row not yet written': (tables.CsvTable, 'write', _table_write('timing.csv'), False),
    'clients.csv row written': (tables.CsvTable, 'write', _table_write('clients.csv'), True),
    'tensorboard scalars written': (
        tables.TensorBoardLogger, 'write', lambda logger, round_num, *_: round_num == INTERRUPTED_ROUND, True),
    'ledger values counted': (
        ledger.Ledger, 'round_values', lambda ledger_, round_num, _: round_num == INTERRUPTED_ROUND, True),
    # Round 2's checkpoint: its state is written in the staging directory, not yet renamed into place.
    'checkpoint being saved': (checkpoints, '_fsync_tree', lambda root: True, True),
}  # fmt: skip
DEFAULT_SUITE = ['metrics.csv row written', 'tensorboard scalars written', 'checkpoint being saved']


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory) -> pathlib.Path:
    run_dir = tmp_path_factory.mktemp('uninterrupted')
    cli.train(compose_config(OVERRIDES), run_dir)
    return run_dir


@pytest.mark.parametrize(
    'point',
    [p if p in DEFAULT_SUITE else pytest.param(p, marks=pytest.mark.slow) for p in INJECTION_POINTS],
)
def test_an_interruption_anywhere_in_the_bookkeeping_resumes_to_the_same_tables(point, uninterrupted, tmp_path,
                                                                                  monkeypatch):  # fmt: skip
    owner, name, when, after = INJECTION_POINTS[point]
    with monkeypatch.context() as patch:
        fired = _raise_in(patch, owner, name, when=when, after=after)
        with pytest.raises(_Injected):
            cli.train(compose_config(OVERRIDES), tmp_path)
    assert fired, 'the injection point was never reached'

    # What the interrupted run left: only complete rounds, and a checkpoint of the last of them.
    results = json.loads((tmp_path / 'results.json').read_text())
    done = results['rounds_completed']
    assert results['status'] == 'interrupted'
    for table in ['metrics.csv', 'timing.csv', 'clients.csv']:
        assert [int(r['round']) for r in tables.read_rows(tmp_path / table)] == list(range(1, done + 1)), table
    assert checkpoints.CheckpointStore(tmp_path / 'checkpoints').latest_round() == done
    assert not (tmp_path / 'checkpoints' / '.staging').exists() or point == 'checkpoint being saved'

    outputs = cli.train(compose_config(OVERRIDES), tmp_path)  # the same command again: resume
    assert outputs.rounds_completed == 4
    for table in ['metrics.csv', 'clients.csv']:
        assert (tmp_path / table).read_bytes() == (uninterrupted / table).read_bytes(), table
    assert [int(r['round']) for r in tables.read_rows(tmp_path / 'timing.csv')] == [1, 2, 3, 4]
    assert json.loads((tmp_path / 'results.json').read_text())['communication']['cumulative_uplink_bits'] == (
        json.loads((uninterrupted / 'results.json').read_text())['communication']['cumulative_uplink_bits']
    )

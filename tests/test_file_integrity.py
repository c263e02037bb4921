"""Every file fedlab reads is checked or recovered, never half-trusted (issue 25): checkpoints against their manifest,
the tables a checkpoint carries, the examples of data files, the run directories fedlab-report reads.

The default tests work in-process on small fake checkpoints and files (no TensorFlow); the slow ones damage a real
run's checkpoint and data files through the command (tests/corrupter.py) and check what a user sees.
"""

import csv
import json
import pathlib
import shutil
import subprocess

import pytest

from fedlab.data import example_checks, leaf
from fedlab.errors import FedlabError
from fedlab.record import checkpoints, table_checks
from fedlab.reporting import report
from tests import corrupter
from tests.test_cli import FEDLAB, _env

FIXTURE = pathlib.Path(__file__).parent / 'fixtures' / 'main_17c7a06'
CONFIG = {'rounds': 4, 'seed': 0}
METRICS_HEADER = 'round,clients,train_loss,train_accuracy,train_examples,train_batches,eval_loss,eval_accuracy'


# -- Small fake checkpoints: the files a checkpoint holds, with made-up bytes (no TensorFlow). --

def _tables(round_num: int) -> dict[str, str]:
    rounds = range(1, round_num + 1)
    return {
        'metrics.csv': METRICS_HEADER + '\n' + ''.join(f'{r},3,2.0{r},0.4{r},1316,67,,\n' for r in rounds),
        'timing.csv': 'round,train_seconds,eval_seconds\n' + ''.join(f'{r},0.5,0.0\n' for r in rounds),
        'clients.csv': 'round,client_ids\n' + ''.join(f'{r},client_0 client_1\n' for r in rounds),
        'clients_eval.csv': ','.join(table_checks.LEADING_COLUMNS['clients_eval.csv']) + '\n'
                            + f'{round_num},eval,client_0,20,2.1,0.3\n',
    }


def _fake_checkpoint(run_dir: pathlib.Path, round_num: int, *, manifest: bool = True) -> pathlib.Path:
    directory = run_dir / 'checkpoints' / f'round_{round_num}'
    (directory / 'state0' / 'variables').mkdir(parents=True)
    (directory / 'state0' / 'saved_model.pb').write_bytes(bytes(range(256)) * 4)
    (directory / 'state0' / 'variables' / 'variables.index').write_bytes(b'index' * 20)
    (directory / 'state0' / 'variables' / 'variables.data-00000-of-00001').write_bytes(b'\x01\x02' * 300)
    (directory / checkpoints.CONFIG_FILE).write_text(json.dumps(CONFIG))
    for name, text in _tables(round_num).items():
        (directory / name).write_text(text)
    if manifest:
        checkpoints.write_manifest(directory)
    return directory


def _store(run_dir: pathlib.Path) -> checkpoints.CheckpointStore:
    return checkpoints.CheckpointStore(run_dir / 'checkpoints')


def test_a_sound_checkpoint_passes_and_any_damaged_file_in_it_is_found(tmp_path):
    pristine = _fake_checkpoint(tmp_path / 'pristine', 4)
    assert _store(tmp_path / 'pristine').problem(4) is None
    run_dir = tmp_path / 'run'
    for path in corrupter.files_under(pristine):
        for seed in range(3):
            corrupter.restore(pristine, run_dir / 'checkpoints' / 'round_4')
            done = corrupter.corrupt(run_dir / 'checkpoints' / 'round_4' / path.relative_to(pristine), seed)
            assert _store(run_dir).problem(4), done


def test_resume_falls_back_to_the_previous_sound_checkpoint_and_sets_the_damaged_one_aside(tmp_path, capsys):
    _fake_checkpoint(tmp_path, 2)
    latest = _fake_checkpoint(tmp_path, 4)
    (latest / 'state0' / 'variables' / 'variables.data-00000-of-00001').write_bytes(b'\x01\x02' * 100)  # truncated
    store = _store(tmp_path)
    point = store.resume_point(CONFIG)
    assert point.round_num == 2
    assert [r for r, _ in point.damaged] == [4] and 'variables.data-00000-of-00001 has 200 bytes' in point.damaged[0][1]
    store.set_aside(4, point.damaged[0][1])
    warning = capsys.readouterr().err.strip().splitlines()
    assert len(warning) == 1 and 'round_4 is damaged' in warning[0] and 'damaged_round_4' in warning[0]
    assert store.rounds() == [2] and (tmp_path / 'checkpoints' / 'damaged_round_4').is_dir()


def test_no_sound_checkpoint_is_refused_in_one_line_touching_nothing(tmp_path):
    for round_num in (2, 4):
        (_fake_checkpoint(tmp_path, round_num) / checkpoints.CONFIG_FILE).write_text('{"rounds": 4, "se')
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob('*')}
    with pytest.raises(FedlabError) as refused:
        _store(tmp_path).resume_point(CONFIG)
    message = str(refused.value)
    assert '\n' not in message and 'round_4: config.json has' in message and 'round_2: config.json' in message
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob('*')} == before


def test_a_checkpoint_whose_manifest_is_missing_a_file_or_damaged_is_not_resumed(tmp_path):
    directory = _fake_checkpoint(tmp_path, 4)
    (directory / 'timing.csv').unlink()
    assert _store(tmp_path).problem(4) == 'timing.csv is missing'
    (directory / checkpoints.MANIFEST_FILE).write_text('{"files": ')
    assert _store(tmp_path).problem(4).startswith('manifest.json unreadable')


def test_an_older_checkpoint_without_manifest_is_checked_by_its_config_state_files_and_tables(tmp_path):
    run_dir = tmp_path / 'killed'
    shutil.copytree(FIXTURE / 'killed', run_dir)
    store = _store(run_dir)
    assert store.problem(2) is None
    metrics = run_dir / 'checkpoints' / 'round_2' / 'metrics.csv'
    metrics.write_bytes(metrics.read_bytes()[:-40])  # cut inside the last row
    assert 'metrics.csv line 3 has' in store.problem(2)
    shutil.copy2(FIXTURE / 'killed' / 'checkpoints' / 'round_2' / 'metrics.csv', metrics)
    (run_dir / 'checkpoints' / 'round_2' / 'state0' / 'saved_model.pb').write_bytes(b'')
    assert store.problem(2) == 'state0/saved_model.pb is empty (and there is no manifest)'


_HEADER = 'round,clients,train_loss,train_accuracy,train_examples,train_batches\n'
# (case, metrics.csv text of a round-2 checkpoint, what the problem says; None: sound)
TABLES = [
    ('sound', _HEADER + '1,3,2.0,0.4,10,1\n2,3,1.9,0.5,10,1\n', None),
    ('a metric NaN is a value', _HEADER + '1,3,nan,0.4,10,1\n2,3,1.9,0.5,10,1\n', None),
    ('cut inside the last row', _HEADER + '1,3,2.0,0.4,10,1\n2,3,1.9\n', 'line 3 has 3 fields, the header 6'),
    ('a round missing', _HEADER + '1,3,2.0,0.4,10,1\n', 'has 1 rows, expected rounds 1-2'),
    ('a later round', _HEADER + '1,3,2.0,0.4,10,1\n2,3,1.9,0.5,10,1\n3,3,1.9,0.5,10,1\n', 'has 3 rows'),
    ('rounds out of order', _HEADER + '2,3,2.0,0.4,10,1\n1,3,1.9,0.5,10,1\n', 'expected rounds 1-2'),
    ('garbled number', _HEADER + '1,3,2.0,0.4,10,1\n2,3,1.9,0.x5,10,1\n', 'column train_accuracy holds'),
    ('another header', 'step,clients\n1,3\n2,3\n', "expected it to start with 'round,clients"),
    ('empty', '', 'is empty'),
]


@pytest.mark.parametrize('text, problem', [t[1:] for t in TABLES], ids=[t[0] for t in TABLES])
def test_a_carried_table_is_checked_before_anything_is_appended(tmp_path, text, problem):
    path = tmp_path / 'metrics.csv'
    path.write_text(text)
    found = table_checks.table_problem(path, 2)
    assert found is None if problem is None else problem in found


def test_a_table_that_is_not_utf8_text_is_a_problem(tmp_path):
    path = tmp_path / 'clients.csv'
    path.write_bytes(b'round,client_ids\n1,\xff\xfe\n')
    assert table_checks.table_problem(path, 1) == 'clients.csv is not UTF-8 text'


# -- Data files: a NaN pixel is refused (or dropped when asked), from the files and from the data cache alike. --

def _leaf_dir(root: pathlib.Path, *, bad: str | None = None) -> pathlib.Path:
    """Three writers of 4 examples each in LEAF's layout; `bad` replaces writer w1's example 2's first pixel."""
    for split in ('train', 'test'):
        users, user_data = [], {}
        for w in range(3):
            rows = [[repr(((w + i + p) % 256) / 255.0) for p in range(784)] for i in range(4)]
            if bad is not None and w == 1 and split == 'train':
                rows[2][0] = bad
            user_data[f'w{w}'] = {'x': '@X@', 'y': [w, 1, 2, 3]}
            users.append(f'w{w}')
            x = '[' + ', '.join('[' + ', '.join(row) + ']' for row in rows) + ']'
            user_data[f'w{w}']['x'] = x
        text = json.dumps({'users': users, 'num_samples': [4] * 3, 'user_data': user_data})
        for user in users:  # the pixel rows unquoted, as LEAF writes them
            text = text.replace(json.dumps(user_data[user]['x']), user_data[user]['x'])
        (root / split).mkdir(parents=True)
        (root / split / 'all_data_0.json').write_text(text)
    return root


@pytest.mark.parametrize('bad', ['NaN', 'Infinity', '-Infinity'])
def test_a_non_finite_pixel_is_refused_naming_file_client_and_example(tmp_path, bad):
    root = _leaf_dir(tmp_path / 'leaf', bad=bad)
    with pytest.raises(FedlabError) as refused:
        leaf.load_leaf(str(root))
    message = str(refused.value)
    assert message.startswith(f"{root / 'train' / 'all_data_0.json'}: client 'w1' train example 2 has a non-finite")
    assert 'data.drop_nonfinite=true' in message and '\n' not in message


def test_the_data_cache_does_not_bypass_the_check(tmp_path, capsys):
    root = _leaf_dir(tmp_path / 'leaf', bad='NaN')
    cache = tmp_path / 'cache'
    for said in ('data cache built', 'read from the data cache'):  # parsed and cached, then read from the cache
        with pytest.raises(FedlabError, match="client 'w1' train example 2"):
            leaf.load_leaf(str(root), array_cache=str(cache))
        assert said in capsys.readouterr().out


def test_drop_nonfinite_drops_the_bad_examples_with_one_warning(tmp_path, capsys):
    root = _leaf_dir(tmp_path / 'leaf', bad='NaN')
    train = leaf.read_split(root / 'train')
    kept = example_checks.checked(train, num_classes=leaf.NUM_CLASSES, split='train', source=lambda c: 'f.json',
                                  drop=True)
    assert kept.counts.tolist() == [4, 3, 4] and kept.client_ids == train.client_ids
    warning = capsys.readouterr().err.strip().splitlines()
    assert len(warning) == 1 and "dropped 1 train examples" in warning[0] and "client 'w1'" in warning[0]
    assert not example_checks.bad_examples(kept, leaf.NUM_CLASSES).any()


def test_a_sound_file_is_returned_as_it_is(tmp_path):
    train = leaf.read_split(_leaf_dir(tmp_path / 'leaf') / 'train')
    assert example_checks.checked(train, num_classes=62, split='train', source=str) is train


def test_a_label_outside_the_classes_is_refused_by_the_check(tmp_path):
    train = leaf.read_split(_leaf_dir(tmp_path / 'leaf') / 'train')
    with pytest.raises(FedlabError, match="client 'w0' train example 2 has label 2, expected an integer 0-1"):
        example_checks.checked(train, num_classes=2, split='train', source=lambda c: 'f.json')


# -- fedlab-report: unreadable runs are listed apart, the rest reported. --

def test_report_lists_unreadable_runs_apart_and_reports_the_rest(tmp_path, capsys):
    sweep = tmp_path / 'sweep'
    good = FIXTURE / 'completed_seed0'
    for name in ('good', 'bad_json', 'bad_metrics', 'no_metrics'):
        shutil.copytree(good, sweep / name)
    (sweep / 'bad_json' / 'results.json').write_text('{"status": "compl')
    metrics = sweep / 'bad_metrics' / 'metrics.csv'
    metrics.write_bytes(metrics.read_bytes()[:-30])
    (sweep / 'no_metrics' / 'metrics.csv').unlink()
    report.main([str(sweep)])  # exit 0: no SystemExit
    skipped = [line for line in capsys.readouterr().err.splitlines() if line.startswith('skipped: ')]
    assert [line.split(': ')[1] for line in skipped] == [str(sweep / n) for n in ('bad_json', 'bad_metrics',
                                                                                   'no_metrics')]
    assert 'results.json unreadable' in skipped[0] and 'metrics.csv line 3 has' in skipped[1]
    assert skipped[2].endswith('metrics.csv is missing')
    text = (sweep / 'report.md').read_text()
    assert all(f'- {line}' in text for line in skipped)
    assert [row['run'] for row in csv.DictReader(open(sweep / 'report.csv'))] == ['good']


def test_report_with_no_readable_run_exits_2(tmp_path, capsys):
    (tmp_path / 'sweep' / 'run').mkdir(parents=True)
    (tmp_path / 'sweep' / 'run' / 'results.json').write_bytes(b'\x00\x01')
    with pytest.raises(SystemExit) as exited:
        report.main([str(tmp_path / 'sweep')])
    assert exited.value.code == 2
    assert 'no run directory (results.json)' in capsys.readouterr().err


# -- Slow: a real run's files damaged, through the command. --

RUN = ['model=linear', 'data.num_clients=6', 'clients_per_round=3', 'rounds=4', 'eval_every=2', 'checkpoint_every=2',
       'client_epochs=2']


def _fedlab(args, run_dir: pathlib.Path, cwd: pathlib.Path) -> subprocess.CompletedProcess:
    return subprocess.run([FEDLAB, *args, f'hydra.run.dir={run_dir}'], capture_output=True, text=True,
                          env=_env('integrity'), timeout=300, cwd=cwd)  # fmt: skip


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory):
    """A completed 4-round run with checkpoints after rounds 2 and 4 (both kept)."""
    run_dir = tmp_path_factory.mktemp('integrity') / 'uninterrupted'
    proc = _fedlab(RUN, run_dir, run_dir.parent)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return run_dir


def _tables_equal(run_dir: pathlib.Path, expected: pathlib.Path) -> bool:
    return all((run_dir / t).read_bytes() == (expected / t).read_bytes() for t in ('metrics.csv', 'clients.csv'))


def _check_outcome(proc: subprocess.CompletedProcess, run_dir: pathlib.Path, what: str) -> None:
    """What any corrupt input may lead to: recovered (0) or refused in one line (2); no traceback; results.json
    never marked failed."""
    assert proc.returncode in (0, 2), f'{what}: exit {proc.returncode}\n{proc.stderr[-2000:]}'
    assert 'Traceback' not in proc.stderr and 'Traceback' not in proc.stdout, what
    lines = [line for line in proc.stderr.splitlines() if line.strip() and not line.startswith('fedlab: warning:')]
    if proc.returncode == 2:
        assert len(lines) == 1 and lines[0].startswith('fedlab: error: '), f'{what}: {proc.stderr}'
    results = run_dir / 'results.json'
    if results.exists():
        assert json.loads(results.read_text())['status'] != 'failed', what


@pytest.mark.slow
@pytest.mark.parametrize('damaged', ['state0/variables/variables.data-00000-of-00001', 'state0/saved_model.pb',
                                     'config.json', 'metrics.csv'])
def test_a_damaged_latest_checkpoint_resumes_from_the_previous_one_to_the_uninterrupted_tables(
        uninterrupted, tmp_path, damaged):
    run_dir = tmp_path / 'run'
    shutil.copytree(uninterrupted, run_dir)
    path = run_dir / 'checkpoints' / 'round_4' / damaged
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    proc = _fedlab(RUN, run_dir, tmp_path)
    _check_outcome(proc, run_dir, damaged)
    assert proc.returncode == 0
    warnings = [line for line in proc.stderr.splitlines() if 'is damaged' in line]
    assert len(warnings) == 1 and 'round_4' in warnings[0] and pathlib.Path(damaged).name in warnings[0]
    assert f'resuming {run_dir} after round 2' in proc.stdout
    assert _tables_equal(run_dir, uninterrupted)
    assert json.loads((run_dir / 'results.json').read_text())['status'] == 'completed'


@pytest.mark.slow
def test_randomly_damaged_checkpoints_are_recovered_or_refused_in_one_line(uninterrupted, tmp_path):
    checkpoint_files = corrupter.files_under(uninterrupted / 'checkpoints')
    for seed in range(18):
        run_dir = tmp_path / f'seed{seed}'
        corrupter.restore(uninterrupted, run_dir)
        target = run_dir / checkpoint_files[seed * 7 % len(checkpoint_files)].relative_to(uninterrupted)
        done = corrupter.corrupt(target, seed)
        proc = _fedlab(RUN, run_dir, tmp_path)
        _check_outcome(proc, run_dir, f'seed {seed}: {done}')
        if proc.returncode == 0:
            assert _tables_equal(run_dir, uninterrupted), f'seed {seed}: {done}'
        shutil.rmtree(run_dir)


@pytest.mark.slow
def test_randomly_damaged_data_files_are_refused_in_one_line_or_train(tmp_path):
    pristine = _leaf_dir(tmp_path / 'pristine')
    for seed in range(12):
        data = tmp_path / 'leaf'
        corrupter.restore(pristine, data)
        target = corrupter.files_under(data)[seed % 2]
        done = corrupter.corrupt(target, seed, kinds=(*corrupter.KINDS, 'nan'))
        run_dir = tmp_path / f'seed{seed}'
        proc = _fedlab(['data=leaf', f'data.path={data}', 'data_cache=null', 'clients_per_round=2', 'rounds=1',
                        'client_epochs=1'], run_dir, tmp_path)
        _check_outcome(proc, run_dir, f'seed {seed}: {done}')
        if proc.returncode == 2:
            assert not run_dir.exists() or not (run_dir / 'results.json').exists(), done
        shutil.rmtree(run_dir, ignore_errors=True)

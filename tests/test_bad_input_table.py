"""Every kind of bad path or value (issue 25): one line on stderr naming the key, exit 2, no traceback, TensorFlow not
loaded, and nothing written: no run directory left, the current directory unchanged.

Each case runs in this process through `fedlab.cli.main` (Hydra composes, fedlab checks; ~0.2 s a case) in the
default suite, a few of them also through the real command; the slow suite runs every case through the command.
docs/reliability.md ("Bad paths and values") lists what these cases promise.
"""

import logging
import os
import signal
import subprocess
import sys
import time

import pytest

from fedlab import cli
from tests.conftest import REPO

LONG = 'b' * 100_000  # a value pasted by mistake: the message must stay short
DIGITS = '9' * 5000  # more digits than Python's int() converts by default (Hydra's parser fails on it)

# (case, overrides, what the one line says). {tmp}: a directory with a file `a_file`; {read_only}: a directory this
# process cannot write; no hydra.run.dir / resume / -m in a case: the test adds hydra.run.dir={run} (must stay absent).
BAD_PATHS_AND_VALUES = [
    # Where the run writes (checked before Hydra creates the directory: fedlab.config.launchers.StartChecks).
    ('run dir empty', ['hydra.run.dir='], 'hydra.run.dir is empty (an unset shell variable?)'),
    ('resume empty', ['resume='], 'resume is empty'),
    ('run dir is a file', ['hydra.run.dir={tmp}/a_file'], 'a_file is a file, not a directory'),
    ('run dir under a file', ['hydra.run.dir={tmp}/a_file/run'], 'which is a file, not a directory'),
    ('run dir read-only', ['hydra.run.dir={read_only}/run'], 'is not writable'),
    ('run dir name too long', ['hydra.run.dir={tmp}/' + 'a' * 300], 'a name in it is 300 bytes long'),
    ('run dir path too long', ['hydra.run.dir={tmp}/' + ('a' * 200 + '/') * 25], 'the path is'),
    ('resume is a file', ['resume={tmp}/a_file'], 'resume={tmp}/a_file is a file, not a directory'),
    ('resume has no run', ['resume={tmp}/no_run'], 'no fedlab run with checkpoints there'),
    ('resume and another run dir', ['resume={tmp}/old_run', 'hydra.run.dir={tmp}/new_run'],
     'name two directories'),
    ('sweep dir is a file', ['-m', 'hydra.sweep.dir={tmp}/a_file', 'rounds=1,2'], 'hydra.sweep.dir='),
    ('sweep job dir name too long', ['-m', 'hydra.sweep.dir={tmp}/sweep', 'data=leaf',
                                     'data.path={tmp}/' + 'b' * 300 + ',{tmp}/nowhere'],
     'name too long; a sweep names its jobs\' directories after their overrides'),
    ('sweep preset without -m', ['experiment=compare'], 'experiment=compare is a sweep (over model, aggregator)'),
    # Values at any key (fedlab.config.values).
    ('nan', ['aggregator=dp', 'aggregator.noise_multiplier=nan'], 'aggregator.noise_multiplier=nan is not allowed'),
    ('infinity', ['client_lr=inf'], 'client_lr=inf is not allowed: client_lr must be a finite number'),
    ('minus infinity in a group', ['system=heterogeneous', 'system.deadline_s=-inf'], 'system.deadline_s=-inf'),
    ('integer of 5000 digits', [f'rounds={DIGITS}'], 'an integer of 5000 digits'),
    ('integer beyond int64', ['rounds=9999999999999999999'], 'rounds=9999999999999999999 is not allowed'),
    ('integer beyond int64 in a group', [f'data.num_clients={"9" * 30}'], 'data.num_clients='),
    ('long missing data path', ['data=leaf', f'data.path={{tmp}}/{"c" * 200}'], 'no such file or directory'),
    ('data path too long', ['data=leaf', f'data.path={{tmp}}/{LONG}'], 'File name too long'),
    ('data target unimportable', ['data._target_=a.b.c'], "data._target_=a.b.c: no such module 'a.b'"),
    ('data target not a loader', ['data._target_=os.getcwd'], 'data._target_=os.getcwd is not a data source'),
    ('data target returns no data', ['data._target_=builtins.dict'], 'it returned a dict, not FederatedData'),
    ('--cfg job runs the checks', ['--cfg', 'job', 'rounds=-1'], 'rounds=-1 is not allowed'),
    # The config cases docs/reliability.md ("Bad input") shows (tests/test_reliability.py has them all).
    ('rounds zero', ['rounds=0'], 'rounds=0 is not allowed: rounds must be an integer >= 1'),
    ('unknown option', ['model=resnet'], "Could not find 'model/resnet'"),
    ('unknown key', ['learning_rate=0.1'], "Key 'learning_rate' not in"),
    ('wrong type', ['rounds=ten'], 'rounds=ten'),
    ('data path absent', ['data=leaf', 'data.path={tmp}/nowhere'], 'no such file or directory'),
    ('wrong _target_', ['model._target_=nowhere.model_fn'], "no such module 'nowhere'"),
]
CASES = {case[0]: case for case in BAD_PATHS_AND_VALUES}
# The default suite keeps to ~10 s: one case of each kind in this process (Hydra composes twice, ~0.4 s a case; a
# long value cut: the 300-byte name) and two through the real command (~1.5 s each); the slow suite runs every case
# through the command.
IN_PROCESS = ['run dir empty', 'run dir is a file', 'run dir under a file', 'run dir name too long', 'resume is a file',
              'resume and another run dir', 'sweep preset without -m', 'nan', 'integer beyond int64',
              'data target not a loader', '--cfg job runs the checks', 'rounds zero']
THROUGH_THE_COMMAND = ['integer of 5000 digits', 'run dir empty']


@pytest.fixture(scope='module')
def places(tmp_path_factory):
    """{tmp}: a directory holding a file; {read_only}: a directory fedlab may not write (as root, whom permissions
    do not stop, /proc/self)."""
    tmp = tmp_path_factory.mktemp('bad_paths')
    (tmp / 'a_file').write_text('not a directory\n')
    read_only = tmp / 'read_only'
    read_only.mkdir()
    read_only.chmod(0o555)
    yield {'tmp': str(tmp), 'read_only': '/proc/self' if os.geteuid() == 0 else str(read_only)}
    read_only.chmod(0o755)


def _arguments(overrides, places, run_dir):
    args = [o.format(**places) for o in overrides]
    if not any(a.startswith(('hydra.run.dir=', 'resume=')) or a == '-m' for a in args):
        args.append(f'hydra.run.dir={run_dir}')
    return args


def _listing(directory):
    return sorted(str(p.relative_to(directory)) for p in directory.rglob('*'))


def _check_refusal(case, stderr, run_dir, cwd, cwd_before, places):
    """The promises every case keeps, whichever way it ran."""
    expected = CASES[case][2].format(**places)
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('fedlab: error: '), stderr[:3000]
    assert expected in lines[0], lines[0]
    assert len(lines[0]) < 600, 'a long value was not cut'
    assert not run_dir.exists(), 'a run directory was left behind'
    assert _listing(cwd) == cwd_before, 'something was written in the current directory'
    assert not os.path.exists(os.path.join(places['tmp'], 'no_run'))


@pytest.fixture
def restored_logging(monkeypatch):
    """Hydra configures the root logger for a job it starts (a file in the run directory): put it back. Its
    dictConfig closes every handler ever made, and absl's (made when an earlier test imported TensorFlow) closes its
    stream unless it is the sys.stderr of now: in a test that stream is an earlier capture, pytest's own. Only this
    process's test harness meets that (the command's stderr never changes), so those closes are skipped here."""
    for reference in list(logging._handlerList):
        handler = reference()
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            monkeypatch.setattr(handler, 'close', lambda: None)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            handler.close()
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.parametrize('case', IN_PROCESS)
def test_bad_path_or_value_in_process(case, places, tmp_path, monkeypatch, capsys, restored_logging):
    from fedlab.system import malloc_arenas, scratch_dirs

    cwd, run_dir = tmp_path / 'cwd', tmp_path / 'run'
    cwd.mkdir()
    (cwd / 'marker').write_text('the directory fedlab was started from\n')
    cwd_before = _listing(cwd)
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, 'argv', ['fedlab', *_arguments(CASES[case][1], places, run_dir)])
    monkeypatch.setenv('HYDRA_FULL_ERROR', '0')  # main() sets it; restored after the test
    monkeypatch.setattr(malloc_arenas, 'limit_arenas', lambda: None)  # process-wide settings of the command
    monkeypatch.setattr(scratch_dirs, 'private_tempdir', lambda: None)
    tensorflow_before = 'tensorflow' in sys.modules
    with pytest.raises(SystemExit) as exited:
        cli.main()
    assert exited.value.code == 2
    stderr = capsys.readouterr().err
    assert 'Traceback' not in stderr
    _check_refusal(case, stderr, run_dir, cwd, cwd_before, places)
    assert tensorflow_before or 'tensorflow' not in sys.modules, 'TensorFlow was imported before the error'


def _through_the_command(case, places, tmp_path):
    """`fedlab <case>` as the console script runs it (fedlab.__main__), from a directory of its own; returns the
    exit code, stderr, the seconds it took and the TensorFlow modules it had loaded when it exited."""
    cwd, run_dir = tmp_path / 'cwd', tmp_path / 'run'
    cwd.mkdir()
    (cwd / 'marker').write_text('the directory fedlab was started from\n')
    cwd_before = _listing(cwd)
    args = _arguments(CASES[case][1], places, run_dir)
    code = (
        'import sys\n'
        'from fedlab import __main__ as command\n'
        f'sys.argv = ["fedlab", *{args!r}]\n'
        'try:\n    command.main()\nexcept SystemExit as e:\n    code = e.code\nelse:\n    code = 0\n'
        'tf = [m for m in sys.modules if m.split(".")[0] in ("tensorflow", "tensorflow_federated")]\n'
        'print("RESULT", code, len(tf))\n'
    )
    env = {**os.environ, 'PYTHONPATH': str(REPO)}
    started = time.monotonic()
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120, cwd=cwd, env=env)
    seconds = time.monotonic() - started
    exit_code, tf_modules = proc.stdout.rsplit('RESULT', 1)[1].split()
    assert exit_code == '2', proc.stderr[-3000:]
    assert tf_modules == '0', 'TensorFlow was imported before the error'
    assert 'Traceback' not in proc.stderr
    _check_refusal(case, proc.stderr, run_dir, cwd, cwd_before, places)
    return seconds


@pytest.mark.parametrize('case', THROUGH_THE_COMMAND)
def test_bad_path_or_value_through_the_command(case, places, tmp_path):
    _through_the_command(case, places, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize('case', [c for c in CASES if c not in THROUGH_THE_COMMAND])
def test_every_bad_path_or_value_through_the_command(case, places, tmp_path):
    _through_the_command(case, places, tmp_path)


def _wait_for_fedlabs_first_line(pid: int, timeout: float = 120.0) -> None:
    """Until fedlab.__main__ has installed its handlers: the process catches SIGTERM (/proc's SigCgt mask), which
    Python alone never does. Before that, a signal meets the interpreter's own start-up, not fedlab."""
    bit = 1 << (signal.SIGTERM - 1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(f'/proc/{pid}/status') as status:
            caught = next(int(line.split()[1], 16) for line in status if line.startswith('SigCgt:'))
        if caught & bit:
            return
        time.sleep(0.005)
    raise AssertionError(f'fedlab (pid {pid}) did not install its signal handlers within {timeout} s')


@pytest.mark.slow
@pytest.mark.parametrize('after_s', [0.5, 1, 2, 3, 5, 7, 9])
def test_ctrl_c_during_start_up_exits_130_without_a_traceback(after_s, tmp_path):
    """A Ctrl-C while Python imports Hydra (before fedlab's handlers), while TensorFlow loads (JAX's gc callback
    swallowed it and printed "Exception ignored ... KeyboardInterrupt") or while the run is built; the seconds count
    from fedlab's first line (a signal during the interpreter's own start-up, before any of fedlab's code, meets
    Python's defaults: death by SIGINT, or "Fatal Python error: init_import_site")."""
    run_dir = tmp_path / 'run'
    env = {**os.environ, 'PYTHONPATH': str(REPO)}
    proc = subprocess.Popen([sys.executable, '-m', 'fedlab', 'experiment=debug', f'hydra.run.dir={run_dir}'],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=env)
    _wait_for_fedlabs_first_line(proc.pid)  # on a loaded machine Python's own start-up alone can take a second
    time.sleep(after_s)
    proc.send_signal(2)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode in (130, 0), stderr[-3000:]  # 0: the run had finished (a debug run takes ~9 s here)
    assert 'Traceback' not in stderr and 'Exception ignored' not in stderr, stderr[-3000:]
    assert [line for line in stderr.splitlines() if line.startswith('fedlab:')] in (
        [], ['fedlab: Ctrl-C: stopping after this round (Ctrl-C again stops at once; complete rounds are kept)']
    ), stderr[-3000:]

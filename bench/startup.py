"""Figure 3: start-up wall time of the CLI's quick answers, and launch to the end of round 1."""

import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from bench import common

FEDLAB = str(common.REPO / '.venv' / 'bin' / 'fedlab')
COMMANDS = {'--help': ['--help'], '--cfg job': ['--cfg', 'job'], 'bad override': ['model=nope']}


def _python_timing(args: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([FEDLAB, *args], capture_output=True, cwd=tempfile.gettempdir())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _hyperfine(args: list[str], runs: int) -> float | None:
    if not shutil.which('hyperfine'):
        return None
    with tempfile.NamedTemporaryFile(suffix='.json') as out:
        command = ' '.join([FEDLAB, *args])
        proc = subprocess.run(
            ['hyperfine', '--warmup', '1', '--runs', str(runs), '-i', '--export-json', out.name, '-N', command],
            capture_output=True, cwd=tempfile.gettempdir(),
        )
        if proc.returncode:
            return None
        import json

        return json.load(open(out.name))['results'][0]['median']


def round_one(extra: list[str]) -> tuple[float, float]:
    """Seconds from launch to the line `round 1/...` of a default run, and to the process exit."""
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        proc = subprocess.Popen(
            [FEDLAB, 'rounds=2', f'hydra.run.dir={tmp}/run', *extra],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=tmp,
        )
        first = None
        for line in proc.stdout:
            if first is None and line.startswith('round 1/'):
                first = time.perf_counter() - start
        proc.wait()
        return first or float('nan'), time.perf_counter() - start


def main(argv=None) -> list[str]:
    runs = 3 if common.QUICK else 7
    tool = 'hyperfine' if shutil.which('hyperfine') else 'python timing'
    lines = [f'# 3. start-up (median of {runs} runs, {tool})']
    for name, args in COMMANDS.items():
        seconds = _hyperfine(args, runs) or _python_timing(args, runs)
        lines.append(common.figure(f'fedlab {name} seconds', seconds, '<1.5', seconds < 1.5))
        print(lines[-1], flush=True)
    for label, extra in [('client_inputs=dataset', ['client_inputs=dataset']), ('client_inputs=shards', ['client_inputs=shards'])]:
        first, total = round_one(extra)
        lines.append(common.figure(f'launch -> end of round 1 s ({label})', first, '(report)', None,
                                   f'whole 2-round run {total:.1f} s'))
        print(lines[-1], flush=True)
    return lines


if __name__ == '__main__':
    sys.exit(main() and 0)

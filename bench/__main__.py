"""Runs the benchmarks one after another, each in its own process, and prints every figure beside its goal."""

import os
import platform
import subprocess
import sys
import time

from bench import common

FIGURES = ['efficiency', 'startup', 'memory', 'sweep', 'compression']  # `accuracy` has its own target


def main(argv: list[str]) -> int:
    names = argv or FIGURES
    header = (
        f'fedlab bench {time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())} on {platform.node()}: '
        f'{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}, '
        f'{"BENCH_QUICK" if common.QUICK else "full"} run'
    )
    print(header, flush=True)
    summary, crashed = [header], []
    for name in names:
        start = time.perf_counter()
        print(f'== {name}', flush=True)
        proc = subprocess.run(
            [sys.executable, '-m', f'bench.{name}'], cwd=common.REPO, stdout=subprocess.PIPE, text=True,
            env={**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '3'},
        )
        lines = [line for line in proc.stdout.splitlines() if line.startswith(('#', ' ', 'eta', 'RSS')) or ' goal ' in line]
        print(proc.stdout, end='', flush=True)
        if proc.returncode:
            crashed.append(name)
            lines.append(f'{name}: FAILED with exit status {proc.returncode}')
        summary += lines + [f'   ({name}: {time.perf_counter() - start:.0f} s)']
    print('\n==== summary ====\n' + '\n'.join(summary))
    return 1 if crashed else 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))

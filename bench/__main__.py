"""Runs the benchmarks one after another, each in its own process, and prints every figure beside its goal."""

import os
import platform
import subprocess
import sys
import tempfile
import time

from bench import common

FIGURES = ['efficiency', 'startup', 'memory', 'sweep', 'compression']  # `accuracy` has its own target
# Run only by name, as they take long: `make bench ARGS=scale` (full-size federations, ~45 min; BENCH_QUICK=1 ~15);
# `remote_tls`: fedlab-worker's proxy and mTLS cost (~5 min); `gpu`: absolute figures on a GPU (a one-line no-op without one).
BY_NAME = ['accuracy', 'scale', 'per_client', 'remote_tls', 'gpu']


def main(argv: list[str]) -> int:
    names = argv or FIGURES
    unknown = [name for name in names if name not in FIGURES + BY_NAME]
    if unknown:
        print(f'unknown benchmark {", ".join(unknown)}; choose from {", ".join(FIGURES + BY_NAME)}', file=sys.stderr)
        return 2
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
        # Output to a file, not a pipe: a TFF worker left alive would hold a pipe open and hang the read.
        with tempfile.TemporaryFile('w+') as out:
            proc = subprocess.run(
                [sys.executable, '-m', f'bench.{name}'], cwd=common.REPO, stdout=out, text=True,
                env={**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '3'},
            )
            out.seek(0)
            stdout = out.read()
        lines = [line for line in stdout.splitlines() if line.startswith(('#', ' ')) or ' goal ' in line]
        print(stdout, end='', flush=True)
        if proc.returncode:
            crashed.append(name)
            lines.append(f'{name}: FAILED with exit status {proc.returncode}')
        summary += lines + [f'   ({name}: {time.perf_counter() - start:.0f} s)']
    print('\n==== summary ====\n' + '\n'.join(summary))
    return 1 if crashed else 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))

"""Figure 4: resident memory of fedlab plus its TFF worker at round 50 and at round 500 of a long run, and
whether the time per round grows with rounds (figure 1's "per-round overhead must not grow")."""

import argparse
import csv
import re
import statistics
import subprocess
import tempfile

from bench import common

FEDLAB = str(common.REPO / '.venv' / 'bin' / 'fedlab')


def _rss_mb(pid: int) -> float:
    with open(f'/proc/{pid}/status') as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) / 1024
    return 0.0


def _tree_rss_mb(pid: int) -> tuple[float, float]:
    """RSS of the process and of its worker_binary children."""
    from fedlab.run import worker_processes

    return _rss_mb(pid), sum(_rss_mb(child) for child in worker_processes.child_workers(pid))


def measure(rounds: int, extra: list[str]) -> tuple[dict[int, tuple[float, float]], list[float]]:
    """RSS at the end of round 50 and of round `rounds`, in a run of the default config (evaluation and
    checkpoints every 5 rounds) that goes on 5 rounds longer, so that the last sample is not taken while
    fedlab shuts its worker down; and each round's training seconds (timing.csv)."""
    samples = {}
    marks = {50, rounds}
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen(
            [FEDLAB, f'rounds={rounds + 5}', 'model=linear', f'hydra.run.dir={tmp}/run', *extra],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=tmp,
        )
        for line in proc.stdout:
            match = re.match(r'round\s+(\d+)/', line)
            if match and int(match.group(1)) in marks:
                samples[int(match.group(1))] = _tree_rss_mb(proc.pid)
        proc.wait()
        with open(f'{tmp}/run/timing.csv') as f:
            seconds = [float(row['train_seconds']) for row in csv.DictReader(f)]
    return samples, seconds


def main(argv=None) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--rounds', type=int, default=200 if common.QUICK else 500)
    parser.add_argument('--client-inputs', default='shards')
    args = parser.parse_args(argv)
    samples, seconds = measure(args.rounds, [f'client_inputs={args.client_inputs}'])
    (p50, w50), (pn, wn) = samples[50], samples[args.rounds]
    ratio = (pn + wn) / (p50 + w50)
    # Medians of the first and second half (round 1-25 excluded): robust to the machine's bursts of load.
    half = (args.rounds + 25) // 2
    early, late = statistics.median(seconds[25:half]), statistics.median(seconds[half : args.rounds])
    lines = [
        f'# 4. memory: linear, default config, client_inputs={args.client_inputs}; RSS MB python + worker: '
        f'round 50 {p50:.0f} + {w50:.0f}, round {args.rounds} {pn:.0f} + {wn:.0f}',
        common.figure(f'RSS round {args.rounds} / round 50', ratio, '<=1.05', ratio <= 1.05,
                      f'worker alone {wn / w50:.2f}' if w50 else ''),
        common.figure(f'round time rounds {half + 1}-{args.rounds} / 26-{half}', late / early, '<=1.10',
                      late / early <= 1.10, f'medians {1000 * late:.0f} / {1000 * early:.0f} ms'),
    ]
    print('\n'.join(lines), flush=True)
    return lines


if __name__ == '__main__':
    main()

"""Figure 2: time to accuracy on the LEAF writers' digits, measured on what `fedlab` itself writes.

The federated run and its centralized baseline are two `fedlab` commands, so the figure goes through the CLI's
LEAF loader, pipelines, training and evaluation; the centralized accuracy is its last epoch's (README: "the number
reported is the last epoch's, never the best"); the federated time is training plus evaluation up to the first
evaluation that reaches 0.97 of it, from timing.csv.
"""

import argparse
import csv
import pathlib
import subprocess
import sys
import tempfile
import time

from bench import common

FEDLAB = pathlib.Path(sys.executable).with_name('fedlab')


def _rows(path: pathlib.Path) -> list[dict[str, str]]:
    with open(path, newline='') as f:
        return list(csv.DictReader(f))


def _fedlab(args: list[str], run_dir: pathlib.Path) -> float:
    """Runs one fedlab command to completion; returns its wall seconds."""
    start = time.perf_counter()
    with open(run_dir.with_suffix('.log'), 'w') as log:
        subprocess.run([str(FEDLAB), *args, f'hydra.run.dir={run_dir}'], check=True, stdout=log, stderr=subprocess.STDOUT)
    return time.perf_counter() - start


def main(argv=None) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--rounds', type=int, default=30 if common.QUICK else 150)
    parser.add_argument('--central-epochs', type=int, default=3 if common.QUICK else 10)
    parser.add_argument('--client-epochs', type=int, default=1)
    parser.add_argument('--lr', type=float, default=0.05)
    parser.add_argument('--eval-every', type=int, default=5)
    args = parser.parse_args(argv)
    recipe = ['data=leaf', f'data.path={common.LEAF}', 'data.digits_only=true', 'model=fedavg_cnn', f'client_lr={args.lr}']

    with tempfile.TemporaryDirectory(prefix='fedlab-bench-accuracy-') as tmp:
        central_dir, federated_dir = pathlib.Path(tmp) / 'centralized', pathlib.Path(tmp) / 'federated'
        central_seconds = _fedlab([*recipe, 'task=centralized', f'task.epochs={args.central_epochs}'], central_dir)
        central = float(_rows(central_dir / 'metrics.csv')[-1]['eval_accuracy'])  # the last epoch's
        target = 0.97 * central
        print(f'   centralized fedavg_cnn: test accuracy {central:.4f} after {args.central_epochs} epochs (last epoch; '
              f'{central_seconds / 60:.1f} min); target 0.97 x = {target:.4f}', flush=True)
        wall = _fedlab([*recipe, 'sampling=uniform', 'clients_per_round=10', f'client_epochs={args.client_epochs}',
                        f'rounds={args.rounds}', f'eval_every={args.eval_every}'], federated_dir)  # fmt: skip
        rows, timing = _rows(federated_dir / 'metrics.csv'), _rows(federated_dir / 'timing.csv')

    elapsed, reached = 0.0, None
    for row, times in zip(rows, timing):
        elapsed += float(times['train_seconds']) + float(times['eval_seconds'])
        if row['eval_accuracy']:
            print(f'   round {row["round"]}: federated eval accuracy {float(row["eval_accuracy"]):.4f} '
                  f'({elapsed / 60:.1f} min of training and evaluation)', flush=True)
            if reached is None and float(row['eval_accuracy']) >= target:
                reached = (int(row['round']), elapsed)
    final = float(rows[-1]['eval_accuracy'])
    detail = (f'reached at round {reached[0]} after {reached[1] / 60:.1f} min of training and evaluation' if reached
              else f'not reached in {args.rounds} rounds')  # fmt: skip
    lines = [
        f'# 2. time to accuracy: `fedlab {" ".join(r for r in recipe if not r.startswith("data.path"))}`, {len(rows)} rounds of 10 uniformly sampled LEAF '
        f'writers, {args.client_epochs} local epoch(s); centralized (last of {args.central_epochs} epochs) {central:.4f}; '
        f'federated final {final:.4f}; 0.97 x centralized {detail}; whole federated command {wall / 60:.1f} min',
        common.figure('federated (final) / centralized accuracy', final / central, '>=0.97', final / central >= 0.97,
                      f'rounds {len(rows)}, 2 cores'),  # fmt: skip
    ]
    print('\n'.join(lines), flush=True)
    return lines


if __name__ == '__main__':
    main()

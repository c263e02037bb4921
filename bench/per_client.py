"""Per-client evaluation at full federation size (issue 21): the LEAF sample replicated to 3,570 writers (as
bench.scale builds it), then fedlab run the way a user runs it, twice:

- `plain`: today's settings (per-client evaluation is always on): 500 sampled test writers every 50 rounds, every
  writer after the last round; clients_eval.csv gets a row per evaluated writer;
- `all`: the same with `holdout_clients=0.2` and `personalization=finetune personalization.every=100`: every
  evaluated writer also fine-tunes the global model on its own training split.

Printed: fedlab's and its TFF worker's RSS after each evaluation (memory must not grow with the rounds), the seconds
of the evaluations (sampled and full) and of the personalization, and clients_eval.csv's rows and size.
`make bench ARGS=per_client` (~20 min; BENCH_QUICK=1 ~10 min; ~4 GB of temporary disk).
"""

import argparse
import os
import pathlib
import shutil
import sys
import tempfile

from bench import common
from bench.scale import SAMPLE, Run, build_replica


def _report(name: str, run: Run, rounds: int, every: int) -> list[str]:
    evaluated = [r for r in range(every, rounds + 1, every)]
    rss = ', '.join(f'{r}: {run.rss[r][0]:.0f} + {run.rss[r][1]:.0f}' for r in evaluated if r in run.rss)
    timing = {int(r['round']): float(r['eval_seconds']) for r in run.timing}
    sampled = [timing[r] for r in evaluated[:-1] if r in timing]
    rows_path = run.run_dir / 'clients_eval.csv'
    rows = sum(1 for _ in open(rows_path)) - 1 if rows_path.exists() else 0
    grew = run.rss[evaluated[-2]][0] - run.rss[evaluated[1]][0] if len(evaluated) > 2 else float('nan')
    return [
        f'# {name}: RSS after evaluation rounds (fedlab + TFF worker, MB) {rss}',
        f'# {name}: fedlab RSS change from round {evaluated[1]} to {evaluated[-2]}: {grew:+.0f} MB; '
        f'peak fedlab {run.peak_rss["fedlab"]:.0f} MB, worker {run.peak_rss["worker"]:.0f} MB',
        f'# {name}: evaluation seconds, sampled (median of {len(sampled)}): '
        f'{sorted(sampled)[len(sampled) // 2] if sampled else float("nan"):.1f}, after the last round: '
        f'{timing.get(rounds, float("nan")):.1f}; clients_eval.csv {rows:,} rows, '
        f'{rows_path.stat().st_size / 2**20 if rows_path.exists() else 0:.1f} MiB; wall {run.wall:.0f} s',
    ]


def main(argv=None) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--copies', type=int, default=34, help='copies of the sample (34: 3,570 writers)')
    parser.add_argument('--rounds', type=int, default=200 if common.QUICK else 300)
    parser.add_argument('--every', type=int, default=50, help='eval_every')
    parser.add_argument('--workdir', default=None, help='where to build the replica (default: a new temp dir)')
    args = parser.parse_args(argv)
    work = pathlib.Path(args.workdir or tempfile.mkdtemp(prefix='fedlab-per-client-'))
    env = {**os.environ, 'FEDLAB_CACHE_DIR': str(work / 'cache'), 'TF_CPP_MIN_LOG_LEVEL': '3'}
    lines = []
    try:
        replica = work / 'replica'
        if not (replica / 'train').exists():
            counts = build_replica(SAMPLE, replica, args.copies)
            print(f'replica: {counts["writers"]:,} writers, {counts["train"]:,} train examples', flush=True)
        common_args = ['data=leaf', f'data.path={replica}', 'model=simple_cnn', 'sampling=uniform',
                       f'rounds={args.rounds}', f'eval_every={args.every}', 'eval_clients=500', 'checkpoint_every=0']
        evaluated = range(args.every, args.rounds + 1, args.every)
        for name, extra in [('plain', []), ('all', ['holdout_clients=0.2', 'personalization=finetune',
                                                    f'personalization.every={2 * args.every}'])]:
            run = Run([*common_args, *extra], work / name, env, rss_rounds=set(evaluated))
            run.check(name)
            lines += _report(name, run, args.rounds, args.every)
            print('\n'.join(lines[-3:]), flush=True)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    return lines


if __name__ == '__main__':
    print('\n'.join(main(sys.argv[1:])))
    sys.exit(0)

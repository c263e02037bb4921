"""`make reproduce PRESET=fedadam`: a Reddi et al. 2021 preset's measured accuracy beside the paper's figure.

Two steps, each a subcommand (no TensorFlow):
  python -m fedlab.reporting.reproduce data <LEAF dir>           the data overrides: EMNIST (62 classes) when TFF's
                                                                 database is cached, else the LEAF sample
  python -m fedlab.reporting.reproduce report <sweep dir> <preset>   mean ± std over the sweep's seeds vs the paper

The paper's figure is stated in the preset's header, one `# paper.<key>: <value>` line per key (a comment, so that
Hydra composes the preset as before): `figure` (what the paper measured), `accuracy` (a number in [0, 1], or
`unknown` when it could not be found) and `source` (where the number comes from).
"""

import argparse
import importlib.resources
import os
import pathlib
import re
import sys

from fedlab.data import emnist
from fedlab.reporting import stats
from fedlab.reporting.runs import COMPLETED, find_runs

PAPER_LINE = re.compile(r'^#\s*paper\.(\w+):\s*(.*?)\s*$')
PAPER_KEYS = ('figure', 'accuracy', 'source')
LEAF_CAVEAT = ('the LEAF sample (105 writers, 62 classes) is not the paper\'s setup (3,400 EMNIST writers, 1500 '
               'rounds): the numbers are not comparable, only the procedure is')


class ReproduceError(Exception):
    """A preset or sweep this script cannot report on; main() prints it on one line and exits 2."""


def preset_file(preset: str) -> pathlib.Path:
    """conf/experiment/<preset>.yaml as shipped in the package (fedlab.conf)."""
    path = pathlib.Path(str(importlib.resources.files('fedlab.conf'))) / 'experiment' / f'{preset}.yaml'
    if not path.is_file():
        raise ReproduceError(f'PRESET={preset}: no conf/experiment/{preset}.yaml')
    return path


def paper_figure(text: str, name: str = 'the preset') -> dict:
    """The `# paper.<key>: value` lines of a preset's text: figure, accuracy (float or None: unknown), source."""
    found = {m.group(1): m.group(2) for m in map(PAPER_LINE.match, text.splitlines()) if m}
    missing = [key for key in PAPER_KEYS if key not in found]
    if missing:
        raise ReproduceError(f'{name}: no "# paper.{missing[0]}:" line in its header (needs {", ".join(PAPER_KEYS)})')
    accuracy = found['accuracy']
    if accuracy.split()[0] == 'unknown':
        found['accuracy'] = None
    else:
        try:
            found['accuracy'] = float(accuracy.split()[0])
        except ValueError:
            raise ReproduceError(f'{name}: paper.accuracy is {accuracy!r}; allowed: a number in [0, 1] or unknown')
    return found


def emnist_cached(cache_dir: str | None = None) -> bool:
    """Whether TFF's EMNIST database is where fedlab.data.emnist looks for it (data.cache_dir, else ~/.tff)."""
    cache = pathlib.Path(os.path.expanduser(cache_dir or emnist.DEFAULT_CACHE_DIR))
    return (cache / emnist.FILE_NAME).is_file()


def data_overrides(leaf_path: str, cache_dir: str | None = None) -> list[str]:
    """The paper's EMNIST CR (62 classes) when it is cached; else the LEAF sample's 62 classes (never downloaded:
    the download is 1.4 GB and these machines may be offline)."""
    if emnist_cached(cache_dir):
        return ['data=emnist', 'data.digits_only=false'] + ([f'data.cache_dir={cache_dir}'] if cache_dir else [])
    return ['data=leaf', f'data.path={leaf_path}', 'data.digits_only=false']


def measured(sweep_dir: pathlib.Path) -> dict:
    """The completed runs of a sweep: final eval accuracy per seed, mean and sample std, the data and rounds."""
    runs = [run for run in find_runs(sweep_dir) if run.task == 'train']
    done = [run for run in runs if run.status == COMPLETED]
    if not done:
        raise ReproduceError(f'{sweep_dir}: no completed federated run (results.json with status completed)')
    accuracies = [((run.results.get('final_eval') or {}).get('eval') or {}).get('accuracy') for run in done]
    return {
        'seeds': [run.seed for run in done],
        'accuracies': accuracies,
        'mean': stats.mean(accuracies),
        'std': stats.std(accuracies),
        'data': sorted({str(run.choices.get('data')) for run in done}),
        'rounds': sorted({run.results.get('rounds_completed') for run in done}),
        'not_completed': len(runs) - len(done),
    }


def render(preset: str, paper: dict, result: dict) -> str:
    """The lines `make reproduce` prints: measured (mean ± std, n) against the paper, and what data it was."""
    data = ', '.join(result['data'])
    rounds = ', '.join(str(r) for r in result['rounds'])
    mean, std, n = result['mean'], result['std'], len(result['seeds'])
    lines = [
        f'reproduce {preset}: {paper["figure"]}',
        f'  measured: {mean:.4f} ± {std:.4f} final eval accuracy over {n} seeds '
        f'({", ".join(f"{a:.4f}" for a in result["accuracies"])}), data={data}, {rounds} rounds',
    ]
    if paper['accuracy'] is None:
        lines.append(f'  paper:    unknown: no number stated ({paper["source"]})')
    else:
        lines.append(f'  paper:    {paper["accuracy"]:.4f} ({paper["source"]}); measured - paper: '
                     f'{mean - paper["accuracy"]:+.4f}')
    if result['data'] != ['emnist']:
        lines.append(f'  note: {LEAF_CAVEAT}')
    if result['not_completed']:
        lines.append(f'  note: {result["not_completed"]} run(s) did not complete and are left out')
    return '\n'.join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='python -m fedlab.reporting.reproduce', description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest='command', required=True)
    data = commands.add_parser('data', help='print the data overrides (EMNIST if cached, else the LEAF sample)')
    data.add_argument('leaf_path')
    data.add_argument('--cache-dir', default=None, help="EMNIST's directory (default ~/.tff, as data.cache_dir)")
    report = commands.add_parser('report', help="print a sweep's accuracy against the preset's paper figure")
    report.add_argument('sweep_dir', type=pathlib.Path)
    report.add_argument('preset')
    return parser


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        if args.command == 'data':
            print(' '.join(data_overrides(args.leaf_path, args.cache_dir)))
            return
        path = preset_file(args.preset)
        paper = paper_figure(path.read_text(), name=str(path))
        if not args.sweep_dir.is_dir():
            raise ReproduceError(f'{args.sweep_dir}: no such directory (the sweep of make reproduce)')
        print(render(args.preset, paper, measured(args.sweep_dir)))
    except ReproduceError as error:
        print(f'reproduce: error: {error}', file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == '__main__':
    main()

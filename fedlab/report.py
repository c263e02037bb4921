"""`fedlab-report`: one table and two figures comparing every run of a sweep, from the files the runs wrote."""

# Reads results.json and metrics.csv only: no TensorFlow, so a report of a finished sweep takes a second.
import argparse
import csv
import dataclasses
import json
import pathlib
import sys

from fedlab import privacy_report

COLUMNS = [
    'run', 'task', 'data', 'model', 'aggregator', 'sampling', 'overrides', 'status', 'rounds',
    'final_eval_accuracy', 'final_eval_loss', 'best_round', 'best_eval_accuracy', 'rounds_to_target',
    'uplink_bits_per_client', 'cumulative_uplink_bits', 'cumulative_downlink_bits', 'wall_seconds',
] + privacy_report.COLUMNS  # fmt: skip
CENTRALIZED = 'centralized'


@dataclasses.dataclass(frozen=True)
class Run:
    """One run directory, as the report sees it."""

    path: pathlib.Path
    results: dict
    rows: list[dict[str, str]]  # metrics.csv

    @property
    def choices(self) -> dict:
        return self.results.get('choices') or {}

    @property
    def task(self) -> str:
        return self.choices.get('task') or 'train'

    @property
    def label(self) -> str:
        if self.task == CENTRALIZED:
            return f'{self.choices.get("model")} centralized'
        return f'{self.choices.get("model")} {self.choices.get("aggregator")}'

    def evaluated(self) -> list[tuple[int, float, int]]:
        """(round, eval accuracy, cumulative uplink bits) of every row with an evaluation."""
        points = []
        for row in self.rows:
            if row.get('eval_accuracy'):
                uplink = int(row['cumulative_uplink_bits']) if row.get('cumulative_uplink_bits') else 0
                points.append((int(row['round']), float(row['eval_accuracy']), uplink))
        return points


def find_runs(sweep_dir: pathlib.Path) -> list[Run]:
    """Every directory under `sweep_dir` with a results.json (and its metrics.csv), in path order."""
    runs = []
    for results_path in sorted(sweep_dir.rglob('results.json')):
        metrics_path = results_path.with_name('metrics.csv')
        rows = []
        if metrics_path.exists():
            with open(metrics_path, newline='') as f:
                rows = list(csv.DictReader(f))
        runs.append(Run(results_path.parent, json.loads(results_path.read_text()), rows))
    return runs


def summarize(run: Run, sweep_dir: pathlib.Path, *, target: float | None = None) -> dict:
    """The report's row for one run (COLUMNS)."""
    final_eval = (run.results.get('final_eval') or {}).get('eval') or {}
    points = run.evaluated()
    best = max(points, key=lambda p: p[1]) if points else None
    reached = [p[0] for p in points if target is not None and p[1] >= target]
    communication = run.results.get('communication') or {}
    return {
        'run': str(run.path.relative_to(sweep_dir)) if run.path != sweep_dir else run.path.name,
        'task': run.task,
        'data': run.choices.get('data'),
        'model': run.choices.get('model'),
        'aggregator': '' if run.task == CENTRALIZED else run.choices.get('aggregator'),
        'sampling': '' if run.task == CENTRALIZED else run.choices.get('sampling'),
        'overrides': ' '.join(run.results.get('overrides') or []),
        'status': run.results.get('status'),
        'rounds': run.results.get('rounds_completed'),
        'final_eval_accuracy': final_eval.get('accuracy'),
        'final_eval_loss': final_eval.get('loss'),
        'best_round': best[0] if best else None,
        'best_eval_accuracy': best[1] if best else None,
        'rounds_to_target': reached[0] if reached else None,
        'uplink_bits_per_client': communication.get('uplink_bits_per_client'),
        'cumulative_uplink_bits': communication.get('cumulative_uplink_bits'),
        'cumulative_downlink_bits': communication.get('cumulative_downlink_bits'),
        'wall_seconds': run.results.get('wall_seconds'),
        **privacy_report.columns(run.results),
    }


def model_comparison(summaries: list[dict]) -> list[dict]:
    """Per (data, model): each aggregator's accuracy and uplink against `mean`, and the gap to centralized."""
    table = []
    for data, model in sorted({(s['data'], s['model']) for s in summaries}, key=str):
        runs = [s for s in summaries if (s['data'], s['model']) == (data, model)]
        federated = {s['aggregator']: s for s in runs if s['task'] != CENTRALIZED}
        centralized = next((s for s in runs if s['task'] == CENTRALIZED), None)
        reference = federated.get('mean')
        for aggregator, s in sorted(federated.items()):
            uplink_ratio = None
            if reference and reference['uplink_bits_per_client'] and s['uplink_bits_per_client']:
                uplink_ratio = reference['uplink_bits_per_client'] / s['uplink_bits_per_client']
            gap = None
            if centralized and centralized['final_eval_accuracy'] is not None and s['final_eval_accuracy'] is not None:
                gap = centralized['final_eval_accuracy'] - s['final_eval_accuracy']
            table.append({
                'data': data,
                'model': model,
                'aggregator': aggregator,
                'eval_accuracy': s['final_eval_accuracy'],
                'best_eval_accuracy': s['best_eval_accuracy'],
                'uplink_bits_per_client': s['uplink_bits_per_client'],
                'uplink_smaller_than_mean': uplink_ratio,
                'centralized_accuracy': centralized['final_eval_accuracy'] if centralized else None,
                'gap_to_centralized': gap,
            })  # fmt: skip
    return table


def _fmt(value, digits: int = 4) -> str:
    if value is None or value == '':
        return '–'
    if isinstance(value, float):
        return f'{value:.{digits}f}'
    if isinstance(value, int) and abs(value) >= 10_000:
        return f'{value:,}'
    return str(value)


def _markdown_table(rows: list[dict], columns: list[str]) -> str:
    lines = ['| ' + ' | '.join(columns) + ' |', '|' + '---|' * len(columns)]
    digits = {c: 1 if c.endswith('seconds') else 3 if 'mib' in c else 4 for c in columns}
    lines += ['| ' + ' | '.join(_fmt(row.get(c), digits[c]) for c in columns) + ' |' for row in rows]
    return '\n'.join(lines)


def write_report(sweep_dir: pathlib.Path, out_dir: pathlib.Path, *, target: float | None = None) -> dict:
    """Writes report.md, report.csv, eval_accuracy_vs_round.png and eval_accuracy_vs_uplink.png into out_dir."""
    runs = find_runs(sweep_dir)
    if not runs:
        raise SystemExit(f'fedlab-report: error: no run directory (results.json) under {sweep_dir}')
    out_dir.mkdir(parents=True, exist_ok=True)
    summaries = [summarize(run, sweep_dir, target=target) for run in runs]
    with open(out_dir / 'report.csv', 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(summaries)
    comparison = model_comparison(summaries)
    figures = plot_curves(runs, out_dir) + privacy_report.plot(runs, out_dir)
    privacy_table = privacy_report.groups(runs)

    target_text = f' (rounds_to_target: first evaluated round with accuracy >= {target})' if target is not None else ''
    mib = [dict(s, uplink_mib=_mib(s['cumulative_uplink_bits']), downlink_mib=_mib(s['cumulative_downlink_bits']))
           for s in summaries]  # fmt: skip
    comparison_md = [
        dict(
            c,
            uplink_mib_per_client_round=_mib(c['uplink_bits_per_client']),
            uplink_smaller_than_mean=(f'{c["uplink_smaller_than_mean"]:.2f}x' if c['uplink_smaller_than_mean'] else None),
        )
        for c in comparison
    ]
    sections = [
        f'# fedlab report: {sweep_dir}',
        f'{len(runs)} runs. Accuracy is on the clients\' pooled held-out data (federated evaluation; for centralized '
        'runs the same examples); bits are what each training round transmits, from the communication ledger.',
        '## Per model: aggregators against `mean`, and the gap to centralized',
        _markdown_table(
            comparison_md,
            ['data', 'model', 'aggregator', 'eval_accuracy', 'best_eval_accuracy', 'uplink_mib_per_client_round',
             'uplink_smaller_than_mean', 'centralized_accuracy', 'gap_to_centralized'],
        ),  # fmt: skip
        f'## Runs{target_text}',
        _markdown_table(
            mib,
            ['run', 'task', 'model', 'aggregator', 'sampling', 'status', 'rounds', 'final_eval_accuracy',
             'final_eval_loss', 'best_round', 'best_eval_accuracy', 'rounds_to_target', 'uplink_mib', 'downlink_mib',
             'wall_seconds', *(['epsilon'] if privacy_table else [])],
        ),  # fmt: skip
        *privacy_report.sections(privacy_table),
        '## Figures',
        *[f'![{name}]({name})' for name in figures],
    ]
    (out_dir / 'report.md').write_text('\n\n'.join(sections) + '\n')
    return {'summaries': summaries, 'comparison': comparison, 'figures': figures, 'privacy': privacy_table}


def _mib(bits) -> float | None:
    return None if bits in (None, '') else bits / 8 / 2**20


def plot_curves(runs: list[Run], out_dir: pathlib.Path) -> list[str]:
    """Eval accuracy per round and per cumulative uplink MiB, a line per federated run; centralized dashed."""
    import matplotlib

    matplotlib.use('Agg')
    from matplotlib import pyplot as plt

    federated = [r for r in runs if r.task != CENTRALIZED and r.evaluated()]
    centralized = [r for r in runs if r.task == CENTRALIZED and r.evaluated()]
    models = sorted({r.choices.get('model') for r in runs}, key=str)
    colors = {m: plt.get_cmap('tab10')(i % 10) for i, m in enumerate(models)}
    styles = {}
    for r in federated:
        aggregator = r.choices.get('aggregator')
        styles.setdefault(aggregator, ['-', '--', ':', '-.'][len(styles) % 4] if styles else '-')

    names = []
    for name, x_label, x_of in [
        ('eval_accuracy_vs_round.png', 'round', lambda p: p[0]),
        ('eval_accuracy_vs_uplink.png', 'cumulative uplink, all clients (MiB, log scale)', lambda p: p[2] / 8 / 2**20),
    ]:
        figure, axis = plt.subplots(figsize=(8, 5))
        for run in federated:
            points = run.evaluated()
            axis.plot(
                [x_of(p) for p in points],
                [p[1] for p in points],
                linestyle=styles[run.choices.get('aggregator')],
                marker='o' if len(points) < 30 else None,
                markersize=3,
                color=colors[run.choices.get('model')],
                label=run.label,
            )
        for run in centralized:
            accuracy = run.evaluated()[-1][1]
            axis.axhline(accuracy, color=colors[run.choices.get('model')], linestyle=(0, (1, 3)), linewidth=1.5,
                         label=f'{run.label} (final, {accuracy:.3f})')  # fmt: skip
        if 'uplink' in name:
            axis.set_xscale('log')
        axis.set_xlabel(x_label)
        axis.set_ylabel('eval accuracy (pooled held-out data)')
        axis.set_ylim(0, 1)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8, loc='lower right')
        figure.tight_layout()
        figure.savefig(out_dir / name, dpi=100)
        plt.close(figure)
        names.append(name)
    return names


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog='fedlab-report',
        description='Compare every run of a sweep (or any directory of run directories): writes report.md, '
        'report.csv and PNG figures.',
    )
    parser.add_argument('sweep_dir', type=pathlib.Path, help='a multirun directory, e.g. multirun/2026-01-01_12-00-00')
    parser.add_argument('--out', type=pathlib.Path, default=None, help='where to write (default: the sweep dir)')
    parser.add_argument('--target', type=float, default=None, help='report the first round reaching this accuracy')
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        parser.error(f'{args.sweep_dir} is not a directory')
    out_dir = args.out or args.sweep_dir
    report = write_report(args.sweep_dir, out_dir, target=args.target)
    print(f'{len(report["summaries"])} runs -> {out_dir / "report.md"}, report.csv, {", ".join(report["figures"])}')
    for row in report['comparison']:
        ratio = f'{row["uplink_smaller_than_mean"]:.2f}x' if row['uplink_smaller_than_mean'] else '–'
        print(
            f'  {row["model"]:>12} {row["aggregator"]:<12} accuracy {_fmt(row["eval_accuracy"])}  uplink vs mean '
            f'{ratio}  centralized {_fmt(row["centralized_accuracy"])}  gap {_fmt(row["gap_to_centralized"])}'
        )
    if report['privacy']:
        print(privacy_report.markdown(report['privacy']))


if __name__ == '__main__':
    main(sys.argv[1:])

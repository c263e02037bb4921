"""`fedlab-report`: compares every run of a sweep, from the files the runs wrote: runs that differ only in their seed
form a group, reported as mean ± standard deviation over its seeds; runs that did not complete are listed apart."""

# Reads results.json and metrics.csv only: no TensorFlow, so a report of a finished sweep takes a second.
import argparse
import csv
import dataclasses
import json
import pathlib
import statistics
import sys

from fedlab.reporting import privacy

COLUMNS = [
    'run', 'group', 'seed', 'task', 'data', 'model', 'aggregator', 'sampling', 'overrides', 'status', 'rounds',
    'final_eval_accuracy', 'final_eval_loss', 'best_round', 'best_eval_accuracy', 'rounds_to_target',
    'uplink_bits_per_client', 'cumulative_uplink_bits', 'cumulative_downlink_bits', 'wall_seconds',
] + privacy.COLUMNS  # fmt: skip
GROUP_COLUMNS = [
    'group', 'task', 'data', 'model', 'aggregator', 'seeds', 'final_eval_accuracy_mean', 'final_eval_accuracy_std',
    'final_eval_loss_mean', 'best_eval_accuracy_mean', 'rounds_to_target_mean', 'reached_target',
    'uplink_bits_per_client', 'cumulative_uplink_bits', 'wall_seconds_mean',
]  # fmt: skip
CENTRALIZED = 'centralized'
COMPLETED = 'completed'
# Keys that say which run of an experiment this is, not which experiment: left out when grouping.
NOT_THE_EXPERIMENT = {'seed', 'resume'}
# Groups are named by what differs between them, these first, in this order.
NAMING_KEYS = ['task', 'data', 'model', 'algorithm', 'aggregator', 'server_optimizer', 'client_optimizer', 'sampling']


class ReportError(Exception):
    """A comparison the report cannot make without guessing; main() prints it on one line and exits 2."""


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
    def status(self) -> str:
        return self.results.get('status') or 'unknown'

    @property
    def seed(self):
        config = self.results.get('config') or {}
        return config.get('seed', _override(self.results, 'seed'))

    def experiment(self) -> dict[str, str]:
        """What defines the experiment this run is a replicate of: its config choices and settings, flattened to
        dotted keys, without the seed (runs from before the full config was recorded: choices and overrides)."""
        flat = {f'choice.{group}': str(option) for group, option in self.choices.items()}
        config = self.results.get('config')
        if config is not None:
            flat.update(_flatten(config))
        else:
            for override in self.results.get('overrides') or []:
                key, _, value = override.partition('=')
                flat[key.lstrip('+~')] = value
        return {k: v for k, v in flat.items() if not NOT_THE_EXPERIMENT & set(k.split('.'))}

    def evaluated(self) -> list[tuple[int, float, int]]:
        """(round, eval accuracy, cumulative uplink bits) of every row with an evaluation."""
        points = []
        for row in self.rows:
            if row.get('eval_accuracy'):
                uplink = int(row['cumulative_uplink_bits']) if row.get('cumulative_uplink_bits') else 0
                points.append((int(row['round']), float(row['eval_accuracy']), uplink))
        return points


def _flatten(config: dict, prefix: str = '') -> dict[str, str]:
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f'{prefix}{key}.'))
        else:
            flat[f'{prefix}{key}'] = json.dumps(value) if isinstance(value, list) else str(value)
    return flat


def _override(results: dict, key: str):
    for override in results.get('overrides') or []:
        if override.split('=', 1)[0].lstrip('+~') == key:
            return override.split('=', 1)[1]
    return None


@dataclasses.dataclass
class Group:
    """Completed runs of one experiment that differ only in their seed."""

    experiment: dict[str, str]
    runs: list[Run]
    label: str = ''

    @property
    def choices(self) -> dict:
        return self.runs[0].choices

    @property
    def task(self) -> str:
        return self.runs[0].task


def find_runs(sweep_dir: pathlib.Path) -> list[Run]:
    """Every run directory under `sweep_dir` (a results.json beside its metrics.csv), in path order. Data tours
    (task=explore) have no metrics and are left out."""
    runs = []
    for results_path in sorted(sweep_dir.rglob('results.json')):
        metrics_path = results_path.with_name('metrics.csv')
        rows = []
        if metrics_path.exists():
            with open(metrics_path, newline='') as f:
                rows = list(csv.DictReader(f))
        run = Run(results_path.parent, json.loads(results_path.read_text()), rows)
        if run.task != 'explore':
            runs.append(run)
    return runs


def group_runs(runs: list[Run]) -> list[Group]:
    """Completed runs grouped by their experiment (config minus seed), each group named by the settings that
    differ between groups. Two runs of one group with the same seed are a repeat that would count twice: refused."""
    groups: dict[tuple, Group] = {}
    for run in runs:
        if run.status != COMPLETED:
            continue
        experiment = run.experiment()
        key = tuple(sorted(experiment.items()))
        groups.setdefault(key, Group(experiment, [])).runs.append(run)
    for group in groups.values():
        seeds = [str(run.seed) for run in group.runs]
        repeated = sorted({s for s in seeds if seeds.count(s) > 1})
        if repeated:
            paths = ', '.join(str(r.path.name) for r in group.runs if str(r.seed) in repeated)
            raise ReportError(
                f'runs {paths} are the same experiment with the same seed ({", ".join(repeated)}): a repeat would be '
                'counted twice; remove one or report them from separate directories'
            )
    result = list(groups.values())
    _name(result)
    return result


def _name(groups: list[Group]) -> None:
    """Labels each group with the settings that tell it apart from the others (choices first)."""
    keys = sorted({k for g in groups for k in g.experiment})
    differing = [k for k in keys if len({g.experiment.get(k) for g in groups}) > 1]
    choices = [f'choice.{k}' for k in NAMING_KEYS if f'choice.{k}' in differing]
    others = [k for k in differing if not k.startswith('choice.') and not _belongs_to_a_choice(k, choices)]
    for group in groups:
        parts = [f'{k.removeprefix("choice.")}={group.experiment[k]}' for k in choices if k in group.experiment]
        parts += [f'{k}={group.experiment[k]}' for k in others if k in group.experiment]
        group.label = ' '.join(parts) or 'all runs'


def _belongs_to_a_choice(key: str, choice_keys: list[str]) -> bool:
    """data.num_clients differs because data differs: naming the choice says it already."""
    return key.split('.')[0] in {c.removeprefix('choice.') for c in choice_keys} and key.split('.')[0] != key


def summarize(run: Run, sweep_dir: pathlib.Path, *, target: float | None = None, group: str = '') -> dict:
    """The report's row for one run (COLUMNS)."""
    final_eval = (run.results.get('final_eval') or {}).get('eval') or {}
    points = run.evaluated()
    best = max(points, key=lambda p: p[1]) if points else None
    reached = [p[0] for p in points if target is not None and p[1] >= target]
    communication = run.results.get('communication') or {}
    return {
        'run': str(run.path.relative_to(sweep_dir)) if run.path != sweep_dir else run.path.name,
        'group': group,
        'seed': run.seed,
        'task': run.task,
        'data': run.choices.get('data'),
        'model': run.choices.get('model'),
        'aggregator': '' if run.task == CENTRALIZED else run.choices.get('aggregator'),
        'sampling': '' if run.task == CENTRALIZED else run.choices.get('sampling'),
        'overrides': ' '.join(run.results.get('overrides') or []),
        'status': run.status,
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
        'error': run.results.get('error', ''),
        **privacy.columns(run.results),
    }


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def _std(values: list) -> float | None:
    """Sample standard deviation over seeds (0 for one seed)."""
    values = [v for v in values if v is not None]
    return statistics.stdev(values) if len(values) > 1 else (0.0 if values else None)


def summarize_group(group: Group, rows: list[dict]) -> dict:
    """The report's row for one group (GROUP_COLUMNS): means and standard deviations over its seeds."""
    accuracy = [r['final_eval_accuracy'] for r in rows]
    reached = [r['rounds_to_target'] for r in rows if r['rounds_to_target'] is not None]
    first = rows[0]
    return {
        'group': group.label,
        'task': group.task,
        'data': first['data'],
        'model': first['model'],
        'aggregator': first['aggregator'],
        'seeds': len(rows),
        'final_eval_accuracy_mean': _mean(accuracy),
        'final_eval_accuracy_std': _std(accuracy),
        'final_eval_loss_mean': _mean([r['final_eval_loss'] for r in rows]),
        'best_eval_accuracy_mean': _mean([r['best_eval_accuracy'] for r in rows]),
        'rounds_to_target_mean': _mean(reached),
        'reached_target': f'{len(reached)}/{len(rows)}',
        'uplink_bits_per_client': first['uplink_bits_per_client'],
        'cumulative_uplink_bits': _mean([r['cumulative_uplink_bits'] for r in rows]),
        'wall_seconds_mean': _mean([r['wall_seconds'] for r in rows]),
    }


def _without(experiment: dict[str, str], *prefixes: str) -> dict[str, str]:
    return {k: v for k, v in experiment.items() if not k.startswith(prefixes)}


def comparison(groups: list[Group], summaries: dict[str, dict]) -> list[dict]:
    """Per federated group: its accuracy; its uplink against the group that differs only by aggregator=mean; the
    gap to the centralized baseline of the same data and model. Raises ReportError if that baseline is ambiguous."""
    federated = [g for g in groups if g.task != CENTRALIZED]
    centralized = [g for g in groups if g.task == CENTRALIZED]
    table = []
    for group in federated:
        row = summaries[group.label]
        data_model = {k: group.experiment.get(k) for k in ('choice.data', 'choice.model')}
        baselines = [g for g in centralized if all(g.experiment.get(k) == v for k, v in data_model.items())]
        if len(baselines) > 1:
            differ = sorted(k for k in {k for g in baselines for k in g.experiment}
                            if len({g.experiment.get(k) for g in baselines}) > 1)  # fmt: skip
            raise ReportError(
                f'{len(baselines)} centralized baselines for data={data_model["choice.data"]} model='
                f'{data_model["choice.model"]} differ in {", ".join(differ)}: which one the federated runs should be '
                'compared with is ambiguous; report them from separate directories'
            )
        without_aggregator = _without(group.experiment, 'aggregator.', 'choice.aggregator')
        reference = next(
            (g for g in federated if g.choices.get('aggregator') == 'mean'
             and _without(g.experiment, 'aggregator.', 'choice.aggregator') == without_aggregator),
            None,
        )  # fmt: skip
        uplink_ratio = None
        if reference is not None:
            mine, theirs = row['uplink_bits_per_client'], summaries[reference.label]['uplink_bits_per_client']
            uplink_ratio = theirs / mine if mine and theirs else None
        central = summaries[baselines[0].label] if baselines else None
        central_accuracy = central['final_eval_accuracy_mean'] if central else None
        accuracy = row['final_eval_accuracy_mean']
        table.append({
            'group': group.label,
            'data': row['data'],
            'model': row['model'],
            'aggregator': row['aggregator'],
            'seeds': row['seeds'],
            'eval_accuracy': accuracy,
            'eval_accuracy_std': row['final_eval_accuracy_std'],
            'best_eval_accuracy': row['best_eval_accuracy_mean'],
            'uplink_bits_per_client': row['uplink_bits_per_client'],
            'uplink_smaller_than_mean': uplink_ratio,
            'centralized_accuracy': central_accuracy,
            'gap_to_centralized': central_accuracy - accuracy if None not in (central_accuracy, accuracy) else None,
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


def _plus_minus(mean, std, seeds) -> str:
    return '–' if mean is None else f'{mean:.4f} ± {std:.4f} (n={seeds})'


def _markdown_table(rows: list[dict], columns: list[str]) -> str:
    lines = ['| ' + ' | '.join(columns) + ' |', '|' + '---|' * len(columns)]
    digits = {c: 1 if c.endswith('seconds') else 3 if 'mib' in c else 4 for c in columns}
    lines += ['| ' + ' | '.join(_fmt(row.get(c), digits[c]) for c in columns) + ' |' for row in rows]
    return '\n'.join(lines)


def write_report(sweep_dir: pathlib.Path, out_dir: pathlib.Path, *, target: float | None = None) -> dict:
    """Writes report.md, report.csv (a row per run), report_groups.csv (a row per group) and the figures."""
    runs = find_runs(sweep_dir)
    if not runs:
        raise ReportError(f'no run directory (results.json) under {sweep_dir}')
    groups = group_runs(runs)
    label_of = {id(run): group.label for group in groups for run in group.runs}
    summaries = [summarize(run, sweep_dir, target=target, group=label_of.get(id(run), '')) for run in runs]
    by_group = {g.label: summarize_group(g, [s for s, r in zip(summaries, runs) if id(r) in {id(x) for x in g.runs}])
                for g in groups}  # fmt: skip
    compared = comparison(groups, by_group)
    not_completed = [s for s in summaries if s['status'] != COMPLETED]

    out_dir.mkdir(parents=True, exist_ok=True)
    _write_csv(out_dir / 'report.csv', COLUMNS, summaries)
    _write_csv(out_dir / 'report_groups.csv', GROUP_COLUMNS, list(by_group.values()))
    figures = plot_curves(groups, out_dir) + privacy.plot(groups, out_dir)

    target_text = f' (rounds_to_target: first evaluated round with accuracy >= {target})' if target is not None else ''
    group_rows = [dict(row, final_eval_accuracy=_plus_minus(row['final_eval_accuracy_mean'],
                                                            row['final_eval_accuracy_std'], row['seeds']),
                       uplink_mib=_mib(row['cumulative_uplink_bits'])) for row in by_group.values()]  # fmt: skip
    comparison_md = [
        dict(
            c,
            eval_accuracy=_plus_minus(c['eval_accuracy'], c['eval_accuracy_std'], c['seeds']),
            uplink_mib_per_client_round=_mib(c['uplink_bits_per_client']),
            uplink_smaller_than_mean=(f'{c["uplink_smaller_than_mean"]:.2f}x' if c['uplink_smaller_than_mean'] else None),
        )
        for c in compared
    ]
    runs_md = [dict(s, uplink_mib=_mib(s['cumulative_uplink_bits']), downlink_mib=_mib(s['cumulative_downlink_bits']))
               for s in summaries]  # fmt: skip
    sections = [
        f'# fedlab report: {sweep_dir}',
        f'{len(runs)} runs, {len(runs) - len(not_completed)} completed, in {len(groups)} groups (runs that differ '
        'only in their seed; mean ± sample standard deviation over the seeds, n = seeds). Accuracy is on the '
        'clients\' pooled held-out data (federated evaluation; for centralized runs the same examples), the last '
        'round\'s; bits are what each training round transmits, from the communication ledger.',
        f'## Groups{target_text}',
        _markdown_table(group_rows, ['group', 'final_eval_accuracy', 'best_eval_accuracy_mean', 'rounds_to_target_mean',
                                     'reached_target', 'uplink_mib', 'wall_seconds_mean']),  # fmt: skip
        '## Federated groups against `aggregator=mean` and the centralized baseline',
        _markdown_table(
            comparison_md,
            ['group', 'eval_accuracy', 'uplink_mib_per_client_round', 'uplink_smaller_than_mean',
             'centralized_accuracy', 'gap_to_centralized'],
        ),  # fmt: skip
    ]
    if not_completed:
        sections += [
            '## Runs that did not complete (not in any group)',
            _markdown_table(not_completed, ['run', 'status', 'rounds', 'error']),
        ]
    sections += privacy.sections(groups)
    sections += [
        '## Runs',
        _markdown_table(
            runs_md,
            ['run', 'group', 'seed', 'status', 'rounds', 'final_eval_accuracy', 'final_eval_loss', 'best_round',
             'best_eval_accuracy', 'rounds_to_target', 'uplink_mib', 'downlink_mib', 'wall_seconds'],
        ),  # fmt: skip
        '## Figures',
        *[f'![{name}]({name})' for name in figures],
    ]
    (out_dir / 'report.md').write_text('\n\n'.join(sections) + '\n')
    return {'summaries': summaries, 'groups': by_group, 'comparison': compared, 'not_completed': not_completed,
            'figures': figures, 'privacy': privacy.table(groups)}  # fmt: skip


def _write_csv(path: pathlib.Path, columns: list[str], rows: list[dict]) -> None:
    with open(path, 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction='ignore')
        writer.writeheader()
        writer.writerows(rows)


def _mib(bits) -> float | None:
    return None if bits in (None, '') else bits / 8 / 2**20


def _mean_curve(runs: list[Run]) -> list[tuple[int, float, float, float]]:
    """(round, mean accuracy, std, mean cumulative uplink bits) at the rounds every run of the group evaluated."""
    by_run = [{p[0]: p for p in run.evaluated()} for run in runs]
    rounds = sorted(set.intersection(*(set(points) for points in by_run))) if by_run else []
    curve = []
    for round_num in rounds:
        accuracies = [points[round_num][1] for points in by_run]
        curve.append((round_num, _mean(accuracies), _std(accuracies), _mean([p[round_num][2] for p in by_run])))
    return curve


def plot_curves(groups: list[Group], out_dir: pathlib.Path) -> list[str]:
    """Eval accuracy per round and per cumulative uplink MiB: a line per federated group (mean over seeds, band of
    ± one standard deviation), centralized groups as dotted horizontal lines at their final accuracy."""
    import matplotlib

    matplotlib.use('Agg')
    from matplotlib import pyplot as plt

    federated = [g for g in groups if g.task != CENTRALIZED and _mean_curve(g.runs)]
    centralized = [g for g in groups if g.task == CENTRALIZED and _mean_curve(g.runs)]
    colors = {g.label: plt.get_cmap('tab10')(i % 10) for i, g in enumerate(federated + centralized)}
    names = []
    for name, x_label, x_of in [
        ('eval_accuracy_vs_round.png', 'round', lambda p: p[0]),
        ('eval_accuracy_vs_uplink.png', 'cumulative uplink, all clients (MiB, log scale)', lambda p: p[3] / 8 / 2**20),
    ]:
        figure, axis = plt.subplots(figsize=(8, 5))
        for group in federated:
            curve = _mean_curve(group.runs)
            x = [x_of(p) for p in curve]
            mean = [p[1] for p in curve]
            axis.plot(x, mean, marker='o' if len(curve) < 30 else None, markersize=3, color=colors[group.label],
                      label=f'{group.label} (n={len(group.runs)})')  # fmt: skip
            if len(group.runs) > 1:
                axis.fill_between(x, [m - p[2] for m, p in zip(mean, curve)], [m + p[2] for m, p in zip(mean, curve)],
                                  color=colors[group.label], alpha=0.2, linewidth=0)  # fmt: skip
        for group in centralized:
            accuracy = _mean_curve(group.runs)[-1][1]
            axis.axhline(accuracy, color=colors[group.label], linestyle=(0, (1, 3)), linewidth=1.5,
                         label=f'{group.label} (final, {accuracy:.3f})')  # fmt: skip
        if 'uplink' in name:
            axis.set_xscale('log')
        save_accuracy_plot(figure, axis, x_label, out_dir / name)
        names.append(name)
    return names


def save_accuracy_plot(figure, axis, x_label: str, path: pathlib.Path) -> None:
    """The finish every accuracy plot of the reports shares: labels, the 0-1 range, grid, legend; saved, closed."""
    from matplotlib import pyplot as plt

    axis.set_xlabel(x_label)
    axis.set_ylabel('eval accuracy (pooled held-out data)')
    axis.set_ylim(0, 1)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7, loc='lower right')
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog='fedlab-report',
        description='Compare every run of a sweep (or any directory of run directories): groups runs that differ '
        'only in their seed (mean ± std over seeds) and writes report.md, report.csv, report_groups.csv and PNGs.',
    )
    parser.add_argument('sweep_dir', type=pathlib.Path, help='a multirun directory, e.g. multirun/2026-01-01_12-00-00')
    parser.add_argument('--out', type=pathlib.Path, default=None, help='where to write (default: the sweep dir)')
    parser.add_argument('--target', type=float, default=None, help='report the first round reaching this accuracy')
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        parser.error(f'{args.sweep_dir} is not a directory')
    out_dir = args.out or args.sweep_dir
    try:
        report = write_report(args.sweep_dir, out_dir, target=args.target)
    except ReportError as error:
        print(f'fedlab-report: error: {error}', file=sys.stderr)
        raise SystemExit(2) from None
    print(f'{len(report["summaries"])} runs in {len(report["groups"])} groups -> {out_dir / "report.md"}, report.csv, '
          f'report_groups.csv, {", ".join(report["figures"])}')  # fmt: skip
    for row in report['groups'].values():
        print(f'  {row["group"]}: accuracy '
              f'{_plus_minus(row["final_eval_accuracy_mean"], row["final_eval_accuracy_std"], row["seeds"])}')
    if report['privacy']:
        print(privacy.markdown(report['privacy']))
    for row in report['not_completed']:
        print(f'  not completed: {row["run"]}: {row["status"]}' + (f': {row["error"]}' if row['error'] else ''))


if __name__ == '__main__':
    main(sys.argv[1:])

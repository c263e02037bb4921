"""fedlab-report's privacy part: accuracy against epsilon, from results.json and metrics.csv (no TensorFlow).

Runs of a DP aggregator carry an `epsilon` column in metrics.csv and a `privacy` block in results.json
(fedlab.privacy.accounting). fedlab.reporting.runs groups runs that differ only by seed; epsilon is the same for every
seed of a group (it depends on q, z, rounds and delta only), accuracy is the mean over the seeds.

Below fedlab.reporting.report, which calls it; it never imports report.
"""

import math
import pathlib

from fedlab.reporting import plots, stats

COLUMNS = ['noise_multiplier', 'sampling_rate', 'delta', 'epsilon', 'epsilon_rdp', 'epsilon_pld', 'accountant']
FIGURE = 'eval_accuracy_vs_epsilon.png'


def _number(value) -> float | None:
    if value in (None, ''):
        return None
    return float(value)  # 'inf' too


def columns(results: dict) -> dict:
    """A run's privacy columns for the report's per-run table (empty values for runs without DP)."""
    privacy = results.get('privacy') or {}
    return {column: privacy.get(column) for column in COLUMNS}


def accuracy_vs_epsilon(run) -> list[tuple[int, float, float]]:
    """(round, eval accuracy, epsilon after that round) of every evaluated round of a DP run."""
    points = []
    for row in run.rows:
        if row.get('eval_accuracy') and row.get('epsilon'):
            points.append((int(row['round']), float(row['eval_accuracy']), float(row['epsilon'])))
    return points


def _format_epsilon(value) -> str:
    value = _number(value)
    if value is None:
        return '–'
    return '∞' if math.isinf(value) else f'{value:.3g}'


def _best_accuracy(run) -> float | None:
    return max((accuracy for _, accuracy, _ in accuracy_vs_epsilon(run)), default=None)


def _curve(runs) -> list[tuple[int, float, float]]:
    """(round, mean eval accuracy over the runs, epsilon) at the rounds every run evaluated; epsilon is the same
    for every seed of a group (it depends on q, z, rounds and delta only)."""
    by_run = [{p[0]: p for p in accuracy_vs_epsilon(run)} for run in runs]
    return [(r, stats.mean([points[r][1] for points in by_run]), by_run[0][r][2]) for r in stats.common_rounds(by_run)]


def _pld(privacy: dict) -> float | None:
    """PLD's epsilon for a run that accounted by RDP (runs compute PLD only when it is their accountant: it costs
    seconds a round); the same dp_accounting computation, once per group."""
    if privacy.get('noise_multiplier') is None or not privacy.get('rounds'):
        return None
    if float(privacy['noise_multiplier']) == 0:
        return math.inf
    from fedlab.privacy import accounting  # dp_accounting: numpy and scipy, no TensorFlow

    return accounting.epsilon(
        float(privacy['noise_multiplier']),
        float(privacy['sampling_rate']),
        int(privacy['rounds']),
        float(privacy['delta']),
        'pld',
    )


def table(groups) -> list[dict]:
    """One row per group of DP runs (runs.Group: runs that differ only by seed): the privacy spent, and the
    final eval accuracy as mean +- std over the seeds; by noise multiplier, then group."""
    rows = [_row(group) for group in groups if group.runs[0].results.get('privacy')]
    return sorted(rows, key=lambda row: (_number(row['noise_multiplier']) or 0.0, row['group']))


def _row(group) -> dict:
    privacy = group.runs[0].results['privacy']
    accuracies = [
        float(r.results['final_eval']['eval']['accuracy'])
        for r in group.runs
        if (r.results.get('final_eval') or {}).get('eval', {}).get('accuracy') is not None
    ]
    return {
        'group': group.label,
        'noise_multiplier': privacy.get('noise_multiplier'),
        'sampling_rate': privacy.get('sampling_rate'),
        'delta': privacy.get('delta'),
        'rounds': privacy.get('rounds'),
        'epsilon_rdp': privacy.get('epsilon_rdp'),
        'epsilon_pld': privacy.get('epsilon_pld') or _pld(privacy),
        'seeds': len(group.runs),
        'accuracy_mean': stats.mean(accuracies),
        'accuracy_std': stats.std(accuracies),
        'best_accuracy_mean': stats.mean([_best_accuracy(run) for run in group.runs]),
    }


def markdown(rows: list[dict]) -> str:
    """The accuracy-vs-epsilon table, the way TFF's DP tutorial reports accuracy against noise."""
    lines = [
        '| group | noise multiplier z | q | δ | rounds | ε (RDP) | ε (PLD) | final eval accuracy (mean ± std) '
        '| best evaluated accuracy (mean) | seeds |',
        '|---|---|---|---|---|---|---|---|---|---|',
    ]
    for row in rows:
        accuracy = '–' if row['accuracy_mean'] is None else f'{row["accuracy_mean"]:.4f}'
        if row['accuracy_mean'] is not None and row['seeds'] > 1:  # one seed has no spread to show
            accuracy += f' ± {row["accuracy_std"]:.4f}'
        best = '–' if row['best_accuracy_mean'] is None else f'{row["best_accuracy_mean"]:.4f}'
        lines.append(
            f'| {row["group"]} | {row["noise_multiplier"]} | {row["sampling_rate"]:.3g} | {row["delta"]:.3g} | '
            f'{row["rounds"]} | {_format_epsilon(row["epsilon_rdp"])} | {_format_epsilon(row["epsilon_pld"])} | '
            f'{accuracy} | {best} | {row["seeds"]} |'
        )
    return '\n'.join(lines)


def sections(rows: list[dict]) -> list[str]:
    """report.md's privacy section for the rows of table(): a heading and the table (nothing without DP runs)."""
    if not rows:
        return []
    return ['## Privacy: accuracy against ε (mean over the seeds of each group)', markdown(rows)]


def plot(groups, out_dir: pathlib.Path, name: str = FIGURE) -> list[str]:
    """Eval accuracy (mean over seeds) against the epsilon spent so far, a line per group of DP runs; groups
    without noise (epsilon infinite) are drawn as dotted lines at their final accuracy. Returns [name] or []."""
    curves = [(group, _curve(group.runs)) for group in groups if group.runs[0].results.get('privacy')]
    curves = [(group, curve) for group, curve in curves if curve]
    if not curves:
        return []
    plt = plots.pyplot()
    figure, axis = plt.subplots(figsize=(8, 5))
    for i, (group, curve) in enumerate(curves):
        _draw(axis, group, curve, plt.get_cmap('tab10')(i % 10))
    _log_epsilon_axis(axis)
    plots.save_accuracy_plot(figure, axis, 'ε spent so far (at the δ of results.json; log scale)', out_dir / name)
    return [name]


def _draw(axis, group, curve: list[tuple[int, float, float]], color) -> None:
    """A group's accuracy against its finite epsilons; without noise (every epsilon infinite), a dotted line at its
    final accuracy."""
    label = f'{group.label} (n={len(group.runs)})'
    finite = [p for p in curve if math.isfinite(p[2])]
    if finite:
        axis.plot([p[2] for p in finite], [p[1] for p in finite], marker='o', markersize=3, color=color, label=label)
    else:  # no noise: no guarantee to plot against
        axis.axhline(curve[-1][1], color=color, linestyle=':', linewidth=1.5, label=f'{label}: no noise, ε = ∞')


def _log_epsilon_axis(axis) -> None:
    from matplotlib import ticker

    axis.set_xscale('log')
    axis.xaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.xaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f'{value:g}'))
    axis.xaxis.set_minor_formatter(ticker.NullFormatter())

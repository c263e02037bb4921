"""fedlab-report's privacy part: accuracy against epsilon, from results.json and metrics.csv (no TensorFlow).

Runs of a DP aggregator carry an `epsilon` column in metrics.csv and a `privacy` block in results.json
(fedlab.accounting). Runs of the same config but for the seed are grouped: epsilon is the same for every seed
(it depends on q, z, rounds and delta only), accuracy is reported as mean +- std over the seeds.
"""

import math
import pathlib
import statistics

COLUMNS = ['noise_multiplier', 'sampling_rate', 'delta', 'epsilon', 'epsilon_rdp', 'epsilon_pld', 'accountant']


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


def _without_seed(value):
    """The config minus every `seed` key: runs that differ only by seed form one group."""
    if isinstance(value, dict):
        return tuple(sorted((k, _without_seed(v)) for k, v in value.items() if k != 'seed'))
    if isinstance(value, list):
        return tuple(_without_seed(v) for v in value)
    return value


def _format_epsilon(value) -> str:
    value = _number(value)
    if value is None:
        return '–'
    return '∞' if math.isinf(value) else f'{value:.3g}'


def groups(runs) -> list[dict]:
    """One row per config minus seed, for DP runs: epsilon, and final eval accuracy as mean +- std over seeds."""
    by_config: dict = {}
    for run in runs:
        if run.results.get('privacy'):
            by_config.setdefault(_without_seed(run.results.get('config') or {}), []).append(run)
    table = []
    for members in by_config.values():
        privacy = members[0].results['privacy']
        accuracies = [
            float(r.results['final_eval']['eval']['accuracy'])
            for r in members
            if (r.results.get('final_eval') or {}).get('eval', {}).get('accuracy') is not None
        ]
        table.append({
            'aggregator': members[0].choices.get('aggregator'),
            'noise_multiplier': privacy.get('noise_multiplier'),
            'sampling_rate': privacy.get('sampling_rate'),
            'delta': privacy.get('delta'),
            'rounds': privacy.get('rounds'),
            'epsilon': privacy.get('epsilon'),
            'epsilon_rdp': privacy.get('epsilon_rdp'),
            'epsilon_pld': privacy.get('epsilon_pld'),
            'seeds': len(members),
            'accuracy_mean': statistics.fmean(accuracies) if accuracies else None,
            'accuracy_std': statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0 if accuracies else None,
        })  # fmt: skip
    return sorted(table, key=lambda g: (str(g['aggregator']), _number(g['noise_multiplier']) or 0.0))


def markdown(table: list[dict]) -> str:
    """The accuracy-vs-epsilon table, the way TFF's DP tutorial reports accuracy against noise."""
    lines = [
        '| aggregator | noise multiplier z | q | δ | rounds | ε (RDP) | ε (PLD) | eval accuracy (mean ± std) '
        '| seeds |',
        '|---|---|---|---|---|---|---|---|---|',
    ]
    for g in table:
        accuracy = '–' if g['accuracy_mean'] is None else f'{g["accuracy_mean"]:.4f} ± {g["accuracy_std"]:.4f}'
        lines.append(
            f'| {g["aggregator"]} | {g["noise_multiplier"]} | {g["sampling_rate"]:.3g} | {g["delta"]:.3g} | '
            f'{g["rounds"]} | {_format_epsilon(g["epsilon_rdp"])} | {_format_epsilon(g["epsilon_pld"])} | '
            f'{accuracy} | {g["seeds"]} |'
        )
    return '\n'.join(lines)


def sections(table: list[dict]) -> list[str]:
    """report.md's privacy section: a heading and the table (nothing without DP runs)."""
    if not table:
        return []
    return ['## Privacy: accuracy against ε (runs that differ only by seed grouped)', markdown(table)]


def plot(runs, out_dir: pathlib.Path, name: str = 'eval_accuracy_vs_epsilon.png') -> list[str]:
    """Eval accuracy against the epsilon spent so far, a line per DP run (a colour per noise multiplier); runs
    without noise (epsilon infinite) are drawn as dotted lines of their final accuracy. Returns [name] or []."""
    dp_runs = [r for r in runs if r.results.get('privacy') and accuracy_vs_epsilon(r)]
    if not dp_runs:
        return []
    import matplotlib

    matplotlib.use('Agg')
    from matplotlib import pyplot as plt

    multipliers = sorted({float(r.results['privacy']['noise_multiplier']) for r in dp_runs})
    colors = {z: plt.get_cmap('viridis')(i / max(1, len(multipliers) - 1)) for i, z in enumerate(multipliers)}
    figure, axis = plt.subplots(figsize=(8, 5))
    labelled = set()
    for run in dp_runs:
        z = float(run.results['privacy']['noise_multiplier'])
        points = accuracy_vs_epsilon(run)
        label = None if z in labelled else f'z={z:g}'
        labelled.add(z)
        finite = [p for p in points if math.isfinite(p[2])]
        if finite:
            axis.plot([p[2] for p in finite], [p[1] for p in finite], marker='o', markersize=3, color=colors[z],
                      label=label)  # fmt: skip
        else:  # no noise: no guarantee to plot against
            axis.axhline(points[-1][1], color=colors[z], linestyle=':', linewidth=1.5,
                         label=None if label is None else f'{label} (no noise: ε = ∞)')  # fmt: skip
    axis.set_xscale('log')
    axis.set_xlabel('ε spent so far (δ as in results.json; log scale)')
    axis.set_ylabel('eval accuracy (pooled held-out data)')
    axis.set_ylim(0, 1)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, loc='lower right')
    figure.tight_layout()
    figure.savefig(out_dir / name, dpi=100)
    plt.close(figure)
    return [name]

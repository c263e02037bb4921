"""fedlab-report's figures (matplotlib, Agg backend: files, no display): eval accuracy per round and per cumulative
uplink, a line per federated group; and the finish every accuracy plot of the report shares (privacy's too)."""

import pathlib

from fedlab.reporting import stats
from fedlab.reporting.runs import CENTRALIZED, Group

MIB = 8 * 2**20  # bits
# name, x axis label, x of a stats.mean_curve point, log scale
CURVE_FIGURES = [
    ('eval_accuracy_vs_round.png', 'round', lambda point: point[0], False),
    ('eval_accuracy_vs_uplink.png', 'cumulative uplink, all clients (MiB, log scale)', lambda point: point[3] / MIB,
     True),
]  # fmt: skip
# Only when some group ran on a simulated clock (system=heterogeneous | trace); its groups without one are left out.
SIM_TIME_FIGURE = ('eval_accuracy_vs_sim_time.png', 'simulated time (s)', lambda point: point[4], False)


def pyplot():
    """matplotlib's pyplot on the Agg backend, imported on first use (a report without figures never loads it)."""
    import matplotlib

    matplotlib.use('Agg')
    from matplotlib import pyplot as plt

    return plt


def plot_curves(groups: list[Group], out_dir: pathlib.Path) -> list[str]:
    """Eval accuracy per round and per cumulative uplink MiB: a line per federated group (mean over seeds, band of
    ± one standard deviation), centralized groups as dotted horizontal lines at their final accuracy. Returns the
    file names written into `out_dir`."""
    plt = pyplot()
    curves = {id(group): stats.mean_curve(group.runs) for group in groups}
    federated = [g for g in groups if g.task != CENTRALIZED and curves[id(g)]]
    centralized = [g for g in groups if g.task == CENTRALIZED and curves[id(g)]]
    colors = {g.label: plt.get_cmap('tab10')(i % 10) for i, g in enumerate(federated + centralized)}
    clocked = [g for g in federated if curves[id(g)][0][4] is not None]
    figures = CURVE_FIGURES + ([SIM_TIME_FIGURE] if clocked else [])
    for name, x_label, x_of, log_x in figures:
        figure, axis = plt.subplots(figsize=(8, 5))
        for group in clocked if name == SIM_TIME_FIGURE[0] else federated:
            _draw_curve(axis, group, curves[id(group)], x_of, colors[group.label])
        for group in centralized:
            _draw_final(axis, group, curves[id(group)], colors[group.label])
        if log_x:
            axis.set_xscale('log')
        save_accuracy_plot(figure, axis, x_label, out_dir / name)
    return [name for name, *_ in figures]


def _draw_curve(axis, group: Group, curve: list[tuple], x_of, color) -> None:
    """A federated group's mean accuracy, with a band of ± one standard deviation if it has more than one seed."""
    x = [x_of(p) for p in curve]
    mean = [p[1] for p in curve]
    axis.plot(x, mean, marker='o' if len(curve) < 30 else None, markersize=3, color=color,
              label=f'{group.label} (n={len(group.runs)})')  # fmt: skip
    if len(group.runs) > 1:
        axis.fill_between(x, [m - p[2] for m, p in zip(mean, curve)], [m + p[2] for m, p in zip(mean, curve)],
                          color=color, alpha=0.2, linewidth=0)  # fmt: skip


def _draw_final(axis, group: Group, curve: list[tuple], color) -> None:
    """A centralized group: a dotted horizontal line at its final mean accuracy."""
    accuracy = curve[-1][1]
    axis.axhline(accuracy, color=color, linestyle=(0, (1, 3)), linewidth=1.5,
                 label=f'{group.label} (final, {accuracy:.3f})')  # fmt: skip


def save_accuracy_plot(figure, axis, x_label: str, path: pathlib.Path) -> None:
    """The finish every accuracy plot of the reports shares: labels, the 0-1 range, grid, legend; saved, closed."""
    plt = pyplot()
    axis.set_xlabel(x_label)
    axis.set_ylabel('eval accuracy (pooled held-out data)')
    axis.set_ylim(0, 1)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7, loc='lower right')
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)

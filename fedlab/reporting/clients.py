"""What the report says of clients rather than examples (issue 21): the distribution of the final accuracy over
clients, the participation gap (clients that train vs clients held out), personalization's gain, and the cost to a
target accuracy; each per run (from results.json), per group as mean ± std over seeds, and the per-client CDF figure
(from clients_eval.csv)."""

import csv
import pathlib

from fedlab.reporting import stats
from fedlab.reporting.runs import CENTRALIZED, Group, Run

FIGURE = 'client_accuracy_cdf.png'
CLIENTS_EVAL_CSV = 'clients_eval.csv'
# A run's figures: (column, population in results.json's final_eval, key there).
_FINAL = [
    ('accuracy_mean_over_clients', 'eval', 'accuracy_mean'),
    ('accuracy_p10', 'eval', 'accuracy_p10'),
    ('accuracy_p50', 'eval', 'accuracy_p50'),
    ('accuracy_p90', 'eval', 'accuracy_p90'),
    ('accuracy_worst10', 'eval', 'accuracy_worst10'),
    ('participating_accuracy', 'participating', 'accuracy'),
    ('unseen_accuracy', 'unseen', 'accuracy'),
    ('personalized_accuracy', 'personalized', 'accuracy'),
    ('personalized_p10', 'personalized', 'accuracy_p10'),
    ('personalized_p50', 'personalized', 'accuracy_p50'),
    ('personalized_p90', 'personalized', 'accuracy_p90'),
    ('personalized_worst10', 'personalized', 'accuracy_worst10'),
    ('personalization_gain_mean', 'personalized', 'accuracy_gain_mean'),
    ('personalized_participating_accuracy', 'personalized_participating', 'accuracy'),
    ('personalized_unseen_accuracy', 'personalized_unseen', 'accuracy'),
]
COLUMNS = [name for name, *_ in _FINAL] + ['participation_gap', 'personalized_participation_gap', 'target_accuracy',
                                            'round_to_target', 'uplink_bits_to_target', 'seconds_to_target']


def columns(run: Run, target: float | None = None) -> dict:
    """A run's per-client figures; to the `target` (fedlab-report --target), else the run's own target_accuracy."""
    final_eval = run.results.get('final_eval') or {}
    found = {name: (final_eval.get(population) or {}).get(key) for name, population, key in _FINAL}
    participating, unseen = found['participating_accuracy'], found['unseen_accuracy']
    found['participation_gap'] = participating - unseen if participating is not None and unseen is not None else None
    participating, unseen = found['personalized_participating_accuracy'], found['personalized_unseen_accuracy']
    found['personalized_participation_gap'] = (participating - unseen if participating is not None
                                               and unseen is not None else None)
    found.update(_to_target(run, target))
    return found


def _to_target(run: Run, target: float | None) -> dict:
    recorded = run.results.get('to_target') or {}
    if target is None:
        target = recorded.get('target_accuracy')
    found = {'target_accuracy': target, 'round_to_target': None, 'uplink_bits_to_target': None,
             'seconds_to_target': None}
    if target is None:
        return found
    if recorded.get('target_accuracy') == target:  # the run's own record: its seconds too
        if recorded.get('reached'):
            found.update(round_to_target=recorded['round'], uplink_bits_to_target=recorded['cumulative_uplink_bits'],
                         seconds_to_target=recorded['seconds'])
        return found
    for round_num, accuracy, uplink, _ in run.evaluated():  # another target: from metrics.csv (no seconds there)
        if accuracy >= target:
            found.update(round_to_target=round_num, uplink_bits_to_target=uplink)
            break
    return found


def group_row(group: Group, rows: list[dict]) -> dict:
    """Mean and std over a group's seeds of every column (`<column>_mean`, `<column>_std`), and how many reached
    the target."""
    found = {'group': group.label, 'seeds': len(rows), 'method': group.choices.get('personalization') or 'none'}
    for name in COLUMNS:
        values = [r[name] for r in rows if r.get(name) is not None]
        found[f'{name}_mean'], found[f'{name}_std'] = stats.mean(values), stats.std(values)
    found['reached'] = f'{sum(r["round_to_target"] is not None for r in rows)}/{len(rows)}'
    found['final_eval_accuracy_mean'] = stats.mean([r['final_eval_accuracy'] for r in rows])
    found['final_eval_accuracy_std'] = stats.std([r['final_eval_accuracy'] for r in rows])
    return found


def client_accuracies(run: Run, population: str) -> list[float]:
    """The accuracy of each client at a run's last evaluation of `population` (clients_eval.csv), [] if none."""
    path = run.path / CLIENTS_EVAL_CSV
    if not path.exists():
        return []
    with open(path, newline='') as f:
        rows = [r for r in csv.DictReader(f) if r['population'] == population]
    if not rows:
        return []
    last = max(int(r['round']) for r in rows)
    return [float(r['accuracy']) for r in rows if int(r['round']) == last]


def plot_cdf(groups: list[Group], out_dir: pathlib.Path) -> list[str]:
    """The CDF of the clients' final accuracy, a line per federated group (its seeds' clients pooled), dashed for the
    personalized model; nothing without clients_eval.csv."""
    from fedlab.reporting.plots import pyplot

    curves = []
    for group in groups:
        if group.task == CENTRALIZED:
            continue
        for population, style in (('eval', '-'), ('personalized', '--')):
            values = sorted(v for run in group.runs for v in client_accuracies(run, population))
            if values:
                curves.append((group.label + ('' if population == 'eval' else ' (personalized)'), values, style))
    if not curves:
        return []
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(8, 5))
    for i, (label, values, style) in enumerate(curves):
        fractions = [(k + 1) / len(values) for k in range(len(values))]
        axis.step(values, fractions, where='post', linestyle=style, label=label, color=plt.get_cmap('tab10')(i % 10))
    axis.set_xlabel('accuracy of a client (last evaluation)')
    axis.set_ylabel('fraction of clients at or below')
    axis.set_xlim(-0.01, 1.01)  # the last step, at accuracy 1, stays in view
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(out_dir / FIGURE, dpi=120)
    plt.close(figure)
    return [FIGURE]

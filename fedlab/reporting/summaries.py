"""The report's tables, as rows of plain values: a row per run (COLUMNS, report.csv), a row per group of seeds
(GROUP_COLUMNS, report_groups.csv), and the comparison of each federated group with its `aggregator=mean` twin and
the centralized baseline of its data and model."""

import dataclasses
import pathlib

from fedlab.reporting import clients, privacy, stats
from fedlab.reporting.runs import CENTRALIZED, COMPLETED, Group, ReportError, Run

COLUMNS = [
    'run', 'group', 'seed', 'task', 'data', 'model', 'aggregator', 'sampling', 'overrides', 'status', 'rounds',
    'final_eval_accuracy', 'final_eval_loss', 'best_round', 'best_eval_accuracy', 'rounds_to_target',
    'uplink_bits_per_client', 'cumulative_uplink_bits', 'cumulative_downlink_bits', 'wall_seconds',
] + privacy.COLUMNS + clients.COLUMNS  # fmt: skip
GROUP_COLUMNS = [
    'group', 'task', 'data', 'model', 'aggregator', 'seeds', 'final_eval_accuracy_mean', 'final_eval_accuracy_std',
    'final_eval_loss_mean', 'best_eval_accuracy_mean', 'rounds_to_target_mean', 'reached_target',
    'uplink_bits_per_client', 'cumulative_uplink_bits', 'wall_seconds_mean',
]  # fmt: skip


@dataclasses.dataclass
class Tables:
    """Every row the report shows, computed once from the runs of a sweep and their groups."""

    runs: list[Run]
    groups: list[Group]
    summaries: list[dict]  # a row per run, in path order (COLUMNS)
    by_group: dict[str, dict]  # a row per group, by its label (GROUP_COLUMNS)
    comparison: list[dict]  # a row per federated group
    clients_by_group: list[dict] = dataclasses.field(default_factory=list)  # clients.group_row per group

    @property
    def not_completed(self) -> list[dict]:
        return [s for s in self.summaries if s['status'] != COMPLETED]


def tabulate(sweep_dir: pathlib.Path, runs: list[Run], groups: list[Group], *, target: float | None) -> Tables:
    """The rows of `runs` (found under `sweep_dir`) and of their `groups` (runs.group_runs)."""
    label_of = {id(run): group.label for group in groups for run in group.runs}
    summaries = [summarize(run, sweep_dir, target=target, group=label_of.get(id(run), '')) for run in runs]
    summary_of = {id(run): summary for run, summary in zip(runs, summaries)}
    by_group = {g.label: summarize_group(g, [summary_of[id(run)] for run in g.runs]) for g in groups}
    clients_by_group = [clients.group_row(g, [summary_of[id(run)] for run in g.runs]) for g in groups]
    return Tables(runs, groups, summaries, by_group, comparison(groups, by_group), clients_by_group)


def summarize(run: Run, sweep_dir: pathlib.Path, *, target: float | None = None, group: str = '') -> dict:
    """The report's row for one run (COLUMNS, and 'error')."""
    final_eval = (run.results.get('final_eval') or {}).get('eval') or {}
    points = run.evaluated()
    if target is None:  # the run's own target_accuracy, if it has one
        target = (run.results.get('to_target') or {}).get('target_accuracy')
    best = stats.best(points)
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
        'rounds_to_target': stats.rounds_to_target(points, target),
        'uplink_bits_per_client': communication.get('uplink_bits_per_client'),
        'cumulative_uplink_bits': communication.get('cumulative_uplink_bits'),
        'cumulative_downlink_bits': communication.get('cumulative_downlink_bits'),
        'wall_seconds': run.results.get('wall_seconds'),
        'error': run.results.get('error', ''),
        **privacy.columns(run.results),
        **clients.columns(run, target),
    }


def summarize_group(group: Group, rows: list[dict]) -> dict:
    """The report's row for one group (GROUP_COLUMNS) from its runs' rows: means and standard deviations over
    its seeds."""
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
        'final_eval_accuracy_mean': stats.mean(accuracy),
        'final_eval_accuracy_std': stats.std(accuracy),
        'final_eval_loss_mean': stats.mean([r['final_eval_loss'] for r in rows]),
        'best_eval_accuracy_mean': stats.mean([r['best_eval_accuracy'] for r in rows]),
        'rounds_to_target_mean': stats.mean(reached),
        'reached_target': f'{len(reached)}/{len(rows)}',
        'uplink_bits_per_client': first['uplink_bits_per_client'],
        'cumulative_uplink_bits': stats.mean([r['cumulative_uplink_bits'] for r in rows]),
        'wall_seconds_mean': stats.mean([r['wall_seconds'] for r in rows]),
    }


def comparison(groups: list[Group], summaries: dict[str, dict]) -> list[dict]:
    """Per federated group: its accuracy; its uplink against the group that differs only by aggregator=mean; the
    gap to the centralized baseline of the same data and model. Raises ReportError if that baseline is ambiguous."""
    federated = [g for g in groups if g.task != CENTRALIZED]
    centralized = [g for g in groups if g.task == CENTRALIZED]
    table = []
    for group in federated:
        baseline = _centralized_baseline(group, centralized)
        reference = _mean_twin(group, federated)
        table.append(_compared(
            group.label,
            summaries[group.label],
            summaries[reference.label] if reference is not None else None,
            summaries[baseline.label] if baseline is not None else None,
        ))  # fmt: skip
    return table


def _centralized_baseline(group: Group, centralized: list[Group]) -> Group | None:
    """The centralized group of `group`'s data and model; ReportError if there is more than one."""
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
    return baselines[0] if baselines else None


def _mean_twin(group: Group, federated: list[Group]) -> Group | None:
    """The federated group with aggregator=mean that differs from `group` in nothing else (`group` itself if it is
    one)."""
    mine = _without_aggregator(group.experiment)
    return next(
        (g for g in federated if g.choices.get('aggregator') == 'mean' and _without_aggregator(g.experiment) == mine),
        None,
    )


def _without_aggregator(experiment: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in experiment.items() if not k.startswith(('aggregator.', 'choice.aggregator'))}


def _compared(label: str, row: dict, mean_row: dict | None, central_row: dict | None) -> dict:
    """A group's comparison row from its GROUP_COLUMNS row, its aggregator=mean twin's and its baseline's."""
    uplink_ratio = None
    if mean_row is not None:
        mine, theirs = row['uplink_bits_per_client'], mean_row['uplink_bits_per_client']
        uplink_ratio = theirs / mine if mine and theirs else None
    central_accuracy = central_row['final_eval_accuracy_mean'] if central_row else None
    accuracy = row['final_eval_accuracy_mean']
    return {
        'group': label,
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
    }

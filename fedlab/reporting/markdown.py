"""report.md: the report's tables (summaries.Tables) as Markdown sections, numbers formatted for reading."""

import pathlib

from fedlab.reporting.summaries import Tables

GROUP_TABLE = ['group', 'final_eval_accuracy', 'best_eval_accuracy_mean', 'rounds_to_target_mean', 'reached_target',
               'uplink_mib', 'wall_seconds_mean']  # fmt: skip
COMPARISON_TABLE = ['group', 'eval_accuracy', 'uplink_mib_per_client_round', 'uplink_smaller_than_mean',
                    'centralized_accuracy', 'gap_to_centralized']  # fmt: skip
NOT_COMPLETED_TABLE = ['run', 'status', 'rounds', 'error']
RUN_TABLE = ['run', 'group', 'seed', 'status', 'rounds', 'final_eval_accuracy', 'final_eval_loss', 'best_round',
             'best_eval_accuracy', 'rounds_to_target', 'uplink_mib', 'downlink_mib', 'wall_seconds']  # fmt: skip


def render(sweep_dir: pathlib.Path, tables: Tables, figures: list[str], *, target: float | None,
           sections_before_runs: list[str]) -> str:  # fmt: skip
    """The text of report.md; `sections_before_runs` (`client_sections`, privacy.sections) go before the table of
    runs."""
    sections = [
        f'# fedlab report: {sweep_dir}',
        _overview(tables),
        *_groups(tables, target),
        *_comparison(tables),
        *_not_completed(tables),
        *sections_before_runs,
        *_runs(tables),
        '## Figures',
        *[f'![{name}]({name})' for name in figures],
    ]
    return '\n\n'.join(sections) + '\n'


def _overview(tables: Tables) -> str:
    runs, not_completed = len(tables.runs), len(tables.not_completed)
    return (
        f'{runs} runs, {runs - not_completed} completed, in {len(tables.groups)} groups (runs that differ '
        'only in their seed; mean ± sample standard deviation over the seeds, n = seeds). Accuracy is on the '
        'clients\' pooled held-out data (federated evaluation; for centralized runs the same examples), the last '
        'round\'s; bits are what each training round transmits, from the communication ledger.'
    )


def _groups(tables: Tables, target: float | None) -> list[str]:
    target_text = f' (rounds_to_target: first evaluated round with accuracy >= {target})' if target is not None else ''
    rows = [
        dict(row, final_eval_accuracy=plus_minus(row['final_eval_accuracy_mean'], row['final_eval_accuracy_std'],
                                                 row['seeds']),
             uplink_mib=mib(row['cumulative_uplink_bits']))
        for row in tables.by_group.values()
    ]  # fmt: skip
    return [f'## Groups{target_text}', table(rows, GROUP_TABLE)]


def _comparison(tables: Tables) -> list[str]:
    rows = [
        dict(
            c,
            eval_accuracy=plus_minus(c['eval_accuracy'], c['eval_accuracy_std'], c['seeds']),
            uplink_mib_per_client_round=mib(c['uplink_bits_per_client']),
            uplink_smaller_than_mean=_times(c['uplink_smaller_than_mean']),
        )
        for c in tables.comparison
    ]
    return ['## Federated groups against `aggregator=mean` and the centralized baseline', table(rows, COMPARISON_TABLE)]


def _not_completed(tables: Tables) -> list[str]:
    if not tables.not_completed:
        return []
    return ['## Runs that did not complete (not in any group)', table(tables.not_completed, NOT_COMPLETED_TABLE)]


def _runs(tables: Tables) -> list[str]:
    rows = [dict(s, uplink_mib=mib(s['cumulative_uplink_bits']), downlink_mib=mib(s['cumulative_downlink_bits']))
            for s in tables.summaries]  # fmt: skip
    return ['## Runs', table(rows, RUN_TABLE)]


def _times(ratio) -> str | None:
    return f'{ratio:.2f}x' if ratio else None


def table(rows: list[dict], columns: list[str]) -> str:
    """A Markdown table of `columns`: seconds to 1 digit, MiB to 3, other floats to 4; '–' for no value."""
    lines = ['| ' + ' | '.join(columns) + ' |', '|' + '---|' * len(columns)]
    digits = {c: 1 if c.endswith('seconds') else 3 if 'mib' in c else 4 for c in columns}
    lines += ['| ' + ' | '.join(fmt(row.get(c), digits[c]) for c in columns) + ' |' for row in rows]
    return '\n'.join(lines)


def fmt(value, digits: int = 4) -> str:
    if value is None or value == '':
        return '–'
    if isinstance(value, float):
        return f'{value:.{digits}f}'
    if isinstance(value, int) and abs(value) >= 10_000:
        return f'{value:,}'
    return str(value)


def plus_minus(mean, std, seeds) -> str:
    """`mean ± std (n=seeds)`; one seed has no spread to show: `mean (n=1)`."""
    if mean is None:
        return '–'
    return f'{mean:.4f} (n=1)' if str(seeds) == '1' else f'{mean:.4f} ± {std:.4f} (n={seeds})'


def mib(bits) -> float | None:
    return None if bits in (None, '') else bits / 8 / 2**20


DISTRIBUTION_TABLE = ['group', 'seeds', 'final_eval_accuracy', 'accuracy_mean_over_clients', 'accuracy_p10',
                      'accuracy_p50', 'accuracy_p90', 'accuracy_worst10']
PARTICIPATION_TABLE = ['group', 'seeds', 'participating_accuracy', 'unseen_accuracy', 'participation_gap',
                       'personalized_participating_accuracy', 'personalized_unseen_accuracy',
                       'personalized_participation_gap']
PERSONALIZATION_TABLE = ['group', 'seeds', 'method', 'final_eval_accuracy', 'personalized_accuracy',
                         'personalization_gain_mean', 'personalized_p10', 'personalized_p50', 'personalized_p90',
                         'personalized_worst10']
TARGET_TABLE = ['group', 'seeds', 'target_accuracy', 'reached', 'round_to_target', 'uplink_mib_to_target',
                'seconds_to_target']


def client_sections(group_rows: list[dict]) -> list[str]:
    """The sections of fedlab.reporting.clients' group rows, each only when some group has its figures."""
    def shown(row, names):
        return dict(row, **{n: _plus_minus(row.get(f'{n}_mean'), row.get(f'{n}_std'), row['seeds']) for n in names
                            if f'{n}_mean' in row})

    found = []
    with_clients = [r for r in group_rows if r['accuracy_p50_mean'] is not None]
    if with_clients:
        found += ['## Accuracy over clients (last evaluation; each client counts once, worst10: mean of the worst '
                  '10% of clients)',
                  table([shown(r, DISTRIBUTION_TABLE[2:]) for r in with_clients], DISTRIBUTION_TABLE)]
    with_holdout = [r for r in group_rows if r['participation_gap_mean'] is not None]
    if with_holdout:
        found += ['## Participation gap (holdout_clients: accuracy of the clients that train minus the never-seen)',
                  table([shown(r, PARTICIPATION_TABLE[2:]) for r in with_holdout], PARTICIPATION_TABLE)]
    personalized = [r for r in group_rows if r['personalized_accuracy_mean'] is not None]
    if personalized:
        found += ['## Personalization (each client adapts on its own training split; gain: its accuracy minus the '
                  'global model\'s, averaged over clients)',
                  table([shown(r, PERSONALIZATION_TABLE[3:]) for r in personalized], PERSONALIZATION_TABLE)]
    targeted = [r for r in group_rows if r['target_accuracy_mean'] is not None]
    if targeted:
        rows = []
        for r in targeted:
            row = shown(r, ['round_to_target', 'seconds_to_target'])
            mib = [v / 8 / 2**20 for v in (r.get('uplink_bits_to_target_mean'), r.get('uplink_bits_to_target_std'))
                   if v is not None]
            row['uplink_mib_to_target'] = _plus_minus(*(mib + [None, None])[:2], r['seeds'])
            row['target_accuracy'] = fmt(r['target_accuracy_mean'])
            rows.append(row)
        found += ['## Cost to the target accuracy (first evaluation reaching it; means over the seeds that reached it)',
                  table(rows, TARGET_TABLE)]
    return found


def _plus_minus(mean, std, seeds) -> str:
    return fmt(mean) if std is None else plus_minus(mean, std, seeds)


def _plus_minus(mean, std, seeds) -> str:
    return fmt(mean) if std is None else plus_minus(mean, std, seeds)

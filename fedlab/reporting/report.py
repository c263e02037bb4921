"""`fedlab-report`: compares every run of a sweep, from the files the runs wrote: runs that differ only in their seed
form a group, reported as mean ± standard deviation over its seeds; runs that did not complete are listed apart.

The top of fedlab.reporting, and the entry point: runs (find and group) -> summaries (rows, using stats and
privacy) -> report.csv, report_groups.csv, plots and privacy's figures, markdown's report.md."""

# Reads results.json and metrics.csv only: no TensorFlow, so a report of a finished sweep takes a second.
import argparse
import csv
import pathlib
import sys

from fedlab.reporting import clients, markdown, plots, privacy, summaries
from fedlab.reporting.runs import ReportError, find_runs, group_runs, read_runs
from fedlab.reporting.summaries import COLUMNS, GROUP_COLUMNS

__all__ = ['COLUMNS', 'GROUP_COLUMNS', 'ReportError', 'find_runs', 'group_runs', 'main', 'write_report']


def write_report(sweep_dir: pathlib.Path, out_dir: pathlib.Path, *, target: float | None = None) -> dict:
    """Writes report.md, report.csv (a row per run), report_groups.csv (a row per group) and the figures."""
    runs, skipped = read_runs(sweep_dir)
    for run in skipped:  # one line each, before anything else can fail
        print(f'skipped: {run.path}: {run.why}', file=sys.stderr)
    if not runs:
        reason = f' that can be read ({len(skipped)} skipped, listed above)' if skipped else ''
        raise ReportError(f'no run directory (results.json) under {sweep_dir}{reason}')
    tables = summaries.tabulate(sweep_dir, runs, group_runs(runs), target=target)
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_csv(out_dir / 'report.csv', COLUMNS, tables.summaries)
    _write_csv(out_dir / 'report_groups.csv', GROUP_COLUMNS, list(tables.by_group.values()))
    figures = plots.plot_curves(tables.groups, out_dir) + privacy.plot(tables.groups, out_dir)
    figures += clients.plot_cdf(tables.groups, out_dir)
    privacy_rows = privacy.table(tables.groups)
    text = markdown.render(sweep_dir, tables, figures, target=target,
                           sections_before_runs=[*markdown.client_sections(tables.clients_by_group),
                                                 *privacy.sections(privacy_rows)])
    if skipped:
        text += '\n## Skipped runs\n\n' + ''.join(f'- skipped: {run.path}: {run.why}\n' for run in skipped)
    (out_dir / 'report.md').write_text(text)
    return {'summaries': tables.summaries, 'groups': tables.by_group, 'comparison': tables.comparison,
            'not_completed': tables.not_completed, 'figures': figures, 'privacy': privacy_rows,
            'clients': tables.clients_by_group, 'skipped': skipped}  # fmt: skip


def _write_csv(path: pathlib.Path, columns: list[str], rows: list[dict]) -> None:
    with open(path, 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction='ignore')
        writer.writeheader()
        writer.writerows(rows)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='fedlab-report',
        description='Compare every run of a sweep (or any directory of run directories): groups runs that differ '
        'only in their seed (mean ± std over seeds) and writes report.md, report.csv, report_groups.csv and PNGs.',
    )
    parser.add_argument('sweep_dir', type=pathlib.Path, help='a multirun directory, e.g. multirun/2026-01-01_12-00-00')
    parser.add_argument('--out', type=pathlib.Path, default=None, help='where to write (default: the sweep dir)')
    parser.add_argument('--target', type=float, default=None, help='report the first round reaching this accuracy')
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        parser.error(f'{args.sweep_dir} is not a directory')
    if args.target is not None and not 0 < args.target <= 1:  # an accuracy, not a percentage
        print(f'fedlab-report: error: --target {args.target:g} is not allowed: an accuracy in (0, 1], e.g. 0.8',
              file=sys.stderr)
        raise SystemExit(2)
    out_dir = args.out or args.sweep_dir
    try:
        report = write_report(args.sweep_dir, out_dir, target=args.target)
    except ReportError as error:
        print(f'fedlab-report: error: {error}', file=sys.stderr)
        raise SystemExit(2) from None
    _print_summary(report, out_dir)


def _print_summary(report: dict, out_dir: pathlib.Path) -> None:
    """What was written, each group's accuracy, the privacy table and the runs that did not complete."""
    print(f'{len(report["summaries"])} runs in {len(report["groups"])} groups -> {out_dir / "report.md"}, report.csv, '
          f'report_groups.csv, {", ".join(report["figures"])}')  # fmt: skip
    for row in report['groups'].values():
        accuracy = markdown.plus_minus(row['final_eval_accuracy_mean'], row['final_eval_accuracy_std'], row['seeds'])
        print(f'  {row["group"]}: accuracy {accuracy}')
    if report['privacy']:
        print(privacy.markdown(report['privacy']))
    for row in report['not_completed']:
        print(f'  not completed: {row["run"]}: {row["status"]}' + (f': {row["error"]}' if row['error'] else ''))


if __name__ == '__main__':
    main(sys.argv[1:])

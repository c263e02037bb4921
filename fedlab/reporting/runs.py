"""fedlab-report's view of a sweep: finding and reading run directories (results.json beside metrics.csv), and grouping
the completed runs that differ only in their seed. The bottom of fedlab.reporting: it imports no other part of it."""

import csv
import dataclasses
import io
import json
import pathlib

from fedlab.config import identity
from fedlab.errors import one_line_text

CENTRALIZED = 'centralized'
COMPLETED = 'completed'
# Keys of the runs recorded before the full config was (choices and overrides) that say which run it is: left out.
NOT_THE_EXPERIMENT = {'seed', 'resume'}
# Groups are named by what differs between them, these first, in this order.
NAMING_KEYS = ['task', 'data', 'model', 'algorithm', 'aggregator', 'server_optimizer', 'client_optimizer', 'sampling']


_NO_DEFAULT = object()


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
        flat = {f'choice.{group}': str(option) for group, option in self.choices.items()
                if identity.LATER_CHOICES_AT_DEFAULT.get(group, _NO_DEFAULT) != option}
        config = self.results.get('config')
        if config is not None:
            flat.update(_flatten(identity.experiment_identity(config)))
        else:
            for override in self.results.get('overrides') or []:
                key, _, value = override.partition('=')
                flat[key.lstrip('+~')] = value
        return {k: v for k, v in flat.items() if not NOT_THE_EXPERIMENT & set(k.split('.'))}

    def evaluated(self) -> list[tuple[int, float, int, float | None]]:
        """(round, eval accuracy, cumulative uplink bits, simulated seconds or None) of every row with an
        evaluation."""
        points = []
        for row in self.rows:
            if row.get('eval_accuracy'):
                uplink = int(row['cumulative_uplink_bits']) if row.get('cumulative_uplink_bits') else 0
                sim_time = float(row['sim_time_s']) if row.get('sim_time_s') else None  # system=heterogeneous | trace
                points.append((int(row['round']), float(row['eval_accuracy']), uplink, sim_time))
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


@dataclasses.dataclass(frozen=True)
class Skipped:
    """A run directory the report cannot read, and why (one line)."""

    path: pathlib.Path
    why: str


class Unreadable(Exception):
    """A run directory's file that cannot be read as fedlab writes it; the message says which and why."""


def find_runs(sweep_dir: pathlib.Path) -> list[Run]:
    """Every readable run directory under `sweep_dir` (see `read_runs`)."""
    return read_runs(sweep_dir)[0]


def read_runs(sweep_dir: pathlib.Path) -> tuple[list[Run], list[Skipped]]:
    """Every run directory under `sweep_dir` (a results.json beside its metrics.csv), in path order, and apart the
    ones that cannot be read (a damaged results.json or metrics.csv, a completed run without metrics.csv). Data tours
    (task=explore) have no metrics and are left out."""
    runs, skipped = [], []
    for results_path in sorted(sweep_dir.rglob('results.json')):
        try:
            run = _read_run(results_path)
        except Unreadable as error:
            skipped.append(Skipped(results_path.parent, str(error)))
            continue
        if run.task != 'explore':
            runs.append(run)
    return runs, skipped


def _read_run(results_path: pathlib.Path) -> Run:
    try:
        results = json.loads(results_path.read_bytes().decode('utf-8'))
    except (OSError, ValueError) as error:
        raise Unreadable(f'results.json unreadable ({one_line_text(error)[:120]})') from None
    if not isinstance(results, dict):
        raise Unreadable('results.json is not a JSON object')
    for other in ('timing.csv', 'clients_eval.csv'):  # read later by the report's parts: checked alike
        if results_path.with_name(other).exists():
            _read_table(results_path.with_name(other))
    metrics_path = results_path.with_name('metrics.csv')
    rows = []
    if metrics_path.exists():
        rows = _read_table(metrics_path)
    elif results.get('status') == COMPLETED and (results.get('choices') or {}).get('task', 'train') != 'explore':
        raise Unreadable('metrics.csv is missing')
    return Run(results_path.parent, results, rows)


def _read_table(path: pathlib.Path) -> list[dict[str, str]]:
    """A run's table (metrics.csv, ...) as rows, checked: a header starting with round, every row as long as it,
    its numbers numbers; Unreadable says which is not."""
    name = path.name
    try:
        table = list(csv.reader(io.StringIO(path.read_bytes().decode('utf-8'), newline='')))
    except (OSError, ValueError, csv.Error) as error:
        raise Unreadable(f'{name} unreadable ({one_line_text(error)[:120]})') from None
    if not table or table[0][:1] != ['round']:
        raise Unreadable(f'{name} has no header starting with round')
    header = table[0]
    numeric = [i for i, column in enumerate(header) if column == 'round' or column.endswith(_NUMERIC_SUFFIXES)]
    for line, row in enumerate(table[1:], start=2):
        if len(row) != len(header):
            raise Unreadable(f'{name} line {line} has {len(row)} fields, its header {len(header)}')
        bad = next((header[i] for i in numeric if row[i] != '' and not _is_number(row[i])), None)
        if bad or not row[0].isdigit():
            raise Unreadable(f'{name} line {line} column {bad or "round"} is not a number')
    return [dict(zip(header, row)) for row in table[1:]]


_NUMERIC_SUFFIXES = ('loss', 'accuracy', 'examples', 'batches', 'bits', '_s', 'seconds')


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


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
        _refuse_repeated_seeds(group)
    result = list(groups.values())
    _name(result)
    return result


def _refuse_repeated_seeds(group: Group) -> None:
    seeds = [str(run.seed) for run in group.runs]
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        paths = ', '.join(str(r.path.name) for r in group.runs if str(r.seed) in repeated)
        raise ReportError(
            f'runs {paths} are the same experiment with the same seed ({", ".join(repeated)}): a repeat would be '
            'counted twice; remove one or report them from separate directories'
        )


def _name(groups: list[Group]) -> None:
    """Labels each group with the settings that tell it apart from the others (choices first); a centralized group
    only with the settings it reads (no aggregator, sampler, ...), unless two groups would then share a label."""
    keys = sorted({k for g in groups for k in g.experiment})
    differing = [k for k in keys if len({g.experiment.get(k) for g in groups}) > 1]
    choices = [f'choice.{k}' for k in NAMING_KEYS if f'choice.{k}' in differing]
    others = [k for k in differing if not k.startswith('choice.') and not _belongs_to_a_choice(k, choices)]
    for group in groups:
        shown = [k for k in choices + others if group.task != CENTRALIZED or _read_by_centralized(k)]
        group.label = _label(group, shown)
    labels = [g.label for g in groups]
    for group in groups:
        if labels.count(group.label) > 1:
            group.label = _label(group, choices + others)


def _label(group: Group, keys: list[str]) -> str:
    parts = [f'{k.removeprefix("choice.")}={group.experiment[k]}' for k in keys if k in group.experiment]
    return ' '.join(parts) or 'all runs'


# What task=centralized reads (fedlab.cli.centralized): its model and data, its own keys, and the federated budget
# and client optimizer its epochs and SGD are matched to. The rest (aggregator, sampling, ...) is federated only.
CENTRALIZED_READS = ('task', 'data', 'model', 'rounds', 'clients_per_round', 'client_epochs', 'batch_size',
                     'client_lr', 'client_momentum')


def _read_by_centralized(key: str) -> bool:
    return key.removeprefix('choice.').split('.')[0] in CENTRALIZED_READS


def _belongs_to_a_choice(key: str, choice_keys: list[str]) -> bool:
    """data.num_clients differs because data differs: naming the choice says it already."""
    return key.split('.')[0] in {c.removeprefix('choice.') for c in choice_keys} and key.split('.')[0] != key

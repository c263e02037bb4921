"""fedlab-report's view of a sweep: finding and reading run directories (results.json beside metrics.csv), and grouping
the completed runs that differ only in their seed. The bottom of fedlab.reporting: it imports no other part of it."""

import csv
import dataclasses
import json
import pathlib

from fedlab.config import identity

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


def find_runs(sweep_dir: pathlib.Path) -> list[Run]:
    """Every run directory under `sweep_dir` (a results.json beside its metrics.csv), in path order. Data tours
    (task=explore) have no metrics and are left out."""
    runs = [_read_run(results_path) for results_path in sorted(sweep_dir.rglob('results.json'))]
    return [run for run in runs if run.task != 'explore']


def _read_run(results_path: pathlib.Path) -> Run:
    metrics_path = results_path.with_name('metrics.csv')
    rows = []
    if metrics_path.exists():
        with open(metrics_path, newline='') as f:
            rows = list(csv.DictReader(f))
    return Run(results_path.parent, json.loads(results_path.read_text()), rows)


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

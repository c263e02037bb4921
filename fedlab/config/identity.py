"""Which config keys define an experiment, in one place: a checkpoint resumes only under the same identity, and
fedlab-report groups runs whose identity differs only in the seed. Pure Python (no Hydra, no TensorFlow), so that
fedlab-report can use it too."""

import copy

from fedlab.config import components

# Where files go or how much room they may take, not what is computed: a run resumes across changes of these, and
# runs on machines with other caches are the same experiment.
WHERE_NOT_WHAT = ('data_cache', 'shard_dir', 'shard_budget_mb', 'client_state_budget_mb', 'data.array_cache')
# How a run was executed, not what it computed: it may resume on other workers, or with other TFF calls per round.
HOW_NOT_WHAT = ('resume', 'runtime', 'efficiency')
# What is only reported, not computed: a run resumes under another target, and runs that differ here are one experiment.
REPORTED_NOT_COMPUTED = ('target_accuracy', 'tracker')
# Which replicate of an experiment a run is: fedlab-report groups runs that differ only here.
WHICH_REPLICATE = ('seed',)
# Keys added after runs were recorded without them, each with the value that computes what a run computed before it
# existed: at that value the key is left out of the identity, so older checkpoints resume and older runs group with
# new ones (tests/test_compat.py); at any other value it is a different experiment. A new key adds a line here.
LATER_KEYS_AT_DEFAULT: dict[str, object] = {
    'holdout_clients': 0,
    'stop_at_target': False,
    'personalization': {'method': 'none'},
    'system': {'kind': 'ideal'},
    'data.drop_nonfinite': False,
}


# Config groups added since, each with the option that computes what runs computed before it existed: fedlab-report
# groups a run that chose it with runs recorded before the group did.
LATER_CHOICES_AT_DEFAULT: dict[str, str] = {'personalization': 'none', 'system': 'ideal'}


def without(config: dict, dotted_keys) -> dict:
    """`config` (a plain dict, changed in place) without the `dotted_keys`."""
    for dotted in dotted_keys:
        *parents, key = dotted.split('.')
        node = config
        for parent in parents:
            node = node.get(parent) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(key, None)
    return config


def with_current_targets(node):
    """`node` with every `_target_` as the config names it today (components.resolve: an old run's moved paths)."""
    if isinstance(node, dict):
        return {k: components.resolve(v) if k == '_target_' and isinstance(v, str) else with_current_targets(v)
                for k, v in node.items()}  # fmt: skip
    if isinstance(node, list):
        return [with_current_targets(v) for v in node]
    return node


def _at_default(config: dict) -> tuple[str, ...]:
    """The later keys `config` holds at the value that changes nothing."""
    found = []
    for dotted, default in LATER_KEYS_AT_DEFAULT.items():
        node = config
        for part in dotted.split('.'):
            node = node.get(part, _ABSENT) if isinstance(node, dict) else _ABSENT
        if node == default:
            found.append(dotted)
    return tuple(found)


_ABSENT = object()


def run_identity(config: dict) -> dict:
    """The settings that define a run (the resolved config as plain containers): what a checkpoint must match."""
    config = with_current_targets(copy.deepcopy(config))
    return without(config, WHERE_NOT_WHAT + HOW_NOT_WHAT + REPORTED_NOT_COMPUTED + _at_default(config))


def experiment_identity(config: dict) -> dict:
    """What defines the experiment a run replicates: its identity without the seed (fedlab-report's groups)."""
    config = with_current_targets(copy.deepcopy(config))
    return without(config, WHERE_NOT_WHAT + ('resume',) + REPORTED_NOT_COMPUTED + WHICH_REPLICATE + _at_default(config))

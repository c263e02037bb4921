"""The `efficiency` keys: fewer TFF calls per example, the same results (docs/performance.md).

    efficiency.rounds_per_call  up to N rounds in one TFF call (fedlab.fast_paths.round_blocks); 1: one call a round.
                                metrics.csv is byte-for-byte the same.
    efficiency.resident_state   the state kept in TFF's worker between calls and each computation sent once
                                (fedlab.tff_internals.resident_state, TFF internals); fetched for evaluations, checkpoints, the
                                end and a stop. metrics.csv is byte-for-byte the same. Off with DP aggregators.
    efficiency.pack_clients     clients packed into one group per core, one TFF client call per group
                                (fedlab.fast_paths.client_packing); aggregator=mean with fedavg, fedprox or fedsgd on
                                client_inputs=shards or tensors, else off. The same to ~1e-7 (summation order).
    efficiency.intra_op_threads threads per TensorFlow op in TFF's worker (null: TensorFlow's default, one per
                                core); 1: clients or groups run in parallel, one per core, without handing each
                                small op to other threads (fedlab.run.worker_processes). Not with runtime=remote.

What applies to which aggregator, algorithm and runtime (linear, packable, DP, local-only, remote) is read from
fedlab.config.components. No TensorFlow here: the CLI checks these keys before TensorFlow loads.
"""

import dataclasses

from fedlab.config import components
from fedlab.errors import FedlabError


@dataclasses.dataclass(frozen=True)
class Efficiency:
    rounds_per_call: int = 1
    pack_clients: bool = False
    resident_state: bool = False
    intra_op_threads: int | None = None  # None: TensorFlow's default
    notes: tuple[str, ...] = ()  # what was turned off, and why

    def describe(self) -> str:
        threads = 'null' if self.intra_op_threads is None else self.intra_op_threads
        text = (
            f'efficiency: rounds_per_call={self.rounds_per_call} pack_clients={str(self.pack_clients).lower()} '
            f'resident_state={str(self.resident_state).lower()} intra_op_threads={threads}'
        )
        return text + ''.join(f'\n  {note}' for note in self.notes)


def settings(config: dict) -> Efficiency:
    """The efficiency settings of the resolved config (plain containers), with what does not apply to this run
    turned off (and said in `notes`). Raises FedlabError for a bad value."""
    node = config.get('efficiency') or {}
    unknown = sorted(set(node) - {'rounds_per_call', 'pack_clients', 'resident_state', 'intra_op_threads'})
    if unknown:
        raise FedlabError(
            f'efficiency.{unknown[0]} is not a key: efficiency has rounds_per_call, pack_clients, resident_state and '
            'intra_op_threads'
        )
    intra_op_threads = node.get('intra_op_threads')
    if intra_op_threads is not None and (type(intra_op_threads) is not int or intra_op_threads < 1):
        raise FedlabError(
            f'efficiency.intra_op_threads={intra_op_threads} is not allowed: it must be an integer >= 1 or null '
            "(TensorFlow's default, one per core)"
        )
    rounds_per_call = node.get('rounds_per_call', 1)
    pack_clients = node.get('pack_clients', False)
    if type(rounds_per_call) is not int or rounds_per_call < 1:
        raise FedlabError(
            f'efficiency.rounds_per_call={rounds_per_call} is not allowed: it must be an integer >= 1 (1: one TFF '
            'call a round)'
        )
    resident_state = node.get('resident_state', False)
    for key, value in (('pack_clients', pack_clients), ('resident_state', resident_state)):
        if type(value) is not bool:
            raise FedlabError(f'efficiency.{key}={value} is not allowed: it must be true or false')

    notes = []
    aggregator = components.of_config(config, 'aggregator')  # None: one's own (not linear, not DP)
    runtime = components.of_config(config, 'runtime')
    if runtime is not None and runtime.remote:
        if rounds_per_call > 1 or pack_clients or resident_state:
            notes.append(
                f'runtime={runtime.name}: one round and one client per TFF call (each call is split among the workers)'
            )
        if intra_op_threads is not None:
            notes.append('intra_op_threads: the remote workers\' own (set TF_NUM_INTRAOP_THREADS where they start)')
        return Efficiency(notes=tuple(notes))
    if aggregator is not None and aggregator.local_only and (rounds_per_call > 1 or resident_state):
        notes.append(
            f'rounds_per_call: 1, resident_state: off with aggregator={aggregator.name} (TFF\'s test context runs it)'
        )
        rounds_per_call, resident_state = 1, False
    algorithm = components.of_config(config, 'algorithm')  # None: one's own
    if algorithm is not None and algorithm.client_state and (rounds_per_call > 1 or resident_state or pack_clients):
        notes.append(f'rounds_per_call: 1, resident_state and pack_clients: off with algorithm={algorithm.name} '
                     f'(each client trains from {algorithm.client_state}, kept in Python between rounds)')  # fmt: skip
        rounds_per_call, resident_state, pack_clients = 1, False, False
    if algorithm is not None and algorithm.asynchronous and (rounds_per_call > 1 or resident_state or pack_clients):
        notes.append(f'rounds_per_call: 1, resident_state and pack_clients: off with algorithm={algorithm.name} '
                     '(its updates wait in Python until the server applies them)')
        rounds_per_call, resident_state, pack_clients = 1, False, False
    if resident_state and aggregator is not None and aggregator.dp:
        notes.append('resident_state: off with DP (TFF draws the noise unseeded: a replay after a worker restart '
                     'would not repeat it)')  # fmt: skip
        resident_state = False
    if pack_clients:
        reason = None
        if aggregator is None or not aggregator.linear:
            name = components.name_of(config, 'aggregator', 'this aggregator')
            linear = components.listed(components.rows('aggregator', linear=True), 'and')
            reason = f'aggregator={name} treats each client\'s update on its own (only {linear} is linear in them)'
        elif algorithm is None or not algorithm.packable:
            name = algorithm.name if algorithm else 'of your own'
            packable = components.listed(components.rows('algorithm', packable=True), 'and')
            reason = f'algorithm={name} (only {packable} pack clients)'
        elif config.get('client_inputs') == 'dataset':
            reason = 'client_inputs=dataset (packing needs shards or tensors)'
        if reason:
            notes.append(f'pack_clients: off, {reason}')
            pack_clients = False
    return Efficiency(
        rounds_per_call=rounds_per_call,
        pack_clients=pack_clients,
        resident_state=resident_state,
        intra_op_threads=intra_op_threads,
        notes=tuple(notes),
    )

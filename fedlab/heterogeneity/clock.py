"""A simulated clock over synchronous rounds: which sampled clients finish, and how long each round lasts.

A sampled client's time is its download (the ledger's downlink bits ÷ its downlink), its training (its examples ×
epochs ÷ its speed) and its upload (uplink bits ÷ its uplink). `SimulatedRounds` decides each round before it
trains, from the seed, the round number and the devices alone, so a resumed or repeated run decides the same:

1. the pool: the training clients online at the round's start (all of them without availability windows); with
   none online, the server waits for the first to come online;
2. ceil(clients_per_round × (1 + over_selection)) of them drawn by the run's sampler;
3. each drops out with probability `dropout` (seeded per round and client) once it has the model: `dropped`;
   one whose window ends before it finishes: `offline` at that moment;
4. the others by finishing time: the first clients_per_round that finish by `deadline_s` train (`trained`); the
   rest are `late`; with `partial_work`, while fewer than clients_per_round have finished, a client still training
   at the deadline sends the batches it finished (at least one): `partial`, its stream cut to them;
5. the round ends when the last trained client finishes, or at the deadline if some client was late (a server
   with a deadline waits for it), or, with over-selection, as soon as clients_per_round have finished; dropped
   clients are noticed when they leave, offline ones when they go.

Its sampler (`sampler`) gives the rounds' `trained` clients to the rest of fedlab, which trains them as ever. As a
round annotator it adds sim_round_s, sim_time_s and the status counts to metrics.csv, and each sampled client's
status and simulated seconds to clients.csv.
"""

import dataclasses
import math
import threading

from fedlab import seeds
from fedlab.heterogeneity.devices import Devices, WorkSeconds

TRAINED, PARTIAL, DROPPED, LATE, OFFLINE = 'trained', 'partial', 'dropped', 'late', 'offline'
STATUSES = (TRAINED, PARTIAL, LATE, DROPPED, OFFLINE)
COLUMNS = ('sim_round_s', 'sim_time_s', 'clients_sampled', 'clients_late', 'clients_dropped', 'clients_offline')
PARTIAL_COLUMNS = ('clients_partial',)  # with partial_work (a later column: runs without it keep their tables)
# A partial client's input id: its id and the batches it finished (fedlab.run.round_inputs cuts its stream).
STEPS_MARK = '#steps='
CLIENT_COLUMNS = ('sampled_ids', 'status', 'sim_client_s')


@dataclasses.dataclass(frozen=True)
class SystemRules:
    """The round's rules: `deadline_s` (None: none), `over_selection` (x: sample N × (1 + x)), `dropout`."""

    deadline_s: float | None = None
    over_selection: float = 0.0
    dropout: float = 0.0
    partial_work: bool = False  # clients training at the deadline send the batches they finished


@dataclasses.dataclass(frozen=True)
class RoundOutcome:
    """One round as the clock decided it: every sampled client's status and simulated seconds, the clients that
    train (in the sampler's order), when it started and how long it lasted."""

    start_s: float
    seconds: float
    sampled: tuple[str, ...]
    status: tuple[str, ...]
    client_seconds: tuple[float, ...]
    steps: tuple[int, ...] = ()  # a partial client's batches finished (0 for the others); empty without partial work

    @property
    def trained(self) -> list[str]:
        """The clients whose update the round uses: trained, and partial ones."""
        return [c for c, s in zip(self.sampled, self.status) if s in (TRAINED, PARTIAL)]

    @property
    def input_ids(self) -> list[str]:
        """`trained`, a partial client's id marked with its batches (STEPS_MARK) for its inputs."""
        steps = self.steps or (0,) * len(self.sampled)
        return [c + (f'{STEPS_MARK}{k}' if s == PARTIAL else '') for c, s, k in zip(self.sampled, self.status, steps)
                if s in (TRAINED, PARTIAL)]

    def count(self, status: str) -> int:
        return self.status.count(status)


class SimulatedRounds:
    """The rounds of one run on the simulated clock (see the module's docstring).

    `draw(pool, count, round_num)` is the run's sampler over a pool of clients; `clients_per_round` is N.
    Rounds are decided in order and memoized: asking for round r decides rounds 1..r first (each round's pool
    depends on the time it starts).
    """

    tensorboard_run = 'system'
    columns = COLUMNS
    client_columns = CLIENT_COLUMNS

    def __init__(self, devices: Devices, rules: SystemRules, draw, training_clients, clients_per_round: int, *,
                 downlink_bits: int, uplink_bits: int, examples: dict[str, int], epochs: int, seed: int,
                 batch_size: int = 20):
        self._devices = devices
        self._rules = rules
        self._draw = draw
        self._training = sorted(training_clients)
        self._n = clients_per_round
        self._down, self._up = downlink_bits, uplink_bits
        self._examples, self._epochs, self._batch_size = examples, epochs, batch_size
        if rules.partial_work:
            self.columns = COLUMNS + PARTIAL_COLUMNS
            self.client_columns = CLIENT_COLUMNS + ('partial_batches',)
        self._dropout_stream = seeds.derive(seed, 'dropout')
        self._rounds: list[RoundOutcome] = []
        self._lock = threading.Lock()  # the next round's inputs are prepared in another thread (RoundAhead)
        self._recorded = 0  # the last round recorded (rounds after it may be decided already, to prepare inputs)

    def describe(self) -> str:
        """One line for the console: the devices' spread and the round's rules."""
        import numpy as np  # here, not at the top: `fedlab --help` imports this module (config checks)

        speeds = np.array([self._devices.by_client[c].compute_examples_per_s for c in self._training])
        p10, p50, p90 = np.percentile(speeds, [10, 50, 90])
        rules = self._rules
        deadline = 'no deadline' if rules.deadline_s is None else f'deadline {rules.deadline_s:g} s'
        deadline += ' (late clients send their finished batches)' if rules.partial_work else ''
        return (f'simulated system: {len(speeds)} devices training {p10:.3g} / {p50:.3g} / {p90:.3g} examples/s '
                f'(p10 / median / p90), {deadline}, over-selection {rules.over_selection:g}, '
                f'dropout {rules.dropout:g}' + ('' if self._devices.always_available else ', availability windows'))

    # The run's samplers: the clients whose update a round uses, and their inputs' ids (partial ones marked).
    def sampler(self, round_num: int) -> list[str]:
        return self.outcome(round_num).trained

    def input_sampler(self, round_num: int) -> list[str]:
        return self.outcome(round_num).input_ids

    def downloads(self, round_num: int) -> int:
        """How many clients received the model in a round (the ledger's downlink count): every sampled client."""
        return len(self.outcome(round_num).sampled)

    def outcome(self, round_num: int) -> RoundOutcome:
        with self._lock:
            while len(self._rounds) < round_num:
                start = self._rounds[-1].start_s + self._rounds[-1].seconds if self._rounds else 0.0
                self._rounds.append(self._decide(len(self._rounds) + 1, start))
            return self._rounds[round_num - 1]

    def _decide(self, round_num: int, start: float) -> RoundOutcome:
        pool = [c for c in self._training if self._devices.online_at(c, start)]
        if not pool:  # nobody online: the server waits for the first client to come online
            wait = self._devices.next_online(self._training, start) - start
            return RoundOutcome(start, wait if math.isfinite(wait) else 0.0, (), (), ())
        count = min(len(pool), math.ceil(self._n * (1 + self._rules.over_selection) - 1e-9))
        sampled = tuple(self._draw(pool, count, round_num))
        import numpy as np

        drops = np.random.default_rng([self._dropout_stream, round_num]).random(len(sampled)) < self._rules.dropout
        deadline = math.inf if self._rules.deadline_s is None else self._rules.deadline_s
        status, seconds, finishing = [], [], []
        for client_id, dropped in zip(sampled, drops):
            work = self._work_seconds(client_id)
            total = work.total
            leaves = self._devices.offline_from(client_id, start) - start
            if dropped:
                status.append(DROPPED), seconds.append(min(work.download, leaves, deadline))
            elif leaves < total and leaves < deadline:
                status.append(OFFLINE), seconds.append(leaves)
            else:
                status.append(LATE), seconds.append(total)
                finishing.append((total, client_id, len(status) - 1))
        kept = [i for total, _, i in sorted(finishing) if total <= deadline][: self._n]
        for i in kept:
            status[i] = TRAINED
        steps = self._partial_steps(sampled, status, seconds, sorted(finishing), room=self._n - len(kept))
        ends = [seconds[i] for i, s in enumerate(status) if s in (DROPPED, OFFLINE)] + [seconds[i] for i in kept]
        if len(kept) == self._n and len(finishing) > self._n:  # over-selection: done at the N-th finish
            duration = max(seconds[i] for i in kept)
        elif len(kept) < len(finishing):  # someone was late: the server waited for its deadline
            duration = deadline
        else:
            duration = max(ends, default=0.0)
        return RoundOutcome(start, duration, sampled, tuple(status), tuple(seconds), steps)

    def _work_seconds(self, client_id: str) -> WorkSeconds:
        return self._devices.by_client[client_id].work_seconds(
            examples=self._examples[client_id] * self._epochs, downlink_bits=self._down, uplink_bits=self._up)

    def _partial_steps(self, sampled, status: list, seconds: list, finishing: list, *, room: int) -> tuple[int, ...]:
        """With partial work: the late clients that finished a batch by the deadline, in order of finishing time,
        up to `room`, become partial (status and seconds changed in place); each one's batches (0: not partial)."""
        if not self._rules.partial_work:
            return ()
        deadline = self._rules.deadline_s
        steps = [0] * len(sampled)
        for _, client_id, i in finishing:
            if room == 0:
                break
            if status[i] != LATE:
                continue
            work = self._work_seconds(client_id)
            training_s = deadline - work.download - work.upload
            speed = self._devices.by_client[client_id].compute_examples_per_s
            batches = int(max(training_s, 0.0) * speed) // self._batch_size
            if batches >= 1:
                status[i], seconds[i], steps[i], room = PARTIAL, deadline, batches, room - 1
        return tuple(steps)

    # A round annotator (fedlab.record.recorder.RoundAnnotator).
    def round_values(self, round_num: int, client_ids: list[str]) -> dict[str, float | int]:
        outcome = self.outcome(round_num)
        self._recorded = round_num
        return {
            'sim_round_s': outcome.seconds,
            'sim_time_s': outcome.start_s + outcome.seconds,
            'clients_sampled': len(outcome.sampled),
            'clients_late': outcome.count(LATE),
            'clients_dropped': outcome.count(DROPPED),
            'clients_offline': outcome.count(OFFLINE),
            **({'clients_partial': outcome.count(PARTIAL)} if self._rules.partial_work else {}),
        }

    def client_values(self, round_num: int) -> dict[str, str]:
        """clients.csv's columns for a round: every sampled client, its status and its simulated seconds."""
        outcome = self.outcome(round_num)
        return {
            'client_ids': ' '.join(outcome.trained),  # (the round's own ids mark partial clients' inputs)
            'sampled_ids': ' '.join(outcome.sampled),
            'status': ' '.join(outcome.status),
            'sim_client_s': ' '.join(f'{s:.6g}' for s in outcome.client_seconds),
            **({'partial_batches': ' '.join(map(str, outcome.steps))} if self._rules.partial_work else {}),
        }

    def restore(self, row: dict[str, str] | None) -> None:
        # Every round is decided again from the seed and the round number; only the count recorded is restored.
        self._recorded = int(row['round']) if row else 0

    def summary(self) -> dict:
        decided = self._rounds[: self._recorded]
        return {
            'sim_time_s': decided[-1].start_s + decided[-1].seconds if decided else 0.0,
            **{f'clients_{s}': sum(o.count(s) for o in decided) for s in STATUSES},
            'rounds_without_clients': sum(1 for o in decided if not o.trained),
        }


class PoolDraw:
    """The run's sampler (`make_sampler(client_ids, count)`, e.g. fedlab.sampling.uniform) over whichever clients are
    online: `draw(pool, count, round_num)`, a sampler built once per distinct pool and count."""

    def __init__(self, make_sampler):
        self._make_sampler = make_sampler
        self._samplers = {}

    def __call__(self, pool, count: int, round_num: int) -> list[str]:
        key = (tuple(pool), count)
        if key not in self._samplers:
            if len(self._samplers) >= 64:  # availability windows make many pools: keep the recent ones
                self._samplers.clear()
            self._samplers[key] = self._make_sampler(list(pool), count)
        return self._samplers[key](round_num)

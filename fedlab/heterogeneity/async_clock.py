"""FedBuff's schedule on the simulated clock (Nguyen et al. 2022): who starts training when, from which model version,
and which K updates each server update applies.

`concurrency` clients train at once. A client's time is the same as in a synchronous round (fedlab.heterogeneity.
clock): download + examples × epochs ÷ speed + upload. When one finishes, its update joins the server's buffer and a
new client is drawn at once from the idle online clients (by the run's sampler: fixed takes the first idle client by
id, uniform one at random); it downloads the current model. When the buffer holds `buffer_size` updates, the server
applies them (its version goes up by one) before the next client downloads. A client that drops out (`dropout`,
seeded per draw) or goes offline frees its place when it leaves, and sends nothing.

Server update r is fedlab's round r: `starts(r)` are the clients that began training after update r - 1 (all from
version r - 1), `arrivals(r)` the K updates it applies, each with its staleness: the server updates made since its
client downloaded. An update waits in one of concurrency + buffer_size slots from its client's start until it is
applied, so the learning process keeps a fixed number of pending updates (fedlab.algorithms.fedbuff).
Everything is decided from the seed and the devices: a resumed run replays the same schedule.
"""

import dataclasses
import heapq
import math
import threading

from fedlab import seeds
from fedlab.heterogeneity.clock import DROPPED, OFFLINE, PoolDraw
from fedlab.heterogeneity.devices import Devices

STARTED = 'started'
COLUMNS = ('sim_round_s', 'sim_time_s', 'clients_sampled', 'clients_dropped', 'clients_offline', 'staleness_mean',
           'staleness_max')
CLIENT_COLUMNS = ('sampled_ids', 'status', 'sim_client_s', 'arrived_ids', 'staleness')


@dataclasses.dataclass(frozen=True)
class Start:
    client_id: str
    status: str  # STARTED, DROPPED or OFFLINE
    seconds: float  # its time to finish (STARTED) or to leave
    slot: int = -1  # where its update waits (STARTED only)


@dataclasses.dataclass(frozen=True)
class Arrival:
    client_id: str
    slot: int
    staleness: int


@dataclasses.dataclass(frozen=True)
class ServerUpdate:
    """Round r: the clients that started since update r - 1, the updates applied, and when it happened."""

    starts: tuple[Start, ...]
    arrivals: tuple[Arrival, ...]
    time_s: float
    seconds: float  # since the previous update

    @property
    def trained(self) -> list[str]:
        return [s.client_id for s in self.starts if s.status == STARTED]

    @property
    def slots(self) -> list[int]:
        return [s.slot for s in self.starts if s.status == STARTED]


class BufferedRounds:
    """FedBuff's server updates, decided in order and memoized (see the module's docstring)."""

    tensorboard_run = 'system'
    columns = COLUMNS
    client_columns = CLIENT_COLUMNS

    def __init__(self, devices: Devices, dropout: float, draw: PoolDraw, training_clients, *, concurrency: int,
                 buffer_size: int, downlink_bits: int, uplink_bits: int, examples: dict[str, int], epochs: int,
                 seed: int):
        self._devices, self._dropout, self._draw = devices, dropout, draw
        self._training = sorted(training_clients)
        self.concurrency, self.buffer_size = concurrency, buffer_size
        self._down, self._up, self._examples, self._epochs = downlink_bits, uplink_bits, examples, epochs
        self._dropout_stream = seeds.derive(seed, 'dropout')
        self._updates: list[ServerUpdate] = []
        self._lock = threading.Lock()  # the next round's inputs are prepared in another thread (RoundAhead)
        self._recorded = 0
        # The simulation's state between updates.
        self._time = 0.0
        self._events: list = []  # (time, sequence, kind, client, slot, version)
        self._sequence = 0
        self._draws = 0
        self._busy: set[str] = set()
        self._free_slots = list(range(concurrency + buffer_size))
        self._buffer: list[Arrival] = []
        self._starts: list[Start] = []
        self._filled = False

    @property
    def slots(self) -> int:
        return self.concurrency + self.buffer_size

    # The run's sampler: the clients that start in a round (their inputs are trained at its beginning).
    def sampler(self, round_num: int) -> list[str]:
        return self.update(round_num).trained

    def downloads(self, round_num: int) -> int:
        return len(self.update(round_num).starts)

    def uploads(self, round_num: int) -> int:
        return len(self.update(round_num).arrivals)

    def update(self, round_num: int) -> ServerUpdate:
        with self._lock:
            while len(self._updates) < round_num:
                self._updates.append(self._next_update())
            return self._updates[round_num - 1]

    def _next_update(self) -> ServerUpdate:
        version = len(self._updates)
        if not self._filled:
            self._fill(version)
            self._filled = True
        while True:
            if not self._events:
                raise RuntimeError('FedBuff has no client training and none can start: no client is ever online')
            time, _, kind, client_id, slot, started_version = heapq.heappop(self._events)
            self._time = time
            if kind == 'retry':
                self._fill(version)
                continue
            self._busy.discard(client_id)
            if kind == 'arrive':
                self._buffer.append(Arrival(client_id, slot, version - started_version))
            if len(self._buffer) == self.buffer_size:
                previous = self._updates[-1].time_s if self._updates else 0.0
                update = ServerUpdate(tuple(self._starts), tuple(self._buffer), self._time, self._time - previous)
                self._free_slots += [a.slot for a in self._buffer]
                self._buffer, self._starts = [], []
                self._fill(version + 1)  # the freed place's new client downloads the updated model
                return update
            self._fill(version)

    def _fill(self, version: int) -> None:
        """Draws clients until `concurrency` are training, at the current time, from the idle online clients."""
        while len(self._busy) < self.concurrency:
            pool = [c for c in self._training if c not in self._busy and self._devices.online_at(c, self._time)]
            if not pool:
                wait = self._devices.next_online([c for c in self._training if c not in self._busy], self._time)
                if math.isfinite(wait) and not any(e[2] == 'retry' for e in self._events):
                    self._push(wait, 'retry', '', -1, version)
                return
            self._draws += 1
            client_id = self._draw(pool, 1, self._draws)[0]
            self._start(client_id, version)

    def _start(self, client_id: str, version: int) -> None:
        work = self._devices.by_client[client_id].work_seconds(
            examples=self._examples[client_id] * self._epochs, downlink_bits=self._down, uplink_bits=self._up)
        download, total = work.download, work.total
        leaves = self._devices.offline_from(client_id, self._time) - self._time
        import numpy as np  # here, not at the top: `fedlab --help` imports this module (config checks)

        dropped = np.random.default_rng([self._dropout_stream, self._draws]).random() < self._dropout
        self._busy.add(client_id)
        if dropped or leaves < total:
            status, seconds = (DROPPED, download) if dropped else (OFFLINE, leaves)
            self._starts.append(Start(client_id, status, seconds))
            self._push(self._time + seconds, 'leave', client_id, -1, version)
            return
        slot = self._free_slots.pop(0)
        self._starts.append(Start(client_id, STARTED, total, slot))
        self._push(self._time + total, 'arrive', client_id, slot, version)

    def _push(self, time: float, kind: str, client_id: str, slot: int, version: int) -> None:
        self._sequence += 1
        heapq.heappush(self._events, (time, self._sequence, kind, client_id, slot, version))

    def describe(self) -> str:
        return (f'FedBuff on the simulated clock: {self.concurrency} clients training at once, the server applying '
                f'every {self.buffer_size} updates, dropout {self._dropout:g}')

    # A round annotator (fedlab.record.recorder.RoundAnnotator).
    def round_values(self, round_num: int, client_ids: list[str]) -> dict[str, float | int]:
        update = self.update(round_num)
        self._recorded = round_num
        staleness = [a.staleness for a in update.arrivals]
        return {
            'sim_round_s': update.seconds,
            'sim_time_s': update.time_s,
            'clients_sampled': len(update.starts),
            'clients_dropped': sum(1 for s in update.starts if s.status == DROPPED),
            'clients_offline': sum(1 for s in update.starts if s.status == OFFLINE),
            'staleness_mean': sum(staleness) / len(staleness),
            'staleness_max': max(staleness),
        }

    def client_values(self, round_num: int) -> dict[str, str]:
        update = self.update(round_num)
        return {
            'sampled_ids': ' '.join(s.client_id for s in update.starts),
            'status': ' '.join(s.status for s in update.starts),
            'sim_client_s': ' '.join(f'{s.seconds:.6g}' for s in update.starts),
            'arrived_ids': ' '.join(a.client_id for a in update.arrivals),
            'staleness': ' '.join(str(a.staleness) for a in update.arrivals),
        }

    def restore(self, row: dict[str, str] | None) -> None:
        self._recorded = int(row['round']) if row else 0

    def summary(self) -> dict:
        done = self._updates[: self._recorded]
        staleness = [a.staleness for u in done for a in u.arrivals]
        return {
            'sim_time_s': done[-1].time_s if done else 0.0,
            'server_updates': len(done),
            'clients_started': sum(len(u.trained) for u in done),
            'staleness_mean': sum(staleness) / len(staleness) if staleness else 0.0,
        }

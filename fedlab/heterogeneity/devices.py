"""Each client's device: how fast it trains, how fast it sends and receives, and when it is online.

`system=heterogeneous` draws the profiles, seeded, from log-normal distributions (`draw`); `system=trace` reads them
from a device-trace CSV (`read_trace`, format in docs/heterogeneity.md). Pure Python and numpy: the trace is read
and checked before TensorFlow loads.
"""

import csv
import dataclasses
import math
import pathlib
from typing import NamedTuple

from fedlab import seeds
from fedlab.errors import FedlabError

TRACE_COLUMNS = ('client_id', 'compute_examples_per_s', 'uplink_bits_per_s', 'downlink_bits_per_s', 'available')
RATES = TRACE_COLUMNS[1:4]
ALWAYS = ((0.0, math.inf),)


@dataclasses.dataclass(frozen=True)
class Device:
    """One client's capacity; `available`: (start, end) windows in seconds of the trace's period, online inside."""

    compute_examples_per_s: float
    uplink_bits_per_s: float
    downlink_bits_per_s: float
    available: tuple[tuple[float, float], ...] = ALWAYS

    def work_seconds(self, *, examples: int, downlink_bits: int, uplink_bits: int) -> 'WorkSeconds':
        """How long this device takes to download `downlink_bits`, train on `examples` (x epochs) and upload."""
        return WorkSeconds(downlink_bits / self.downlink_bits_per_s, examples / self.compute_examples_per_s,
                           uplink_bits / self.uplink_bits_per_s)


class WorkSeconds(NamedTuple):
    """A client's round on its device: seconds to download the model, to train, and to upload its update."""

    download: float
    training: float
    upload: float

    @property
    def total(self) -> float:
        return self.download + self.training + self.upload


@dataclasses.dataclass(frozen=True)
class Devices:
    """Every client's device, and the period after which the availability windows repeat (inf: they never do)."""

    by_client: dict[str, Device]
    period_s: float = math.inf

    @property
    def always_available(self) -> bool:
        return all(device.available == ALWAYS for device in self.by_client.values())

    def online_at(self, client_id: str, t: float) -> bool:
        windows = self.by_client[client_id].available
        return windows == ALWAYS or any(start <= t % self.period_s < end for start, end in windows)

    def offline_from(self, client_id: str, t: float) -> float:
        """When a client online at `t` goes offline (inf: never); a window ending at the period's end continues
        into one starting at 0."""
        windows = self.by_client[client_id].available
        if windows == ALWAYS:
            return math.inf
        cycle, phase = divmod(t, self.period_s)
        for start, end in windows:
            if start <= phase < end:
                if end < self.period_s or windows[0][0] > 0:
                    return cycle * self.period_s + end
                if windows[0][1] >= self.period_s:  # one window over the whole period
                    return math.inf
                return (cycle + 1) * self.period_s + windows[0][1]
        return t

    def next_online(self, client_ids, t: float) -> float:
        """The first time after `t` at which one of `client_ids` comes online (inf: none ever does)."""
        best = math.inf
        cycle, phase = divmod(t, self.period_s) if math.isfinite(self.period_s) else (0.0, t)
        for client_id in client_ids:
            for start, _ in self.by_client[client_id].available:
                begins = (cycle if start > phase else cycle + 1) * self.period_s + start
                best = min(best, begins)
        return best

    def check_clients(self, client_ids, source: str) -> None:
        """Refuses a trace whose clients are not the data's, naming which (one line)."""
        data, trace = set(client_ids), set(self.by_client)
        missing, extra = sorted(data - trace), sorted(trace - data)
        if missing:
            raise FedlabError(f'{source} has no row for {len(missing)} of the data\'s clients '
                              f'(e.g. {", ".join(missing[:3])}): every client needs a device')
        if extra:
            raise FedlabError(f'{source} names {len(extra)} clients the data lacks (e.g. {", ".join(extra[:3])})')


def draw(client_ids, distributions: dict[str, dict], *, seed: int) -> Devices:
    """`system=heterogeneous`: each rate drawn per client from a log-normal of the given `median` and `sigma` (the
    standard deviation of its natural log: 0 gives every client the median), always available. A client's draw
    depends on the seed and its id only, so it is the same device in every run of that seed."""
    import numpy as np  # here, not at the top: `fedlab --help` imports this module and does not need numpy

    by_client = {}
    for client_id in sorted(client_ids):
        rng = np.random.default_rng([seeds.derive(seed, 'devices'), *client_id.encode()])
        rates = [distributions[rate]['median'] * math.exp(distributions[rate]['sigma'] * rng.standard_normal())
                 for rate in RATES]
        by_client[client_id] = Device(*rates)
    return Devices(by_client)


def read_trace(path: pathlib.Path, *, period_s: float) -> Devices:
    """A device-trace CSV: a header of TRACE_COLUMNS, then a row per client; `available` is empty (always online)
    or space-separated `start-end` windows in seconds of [0, period_s]. Refuses a malformed file in one line naming
    the file, line and what is allowed."""
    if not path.is_file():
        raise FedlabError(f'system.path={path}: no such file')
    with open(path, newline='') as f:
        rows = list(csv.reader(f))
    if not rows or tuple(c.strip() for c in rows[0]) != TRACE_COLUMNS:
        raise FedlabError(f'{path}:1: the header must be {",".join(TRACE_COLUMNS)}')
    by_client = {}
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(TRACE_COLUMNS):
            raise FedlabError(f'{path}:{line}: {len(row)} fields, the header has {len(TRACE_COLUMNS)}')
        client_id = row[0].strip()
        if client_id in by_client:
            raise FedlabError(f'{path}:{line}: client {client_id} has a row already')
        rates = [_positive(path, line, column, cell) for column, cell in zip(RATES, row[1:4])]
        by_client[client_id] = Device(*rates, available=_windows(path, line, row[4], period_s))
    if not by_client:
        raise FedlabError(f'{path}: no client rows')
    return Devices(by_client, period_s=period_s)


def _positive(path, line: int, column: str, cell: str) -> float:
    try:
        value = float(cell)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise FedlabError(f'{path}:{line}: {column}={cell.strip()!r} is not allowed: a number > 0')
    return value


def _windows(path, line: int, cell: str, period_s: float) -> tuple[tuple[float, float], ...]:
    if not cell.strip():
        return ALWAYS
    windows = []
    for part in cell.split():
        try:
            start, end = (float(x) for x in part.split('-'))
        except ValueError:
            start = end = math.nan
        if not (0 <= start < end <= period_s):
            raise FedlabError(f'{path}:{line}: available window {part!r} is not allowed: start-end seconds with '
                              f'0 <= start < end <= system.period_s ({period_s:g})')
        windows.append((start, end))
    return tuple(sorted(windows))


def write_trace(path: pathlib.Path, devices: Devices) -> None:
    """Writes `devices` as a device-trace CSV (`available` empty for a client always online)."""
    with open(path, 'w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(TRACE_COLUMNS)
        for client_id, device in sorted(devices.by_client.items()):
            windows = '' if device.available == ALWAYS else ' '.join(f'{s:g}-{e:g}' for s, e in device.available)
            writer.writerow([client_id, f'{device.compute_examples_per_s:.6g}', f'{device.uplink_bits_per_s:.6g}',
                             f'{device.downlink_bits_per_s:.6g}', windows])

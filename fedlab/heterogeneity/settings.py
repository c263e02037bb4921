"""The `system` config group as checked values (before TensorFlow loads), and the run's system built from them."""

import dataclasses
import importlib.resources
import math
import os
import pathlib

from fedlab.errors import FedlabError
from fedlab.heterogeneity import devices as device_profiles
from fedlab.heterogeneity.async_clock import BufferedRounds
from fedlab.heterogeneity.clock import PoolDraw, SimulatedRounds, SystemRules

IDEAL, HETEROGENEOUS, TRACE = 'ideal', 'heterogeneous', 'trace'
RULE_KEYS = ('deadline_s', 'over_selection', 'dropout', 'partial_work')
KEYS = {
    IDEAL: ('kind',),
    HETEROGENEOUS: ('kind', *device_profiles.RATES, *RULE_KEYS),
    TRACE: ('kind', 'path', 'period_s', *RULE_KEYS),
}
# Where a relative system.path is looked for after the directory fedlab was started from: the shipped examples.
SHIPPED_TRACES = pathlib.Path(str(importlib.resources.files('fedlab.conf'))) / 'system'


@dataclasses.dataclass(frozen=True)
class SystemSettings:
    """A simulated system: its kind, the round's rules, and where the devices come from (the distributions of
    `heterogeneous`, or the trace file and the devices read from it)."""

    kind: str
    rules: SystemRules
    distributions: dict | None = None
    trace: pathlib.Path | None = None
    traced: device_profiles.Devices | None = None

    def devices(self, client_ids, *, seed: int) -> device_profiles.Devices:
        """Every client's device; a trace whose clients are not `client_ids` is refused, naming which."""
        if self.kind == HETEROGENEOUS:
            return device_profiles.draw(client_ids, self.distributions, seed=seed)
        self.traced.check_clients(client_ids, f'system.path={self.trace}')
        return self.traced

    @property
    def has_availability(self) -> bool:
        """Whether some client is offline part of the time (from the trace; never for heterogeneous)."""
        return self.traced is not None and not self.traced.always_available


def settings(system: dict | None, *, start_dir: str | None = None) -> SystemSettings | None:
    """The checked `system` group (None: ideal, today's rounds); a bad value raises FedlabError naming the key and
    what is allowed, and a trace file is read and checked (its clients are checked against the data later)."""
    kind = (system or {}).get('kind', IDEAL)
    if kind not in KEYS:
        raise FedlabError(f'system.kind={kind} is not allowed: system must be ideal, heterogeneous or trace')
    unknown = sorted(set(system or {}) - set(KEYS[kind]))
    if unknown:
        raise FedlabError(f'system.{unknown[0]} is not a key of system={kind}: its keys are {", ".join(KEYS[kind])}')
    if kind == IDEAL:
        return None
    rules = _rules(system)
    if kind == HETEROGENEOUS:
        return SystemSettings(kind, rules, distributions={rate: _distribution(system, rate)
                                                          for rate in device_profiles.RATES})
    period = system.get('period_s')
    if not (isinstance(period, (int, float)) and math.isfinite(period) and period > 0):
        raise FedlabError(f'system.period_s={period} is not allowed: the seconds after which availability repeats, > 0')
    path = trace_path(system.get('path'), start_dir)
    traced = device_profiles.read_trace(path, period_s=float(period))  # its format, before TensorFlow loads
    return SystemSettings(kind, rules, trace=path, traced=traced)


def trace_path(value, start_dir: str | None) -> pathlib.Path:
    """system.path: absolute, or relative to where fedlab was started, or to the shipped conf/system/."""
    if not value or value == '???':
        raise FedlabError('system=trace needs system.path=<device-trace CSV> (docs/heterogeneity.md)')
    path = pathlib.Path(os.path.expanduser(str(value)))
    if path.is_absolute():
        return path
    here = pathlib.Path(start_dir or os.getcwd()) / path
    return here if here.exists() or not (SHIPPED_TRACES / path).exists() else SHIPPED_TRACES / path


def _rules(system: dict) -> SystemRules:
    deadline, over, dropout, partial = (system.get(k) for k in RULE_KEYS)
    if deadline is not None and not (_number(deadline) and deadline > 0):
        raise FedlabError(f'system.deadline_s={deadline} is not allowed: null (none) or seconds > 0')
    if not (_number(over) and over >= 0):
        raise FedlabError(f'system.over_selection={over} is not allowed: a fraction >= 0 (sample N x (1 + it))')
    if not (_number(dropout) and 0 <= dropout < 1):
        raise FedlabError(f'system.dropout={dropout} is not allowed: a probability in [0, 1)')
    if partial not in (None, True, False):
        raise FedlabError(f'system.partial_work={partial} is not allowed: true or false')
    if partial and deadline is None:
        raise FedlabError('system.partial_work=true needs system.deadline_s=<seconds>: the work is cut at the deadline')
    return SystemRules(deadline_s=None if deadline is None else float(deadline), over_selection=float(over),
                       dropout=float(dropout), partial_work=bool(partial))


def _distribution(system: dict, rate: str) -> dict:
    value = system.get(rate)
    if not (isinstance(value, dict) and set(value) == {'median', 'sigma'} and _number(value['median'])
            and value['median'] > 0 and _number(value['sigma']) and value['sigma'] >= 0):
        raise FedlabError(f'system.{rate}={value} is not allowed: {{median: a number > 0, sigma: a number >= 0}} '
                          '(a log-normal: sigma is the standard deviation of the log)')
    return {'median': float(value['median']), 'sigma': float(value['sigma'])}


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclasses.dataclass(frozen=True)
class System:
    """A run's simulated system: the devices of its training clients, the rules, and the run's sampler
    (`make_sampler(client_ids, count)`) that draws from the clients online."""

    settings: SystemSettings
    devices: device_profiles.Devices
    make_sampler: object
    training_clients: tuple[str, ...]
    clients_per_round: int
    epochs: int
    seed: int

    def buffered_rounds(self, *, concurrency: int, buffer_size: int, downlink_bits: int, uplink_bits: int,
                        examples: dict[str, int]) -> BufferedRounds:
        """FedBuff's server updates on the simulated clock (fedlab.heterogeneity.async_clock)."""
        return BufferedRounds(
            self.devices, self.settings.rules.dropout, PoolDraw(self.make_sampler), self.training_clients,
            concurrency=concurrency, buffer_size=buffer_size, downlink_bits=downlink_bits, uplink_bits=uplink_bits,
            examples=examples, epochs=self.epochs, seed=self.seed,
        )

    def rounds(self, *, downlink_bits: int, uplink_bits: int, examples: dict[str, int],
               batch_size: int) -> SimulatedRounds:
        """The run's rounds on the simulated clock, for a process that sends these bits per client."""
        return SimulatedRounds(
            self.devices, self.settings.rules, PoolDraw(self.make_sampler), self.training_clients,
            self.clients_per_round, downlink_bits=downlink_bits, uplink_bits=uplink_bits, examples=examples,
            epochs=self.epochs, seed=self.seed, batch_size=batch_size,
        )

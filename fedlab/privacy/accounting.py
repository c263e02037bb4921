"""Epsilon after every round, from dp_accounting: each round of a DP aggregator is one Gaussian mechanism of
multiplier z on a Poisson sample of rate q, and the rounds compose.

Every round counts, with or without clients: the aggregate of an empty round is still released with its noise.
Epsilon after round t is a function of (q, z, t, delta) only, so a resumed run continues the same sequence.
"""

import functools
import math

import dp_accounting
from dp_accounting.pld import privacy_loss_distribution
from dp_accounting.rdp import rdp_privacy_accountant

from fedlab.privacy.checks import DpSettings


def round_event(noise_multiplier: float, sampling_rate: float) -> dp_accounting.DpEvent:
    """One round: the Gaussian mechanism, Poisson-sampled unless every client takes part (q = 1).

    With adaptive clipping TFF releases two Gaussians per round (the update and the count of unclipped clients);
    on the same sample they are one Gaussian of the total multiplier z (dp_accounting's RDP accountant reduces
    them the same way), which is what fedlab.aggregators.dp is given.
    """
    gaussian = dp_accounting.GaussianDpEvent(noise_multiplier)
    return gaussian if sampling_rate >= 1 else dp_accounting.PoissonSampledDpEvent(sampling_rate, gaussian)


def epsilon(noise_multiplier: float, sampling_rate: float, rounds: int, delta: float, accountant: str = 'rdp') -> float:
    """dp_accounting's epsilon for `rounds` rounds, straight from its accountants (slow for PLD: seconds)."""
    accountants = {'rdp': dp_accounting.rdp.RdpAccountant, 'pld': dp_accounting.pld.PLDAccountant}
    return accountants[accountant]().compose(round_event(noise_multiplier, sampling_rate), rounds).get_epsilon(delta)


class PrivacyLedger:
    """The privacy spent so far, one of the run's per-round annotators (recorder.RoundAnnotator): `columns` for
    metrics.csv, the TensorBoard run `privacy`, and results.json's `privacy`.

    RDP: the RDP of one round is computed once; t rounds are t times it (what RdpAccountant.compose(event, t)
    computes), turned into epsilon by dp_accounting's conversion. PLD: the privacy loss distribution of one round is
    built once (about a second) and self-composed t times (what PLDAccountant does; 0.1-5 s a round here, more for
    small z and late rounds).
    """

    columns = ('epsilon', 'delta', 'sampling_rate', 'noise_multiplier', 'accountant')
    tensorboard_run = 'privacy'

    def __init__(self, settings: DpSettings):
        self.settings = settings
        self._epsilons: dict[tuple[int, str], float] = {}
        self._rounds = 0  # the last recorded round

    @functools.cached_property
    def _rdp_accountant(self) -> dp_accounting.rdp.RdpAccountant:
        return dp_accounting.rdp.RdpAccountant().compose(self._event)

    @functools.cached_property
    def _one_round_pld(self):
        return privacy_loss_distribution.from_gaussian_mechanism(
            standard_deviation=self.settings.noise_multiplier,
            sampling_prob=self.settings.sampling_rate,
            value_discretization_interval=1e-4,  # PLDAccountant's default
        )

    @property
    def _event(self) -> dp_accounting.DpEvent:
        return round_event(self.settings.noise_multiplier, self.settings.sampling_rate)

    def epsilon(self, rounds: int, accountant: str | None = None) -> float:
        """Epsilon after `rounds` rounds at the run's delta (inf without noise, 0 before the first round)."""
        key = (rounds, accountant or self.settings.accountant)
        if key not in self._epsilons:
            self._epsilons[key] = self._compute(*key)
        return self._epsilons[key]

    def _compute(self, rounds: int, accountant: str) -> float:
        if rounds == 0:
            return 0.0
        if self.settings.noise_multiplier == 0:
            return math.inf
        if accountant == 'rdp':
            rdp = self._rdp_accountant
            return float(rdp_privacy_accountant.compute_epsilon(rdp.orders, rounds * rdp.rdp, self.settings.delta)[0])
        if self.settings.sampling_rate >= 1:  # a plain Gaussian composes in closed form
            return epsilon(self.settings.noise_multiplier, 1.0, rounds, self.settings.delta, 'pld')
        return float(self._one_round_pld.self_compose(rounds).get_epsilon_for_delta(self.settings.delta))

    def round_values(self, round_num: int, client_ids: list[str]) -> dict:
        """The round's metrics.csv columns. Every round counts, with or without clients."""
        del client_ids
        self._rounds = round_num
        return {
            'epsilon': self.epsilon(round_num),
            'delta': self.settings.delta,
            'sampling_rate': self.settings.sampling_rate,
            'noise_multiplier': self.settings.noise_multiplier,
            'accountant': self.settings.accountant,
        }

    def restore(self, row: dict[str, str] | None) -> None:
        """Epsilon needs no running total: only the last recorded round (None: no round yet)."""
        self._rounds = int(row['round']) if row else 0

    def summary(self) -> dict:
        """results.json's `privacy`: the guarantee after the last recorded round (by RDP too if PLD is chosen)."""
        s, rounds_completed = self.settings, self._rounds
        return {
            'epsilon': _json_number(self.epsilon(rounds_completed)),
            'delta': s.delta,
            'accountant': s.accountant,
            'epsilon_rdp': _json_number(self.epsilon(rounds_completed, 'rdp')),
            # PLD is tighter but costs seconds (about 3 s for q = 0.5, z = 0.5 here): only when it is the accountant.
            'epsilon_pld': _json_number(self.epsilon(rounds_completed, 'pld')) if s.accountant == 'pld' else None,
            'rounds': rounds_completed,
            'sampling_rate': s.sampling_rate,
            'noise_multiplier': s.noise_multiplier,
            'clipping': s.clipping,
            'update_noise_multiplier': s.update_noise_multiplier,
            'clipped_count_stddev': s.clipped_count_stddev,
            'mechanism': 'Poisson-sampled Gaussian, composed over every round (user-level, add/remove one client)'
            if s.sampling_rate < 1 else 'Gaussian on every round (q = 1, no amplification by sampling)',
            'caveats': list(s.caveats),
        }

    def describe(self) -> str:
        """One line for the console."""
        s = self.settings
        adaptive = (
            f' (adaptive clipping: the update gets z={s.update_noise_multiplier:.4g}, the clip estimate\'s count '
            f'stddev {s.clipped_count_stddev:.4g})' if s.clipping == 'adaptive' and s.noise_multiplier > 0 else ''
        )
        return (
            f'differential privacy: noise multiplier z={s.noise_multiplier:g}{adaptive}, sampling rate '
            f'q={s.sampling_rate:.4g}, delta={s.delta:.3g}; epsilon after each round by {s.accountant.upper()} in '
            'metrics.csv'
        )


def _json_number(value: float) -> float | str:
    return value if math.isfinite(value) else 'inf'

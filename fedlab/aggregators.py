"""Model-update aggregators: TFF's weighted mean, compression, robust, secure and differentially private ones.

`mean`, `compression`, `robust` and `secure` are weighted (clients weighted by example count); `dp` and `dp_fixed`
are unweighted, as TFF builds DP-FedAvg: every client's clipped update counts once and the sum is divided by the
*expected* number of clients per round, so a round's sensitivity does not depend on who took part.
"""

import logging

import tensorflow_federated as tff

from fedlab.privacy.checks import DP_WITH_COMPRESSION
from fedlab.tff_internals import aggregation as tff_aggregation

log = logging.getLogger(__name__)


def mean() -> tff.aggregators.WeightedAggregationFactory:
    """The weighted mean FedAvg uses by default (weights = client example counts)."""
    return tff.aggregators.MeanFactory()


def compression() -> tff.aggregators.WeightedAggregationFactory:
    """8-bit uniform quantization of tensors over 20,000 elements, with adaptive zeroing and clipping."""
    return tff.learning.compression_aggregator()


def robust(*, zeroing: bool = True, clipping: bool = True) -> tff.aggregators.WeightedAggregationFactory:
    """`tff.learning.robust_aggregator`: the weighted mean with adaptive zeroing of huge updates and adaptive L2
    clipping (Andrew et al. 2021) without noise. Its norm estimates are exact counts: no privacy."""
    return tff.learning.robust_aggregator(zeroing=zeroing, clipping=clipping, weighted=True)


def secure(*, zeroing: bool = True, clipping: bool = True) -> tff.aggregators.WeightedAggregationFactory:
    """`tff.learning.secure_aggregator` (weighted), run in TFF's test execution context.

    TFF 0.87's default C++ context cannot execute `federated_secure_sum_bitwidth`; its test context is the same
    C++ runtime whose compiler first replaces each secure sum with a plain sum of the same integers (asserting
    every summand is within the bit width). Everything around the sum runs as in production: clipping to the
    adaptive bounds, encoding floats as 32-bit integers, decoding at the server. The cryptographic protocol
    (masking, key agreement, dropout recovery) is not run. See docs/privacy.md.
    """
    tff.backends.test.set_sync_test_cpp_execution_context()
    tff_aggregation.quiet_secure_sum_encoding()
    log.warning(
        'aggregator=secure: secure sums are simulated by TFF\'s test context (same clipping and integer encoding, '
        'plain sums instead of the cryptographic protocol); this process now runs in that context'
    )
    return tff.learning.secure_aggregator(zeroing=zeroing, clipping=clipping, weighted=True)


def _refuse_compression(compression: bool) -> None:
    # TFF would take a compressing `record_aggregation_factory`; fedlab.privacy.checks refuses it before TF loads too.
    if compression:
        raise ValueError(f'a DP aggregator with compression=true: {DP_WITH_COMPRESSION}')


def dp(
    *,
    noise_multiplier: float,
    clients_per_round: float,
    initial_clip: float = 0.1,
    target_unclipped_quantile: float = 0.5,
    clip_learning_rate: float = 0.2,
    clipped_count_stddev: float | None = None,
    zeroing: bool = False,
    compression: bool = False,
) -> tff.aggregators.UnweightedAggregationFactory:
    """DP-FedAvg with adaptive clipping: `tff.learning.dp_aggregator` with its clipping settings exposed.

    `DifferentiallyPrivateFactory.gaussian_adaptive`: each update is clipped to an L2 norm that follows the
    `target_unclipped_quantile` of the clients' norms (geometric updates of rate `clip_learning_rate` from
    `initial_clip`), Gaussian noise is added to the sum, which is divided by `clients_per_round` (expected).
    `noise_multiplier` is the *total* z: TFF spends part of it on the noised count of unclipped clients
    (stddev `clipped_count_stddev`, default 0.05 x clients_per_round) and adds correspondingly more to the update,
    so that the round is one Gaussian mechanism of multiplier z. With the defaults and `zeroing=True` this is
    exactly `tff.learning.dp_aggregator(noise_multiplier, clients_per_round)` (tested). `zeroing` defaults to
    False here: TFF's adaptive zeroing estimates its norm without noise, a release no accountant covers.
    """
    _refuse_compression(compression)
    factory = tff.aggregators.DifferentiallyPrivateFactory.gaussian_adaptive(
        float(noise_multiplier),
        float(clients_per_round),
        initial_l2_norm_clip=float(initial_clip),
        target_unclipped_quantile=float(target_unclipped_quantile),
        learning_rate=float(clip_learning_rate),
        clipped_count_stddev=None if clipped_count_stddev is None else float(clipped_count_stddev),
    )
    if zeroing:  # TFF's dp_aggregator's zeroing (not exported: fedlab.tff_internals.aggregation)
        factory = tff_aggregation.with_default_zeroing(factory)
    return factory


def dp_fixed(
    *, noise_multiplier: float, clients_per_round: float, clip: float, compression: bool = False
) -> tff.aggregators.UnweightedAggregationFactory:
    """DP-FedAvg with a fixed L2 clip: `DifferentiallyPrivateFactory.gaussian_fixed` (McMahan et al. 2018).

    Each update is clipped to `clip`, the sum gets Gaussian noise of stddev `noise_multiplier * clip` and is
    divided by `clients_per_round` (the expected number of clients, also under Poisson sampling).
    """
    _refuse_compression(compression)
    return tff.aggregators.DifferentiallyPrivateFactory.gaussian_fixed(
        float(noise_multiplier), float(clients_per_round), float(clip)
    )

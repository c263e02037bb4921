"""What fedlab's aggregators (fedlab/aggregators.py) need of TFF's internals: the adaptive zeroing TFF's
`dp_aggregator` wraps its DP factory in, and quiet secure-sum encoding.

On the version gate's TFF, `with_default_zeroing` is TFF's own private `_default_zeroing` (so `aggregator=dp
aggregator.zeroing=true` is `tff.learning.dp_aggregator` by construction), and `aggregator=secure` drops the
TensorFlow error TFF 0.87's secure-sum encoding logs for an assertion it builds and never runs. On another TFF:
the zeroing is built through TFF's public API with 0.87's constants (that TFF's `dp_aggregator` may use others),
and TensorFlow's log is left as it is.
"""

import logging
import math

import tensorflow_federated as tff

from fedlab.tff_internals import version_gate

# TFF 0.87's constants of `model_update_aggregator._default_zeroing`: a norm that adapts very quickly to somewhat
# above the largest updates seen so far, estimated without noise.
_ZEROING_NORM_0_87 = dict(initial_estimate=10.0, target_quantile=0.98, learning_rate=math.log(10.0), multiplier=2.0,
                          increment=1.0)


def with_default_zeroing(factory):
    """`factory` wrapped in the adaptive zeroing of TFF's `dp_aggregator`."""
    if version_gate.supported():
        from tensorflow_federated.python.learning import model_update_aggregator

        return model_update_aggregator._default_zeroing(factory)
    zeroing_norm = tff.aggregators.PrivateQuantileEstimationProcess.no_noise(**_ZEROING_NORM_0_87)
    return tff.aggregators.zeroing_factory(zeroing_norm, factory)


def quiet_secure_sum_encoding() -> None:
    """On the gate's TFF, drops the TensorFlow error its secure-sum encoding logs for an unused assertion."""
    if version_gate.supported():
        logging.getLogger('tensorflow').addFilter(_unused_bound_assertion)


def _unused_bound_assertion(record: logging.LogRecord) -> bool:
    """Drops TensorFlow's report of the `lower_bound <= upper_bound` assertion that TFF 0.87's secure-sum encoding
    (tensorflow_federated.python.aggregators.primitives) builds and never runs: one multi-line ERROR per tensor."""
    message = record.getMessage()
    return not ('Object was never used' in message and 'assert_less_equal' in message)

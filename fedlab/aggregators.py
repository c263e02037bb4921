"""Model-update aggregators: TFF's weighted mean and its compression aggregator."""

import tensorflow_federated as tff


def mean() -> tff.aggregators.WeightedAggregationFactory:
    """The weighted mean FedAvg uses by default (weights = client example counts)."""
    return tff.aggregators.MeanFactory()


def compression() -> tff.aggregators.WeightedAggregationFactory:
    """8-bit uniform quantization of tensors over 20,000 elements, with adaptive zeroing and clipping."""
    return tff.learning.compression_aggregator()

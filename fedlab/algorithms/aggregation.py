"""Client weighting, and the two kinds of TFF aggregation factory every builder accepts.

`weighting='num_examples'` weights each client's update by its example count (McMahan et al.'s FedAvg);
`'uniform'` gives every client weight 1. An unweighted factory (`tff.aggregators.UnweightedAggregationFactory`,
e.g. `tff.learning.dp_aggregator` or `ddp_secure_aggregator`) ignores weights, so it needs `weighting='uniform'`;
a weighted one (e.g. `tff.aggregators.MeanFactory`) works with both, with weights 1 under `uniform`.
"""

import tensorflow_federated as tff

from fedlab.algorithms import NUM_EXAMPLES, UNIFORM, WEIGHTINGS
from fedlab.errors import FedlabError

AggregationFactory = tff.aggregators.WeightedAggregationFactory | tff.aggregators.UnweightedAggregationFactory


def check_weighting(weighting: str, factory: AggregationFactory | None, *, role: str = 'model_aggregator') -> None:
    if weighting not in WEIGHTINGS:
        raise FedlabError(f'weighting={weighting} is not allowed: weighting must be num_examples or uniform')
    if is_unweighted(factory) and weighting != UNIFORM:
        raise FedlabError(
            f'{role} {type(factory).__name__} is unweighted (it ignores client weights): use weighting=uniform'
        )


def is_unweighted(factory: AggregationFactory | None) -> bool:
    return isinstance(factory, tff.aggregators.UnweightedAggregationFactory)


def as_weighted(factory: AggregationFactory | None) -> tff.aggregators.WeightedAggregationFactory:
    """The factory as the fast paths compose it: weighted (an unweighted one ignores the weights, as TFF's
    `build_unweighted_*` builders do it); None is TFF's default, the weighted mean."""
    if factory is None:
        return tff.aggregators.MeanFactory()
    if is_unweighted(factory):
        return tff.aggregators.as_weighted_aggregator(factory)
    return factory


def client_weighting(weighting: str) -> tff.learning.ClientWeighting:
    """TFF's enum for the dataset path's builders."""
    return {NUM_EXAMPLES: tff.learning.ClientWeighting.NUM_EXAMPLES, UNIFORM: tff.learning.ClientWeighting.UNIFORM}[
        weighting
    ]

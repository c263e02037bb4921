"""FedSGD (McMahan et al. 2017): each client sends the average gradient of its data at the server's model,
without training; the server optimizer takes the step (with SGD, one large-batch SGD step per round).
There is no client optimizer, client learning rate or local epoch: fedlab refuses those keys with fedsgd."""

import tensorflow_federated as tff

from fedlab.algorithms import aggregation
from fedlab.algorithms.aggregation import NUM_EXAMPLES, UNIFORM, AggregationFactory
from fedlab.algorithms.templates import client_work, composition
from fedlab.errors import FedlabError
from fedlab.models import ModelFn


def build_fed_sgd(
    model_fn: ModelFn,
    server_optimizer: tff.learning.optimizers.Optimizer,
    *,
    model_aggregator: AggregationFactory | None = None,
    weighting: str = NUM_EXAMPLES,
    client_inputs: str = 'shards',
    batch_size: int = 20,
    pack_clients: bool = False,
) -> tff.learning.templates.LearningProcess:
    """`client_inputs='dataset'`: TFF's `build_fed_sgd`, which weights clients by example count; uniform
    weighting there needs an unweighted aggregator (the weighted mean is swapped for the unweighted one)."""

    def tff_builder():
        factory = model_aggregator
        if weighting == UNIFORM and not aggregation.is_unweighted(factory):
            # All weights 1 make the weighted mean the unweighted one; other weighted factories would see
            # TFF's example counts.
            if factory is not None and type(factory) is not tff.aggregators.MeanFactory:
                raise FedlabError(
                    f'algorithm=fedsgd weighting=uniform client_inputs=dataset needs an unweighted aggregator '
                    f'({type(factory).__name__} would weight by examples): use client_inputs=shards'
                )
            factory = tff.aggregators.UnweightedMeanFactory()
        if aggregation.is_unweighted(factory):
            factory = tff.aggregators.as_weighted_aggregator(factory)
        return tff.learning.algorithms.build_fed_sgd(
            model_fn, server_optimizer_fn=server_optimizer, model_aggregator=factory
        )

    def fast_client_work(inputs):
        return client_work.build_gradient_client_work(model_fn, inputs, weighting=weighting)

    return composition.build_for_inputs(
        model_fn, server_optimizer, tff_builder, fast_client_work, client_inputs=client_inputs, batch_size=batch_size,
        weighting=weighting, model_aggregator=model_aggregator, pack_clients=pack_clients,
    )  # fmt: skip

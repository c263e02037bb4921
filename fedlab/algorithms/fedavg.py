"""FedAvg (McMahan et al. 2017) and, with any server optimizer, FedOpt (Reddi et al. 2021: FedAvgM, FedAdam,
FedYogi, FedAdagrad): clients train with `client_optimizer` and send their model delta; the server applies
the aggregate with `server_optimizer`."""

import tensorflow_federated as tff

from fedlab.algorithms import aggregation
from fedlab.algorithms.aggregation import NUM_EXAMPLES, AggregationFactory
from fedlab.algorithms.templates import client_work, composition
from fedlab.models import ModelFn


def build_fed_avg(
    model_fn: ModelFn,
    client_optimizer: tff.learning.optimizers.Optimizer,
    server_optimizer: tff.learning.optimizers.Optimizer,
    *,
    model_aggregator: AggregationFactory | None = None,
    weighting: str = NUM_EXAMPLES,
    client_inputs: str = 'shards',
    batch_size: int = 20,
    pack_clients: bool = False,
) -> tff.learning.templates.LearningProcess:
    """`client_inputs='dataset'`: TFF's `build_weighted_fed_avg` (or `build_unweighted_fed_avg` for an
    unweighted `model_aggregator`); `'tensors'` / `'shards'`: the same maths on fedlab's fast client work."""

    def tff_builder():
        if aggregation.is_unweighted(model_aggregator):
            return tff.learning.algorithms.build_unweighted_fed_avg(
                model_fn, client_optimizer, server_optimizer, model_aggregator=model_aggregator
            )
        return tff.learning.algorithms.build_weighted_fed_avg(
            model_fn, client_optimizer, server_optimizer,
            client_weighting=aggregation.client_weighting(weighting), model_aggregator=model_aggregator,
        )  # fmt: skip

    def fast_client_work(inputs):
        return client_work.build_model_delta_client_work(model_fn, client_optimizer, inputs, weighting=weighting)

    return composition.build_for_inputs(
        model_fn, server_optimizer, tff_builder, fast_client_work, client_inputs=client_inputs, batch_size=batch_size,
        weighting=weighting, model_aggregator=model_aggregator, pack_clients=pack_clients,
    )  # fmt: skip

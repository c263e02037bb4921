"""FedProx (Li et al. 2020): FedAvg whose clients minimise their loss plus mu/2 ||w - w_server||^2, i.e. add
mu * (w - w_server) to every gradient, so that they drift less from the server's model.

TFF 0.87's `build_weighted_fed_prox` adds mu * (w_server - w) instead (templates/proximal_client_work.py:
`lambda x, y: delta_l2_regularizer * (y - x)` with x the client's weights and y the server's), which pushes
clients away from the server's model: measured on 8x8 digits (linear model, 20 local epochs, client lr 0.1),
|w - w_server| after one round is 5.1 at mu=0, 9.6e10 at mu=1 and NaN at mu=5. fedlab's fast client work
adds the paper's term; TFF's dataset path is therefore offered for mu=0 only (where both are FedAvg).
tests/test_algorithms.py checks that fedlab's client work with strength -mu reproduces TFF's builder with mu.
"""

import tensorflow_federated as tff

from fedlab.algorithms import aggregation
from fedlab.algorithms.aggregation import NUM_EXAMPLES, AggregationFactory
from fedlab.algorithms.templates import client_work, composition
from fedlab.errors import FedlabError
from fedlab.models import ModelFn

TFF_SIGN_NOTE = (
    "TFF 0.87's build_weighted_fed_prox adds mu * (w_server - w), pushing clients away from the server model"
)


def build_fed_prox(
    model_fn: ModelFn,
    client_optimizer: tff.learning.optimizers.Optimizer,
    server_optimizer: tff.learning.optimizers.Optimizer,
    *,
    mu: float,
    model_aggregator: AggregationFactory | None = None,
    weighting: str = NUM_EXAMPLES,
    client_inputs: str = 'shards',
    batch_size: int = 20,
    pack_clients: bool = False,
) -> tff.learning.templates.LearningProcess:
    """FedProx with proximal strength `mu` >= 0 (0 is FedAvg, the same computation as `build_fed_avg`)."""
    if not mu >= 0:
        raise FedlabError(f'algorithm.mu={mu} is not allowed: the proximal strength mu must be >= 0')

    def tff_builder():
        if mu > 0:
            raise FedlabError(
                f'algorithm=fedprox with algorithm.mu={mu} runs on client_inputs=shards or tensors: {TFF_SIGN_NOTE}'
            )
        if aggregation.is_unweighted(model_aggregator):
            return tff.learning.algorithms.build_unweighted_fed_prox(
                model_fn, 0.0, client_optimizer, server_optimizer, model_aggregator=model_aggregator
            )
        return tff.learning.algorithms.build_weighted_fed_prox(
            model_fn, 0.0, client_optimizer, server_optimizer,
            client_weighting=aggregation.client_weighting(weighting), model_aggregator=model_aggregator,
        )  # fmt: skip

    def fast_client_work(inputs):
        return client_work.build_model_delta_client_work(
            model_fn, client_optimizer, inputs, weighting=weighting, proximal_strength=float(mu)
        )

    return composition.build_for_inputs(
        model_fn, server_optimizer, tff_builder, fast_client_work, client_inputs=client_inputs, batch_size=batch_size,
        weighting=weighting, model_aggregator=model_aggregator, pack_clients=pack_clients,
    )  # fmt: skip

"""FedDyn (Acar et al. 2021, "Federated learning based on dynamic regularization"): each client minimises its loss
minus <g_i, w> plus alpha/2 ||w - x||^2, where g_i is its state (the gradient of its loss at its last model, kept
between the rounds it is sampled in: fedlab.run.client_states), then sets g_i -= alpha (y_i - x); the server keeps
h, h -= alpha |P| / N mean(y_i - x), and its model is mean(y_i) - h / alpha (server SGD with learning rate 1; another
server optimizer takes the corrected aggregate as its pseudo-gradient).

alpha = 0 is FedAvg, metric for metric (no regulariser, g_i and h stay zero, nothing corrected; the alpha -> 0
limit of the server's h / alpha would not vanish, so 0 is defined as FedAvg). One upload and one download a round,
as FedAvg's, plus the count of clients (32 bits). TFF has no FedDyn builder: fedlab's client work runs on every
client_inputs."""

import tensorflow_federated as tff

from fedlab.algorithms.aggregation import NUM_EXAMPLES, AggregationFactory
from fedlab.algorithms.templates import composition, stateful_client_work
from fedlab.errors import FedlabError
from fedlab.models import ModelFn


def build_fed_dyn(
    model_fn: ModelFn,
    client_optimizer: tff.learning.optimizers.Optimizer,
    server_optimizer: tff.learning.optimizers.Optimizer,
    *,
    alpha: float,
    num_clients: int,
    model_aggregator: AggregationFactory | None = None,
    weighting: str = NUM_EXAMPLES,
    client_inputs: str = 'shards',
    batch_size: int = 20,
) -> composition.StatefulLearningProcess:
    """`alpha` >= 0: the regularisation strength; `num_clients`: N, the clients that can train."""
    if not alpha >= 0:
        raise FedlabError(f'algorithm.alpha={alpha} is not allowed: FedDyn\'s alpha must be >= 0')
    return composition.build_own_client_work(
        model_fn, server_optimizer,
        lambda inputs: stateful_client_work.build_feddyn_client_work(
            model_fn, client_optimizer, inputs, weighting=weighting, alpha=float(alpha), num_clients=num_clients),
        client_inputs=client_inputs, batch_size=batch_size, weighting=weighting, model_aggregator=model_aggregator,
    )  # fmt: skip

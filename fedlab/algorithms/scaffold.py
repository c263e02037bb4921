"""SCAFFOLD (Karimireddy et al. 2020, "SCAFFOLD: stochastic controlled averaging for federated learning"), control
variates option II: each client corrects every local gradient by c - c_i (the server's control variate minus its
own), then sets c_i+ = c_i - c + (x - y_i) / (K_i lr); the server applies the aggregated delta with its optimizer
(server_lr is SCAFFOLD's global step size) and adds sum(c_i+ - c_i) / N to c. Each client keeps c_i between the
rounds it is sampled in (fedlab.run.client_states); c and c_i+ - c_i double FedAvg's download and upload.

The first round (all control variates zero) is FedAvg's first round. TFF has no SCAFFOLD builder: fedlab's client
work runs on every client_inputs."""

import tensorflow_federated as tff

from fedlab.algorithms.aggregation import NUM_EXAMPLES, AggregationFactory
from fedlab.algorithms.templates import composition, stateful_client_work
from fedlab.models import ModelFn


def build_scaffold(
    model_fn: ModelFn,
    client_optimizer: tff.learning.optimizers.Optimizer,
    server_optimizer: tff.learning.optimizers.Optimizer,
    *,
    num_clients: int,
    model_aggregator: AggregationFactory | None = None,
    weighting: str = NUM_EXAMPLES,
    client_inputs: str = 'shards',
    batch_size: int = 20,
) -> composition.StatefulLearningProcess:
    """`client_optimizer`: plain SGD (option II divides by its learning rate); `num_clients`: N, the clients that can
    train (fedlab passes the training population)."""
    return composition.build_own_client_work(
        model_fn, server_optimizer,
        lambda inputs: stateful_client_work.build_scaffold_client_work(
            model_fn, client_optimizer, inputs, weighting=weighting, num_clients=num_clients),
        client_inputs=client_inputs, batch_size=batch_size, weighting=weighting, model_aggregator=model_aggregator,
    )  # fmt: skip

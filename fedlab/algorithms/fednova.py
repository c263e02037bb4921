"""FedNova (Wang et al. 2020, "Tackling the objective inconsistency problem in heterogeneous federated
optimization"): clients train as in FedAvg but send their model delta divided by their number of local steps
(||a_i||_1, momentum included); the server rescales the aggregate by the clients' weighted mean of it (tau_eff).
A client with more examples or more epochs then no longer pulls the model further for having taken more steps,
and with equal steps everywhere it is FedAvg. Stateless; the extra upload is one float32 per client.

TFF has no FedNova builder: fedlab's client work runs on every client_inputs (on `dataset`, TFF's datasets read
into tensors in the client's computation)."""

import tensorflow_federated as tff

from fedlab.algorithms.aggregation import NUM_EXAMPLES, AggregationFactory
from fedlab.algorithms.templates import client_work, composition
from fedlab.models import ModelFn


def build_fed_nova(
    model_fn: ModelFn,
    client_optimizer: tff.learning.optimizers.Optimizer,
    server_optimizer: tff.learning.optimizers.Optimizer,
    *,
    model_aggregator: AggregationFactory | None = None,
    weighting: str = NUM_EXAMPLES,
    client_inputs: str = 'shards',
    batch_size: int = 20,
) -> tff.learning.templates.LearningProcess:
    """`client_optimizer`: SGD, with or without heavy-ball momentum (||a_i||_1 is known for those only)."""
    return composition.build_own_client_work(
        model_fn, server_optimizer,
        lambda inputs: client_work.build_normalized_client_work(model_fn, client_optimizer, inputs, weighting=weighting),
        client_inputs=client_inputs, batch_size=batch_size, weighting=weighting, model_aggregator=model_aggregator,
    )  # fmt: skip

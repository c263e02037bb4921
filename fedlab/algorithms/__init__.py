"""Federated learning algorithms, one module each, on TFF's dataset path and on fedlab's fast client paths.

    fedavg.build_fed_avg        weighted or uniform FedAvg / FedOpt (any server optimizer)
    fedprox.build_fed_prox      FedAvg whose clients add mu * (w - w_server) to every gradient
    fedsgd.build_fed_sgd        clients send their average gradient; the server optimizer steps
    mime_lite.build_mime_lite   clients step with the server's frozen base-optimizer state; two uploads a round

Every builder takes the model function and the optimizers it needs positionally and the rest by keyword:
`model_aggregator` (a weighted or an unweighted `tff.aggregators` factory), `weighting`, `client_inputs`
(`dataset`: TFF's own builder; `tensors` / `shards`: fedlab's client work in `client_work`, composed by
`composition`) and `batch_size`. The other modules: `optimizers` (what the optimizer config groups name),
`schedules` (learning rates per round), `combinations` (what fits together, checked before TensorFlow loads),
`aggregation` (weighting and the two kinds of aggregation factory).

This package's __init__, `combinations` and `schedules` import no TensorFlow: the CLI checks a config with
them before TensorFlow loads.
"""

# Client weighting (the `weighting` key): by example count, or 1 per client (what unweighted aggregators need).
NUM_EXAMPLES = 'num_examples'
UNIFORM = 'uniform'
WEIGHTINGS = (NUM_EXAMPLES, UNIFORM)

"""Federated learning algorithms, one module each, on TFF's dataset path and on fedlab's fast client paths.

    fedavg.build_fed_avg        weighted or uniform FedAvg / FedOpt (any server optimizer)
    fedprox.build_fed_prox      FedAvg whose clients add mu * (w - w_server) to every gradient
    fedsgd.build_fed_sgd        clients send their average gradient; the server optimizer steps
    mime_lite.build_mime_lite   clients step with the server's frozen base-optimizer state; two uploads a round
    scaffold.build_scaffold     clients correct each gradient by c - c_i and keep their control variate c_i
    feddyn.build_fed_dyn        clients add -g_i + alpha (w - w_server) and keep g_i; the server corrects by h / alpha
    fednova.build_fed_nova      deltas normalised by each client's local steps, rescaled by their weighted mean

Every builder takes the model function and the optimizers it needs positionally and the rest by keyword:
`model_aggregator` (a weighted or an unweighted `tff.aggregators` factory), `weighting`, `client_inputs`
(`dataset`: TFF's own builder; `tensors` / `shards`: fedlab's client work in `client_work`, composed by
`composition`) and `batch_size`; SCAFFOLD and FedDyn also `num_clients` (the clients that can train) and build a
`templates.composition.StatefulLearningProcess`, whose clients' states fedlab.run.client_states keeps. The other
modules: `optimizers` (what the optimizer config groups name), `schedules` (learning rates per round),
`aggregation` (weighting and the two kinds of aggregation factory), and `templates` (the client work, its
composition and packed rounds of the fast paths).

What the checks before TensorFlow know of each builder (packable, client training, DP coverage, ...) is its row
in fedlab.config.components: a new algorithm is its module here, its yaml file under conf/algorithm/, that row,
and its client work in templates/client_work.py if it runs on client_inputs=shards or tensors.

This package's __init__ and `schedules` import no TensorFlow: the CLI checks a config with them before TensorFlow
loads.
"""

# Client weighting (the `weighting` key): by example count, or 1 per client (what unweighted aggregators need).
NUM_EXAMPLES = 'num_examples'
UNIFORM = 'uniform'
WEIGHTINGS = (NUM_EXAMPLES, UNIFORM)

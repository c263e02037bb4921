"""Mime Lite (Karimireddy et al. 2021, "Breaking the centralized barrier for cross-device federated learning"):
the server keeps a base optimizer's state (fedlab's default: SGD with momentum 0.9) and sends it with the model;
clients take base-optimizer steps with that state held fixed, then send their model delta and the full-batch
gradient at the server's model, whose aggregate advances the state. Two uploads per round, and the download
carries the optimizer state too: the communication ledger shows both."""

import collections

import tensorflow_federated as tff

from fedlab.algorithms import aggregation
from fedlab.algorithms.aggregation import NUM_EXAMPLES, AggregationFactory
from fedlab.algorithms.templates import algorithm_state, client_work, composition
from fedlab.models import ModelFn


def build_mime_lite(
    model_fn: ModelFn,
    client_optimizer: tff.learning.optimizers.Optimizer,
    server_optimizer: tff.learning.optimizers.Optimizer,
    *,
    model_aggregator: AggregationFactory | None = None,
    full_gradient_aggregator: AggregationFactory | None = None,
    weighting: str = NUM_EXAMPLES,
    client_inputs: str = 'shards',
    batch_size: int = 20,
) -> tff.learning.templates.LearningProcess:
    """`client_optimizer` is Mime's base optimizer (its state lives at the server). `client_inputs='dataset'`:
    TFF's `build_weighted_mime_lite` (`build_unweighted_mime_lite` when both aggregators are unweighted). The
    process's hyper-parameters include the base optimizer's (TFF's own omit them):
    `get_hparams(state)['client_work']['learning_rate']` is the client learning rate."""
    aggregation.check_weighting(weighting, full_gradient_aggregator, role='full_gradient_aggregator')

    def tff_builder():
        factories = (model_aggregator, full_gradient_aggregator)
        unweighted = [f is not None and aggregation.is_unweighted(f) for f in factories]
        if any(unweighted) and all(u or f is None for u, f in zip(unweighted, factories)):
            process = tff.learning.algorithms.build_unweighted_mime_lite(
                model_fn, client_optimizer, server_optimizer,
                model_aggregator=model_aggregator, full_gradient_aggregator=full_gradient_aggregator,
            )  # fmt: skip
        else:
            process = tff.learning.algorithms.build_weighted_mime_lite(
                model_fn, client_optimizer, server_optimizer,
                client_weighting=aggregation.client_weighting(weighting),
                model_aggregator=aggregation.as_weighted(model_aggregator),
                full_gradient_aggregator=aggregation.as_weighted(full_gradient_aggregator),
            )  # fmt: skip
        return _with_base_optimizer_hparams(process, client_optimizer)

    def fast_client_work(inputs):
        return client_work.build_mime_lite_client_work(
            model_fn, client_optimizer, inputs, weighting=weighting,
            full_gradient_aggregator=aggregation.as_weighted(full_gradient_aggregator),
        )  # fmt: skip

    return composition.build_for_inputs(
        model_fn, server_optimizer, tff_builder, fast_client_work, client_inputs=client_inputs, batch_size=batch_size,
        weighting=weighting, model_aggregator=model_aggregator,
    )  # fmt: skip


def _with_base_optimizer_hparams(
    process: tff.learning.templates.LearningProcess, base_optimizer: tff.learning.optimizers.Optimizer
) -> tff.learning.templates.LearningProcess:
    """TFF's Mime Lite process with the base optimizer's hyper-parameters (kept in its client work state as
    `(optimizer state, aggregator state)`) exposed through get_hparams / set_hparams, as the fast path does."""
    state_type = process.initialize.type_signature.result.member

    @tff.tensorflow.computation(state_type)
    def get_hparams_fn(state):
        return collections.OrderedDict(
            client_work=base_optimizer.get_hparams(state.client_work[0]),
            finalizer=process.get_hparams(state)['finalizer'],
        )

    @tff.tensorflow.computation(state_type, get_hparams_fn.type_signature.result)
    def set_hparams_fn(state, hparams):
        state = process.set_hparams(
            state, collections.OrderedDict(client_work=collections.OrderedDict(), finalizer=hparams['finalizer'])
        )
        optimizer_state, aggregator_state = state.client_work
        client_work_state = (base_optimizer.set_hparams(optimizer_state, hparams['client_work']), aggregator_state)
        return algorithm_state(state, client_work=client_work_state)

    return tff.learning.templates.LearningProcess(
        process.initialize,
        process.next,
        process.get_model_weights,
        process.set_model_weights,
        get_hparams_fn=get_hparams_fn,
        set_hparams_fn=set_hparams_fn,
    )

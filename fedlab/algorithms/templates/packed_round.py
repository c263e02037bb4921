"""A round of packed clients in one broadcast, one call per group and one sum.

In TFF's C++ worker every federated step that reaches the clients has a fixed cost whatever it carries: a
broadcast, a map over 2 clients and a sum cost about 2 ms together (docs/performance.md), more than a round of
linear's training. The composed round (fedlab.algorithms.templates.composition.compose) takes 2 broadcasts, 5 maps
at the clients and 3 sums: the weights and the client work's state are broadcast apart, TFF's weighted mean
multiplies each update by its weight in a map of its own and sums updates and weights apart, and the metrics are
summed a third time. With packed clients the aggregator is always that weighted mean
(fedlab.fast_paths.client_packing.check_linear), so `build_next` does the same arithmetic in fewer steps:

    broadcast   (model weights, client work state), together
    map         each group's update (templates.client_work), multiplied by its weight as MeanFactory does
    sum         (weighted updates, weights, unfinalized metrics), together
    at SERVER   MeanFactory's division, the metric finalizers (as `tff.learning.metrics.sum_then_finalize`), and the
                finalizer process (the server optimizer), as composed

The state and metrics have the composed round's types (checked by `compose`) and values: the broadcast process
and the mean's inner sums are stateless and measure nothing (checked here), so their state passes through and
their measurements are empty; the client work's state, its hyper-parameters, is not changed by a round either.
tests/test_efficiency.py compares the two rounds bit for bit.
"""

import collections

import tensorflow as tf
import tensorflow_federated as tff

from fedlab.algorithms.templates import algorithm_state
from fedlab.algorithms.templates.client_work import TensorClientWork
from fedlab.models import ModelFn


def build_next(
    model_fn: ModelFn,
    client_work: TensorClientWork,
    *,
    state_type: tff.FederatedType,
    distributor: tff.templates.MeasuredProcess,
    aggregator: tff.templates.AggregationProcess,
    finalizer: tff.learning.templates.FinalizerProcess,
) -> tff.Computation:
    """The fused `next` of the learning process `compose` builds for a packed `client_work` (with
    `group_update`), the weighted mean `aggregator` and the `distributor` and `finalizer` it composes."""
    _check_stateless(distributor, 'the broadcast process')
    _check_stateless(aggregator, 'the weighted mean')
    client_state_type, weights_type, data_type = client_work.group_update.type_signature.parameter
    payload_type = tff.StructType([weights_type, client_state_type])

    @tff.tensorflow.computation(payload_type, data_type)
    def group_upload(payload, data):
        weights, client_state = payload
        result, metrics = client_work.group_update(client_state, weights, data)
        weight = result.update_weight
        weighted_update = tf.nest.map_structure(lambda x: x * tf.cast(weight, x.dtype), result.update)  # MeanFactory
        return weighted_update, weight, metrics

    weighted_update_type, weight_type, metrics_type = group_upload.type_signature.result

    @tff.tensorflow.computation(weighted_update_type, weight_type)
    def divide(weighted_update_sum, weight_sum):  # MeanFactory's division (without no-NaN)
        return tf.nest.map_structure(lambda x: tf.math.divide(x, tf.cast(weight_sum, x.dtype)), weighted_update_sum)

    finalize_metrics = _metrics_finalizer(model_fn, metrics_type)
    distributor_measurements = _empty_at_server(distributor.next.type_signature.result.measurements)
    aggregator_measurements = _empty_at_server(aggregator.next.type_signature.result.measurements)
    client_data_type = tff.FederatedType(data_type, tff.CLIENTS)

    @tff.federated_computation(state_type, client_data_type)
    def next_fn(state, client_data):
        payload = tff.federated_broadcast(tff.federated_zip((state.global_model_weights, state.client_work)))
        sums = tff.federated_sum(tff.federated_map(group_upload, (payload, client_data)))
        mean_update = tff.federated_map(divide, (sums[0], sums[1]))
        finalized = finalizer.next(state.finalizer, state.global_model_weights, mean_update)
        train = tff.federated_map(finalize_metrics, sums[2])
        new_state = tff.federated_zip(
            algorithm_state(state, global_model_weights=finalized.result, finalizer=finalized.state)
        )
        metrics = tff.federated_zip(
            collections.OrderedDict(
                distributor=tff.federated_value(distributor_measurements, tff.SERVER),
                client_work=tff.federated_zip(collections.OrderedDict(train=train)),
                aggregator=tff.federated_value(aggregator_measurements, tff.SERVER),
                finalizer=finalized.measurements,
            )
        )
        return tff.learning.templates.LearningProcessOutput(new_state, metrics)

    return next_fn


def _metrics_finalizer(model_fn: ModelFn, metrics_type) -> tff.Computation:
    """`tff.learning.metrics.sum_then_finalize`'s finalization at SERVER, on the summed unfinalized metrics."""
    with tf.Graph().as_default():  # the model only lends its finalizers
        finalizers = model_fn().metric_finalizers()
    if callable(finalizers):
        return tff.tensorflow.computation(finalizers, metrics_type)

    @tff.tensorflow.computation(metrics_type)
    def finalize(unfinalized):
        return collections.OrderedDict((name, finalizer(unfinalized[name])) for name, finalizer in finalizers.items())

    return finalize


def _check_stateless(process, name: str) -> None:
    """Passing its state through and measuring nothing is exactly what `process` does: it has no tensors."""
    state_type = process.initialize.type_signature.result.member
    measurements_type = process.next.type_signature.result.measurements.member
    if _has_tensors(state_type) or _has_tensors(measurements_type):
        raise ValueError(f'{name} keeps state or measures something: packed rounds cannot fuse it')


def _has_tensors(type_spec) -> bool:
    if isinstance(type_spec, tff.StructType):
        return any(_has_tensors(element) for _, element in tff.structure.iter_elements(type_spec))
    return True


def _empty_at_server(federated_type: tff.FederatedType):
    """The Python value of an empty (tensorless) structure of `federated_type`'s member, with its names."""

    def empty(type_spec):
        elements = list(tff.structure.iter_elements(type_spec))
        if elements and all(name for name, _ in elements):
            return collections.OrderedDict((name, empty(element)) for name, element in elements)
        return tuple(empty(element) for _, element in elements)

    return empty(federated_type.member)

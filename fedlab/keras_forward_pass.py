"""The forward pass of a TFF-wrapped Keras model inside fedlab's client loops, with its metrics updated by plain ops.

TFF's `from_keras_model` forward pass is a `tf.function` that updates each metric through Keras' generic
`update_state` (rank checks, casts, and the loss computed a second time for the loss metric). Inside a client's
in-graph loop that is a large part of a local step for a small model: one packed group of linear (5 clients, 25
batches of 20 digits) took 6.9 ms with it, 4.9 ms with the forward pass below and 2.3 ms as a bare Keras loop
(docs/performance.md has the round times). For the metrics fedlab's models have (Keras' sparse categorical
accuracy and TFF's loss mean, example and batch counters), `forward_pass` below adds the values Keras would add
to the same variables, so `report_local_unfinalized_metrics()` reports the same sums. The values agree with
TFF's forward pass to float rounding (observed: ~1e-7 relative after a round; the ops are the same, but TFF's run
as a `tf.function` of their own, compiled apart from the client's loop), as tests/test_algorithms.py checks
against TFF's builders. Any other model, metric or version:
the model's own `forward_pass`.

This reads TFF's Keras wrapper (`keras_utils._KerasModel`: its Keras model and loss) and Keras' metric variables
(`total`, `count`): internals of the versions below, checked here and nowhere else.
"""

from collections.abc import Callable

import tensorflow as tf
import tensorflow_federated as tff

TFF_VERSION = '0.87.0'
TF_VERSION_PREFIX = '2.14.'


def _plain_metrics(model):
    """The model's metrics by role if they are exactly the four this module knows, else None."""
    metrics = list(model.get_metrics())
    by_type = {type(m).__name__: m for m in metrics}
    if len(by_type) != len(metrics) or set(by_type) != {
        'SparseCategoricalAccuracy',
        '_WeightedMeanLossMetric',
        'NumExamplesCounter',
        'NumBatchesCounter',
    }:
        return None
    accuracy = by_type['SparseCategoricalAccuracy']
    if getattr(accuracy, '_fn_kwargs', {}) or accuracy.dtype != tf.float32:
        return None
    return by_type


def forward_pass_of(model) -> Callable:
    """`forward_pass(batch, training)` for `model`: the plain-op version where it applies, else the model's own."""
    if (
        tff.__version__ != TFF_VERSION
        or not tf.__version__.startswith(TF_VERSION_PREFIX)
        or type(model).__name__ != '_KerasModel'
        or len(getattr(model, '_loss_fns', ())) != 1
    ):
        return model.forward_pass
    metrics = _plain_metrics(model)
    if metrics is None:
        return model.forward_pass
    keras_model, loss_fn = model._keras_model, model._loss_fns[0]
    accuracy, loss_mean = metrics['SparseCategoricalAccuracy'], metrics['_WeightedMeanLossMetric']
    examples, batches = metrics['NumExamplesCounter'], metrics['NumBatchesCounter']

    def forward_pass(batch_input, training=True):
        x, y = batch_input['x'], batch_input['y']
        predictions = keras_model(x, training=training)
        loss = loss_fn(y_true=y, y_pred=predictions)
        batch_loss = tf.add_n([loss] + keras_model.losses)  # as TFF: the layers' regularization losses too
        num_examples = tf.shape(predictions)[0]
        # Keras' sparse_categorical_accuracy: labels cast to the metric's float32, predictions' argmax cast to
        # them, matches summed (exact: integers), count += number of matches.
        labels = tf.cast(y, tf.float32)
        if labels.shape.rank == predictions.shape.rank:
            labels = tf.squeeze(labels, [-1])
        matches = tf.cast(tf.equal(labels, tf.cast(tf.argmax(predictions, axis=-1), tf.float32)), tf.float32)
        accuracy.total.assign_add(tf.reduce_sum(matches))
        accuracy.count.assign_add(tf.cast(tf.size(matches), tf.float32))
        # TFF's loss metric: a Keras Mean of the loss weighted by the batch size.
        weight = tf.cast(num_examples, tf.float32)
        loss_mean.total.assign_add(tf.reduce_sum(loss * weight))
        loss_mean.count.assign_add(weight)
        examples.total.assign_add(tf.cast(tf.shape(y)[0], tf.int64))
        batches.total.assign_add(tf.constant(1, tf.int64))
        return tff.learning.models.BatchOutput(loss=batch_loss, predictions=predictions, num_examples=num_examples)

    return forward_pass

"""The forward pass of a TFF-wrapped Keras model inside fedlab's client loops, with its metrics updated by plain ops.

TFF's `from_keras_model` forward pass is a `tf.function` that updates each metric through Keras' generic
`update_state` (rank checks, casts, and the loss computed a second time for the loss metric). Inside a client's
in-graph loop that is a large part of a local step for a small model: one packed group of linear (5 clients, 25
batches of 20 digits) took 6.9 ms with it, 4.4-4.6 ms with the forward pass below and ~2.5 ms as a bare Keras
loop (docs/performance.md has the round times). For the metrics fedlab's models have (Keras' sparse categorical
accuracy and TFF's loss mean, example and batch counters), `ForwardPass` below adds the values Keras would add,
carried through the client's loop and written to the same variables once a client, so
`report_local_unfinalized_metrics()` reports the same sums. The values agree with
TFF's forward pass to float rounding (observed: ~1e-7 relative after a round; the ops are the same, but TFF's run
as a `tf.function` of their own, compiled apart from the client's loop), as tests/test_algorithms.py checks
against TFF's builders. Any other model or metric, or another TFF or TensorFlow than
fedlab.tff_internals.version_gate's (`keras_supported()`): the model's own `forward_pass`.

This reads TFF's Keras wrapper (`keras_utils._KerasModel`: its private Keras model and loss attributes) and Keras'
metric variables (`total`, `count`): internals of the versions the gate names.
"""

import tensorflow as tf
import tensorflow_federated as tff

from fedlab.tff_internals import version_gate


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


class ForwardPass:
    """A client loop's forward pass whose metric sums travel with the loop: `sums = initial_sums()` after the
    metrics were reset, `output, sums = forward_pass(batch, sums, training=...)` in each iteration, `write(sums)`
    after the loop. The plain-op version keeps the four metrics' variables' sums as loop values and writes each
    once a client (the same float additions in the same order as Keras' assign_add every batch); for any other
    model the sums are empty, the model's own `forward_pass` updates its metrics, and `write` does nothing."""

    def __init__(self, model):
        self._model = model
        self._variables = ()
        supported = (
            version_gate.keras_supported()
            and type(model).__name__ == '_KerasModel'
            and len(getattr(model, '_loss_fns', ())) == 1
        )
        metrics = _plain_metrics(model) if supported else None
        self.plain = metrics is not None
        if self.plain:
            self._keras_model, self._loss_fn = model._keras_model, model._loss_fns[0]
            accuracy, loss_mean = metrics['SparseCategoricalAccuracy'], metrics['_WeightedMeanLossMetric']
            examples, batches = metrics['NumExamplesCounter'], metrics['NumBatchesCounter']
            self._variables = (accuracy.total, accuracy.count, loss_mean.total, loss_mean.count, examples.total,
                               batches.total)  # fmt: skip

    def initial_sums(self) -> tuple:
        return tuple(v.read_value() for v in self._variables)

    def write(self, sums: tuple) -> None:
        for variable, value in zip(self._variables, sums):
            variable.assign(value)

    def __call__(self, batch_input, sums: tuple, *, training: bool = True):
        if not self.plain:
            return self._model.forward_pass(batch_input, training=training), sums
        x, y = batch_input['x'], batch_input['y']
        predictions = self._keras_model(x, training=training)
        loss = self._loss_fn(y_true=y, y_pred=predictions)
        batch_loss = tf.add_n([loss] + self._keras_model.losses)  # as TFF: the layers' regularization losses too
        num_examples = tf.shape(predictions)[0]
        # Keras' sparse_categorical_accuracy: labels cast to the metric's float32, the predictions' argmax cast to
        # them, matches summed (exact: integers), count += number of matches.
        labels = tf.cast(y, tf.float32)
        if labels.shape.rank == predictions.shape.rank:
            labels = tf.squeeze(labels, [-1])
        matches = tf.cast(tf.equal(labels, tf.cast(tf.argmax(predictions, axis=-1), tf.float32)), tf.float32)
        weight = tf.cast(num_examples, tf.float32)  # TFF's loss metric: a Keras Mean weighted by the batch size
        additions = (
            tf.reduce_sum(matches),
            tf.cast(tf.size(matches), tf.float32),
            tf.reduce_sum(loss * weight),
            weight,
            tf.cast(tf.shape(y)[0], tf.int64),
            tf.constant(1, tf.int64),
        )
        sums = tuple(total + addition for total, addition in zip(sums, additions))
        output = tff.learning.models.BatchOutput(loss=batch_loss, predictions=predictions, num_examples=num_examples)
        return output, sums

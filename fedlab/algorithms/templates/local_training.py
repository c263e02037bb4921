"""The local-training loop: one in-graph pass over a client's batch stream, run by every algorithm's client work
(fedlab.algorithms.templates.client_work) and by evaluation from shards (fedlab.run.evaluation), each with its
own per-batch step.

The loop is a tf.while_loop written out, for functions traced with autograph=False: autograph would also convert
every function a step calls (the model's forward pass, the optimizer), which took most of a process's build.
"""

import collections
from collections.abc import Callable

import tensorflow as tf
import tensorflow_federated as tff


def num_batches(data, batch_size: int) -> tf.Tensor:
    return (tf.shape(data['y'])[0] + batch_size - 1) // batch_size


def batch(data, i: tf.Tensor, batch_size: int) -> collections.OrderedDict:
    """Batch `i` of a batch stream held as tensors (the last one may be smaller)."""
    start = i * batch_size
    return collections.OrderedDict((key, value[start : start + batch_size]) for key, value in data.items())


def load_weights(model, weights) -> tff.learning.models.ModelWeights:
    """The model's weights, set to `weights` (the server's): where a client's computation starts."""
    model_weights = tff.learning.models.ModelWeights.from_model(model)
    tf.nest.map_structure(lambda variable, value: variable.assign(value), model_weights, weights)
    return model_weights


def run_batches(data, batch_size: int, step: Callable, initial_carry=(), forward_pass=None):
    """Runs `step` on each batch of `data`, in order, in-graph, and returns the final carry.

    `data` is a client's batch stream held as tensors, `{x: [n, ...], y: [n]}`, cut into batches of `batch_size`
    (the last may be smaller). The carry is what the step accumulates from batch to batch (an example count,
    gradient sums, the optimizer's state...): a structure of tensors, `initial_carry` before the first batch, and
    each step returns the next one, of the same structure and dtypes:

        step(batch, carry, forward) -> carry

    `forward(batch, training=...)` is `forward_pass` (a `keras_forward_pass.ForwardPass` of the model): it returns
    the batch's `BatchOutput`, and the loop carries the metric sums it adds, alongside the carry, from
    `forward_pass.initial_sums()` to `forward_pass.write(...)` after the last batch, so the model's metrics then
    hold this pass's. Without a `forward_pass`, `forward` is None and the step updates any metrics itself.
    """
    batches = num_batches(data, batch_size)

    def body(i, carry, sums):
        def forward(batch_input, *, training: bool):
            nonlocal sums
            output, sums = forward_pass(batch_input, sums, training=training)
            return output

        carry = step(batch(data, i, batch_size), carry, forward if forward_pass is not None else None)
        return i + 1, carry, sums

    initial_sums = forward_pass.initial_sums() if forward_pass is not None else ()
    _, carry, sums = tf.while_loop(lambda i, *_: i < batches, body, (tf.constant(0), initial_carry, initial_sums))
    if forward_pass is not None:
        forward_pass.write(sums)
    return carry

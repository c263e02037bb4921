"""A model that fails inside TFF's computation, for testing what fedlab does when training fails."""

import tensorflow as tf

from fedlab import models


class ExplodingModel(models.LinearSoftmaxModel):
    @tf.function
    def forward_pass(self, batch_input, training=True):
        # A runtime check (pixels are never negative), so it fails while TFF runs the round, not when tracing.
        tf.debugging.assert_less(tf.reduce_sum(batch_input['x']), -1.0, message='injected failure')
        return super().forward_pass(batch_input, training)


def model_fn(image_shape, num_classes, *, seed=0):
    return lambda: ExplodingModel(tuple(image_shape), num_classes)

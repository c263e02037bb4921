"""Model builders: Keras architectures wrapped for TFF, and the tutorial's hand-written VariableModel."""

import collections
import dataclasses
from collections.abc import Callable

import tensorflow as tf
import tensorflow_federated as tff

from fedlab import seeds

ModelFn = Callable[[], tff.learning.models.VariableModel]

# Metric names shared by every model, so logs and plots line up across models.
LOSS = 'loss'
ACCURACY = 'sparse_categorical_accuracy'


def batch_spec(image_shape: tuple[int, ...]) -> collections.OrderedDict:
    """The structure of one preprocessed batch: x = images, y = labels."""
    return collections.OrderedDict(
        x=tf.TensorSpec([None, *image_shape], tf.float32),
        y=tf.TensorSpec([None], tf.int32),
    )


def build_keras_model(
    architecture: str, image_shape: tuple[int, ...], num_classes: int, *, seed: int = 0, seeded: bool = True
) -> tf.keras.Model:
    """An uncompiled Keras model that maps images [h, w, c] to class probabilities.

    `seeded=False`: every weight starts at zero instead, for a model whose weights are all set before use
    (`model_to_load`)."""
    layers = tf.keras.layers

    def initializer(layer: int) -> tf.keras.initializers.Initializer | str:
        if not seeded:
            return 'zeros'
        # An explicit seed per layer: TFF builds the initial weights inside its own graph, where a global
        # seed does not reach, so this is what makes `seed` reproduce the same initial model.
        return tf.keras.initializers.GlorotUniform(seed=seeds.derive(seed, 'model_init') + layer)

    if architecture == 'linear':
        body = [
            layers.Flatten(),
            layers.Dense(num_classes, kernel_initializer='zeros'),
        ]
    elif architecture == 'fedavg_cnn':
        body = [
            layers.Conv2D(32, 5, padding='same', activation='relu', kernel_initializer=initializer(0)),
            layers.MaxPool2D(2, padding='same'),
            layers.Conv2D(64, 5, padding='same', activation='relu', kernel_initializer=initializer(1)),
            layers.MaxPool2D(2, padding='same'),
            layers.Flatten(),
            layers.Dense(512, activation='relu', kernel_initializer=initializer(2)),
            layers.Dense(num_classes, kernel_initializer=initializer(3)),
        ]
    elif architecture == 'simple_cnn':
        body = [
            layers.Conv2D(16, 3, padding='same', activation='relu', kernel_initializer=initializer(0)),
            layers.MaxPool2D(2, padding='same'),
            layers.Flatten(),
            layers.Dense(64, activation='relu', kernel_initializer=initializer(1)),
            layers.Dense(num_classes, kernel_initializer=initializer(2)),
        ]
    elif architecture == 'cifar_cnn':
        # The TensorFlow CNN tutorial's network for CIFAR-10 (valid padding: images from about 28x28 up).
        body = [
            layers.Conv2D(32, 3, activation='relu', kernel_initializer=initializer(0)),
            layers.MaxPool2D(2),
            layers.Conv2D(64, 3, activation='relu', kernel_initializer=initializer(1)),
            layers.MaxPool2D(2),
            layers.Conv2D(64, 3, activation='relu', kernel_initializer=initializer(2)),
            layers.Flatten(),
            layers.Dense(64, activation='relu', kernel_initializer=initializer(3)),
            layers.Dense(num_classes, kernel_initializer=initializer(4)),
        ]
    else:
        raise ValueError(
            f'unknown architecture {architecture!r}; allowed: linear, fedavg_cnn, simple_cnn, cifar_cnn'
        )
    return tf.keras.Sequential([layers.InputLayer(image_shape), *body, layers.Softmax()], name=architecture)


@dataclasses.dataclass(frozen=True)
class KerasModelFn:
    """keras_model_fn's model_fn: calling it builds the seeded model; `unseeded()` builds the same model with
    zeros for weights, for computations that set every weight before use (`model_to_load`)."""

    architecture: str
    image_shape: tuple[int, ...]
    num_classes: int
    seed: int

    def __call__(self) -> tff.learning.models.VariableModel:
        return self._wrapped(seeded=True)

    def unseeded(self) -> tff.learning.models.VariableModel:
        return self._wrapped(seeded=False)

    def _wrapped(self, *, seeded: bool) -> tff.learning.models.VariableModel:
        keras_model = build_keras_model(
            self.architecture, self.image_shape, self.num_classes, seed=self.seed, seeded=seeded
        )
        return tff.learning.models.from_keras_model(
            keras_model,
            input_spec=batch_spec(self.image_shape),
            loss=tf.keras.losses.SparseCategoricalCrossentropy(),
            metrics=[tf.keras.metrics.SparseCategoricalAccuracy()],
        )


def keras_model_fn(
    image_shape: tuple[int, ...], num_classes: int, *, architecture: str, seed: int = 0
) -> KerasModelFn:
    """A TFF model_fn that builds `architecture` and wraps it with `from_keras_model`."""
    return KerasModelFn(architecture, tuple(image_shape), num_classes, seed)


def model_to_load(model_fn: ModelFn) -> tff.learning.models.VariableModel:
    """A model whose every weight the caller sets before use (as `local_training.load_weights` does): `model_fn`'s
    unseeded build where it has one. TFF runs a computation's variable initializers at every call, and seeded
    initializers' random draws, overwritten at once, took about a tenth of TFF's worker's CPU in a small simple_cnn
    round (docs/performance.md)."""
    unseeded = getattr(model_fn, 'unseeded', None)
    return unseeded() if unseeded is not None else model_fn()


def custom_model_fn(image_shape: tuple[int, ...], num_classes: int, *, seed: int = 0) -> ModelFn:
    """A TFF model_fn for `LinearSoftmaxModel`, the tutorial's hand-written VariableModel."""
    del seed  # Zero-initialised, like the tutorial: nothing random to seed.
    image_shape = tuple(image_shape)
    return lambda: LinearSoftmaxModel(image_shape, num_classes)


class LinearSoftmaxModel(tff.learning.models.VariableModel):
    """Softmax regression written against TFF's VariableModel API, as in the tutorial's MnistModel.

    It owns its variables (weights, bias and the metric accumulators), defines the forward pass, reports
    unfinalized metrics as sums and finalizes them into means, so it computes exactly what `linear` does.
    """

    def __init__(self, image_shape: tuple[int, ...], num_classes: int):
        num_pixels = 1
        for dim in image_shape:
            num_pixels *= dim
        self._image_shape = image_shape
        self._weights = tf.Variable(tf.zeros([num_pixels, num_classes]), name='weights', trainable=True)
        self._bias = tf.Variable(tf.zeros([num_classes]), name='bias', trainable=True)
        self._num_examples = tf.Variable(0.0, name='num_examples', trainable=False)
        self._num_batches = tf.Variable(0.0, name='num_batches', trainable=False)
        self._loss_sum = tf.Variable(0.0, name='loss_sum', trainable=False)
        self._correct_sum = tf.Variable(0.0, name='correct_sum', trainable=False)

    @property
    def trainable_variables(self):
        return [self._weights, self._bias]

    @property
    def non_trainable_variables(self):
        return []

    @property
    def local_variables(self):
        return [self._num_examples, self._num_batches, self._loss_sum, self._correct_sum]

    @property
    def input_spec(self):
        return batch_spec(self._image_shape)

    def _logits(self, x):
        flat = tf.reshape(x, [tf.shape(x)[0], -1])
        return tf.matmul(flat, self._weights) + self._bias

    @tf.function
    def predict_on_batch(self, x, training=True):
        del training  # No dropout or batch norm: training and inference are the same.
        return tf.nn.softmax(self._logits(x))

    @tf.function
    def forward_pass(self, batch_input, training=True):
        del training
        logits = self._logits(batch_input['x'])
        predictions = tf.nn.softmax(logits)
        labels = batch_input['y']
        # Mean cross-entropy computed as Keras does for `linear`'s probabilities: clip, log, renormalise.
        epsilon = tf.keras.backend.epsilon()
        log_probabilities = tf.math.log(tf.clip_by_value(predictions, epsilon, 1.0 - epsilon))
        loss = tf.reduce_mean(
            tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=log_probabilities)
        )
        correct = tf.cast(tf.equal(tf.argmax(predictions, axis=1, output_type=tf.int32), labels), tf.float32)
        num_examples = tf.shape(labels)[0]
        batch_size = tf.cast(num_examples, tf.float32)
        self._num_examples.assign_add(batch_size)
        self._num_batches.assign_add(1.0)
        self._loss_sum.assign_add(loss * batch_size)
        self._correct_sum.assign_add(tf.reduce_sum(correct))
        return tff.learning.models.BatchOutput(loss=loss, predictions=predictions, num_examples=num_examples)

    @tf.function
    def report_local_unfinalized_metrics(self):
        return collections.OrderedDict(
            num_examples=self._num_examples,
            num_batches=self._num_batches,
            loss=[self._loss_sum, self._num_examples],
            sparse_categorical_accuracy=[self._correct_sum, self._num_examples],
        )

    def metric_finalizers(self):
        def ratio(values):
            return tf.math.divide_no_nan(values[0], values[1])

        return collections.OrderedDict(
            num_examples=tf.function(func=lambda x: x),
            num_batches=tf.function(func=lambda x: x),
            loss=tf.function(func=ratio),
            sparse_categorical_accuracy=tf.function(func=ratio),
        )

    @tf.function
    def reset_metrics(self):
        for variable in self.local_variables:
            variable.assign(tf.zeros_like(variable))

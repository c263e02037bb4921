"""Models take their shape from the data, and the hand-written model computes what `linear` computes."""

import collections

import numpy as np
import pytest
import tensorflow as tf

from fedlab import models

ARCHITECTURES = ['linear', 'fedavg_cnn', 'simple_cnn']


@pytest.mark.parametrize('architecture', ARCHITECTURES)
@pytest.mark.parametrize('image_shape,num_classes', [((8, 8, 1), 10), ((28, 28, 1), 62), ((32, 32, 3), 10)])
def test_keras_models_follow_the_data(architecture, image_shape, num_classes):
    model = models.build_keras_model(architecture, image_shape, num_classes)
    probabilities = model(tf.zeros([4, *image_shape]))
    assert probabilities.shape == (4, num_classes)
    np.testing.assert_allclose(probabilities.numpy().sum(axis=1), 1.0, rtol=1e-5)


def test_fedavg_cnn_is_mcmahans_architecture():
    model = models.build_keras_model('fedavg_cnn', (28, 28, 1), 10)
    # conv5x5x1x32 + conv5x5x32x64 + dense 3136x512 + dense 512x10, with biases: the paper's 1,663,370.
    assert model.count_params() == 1_663_370


def test_simple_cnn_shape():
    model = models.build_keras_model('simple_cnn', (28, 28, 1), 10)
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == ['Conv2D', 'MaxPooling2D', 'Flatten', 'Dense', 'Dense', 'Softmax']
    assert model.layers[0].filters == 16 and model.layers[0].kernel_size == (3, 3)
    assert model.layers[3].units == 64


def test_seed_fixes_initial_weights():
    a = models.build_keras_model('simple_cnn', (8, 8, 1), 10, seed=1).get_weights()
    b = models.build_keras_model('simple_cnn', (8, 8, 1), 10, seed=1).get_weights()
    c = models.build_keras_model('simple_cnn', (8, 8, 1), 10, seed=2).get_weights()
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], c[0])


def _graph_of(build) -> tuple[list[str], list[tuple]]:
    """The random ops and the variables (name, shape, dtype) that `build` adds to a graph of its own."""
    with tf.Graph().as_default() as graph:
        model = build()
    random = [op.type for op in graph.get_operations() if 'Random' in op.type]
    variables = model.trainable_variables + model.non_trainable_variables
    return random, [(v.name, v.shape, v.dtype) for v in variables]


@pytest.mark.parametrize('architecture', ['fedavg_cnn', 'simple_cnn', 'cifar_cnn'])
def test_a_model_to_load_has_the_same_variables_and_draws_no_random_numbers(architecture):
    # Client computations load every weight before use, and TFF runs their initializers at every call.
    model_fn = models.keras_model_fn((32, 32, 3), 10, architecture=architecture, seed=3)
    seeded_random, seeded_variables = _graph_of(model_fn)
    random, variables = _graph_of(lambda: models.model_to_load(model_fn))
    assert seeded_random and not random
    assert variables == seeded_variables
    assert not any(np.any(v.numpy()) for v in models.model_to_load(model_fn).trainable_variables)
    custom = models.custom_model_fn((8, 8, 1), 10)
    assert type(models.model_to_load(custom)) is models.LinearSoftmaxModel  # a model_fn without an unseeded build


def test_custom_model_matches_keras_linear_on_a_batch():
    rng = np.random.default_rng(0)
    batch = collections.OrderedDict(
        x=tf.constant(rng.random((16, 8, 8, 1)), tf.float32), y=tf.constant(rng.integers(0, 10, 16), tf.int32)
    )
    weights = rng.normal(size=(64, 10)).astype(np.float32)
    bias = rng.normal(size=10).astype(np.float32)

    custom = models.custom_model_fn((8, 8, 1), 10)()
    keras_model = models.keras_model_fn((8, 8, 1), 10, architecture='linear')()
    for model in (custom, keras_model):
        model.trainable_variables[0].assign(weights)
        model.trainable_variables[1].assign(bias)
    out_custom = custom.forward_pass(batch)
    out_keras = keras_model.forward_pass(batch)
    np.testing.assert_allclose(out_custom.predictions, out_keras.predictions, rtol=1e-5)
    np.testing.assert_allclose(out_custom.loss, out_keras.loss, rtol=1e-5)
    assert int(out_custom.num_examples) == int(out_keras.num_examples) == 16

    # The hand-written metrics finalize to the same numbers: mean loss, accuracy, counts.
    finalized = {
        name: float(custom.metric_finalizers()[name](value))
        for name, value in custom.report_local_unfinalized_metrics().items()
    }
    expected_accuracy = float(np.mean(np.argmax(out_keras.predictions, axis=1) == batch['y'].numpy()))
    assert set(finalized) == set(keras_model.report_local_unfinalized_metrics())
    assert finalized['loss'] == pytest.approx(float(out_keras.loss), rel=1e-5)
    assert finalized['sparse_categorical_accuracy'] == pytest.approx(expected_accuracy)
    assert finalized['num_examples'] == 16 and finalized['num_batches'] == 1


def test_cifar_cnn_is_the_tensorflow_tutorials_network():
    model = models.build_keras_model('cifar_cnn', (32, 32, 3), 10)
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == ['Conv2D', 'MaxPooling2D', 'Conv2D', 'MaxPooling2D', 'Conv2D', 'Flatten', 'Dense', 'Dense',
                     'Softmax']
    assert model.count_params() == 122_570  # the tutorial's model.summary() total
    assert models.build_keras_model('cifar_cnn', (28, 28, 1), 62)(tf.zeros([2, 28, 28, 1])).shape == (2, 62)

"""fedlab.tff_internals.keras_forward_pass: the client loops' forward pass for TFF-wrapped Keras models updates the same metric
variables with the same values as TFF's own forward pass, and any other model keeps its own."""

import collections

import numpy as np
import pytest
import tensorflow as tf

from fedlab import models
from fedlab.tff_internals import keras_forward_pass


def _batches(seed: int):
    rng = np.random.default_rng(seed)
    for size in (20, 20, 7):  # a last, smaller batch as the client loops have
        yield collections.OrderedDict(
            x=tf.constant(rng.random((size, 8, 8, 1), np.float32)), y=tf.constant(rng.integers(0, 10, size, np.int32))
        )


@pytest.mark.parametrize('architecture', ['linear', 'simple_cnn'])
def test_the_same_metrics_and_loss_as_tffs_forward_pass(architecture):
    model_fn = models.keras_model_fn((8, 8, 1), 10, architecture=architecture)
    tffs, ours = model_fn(), model_fn()  # the same seeded initial weights
    forward_pass = keras_forward_pass.ForwardPass(ours)
    assert forward_pass.plain, "fell back to the model's own forward pass"
    sums = forward_pass.initial_sums()
    for batch in _batches(0):
        expected = tffs.forward_pass(batch, training=True)
        got, sums = forward_pass(batch, sums, training=True)
        np.testing.assert_allclose(got.loss.numpy(), expected.loss.numpy(), rtol=1e-6)
        np.testing.assert_allclose(got.predictions.numpy(), expected.predictions.numpy(), rtol=1e-6)
        assert int(got.num_examples) == int(expected.num_examples)
    forward_pass.write(sums)
    expected, got = tffs.report_local_unfinalized_metrics(), ours.report_local_unfinalized_metrics()
    assert list(got) == list(expected)
    for name in expected:
        np.testing.assert_allclose(np.array(got[name]), np.array(expected[name]), rtol=1e-6, err_msg=name)
    assert [int(v) for v in got['num_examples']] == [47] and [int(v) for v in got['num_batches']] == [3]


def test_a_model_of_its_own_keeps_its_forward_pass():
    model = models.custom_model_fn((8, 8, 1), 10)()
    forward_pass = keras_forward_pass.ForwardPass(model)
    assert not forward_pass.plain and forward_pass.initial_sums() == ()
    batch = next(_batches(1))
    output, sums = forward_pass(batch, (), training=True)
    assert sums == () and int(output.num_examples) == 20
    assert int(np.sum(model.report_local_unfinalized_metrics()['num_examples'])) == 20  # its own metrics updated

"""fedlab's in-place serialization of nested values sends exactly the bytes TFF's own serialization sends."""

import collections

import numpy as np


def test_in_place_serialization_gives_tffs_bytes():
    import tensorflow_federated as tff
    from tensorflow_federated.python.core.impl.executors import value_serialization

    from fedlab.tff_internals import serialization

    inner = tff.StructWithPythonType(
        [('accumulator', tff.StructWithPythonType([tff.TensorType(np.float32, [3, 4])] * 2, tuple)),
         ('learning_rate', tff.TensorType(np.float32))],
        collections.OrderedDict,
    )  # fmt: skip
    state_type = tff.FederatedType(tff.StructType([('weights', tff.TensorType(np.float32, [5])), ('finalizer', inner)]),
                                   tff.SERVER)  # fmt: skip
    rng = np.random.default_rng(0)
    state = collections.OrderedDict(
        weights=rng.random(5, np.float32),
        finalizer=collections.OrderedDict(
            accumulator=(rng.random((3, 4), np.float32), rng.random((3, 4), np.float32)), learning_rate=np.float32(0.1)
        ),
    )
    paths = ['a', 'bb', 'ccc']
    paths_type = tff.FederatedType(np.str_, tff.CLIENTS)
    assert serialization.install()
    with serialization.tffs_own():
        expected = [value_serialization.serialize_value(v, t)[0] for v, t in ((state, state_type), (paths, paths_type))]
    got = [value_serialization.serialize_value(v, t)[0] for v, t in ((state, state_type), (paths, paths_type))]
    assert [g.SerializeToString() for g in got] == [e.SerializeToString() for e in expected]

"""Faster serialization of nested values for TFF 0.87's execution context: the one place fedlab replaces TFF code.

Every `process.next(state, ...)` serializes the whole training state in Python before sending it to TFF's worker.
TFF 0.87 builds a struct's protobuf from its already-serialized children (`Value.Struct.Element(value=child)`),
and protobuf copies a message given to a constructor, so every tensor's bytes are copied once per nesting level
of the state (LearningAlgorithmState > finalizer > optimizer state > accumulator > tensor). Measured for
fedavg_cnn's state with a server Adam (20 MB): 346 ms to serialize, against 19 ms when each child is written in
place into its parent (the bytes sent are identical). The cost grows with the state, so it was most of what the
adaptive server optimizers' larger state cost per round.

`install()` replaces TFF's struct and federated serializers (private functions of its value_serialization module)
with in-place ones (tensors and everything else still go through TFF's own code, with its checks). On any other
TFF than fedlab.tff_internals.version_gate's it leaves TFF's own in place.
"""

import contextlib

from fedlab.tff_internals import version_gate

_ORIGINALS: dict = {}  # TFF's own serializers, once `install` replaced them


def install() -> bool:
    """Uses the in-place serializers from now on in this process (idempotent); True if it does.

    When the gate says no: TFF's own serializers (put back if an earlier reading of the gate, under a patched
    version in tests, had replaced them), and False."""
    if not version_gate.supported():
        if _ORIGINALS:
            _use(_ORIGINALS['struct'], _ORIGINALS['federated'])
        return False
    from tensorflow_federated.python.core.impl.executors import value_serialization

    if not _ORIGINALS:
        _ORIGINALS.update(
            struct=value_serialization._serialize_struct_type,
            federated=value_serialization._serialize_federated_value,
        )
    _use(_serialize_struct, _serialize_federated)
    return True


def _use(struct, federated) -> None:
    from tensorflow_federated.python.core.impl.executors import value_serialization

    value_serialization._serialize_struct_type = struct
    value_serialization._serialize_federated_value = federated


@contextlib.contextmanager
def tffs_own():
    """TFF's own serializers for the duration (the benchmarks' "before")."""
    if not _ORIGINALS:  # never replaced: TFF's own are in use
        yield
        return
    from tensorflow_federated.python.core.impl.executors import value_serialization

    current = value_serialization._serialize_struct_type, value_serialization._serialize_federated_value
    _use(_ORIGINALS['struct'], _ORIGINALS['federated'])
    try:
        yield
    finally:
        _use(*current)


def _serialize_struct(value, type_spec):
    from tensorflow_federated.proto.v0 import executor_pb2

    proto = executor_pb2.Value()
    _serialize_into(value, type_spec, proto)
    return proto, type_spec


_serialize_federated = _serialize_struct  # the same recursion handles both


def _serialize_into(value, type_spec, proto) -> None:
    """Writes `value` of `type_spec` into the empty `executor_pb2.Value` `proto`: structs and federated values
    element by element, in place; other values (tensors, sequences, computations) by TFF's `serialize_value`."""
    from tensorflow_federated.python.common_libs import py_typecheck, structure
    from tensorflow_federated.python.core.impl.executors import value_serialization
    from tensorflow_federated.python.core.impl.types import computation_types, type_serialization

    if isinstance(type_spec, computation_types.StructType):
        elements = structure.from_container(value)
        if len(elements) != len(type_spec):
            raise TypeError(
                f'Cannot serialize a struct value of {len(elements)} elements to a struct type requiring '
                f'{len(type_spec)} elements: {value!r} to {type_spec}.'
            )
        proto.struct.SetInParent()
        for (name, element_type), (_, element_value) in zip(
            structure.iter_elements(type_spec), structure.iter_elements(elements)
        ):
            element = proto.struct.element.add()
            if name:
                element.name = name
            _serialize_into(element_value, element_type, element.value)
    elif isinstance(type_spec, computation_types.FederatedType):
        members = [value] if type_spec.all_equal else value
        py_typecheck.check_type(members, list)
        proto.federated.SetInParent()
        for member in members:
            _serialize_into(member, type_spec.member, proto.federated.value.add())
        proto.federated.type.CopyFrom(type_serialization.serialize_type(type_spec).federated)
    else:
        leaf, _ = value_serialization.serialize_value(value, type_spec)
        proto.MergeFrom(leaf)

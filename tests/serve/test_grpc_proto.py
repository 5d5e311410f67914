"""The .proto files: vendored descriptors up to date, and wire-compatible with Triton's."""

from __future__ import annotations

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool
from tritonclient.grpc import model_config_pb2, service_pb2

from nnspec.runtime.serve import grpc_messages
from nnspec.runtime.serve._kserve_v2_descriptors import FILE_DESCRIPTOR_SET
from nnspec.runtime.serve.grpc_server import InferenceServicer, method_handlers


def _files(serialized: bytes) -> dict[str, descriptor_pb2.FileDescriptorProto]:
    files = descriptor_pb2.FileDescriptorSet.FromString(serialized).file
    return {f.name: f for f in files}


def test_vendored_descriptors_match_the_proto_files():
    """Editing proto/*.proto without regenerating fails here, with the command to run."""
    fresh = _files(grpc_messages.compile_descriptor_set())
    assert fresh == _files(FILE_DESCRIPTOR_SET), (
        "the vendored descriptors are stale: run python -m nnspec.runtime.serve.grpc_messages"
    )


def _triton(full_name: str):
    pool = service_pb2.DESCRIPTOR.pool
    return pool.FindMessageTypeByName(full_name)


def _repeated(field) -> bool:
    if hasattr(field, "is_repeated"):  # protobuf >= 6 (`label` is gone in 7)
        return field.is_repeated
    return field.label == field.LABEL_REPEATED


def _our_messages():
    for file in _files(FILE_DESCRIPTOR_SET).values():
        pool_file = grpc_messages.POOL.FindFileByName(file.name)
        stack = list(pool_file.message_types_by_name.values())
        while stack:
            message = stack.pop()
            stack.extend(message.nested_types)
            yield message


def test_every_message_field_is_tritons_on_the_wire():
    """Same full names, numbers, types and labels as tritonclient's own descriptors, so either
    side decodes the other's bytes; a field we got wrong would corrupt a client's request."""
    checked = 0
    for ours in _our_messages():
        theirs = _triton(ours.full_name)
        for field in ours.fields:
            other = theirs.fields_by_name.get(field.name)
            assert other is not None, f"{ours.full_name}.{field.name} is not Triton's"
            assert (field.number, field.type, _repeated(field)) == (
                other.number,
                other.type,
                _repeated(other),
            ), f"{ours.full_name}.{field.name}"
            if field.message_type is not None:
                assert field.message_type.full_name == other.message_type.full_name
            checked += 1
    assert checked > 80


def test_every_rpc_is_tritons_and_has_an_implementation():
    theirs = service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    ours = grpc_messages.SERVICE
    assert ours.full_name == theirs.full_name == "inference.GRPCInferenceService"
    for method in ours.methods:
        other = theirs.methods_by_name[method.name]
        assert method.input_type.full_name == other.input_type.full_name
        assert method.output_type.full_name == other.output_type.full_name
        assert (method.client_streaming, method.server_streaming) == (
            other.client_streaming,
            other.server_streaming,
        )
        assert callable(getattr(InferenceServicer, method.name))
    assert method_handlers(InferenceServicer(None, None)) is not None
    required = {"ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata",
                "ModelInfer", "RepositoryIndex", "RepositoryModelLoad", "RepositoryModelUnload"}  # fmt: skip
    assert required <= {m.name for m in ours.methods}


def test_messages_live_in_their_own_pool_beside_tritonclients():
    """tritonclient registers the same names in protobuf's default pool; ours do not clash."""
    assert grpc_messages.POOL is not descriptor_pool.Default()
    ours = grpc_messages.ModelInferRequest(model_name="m", id="7")
    ours.raw_input_contents.append(b"\x01\x02")
    theirs = service_pb2.ModelInferRequest.FromString(ours.SerializeToString())
    assert (theirs.model_name, theirs.id, list(theirs.raw_input_contents)) == (
        "m",
        "7",
        [b"\x01\x02"],
    )
    config = model_config_pb2.ModelConfig(name="c", max_batch_size=4)
    config.version_policy.specific.versions.extend([1, 3])
    back = grpc_messages.ModelConfig.FromString(config.SerializeToString())
    assert list(back.version_policy.specific.versions) == [1, 3] and back.max_batch_size == 4


@pytest.mark.parametrize("name", ["ModelInferRequest", "RepositoryIndexResponse"])
def test_message_classes_are_reachable_by_name(name):
    assert grpc_messages.message_class(name).DESCRIPTOR.full_name == f"inference.{name}"

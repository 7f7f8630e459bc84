"""Our protos are wire-compatible with the ones tritonclient was built from: same package,
service and method names, and every field we define has the public number and type."""

from __future__ import annotations

from tritonclient.grpc import model_config_pb2 as triton_model_config_pb2
from tritonclient.grpc import service_pb2

from edgerun.serving.protos import grpc_service_pb2, model_config_pb2


def _fields(desc, out: dict) -> None:
    out[desc.full_name] = {f.name: [f.number, f.type, f.is_repeated] for f in desc.fields}
    for nested in desc.nested_types:
        _fields(nested, out)


def _ours() -> dict:
    """Our descriptors, from edgerun's own pool (both sets of protos load in one process)."""
    out: dict = {}
    for module in (grpc_service_pb2, model_config_pb2):
        for desc in module.DESCRIPTOR.message_types_by_name.values():
            _fields(desc, out)
    service = grpc_service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    methods = {m.name: [m.input_type.full_name, m.output_type.full_name, m.client_streaming, m.server_streaming]
               for m in service.methods}
    return {"fields": out, "methods": methods, "service": service.full_name}


def _theirs(full_name: str):
    pool = service_pb2.DESCRIPTOR.pool
    return pool.FindMessageTypeByName(full_name)


def test_field_numbers_match_tritonclient() -> None:
    ours = _ours()
    assert ours["service"] == "inference.GRPCInferenceService"
    assert len(ours["fields"]) > 30
    for message, fields in ours["fields"].items():
        if message.endswith("Entry"):  # map entries: key = 1, value = 2 by definition
            continue
        theirs = _theirs(message)
        for name, (number, ftype, repeated) in fields.items():
            field = theirs.fields_by_name[name]
            assert [field.number, field.type, field.is_repeated] == [number, ftype, repeated], f"{message}.{name}"


def test_methods_match_tritonclient() -> None:
    ours = _ours()["methods"]
    service = service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    for method in service.methods:
        if method.name in ours:
            assert ours[method.name] == [method.input_type.full_name, method.output_type.full_name,
                                         method.client_streaming, method.server_streaming]
    assert {"ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelInfer",
            "ModelStreamInfer", "ModelConfig", "ModelStatistics", "RepositoryIndex", "RepositoryModelLoad",
            "RepositoryModelUnload"} == set(ours)
    assert model_config_pb2.DESCRIPTOR.package == triton_model_config_pb2.DESCRIPTOR.package == "inference"

"""ModelInferRequest/Response protos <-> the plain InferRequest/InferResponse types."""

from __future__ import annotations

from typing import Any

from edgerun.serving.datatypes import datatype_of, to_raw
from edgerun.serving.errors import invalid, quote
from edgerun.serving.protos import grpc_service_pb2 as pb
from edgerun.serving.types import InferRequest, InferResponse, InputTensor

# datatype -> the InferTensorContents field that carries it
CONTENTS_FIELD = {
    "BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
    "INT64": "int64_contents", "UINT8": "uint_contents", "UINT16": "uint_contents", "UINT32": "uint_contents",
    "UINT64": "uint64_contents", "FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents",
}

_FIELDS = sorted(set(CONTENTS_FIELD.values()))


def parameters(params) -> dict[str, Any]:
    """A protobuf map of InferParameter -> plain values."""
    out = {}
    for key, value in params.items():
        choice = value.WhichOneof("parameter_choice")
        out[key] = getattr(value, choice) if choice else None
    return out


def set_parameter(target, key: str, value: Any) -> None:
    param = target[key]
    if isinstance(value, bool):
        param.bool_param = value
    elif isinstance(value, int):
        param.int64_param = value
    elif isinstance(value, float):
        param.double_param = value
    else:
        param.string_param = str(value)


def request_from_proto(msg: pb.ModelInferRequest) -> InferRequest:
    """Decode a ModelInferRequest. InvalidArgument if raw_input_contents does not pair up with the
    inputs (some inputs raw and others not, or more raw entries than inputs)."""
    raws = list(msg.raw_input_contents)
    if raws and len(raws) != len(msg.inputs):
        raise invalid(f"raw_input_contents has {len(raws)} entries for {len(msg.inputs)} inputs; "
                      "give raw contents for every input or for none")
    inputs = []
    for i, tensor in enumerate(msg.inputs):
        values = None
        if tensor.HasField("contents"):
            field = CONTENTS_FIELD.get(tensor.datatype)
            values = list(getattr(tensor.contents, field)) if field else None
            if field is None or not values:
                values = _any_contents(tensor.contents)
            used = [f for f in _FIELDS if len(getattr(tensor.contents, f))]
            if field is not None and any(f != field for f in used):
                raise invalid(f"input {quote(tensor.name)}: typed contents of datatype {quote(tensor.datatype)} go in "
                              f"{field}, got {', '.join(used)}")
        inputs.append(InputTensor(tensor.name, tensor.datatype, list(tensor.shape),
                                  raws[i] if raws else None, values, parameters(tensor.parameters)))
    outputs = {o.name: parameters(o.parameters) for o in msg.outputs} if len(msg.outputs) else None
    return InferRequest(msg.model_name, msg.model_version, msg.id, inputs, outputs, parameters(msg.parameters))


def _any_contents(contents: pb.InferTensorContents) -> list | None:
    """Typed contents in whatever field they were given (so a datatype mismatch is caught later by
    the datatype check rather than read as 'no data')."""
    for field in _FIELDS:
        values = getattr(contents, field)
        if len(values):
            return list(values)
    return []


def response_to_proto(response: InferResponse) -> pb.ModelInferResponse:
    """Encode outputs as raw_output_contents (what tritonclient reads)."""
    msg = pb.ModelInferResponse(model_name=response.model, model_version=response.version, id=response.id)
    for name, array in response.outputs.items():
        msg.outputs.add(name=name, datatype=datatype_of(array.dtype), shape=array.shape)
        msg.raw_output_contents.append(to_raw(array))
    for key, value in response.parameters.items():
        set_parameter(msg.parameters, key, value)
    return msg

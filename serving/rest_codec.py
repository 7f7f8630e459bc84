"""The v2 REST JSON body (and Triton's binary-data extension) <-> InferRequest/InferResponse.

Binary extension: the request's JSON header is the first `Inference-Header-Content-Length` bytes,
followed by the raw tensors of inputs whose parameters carry `binary_data_size`, in input order.
Outputs are returned raw when requested (`binary_data` per output, or `binary_data_output`).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from edgerun.serving.datatypes import datatype_of, to_raw
from edgerun.serving.errors import invalid, quote
from edgerun.serving.types import InferRequest, InferResponse, InputTensor


def parse_infer(model: str, version: str, body: bytes, header_length: str | None) -> InferRequest:
    """Decode an infer body. InvalidArgument for bad JSON, a bad header length, binary sizes that do
    not add up to the body, or malformed input entries."""
    header, binary = _split(body, header_length)
    try:
        doc = _load_header(header)
    except (ValueError, UnicodeDecodeError) as exc:
        raise invalid(f"request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise invalid("request body is not valid JSON: nested too deeply") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), list):
        raise invalid("request JSON must be an object with an 'inputs' list")
    inputs, offset = [], 0
    for entry in doc["inputs"]:
        tensor, offset = _input(entry, binary, offset)
        inputs.append(tensor)
    if offset != len(binary):
        raise invalid(f"binary data is {len(binary)} bytes but the inputs' binary_data_size add up to {offset}")
    params = _dict(doc.get("parameters"), "parameters")
    outputs = None
    if doc.get("outputs") is not None:
        if not isinstance(doc["outputs"], list):
            raise invalid("'outputs' must be a list")
        outputs = {}
        for out in doc["outputs"]:
            if not isinstance(out, dict) or not isinstance(out.get("name"), str):
                raise invalid("each requested output needs a 'name'")
            outputs[out["name"]] = dict(_dict(out.get("parameters"), f"output {quote(out['name'])} parameters"))
    # copies: the document may be a memoized one that later requests share
    return InferRequest(model, version, str(doc.get("id", "")), inputs, outputs, dict(params))


# A client sends the same JSON header with every request of a given shape (the tensors travel as
# binary data after it), and gets the same header back: both are memoized, bounded, and only for
# headers without JSON tensor data. The documents are shared, so nothing may modify them.
MEMO_ENTRIES = 256
MEMO_MAX_BYTES = 4096
_parsed_headers: dict[bytes, Any] = {}
_encoded_headers: dict[tuple, bytes] = {}


def _memo(memo: dict, key: Any, value: Any) -> None:
    if len(memo) >= MEMO_ENTRIES:
        memo.clear()
    memo[key] = value


def _load_header(header: bytes) -> Any:
    doc = _parsed_headers.get(header)
    if doc is None:
        doc = json.loads(header)
        if len(header) <= MEMO_MAX_BYTES and b'"data"' not in header:
            _memo(_parsed_headers, header, doc)
    return doc


def _split(body: bytes, header_length: str | None) -> tuple[bytes, memoryview]:
    if header_length is None:
        return body, memoryview(b"")
    try:
        n = int(header_length)
    except ValueError:
        n = -1
    if not 0 <= n <= len(body):
        raise invalid(f"Inference-Header-Content-Length {quote(header_length)} does not fit a body of "
                      f"{len(body)} bytes")
    view = memoryview(body)
    return bytes(view[:n]), view[n:]


def _dict(value: Any, what: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise invalid(f"{what} must be a JSON object")
    return value


def _input(entry: Any, binary: memoryview, offset: int) -> tuple[InputTensor, int]:
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise invalid("each input needs a 'name'")
    name = entry["name"]
    shape = entry.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise invalid(f"input {quote(name)}: 'shape' must be a list of integers")
    datatype = entry.get("datatype")
    if not isinstance(datatype, str):
        raise invalid(f"input {quote(name)}: 'datatype' must be a string")
    params = _dict(entry.get("parameters"), f"input {quote(name)} parameters")
    raw = None
    size = params.get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or size < 0 or offset + size > len(binary):
            raise invalid(f"input {quote(name)}: binary_data_size {quote(size)} overruns the {len(binary)} bytes "
                          "of binary data")
        raw = binary[offset:offset + size]
        offset += size
    values = entry.get("data")
    if values is not None and not isinstance(values, list):
        values = [values]
    return InputTensor(name, datatype, list(shape), raw, values, dict(params)), offset


def encode_infer(response: InferResponse, request: InferRequest) -> tuple[bytes, int | None]:
    """The response body and, if any output is binary, the JSON header's length."""
    default_binary = bool(request.parameters.get("binary_data_output", False))
    requested = request.outputs or {}
    binary = {name: bool(requested.get(name, {}).get("binary_data", default_binary)) for name in response.outputs}
    blobs = {name: to_raw(array) for name, array in response.outputs.items() if binary[name]}
    key = None
    if len(blobs) == len(response.outputs):  # all binary: the header depends on shapes only
        layout = tuple((name, a.dtype.str, a.shape, len(blobs[name])) for name, a in response.outputs.items())
        key = (response.model, response.version, response.id, layout)
    header = _encoded_headers.get(key) if key is not None else None
    if header is None:
        outputs = []
        for name, array in response.outputs.items():
            entry: dict[str, Any] = {"name": name, "datatype": datatype_of(array.dtype), "shape": list(array.shape)}
            if binary[name]:
                entry["parameters"] = {"binary_data_size": len(blobs[name])}
            else:
                entry["data"] = _json_values(array)
            outputs.append(entry)
        doc = {"model_name": response.model, "model_version": response.version, "outputs": outputs}
        if response.id:
            doc["id"] = response.id
        header = json.dumps(doc).encode()
        if key is not None and len(header) <= MEMO_MAX_BYTES:
            _memo(_encoded_headers, key, header)
    if not blobs:
        return header, None
    return b"".join([header, *blobs.values()]), len(header)


def _json_values(array: np.ndarray) -> list:
    if datatype_of(array.dtype) == "BYTES":
        return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in array.ravel()]
    return array.ravel().tolist()

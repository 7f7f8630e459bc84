"""The v2 REST codec's memoized JSON headers: a remembered header must never carry one request's
shapes, ids, sizes or data into another."""

from __future__ import annotations

import json

import numpy as np

from edgerun.serving import rest_codec
from edgerun.serving.rest_codec import encode_infer, parse_infer
from edgerun.serving.types import InferRequest, InferResponse


def _binary_body(x: np.ndarray, request_id: str = "") -> tuple[bytes, str]:
    doc = {"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32",
                       "parameters": {"binary_data_size": x.nbytes}}],
           "outputs": [{"name": "y", "parameters": {"binary_data": True}}]}
    if request_id:
        doc["id"] = request_id
    header = json.dumps(doc).encode()
    return header + x.tobytes(), str(len(header))


def _split_response(body: bytes, header_length: int | None) -> tuple[dict, bytes]:
    if header_length is None:
        return json.loads(body), b""
    return json.loads(body[:header_length]), body[header_length:]


def test_a_repeated_request_header_still_gets_its_own_tensor_bytes() -> None:
    first, second = np.arange(4, dtype=np.float32).reshape(1, 4), np.full((1, 4), 7, np.float32)
    got = [parse_infer("m", "", *_binary_body(x)) for x in (first, second)]
    assert bytes(got[0].inputs[0].raw) == first.tobytes()
    assert bytes(got[1].inputs[0].raw) == second.tobytes()
    assert got[1].inputs[0].shape == [1, 4] and got[1].outputs == {"y": {"binary_data": True}}


def test_changing_a_parsed_request_does_not_change_the_next() -> None:
    x = np.zeros((1, 4), np.float32)
    first = parse_infer("m", "", *_binary_body(x))
    first.inputs[0].shape.append(9)
    first.inputs[0].parameters["binary_data_size"] = 1
    first.outputs["y"]["binary_data"] = False
    first.parameters["poison"] = True
    second = parse_infer("m", "", *_binary_body(x))
    assert second.inputs[0].shape == [1, 4] and second.inputs[0].parameters == {"binary_data_size": 16}
    assert second.outputs == {"y": {"binary_data": True}} and second.parameters == {}


def test_typed_json_data_is_never_remembered() -> None:
    rest_codec._parsed_headers.clear()
    for values in ([1.0, 2.0], [3.0, 4.0]):
        body = json.dumps({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": values}]})
        assert parse_infer("m", "", body.encode(), None).inputs[0].values == values
    assert rest_codec._parsed_headers == {}


def test_response_headers_follow_shape_id_and_byte_size() -> None:
    request = InferRequest("m", outputs={"y": {"binary_data": True}, "s": {"binary_data": True}})
    cases = [(np.zeros((1, 3), np.float32), "a", [b"ab"]), (np.ones((2, 3), np.float32), "a", [b"ab"]),
             (np.ones((2, 3), np.float32), "b", [b"abc", b"d"]), (np.full((2, 3), 5, np.float32), "b", [b"xyz", b"q"])]
    for y, request_id, strings in cases:
        s = np.array(strings, dtype=object)
        body, header_length = encode_infer(InferResponse("m", "1", request_id, {"y": y, "s": s}), request)
        doc, blobs = _split_response(body, header_length)
        string_bytes = b"".join(len(v).to_bytes(4, "little") + v for v in strings)
        assert doc == {"model_name": "m", "model_version": "1", "id": request_id, "outputs": [
            {"name": "y", "datatype": "FP32", "shape": list(y.shape), "parameters": {"binary_data_size": y.nbytes}},
            {"name": "s", "datatype": "BYTES", "shape": [len(strings)],
             "parameters": {"binary_data_size": len(string_bytes)}}]}
        assert blobs == y.tobytes() + string_bytes


def test_json_outputs_carry_their_own_values() -> None:
    request = InferRequest("m", outputs={"y": {"binary_data": False}})
    for value in (1.5, 2.5):
        body, header_length = encode_infer(InferResponse("m", "1", "", {"y": np.full((1, 2), value)}), request)
        assert header_length is None
        assert json.loads(body)["outputs"][0]["data"] == [value, value]


def test_the_memo_stays_bounded() -> None:
    for n in range(rest_codec.MEMO_ENTRIES + 50):
        parse_infer("m", "", *_binary_body(np.zeros((1, n + 1), np.float32)))
        encode_infer(InferResponse("m", "1", str(n), {"y": np.zeros((1, 2), np.float32)}),
                     InferRequest("m", outputs={"y": {"binary_data": True}}))
    assert 0 < len(rest_codec._parsed_headers) <= rest_codec.MEMO_ENTRIES
    assert 0 < len(rest_codec._encoded_headers) <= rest_codec.MEMO_ENTRIES

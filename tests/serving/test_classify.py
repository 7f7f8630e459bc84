"""Triton's classification extension: the ranking rules on their own (against a plain sort), and
through the stock tritonclient.grpc and tritonclient.http clients against the Interpreter."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgerun.runtime.errors import ErrorCode
from edgerun.serving.classify import classification_counts, classify
from edgerun.serving.errors import ServingError


def _parse(strings: np.ndarray) -> list[list[tuple[float, int]]]:
    rows = strings.reshape(-1, strings.shape[-1]) if strings.ndim else strings.reshape(1, 1)
    return [[(float(s.split(b":")[0]), int(s.split(b":")[1])) for s in row] for row in rows]


def test_top_k_by_value_with_ties_to_the_lower_index() -> None:
    scores = np.array([[1.0, 5.0, 10.0, 4.0, 5.0], [0.5, np.nan, -1.0, 0.5, 2.0]], np.float32)
    got = _parse(classify("y", scores, 4))
    assert [[i for _, i in row] for row in got] == [[2, 1, 4, 3], [4, 0, 3, 2]]  # NaN ranks last
    assert got[0][0] == (10.0, 2)
    assert classify("y", scores, 1)[0, 0] == b"10.000000:2"  # Triton's "<value>:<index>"


def test_the_oracle_ordering_on_random_scores() -> None:
    rng = np.random.default_rng(0)
    scores = rng.standard_normal((3, 4, 50)).astype(np.float32)
    got = classify("y", scores, 7)
    assert got.shape == (3, 4, 7)
    want = np.argsort(-scores, axis=-1)[..., :7]  # no ties in continuous random data
    assert [[i for _, i in row] for row in _parse(got)] == want.reshape(-1, 7).tolist()


def test_integer_outputs_and_counts_beyond_the_axis() -> None:
    got = classify("y", np.array([3, -7, 12], np.int64), 10)
    assert got.tolist() == [b"12:2", b"3:0", b"-7:1"]


@pytest.mark.parametrize("array", [np.float32(1.0), np.array([b"a", b"b"], dtype=object)])
def test_scalars_and_strings_cannot_be_classified(array) -> None:
    with pytest.raises(ServingError) as info:
        classify("y", np.asarray(array), 1)
    assert info.value.status is ErrorCode.INVALID_ARGUMENT and "numeric output" in info.value.message


@pytest.mark.parametrize("count", [0, -2, True, 2.5, "3"])
def test_bad_counts(count) -> None:
    with pytest.raises(ServingError, match="classification count must be a positive integer"):
        classification_counts({"y": {"classification": count}})
    assert classification_counts({"y": {}, "z": {"classification": 2}}) == {"z": 2}


def _expected(interpreters, x: np.ndarray, k: int) -> list[list[int]]:
    scores = interpreters["mlp"].run({"x": x})["y"]
    return np.argsort(-scores, axis=-1, kind="stable")[:, :k].tolist()


def test_grpc_client_class_count(main_server, interpreters) -> None:
    import tritonclient.grpc as tg

    x = np.random.default_rng(8).standard_normal((2, 64)).astype(np.float32)
    tensor = tg.InferInput("x", [2, 64], "FP32")
    tensor.set_data_from_numpy(x)
    client = tg.InferenceServerClient(main_server.grpc_url)
    result = client.infer("mlp", [tensor], outputs=[tg.InferRequestedOutput("y", class_count=3)])
    got = result.as_numpy("y")
    assert got.shape == (2, 3) and result.get_output("y").datatype == "BYTES"
    assert [[i for _, i in row] for row in _parse(got)] == _expected(interpreters, x, 3)
    assert "classification" in client.get_server_metadata(as_json=True)["extensions"]


@pytest.mark.parametrize("binary", [True, False])
def test_http_client_class_count(main_server, interpreters, binary) -> None:
    import tritonclient.http as th

    x = np.random.default_rng(9).standard_normal((2, 64)).astype(np.float32)
    tensor = th.InferInput("x", [2, 64], "FP32")
    tensor.set_data_from_numpy(x)
    client = th.InferenceServerClient(main_server.http_url)
    output = th.InferRequestedOutput("y", binary_data=binary, class_count=4)
    got = client.infer("mlp", [tensor], outputs=[output]).as_numpy("y")
    assert got.shape == (2, 4)
    strings = np.vectorize(lambda s: s if isinstance(s, bytes) else s.encode(), otypes=[object])(got)
    assert [[i for _, i in row] for row in _parse(strings)] == _expected(interpreters, x, 4)


def test_http_bad_count_is_invalid(main_server) -> None:
    from tests.serving.test_http import request

    body = json.dumps({"inputs": [{"name": "x", "shape": [1, 64], "datatype": "FP32", "data": [0.0] * 64}],
                       "outputs": [{"name": "y", "parameters": {"classification": -1}}]}).encode()
    status, _, answer = request(main_server, "POST", "/v2/models/mlp/infer", body,
                                {"Content-Type": "application/json"})
    assert status == 400 and "positive integer" in json.loads(answer)["error"]

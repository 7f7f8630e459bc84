"""One ErrorCode (runtime.errors) for both front ends: each maps a code to the gRPC status of
its name, and to an HTTP status; error messages quote client strings short (`quote`)."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from edgerun.federated.service import GRPC_CODES as FEDERATED
from edgerun.runtime.errors import ErrorCode
from edgerun.serving.errors import ServingError, quote
from edgerun.serving.grpc_service import GRPC_CODES as SERVING


@pytest.mark.parametrize("code", list(ErrorCode))
def test_each_front_end_maps_a_code_to_the_grpc_status_of_its_name(code):
    assert SERVING[code] is FEDERATED[code] is grpc.StatusCode[code.name]
    assert SERVING[code].value[0] == code.value and 400 <= code.http < 600


def test_http_statuses_of_the_codes_serving_answers():
    got = {c.name: c.http for c in (ErrorCode.INVALID_ARGUMENT, ErrorCode.UNAUTHENTICATED, ErrorCode.NOT_FOUND,
                                     ErrorCode.RESOURCE_EXHAUSTED, ErrorCode.INTERNAL, ErrorCode.UNIMPLEMENTED,
                                     ErrorCode.UNAVAILABLE)}
    assert got == {"INVALID_ARGUMENT": 400, "UNAUTHENTICATED": 401, "NOT_FOUND": 404, "RESOURCE_EXHAUSTED": 413,
                   "INTERNAL": 500, "UNIMPLEMENTED": 501, "UNAVAILABLE": 503}


@pytest.mark.parametrize("text,want", [
    ("mlp", "'mlp'"),
    ("a" * 64, repr("a" * 64)),
    ("a" * 65, repr("a" * 64) + "…(65 chars)"),
    ("é\n" * 100_000, repr("é\n" * 32) + "…(200000 chars)"),
    (12345678901234567890, "'12345678901234567890'"),
])
def test_quote_shows_a_short_prefix_of_a_client_string(text, want):
    assert quote(text) == want


def test_a_long_message_is_cut():
    message = ServingError(ErrorCode.NOT_FOUND, "x" * 5000).message
    assert len(message) < 1100 and message.endswith("…(5000 chars)")


def test_every_client_string_in_a_decode_error_is_quoted():
    from edgerun.serving.types import InputTensor
    from edgerun.serving.validate import decode_inputs

    long = "n" * 100_000
    for tensor in (InputTensor(long, "FP32", [1], None, [1.0], {}),
                   InputTensor("x", long, [1], None, [1.0], {})):
        with pytest.raises(ServingError) as info:
            decode_inputs("m", {"x": _Spec()}, [tensor])
        assert len(info.value.message) < 300 and "(100000 chars)" in info.value.message


class _Spec:  # the model's input 'x': FP32 [1]
    dtype, shape, has_default = np.dtype("float32"), (1,), False

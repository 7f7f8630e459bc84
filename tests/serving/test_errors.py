"""One ErrorCode (runtime.errors) for both front ends: each maps a code to the gRPC status of
its name, and to an HTTP status."""

from __future__ import annotations

import grpc
import pytest

from edgerun.federated.service import GRPC_CODES as FEDERATED
from edgerun.runtime.errors import ErrorCode
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

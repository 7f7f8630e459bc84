"""Optional bearer-token authentication: a gRPC interceptor and a check for HTTP headers."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from pathlib import Path

import grpc

# methods reachable without a token, so orchestrators can probe health (the health servicer asks for
# the token itself when the service checked is a model)
OPEN_GRPC_METHODS = ("/grpc.health.v1.Health/",)
INFER_METHODS = ("/ModelInfer", "/ModelStreamInfer")  # refusals counted in nv_inference_request_failure


def read_token(path: str | Path) -> str:
    """The token in `path` (surrounding whitespace removed). ValueError if it is empty."""
    token = Path(path).read_text().strip()
    if not token:
        raise ValueError("the auth token file is empty")
    return token


def token_ok(header: str | None, token: str) -> bool:
    """Whether an `authorization` header value is 'Bearer <token>' (compared in constant time)."""
    if not header or not header.startswith("Bearer "):
        return False
    return hmac.compare_digest(header[len("Bearer "):].strip().encode(), token.encode())


def metadata_token_ok(metadata, token: str) -> bool:
    """Whether gRPC invocation metadata ((key, value) pairs) carries 'authorization: Bearer <token>'."""
    header = next((v for k, v in metadata or () if k == "authorization"), None)
    return token_ok(header if isinstance(header, str) else None, token)


class TokenInterceptor(grpc.aio.ServerInterceptor):
    """Rejects calls without 'authorization: Bearer <token>' metadata with UNAUTHENTICATED, telling
    `refused(model, reason)` (Handlers.refused) of each inference call it rejects."""

    def __init__(self, token: str, refused: Callable[[str, str], None] | None = None) -> None:
        self._token, self._refused = token, refused

        # status set without context.abort(), whose exception would keep the request in a
        # reference cycle until the next full garbage collection (see grpc_service._fail)
        async def deny_unary(request, context):
            context.set_code(grpc.StatusCode.UNAUTHENTICATED)
            context.set_details("missing or invalid bearer token")

        async def deny_stream(request_iterator, context):
            context.set_code(grpc.StatusCode.UNAUTHENTICATED)
            context.set_details("missing or invalid bearer token")

        self._deny_unary = grpc.unary_unary_rpc_method_handler(deny_unary)
        self._deny_stream = grpc.stream_stream_rpc_method_handler(deny_stream)

    async def intercept_service(self, continuation, handler_call_details):
        method = handler_call_details.method
        if method.startswith(OPEN_GRPC_METHODS):
            return await continuation(handler_call_details)
        if metadata_token_ok(handler_call_details.invocation_metadata, self._token):
            return await continuation(handler_call_details)
        if method.endswith(INFER_METHODS):  # no model label: the caller is not trusted to name one
            if self._refused is not None:
                self._refused("", "UNAUTHENTICATED")
        return self._deny_stream if method.endswith("/ModelStreamInfer") else self._deny_unary

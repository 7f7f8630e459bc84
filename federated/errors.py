"""Errors the coordinator's handlers raise (mapped to gRPC status codes by federated.service)."""

from __future__ import annotations

from edgerun.runtime.errors import EdgerunError, ErrorCode


class Rejected(EdgerunError):
    """A client request the coordinator refuses; `code` says why (for the gRPC status)."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code

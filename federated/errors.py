"""Errors the coordinator's handlers raise (mapped to gRPC status codes by federated.service)."""

from __future__ import annotations

from edgerun.runtime.errors import EdgerunError, ErrorCode

LATE = "late: "  # the start of a routine refusal's message: the round moved on without the client


class Rejected(EdgerunError):
    """A client request the coordinator refuses; `code` says why (for the gRPC status).
    `routine`: part of normal operation (an over-selected client arriving after its stage
    closed), logged at INFO by both sides instead of as a warning; its message starts with LATE."""

    def __init__(self, code: ErrorCode, message: str, routine: bool = False) -> None:
        super().__init__(LATE + message if routine else message)
        self.code, self.routine = code, routine

"""The one error type request handlers raise, with a protocol-neutral status.

The status is an ErrorCode (runtime.errors, shared with federated): the gRPC front end maps
it by name, the REST front end to `.http`. Messages are written for clients and never
contain file paths or tracebacks.
"""

from __future__ import annotations

from edgerun.runtime.errors import ErrorCode


class ServingError(Exception):
    """A request that cannot be served: `status` says why, the message says what to fix."""

    def __init__(self, status: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def invalid(message: str) -> ServingError:
    return ServingError(ErrorCode.INVALID_ARGUMENT, message)


def not_found(message: str) -> ServingError:
    return ServingError(ErrorCode.NOT_FOUND, message)

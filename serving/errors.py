"""The one error type request handlers raise, with a protocol-neutral status.

Servicers map `Status` to gRPC codes and HTTP statuses; messages are written for clients and
never contain file paths or tracebacks.
"""

from __future__ import annotations

import enum


class Status(enum.Enum):
    """What went wrong, as gRPC names it; `.http` is the matching HTTP status."""

    INVALID_ARGUMENT = 400
    UNAUTHENTICATED = 401
    NOT_FOUND = 404
    RESOURCE_EXHAUSTED = 413
    INTERNAL = 500
    UNAVAILABLE = 503
    UNIMPLEMENTED = 501

    @property
    def http(self) -> int:
        return self.value


class ServingError(Exception):
    """A request that cannot be served: `status` says why, the message says what to fix."""

    def __init__(self, status: Status, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def invalid(message: str) -> ServingError:
    return ServingError(Status.INVALID_ARGUMENT, message)


def not_found(message: str) -> ServingError:
    return ServingError(Status.NOT_FOUND, message)

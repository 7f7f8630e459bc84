"""The one error type request handlers raise, with a protocol-neutral status, and `quote`, the
one way an error message shows a string the client sent.

The status is an ErrorCode (runtime.errors, shared with federated): the gRPC front end maps
it by name, the REST front end to `.http`. Messages are written for clients and never
contain file paths or tracebacks. A message quotes client strings with `quote`, so its length
does not grow with theirs: gRPC sends the message in trailing metadata, which clients refuse
past 16 KiB (RESOURCE_EXHAUSTED instead of the real status).
"""

from __future__ import annotations

from edgerun.runtime.errors import ErrorCode

QUOTE_CHARS = 64  # characters of a client string an error message shows
MAX_MESSAGE_CHARS = 1024  # a longer message is cut (a backstop: quote() keeps them far shorter)


def quote(text: object, limit: int = QUOTE_CHARS) -> str:
    """`repr` of the first `limit` characters of a client-supplied string (anything else through
    `str` first), followed by '…(N chars)' when it was longer: at most about 4 x `limit` + 20
    characters whatever the input."""
    text = text if isinstance(text, str) else str(text)
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}…({len(text)} chars)"


class ServingError(Exception):
    """A request that cannot be served: `status` says why, the message says what to fix (cut to
    MAX_MESSAGE_CHARS)."""

    def __init__(self, status: ErrorCode, message: str) -> None:
        if len(message) > MAX_MESSAGE_CHARS:
            message = message[:MAX_MESSAGE_CHARS] + f"…({len(message)} chars)"
        super().__init__(message)
        self.status = status
        self.message = message


def invalid(message: str) -> ServingError:
    return ServingError(ErrorCode.INVALID_ARGUMENT, message)


def not_found(message: str) -> ServingError:
    return ServingError(ErrorCode.NOT_FOUND, message)

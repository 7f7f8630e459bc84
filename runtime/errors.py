"""The exceptions edgerun raises. Every message names what is wrong and where."""

from __future__ import annotations

import enum
from typing import Any, NoReturn


class EdgerunError(Exception):
    """Base class of every error edgerun raises on purpose."""


class ModelError(EdgerunError):
    """A model file or graph is malformed: bad bytes, bad indices, bad shapes."""


class ConversionError(EdgerunError):
    """A model in a foreign format (ONNX, ...) cannot be converted."""


class UnsupportedOpError(ModelError):
    """A model uses an operator (or operator version) that no kernel implements."""

    def __init__(self, op: str, node: str, supported: list[str] | None = None, detail: str = ""):
        self.op = op
        self.node = node
        self.supported = sorted(supported or [])
        message = f"node {node!r}: unsupported op {op!r}"
        if detail:
            message += f" ({detail})"
        if self.supported:
            message += "; supported ops: " + ", ".join(self.supported)
        super().__init__(message)


class MemoryBudgetError(ModelError):
    """Running a model would take more memory than the interpreter's memory budget."""


class WorkBudgetError(ModelError):
    """Preparing or running a signature at its input shapes would take more multiply-adds
    than the interpreter's work budget (runtime.work estimates them from the shapes); the
    message names the estimate, the budget and the node that contributes most."""


class ValueNeeded(ModelError):
    """A kernel's output shape depends on the contents of an input that is not a
    constant at prepare time (Reshape by a computed shape, NonZero, Range...).

    The plan then runs the model eagerly, preparing each node with the actual
    input values. Outside a plan it is a ModelError like any other.
    """

    def __init__(self, node: str, op: str, index: int):
        self.index = index
        super().__init__(f"node {node!r} ({op}): input {index} must be known to infer the output shape")


class InputError(EdgerunError):
    """Inputs passed at run time do not match what the signature expects."""


def raise_node_failure(node: Any, exc: Exception, stage: str = "failed") -> NoReturn:
    """Re-raise `exc`, which a kernel raised while `stage` ("failed", "failed to prepare"):
    an EdgerunError as it is; anything else (a kernel bug or bad data: a numpy error must
    not escape) as a ModelError naming the node, caused by `exc`. `node` has `name` and
    `op_type` (a runtime.graph.Node). Call it from the `except Exception` clause."""
    if isinstance(exc, EdgerunError):
        raise exc
    raise ModelError(f"node {node.name!r} ({node.op_type}) {stage}: {exc}") from exc


class ErrorCode(enum.Enum):
    """Why a request failed, named and numbered as gRPC's canonical status codes (a front end
    maps a code by name); `.http` is the matching HTTP status. Shared by serving and federated."""

    INVALID_ARGUMENT = 3
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    UNAUTHENTICATED = 16

    @property
    def http(self) -> int:
        """The HTTP status (RESOURCE_EXHAUSTED is 413: what requests run out of is size)."""
        return {ErrorCode.INVALID_ARGUMENT: 400, ErrorCode.UNAUTHENTICATED: 401, ErrorCode.PERMISSION_DENIED: 403,
                ErrorCode.NOT_FOUND: 404, ErrorCode.ALREADY_EXISTS: 409, ErrorCode.FAILED_PRECONDITION: 400,
                ErrorCode.RESOURCE_EXHAUSTED: 413, ErrorCode.INTERNAL: 500, ErrorCode.UNIMPLEMENTED: 501,
                ErrorCode.UNAVAILABLE: 503}[self]

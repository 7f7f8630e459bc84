"""Kernel registry: (domain, op_type) -> kernels by the opset version they start at.

A node of version v gets the kernel registered with the largest `since` <= v,
as in ONNX's reference evaluator.

A backend (devices/, e.g. "numba") may accelerate an op with a mixin class: it
is combined with whichever reference kernel the version resolves to, so it
inherits that version's semantics and validation. Its `prepare` calls the
reference `prepare` and switches `self.run` to a fast path only where the fast
path applies, falling back to the reference `run` everywhere else.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

from edgerun.runtime.errors import UnsupportedOpError
from edgerun.runtime.kernels.base import Kernel

_KERNELS: dict[tuple[str, str], list[tuple[int, type[Kernel]]]] = {}
_ACCELERATED: dict[tuple[str, str, str], type] = {}  # (backend, domain, op) -> mixin

ONNX_DOMAINS = ("", "ai.onnx")


def _domain_key(domain: str) -> str:
    return "" if domain in ONNX_DOMAINS else domain


def register(op_type: str, since: int = 1, domain: str = "") -> Callable[[type[Kernel]], type[Kernel]]:
    """Class decorator: register a kernel for `op_type` from opset `since` on."""

    def decorate(cls: type[Kernel]) -> type[Kernel]:
        versions = _KERNELS.setdefault((_domain_key(domain), op_type), [])
        if any(v == since for v, _ in versions):
            raise ValueError(f"kernel {domain}:{op_type} v{since} registered twice")
        versions.append((since, cls))
        versions.sort(key=lambda item: item[0])
        return cls

    return decorate


def accelerate(op_type: str, backend: str, domain: str = "") -> Callable[[type], type]:
    """Class decorator: register a backend's mixin that speeds up `op_type`."""

    def decorate(mixin: type) -> type:
        _ACCELERATED[(backend, _domain_key(domain), op_type)] = mixin
        return mixin

    return decorate


@cache
def _combine(mixin: type, reference: type[Kernel]) -> type[Kernel]:
    return type(f"{mixin.__name__}_{reference.__name__}", (mixin, reference), {})


def resolve(
    domain: str, op_type: str, version: int, node: str, backend: str = "cpu"
) -> type[Kernel]:
    """The kernel class for a node on `backend`; UnsupportedOpError when there is none."""
    reference = _resolve_reference(domain, op_type, version, node)
    mixin = _ACCELERATED.get((backend, _domain_key(domain), op_type))
    return reference if mixin is None else _combine(mixin, reference)


def _resolve_reference(domain: str, op_type: str, version: int, node: str) -> type[Kernel]:
    versions = _KERNELS.get((_domain_key(domain), op_type))
    if not versions:
        raise UnsupportedOpError(_qualified(domain, op_type), node, supported_ops())
    chosen = [cls for since, cls in versions if since <= version]
    if not chosen:
        raise UnsupportedOpError(
            _qualified(domain, op_type), node, supported_ops(),
            detail=f"version {version} is older than the first supported, {versions[0][0]}",
        )
    return chosen[-1]


def is_supported(domain: str, op_type: str) -> bool:
    return (_domain_key(domain), op_type) in _KERNELS


def supported_ops() -> list[str]:
    """Every registered op, as 'Op' for ONNX ops and 'domain:Op' otherwise."""
    return sorted(_qualified(d, op) for d, op in _KERNELS)


def kernel_versions() -> dict[str, list[tuple[int, type[Kernel]]]]:
    """Every registered op, named as `supported_ops` names it -> its reference kernels as
    (the opset version each starts at, the kernel class), oldest first. A copy."""
    return {_qualified(d, op): list(versions) for (d, op), versions in sorted(_KERNELS.items())}


def accelerated_ops(backend: str) -> dict[str, type]:
    """The ops `backend` has a fast-path mixin for (registered with `accelerate`), named as
    `supported_ops` names them -> the mixin; empty for a backend that registered none."""
    return {_qualified(d, op): mixin for (b, d, op), mixin in sorted(_ACCELERATED.items()) if b == backend}


def _qualified(domain: str, op_type: str) -> str:
    key = _domain_key(domain)
    return op_type if not key else f"{key}:{op_type}"

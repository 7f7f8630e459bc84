"""Every op is found in one guess: each registered kernel is defined in its module by a literal
`@register("Op", ...)` (so `grep -rn '"Op"' runtime/kernels` lands on it), never in a loop."""

from __future__ import annotations

import inspect
import sys

import pytest

import edgerun.runtime.kernels  # noqa: F401  (registers every kernel)
from edgerun.runtime.kernels.registry import accelerated_ops, kernel_versions, supported_ops

VERSIONS = kernel_versions()


@pytest.mark.parametrize("op", sorted(VERSIONS))
def test_each_kernel_is_registered_literally_in_its_module(op):
    name = op.rpartition(":")[2]
    for since, cls in VERSIONS[op]:
        want = f'@register("{name}", since={since}'
        assert want in inspect.getsource(sys.modules[cls.__module__]), f"{op} v{since}: no literal {want}"


def test_kernel_versions_match_supported_ops():
    assert sorted(VERSIONS) == supported_ops()
    assert all(versions == sorted(versions, key=lambda v: v[0]) for versions in VERSIONS.values())


def test_accelerated_ops_of_an_unknown_backend_is_empty():
    assert accelerated_ops("no-such-backend") == {}

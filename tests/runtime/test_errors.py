"""runtime.errors.raise_node_failure: the one place a kernel's exception becomes an error
that names the node."""

from __future__ import annotations

import pytest

from edgerun.runtime.errors import InputError, ModelError, raise_node_failure
from edgerun.runtime.graph import Node


def _fail(exc: Exception, stage: str = "failed") -> Exception:
    node = Node("Gemm", [], [], name="fc0")
    try:
        raise exc
    except Exception as caught:  # noqa: BLE001 - what the plan's loop does
        with pytest.raises(Exception) as raised:
            raise_node_failure(node, caught, stage)
    return raised.value


def test_a_foreign_exception_becomes_a_model_error_naming_the_node():
    cause = ValueError("shapes (1,3) and (4,) not aligned")
    error = _fail(cause, "failed to prepare")
    assert type(error) is ModelError and error.__cause__ is cause
    assert str(error) == "node 'fc0' (Gemm) failed to prepare: shapes (1,3) and (4,) not aligned"


@pytest.mark.parametrize("exc", [ModelError("node 'fc0' (Gemm): bad alpha"), InputError("input 'x': bad")])
def test_edgerun_errors_pass_unchanged(exc):
    assert _fail(exc) is exc

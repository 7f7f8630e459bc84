"""The ONNX backend test suite, run through `converters.onnx_backend`.

Every case whose ops edgerun supports must pass, unless `excludes.EXCLUDED`
lists it with a reason; an excluded case must still fail (so the list cannot
go stale); a case using an unsupported op must be refused at conversion with
an error naming that op.
"""

from __future__ import annotations

import pytest

from edgerun.converters.onnx_backend import EdgerunBackend
from edgerun.runtime.errors import ConversionError
from tests.converters.conformance.cases import EXCLUDED, all_cases, run_case, unsupported_ops

CASES = all_cases()


@pytest.mark.parametrize("case", CASES, ids=[f"{c.category}/{c.name}" for c in CASES])
def test_case(case):
    missing = unsupported_ops(case)
    if case.name in EXCLUDED:
        with pytest.raises(Exception):  # noqa: B017 - any failure keeps it excluded
            run_case(case)
    elif missing:
        with pytest.raises(ConversionError) as info:
            EdgerunBackend.prepare(case.model)
        assert all(op.split(":")[-1] in str(info.value) for op in missing)
    else:
        run_case(case)


def test_excludes_name_real_cases_with_reasons():
    names = {c.name for c in CASES}
    assert set(EXCLUDED) <= names, sorted(set(EXCLUDED) - names)
    assert all(reason.strip() for reason in EXCLUDED.values())

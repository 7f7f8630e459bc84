"""Excluded conformance cases of the math family: name -> reason (one line each)."""

EXCLUDED: dict[str, str] = {
}

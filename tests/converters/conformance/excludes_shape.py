"""Excluded conformance cases of the shape family: name -> reason (one line each)."""

EXCLUDED: dict[str, str] = {
}

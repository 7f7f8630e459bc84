"""Excluded conformance cases of the nn family: name -> reason (one line each)."""

EXCLUDED: dict[str, str] = {
}

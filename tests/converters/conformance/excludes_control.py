"""Excluded conformance cases of the control family: name -> reason (one line each)."""

EXCLUDED: dict[str, str] = {
}

"""Attack runs against edgerun's servers; each module exposes `run_all(duration_s) -> dict[str, dict]`."""

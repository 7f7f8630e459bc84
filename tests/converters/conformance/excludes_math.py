"""Excluded conformance cases of the math family: name -> reason (one line each)."""

EXCLUDED: dict[str, str] = {
    "test_einsum_sum_bfloat16": "bfloat16 einsum: numpy's einsum has no bfloat16 loop",
}

"""Verifier fuzzing: 1,200 mutated models (byte flips, truncations, insertions,
out-of-range indices, cycles, huge dims). Each must be refused with ModelError /
UnsupportedOpError or load and run; benchmarks/bench_fuzz.py runs 10,000+."""

from __future__ import annotations

from collections import Counter

import pytest

from tests.runtime.fuzz_cases import mutated_models, outcome


@pytest.mark.parametrize("seed", range(4))
def test_mutated_models_fail_cleanly_or_run(seed):
    outcomes = Counter()
    bugs = []
    for data in mutated_models(300, seed):
        result = outcome(data)
        outcomes[result.split(":")[0]] += 1
        if result.startswith("BUG"):
            bugs.append(result)
    assert not bugs, f"{len(bugs)} bugs, e.g. {bugs[:5]}; outcomes {dict(outcomes)}"
    assert outcomes["ModelError"] > 100 and outcomes["ran"] > 10, dict(outcomes)

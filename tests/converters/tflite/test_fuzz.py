"""1,200 mutated .tflite files: each loads and runs, or fails with an EdgerunError; never
another exception, never a hang (benchmarks/bench_fuzz.py --tflite runs 10,000)."""

from __future__ import annotations

import signal
import warnings

import pytest

import edgerun  # noqa: F401  (registers the .tflite format with the loader)
from tests.converters.tflite.fuzz_cases import mutated_models, outcome, seeds

SECONDS = 20  # per file: far above any honest case here; more means a hang


class _TooSlow(Exception):
    pass


def _alarm(signum, frame):  # noqa: ANN001
    raise _TooSlow


def test_the_seeds_run():
    assert [outcome(data) for data in seeds()] == ["ran"] * len(seeds())


@pytest.mark.parametrize("seed", range(4))
def test_mutated_tflite_files_load_and_run_or_fail_cleanly(seed: int) -> None:
    bugs, outcomes = [], set()
    previous = signal.signal(signal.SIGALRM, _alarm)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for data in mutated_models(300, seed):
                signal.alarm(SECONDS)
                try:
                    result = outcome(data)
                except _TooSlow:
                    result = f"BUG: hang over {SECONDS} s"
                finally:
                    signal.alarm(0)
                outcomes.add(result.split(":")[0])
                if result.startswith("BUG"):
                    bugs.append(result)
    finally:
        signal.signal(signal.SIGALRM, previous)
    assert not bugs, bugs[:5]
    assert "ran" in outcomes and "refused" in outcomes  # the mutations reach both ends

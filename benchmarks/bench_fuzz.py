"""Robustness of the loader and interpreter on mutated .erm files, and how fast they refuse them.

Feeds N mutated models (bytes overwritten, bits flipped, truncations, index and
shape vectors set to out-of-range or huge values: tests/runtime/fuzz_cases.py) to
`Interpreter` and runs every signature of those that load. Each file ends in one
outcome: refused with ModelError / UnsupportedOpError, "ran", "ModelError at run",
"loaded (...)", or "BUG: ..." for anything else (another exception type, a
wrong set of outputs). Prints the count per outcome, the throughput in files/s and
each distinct BUG message; exits 1 if there is any BUG.

    .venv/bin/python benchmarks/bench_fuzz.py [-n 10000] [--seed 0] [--markdown]
    .venv/bin/python benchmarks/bench_fuzz.py --tflite     # mutated .tflite files instead
                                                            # (tests/converters/tflite/fuzz_cases.py)

There is no anchor here: the figure to watch is BUG = 0; files/s shows that
verification stays cheap enough to run on every load.
"""

# ruff: noqa: E402 - the repository root goes on sys.path before project imports
from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._harness import machine, print_table


def _cases(tflite: bool):  # noqa: ANN202
    """(mutated_models, outcome) of the .erm or the .tflite fuzz cases."""
    if tflite:
        import edgerun  # noqa: F401  (registers the .tflite format with the loader)
        from tests.converters.tflite import fuzz_cases
    else:
        from tests.runtime import fuzz_cases
    return fuzz_cases.mutated_models, fuzz_cases.outcome


def category(result: str) -> str:
    """The table row for an outcome: every BUG message counts under "BUG"."""
    return "BUG" if result.startswith("BUG") else result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--count", type=int, default=10_000, help="mutated files (default 10,000)")
    parser.add_argument("--seed", type=int, default=0, help="mutation seed (default 0)")
    parser.add_argument("--markdown", action="store_true", help="print README table rows")
    parser.add_argument("--tflite", action="store_true", help="mutate .tflite files (the TFLite importer)")
    args = parser.parse_args(argv)
    mutated_models, outcome = _cases(args.tflite)

    counts: Counter[str] = Counter()
    bugs: Counter[str] = Counter()
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numpy overflow warnings from garbage weights
        for data in mutated_models(args.count, args.seed):
            result = outcome(data)
            counts[category(result)] += 1
            if result.startswith("BUG"):
                bugs[result[:300]] += 1
    elapsed = time.perf_counter() - start

    kind = ".tflite" if args.tflite else ".erm"
    print(f"# {machine()}; {args.count:,} mutated {kind} files, seed {args.seed}: "
          f"{args.count / elapsed:,.0f} files/s ({elapsed:.1f} s)")
    rows = [[name, f"{n:,}", f"{100 * n / args.count:.1f}"] for name, n in counts.most_common()]
    print_table(["outcome", "files", "%"], rows, args.markdown)
    if bugs:
        print(f"\n{len(bugs)} distinct BUG message(s):")
        for message, n in bugs.most_common():
            print(f"  {n:>5} x {message}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The attack suite as a benchmark: each family of the attack run against `edgerun serve` and
`edgerun federated coordinator` on loopback, with what was tried / refused / failed, honest-client
latency while the attack runs and server RSS before / peak / after.

    .venv/bin/python benchmarks/bench_attacks.py [--duration 10] [--only coordinator,serving,work] [--json out.json]

Each family lives in `benchmarks/attacks/<family>.py` and exposes `run_all(duration_s)`, which
returns {attack name: {figure: value}}; this script runs the families in turn and prints one
table row per attack (figures a family does not measure are left blank). The healthy outcome:
`failed` 0, honest latency near its no-attack value, RSS after near RSS before.
"""

# ruff: noqa: E402 - the repository root goes on sys.path before project imports
from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._harness import machine, print_table

FAMILIES = ("coordinator", "serving", "work")
COLUMNS = ("tried", "refused", "failed", "honest_p50_ms", "honest_p99_ms",
           "rss_before_mib", "rss_peak_mib", "rss_after_mib")


def available_families() -> list[str]:
    """The families whose module exists in this checkout (each lands with its fixes)."""
    folder = Path(__file__).resolve().parent / "attacks"
    return [name for name in FAMILIES if (folder / f"{name}.py").is_file()]


def run(families: list[str], duration_s: float) -> dict[str, dict[str, dict]]:
    """{family: {attack: figures}}; a family that raises is reported as one failed row."""
    results: dict[str, dict[str, dict]] = {}
    for family in families:
        module = importlib.import_module(f"benchmarks.attacks.{family}")
        print(f"running {family} attacks ({duration_s:g} s each) ...", file=sys.stderr, flush=True)
        results[family] = module.run_all(duration_s)
    return results


# other names the families use for the same figures (and their unit factor)
ALIASES = {"p50_ms": ("honest_p50_ms", 1.0), "p99_ms": ("honest_p99_ms", 1.0),
           "rss_kib_before": ("rss_before_mib", 1 / 1024), "rss_kib_peak": ("rss_peak_mib", 1 / 1024),
           "rss_kib_after": ("rss_after_mib", 1 / 1024)}


def normalized(figures: dict) -> dict:
    """`figures` with the aliases above under the table's column names."""
    out = dict(figures)
    for name, (column, factor) in ALIASES.items():
        if name in out and column not in out:
            value = out.pop(name)
            out[column] = value * factor if isinstance(value, int | float) else value
    return out


def rows(results: dict[str, dict[str, dict]]) -> list[list[object]]:
    table = []
    for family, attacks in results.items():
        for attack, figures in attacks.items():
            figures = normalized(figures)
            cells: list[object] = [f"{family}/{attack}"]
            for column in COLUMNS:
                value = figures.get(column, "")
                cells.append(f"{value:.1f}" if isinstance(value, float) else value)
            extra = {k: v for k, v in figures.items() if k not in COLUMNS}
            cells.append(", ".join(f"{k}={_short(v)}" for k, v in extra.items()))
            table.append(cells)
    return table


def _short(value: object, limit: int = 60) -> str:
    text = f"{value:.3g}" if isinstance(value, float) else str(value)
    return text if len(text) <= limit else text[:limit] + "..."


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per attack (default 10)")
    parser.add_argument("--only", default="", help=f"comma-separated families (default: all of {FAMILIES})")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args(argv)
    families = available_families()
    if args.only:
        wanted = args.only.split(",")
        unknown = sorted(set(wanted) - set(families))
        if unknown:
            parser.error(f"unknown or missing families {unknown}; available: {families}")
        families = [f for f in families if f in wanted]
    print(machine())
    results = run(families, args.duration)
    print_table(["attack", *COLUMNS, "other"], rows(results), args.markdown)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Cold start on a device: import + load + first inference of the fast-backend benchmark's CNNs in
a fresh process, natively (x86_64) and under emulated aarch64, with numba and without it.

    sudo .venv/bin/python benchmarks/bench_cold_start_device.py [--models a,b] [--emulated-models a,b]
        [--repeats 3] [--emulated-repeats 1] [--threads 2] [--emulated-timeout 1200] [--markdown]

The models are the torchvision CNNs of benchmarks/bench_cnn_models.py, exported into
benchmarks/.models/ by scripts/export_torchvision_models.py (random weights), converted to .erm
into a temporary folder once, outside the timing. Each process is new and does, timed inside it:
`import edgerun.runtime` (the root package too, which registers the backends), `Interpreter(path,
device="auto")` (load, verify, prepare every plan) and the first `run` of serving_default; "total"
is timed by the parent, from starting the process to its exit, so it includes Python's own start
(the `python -c pass` line above the table). Variants, each in its own process:

- numba, cache cold: device "auto" picks numba with an empty NUMBA_CACHE_DIR, so every kernel the
  model needs is compiled in that process (the first start after installing);
- numba, cache warm: the same NUMBA_CACHE_DIR after that process (every later start);
- no numba: `sys.modules["numba"] = None` before anything is imported, so numba cannot be imported
  and device "auto" falls back to the numpy reference kernels (as on a board without numba wheels).

Emulated aarch64 runs the same child code inside the cached Debian arm64 root of
scripts/aarch64_ci.py (`chroot root qemu-aarch64-static /opt/venv/bin/python`), which needs root;
without root, or when its set-up fails, the emulated part is skipped with one line saying why.
qemu-user translates every instruction, and numba's compile (LLVM) runs translated too, so a cold
numba start there takes minutes: by default all models run natively and only the two smallest under
emulation (`--emulated-models all` runs all five), each process with a `--emulated-timeout`.
Python's bytecode of both places is compiled by one untimed import before the timing (as pip
install does), so the cold/warm difference is numba's cache alone. Every process's output is
compared with the native numba one (rtol 1e-3, atol 1e-4); a mismatch stops the benchmark.

Ratios: "÷ numba warm" divides a row's total by the total of numba, cache warm in the same place
(the no-numba row gives the no-numba / numba cold-start ratio); "emulated ÷ native" divides an
emulated row's total by the same variant's native total. Figures are medians of the repeats.
"""

# ruff: noqa: E402 - the repository root goes on sys.path before project imports
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np
import onnx

from benchmarks._harness import machine, print_table
from benchmarks.bench_cnn_models import feeds_for
from edgerun.converters import from_onnx
from edgerun.runtime import save_model
from scripts import aarch64_ci
from scripts.export_torchvision_models import DEFAULT_DIR, MODELS

EMULATED_DEFAULT = ("mobilenet_v3_small", "shufflenet_v2_x1_0")
VARIANTS = ("numba, cache cold", "numba, cache warm", "no numba")
NO_NUMBA = "no numba"
WARM = "numba, cache warm"
NATIVE = "native x86_64"
# argv: model.erm input.npy output.npy threads numba(0/1); prints one JSON line of seconds
CHILD = """
import sys, time
t0 = time.perf_counter()
if sys.argv[5] == "0":
    sys.modules["numba"] = None  # numba cannot be imported: device "auto" falls back to cpu
import edgerun.runtime
t1 = time.perf_counter()
it = edgerun.runtime.Interpreter(sys.argv[1], device="auto", num_threads=int(sys.argv[4]))
t2 = time.perf_counter()
import json, numpy as np
inputs, outputs = it.signatures["serving_default"].inputs, it.signatures["serving_default"].outputs
result = it.run({next(iter(inputs)): np.load(sys.argv[2])})
t3 = time.perf_counter()
np.save(sys.argv[3], result[next(iter(outputs))])
print(json.dumps({"import": t1 - t0, "load": t2 - t1, "first": t3 - t2, "backend": it.backend}))
"""
WARM_UP = "import edgerun.runtime, edgerun.devices.numba_kernels"  # writes bytecode; compiles no kernel


@dataclass
class Sample:
    """One variant of one model in one place: per-process seconds, one list per phase."""

    phases: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in ("import", "load", "first",
                                                                                      "total")})
    backend: str = ""
    failure: str = ""

    def median(self, phase: str) -> float:
        return float(np.median(self.phases[phase])) if self.phases[phase] else float("nan")


class Place:
    """Where child processes run: natively in .venv's Python, or emulated in the arm64 root."""

    def __init__(self, name: str, work: Path, timeout: float | None) -> None:
        self.name, self.work, self.timeout = name, work, timeout

    def path(self, local: Path) -> str:
        """`local` (under self.work) as the child process sees it."""
        return str(local)

    def launch(self, args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
        command = [sys.executable, *args]
        return subprocess.run(command, env={**os.environ, **env}, capture_output=True, text=True,
                              timeout=self.timeout)

    def timed(self, args: list[str], env: dict[str, str]) -> tuple[float, str]:
        """(seconds from start to exit, stdout); RuntimeError with stderr's tail when it fails."""
        start = time.perf_counter()
        result = self.launch(args, env)
        elapsed = time.perf_counter() - start
        if result.returncode:
            raise RuntimeError(f"{self.name}: exit code {result.returncode}: {result.stderr.strip()[-600:]}")
        return elapsed, result.stdout


class Emulated(Place):
    def path(self, local: Path) -> str:
        return f"/{local.relative_to(aarch64_ci.ROOT)}"

    def launch(self, args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
        return aarch64_ci.emulated([f"{aarch64_ci.GUEST_VENV}/bin/python", *args], env=env, check=False,
                                   capture_output=True, text=True, timeout=self.timeout)


def convert(names: list[str], cache: Path, work: Path) -> dict[str, tuple[Path, Path]]:
    """name -> (model.erm, input.npy) in `work`; SystemExit naming the export command when one is missing."""
    files = {}
    for name in names:
        source = cache / f"{name}.onnx"
        if not source.exists():
            raise SystemExit(f"{source} is missing: run .venv/bin/python scripts/export_torchvision_models.py")
        model = onnx.load(str(source))
        erm, x = work / f"{name}.erm", work / f"{name}.x.npy"
        save_model(from_onnx(model), erm)
        np.save(x, next(iter(feeds_for(model, 1).values())))
        files[name] = (erm, x)
    return files


def measure_model(place: Place, name: str, erm: Path, x: Path, args: argparse.Namespace,
                  repeats: int) -> dict[str, Sample]:
    """Every variant of one model in `place`, `repeats` times each; outputs checked against native numba."""
    samples = {variant: Sample() for variant in VARIANTS}
    for repeat in range(repeats):
        cache = place.work / f"numba-{name}-{repeat}"
        for variant in VARIANTS:
            sample = samples[variant]
            if sample.failure or (variant == WARM and samples[VARIANTS[0]].failure):
                sample.failure = sample.failure or "needs the cold start"
                continue
            out = place.work / f"{name}.{place.name}.{variant[:8].replace(' ', '')}.npy"
            child = ["-c", CHILD, place.path(erm), place.path(x), place.path(out), str(args.threads),
                     "0" if variant == NO_NUMBA else "1"]
            try:
                total, stdout = place.timed(child, {"NUMBA_CACHE_DIR": place.path(cache)})
            except subprocess.TimeoutExpired:
                sample.failure = f"over {place.timeout:.0f} s"
                continue
            except RuntimeError as error:
                print(f"{name}, {variant}: {error}")
                sample.failure = "error (printed above)"
                continue
            record = json.loads(stdout.strip().splitlines()[-1])
            for phase in ("import", "load", "first"):
                sample.phases[phase].append(record[phase])
            sample.phases["total"].append(total)
            print(f"  {place.name}, {name}, {variant}: {total:.1f} s", file=sys.stderr, flush=True)
            sample.backend = record["backend"]
            check_output(name, place.name, variant, np.load(out), args.reference)
        shutil.rmtree(cache, ignore_errors=True)
    return samples


def check_output(name: str, place: str, variant: str, got: np.ndarray, reference: dict[str, np.ndarray]) -> None:
    """Keep the first output of `name` as its reference; SystemExit when a later one differs."""
    want = reference.setdefault(name, got)
    if want.shape != got.shape or not np.allclose(got, want, rtol=1e-3, atol=1e-4):
        raise SystemExit(f"{name}: {place} {variant} output differs from native numba's "
                         f"(max abs diff {np.max(np.abs(got - want)) if want.shape == got.shape else 'shape'})")


def python_start(place: Place) -> float:
    """Median seconds of three `python -c pass` in `place` (after one untimed bytecode warm-up)."""
    place.timed(["-c", WARM_UP], {"NUMBA_CACHE_DIR": place.path(place.work / "numba-warm-up")})
    return float(np.median([place.timed(["-c", "pass"], {})[0] for _ in range(3)]))


def emulated_place(work_parent: Path, timeout: float) -> tuple[Emulated | None, str]:
    """The emulated place after aarch64_ci's (cached) set-up, or None and why not."""
    try:
        aarch64_ci.setup()
    except (aarch64_ci.SetupError, OSError, subprocess.SubprocessError) as error:
        return None, f"emulated aarch64 skipped: {error}"
    (aarch64_ci.ROOT / "tmp").mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="edgerun-cold-start-", dir=aarch64_ci.ROOT / "tmp"))
    return Emulated("emulated aarch64", work, timeout), ""


def rows_for(results: dict[tuple[str, str], dict[str, Sample]]) -> list[list[str]]:
    """Table rows: one per (model, place, variant) with the phases and the two ratios."""
    rows = []
    for (name, place), samples in results.items():
        warm = samples[WARM].median("total")
        native = results.get((name, NATIVE))
        for variant, sample in samples.items():
            if sample.failure:
                rows.append([name, place, variant, "", "", "", f"failed: {sample.failure}", "", ""])
                continue
            total = sample.median("total")
            emu = "" if native is None or place == NATIVE else f"{total / native[variant].median('total'):.1f}"
            expected = "cpu" if variant == NO_NUMBA else "numba"
            label = variant if sample.backend == expected else f"{variant} (ran on {sample.backend!r})"
            rows.append([name, place, label, *(f"{sample.median(p):.2f}" for p in ("import", "load", "first")),
                         f"{total:.2f}", f"{total / warm:.2f}" if warm == warm else "", emu])
    return rows


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS), help="natively (default: all five)")
    parser.add_argument("--emulated-models", default=",".join(EMULATED_DEFAULT),
                        help="under emulation: comma-separated, 'all', or 'none' (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=3, help="native processes per variant")
    parser.add_argument("--emulated-repeats", type=int, default=1, help="emulated processes per variant")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--emulated-timeout", type=float, default=1200, help="seconds per emulated process")
    parser.add_argument("--cache", type=Path, default=DEFAULT_DIR, help="exported models (default: %(default)s)")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    args.models = [m for m in args.models.split(",") if m]
    emulated = args.emulated_models
    args.emulated_models = [] if emulated == "none" else list(MODELS) if emulated == "all" else emulated.split(",")
    unknown = sorted(set(args.models + args.emulated_models) - set(MODELS))
    if unknown:
        raise SystemExit(f"unknown models {unknown}: choose from {', '.join(MODELS)}")
    args.reference = {}
    return args


def main() -> int:
    args = parse_args()
    print(machine())
    results: dict[tuple[str, str], dict[str, Sample]] = {}
    starts: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as local:
        files = convert(sorted(set(args.models + args.emulated_models), key=MODELS.index), args.cache, Path(local))
        native = Place(NATIVE, Path(local), None)
        starts[native.name] = python_start(native)
        for name in sorted(set(args.models + args.emulated_models), key=MODELS.index):  # the reference first
            results[(name, native.name)] = measure_model(native, name, *files[name], args, args.repeats)
        emulated, why = emulated_place(Path(local), args.emulated_timeout) if args.emulated_models else (None, "")
        if why:
            print(why)
        if emulated is not None:
            try:
                starts[emulated.name] = python_start(emulated)
                for name in args.emulated_models:
                    erm, x = (shutil.copy2(f, emulated.work / f.name) for f in files[name])
                    results[(name, emulated.name)] = measure_model(emulated, name, Path(erm), Path(x), args,
                                                                   args.emulated_repeats)
            finally:
                shutil.rmtree(emulated.work, ignore_errors=True)
    report(results, starts, args)
    return 0


def report(results: dict[tuple[str, str], dict[str, Sample]], starts: dict[str, float],
           args: argparse.Namespace) -> None:
    print("python -c pass: " + ", ".join(f"{place} {seconds:.2f} s" for place, seconds in starts.items()))
    print(f"batch 1, {args.threads} threads, device 'auto'; seconds, medians of {args.repeats} native and "
          f"{args.emulated_repeats} emulated processes per variant")
    headers = ["model", "place", "variant", "import s", "load s", "first run s", "total s", "÷ numba warm",
               "emulated ÷ native"]
    order = sorted(results.items(), key=lambda kv: (kv[0][1] != NATIVE, MODELS.index(kv[0][0])))
    print_table(headers, rows_for(dict(order)), markdown=args.markdown)


if __name__ == "__main__":
    sys.exit(main())

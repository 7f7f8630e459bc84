#!/usr/bin/env python3
"""Everyday tasks for edgerun, with nothing but Python >= 3.11 installed.

    python3 tasks.py demo [ARGS]     # run examples/demo.py [ARGS] (demo --help lists them)
    python3 tasks.py demo --language-model  # ... then a federated character LSTM (about a minute more)
    python3 tasks.py test [ARGS]     # pytest -n auto -q [ARGS]
    python3 tasks.py bench [ARGS]    # every benchmarks/bench_*.py in turn
    python3 tasks.py lint [ARGS]     # ruff check [ARGS]
    python3 tasks.py test-no-numba [ARGS]  # the device-side tests in .venv-nonumba/, which has no numba

Each task first makes sure `.venv/` exists and holds the project installed
with `pip install -e ".[extras]"`. A stamp file records the hash of
pyproject.toml and the extras installed, so repeated runs skip pip; a failed
install leaves no stamp. The exit code is the task's own (pytest's, ...).
`test-no-numba` keeps its own `.venv-nonumba/` (stamped the same way) with the
project and the few packages its tests need, numba and llvmlite left out.
Standard library only: this file runs before anything is installed.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
STAMP = VENV / ".edgerun-installed"
PYPROJECT = ROOT / "pyproject.toml"
MIN_PYTHON = (3, 11)
# Packages installed without their dependencies, for the trained ONNX models they
# ship (the real-model tests read only their data files, never import them):
# silero-vad's voice-activity models (it depends on torch, several GB we must not
# pull) and rapidocr-onnxruntime's PP-OCR text detector, direction classifier and
# recognizer (it depends on opencv and onnxruntime's whole OCR stack), and mediapipe's
# trained .tflite models (face, hand, pose, selfie segmentation: the TFLite importer's real
# models; mediapipe itself needs opencv, jax and more). 0.10.14 is the last release whose
# wheel ships the models.
NO_DEPS = ("silero-vad==6.2.3", "rapidocr-onnxruntime==1.4.4", "mediapipe==0.10.14")

# `test-no-numba` (issue 19): the device side where numba has no wheels (32-bit ARM boards, some
# phones). Its venv holds pyproject.toml's dependencies except these (llvmlite is numba's compiler)...
NO_NUMBA_VENV = ROOT / ".venv-nonumba"
NO_NUMBA_LEFT_OUT = ("numba", "llvmlite")
# ... and, at the test extra's versions, only what the runtime, training and client tests need.
NO_NUMBA_TEST_PACKAGES = (
    "onnx", "onnxruntime", "hypothesis", "pytest", "pytest-xdist", "scikit-learn", "skl2onnx", "pillow", "google-re2",
    "flatc",
)
# .venv gets ml-dtypes <= 0.5.4 through tritonclient's cap; 0.6+ casts out-of-range floats to int4
# differently, and tests/runtime/test_kernels_cast_lowbit.py checks our Cast against ml_dtypes' cast.
NO_NUMBA_PINS = ("ml-dtypes<=0.5.4",)
NO_NUMBA_TESTS = (
    "tests/runtime",
    "tests/converters/training",
    "tests/devices/test_host.py",
    "tests/federated/test_local.py",
    "tests/federated/test_acceptance_secagg.py",
    "tests/federated/test_round_pacing.py",
)
# Cases that ask for device="numba" by name: they test the numba backend, so they run in `test`
# (numba installed), and are left out here. tests/devices/test_numba_*.py are not in NO_NUMBA_TESTS.
NO_NUMBA_DESELECTED = (
    "tests/runtime/test_eager.py::test_control_flow_bodies_run_on_the_plans_backend[numba]",
    "tests/runtime/test_eager.py::test_an_if_on_a_specialized_condition_is_inlined_into_the_plan[numba]",
    "tests/devices/test_host.py::test_select_backend[auto-numba]",
    "tests/devices/test_host.py::test_select_backend[numba-numba]",
    "tests/runtime/test_concat_in_place.py::test_a_batch_1_concat_along_channels_is_no_step[numba]",
    "tests/runtime/test_concat_in_place.py::test_a_batch_of_2_is_copied[numba]",
)


def say(message: str) -> None:
    """One line per step, so a log shows what happened in which order."""
    print(f"tasks.py: {message}", flush=True)


def venv_python(where: Path = VENV) -> Path:
    """The interpreter inside the venv `where` (Scripts\\python.exe on Windows)."""
    if os.name == "nt":
        return where / "Scripts" / "python.exe"
    return where / "bin" / "python"


def ensure_venv(where: Path = VENV) -> None:
    """Create the venv `where` with pip unless it already has an interpreter; exits with a hint on failure."""
    if venv_python(where).exists():
        return
    import venv

    version = ".".join(map(str, sys.version_info[:3]))
    say(f"creating {where.name} with {sys.executable} (Python {version})")
    try:
        venv.EnvBuilder(with_pip=True).create(where)
    except (OSError, subprocess.CalledProcessError) as error:
        say(f"could not create {where.name}: {error}")
        say("on Debian/Ubuntu install the venv module first: sudo apt install python3-venv")
        sys.exit(1)


def project_hash() -> str:
    """Changes whenever pyproject.toml or the NO_DEPS list changes."""
    return hashlib.sha256(PYPROJECT.read_bytes() + repr(NO_DEPS).encode()).hexdigest()


def stamp_for(extras: tuple[str, ...]) -> str:
    """What the stamp holds after installing `extras` from the current pyproject.toml."""
    return f"{project_hash()} {','.join(sorted(extras))}"


def is_installed(extras: tuple[str, ...]) -> bool:
    """True when the stamp matches pyproject.toml and covers every extra in `extras`."""
    try:
        digest, _, installed = STAMP.read_text().strip().partition(" ")
    except OSError:
        return False
    return digest == project_hash() and set(extras) <= set(installed.split(","))


def ensure_installed(extras: tuple[str, ...]) -> None:
    """pip-install the project with `extras` into .venv unless the stamp says it is done.

    Exits with pip's code when the install fails; the stamp is only written after
    a successful install.
    """
    ensure_venv()
    if is_installed(extras):
        say(f"edgerun[{','.join(extras)}] is up to date in .venv (pyproject.toml unchanged)")
        return
    STAMP.unlink(missing_ok=True)
    target = f".[{','.join(extras)}]"
    say(f"installing edgerun into .venv: pip install -e {target!r} (takes a while once)")
    pip = [str(venv_python()), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    code = subprocess.call([*pip, "-e", target], cwd=ROOT)
    if code == 0 and "test" in extras:
        code = subprocess.call([*pip, "--no-deps", *NO_DEPS], cwd=ROOT)
    if code != 0:
        say(f"pip install failed with exit code {code}; fix the error above and run again")
        sys.exit(code)
    STAMP.write_text(stamp_for(extras) + "\n")


def run(args: list[str], where: Path = VENV) -> int:
    """Run `args` from the repo root with the venv `where`'s scripts first on PATH; its exit code."""
    shown = [os.path.relpath(a, ROOT) if a.startswith(str(ROOT)) else a for a in args]
    say("running " + " ".join(shown))
    env = dict(os.environ, VIRTUAL_ENV=str(where))
    env["PATH"] = str(venv_python(where).parent) + os.pathsep + env.get("PATH", "")
    return subprocess.call(args, cwd=ROOT, env=env)


def requirement_name(requirement: str) -> str:
    """The normalized project name of a requirement string: "ml_dtypes>=0.5" -> "ml-dtypes"."""
    return re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9._-]+", requirement).group()).lower()


def no_numba_requirements() -> list[str]:
    """pyproject.toml's dependencies except NO_NUMBA_LEFT_OUT, plus the test extra's entries for
    NO_NUMBA_TEST_PACKAGES; exits naming any of those the test extra no longer lists."""
    import tomllib

    project = tomllib.loads(PYPROJECT.read_text())["project"]
    core = [r for r in project["dependencies"] if requirement_name(r) not in NO_NUMBA_LEFT_OUT]
    test = [r for r in project["optional-dependencies"]["test"] if requirement_name(r) in NO_NUMBA_TEST_PACKAGES]
    missing = set(NO_NUMBA_TEST_PACKAGES) - {requirement_name(r) for r in test}
    if missing:
        say(f"pyproject.toml's test extra lacks {', '.join(sorted(missing))}: update NO_NUMBA_TEST_PACKAGES")
        sys.exit(1)
    return core + test + list(NO_NUMBA_PINS)


def ensure_no_numba_installed() -> None:
    """Install the project (--no-deps) and no_numba_requirements() into .venv-nonumba unless its
    stamp matches; then exit unless `import numba` fails there. Exits with pip's code on failure."""
    ensure_venv(NO_NUMBA_VENV)
    stamp = NO_NUMBA_VENV / ".edgerun-installed"
    lists = repr((NO_NUMBA_LEFT_OUT, NO_NUMBA_TEST_PACKAGES, NO_NUMBA_PINS))
    wanted = hashlib.sha256((project_hash() + lists).encode()).hexdigest()
    python = str(venv_python(NO_NUMBA_VENV))
    if stamp.exists() and stamp.read_text().strip() == wanted:
        say("edgerun (without numba) is up to date in .venv-nonumba (pyproject.toml unchanged)")
    else:
        stamp.unlink(missing_ok=True)
        say("installing edgerun into .venv-nonumba without " + " or ".join(NO_NUMBA_LEFT_OUT) + " (takes a while once)")
        pip = [python, "-m", "pip", "install", "--disable-pip-version-check", "-q"]
        code = subprocess.call([*pip, *no_numba_requirements()], cwd=ROOT)
        if code == 0:  # last and without its dependencies, so pip neither pulls numba nor warns it is missing
            code = subprocess.call([*pip, "--no-deps", "-e", "."], cwd=ROOT)
        if code != 0:
            say(f"pip install failed with exit code {code}; fix the error above and run again")
            sys.exit(code)
        stamp.write_text(wanted + "\n")
    probe = "try:\n import numba\nexcept ModuleNotFoundError:\n pass\nelse:\n raise SystemExit(1)"
    if subprocess.call([python, "-c", probe], cwd=ROOT) != 0:
        say("numba is importable in .venv-nonumba (a dependency pulled it in?): remove .venv-nonumba and run again")
        sys.exit(1)


def task_demo(extra: list[str]) -> int:
    ensure_installed(("test",))
    demo = ROOT / "examples" / "demo.py"
    if not demo.exists():
        say(f"{demo.relative_to(ROOT)} does not exist yet")
        return 1
    return run([str(venv_python()), str(demo.relative_to(ROOT)), *extra])


def task_test(extra: list[str]) -> int:
    ensure_installed(("test",))
    return run([str(venv_python()), "-m", "pytest", "-n", "auto", "-q", *extra])


def task_bench(extra: list[str]) -> int:
    """Run every benchmark, even after a failure; the first non-zero exit code wins."""
    ensure_installed(("test",))
    benches = sorted((ROOT / "benchmarks").glob("bench_*.py"))
    if not benches:
        say("no benchmarks/bench_*.py to run")
    codes = [run([str(venv_python()), str(b.relative_to(ROOT)), *extra]) for b in benches]
    failed = [(b.name, c) for b, c in zip(benches, codes, strict=True) if c != 0]
    if failed:
        say("failed: " + ", ".join(f"{name} (exit {code})" for name, code in failed))
    return failed[0][1] if failed else 0


def task_lint(extra: list[str]) -> int:
    ensure_installed(("test", "dev"))
    return run([str(venv_python()), "-m", "ruff", "check", *extra])


def task_test_no_numba(extra: list[str]) -> int:
    """NO_NUMBA_TESTS on 2 workers in .venv-nonumba, less NO_NUMBA_DESELECTED."""
    ensure_no_numba_installed()
    deselect = [arg for test in NO_NUMBA_DESELECTED for arg in ("--deselect", test)]
    pytest = [str(venv_python(NO_NUMBA_VENV)), "-m", "pytest", "-n", "2", "-q"]
    return run([*pytest, *deselect, *NO_NUMBA_TESTS, *extra], NO_NUMBA_VENV)


TASKS = {
    "demo": task_demo, "test": task_test, "bench": task_bench, "lint": task_lint, "test-no-numba": task_test_no_numba,
}


def main(argv: list[str]) -> int:
    """Dispatch `argv[0]` to its task with the rest of the arguments; 2 on bad usage."""
    if sys.version_info < MIN_PYTHON:
        want = ".".join(map(str, MIN_PYTHON))
        say(f"edgerun needs Python >= {want}, this is {sys.version.split()[0]}")
        return 1
    if argv[:1] in (["-h"], ["--help"]):
        print(__doc__)
        return 0
    if not argv or argv[0] not in TASKS:
        say(f"usage: python3 tasks.py {{{','.join(TASKS)}}} [ARGS...] (--help: what each does)")
        return 2
    try:
        return TASKS[argv[0]](argv[1:])
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

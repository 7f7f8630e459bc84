#!/usr/bin/env python3
"""Everyday tasks for edgerun, with nothing but Python >= 3.11 installed.

    python3 tasks.py demo [ARGS]     # run examples/demo.py [ARGS] (demo --help lists them)
    python3 tasks.py demo --language-model  # ... then a federated character LSTM (about a minute more)
    python3 tasks.py test [ARGS]     # pytest -n auto -q [ARGS]
    python3 tasks.py bench [ARGS]    # every benchmarks/bench_*.py in turn
    python3 tasks.py lint [ARGS]     # ruff check [ARGS]

Each task first makes sure `.venv/` exists and holds the project installed
with `pip install -e ".[extras]"`. A stamp file records the hash of
pyproject.toml and the extras installed, so repeated runs skip pip; a failed
install leaves no stamp. The exit code is the task's own (pytest's, ...).
Standard library only: this file runs before anything is installed.
"""

from __future__ import annotations

import hashlib
import os
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


def say(message: str) -> None:
    """One line per step, so a log shows what happened in which order."""
    print(f"tasks.py: {message}", flush=True)


def venv_python() -> Path:
    """The interpreter inside .venv (Scripts\\python.exe on Windows)."""
    if os.name == "nt":
        return VENV / "Scripts" / "python.exe"
    return VENV / "bin" / "python"


def ensure_venv() -> None:
    """Create .venv with pip unless it already has an interpreter; exits with a hint on failure."""
    if venv_python().exists():
        return
    import venv

    version = ".".join(map(str, sys.version_info[:3]))
    say(f"creating .venv with {sys.executable} (Python {version})")
    try:
        venv.EnvBuilder(with_pip=True).create(VENV)
    except (OSError, subprocess.CalledProcessError) as error:
        say(f"could not create .venv: {error}")
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


def run(args: list[str]) -> int:
    """Run `args` from the repo root with .venv's scripts first on PATH; its exit code."""
    shown = [os.path.relpath(a, ROOT) if a.startswith(str(ROOT)) else a for a in args]
    say("running " + " ".join(shown))
    env = dict(os.environ, VIRTUAL_ENV=str(VENV))
    env["PATH"] = str(venv_python().parent) + os.pathsep + env.get("PATH", "")
    return subprocess.call(args, cwd=ROOT, env=env)


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


TASKS = {"demo": task_demo, "test": task_test, "bench": task_bench, "lint": task_lint}


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

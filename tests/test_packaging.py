"""The wheel as a user gets it: built from this checkout, installed with its dependencies into a
fresh venv outside the repository, and used from another directory. Its top-level names are
exactly `edgerun` and its dist-info: nothing generic (`runtime`, `serving`, ...) lands in
site-packages.

With no extra (`pip install edgerun`) the device side works: `edgerun --version`, inspect, run,
train, a federated simulation over loopback gRPC, `edgerun serve` queried by tritonclient; each
command that needs an extra exits 2 with one line naming it. Then, in the same venv, with
`pip install 'edgerun[all]'` those commands work too.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
import venv
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
import tritonclient.http as th

from edgerun import from_onnx, save_model
from edgerun.converters.training import make_trainable
from tests.onnx_models import make_mlp, ort_run
from tests.serving.conftest import Server

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("runtime", "converters", "devices", "serving", "federated")


def _run(command: list[str], cwd: Path, env: dict[str, str], timeout: float = 900) -> str:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """Built from a copy of the source tree, so a stale `build/` left by an earlier build cannot
    slip deleted modules into the wheel."""
    out = tmp_path_factory.mktemp("wheel")
    source = out / "source"
    # (never the caches beside the sources: virtual environments, the emulated aarch64 root with
    # its absolute symlinks, downloaded benchmark models; symlinks are copied as links)
    shutil.copytree(ROOT, source, symlinks=True, ignore=shutil.ignore_patterns(
        ".venv*", ".git", ".cache", ".models", "build", "dist", "*.egg-info", "__pycache__", ".hypothesis",
        ".pytest_cache", ".ruff_cache", "tests"))
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
          str(source)], cwd=out, env=dict(os.environ))
    (built,) = out.glob("edgerun-*.whl")
    return built


@pytest.fixture(scope="module")
def bare(tmp_path_factory, wheel) -> dict:
    """A fresh venv holding the wheel and its dependencies, no extra, and a working directory
    outside the repository with what the commands read (written by this checkout's edgerun); the
    environment names neither the repository nor the test venv. The tests of `user` add the
    `all` extra to this same venv, so every test of `bare` stands above them in this file."""
    home = tmp_path_factory.mktemp("user")
    env_dir = home / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PATH"] = f"{env_dir / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    _run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(wheel)], cwd=home, env=env)
    work = home / "work"
    work.mkdir()
    _write_inputs(work)
    return {"python": python, "edgerun": env_dir / "bin" / "edgerun", "env": env, "work": work, "wheel": wheel,
            "extras": "none"}


@pytest.fixture(scope="module")
def user(bare) -> dict:
    """The same venv after `pip install 'edgerun[all]'` (pip may use the package index)."""
    if bare["extras"] != "all":
        _run([str(bare["python"]), "-m", "pip", "install", "-q", "--disable-pip-version-check",
              f"{bare['wheel']}[all]"], cwd=bare["work"], env=bare["env"])
        bare["extras"] = "all"
    return bare


def _write_inputs(work: Path) -> None:
    """mlp.onnx, mlp.erm, trainable.erm (from make_trainable), x.npy, data.npz and dense.tflite."""
    model = make_mlp()
    onnx.save(model, work / "mlp.onnx")
    save_model(from_onnx(model), work / "mlp.erm")
    save_model(make_trainable(from_onnx(model, optimize=False)), work / "trainable.erm")
    rng = np.random.default_rng(0)
    np.save(work / "x.npy", rng.standard_normal((4, 64)).astype(np.float32))
    np.savez(work / "data.npz", x=rng.standard_normal((120, 64)).astype(np.float32),
             y=rng.integers(0, 10, 120).astype(np.int64))
    shutil.copy(ROOT / "tests" / "converters" / "tflite" / "fixtures" / "dense_int8.tflite", work / "dense.tflite")


def _edgerun(user: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(user["edgerun"]), *args], cwd=user["work"], env=user["env"], capture_output=True,
                          text=True, timeout=300)


def _without_extras(bare: dict) -> dict:
    assert bare["extras"] == "none", "this test ran after `user` installed the extras: keep it above them"
    return bare


SIMULATE = ("federated", "simulate", "--model", "trainable.erm", "--data", "data.npz", "--clients", "3",
            "--rounds", "1", "--epochs", "1")
# what runs with no extra: command line -> a file it must write (None: only the exit code)
DEVICE_SIDE = {
    "inspect": (("inspect", "mlp.erm"), None),
    "run": (("run", "mlp.erm", "--input", "x=x.npy", "-o", "run.npz"), "run.npz"),
    "convert-tflite": (("convert", "dense.tflite", "-o", "dense.erm"), "dense.erm"),
    "make-trainable": (("make-trainable", "mlp.erm", "-o", "mlp.train.erm"), "mlp.train.erm"),
    "train": (("train", "trainable.erm", "--data", "data.npz", "--epochs", "1", "-o", "trained.erm"), "trained.erm"),
    "client-help": (("federated", "client", "--help"), None),
    "serve-help": (("serve", "--help"), None),
    # a real coordinator and three devices over loopback gRPC, secure aggregation on
    "simulate-grpc": ((*SIMULATE, "--metrics", "grpc.json", "--export", "global.erm"), "global.erm"),
}
# what needs an extra: (extra, command line, a file it must write once the extra is installed)
NEEDS_EXTRA = {
    "convert-onnx": ("onnx", ("convert", "mlp.onnx", "-o", "from_onnx.erm"), "from_onnx.erm"),
    "make-trainable-onnx": ("onnx", ("make-trainable", "mlp.onnx", "-o", "onnx.train.erm"), "onnx.train.erm"),
    "simulate-dp": ("privacy", (*SIMULATE, "--engine", "thread", "--dp-noise", "1.0", "--metrics", "dp.json"),
                    "dp.json"),
    "simulate-ray": ("simulation", (*SIMULATE, "--engine", "ray", "--metrics", "ray.json"), "ray.json"),
    "simulate-plot": ("plot", (*SIMULATE, "--engine", "thread", "--metrics", "plot.json", "--plot", "rounds.png"),
                      "rounds.png"),
}


def test_the_wheel_holds_only_the_edgerun_package(wheel) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    top = {name.split("/")[0] for name in names}
    assert top == {"edgerun", f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info"}
    for layer in LAYERS:
        assert f"edgerun/{layer}/__init__.py" in names
    assert "edgerun/runtime/schema/edgerun.fbs" in names
    modules = {n for n in names if n.endswith(".py")}
    sources = {"/".join(("edgerun", *path.relative_to(ROOT).parts))
               for folder in LAYERS for path in (ROOT / folder).rglob("*.py")}
    sources |= {f"edgerun/{path.name}" for path in (ROOT / "edgerun").glob("*.py")}
    assert modules == sources  # every module, and nothing else (no tests, no stale build output)


def test_every_package_folder_is_in_the_build_configuration() -> None:
    """A new subpackage folder must be listed in pyproject.toml, or the wheel silently lacks it."""
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {"edgerun"}
    for layer in LAYERS:
        for init in (ROOT / layer).rglob("__init__.py"):
            on_disk.add(".".join(("edgerun", *init.parent.relative_to(ROOT).parts)))
    assert listed == on_disk


def test_version_from_the_installed_metadata(bare) -> None:
    user = _without_extras(bare)
    expected = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert _run([str(user["edgerun"]), "--version"], user["work"], user["env"]).strip() == f"edgerun {expected}"
    code = "import edgerun; print(edgerun.__version__, edgerun.__file__)"
    version, location = _run([str(user["python"]), "-c", code], user["work"], user["env"]).split()
    assert version == expected
    assert "site-packages" in location and not location.startswith(str(ROOT))


def test_the_old_top_level_names_are_gone(bare) -> None:
    user = _without_extras(bare)
    code = ("import importlib.util, sys\n"
            f"sys.exit(sum(importlib.util.find_spec(n) is not None for n in {LAYERS!r}))")
    done = subprocess.run([str(user["python"]), "-c", code], cwd=user["work"], env=user["env"])
    assert done.returncode == 0


def test_without_extras_every_module_imports_or_names_its_extra(bare) -> None:
    """The Python API with no extra: importing any module works, except the ones built on an optional
    package, which raise MissingExtra naming the extra (and nothing imports an optional package)."""
    user = _without_extras(bare)
    code = ("import importlib, json, pkgutil, sys, edgerun\n"
            "from edgerun.runtime.extras import MissingExtra\n"
            "failed = {}\n"
            "for module in pkgutil.walk_packages(edgerun.__path__, 'edgerun.'):\n"
            "    try:\n"
            "        importlib.import_module(module.name)\n"
            "    except MissingExtra as exc:\n"
            "        failed[module.name] = exc.extra\n"
            "optional = ('onnx', 'dp_accounting', 'matplotlib', 'ray', 'PIL', 're2', 'sklearn')\n"
            "print(json.dumps([failed, sorted(m for m in optional if m in sys.modules)]))")
    failed, imported = json.loads(_run([str(user["python"]), "-c", code], user["work"], user["env"]))
    assert failed == {"edgerun.converters.onnx_backend": "onnx"}
    assert imported == []


@pytest.mark.parametrize("case", DEVICE_SIDE)
def test_the_device_side_works_without_extras(bare, case) -> None:
    user = _without_extras(bare)
    args, writes = DEVICE_SIDE[case]
    done = _edgerun(user, *args)
    assert done.returncode == 0, f"edgerun {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    assert writes is None or (user["work"] / writes).is_file()


@pytest.mark.parametrize("case", NEEDS_EXTRA)
def test_without_its_extra_a_command_says_which_to_install_in_one_line(bare, case) -> None:
    """Exit 2 and one line, no traceback, before any work: nothing written."""
    user = _without_extras(bare)
    extra, args, writes = NEEDS_EXTRA[case]
    before = set(user["work"].iterdir())
    done = _edgerun(user, *args)
    assert done.returncode == 2, f"edgerun {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("edgerun: error: ") and line.endswith(f": pip install 'edgerun[{extra}]'")
    assert set(user["work"].iterdir()) == before  # (simulate: stopped before its first round)


def test_serve_without_extras_outside_the_repository(bare, tmp_path) -> None:
    user = _without_extras(bare)
    repo = tmp_path / "models"
    (repo / "mlp" / "1").mkdir(parents=True)
    shutil.copy(user["work"] / "mlp.erm", repo / "mlp" / "1" / "model.erm")
    server = Server(repo, tmp_path / "server.log", command=(str(user["edgerun"]),), cwd=user["work"],
                    env=user["env"]).wait_ready()
    try:
        x = np.random.default_rng(2).standard_normal((2, 64)).astype(np.float32)
        client = th.InferenceServerClient(server.http_url)
        tensor = th.InferInput("x", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        y = client.infer("mlp", [tensor]).as_numpy("y")
        client.close()
        np.testing.assert_allclose(y, ort_run(make_mlp(), {"x": x})["y"], rtol=1e-5, atol=1e-6)
    finally:
        assert server.stop() == 0


# ---------------------------------------------------------------- with `pip install 'edgerun[all]'`


def test_the_all_extra_is_declared() -> None:
    """Without it pip only warns, installs nothing more, and the tests below fail on missing packages."""
    assert "all" in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]


@pytest.mark.parametrize("case", NEEDS_EXTRA)
def test_with_all_extras_the_same_commands_work(user, case) -> None:
    _, args, writes = NEEDS_EXTRA[case]
    done = _edgerun(user, *args)
    assert done.returncode == 0, f"edgerun {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    assert (user["work"] / writes).is_file()


def test_convert_and_run_outside_the_repository(user) -> None:
    work = user["work"]
    model = make_mlp()
    onnx.save(model, work / "anchor.onnx")
    x = np.random.default_rng(1).standard_normal((4, 64)).astype(np.float32)
    np.save(work / "anchor.npy", x)
    _run([str(user["edgerun"]), "convert", "anchor.onnx", "-o", "anchor.erm"], work, user["env"])
    _run([str(user["edgerun"]), "run", "anchor.erm", "--input", "x=anchor.npy", "-o", "anchor.npz"], work,
         user["env"])
    with np.load(work / "anchor.npz") as out:
        np.testing.assert_allclose(out["y"], ort_run(model, {"x": x})["y"], rtol=1e-5, atol=1e-6)


def test_the_readme_tour_runs_end_to_end_in_the_fresh_venv_with_all_extras(user, tmp_path) -> None:
    """The tour of README.md, command by command, with the wheel's `edgerun` (and tritonclient,
    which its query block uses: the user installs it, no extra does)."""
    from tests.test_readme import check_tour, run_tour

    _run([str(user["python"]), "-m", "pip", "install", "-q", "--disable-pip-version-check", "tritonclient[http]"],
         cwd=user["work"], env=user["env"])
    folder = tmp_path / "tour"
    folder.mkdir()
    check_tour(run_tour(str(user["python"]), folder), folder)

"""The wheel as a user gets it: built from this checkout, installed with its dependencies into a
fresh venv outside the repository, and used from another directory — `edgerun --version`,
convert + run a model, `edgerun serve` queried by tritonclient. Its top-level names are exactly
`edgerun` and its dist-info: nothing generic (`runtime`, `serving`, ...) lands in site-packages.
"""

from __future__ import annotations

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
def user(tmp_path_factory, wheel) -> dict:
    """A fresh venv holding the wheel and its dependencies (the `onnx` extra for convert), and a
    working directory outside the repository; the environment names neither the repository nor
    the test venv."""
    home = tmp_path_factory.mktemp("user")
    env_dir = home / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PATH"] = f"{env_dir / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    _run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", f"{wheel}[onnx]"],
         cwd=home, env=env)
    work = home / "work"
    work.mkdir()
    return {"python": python, "edgerun": env_dir / "bin" / "edgerun", "env": env, "work": work}


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


def test_version_from_the_installed_metadata(user) -> None:
    expected = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert _run([str(user["edgerun"]), "--version"], user["work"], user["env"]).strip() == f"edgerun {expected}"
    code = "import edgerun; print(edgerun.__version__, edgerun.__file__)"
    version, location = _run([str(user["python"]), "-c", code], user["work"], user["env"]).split()
    assert version == expected
    assert "site-packages" in location and not location.startswith(str(ROOT))


def test_the_old_top_level_names_are_gone(user) -> None:
    code = ("import importlib.util, sys\n"
            f"sys.exit(sum(importlib.util.find_spec(n) is not None for n in {LAYERS!r}))")
    done = subprocess.run([str(user["python"]), "-c", code], cwd=user["work"], env=user["env"])
    assert done.returncode == 0


def test_convert_and_run_outside_the_repository(user) -> None:
    work = user["work"]
    model = make_mlp()
    onnx.save(model, work / "mlp.onnx")
    x = np.random.default_rng(1).standard_normal((4, 64)).astype(np.float32)
    np.save(work / "x.npy", x)
    _run([str(user["edgerun"]), "convert", "mlp.onnx", "-o", "mlp.erm"], work, user["env"])
    _run([str(user["edgerun"]), "run", "mlp.erm", "--input", "x=x.npy", "-o", "out.npz"], work, user["env"])
    with np.load(work / "out.npz") as out:
        np.testing.assert_allclose(out["y"], ort_run(model, {"x": x})["y"], rtol=1e-5, atol=1e-6)


def test_serve_outside_the_repository(user, tmp_path) -> None:
    work = user["work"]
    repo = tmp_path / "models"
    (repo / "mlp" / "1").mkdir(parents=True)
    onnx.save(make_mlp(), work / "serve.onnx")
    _run([str(user["edgerun"]), "convert", "serve.onnx", "-o", str(repo / "mlp" / "1" / "model.erm")],
         work, user["env"])
    server = Server(repo, tmp_path / "server.log", command=(str(user["edgerun"]),), cwd=work,
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

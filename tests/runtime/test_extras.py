"""Optional packages: `require` imports one or raises MissingExtra, one line naming the extra; the
extras the code names are the ones pyproject.toml declares, and `all` is their union."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

import pytest

from edgerun.cli import main
from edgerun.runtime.errors import EdgerunError
from edgerun.runtime.extras import MissingExtra, require
from tests.onnx_models import make_mlp

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("edgerun", "runtime", "converters", "devices", "serving", "federated")
NOT_USER_FACING = {"all", "test", "bench", "dev", "tflite-fixtures"}  # for working on edgerun
NOT_IN_ALL = {"cuda"}  # needs an NVIDIA GPU: `all` must install on any machine
EXTRAS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]


def test_require_returns_the_module():
    import json

    assert require("json", "plot", "anything") is json


def test_a_missing_package_is_one_line_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` fails as if not installed
    with pytest.raises(MissingExtra) as missing:
        require("matplotlib", "plot", "--plot")
    assert str(missing.value) == "--plot needs matplotlib: pip install 'edgerun[plot]'"
    assert missing.value.extra == "plot"
    assert isinstance(missing.value, ImportError) and isinstance(missing.value, EdgerunError)


def test_an_installed_package_missing_its_own_dependency_says_so(tmp_path, monkeypatch):
    (tmp_path / "half_installed").mkdir()
    (tmp_path / "half_installed" / "__init__.py").write_text("import no_such_dependency_of_it\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(MissingExtra, match=r"^the demo needs half-installed \(it is installed but cannot import "
                                           r"no_such_dependency_of_it\): pip install 'edgerun\[demo\]'$"):
        require("half_installed", "demo", "the demo", "half-installed")


def test_the_command_line_prints_the_line_and_exits_2(tmp_path, monkeypatch, capsys):
    import onnx

    onnx.save(make_mlp(), tmp_path / "mlp.onnx")
    monkeypatch.setitem(sys.modules, "onnx", None)
    assert main(["convert", str(tmp_path / "mlp.onnx"), "-o", str(tmp_path / "mlp.erm")]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == ["edgerun: error: converting an ONNX model needs onnx: pip install 'edgerun[onnx]'"]
    assert not (tmp_path / "mlp.erm").exists()


def _named_extras() -> dict[str, str]:
    """extra -> a file that names it: in an extras.require(module, "extra", ...) call or a literal
    "edgerun[extra]" hint (the kernels' own `require(kernel, value, ...)` has no string there)."""
    named = {}
    for folder in SOURCES:
        for path in (ROOT / folder).rglob("*.py"):
            text = path.read_text()
            for extra in re.findall(r"edgerun\[([a-z0-9-]+)\]", text):
                named[extra] = str(path.relative_to(ROOT))
            for node in ast.walk(ast.parse(text)):
                if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "require":
                    extra = [*node.args[1:2], *(k.value for k in node.keywords if k.arg == "extra")]
                    if extra and isinstance(extra[0], ast.Constant) and isinstance(extra[0].value, str):
                        named[extra[0].value] = str(path.relative_to(ROOT))
    return named


def test_every_extra_the_code_names_is_declared():
    named = _named_extras()
    assert {"onnx", "privacy", "plot", "simulation"} <= set(named)  # the scan finds them
    assert {extra: where for extra, where in named.items() if extra not in EXTRAS} == {}


def test_all_is_the_union_of_the_user_facing_extras():
    user_facing = set(EXTRAS) - NOT_USER_FACING
    assert {"onnx", "tflite", "privacy", "plot", "simulation", "cuda"} <= user_facing
    in_all = user_facing - NOT_IN_ALL
    assert set(EXTRAS.get("all", [])) == {req for extra in in_all for req in EXTRAS[extra]}

"""Dependencies point down (docs DESIGN.md): `runtime` imports nothing above it, not even
inside a function, nor onnx or grpc; `devices` knows nothing of serving or federated.
Checked on the source with `ast`, so an import hidden in a function body counts."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ABOVE_RUNTIME = ("edgerun.devices", "edgerun.converters", "edgerun.serving", "edgerun.federated", "onnx", "grpc")
ABOVE_DEVICES = ("edgerun.serving", "edgerun.federated")


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, module) for every import in the file, wherever it is, plus the string
    arguments of importlib.import_module(...) and __import__(...) calls."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the file's package, as edgerun.<folder>...
                package = ["edgerun", *path.relative_to(ROOT).parent.parts]
                base = ".".join(package[: len(package) - node.level + 1])
                found.append((node.lineno, f"{base}.{node.module}" if node.module else base))
            else:
                found.append((node.lineno, node.module or ""))
        elif isinstance(node, ast.Call) and _is_dynamic_import(node.func) and node.args:
            if isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                found.append((node.lineno, node.args[0].value))
    return found


def _is_dynamic_import(func: ast.expr) -> bool:
    return (isinstance(func, ast.Name) and func.id in ("__import__", "import_module")) or (
        isinstance(func, ast.Attribute) and func.attr == "import_module")


def violations(folder: str, forbidden: tuple[str, ...]) -> list[str]:
    bad = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        for line, module in imported_modules(path):
            if any(module == f or module.startswith(f + ".") for f in forbidden):
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    return bad


def test_the_checker_sees_imports_inside_functions_and_dynamic_ones(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text("import os\ndef f():\n    from edgerun.devices import x\n"
                      "    import importlib\n    importlib.import_module('onnx.helper')\n")
    assert [m for _, m in imported_modules(source)] == ["os", "edgerun.devices", "importlib", "onnx.helper"]


def test_runtime_imports_nothing_above_it() -> None:
    assert violations("runtime", ABOVE_RUNTIME) == []


def test_devices_knows_nothing_of_serving_or_federated() -> None:
    assert violations("devices", ABOVE_DEVICES) == []


@pytest.mark.parametrize("module", ["edgerun.runtime", "edgerun.runtime.interpreter"])
def test_importing_the_runtime_registers_the_devices_backends(module: str) -> None:
    """A user who imports only the runtime still gets the numba backend and the profiles:
    the root package imports edgerun.devices, which registers them."""
    code = (f"import {module}\n"
            "from edgerun.runtime.backends import backend_names\n"
            "from edgerun.runtime.profiles import profile_names\n"
            "print(backend_names(), profile_names())")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env=os.environ.copy(), check=True)
    assert done.stdout.split("\n")[0] == "['numba', 'cpu', 'cuda'] ['host', 'phone', 'rpi-zero2', 'rpi4']"

"""Optional packages: imported where a feature uses them, and named by their extra when missing.

`pip install edgerun` is the device side (runtime, federated client, serving); the extras of
pyproject.toml add the rest (`onnx`, `tflite`, `privacy`, `plot`, `simulation`, `image`,
`strings`, or `all`). A feature asks for its package when it runs:

    onnx = require("onnx", extra="onnx", feature="converting an ONNX model")

and without it gets MissingExtra, one line that names the extra:
"converting an ONNX model needs onnx: pip install 'edgerun[onnx]'". The `edgerun` command
prints that line and exits 2.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from edgerun.runtime.errors import EdgerunError


class MissingExtra(EdgerunError, ImportError):
    """A feature needs an optional package that is not installed. Also an ImportError, so code
    that already falls back on ImportError keeps working. `extra` is the extra to install."""

    def __init__(self, feature: str, package: str, extra: str, reason: str = "") -> None:
        self.feature, self.package, self.extra = feature, package, extra
        detail = f" ({reason})" if reason else ""
        super().__init__(f"{feature} needs {package}{detail}: pip install 'edgerun[{extra}]'")


def require(module: str, extra: str, feature: str, package: str | None = None,
            error: type[MissingExtra] = MissingExtra) -> ModuleType:
    """`module` imported; `error` (MissingExtra or a subclass) naming `extra` when it cannot be.
    `package` is the name shown to the user (default: the top-level module's name). When the
    package is installed but something it imports is missing, the line says what."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.partition(".")[0]
        missing = exc.name or ""
        reason = "" if missing.partition(".")[0] == top else f"it is installed but cannot import {missing or exc}"
        raise error(feature, package or top, extra, reason) from None

"""edgerun: an edge ML runtime — .erm models, a memory-planned interpreter, ONNX import,
KServe v2 serving and federated learning.

The first things a user needs are here; everything else lives in the subpackages
(`edgerun.runtime`, `edgerun.converters`, `edgerun.devices`, `edgerun.serving`,
`edgerun.federated`).

    from edgerun import Interpreter, from_onnx, save_model
    save_model(from_onnx("mlp.onnx"), "mlp.erm")
    y = Interpreter("mlp.erm").run({"x": x})["y"]
    y = Interpreter("model.tflite").run({"input": image})["output"]   # TFLite, converted on load
"""

from __future__ import annotations

import os
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("edgerun")
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"

# The backends (numba, ...) and device profiles register themselves into the runtime's
# registries on import; every `edgerun.*` import runs this module first.
import edgerun.devices  # noqa: E402, F401
from edgerun.converters.onnx_import import from_onnx  # noqa: E402  (imports onnx only when called)
from edgerun.runtime.errors import (  # noqa: E402
    ConversionError,
    EdgerunError,
    InputError,
    ModelError,
    UnsupportedOpError,
)
from edgerun.runtime.graph import Graph  # noqa: E402
from edgerun.runtime.interpreter import Interpreter  # noqa: E402
from edgerun.runtime.loader import load_model, register_model_format  # noqa: E402
from edgerun.runtime.writer import save_model  # noqa: E402


def from_tflite(model: str | os.PathLike[str] | bytes, optimize: bool = True) -> Graph:
    """Convert a .tflite model (path or bytes) to a Graph: edgerun.converters.tflite.from_tflite
    (imported on first use, so `import edgerun` stays quick)."""
    from edgerun.converters.tflite import from_tflite as convert

    return convert(model, optimize=optimize)


# Interpreter("model.tflite") and load_model read .tflite files through the importer.
register_model_format(b"TFL3", "TFLite", from_tflite)

__all__ = [
    "ConversionError", "EdgerunError", "InputError", "Interpreter", "ModelError",
    "UnsupportedOpError", "__version__", "from_onnx", "from_tflite", "load_model", "save_model",
]

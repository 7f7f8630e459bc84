"""edgerun as an `onnx.backend` backend: prepare = convert + serialize + load + Interpreter.

    from edgerun.converters.onnx_backend import EdgerunBackend
    rep = EdgerunBackend.prepare(model)          # onnx.ModelProto
    outputs = rep.run([x])                       # positional, in graph-input order

This is what the ONNX project's own conformance suite drives (see
`tests/converters/conformance/`): every model goes through the same path a
user's does, the `.erm` bytes included, so the suite tests the format too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from edgerun.converters.onnx_import import from_onnx
from edgerun.runtime.errors import InputError
from edgerun.runtime.extras import require
from edgerun.runtime.interpreter import DEFAULT_SIGNATURE, Interpreter
from edgerun.runtime.writer import serialize

_base = require("onnx.backend.base", "onnx", "the ONNX backend", "onnx")  # MissingExtra on import without onnx
Backend, BackendRep = _base.Backend, _base.BackendRep


class EdgerunRep(BackendRep):
    """A prepared model: runs positional inputs in the ONNX graph-input order."""

    def __init__(self, interpreter: Interpreter) -> None:
        self.interpreter = interpreter
        info = interpreter.signatures[DEFAULT_SIGNATURE]
        self.input_names = list(info.inputs)
        self.output_names = list(info.outputs)

    def run(self, inputs: Any, **kwargs: Any) -> tuple[np.ndarray, ...]:
        """Outputs in graph-output order. `inputs` is a sequence (graph-input order),
        a dict by name, or one array. InputError for more inputs than the graph has."""
        if isinstance(inputs, dict):
            feeds = dict(inputs)
        else:
            if isinstance(inputs, np.ndarray):
                inputs = [inputs]
            if len(inputs) > len(self.input_names):
                raise InputError(f"got {len(inputs)} inputs, the model has {len(self.input_names)}")
            feeds = dict(zip(self.input_names, inputs, strict=False))
        results = self.interpreter.run(feeds)
        return tuple(results[name] for name in self.output_names)


class EdgerunBackend(Backend):
    """The `onnx.backend.base.Backend` interface over edgerun's CPU interpreter."""

    @classmethod
    def prepare(cls, model: Any, device: str = "CPU", **kwargs: Any) -> EdgerunRep:
        """Convert `model`, round-trip it through the .erm format and build an Interpreter.

        kwargs: `backend` ("cpu" reference kernels by default, or "auto").
        Raises ConversionError / UnsupportedOpError / ModelError like `from_onnx`
        and `Interpreter` do."""
        graph = from_onnx(model)
        return EdgerunRep(Interpreter(serialize(graph), device=kwargs.get("backend", "cpu")))

    @classmethod
    def run_model(cls, model: Any, inputs: Sequence[Any], device: str = "CPU", **kwargs: Any) -> tuple:
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def supports_device(cls, device: str) -> bool:
        return device.upper() == "CPU"


prepare = EdgerunBackend.prepare
run_model = EdgerunBackend.run_model
supports_device = EdgerunBackend.supports_device

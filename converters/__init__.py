"""Converters into edgerun's IR: ONNX import (more formats and graph passes to come).

Importing this package does not import onnx; `from_onnx` does, when called.
"""

from converters.onnx_import import from_onnx

__all__ = ["from_onnx"]

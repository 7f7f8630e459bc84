"""Converters into edgerun's IR: ONNX import and the graph optimizer (more formats to come).

Importing this package does not import onnx; `from_onnx` does, when called.
"""

from edgerun.converters.onnx_import import from_onnx
from edgerun.converters.optimize import OptimizeReport, optimize

__all__ = ["OptimizeReport", "from_onnx", "optimize"]

"""edgerun runtime: the .erm format, IR, verified loader, interpreter and kernels.

    from runtime import Interpreter, load_model, save_model
"""

from runtime.errors import ConversionError, EdgerunError, InputError, ModelError, UnsupportedOpError
from runtime.graph import Graph, GraphBuilder, Node, Signature, Value
from runtime.interpreter import Interpreter, SignatureInfo, TensorInfo
from runtime.loader import load_model
from runtime.writer import save_model, serialize

__all__ = [
    "ConversionError", "EdgerunError", "Graph", "GraphBuilder", "InputError", "Interpreter",
    "ModelError", "Node", "Signature", "SignatureInfo", "TensorInfo", "UnsupportedOpError",
    "Value", "load_model", "save_model", "serialize",
]

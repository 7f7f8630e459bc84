"""edgerun runtime: the .erm format, IR, verified loader, interpreter and kernels.

    from edgerun.runtime import Interpreter, load_model, save_model
"""

from edgerun.runtime.errors import ConversionError, EdgerunError, InputError, ModelError, UnsupportedOpError
from edgerun.runtime.graph import Graph, GraphBuilder, Node, Signature, Value
from edgerun.runtime.interpreter import Interpreter, SignatureInfo, TensorInfo
from edgerun.runtime.loader import load_model
from edgerun.runtime.profiles import DeviceProfile, get_profile
from edgerun.runtime.writer import save_model, serialize

__all__ = [
    "ConversionError", "DeviceProfile", "EdgerunError", "Graph", "GraphBuilder", "InputError", "Interpreter",
    "ModelError", "Node", "Signature", "SignatureInfo", "TensorInfo", "UnsupportedOpError",
    "Value", "get_profile", "load_model", "save_model", "serialize",
]

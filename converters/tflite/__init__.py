"""TFLite import: run the .tflite models phones and Raspberry Pis already carry.

    from edgerun.converters.tflite import from_tflite, register_custom_op
    graph = from_tflite("model.tflite")

Modules: layout (the schema, from schema/tflite.fbs), reader (verified decoding and the
semantic check), registry (which converter handles which operator), context (what a
converter sees), convert (the model walk), ops/ (the converters, by family).
"""

from edgerun.converters.tflite import ops  # noqa: F401  (registers the operator converters)
from edgerun.converters.tflite.context import OpContext
from edgerun.converters.tflite.convert import from_tflite
from edgerun.converters.tflite.reader import read_tflite
from edgerun.converters.tflite.registry import register_custom_op

__all__ = ["OpContext", "from_tflite", "read_tflite", "register_custom_op"]

"""The TFLite operator converters, one module per family; importing this package registers them."""

from edgerun.converters.tflite.ops import elementwise, nn, shape  # noqa: F401

"""The TFLite operator converters, one module per family; importing this package registers them.

    nn           convolutions, pools, fully connected, resize, space/depth moves, LSTM
    elementwise  arithmetic, activations, comparisons, logic, reductions
    shape        reshapes, slicing, gathers, concatenation, padding, ...
    quantized    the integer forms (TFLite's fixed-point arithmetic), QUANTIZE, DEQUANTIZE
    control      WHILE, IF, CALL_ONCE over subgraphs
    custom       the custom operators edgerun knows (detection post-processing, mediapipe's)
DENSIFY (sparse weights) lives with the sparse format, in converters/tflite/sparsity.py.
"""

from edgerun.converters.tflite import sparsity  # noqa: F401
from edgerun.converters.tflite.ops import control, custom, elementwise, nn, quantized, shape  # noqa: F401

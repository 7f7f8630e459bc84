"""TFLite's quantized integer kernels (domain ai.edgerun.tflite), NHWC like TFLite. Importing
this package registers them.

What the TFLite importer emits for full-integer models (converters/tflite/ops/quantized/):
each kernel reproduces the arithmetic of TFLite's reference kernels (BUILTIN_REF) bit for
bit, with the fixed-point helpers of runtime.kernels.fixed_point. The converter works out
TFLite's multipliers from the tensors' scales (the policy: which scales, multiplied in float
or double); the kernels take integers, except where TFLite itself rescales in floating point
(FullyConnected's `scale`, RescaleFloat, Quantize, uint8 ResizeBilinear).

    common       dtypes, attribute readers, window geometry, the output stage (shared)
    quantize     Quantize (float32 -> int), Requantize (int -> int), RescaleFloat
    conv         Conv2D, DepthwiseConv2D, FullyConnected, TransposeConv2D
    pool         AveragePool2D, MaxPool2D
    reduce       Mean
    elementwise  Add, Sub, Mul, TableLookup (any elementwise function of an 8-bit value,
                 tabulated by the converter: RELU*, LOGISTIC, TANH, HARD_SWISH, LEAKY_RELU)
    softmax      Softmax
    resize       ResizeBilinear

The output stage most kernels share (`common.OutputStage`): y = clamp(
MultiplyByQuantizedMultiplier(acc, multiplier[c], shift[c]) + output_zero_point,
activation_min, activation_max), with one (multiplier, shift) pair or one per output channel
(the last axis). Activations are int8 or uint8 (Quantize / Requantize also int16);
accumulators are int32 and wrap as TFLite's do (products run through BLAS in float32 or
float64, whichever holds every partial sum exactly). Spatial kernels take NHWC inputs, OHWI
filters (depthwise: 1HW(C*M)), `padding` SAME (TFLite's: the smaller half before) or VALID,
`strides` and `dilations` as [h, w]. Every kernel fails with a ModelError naming the node for
a wrong dtype, rank or attribute.
"""

from edgerun.runtime.kernels.tflite_int import (  # noqa: F401  (registration side effects)
    conv,
    elementwise,
    pool,
    quantize,
    reduce,
    resize,
    softmax,
)

"""Full-integer TFLite operators -> edgerun's TFLite integer kernels (runtime/kernels/tflite_int/).
Importing this package registers them.

A quantized operator (int8/uint8 activations, int8 per-tensor or per-channel / uint8
per-tensor weights, int32 bias) becomes one node of domain ai.edgerun.tflite that computes
exactly what TFLite's reference kernels (BUILTIN_REF) compute. This package holds TFLite's
policy, worked out once at conversion: the effective multipliers (which scales, multiplied
in float32 or double, as each TFLite kernel's Prepare does), their Q31 fixed-point form
(QuantizeMultiplier), the clamp range of a fused activation (CalculateActivationRangeQuantized)
and the checks TFLite makes; the kernels only do integer arithmetic. Elementwise functions of
one 8-bit input (RELU, RELU6, RELU_N1_TO_1, RELU_0_TO_1, LOGISTIC, TANH, HARD_SWISH,
LEAKY_RELU) become a 256-entry table computed here with TFLite's exact formulas.

    common         quantization parameters, multipliers, activation ranges (shared)
    quantize       QUANTIZE, DEQUANTIZE
    conv           CONV_2D, DEPTHWISE_CONV_2D, TRANSPOSE_CONV, FULLY_CONNECTED
    arithmetic     ADD, SUB, MUL
    pool           AVERAGE_POOL_2D, MAX_POOL_2D
    combine        CONCATENATION, PAD, PADV2
    reduce         MEAN
    tables         RELU, RELU6, RELU_N1_TO_1, RELU_0_TO_1, LOGISTIC, TANH, LEAKY_RELU, HARD_SWISH
    normalization  SOFTMAX
    image          RESIZE_BILINEAR

Operators that only move values (RESHAPE, RESIZE_NEAREST_NEIGHBOR, ...) are the float
converters registered any_dtype. int16 activations (16x8 models) are refused.

QUANTIZE and DEQUANTIZE change domains and are always converted here: DEQUANTIZE of a
float16 constant is a Cast (the optimizer folds it), of int8/uint8/int16 a DequantizeLinear
(exactly TFLite's float32(scale * (q - zero_point)): the product of a float32 scale and a
small integer rounds once either way); QUANTIZE from float32 follows TFLite's rounding (half
away from zero, where ONNX's QuantizeLinear rounds half to even), between integer types it
requantizes in fixed point.

What TFLite's kernels leave undefined or refuse is a ConversionError here: a missing or
zero scale, per-channel scales on the wrong axis or of the wrong count, a non-int32 bias, a
fused TANH/SIGN_BIT (TFLite's integer kernels ignore it), ADD/SUB output scales that need a
multiplier >= 1, pools whose input and output quantization differ.
"""

from edgerun.converters.tflite.ops.quantized import (  # noqa: F401  (registration side effects)
    arithmetic,
    combine,
    conv,
    image,
    normalization,
    pool,
    quantize,
    reduce,
    tables,
)

"""The TFLite operator converters, one module per family; importing this package registers them.

    conv           CONV_2D, DEPTHWISE_CONV_2D, CONV_3D, TRANSPOSE_CONV, FULLY_CONNECTED, BATCH_MATMUL
    pool           AVERAGE_POOL_2D, MAX_POOL_2D, L2_POOL_2D
    image          resizes, depth/space moves, SPACE_TO_BATCH_ND / BATCH_TO_SPACE_ND
    normalization  SOFTMAX, LOG_SOFTMAX, L2_NORMALIZATION, LOCAL_RESPONSE_NORMALIZATION
    recurrent      UNIDIRECTIONAL_SEQUENCE_LSTM
    elementwise    arithmetic, activations, comparisons, logic, reductions
    reshape        RESHAPE, SQUEEZE, EXPAND_DIMS, SHAPE, RANK, TRANSPOSE
    combine        CONCATENATION, PACK, UNPACK, SPLIT, SPLIT_V, PAD, PADV2, MIRROR_PAD
    broadcast      TILE, BROADCAST_TO, BROADCAST_ARGS
    slicing        SLICE, STRIDED_SLICE, REVERSE_V2, REVERSE_SEQUENCE
    gather         GATHER, GATHER_ND, SCATTER_ND, ONE_HOT
    search         TOPK_V2, WHERE, UNIQUE
    quantized      the integer forms (TFLite's fixed-point arithmetic), QUANTIZE, DEQUANTIZE (a package)
    control        WHILE, IF, CALL_ONCE over subgraphs
    custom         the custom operators edgerun knows (detection post-processing, mediapipe's)
Shared helpers: nhwc (padding, strides, dilations, NHWC input and filter checks of the
network layers), indices (index arithmetic of the shape and data-movement converters).
DENSIFY (sparse weights) lives with the sparse format, in converters/tflite/sparsity.py.
"""

from edgerun.converters.tflite import sparsity  # noqa: F401
from edgerun.converters.tflite.ops import (  # noqa: F401  (registration side effects)
    broadcast,
    combine,
    control,
    conv,
    custom,
    elementwise,
    gather,
    image,
    normalization,
    pool,
    quantized,
    recurrent,
    reshape,
    search,
    slicing,
)

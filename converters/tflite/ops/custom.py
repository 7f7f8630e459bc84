"""Custom operators that real .tflite files carry: TFLite's SSD post-processing and
mediapipe's Convolution2DTransposeBias, MaxPoolingWithArgmax2D and MaxUnpooling2D.

TFLite_Detection_PostProcess keeps its attributes in a FlexBuffer map (converters.tflite.
flex); it becomes one node of edgerun's own kernel (domain ai.edgerun.tflite,
runtime/kernels/detection_postprocess.py), as no combination of ONNX ops reproduces it.

mediapipe's ops keep a raw C struct as custom options (little-endian int32 fields; checked
against mediapipe/util/tflite/operations/*.cc): TfLiteTransposeConvParams {padding,
stride_width, stride_height, ...} and TfLitePoolParams {padding, stride_width,
stride_height, filter_width, filter_height, activation, ...}. Padding codes are TfLitePadding
(1 SAME, 2 VALID); options shorter than the fields read are a ConversionError. These ops are
float32 only (as in mediapipe) and need static spatial sizes, since their padding and
index arithmetic depend on them. Their index arrays, as long as the input's declared sizes,
are Range nodes rather than constants: the optimizer folds the small ones, and a file that
declares a huge input meets the memory budget at run time instead of allocating at
conversion.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

from edgerun.converters.tflite.context import OpContext
from edgerun.converters.tflite.registry import register_custom_op
from edgerun.runtime.graph import Value

DOMAIN = "ai.edgerun.tflite"
SAME, VALID = 1, 2
# TfLiteFusedActivation codes whose float range clamps (CalculateActivationRange); the
# others (none, tanh, sign bit, sigmoid) leave a pooling result as it is.
_CLAMPS = {1: (0.0, None), 2: (-1.0, 1.0), 3: (0.0, 6.0)}
_POSTPROCESS_INTS = ("max_detections", "max_classes_per_detection", "num_classes")
_POSTPROCESS_FLOATS = ("nms_score_threshold", "nms_iou_threshold", "y_scale", "x_scale", "h_scale", "w_scale")


def _struct(ctx: OpContext, fields: tuple[str, ...], what: str) -> dict[str, int]:
    """The leading int32 `fields` of a C struct held in the custom options."""
    data = ctx.custom_options
    need = 4 * len(fields)
    if len(data) < need:
        raise ctx.fail(f"custom options hold {len(data)} bytes; {what} needs {need} ({', '.join(fields)})")
    return dict(zip(fields, struct.unpack_from(f"<{len(fields)}i", data), strict=True))


def _float32(ctx: OpContext, *positions: int) -> None:
    for i in positions:
        tensor = ctx.tensor(i)
        if tensor.type != "FLOAT32":
            raise ctx.fail(f"input {i} ({tensor.name!r}) must be FLOAT32, got {tensor.type}")


def _static(ctx: OpContext, i: int, what: str, dims: tuple[int, ...] = (1, 2)) -> tuple[int, ...]:
    """Input `i`'s shape, which must be 4-D with the `dims` known."""
    tensor = ctx.tensor(i)
    if len(tensor.shape) != 4:
        raise ctx.fail(f"{what} must be 4-D NHWC, got shape {list(tensor.shape)}")
    if any(tensor.signature[d] < 0 for d in dims):
        raise ctx.fail(f"{what} needs static sizes in dimensions {list(dims)}, got {list(tensor.signature)}")
    return tuple(tensor.shape)


def _positive(ctx: OpContext, options: dict[str, int], *names: str) -> None:
    bad = {n: options[n] for n in names if options[n] < 1}
    if bad:
        raise ctx.fail(f"{', '.join(f'{k}={v}' for k, v in bad.items())} must be >= 1")


# --- TFLite_Detection_PostProcess ------------------------------------------------------


@register_custom_op("TFLite_Detection_PostProcess")
def detection_postprocess(ctx: OpContext) -> None:
    """(box encodings, class predictions, anchors) -> (boxes, classes, scores, num_detections),
    LiteRT's SSD post-processing. The options map must hold max_detections,
    max_classes_per_detection, num_classes, nms_score_threshold, nms_iou_threshold and the
    four scales; detections_per_class (default 100) and use_regular_nms (default false) may be
    absent. UINT8 quantized inputs are dequantized first, as LiteRT does."""
    ctx.need_inputs(3)
    if ctx.num_outputs != 4:
        raise ctx.fail(f"expects 4 outputs, has {ctx.num_outputs}")
    options = ctx.flex_options()
    attrs: dict[str, Any] = {}
    for name in (*_POSTPROCESS_INTS, *_POSTPROCESS_FLOATS, "detections_per_class", "use_regular_nms"):
        value = options.get(name)
        if value is None:
            if name in ("detections_per_class", "use_regular_nms"):
                continue
            raise ctx.fail(f"the custom options lack {name!r}")
        if not isinstance(value, int | float):  # (bools are ints)
            raise ctx.fail(f"option {name!r} must be a number, got {value!r}")
        attrs[name] = float(value) if name in _POSTPROCESS_FLOATS else int(value)
        if name not in _POSTPROCESS_FLOATS and not -(1 << 31) <= attrs[name] < 1 << 31:
            raise ctx.fail(f"option {name!r} = {value} does not fit an int32")
    if not 0 < attrs["nms_iou_threshold"] <= 1:
        raise ctx.fail(f"nms_iou_threshold {attrs['nms_iou_threshold']} must be in (0, 1]")
    if attrs["max_detections"] < 0 or attrs["max_classes_per_detection"] < 1 or attrs["num_classes"] < 1:
        raise ctx.fail("max_detections must be >= 0, max_classes_per_detection and num_classes >= 1")
    if attrs["max_detections"] * attrs["max_classes_per_detection"] >= 1 << 31:
        raise ctx.fail("max_detections * max_classes_per_detection rows do not fit an int32")
    if attrs.get("use_regular_nms") and attrs.get("detections_per_class", 100) < 1:
        raise ctx.fail("detections_per_class must be >= 1")
    inputs = [_dequantized(ctx, i) for i in range(3)]
    outputs = ctx.emit("TFLiteDetectionPostProcess", inputs, num_outputs=4, domain=DOMAIN, version=1, **attrs)
    for i, value in enumerate(outputs):
        ctx.bind(i, value)


def _dequantized(ctx: OpContext, i: int) -> Value:
    """Input `i` as float32: FLOAT32 as it is, UINT8 through its per-tensor quantization."""
    tensor = ctx.tensor(i)
    if tensor.type == "FLOAT32":
        return ctx.input(i)
    q = tensor.quantization
    if tensor.type != "UINT8" or q is None or q.per_axis or not 0 <= q.zero_point[0] <= 255:
        raise ctx.fail(f"input {i} ({tensor.name!r}) must be FLOAT32 or per-tensor quantized UINT8 (zero point "
                       f"in 0..255), got {tensor.type}")
    scale = ctx.const("scale", np.float32(q.scale[0]))
    zero_point = ctx.const("zero_point", np.uint8(q.zero_point[0]))
    return ctx.emit("DequantizeLinear", [ctx.input(i), scale, zero_point])


# --- mediapipe ---------------------------------------------------------------------------


@register_custom_op("Convolution2DTransposeBias")
def convolution_2d_transpose_bias(ctx: OpContext) -> None:
    """(input NHWC, weights OHWI, bias (O,)) -> transposed convolution plus bias. The
    output is stride * (in - 1) + kernel - padding, with SAME padding max(0, kernel -
    (in - 1) % stride - 1) in total, the smaller half first (mediapipe's formula, which is
    not TensorFlow's in * stride). A padding code other than SAME (VALID, and 0 for unknown,
    which mediapipe also treats so) pads nothing."""
    ctx.need_inputs(3)
    options = _struct(ctx, ("padding", "stride_width", "stride_height"), "TfLiteTransposeConvParams")
    _positive(ctx, options, "stride_width", "stride_height")
    if options["padding"] not in (0, SAME, VALID):
        raise ctx.fail(f"unknown padding code {options['padding']}")
    _float32(ctx, 0, 1, 2)
    n, h, w, c = _static(ctx, 0, "the input")
    weights, bias = ctx.tensor(1), ctx.tensor(2)
    if len(weights.shape) != 4 or weights.shape[3] != c or tuple(bias.shape) != (weights.shape[0],):
        raise ctx.fail(f"weights {list(weights.shape)} must be OHWI with I = {c} and bias {list(bias.shape)} "
                       "must be (O,)")
    strides = (options["stride_height"], options["stride_width"])
    pads = []
    for size, kernel, stride in zip((h, w), weights.shape[1:3], strides, strict=True):
        total = max(0, kernel - (size - 1) % stride - 1) if options["padding"] == SAME else 0
        pads.append((total // 2, total - total // 2))
    filters = ctx.emit("Transpose", [ctx.input(1)], perm=[3, 0, 1, 2])  # OHWI -> IOHW (folded)
    y = ctx.emit("ConvTranspose", [ctx.nchw(ctx.input(0)), filters, ctx.input(2)], strides=list(strides),
                 pads=[pads[0][0], pads[1][0], pads[0][1], pads[1][1]])
    ctx.bind(0, ctx.nhwc(y))


_POOL_FIELDS = ("padding", "stride_width", "stride_height", "filter_width", "filter_height", "activation")


def _pool_options(ctx: OpContext) -> dict[str, int]:
    options = _struct(ctx, _POOL_FIELDS, "TfLitePoolParams")
    _positive(ctx, options, "stride_width", "stride_height", "filter_width", "filter_height")
    if options["activation"] not in (0, 1, 2, 3, 4, 5, 6):
        raise ctx.fail(f"unknown activation code {options['activation']}")
    return options


@register_custom_op("MaxPoolingWithArgmax2D")
def max_pooling_with_argmax_2d(ctx: OpContext) -> None:
    """input NHWC -> (max pool, argmax), both float32. The argmax is the winner's position
    in its window, filter_y * filter_width + filter_x (counted from the window's corner,
    padding included), plus 0.1 so that a float-to-int cast reads it back; the first
    maximum in row-major window order wins. The activation clamps the pooled values only
    (RELU, RELU_N1_TO_1, RELU6; the others are no-ops for a float pool, as in TFLite)."""
    ctx.need_inputs(1)
    if ctx.num_outputs != 2:
        raise ctx.fail(f"expects 2 outputs, has {ctx.num_outputs}")
    options = _pool_options(ctx)
    _float32(ctx, 0)
    _n, h, w, _c = _static(ctx, 0, "the input")
    kernel = (options["filter_height"], options["filter_width"])
    strides = (options["stride_height"], options["stride_width"])
    if options["padding"] not in (SAME, VALID):
        raise ctx.fail(f"padding code {options['padding']} is neither SAME (1) nor VALID (2)")
    outs, before, after = [], [], []
    for size, k, s in zip((h, w), kernel, strides, strict=True):
        out = (size + s - 1) // s if options["padding"] == SAME else (size - k + s) // s
        if out < 1:
            raise ctx.fail(f"a {k}-wide window does not fit an input of size {size} with VALID padding")
        total = max((out - 1) * s + k - size, 0)
        outs.append(out)
        before.append(total // 2)
        after.append(total - total // 2)
    pooled, flat = ctx.emit("MaxPool", [ctx.nchw(ctx.input(0))], num_outputs=2, kernel_shape=list(kernel),
                            strides=list(strides), pads=before + after)
    # Flat NCHW index -> (row, column) in the input -> offset from the window's corner.
    row = ctx.emit("Mod", [ctx.emit("Div", [flat, ctx.const("width", np.int64(w))]), ctx.const("height", np.int64(h))])
    col = ctx.emit("Mod", [flat, ctx.const("width2", np.int64(w))])
    top = _positions(ctx, "top", outs[0], strides[0], -before[0], 2)
    left = _positions(ctx, "left", outs[1], strides[1], -before[1], 3)
    dy = ctx.emit("Sub", [row, top])
    dx = ctx.emit("Sub", [col, left])
    local = ctx.emit("Add", [ctx.emit("Mul", [dy, ctx.const("filter_width", np.int64(kernel[1]))]), dx])
    argmax = ctx.emit("Add", [ctx.emit("Cast", [local], to=1), ctx.const("tenth", np.float32(0.1))])
    ctx.bind(0, _clamp(ctx, ctx.nhwc(pooled), options["activation"]))
    ctx.bind(1, ctx.nhwc(argmax))


def _positions(ctx: OpContext, name: str, count: int, step: int, start: int, axis: int) -> Value:
    """int64 [start, start + step, ...] (`count` values) along `axis` of a rank-4 shape of
    ones, as a Range node (see the module docstring)."""
    values = ctx.emit("Range", [ctx.const(f"{name}_start", np.int64(start)),
                                ctx.const(f"{name}_limit", np.int64(start + count * step)),
                                ctx.const(f"{name}_step", np.int64(step))])
    shape = [1, 1, 1, 1]
    shape[axis] = -1
    return ctx.emit("Reshape", [values, ctx.const(f"{name}_shape", np.array(shape, np.int64))])


def _clamp(ctx: OpContext, value: Value, activation: int) -> Value:
    if activation not in _CLAMPS:
        return value
    low, high = _CLAMPS[activation]
    if high is None:
        return ctx.emit("Relu", [value])
    return ctx.emit("Clip", [value, ctx.const("min", np.float32(low)), ctx.const("max", np.float32(high))])


@register_custom_op("MaxUnpooling2D")
def max_unpooling_2d(ctx: OpContext) -> None:
    """(input NHWC, argmax NHWC float32) -> (N, H * filter_height, W * filter_width, C):
    zeros, with each input value written where its argmax points. As in mediapipe, the
    argmax is truncated to an int i, the window offset is (i / filter_width, i %
    filter_width) in C's truncating arithmetic, from the window corner in_y * stride -
    padding (padding as TFLite's ComputePadding makes it for these sizes); a destination
    outside the output is skipped (a NaN or huge argmax too) and a later value written to
    the same place wins. The padding code and activation are not used (mediapipe ignores
    them). Needs fully static shapes."""
    ctx.need_inputs(2)
    options = _pool_options(ctx)
    _float32(ctx, 0, 1)
    n, h, w, c = shape = _static(ctx, 0, "the input", (0, 1, 2, 3))
    if _static(ctx, 1, "the argmax", (0, 1, 2, 3)) != shape:
        raise ctx.fail(f"the argmax shape {list(ctx.tensor(1).shape)} must equal the input's {list(shape)}")
    kernel = (options["filter_height"], options["filter_width"])
    strides = (options["stride_height"], options["stride_width"])
    out_h, out_w = h * kernel[0], w * kernel[1]
    pads = [max((size - 1) * s + k - out, 0) // 2
            for size, k, s, out in zip((h, w), kernel, strides, (out_h, out_w), strict=True)]
    total = n * out_h * out_w * c
    if total >= 1 << 31:
        raise ctx.fail(f"the output shape {[n, out_h, out_w, c]} has {total:,} elements, more than a C int counts")
    target = _unpool_targets(ctx, shape, kernel, strides, pads)
    flat = ctx.const("shape_flat", np.array([-1], np.int64))
    # (the zeros are made at run time: Expand of a scalar, not a constant of the output's size)
    zeros = ctx.emit("Expand", [ctx.const("zero", np.float32(0)), ctx.const("size", np.array([total + 1], np.int64))])
    scattered = ctx.emit("ScatterElements", [zeros,
                                             ctx.emit("Reshape", [target, flat]),
                                             ctx.emit("Reshape", [ctx.input(0), flat])], axis=0)
    kept = ctx.emit("Slice", [scattered, ctx.const("start", np.array([0], np.int64)),
                              ctx.const("stop", np.array([total], np.int64))])
    ctx.bind(0, ctx.emit("Reshape", [kept, ctx.const("shape", np.array([n, out_h, out_w, c], np.int64))]))


def _unpool_targets(ctx: OpContext, shape: tuple[int, ...], kernel: tuple[int, int], strides: tuple[int, int],
                    pads: list[int]) -> Value:
    """The flat NHWC output position of each input element (int64, the input's shape); the
    output's size for those that fall outside it."""
    n, h, w, c = shape
    out_h, out_w = h * kernel[0], w * kernel[1]
    # Truncate the float argmax toward zero (C's int conversion), NaN and huge values out of reach.
    index = ctx.input(1)
    far = ctx.const("far", np.float32(1 << 30))
    index = ctx.emit("Where", [ctx.emit("IsNaN", [index]), far, index])
    index = ctx.emit("Cast", [ctx.emit("Clip", [index, ctx.const("low", np.float32(-(1 << 30))), far])], to=7)
    # (index / filter_width, index % filter_width) with C's truncating division.
    quotient = ctx.emit("Div", [ctx.emit("Cast", [index], to=11), ctx.const("filter_w", np.float64(kernel[1]))])
    dy = ctx.emit("Cast", [quotient], to=7)
    dx = ctx.emit("Sub", [index, ctx.emit("Mul", [dy, ctx.const("filter_w_int", np.int64(kernel[1]))])])
    rows = _positions(ctx, "rows", h, strides[0], -pads[0], 1)
    cols = _positions(ctx, "cols", w, strides[1], -pads[1], 2)
    y = ctx.emit("Add", [rows, dy])
    x = ctx.emit("Add", [cols, dx])
    inside = ctx.emit("And", [_in_range(ctx, y, out_h, "y"), _in_range(ctx, x, out_w, "x")])
    position = ctx.emit("Add", [ctx.emit("Mul", [y, ctx.const("out_w", np.int64(out_w))]), x])
    base = ctx.emit("Add", [_positions(ctx, "batch", n, out_h * out_w * c, 0, 0),
                            _positions(ctx, "channel", c, 1, 0, 3)])
    target = ctx.emit("Add", [ctx.emit("Mul", [position, ctx.const("channels", np.int64(c))]), base])
    return ctx.emit("Where", [inside, target, ctx.const("nowhere", np.int64(n * out_h * out_w * c))])


def _in_range(ctx: OpContext, value: Value, size: int, what: str) -> Value:
    low = ctx.emit("GreaterOrEqual", [value, ctx.const(f"{what}_zero", np.int64(0))])
    high = ctx.emit("Less", [value, ctx.const(f"{what}_size", np.int64(size))])
    return ctx.emit("And", [low, high])


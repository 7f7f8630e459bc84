"""Custom operators: TFLite_Detection_PostProcess against LiteRT, mediapipe's
Convolution2DTransposeBias against LiteRT's builtin TRANSPOSE_CONV + ADD (and mediapipe's loop
written in numpy), MaxPoolingWithArgmax2D / MaxUnpooling2D against mediapipe's loops in numpy;
the FlexBuffer reader against flatbuffers' own on valid buffers, and malformed options refused
with ConversionError / ModelError only."""

from __future__ import annotations

import struct

import flatbuffers.flexbuffers as flexbuffers
import numpy as np
import pytest

import edgerun.converters.tflite.ops.custom  # noqa: F401
from edgerun import Interpreter
from edgerun.converters.tflite import from_tflite
from edgerun.converters.tflite.flex import MAX_DEPTH, read_flex, read_flex_map
from edgerun.runtime.errors import ConversionError, ModelError
from tests.converters.tflite.builder import TFLiteBuilder, litert_run

# --- TFLite_Detection_PostProcess --------------------------------------------------------

OPTIONS = dict(max_detections=10, max_classes_per_detection=1, detections_per_class=5, use_regular_nms=False,
               nms_score_threshold=0.3, nms_iou_threshold=0.5, num_classes=4, y_scale=10.0, x_scale=10.0,
               h_scale=5.0, w_scale=5.0)


def anchors(n: int, seed: int = 0) -> np.ndarray:
    """[y, x, h, w] anchors clustered enough that many decoded boxes overlap."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.uniform(0.3, 0.7, n), rng.uniform(0.3, 0.7, n), rng.uniform(0.1, 0.4, n),
                     rng.uniform(0.1, 0.4, n)], axis=1).astype(np.float32)


def postprocess_model(n: int, width: int, options: dict, boxes_type: str = "FLOAT32", quant=None,
                      anchor_data: np.ndarray | None = None, custom_options: bytes | None = None) -> bytes:
    b = TFLiteBuilder()
    boxes = b.input("boxes", (1, n, 4), boxes_type, quant=quant)
    scores = b.input("scores", (1, n, width), boxes_type, quant=quant)
    anchor_data = anchors(n) if anchor_data is None else anchor_data
    anchor_quant = None
    if anchor_data.dtype == np.uint8:
        anchor_quant = dict(scale=1 / 255, zero_point=0)
    a = b.constant("anchors", anchor_data, quant=anchor_quant)
    d = min(max(options.get("max_detections", 1) * options.get("max_classes_per_detection", 1), 0), 100)
    outs = [b.tensor("det_boxes", (1, d, 4)), b.tensor("det_classes", (1, d)), b.tensor("det_scores", (1, d)),
            b.tensor("num_detections", (1,))]
    b.op("CUSTOM", [boxes, scores, a], outs, custom_code="TFLite_Detection_PostProcess",
         custom_options=flexbuffers.Dumps(options) if custom_options is None else custom_options)
    for o in outs:
        b.output(o)
    return b.build()


def ssd_inputs(n: int, width: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (rng.normal(0, 0.8, (1, n, 4)).astype(np.float32),
            rng.uniform(0, 1, (1, n, width)).astype(np.float32))


def compare_postprocess(data: bytes, boxes: np.ndarray, scores: np.ndarray, options: dict) -> int:
    """Ours against LiteRT on the rows LiteRT writes (the others are zero in ours); returns
    the number of detections."""
    want = litert_run(data, [boxes, scores])
    got = list(Interpreter(from_tflite(data)).run({"boxes": boxes, "scores": scores}).values())
    assert [g.shape for g in got] == [w.shape for w in want]
    assert all(g.dtype == np.float32 for g in got)
    count = int(want[3][0])
    assert got[3][0] == count
    per_box = options["max_classes_per_detection"]
    if options.get("use_regular_nms"):
        rows = np.arange(options["max_detections"])  # written, zero past the count
    else:
        written = min(per_box, options["num_classes"])
        rows = (np.arange(count)[:, None] * per_box + np.arange(written)).reshape(-1)
    for g, w in zip(got[:3], want[:3], strict=True):
        np.testing.assert_allclose(g[0, rows], w[0, rows], rtol=1e-6, atol=1e-6)
        unwritten = np.setdiff1d(np.arange(g.shape[1]), rows)
        assert not np.any(g[0, unwritten])
    return count


@pytest.mark.parametrize("regular", [False, True])
@pytest.mark.parametrize("per_box", [1, 3, 6])
@pytest.mark.parametrize("background", [0, 1])
@pytest.mark.parametrize("threshold", [0.0, 0.5, 0.97])
def test_detection_postprocess_matches_litert(regular, per_box, background, threshold):
    options = dict(OPTIONS, use_regular_nms=regular, max_classes_per_detection=per_box, nms_score_threshold=threshold)
    n, width = 64, options["num_classes"] + background
    data = postprocess_model(n, width, options)
    boxes, scores = ssd_inputs(n, width, seed=per_box + 10 * background)
    count = compare_postprocess(data, boxes, scores, options)
    if threshold == 0.0:
        assert count == options["max_detections"]


@pytest.mark.parametrize("iou", [0.1, 0.3, 1.0])
def test_detection_postprocess_suppresses_overlaps_as_litert_does(iou):
    options = dict(OPTIONS, nms_iou_threshold=iou, max_detections=40, nms_score_threshold=0.0)
    data = postprocess_model(80, 5, options)
    boxes, scores = ssd_inputs(80, 5, seed=7)
    count = compare_postprocess(data, boxes, scores, options)
    assert (count < 40) == (iou < 1.0)  # a low threshold suppresses clustered boxes


def test_detection_postprocess_boundaries():
    """Scores equal to the threshold pass (>=); identical boxes (IoU exactly 1) survive an
    IoU threshold of 1 (>); equal scores keep box order."""
    options = dict(OPTIONS, nms_iou_threshold=1.0, nms_score_threshold=0.5, max_detections=20)
    base = anchors(8)
    data = postprocess_model(16, 5, options, anchor_data=np.concatenate([base, base]))
    rng = np.random.default_rng(2)
    half = rng.normal(0, 0.5, (1, 8, 4)).astype(np.float32)
    boxes = np.concatenate([half, half], axis=1)
    scores = rng.integers(0, 5, (1, 16, 5)).astype(np.float32) / 4  # 0, 0.25, ... 1: ties everywhere
    count = compare_postprocess(data, boxes, scores, options)
    assert count == np.count_nonzero(scores[0, :, 1:].max(axis=1) >= 0.5)


def test_detection_postprocess_defaults_for_optional_keys():
    options = {k: v for k, v in OPTIONS.items() if k not in ("detections_per_class", "use_regular_nms")}
    data = postprocess_model(32, 5, options)
    compare_postprocess(data, *ssd_inputs(32, 5, seed=3), options)


def test_detection_postprocess_on_quantized_inputs():
    quant = dict(scale=0.02, zero_point=128)
    rng = np.random.default_rng(4)
    anchor_q = np.clip(anchors(40) * 255, 0, 255).astype(np.uint8)
    data = postprocess_model(40, 5, OPTIONS, "UINT8", quant, anchor_data=anchor_q)
    boxes = rng.integers(80, 176, (1, 40, 4)).astype(np.uint8)
    scores = rng.integers(0, 256, (1, 40, 5)).astype(np.uint8)
    compare_postprocess(data, boxes, scores, OPTIONS)


@pytest.mark.parametrize("change, message", [
    ({"nms_iou_threshold": 0.0}, "nms_iou_threshold 0.0 must be in (0, 1]"),
    ({"nms_iou_threshold": 1.5}, "must be in (0, 1]"),
    ({"max_classes_per_detection": 0}, "max_classes_per_detection and num_classes >= 1"),
    ({"max_detections": -1}, "max_detections must be >= 0"),
    ({"detections_per_class": 0, "use_regular_nms": True}, "detections_per_class must be >= 1"),
    ({"num_classes": None}, "the custom options lack 'num_classes'"),
    ({"y_scale": "ten"}, "option 'y_scale' must be a number, got 'ten'"),
    ({"max_detections": 1 << 40}, "option 'max_detections' = 1099511627776 does not fit an int32"),
    ({"max_detections": 1 << 20, "max_classes_per_detection": 1 << 12}, "rows do not fit an int32"),
])
def test_bad_postprocess_options_are_refused(change, message):
    options = {k: v for k, v in {**OPTIONS, **change}.items() if v is not None}
    data = postprocess_model(8, 5, options)
    with pytest.raises(ConversionError, match="TFLite_Detection_PostProcess") as info:
        from_tflite(data)
    assert message in str(info.value)


def test_postprocess_shapes_and_boxes_are_checked_when_it_runs():
    data = postprocess_model(8, 7, OPTIONS)  # 7 classes for num_classes=4
    with pytest.raises(ModelError, match="num_classes=4 must be that or one less"):
        Interpreter(from_tflite(data)).run(dict(zip(["boxes", "scores"], ssd_inputs(8, 7, 0), strict=True)))
    flipped = anchors(8)
    flipped[3, 2] = -0.2  # a negative anchor height turns box 3 inside out: LiteRT refuses it too
    data = postprocess_model(8, 5, OPTIONS, anchor_data=flipped)
    with pytest.raises(RuntimeError):
        litert_run(data, list(ssd_inputs(8, 5, 0)))
    with pytest.raises(ModelError, match="decoded box 3 has its min corner past its max corner"):
        Interpreter(from_tflite(data)).run(dict(zip(["boxes", "scores"], ssd_inputs(8, 5, 0), strict=True)))


# --- Convolution2DTransposeBias ----------------------------------------------------------


def transpose_conv_bias_reference(x, w, bias, strides, same):
    """mediapipe's TransposeConvBias loop (transpose_conv_bias.cc), vectorized over batch
    and channels, accumulated in float64."""
    n, h, wd, _ = x.shape
    o, kh, kw, _ = w.shape
    pads = [max(0, k - (size - 1) % s - 1) if same else 0 for size, k, s in zip((h, wd), (kh, kw), strides,
                                                                                  strict=True)]
    oh, ow = strides[0] * (h - 1) + kh - pads[0], strides[1] * (wd - 1) + kw - pads[1]
    out = np.broadcast_to(bias.astype(np.float64), (n, oh, ow, o)).copy()
    for iy in range(h):
        for ix in range(wd):
            for fy in range(kh):
                for fx in range(kw):
                    y, xx = iy * strides[0] - pads[0] // 2 + fy, ix * strides[1] - pads[1] // 2 + fx
                    if 0 <= y < oh and 0 <= xx < ow:
                        out[:, y, xx, :] += x[:, iy, ix, :].astype(np.float64) @ w[:, fy, fx, :].T.astype(np.float64)
    return out.astype(np.float32)


def conv_transpose_bias_model(x_shape, w, bias, padding, strides, custom_options: bytes | None = None) -> bytes:
    b = TFLiteBuilder()
    x = b.input("x", x_shape)
    out_shape = transpose_conv_bias_reference(np.zeros(x_shape, np.float32), w, bias, strides, padding == 1).shape
    y = b.tensor("y", out_shape)
    options = struct.pack("<3i", padding, strides[1], strides[0]) if custom_options is None else custom_options
    b.op("CUSTOM", [x, b.constant("w", w), b.constant("bias", bias)], [y], custom_code="Convolution2DTransposeBias",
         custom_options=options)
    b.output(y)
    return b.build()


def builtin_transpose_conv_model(x_shape, w, bias, out_shape, padding, strides) -> bytes:
    """LiteRT's equivalent: TRANSPOSE_CONV with an explicit output shape, then ADD the bias."""
    b = TFLiteBuilder()
    x = b.input("x", x_shape)
    t, y = b.tensor("t", out_shape), b.tensor("y", out_shape)
    shape = b.constant("shape", np.array(out_shape, np.int32))
    b.op("TRANSPOSE_CONV", [shape, b.constant("w", w), x], [t], "TransposeConvOptions",
         padding=0 if padding == 1 else 1, stride_w=strides[1], stride_h=strides[0])
    b.op("ADD", [t, b.constant("bias", bias)], [y], "AddOptions")
    b.output(y)
    return b.build()


@pytest.mark.parametrize("padding", [1, 2], ids=["same", "valid"])
@pytest.mark.parametrize("x_shape, kernel, strides", [
    ((1, 5, 6, 3), (2, 2), (2, 2)),
    ((1, 5, 6, 3), (3, 3), (2, 2)),
    ((2, 4, 7, 2), (4, 3), (2, 1)),
    ((1, 6, 5, 4), (3, 2), (3, 2)),
    ((1, 7, 7, 2), (1, 1), (1, 1)),
    ((1, 8, 8, 16), (2, 2), (2, 2)),  # selfie segmentation's configuration
])
def test_convolution_2d_transpose_bias(padding, x_shape, kernel, strides):
    rng = np.random.default_rng(sum(x_shape))
    w = rng.standard_normal((5, *kernel, x_shape[3])).astype(np.float32)
    bias = rng.standard_normal(5).astype(np.float32)
    x = rng.standard_normal(x_shape).astype(np.float32)
    got = Interpreter(from_tflite(conv_transpose_bias_model(x_shape, w, bias, padding, strides))).run({"x": x})["y"]
    want = transpose_conv_bias_reference(x, w, bias, strides, padding == 1)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    builtin = litert_run(builtin_transpose_conv_model(x_shape, w, bias, want.shape, padding, strides), [x])[0]
    np.testing.assert_allclose(got, builtin, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("options, message", [
    (b"\x01\x00\x00\x00\x02\x00", "custom options hold 6 bytes; TfLiteTransposeConvParams needs 12"),
    (b"", "custom options hold 0 bytes"),
    (struct.pack("<3i", 1, 0, 2), "stride_width=0 must be >= 1"),
    (struct.pack("<3i", 7, 2, 2), "unknown padding code 7"),
])
def test_bad_transpose_conv_options(options, message):
    w, bias = np.ones((2, 2, 2, 3), np.float32), np.zeros(2, np.float32)
    with pytest.raises(ConversionError, match="Convolution2DTransposeBias") as info:
        from_tflite(conv_transpose_bias_model((1, 4, 4, 3), w, bias, 1, (2, 2), custom_options=options))
    assert message in str(info.value)


# --- MaxPoolingWithArgmax2D / MaxUnpooling2D -----------------------------------------------


def pool_params(padding, stride, kernel, activation=0) -> bytes:
    """TfLitePoolParams: padding, stride_width, stride_height, filter_width, filter_height,
    activation, then the computed padding (4 ints) the kernel fills in."""
    return struct.pack("<10i", padding, stride[1], stride[0], kernel[1], kernel[0], activation, 0, 0, 0, 0)


def pool_geometry(h, w, kernel, stride, same):
    outs, pads = [], []
    for size, k, s in zip((h, w), kernel, stride, strict=True):
        out = (size + s - 1) // s if same else (size - k + s) // s
        outs.append(out)
        pads.append(max((out - 1) * s + k - size, 0) // 2)
    return outs, pads


def max_pool_argmax_reference(x, kernel, stride, same, activation):
    """mediapipe's MaxPoolArgmax loop (max_pool_argmax.cc)."""
    n, h, w, c = x.shape
    (oh, ow), (ph, pw) = pool_geometry(h, w, kernel, stride, same)
    low, high = {1: (0.0, np.inf), 2: (-1.0, 1.0), 3: (0.0, 6.0)}.get(activation, (-np.inf, np.inf))
    out, idx = np.zeros((n, oh, ow, c), np.float32), np.zeros((n, oh, ow, c), np.float32)
    for b in range(n):
        for oy in range(oh):
            for ox in range(ow):
                for ch in range(c):
                    y0, x0 = oy * stride[0] - ph, ox * stride[1] - pw
                    best, by, bx = np.finfo(np.float32).min, 0, 0
                    for fy in range(max(0, -y0), min(kernel[0], h - y0)):
                        for fx in range(max(0, -x0), min(kernel[1], w - x0)):
                            if x[b, y0 + fy, x0 + fx, ch] > best:
                                best, by, bx = x[b, y0 + fy, x0 + fx, ch], fy, fx
                    out[b, oy, ox, ch] = min(max(best, low), high)
                    idx[b, oy, ox, ch] = np.float32(by * kernel[1] + bx) + np.float32(0.1)
    return out, idx


def max_unpool_reference(x, indices, kernel, stride):
    """mediapipe's MaxUnpooling loop (max_unpooling.cc), C's int conversion and division."""
    n, h, w, c = x.shape
    oh, ow = h * kernel[0], w * kernel[1]
    ph = max((h - 1) * stride[0] + kernel[0] - oh, 0) // 2
    pw = max((w - 1) * stride[1] + kernel[1] - ow, 0) // 2
    out = np.zeros((n, oh, ow, c), np.float32)
    for b in range(n):
        for iy in range(h):
            for ix in range(w):
                for ch in range(c):
                    i = int(indices[b, iy, ix, ch])  # truncates toward zero
                    dy = abs(i) // kernel[1] * (1 if i >= 0 else -1)
                    dx = i - dy * kernel[1]
                    y, xx = iy * stride[0] - ph + dy, ix * stride[1] - pw + dx
                    if 0 <= y < oh and 0 <= xx < ow:
                        out[b, y, xx, ch] = x[b, iy, ix, ch]
    return out


def argmax_pool_model(x_shape, options: bytes, out_shape) -> bytes:
    b = TFLiteBuilder()
    x = b.input("x", x_shape)
    y, i = b.tensor("y", out_shape), b.tensor("argmax", out_shape)
    b.op("CUSTOM", [x], [y, i], custom_code="MaxPoolingWithArgmax2D", custom_options=options)
    b.output(y)
    b.output(i)
    return b.build()


@pytest.mark.parametrize("same", [True, False], ids=["same", "valid"])
@pytest.mark.parametrize("kernel, stride", [((2, 2), (2, 2)), ((3, 3), (2, 2)), ((3, 2), (1, 2)), ((2, 3), (3, 1))])
@pytest.mark.parametrize("activation", [0, 1, 3, 4])
def test_max_pooling_with_argmax(same, kernel, stride, activation):
    rng = np.random.default_rng(kernel[0] * 7 + stride[1])
    x = rng.standard_normal((2, 7, 6, 3)).astype(np.float32) * 4
    x[0, :2, :2, 0] = 1.0  # ties: the first in window order wins
    want_y, want_i = max_pool_argmax_reference(x, kernel, stride, same, activation)
    data = argmax_pool_model(x.shape, pool_params(1 if same else 2, stride, kernel, activation), want_y.shape)
    got = Interpreter(from_tflite(data)).run({"x": x})
    np.testing.assert_array_equal(got["y"], want_y)
    np.testing.assert_array_equal(got["argmax"], want_i)


def unpool_model(x_shape, options: bytes) -> bytes:
    b = TFLiteBuilder()
    x, i = b.input("x", x_shape), b.input("argmax", x_shape)
    n, h, w, c = x_shape
    kernel = struct.unpack_from("<5i", options)[3:5][::-1] if len(options) >= 20 else (1, 1)
    shape = (n, h * kernel[0], w * kernel[1], c) if 0 < min(kernel) and max(kernel) < 1 << 10 else (1, 1, 1, 1)
    y = b.tensor("y", shape)  # (garbage options: any shape; the converter computes its own)
    b.op("CUSTOM", [x, i], [y], custom_code="MaxUnpooling2D", custom_options=options)
    b.output(y)
    return b.build()


@pytest.mark.parametrize("kernel, stride", [((2, 2), (2, 2)), ((3, 3), (2, 2)), ((2, 3), (1, 1)), ((3, 2), (3, 2))])
def test_max_unpooling_of_argmax_pooling(kernel, stride):
    """The pair as mediapipe's segmentation models use it: pool with argmax, then unpool."""
    rng = np.random.default_rng(kernel[1] + 3 * stride[0])
    x = rng.standard_normal((1, 6, 6, 2)).astype(np.float32)
    pooled, argmax = max_pool_argmax_reference(x, kernel, stride, True, 0)
    data = unpool_model(pooled.shape, pool_params(1, stride, kernel))
    got = Interpreter(from_tflite(data)).run({"x": pooled, "argmax": argmax})["y"]
    np.testing.assert_array_equal(got, max_unpool_reference(pooled, argmax, kernel, stride))


def test_max_unpooling_skips_indices_out_of_reach_and_truncates_like_c():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 4, 2)).astype(np.float32)
    argmax = rng.uniform(-6, 10, x.shape).astype(np.float32)
    argmax.flat[:6] = [np.nan, np.inf, -np.inf, 1e12, -3.7, 2.9]
    data = unpool_model(x.shape, pool_params(1, (2, 2), (2, 3)))
    got = Interpreter(from_tflite(data)).run({"x": x, "argmax": argmax})["y"]
    np.testing.assert_array_equal(got, max_unpool_reference(x, np.nan_to_num(argmax, nan=1e9), (2, 3), (2, 2)))


@pytest.mark.parametrize("options, message", [
    (struct.pack("<5i", 1, 2, 2, 2, 2), "custom options hold 20 bytes; TfLitePoolParams needs 24"),
    (pool_params(1, (2, 0), (2, 2)), "stride_width=0 must be >= 1"),
    (pool_params(1, (2, 2), (0, 2)), "filter_height=0 must be >= 1"),
    (pool_params(1, (2, 2), (2, 2), activation=9), "unknown activation code 9"),
    (pool_params(0, (2, 2), (2, 2)), "padding code 0 is neither SAME (1) nor VALID (2)"),
])
def test_bad_argmax_pool_options(options, message):
    with pytest.raises(ConversionError, match="MaxPoolingWithArgmax2D") as info:
        from_tflite(argmax_pool_model((1, 4, 4, 1), options, (1, 2, 2, 1)))
    assert message in str(info.value)


def test_unpooling_needs_static_shapes_and_matching_argmax():
    b = TFLiteBuilder()
    x = b.input("x", (1, 2, 2, 1), signature=(1, -1, 2, 1))
    i = b.input("argmax", (1, 2, 2, 1))
    y = b.tensor("y", (1, 4, 4, 1))
    b.op("CUSTOM", [x, i], [y], custom_code="MaxUnpooling2D", custom_options=pool_params(1, (2, 2), (2, 2)))
    b.output(y)
    with pytest.raises(ConversionError, match=r"the input needs static sizes in dimensions \[0, 1, 2, 3\]"):
        from_tflite(b.build())
    b = TFLiteBuilder()
    x, i = b.input("x", (1, 2, 2, 1)), b.input("argmax", (1, 2, 3, 1))
    y = b.tensor("y", (1, 4, 4, 1))
    b.op("CUSTOM", [x, i], [y], custom_code="MaxUnpooling2D", custom_options=pool_params(1, (2, 2), (2, 2)))
    b.output(y)
    with pytest.raises(ConversionError, match=r"the argmax shape \[1, 2, 3, 1\] must equal the input's"):
        from_tflite(b.build())


# --- FlexBuffers ---------------------------------------------------------------------------

VALID = [
    {"a": 1, "b": 2.5, "c": True, "s": "hi", "v": [1, 2, 3], "m": {"x": [1.0, 2.0]}},
    {"max_detections": 10, "big": 1 << 40, "neg": -5, "huge": -(1 << 62), "blob": b"\x00\xff", "none": None},
    {"mixed": [1, "a", 2.0, None, False, [], {}], "deep": [[[[{"k": "v"}]]]]},
    {"": 0, "unicode": "välue ✓", "wide": [1 << 33, 2, 3], "floats": [1.5, 0.1, -2.25e30]},
    [1, 2], 3, -7.5, "str", True, None, {}, [], b"blob",
]


@pytest.mark.parametrize("value", VALID, ids=range(len(VALID)))
def test_flex_reader_agrees_with_flatbuffers_on_valid_buffers(value):
    data = flexbuffers.Dumps(value)
    assert read_flex(data) == flexbuffers.Loads(data)


def test_flex_typed_fixed_and_indirect_values():
    b = flexbuffers.Builder()
    with b.Map():
        b.Key("ints")
        b.TypedVectorFromElements([1, 2, 300])
        b.Key("floats3")
        b.FixedTypedVectorFromElements([1.5, 2.5, 3.5])
        b.Key("bools")
        b.TypedVectorFromElements([True, False])
        b.Key("indirect_float")
        b.IndirectFloat(3.25)
        b.Key("indirect_int")
        b.IndirectInt(-7)
        b.Key("uints2")
        b.FixedTypedVectorFromElements([7, 9], element_type=flexbuffers.Type.UINT)
    data = b.Finish()
    assert read_flex_map(data) == flexbuffers.Loads(data) == {
        "bools": [True, False], "floats3": [1.5, 2.5, 3.5], "indirect_float": 3.25, "indirect_int": -7,
        "ints": [1, 2, 300], "uints2": [7, 9]}


def shared_bomb(levels: int = 5, k: int = 64) -> bytes:
    """Vectors whose k elements all point at the same child, `levels` deep: k**levels values."""
    buf = bytearray(k.to_bytes(4, "little"))
    child, packed = len(buf), (11 << 2) | 2  # VECTOR_INT of width 4
    buf += bytes(4 * k)
    for _ in range(levels):
        buf += k.to_bytes(4, "little")
        start = len(buf)
        for i in range(k):
            buf += (start + 4 * i - child).to_bytes(4, "little")
        buf += bytes([packed]) * k
        buf += bytes(-len(buf) % 4)
        child, packed = start, (10 << 2) | 2  # untyped VECTOR of width 4
    root = len(buf)
    return bytes(buf + (root - child).to_bytes(4, "little") + bytes([packed, 4]))


def nested(depth: int) -> bytes:
    value: object = 1
    for _ in range(depth):
        value = [value]
    return flexbuffers.Dumps(value)


@pytest.mark.parametrize("data, message", [
    (b"", "0 bytes are too few"),
    (b"\x01\x04\x03", "the root byte width 3 is not 1, 2, 4 or 8"),
    (b"\x01\x04\x08", "a root of width 8 does not fit in 3 bytes"),
    (b"\x05\x24\x01", "points before the start of the buffer"),
    (b"\x00\xfc\x01", "type code 63"),
    (b"\x00\x00\x01\x0c\x01", "a float at offset 2 has width 1"),
    (b"\x03ab\xc3\x03\x14\x01", "is not valid UTF-8"),
    (b"abc\x03\x10\x01", "has no terminating NUL"),
    (nested(MAX_DEPTH + 2), f"values nest deeper than {MAX_DEPTH}"),
    (shared_bomb(), "decodes to more than"),
    (flexbuffers.Dumps([1, 2]), "the root is a vector, not a map"),
])
def test_flex_reader_refuses_malformed_buffers(data, message):
    with pytest.raises(ValueError) as info:
        read_flex_map(data)
    assert message in str(info.value)


def test_flex_map_keys_must_be_sorted():
    data = bytearray(flexbuffers.Dumps({"a": 1, "b": 2}))
    at = data.index(b"a\x00b\x00")
    data[at], data[at + 2] = ord("b"), ord("a")
    with pytest.raises(ValueError, match="map keys 'b' and 'a' are not in strictly increasing order"):
        read_flex_map(bytes(data))
    assert flexbuffers.Loads(bytes(data)) == {"b": 1, "a": 2}  # (what a trusting reader makes of it)


def test_mutated_flexbuffers_raise_only_value_error():
    rng = np.random.default_rng(0)
    base = [flexbuffers.Dumps(v) for v in VALID[:4]] + [flexbuffers.Dumps(OPTIONS)]
    for trial in range(3000):
        data = bytearray(base[trial % len(base)])
        for _ in range(rng.integers(1, 4)):
            kind = rng.integers(3)
            if kind == 0:
                data[rng.integers(len(data))] = rng.integers(256)
            elif kind == 1 and len(data) > 1:
                del data[rng.integers(1, len(data)):]
            else:
                data[rng.integers(len(data))] ^= 1 << rng.integers(8)
        try:
            read_flex(bytes(data))
        except ValueError:
            pass


CUSTOM_MODELS = {
    "TFLite_Detection_PostProcess": lambda options: postprocess_model(8, 5, OPTIONS, custom_options=options),
    "Convolution2DTransposeBias": lambda options: conv_transpose_bias_model(
        (1, 4, 4, 3), np.ones((2, 2, 2, 3), np.float32), np.zeros(2, np.float32), 1, (2, 2), custom_options=options),
    "MaxPoolingWithArgmax2D": lambda options: argmax_pool_model((1, 4, 4, 1), options, (1, 2, 2, 1)),
    "MaxUnpooling2D": lambda options: unpool_model((1, 2, 2, 1), options),
}


@pytest.mark.parametrize("code", CUSTOM_MODELS)
def test_garbage_custom_options_are_conversion_errors(code):
    rng = np.random.default_rng(len(code))
    valid = flexbuffers.Dumps(OPTIONS) if code == "TFLite_Detection_PostProcess" else pool_params(1, (2, 2), (2, 2))
    converted = 0
    for trial in range(150):
        if trial % 3 == 0:
            options = rng.integers(0, 256, rng.integers(0, 48)).astype(np.uint8).tobytes()
        else:
            mutated = bytearray(valid)
            mutated[rng.integers(len(mutated))] = rng.integers(256)
            options = bytes(mutated[: rng.integers(len(mutated) // 2, len(mutated) + 1)])
        try:
            from_tflite(CUSTOM_MODELS[code](options))
            converted += 1
        except (ConversionError, ModelError) as exc:
            assert code in str(exc)
    assert converted < 150

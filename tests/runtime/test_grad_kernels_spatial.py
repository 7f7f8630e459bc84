"""Gradient and training kernels of Conv, the pools, BatchNormalization and Dropout.

Each gradient kernel is checked against central finite differences of its forward kernel in
float64 (L = sum(forward(inputs) * dY)), one line per case; training kernels against their
closed forms; ONNX Dropout (inference) against onnxruntime.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgerun.runtime.errors import ModelError
from edgerun.runtime.kernels import TensorSpec, resolve
from tests.gradcheck import numerical_input_gradients, run_kernel
from tests.runtime.test_kernels import check as check_against_onnxruntime

RTOL, ATOL = 1e-6, 1e-7
F32 = np.float32
TRAINING = "edgerun"


def assert_gradients_match(ours, expected):
    for mine, want in zip(ours, expected, strict=True):
        assert mine.shape == want.shape
        np.testing.assert_allclose(mine, want, rtol=RTOL, atol=ATOL)


def distinct(shape, rng):
    """Values at least 0.1 apart, so no max-pool window has a tie (or flips under FD)."""
    size = int(np.prod(shape))
    return rng.permutation(size).reshape(shape) * 0.1 + rng.uniform(0, 0.01, shape)


# --- Conv ----------------------------------------------------------------------------------------

CONV = [
    # x shape, w shape, attrs
    pytest.param((2, 3, 5, 6), (4, 3, 3, 3), {}, id="plain"),
    pytest.param((2, 4, 5, 6), (6, 2, 3, 3), {"group": 2, "pads": [1, 1, 1, 1]}, id="groups"),
    pytest.param((2, 3, 5, 5), (3, 1, 3, 3), {"group": 3, "pads": [1, 1, 1, 1]}, id="depthwise"),
    pytest.param((2, 4, 6, 5), (8, 1, 3, 3), {"group": 4}, id="depthwise-multiplier"),
    pytest.param((2, 2, 7, 6), (3, 2, 3, 3), {"strides": [2, 2], "pads": [1, 1, 1, 1]}, id="stride2"),
    pytest.param((1, 2, 6, 6), (2, 2, 3, 3), {"strides": [2, 2]}, id="stride2-unused-tail"),
    pytest.param((1, 2, 7, 7), (2, 2, 3, 3), {"dilations": [2, 2]}, id="dilation2"),
    pytest.param((1, 2, 5, 4), (3, 2, 3, 2), {"pads": [0, 1, 2, 0]}, id="asymmetric-pads"),
    pytest.param((1, 2, 5, 6), (2, 2, 3, 3), {"auto_pad": "SAME_UPPER", "strides": [2, 2]}, id="same-upper"),
    pytest.param((1, 2, 6, 5), (2, 2, 2, 2), {"auto_pad": "SAME_LOWER"}, id="same-lower"),
    pytest.param((1, 2, 7, 6), (2, 1, 3, 2), {"auto_pad": "SAME_UPPER", "dilations": [2, 1],
                                              "group": 2}, id="same-dilated-groups"),
    pytest.param((1, 2, 5, 5), (2, 2, 3, 3), {"auto_pad": "VALID", "strides": [1, 2]}, id="valid"),
    pytest.param((2, 3, 4, 4), (5, 3, 1, 1), {}, id="1x1"),
    pytest.param((2, 3, 5, 5), (4, 3, 1, 1), {"strides": [2, 2]}, id="1x1-stride2"),
    pytest.param((2, 3, 9), (2, 3, 3), {"strides": [2], "pads": [1, 2]}, id="1d"),
    pytest.param((1, 2, 3, 4, 3), (2, 2, 2, 2, 2), {"pads": [1, 0, 0, 0, 1, 1]}, id="3d"),
]


def conv_gradients(x_shape, w_shape, attrs, rng, dtype=np.float64):
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    b = rng.standard_normal(w_shape[:1])
    dy = rng.standard_normal(run_kernel("Conv", [x, w, b], attrs)[0].shape)
    ours = run_kernel("ConvGrad", [a.astype(dtype) for a in (dy, x, w)], attrs, domain=TRAINING)
    return (x, w, b, dy), ours


@pytest.mark.parametrize("x_shape, w_shape, attrs", CONV)
def test_conv_grad_matches_finite_differences(x_shape, w_shape, attrs):
    (x, w, b, dy), ours = conv_gradients(x_shape, w_shape, attrs, np.random.default_rng(0))
    expected = numerical_input_gradients(lambda a: run_kernel("Conv", a, attrs)[0], [x, w, b], dy, [0, 1, 2])
    assert_gradients_match(ours, expected)


@pytest.mark.parametrize("x_shape, w_shape, attrs", CONV[:3])
def test_conv_grad_float32_agrees_with_float64(x_shape, w_shape, attrs):
    _, ours64 = conv_gradients(x_shape, w_shape, attrs, np.random.default_rng(1))
    _, ours32 = conv_gradients(x_shape, w_shape, attrs, np.random.default_rng(1), np.float32)
    for a, b in zip(ours32, ours64, strict=True):
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_conv_grad_without_bias_output_gives_dx_and_dw():
    (x, w, _, dy), (dx, dw, _) = conv_gradients((2, 2, 5, 5), (3, 2, 3, 3), {}, np.random.default_rng(2))
    outputs = run_kernel("ConvGrad", [dy, x, w], {}, domain=TRAINING, num_outputs=2)
    assert len(outputs) == 2
    np.testing.assert_array_equal(outputs[0], dx)
    np.testing.assert_array_equal(outputs[1], dw)


@pytest.mark.parametrize("x_shape, w_shape, attrs", [CONV[1], CONV[4], CONV[13], CONV[15]])
@pytest.mark.parametrize("outputs", [1, 2], ids=["dw", "dw-db"])
def test_conv_grad_without_dx_gives_the_same_dw_and_db(x_shape, w_shape, attrs, outputs):
    (x, w, _, dy), whole = conv_gradients(x_shape, w_shape, attrs, np.random.default_rng(14))
    attrs = {**attrs, "compute_dx": 0}
    ours = run_kernel("ConvGrad", [dy, x, w], attrs, domain=TRAINING, num_outputs=outputs)
    assert len(ours) == outputs
    for mine, want in zip(ours, whole[1:], strict=False):
        np.testing.assert_array_equal(mine, want)


def test_conv_grad_without_dx_declares_no_dx_output():
    specs = resolve(TRAINING, "ConvGrad", 1, "t")("ConvGrad", "t", {"compute_dx": 0}, 1).prepare(
        [spec((1, 3, 3, 3)), X, W], [None] * 3)
    assert specs == [W, spec((3,))]


@pytest.mark.parametrize("attrs", [{"group": 2, "pads": [1, 0, 1, 2], "strides": [2, 1]},
                                   {"group": 2, "pads": [1, 0, 1, 2], "dilations": [1, 2]}],
                         ids=["strided", "stride1"])
def test_conv_grad_in_batch_chunks_matches_one_chunk(monkeypatch, attrs):
    from edgerun.runtime.kernels import conv

    (x, w, _, dy), whole = conv_gradients((5, 4, 6, 6), (4, 2, 3, 3), attrs, np.random.default_rng(3))
    monkeypatch.setattr(conv, "COLUMN_BUDGET", 1)  # one sample per chunk
    assert_gradients_match(run_kernel("ConvGrad", [dy, x, w], attrs, domain=TRAINING), whole)


# --- pools -------------------------------------------------------------------------------------

POOLS = [
    # op, x shape, attrs
    pytest.param("MaxPool", (2, 2, 5, 6), {"kernel_shape": [2, 2]}, id="max"),
    pytest.param("MaxPool", (1, 2, 6, 6), {"kernel_shape": [3, 3], "strides": [2, 2],
                                           "pads": [1, 1, 1, 1]}, id="max-stride-pads"),
    pytest.param("MaxPool", (1, 2, 5, 5), {"kernel_shape": [2, 2], "strides": [2, 2],
                                           "ceil_mode": 1}, id="max-ceil"),
    pytest.param("MaxPool", (1, 1, 7, 6), {"kernel_shape": [2, 3], "dilations": [2, 1],
                                           "pads": [0, 1, 1, 0]}, id="max-dilated-asymmetric"),
    pytest.param("MaxPool", (1, 2, 5, 5), {"kernel_shape": [3, 3], "auto_pad": "SAME_UPPER"}, id="max-same"),
    # the last window stops short of X's end and no padding is needed (found by the cuda backend's tests)
    pytest.param("MaxPool", (2, 2, 5, 5), {"kernel_shape": [2, 2], "strides": [2, 2]}, id="max-short-windows"),
    pytest.param("MaxPool", (1, 2, 7, 6), {"kernel_shape": [3, 2], "strides": [3, 4]}, id="max-short-windows-2"),
    pytest.param("MaxPool", (2, 2, 9), {"kernel_shape": [3], "strides": [2]}, id="max-1d"),
    pytest.param("AveragePool", (2, 2, 5, 6), {"kernel_shape": [2, 2]}, id="avg"),
    pytest.param("AveragePool", (1, 2, 5, 5), {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}, id="avg-pads"),
    pytest.param("AveragePool", (1, 2, 5, 5), {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1],
                                               "count_include_pad": 1}, id="avg-count-pad"),
    pytest.param("AveragePool", (1, 2, 6, 5), {"kernel_shape": [3, 2], "strides": [2, 2],
                                               "pads": [1, 0, 0, 1], "ceil_mode": 1,
                                               "count_include_pad": 1}, id="avg-ceil"),
    pytest.param("AveragePool", (2, 1, 8), {"kernel_shape": [3], "strides": [3], "pads": [1, 1]},
                 id="avg-1d"),
    pytest.param("GlobalAveragePool", (2, 3, 4, 5), {}, id="global"),
    pytest.param("GlobalAveragePool", (2, 3, 7), {}, id="global-1d"),
]


@pytest.mark.parametrize("op, x_shape, attrs", POOLS)
def test_pool_grad_matches_finite_differences(op, x_shape, attrs):
    rng = np.random.default_rng(4)
    x = distinct(x_shape, rng)
    dy = rng.standard_normal(run_kernel(op, [x], attrs)[0].shape)
    ours = run_kernel(op + "Grad", [dy, x], attrs, domain=TRAINING)
    expected = numerical_input_gradients(lambda a: run_kernel(op, a, attrs)[0], [x], dy, [0])
    assert_gradients_match(ours, expected)


def test_max_pool_grad_ties_go_to_the_first_maximum():
    x = np.zeros((1, 1, 4, 4))
    dy = np.arange(1.0, 10.0).reshape(1, 1, 3, 3)
    (dx,) = run_kernel("MaxPoolGrad", [dy, x], {"kernel_shape": [2, 2]}, domain=TRAINING)
    expected = np.zeros((4, 4))
    expected[:3, :3] = dy[0, 0]  # every window's first (top-left) element
    np.testing.assert_array_equal(dx[0, 0], expected)


def test_max_pool_grad_overlapping_windows_add_up_at_a_shared_maximum():
    x = np.zeros((1, 1, 4, 4))
    x[0, 0, 1, 2] = 1.0  # the maximum of the four 2x2 windows (stride 1) that hold it
    dy = np.arange(1.0, 10.0).reshape(1, 1, 3, 3)
    (dx,) = run_kernel("MaxPoolGrad", [dy, x], {"kernel_shape": [2, 2]}, domain=TRAINING)
    assert dx[0, 0, 1, 2] == dy[0, 0, :2, 1:].sum()
    assert dx.sum() == dy.sum()  # the other windows pass theirs to their first element


def test_pool_grads_run_in_float32():
    rng = np.random.default_rng(5)
    x = distinct((1, 2, 6, 6), rng).astype(np.float32)
    dy = np.ones((1, 2, 3, 3), np.float32)
    for op in ("MaxPool", "AveragePool"):
        (dx,) = run_kernel(op + "Grad", [dy, x], {"kernel_shape": [2, 2], "strides": [2, 2]}, domain=TRAINING)
        assert dx.dtype == np.float32
        np.testing.assert_allclose(dx.sum(), 18.0, rtol=1e-6)  # each of 2 * 9 windows passes on 1


# --- BatchNormalization (training) ----------------------------------------------------------------

BN_SHAPES = [(4, 3), (3, 2, 2, 3), (2, 3, 5)]


def bn_inputs(shape, rng):
    c = shape[1]
    x = rng.standard_normal(shape) * 2 + 1
    return [x, rng.standard_normal(c), rng.standard_normal(c), rng.standard_normal(c), rng.uniform(0.5, 2, c)]


@pytest.mark.parametrize("shape", BN_SHAPES)
def test_batch_norm_grad_matches_finite_differences(shape):
    rng = np.random.default_rng(6)
    inputs = bn_inputs(shape, rng)
    dy = rng.standard_normal(shape)
    y, _, _, saved_mean, saved_inv_std = run_kernel("BatchNormTraining", inputs, domain=TRAINING)
    ours = run_kernel("BatchNormGrad", [dy, inputs[0], inputs[1], saved_mean, saved_inv_std], domain=TRAINING)

    def forward(args):
        return run_kernel("BatchNormTraining", args, domain=TRAINING)[0]

    assert_gradients_match(ours, numerical_input_gradients(forward, inputs, dy, [0, 1, 2]))


@pytest.mark.parametrize("shape", BN_SHAPES)
def test_batch_norm_training_matches_closed_form(shape):
    x, scale, b, running_mean, running_var = inputs = bn_inputs(shape, np.random.default_rng(7))
    attrs = {"epsilon": 1e-3, "momentum": 0.8}
    y, new_mean, new_var, saved_mean, saved_inv_std = run_kernel("BatchNormTraining", inputs, attrs,
                                                                 domain=TRAINING)
    axes = (0,) + tuple(range(2, x.ndim))
    mean, var = x.mean(axis=axes), x.var(axis=axes)
    shaped = (-1,) + (1,) * (x.ndim - 2)
    want_y = (x - mean.reshape(shaped)) / np.sqrt(var.reshape(shaped) + 1e-3) * scale.reshape(shaped)
    np.testing.assert_allclose(y, want_y + b.reshape(shaped), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(saved_mean, mean, rtol=1e-12)
    np.testing.assert_allclose(saved_inv_std, 1 / np.sqrt(var + 1e-3), rtol=1e-12)
    np.testing.assert_allclose(new_mean, running_mean * 0.8 + mean * 0.2, rtol=1e-12)
    unbiased = x.var(axis=axes, ddof=1)
    np.testing.assert_allclose(new_var, running_var * 0.8 + unbiased * 0.2, rtol=1e-12)


def test_batch_norm_training_float32_agrees_with_float64():
    inputs = bn_inputs((8, 4, 3, 3), np.random.default_rng(8))
    dy = np.random.default_rng(9).standard_normal((8, 4, 3, 3))
    for dtype, tolerance in ((np.float64, 1e-12), (np.float32, 1e-5)):
        cast = [a.astype(dtype) for a in inputs]
        outs = run_kernel("BatchNormTraining", cast, domain=TRAINING)
        grads = run_kernel("BatchNormGrad", [dy.astype(dtype), cast[0], cast[1], *outs[3:]], domain=TRAINING)
        if dtype == np.float64:
            want_outs, want_grads = outs, grads
        for mine, want in zip(outs + grads, want_outs + want_grads, strict=True):
            assert mine.dtype == dtype
            np.testing.assert_allclose(mine, want, rtol=tolerance, atol=tolerance)


# --- Dropout -------------------------------------------------------------------------------------

def prepared(op, inputs, attrs, domain=TRAINING):
    """A prepared kernel and a function running it once on `inputs` (fresh outputs)."""
    version = 1 if domain else 13
    kernel = resolve(domain, op, version, "test")(op, "test", attrs, version)
    specs = kernel.prepare([TensorSpec(a.dtype, a.shape) for a in inputs], [None] * len(inputs))

    def run():
        outputs = [np.empty(s.shape, s.dtype) for s in specs]
        kernel.run(inputs, outputs)
        return outputs

    return kernel, run


def test_dropout_training_keeps_about_one_minus_ratio_and_scales():
    x = np.random.default_rng(10).standard_normal((200, 1000)).astype(np.float32)
    y, mask = run_kernel("DropoutTraining", [x], {"ratio": 0.3, "seed": 5}, domain=TRAINING)
    assert mask.dtype == np.bool_ and abs(mask.mean() - 0.7) < 0.01
    np.testing.assert_allclose(y, np.where(mask, x / np.float32(0.7), 0), rtol=1e-6)


def test_dropout_training_masks_follow_the_seed():
    x = np.ones((64, 64))
    first = run_kernel("DropoutTraining", [x], {"seed": 3}, domain=TRAINING)[1]
    np.testing.assert_array_equal(run_kernel("DropoutTraining", [x], {"seed": 3}, domain=TRAINING)[1], first)
    assert not np.array_equal(run_kernel("DropoutTraining", [x], {"seed": 4}, domain=TRAINING)[1], first)


def test_dropout_training_advances_per_run_and_restarts_on_prepare():
    x = np.ones((32, 32))
    _, run = prepared("DropoutTraining", [x], {"seed": 1})
    first, second = run()[1], run()[1]
    assert not np.array_equal(first, second)
    _, run_again = prepared("DropoutTraining", [x], {"seed": 1})
    np.testing.assert_array_equal(run_again()[1], first)


def test_dropout_training_ratio_zero_is_identity():
    x = np.random.default_rng(11).standard_normal((5, 7))
    y, mask = run_kernel("DropoutTraining", [x], {"ratio": 0.0}, domain=TRAINING)
    assert mask.all()
    np.testing.assert_array_equal(y, x)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dropout_grad_matches_closed_form(dtype):
    rng = np.random.default_rng(12)
    dy, mask = rng.standard_normal((6, 5)).astype(dtype), rng.random((6, 5)) > 0.4
    (dx,) = run_kernel("DropoutGrad", [dy, mask], {"ratio": 0.4}, domain=TRAINING)
    assert dx.dtype == dtype
    np.testing.assert_allclose(dx, dy * mask / dtype(0.6), rtol=1e-6)


DROPOUT_INFERENCE = [
    # shapes (array literals are ratio / training_mode), attrs, opset, constant inputs, outputs
    pytest.param([(3, 4)], {"ratio": 0.3}, 7, (), 1, id="v7"),
    pytest.param([(2, 3, 4)], {}, 10, (), 1, id="v10"),
    pytest.param([(3, 4), np.array(0.2, np.float32)], {}, 12, (1,), 2, id="v12-ratio"),
    pytest.param([(3, 4), np.array(0.5, np.float32), np.array(False)], {}, 13, (1, 2), 2,
                 id="v13-training-false"),
    pytest.param([(5,), None, np.array(False)], {"seed": 3}, 13, (), 2, id="v13-mode-fed"),
]


@pytest.mark.parametrize("shapes, attrs, opset, consts, outputs", DROPOUT_INFERENCE)
def test_dropout_inference_matches_onnxruntime(shapes, attrs, opset, consts, outputs):
    check_against_onnxruntime("Dropout", shapes, attrs, opset, np.float32, consts, outputs)


@pytest.mark.parametrize("opset, mask_dtype", [(7, np.float32), (10, np.bool_), (12, np.bool_)])
def test_dropout_inference_mask_keeps_everything(opset, mask_dtype):
    # as the ONNX reference evaluator and onnxruntime from opset 12 (its opset 7-11 kernel gives zeros)
    x = np.random.default_rng(13).standard_normal((3, 4)).astype(np.float32)
    y, mask = run_kernel("Dropout", [x], {}, version=opset)
    np.testing.assert_array_equal(y, x)
    assert mask.dtype == mask_dtype and mask.all()


def test_dropout_training_mode_drops_and_rescales():
    """ONNX Dropout with training_mode true: y = x * mask / (1 - ratio), mask ~ Bernoulli(1 - ratio)."""
    x = np.ones((200, 50), np.float32)
    y, mask = run_kernel("Dropout", [x, np.array(0.25, np.float32), np.array(True)], {"seed": 3}, version=13)
    np.testing.assert_allclose(y, np.where(mask, x / 0.75, 0), rtol=1e-6)
    assert abs(mask.mean() - 0.75) < 0.02


# --- invalid nodes -------------------------------------------------------------------------------

def spec(shape, dtype=np.float64):
    return TensorSpec(np.dtype(dtype), tuple(shape))


X, W = spec((1, 2, 5, 5)), spec((3, 2, 3, 3))
CH = spec((2,))
INVALID = [
    # op, domain, input specs, constant values by index, attrs, message fragment
    ("ConvGrad", TRAINING, [spec((1, 3, 4, 4)), X, W], {}, {}, "dY is"),
    ("ConvGrad", TRAINING, [spec((1, 3, 3, 3), np.float32), X, W], {}, {}, "dY is"),
    ("ConvGrad", TRAINING, [spec((1, 3, 3, 3)), X, spec((3, 1, 3, 3))], {}, {}, "group 1"),
    ("ConvGrad", TRAINING, [spec((1, 3, 3, 3)), X], {}, {}, "expected 3..3 inputs"),
    ("ConvGrad", TRAINING, [spec((1, 3, 3, 3)), X, W], {}, {"strides": [0, 1]}, "strides"),
    ("ConvGrad", TRAINING, [spec((1, 3, 3, 3)), X, W], {}, {"compute_dx": 2}, "compute_dx"),
    ("MaxPoolGrad", TRAINING, [spec((1, 2, 4, 4)), X], {}, {"kernel_shape": [3, 3]}, "dY is"),
    ("MaxPoolGrad", TRAINING, [spec((1, 2, 3, 3), np.int64), spec((1, 2, 5, 5), np.int64)], {},
     {"kernel_shape": [3, 3]}, "expected a float"),
    ("AveragePoolGrad", TRAINING, [spec((1, 2, 3, 3)), X], {}, {}, "kernel_shape' is required"),
    ("AveragePoolGrad", TRAINING, [spec((1, 2, 3, 3)), X], {}, {"kernel_shape": [3, 3],
                                                                "pads": [3, 0, 0, 0]}, "smaller than"),
    ("GlobalAveragePoolGrad", TRAINING, [spec((1, 2, 5, 1)), X], {}, {}, "dY is"),
    ("BatchNormTraining", TRAINING, [spec((4, 2, 3)), spec((3,)), CH, CH, CH], {}, {}, "scale must be"),
    ("BatchNormTraining", TRAINING, [spec((4, 2)), CH, CH, CH, spec((2,), F32)], {}, {}, "running_var"),
    ("BatchNormTraining", TRAINING, [spec((4, 2)), CH, CH, CH, CH], {}, {"momentum": 1.5}, "momentum"),
    ("BatchNormTraining", TRAINING, [spec((4, 2)), CH, CH, CH, CH], {}, {"epsilon": float("nan")}, "epsilon"),
    ("BatchNormTraining", TRAINING, [spec((4,)), CH, CH, CH, CH], {}, {}, "rank >= 2"),
    ("BatchNormGrad", TRAINING, [spec((4, 3)), spec((4, 2)), CH, CH, CH], {}, {}, "dY is"),
    ("BatchNormGrad", TRAINING, [spec((4, 2)), spec((4, 2)), CH, CH, None], {}, {}, "required input 4"),
    ("DropoutTraining", TRAINING, [spec((3,))], {}, {"ratio": 1.0}, r"in \[0, 1\)"),
    ("DropoutTraining", TRAINING, [spec((3,))], {}, {"ratio": -0.1}, r"in \[0, 1\)"),
    ("DropoutTraining", TRAINING, [spec((3,))], {}, {"seed": -1}, "seed"),
    ("DropoutTraining", TRAINING, [spec((3,), np.int64)], {}, {}, "expected a float"),
    ("DropoutGrad", TRAINING, [spec((3,)), spec((3,), np.float64)], {}, {}, "mask"),
    ("DropoutGrad", TRAINING, [spec((3,)), spec((4,), np.bool_)], {}, {}, "mask shape"),
    ("Dropout", "", [spec((3,)), spec((2,))], {}, {}, "ratio must be a scalar"),
    ("Dropout", "", [spec((3,)), spec((), np.int64)], {}, {}, "ratio"),
    ("Dropout", "", [spec((3,), np.int64)], {}, {}, "expected a float"),
]


@pytest.mark.parametrize("op, domain, specs, values, attrs, message", INVALID)
def test_invalid_nodes_raise_model_error(op, domain, specs, values, attrs, message):
    version = 1 if domain else 13
    kernel = resolve(domain, op, version, "bad")(op, "bad", attrs, version)
    with pytest.raises(ModelError, match=message) as info:
        kernel.prepare(specs, [values.get(i) for i in range(len(specs))])
    assert "'bad'" in str(info.value)


GRAD_NODES = [  # op, input specs, attrs: valid nodes that the fuzz below mutates
    ("ConvGrad", [spec((1, 3, 3, 3)), X, W], {"pads": [0, 0, 0, 0]}),
    ("MaxPoolGrad", [spec((1, 2, 3, 3)), X], {"kernel_shape": [3, 3]}),
    ("AveragePoolGrad", [spec((1, 2, 3, 3)), X], {"kernel_shape": [3, 3], "count_include_pad": 1}),
    ("BatchNormTraining", [spec((4, 2)), CH, CH, CH, CH], {"epsilon": 1e-5, "momentum": 0.9}),
    ("DropoutTraining", [spec((3,))], {"ratio": 0.5, "seed": 0}),
    ("DropoutGrad", [spec((3,)), spec((3,), np.bool_)], {"ratio": 0.5}),
]
ATTR_VALUES = st.one_of(
    st.integers(-3, 8), st.sampled_from([2**62, -(2**40), True]), st.floats(),
    st.lists(st.integers(-2, 6), max_size=5), st.sampled_from(["SAME_UPPER", "bogus", b"\xff"]), st.none(),
)
ATTR_KEYS = st.sampled_from(["pads", "strides", "dilations", "kernel_shape", "group", "auto_pad", "ceil_mode",
                             "count_include_pad", "epsilon", "momentum", "ratio", "seed", "compute_dx"])


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(GRAD_NODES), ATTR_KEYS, ATTR_VALUES)
def test_mutated_grad_nodes_fail_only_with_model_error(node, key, value):
    op, specs, attrs = node
    kernel = resolve(TRAINING, op, 1, "fuzz")(op, "fuzz", {**attrs, key: value}, 1)
    try:
        kernel.prepare(specs, [None] * len(specs))
    except ModelError:
        pass


def test_batch_norm_training_on_one_value_per_channel_is_an_input_error():
    from edgerun.runtime.errors import InputError

    ones = np.ones(2)
    with pytest.raises(InputError, match="needs at least 2"):
        run_kernel("BatchNormTraining", [np.ones((1, 2)), ones, ones, ones, ones], domain="edgerun")

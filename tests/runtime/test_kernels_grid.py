"""GridSample and AffineGrid reference kernels, checked against onnxruntime (onnx's
ReferenceEvaluator where onnxruntime lacks the case: cubic in 3-D, 1-D sampling) and against
closed-form results, on shapes, modes and dtypes the conformance cases do not cover."""

from __future__ import annotations

import itertools

import numpy as np
import onnxruntime as ort
import pytest
from onnx import helper
from onnx.reference import ReferenceEvaluator

from edgerun.runtime.errors import ModelError
from edgerun.runtime.kernels import TensorSpec, resolve


def run_kernel(op, arrays, attrs=None, opset=20, consts=()):
    """resolve -> prepare -> run into a NaN-filled (77 for ints) output; inputs are read-only."""
    for a in arrays:
        a.flags.writeable = False
    kernel = resolve("", op, opset, "n")(op, "n", dict(attrs or {}), opset)
    values = [a if i in consts else None for i, a in enumerate(arrays)]
    (spec,) = kernel.prepare([TensorSpec(a.dtype, a.shape) for a in arrays], values)
    out = np.full(spec.shape, np.nan if spec.dtype.kind == "f" else 77, spec.dtype)
    kernel.run(list(arrays), [out])
    return out


def reference(op, arrays, attrs=None, opset=20, evaluator="ort"):
    """onnxruntime (or onnx's ReferenceEvaluator) on a one-node model."""
    names = [f"in{i}" for i in range(len(arrays))]
    node = helper.make_node(op, names, ["out"], **(attrs or {}))
    inputs = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
              for n, a in zip(names, arrays, strict=True)]
    graph = helper.make_graph([node], "g", inputs, [helper.make_value_info("out", helper.TypeProto())])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)
    feeds = dict(zip(names, arrays, strict=True))
    if evaluator == "onnx":
        return ReferenceEvaluator(model).run(None, feeds)[0]
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]


def sample_inputs(x_shape, grid_shape, dtype, seed=0, spread=1.7):
    """X ~ N(0, 1) and a grid uniform in [-spread, spread]: points outside [-1, 1] included."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal(x_shape).astype(dtype), rng.uniform(-spread, spread, grid_shape).astype(dtype)


# --- GridSample against onnxruntime ----------------------------------------------------------

SPATIAL_2D = [((2, 3, 5, 4), (2, 6, 7, 2)), ((1, 2, 1, 3), (1, 4, 2, 2)), ((1, 1, 2, 2), (1, 3, 3, 2))]
SPATIAL_3D = [((2, 2, 3, 4, 5), (2, 3, 4, 2, 3)), ((1, 1, 1, 2, 3), (1, 2, 2, 2, 3))]
PADDINGS = ["zeros", "border", "reflection"]
DTYPES = [np.float32, np.float64]

ORT_CASES = (
    [(16, m, p, a, np.float32, s) for m, p, a, s in itertools.product(["bilinear", "nearest", "bicubic"], PADDINGS,
                                                                      [0, 1], SPATIAL_2D[:1])]  # ORT: float only
    + [(20, m, p, a, d, s) for m, p, a, d, s in itertools.product(["linear", "nearest", "cubic"], PADDINGS, [0, 1],
                                                                  DTYPES, SPATIAL_2D)]
    + [(20, m, p, a, d, s) for m, p, a, d, s in itertools.product(["linear", "nearest"], PADDINGS, [0, 1], DTYPES,
                                                                  SPATIAL_3D)]
)


@pytest.mark.parametrize("opset, mode, padding, align, dtype, shapes", ORT_CASES)
def test_gridsample_matches_onnxruntime(opset, mode, padding, align, dtype, shapes):
    x, grid = sample_inputs(*shapes, dtype)
    attrs = {"mode": mode, "padding_mode": padding, "align_corners": align}
    got = run_kernel("GridSample", [x, grid], attrs, opset)
    assert got.dtype == dtype
    np.testing.assert_allclose(got, reference("GridSample", [x, grid], attrs, opset), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("x_shape, grid_shape, mode, padding, align", [
    ((1, 2, 3, 4, 5), (1, 2, 3, 2, 3), "cubic", "zeros", 0),
    ((1, 2, 3, 4, 5), (1, 2, 3, 2, 3), "cubic", "reflection", 1),
    ((2, 2, 6), (2, 7, 1), "linear", "reflection", 0),
    ((2, 2, 6), (2, 7, 1), "cubic", "zeros", 1),
    ((2, 2, 6), (2, 7, 1), "nearest", "border", 0),
])
def test_gridsample_beyond_onnxruntime_matches_onnx_reference(x_shape, grid_shape, mode, padding, align):
    x, grid = sample_inputs(x_shape, grid_shape, np.float32, seed=3)
    attrs = {"mode": mode, "padding_mode": padding, "align_corners": align}
    want = reference("GridSample", [x, grid], attrs, evaluator="onnx")
    np.testing.assert_allclose(run_kernel("GridSample", [x, grid], attrs), want, rtol=1e-5, atol=1e-5)


# --- GridSample closed forms -----------------------------------------------------------------

def row_grid(xs):
    """A (1, 1, len(xs), 2) grid of points (x, 0) on a one-row image."""
    return np.array([[[[v, 0.0] for v in xs]]], np.float32)


def test_nearest_rounds_half_to_even():
    x = np.arange(5, dtype=np.float32).reshape(1, 1, 1, 5)
    grid = row_grid([-0.75, -0.25, 0.25, 0.75])  # pixel positions 0.5, 1.5, 2.5, 3.5 with align_corners
    attrs = {"mode": "nearest", "align_corners": 1}
    got = run_kernel("GridSample", [x, grid], attrs)
    np.testing.assert_array_equal(got.reshape(-1), [0, 2, 2, 4])
    np.testing.assert_array_equal(got, reference("GridSample", [x, grid], attrs))


@pytest.mark.parametrize("padding, want", [
    ("zeros", [0.0, 0.5, 0.0]),  # outside reads 0; -0.5 is halfway between the padding and pixel 0
    ("border", [1.0, 1.0, 2.0]),  # the edge pixels repeat
    ("reflection", [1.0, 1.0, 1.0]),  # mirrored at -0.5 and 1.5: positions -1 and 3 read pixel 0
])
def test_linear_padding_modes_on_a_two_pixel_row(padding, want):
    x = np.array([1.0, 2.0], np.float32).reshape(1, 1, 1, 2)
    grid = row_grid([-1.5, -1.0, 2.5])  # align_corners=0, width 2: position n + 0.5 = -1, -0.5, 3
    got = run_kernel("GridSample", [x, grid], {"padding_mode": padding})
    np.testing.assert_allclose(got.reshape(-1), want, atol=1e-6)
    np.testing.assert_allclose(got, reference("GridSample", [x, grid], {"padding_mode": padding}), atol=1e-6)


def test_reflection_mirrors_the_row_at_its_outer_edges():
    x = np.array([1.0, 2.0, 4.0], np.float32).reshape(1, 1, 1, 3)
    # align_corners=0, width 3: n = (2p + 1) / 3 - 1; positions -1, -2, 3, 4 mirror to 0, 1, 2, 1
    grid = row_grid([(2 * p + 1) / 3 - 1 for p in (-1, -2, 3, 4)])
    got = run_kernel("GridSample", [x, grid], {"padding_mode": "reflection"})
    np.testing.assert_allclose(got.reshape(-1), [1.0, 2.0, 4.0, 2.0], atol=1e-5)


def test_cubic_border_reads_interior_pixels_near_the_edge():
    """The image is extended by its edge pixels; the point is not moved to the edge first, so a
    point just outside still sees the interior (onnxruntime and PyTorch; see the module docstring)."""
    x = np.array([0.0, 0.0, 0.0, 8.0], np.float32).reshape(1, 1, 1, 4)
    grid = row_grid([1.1])  # position 3.7 with align_corners=0, beyond the last center (3)
    attrs = {"mode": "cubic", "padding_mode": "border"}
    got = run_kernel("GridSample", [x, grid], attrs)
    f, a = 0.7, -0.75  # taps 2, 3, 4, 5 -> pixels 2, 3, 3, 3
    w_far = ((a * (f + 1) - 5 * a) * (f + 1) + 8 * a) * (f + 1) - 4 * a
    np.testing.assert_allclose(got.reshape(-1), [8.0 * (1 - w_far)], rtol=1e-5)
    np.testing.assert_allclose(got, reference("GridSample", [x, grid], attrs), rtol=1e-5)


def test_integer_input_nearest_is_exact_and_linear_rounds_and_saturates():
    big = np.array([2**62 + 1, 3], np.int64).reshape(1, 1, 1, 2)
    got = run_kernel("GridSample", [big, row_grid([-0.5, 0.5])], {"mode": "nearest"})
    np.testing.assert_array_equal(got.reshape(-1), [2**62 + 1, 3])
    u8 = np.array([1, 2, 255, 255], np.uint8).reshape(1, 1, 1, 4)
    got = run_kernel("GridSample", [u8, row_grid([-0.5, 0.0, 0.5])], {"align_corners": 1})  # positions 0.75, 1.5, 2.25
    np.testing.assert_array_equal(got.reshape(-1), [2, 128, 255])  # 1.75, 128.5 (half to even), 255


def test_non_finite_coordinates():
    x = np.array([1.0, 2.0], np.float32).reshape(1, 1, 1, 2)
    grid = row_grid([np.nan, np.inf, -np.inf])
    np.testing.assert_array_equal(run_kernel("GridSample", [x, grid]).reshape(-1), [0, 0, 0])
    got = run_kernel("GridSample", [x, grid], {"padding_mode": "border"})
    np.testing.assert_array_equal(got.reshape(-1), [0, 2, 1])  # NaN reads 0; +-inf read the edge pixels


def test_empty_grid_gives_an_empty_output():
    x = np.ones((2, 3, 4, 4), np.float32)
    assert run_kernel("GridSample", [x, np.zeros((2, 0, 5, 2), np.float32)]).shape == (2, 3, 0, 5)


# --- AffineGrid ------------------------------------------------------------------------------

@pytest.mark.parametrize("size, align, dtype", [
    (s, a, d) for s, a, d in itertools.product([(2, 3, 4, 5), (1, 1, 2, 3), (2, 1, 3, 4, 2)], [0, 1], DTYPES)
] + [((1, 1, 1, 3), 0, np.float32), ((1, 2, 2, 1, 3), 0, np.float64)])  # a size-1 axis with align_corners: below
def test_affine_grid_matches_onnxruntime(size, align, dtype):
    r = len(size) - 2
    theta = np.random.default_rng(5).standard_normal((size[0], r, r + 1)).astype(dtype)
    size = np.array(size, np.int64)
    got = run_kernel("AffineGrid", [theta, size], {"align_corners": align}, consts=(1,))
    assert got.dtype == dtype and got.shape == (size[0], *size[2:], r)
    np.testing.assert_allclose(got, reference("AffineGrid", [theta, size], {"align_corners": align}),
                               rtol=1e-5, atol=1e-6)


def test_affine_grid_single_pixel_with_align_corners_is_its_center():
    """Any coordinate names the one pixel; like PyTorch, its center 0 (onnxruntime says 1, the
    ONNX function body NaN), so the grid is theta's translation column."""
    theta = np.array([[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]], np.float32)
    got = run_kernel("AffineGrid", [theta, np.array([1, 1, 1, 1], np.int64)], {"align_corners": 1}, consts=(1,))
    np.testing.assert_array_equal(got.reshape(-1), [3.0, 6.0])


@pytest.mark.parametrize("size, align", [((2, 3, 4, 5), 0), ((2, 3, 4, 5), 1), ((1, 2, 3, 4, 2), 0)])
def test_identity_affine_grid_samples_the_image_back(size, align):
    r = len(size) - 2
    theta = np.tile(np.eye(r, r + 1, dtype=np.float64), (size[0], 1, 1))
    grid = run_kernel("AffineGrid", [theta, np.array(size, np.int64)], {"align_corners": align}, consts=(1,))
    x = np.random.default_rng(2).standard_normal(size)
    np.testing.assert_allclose(run_kernel("GridSample", [x, grid], {"align_corners": align}), x, atol=1e-12)


# --- bad inputs ------------------------------------------------------------------------------

F32 = np.float32


@pytest.mark.parametrize("op, arrays, attrs, opset, error", [
    ("GridSample", [np.zeros((1, 1, 3, 3), F32), np.zeros((1, 2, 2, 3), F32)], {}, 20, r"grid: expected shape"),
    ("GridSample", [np.zeros((1, 1, 3, 3), F32), np.zeros((1, 2, 2, 2, 2), F32)], {}, 20, r"grid: expected shape"),
    ("GridSample", [np.zeros((1, 1, 3, 3), F32), np.zeros((2, 2, 2, 2), F32)], {}, 20, "differs from X batch"),
    ("GridSample", [np.zeros((1, 1, 3, 3), F32), np.zeros((1, 2, 2, 2), F32)], {"mode": "bilinear"}, 20,
     r"mode 'bilinear' is not one of \('linear', 'nearest', 'cubic'\) at opset 20"),
    ("GridSample", [np.zeros((1, 1, 3, 3), F32), np.zeros((1, 2, 2, 2), F32)], {"mode": "linear"}, 16,
     r"mode 'linear' is not one of \('bilinear', 'nearest', 'bicubic'\) at opset 16"),
    ("GridSample", [np.zeros((1, 1, 3, 3), F32), np.zeros((1, 2, 2, 2), F32)], {"padding_mode": "wrap"}, 20,
     "padding_mode 'wrap' is not one of"),
    ("GridSample", [np.zeros((1, 1, 2, 3, 3), F32), np.zeros((1, 2, 2, 2, 3), F32)], {}, 16,
     r"X: expected rank 4 \(N, C, spatial...\)"),
    ("GridSample", [np.zeros((1, 1), F32), np.zeros((1, 0), F32)], {}, 20, r"X: expected rank >= 3"),
    ("GridSample", [np.zeros((1, 1, 0, 3), F32), np.zeros((1, 2, 2, 2), F32)], {}, 20, "has no pixels to sample"),
    ("GridSample", [np.zeros((1, 1, 3, 3), F32), np.zeros((1, 2, 2, 2), np.int64)], {}, 20,
     "grid: expected a float tensor"),
    ("GridSample", [np.zeros((1, 1, 3, 3), bool), np.zeros((1, 2, 2, 2), F32)], {"mode": "linear"}, 20,
     "X: expected a float/signed int/unsigned int tensor, got bool"),
    ("GridSample", [np.zeros((1, 1, *[1] * 7), F32), np.zeros((1, *[1] * 7, 7), F32)], {"mode": "cubic"}, 20,
     r"reads 4\*\*7 points per output"),
    ("AffineGrid", [np.zeros((1, 2, 3), F32), np.array([1, 1, 4], np.int64)], {}, 20, "must be 4 or 5 non-negative"),
    ("AffineGrid", [np.zeros((1, 2, 3), F32), np.array([1, 1, -4, 4], np.int64)], {}, 20,
     "must be 4 or 5 non-negative"),
    ("AffineGrid", [np.zeros((1, 3, 4), F32), np.array([1, 1, 4, 4], np.int64)], {}, 20,
     r"theta: expected shape \(1, 2, 3\) for size \[1, 1, 4, 4\], got \(1, 3, 4\)"),
    ("AffineGrid", [np.zeros((2, 2, 3), F32), np.array([1, 1, 4, 4], np.int64)], {}, 20, "theta: expected shape"),
    ("AffineGrid", [np.zeros((1, 2, 3), np.int64), np.array([1, 1, 4, 4], np.int64)], {}, 20,
     "theta: expected a float tensor"),
    ("AffineGrid", [np.zeros((1, 2, 3), F32), np.array([1.0, 1, 4, 4], F32)], {}, 20,
     "size: expected a 1-D int tensor"),
])
def test_bad_inputs_raise_model_error(op, arrays, attrs, opset, error):
    with pytest.raises(ModelError, match=error):
        run_kernel(op, arrays, attrs, opset, consts=(1,) if op == "AffineGrid" else ())


def test_affine_grid_needs_size_at_prepare_time():
    with pytest.raises(ModelError, match="input 1 must be known"):
        run_kernel("AffineGrid", [np.zeros((1, 2, 3), F32), np.array([1, 1, 4, 4], np.int64)])

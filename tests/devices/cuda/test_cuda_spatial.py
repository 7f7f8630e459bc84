"""The cuda backend's pools, global pools, Resize / Upsample and DepthToSpace / SpaceToDepth
against the CPU reference (devices/cuda/spatial.py), under numba's CUDA simulator: every
claimed attribute variant in float32 and float64, NaN propagation, and the cases the claims
refuse running on the host."""

from __future__ import annotations

import numpy as np
import pytest

import edgerun.devices.cuda.spatial  # noqa: F401 - registers the claims
from tests.devices.cuda.test_cuda_normalization import DTYPES, check, data

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NaN and inf inputs, on purpose


# ----------------------------------------------------------------------------- windowed pools
POOL_WINDOWS = [
    dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
    dict(kernel_shape=[2, 3], strides=[1, 2], pads=[0, 1, 1, 0]),
    dict(kernel_shape=[3, 2], strides=[2, 1], ceil_mode=1),
    dict(kernel_shape=[3, 3], strides=[2, 2], pads=[2, 1, 0, 2], ceil_mode=1),
    dict(kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER"),
    dict(kernel_shape=[2, 4], strides=[2, 3], auto_pad="SAME_LOWER"),
    dict(kernel_shape=[2, 2], auto_pad="VALID"),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("window", POOL_WINDOWS + [dict(kernel_shape=[2, 3], dilations=[2, 2], pads=[1, 1, 1, 1]),
                                                   dict(kernel_shape=[3, 3], dilations=[2, 1], ceil_mode=1)])
def test_max_pool(window, dtype):
    check("MaxPool", {"x": data((2, 3, 7, 9), dtype, special=True)}, dtype, window, opset=12)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("include_pad", [0, 1])
@pytest.mark.parametrize("window", POOL_WINDOWS)
def test_average_pool(window, include_pad, dtype):
    attrs = {**window, "count_include_pad": include_pad}
    check("AveragePool", {"x": data((2, 3, 7, 9), dtype)}, dtype, attrs, opset=11)


@pytest.mark.parametrize("dtype", DTYPES)
def test_average_pool_with_dilations_and_nan(dtype):
    attrs = dict(kernel_shape=[2, 2], dilations=[2, 3], pads=[1, 0, 1, 1], count_include_pad=1)
    check("AveragePool", {"x": data((2, 3, 7, 9), dtype, special=True)}, dtype, attrs, opset=19)


def test_max_pool_with_indices_runs_on_the_host():
    check("MaxPool", {"x": data((1, 2, 5, 5), np.float32)}, np.float32, dict(kernel_shape=[2, 2]),
          outputs=("y", ("indices", np.int64)), opset=12, device=False)


@pytest.mark.parametrize("op,shape", [("MaxPool", (2, 3, 9)), ("AveragePool", (1, 2, 3, 4, 5))])
def test_pool_of_one_or_three_spatial_axes_runs_on_the_host(op, shape):
    rank = len(shape) - 2
    check(op, {"x": data(shape, np.float32)}, np.float32, dict(kernel_shape=[2] * rank), opset=12, device=False)


# ----------------------------------------------------------------------------- global pools
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", ["GlobalAveragePool", "GlobalMaxPool"])
@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (3, 2, 11), (1, 2, 2, 3, 3)])
def test_global_pool(op, shape, dtype):
    check(op, {"x": data(shape, dtype, special=True)}, dtype)


# ----------------------------------------------------------------------------- resize
TRANSFORMS = ["half_pixel", "asymmetric", "align_corners", "pytorch_half_pixel", "tf_half_pixel_for_nn"]
EMPTY = np.zeros(0, np.float32)


def _resize(x: np.ndarray, dtype, attrs: dict, scales=None, sizes=None, device: bool = True, opset: int = 18) -> None:
    constants = {"roi": EMPTY, "scales": np.float32(scales) if scales is not None else EMPTY}
    if sizes is not None:
        constants["sizes"] = np.int64(sizes)
    check("Resize", {"x": x}, dtype, attrs, constants, opset=opset, device=device)


@pytest.mark.parametrize("nearest_mode,dtype", [("round_prefer_floor", np.float64), ("round_prefer_floor", np.float32),
                                                ("round_prefer_ceil", np.float32), ("floor", np.float32),
                                                ("ceil", np.float32)])
@pytest.mark.parametrize("transform", TRANSFORMS)
def test_resize_nearest(transform, nearest_mode, dtype):
    attrs = dict(mode="nearest", coordinate_transformation_mode=transform, nearest_mode=nearest_mode)
    _resize(data((2, 3, 5, 7), dtype), dtype, attrs, sizes=[2, 3, 9, 4])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("transform", TRANSFORMS[:4])
@pytest.mark.parametrize("scales", [[1, 1, 1.5, 2.5], [1, 1, 0.6, 0.5]])
def test_resize_linear_by_scales(transform, scales, dtype):
    attrs = dict(mode="linear", coordinate_transformation_mode=transform)
    _resize(data((2, 3, 5, 7), dtype, special=True), dtype, attrs, scales=scales)


@pytest.mark.parametrize("shape,sizes", [((3, 5, 4), (3, 7, 9)), ((1, 2, 2, 4, 3), (1, 2, 2, 4, 7)), ((4, 6), (3, 6))])
def test_resize_of_the_last_two_axes_at_any_rank(shape, sizes):
    _resize(data(shape, np.float64), np.float64, dict(mode="linear"), sizes=sizes)


def test_resize_opset_10_and_upsample():
    x = data((1, 2, 3, 4), np.float32)
    check("Resize", {"x": x}, np.float32, dict(mode="nearest"), {"scales": np.float32([1, 1, 2, 1.5])}, opset=10)
    check("Upsample", {"x": x}, np.float32, dict(mode="linear"), {"scales": np.float32([1, 1, 2, 3])}, opset=9)


@pytest.mark.parametrize("attrs,sizes", [
    (dict(mode="cubic"), [1, 2, 7, 8]),
    (dict(mode="linear", coordinate_transformation_mode="half_pixel_symmetric"), [1, 2, 7, 8]),
    (dict(mode="linear", antialias=1), [1, 2, 3, 2]),
    (dict(mode="nearest"), [1, 4, 7, 8]),  # the channel axis too
])
def test_resize_refused_runs_on_the_host(attrs, sizes):
    _resize(data((1, 2, 5, 4), np.float32), np.float32, attrs, sizes=sizes, device=False)


# ----------------------------------------------------------------------------- depth <-> space
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode,blocksize,shape", [("DCR", 2, (2, 8, 3, 5)), ("CRD", 2, (2, 8, 3, 5)),
                                                  ("CRD", 3, (1, 18, 2, 3))])
def test_depth_to_space(mode, blocksize, shape, dtype):
    check("DepthToSpace", {"x": data(shape, dtype)}, dtype, dict(mode=mode, blocksize=blocksize), opset=13)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("blocksize,shape", [(2, (2, 3, 6, 4)), (3, (1, 2, 3, 9))])
def test_space_to_depth(blocksize, shape, dtype):
    check("SpaceToDepth", {"x": data(shape, dtype)}, dtype, dict(blocksize=blocksize), opset=13)


@pytest.mark.parametrize("op,dtype", [("GlobalAveragePool", np.float64), ("GlobalMaxPool", np.float32)])
def test_global_pool_of_large_planes(op, dtype):  # a thread block per plane
    check(op, {"x": data((1, 2, 12, 11), dtype, special=True)}, dtype)

"""The cuda backend's spatial ops on float tensors: MaxPool and AveragePool over 2-D windows,
GlobalAveragePool and GlobalMaxPool, Resize and Upsample of the last two axes, DepthToSpace
and SpaceToDepth.

Each reads what the reference prepare worked out (runtime.kernels.pool, global_pool, resize,
transpose): the pools their `Window` (auto_pad resolved into explicit pads, ceil_mode into the
output size) and AveragePool's divisor per output; Resize its per-axis `AxisSampling` tables,
so every coordinate transform and nearest rounding is the reference's own. One GPU thread
computes one output element (the global pools reduce each plane with devices.cuda.normalization's
`reduce_lines`: a thread, or a block for a large plane); maxima propagate NaN as np.maximum does.
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda

from edgerun.devices.cuda.claims import FLOATS, DeviceRun, StepSpec, claims, launch_1d
from edgerun.devices.cuda.normalization import MAX, MEAN, launch_lines, reduce_lines


# ----------------------------------------------------------------------------- windowed pools
@cuda.jit
def _pool_2d(x, geometry, divisor, average, out):
    """out (planes, oh, ow) = max, or sum / divisor[oy, ox] with `average`, over each window
    of x (planes, h, w); window taps outside x are skipped (padding)."""
    h, w, oh, ow, kh, kw, sh, sw, dh, dw, ph, pw = geometry
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    while i < out.size:
        ox = i % ow
        rest = i // ow
        oy = rest % oh
        base = (rest // oh) * h * w
        y0 = oy * sh - ph
        x0 = ox * sw - pw
        acc = x.dtype.type(0) if average else x.dtype.type(-math.inf)
        for a in range(kh):
            iy = y0 + a * dh
            if 0 <= iy < h:
                for b in range(kw):
                    ix = x0 + b * dw
                    if 0 <= ix < w:
                        v = x[base + iy * w + ix]
                        if average:
                            acc += v
                        elif v > acc or v != v:
                            acc = v
        if average:
            acc = acc / divisor[oy * ow + ox]
        out[i] = acc
        i += stride


def _pool_run(step: StepSpec, average: bool) -> DeviceRun | None:
    x = step.inputs[0]
    window = step.kernel.params.window  # PoolParams
    if x.dtype not in FLOATS or len(window.kernel) != 2 or any(v is not None for v in step.node.outputs[1:]):
        return None
    geometry = (*window.in_shape, *window.out_shape, *window.kernel, *window.strides, *window.dilations,
                *window.pads_begin)
    counts = step.kernel.divisor if average else np.ones(1)
    divisor = cuda.to_device(np.ascontiguousarray(counts, x.dtype).reshape(-1))
    n, m = x.size, step.outputs[0].size

    def run(ins, outs, ctx):
        launch_1d(_pool_2d, m, ctx, ins[0].reshape(n), geometry, divisor, average, outs[0].reshape(m))

    return run


@claims("MaxPool")
def max_pool(step: StepSpec) -> DeviceRun | None:
    """Float 2-D MaxPool: kernel, strides, dilations, pads (auto_pad as the reference resolves
    it), ceil_mode. Refuses the Indices output, 1-D and 3-D windows and int8/uint8."""
    return _pool_run(step, average=False)


@claims("AveragePool")
def average_pool(step: StepSpec) -> DeviceRun | None:
    """Float 2-D AveragePool: kernel, strides, pads, ceil_mode and count_include_pad (the
    reference's divisor per output). Refuses 1-D and 3-D windows."""
    return _pool_run(step, average=True)


# ----------------------------------------------------------------------------- global pools
def _global_pool_run(step: StepSpec, op: int) -> DeviceRun | None:
    x = step.inputs[0]
    if x.dtype not in FLOATS or x.size == 0:
        return None
    planes, n = x.shape[0] * x.shape[1], x.size

    def run(ins, outs, ctx):
        launch_lines(reduce_lines, planes, n // planes, 1, ctx, ins[0].reshape(n), outs[0].reshape(planes),
                     n // planes, 1, op)

    return run


@claims("GlobalAveragePool")
def global_average_pool(step: StepSpec) -> DeviceRun | None:
    """Float GlobalAveragePool of any rank: the mean of each (n, c) plane."""
    return _global_pool_run(step, MEAN)


@claims("GlobalMaxPool")
def global_max_pool(step: StepSpec) -> DeviceRun | None:
    """Float GlobalMaxPool of any rank: the maximum of each (n, c) plane (NaN propagates)."""
    return _global_pool_run(step, MAX)


# ----------------------------------------------------------------------------- resize
@cuda.jit
def _resample_nearest(x, iy, ix, h, w, out):
    """out (planes, oh, ow) [p, oy, ox] = x (planes, h, w) [p, iy[oy], ix[ox]]."""
    oh, ow = iy.size, ix.size
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    while i < out.size:
        ox = i % ow
        rest = i // ow
        out[i] = x[(rest // oh) * h * w + iy[rest % oh] * w + ix[ox]]
        i += stride


@cuda.jit
def _resample_linear(x, iy, wy, ix, wx, h, w, out):
    """out[p, oy, ox] = sum over taps a, b of wy[oy, a] * wx[ox, b] * x[p, iy[oy, a], ix[ox, b]]."""
    oh, ty = iy.shape
    ow, tx = ix.shape
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    while i < out.size:
        ox = i % ow
        rest = i // ow
        oy = rest % oh
        base = (rest // oh) * h * w
        acc = x.dtype.type(0)
        for a in range(ty):
            row = base + iy[oy, a] * w
            part = x.dtype.type(0)
            for b in range(tx):
                part += wx[ox, b] * x[row + ix[ox, b]]
            acc += wy[oy, a] * part
        out[i] = acc
        i += stride


RESIZE_TRANSFORMS = ("half_pixel", "asymmetric", "align_corners", "pytorch_half_pixel", "tf_half_pixel_for_nn")


def _axis_taps(plan, size: int, nearest: bool, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:  # noqa: ANN001
    """(index, weights) an axis reads: (out,) picks when `nearest`, else (out, taps) each; the
    identity for an axis that is not resampled (plan None)."""
    if plan is None:
        index, weights = np.arange(size)[:, None], np.ones((size, 1))
    elif nearest:  # one weight is 1: the reference's pick
        index = plan.index[np.arange(len(plan.index)), np.argmax(plan.weights, axis=1)][:, None]
        weights = np.ones(index.shape)
    else:
        index, weights = plan.index, plan.weights
    return np.ascontiguousarray(index, np.int64), np.ascontiguousarray(weights, dtype)


def _resample_run(step: StepSpec) -> DeviceRun | None:
    x, kernel = step.inputs[0], step.kernel
    rank = len(x.shape)
    plans = {p.axis: p for p in kernel.plans}
    if (x.dtype not in FLOATS or rank < 2 or x.size == 0 or step.attr("mode", "nearest") not in ("nearest", "linear")
            or any(a < rank - 2 or p.outside is not None for a, p in plans.items())):
        return None
    y = step.outputs[0]
    (iy, wy), (ix, wx) = (_axis_taps(plans.get(a), x.shape[a], kernel.nearest, x.dtype) for a in (rank - 2, rank - 1))
    if kernel.nearest:
        iy, ix = iy.reshape(-1), ix.reshape(-1)
    iy, wy, ix, wx = (cuda.to_device(t) for t in (iy, wy, ix, wx))
    h, w = x.shape[-2:]
    n, m = x.size, y.size

    def run(ins, outs, ctx):
        if kernel.nearest:
            launch_1d(_resample_nearest, m, ctx, ins[0].reshape(n), iy, ix, h, w, outs[0].reshape(m))
        else:
            launch_1d(_resample_linear, m, ctx, ins[0].reshape(n), iy, wy, ix, wx, h, w, outs[0].reshape(m))

    return run


@claims("Resize")
def resize(step: StepSpec) -> DeviceRun | None:
    """Float Resize of the last two axes (any rank >= 2), by scales or sizes: mode nearest (every
    nearest_mode) or linear, coordinate_transformation_mode in RESIZE_TRANSFORMS (opset 10's
    asymmetric too). Refuses cubic, antialias, tf_crop_and_resize, half_pixel_symmetric and
    resizing any other axis."""
    transform = step.attr("coordinate_transformation_mode", "half_pixel")
    if (step.node.version >= 11 and transform not in RESIZE_TRANSFORMS) or step.attr("antialias", 0):
        return None
    return _resample_run(step)


@claims("Upsample")
def upsample(step: StepSpec) -> DeviceRun | None:
    """Float Upsample (nearest or linear) of the last two axes; refuses resampling other axes."""
    return _resample_run(step)


# ----------------------------------------------------------------------------- depth <-> space
@cuda.jit
def _gather_permuted(x, dims, strides, out):
    """out (C-order over `dims`) [i] = x[sum of i's index along each dim * strides[dim]]."""
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    while i < out.size:
        rest = i
        src = 0
        for k in range(dims.size - 1, -1, -1):
            q = rest // dims[k]
            src += (rest - q * dims[k]) * strides[k]
            rest = q
        out[i] = x[src]
        i += stride


def _depth_space_run(step: StepSpec) -> DeviceRun | None:
    """DepthToSpace / SpaceToDepth as the reference's reshape (kernel.split), transpose
    (kernel.perm) and reshape: a gather with the permuted strides."""
    x, kernel = step.inputs[0], step.kernel
    if x.dtype not in FLOATS or x.size == 0:
        return None
    split = kernel.split
    split_strides = [math.prod(split[k + 1:]) for k in range(len(split))]
    dims = cuda.to_device(np.array([split[p] for p in kernel.perm], np.int64))
    strides = cuda.to_device(np.array([split_strides[p] for p in kernel.perm], np.int64))
    n = x.size

    def run(ins, outs, ctx):
        launch_1d(_gather_permuted, n, ctx, ins[0].reshape(n), dims, strides, outs[0].reshape(n))

    return run


@claims("DepthToSpace")
def depth_to_space(step: StepSpec) -> DeviceRun | None:
    """Float DepthToSpace, DCR and CRD."""
    return _depth_space_run(step)


@claims("SpaceToDepth")
def space_to_depth(step: StepSpec) -> DeviceRun | None:
    """Float SpaceToDepth (DCR, and CRD from opset 28)."""
    return _depth_space_run(step)

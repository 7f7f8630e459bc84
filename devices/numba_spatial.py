"""The "numba" backend's fast paths for convolutional networks: 2-D Conv and GlobalAveragePool
on float NCHW tensors.

The reference Conv builds its im2col columns with one numpy call per kernel tap after a padded
copy, which on the small images of edge models costs more than the arithmetic. Here one compiled
pass gathers the columns straight from the unpadded input and BLAS does the multiply (one matmul
per group, in a single call, for grouped Conv); one more pass adds the bias and a fused Relu, and
other fused activations run after it as in the reference. Other ranks, integer types and
depthwise Conv (one input channel per group) stay on the reference path: for depthwise, whose
per-channel products are too small for BLAS, numpy's batched matmul over the gathered taps beat
a compiled direct loop 2-3x here. So does MaxPool's per-tap np.maximum over strided views,
except for the common 2x2, stride-2 window, which has a compiled pass of its own.

Earns its place in benchmarks/bench_cnn.py.
"""

from __future__ import annotations

from math import prod

import numpy as np
from numba import njit

from edgerun.runtime.kernels.conv import ConvParams
from edgerun.runtime.kernels.fused import apply_activation
from edgerun.runtime.kernels.registry import accelerate
from edgerun.runtime.kernels.spatial import Window, scratch

BACKEND = "numba"
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


@njit(cache=True, nogil=True)
def im2col_2d(x, cols, kh, kw, sh, sw, dh, dw, ph, pw, oh, ow):  # pragma: no cover - compiled
    """cols[n, (c*kh + i)*kw + j, y*ow + z] = x[n, c, y*sh - ph + i*dh, z*sw - pw + j*dw], 0 outside."""
    n_, c_, h, w = x.shape
    for n in range(n_):
        for c in range(c_):
            for i in range(kh):
                for j in range(kw):
                    row = (c * kh + i) * kw + j
                    for y in range(oh):
                        src_y = y * sh - ph + i * dh
                        base = y * ow
                        if src_y < 0 or src_y >= h:
                            for z in range(ow):
                                cols[n, row, base + z] = 0.0
                            continue
                        for z in range(ow):
                            src_x = z * sw - pw + j * dw
                            if 0 <= src_x < w:
                                cols[n, row, base + z] = x[n, c, src_y, src_x]
                            else:
                                cols[n, row, base + z] = 0.0


@njit(cache=True, nogil=True)
def add_bias(out, bias, relu):  # pragma: no cover - compiled
    """out[n, m, p] += bias[m], then Relu if asked (NaN stays NaN, as with np.maximum)."""
    n_, m_, p_ = out.shape
    for n in range(n_):
        for m in range(m_):
            b = bias[m]
            for p in range(p_):
                v = out[n, m, p] + b
                out[n, m, p] = 0.0 if (relu and v < 0.0) else v


@njit(cache=True, nogil=True)
def relu_inplace(out):  # pragma: no cover - compiled
    flat = out.reshape(-1)
    for i in range(flat.size):
        if flat[i] < 0.0:
            flat[i] = 0.0


@njit(inline="always")
def _max_nan(a, b):  # pragma: no cover - compiled
    """max(a, b) that returns NaN when either is NaN, as np.maximum does."""
    return a if (a > b or a != a) else b


@njit(cache=True, nogil=True)
def max_pool_2x2(x, out):  # pragma: no cover - compiled
    """MaxPool with a 2x2 window and stride 2 over windows that lie inside x."""
    n_, c_ = x.shape[0], x.shape[1]
    oh, ow = out.shape[2], out.shape[3]
    for n in range(n_):
        for c in range(c_):
            for y in range(oh):
                for z in range(ow):
                    top = _max_nan(x[n, c, 2 * y, 2 * z], x[n, c, 2 * y, 2 * z + 1])
                    bottom = _max_nan(x[n, c, 2 * y + 1, 2 * z], x[n, c, 2 * y + 1, 2 * z + 1])
                    out[n, c, y, z] = _max_nan(top, bottom)


@njit(cache=True, nogil=True)
def mean_planes(x, out):  # pragma: no cover - compiled
    """out[i] = mean of x[i, :], accumulated in float64."""
    rows, cols = x.shape
    for i in range(rows):
        total = 0.0
        for j in range(cols):
            total += x[i, j]
        out[i] = total / cols


def _window_2d(window: Window) -> tuple[int, ...] | None:
    """(kh, kw, sh, sw, dh, dw, ph, pw) of a 2-D window, or None for other ranks."""
    if len(window.kernel) != 2:
        return None
    return (*window.kernel, *window.strides, *window.dilations, *window.pads_begin)


@accelerate("Conv", BACKEND)
class NumbaConv:
    """2-D float Conv: compiled im2col, one batched matmul (per group when grouped), compiled
    bias + Relu. Depthwise Conv stays on the reference path."""

    def prepare(self, inputs, values):
        specs = super().prepare(inputs, values)
        p: ConvParams = self.params
        x, w = inputs[0], inputs[1]
        geometry = _window_2d(p.window)
        depthwise = p.group > 1 and w.shape[1] == 1
        if x.dtype in _FLOATS and geometry is not None and not p.pointwise and not depthwise:
            self.geometry = geometry
            self.relu = p.activation is not None and p.activation[0] == "Relu"
            self.run = self._run_2d
        return specs

    def _run_2d(self, inputs, outputs):
        p: ConvParams = self.params
        x, w, out = np.ascontiguousarray(inputs[0]), inputs[1], outputs[0]
        n, m = out.shape[:2]
        g, rows = p.group, w.shape[1] * len(p.taps)  # rows per group
        weights = w.reshape(g, m // g, rows)
        result = out.reshape(n, m, p.out_size, copy=False)
        for start in range(0, n, p.chunk):  # a bounded im2col buffer, as the reference keeps
            part = slice(start, min(n, start + p.chunk))
            size = part.stop - part.start
            cols = scratch("numba.conv.col", (size, g, rows, p.out_size), x.dtype)
            im2col_2d(x[part], cols.reshape(size, g * rows, p.out_size), *self.geometry, *p.window.out_shape)
            np.matmul(weights, cols, out=result[part].reshape(size, g, m // g, p.out_size, copy=False))
        if p.has_bias:
            add_bias(result, inputs[2], self.relu)
        elif self.relu:
            relu_inplace(result)
        if p.activation is not None and not self.relu:
            apply_activation(out, p.activation)


@accelerate("MaxPool", BACKEND)
class NumbaMaxPool:
    """Float MaxPool with the 2x2, stride-2 window of classic CNNs (no padding, no dilation, no
    Indices output): one compiled pass. Other windows stay on the reference's np.maximum per tap."""

    def prepare(self, inputs, values):
        specs = super().prepare(inputs, values)
        w = self.params.window  # PoolParams
        if (inputs[0].dtype in _FLOATS and w.kernel == (2, 2) and w.strides == (2, 2) and w.dilations == (1, 1)
                and not w.needs_padding and self.num_outputs == 1):
            self.run = self._run_2x2
        return specs

    def _run_2x2(self, inputs, outputs):
        max_pool_2x2(np.ascontiguousarray(inputs[0]), outputs[0])


@accelerate("GlobalAveragePool", BACKEND)
class NumbaGlobalAveragePool:
    """Float GlobalAveragePool of any rank: one compiled pass over each (n, c) plane."""

    def prepare(self, inputs, values):
        specs = super().prepare(inputs, values)
        x = inputs[0]
        if x.dtype in _FLOATS and len(x.shape) > 2 and prod(x.shape) > 0:
            self.run = self._run_planes
        return specs

    def _run_planes(self, inputs, outputs):
        x = np.ascontiguousarray(inputs[0])
        planes = x.reshape(x.shape[0] * x.shape[1], prod(x.shape[2:]))
        mean_planes(planes, outputs[0].reshape(-1, copy=False))

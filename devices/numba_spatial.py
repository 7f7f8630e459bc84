"""The "numba" backend's pooling fast paths on float NCHW tensors: MaxPool's common 2x2,
stride-2 window and GlobalAveragePool (convolutions are in devices.numba_conv).

Other MaxPool windows stay on the reference's np.maximum per tap over strided views.

Earns its place in benchmarks/bench_cnn.py.
"""

from __future__ import annotations

from math import prod

import numpy as np
from numba import njit, prange

from edgerun.devices.numba_threads import thread_count, use_threads
from edgerun.runtime.kernels.registry import accelerate

BACKEND = "numba"
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


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


@njit(parallel=True, cache=True, nogil=True)
def mean_planes(x, out):  # pragma: no cover - compiled
    """out[i] = mean of x[i, :], accumulated in float64; parallel over the rows. Eight running
    sums per row, not one: a single chain of dependent float64 adds waits out each add's
    latency (3.3 ms for EfficientNet-B0's 8x144x56x56 here, 1.4 ms with eight)."""
    rows, cols = x.shape
    body = cols - cols % 8
    for i in prange(rows):
        src = x[i]
        s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
        for j in range(0, body, 8):
            s0 += src[j]
            s1 += src[j + 1]
            s2 += src[j + 2]
            s3 += src[j + 3]
            s4 += src[j + 4]
            s5 += src[j + 5]
            s6 += src[j + 6]
            s7 += src[j + 7]
        total = ((s0 + s4) + (s1 + s5)) + ((s2 + s6) + (s3 + s7))
        for j in range(body, cols):
            total += src[j]
        out[i] = total / cols


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
    """Float GlobalAveragePool of any rank: one compiled pass over each (n, c) plane, parallel
    over the planes when there is enough work."""

    def prepare(self, inputs, values):
        specs = super().prepare(inputs, values)
        x = inputs[0]
        if x.dtype in _FLOATS and len(x.shape) > 2 and prod(x.shape) > 0:
            self.threads = thread_count(getattr(self.context, "num_threads", None), prod(x.shape))
            self.run = self._run_planes
        return specs

    def _run_planes(self, inputs, outputs):
        x = np.ascontiguousarray(inputs[0])
        use_threads(self.threads)
        planes = x.reshape(x.shape[0] * x.shape[1], prod(x.shape[2:]))
        mean_planes(planes, outputs[0].reshape(-1, copy=False))

"""The "numba" backend: compiled fast paths for ops where numpy's per-call
overhead dominates (small Gemm, Softmax here; 2-D Conv in devices.numba_conv, pools in
devices.numba_spatial, both imported at the end). Each is a mixin over the reference
kernel (see runtime.kernels.registry.accelerate): the reference prepare
validates, infers shapes and builds the op's prepared parameters (`self.params`,
e.g. GemmParams), which the fast path reads; it is taken only where it applies.

Earns its place in benchmarks/bench_mlp.py (64-32-10 MLP per-invoke time).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from edgerun.runtime.kernels.base import TensorSpec
from edgerun.runtime.kernels.fused import apply_activation
from edgerun.runtime.kernels.linalg import GemmParams
from edgerun.runtime.kernels.registry import accelerate
from edgerun.runtime.kernels.softmax import SoftmaxParams

BACKEND = "numba"
# Above this many multiply-adds BLAS (numpy.matmul) is faster than our loop.
SMALL_GEMM_MACS = 1 << 15
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


@njit(cache=True, nogil=True, fastmath=True)
def gemm_small(a, bt, c, alpha, out):  # pragma: no cover - compiled
    """out = alpha * a @ bt.T + c; a (M, K), bt (N, K), c broadcast to (M, N)."""
    m, k = a.shape
    n = bt.shape[0]
    for i in range(m):
        for j in range(n):
            acc = 0.0
            for p in range(k):
                acc += a[i, p] * bt[j, p]
            out[i, j] = alpha * acc + c[i, j]


@njit(cache=True, nogil=True)
def softmax_rows(x, out):  # pragma: no cover - compiled
    """Row-wise softmax of a 2-D array, max-subtracted for stability."""
    rows, cols = x.shape
    for i in range(rows):
        top = x[i, 0]
        for j in range(1, cols):
            top = max(top, x[i, j])
        total = 0.0
        for j in range(cols):
            e = np.exp(x[i, j] - top)
            out[i, j] = e
            total += e
        scale = 1.0 / total
        for j in range(cols):
            out[i, j] *= scale


@accelerate("Gemm", BACKEND)
class NumbaGemm:
    """Small float Gemm with constant B (and C): one compiled loop instead of
    matmul + scale + bias calls."""

    def prepare(self, inputs, values):
        specs = super().prepare(inputs, values)
        p: GemmParams = self.params
        (m, n), a = specs[0].shape, inputs[0]
        b = values[1] if len(values) > 1 else None
        c_known = len(inputs) < 3 or inputs[2] is None or not p.use_c or p.c_term is not None
        k = a.shape[0] if p.trans_a else a.shape[1]
        if a.dtype in _FLOATS and b is not None and c_known and 0 < m * n * k <= SMALL_GEMM_MACS:
            self.bt = np.ascontiguousarray(b if p.trans_b else b.T)
            bias = p.c_term if p.use_c else np.zeros((), a.dtype)
            self.bias = np.broadcast_to(np.asarray(bias, a.dtype), (m, n))
            self.alpha_f = float(p.alpha)
            self.run = self._run_small
        return specs

    def _run_small(self, inputs, outputs):
        p: GemmParams = self.params
        a = inputs[0].T if p.trans_a else inputs[0]
        gemm_small(a, self.bt, self.bias, self.alpha_f, outputs[0])
        apply_activation(outputs[0], p.activation)  # a fused Relu/Clip/... (runtime.kernels.fused)


@accelerate("Softmax", BACKEND)
class NumbaSoftmax:
    """Softmax over the last axis (any opset) or the flattened tail (opset < 13)."""

    def prepare(self, inputs, values):
        specs: list[TensorSpec] = super().prepare(inputs, values)
        p: SoftmaxParams = self.params
        x = inputs[0]
        if x.dtype in _FLOATS and x.size > 0 and (p.flatten or p.axis == len(x.shape) - 1):
            self.run = self._run_rows  # over the rows of X's 2-D view
        return specs

    def _run_rows(self, inputs, outputs):
        rows = self.params.rows
        softmax_rows(inputs[0].reshape(rows), outputs[0].reshape(rows))


# The convolution, elementwise, recurrent and pooling fast paths register with this backend too.
from edgerun.devices import numba_conv, numba_elementwise, numba_recurrent, numba_resize, numba_spatial  # noqa: E402, F401

"""The "numba" backend: compiled fast paths for ops where numpy's per-call
overhead dominates (small Gemm, Softmax here; 2-D Conv in devices.numba_conv, pools in
devices.numba_spatial, both imported at the end). Each is a mixin over the reference
kernel (see runtime.kernels.registry.accelerate): the reference prepare
validates, infers shapes and builds the op's prepared parameters (`self.params`,
e.g. GemmParams), which the fast path reads; it is taken only where it applies.

Earns its place in benchmarks/bench_mlp.py (64-32-10 MLP per-invoke time).
"""

from __future__ import annotations

from functools import cache

import numpy as np
from numba import njit, prange
from numba.core.registry import cpu_target

from edgerun.devices.numba_blas import gemm_in_pool
from edgerun.devices.numba_epilogue import activation_code
from edgerun.devices.numba_microkernel import (
    BIAS_NONE,
    BIAS_PER_COLUMN,
    BY_STRIDE,
    NO_MAP,
    TILE_COLUMNS,
    gemm_tiles,
    pack_panels,
    row_height,
    tile_tasks,
)
from edgerun.devices.numba_threads import thread_count, use_threads
from edgerun.runtime.kernels.base import TensorSpec
from edgerun.runtime.kernels.fused import apply_activation
from edgerun.runtime.kernels.linalg import GemmParams
from edgerun.runtime.kernels.registry import accelerate
from edgerun.runtime.kernels.softmax import SoftmaxParams

BACKEND = "numba"
# Above this many multiply-adds BLAS (numpy.matmul) is faster than our loop.
SMALL_GEMM_MACS = 1 << 15
# Up to this many rows of A a bigger Gemm streams B once from a parallel compiled loop
# (`gemm_few_rows`): BLAS packs all of B for every call, which costs a batch-1 classifier
# (1024 x 1000 weights) 4x its arithmetic; from 8 rows up BLAS's blocked product wins.
FEW_ROWS = 4
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


@njit(parallel=True, cache=True, nogil=True, fastmath=True)
def gemm_few_rows(a, b, trans_b, c, alpha, zero, out, blocks):  # pragma: no cover - compiled
    """out = alpha * a @ op(b) + c for an `a` (M, K) of a few rows: op(b) is b.T for b (N, K)
    (`trans_b`) or b (K, N); c broadcast to (M, N); `alpha` and `zero` scalars of out's dtype
    (the sums run in it). Parallel over `blocks` blocks of output columns, each reading its
    part of b once (a dot product per column for b (N, K), rows of b scaled and added for
    b (K, N))."""
    m, k = a.shape
    n = out.shape[1]
    step = ((n + blocks - 1) // blocks + 15) // 16 * 16
    for block in prange(blocks):
        j0 = block * step
        j1 = min(n, j0 + step)
        if trans_b:  # four columns at a time: four streams of b, one load of a for four sums
            j = j0
            while j + 4 <= j1:
                r0, r1, r2, r3 = b[j], b[j + 1], b[j + 2], b[j + 3]
                for i in range(m):
                    s0, s1, s2, s3 = zero, zero, zero, zero
                    for p in range(k):
                        x = a[i, p]
                        s0 += x * r0[p]
                        s1 += x * r1[p]
                        s2 += x * r2[p]
                        s3 += x * r3[p]
                    out[i, j] = alpha * s0 + c[i, j]
                    out[i, j + 1] = alpha * s1 + c[i, j + 1]
                    out[i, j + 2] = alpha * s2 + c[i, j + 2]
                    out[i, j + 3] = alpha * s3 + c[i, j + 3]
                j += 4
            for jj in range(j, j1):
                row = b[jj]
                for i in range(m):
                    acc = zero
                    for p in range(k):
                        acc += a[i, p] * row[p]
                    out[i, jj] = alpha * acc + c[i, jj]
        else:
            for i in range(m):
                dst = out[i, j0:j1]
                dst[:] = zero
                for p in range(k):
                    factor = a[i, p]
                    src = b[p, j0:j1]
                    for j in range(j1 - j0):
                        dst[j] += factor * src[j]
                for j in range(j1 - j0):
                    dst[j] = alpha * dst[j] + c[i, j0 + j]


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


def _alpha_folds(alpha: float, b: np.ndarray) -> bool:
    """Whether alpha * B, rounded to float32 once, stands for B in alpha * (A @ B): alpha is 1,
    or every nonzero finite value of B scaled stays a normal finite float32 (a huge alpha
    would turn B into inf and the products into NaN where onnxruntime gives inf; a tiny one
    would flush B's values to zero)."""
    if alpha == 1.0:
        return True
    values = np.abs(b[np.isfinite(b) & (b != 0)].astype(np.float64)) * abs(float(alpha))
    info = np.finfo(np.float32)
    return bool(np.isfinite(alpha) and alpha != 0 and (values.size == 0 or (values.max() <= info.max
                                                                            and values.min() >= info.tiny)))


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
        elif a.dtype in _FLOATS and b is not None and c_known and m <= FEW_ROWS and m * n * k > SMALL_GEMM_MACS:
            self.b, self.trans_b = np.ascontiguousarray(b), bool(p.trans_b)
            bias = p.c_term if p.use_c else np.zeros((), a.dtype)
            self.bias = np.broadcast_to(np.asarray(bias, a.dtype), (m, n))
            self.alpha_s, self.zero = a.dtype.type(p.alpha), a.dtype.type(0)
            self.threads = thread_count(getattr(self.context, "num_threads", None), m * n * k)
            self.run = self._run_few_rows
        elif (a.dtype == np.float32 and b is not None and np.asarray(b).dtype == np.float32 and c_known
              and m * n * k > SMALL_GEMM_MACS and gemm_in_pool() and _alpha_folds(p.alpha, np.asarray(b))):
            self._prepare_tiles(m, k, n, np.asarray(b))
        return specs

    def _prepare_tiles(self, m: int, k: int, n: int, b: np.ndarray) -> None:
        """A batch of rows (a classifier at batch 8) on our own tiles (devices.numba_microkernel):
        alpha * op(B) packed into column panels once, A's rows read where they lie, C as a
        bias per column where it is one (else added as a residual), a clip in the tile (numpy's
        matmul plus the bias ran MobileNetV2's 8 x 1280 x 1000 classifier 2.9x onnxruntime)."""
        p: GemmParams = self.params
        self.panels = pack_panels((p.alpha * (b.T if p.trans_b else b)).astype(np.float32))
        c = np.asarray(p.c_term if p.use_c else np.zeros(0, np.float32), np.float32)
        self.tile_bias, self.bias_mode, self.tile_residual = np.zeros(0, np.float32), BIAS_NONE, np.zeros(0, np.float32)
        if c.size and (c.ndim < 2 or c.shape[0] == 1) and (c.ndim == 0 or c.shape[-1] in (1, n)):
            self.tile_bias, self.bias_mode = np.ascontiguousarray(np.broadcast_to(c.reshape(-1), (n,))), BIAS_PER_COLUMN
        elif c.size:
            self.tile_residual = np.ascontiguousarray(np.broadcast_to(c, (m, n))).reshape(-1)
        *self.code, self.leftover = activation_code(p.activation, np.float32)
        self.threads = thread_count(getattr(self.context, "num_threads", None), m * n * k)
        self.height = row_height(m)
        self.tasks = tile_tasks(1, m, n, self.threads, self.height)
        self.run = self._run_tiles

    def _run_tiles(self, inputs, outputs):
        p: GemmParams = self.params
        a, out = np.ascontiguousarray(inputs[0].T if p.trans_a else inputs[0]), outputs[0]
        if not out.flags.c_contiguous:  # (a caller's strided view: the reference kernel)
            type(self).run(self, inputs, outputs)
            return
        (m, k), n = a.shape, out.shape[1]
        use_threads(self.threads)
        gemm_tiles(a.reshape(-1), k, 1, 0, m, k, self.panels, k * TILE_COLUMNS, TILE_COLUMNS, BY_STRIDE, 0, n,
                   out.reshape(-1), n, 0, 1, self.tile_bias, self.bias_mode, self.tile_residual, n, 0, *self.code,
                   *self.tasks, False, False, 0, self.height, NO_MAP)
        if self.leftover is not None:  # (Sigmoid, Tanh, a PRelu's slopes broadcast as numpy does)
            apply_activation(out, self.leftover)

    def _run_few_rows(self, inputs, outputs):
        p: GemmParams = self.params
        a = inputs[0].T if p.trans_a else inputs[0]
        use_threads(self.threads)
        gemm_few_rows(np.ascontiguousarray(a), self.b, self.trans_b, self.bias, self.alpha_s, self.zero, outputs[0],
                      self.threads)
        apply_activation(outputs[0], p.activation)

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


@cache
def load_registries() -> None:
    """Load numba's typing and lowering registries now (numpy's implementations, scipy's BLAS
    bindings, cffi: a quarter of a second), which numba otherwise loads with the first compiled
    function, inside the first run. A quick start's upgrade thread calls it (runtime.quick_start)
    so that the first run on the compiled kernels does not wait for them; a plain import does not
    (scipy's OpenBLAS would start its threads before the process's own: a client under a 256 MiB
    data cap then could not start gRPC's). Runs nothing; once per process (the backend's loader
    is called at every backend selection)."""
    cpu_target.typing_context.refresh()
    cpu_target.target_context.refresh()

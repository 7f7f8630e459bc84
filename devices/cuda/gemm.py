"""Matrix products on the GPU: the batched GEMM the cuda backend's Gemm, MatMul and Conv share,
the epilogue that finishes a product (bias or C, residual, fused activation), and the Gemm and
MatMul claims.

A `GemmPlan`, made in a claim, multiplies batches of matrices paired by index:

    plan = GemmPlan(a_index=[0, 0], b_index=[0, 1], dtype=np.float32, trans_b=True, alpha=2.0)
    plan.run(a, b, out, ctx)   # out[j] = 2 * a[0] @ b[j].T, a (1, M, K), b (2, N, K), out (2, M, N)

On a real GPU with CuPy installed each product is one cuBLAS call (`cupy.cublas.gemm`) on
zero-copy CuPy views of the numba arrays, on `ctx.cupy_stream()`; otherwise (numba's CUDA
simulator, no CuPy, or EDGERUN_CUDA_GEMM=tiled) a 16x16 tiled shared-memory kernel computes
them all in one launch.

An `Epilogue`, also made in a claim, then computes out = act(out + scale * first + second)
in one pass, `first` and `second` broadcasting to out's shape as numpy broadcasts.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from functools import cache
from typing import Any

import numba
import numpy as np
from numba import cuda

from edgerun.devices.cuda.claims import FLOATS, MAX_BLOCKS, SIMULATED, LaunchContext, StepSpec, claims, launch_1d

# the tiled kernel's block is TILE x TILE threads, one output element each (4 x 4 under the
# simulator, whose thread barriers are slow; the kernel strides over tiles either way)
TILE = 4 if SIMULATED else 16
MAX_GRID_YZ = 65_535  # CUDA's limit on gridDim.y and gridDim.z; the kernel strides past it

NONE, RELU, CLIP, LEAKY_RELU, HARD_SIGMOID, HARD_SWISH, SIGMOID, TANH, SWISH, PRELU = range(10)
ACTIVATION_CODES = {"Relu": RELU, "Clip": CLIP, "LeakyRelu": LEAKY_RELU, "HardSigmoid": HARD_SIGMOID,
                    "HardSwish": HARD_SWISH, "Sigmoid": SIGMOID, "Tanh": TANH, "Swish": SWISH, "PRelu": PRELU}


@cache
def use_cublas() -> bool:
    """Whether products go to cuBLAS: a real GPU (not numba's simulator), CuPy importable, and
    EDGERUN_CUDA_GEMM not "tiled" (which keeps the tiled kernel, to check or time it on a GPU)."""
    if numba.core.config.ENABLE_CUDASIM or os.environ.get("EDGERUN_CUDA_GEMM") == "tiled":
        return False
    try:
        import cupy  # noqa: F401  (optional: the tiled kernel runs without it)
    except ImportError:
        return False
    return True


def cupy_view(array: Any) -> Any:
    """A zero-copy CuPy array over a numba device array (C-contiguous, non-empty). Built from the
    raw pointer: CuPy then neither synchronizes on the array's stream nor allocates."""
    import cupy

    pointer = array.__cuda_array_interface__["data"][0]
    memory = cupy.cuda.UnownedMemory(pointer, array.size * array.dtype.itemsize, array)
    return cupy.ndarray(array.shape, array.dtype, cupy.cuda.MemoryPointer(memory, 0))


@cache
def _tiled_kernel(dtype: np.dtype) -> Any:
    """The tiled GEMM kernel for `dtype` (its shared tiles need the element type at compile time)."""
    element = numba.from_dtype(dtype)

    @cuda.jit
    def tiled_gemm(a, b, out, a_index, b_index, trans_a, trans_b, alpha):  # pragma: no cover - device
        """out[z] = alpha * op(a[a_index[z]]) @ op(b[b_index[z]]), op a transpose where asked;
        a block computes one TILE x TILE tile of out, striding over row tiles and matrices."""
        tile_a = cuda.shared.array((TILE, TILE), element)
        tile_b = cuda.shared.array((TILE, TILE), element)
        zero = element(0)
        tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
        m, n = out.shape[1], out.shape[2]
        depth = a.shape[1] if trans_a else a.shape[2]
        for z in range(cuda.blockIdx.z, out.shape[0], cuda.gridDim.z):
            ai, bi = a_index[z], b_index[z]
            for col0 in range(cuda.blockIdx.x * TILE, n, cuda.gridDim.x * TILE):
                col = col0 + tx
                for row0 in range(cuda.blockIdx.y * TILE, m, cuda.gridDim.y * TILE):
                    row = row0 + ty
                    acc = zero
                    for k0 in range(0, depth, TILE):
                        ka, kb = k0 + tx, k0 + ty
                        if row < m and ka < depth:
                            tile_a[ty, tx] = a[ai, ka, row] if trans_a else a[ai, row, ka]
                        else:
                            tile_a[ty, tx] = zero
                        if col < n and kb < depth:
                            tile_b[ty, tx] = b[bi, col, kb] if trans_b else b[bi, kb, col]
                        else:
                            tile_b[ty, tx] = zero
                        cuda.syncthreads()
                        for t in range(TILE):
                            acc += tile_a[ty, t] * tile_b[t, tx]
                        cuda.syncthreads()
                    if row < m and col < n:
                        out[z, row, col] = alpha * acc

    return tiled_gemm


class GemmPlan:
    """Batched products out[j] = alpha * op(a[a_index[j]]) @ op(b[b_index[j]]), op(x) = x.T where
    trans_a / trans_b say. Made in a claim (it copies the index maps to the device); `run` takes
    a (Ba, rows, cols), b (Bb, rows, cols) and out (J, M, N), C-contiguous, J <= len(a_index): the
    first J pairs are used, so one plan serves a shorter last chunk."""

    def __init__(self, a_index: Sequence[int], b_index: Sequence[int], dtype: np.dtype, *,
                 trans_a: bool = False, trans_b: bool = False, alpha: float = 1.0) -> None:
        self.a_index, self.b_index = [int(i) for i in a_index], [int(i) for i in b_index]
        self.trans_a, self.trans_b = bool(trans_a), bool(trans_b)
        self.dtype = np.dtype(dtype)
        with np.errstate(over="ignore"):
            self.alpha = self.dtype.type(alpha)
        self.cublas = use_cublas()
        if not self.cublas:
            self.kernel = _tiled_kernel(self.dtype)
            self.a_index_dev = cuda.to_device(np.asarray(self.a_index, np.int64))
            self.b_index_dev = cuda.to_device(np.asarray(self.b_index, np.int64))

    def run(self, a: Any, b: Any, out: Any, ctx: LaunchContext) -> None:
        """Launch the products on ctx's stream; nothing for an empty out."""
        count, m, n = out.shape
        if count == 0 or m == 0 or n == 0:
            return
        if self.cublas:
            self._run_cublas(a, b, out, ctx)
            return
        limit = MAX_BLOCKS if SIMULATED else MAX_GRID_YZ
        grid = (min(MAX_BLOCKS, -(-n // TILE)), min(limit, -(-m // TILE)), min(limit, count))
        self.kernel[grid, (TILE, TILE), ctx.stream](
            a, b, out, self.a_index_dev, self.b_index_dev, self.trans_a, self.trans_b, self.alpha)

    def _run_cublas(self, a: Any, b: Any, out: Any, ctx: LaunchContext) -> None:
        import cupy.cublas

        trans_a, trans_b = "T" if self.trans_a else "N", "T" if self.trans_b else "N"
        with ctx.cupy_stream():
            a_cp, b_cp, out_cp = cupy_view(a), cupy_view(b), cupy_view(out)
            for j in range(out.shape[0]):
                cupy.cublas.gemm(trans_a, trans_b, a_cp[self.a_index[j]], b_cp[self.b_index[j]], out_cp[j],
                                 alpha=self.alpha, beta=0.0)


def activation_args(activation: Any, dtype: np.dtype) -> tuple[int, np.ndarray] | None:
    """(code, constants) of a fused activation (runtime.kernels.fused) for `activate`: constants
    in `dtype` are its two parameters then 0, 1, 6, 0.5 (Relu is Clip(0, inf)). PRelu's slopes
    travel separately (Epilogue). None for an activation the device does not know."""
    name, params = activation if activation is not None else ("", ())
    if name and name not in ACTIVATION_CODES:
        return None
    if name == "Relu":
        params = (0.0, math.inf)
    first_two = (*params, 0.0, 0.0)[:2] if name != "PRelu" else (0.0, 0.0)
    return ACTIVATION_CODES.get(name, NONE), np.array([*first_two, 0.0, 1.0, 6.0, 0.5], dtype)


@cuda.jit(device=True)
def activate(v, code, k, slope):  # pragma: no cover - device
    """v through activation `code` with constants k (activation_args); `slope` is PRelu's.
    Comparisons are written so that NaN passes through, as numpy's maximum / clip keep it."""
    if code == RELU or code == CLIP:
        return k[0] if v < k[0] else (k[1] if v > k[1] else v)
    if code == LEAKY_RELU:
        return v * k[0] if v < k[2] else v
    if code == PRELU:
        return v * slope if v < k[2] else v
    if code == HARD_SIGMOID:
        t = v * k[0] + k[1]
        return k[2] if t < k[2] else (k[3] if t > k[3] else t)
    if code == HARD_SWISH:
        t = v / k[4] + k[5]
        return v * (k[2] if t < k[2] else (k[3] if t > k[3] else t))
    if code == SIGMOID:
        return k[3] / (k[3] + math.exp(-v))
    if code == TANH:
        return math.tanh(v)
    if code == SWISH:
        return v / (k[3] + math.exp(-v))
    return v


@cuda.jit
def _epilogue_kernel(out, n, shape, strides, first, second, slopes, has_first, has_second, scale,
                     code, k):  # pragma: no cover - device
    """out[i] = act(out[i] + scale * first[.] + second[.]) over flat out of `shape`; strides[j, axis]
    is operand j's (first, second, slopes) element stride along that axis, 0 where it broadcasts."""
    i = cuda.grid(1)
    step = cuda.gridsize(1)
    while i < n:
        rem = i
        o_first = o_second = o_slope = 0
        for axis in range(shape.shape[0] - 1, -1, -1):
            coord = rem % shape[axis]
            rem //= shape[axis]
            o_first += coord * strides[0, axis]
            o_second += coord * strides[1, axis]
            o_slope += coord * strides[2, axis]
        v = out[i]
        if has_first:
            v += scale * first[o_first]
        if has_second:
            v += second[o_second]
        out[i] = activate(v, code, k, slopes[o_slope])
        i += step


def broadcast_strides(shape: Sequence[int] | None, out_shape: Sequence[int]) -> list[int]:
    """Element strides of a C-contiguous operand of `shape` read as broadcast to `out_shape`
    (numpy's rules, `shape` aligned right): 0 along axes it repeats; all 0 for None."""
    strides = [0] * len(out_shape)
    if shape is None:
        return strides
    stride = 1
    for axis in range(1, len(shape) + 1):
        size = shape[-axis]
        if size != 1:
            strides[-axis] = stride
        stride *= size
    return strides


class Epilogue:
    """out = act(out + scale * first + second) in one pass, made in a claim for an output shape:
    `first` (bias or Gemm's C) and `second` (a residual) broadcast to it and may be absent; a
    fused PRelu's slopes go along axis 1. `needed` is False when it would change nothing."""

    def __init__(self, out_shape: Sequence[int], dtype: np.dtype, code: int, consts: np.ndarray, *,
                 first_shape: Sequence[int] | None = None, second_shape: Sequence[int] | None = None,
                 scale: float = 1.0, slopes: Sequence[float] = ()) -> None:
        dtype = np.dtype(dtype)
        self.size, self.code = math.prod(out_shape), code
        self.has_first, self.has_second = first_shape is not None, second_shape is not None
        self.needed = self.has_first or self.has_second or code != NONE
        self.scale = dtype.type(scale)
        shape = tuple(out_shape) or (1,)
        slope_shape = (len(slopes),) + (1,) * (len(shape) - 2) if len(slopes) > 1 else None
        self.shape = cuda.to_device(np.asarray(shape, np.int64))
        self.strides = cuda.to_device(np.asarray(
            [broadcast_strides(s, shape) for s in (first_shape, second_shape, slope_shape)], np.int64))
        self.consts = cuda.to_device(consts.astype(dtype))
        self.slopes = cuda.to_device(np.asarray(slopes or (0.0,), dtype))
        self.dummy = cuda.device_array(1, dtype)

    def run(self, out: Any, first: Any, second: Any, ctx: LaunchContext) -> None:
        """Finish `out` in place (first / second: device arrays, or None where the plan has none)."""
        if not self.needed:
            return
        flat = lambda x: self.dummy if x is None else x.reshape(x.size)  # noqa: E731
        launch_1d(_epilogue_kernel, self.size, ctx, out.reshape(self.size), self.size, self.shape, self.strides,
                  flat(first), flat(second), self.slopes, self.has_first, self.has_second, self.scale,
                  self.code, self.consts)


def epilogue_for(step: StepSpec, activation: Any, **operands: Any) -> Epilogue | None:
    """The Epilogue of `step`'s output with `activation` (runtime.kernels.fused) and `operands`
    (Epilogue's keywords); None for an activation the device does not know."""
    out = step.outputs[0]
    args = activation_args(activation, out.dtype)
    if args is None:
        return None
    slopes = activation[1] if args[0] == PRELU else ()
    if len(slopes) > 1 and (out.ndim < 2 or out.shape[1] != len(slopes)):
        return None
    return Epilogue(out.shape, out.dtype, *args, slopes=slopes, **operands)


def floats_only(step: StepSpec) -> bool:
    """Every present input and the output float32 or float64, of one dtype, none empty."""
    dtypes = {a.dtype for a in step.inputs if a is not None} | {step.outputs[0].dtype}
    sizes = [a.size for a in step.inputs if a is not None] + [step.outputs[0].size]
    return len(dtypes) == 1 and dtypes <= set(FLOATS) and min(sizes) > 0


@claims("Gemm")
def gemm_claim(step: StepSpec) -> Any:
    """Gemm on float32 / float64: transA / transB, alpha, beta, C of any shape that broadcasts to
    (M, N) (scalar, row, column, full) and any fused activation. Refuses dtypes other than
    float32 / float64 and empty tensors. A, B and C are read where they lie (constants included:
    the program uploads them)."""
    p = getattr(step.kernel, "params", None)
    if p is None or not floats_only(step):
        return None
    a, b = step.inputs[0], step.inputs[1]
    c = step.inputs[2] if len(step.inputs) > 2 and p.use_c else None
    plan = GemmPlan([0], [0], a.dtype, trans_a=p.trans_a, trans_b=p.trans_b, alpha=float(p.alpha))
    epilogue = epilogue_for(step, p.activation, first_shape=None if c is None else c.shape, scale=float(p.beta))
    if epilogue is None:
        return None
    a3, b3, out3 = (1, *a.shape), (1, *b.shape), (1, *step.outputs[0].shape)

    def run(ins: list, outs: list, ctx: LaunchContext) -> None:
        plan.run(ins[0].reshape(a3), ins[1].reshape(b3), outs[0].reshape(out3), ctx)
        epilogue.run(outs[0], None if c is None else ins[2], None, ctx)

    return run


@claims("MatMul")
def matmul_claim(step: StepSpec) -> Any:
    """MatMul on float32 / float64 of any ranks (numpy.matmul: 1-D operands promoted, batch axes
    broadcast), with any fused activation. Refuses dtypes other than float32 / float64 and empty tensors."""
    if not floats_only(step):
        return None
    a, b = step.inputs[0].shape, step.inputs[1].shape
    a2 = (1,) + a if len(a) == 1 else a
    b2 = b + (1,) if len(b) == 1 else b
    batch = np.broadcast_shapes(a2[:-2], b2[:-2])
    a_batch, b_batch = math.prod(a2[:-2]), math.prod(b2[:-2])
    a_index = np.broadcast_to(np.arange(a_batch).reshape(a2[:-2]), batch).ravel()
    b_index = np.broadcast_to(np.arange(b_batch).reshape(b2[:-2]), batch).ravel()
    plan = GemmPlan(a_index, b_index, step.outputs[0].dtype)
    epilogue = epilogue_for(step, getattr(step.kernel, "activation", None))
    if epilogue is None:
        return None
    out3 = (len(a_index), a2[-2], b2[-1])

    def run(ins: list, outs: list, ctx: LaunchContext) -> None:
        plan.run(ins[0].reshape((a_batch,) + a2[-2:]), ins[1].reshape((b_batch,) + b2[-2:]), outs[0].reshape(out3), ctx)
        epilogue.run(outs[0], None, None, ctx)

    return run

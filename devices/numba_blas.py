"""Matrix products on numba's thread pool, each block finished by the epilogue while in cache.

numpy's matmul runs on OpenBLAS's own thread pool, the compiled kernels on numba's (OpenMP), so
a convolution as GEMM + epilogue woke two pools on two cores one after the other: each wake of
a sleeping worker costs 60-80 us on the 2-vCPU machines we measure on, and the epilogue made a
second pass over an output that had left the cache. Here the compiled kernel splits the product
into blocks (rows of the weights, or columns of the activation), and each of numba's threads
calls OpenBLAS's cblas GEMM on its block (OpenBLAS held at one thread meanwhile:
`single_threaded`) and then adds the bias and residual and applies the activation to the block
it just wrote. MobileNetV2's distinct 1x1 products at 2 threads: 2.3 ms instead of 3.3 for
numpy's matmul alone, before any epilogue.

The GEMM is numpy's own OpenBLAS (ILP64, the `64_` symbols of numpy's wheels), found in
`numpy.libs` (or through threadpoolctl) and made known to LLVM by name, so the compiled kernels stay cacheable on disk
(an address baked into the code would not be). Where numpy has another BLAS or an LP64
OpenBLAS, gemm_in_pool() is False and callers keep numpy's matmul.

    if gemm_in_pool():
        with single_threaded:
            gemm_epilogue(w3, x4, out3, bias, residual3, code, consts, split, blocks)
"""

from __future__ import annotations

import ctypes
import math
import threading
from functools import cache
from pathlib import Path

from llvmlite import binding, ir
from numba import njit, prange, types
from numba.extending import intrinsic

from edgerun.devices.numba_epilogue import activate_row

# (our name for LLVM, the OpenBLAS symbols tried in order)
_SYMBOLS = {
    "edgerun_cblas_sgemm": ("scipy_cblas_sgemm64_", "cblas_sgemm64_"),
    "edgerun_cblas_dgemm": ("scipy_cblas_dgemm64_", "cblas_dgemm64_"),
}
# OpenBLAS's thread count, read and set from Python around the compiled kernels (single_threaded)
_THREAD_SYMBOLS = {
    "get": ("scipy_openblas_get_num_threads64_", "openblas_get_num_threads64_", "openblas_get_num_threads"),
    "set": ("scipy_openblas_set_num_threads64_", "openblas_set_num_threads64_", "openblas_set_num_threads"),
}
_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112  # cblas enums
SPLIT_ROWS, SPLIT_COLUMNS = 0, 1
ROW_BLOCK_MULTIPLE, COLUMN_BLOCK_MULTIPLE = 8, 16  # OpenBLAS's micro-kernels' unrolls, rounded up


def _numpy_openblas_paths() -> list[str]:
    """Paths of numpy's own OpenBLAS (its wheels' `numpy.libs`), else of every OpenBLAS
    loaded in this process (threadpoolctl), numpy's first."""
    import numpy

    libs = Path(numpy.__file__).resolve().parent.parent / "numpy.libs"
    found = sorted(str(p) for p in libs.glob("lib*openblas*")) if libs.is_dir() else []
    if found:
        return found
    from threadpoolctl import threadpool_info

    paths = [i["filepath"] for i in threadpool_info() if i.get("internal_api") == "openblas"]
    return sorted(paths, key=lambda p: "numpy" not in p)


def _address(lib: ctypes.CDLL, candidates: tuple[str, ...]) -> int | None:
    for symbol in candidates:
        try:
            return ctypes.cast(getattr(lib, symbol), ctypes.c_void_p).value
        except AttributeError:
            continue
    return None


class _SingleThreaded:
    """OpenBLAS at one thread while any pooled kernel runs, in any Python thread: the first
    to enter saves the count and sets 1, the last to leave restores it. OpenBLAS's count is
    process-wide (its `_local` setter too, in the pthreads builds numpy ships), so each of
    numba's threads calling a product must find it at 1 already: setting it per task from
    those threads raced, and left numpy's own products single-threaded after a run."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.depth = 0
        self.saved = 1
        self.get = self.set = None

    def __enter__(self) -> None:
        with self.lock:
            if self.depth == 0:
                self.saved = self.get()
                if self.saved != 1:
                    self.set(1)
            self.depth += 1

    def __exit__(self, *exc) -> None:
        with self.lock:
            self.depth -= 1
            if self.depth == 0 and self.saved != 1:
                self.set(self.saved)


single_threaded = _SingleThreaded()


@cache
def gemm_in_pool() -> bool:
    """Whether the pooled kernels can run: an ILP64 OpenBLAS (numpy's wheels) whose GEMMs
    are then known to LLVM by name, and whose thread count `single_threaded` can set.
    Decided once per process (at import: calling a kernel before would crash)."""
    for path in _numpy_openblas_paths():
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        found = {ours: _address(lib, names) for ours, names in _SYMBOLS.items()}
        get_count, set_count = (_address(lib, _THREAD_SYMBOLS[k]) for k in ("get", "set"))
        if None in found.values() or get_count is None or set_count is None:
            continue
        for ours, address in found.items():
            binding.add_symbol(ours, address)
        single_threaded.get = ctypes.CFUNCTYPE(ctypes.c_int)(get_count)
        single_threaded.set = ctypes.CFUNCTYPE(None, ctypes.c_int)(set_count)  # (an int in every build)
        return True
    return False


def _declare(builder, name: str, ret: ir.Type, args: list[ir.Type]):
    module = builder.module
    fn = module.globals.get(name)
    if fn is None:
        fn = ir.Function(module, ir.FunctionType(ret, args), name=name)
    return fn


def _gemm_intrinsic(name: str, float_type: ir.Type):
    @intrinsic
    def gemm(typingctx, trans_a, trans_b, m, n, k, a, lda, b, ldb, c, ldc):  # pragma: no cover - compiled
        """c (m x n, row stride ldc) = op(a) @ op(b), op(a) m x k, op(b) k x n, op transposing
        where trans_a / trans_b are nonzero (a stored k x m, b n x k); row-major, pointers as
        integers."""
        args_types = (trans_a, trans_b, m, n, k, a, lda, b, ldb, c, ldc)
        if not all(isinstance(t, types.Integer) for t in args_types):
            return None

        def codegen(context, builder, sig, args):
            i32, i64 = ir.IntType(32), ir.IntType(64)
            ptr = float_type.as_pointer()
            fn = _declare(builder, name, ir.VoidType(),
                          [i32, i32, i32, i64, i64, i64, float_type, ptr, i64, ptr, i64, float_type, ptr, i64])
            ta, tb, m_, n_, k_, a_, lda_, b_, ldb_, c_, ldc_ = (context.cast(builder, v, t, types.int64)
                                                                for v, t in zip(args, sig.args, strict=True))

            def flag(value):
                return builder.select(builder.icmp_signed("!=", value, ir.Constant(i64, 0)),
                                      ir.Constant(i32, _TRANS), ir.Constant(i32, _NO_TRANS))

            one, zero = ir.Constant(float_type, 1.0), ir.Constant(float_type, 0.0)
            builder.call(fn, [ir.Constant(i32, _ROW_MAJOR), flag(ta), flag(tb),
                              m_, n_, k_, one, builder.inttoptr(a_, ptr), lda_, builder.inttoptr(b_, ptr), ldb_,
                              zero, builder.inttoptr(c_, ptr), ldc_])
            return context.get_dummy_value()

        return types.void(*args_types), codegen

    return gemm


sgemm = _gemm_intrinsic("edgerun_cblas_sgemm", ir.FloatType())
dgemm = _gemm_intrinsic("edgerun_cblas_dgemm", ir.DoubleType())


@njit(inline="always")
def product(size, trans_a, trans_b, m, n, k, a, lda, b, ldb, c, ldc):  # pragma: no cover - compiled
    """One OpenBLAS product (see sgemm/dgemm) in float32 (size 4) or float64, on the calling
    thread: the caller holds `single_threaded`."""
    if size == 4:
        sgemm(trans_a, trans_b, m, n, k, a, lda, b, ldb, c, ldc)
    else:
        dgemm(trans_a, trans_b, m, n, k, a, lda, b, ldb, c, ldc)


@njit(inline="always")
def finish_rows(out, n, r0, r1, c0, c1, bias, residual, code, consts):  # pragma: no cover - compiled
    """The epilogue of out[n, r, c0:c1] for r in [r0, r1): + bias[r] (bias of size 0: none),
    + residual[n, r, c0:c1] (size 0: none), then the activation."""
    has_bias, has_residual = bias.size > 0, residual.size > 0
    for r in range(r0, r1):
        row = out[n, r, c0:c1]
        if has_bias:
            add = bias[r]
            for z in range(c1 - c0):
                row[z] += add
        if has_residual:
            extra = residual[n, r, c0:c1]
            for z in range(c1 - c0):
                row[z] += extra[z]
        activate_row(row, code, consts)


@njit(parallel=True, cache=True, nogil=True)
def gemm_epilogue(w, x, out, bias, residual, code, consts, split, blocks):  # pragma: no cover - compiled
    """out[n, g*Mg + r, :] = act(sum_k w[g, r, k] * x[n, g, k, :] + bias[g*Mg + r] + residual[n, g*Mg + r, :])
    for w (G, Mg, K), x (N, G, K, P), out and residual (N, G*Mg, P), all C-contiguous; bias of
    size 0 means none, residual of size 0 means none, code/consts an activation
    (devices.numba_epilogue.activation_code). Parallel over (n, g, block): `blocks` blocks of
    rows (split SPLIT_ROWS) or of columns (SPLIT_COLUMNS) per product, each one OpenBLAS call
    on one thread, then its epilogue. Only where gemm_in_pool() is True, inside `with
    single_threaded:`."""
    g_, mg, k = w.shape
    n_, p = x.shape[0], x.shape[3]
    extent = mg if split == SPLIT_ROWS else p
    multiple = ROW_BLOCK_MULTIPLE if split == SPLIT_ROWS else COLUMN_BLOCK_MULTIPLE
    step = ((extent + blocks - 1) // blocks + multiple - 1) // multiple * multiple
    size = out.itemsize
    for task in prange(n_ * g_ * blocks):
        n, g, block = task // (g_ * blocks), (task // blocks) % g_, task % blocks
        start = block * step
        stop = min(extent, start + step)
        if stop <= start:
            continue
        r0, r1 = (start, stop) if split == SPLIT_ROWS else (0, mg)
        c0, c1 = (0, p) if split == SPLIT_ROWS else (start, stop)
        a = w.ctypes.data + ((g * mg + r0) * k) * size
        b = x.ctypes.data + ((n * g_ + g) * k * p + c0) * size
        c = out.ctypes.data + ((n * g_ * mg + g * mg + r0) * p + c0) * size
        product(size, 0, 0, r1 - r0, c1 - c0, k, a, k, b, p, c, p)
        finish_rows(out, n, g * mg + r0, g * mg + r1, c0, c1, bias, residual, code, consts)


def gemm_split(images: int, groups: int, rows: int, columns: int, threads: int) -> tuple[int, int]:
    """(split, blocks) for gemm_epilogue: one block per product unless there are fewer products
    than threads, then enough blocks that the tasks divide evenly among the threads, cut along
    the longer of the product's rows and columns."""
    products = images * groups
    blocks = threads // math.gcd(products, threads) if threads > 1 else 1
    return (SPLIT_ROWS if rows >= columns else SPLIT_COLUMNS), blocks



@njit(parallel=True, cache=True, nogil=True)
def pointwise_layouts(w, x, out, bias, residual, code, consts, x_last, out_last, split, blocks):  # pragma: no cover
    """A pointwise (1x1) convolution with either layout on either side: out = act(W @ X + bias
    + residual) for w (M, C); x (N, C, P), or (N, P, C) when x_last; out and residual (N, M, P),
    or (N, P, M) when out_last (residual of size 0: none; bias of size 0: none). The layouts
    change through the product's transposes, so a region of channels-last tensors starts or
    ends here for free. Parallel over (n, block), blocks of output channels (SPLIT_ROWS) or of
    pixels (SPLIT_COLUMNS); each block one single-threaded OpenBLAS call, then its epilogue.
    All arrays C-contiguous. Only where gemm_in_pool() is True, inside `with single_threaded:`."""
    m_, c_ = w.shape
    n_ = x.shape[0]
    p = x.shape[1] if x_last else x.shape[2]
    extent = m_ if split == SPLIT_ROWS else p
    multiple = ROW_BLOCK_MULTIPLE if split == SPLIT_ROWS else COLUMN_BLOCK_MULTIPLE
    step = ((extent + blocks - 1) // blocks + multiple - 1) // multiple * multiple
    has_bias, has_residual = bias.size > 0, residual.size > 0
    size = out.itemsize
    out_flat = out.reshape(out.size)
    residual_flat = residual.reshape(residual.size)
    for task in prange(n_ * blocks):
        n, block = task // blocks, task % blocks
        start, stop = block * step, min(extent, block * step + step)
        if stop <= start:
            continue
        m0, m1 = (start, stop) if split == SPLIT_ROWS else (0, m_)
        q0, q1 = (0, p) if split == SPLIT_ROWS else (start, stop)
        xb, ob = x.ctypes.data + n * c_ * p * size, out.ctypes.data + n * m_ * p * size
        if out_last:  # out[n, q0:q1, m0:m1] = X[q0:q1, :] @ W[m0:m1, :]^T
            a, ta, lda = (xb + q0 * c_ * size, 0, c_) if x_last else (xb + q0 * size, 1, p)
            product(size, ta, 1, q1 - q0, m1 - m0, c_, a, lda, w.ctypes.data + m0 * c_ * size, c_,
                    ob + (q0 * m_ + m0) * size, m_)
        else:  # out[n, m0:m1, q0:q1] = W[m0:m1, :] @ X[:, q0:q1]
            b, tb, ldb = (xb + q0 * c_ * size, 1, c_) if x_last else (xb + q0 * size, 0, p)
            product(size, 0, tb, m1 - m0, q1 - q0, c_, w.ctypes.data + m0 * c_ * size, c_, b, ldb,
                    ob + (m0 * p + q0) * size, p)
        if out_last and m0 == 0 and m1 == m_:  # whole pixel rows: one flat pass for the activation
            first, count = (n * p + q0) * m_, (q1 - q0) * m_
            flat = out_flat[first : first + count]
            if has_bias:
                for q in range(q1 - q0):
                    row = flat[q * m_ : (q + 1) * m_]
                    for z in range(m_):
                        row[z] += bias[z]
            if has_residual:
                extra = residual_flat[first : first + count]
                for z in range(count):
                    flat[z] += extra[z]
            activate_row(flat, code, consts)
        elif out_last:
            for q in range(q0, q1):
                row = out[n, q, m0:m1]
                if has_bias:
                    add = bias[m0:m1]
                    for z in range(m1 - m0):
                        row[z] += add[z]
                if has_residual:
                    extra = residual[n, q, m0:m1]
                    for z in range(m1 - m0):
                        row[z] += extra[z]
                activate_row(row, code, consts)
        else:
            finish_rows(out, n, m0, m1, q0, q1, bias, residual, code, consts)


gemm_in_pool()  # the GEMMs' names into LLVM before any kernel here can be called

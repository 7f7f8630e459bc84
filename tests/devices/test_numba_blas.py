"""Matrix products on numba's pool with their epilogue (devices/numba_blas.py) against a float64
numpy oracle: groups, batches, row and column blocks that do not divide the product, both
dtypes, bias, residual, every compiled activation, NaN and Inf; the convolutions that use it
against onnxruntime with and without it; OpenBLAS's thread setting left as it was."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
import pytest
from threadpoolctl import threadpool_info

import edgerun.devices.numba_conv as numba_conv
from edgerun.converters import from_onnx
from edgerun.devices.numba_blas import (
    SPLIT_COLUMNS,
    SPLIT_ROWS,
    gemm_epilogue,
    gemm_in_pool,
    gemm_split,
    single_threaded,
)
from edgerun.devices.numba_epilogue import activation_code
from edgerun.runtime import Interpreter
from edgerun.runtime.kernels.fused import apply_activation
from tests.devices.test_numba_kernels import conv_model
from tests.onnx_models import ort_run


@pytest.fixture(autouse=True)
def registered():
    """gemm_epilogue calls OpenBLAS by the names gemm_in_pool gives LLVM: never before it."""
    # numpy's wheels carry an ILP64 OpenBLAS with per-thread thread counts: the fast path is on
    assert gemm_in_pool()


def oracle(w, x, bias, residual, activation):
    g, mg, _ = w.shape
    n, p = x.shape[0], x.shape[3]
    out = np.matmul(w.astype(np.float64), x.astype(np.float64)).reshape(n, g * mg, p)
    if bias.size:
        out += bias[:, None]
    if residual.size:
        out += residual
    if activation is not None:
        apply_activation(out, activation)
    return out


SHAPES = [  # n, groups, rows per group, k, columns
    (1, 1, 96, 16, 3136),
    (1, 1, 1280, 32, 49),
    (2, 3, 5, 7, 33),
    (3, 2, 17, 9, 100),
    (1, 1, 1, 1, 1),
    (1, 4, 3, 130, 19),
]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("split,blocks", [(SPLIT_ROWS, 1), (SPLIT_ROWS, 2), (SPLIT_ROWS, 5), (SPLIT_COLUMNS, 2),
                                          (SPLIT_COLUMNS, 3)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_blocks_equal_one_product(shape, split, blocks, dtype):
    n, g, mg, k, p = shape
    rng = np.random.default_rng(sum(shape) + blocks)
    w = rng.standard_normal((g, mg, k)).astype(dtype)
    x = rng.standard_normal((n, g, k, p)).astype(dtype)
    bias = rng.standard_normal(g * mg).astype(dtype)
    residual = rng.standard_normal((n, g * mg, p)).astype(dtype)
    out = np.full((n, g * mg, p), np.nan, dtype)
    code, consts, _ = activation_code(("Clip", (0.0, 6.0)), dtype)
    numba.set_num_threads(2)
    with single_threaded:
        gemm_epilogue(w, x, out, bias, residual, code, consts, split, blocks)
    tol = 1e-4 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(out, oracle(w, x, bias, residual, ("Clip", (0.0, 6.0))), rtol=tol, atol=tol)


@pytest.mark.parametrize("activation", [None, ("Relu", ()), ("LeakyRelu", (0.1,)), ("HardSigmoid", (0.2, 0.5)),
                                        ("HardSwish", ()), ("Swish", ())])
@pytest.mark.parametrize("with_bias,with_residual", [(True, False), (False, True), (False, False)])
def test_epilogue_parts_and_activations(activation, with_bias, with_residual):
    rng = np.random.default_rng(7)
    w = rng.standard_normal((1, 24, 10)).astype(np.float32)
    x = rng.standard_normal((2, 1, 10, 50)).astype(np.float32) * 2
    x[0, 0, 0, :3] = [np.nan, np.inf, -np.inf]  # whole columns of the product become NaN/Inf
    bias = rng.standard_normal(24).astype(np.float32) if with_bias else np.zeros(0, np.float32)
    residual = (rng.standard_normal((2, 24, 50)).astype(np.float32) if with_residual
                else np.zeros((0, 0, 0), np.float32))
    code, consts, leftover = activation_code(activation, np.float32)
    assert leftover is None
    out = np.empty((2, 24, 50), np.float32)
    with single_threaded:
        gemm_epilogue(w, x, out, bias, residual, code, consts, SPLIT_ROWS, 2)
    want = oracle(w, x, bias, residual, activation)
    with np.errstate(invalid="ignore"):
        np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-4)
    assert np.isnan(out[0, :, 0]).any() or np.isinf(out[0, :, 0]).any()


@pytest.mark.parametrize("images,groups,rows,columns,threads,want", [
    (1, 1, 96, 3136, 2, (SPLIT_COLUMNS, 2)),   # wide product: cut its columns
    (1, 1, 1280, 49, 2, (SPLIT_ROWS, 2)),      # tall product: cut its rows
    (8, 1, 96, 3136, 2, (SPLIT_COLUMNS, 1)),   # images enough for the threads
    (1, 3, 96, 50, 2, (SPLIT_ROWS, 2)),        # 3 products on 2 threads: 6 tasks
    (1, 1, 96, 50, 1, (SPLIT_ROWS, 1)),
    (2, 1, 96, 50, 4, (SPLIT_ROWS, 2)),
])
def test_split(images, groups, rows, columns, threads, want):
    assert gemm_split(images, groups, rows, columns, threads) == want


CONVS = [  # x shape, w shape, attributes: pointwise, grouped pointwise, im2col, wide rows
    ((1, 32, 14, 14), (64, 32, 1, 1), {}),
    ((2, 12, 9, 9), (12, 4, 1, 1), dict(group=3)),
    ((1, 8, 15, 15), (16, 8, 3, 3), dict(strides=[2, 2], pads=[1, 1, 1, 1])),
    ((2, 8, 12, 12), (16, 8, 3, 3), dict(pads=[1, 1, 1, 1])),
]


@pytest.mark.parametrize("x_shape,w_shape,attrs", CONVS)
@pytest.mark.parametrize("pooled", [True, False])
@pytest.mark.parametrize("num_threads", [1, 2])
def test_convolutions_with_and_without_the_pool(monkeypatch, x_shape, w_shape, attrs, pooled, num_threads):
    if not pooled:
        monkeypatch.setattr(numba_conv, "gemm_in_pool", lambda: False)
    model, feeds = conv_model(x_shape, w_shape, activation="Relu", **attrs)
    it = Interpreter(from_onnx(model), device="numba", num_threads=num_threads)
    (kernel,) = [step[0].__self__ for step in it._plans["serving_default"].prepared.steps]
    np.testing.assert_allclose(it.run(feeds)["y"], ort_run(model, feeds)["y"], rtol=1e-4, atol=1e-4)
    assert kernel.pooled is pooled


def openblas_threads():
    return [i["num_threads"] for i in threadpool_info() if i.get("internal_api") == "openblas"]


def test_openblas_threads_are_left_as_they_were():
    """OpenBLAS's thread count is process-wide: held at 1 while pooled products run, then
    restored (setting it from numba's threads once left numpy single-threaded after a run)."""
    model, feeds = conv_model((1, 32, 14, 14), (64, 32, 1, 1))
    it = Interpreter(from_onnx(model), device="numba", num_threads=2)
    before = openblas_threads()
    assert max(before) > 1  # (this machine has 2 cores: a count that could be lost)
    for _ in range(3):
        it.run(feeds)
    assert openblas_threads() == before
    with single_threaded:
        assert single_threaded.get() == 1
        with single_threaded:  # nested, as two Python threads running interpreters are
            assert single_threaded.get() == 1
        assert single_threaded.get() == 1
    assert openblas_threads() == before


def test_interpreters_in_threads_agree_and_restore_openblas():
    model, feeds = conv_model((2, 32, 14, 14), (64, 32, 1, 1), activation="Relu")
    want = ort_run(model, feeds)["y"]
    interpreters = [Interpreter(from_onnx(model), device="numba", num_threads=2) for _ in range(4)]
    before = openblas_threads()

    def work(it):
        return [it.run(feeds)["y"] for _ in range(20)]

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(work, interpreters))
    for got in (r for runs in results for r in runs):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert openblas_threads() == before

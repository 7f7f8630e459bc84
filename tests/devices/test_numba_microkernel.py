"""Our own float32 GEMM (devices/numba_microkernel.py) against a float64 numpy oracle: every way
it reads B (packed panels, in place by a row stride, by a table of row starts), C stored as it
is or transposed, edge tiles in both directions, images, every task split and loop order, bias
per row and per column, residual, every compiled activation, NaN and Inf; the vector widths of
AVX2 and NEON/SSE machines in a fresh process; and the convolutions that use it against
onnxruntime with it and without it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numba
import numpy as np
import onnx
import onnx.numpy_helper
import pytest

import edgerun.devices.numba_conv as numba_conv
import edgerun.devices.numba_microkernel as numba_microkernel
from edgerun.converters import from_onnx
from edgerun.devices.numba_epilogue import activation_code
from edgerun.devices.numba_microkernel import (
    BIAS_NONE,
    BIAS_PER_COLUMN,
    BIAS_PER_ROW,
    BY_STRIDE,
    NO_MAP,
    SHORT_ROWS,
    TILE_COLUMNS,
    TILE_ROWS,
    VECTOR_LANES,
    gemm_tiles,
    pack_panels,
    pack_rows,
    pixels_as_rows,
    row_height,
    tile_tasks,
)
from edgerun.runtime import Interpreter
from edgerun.runtime.kernels.fused import apply_activation
from tests.devices.test_numba_kernels import conv_model
from tests.onnx_models import ort_run

EMPTY = np.zeros(0, np.float32)


def oracle(a, b, bias, bias_mode, residual, activation):
    """act(a @ b + bias + residual) in float64, per image: a (G, m, k), b (G, k, n)."""
    out = np.matmul(a.astype(np.float64), b.astype(np.float64))
    if bias_mode == BIAS_PER_COLUMN:
        out += bias[None, None, :]
    elif bias_mode == BIAS_PER_ROW:
        out += bias[None, :, None]
    if residual is not None:
        out += residual
    if activation is not None:
        with np.errstate(invalid="ignore", over="ignore"):
            apply_activation(out, activation)
    return out


def run_tiles(a, b, *, bias=EMPTY, bias_mode=BIAS_NONE, residual=None, activation=None, b_mode="stride",
              transposed=False, tasks=(1, 1), rows_outer=False, a_transposed=False, a_packed=False,
              height=TILE_ROWS):
    """gemm_tiles on a (G, m, k) and b (G, k, n) with B read as `b_mode` says, A packed into
    row tiles where `a_packed`, rows `height` to a tile; returns C (G, m, n) (read back from
    C^T where `transposed`)."""
    images, m, k = a.shape
    n = b.shape[2]
    a_tile, a_image = 0, m * k
    if a_packed:  # each image's A in row tiles, zero-padded; a_row and a_k unused (NaN-free)
        a_flat = np.concatenate([pack_rows(a[g]) for g in range(images)])
        a_row, a_k, a_tile, a_image = 1, TILE_ROWS, k * TILE_ROWS, a_flat.size // images
    elif a_transposed:  # A stored (k, m) per image: element (i, kk) at kk*m + i
        a_flat, a_row, a_k = np.ascontiguousarray(a.transpose(0, 2, 1)).reshape(-1), 1, m
    else:
        a_flat, a_row, a_k = np.ascontiguousarray(a).reshape(-1), k, 1
    table = BY_STRIDE
    if b_mode == "packed":
        assert images == 1
        b_flat, b_panel, b_row, b_image = pack_panels(b[0]), k * TILE_COLUMNS, TILE_COLUMNS, 0
    elif b_mode == "stride":
        b_flat, b_panel, b_row, b_image = np.ascontiguousarray(b).reshape(-1), TILE_COLUMNS, n, k * n
    else:  # "table": B's rows scattered through a bigger buffer, found by their starts
        gap = 5
        buffer = np.full((images, k, n + gap), np.nan, np.float32)
        order = np.random.default_rng(k).permutation(k)
        buffer[:, order, :n] = b  # row kk of B at row order[kk] of the buffer
        table = (order * (n + gap)).astype(np.int64)
        b_flat, b_panel, b_row, b_image = buffer.reshape(-1), TILE_COLUMNS, 0, k * (n + gap)
    shape = (images, n, m) if transposed else (images, m, n)
    c = np.full(shape, np.nan, np.float32)
    c_row = m if transposed else n
    if residual is None:
        r_flat, r_row = EMPTY, 0
    else:
        stored = residual.transpose(0, 2, 1) if transposed else residual
        r_flat, r_row = np.ascontiguousarray(stored).reshape(-1), c_row
    code, consts, leftover = activation_code(activation, np.float32)
    assert leftover is None
    gemm_tiles(a_flat, a_row, a_k, 0 if a_flat.size == a_image else a_image, m, k, b_flat, b_panel, b_row, table,
               b_image, n, c.reshape(-1), c_row, m * n, images, bias, bias_mode, r_flat, r_row, m * n, code, consts,
               *tasks, rows_outer, transposed, a_tile, height, NO_MAP)
    return c.transpose(0, 2, 1) if transposed else c


SIZES = [  # m, k, n: whole tiles, edge tiles both ways, one row/column, n below one vector
    (2 * TILE_ROWS, 16, 2 * TILE_COLUMNS),
    (TILE_ROWS + 1, 7, TILE_COLUMNS + 1),
    (1, 1, 1),
    (5, 33, VECTOR_LANES - 1),
    (3 * TILE_ROWS - 1, 97, TILE_COLUMNS + VECTOR_LANES + 3),
    (49, 160, 96),
]


@pytest.mark.parametrize("m,k,n", SIZES)
@pytest.mark.parametrize("b_mode", ["packed", "stride", "table"])
@pytest.mark.parametrize("tasks,rows_outer", [((1, 1), False), ((2, 1), False), ((1, 2), True), ((3, 2), True)])
@pytest.mark.parametrize("a_packed", [False, True])
def test_products(m, k, n, b_mode, tasks, rows_outer, a_packed):
    rng = np.random.default_rng(m * 1000 + k * 10 + n)
    a = rng.standard_normal((1, m, k)).astype(np.float32)
    b = rng.standard_normal((1, k, n)).astype(np.float32)
    numba.set_num_threads(2)
    got = run_tiles(a, b, b_mode=b_mode, tasks=tasks, rows_outer=rows_outer, a_packed=a_packed)
    np.testing.assert_allclose(got, oracle(a, b, EMPTY, BIAS_NONE, None, None), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("bias_mode", [BIAS_NONE, BIAS_PER_COLUMN, BIAS_PER_ROW])
@pytest.mark.parametrize("activation", [None, ("Relu", ()), ("Clip", (-0.5, 0.7)), ("LeakyRelu", (0.1,)),
                                        ("HardSigmoid", (0.2, 0.5)), ("HardSwish", ()), ("Swish", ())])
@pytest.mark.parametrize("a_packed", [False, True])
def test_epilogue(transposed, bias_mode, activation, a_packed):
    m, k, n = TILE_ROWS + 3, 19, TILE_COLUMNS + 5
    rng = np.random.default_rng(bias_mode * 7 + transposed)
    a = rng.standard_normal((2, m, k)).astype(np.float32)
    b = rng.standard_normal((2, k, n)).astype(np.float32)
    bias = rng.standard_normal(n if bias_mode == BIAS_PER_COLUMN else m).astype(np.float32)
    residual = rng.standard_normal((2, m, n)).astype(np.float32)
    got = run_tiles(a, b, bias=bias if bias_mode else EMPTY, bias_mode=bias_mode, residual=residual,
                    activation=activation, transposed=transposed, tasks=(2, 1), a_packed=a_packed)
    want = oracle(a, b, bias, bias_mode, residual, activation)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_a_read_by_columns_and_images():
    """A stored k-major (an NCHW activation as the pixels-by-channels A), three images."""
    rng = np.random.default_rng(3)
    a = rng.standard_normal((3, 21, 13)).astype(np.float32)
    b = rng.standard_normal((3, 13, 40)).astype(np.float32)
    got = run_tiles(a, b, a_transposed=True, tasks=(1, 2))
    np.testing.assert_allclose(got, oracle(a, b, EMPTY, BIAS_NONE, None, None), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("transposed", [False, True])
def test_nan_and_inf_propagate_through_the_clip(transposed):
    m, k, n = TILE_ROWS + 2, 9, TILE_COLUMNS + 3
    rng = np.random.default_rng(11)
    a = rng.standard_normal((1, m, k)).astype(np.float32)
    b = rng.standard_normal((1, k, n)).astype(np.float32)
    a[0, 1, 2] = np.nan  # row 1 all NaN
    a[0, m - 1, 0] = np.inf  # last row: +-inf by B's signs (NaN where a product is 0 * inf)
    b[0, 3, n - 1] = -np.inf  # last column -inf (NaN at rows meeting an inf)
    got = run_tiles(a, b, activation=("Relu", ()), transposed=transposed)
    want = oracle(a, b, EMPTY, BIAS_NONE, None, ("Relu", ()))
    assert np.isnan(got[0, 1]).all()
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    finite = np.isfinite(want)
    np.testing.assert_array_equal(got[~finite & ~np.isnan(want)], want[~finite & ~np.isnan(want)])
    np.testing.assert_allclose(got[finite], want[finite], rtol=1e-4, atol=1e-4)


def test_row_packing_pads_the_last_tile_with_zeros():
    a = np.arange((TILE_ROWS + 2) * 3, dtype=np.float32).reshape(TILE_ROWS + 2, 3)
    packed = pack_rows(a).reshape(2, 3, TILE_ROWS)  # (tile, k, row in tile)
    np.testing.assert_array_equal(packed[0], a[:TILE_ROWS].T)
    np.testing.assert_array_equal(packed[1, :, :2], a[TILE_ROWS:].T)
    assert not packed[1, :, 2:].any()


def test_packing_pads_the_last_panel_with_zeros():
    b = np.arange(3 * (TILE_COLUMNS + 2), dtype=np.float32).reshape(3, TILE_COLUMNS + 2)
    packed = pack_panels(b).reshape(2, 3, TILE_COLUMNS)
    np.testing.assert_array_equal(packed[0], b[:, :TILE_COLUMNS])
    np.testing.assert_array_equal(packed[1, :, :2], b[:, TILE_COLUMNS:])
    assert not packed[1, :, 2:].any()


# short tiles where this CPU has them (AVX2 has none; the 4-lane build in a fresh process below
# runs them on every host)
SHORT = SHORT_ROWS or TILE_ROWS


@pytest.mark.parametrize("m", [SHORT, 2 * SHORT - 1, 49, 50, 3])
@pytest.mark.parametrize("b_mode", ["packed", "stride", "table"])
@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("tasks,rows_outer", [((1, 1), False), ((2, 1), False), ((1, 2), True), ((3, 2), False)])
def test_rows_in_short_tiles(m, b_mode, transposed, tasks, rows_outer):
    """A product whose rows (pixels read where they lie, k-major as im2col leaves them) run
    SHORT_ROWS to a tile, partial tiles and every task split included, with the bias, the
    residual, a clip and a depth cut into two blocks."""
    rng = np.random.default_rng(m * 7 + len(b_mode))
    k, n = numba_microkernel.DEPTH_BLOCK + 44, TILE_COLUMNS + 5
    assert k > numba_microkernel.DEPTH_BLOCK
    a = rng.standard_normal((1, m, k)).astype(np.float32)
    b = rng.standard_normal((1, k, n)).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    residual = rng.standard_normal((1, m, n)).astype(np.float32)
    activation = ("Clip", (-1.0, 2.5))
    numba.set_num_threads(2)
    got = run_tiles(a, b, bias=bias, bias_mode=BIAS_PER_COLUMN, residual=residual, activation=activation,
                    b_mode=b_mode, transposed=transposed, tasks=tasks, rows_outer=rows_outer, a_transposed=True,
                    height=SHORT)
    want = oracle(a, b, bias, BIAS_PER_COLUMN, residual, activation)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("rows,height,as_rows", [
    (49, 7, True),     # 7 x 7 pixels: 7 short tiles; as columns 49 of 64
    (28, 7, True),
    (196, 8, True),    # 14 x 14: 196 of 200 rows (tiles of 7: 196 at 8 % more a row), of 224 columns
    (98, 8, True),     # 13 tiles of 8 (104 rows) beat 14 of 7 at 8 % more a row
    (784, 8, False),   # 28 x 28: 784 of 784 rows, of 800 columns: not clearly better
    (3136, 8, False),
])
def test_short_tiles_where_rows_come_in_sevens(rows, height, as_rows):
    assert row_height(rows) == (height if SHORT_ROWS else TILE_ROWS)
    if SHORT_ROWS and TILE_COLUMNS == 32:  # (the fills compared depend on the panels' width)
        assert pixels_as_rows(rows) is as_rows


@pytest.mark.parametrize("side,as_rows", [(7, True), (13, True), (14, False), (28, False), (56, False)])
def test_pixel_rows_against_wide_rows(side, as_rows):
    """A 3x3 Conv's pixels as rows against its wide rows (two padding columns a row) as
    columns, at the margin the Conv asks for: 13 x 13 fills 169 of 176 rows, of 224 columns."""
    if TILE_ROWS == 8 and TILE_COLUMNS == 32:
        assert pixels_as_rows(side * side, (side - 1) * (side + 2) + side, numba_conv.PIXEL_ROWS_MARGIN) is as_rows


@pytest.mark.parametrize("images,m,n,threads,want", [
    (2, 64, 3136, 2, (1, 1)),          # images enough for the threads
    (1, 64, 3136, 2, (1, 2)),          # B is the bigger operand: cut its columns
    (1, 3136, 64, 2, (2, 1)),           # A bigger: cut its rows
    (1, 1280, 49, 2, (2, 1)),
    (1, 4, 3136, 2, (1, 2)),
    (1, 3136, 4, 1, (1, 1)),
    (1, TILE_ROWS, 5, 2, (2, 1)),        # one panel only: rows are cut
    # B bigger, but its 7 panels split 4 : 3 where 20 row tiles split 10 : 10
    (1, 20 * TILE_ROWS, 7 * TILE_COLUMNS - 2, 2, (2, 1)),
    (1, 7 * TILE_ROWS - 1, 20 * TILE_COLUMNS, 2, (1, 2)),  # the other way round
])
def test_task_split(images, m, n, threads, want):
    assert tile_tasks(images, m, n, threads) == want


def test_task_split_counts_short_tiles():
    # 49 rows: 7 short tiles split 4 : 3 (busiest 28 of 49 rows) against 3 panels' 2 : 1
    # (64 of 96 columns): the rows are cut
    assert tile_tasks(1, 49, 3 * TILE_COLUMNS, 2, 7) == (2, 1)
    if 3 * TILE_COLUMNS > 49:  # (narrower panels: 49 rows are the longer side either way)
        # in tiles of 8 the same rows split 32 : 17 (65 %), no clear gain: the longer side is cut
        assert tile_tasks(1, 49, 3 * TILE_COLUMNS, 2, 8) == (1, 2)


@pytest.mark.parametrize("switched_off,lanes,rows", [(("avx512",), 8, 6), (("avx512", "avx"), 4, 8)])
def test_narrower_vectors_in_a_fresh_process(tmp_path, switched_off, lanes, rows):
    """The AVX2 (8 lanes, 6 x 16 tiles) and SSE/NEON-width (4 lanes, 8 x 8) kernels against the
    oracle, built as on those machines: the CPU's features starting with `switched_off` are
    reported absent, to numba's code generation too. A cache of its own: the kernels' tile
    sizes are baked into the compiled code."""
    script = textwrap.dedent(f"""
        import llvmlite.binding as binding
        real = binding.get_host_cpu_features

        def reduced():
            features = real()
            for name in list(features):
                if name.startswith({switched_off!r}):
                    features[name] = False
            return features

        binding.get_host_cpu_features = reduced
        import numpy as np
        from edgerun.devices import numba_microkernel as mk
        assert (mk.VECTOR_LANES, mk.TILE_ROWS, mk.SHORT_ROWS) == ({lanes}, {rows}, {rows - 1 if rows == 8 else 0})
        from tests.devices.test_numba_microkernel import run_tiles, oracle, EMPTY
        rng = np.random.default_rng(0)
        for m, k, n, mode, transposed in [(13, 21, 37, "packed", False), (7, 5, 3, "stride", True),
                                           (20, 9, 70, "table", False)]:
            a = rng.standard_normal((1, m, k)).astype(np.float32)
            b = rng.standard_normal((1, k, n)).astype(np.float32)
            bias = rng.standard_normal(n).astype(np.float32)
            got = run_tiles(a, b, bias=bias, bias_mode=mk.BIAS_PER_COLUMN, activation=("Relu", ()),
                            b_mode=mode, transposed=transposed, tasks=(2, 1))
            want = oracle(a, b, bias, mk.BIAS_PER_COLUMN, None, ("Relu", ()))
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
        if mk.SHORT_ROWS:  # rows in short tiles, stored both ways
            for m, transposed in [(49, True), (13, False)]:
                a = rng.standard_normal((1, m, 40)).astype(np.float32)
                b = rng.standard_normal((1, 40, 11)).astype(np.float32)
                got = run_tiles(a, b, transposed=transposed, a_transposed=True, tasks=(2, 1),
                                height=mk.SHORT_ROWS)
                want = oracle(a, b, EMPTY, mk.BIAS_NONE, None, None)
                np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
        print("ok")
    """)
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600,
                          cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().endswith("ok")


def every_strided_conv_over_phases(monkeypatch) -> None:
    """Small test Convs take the phase planes too (their outputs' wide rows are mostly padding:
    the real rule keeps such Convs on im2col; test_strided_convs_choose_phases_by_their_shape)."""
    monkeypatch.setattr(numba_conv, "PHASES_MIN_USEFUL", 0.0)
    monkeypatch.setattr(numba_conv, "PHASES_MIN_DEPTH", 0)


@pytest.mark.parametrize("x_shape,w_shape,path", [
    ((1, 64, 56, 56), (128, 64, 3, 3), "_run_phases"),   # 28 x 28 outputs: 94 % of the tile columns used
    ((1, 3, 64, 64), (16, 3, 7, 7), "_run_phases"),      # a 7x7 first layer: depth 147
    ((1, 3, 64, 64), (16, 3, 3, 3), "_run_phases"),      # depth 27, one image, 16 filters: phases still
    ((1, 3, 64, 64), (48, 3, 3, 3), "_run_blocks"),      # depth 27, 48 filters: im2col block by block
    ((2, 3, 64, 64), (16, 3, 3, 3), "_run_blocks"),      # depth 27, two images: im2col block by block
    ((1, 256, 14, 14), (512, 256, 3, 3), "_run_gemm"),   # 7 x 7 outputs: 77 % used; im2col, stored transposed
    ((1, 96, 28, 28), (96, 96, 3, 3), "_run_gemm"),      # 14 x 14: 87.5 %; one product, not narrow blocks
    ((1, 256, 56, 56), (128, 256, 1, 1), "_run_blocks"),  # a 1x1 stride-2 shortcut reads a quarter: im2col
])
def test_strided_convs_choose_phases_by_their_shape(x_shape, w_shape, path):
    """Against onnxruntime, and the path the rules choose (PHASES_MIN_DEPTH, PHASES_FEW_FILTERS)."""
    k = w_shape[2]
    model, feeds = conv_model(x_shape, w_shape, activation="Relu", strides=[2, 2], pads=[k // 2] * 4)
    assert x_shape[1] * k * k >= 27  # (the 3-channel 3x3 one is under PHASES_MIN_DEPTH)
    it = Interpreter(from_onnx(model), device="numba", num_threads=2)
    (kernel,) = [step[0].__self__ for step in it._plans["serving_default"].prepared.steps]
    np.testing.assert_allclose(it.run(feeds)["y"], ort_run(model, feeds)["y"], rtol=1e-4, atol=1e-4)
    assert kernel.run.__name__ == path


CONVS = [  # x shape, w shape, attributes, the path on the tiles (and on OpenBLAS where it differs)
    ((1, 24, 9, 11), (40, 24, 1, 1), {}, "_run_gemm"),                                       # pointwise NCHW
    ((2, 16, 12, 12), (33, 16, 3, 3), dict(pads=[1, 0, 2, 1]), "_run_wide"),                 # implicit GEMM
    ((1, 5, 20, 20), (7, 5, 3, 3), dict(dilations=[2, 3], pads=[2, 1, 0, 3]), "_run_wide"),
    # strided: an implicit GEMM over the phase planes on the tiles, im2col on OpenBLAS
    ((1, 3, 33, 31), (37, 3, 3, 3), dict(strides=[2, 2], pads=[1, 1, 1, 1]), "_run_phases/_run_blocks"),
    ((1, 40, 9, 9), (70, 40, 3, 3), dict(strides=[2, 2], pads=[1, 1, 1, 1]), "_run_phases/_run_gemm"),
    ((2, 3, 23, 29), (16, 3, 7, 5), dict(strides=[3, 2], pads=[3, 0, 1, 2]), "_run_phases/_run_blocks"),
    ((1, 4, 10, 10), (8, 4, 3, 3), dict(strides=[3, 3], pads=[4, 0, 2, 5]), "_run_phases/_run_blocks"),  # wide pads
    # strided and dilated: im2col on both (phases are for undilated windows)
    ((1, 3, 33, 31), (37, 3, 3, 3), dict(strides=[2, 2], dilations=[2, 2], pads=[2, 2, 2, 2]), "_run_blocks"),
    ((1, 40, 13, 13), (70, 40, 3, 3), dict(strides=[2, 2], dilations=[2, 2], pads=[2, 2, 2, 2]), "_run_gemm"),
]


@pytest.mark.parametrize("x_shape,w_shape,attrs,path", CONVS)
@pytest.mark.parametrize("tiled", [True, False])
@pytest.mark.parametrize("activation", ["Relu", "HardSwish"])
def test_convolutions_with_and_without_the_tiles(monkeypatch, x_shape, w_shape, attrs, path, tiled, activation):
    path = path.split("/")[0 if tiled else -1]
    every_strided_conv_over_phases(monkeypatch)
    if not tiled:  # _prepare_tiles as it is where the tiles do not apply (float64, no pool)
        def untiled(self, *args):
            self.tiled, self.w_panels, self.w_rows = False, None, None

        monkeypatch.setattr(numba_conv.NumbaConv, "_prepare_tiles", untiled)
    model, feeds = conv_model(x_shape, w_shape, activation=activation, **attrs)
    it = Interpreter(from_onnx(model), device="numba", num_threads=2)
    (kernel,) = [step[0].__self__ for step in it._plans["serving_default"].prepared.steps]
    np.testing.assert_allclose(it.run(feeds)["y"], ort_run(model, feeds)["y"], rtol=1e-4, atol=1e-4)
    assert kernel.tiled is tiled
    assert kernel.run.__name__ == path
    # the weights as A are packed into row tiles once (all but the product stored transposed;
    # a pointwise Conv keeps both packings: its layouts are chosen after prepare)
    assert (kernel.w_rows is not None) is (tiled and (kernel.w_panels is None or kernel.params.pointwise))


@pytest.mark.parametrize("x_shape,w_shape,attrs,path", CONVS)
def test_weights_given_at_run_time_are_read_where_they_lie(monkeypatch, x_shape, w_shape, attrs, path):
    """Weights that are a graph input (no constant to pack at prepare), two runs with
    different weights: each run's own weights are used."""
    path = path.split("/")[0]
    every_strided_conv_over_phases(monkeypatch)
    model, feeds = conv_model(x_shape, w_shape, activation="Relu", **attrs)
    weights = onnx.numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == "w"))
    model.graph.initializer.remove(next(i for i in model.graph.initializer if i.name == "w"))
    model.graph.input.append(onnx.helper.make_tensor_value_info("w", onnx.TensorProto.FLOAT, w_shape))
    it = Interpreter(from_onnx(model), device="numba", num_threads=2)
    (kernel,) = [step[0].__self__ for step in it._plans["serving_default"].prepared.steps]
    assert kernel.tiled and kernel.w_rows is None and kernel.w_panels is None and kernel.run.__name__ == path
    for scale in (1.0, -0.5):  # (the same weights object is not reused: a fresh array each run)
        feeds = dict(feeds, w=(weights * scale).astype(np.float32))
        np.testing.assert_allclose(it.run(feeds)["y"], ort_run(model, feeds)["y"], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("w_shape,attrs", [((12, 8, 1, 1), {}), ((12, 8, 3, 3), dict(pads=[1, 1, 1, 1]))])
def test_a_strided_output_gets_every_value(w_shape, attrs):
    """A caller's strided output view (the planner never makes one): the tiles need a
    contiguous output, so such a call takes numpy's product and still fills every value."""
    model, feeds = conv_model((2, 8, 6, 6), w_shape, activation="Relu", **attrs)
    it = Interpreter(from_onnx(model), device="numba", num_threads=2)
    want = ort_run(model, feeds)["y"]
    (run, ins, _outs, _node), = it._plans["serving_default"].prepared.steps
    wide = np.full((2, 12, 6, 12), -1.0, np.float32)
    run([feeds["x"], *ins[1:]], [wide[..., ::2]])
    np.testing.assert_allclose(wide[..., ::2], want, rtol=1e-4, atol=1e-4)
    assert (wide[..., 1::2] == -1).all()


@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("b_mode", ["stride", "table"])
def test_a_depth_of_zero_gives_the_bias_residual_and_activation(transposed, b_mode):
    rng = np.random.default_rng(5)
    a = np.zeros((1, TILE_ROWS + 1, 0), np.float32)
    b = np.zeros((1, 0, TILE_COLUMNS + 3), np.float32)
    bias = rng.standard_normal(TILE_COLUMNS + 3).astype(np.float32)
    residual = rng.standard_normal((1, TILE_ROWS + 1, TILE_COLUMNS + 3)).astype(np.float32)
    got = run_tiles(a, b, bias=bias, bias_mode=BIAS_PER_COLUMN, residual=residual, activation=("Relu", ()),
                    b_mode=b_mode, transposed=transposed, tasks=(2, 1), rows_outer=True)
    np.testing.assert_allclose(got, np.maximum(bias + residual, 0), rtol=1e-6)


def test_convolutions_of_no_input_channels_give_their_bias():
    for w_shape, attrs in (((4, 0, 1, 1), {}), ((4, 0, 3, 3), dict(pads=[1, 1, 1, 1]))):
        model, _ = conv_model((1, 0, 5, 5), w_shape, **attrs)
        bias = next(t for t in model.graph.initializer if t.name == "b")
        it = Interpreter(from_onnx(model), device="numba", num_threads=2)
        got = it.run({"x": np.zeros((1, 0, 5, 5), np.float32)})["y"]
        want = np.broadcast_to(np.frombuffer(bias.raw_data, np.float32)[None, :, None, None], got.shape)
        np.testing.assert_array_equal(got, want)


def test_a_generic_cpu_gets_the_generic_vector_width(tmp_path):
    """NUMBA_CPU_NAME=generic (a numba cache shared between machines: its key names no CPU
    features) compiles for baseline x86-64 / aarch64: the tiles take that width, not this
    host's, so a kernel cached on one machine packs and reads panels of the same width on
    another."""
    script = textwrap.dedent("""
        import numpy as np
        from edgerun.devices import numba_microkernel as mk
        assert mk.VECTOR_LANES == 4, mk.VECTOR_LANES
        from tests.devices.test_numba_microkernel import run_tiles, oracle, EMPTY
        rng = np.random.default_rng(1)
        a = rng.standard_normal((1, 11, 19)).astype(np.float32)
        b = rng.standard_normal((1, 19, 21)).astype(np.float32)
        got = run_tiles(a, b, b_mode="packed", tasks=(2, 1))
        np.testing.assert_allclose(got, oracle(a, b, EMPTY, mk.BIAS_NONE, None, None), rtol=1e-4, atol=1e-4)
        print("ok")
    """)
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path), NUMBA_CPU_NAME="generic")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600,
                          cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().endswith("ok")


@pytest.mark.parametrize("b_mode", ["stride", "table", "packed"])
@pytest.mark.parametrize("transposed,rows_outer", [(False, False), (False, True), (True, False)])
@pytest.mark.parametrize("a_packed", [False, True])
def test_a_long_depth_is_summed_in_blocks(b_mode, transposed, rows_outer, a_packed):
    """2 * DEPTH_BLOCK + 41 products per sum: three depth blocks, the later ones added to C (or
    to the scratch tile, transposed), the bias and residual once, the clip after the last."""
    rng = np.random.default_rng(601)
    depth = 2 * numba_microkernel.DEPTH_BLOCK + 41
    a = rng.standard_normal((1, 13, depth)).astype(np.float32)
    b = rng.standard_normal((1, depth, 45)).astype(np.float32)
    bias = rng.standard_normal(45).astype(np.float32)
    residual = rng.standard_normal((1, 13, 45)).astype(np.float32)
    got = run_tiles(a, b, bias=bias, bias_mode=BIAS_PER_COLUMN, residual=residual, activation=("Relu", ()),
                    b_mode=b_mode, transposed=transposed, rows_outer=rows_outer, tasks=(2, 1), a_packed=a_packed)
    want = oracle(a, b, bias, BIAS_PER_COLUMN, residual, ("Relu", ()))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


@pytest.mark.parametrize("x_shape,w_shape,attrs,path,as_rows", [
    # a 3x3 Conv at 7 x 7 with more filters than outputs: im2col's 49 pixels as rows in short
    # tiles, the packed weights as B, stored transposed (as wide rows: 49 of 64 columns)
    ((1, 16, 7, 7), (64, 16, 3, 3), dict(pads=[1, 1, 1, 1]), "_run_gemm", None),
    ((2, 8, 7, 7), (72, 8, 3, 3), dict(pads=[1, 1, 1, 1]), "_run_gemm", None),
    ((1, 16, 13, 13), (192, 16, 3, 3), dict(pads=[1, 1, 1, 1]), "_run_gemm", None),  # 169 of 176 rows, of 224
    ((1, 16, 14, 14), (224, 16, 3, 3), dict(pads=[1, 1, 1, 1]), "_run_wide", None),  # 98 % against 87.5 %: wide
    ((1, 16, 7, 7), (40, 16, 3, 3), dict(pads=[1, 1, 1, 1]), "_run_wide", None),     # fewer filters than pixels
    # NCHW pointwise at no more filters than channels: pixels as rows, stored transposed
    ((2, 48, 7, 7), (40, 48, 1, 1), {}, "_run_gemm", True),
    ((1, 48, 14, 14), (40, 48, 1, 1), {}, "_run_gemm", True),
    ((1, 24, 7, 7), (40, 24, 1, 1), {}, "_run_gemm", False),   # more filters: the weights as rows
    ((1, 48, 28, 28), (40, 48, 1, 1), {}, "_run_gemm", False),  # 784 pixels fill the columns too
])
def test_pixels_as_rows_at_small_planes(x_shape, w_shape, attrs, path, as_rows):
    """(The choices are the AVX-512 tiles' (8 x 32); other widths fill otherwise and may
    choose otherwise: there the results are checked.)"""
    model, feeds = conv_model(x_shape, w_shape, activation="Relu", **attrs)
    it = Interpreter(from_onnx(model), device="numba", num_threads=2)
    (kernel,) = [step[0].__self__ for step in it._plans["serving_default"].prepared.steps]
    np.testing.assert_allclose(it.run(feeds)["y"], ort_run(model, feeds)["y"], rtol=1e-4, atol=1e-4)
    assert kernel.tiled
    if path == "_run_gemm" and not kernel.params.pointwise:
        assert kernel.w_panels is not None  # (B: the weights packed in panels)
    if TILE_ROWS != 8 or TILE_COLUMNS != 32:
        return
    assert kernel.run.__name__ == path
    if as_rows is not None:
        (_run, ins, outs, _node), = it._plans["serving_default"].prepared.steps
        kernel_function, arguments = kernel._pointwise_arguments(ins, outs)
        assert kernel_function is gemm_tiles and arguments[-4] is as_rows  # (transposed)


def test_a_residual_added_to_pixels_as_rows():
    """Conv + Add + Relu (one FusedConv) at 7 x 7, pointwise, stored transposed: the residual
    is read the same way round."""
    rng = np.random.default_rng(3)
    w = rng.standard_normal((40, 48, 1, 1)).astype(np.float32)
    b = rng.standard_normal(40).astype(np.float32)
    nodes = [onnx.helper.make_node("Conv", ["x", "w", "b"], ["c"]), onnx.helper.make_node("Add", ["c", "z"], ["s"]),
             onnx.helper.make_node("Relu", ["s"], ["y"])]
    graph = onnx.helper.make_graph(
        nodes, "g", [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, (2, 48, 7, 7)),
                     onnx.helper.make_tensor_value_info("z", onnx.TensorProto.FLOAT, (2, 40, 7, 7))],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
        [onnx.numpy_helper.from_array(w, "w"), onnx.numpy_helper.from_array(b, "b")])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    model.ir_version = 8
    feeds = {"x": rng.standard_normal((2, 48, 7, 7)).astype(np.float32),
             "z": rng.standard_normal((2, 40, 7, 7)).astype(np.float32)}
    it = Interpreter(from_onnx(model), device="numba", num_threads=2)
    steps = it._plans["serving_default"].prepared.steps
    assert [step[3].op_type for step in steps] == ["FusedConv"]
    np.testing.assert_allclose(it.run(feeds)["y"], ort_run(model, feeds)["y"], rtol=1e-4, atol=1e-4)
    if TILE_ROWS == 8:
        (_run, ins, outs, _node), = steps
        kernel_function, arguments = steps[0][0].__self__._pointwise_arguments(ins, outs)
        assert kernel_function is gemm_tiles and arguments[-4] is True


@pytest.mark.parametrize("channels,filters,out_height,padded_height,wp,reach,want", [
    (64, 64, 224, 226, 226, 2, (32, 34)),    # VGG's 64 x 224 x 224: 7 bands of 32 rows
    (128, 128, 112, 114, 114, 2, (28, 30)),  # 4 bands of 28
    (64, 64, 56, 58, 58, 2, (56, 58)),       # ResNet's 56 x 56: one band, the whole plane
    (3, 64, 10, 12, 12, 2, (10, 12)),
])
def test_wide_bands_fit_their_buffers(channels, filters, out_height, padded_height, wp, reach, want):
    got = numba_conv.wide_band(channels, filters, out_height, padded_height, wp, reach)
    assert got == want
    rows, height = got
    assert 4 * wp * max(channels, filters) * height <= numba_conv.BAND_BYTES or rows == out_height


@pytest.mark.parametrize("x_shape,w_shape,attrs", [
    ((2, 5, 13, 11), (7, 5, 3, 3), dict(pads=[1, 0, 2, 1])),
    ((1, 4, 20, 9), (33, 4, 3, 3), dict(dilations=[2, 1], pads=[2, 1, 1, 1])),
    ((1, 3, 17, 17), (16, 3, 5, 5), dict(pads=[2, 2, 2, 2])),
])
@pytest.mark.parametrize("band_bytes", [1, 2500])
def test_a_stride_one_conv_in_bands_of_rows(monkeypatch, x_shape, w_shape, attrs, band_bytes):
    """Bands of one output row, and of a few rows with a shorter last one (BAND_BYTES made
    small for test sizes): every row written once, against onnxruntime."""
    monkeypatch.setattr(numba_conv, "BAND_BYTES", band_bytes)
    model, feeds = conv_model(x_shape, w_shape, activation="Relu", **attrs)
    it = Interpreter(from_onnx(model), device="numba", num_threads=2)
    (kernel,) = [step[0].__self__ for step in it._plans["serving_default"].prepared.steps]
    assert kernel.run.__name__ == "_run_wide" and kernel.tiled
    out_height = it.run(feeds)["y"].shape[2]
    assert kernel.band[0] < out_height and (band_bytes > 1 or kernel.band[0] == 1)
    np.testing.assert_allclose(it.run(feeds)["y"], ort_run(model, feeds)["y"], rtol=1e-4, atol=1e-4)


def test_no_compiled_function_of_the_backend_has_default_arguments():
    """numba compiles a parallel function called with an omitted default argument into a loop
    that ran 4x slower and on one thread (epilogue_wide's band rows did so to every implicit-GEMM
    Conv): every compiled function of the backend takes all its arguments from its callers."""
    import importlib
    import inspect
    import pkgutil

    from numba.core.registry import CPUDispatcher

    import edgerun.devices as devices

    checked, with_defaults = 0, []
    for info in pkgutil.iter_modules(devices.__path__):
        if not info.name.startswith("numba_"):
            continue
        module = importlib.import_module(f"edgerun.devices.{info.name}")
        for name, value in vars(module).items():
            if isinstance(value, CPUDispatcher) and value.py_func.__module__ == module.__name__:
                checked += 1
                defaults = [p.name for p in inspect.signature(value.py_func).parameters.values()
                            if p.default is not inspect.Parameter.empty]
                if defaults:
                    with_defaults.append((info.name, name, defaults))
    assert checked > 30 and with_defaults == []


@pytest.mark.parametrize("wp,ow,out_rows", [(57, 55, 3), (16, 14, 5), (9, 7, 7), (6, 4, 9), (3, 1, 20), (40, 40, 2)])
@pytest.mark.parametrize("k", [7, numba_microkernel.DEPTH_BLOCK + 37])  # one depth block, two
@pytest.mark.parametrize("residual,activation", [(False, None), (True, ("Relu", ())), (False, ("Clip", (-0.5, 0.7)))])
@pytest.mark.parametrize("tasks", [(1, 1), (2, 1), (1, 2)])
@pytest.mark.parametrize("a_packed", [False, True])
def test_products_placed_by_a_column_map(wp, ow, out_rows, k, residual, activation, tasks, a_packed):
    """A wide-row product straight into output rows (c_map from wide_columns): each output
    the float64 product of its own column with the row's bias, residual and clip, the padding
    columns (NaN in B) never stored, nothing written outside the outputs, and the same map
    reading the residual and C itself across depth blocks; vectors that span up to six rows."""
    rng = np.random.default_rng(wp * 100 + ow + k)
    images, m = 2, 2 * TILE_ROWS + 3
    span, plane = (out_rows - 1) * wp + ow, out_rows * ow
    a = rng.standard_normal((images, m, k)).astype(np.float32)
    b = rng.standard_normal((images, k, span)).astype(np.float32)
    padding = (np.arange(span) % wp) >= ow
    b[:, :, padding] = np.nan
    bias = rng.standard_normal(m).astype(np.float32)
    extra = rng.standard_normal((images, m, plane)).astype(np.float32) if residual else None
    if a_packed:
        a_flat = np.concatenate([pack_rows(a[g]) for g in range(images)])
        a_row, a_k, a_tile, a_image = 1, TILE_ROWS, k * TILE_ROWS, a_flat.size // images
    else:
        a_flat, a_row, a_k, a_tile, a_image = a.reshape(-1), k, 1, 0, m * k
    guard = 3 * TILE_COLUMNS
    c = np.full(images * m * plane + 2 * guard, np.nan, np.float32)
    code, consts, _ = activation_code(activation, np.float32)
    numba.set_num_threads(2)
    gemm_tiles(a_flat, a_row, a_k, a_image, m, k, b.reshape(-1), TILE_COLUMNS, span, BY_STRIDE, k * span, span,
               c[guard:], plane, m * plane, images, bias, BIAS_PER_ROW,
               EMPTY if extra is None else extra.reshape(-1), plane, m * plane, code, consts, *tasks, False, False,
               a_tile, TILE_ROWS, numba_conv.wide_columns(span, wp, ow))
    full = np.matmul(a.astype(np.float64), np.where(np.isnan(b), 0.0, b).astype(np.float64))
    want = full[:, :, ~padding] + bias[None, :, None]
    if extra is not None:
        want += extra
    if activation is not None:
        apply_activation(want, activation)
    got = c[guard : guard + images * m * plane].reshape(images, m, plane)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert np.isnan(c[:guard]).all() and np.isnan(c[-guard:]).all()


@pytest.mark.parametrize("x_shape,w_shape,attrs,path", [
    ((2, 5, 13, 11), (7, 5, 3, 3), dict(pads=[1, 0, 2, 1]), "_run_wide"),
    ((1, 3, 4, 4), (9, 3, 3, 3), dict(pads=[1, 1, 1, 1]), "_run_wide"),                 # rows of 4 in 6
    ((1, 4, 20, 9), (33, 4, 3, 3), dict(dilations=[2, 1], pads=[2, 1, 1, 1]), "_run_wide"),
    ((2, 16, 62, 62), (24, 16, 3, 3), dict(strides=[2, 2], pads=[1, 1, 1, 1]), "_run_phases"),
    ((1, 3, 64, 64), (16, 3, 7, 7), dict(strides=[2, 2], pads=[3, 3, 3, 3]), "_run_phases"),
])
@pytest.mark.parametrize("activation", [None, "Relu", "HardSwish"])
@pytest.mark.parametrize("mapped", [True, False])
def test_implicit_gemms_write_their_outputs_in_place(monkeypatch, x_shape, w_shape, attrs, path, activation, mapped):
    """Tiles that write the output's rows themselves (bias and a clip inside them: MAP_WIDE,
    an activation of none or a clip) and through the wide-row buffer and its epilogue (any
    other activation, or MAP_WIDE off), against onnxruntime; a band of rows at a time too."""
    monkeypatch.setattr(numba_conv, "MAP_WIDE", mapped)
    monkeypatch.setattr(numba_conv, "BAND_BYTES", 2500)
    model, feeds = conv_model(x_shape, w_shape, activation=activation, **attrs)
    it = Interpreter(from_onnx(model), device="numba", num_threads=2)
    (kernel,) = [step[0].__self__ for step in it._plans["serving_default"].prepared.steps]
    assert kernel.run.__name__ == path and kernel.tiled
    np.testing.assert_allclose(it.run(feeds)["y"], ort_run(model, feeds)["y"], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("x_shape,w_shape,attrs,path", [
    ((2, 5, 13, 11), (7, 5, 3, 3), dict(pads=[1, 1, 1, 1]), "_run_wide"),
    ((1, 16, 62, 62), (24, 16, 3, 3), dict(strides=[2, 2], pads=[1, 1, 1, 1]), "_run_phases"),
])
@pytest.mark.parametrize("activation", [None, "Relu", "HardSwish"])
@pytest.mark.parametrize("mapped", [True, False])
def test_a_residual_added_in_the_tiles_of_an_implicit_gemm(monkeypatch, x_shape, w_shape, attrs, path, activation,
                                                          mapped):
    """Conv + Add [+ activation] (one FusedConv) on the wide-row and phase-plane paths: Z added
    in the tiles (none or a clip, MAP_WIDE), or by the pass after them, in bands of rows too;
    against onnxruntime."""
    monkeypatch.setattr(numba_conv, "MAP_WIDE", mapped)
    monkeypatch.setattr(numba_conv, "BAND_BYTES", 2500)
    rng = np.random.default_rng(4)
    w = rng.standard_normal(w_shape).astype(np.float32)
    b = rng.standard_normal(w_shape[0]).astype(np.float32)
    nodes = [onnx.helper.make_node("Conv", ["x", "w", "b"], ["c"], **attrs),
             onnx.helper.make_node("Add", ["c", "z"], ["s" if activation else "y"])]
    if activation:
        nodes.append(onnx.helper.make_node(activation, ["s"], ["y"]))
    model, feeds = conv_model(x_shape, w_shape, **attrs)
    out_shape = ort_run(model, feeds)["y"].shape
    graph = onnx.helper.make_graph(
        nodes, "g", [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, x_shape),
                     onnx.helper.make_tensor_value_info("z", onnx.TensorProto.FLOAT, out_shape)],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
        [onnx.numpy_helper.from_array(w, "w"), onnx.numpy_helper.from_array(b, "b")])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    model.ir_version = 8
    feeds = {"x": rng.standard_normal(x_shape).astype(np.float32),
             "z": rng.standard_normal(out_shape).astype(np.float32)}
    it = Interpreter(from_onnx(model), device="numba", num_threads=2)
    steps = it._plans["serving_default"].prepared.steps
    assert [step[3].op_type for step in steps] == ["FusedConv"]
    kernel = steps[0][0].__self__
    assert kernel.conv_run.__name__ == path
    assert (kernel.implicit is not None) == (activation != "HardSwish")
    np.testing.assert_allclose(it.run(feeds)["y"], ort_run(model, feeds)["y"], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("strides", [[1, 1], [2, 2]])
@pytest.mark.parametrize("activation", [None, "Relu", "HardSwish"])
def test_a_residual_conv_fills_a_strided_output_view(monkeypatch, strides, activation):
    """A caller's strided output view (the planner never makes one) for Conv + Add [+
    activation]: Z and the activation reach the view itself, not a reshaped copy."""
    monkeypatch.setattr(numba_conv, "PHASES_MIN_USEFUL", 0.0)
    monkeypatch.setattr(numba_conv, "PHASES_MIN_DEPTH", 0)
    rng = np.random.default_rng(5)
    n, c, m, h, w = 2, 5, 9, 13, 11
    oh, ow = (h - 1) // strides[0] + 1, (w - 1) // strides[1] + 1
    weights = rng.standard_normal((m, c, 3, 3)).astype(np.float32)
    bias = rng.standard_normal(m).astype(np.float32)
    nodes = [onnx.helper.make_node("Conv", ["x", "w", "b"], ["c"], strides=strides, pads=[1, 1, 1, 1]),
             onnx.helper.make_node("Add", ["c", "z"], ["s" if activation else "y"])]
    if activation:
        nodes.append(onnx.helper.make_node(activation, ["s"], ["y"]))
    graph = onnx.helper.make_graph(
        nodes, "g", [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, (n, c, h, w)),
                     onnx.helper.make_tensor_value_info("z", onnx.TensorProto.FLOAT, (n, m, oh, ow))],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
        [onnx.numpy_helper.from_array(weights, "w"), onnx.numpy_helper.from_array(bias, "b")])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    model.ir_version = 8
    feeds = {"x": rng.standard_normal((n, c, h, w)).astype(np.float32),
             "z": rng.standard_normal((n, m, oh, ow)).astype(np.float32)}
    it = Interpreter(from_onnx(model), device="numba", num_threads=2)
    (run, _ins, _outs, node), = it._plans["serving_default"].prepared.steps
    assert node.op_type == "FusedConv" and run.__name__ == "_run_then_add"
    want = ort_run(model, feeds)["y"]
    for wide, view in ((np.full((n, m, oh, ow + 4), np.nan, np.float32), lambda b: b[..., 2 : ow + 2]),
                       (np.full((n, m, ow, oh), np.nan, np.float32), lambda b: b.transpose(0, 1, 3, 2))):
        out = view(wide)
        run([feeds["x"], weights, bias, feeds["z"]], [out])
        np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-4)
        assert np.isnan(wide).sum() == wide.size - out.size  # nothing written beside the view

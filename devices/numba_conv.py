"""The numba backend's 2-D convolutions on float NCHW tensors, each with its epilogue (bias,
fused activation; see devices.numba_epilogue) in the same kernel:

- depthwise (one input channel per group, any channel multiplier): a direct compiled loop,
  parallel over the output planes. For each output row and kernel tap it works out once which
  output columns read inside the input, so the inner loop is a branch-free multiply-add over a
  contiguous row (stride 1) that LLVM vectorizes; the bias starts the row, the activation
  finishes it while it is still in cache. numpy's batched matmul over gathered taps (the
  reference) moves 9x the data through memory for 9 multiply-adds per output.
- pointwise (1x1, stride 1, no padding): one BLAS product per group straight on the
  activation, no im2col, on numba's pool in blocks each finished by the epilogue
  (devices.numba_blas.gemm_epilogue).
- general, one group (`conv_blocks`): per task a block of output positions, its im2col columns
  gathered straight from the unpadded input into a per-thread buffer about the size of L2,
  one single-threaded BLAS product, the epilogue on the block it wrote: the columns never
  leave the cache (a whole-image im2col of a 56x56x64 layer is 7 MB written, then read).
- general, grouped (or where numpy's BLAS cannot be called from compiled code): a compiled
  im2col of the whole image, BLAS products (one call per group), the compiled epilogue.

float32 with one group runs its products on our own register-tiled GEMM instead of OpenBLAS
(devices.numba_microkernel), the epilogue inside the tile, the weights packed once at prepare:
pointwise ones straight on the activation (channels-last on either side, or NCHW), stride-1
ones as an implicit GEMM over the zero-bordered input (no im2col buffer), strided ones as an
implicit GEMM over the input's phase planes (`phase_planes`: rows and columns split by their
remainder modulo the stride, so every tap reads one plane with unit stride) where the output
is big enough to fill the tiles (PHASES_MIN_USEFUL), else in `conv_blocks`'s blocks or the
whole-image im2col's product.

Earns its place in benchmarks/bench_cnn_models.py (MobileNet/ShuffleNet/EfficientNet).
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

from edgerun.devices.numba_blas import (
    finish_rows,
    gemm_epilogue,
    gemm_in_pool,
    gemm_split,
    pointwise_layouts,
    product,
    single_threaded,
)
from edgerun.devices.numba_depthwise import (
    channels_last_buffers,
    depthwise_2d,
    depthwise_buffers,
    depthwise_channels_last,
)
from edgerun.devices.numba_epilogue import (
    CLIP,
    NONE,
    activate_row,
    activation_code,
    epilogue,
    finish_activation,
    finish_epilogue,
)
from edgerun.devices.numba_microkernel import (
    BIAS_NONE,
    BIAS_PER_COLUMN,
    BIAS_PER_ROW,
    BY_STRIDE,
    NO_MAP,
    TILE_COLUMNS,
    TILE_ROWS,
    gemm_tiles,
    pack_panels,
    pack_rows,
    pixels_as_rows,
    row_height,
    tile_tasks,
    tiles_in_range,
)
from edgerun.devices.numba_threads import thread_count, use_threads
from edgerun.runtime.kernels.base import TensorSpec
from edgerun.runtime.kernels.conv import ConvParams
from edgerun.runtime.kernels.fused import apply_activation
from edgerun.runtime.kernels.registry import accelerate
from edgerun.runtime.kernels.spatial import Window, scratch
from edgerun.runtime.layout import ChannelsLastOffer

BACKEND = "numba"
# Output planes up to this many pixels run depthwise channels-last (devices.numba_depthwise)...
CHANNELS_LAST_MAX_PLANE = 28 * 28
# ...except with a 3x3 or 5x5 kernel at stride 1 or 2, whose plane-by-plane passes take all
# taps at once; these run channels-last only up to the plane size for their stride (measured
# on MobileNetV2's and EfficientNet-B0's layers: planes won 1.2-2x from 14x14 outputs up at
# stride 1 and at 28x28 at stride 2, channels-last won 1.4-2.5x on 7x7 and on 14x14 at stride 2).
CHANNELS_LAST_MAX_PLANE_WIDE_TAPS = {1: 10 * 10, 2: 20 * 20}


def channels_last(kernel: tuple[int, ...], strides: tuple[int, ...], dilations: tuple[int, ...],
                  out_shape: tuple[int, ...]) -> bool:
    """Whether a depthwise Conv (multiplier 1) with this geometry runs channels-last."""
    plane = out_shape[0] * out_shape[1]
    stride = strides[0]
    if (kernel in ((3, 3), (5, 5)) and strides[1] == stride and stride in CHANNELS_LAST_MAX_PLANE_WIDE_TAPS
            and (stride == 1 or dilations[1] == 1)):  # (stride 2 reads column halves: no column dilation)
        return plane <= CHANNELS_LAST_MAX_PLANE_WIDE_TAPS[stride]
    return plane <= CHANNELS_LAST_MAX_PLANE
# Inside channels-last regions (runtime.layout), measured on MobileNetV2's layers at 1 thread:
# depthwise channels-last won 1.6-2.4x on 28x28 outputs and below (0.10 vs 0.19 ms at 14x14x384)
# and lost on larger planes (0.58 vs 0.39 ms at 56x56x144); a pointwise product into or out of
# NHWC costs the same up to 56x56 pixels and 1.4-1.8x more on 112x112 (16 or 32 channels: thin
# products), so only such layers offer to join a region.
CHANNELS_LAST_MAX_DEPTHWISE = 28 * 28
CHANNELS_LAST_MAX_POINTWISE = 56 * 56
# An im2col product on our own tiles walks each block of weight rows across all of the columns'
# panels when the columns (rows x positions) are at most this big (they stay in cache) and the
# weights are the bigger operand
ROWS_OUTER_MAX_B_BYTES = 256 * 1024
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


@njit(inline="always")
def valid_columns(off, stride, in_size, out_size):  # pragma: no cover - compiled
    """[z0, z1): the outputs z whose input column z * stride + off lies in [0, in_size)."""
    z0 = max(0, (-off + stride - 1) // stride)
    z1 = min(out_size, (in_size - 1 - off) // stride + 1)
    return z0, max(z0, z1)


@njit(parallel=True, cache=True, nogil=True)
def gather_columns(padded, cols, starts, offsets):  # pragma: no cover - compiled
    """cols[n, r, q] = padded[n, starts[r] + offsets[q]]: im2col from zero-bordered planes
    (pad_planes), row r = (c, i, j) starting at its plane shifted by the tap, column q = (y, z)
    at y*SH*WP + z*SW. One branch-free loop per row (a per-output-row im2col's bounds and
    slices cost 2-2.5x this at 7 x 7 and 13 x 13). Parallel over the rows."""
    n_, r_, p_ = cols.shape
    for task in prange(n_ * r_):
        n, r = task // r_, task % r_
        src, dst, start = padded[n], cols[n, r], starts[r]
        for q in range(p_):
            dst[q] = src[start + offsets[q]]


@njit(inline="always")
def _pad_plane(src_plane, plane, h, wd, hp, wp, ph, pw):  # pragma: no cover - compiled
    """plane (HP*WP) = src_plane (H, W) with its zero border: ph rows above, pw columns left."""
    for row in range(hp):
        y = row - ph
        dst = plane[row * wp : (row + 1) * wp]
        if y < 0 or y >= h:
            for z in range(wp):
                dst[z] = 0.0
            continue
        for z in range(pw):
            dst[z] = 0.0
        src, mid = src_plane[y], dst[pw : pw + wd]
        for z in range(wd):
            mid[z] = src[z]
        for z in range(pw + wd, wp):
            dst[z] = 0.0


@njit(parallel=True, cache=True, nogil=True)
def pad_planes(x, padded, ph, pw, wp):  # pragma: no cover - compiled
    """padded (N, C, HP*WP; any contents) = each plane of x (N, C, H, W) with its zero border
    (im2col_wide's first half: an implicit GEMM reads these planes directly). Parallel over
    the planes."""
    n_, c_, h, wd = x.shape
    hp = padded.shape[2] // wp
    for task in prange(n_ * c_):
        n, c = task // c_, task % c_
        _pad_plane(x[n, c], padded[n, c], h, wd, hp, wp, ph, pw)


@njit(parallel=True, cache=True, nogil=True)
def phase_planes(x, phases, sh, sw, ph, pw, wq):  # pragma: no cover - compiled
    """phases (N, C*SH*SW, HQ*WQ; any contents)[n, (c*sh + p)*sw + q, u*WQ + v] = x[n, c,
    u*sh + p - ph, v*sw + q - pw], 0 outside x: each plane's zero-bordered rows and columns
    split by their remainder modulo the stride, so that a strided Conv's tap (i, j) reads
    phase (i % sh, j % sw) shifted by (i // sh, j // sw) with unit stride (an implicit GEMM:
    no im2col copy). Parallel over (n, c, row phase)."""
    n_, c_, h, wd = x.shape
    hq = phases.shape[2] // wq
    for task in prange(n_ * c_ * sh):
        plane, p = task // sh, task % sh
        n, c = plane // c_, plane % c_
        src = x[n, c]
        for q in range(sw):
            dst = phases[n, (c * sh + p) * sw + q]
            v0, v1 = valid_columns(q - pw, sw, wd, wq)
            for u in range(hq):
                line = dst[u * wq : (u + 1) * wq]
                row = u * sh + p - ph
                if row < 0 or row >= h:
                    line[:] = 0.0
                    continue
                line[:v0] = 0.0
                line[v1:] = 0.0
                if v1 > v0:
                    start = v0 * sw + q - pw
                    values, part = src[row, start : start + (v1 - v0 - 1) * sw + 1], line[v0:v1]
                    for k in range(v1 - v0):
                        part[k] = values[k * sw]


@njit(parallel=True, cache=True, nogil=True)
def im2col_wide(x, cols, kh, kw, dh, dw, ph, pw, wp, padded):  # pragma: no cover - compiled
    """Stride-1 im2col in "wide rows": each plane of x goes into `padded` (N, C, HP*WP; any
    contents) with its zero border, then cols[n, (c*kh + i)*kw + j, q] = padded[n, c, q + i*dh*WP
    + j*dw] for q < span = cols.shape[2]: one contiguous copy per row of cols, no per-pixel
    bounds. Column q stands for output (q // WP, q % WP); those with q % WP >= OW are junk the
    epilogue skips. Parallel over the (n, c) planes."""
    n_, c_, h, wd = x.shape
    hp, span = padded.shape[2] // wp, cols.shape[2]
    for task in prange(n_ * c_):
        n, c = task // c_, task % c_
        plane = padded[n, c]
        _pad_plane(x[n, c], plane, h, wd, hp, wp, ph, pw)
        for i in range(kh):
            for j in range(kw):
                start = i * dh * wp + j * dw
                out, src = cols[n, (c * kh + i) * kw + j], plane[start : start + span]
                for q in range(span):
                    out[q] = src[q]


@njit(inline="always")
def _gather_block(x, n, cols, q0, q1, kh, kw, sh, sw, dh, dw, ph, pw, ow):  # pragma: no cover - compiled
    """cols[(c*kh + i)*kw + j, q - q0] = x[n, c, y*sh - ph + i*dh, z*sw - pw + j*dw] for the
    output positions q = y*ow + z in [q0, q1), 0 outside x: the im2col columns of one block."""
    c_, h, wd = x.shape[1], x.shape[2], x.shape[3]
    for row in range(c_ * kh * kw):
        c, tap = row // (kh * kw), row % (kh * kw)
        i, j = tap // kw, tap % kw
        dst = cols[row]
        off = j * dw - pw
        z_lo, z_hi = valid_columns(off, sw, wd, ow)
        q = q0
        while q < q1:
            y, z_start = q // ow, q % ow
            z_stop = min(ow, z_start + q1 - q)
            base = q - q0 - z_start  # dst index of column z on this output row: base + z
            sy = y * sh - ph + i * dh
            if sy < 0 or sy >= h:
                for z in range(z_start, z_stop):
                    dst[base + z] = 0.0
            else:
                lo, hi = max(z_start, z_lo), min(z_stop, z_hi)
                for z in range(z_start, min(lo, z_stop)):
                    dst[base + z] = 0.0
                if hi > lo:
                    out = dst[base + lo : base + hi]
                    if sw == 1:  # from 0 over slices: a vectorized copy
                        src = x[n, c, sy, lo + off : hi + off]
                    else:
                        src = x[n, c, sy, lo * sw + off : (hi - 1) * sw + off + 1 : sw]
                    for k in range(hi - lo):
                        out[k] = src[k]
                for z in range(max(hi, z_start), z_stop):
                    dst[base + z] = 0.0
            q += z_stop - z_start


@njit(parallel=True, cache=True, nogil=True)
def conv_blocks(x, w, out, bias, residual, code, consts, kh, kw, sh, sw, dh, dw, ph, pw, ow, block,
                cols):  # pragma: no cover - compiled
    """A 2-D convolution (one group) as im2col + GEMM + epilogue one block of output positions
    at a time, so the block's columns are still in cache for the product and its result for
    the epilogue: out[n, m, q] = act(sum_r w[m, r] * cols[r, q] + bias[m] + residual[n, m, q])
    for x (N, C, H, W), w (M, C*kh*kw), out and residual (N, M, OH*OW), all C-contiguous; bias
    of size 0 means none, residual of size 0 means none. `block` output positions per task,
    parallel over (n, block); `cols` (pool threads, C*kh*kw, block) holds each thread's
    columns. Only where gemm_in_pool() is True, inside `with single_threaded:`."""
    n_, m_, p = out.shape
    k = w.shape[1]
    blocks = (p + block - 1) // block
    size = out.itemsize
    for task in prange(n_ * blocks):
        n, q0 = task // blocks, (task % blocks) * block
        q1 = min(p, q0 + block)
        width = q1 - q0
        mine = cols[numba.get_thread_id()]
        _gather_block(x, n, mine, q0, q1, kh, kw, sh, sw, dh, dw, ph, pw, ow)
        c = out.ctypes.data + (n * m_ * p + q0) * size
        product(size, 0, 0, m_, width, k, w.ctypes.data, k, mine.ctypes.data, block, c, p)
        finish_rows(out, n, 0, m_, q0, q1, bias, residual, code, consts)


@njit(parallel=True, cache=True, nogil=True)
def conv_blocks_tiled(x, w_rows, k, out, bias, residual, code, consts, kh, kw, sh, sw, dh, dw, ph, pw, ow, block,
                      cols, b_rows, rows_outer):  # pragma: no cover - compiled
    """conv_blocks for float32 with our own tiles (devices.numba_microkernel) for the product
    and its epilogue: the same operands and promise, but the weights (M, k = C*kh*kw) packed
    by pack_rows (`w_rows`); bias of size 0 none, residual of size 0 none; b_rows empty
    (devices.numba_microkernel.BY_STRIDE); `rows_outer` as gemm_tiles' (each row tile of
    filters over all of the block's columns); needs no `single_threaded`."""
    n_, m_, p = out.shape
    blocks = (p + block - 1) // block
    flat_out, flat_residual = out.reshape(out.size), residual.reshape(residual.size)
    bias_mode = BIAS_PER_ROW if bias.size > 0 else BIAS_NONE
    for task in prange(n_ * blocks):
        n, q0 = task // blocks, (task % blocks) * block
        q1 = min(p, q0 + block)
        mine = cols[numba.get_thread_id()]
        _gather_block(x, n, mine, q0, q1, kh, kw, sh, sw, dh, dw, ph, pw, ow)
        tiles_in_range(w_rows, 0, 1, TILE_ROWS, k * TILE_ROWS, 0, m_, k, mine.reshape(mine.size), 0, TILE_COLUMNS,
                       block, b_rows, 0, (q1 - q0 + TILE_COLUMNS - 1) // TILE_COLUMNS, q1 - q0, flat_out,
                       n * m_ * p + q0, p, bias, bias_mode, flat_residual, n * m_ * p + q0, p, code, consts, rows_outer,
                       TILE_ROWS, NO_MAP)


COLUMN_BLOCK_BYTES = 1 << 22  # the most a conv_blocks task's columns may take
MIN_BLOCK = 16


def conv_block_size(rows: int, positions: int, images: int, threads: int, itemsize: int) -> int:
    """Output positions per conv_blocks task: two tasks per thread over the batch (a multiple
    of 16, at least MIN_BLOCK, at most an image), and columns of at most COLUMN_BLOCK_BYTES.
    Smaller blocks, cut to fit L2, measured slower: every block's product packs the whole
    weight matrix again and runs on few columns."""
    block = -(-positions * images // (2 * max(1, threads)))
    block = min(-(-block // 16) * 16, COLUMN_BLOCK_BYTES // max(1, rows * itemsize) // 16 * 16)
    return min(positions, max(MIN_BLOCK, block))


@njit(parallel=True, cache=True, nogil=True)
def epilogue_wide(wide, out, wp, bias, code, consts, y0, rows):  # pragma: no cover - compiled
    """out[n, m, y0 + y, z] = act(wide[n, m, y*WP + z] + bias[m]) for y < rows (-1: to the
    last row): the valid columns of a wide-row product, with the bias (zeros for none) and
    the fused activation. Parallel over planes. (A band's rows by y0 and rows, not a slice
    of out: a strided view compiled to a loop 15x slower.)"""
    n_, m_, oh, ow = out.shape
    count = oh - y0 if rows < 0 else rows
    for plane in prange(n_ * m_):
        n, m = plane // m_, plane % m_
        b, src_plane = bias[m], wide[n, m]
        for y in range(count):
            row, src = out[n, m, y0 + y], src_plane[y * wp : y * wp + ow]
            for z in range(ow):
                row[z] = src[z] + b
            activate_row(row, code, consts)


def wide_columns(span: int, wp: int, ow: int) -> np.ndarray:
    """gemm_tiles' c_map for a wide-row product of `span` columns (rows of `wp`, of which the
    first `ow` are outputs) stored straight into an output plane's rows of `ow`: column j at
    (j // wp) * ow + j % wp, -1 for the padding columns."""
    row, column = np.divmod(np.arange(span, dtype=np.int64), wp)
    return np.where(column < ow, row * ow + column, -1).astype(np.int64)


def bordered_planes(geometry: tuple[int, ...], in_shape: tuple[int, ...],
                    out_shape: tuple[int, ...]) -> tuple[int, int]:
    """(HP, WP): the height and width of a plane with the zero border a window `geometry` (kh,
    kw, sh, sw, dh, dw, ph, pw) needs to make `out_shape` from `in_shape` (H, W) reading inside."""
    kh, kw, sh, sw, dh, dw, ph, pw = geometry
    (h, wd), (oh, ow) = in_shape, out_shape
    return max(ph + h, (oh - 1) * sh + (kh - 1) * dh + 1), max(pw + wd, (ow - 1) * sw + (kw - 1) * dw + 1)


def tap_starts(geometry: tuple[int, ...], channels: int, plane: int, wp: int) -> np.ndarray:
    """Where row (c, i, j) of an im2col starts in zero-bordered planes `plane` values apart,
    WP wide: c*plane + i*dh*WP + j*dw (int64)."""
    kh, kw, _, _, dh, dw, _, _ = geometry
    taps = (np.arange(kh)[:, None] * dh * wp + np.arange(kw)[None, :] * dw).reshape(-1)
    return (np.arange(channels)[:, None] * plane + taps[None, :]).reshape(-1).astype(np.int64)


PIXEL_ROWS_MARGIN = 1.15  # how much better pixels must fill row tiles than wide rows fill panels
BAND_BYTES = 2 << 20  # the most a band's zero-bordered input or wide product may take (wide_band)


def wide_band(channels: int, filters: int, out_height: int, padded_height: int, wp: int,
              reach: int) -> tuple[int, int]:
    """(output rows per band, zero-bordered input rows per band) for a tiled stride-1 Conv:
    all rows in one band where its zero-bordered input and its wide product each fit in
    BAND_BYTES, else near-equal bands that do (`reach`: the rows a window reaches below its
    first, (kh - 1) * dh). Over whole planes the implicit GEMM's rows of B stopped streaming
    from cache (VGG's 64 x 224 x 224 3x3 Conv: 1.39x onnxruntime's time at one thread against
    1.09x for a band of 32 rows of it, 1.10x at 56 x 56)."""
    per_row = 4 * wp * max(channels, filters)
    if per_row * padded_height <= BAND_BYTES:
        return out_height, padded_height
    fit = max(1, BAND_BYTES // per_row - reach)
    bands = -(-out_height // fit)
    rows = -(-out_height // bands)
    return rows, rows + reach


# strided Convs over phase planes (_run_phases) where the wide rows fill this much of the
# tiles' columns and the product is this deep; else im2col. Measured at 2 threads against
# im2col: 28 x 28 outputs and up (94 % useful) and ResNet's 7x7 first layer (depth 147) gain
# (1.56 -> 1.0x onnxruntime), 14 x 14 (87.5 %) and 7 x 7 (77 %) outputs lose 15-25 %, and a
# three-channel 3x3 first layer (depth 27) is a toss-up either way
PHASES_MIN_USEFUL = 0.9
PHASES_MIN_DEPTH = 64
# a shallower one (a first layer: 3 channels x 3x3) of one image into at most this many filters
# takes the phase planes too: 3->16 3x3 stride 2 at 224 x 224 207-220 -> 139-179 us (2 threads,
# same process; MobileNetV3-Small 1.5 % faster); 3->24 235-250 -> 201-237 and 3->32 277-294 ->
# 228-278 alone, but their models (ShuffleNetV2, MobileNetV2, EfficientNet-B0) no faster; 48
# filters lost 30 %, two or eight images gained nothing or lost (im2col's blocks then)
PHASES_FEW_FILTERS = 16
# implicit GEMMs (wide rows, phase planes) with no activation or a clip store the output's rows
# from the tiles by a column map (wide_columns), bias, residual and clip in them; off (tests):
# through the wide buffer and epilogue_wide, as other activations always go
MAP_WIDE = True
# a strided im2col product shallower than this (a first layer's 3 channels x 3x3) runs each row
# tile of filters over all of its block's columns (conv_blocks_tiled's rows_outer): the output's
# planes are then written a long run at a time, not 128 bytes into every plane per column
# panel. 3->64 3x3 stride 2, 2 threads, same process: batch 8 5443 -> 4155 us, 3->32 at batch 8
# 3895 -> 3056, batch 1 0.89-1.0x the time (3->16 to 3->64)
SHALLOW_DEPTH = 64
NUMPY_EPILOGUE_MAX = 4096  # outputs this small take numpy's bias add and activation (_run_gather_1d)
GATHER_MAX_COLUMNS = 1 << 16  # a 1-D Conv whose im2col is this small runs as numpy calls (_run_gather_1d)
DEPTHWISE_MAX_MULTIPLIER = 4  # beyond it (one channel into 258 filters: an STFT) a GEMM wins


def depthwise_shape(x, w, p: ConvParams) -> bool:
    """Whether the Conv runs as depthwise: one input channel per group, a few outputs each."""
    return p.group == x.shape[1] and w.shape[1] == 1 and w.shape[0] <= DEPTHWISE_MAX_MULTIPLIER * p.group


def _geometry(p: ConvParams) -> tuple[int, ...] | None:
    """(kh, kw, sh, sw, dh, dw, ph, pw) of a 2-D Conv, None for other ranks."""
    window = p.window
    if len(window.kernel) != 2:
        return None
    return (*window.kernel, *window.strides, *window.dilations, *window.pads_begin)


@accelerate("Conv", BACKEND)
class NumbaConv:
    """2-D float Conv: depthwise direct, pointwise BLAS, or compiled im2col + BLAS; each with a
    compiled epilogue for the bias and the fused activation. A 1-D Conv runs as a 2-D one of
    height 1 (audio front ends, TCNs); other ranks and dtypes stay on the reference path."""

    def prepare(self, inputs, values):
        specs = super().prepare(inputs, values)
        p: ConvParams = self.params
        x, w = inputs[0], inputs[1]
        if x.dtype in _FLOATS and len(p.window.kernel) == 1 and specs[0].size:
            *self.code, self.leftover = activation_code(p.activation, x.dtype)
            columns = w.shape[1] * p.window.kernel[0] * p.group * p.out_size * x.shape[0]
            if columns <= GATHER_MAX_COLUMNS:
                self.threads = thread_count(getattr(self.context, "num_threads", None), specs[0].size)
                self._prepare_gather_1d(x)
                self.run = self._run_gather_1d
            else:
                self.lifted = self._lifted_to_2d(inputs, values)
                self.run = self._run_lifted
            return specs
        geometry = _geometry(p)
        if x.dtype not in _FLOATS or geometry is None or specs[0].size == 0:
            return specs
        self.geometry = geometry
        work = specs[0].size * (w.shape[1] * p.window.kernel[0] * p.window.kernel[1] if depthwise_shape(x, w, p)
                                else 1)  # the compiled part's work: depthwise MACs, else outputs
        self.threads = thread_count(getattr(self.context, "num_threads", None), work)
        # (im2col's copies: the output's positions times the filters' rows; by the output's
        # size alone a 14 x 14 stride-2 Conv's 900 KB of columns were gathered on one thread)
        positions = specs[0].size // max(1, w.shape[0])
        self.im2col_threads = thread_count(getattr(self.context, "num_threads", None),
                                           positions * w.shape[1] * p.group * len(p.taps))
        *self.code, self.leftover = activation_code(p.activation, x.dtype)
        self.zeros = np.zeros(w.shape[0], x.dtype)  # the bias when there is none (_bias_or_zeros)
        depthwise = depthwise_shape(x, w, p)
        self.run = self._run_depthwise if depthwise else self._run_gemm
        if (not depthwise and not p.pointwise and p.window.strides == (1, 1)
                and not self._pixel_rows(x, w, values)):
            kh, _, _, _, dh, _, _, _ = geometry
            hp, wp = bordered_planes(geometry, x.shape[2:], p.window.out_shape)
            oh, ow = p.window.out_shape
            self.wide = (hp, wp, (oh - 1) * wp + ow)
            self.band = wide_band(x.shape[1], w.shape[0], oh, hp, wp, (kh - 1) * dh)
            # (an implicit GEMM's row starts: row (c, i, j) is plane c shifted by the tap)
            self.wide_rows = tap_starts(geometry, w.shape[1], self.band[1] * wp, wp)
            self.wide_map = wide_columns((self.band[0] - 1) * wp + ow, wp, ow)
            self.run = self._run_wide
        if not depthwise:
            self._prepare_pooled_gemm(w, specs[0])
        weights = values[1]
        self._prepare_tiles(w, x, None if depthwise else weights)
        if not depthwise and not p.pointwise and self.run in (self._run_gemm, self._run_blocks):
            self._prepare_gather(x)  # (_run_blocks falls back to _run_gemm for a strided output)
        window = p.window
        self.x_last = self.out_last = False  # runtime.layout may set them (use_channels_last)
        self.bound = None
        self.w_last = None
        if depthwise and weights is not None and w.shape[0] == x.shape[1]:
            self.w_last = np.ascontiguousarray(np.asarray(weights)[:, 0].transpose(1, 2, 0))
            if channels_last(window.kernel, window.strides, window.dilations, window.out_shape):
                self.run = self._run_depthwise_channels_last
        return specs

    def _prepare_gather(self, x: TensorSpec) -> None:
        """The zero-bordered planes' size and gather_columns' tables for this Conv's im2col:
        row (c, i, j) starts at c*HP*WP + i*dh*WP + j*dw, output (y, z) at y*sh*WP + z*sw."""
        _, _, sh, sw, _, _, _, _ = self.geometry
        oh, ow = self.params.window.out_shape
        hp, wp = bordered_planes(self.geometry, x.shape[2:], (oh, ow))
        offsets = (np.arange(oh)[:, None] * sh * wp + np.arange(ow)[None, :] * sw).reshape(-1)
        self.gather = (hp, wp, tap_starts(self.geometry, x.shape[1], hp * wp, wp), offsets.astype(np.int64))

    def _pixel_rows(self, x: TensorSpec, w: TensorSpec, values: list) -> bool:
        """Whether a stride-1 Conv's product runs best as im2col's pixels (rows) times its
        packed weights, stored transposed: where its outputs are fewer than its filters and
        fill row tiles far better than the implicit GEMM's wide rows fill column panels (7 x 7:
        49 rows in short tiles against 49 of 64 columns, 1.26 -> 1.12x onnxruntime; 13 x 13: 169
        of 176 rows against 169 of 224 columns, 1.24-1.41 -> 1.09; at 14 x 14, 98 % against
        87.5 %, a toss-up: the wide rows stay)."""
        p: ConvParams = self.params
        oh, ow = p.window.out_shape
        _, wp = bordered_planes(self.geometry, x.shape[2:], (oh, ow))
        return (p.group == 1 and x.dtype == np.float32 and w.dtype == np.float32
                and values[1] is not None and gemm_in_pool() and p.out_size < w.shape[0]
                and pixels_as_rows(p.out_size, (oh - 1) * wp + ow, PIXEL_ROWS_MARGIN))

    def channels_last(self) -> ChannelsLastOffer | None:
        """What this prepared Conv can do inside a channels-last region (runtime.layout): a
        pointwise one on numba's pool reads and writes either layout (its product transposes),
        a depthwise one of multiplier 1 with constant weights runs channels-last; both only
        without an activation left for numpy (a PRelu's slopes follow the channel axis)."""
        if "run" not in self.__dict__ or getattr(self, "leftover", None) is not None or not hasattr(self, "geometry"):
            return None  # (no fast path: the reference kernel runs)
        run, p = self.run.__func__, self.params
        if (run is NumbaConv._run_gemm and p.pointwise and self.pooled and p.group == 1
                and p.out_size <= CHANNELS_LAST_MAX_POINTWISE):
            return ChannelsLastOffer(frozenset({0}), True, gains=self.w_panels is not None)
        if (run in (NumbaConv._run_depthwise, NumbaConv._run_depthwise_channels_last) and self.w_last is not None
                and p.out_size <= CHANNELS_LAST_MAX_DEPTHWISE):
            return ChannelsLastOffer(frozenset({0}), True, gains=True)
        return None

    def use_channels_last(self, inputs: frozenset[int], output: bool) -> None:
        """Read X (input 0) channels-last if 0 is in `inputs`, write Y so if `output`; only
        after channels_last offered it."""
        self.x_last, self.out_last = 0 in inputs, output
        self.bound = None  # (_run_pointwise_layouts' arguments, worked out for the new layouts)
        if self.run.__func__ is NumbaConv._run_gemm:
            self.run = self._run_pointwise_layouts
        else:
            self.run = self._run_depthwise_channels_last

    def _prepare_pooled_gemm(self, w: TensorSpec, out: TensorSpec) -> None:
        """Decide whether this Conv's products run on numba's pool, each block finished by the
        epilogue (devices.numba_blas), where numpy's OpenBLAS allows it; the threads (by
        multiply-adds) and the blocks for that."""
        p: ConvParams = self.params
        self.pooled = gemm_in_pool()
        if not self.pooled:
            return
        n, m, g = out.shape[0], out.shape[1], p.group
        rows = w.shape[1] * len(p.taps)
        columns = self.wide[2] if self.run == self._run_wide else p.out_size
        self.gemm_threads = thread_count(getattr(self.context, "num_threads", None), out.size * rows)
        self.gemm_blocks = gemm_split(min(n, p.chunk), g, m // g, columns, self.gemm_threads)
        self.pointwise_split = gemm_split(n, 1, m, p.out_size, self.gemm_threads)  # (_run_pointwise_layouts)
        # im2col, product, epilogue per block: for a strided Conv (stride 1 has the wide-row
        # path) whose positions outnumber its filters (else the product splits its rows best)
        if (g == 1 and not p.pointwise and self.leftover is None and self.run == self._run_gemm
                and p.out_size >= 2 * m):
            self.block = conv_block_size(rows, p.out_size, n, self.gemm_threads, np.dtype(out.dtype).itemsize)
            self.run = self._run_blocks

    def _prepare_tiles(self, w: TensorSpec, x: TensorSpec, weights: np.ndarray | None) -> None:
        """Whether this Conv's products run on our own micro-kernels (devices.numba_microkernel):
        a float32 one of one group on numba's pool. Constant weights are packed into column
        panels here, once, for a pointwise Conv (its product into a channels-last output reads
        them so) and for a strided im2col product with fewer columns than filters (ResNet's
        deep stride-2 layers: the columns as A, the packed weights as B, the result stored
        transposed). Every other product into NCHW reads the weights as A, packed into row
        tiles, and the columns where they lie: a stride-1 Conv's implicit GEMM too, whatever
        its columns (single-thread at 14 x 14 it beat im2col + panels by 2-4 %, at 7 x 7 tied,
        without the im2col buffer)."""
        p: ConvParams = self.params
        self.tiled = (getattr(self, "pooled", False) and p.group == 1
                      and x.dtype == np.float32 and w.dtype == np.float32)
        self.w_panels = self.w_rows = None
        deep = w.shape[1] * len(p.taps) >= PHASES_MIN_DEPTH
        if (self.tiled and not p.pointwise and self.run in (self._run_gemm, self._run_blocks)
                and p.window.dilations == (1, 1) and (deep or (w.shape[0] <= PHASES_FEW_FILTERS and x.shape[0] == 1))
                and all(k >= s for k, s in zip(p.window.kernel, p.window.strides, strict=True))):
            # (a window narrower than its stride, as ResNet-50's 1x1 stride-2 shortcuts, would
            # copy whole phase planes it never reads: im2col takes only what it needs)
            self._prepare_phases(w, x)
            if self.run == self._run_blocks and deep:
                # a small output the phase planes would fill badly: one product, not a few
                # narrow blocks (Inception v2's 96->96 3x3 stride 2 into 14 x 14: 1.6 -> 1.1x
                # onnxruntime's time, a 128->96 one 2.15 -> 1.36)
                self.run = self._run_gemm
        if not self.tiled or weights is None:
            return
        matrix = np.asarray(weights).reshape(w.shape[0], -1)
        if p.pointwise or (self.run == self._run_gemm and p.out_size < w.shape[0]):
            self.w_panels = pack_panels(matrix.T)
        # the weights as A (every product into NCHW but the stored-transposed one): in row
        # tiles, so the micro-kernel's loop reads them through one pointer (eight strided rows
        # took eight registers, and the loop spilled its addresses to the stack)
        if p.pointwise or self.w_panels is None:
            self.w_rows = pack_rows(matrix)

    def _prepare_gather_1d(self, x: TensorSpec) -> None:
        """A small 1-D Conv in a few numpy calls: X into a zero-bordered buffer, one gather of
        every column by precomputed indices, one matmul, the epilogue (calls, not work, are
        what a stream of 512-sample audio chunks pays for)."""
        window: Window = self.params.window
        (k,), (s,), (d,), (pb,), (pe,) = (window.kernel, window.strides, window.dilations,
                                           window.pads_begin, window.pads_end)
        n, c, length = x.shape
        self.padded_length = pb + length + pe
        taps = np.arange(c)[:, None, None] * self.padded_length + np.arange(k)[None, :, None] * d
        self.column_index = (taps + np.arange(window.out_shape[0])[None, None, :] * s).reshape(c * k, -1)
        self.pad_begin = pb
        # buffers of this kernel's own (small by construction): the borders are zeroed once
        self.padded = np.zeros((n, c, self.padded_length), x.dtype)
        self.columns = np.empty((n, c * k, window.out_shape[0]), x.dtype)

    def _run_gather_1d(self, inputs, outputs):
        p: ConvParams = self.params
        x, w, out = inputs[0], inputs[1], outputs[0]
        (n, _, length), (m, out_length), g = x.shape, out.shape[1:], p.group
        use_threads(self.threads)
        rows = self.column_index.shape[0]
        if p.pointwise:  # the columns are X itself
            cols = x
        else:
            padded, cols = self.padded, self.columns
            padded[..., self.pad_begin : self.pad_begin + length] = x
            np.take(padded.reshape(n, -1), self.column_index, axis=1, out=cols)
        np.matmul(w.reshape(g, m // g, rows // g), cols.reshape(n, g, rows // g, out_length),
                  out=out.reshape(n, g, m // g, out_length))
        residual = self._residual(inputs, out.shape)
        if out.size <= NUMPY_EPILOGUE_MAX:  # a compiled call costs more than these numpy ones
            if p.has_bias:
                np.add(out, inputs[2][:, None], out=out)
            if residual.size:
                np.add(out, residual, out=out)
            apply_activation(out, p.activation)
            return
        if p.has_bias or p.activation is not None or residual.size:
            finish_epilogue(out, self._bias(inputs), residual, *self.code, self.leftover)

    def _lifted_to_2d(self, inputs: list, values: list):
        """This 1-D Conv as a prepared 2-D kernel of the same class over (N, C, 1, L)."""
        window: Window = self.params.window
        attrs = {k: v for k, v in self.attrs.items() if k not in ("auto_pad", "pads", "kernel_shape", "strides",
                                                                   "dilations")}
        attrs.update(kernel_shape=[1, *window.kernel], strides=[1, *window.strides], dilations=[1, *window.dilations],
                     pads=[0, *window.pads_begin, 0, *window.pads_end])
        lifted = type(self)(self.op_type, self.name, attrs, self.version)
        lifted.context, lifted.num_outputs = self.context, self.num_outputs
        specs = [None if spec is None or i == 2 else TensorSpec(spec.dtype, _with_unit_height(spec.shape))
                 for i, spec in enumerate(inputs)]
        specs[2:3] = inputs[2:3]
        lifted_values = [None if v is None or i == 2 else v.reshape(_with_unit_height(v.shape))
                         for i, v in enumerate(values)]
        lifted_values[2:3] = values[2:3]
        lifted.prepare(specs, lifted_values)
        return lifted

    def _run_lifted(self, inputs, outputs):
        lifted = [a if a is None or i == 2 else a.reshape(_with_unit_height(a.shape)) for i, a in enumerate(inputs)]
        out = outputs[0]
        self.lifted.run(lifted, [out.reshape(_with_unit_height(out.shape))])

    def _bias(self, inputs: list) -> np.ndarray:
        """B, or a size-0 array (the epilogue then adds nothing)."""
        return inputs[2] if self.params.has_bias else _NO_BIAS[inputs[0].dtype.char]

    def _bias_or_zeros(self, inputs: list) -> np.ndarray:
        """B, or zeros of its shape and dtype (kernels that start their sums from the bias)."""
        return inputs[2] if self.params.has_bias else self.zeros

    def _run_depthwise(self, inputs, outputs):
        _, _, sh, sw, dh, dw, ph, pw = self.geometry
        bias = self._bias_or_zeros(inputs)
        x, out = np.ascontiguousarray(inputs[0]), outputs[0]
        # the kernel activates whole output planes as flat rows: it needs them contiguous
        target = out if out.flags.c_contiguous else np.empty(out.shape, out.dtype)
        use_threads(self.threads)
        buffers = depthwise_buffers(x.shape, out.shape, self.geometry, numba.config.NUMBA_NUM_THREADS, x.dtype)
        depthwise_2d(x, inputs[1], bias, target, sh, sw, dh, dw, ph, pw, *self.code, *buffers)
        if target is not out:
            out[...] = target
        finish_activation(out, self.leftover)

    def _run_depthwise_channels_last(self, inputs, outputs):
        _, _, sh, sw, dh, dw, ph, pw = self.geometry
        bias = self._bias_or_zeros(inputs)
        x, out = np.ascontiguousarray(inputs[0]), outputs[0]
        use_threads(self.threads)
        xt, ot = channels_last_buffers(x.shape, out.shape, self.geometry, x.dtype)
        if self.x_last:  # the same bytes, ordered (N, H, W, C)
            x = x.reshape(x.shape[0], *x.shape[2:], x.shape[1])
        if self.out_last:
            ot = out.reshape(ot.shape)
        depthwise_channels_last(x, self.w_last, bias, out, sh, sw, dh, dw, ph, pw, *self.code, xt, ot,
                                self.x_last, self.out_last)
        finish_activation(out, self.leftover)

    def _run_pointwise_layouts(self, inputs, outputs):
        # the arrays a step gets are the same objects run after run (arena views, weights): the
        # views and flags for them are worked out once (a few microseconds a step otherwise)
        arrays = (*inputs, outputs[0])
        cached = self.__dict__.get("bound")
        if (cached is None or len(cached[0]) != len(arrays)
                or any(a is not b for a, b in zip(cached[0], arrays, strict=True))):
            cached = (arrays, self._pointwise_arguments(inputs, outputs))
            # views of the arrays themselves only: a contiguous copy would go stale
            if all(a is None or a.flags.c_contiguous for a in arrays):
                self.bound = cached
        use_threads(self.gemm_threads)
        kernel, arguments = cached[1]
        if kernel is gemm_tiles:
            gemm_tiles(*arguments)
            finish_activation(outputs[0], self.leftover)
        else:
            with single_threaded:
                pointwise_layouts(*arguments)

    def _pointwise_arguments(self, inputs, outputs) -> tuple:
        """(kernel, its arguments) for this pointwise product in the layouts chosen: our own
        tiles where they serve the layouts (gemm_tiles), else OpenBLAS's (pointwise_layouts)."""
        x, w, out = np.ascontiguousarray(inputs[0]), inputs[1], outputs[0]
        n, m = out.shape[:2]
        c, pixels = x.shape[1], self.params.out_size
        residual = self._residual(inputs, (n, m, pixels))
        tiles = self._tile_arguments(x, np.ascontiguousarray(w), out, np.ascontiguousarray(self._bias(inputs)),
                                     residual)
        if tiles is not None:
            return gemm_tiles, tiles
        x3 = x.reshape(n, pixels, c) if self.x_last else x.reshape(n, c, pixels)
        shape = (n, pixels, m) if self.out_last else (n, m, pixels)
        result = out.reshape(shape)
        residual = residual.reshape(shape) if residual.size else residual
        return pointwise_layouts, (np.ascontiguousarray(w.reshape(m, c)), x3, result, self._bias(inputs), residual,
                                   *self.code, self.x_last, self.out_last, *self.pointwise_split)

    def _prepare_phases(self, w: TensorSpec, x: TensorSpec) -> None:
        """A strided Conv as an implicit GEMM over its input's phase planes (phase_planes):
        row (c, i, j) of B is phase (i % sh, j % sw) of plane c shifted by (i // sh, j // sw),
        the columns wide rows of WQ (the phase planes' width) of which the first OW are
        outputs. Sized so that every row's shifted span stays inside its phase plane."""
        p: ConvParams = self.params
        (kh, kw), (sh, sw), (ph, pw) = p.window.kernel, p.window.strides, p.window.pads_begin
        (h, wd), (oh, ow) = x.shape[2:], p.window.out_shape
        hq = max(-(-(ph + h) // sh), oh + (kh - 1) // sh)
        wq = max(-(-(pw + wd) // sw), ow + (kw - 1) // sw)
        i, j = np.arange(kh)[:, None], np.arange(kw)[None, :]
        taps = (((i % sh) * sw + j % sw) * (hq * wq) + (i // sh) * wq + j // sw).reshape(-1)
        span = (oh - 1) * wq + ow
        if oh * ow < PHASES_MIN_USEFUL * (-(-span // TILE_COLUMNS) * TILE_COLUMNS):
            return  # (most of a small output's tile columns would be its wide rows' padding)
        self.phases = (sh, sw, hq, wq, span)
        self.phase_map = wide_columns(span, wq, ow)
        self.phase_rows = (np.arange(w.shape[1])[:, None] * (sh * sw * hq * wq) + taps[None, :]).reshape(-1)
        self.phase_rows = self.phase_rows.astype(np.int64)
        self.run = self._run_phases

    def _run_phases(self, inputs, outputs):
        self._phases(inputs, outputs, self.code, self.leftover, None)

    def _phases(self, inputs, outputs, code: tuple, leftover, residual: np.ndarray | None) -> None:
        """_run_phases with this activation (code, leftover); `residual` (out's shape; only with
        no activation or a clip, into a contiguous output) added in the tiles."""
        p: ConvParams = self.params
        x, w, out = np.ascontiguousarray(inputs[0]), inputs[1], outputs[0]
        (n, m), c = out.shape[:2], x.shape[1]
        sh, sw, hq, wq, span = self.phases
        ph, pw = p.window.pads_begin
        bias = self._bias_or_zeros(inputs)
        rows = w.shape[1] * len(p.taps)
        a, a_row, a_k, a_tile = self._weights_as_a(np.ascontiguousarray(w).reshape(m, rows), rows)
        oh, ow = out.shape[2:]
        mapped = MAP_WIDE and code[0] in (NONE, CLIP) and out.flags.c_contiguous
        for start in range(0, n, p.chunk):  # bounded buffers, as the reference keeps
            part = slice(start, min(n, start + p.chunk))
            size = part.stop - part.start
            planes = scratch("numba.conv.phases", (size, c * sh * sw, hq * wq), x.dtype)
            use_threads(self.im2col_threads)
            phase_planes(x[part], planes, sh, sw, ph, pw, wq)
            use_threads(self.gemm_threads)
            tasks = tile_tasks(size, m, span, self.gemm_threads)
            if mapped:  # the tiles write out's rows, bias, residual and clip in place
                gemm_tiles(a, a_row, a_k, 0, m, rows, planes.reshape(-1), TILE_COLUMNS, 0, self.phase_rows,
                           c * sh * sw * hq * wq, span, out[part].reshape(-1), oh * ow, m * oh * ow, size, bias,
                           BIAS_PER_ROW, _flat_residual(residual, part), oh * ow, m * oh * ow, *code, *tasks, False,
                           False, a_tile, TILE_ROWS, self.phase_map)
                continue
            wide = scratch("numba.conv.wide", (size, m, span), x.dtype)
            gemm_tiles(a, a_row, a_k, 0, m, rows, planes.reshape(-1), TILE_COLUMNS, 0, self.phase_rows,
                       c * sh * sw * hq * wq, span, wide.reshape(-1), span, m * span, size, _NO_BIAS["f"], BIAS_NONE,
                       _NO_RESIDUAL["f"].reshape(-1), 0, 0, NONE, code[1], *tasks, False, False, a_tile,
                       TILE_ROWS, NO_MAP)
            use_threads(self.threads)
            epilogue_wide(wide, out[part], wq, bias, *code, 0, -1)
        finish_activation(out, leftover)

    def _tile_arguments(self, x, w, out, bias, residual) -> tuple | None:
        """gemm_tiles' arguments for out = act(W @ X + bias + residual) in this Conv's layouts,
        or None where the tiles do not serve them: a channels-last output reads X (either
        layout) as A and the packed weights as B; an NCHW output from an NCHW X reads the
        weights as A and X as B in place; an NCHW output from a channels-last X, weights that
        are not constant for a channels-last output, or an output that is not contiguous stay
        on OpenBLAS."""
        if not self.tiled or not out.flags.c_contiguous or (self.x_last and not self.out_last):
            return None
        if self.out_last and self.w_panels is None:
            return None
        n, m = out.shape[:2]
        c, pixels = x.shape[1], self.params.out_size
        code = self.code if self.leftover is None else (NONE, self.code[1])
        flat_x, flat_out, flat_residual = x.reshape(-1), out.reshape(-1), residual.reshape(-1)
        height = row_height(pixels)
        if self.out_last or (self.w_panels is not None and m <= c and pixels_as_rows(pixels)):
            # out (pixels x m) = X (pixels x c) @ W^T, per image, into a channels-last output
            # or stored transposed into NCHW where the pixels fill row tiles clearly better
            # than column panels (7 x 7: 49 rows in 7 short tiles, as columns 49 of 64; 14 x 14:
            # 196 of 200, of 224) and the product is at least as deep as it has filters (the
            # transposed store costs per output: 960->160 at 7 x 7 0.80 -> 0.70x onnxruntime's
            # time, 2048->512 1.15 -> 0.91, 1024->256 at 14 x 14 0.76-0.95 -> 0.67; 512->2048
            # and 160->960 lost 5-8 %)
            a_row, a_k = (c, 1) if self.x_last else (1, pixels)
            c_row = m if self.out_last else pixels
            return (flat_x, a_row, a_k, c * pixels, pixels, c, self.w_panels, c * TILE_COLUMNS, TILE_COLUMNS,
                    BY_STRIDE, 0, m, flat_out, c_row, pixels * m, n, bias, BIAS_PER_COLUMN if bias.size else BIAS_NONE,
                    flat_residual, c_row, pixels * m, *code, *tile_tasks(n, pixels, m, self.gemm_threads, height),
                    False, not self.out_last, 0, height, NO_MAP)
        # out (m x pixels) = W (m x c) @ X (c x pixels), per image: each block of weight rows
        # sweeps a cache-sized chunk of X's columns (rows_outer: tiles_in_range), writing a few
        # output planes at a time (96 planes at once, panel by panel, ran MobileNetV2's 112x112
        # expansion 1.7x slower than onnxruntime at batch 8)
        a, a_row, a_k, a_tile = self._weights_as_a(w, c)
        return (a, a_row, a_k, 0, m, c, flat_x, TILE_COLUMNS, pixels, BY_STRIDE, c * pixels, pixels, flat_out,
                pixels, m * pixels, n, bias, BIAS_PER_ROW if bias.size else BIAS_NONE, flat_residual, pixels,
                m * pixels, *code, *tile_tasks(n, m, pixels, self.gemm_threads), True, False, a_tile, TILE_ROWS,
                NO_MAP)

    def _weights_as_a(self, w: np.ndarray, k: int) -> tuple:
        """(a, a_row, a_k, a_tile) for gemm_tiles reading the weights (M, k) as A: the row
        tiles packed at prepare, or (weights that are not constant) w where it lies."""
        if self.w_rows is not None:
            return self.w_rows, 1, TILE_ROWS, k * TILE_ROWS
        return np.ascontiguousarray(w).reshape(-1), k, 1, 0

    def _run_wide(self, inputs, outputs):
        self._wide(inputs, outputs, self.code, self.leftover, None)

    def _wide(self, inputs, outputs, code: tuple, leftover, residual: np.ndarray | None) -> None:
        """_run_wide with this activation (code, leftover); `residual` as _phases' (on the
        tiles only)."""
        p: ConvParams = self.params
        x, w, out = np.ascontiguousarray(inputs[0]), inputs[1], outputs[0]
        (n, m), c, g = out.shape[:2], x.shape[1], p.group
        kh, kw, _, _, dh, dw, ph, pw = self.geometry
        hp, wp, span = self.wide
        bias = self._bias_or_zeros(inputs)
        rows = w.shape[1] * kh * kw  # per group
        weights = np.ascontiguousarray(w).reshape(g, m // g, rows)
        use_threads(self.threads)
        for start in range(0, n, p.chunk):  # a bounded column buffer, as the reference keeps
            part = slice(start, min(n, start + p.chunk))
            size = part.stop - part.start
            if self.tiled:  # an implicit GEMM: B's rows are the padded planes, shifted
                self._wide_bands(x[part], weights, out[part], bias, code, None if residual is None else residual[part])
                continue
            padded = scratch("numba.conv.padded", (size, c, hp * wp), x.dtype)
            wide = scratch("numba.conv.wide", (size, m, span), x.dtype)
            cols = scratch("numba.conv.col", (size, g * rows, span), x.dtype)
            use_threads(self.im2col_threads)
            im2col_wide(x[part], cols, kh, kw, dh, dw, ph, pw, wp, padded)
            self._product(weights, cols.reshape(size, g, rows, span), wide)
            use_threads(self.threads)
            epilogue_wide(wide, out[part], wp, bias, *code, 0, -1)
        finish_activation(out, leftover)

    def _wide_bands(self, x: np.ndarray, weights: np.ndarray, out: np.ndarray, bias: np.ndarray, code: tuple,
                    residual: np.ndarray | None) -> None:
        """The tiled stride-1 Conv of these images, band of output rows by band (wide_band):
        each band's zero-bordered input rows, its implicit GEMM on the tiles, its epilogue (in
        the tiles where the activation is none or a clip: with `residual` then)."""
        (size, c), m = x.shape[:2], out.shape[1]
        _, _, _, _, _, _, ph, pw = self.geometry
        _, wp, _ = self.wide
        band, band_height = self.band
        oh, ow = out.shape[2:]
        depth = weights.shape[-1]
        a, a_row, a_k, a_tile = self._weights_as_a(weights, depth)
        mapped = MAP_WIDE and code[0] in (NONE, CLIP) and out.flags.c_contiguous
        extra = _flat_residual(residual, slice(None))
        for y0 in range(0, oh, band):
            y1 = min(oh, y0 + band)
            span = (y1 - y0 - 1) * wp + ow
            padded = scratch("numba.conv.padded", (size, c, band_height * wp), x.dtype)
            use_threads(self.threads)
            pad_planes(x, padded, ph - y0, pw, wp)  # (input rows y0 - ph on)
            use_threads(self.gemm_threads)  # (self.threads counts the copies' work: 1 thread at 14 x 14)
            tasks = tile_tasks(size, m, span, self.gemm_threads)
            if mapped:  # the tiles write the band's rows of out, bias, residual and clip in place
                gemm_tiles(a, a_row, a_k, 0, m, depth, padded.reshape(-1), TILE_COLUMNS, 0, self.wide_rows,
                           c * band_height * wp, span, out.reshape(-1)[y0 * ow :], oh * ow, m * oh * ow, size, bias,
                           BIAS_PER_ROW, extra[y0 * ow :] if extra.size else extra, oh * ow, m * oh * ow, *code,
                           *tasks, False, False, a_tile, TILE_ROWS, self.wide_map)
                continue
            wide = scratch("numba.conv.wide", (size, m, span), x.dtype)
            gemm_tiles(a, a_row, a_k, 0, m, depth, padded.reshape(-1), TILE_COLUMNS, 0, self.wide_rows,
                       c * band_height * wp, span, wide.reshape(-1), span, m * span, size, _NO_BIAS["f"], BIAS_NONE,
                       _NO_RESIDUAL["f"].reshape(-1), 0, 0, NONE, code[1], *tasks, False, False, a_tile,
                       TILE_ROWS, NO_MAP)
            use_threads(self.threads)
            epilogue_wide(wide, out, wp, bias, *code, y0, y1 - y0)

    def _run_blocks(self, inputs, outputs):
        p: ConvParams = self.params
        x, w, out = np.ascontiguousarray(inputs[0]), inputs[1], outputs[0]
        n, m = out.shape[:2]
        rows = w.shape[1] * len(p.taps)
        result = out.reshape(n, m, p.out_size)
        if not result.flags.c_contiguous:
            self._run_gemm(inputs, outputs)
            return
        kh, kw, sh, sw, dh, dw, ph, pw = self.geometry
        cols = scratch("numba.conv.blocks", (numba.config.NUMBA_NUM_THREADS, rows, self.block), x.dtype)
        use_threads(self.gemm_threads)
        if self.tiled:  # (weights that are not constant: packed here, run by run)
            w_rows = self.w_rows if self.w_rows is not None else pack_rows(w.reshape(m, rows))
            conv_blocks_tiled(x, w_rows, rows, result,
                              np.ascontiguousarray(self._bias(inputs)), self._residual(inputs, result.shape),
                              *self.code, kh, kw, sh, sw, dh, dw, ph, pw, p.window.out_shape[1], self.block, cols,
                              BY_STRIDE, rows < SHALLOW_DEPTH)
            return
        with single_threaded:
            conv_blocks(x, np.ascontiguousarray(w.reshape(m, rows)), result, self._bias(inputs),
                        self._residual(inputs, result.shape), *self.code, kh, kw, sh, sw, dh, dw, ph, pw,
                        p.window.out_shape[1], self.block, cols)

    def _run_gemm(self, inputs, outputs):
        p: ConvParams = self.params
        x, w, out = np.ascontiguousarray(inputs[0]), inputs[1], outputs[0]
        n, m = out.shape[:2]
        g = p.group
        rows = w.shape[1] * len(p.taps)  # per group
        weights = w.reshape(g, m // g, rows)
        result = out.reshape(n, m, p.out_size)
        residual, bias = self._residual(inputs, result.shape), self._bias(inputs)
        if p.pointwise and self.tiled and out.flags.c_contiguous:  # (a strided output: numpy's matmul below)
            self._run_pointwise_layouts(inputs, outputs)  # (x_last, out_last False: NCHW on both sides)
            return
        if p.pointwise:
            done = self._product(weights, x.reshape(n, g, rows, p.out_size), result, (bias, residual, self.code))
        else:
            for start in range(0, n, p.chunk):  # a bounded im2col buffer, as the reference keeps
                part = slice(start, min(n, start + p.chunk))
                size = part.stop - part.start
                cols = scratch("numba.conv.col", (size, g, rows, p.out_size), x.dtype)
                use_threads(self.im2col_threads)
                self._im2col(x[part], cols.reshape(size, g * rows, p.out_size))
                done = self._product(weights, cols, result[part],
                                     (bias, residual[part] if residual.size else residual, self.code))
        if not done and (p.has_bias or p.activation is not None or residual.size):
            use_threads(self.threads)
            finish_epilogue(result, bias, residual, *self.code, self.leftover)

    def _im2col(self, x: np.ndarray, cols: np.ndarray) -> None:
        """cols (N, C*kh*kw, positions) = im2col of x: its planes zero-bordered, then gathered
        by the tables worked out at prepare (gather_columns)."""
        hp, wp, starts, offsets = self.gather
        _, _, _, _, _, _, ph, pw = self.geometry
        padded = scratch("numba.conv.padded", (x.shape[0], x.shape[1], hp * wp), x.dtype)
        pad_planes(x, padded, ph, pw, wp)
        gather_columns(padded.reshape(x.shape[0], -1), cols, starts, offsets)

    def _product(self, weights: np.ndarray, cols: np.ndarray, result: np.ndarray,
                 epilogue: tuple | None = None) -> bool:
        """result (N, M, P) = weights (G, M/G, K) @ cols (N, G, K, P) (cols C-contiguous): on
        numba's pool block by block where prepare chose it (self.pooled) and result is
        contiguous, each block then given `epilogue` (bias, residual, (code, constants)) unless
        an activation is left for numpy; else numpy's matmul. True when the epilogue was
        applied (otherwise the caller runs it)."""
        if not (self.pooled and result.flags.c_contiguous):
            n, g, k, columns = cols.shape
            use_threads(self.threads)
            np.matmul(weights, cols, out=result.reshape(n, g, weights.shape[1], columns))
            return False
        char = result.dtype.char
        applied = epilogue is not None and self.leftover is None
        bias, residual, code = epilogue if applied else (_NO_BIAS[char], _NO_RESIDUAL[char], (NONE, self.code[1]))
        use_threads(self.gemm_threads)
        if self.tiled:  # (one group)
            n, _, k, columns = cols.shape
            m = weights.shape[1]
            bias = np.ascontiguousarray(bias)
            if self.w_panels is not None:  # result^T (columns x m) = cols^T @ W^T, stored transposed
                height = row_height(columns)
                gemm_tiles(cols.reshape(-1), 1, columns, k * columns, columns, k, self.w_panels, k * TILE_COLUMNS,
                           TILE_COLUMNS, BY_STRIDE, 0, m, result.reshape(-1), columns, m * columns, n, bias,
                           BIAS_PER_COLUMN if bias.size else BIAS_NONE, residual.reshape(-1), columns, m * columns,
                           *code, *tile_tasks(n, columns, m, self.gemm_threads, height), False, True, 0, height, NO_MAP)
            else:  # result (m x columns) = W @ cols, the columns read where they lie
                rows_outer = k * columns * 4 <= ROWS_OUTER_MAX_B_BYTES and m > columns
                a, a_row, a_k, a_tile = self._weights_as_a(weights, k)
                gemm_tiles(a, a_row, a_k, 0, m, k, cols.reshape(-1), TILE_COLUMNS, columns, BY_STRIDE, k * columns,
                           columns, result.reshape(-1), columns, m * columns, n, bias,
                           BIAS_PER_ROW if bias.size else BIAS_NONE, residual.reshape(-1), columns, m * columns, *code,
                           *tile_tasks(n, m, columns, self.gemm_threads), rows_outer, False, a_tile, TILE_ROWS, NO_MAP)
            return applied
        with single_threaded:
            gemm_epilogue(np.ascontiguousarray(weights), cols, result, bias, residual, *code, *self.gemm_blocks)
        return applied

    def _residual(self, inputs: list, shape: tuple[int, ...]) -> np.ndarray:
        """What the epilogue adds before the activation: nothing for a Conv (a FusedConv's Z)."""
        return _NO_RESIDUAL[inputs[0].dtype.char]


def _flat_residual(residual: np.ndarray | None, part: slice) -> np.ndarray:
    """gemm_tiles' residual: these images of `residual` flattened (contiguous), or none."""
    if residual is None:
        return _NO_RESIDUAL["f"].reshape(-1)
    return np.ascontiguousarray(residual[part]).reshape(-1)


def _with_unit_height(shape: tuple[int, ...]) -> tuple[int, ...]:
    """(N, C, L) -> (N, C, 1, L): a 1-D tensor as a 2-D one of height 1."""
    return (*shape[:2], 1, *shape[2:])


_NO_BIAS = {dt.char: np.zeros(0, dt) for dt in _FLOATS}  # size 0: compiled code reads "none"
_NO_RESIDUAL = {dt.char: np.zeros((0, 0, 0), dt) for dt in _FLOATS}


@accelerate("FusedConv", BACKEND, domain="edgerun")
class NumbaFusedConv(NumbaConv):
    """edgerun:FusedConv (Conv + residual Z + activation) on the Conv's fast paths. Through BLAS
    (pointwise, strided) Z joins the one epilogue pass; an implicit GEMM on the tiles with no
    activation or a clip adds Z in its tiles; after the other paths (run without their
    activation) one more compiled pass adds Z and applies it. A Z that only broadcasts to the
    output takes the reference path."""

    def prepare(self, inputs, values):
        specs = super().prepare(inputs, values)
        fast = "run" in self.__dict__  # NumbaConv.prepare chose one of its paths
        if fast and self.run.__func__ in (NumbaConv._run_lifted, NumbaConv._run_gather_1d):
            return specs  # the 2-D kernel it runs as, or its own epilogue, adds Z
        if not fast or inputs[3].shape != specs[0].shape:
            self.run = super(NumbaConv, self).run  # the reference FusedConv
            return specs
        if self.run.__func__ not in (NumbaConv._run_gemm, NumbaConv._run_blocks):
            self.code_after, self.leftover_after = self.code, self.leftover
            *_, consts = self.code
            self.code, self.leftover = (NONE, consts), None
            self.conv_run, self.run = self.run, self._run_then_add
            # an implicit GEMM on the tiles adds Z and clips in them (_phases, _wide: mapped)
            implicit = {NumbaConv._run_phases: self._phases, NumbaConv._run_wide: self._wide}
            in_tiles = self.tiled and self.code_after[0] in (NONE, CLIP)
            self.implicit = implicit.get(self.conv_run.__func__) if in_tiles else None
        return specs

    def _residual(self, inputs: list, shape: tuple[int, ...]) -> np.ndarray:
        return np.ascontiguousarray(inputs[3]).reshape(shape)

    def channels_last(self) -> ChannelsLastOffer | None:
        """As NumbaConv's, the residual Z in the output's layout (pointwise only: the other
        paths add Z over NCHW planes)."""
        if "run" not in self.__dict__ or getattr(self.run, "__func__", None) is not NumbaConv._run_gemm:
            return None
        offer = super().channels_last()
        if offer is None:
            return None
        return ChannelsLastOffer(frozenset({0, 3}), True, frozenset({3}))

    def _run_then_add(self, inputs, outputs):
        out = outputs[0]
        if not out.flags.c_contiguous:  # (a caller's strided view: its planes reshaped would be
            result = np.empty(out.shape, out.dtype)  # a copy, Z added to that; the planner makes none)
            self._run_then_add(inputs, [result])
            out[...] = result
            return
        if self.implicit is not None and MAP_WIDE:
            self.implicit(inputs, outputs, self.code_after, self.leftover_after, inputs[3])
            return
        self.conv_run(inputs, outputs)
        shape = (out.shape[0], out.shape[1], out.size // max(1, out.shape[0] * out.shape[1]))
        epilogue(out.reshape(shape), _NO_BIAS[out.dtype.char], self._residual(inputs, shape), *self.code_after)
        finish_activation(out, self.leftover_after)

"""The numba backend's 2-D convolutions on float NCHW tensors, each with its epilogue (bias,
fused activation; see devices.numba_epilogue) in the same kernel:

- depthwise (one input channel per group, any channel multiplier): a direct compiled loop,
  parallel over the output planes. For each output row and kernel tap it works out once which
  output columns read inside the input, so the inner loop is a branch-free multiply-add over a
  contiguous row (stride 1) that LLVM vectorizes; the bias starts the row, the activation
  finishes it while it is still in cache. numpy's batched matmul over gathered taps (the
  reference) moves 9x the data through memory for 9 multiply-adds per output.
- pointwise (1x1, stride 1, no padding): one BLAS matmul per group straight on the activation,
  no im2col, then the compiled epilogue.
- general: a compiled im2col, parallel over the column rows, gathers straight from the unpadded
  input; BLAS multiplies (one call per group); the compiled epilogue.

Earns its place in benchmarks/bench_cnn_models.py (MobileNet/ShuffleNet/EfficientNet).
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

from edgerun.devices.numba_depthwise import (
    channels_last_buffers,
    depthwise_2d,
    depthwise_buffers,
    depthwise_channels_last,
)
from edgerun.devices.numba_epilogue import (
    NONE,
    activate_row,
    activation_code,
    epilogue,
    finish_activation,
    finish_epilogue,
)
from edgerun.devices.numba_threads import thread_count, use_threads
from edgerun.runtime.kernels.base import TensorSpec
from edgerun.runtime.kernels.conv import ConvParams
from edgerun.runtime.kernels.fused import apply_activation
from edgerun.runtime.kernels.registry import accelerate
from edgerun.runtime.kernels.spatial import Window, scratch

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
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


@njit(inline="always")
def _columns(off, stride, in_size, out_size):  # pragma: no cover - compiled
    """[z0, z1): the outputs z whose input column z * stride + off lies in [0, in_size)."""
    z0 = max(0, (-off + stride - 1) // stride)
    z1 = min(out_size, (in_size - 1 - off) // stride + 1)
    return z0, max(z0, z1)


@njit(parallel=True, cache=True, nogil=True)
def im2col_2d(x, cols, kh, kw, sh, sw, dh, dw, ph, pw, oh, ow):  # pragma: no cover - compiled
    """cols[n, (c*kh + i)*kw + j, y*ow + z] = x[n, c, y*sh - ph + i*dh, z*sw - pw + j*dw], 0 outside.
    Parallel over the rows (n, c, i, j)."""
    n_, c_, h, wd = x.shape
    rows = c_ * kh * kw
    for task in prange(n_ * rows):
        n, row = task // rows, task % rows
        c, tap = row // (kh * kw), row % (kh * kw)
        i, j = tap // kw, tap % kw
        dst = cols[n, row]
        off = j * dw - pw
        z0, z1 = _columns(off, sw, wd, ow)
        for y in range(oh):
            base = y * ow
            sy = y * sh - ph + i * dh
            if sy < 0 or sy >= h:
                for z in range(ow):
                    dst[base + z] = 0.0
                continue
            for z in range(z0):
                dst[base + z] = 0.0
            out = dst[base + z0 : base + z1]
            if sw == 1:  # from 0 over slices: no wraparound tests, a vectorized copy
                src = x[n, c, sy, z0 + off : z1 + off]
                for k in range(z1 - z0):
                    out[k] = src[k]
            else:
                src = x[n, c, sy, z0 * sw + off : (z1 - 1) * sw + off + 1 : sw]
                for k in range(z1 - z0):
                    out[k] = src[k]
            for z in range(z1, ow):
                dst[base + z] = 0.0


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
        for row in range(hp):
            y = row - ph
            dst = plane[row * wp : (row + 1) * wp]
            if y < 0 or y >= h:
                for z in range(wp):
                    dst[z] = 0.0
                continue
            for z in range(pw):
                dst[z] = 0.0
            src, mid = x[n, c, y], dst[pw : pw + wd]
            for z in range(wd):
                mid[z] = src[z]
            for z in range(pw + wd, wp):
                dst[z] = 0.0
        for i in range(kh):
            for j in range(kw):
                start = i * dh * wp + j * dw
                out, src = cols[n, (c * kh + i) * kw + j], plane[start : start + span]
                for q in range(span):
                    out[q] = src[q]


@njit(parallel=True, cache=True, nogil=True)
def epilogue_wide(wide, out, wp, bias, code, consts):  # pragma: no cover - compiled
    """out[n, m, y, z] = act(wide[n, m, y*WP + z] + bias[m]): the valid columns of a wide-row
    product, with the bias (zeros for none) and the fused activation. Parallel over planes."""
    n_, m_, oh, ow = out.shape
    for plane in prange(n_ * m_):
        n, m = plane // m_, plane % m_
        b, src_plane = bias[m], wide[n, m]
        for y in range(oh):
            row, src = out[n, m, y], src_plane[y * wp : y * wp + ow]
            for z in range(ow):
                row[z] = src[z] + b
            activate_row(row, code, consts)


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
        *self.code, self.leftover = activation_code(p.activation, x.dtype)
        self.zeros = np.zeros(w.shape[0], x.dtype)  # the bias when there is none (_bias_or_zeros)
        depthwise = depthwise_shape(x, w, p)
        self.run = self._run_depthwise if depthwise else self._run_gemm
        if not depthwise and not p.pointwise and p.window.strides == (1, 1):
            kh, kw, _, _, dh, dw, ph, pw = geometry
            (h, wd), (oh, ow) = x.shape[2:], p.window.out_shape
            wp = max(pw + wd, ow - 1 + (kw - 1) * dw + 1)
            hp = max(ph + h, oh - 1 + (kh - 1) * dh + 1)
            self.wide = (hp, wp, (oh - 1) * wp + ow)
            self.run = self._run_wide
        weights = values[1]
        window = p.window
        if (depthwise and weights is not None and w.shape[0] == x.shape[1]
                and channels_last(window.kernel, window.strides, window.dilations, window.out_shape)):
            self.w_last = np.ascontiguousarray(np.asarray(weights)[:, 0].transpose(1, 2, 0))
            self.run = self._run_depthwise_channels_last
        return specs

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
        depthwise_channels_last(x, self.w_last, bias, out, sh, sw, dh, dw, ph, pw, *self.code, xt, ot)
        finish_activation(out, self.leftover)

    def _run_wide(self, inputs, outputs):
        p: ConvParams = self.params
        x, w, out = np.ascontiguousarray(inputs[0]), inputs[1], outputs[0]
        (n, m), c, g = out.shape[:2], x.shape[1], p.group
        kh, kw, _, _, dh, dw, ph, pw = self.geometry
        hp, wp, span = self.wide
        bias = self._bias_or_zeros(inputs)
        rows = w.shape[1] * kh * kw  # per group
        weights = w.reshape(g, m // g, rows)
        use_threads(self.threads)
        for start in range(0, n, p.chunk):  # a bounded column buffer, as the reference keeps
            part = slice(start, min(n, start + p.chunk))
            size = part.stop - part.start
            padded = scratch("numba.conv.padded", (size, c, hp * wp), x.dtype)
            cols = scratch("numba.conv.col", (size, g * rows, span), x.dtype)
            im2col_wide(x[part], cols, kh, kw, dh, dw, ph, pw, wp, padded)
            wide = scratch("numba.conv.wide", (size, m, span), x.dtype)
            np.matmul(weights, cols.reshape(size, g, rows, span), out=wide.reshape(size, g, m // g, span))
            epilogue_wide(wide, out[part], wp, bias, *self.code)
        finish_activation(out, self.leftover)

    def _run_gemm(self, inputs, outputs):
        p: ConvParams = self.params
        x, w, out = np.ascontiguousarray(inputs[0]), inputs[1], outputs[0]
        n, m = out.shape[:2]
        g = p.group
        use_threads(self.threads)
        rows = w.shape[1] * len(p.taps)  # per group
        weights = w.reshape(g, m // g, rows)
        result = out.reshape(n, m, p.out_size)
        if p.pointwise:
            np.matmul(weights, x.reshape(n, g, rows, p.out_size), out=result.reshape(n, g, m // g, p.out_size))
        else:
            for start in range(0, n, p.chunk):  # a bounded im2col buffer, as the reference keeps
                part = slice(start, min(n, start + p.chunk))
                size = part.stop - part.start
                cols = scratch("numba.conv.col", (size, g, rows, p.out_size), x.dtype)
                im2col_2d(x[part], cols.reshape(size, g * rows, p.out_size), *self.geometry,
                          *p.window.out_shape)
                np.matmul(weights, cols, out=result[part].reshape(size, g, m // g, p.out_size))
        residual = self._residual(inputs, result.shape)
        if p.has_bias or p.activation is not None or residual.size:
            finish_epilogue(result, self._bias(inputs), residual, *self.code, self.leftover)

    def _residual(self, inputs: list, shape: tuple[int, ...]) -> np.ndarray:
        """What the epilogue adds before the activation: nothing for a Conv (a FusedConv's Z)."""
        return _NO_RESIDUAL[inputs[0].dtype.char]


def _with_unit_height(shape: tuple[int, ...]) -> tuple[int, ...]:
    """(N, C, L) -> (N, C, 1, L): a 1-D tensor as a 2-D one of height 1."""
    return (*shape[:2], 1, *shape[2:])


_NO_BIAS = {dt.char: np.zeros(0, dt) for dt in _FLOATS}  # size 0: compiled code reads "none"
_NO_RESIDUAL = {dt.char: np.zeros((0, 0, 0), dt) for dt in _FLOATS}


@accelerate("FusedConv", BACKEND, domain="edgerun")
class NumbaFusedConv(NumbaConv):
    """edgerun:FusedConv (Conv + residual Z + activation) on the Conv's fast paths. Through BLAS
    (pointwise, strided) Z joins the one epilogue pass; after the other paths (run without their
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
        if self.run.__func__ is not NumbaConv._run_gemm:
            self.code_after, self.leftover_after = self.code, self.leftover
            *_, consts = self.code
            self.code, self.leftover = (NONE, consts), None
            self.conv_run, self.run = self.run, self._run_then_add
        return specs

    def _residual(self, inputs: list, shape: tuple[int, ...]) -> np.ndarray:
        return np.ascontiguousarray(inputs[3]).reshape(shape)

    def _run_then_add(self, inputs, outputs):
        self.conv_run(inputs, outputs)
        out = outputs[0]
        shape = (out.shape[0], out.shape[1], out.size // max(1, out.shape[0] * out.shape[1]))
        epilogue(out.reshape(shape), _NO_BIAS[out.dtype.char], self._residual(inputs, shape), *self.code_after)
        finish_activation(out, self.leftover_after)

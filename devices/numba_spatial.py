"""The "numba" backend's pooling fast paths on float NCHW tensors: MaxPool (its common 2x2,
stride-2 window in one serial pass, any other 2-D window compiled), 2-D AveragePool and
GlobalAveragePool (convolutions are in devices.numba_conv).

Earns its place in benchmarks/bench_cnn.py.
"""

from __future__ import annotations

from math import prod

import numpy as np
from numba import njit, prange

from edgerun.devices.numba_conv import valid_columns
from edgerun.devices.numba_threads import thread_count, use_threads
from edgerun.runtime.kernels.registry import accelerate
from edgerun.runtime.layout import ChannelsLastOffer

BACKEND = "numba"
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


@njit(inline="always")
def _max_nan(a, b):  # pragma: no cover - compiled
    """max(a, b) that returns NaN when either is NaN, as np.maximum does."""
    return a if (a > b or a != a) else b


@njit(parallel=True, cache=True, nogil=True)
def max_pool_2x2(x, out):  # pragma: no cover - compiled
    """MaxPool with a 2x2 window and stride 2 over windows that lie inside x; parallel over
    the planes (one serial pass ran VGG's 64 x 224 x 224 pool at 4x onnxruntime's time)."""
    n_, c_ = x.shape[0], x.shape[1]
    oh, ow = out.shape[2], out.shape[3]
    for plane in prange(n_ * c_):
        n, c = plane // c_, plane % c_
        src, dst = x[n, c], out[n, c]
        for y in range(oh):
            upper, lower, row = src[2 * y], src[2 * y + 1], dst[y]
            for z in range(ow):
                top = _max_nan(upper[2 * z], upper[2 * z + 1])
                bottom = _max_nan(lower[2 * z], lower[2 * z + 1])
                row[z] = _max_nan(top, bottom)


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


CHANNEL_BLOCK = 64  # channels per task of mean_pixels


@njit(parallel=True, cache=True, nogil=True)
def mean_pixels(x, out):  # pragma: no cover - compiled
    """out[n, c] = mean of x[n, :, c] for channels-last x (N, P, C), accumulated in float64;
    parallel over (image, block of CHANNEL_BLOCK channels), each pixel a pass over the block's
    contiguous channels."""
    n_, p_, c_ = x.shape
    blocks = (c_ + CHANNEL_BLOCK - 1) // CHANNEL_BLOCK
    for task in prange(n_ * blocks):
        n, c0 = task // blocks, (task % blocks) * CHANNEL_BLOCK
        width = min(CHANNEL_BLOCK, c_ - c0)
        total = np.zeros(CHANNEL_BLOCK, np.float64)
        for q in range(p_):
            src = x[n, q, c0 : c0 + width]
            for c in range(width):
                total[c] += src[c]
        dst = out[n, c0 : c0 + width]
        for c in range(width):
            dst[c] = total[c] / p_


@njit(parallel=True, cache=True, nogil=True)
def max_pool_2d(x, out, kh, kw, sh, sw, dh, dw, ph, pw):  # pragma: no cover - compiled
    """out[n, c, y, z] = max over the window's taps inside x of x[n, c, y*sh - ph + i*dh,
    z*sw - pw + j*dw] (padding never wins; NaN wins, as np.maximum's chain does); parallel over
    the planes. Per output row, first the maximum down the window's rows over whole input rows
    (`column`), then across the window's columns. Up to three rows, and three columns where
    the window lies inside x, are read in one pass each: a loop that reads and rewrites its
    own result row per tap did not vectorize (7x slower on a 111x111 plane); at column stride
    2 the three columns come from the row's even and odd columns, split apart first."""
    n_, c_, h, wd = x.shape
    oh, ow = out.shape[2], out.shape[3]
    for plane in prange(n_ * c_):
        n, c = plane // c_, plane % c_
        src, dst = x[n, c], out[n, c]
        column = np.empty(wd, x.dtype)
        even, odd = np.empty(wd // 2 + 1, x.dtype), np.empty(wd // 2 + 1, x.dtype)
        for y in range(oh):
            first = y * sh - ph
            i0 = max(0, (-first + dh - 1) // dh)  # the window rows inside x: [i0, i1)
            i1 = min(kh, (h - 1 - first) // dh + 1)
            if i1 - i0 <= 0:
                for z in range(wd):
                    column[z] = -np.inf
            elif i1 - i0 == 1:
                r0 = src[first + i0 * dh]
                for z in range(wd):
                    column[z] = r0[z]
            else:
                r0, r1 = src[first + i0 * dh], src[first + (i0 + 1) * dh]
                if i1 - i0 >= 3:
                    r2 = src[first + (i0 + 2) * dh]
                    for z in range(wd):
                        column[z] = _max_nan(_max_nan(r0[z], r1[z]), r2[z])
                else:
                    for z in range(wd):
                        column[z] = _max_nan(r0[z], r1[z])
                for i in range(i0 + 3, i1):  # taller windows: one more pass per row
                    more = src[first + i * dh]
                    for z in range(wd):
                        column[z] = _max_nan(column[z], more[z])
            row = dst[y]
            # where all of a 3-wide window's columns lie inside x: one pass of three reads
            z0, z1 = valid_columns(-pw, sw, wd, ow)
            inner0, inner1 = valid_columns(2 * dw - pw, sw, wd, ow)
            lo, hi = (min(ow, max(z0, inner0)), min(z1, inner1)) if kw == 3 else (0, 0)
            hi = max(lo, hi)  # ([lo, hi) inside [0, ow): the tap-by-tap loops below write [0, lo) and [hi, ow))
            if hi > lo and sw == 2 and dw == 1:
                # stride 2: the row's even and odd columns apart first (one vectorized pass), so
                # that the window's three columns are three unit-stride reads
                start = lo * 2 - pw
                pairs = wd // 2
                for k in range(pairs):
                    even[k] = column[2 * k]
                    odd[k] = column[2 * k + 1]
                if wd % 2:
                    even[pairs] = column[wd - 1]
                half = start // 2
                if start % 2 == 0:  # columns 2(half + k), + 1, + 2
                    left, middle, right = even[half:], odd[half:], even[half + 1 :]
                else:  # columns 2(half + k) + 1, + 2, + 3
                    left, middle, right = odd[half:], even[half + 1 :], odd[half + 1 :]
                part = row[lo:]
                for k in range(hi - lo):
                    part[k] = _max_nan(_max_nan(left[k], middle[k]), right[k])
            elif hi > lo:
                start = lo * sw - pw
                for k in range(hi - lo):
                    q = start + k * sw
                    row[lo + k] = _max_nan(_max_nan(column[q], column[q + dw]), column[q + 2 * dw])
            for z in range(lo):  # the rest, tap by tap
                row[z] = _column_max(column, z * sw - pw, kw, dw, wd)
            for z in range(hi, ow):
                row[z] = _column_max(column, z * sw - pw, kw, dw, wd)


@njit(inline="always")
def _column_max(column, left, kw, dw, wd):  # pragma: no cover - compiled
    """The max of column[left + j*dw] over the taps j inside [0, wd) (-inf if none; NaN wins)."""
    best = -np.inf
    for j in range(kw):
        q = left + j * dw
        if 0 <= q < wd:
            best = _max_nan(best, column[q])
    return best


@njit(parallel=True, cache=True, nogil=True)
def average_pool_2d(x, out, inverse, kh, kw, sh, sw, dh, dw, ph, pw):  # pragma: no cover - compiled
    """out[n, c, y, z] = (sum over the window's taps inside x of x[n, c, y*sh - ph + i*dh,
    z*sw - pw + j*dw]) * inverse[y, z] (padding adds nothing; the caller's float64 reciprocal
    of each window's count says what counts); parallel over the planes, summed in float64.
    Per output row, first the sum down the window's rows over whole input rows (`column`, up
    to three rows in one pass), then across the window's columns: where a 3-wide stride-1
    window lies inside x, three unit-stride reads per output in one vectorized pass (the
    tap-by-tap loop took 3x as long on 112 x 112 planes, 1.5x on 14 x 14)."""
    n_, c_, h, wd = x.shape
    oh, ow = out.shape[2], out.shape[3]
    rows, columns = _taps_inside(h, oh, kh, sh, dh, ph), _taps_inside(wd, ow, kw, sw, dw, pw)
    lo = hi = ow  # [lo, hi): outputs whose 3-wide stride-1 window lies inside x; the rest tap by tap
    if kw == 3 and sw == 1:
        lo = valid_columns(-pw, 1, wd, ow)[0]
        hi = max(lo, valid_columns(2 * dw - pw, 1, wd, ow)[1])
    for plane in prange(n_ * c_):
        n, c = plane // c_, plane % c_
        src, dst = x[n, c], out[n, c]
        column = np.empty(wd, np.float64)
        for y in range(oh):
            first = y * sh - ph
            i0, i1 = rows[y, 0], rows[y, 1]
            if i1 - i0 == 0:
                column[:] = 0.0
            elif i1 - i0 == 1:
                r0 = src[first + i0 * dh]
                for z in range(wd):
                    column[z] = r0[z]
            else:
                r0, r1 = src[first + i0 * dh], src[first + (i0 + 1) * dh]
                if i1 - i0 >= 3:
                    r2 = src[first + (i0 + 2) * dh]
                    for z in range(wd):
                        column[z] = (np.float64(r0[z]) + r1[z]) + r2[z]
                else:
                    for z in range(wd):
                        column[z] = np.float64(r0[z]) + r1[z]
                for i in range(i0 + 3, i1):
                    more = src[first + i * dh]
                    for z in range(wd):
                        column[z] += more[z]
            row, scale = dst[y], inverse[y]
            if lo < hi:
                start = lo - pw
                left, middle, right = column[start:], column[start + dw :], column[start + 2 * dw :]
                part, part_scale = row[lo:hi], scale[lo:hi]
                for k in range(hi - lo):
                    part[k] = ((left[k] + middle[k]) + right[k]) * part_scale[k]
            for z in range(lo):  # the rest, tap by tap
                row[z] = _window_sum(column, columns[z, 0], columns[z, 1], z * sw - pw, dw) * scale[z]
            for z in range(hi, ow):
                row[z] = _window_sum(column, columns[z, 0], columns[z, 1], z * sw - pw, dw) * scale[z]


@njit(parallel=True, cache=True, nogil=True)
def average_pool_same(x, out, scale, column_ok, row_ok, kh, kw, ph, pw, group):  # pragma: no cover - compiled
    """average_pool_2d for a stride-1, undilated window whose output has x's own height and
    width ("same" padding: ph before, kh - 1 - ph after; pw, kw - 1 - pw), `group` whole planes
    at a time as one flat run (parallel over the groups): the window's row sums in kw shifted
    unit-stride passes, each tap added only where `column_ok[tap]` says it lands inside its
    row, then the column sums in kh passes over those (`row_ok`), times `scale`, in float64.
    column_ok (kw, group*h*w), row_ok (kh, group*h*w) and scale (group*h*w) are one plane's
    answers repeated `group` times (same_window_tables). Plane by plane, 7 x 7 and 14 x 14
    planes spent more in loop set-up than in sums; row by row 1024 x 7 x 7 took 3.5x
    onnxruntime's time."""
    n_, c_, h, w = x.shape
    size = n_ * c_ * h * w
    length = group * h * w
    flat, results = x.reshape(size), out.reshape(size)
    for g in prange((size + length - 1) // length):
        lo = g * length
        count = min(size, lo + length) - lo
        src, dst = flat[lo : lo + count], results[lo : lo + count]
        across = np.empty(count, np.float64)
        if kw == 3 and pw == 1:  # a centred 3-wide window: one pass
            _add3_where(across, src, column_ok[0], column_ok[2], 1)
        else:
            for f in range(count):  # the window's own column: tap pw, always inside
                across[f] = src[f]
            for j in range(kw):
                if j != pw:
                    _add_where(across, src, j - pw, column_ok[j])
        down = np.empty(count, np.float64)
        if kh == 3 and ph == 1:
            _add3_where(down, across, row_ok[0], row_ok[2], w)
        else:
            down[:] = across
            for i in range(kh):
                if i != ph:
                    _add_where(down, across, (i - ph) * w, row_ok[i])
        for f in range(count):
            dst[f] = down[f] * scale[f]


@njit(parallel=True, cache=True, nogil=True)
def max_pool_flat(x, out, column_ok, row_ok, picks, kh, kw, ph, pw, group):  # pragma: no cover - compiled
    """MaxPool with an undilated window whose pads before it are smaller than it, by flat
    runs of `group` planes as average_pool_same (each tap taken only where it lands inside
    the plane: padding never wins; NaN wins, as np.maximum): the stride-1 maxima at every
    input position, then, where `picks` is not empty, out's planes gathered from them
    (picks: the flat positions in a plane of the strided windows' first taps past the pads,
    each inside the plane; empty: out is the stride-1 result itself). Inception's 3x3
    stride-1 pools at 28 x 28 down to 7 x 7, and its 3x3 stride-2 ones into 28 x 28 down to
    7 x 7 (row by row, those took 2-4x onnxruntime's time)."""
    n_, c_, h, w = x.shape
    planes, plane = n_ * c_, h * w
    outs = out.shape[2] * out.shape[3]
    flat, results = x.reshape(planes * plane), out.reshape(planes * outs)
    for g in prange((planes + group - 1) // group):
        p0 = g * group
        p1 = min(planes, p0 + group)
        src = flat[p0 * plane : p1 * plane]
        across = np.empty(src.size, src.dtype)
        if kw == 3 and pw == 1:  # a centred 3-wide window: one pass
            _max3_where(across, src, column_ok[0], column_ok[2], 1)
        else:
            across[:] = src  # (the window's own column: tap pw, always inside)
            for j in range(kw):
                if j != pw:
                    _max_where(across, src, j - pw, column_ok[j])
        full = results[p0 * plane : p1 * plane] if picks.size == 0 else np.empty(across.size, across.dtype)
        if kh == 3 and ph == 1:
            _max3_where(full, across, row_ok[0], row_ok[2], w)
        else:
            full[:] = across
            for i in range(kh):
                if i != ph:
                    _max_where(full, across, (i - ph) * w, row_ok[i])
        if picks.size == 0:
            continue
        for p in range(p1 - p0):
            dst, base = results[(p0 + p) * outs : (p0 + p + 1) * outs], p * plane
            for t in range(outs):
                dst[t] = full[base + picks[t]]


@njit(inline="always")
def _max_where(best, values, shift, ok):  # pragma: no cover - compiled
    """best[f] = max(best[f], values[f + shift]) (NaN wins) where ok[f] (f + shift then lies
    inside: the callers' tables never let a tap cross the run's ends). One unit-stride pass
    of selects over slices, so it vectorizes."""
    size = best.size
    lo, hi = max(0, -shift), min(size, size - shift)
    if hi <= lo:
        return
    part, source, inside = best[lo:hi], values[lo + shift : hi + shift], ok[lo:hi]
    for f in range(hi - lo):
        current = part[f]
        part[f] = _max_nan(current, source[f]) if inside[f] else current


@njit(inline="always")
def _max3_where(best, values, before, after, step):  # pragma: no cover - compiled
    """best[f] = the max (NaN wins) of values[f], values[f - step] where before[f] and
    values[f + step] where after[f], in one pass (a centred 3-tap window: its middle tap is
    always inside; the tables never let an end tap cross the run's ends, and the loop never
    reads past them). The middle by unit-stride slices, so it vectorizes (indexing values[f -
    step] kept a negative-index check in the loop: 12x slower)."""
    size = best.size
    lo, hi = min(step, size), max(min(step, size), size - step)
    for f in range(lo):
        v = values[f]
        best[f] = _max_nan(v, values[f + step]) if f + step < size and after[f] else v
    middle, left, right = values[lo:hi], values[lo - step : hi - step], values[lo + step : hi + step]
    take_left, take_right, part = before[lo:hi], after[lo:hi], best[lo:hi]
    for f in range(hi - lo):
        v = middle[f]
        v = _max_nan(v, left[f]) if take_left[f] else v
        part[f] = _max_nan(v, right[f]) if take_right[f] else v
    for f in range(hi, size):
        v = values[f]
        best[f] = _max_nan(v, values[f - step]) if f >= step and before[f] else v


@njit(inline="always")
def _add3_where(total, values, before, after, step):  # pragma: no cover - compiled
    """total[f] = values[f] + values[f - step] where before[f] + values[f + step] where
    after[f] in float64, in one pass (as _max3_where)."""
    size = total.size
    lo, hi = min(step, size), max(min(step, size), size - step)
    for f in range(lo):
        v = np.float64(values[f])
        total[f] = v + values[f + step] if f + step < size and after[f] else v
    middle, left, right = values[lo:hi], values[lo - step : hi - step], values[lo + step : hi + step]
    take_left, take_right, part = before[lo:hi], after[lo:hi], total[lo:hi]
    for f in range(hi - lo):
        v = np.float64(middle[f])
        v = v + left[f] if take_left[f] else v
        part[f] = v + right[f] if take_right[f] else v
    for f in range(hi, size):
        v = np.float64(values[f])
        total[f] = v + values[f - step] if f >= step and before[f] else v


@njit(inline="always")
def _add_where(total, values, shift, ok):  # pragma: no cover - compiled
    """total[f] += values[f + shift] where ok[f] (as _max_where; a value outside the window,
    NaN or infinite, is never read into the sum)."""
    size = total.size
    lo, hi = max(0, -shift), min(size, size - shift)
    if hi <= lo:
        return
    part, source, inside = total[lo:hi], values[lo + shift : hi + shift], ok[lo:hi]
    for f in range(hi - lo):
        part[f] += source[f] if inside[f] else 0.0


@njit(inline="always")
def _window_sum(column, j0, j1, left, dw):  # pragma: no cover - compiled
    """The sum of column[left + j * dw] over the taps j in [j0, j1), in float64."""
    total = 0.0
    for j in range(j0, j1):
        total += column[left + j * dw]
    return total


@njit(cache=True, nogil=True)
def _taps_inside(size, outs, k, stride, dilation, pad):  # pragma: no cover - compiled
    """[t0, t1) per output position along one axis: the window taps that land inside
    [0, size), computed once per call rather than per output element."""
    taps = np.empty((outs, 2), np.int64)
    for o in range(outs):
        first = o * stride - pad
        taps[o, 0] = min(k, max(0, (-first + dilation - 1) // dilation))
        taps[o, 1] = max(taps[o, 0], min(k, (size - 1 - first) // dilation + 1))
    return taps


@accelerate("MaxPool", BACKEND)
class NumbaMaxPool:
    """Float 2-D MaxPool without the Indices output: the 2x2, stride-2 window of classic CNNs
    in one pass per plane; windows that keep the plane's size, and strided ones over small
    planes, by flat runs of whole planes (max_pool_flat); any other window (strides,
    dilations, pads, ceil_mode) row by row in a compiled pass parallel over the planes.
    Other ranks stay on the reference's np.maximum per tap."""

    def prepare(self, inputs, values):
        specs = super().prepare(inputs, values)
        w = self.params.window  # PoolParams
        if inputs[0].dtype not in _FLOATS or self.num_outputs != 1 or len(w.kernel) != 2 or specs[0].size == 0:
            return specs
        self.threads = thread_count(getattr(self.context, "num_threads", None), specs[0].size * prod(w.kernel))
        if w.kernel == (2, 2) and w.strides == (2, 2) and w.dilations == (1, 1) and not w.needs_padding:
            self.run = self._run_2x2
            return specs
        self.geometry = (*w.kernel, *w.strides, *w.dilations, *w.pads_begin)
        self.run = self._run_window
        picks = flat_picks(w, inputs[0].shape, specs[0].shape)
        if picks is not None:
            self.group = same_window_group(inputs[0].shape, self.threads)
            self.tables = (*same_window_tables(inputs[0].shape[2:], w, self.group, None)[1:], picks)
            self.run = self._run_flat
        return specs

    def _run_2x2(self, inputs, outputs):
        use_threads(self.threads)
        max_pool_2x2(np.ascontiguousarray(inputs[0]), outputs[0])

    def _run_window(self, inputs, outputs):
        use_threads(self.threads)
        max_pool_2d(np.ascontiguousarray(inputs[0]), outputs[0], *self.geometry)

    def _run_flat(self, inputs, outputs):
        if not outputs[0].flags.c_contiguous:  # (its flat planes need a contiguous output)
            self._run_window(inputs, outputs)
            return
        kh, kw, _, _, _, _, ph, pw = self.geometry
        use_threads(self.threads)
        max_pool_flat(np.ascontiguousarray(inputs[0]), outputs[0], *self.tables, kh, kw, ph, pw, self.group)


FLAT_STRIDED_PLANE = 32 * 32  # the biggest plane a strided MaxPool takes by flat runs (flat_picks)


def flat_picks(w, x_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> np.ndarray | None:
    """max_pool_flat's `picks` for a 2-D MaxPool it can run: empty for a same window (stride
    1, the plane's own size); for a strided undilated window over a plane of at most
    FLAT_STRIDED_PLANE values whose every output's first tap past the pads lies inside x
    (out[y, z] is then the stride-1 maximum at (y*sh, z*sw)), those positions; else None."""
    if same_window(w, x_shape, out_shape):
        return np.zeros(0, np.int64)
    (h, wd), (oh, ow), (sh, sw) = x_shape[2:], out_shape[2:], w.strides
    if (w.dilations != (1, 1) or w.pads_begin[0] >= w.kernel[0] or w.pads_begin[1] >= w.kernel[1]
            or h * wd > FLAT_STRIDED_PLANE or (oh - 1) * sh >= h or (ow - 1) * sw >= wd):
        return None
    return (np.arange(oh)[:, None] * sh * wd + np.arange(ow)[None, :] * sw).reshape(-1).astype(np.int64)


def same_window(w, x_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> bool:
    """Whether a 2-D pool's window is stride 1, undilated, and keeps the plane's size with
    its pads (so each output's window holds the input at its own position): the flat-plane
    passes (average_pool_same, max_pool_flat)."""
    return (w.strides == (1, 1) and w.dilations == (1, 1) and tuple(out_shape[2:]) == tuple(x_shape[2:])
            and w.pads_begin[0] < w.kernel[0] and w.pads_begin[1] < w.kernel[1])


SAME_WINDOW_RUN = 4096  # the values one flat run of whole planes holds, at most (same_window_group)


def same_window_group(x_shape: tuple[int, ...], threads: int) -> int:
    """The planes in one flat run of the same-window passes: as many as fit SAME_WINDOW_RUN
    values (at least one), and no more than leave each thread a run."""
    planes, plane = prod(x_shape[:2]), prod(x_shape[2:])
    return max(1, min(SAME_WINDOW_RUN // max(1, plane), -(-planes // max(1, threads))))


def same_window_tables(plane: tuple[int, ...], w, group: int, inverse: np.ndarray | None) -> tuple[np.ndarray, ...]:
    """(scale, column_ok, row_ok) for average_pool_same / max_pool_flat over runs of `group`
    planes of `plane` (h, w): column_ok[j, f] whether tap column j of position f's window lies
    inside its row, row_ok[i, f] whether tap row i lies inside its plane, scale (a float64
    copy of `inverse`, the reciprocal divisors; empty without it), each one plane's answer
    repeated `group` times."""
    h, wd = plane
    (kh, kw), (ph, pw) = w.kernel, w.pads_begin
    y, z = np.divmod(np.arange(h * wd), wd)
    column_ok = np.stack([(z + j - pw >= 0) & (z + j - pw < wd) for j in range(kw)])
    row_ok = np.stack([(y + i - ph >= 0) & (y + i - ph < h) for i in range(kh)])
    scale = np.zeros(0) if inverse is None else np.tile(inverse.reshape(-1).astype(np.float64), group)
    return scale, np.tile(column_ok, group), np.tile(row_ok, group)


@accelerate("AveragePool", BACKEND)
class NumbaAveragePool:
    """Float 2-D AveragePool (any window, strides, dilations, pads, ceil_mode and
    count_include_pad: the reference's divisor says what counts) in one compiled pass parallel
    over the planes; the reference's sum of strided views over a padded copy cost 0.6 ms for
    Inception v2's 3x3 pools of 576 x 14 x 14 (onnxruntime 0.08). Other ranks stay on it."""

    def prepare(self, inputs, values):
        specs = super().prepare(inputs, values)
        w = self.params.window
        if inputs[0].dtype not in _FLOATS or len(w.kernel) != 2 or specs[0].size == 0:
            return specs
        self.geometry = (*w.kernel, *w.strides, *w.dilations, *w.pads_begin)
        self.threads = thread_count(getattr(self.context, "num_threads", None), specs[0].size * prod(w.kernel))
        self.inverse = 1.0 / self.divisor.astype(np.float64)
        self.run = self._run_window
        if same_window(w, inputs[0].shape, specs[0].shape):
            self.group = same_window_group(inputs[0].shape, self.threads)
            self.tables = same_window_tables(inputs[0].shape[2:], w, self.group, self.inverse)
            self.run = self._run_same
        return specs

    def _run_window(self, inputs, outputs):
        use_threads(self.threads)
        average_pool_2d(np.ascontiguousarray(inputs[0]), outputs[0], self.inverse, *self.geometry)

    def _run_same(self, inputs, outputs):
        if not outputs[0].flags.c_contiguous:  # (its flat planes need a contiguous output)
            self._run_window(inputs, outputs)
            return
        kh, kw, _, _, _, _, ph, pw = self.geometry
        use_threads(self.threads)
        average_pool_same(np.ascontiguousarray(inputs[0]), outputs[0], *self.tables, kh, kw, ph, pw, self.group)


@accelerate("GlobalAveragePool", BACKEND)
class NumbaGlobalAveragePool:
    """Float GlobalAveragePool of any rank: one compiled pass over each (n, c) plane, parallel
    over the planes when there is enough work."""

    def prepare(self, inputs, values):
        specs = super().prepare(inputs, values)
        x = inputs[0]
        self.params_shape = tuple(x.shape)
        if x.dtype in _FLOATS and len(x.shape) > 2 and prod(x.shape) > 0:
            self.threads = thread_count(getattr(self.context, "num_threads", None), prod(x.shape))
            self.run = self._run_planes
        return specs

    def channels_last(self) -> ChannelsLastOffer | None:
        """A 4-D float input may come channels-last (runtime.layout); the (N, C, 1, 1) result
        is the same bytes in either layout, so it is written as always."""
        if "run" not in self.__dict__ or len(self.params_shape) != 4:
            return None
        return ChannelsLastOffer(frozenset({0}), False)

    def use_channels_last(self, inputs: frozenset[int], output: bool) -> None:
        self.run = self._run_pixels

    def _run_pixels(self, inputs, outputs):
        x = inputs[0]
        n, c = x.shape[:2]
        use_threads(self.threads)
        mean_pixels(np.ascontiguousarray(x).reshape(n, -1, c), outputs[0].reshape(n, c))

    def _run_planes(self, inputs, outputs):
        x = np.ascontiguousarray(inputs[0])
        use_threads(self.threads)
        planes = x.reshape(x.shape[0] * x.shape[1], prod(x.shape[2:]))
        mean_planes(planes, outputs[0].reshape(-1, copy=False))

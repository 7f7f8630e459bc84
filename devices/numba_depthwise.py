"""The numba backend's depthwise convolution (one input channel per group, any channel
multiplier) on float NCHW tensors, in two layouts chosen per layer by plane size:

- plane by plane (`depthwise_2d`), for large planes: parallel over the output planes, each
  copied into a zero-bordered per-thread buffer so that no tap needs a bounds test; with
  stride 1 all nine taps of a 3x3 kernel, or all 25 of a 5x5 one, run in one vectorized pass
  over the flattened plane; at stride 2 (both ways, no dilation) likewise over the plane's
  four quarters by row and column parity, where every tap is a unit-stride read again
  (2.3x faster than row by row on MobileNetV2's 112x112 -> 56x56 layer); at column stride 2
  otherwise all taps of a row in one pass over the plane's even and odd columns; other
  strides row by row. The activation then runs over the whole output
  plane at once (row by row it cost more than the convolution on 14x14 planes: a Swish over
  14 values is mostly loop tail).
- channels-last (`depthwise_channels_last`), for small planes (the 14x14 and 7x7 layers of
  mobile CNNs, where per-plane and per-row overheads outweigh the arithmetic): the input is
  transposed into a zero-bordered (N, H, W, C) buffer, every output pixel is a multiply-add
  over contiguous channels per tap, and the result is transposed back. Inputs, outputs and the
  model stay NCHW: the layout lives inside the kernel.

Both end with the fused activation (devices.numba_epilogue) while the values are in cache.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

from edgerun.devices.numba_epilogue import activate_row
from edgerun.runtime.kernels.spatial import scratch


@njit(inline="always")
def _taps_3x3(dst, flat, taps, b, start, n, step, row_step, dw):  # pragma: no cover - compiled
    """dst[k] = b + sum_ij taps[i, j] * flat[start + k*step + i*row_step + j*dw] for k < n: all
    nine taps in one pass, one store per nine multiply-adds."""
    w00, w01, w02 = taps[0, 0], taps[0, 1], taps[0, 2]
    w10, w11, w12 = taps[1, 0], taps[1, 1], taps[1, 2]
    w20, w21, w22 = taps[2, 0], taps[2, 1], taps[2, 2]
    # slices indexed from 0: the compiler sees no negative index (no wraparound test per read);
    # with step 1 it knows the stride too, and the loop vectorizes
    r1, r2 = start + row_step, start + 2 * row_step
    if step == 1:
        a0, a1, a2 = flat[start:], flat[start + dw:], flat[start + 2 * dw:]
        b0, b1, b2 = flat[r1:], flat[r1 + dw:], flat[r1 + 2 * dw:]
        c0, c1, c2 = flat[r2:], flat[r2 + dw:], flat[r2 + 2 * dw:]
    else:
        a0, a1, a2 = flat[start::step], flat[start + dw::step], flat[start + 2 * dw::step]
        b0, b1, b2 = flat[r1::step], flat[r1 + dw::step], flat[r1 + 2 * dw::step]
        c0, c1, c2 = flat[r2::step], flat[r2 + dw::step], flat[r2 + 2 * dw::step]
    for k in range(n):
        dst[k] = (b + w00 * a0[k] + w01 * a1[k] + w02 * a2[k] + w10 * b0[k] + w11 * b1[k] + w12 * b2[k]
                  + w20 * c0[k] + w21 * c1[k] + w22 * c2[k])


@njit(inline="always")
def _sum_5x5(dst, taps, b, n, rows):  # pragma: no cover - compiled
    """dst[k] = b + sum_ij taps[i, j] * rows[5*i + j][k] for k < n: all 25 taps of a 5x5 kernel
    in one pass, the weights held in registers, one store per 25 multiply-adds, summed in
    tap order (the order of _taps_any and _halves_any: the same float32 result). `rows`: one
    slice per tap, indexed from 0 (no wraparound test per read: see _taps_3x3)."""
    w00, w01, w02, w03, w04 = taps[0, 0], taps[0, 1], taps[0, 2], taps[0, 3], taps[0, 4]
    w10, w11, w12, w13, w14 = taps[1, 0], taps[1, 1], taps[1, 2], taps[1, 3], taps[1, 4]
    w20, w21, w22, w23, w24 = taps[2, 0], taps[2, 1], taps[2, 2], taps[2, 3], taps[2, 4]
    w30, w31, w32, w33, w34 = taps[3, 0], taps[3, 1], taps[3, 2], taps[3, 3], taps[3, 4]
    w40, w41, w42, w43, w44 = taps[4, 0], taps[4, 1], taps[4, 2], taps[4, 3], taps[4, 4]
    a0, a1, a2, a3, a4, b0, b1, b2, b3, b4, c0, c1, c2, c3, c4, e0, e1, e2, e3, e4, f0, f1, f2, f3, f4 = rows
    for k in range(n):
        dst[k] = (b + w00 * a0[k] + w01 * a1[k] + w02 * a2[k] + w03 * a3[k] + w04 * a4[k]
                  + w10 * b0[k] + w11 * b1[k] + w12 * b2[k] + w13 * b3[k] + w14 * b4[k]
                  + w20 * c0[k] + w21 * c1[k] + w22 * c2[k] + w23 * c3[k] + w24 * c4[k]
                  + w30 * e0[k] + w31 * e1[k] + w32 * e2[k] + w33 * e3[k] + w34 * e4[k]
                  + w40 * f0[k] + w41 * f1[k] + w42 * f2[k] + w43 * f3[k] + w44 * f4[k])


@njit(inline="always")
def _taps_5x5(dst, flat, taps, b, n, row_step, dw):  # pragma: no cover - compiled
    """dst[k] = b + sum_ij taps[i, j] * flat[k + i*row_step + j*dw] for k < n (stride 1)."""
    r0, r1, r2, r3, r4 = 0, row_step, 2 * row_step, 3 * row_step, 4 * row_step
    d1, d2, d3, d4 = dw, 2 * dw, 3 * dw, 4 * dw
    _sum_5x5(dst, taps, b, n, (
        flat[r0:], flat[r0 + d1:], flat[r0 + d2:], flat[r0 + d3:], flat[r0 + d4:],
        flat[r1:], flat[r1 + d1:], flat[r1 + d2:], flat[r1 + d3:], flat[r1 + d4:],
        flat[r2:], flat[r2 + d1:], flat[r2 + d2:], flat[r2 + d3:], flat[r2 + d4:],
        flat[r3:], flat[r3 + d1:], flat[r3 + d2:], flat[r3 + d3:], flat[r3 + d4:],
        flat[r4:], flat[r4 + d1:], flat[r4 + d2:], flat[r4 + d3:], flat[r4 + d4:]))


@njit(inline="always")
def _halves_5x5(dst, even, odd, taps, b, r0, dh, n):  # pragma: no cover - compiled
    """As _halves_3x3 for a 5x5 kernel: padded column 2k + j is even[k + j // 2] for even j,
    odd[k + j // 2] for odd j; tap (i, j) reads half j % 2 of row r0 + i*dh from column j // 2."""
    q0, q1, q2, q3, q4 = r0, r0 + dh, r0 + 2 * dh, r0 + 3 * dh, r0 + 4 * dh
    _sum_5x5(dst, taps, b, n, (
        even[q0], odd[q0], even[q0, 1:], odd[q0, 1:], even[q0, 2:],
        even[q1], odd[q1], even[q1, 1:], odd[q1, 1:], even[q1, 2:],
        even[q2], odd[q2], even[q2, 1:], odd[q2, 1:], even[q2, 2:],
        even[q3], odd[q3], even[q3, 1:], odd[q3, 1:], even[q3, 2:],
        even[q4], odd[q4], even[q4, 1:], odd[q4, 1:], even[q4, 2:]))


@njit(inline="always")
def _taps_any(dst, flat, taps, b, start, n, step, row_step, dw):  # pragma: no cover - compiled
    """As _taps_3x3 for any kernel size: one pass per tap over dst."""
    kh, kw = taps.shape
    for k in range(n):
        dst[k] = b
    for i in range(kh):
        for j in range(kw):
            weight = taps[i, j]
            src = flat[start + i * row_step + j * dw :: step]
            for k in range(n):
                dst[k] += weight * src[k]


@njit(inline="always")
def _row_any_unit(dst, flat, taps, b, start, n, row_step, dw):  # pragma: no cover - compiled
    """One stride-1 output row for any kernel size: every tap a unit-stride pass over a row that
    stays in L1 (a whole-plane pass per tap, as for 3x3, would stream the plane 25 times for 5x5)."""
    kh, kw = taps.shape
    for k in range(n):
        dst[k] = b
    for i in range(kh):
        for j in range(kw):
            weight = taps[i, j]
            src = flat[start + i * row_step + j * dw:]
            for k in range(n):
                dst[k] += weight * src[k]


@njit(inline="always")
def _halves_3x3(dst, even, odd, taps, b, r0, dh, n):  # pragma: no cover - compiled
    """Stride-2 output row of a 3x3 kernel from the even and odd columns of the padded plane:
    padded column 2k + j is even[k + j // 2] for even j, odd[k] for j = 1. Unit-stride slices
    from 0, so the loop vectorizes."""
    w00, w01, w02 = taps[0, 0], taps[0, 1], taps[0, 2]
    w10, w11, w12 = taps[1, 0], taps[1, 1], taps[1, 2]
    w20, w21, w22 = taps[2, 0], taps[2, 1], taps[2, 2]
    r1, r2 = r0 + dh, r0 + 2 * dh
    a0, a1, a2 = even[r0], odd[r0], even[r0, 1:]
    b0, b1, b2 = even[r1], odd[r1], even[r1, 1:]
    c0, c1, c2 = even[r2], odd[r2], even[r2, 1:]
    for k in range(n):
        dst[k] = (b + w00 * a0[k] + w01 * a1[k] + w02 * a2[k] + w10 * b0[k] + w11 * b1[k] + w12 * b2[k]
                  + w20 * c0[k] + w21 * c1[k] + w22 * c2[k])


@njit(inline="always")
def _quarters_3x3(dst, q00, q01, q10, q11, taps, b, n, wq):  # pragma: no cover - compiled
    """Stride 2 in both directions, over the whole plane at once: with the padded plane split
    into its four quarters by row and column parity (q<row parity><column parity>, flattened
    rows of wq), tap (i, j) of output (y, k) is quarter (i % 2, j % 2) at row y + i // 2,
    column k + j // 2, a constant offset from y*wq + k. So every output, in wide rows of wq,
    is one long vectorized pass of n, summed in tap order (as _halves_3x3)."""
    w00, w01, w02 = taps[0, 0], taps[0, 1], taps[0, 2]
    w10, w11, w12 = taps[1, 0], taps[1, 1], taps[1, 2]
    w20, w21, w22 = taps[2, 0], taps[2, 1], taps[2, 2]
    a0, a1, a2 = q00, q01, q00[1:]
    b0, b1, b2 = q10, q11, q10[1:]
    c0, c1, c2 = q00[wq:], q01[wq:], q00[wq + 1:]
    for k in range(n):
        dst[k] = (b + w00 * a0[k] + w01 * a1[k] + w02 * a2[k] + w10 * b0[k] + w11 * b1[k] + w12 * b2[k]
                  + w20 * c0[k] + w21 * c1[k] + w22 * c2[k])


@njit(inline="always")
def _quarters_5x5(dst, q00, q01, q10, q11, taps, b, n, wq):  # pragma: no cover - compiled
    """As _quarters_3x3 for a 5x5 kernel: tap (i, j) reads quarter (i % 2, j % 2) from offset
    (i // 2)*wq + j // 2."""
    r1, r2 = wq, 2 * wq
    _sum_5x5(dst, taps, b, n, (
        q00, q01, q00[1:], q01[1:], q00[2:],
        q10, q11, q10[1:], q11[1:], q10[2:],
        q00[r1:], q01[r1:], q00[r1 + 1:], q01[r1 + 1:], q00[r1 + 2:],
        q10[r1:], q11[r1:], q10[r1 + 1:], q11[r1 + 1:], q10[r1 + 2:],
        q00[r2:], q01[r2:], q00[r2 + 1:], q01[r2 + 1:], q00[r2 + 2:]))


@njit(inline="always")
def _quarters_any(dst, quarters, taps, b, n, wq):  # pragma: no cover - compiled
    """As _quarters_3x3 for any kernel size, one pass per tap, in tap order; `quarters`
    (4, rows * wq), quarter 2 * (row parity) + column parity."""
    kh, kw = taps.shape
    for k in range(n):
        dst[k] = b
    for i in range(kh):
        for j in range(kw):
            weight = taps[i, j]
            src = quarters[2 * (i % 2) + j % 2, (i // 2) * wq + j // 2:]
            for k in range(n):
                dst[k] += weight * src[k]


@njit(inline="always")
def _deinterleave(row, even_z, odd_z, pairs):  # pragma: no cover - compiled
    """even_z[k] = row[2k], odd_z[k] = row[2k + 1] for k < pairs: one pass with constant
    strides, which the compiler vectorizes as interleaved loads (a strided view did not)."""
    for k in range(pairs):
        even_z[k] = row[2 * k]
        odd_z[k] = row[2 * k + 1]


@njit(inline="always")
def _halves_any(dst, even, odd, taps, b, r0, dh, n):  # pragma: no cover - compiled
    """As _halves_3x3 for any kernel size, one pass per tap."""
    kh, kw = taps.shape
    for k in range(n):
        dst[k] = b
    for i in range(kh):
        for j in range(kw):
            weight = taps[i, j]
            src = (even if j % 2 == 0 else odd)[r0 + i * dh, j // 2 :]
            for k in range(n):
                dst[k] += weight * src[k]


@njit(parallel=True, cache=True, nogil=True)
def depthwise_2d(x, w, bias, out, sh, sw, dh, dw, ph, pw, code, consts, padded, wide, halves):  # pragma: no cover
    """out[n, m] = act(bias[m] + sum_ij w[m, 0, i, j] * x[n, m // mult, y*sh - ph + i*dh, z*sw - pw + j*dw]),
    taps outside x counting as zero; mult = M / C; bias (M,) of x's dtype (zeros for none: the
    sums then stay in that dtype, float32 for float32).

    Parallel over the output planes. Each thread copies its plane into a zero-bordered buffer
    (`padded`: zeros, (pool threads, HP, WP), see depthwise_buffers), so no tap needs a bounds
    test. With stride 1 the taps then run over the whole flattened plane at once ("wide" rows of
    WP columns, the ones past the output width discarded, in `wide`: (pool threads, OH*WP)). With
    stride 2 both ways and no dilation the plane goes into its four quarters by row and column
    parity instead (`halves` is then (pool threads, 4, HQ, WQ), zero-bordered, and `wide` (pool
    threads, OH*WQ)) and the taps run over the whole flattened quarters at once. With column
    stride 2 otherwise (and no column dilation) the plane goes into its even and odd columns
    (`halves`: zero-bordered, (pool threads, 2, HP, ceil(WP/2))), so every tap reads a unit-stride
    row; other strides read strided rows. Either way the inner loop is long and branch-free."""
    n_, c_, h, wd = x.shape
    m_, oh, ow = out.shape[1], out.shape[2], out.shape[3]
    hp, wp = padded.shape[1], padded.shape[2]
    mult = m_ // c_
    three = w.shape[2] == 3 and w.shape[3] == 3
    five = w.shape[2] == 5 and w.shape[3] == 5
    for plane in prange(n_ * m_):
        n, m = plane // m_, plane % m_
        c = m // mult
        tid = numba.get_thread_id()
        pad, rows = padded[tid], wide[tid]
        src, dst_plane, taps, b = x[n, c], out[n, m], w[m, 0], bias[m]
        if sh == 2 and sw == 2 and dh == 1 and dw == 1:  # the four quarters of the padded plane
            quarters = halves[tid]
            hq, wq = quarters.shape[1], quarters.shape[2]
            pairs = wd // 2
            for y in range(h):
                part, row = 2 * ((ph + y) % 2), (ph + y) // 2
                _deinterleave(src[y], quarters[part + pw % 2, row, pw // 2:],
                              quarters[part + (pw + 1) % 2, row, (pw + 1) // 2:], pairs)
                if wd % 2:
                    quarters[part + pw % 2, row, pw // 2 + pairs] = src[y, wd - 1]
            flat = quarters.reshape(4, hq * wq)
            span = (oh - 1) * wq + ow  # every output, in wide rows of wq; the last row ends at ow
            if three:
                _quarters_3x3(rows, flat[0], flat[1], flat[2], flat[3], taps, b, span, wq)
            elif five:
                _quarters_5x5(rows, flat[0], flat[1], flat[2], flat[3], taps, b, span, wq)
            else:
                _quarters_any(rows, flat, taps, b, span, wq)
            for y in range(oh):
                dst_row, src_row = dst_plane[y], rows[y * wq : y * wq + ow]
                for z in range(ow):
                    dst_row[z] = src_row[z]
            activate_row(dst_plane.reshape(oh * ow), code, consts)
            continue
        if sw == 2 and dw == 1:
            even, odd = halves[tid, 0], halves[tid, 1]
            # input column z is padded column pw + z: half (pw + z) % 2, index (pw + z) // 2
            to_even_z, to_odd_z = halves[tid, pw % 2], halves[tid, (pw + 1) % 2]
            base_even_z, base_odd_z, pairs = pw // 2, (pw + 1) // 2, wd // 2
            for y in range(h):
                _deinterleave(src[y], to_even_z[ph + y, base_even_z:], to_odd_z[ph + y, base_odd_z:], pairs)
                if wd % 2:
                    to_even_z[ph + y, base_even_z + pairs] = src[y, wd - 1]
            for y in range(oh):
                dst_row = dst_plane[y]
                if three:
                    _halves_3x3(dst_row, even, odd, taps, b, y * sh, dh, ow)
                elif five:
                    _halves_5x5(dst_row, even, odd, taps, b, y * sh, dh, ow)
                else:
                    _halves_any(dst_row, even, odd, taps, b, y * sh, dh, ow)
            activate_row(dst_plane.reshape(oh * ow), code, consts)
            continue
        for y in range(h):
            dst_row, src_row = pad[ph + y, pw : pw + wd], src[y]
            for z in range(wd):
                dst_row[z] = src_row[z]
        flat = pad.reshape(hp * wp)
        if sh == 1 and sw == 1 and (three or five):
            span = (oh - 1) * wp + ow  # every output, in wide rows; the last row ends at ow
            if three:
                _taps_3x3(rows, flat, taps, b, 0, span, 1, dh * wp, dw)
            else:
                _taps_5x5(rows, flat, taps, b, span, dh * wp, dw)
            for y in range(oh):
                dst_row, src_row = dst_plane[y], rows[y * wp : y * wp + ow]
                for z in range(ow):
                    dst_row[z] = src_row[z]
        elif sh == 1 and sw == 1:
            for y in range(oh):
                _row_any_unit(dst_plane[y], flat, taps, b, y * wp, ow, dh * wp, dw)
        else:
            for y in range(oh):
                dst_row = dst_plane[y]
                if three:
                    _taps_3x3(dst_row, flat, taps, b, y * sh * wp, ow, sw, dh * wp, dw)
                else:
                    _taps_any(dst_row, flat, taps, b, y * sh * wp, ow, sw, dh * wp, dw)
        activate_row(dst_plane.reshape(oh * ow), code, consts)  # the whole plane: one long vectorized loop


def depthwise_buffers(x_shape: tuple[int, ...], out_shape: tuple[int, ...], geometry: tuple[int, ...],
                      pool: int, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Zeroed (padded, wide, halves) work buffers for depthwise_2d, one plane per pool thread,
    from the per-thread scratch (runtime.kernels.spatial.scratch): for stride 2 both ways
    without dilation, the four quarters (as halves) and wide rows of their width; for column
    stride 2 without column dilation otherwise the two halves (padded and wide one element);
    padded and wide otherwise (halves one element per pool thread)."""
    kh, kw, sh, sw, dh, dw, ph, pw = geometry
    h, wd = x_shape[2:]
    oh, ow = out_shape[2:]
    hp = max(ph + h, (oh - 1) * sh + (kh - 1) * dh + 1)
    wp = max(pw + wd, (ow - 1) * sw + (kw - 1) * dw + 1)
    if sh == 2 and sw == 2 and dh == 1 and dw == 1:
        hq, wq = (hp + 1) // 2 + 1, (wp + 1) // 2 + 1
        quarters = scratch("numba.dw.quarters", (pool, 4, hq, wq), dtype)
        quarters.fill(0)
        unused = scratch("numba.dw.unused", (pool, 1, 1), dtype)
        return unused, scratch("numba.dw.wide", (pool, oh * wq), dtype), quarters
    if sw == 2 and dw == 1:
        halves = scratch("numba.dw.halves", (pool, 2, hp, (wp + 1) // 2 + 1), dtype)
        halves.fill(0)
        unused = scratch("numba.dw.unused", (pool, 1, 1), dtype)
        return unused, unused.reshape(pool, 1), halves
    padded = scratch("numba.dw.padded", (pool, hp, wp), dtype)
    padded.fill(0)
    return padded, scratch("numba.dw.wide", (pool, oh * wp), dtype), scratch("numba.dw.unused4", (pool, 2, 1, 1), dtype)


@njit(parallel=True, cache=True, nogil=True)
def depthwise_channels_last(x, w_last, bias, out, sh, sw, dh, dw, ph, pw, code, consts, xt, ot,
                            x_last, out_last):  # pragma: no cover
    """As depthwise_2d for multiplier 1 (M == C), computed channels-last. `w_last` (KH, KW, C)
    holds the weights tap-major. x is (N, C, H, W), with `xt` (N, HP, WP, C) a work buffer of
    any contents that gets it transposed and zero-bordered here; or (N, H, W, C) when `x_last`
    (a channels-last region's tensor), read in place (xt unused). out is (N, C, OH, OW) with
    `ot` (N, OH, OW, C) a work buffer, or, when `out_last`, out is (N, OH, OW, C) and `ot` is
    out."""
    n_, c_ = x.shape[0], (x.shape[3] if x_last else x.shape[1])
    oh, ow = ot.shape[1], ot.shape[2]
    if x_last:  # read x where it lies: no bordered copy (a whole extra pass over the input)
        _channels_last_from_x(x, w_last, bias, ot, sh, sw, dh, dw, ph, pw, code, consts)
    else:
        _channels_last_from_nchw(x, w_last, bias, ot, sh, sw, dh, dw, ph, pw, code, consts, xt)
    if out_last:
        return
    for task in prange(n_ * oh):  # NHWC -> NCHW
        n, y = task // oh, task % oh
        for z in range(ow):
            src = ot[n, y, z]
            for c in range(c_):
                out[n, c, y, z] = src[c]


@njit(inline="always")
def _nine_taps(acc, r0, r1, r2, x0, dw, w_last, bias):  # pragma: no cover - compiled
    """acc[c] = bias[c] + the 3x3 window's nine taps, for one output pixel of every channel:
    rows r0, r1, r2 (W, C) at columns x0, x0 + dw, x0 + 2*dw; one store per nine multiply-adds."""
    x1, x2 = x0 + dw, x0 + 2 * dw
    a0, a1, a2, b0, b1, b2 = r0[x0], r0[x1], r0[x2], r1[x0], r1[x1], r1[x2]
    c0, c1, c2 = r2[x0], r2[x1], r2[x2]
    w00, w01, w02, w10, w11 = w_last[0, 0], w_last[0, 1], w_last[0, 2], w_last[1, 0], w_last[1, 1]
    w12, w20, w21, w22 = w_last[1, 2], w_last[2, 0], w_last[2, 1], w_last[2, 2]
    for c in range(acc.shape[0]):
        acc[c] = (bias[c] + w00[c] * a0[c] + w01[c] * a1[c] + w02[c] * a2[c]
                  + w10[c] * b0[c] + w11[c] * b1[c] + w12[c] * b2[c]
                  + w20[c] * c0[c] + w21[c] * c1[c] + w22[c] * c2[c])


@njit(inline="always")
def _channels_last_from_nchw(x, w_last, bias, ot, sh, sw, dh, dw, ph, pw, code, consts, xt):  # pragma: no cover
    """depthwise_channels_last's work from an NCHW x: into the zero-bordered NHWC buffer xt,
    then every output pixel's channels from it."""
    n_, c_, h, wd = x.shape
    oh, ow = ot.shape[1], ot.shape[2]
    kh, kw = w_last.shape[0], w_last.shape[1]
    hp, wp = xt.shape[1], xt.shape[2]
    for task in prange(n_ * hp):  # into the zero-bordered NHWC buffer (measured faster than channel-blocked)
        n, row = task // hp, task % hp
        y = row - ph
        dst_row = xt[n, row]
        if y < 0 or y >= h:
            for z in range(wp):
                for c in range(c_):
                    dst_row[z, c] = 0.0
            continue
        for z in range(wp):
            dst = dst_row[z]
            sx = z - pw
            if sx < 0 or sx >= wd:
                for c in range(c_):
                    dst[c] = 0.0
            else:
                for c in range(c_):
                    dst[c] = x[n, c, y, sx]
    three = kh == 3 and kw == 3
    for task in prange(n_ * oh):
        n, y = task // oh, task % oh
        for z in range(ow):
            acc = ot[n, y, z]
            if three:  # all nine taps in one pass over the channels: one store per nine multiply-adds
                _nine_taps(acc, xt[n, y * sh], xt[n, y * sh + dh], xt[n, y * sh + 2 * dh], z * sw, dw, w_last, bias)
            else:
                for c in range(c_):
                    acc[c] = bias[c]
                for i in range(kh):
                    for j in range(kw):
                        src, taps = xt[n, y * sh + i * dh, z * sw + j * dw], w_last[i, j]
                        for c in range(c_):
                            acc[c] += taps[c] * src[c]
            activate_row(acc, code, consts)


@njit(inline="always")
def _channels_last_from_x(x, w_last, bias, ot, sh, sw, dh, dw, ph, pw, code, consts):  # pragma: no cover
    """depthwise_channels_last's work from a channels-last x (N, H, W, C) read in place: output
    pixels whose window lies inside x read its rows directly; those at the border take every
    tap with the ones outside as zeros (0 * w, so an infinite weight gives NaN there as the
    padded computation does)."""
    n_, h, wd, c_ = x.shape
    oh, ow = ot.shape[1], ot.shape[2]
    kh, kw = w_last.shape[0], w_last.shape[1]
    three = kh == 3 and kw == 3
    zero = np.float32(0.0)
    for task in prange(n_ * oh):
        n, y = task // oh, task % oh
        iy = y * sh - ph
        rows_inside = iy >= 0 and iy + (kh - 1) * dh < h
        for z in range(ow):
            acc = ot[n, y, z]
            ix = z * sw - pw
            if three and rows_inside and ix >= 0 and ix + 2 * dw < wd:
                _nine_taps(acc, x[n, iy], x[n, iy + dh], x[n, iy + 2 * dh], ix, dw, w_last, bias)
            else:
                for c in range(c_):
                    acc[c] = bias[c]
                for i in range(kh):
                    sy = iy + i * dh
                    for j in range(kw):
                        sx, taps = ix + j * dw, w_last[i, j]
                        if 0 <= sy < h and 0 <= sx < wd:
                            src = x[n, sy, sx]
                            for c in range(c_):
                                acc[c] += taps[c] * src[c]
                        else:
                            for c in range(c_):
                                acc[c] += taps[c] * zero
            activate_row(acc, code, consts)


def channels_last_buffers(x_shape: tuple[int, ...], out_shape: tuple[int, ...], geometry: tuple[int, ...],
                          dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """Work buffers for depthwise_channels_last from the per-thread scratch: the bordered input
    (N, HP, WP, C) and the output (N, OH, OW, C), contents undefined."""
    kh, kw, sh, sw, dh, dw, ph, pw = geometry
    n, c, h, wd = x_shape
    oh, ow = out_shape[2:]
    hp = max(ph + h, (oh - 1) * sh + (kh - 1) * dh + 1)
    wp = max(pw + wd, (ow - 1) * sw + (kw - 1) * dw + 1)
    return scratch("numba.dw.last_in", (n, hp, wp, c), dtype), scratch("numba.dw.last_out", (n, oh, ow, c), dtype)

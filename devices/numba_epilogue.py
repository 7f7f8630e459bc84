"""What the numba backend's producing kernels do to their result before it leaves them: add the
bias, add a residual, apply a fused activation — in one compiled pass over the output instead of
one numpy pass each (ORT's FusedConv and XNNPACK's output clamps play the same role).

Activations travel into compiled code as a code and an array of its constants in the tensor's
dtype (`activation_code`), so float32 stays float32 (a float64 literal would widen every value):

    code, consts, _ = activation_code(("Clip", (0.0, 6.0)), np.float32)   # CLIP, [0, 6, 0, 1, 6, 0.5]
    epilogue(out3d, bias, residual3d, code, consts)   # out[n, m, :] = act(out + bias[m] + res)

NaN stays NaN through every activation, as numpy's np.maximum / np.clip keep it.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

from edgerun.runtime.errors import ModelError
from edgerun.runtime.kernels.fused import Activation, apply_activation

NONE, CLIP, LEAKY_RELU, HARD_SIGMOID, HARD_SWISH, SWISH = range(6)
_CODES = {"Clip": CLIP, "LeakyRelu": LEAKY_RELU, "HardSigmoid": HARD_SIGMOID, "HardSwish": HARD_SWISH}
_F32 = np.float32
# Cephes expf (float32): range limits, ln 2 split in two for an exact range reduction, the polynomial
EXP_HI, EXP_LO = _F32(88.3762626647949), _F32(-87.3365447505531)
LOG2E, LN2_HI, LN2_LO = _F32(1.4426950408889634), _F32(0.693359375), _F32(-2.12194440e-4)
EXP_POLY = (_F32(1.9875691500e-4), _F32(1.3981999507e-3), _F32(8.3334519073e-3), _F32(4.1665795894e-2),
            _F32(1.6666665459e-1), _F32(5.0000001201e-1))
_ZERO, _HALF, _ONE, _NEG_INF = _F32(0.0), _F32(0.5), _F32(1.0), _F32(-np.inf)


@njit(inline="always")
def exp_parts(v):  # pragma: no cover - compiled
    """(n, e^r) with e^v = 2^n * e^r for float32 v, clamped to expf's finite range."""
    v = EXP_HI if v > EXP_HI else v
    v = EXP_LO if v < EXP_LO else v
    u = v * LOG2E
    n = np.int32(u + _HALF if u >= _ZERO else u - _HALF)  # round to nearest
    t = np.float32(n)
    r = v - t * LN2_HI - t * LN2_LO
    p0, p1, p2, p3, p4, p5 = EXP_POLY
    p = ((((p0 * r + p1) * r + p2) * r + p3) * r + p4) * r + p5
    return n, p * r * r + r + _ONE


@intrinsic
def _f32_bits(typingctx, x):  # pragma: no cover - compiled
    """The bits of a float32 as an int32 (a bitcast, no conversion)."""
    if x != types.float32:
        return None
    return types.int32(types.float32), lambda context, builder, sig, args: builder.bitcast(args[0], ir.IntType(32))


@intrinsic
def _bits_f32(typingctx, x):  # pragma: no cover - compiled
    """The float32 whose bits are the int32 x."""
    if x != types.int32:
        return None
    return types.float32(types.int32), lambda context, builder, sig, args: builder.bitcast(args[0], ir.FloatType())


@intrinsic
def quotient(typingctx, a, b):  # pragma: no cover - compiled
    """a / b for floats, IEEE division (inf or NaN for a zero b) without numba's zero-division
    test: that test raises from inside the loop, which keeps LLVM from vectorizing it."""
    if not (isinstance(a, types.Float) and isinstance(b, types.Float)):
        return None
    result = a if a.bitwidth >= b.bitwidth else b

    def codegen(context, builder, sig, args):
        return builder.fdiv(context.cast(builder, args[0], a, result), context.cast(builder, args[1], b, result))

    return result(a, b), codegen


@njit(inline="always")
def exp_f32(v):  # pragma: no cover - compiled
    """e^v for float32 v as Cephes' expf computes it (exp_parts, then n added to the exponent
    bits of e^r), in straight-line code that vectorizes inside a loop."""
    n, e = exp_parts(np.float32(v))
    return _bits_f32(np.int32(_f32_bits(e) + (n << 23)))


def activation_code(activation: Activation | None, dtype: np.dtype) -> tuple[int, np.ndarray, Activation | None]:
    """(code, constants, leftover) of a fused activation (runtime.kernels.fused). The constants,
    in `dtype`: the activation's two parameters (Relu: 0 and +inf, as a Clip), then 0, 1, 6, 0.5.
    Sigmoid and Tanh come back as NONE with the activation as `leftover`, for the caller to apply
    with numpy (`apply_activation`): numpy's exp and tanh are vectorized, compiled scalar calls
    are not."""
    name, params = activation if activation is not None else ("", ())
    if name == "Swish" and dtype == np.float32:  # float32 only: exp_parts is expf's algorithm
        return SWISH, np.array([0.0, 0.0, 0.0, 1.0, 6.0, 0.5], dtype), None
    if name in ("Sigmoid", "Tanh", "PRelu", "Swish"):  # (PRelu, float64 Swish: see finish_activation)
        return NONE, np.zeros(6, dtype), activation
    if name == "Relu":  # as Clip(0, inf): a compare-and-blend; this CPU's max instruction was 5x slower
        name, params = "Clip", (0.0, np.inf)
    padded = (*params, 0.0, 0.0)[:2]
    return _CODES.get(name, NONE), np.array([*padded, 0.0, 1.0, 6.0, 0.5], dtype), None


@njit(inline="always")
def activate_row(row, code, k):  # pragma: no cover - compiled
    """`row` through activation `code` with constants `k` (see activation_code), in place. The
    code is tested once per row and each branch is a loop of unconditional stores of selects,
    which vectorizes; the comparisons are written so that NaN passes through."""
    zero, one = k[2], k[3]
    if code == CLIP:
        lo, hi = k[0], k[1]
        for z in range(row.shape[0]):
            v = row[z]
            row[z] = lo if v < lo else (hi if v > hi else v)
    elif code == LEAKY_RELU:
        alpha = k[0]
        for z in range(row.shape[0]):
            v = row[z]
            row[z] = v * alpha if v < zero else v
    elif code == HARD_SIGMOID:
        alpha, beta = k[0], k[1]
        for z in range(row.shape[0]):
            t = row[z] * alpha + beta
            row[z] = zero if t < zero else (one if t > one else t)
    elif code == SWISH:  # v * sigmoid(v) = v / (1 + e^-v), e^-v as sigmoid_f32 computes it: one vectorized pass
        for z in range(row.shape[0]):
            v = row[z]
            row[z] = quotient(v, one + exp_f32(-v)) if v > _NEG_INF else v * zero  # (-inf * sigmoid(-inf): NaN)
    elif code == HARD_SWISH:
        sixth, half = one / k[4], k[5]
        for z in range(row.shape[0]):
            v = row[z]
            t = v * sixth + half
            row[z] = v * (zero if t < zero else (one if t > one else t))


@njit(parallel=True, cache=True, nogil=True)
def epilogue(out, bias, residual, code, consts):  # pragma: no cover - compiled
    """out (N, M, P) = act(out + bias[m] + residual), in place; bias of size 0 means none,
    residual of size 0 means none (else the shape of out). Parallel over the (n, m) planes."""
    n_, m_, p_ = out.shape
    has_bias, has_residual = bias.size > 0, residual.size > 0
    for plane in prange(n_ * m_):
        n, m = plane // m_, plane % m_
        row = out[n, m]
        if has_bias:
            b = bias[m]
            for z in range(p_):
                row[z] += b
        if has_residual:
            add = residual[n, m]
            for z in range(p_):
                row[z] += add[z]
        activate_row(row, code, consts)


@njit(parallel=True, cache=True, nogil=True)
def prelu_planes(x, slope, out):  # pragma: no cover - compiled
    """out[n, c, :] = x where x >= 0, else x * slope[c] (NaN kept); parallel over the planes."""
    n_, c_, p_ = x.shape
    for plane in prange(n_ * c_):
        n, c = plane // c_, plane % c_
        src, dst, a = x[n, c], out[n, c], slope[c]
        for k in range(p_):
            v = src[k]
            dst[k] = v * a if v < 0 else v


def finish_activation(out: np.ndarray, leftover: Activation | None) -> None:
    """Apply what activation_code left over to `out` (N, C, ...) in place: a fused PRelu in one
    compiled pass over the channel planes; Sigmoid, Tanh and float64 Swish with numpy
    (apply_activation). (float32 Swish never gets here: activate_row computes it.)"""
    if leftover is None:
        return
    if leftover[0] != "PRelu" or out.ndim < 2 or not out.flags.c_contiguous:
        apply_activation(out, leftover)
        return
    channels = out.shape[1]
    shape = (out.shape[0], channels, out.size // max(1, out.shape[0] * channels))
    prelu_planes(out.reshape(shape), _channel_slopes(out, leftover[1]), out.reshape(shape))


def _channel_slopes(out: np.ndarray, params: tuple[float, ...]) -> np.ndarray:
    """A fused PRelu's slopes, one per channel of `out` (axis 1), contiguous in its dtype;
    made once per (slopes, channels, dtype), not on every run."""
    return _slopes_for(params, out.shape[1], out.dtype)


@lru_cache(maxsize=4096)
def _slopes_for(params: tuple[float, ...], channels: int, dtype: np.dtype) -> np.ndarray:
    if len(params) not in (1, channels):
        raise ModelError(f"fused PRelu has {len(params)} slopes for {channels} output channels")
    slopes = np.ascontiguousarray(np.broadcast_to(np.asarray(params, dtype), (channels,)))
    slopes.flags.writeable = False
    return slopes


@njit(parallel=True, cache=True, nogil=True)
def epilogue_prelu(out, bias, residual, slope):  # pragma: no cover - compiled
    """As epilogue with a PRelu of one slope per plane channel: out[n, m, :] = prelu(out + bias[m]
    + residual, slope[m]), in place, one pass."""
    n_, m_, p_ = out.shape
    has_bias, has_residual = bias.size > 0, residual.size > 0
    for plane in prange(n_ * m_):
        n, m = plane // m_, plane % m_
        row = out[n, m]
        b = bias[m] if has_bias else row.dtype.type(0)
        a = slope[m]
        if has_residual:
            add = residual[n, m]
            for z in range(p_):
                v = row[z] + b + add[z]
                row[z] = v * a if v < 0 else v
        else:
            for z in range(p_):
                v = row[z] + b
                row[z] = v * a if v < 0 else v


def finish_epilogue(out: np.ndarray, bias: np.ndarray, residual: np.ndarray, code: int, consts: np.ndarray,
                    leftover: Activation | None) -> None:
    """epilogue(out, bias, residual, code, consts), then the leftover activation; a leftover
    PRelu joins the same compiled pass (epilogue_prelu). `out` is (N, M, P)."""
    if leftover is not None and leftover[0] == "PRelu" and out.ndim == 3:
        epilogue_prelu(out, bias, residual, _channel_slopes(out, leftover[1]))
        return
    epilogue(out, bias, residual, code, consts)
    finish_activation(out, leftover)

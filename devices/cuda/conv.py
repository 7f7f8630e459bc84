"""2-D convolutions on the GPU: the cuda backend's Conv and edgerun's FusedConv (NCHW).

Three paths, picked in the claim from the reference prepare's ConvParams (its pads already
resolve auto_pad / SAME_UPPER / SAME_LOWER):

    depthwise   one input channel per group (C/group == 1, any channel multiplier): a direct
                kernel, one thread per output element
    pointwise   1x1, stride 1, no padding: per image and group, W (M/G, C/G) @ X (C/G, H*W), the
                GEMM straight on the activation
    im2col      the rest: an im2col kernel fills a scratch buffer (made once, in the claim) with
                (C*kh*kw, OH*OW) columns per image, then per image and group W @ columns

W (M, C/G, kh, kw) is already the (G, M/G, C/G*kh*kw) matrix the GEMM reads, so it is used as
the program uploaded it. An Epilogue (devices.cuda.gemm) then adds the bias and FusedConv's
residual Z and applies the fused activation, in one pass over the output.
"""

from __future__ import annotations

import math
from typing import Any

from numba import cuda

from edgerun.devices.cuda.claims import LaunchContext, StepSpec, claims, launch_1d
from edgerun.devices.cuda.gemm import GemmPlan, epilogue_for, floats_only

COLUMN_BUDGET = 1 << 22  # elements of a claim's im2col scratch buffer; batches run in chunks that fit it


@cuda.jit
def _depthwise_kernel(x, w, out, mult, sh, sw, dh, dw, pt, pl, zero):  # pragma: no cover - device
    """out[n, m, oh, ow] = sum over taps of x[n, m // mult, ih, iw] * w[m, 0, kh, kw], with
    ih = oh * sh - pt + kh * dh (iw likewise), nothing added where the tap is in the padding."""
    channels, oh_, ow_ = out.shape[1], out.shape[2], out.shape[3]
    h, w_in, kh_, kw_ = x.shape[2], x.shape[3], w.shape[2], w.shape[3]
    i = cuda.grid(1)
    step = cuda.gridsize(1)
    while i < out.size:
        ow = i % ow_
        oh = (i // ow_) % oh_
        m = (i // (ow_ * oh_)) % channels
        n = i // (ow_ * oh_ * channels)
        c = m // mult
        acc = zero
        for kh in range(kh_):
            ih = oh * sh - pt + kh * dh
            if 0 <= ih < h:
                for kw in range(kw_):
                    iw = ow * sw - pl + kw * dw
                    if 0 <= iw < w_in:
                        acc += x[n, c, ih, iw] * w[m, 0, kh, kw]
        out[n, m, oh, ow] = acc
        i += step


@cuda.jit
def _im2col_kernel(x, cols, start, count, ow_, kh_, kw_, sh, sw, dh, dw, pt, pl):  # pragma: no cover - device
    """cols[b, c * kh_ * kw_ + kh * kw_ + kw, oh * ow_ + ow] = x[start + b, c, ih, iw] for the
    `count` images from `start`, with ih = oh * sh - pt + kh * dh (iw likewise), 0 in the padding."""
    rows, positions = cols.shape[1], cols.shape[2]
    h, w_in, taps = x.shape[2], x.shape[3], kh_ * kw_
    total = count * rows * positions
    i = cuda.grid(1)
    step = cuda.gridsize(1)
    while i < total:
        p = i % positions
        r = (i // positions) % rows
        b = i // (positions * rows)
        c, k = r // taps, r % taps
        ih = (p // ow_) * sh - pt + (k // kw_) * dh
        iw = (p % ow_) * sw - pl + (k % kw_) * dw
        if 0 <= ih < h and 0 <= iw < w_in:
            cols[b, r, p] = x[start + b, c, ih, iw]
        else:
            cols[b, r, p] = 0
        i += step


def _geometry(p: Any) -> tuple[int, ...]:
    """(sh, sw, dh, dw, pad_top, pad_left) of a 2-D ConvParams' window."""
    window = p.window
    return (*window.strides, *window.dilations, *window.pads_begin)


def _depthwise(step: StepSpec, p: Any) -> Any:
    """The conv of one input channel per group: direct, one thread per output element."""
    x, w, out = step.inputs[0], step.inputs[1], step.outputs[0]
    mult, geometry, zero = w.shape[0] // x.shape[1], _geometry(p), out.dtype.type(0)

    def conv(ins: list, y: Any, ctx: LaunchContext) -> None:
        launch_1d(_depthwise_kernel, y.size, ctx, ins[0], ins[1], y, mult, *geometry, zero)

    return conv


def _pointwise(step: StepSpec, p: Any) -> Any:
    """The 1x1 stride-1 unpadded conv: per image and group W (M/G, C/G) @ X (C/G, H*W)."""
    (n, c), m, g = step.inputs[0].shape[:2], step.inputs[1].shape[0], p.group
    plan = GemmPlan([j % g for j in range(n * g)], range(n * g), step.outputs[0].dtype)
    w3, x3, y3 = (g, m // g, c // g), (n * g, c // g, p.out_size), (n * g, m // g, p.out_size)

    def conv(ins: list, y: Any, ctx: LaunchContext) -> None:
        plan.run(ins[1].reshape(w3), ins[0].reshape(x3), y.reshape(y3), ctx)

    return conv


def _im2col(step: StepSpec, p: Any) -> Any:
    """The general conv: im2col into scratch made here, then per image and group W @ columns,
    `chunk` images at a time so the scratch stays within COLUMN_BUDGET."""
    x, w, out = step.inputs[0], step.inputs[1], step.outputs[0]
    (n, c), m, g, taps = x.shape[:2], w.shape[0], p.group, math.prod(p.window.kernel)
    rows, positions = c * taps, p.out_size
    chunk = max(1, min(n, COLUMN_BUDGET // (rows * positions)))
    cols = cuda.device_array((chunk, rows, positions), out.dtype)
    plan = GemmPlan([j % g for j in range(chunk * g)], range(chunk * g), out.dtype)
    w3 = (g, m // g, rows // g)
    ow_, (kh_, kw_), geometry = out.shape[3], p.window.kernel, _geometry(p)

    def conv(ins: list, y: Any, ctx: LaunchContext) -> None:
        for start in range(0, n, chunk):
            count = min(chunk, n - start)
            launch_1d(_im2col_kernel, count * rows * positions, ctx, ins[0], cols, start, count, ow_, kh_, kw_,
                      *geometry)
            plan.run(ins[1].reshape(w3), cols[:count].reshape(count * g, rows // g, positions),
                     y[start:start + count].reshape(count * g, m // g, positions), ctx)

    return conv


def _conv_run(step: StepSpec, residual: bool) -> Any:
    """The DeviceRun of a 2-D float Conv / FusedConv step, None when the device does not run it."""
    p = getattr(step.kernel, "params", None)
    if p is None or len(p.window.kernel) != 2 or not floats_only(step):
        return None
    bias = step.inputs[2] if len(step.inputs) > 2 else None
    z = step.inputs[3] if residual else None
    epilogue = epilogue_for(step, p.activation, first_shape=None if bias is None else (bias.shape[0], 1, 1),
                            second_shape=None if z is None else z.shape)
    if epilogue is None:
        return None
    cg = step.inputs[1].shape[1]
    conv = _depthwise(step, p) if cg == 1 else _pointwise(step, p) if p.pointwise else _im2col(step, p)

    def run(ins: list, outs: list, ctx: LaunchContext) -> None:
        conv(ins, outs[0], ctx)
        epilogue.run(outs[0], ins[2] if bias is not None else None, ins[3] if z is not None else None, ctx)

    return run


@claims("Conv")
def conv_claim(step: StepSpec) -> Any:
    """Conv over NCHW float32 / float64 with 2 spatial axes: any strides, dilations, pads (auto_pad
    resolved by the reference prepare), groups, batch, bias and fused activation. Refuses 1-D and
    3-D convolutions, dtypes other than float32 / float64 (float16 included) and empty tensors."""
    return _conv_run(step, residual=False)


@claims("FusedConv", domain="edgerun")
def fused_conv_claim(step: StepSpec) -> Any:
    """edgerun's FusedConv, act(Conv(X, W, B) + Z): what Conv covers, with the residual Z (any
    shape that broadcasts to the output) added before the activation. Refuses what Conv refuses."""
    return _conv_run(step, residual=True)

"""The cuda backend's normalizations and reductions along axes: Softmax, LogSoftmax,
BatchNormalization (inference), LayerNormalization, InstanceNormalization, and ReduceSum,
ReduceMean, ReduceMax and ReduceMin over constant axes.

Every reduction here sees its input as (outer, length, inner) and reduces each line of
`length` values spaced `inner` apart. A long contiguous line (inner 1, length >= LONG_LINE)
gets a thread block of LINE_THREADS lanes: each lane folds every LINE_THREADS-th value (reads
coalesced) and the lanes' partials meet in a shared-memory tree. Other lines get one thread
each, so neighbouring threads read neighbouring addresses when inner > 1. Kernels take
(..., blocked, lines) last and are launched by `launch_lines`, which picks the form. Sums and
statistics are in the input dtype; maxima propagate NaN as np.max does. devices.cuda.spatial's
global pools use `reduce_lines` too.
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda

from edgerun.devices.cuda.claims import FLOATS, MAX_BLOCKS, SIMULATED, DeviceRun, StepSpec, claims, launch_1d

SUM, MEAN, MAX, MIN = 0, 1, 2, 3  # what reduce_lines computes (and _fold: SUM, MAX, MIN)
# lanes of a block-per-line launch (a power of two: the tree halves it); few under the simulator
LINE_THREADS = 8 if SIMULATED else 128
LONG_LINE = 128  # contiguous lines at least this long get a block each
INPUT = "input"  # a parameter the kernel reads from the step's input itself


def lines_of(shape: tuple[int, ...], first: int, stop: int) -> tuple[int, int, int]:
    """(outer, length, inner): `shape` seen as the axes before `first`, the axes first..stop-1
    (the reduced ones) and the axes from `stop` on."""
    return math.prod(shape[:first]), math.prod(shape[first:stop]), math.prod(shape[stop:])


def launch_lines(kernel, lines: int, length: int, inner: int, ctx, *args) -> None:  # noqa: ANN001
    """Launch `kernel(*args, blocked, lines)` over `lines` lines of `length` values spaced
    `inner` apart: a block per line (blocked) when they are long and contiguous, else a thread
    per line; grid-stride either way."""
    if lines == 0:
        return
    if inner == 1 and length >= LONG_LINE:
        kernel[min(lines, MAX_BLOCKS), LINE_THREADS, ctx.stream](*args, True, lines)
    else:
        launch_1d(kernel, lines, ctx, *args, False, lines)


@cuda.jit(device=True)
def _my_lines(blocked):
    """(first line, lane, lanes, line step) of this thread: a block per line or a thread per line."""
    if blocked:
        return cuda.blockIdx.x, cuda.threadIdx.x, cuda.blockDim.x, cuda.gridDim.x
    return cuda.grid(1), 0, 1, cuda.gridsize(1)


@cuda.jit(device=True)
def _line_start(i, length, inner):
    """Index of line i's first value in a (outer, length, inner) array."""
    o = i // inner
    return o * length * inner + (i - o * inner)


@cuda.jit(device=True)
def _fold(a, b, op):
    """a + b (SUM), or the larger (MAX) / smaller (MIN) of a and b, NaN when either is NaN."""
    if op == SUM:
        return a + b
    if op == MAX:
        return a if (a > b or a != a) else b
    return a if (a < b or a != a) else b


@cuda.jit(device=True)
def _combine(buf, value, op, lanes):
    """The fold of `value` over the block's `lanes` lanes (shared scratch `buf`), given to every
    lane; `value` itself for a thread per line. Every lane of the block must call it."""
    if lanes == 1:
        return value
    t = cuda.threadIdx.x
    buf[t] = value
    cuda.syncthreads()
    half = lanes // 2
    while half > 0:
        if t < half:
            buf[t] = _fold(buf[t], buf[t + half], op)
        cuda.syncthreads()
        half //= 2
    value = buf[0]
    cuda.syncthreads()  # every lane has read buf[0] before the next combine writes it
    return value


@cuda.jit(device=True)
def _line_reduce(x, start, length, inner, lane, lanes, buf, op):
    """op (SUM, MAX, MIN) of a line: 0, -inf or +inf when it is empty."""
    if op == MAX:
        acc = x.dtype.type(-math.inf)
    elif op == MIN:
        acc = x.dtype.type(math.inf)
    else:
        acc = x.dtype.type(0)
    for j in range(lane, length, lanes):
        acc = _fold(acc, x[start + j * inner], op)
    return _combine(buf, acc, op, lanes)


@cuda.jit(device=True)
def _line_moments(x, start, length, lane, lanes, buf):
    """(mean, biased variance) of a contiguous line, two passes."""
    count = x.dtype.type(length)
    mean = _line_reduce(x, start, length, 1, lane, lanes, buf, SUM) / count
    var = x.dtype.type(0)
    for j in range(lane, length, lanes):
        d = x[start + j] - mean
        var += d * d
    return mean, _combine(buf, var, SUM, lanes) / count


# ----------------------------------------------------------------------------- softmax
@cuda.jit
def _softmax_lines(x, out, length, inner, log, blocked, lines):
    """out = softmax (or, with `log`, log-softmax) of each line, max-subtracted."""
    buf = cuda.shared.array(LINE_THREADS, dtype=x.dtype)
    line, lane, lanes, step = _my_lines(blocked)
    while line < lines:
        start = _line_start(line, length, inner)
        m = _line_reduce(x, start, length, inner, lane, lanes, buf, MAX)
        total = x.dtype.type(0)
        for j in range(lane, length, lanes):
            k = start + j * inner
            e = math.exp(x[k] - m)
            total += e
            if not log:
                out[k] = e
        total = _combine(buf, total, SUM, lanes)
        if log:
            shift = math.log(total)
            for j in range(lane, length, lanes):
                k = start + j * inner
                out[k] = (x[k] - m) - shift
        else:
            for j in range(lane, length, lanes):
                k = start + j * inner
                out[k] = out[k] / total
        line += step


def _softmax_run(step: StepSpec, log: bool) -> DeviceRun | None:
    x = step.inputs[0]
    if x.dtype not in FLOATS or step.outputs[0].dtype != x.dtype:
        return None
    p = step.kernel.params  # SoftmaxParams
    if p.flatten:
        outer, length, inner = p.rows[0], p.rows[1], 1
    else:
        outer, length, inner = lines_of(x.shape, p.axis, p.axis + 1)
    n = x.size

    def run(ins, outs, ctx):
        launch_lines(_softmax_lines, outer * inner, length, inner, ctx, ins[0].reshape(n), outs[0].reshape(n),
                     length, inner, log)

    return run


@claims("Softmax")
def softmax(step: StepSpec) -> DeviceRun | None:
    """Float Softmax along any axis (opset 13+) or over the flattened tail (before 13)."""
    return _softmax_run(step, log=False)


@claims("LogSoftmax")
def log_softmax(step: StepSpec) -> DeviceRun | None:
    """Float LogSoftmax, the axis semantics of Softmax."""
    return _softmax_run(step, log=True)


# ----------------------------------------------------------------------------- reductions
@cuda.jit
def reduce_lines(x, out, length, inner, op, blocked, lines):
    """out[line] = sum / mean / max / min (op) of each line."""
    buf = cuda.shared.array(LINE_THREADS, dtype=x.dtype)
    line, lane, lanes, step = _my_lines(blocked)
    while line < lines:
        start = _line_start(line, length, inner)
        value = _line_reduce(x, start, length, inner, lane, lanes, buf, SUM if op == MEAN else op)
        if lane == 0:
            out[line] = value / x.dtype.type(length) if op == MEAN else value
        line += step


def reduced_lines(shape: tuple[int, ...], axes: tuple[int, ...]) -> tuple[int, int, int] | None:
    """(outer, length, inner) when the reduced `axes` of `shape` are one run of adjacent axes
    once axes of size 1 are left out; None otherwise."""
    kept = [(d, a in axes) for a, d in enumerate(shape) if d != 1]
    flags = [r for _, r in kept]
    if True not in flags:
        return math.prod(shape), 1, 1
    first = flags.index(True)
    stop = len(flags) - flags[::-1].index(True)
    if not all(flags[first:stop]):
        return None
    return lines_of(tuple(d for d, _ in kept), first, stop)


def _reduce_run(step: StepSpec, op: int) -> DeviceRun | None:
    x = step.inputs[0]
    if x.dtype not in FLOATS or step.outputs[0].dtype != x.dtype or x.size == 0:
        return None
    found = reduced_lines(x.shape, step.kernel.axes)
    if found is None:
        return None
    _, length, inner = found
    n, m = x.size, step.outputs[0].size

    def run(ins, outs, ctx):
        launch_lines(reduce_lines, m, length, inner, ctx, ins[0].reshape(n), outs[0].reshape(m), length, inner, op)

    return run


@claims("ReduceSum")
def reduce_sum(step: StepSpec) -> DeviceRun | None:
    """Float ReduceSum over axes that are one run of adjacent axes (size-1 axes aside); keepdims
    either way, noop_with_empty_axes included. Refuses other axis sets and empty inputs."""
    return _reduce_run(step, SUM)


@claims("ReduceMean")
def reduce_mean(step: StepSpec) -> DeviceRun | None:
    """Float ReduceMean; the axes ReduceSum covers."""
    return _reduce_run(step, MEAN)


@claims("ReduceMax")
def reduce_max(step: StepSpec) -> DeviceRun | None:
    """Float ReduceMax (NaN propagates); the axes ReduceSum covers."""
    return _reduce_run(step, MAX)


@claims("ReduceMin")
def reduce_min(step: StepSpec) -> DeviceRun | None:
    """Float ReduceMin (NaN propagates); the axes ReduceSum covers."""
    return _reduce_run(step, MIN)


# ----------------------------------------------------------------------------- batch norm
@cuda.jit
def _scale_shift(x, mul, add, inner, out):
    """out = x * mul[c] + add[c], c = (i // inner) % len(mul)."""
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    p = mul.size
    while i < x.size:
        c = (i // inner) % p
        out[i] = x[i] * mul[c] + add[c]
        i += stride


@claims("BatchNormalization")
def batch_normalization(step: StepSpec) -> DeviceRun | None:
    """Float inference BatchNormalization with constant scale, B, mean and var, folded into
    Y = X * mul + add per channel (the reference's coefficients; spatial=0's per-position
    parameters too). Refuses training_mode=1 and parameters known only at run time."""
    x, kernel = step.inputs[0], step.kernel
    coeffs = getattr(kernel, "coeffs", None)
    if x.dtype not in FLOATS or getattr(kernel, "training", False) or coeffs is None or x.size == 0:
        return None
    mul, add = (cuda.to_device(np.ascontiguousarray(c, x.dtype).reshape(-1)) for c in coeffs)
    inner = math.prod(x.shape[1:]) // mul.size
    n = x.size

    def run(ins, outs, ctx):
        launch_1d(_scale_shift, n, ctx, ins[0].reshape(n), mul, add, inner, outs[0].reshape(n))

    return run


# ----------------------------------------------------------------------------- layer / instance norm
@cuda.jit
def _layer_norm_rows(x, scale, bias, eps, y, mean_out, inv_out, blocked, rows):
    """Each row of x (rows, d): y = (x - mean) / sqrt(var + eps) * scale + bias, scale and bias
    (d,); mean_out[row] and inv_out[row] = 1 / sqrt(var + eps)."""
    buf = cuda.shared.array(LINE_THREADS, dtype=x.dtype)
    r, lane, lanes, step = _my_lines(blocked)
    d = scale.size
    while r < rows:
        start = r * d
        mean, var = _line_moments(x, start, d, lane, lanes, buf)
        inv = x.dtype.type(1) / math.sqrt(var + eps)
        for j in range(lane, d, lanes):
            y[start + j] = (x[start + j] - mean) * inv * scale[j] + bias[j]
        if lane == 0:
            mean_out[r] = mean
            inv_out[r] = inv
        r += step


def _tail_shaped(shape: tuple[int, ...], tail: tuple[int, ...]) -> bool:
    """Whether an array of `shape` holds exactly one value per position of `tail` in row-major
    order (leading 1s aside)."""
    lead = len(shape) - len(tail)
    if lead > 0:
        return all(d == 1 for d in shape[:lead]) and tuple(shape[lead:]) == tail
    return (1,) * -lead + tuple(shape) == tail


def _trailing_param(array: np.ndarray | None, constant: bool, tail: tuple[int, ...], dtype: np.dtype):
    """How a Scale/B input broadcast over X's trailing axes `tail` reaches the kernel: INPUT
    (it is tail-shaped already: the step's own input), a device array (a constant broadcast to
    `tail`, or zeros for an omitted B), or None (refused)."""
    if array is None:
        return cuda.to_device(np.zeros(math.prod(tail), dtype))
    if array.dtype != dtype:
        return None
    if _tail_shaped(array.shape, tail):
        return INPUT
    if constant and len(array.shape) <= len(tail):
        return cuda.to_device(np.ascontiguousarray(np.broadcast_to(array, tail)).reshape(-1))
    return None


@claims("LayerNormalization")
def layer_normalization(step: StepSpec) -> DeviceRun | None:
    """Float LayerNormalization over the axes from `axis` on, with its optional Mean and
    InvStdDev outputs; Scale and B shaped as X's trailing axes, or constants broadcasting to
    them. Refuses a run-time Scale/B that broadcasts. Statistics in the input dtype."""
    x, kernel = step.inputs[0], step.kernel
    if x.dtype not in FLOATS or x.size == 0:
        return None
    tail = tuple(x.shape[kernel.axes[0]:])
    params = [_trailing_param(step.inputs[i] if len(step.inputs) > i else None,
                              len(step.constant) > i and step.constant[i], tail, x.dtype) for i in (1, 2)]
    if any(p is None for p in params):
        return None
    d = math.prod(tail)
    rows, n = x.size // d, x.size
    spare = cuda.device_array(rows, x.dtype)  # where Mean / InvStdDev go when the node has no such output
    eps = x.dtype.type(kernel.epsilon)

    def run(ins, outs, ctx):
        scale, bias = (ins[i].reshape(d) if p is INPUT else p for i, p in zip((1, 2), params, strict=True))
        mean, inv = (outs[i].reshape(rows) if len(outs) > i else spare for i in (1, 2))
        launch_lines(_layer_norm_rows, rows, d, 1, ctx, ins[0].reshape(n), scale, bias, eps, outs[0].reshape(n),
                     mean, inv)

    return run


@cuda.jit
def _instance_norm_planes(x, scale, bias, eps, plane, y, blocked, planes):
    """Each (n, c) plane of x: y = (x - mean) / sqrt(var + eps) * scale[c] + bias[c]."""
    buf = cuda.shared.array(LINE_THREADS, dtype=x.dtype)
    r, lane, lanes, step = _my_lines(blocked)
    channels = scale.size
    while r < planes:
        start = r * plane
        c = r % channels
        mean, var = _line_moments(x, start, plane, lane, lanes, buf)
        mul = scale[c] / math.sqrt(var + eps)
        for j in range(lane, plane, lanes):
            y[start + j] = (x[start + j] - mean) * mul + bias[c]
        r += step


@claims("InstanceNormalization")
def instance_normalization(step: StepSpec) -> DeviceRun | None:
    """Float InstanceNormalization, statistics per (sample, channel) plane; scale and B (C values)
    may be run-time inputs."""
    x, kernel = step.inputs[0], step.kernel
    if x.dtype not in FLOATS or any(a.dtype != x.dtype for a in step.inputs[1:3]) or x.size == 0:
        return None
    channels, n = x.shape[1], x.size
    plane = math.prod(x.shape[2:])
    eps = x.dtype.type(kernel.epsilon)

    def run(ins, outs, ctx):
        launch_lines(_instance_norm_planes, n // plane, plane, 1, ctx, ins[0].reshape(n), ins[1].reshape(channels),
                     ins[2].reshape(channels), eps, plane, outs[0].reshape(n))

    return run

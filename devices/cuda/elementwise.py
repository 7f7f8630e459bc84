"""The cuda backend's elementwise ops: one-input float math and activations (Relu, Sigmoid,
Tanh, Exp, Log, Sqrt, Neg, Abs, Reciprocal, Erf, Clip, LeakyRelu, Elu, HardSigmoid,
HardSwish, Gelu, Softplus), Identity and Cast, PRelu, and the broadcasting arithmetic (Add,
Sub, Mul, Div, Pow, Max, Min, Sum, Mean).

A one-input op is a device function `fn(x, k)` run by one flat grid-stride kernel (made by
`_unary_kernel`); `k` holds its constants in x's dtype, (a, b, 0, 1, 1/2) with a and b the
op's own (alpha, beta, ...), so a float32 op computes in float32 (a bare literal such as 1.0
is a float64 to numba, and would make the op compute in float64). A two-input op is a device
function `fn(a, b)` with four kernels (`_BinaryKernels`): equal shapes (one flat loop), a
one-element left or right operand, and the general numpy broadcast, in which each output
index is mapped to both inputs' offsets through strides worked out in the claim (zero along
broadcast dimensions, neighbouring dimensions merged; see layout.collapse_dims).

NaN and infinities come out as from the reference kernels: Relu, Clip, HardSigmoid and
PRelu keep NaN, Max and Min let NaN win, x / 0 is inf. Under numba's CUDA simulator the math
module is Python's, which raises where CUDA returns inf or NaN (exp overflow, log or sqrt of a
negative): the device functions handle those inputs first, with the same results on both.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from math import prod
from typing import Any

import numpy as np
from numba import cuda

from edgerun.devices.cuda.claims import FLOATS, DeviceRun, LaunchContext, StepSpec, claims, launch_1d
from edgerun.devices.cuda.layout import as_bits, broadcast_strides, collapse_dims, movable

SIGNED = (np.dtype(np.int32), np.dtype(np.int64))
NUMERIC = FLOATS + SIGNED
# exp(x) is inf beyond these (log of the largest float64; a little past float32's 88.72)
_EXP_OVERFLOW = {np.dtype(np.float32): 89.0, np.dtype(np.float64): 709.782712893384}


# ---------------------------------------------------------------------------- one-input math
@cuda.jit(device=True)
def _relu(x, k):  # pragma: no cover - runs on the device
    return k[2] if x < 0 else x


@cuda.jit(device=True)
def _sigmoid(x, k):  # pragma: no cover - runs on the device
    if x >= 0:  # exp of a non-positive number: never overflows
        return k[3] / (k[3] + math.exp(-x))
    e = math.exp(x)  # NaN lands here and stays NaN
    return e / (k[3] + e)


@cuda.jit(device=True)
def _tanh(x, k):  # pragma: no cover - runs on the device
    return math.tanh(x)


@cuda.jit(device=True)
def _exp(x, k):  # pragma: no cover - runs on the device; k[0] = inf, k[1] = where exp overflows
    return k[0] if x > k[1] else math.exp(x)


@cuda.jit(device=True)
def _log(x, k):  # pragma: no cover - runs on the device; k[0] = nan, k[1] = -inf
    if x < 0:
        return k[0]
    if x == 0:
        return k[1]
    return math.log(x)


@cuda.jit(device=True)
def _sqrt(x, k):  # pragma: no cover - runs on the device; k[0] = nan
    return k[0] if x < 0 else math.sqrt(x)


@cuda.jit(device=True)
def _neg(x, k):  # pragma: no cover - runs on the device
    return -x


@cuda.jit(device=True)
def _abs(x, k):  # pragma: no cover - runs on the device
    return abs(x)


@cuda.jit(device=True)
def _reciprocal(x, k):  # pragma: no cover - runs on the device
    return k[3] / x


@cuda.jit(device=True)
def _erf(x, k):  # pragma: no cover - runs on the device
    return math.erf(x)


@cuda.jit(device=True)
def _square(x, k):  # pragma: no cover - runs on the device
    return x * x


@cuda.jit(device=True)
def _leaky_relu(x, k):  # pragma: no cover - runs on the device; k[0] = alpha
    return x if x >= 0 else x * k[0]


@cuda.jit(device=True)
def _elu(x, k):  # pragma: no cover - runs on the device; k[0] = alpha
    return x if x >= 0 else k[0] * math.expm1(x)


@cuda.jit(device=True)
def _clamp01(y, k):  # pragma: no cover - runs on the device
    """y clamped to [0, 1], NaN kept."""
    if y < 0:
        return k[2]
    if y > 1:
        return k[3]
    return y


@cuda.jit(device=True)
def _hard_sigmoid(x, k):  # pragma: no cover - runs on the device; k[0] = alpha, k[1] = beta
    return _clamp01(k[0] * x + k[1], k)


@cuda.jit(device=True)
def _hard_swish(x, k):  # pragma: no cover - runs on the device; k[0] = 1/6
    return x * _clamp01(x * k[0] + k[4], k)


@cuda.jit(device=True)
def _gelu(x, k):  # pragma: no cover - runs on the device; k[0] = 1/sqrt(2)
    return k[4] * x * (k[3] + math.erf(x * k[0]))


@cuda.jit(device=True)
def _gelu_tanh(x, k):  # pragma: no cover - runs on the device; k[0] = sqrt(2/pi), k[1] = 0.044715
    return k[4] * x * (k[3] + math.tanh(k[0] * (x + k[1] * x * x * x)))


@cuda.jit(device=True)
def _softplus(x, k):  # pragma: no cover - runs on the device
    """log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|)), which never overflows."""
    return (x if x > 0 else k[2]) + math.log1p(math.exp(-abs(x)))


def _unary_kernel(fn: Any) -> Any:
    """A flat grid-stride kernel out[i] = fn(x[i], k)."""

    @cuda.jit
    def kernel(x, out, k):  # pragma: no cover - runs on the device
        i = cuda.grid(1)
        step = cuda.gridsize(1)
        while i < out.shape[0]:
            out[i] = fn(x[i], k)
            i += step

    return kernel


_RELU = _unary_kernel(_relu)
_SIGMOID = _unary_kernel(_sigmoid)
_TANH = _unary_kernel(_tanh)
_EXP = _unary_kernel(_exp)
_LOG = _unary_kernel(_log)
_SQRT = _unary_kernel(_sqrt)
_NEG = _unary_kernel(_neg)
_ABS = _unary_kernel(_abs)
_RECIPROCAL = _unary_kernel(_reciprocal)
_ERF = _unary_kernel(_erf)
_SQUARE = _unary_kernel(_square)
_LEAKY_RELU = _unary_kernel(_leaky_relu)
_ELU = _unary_kernel(_elu)
_HARD_SIGMOID = _unary_kernel(_hard_sigmoid)
_HARD_SWISH = _unary_kernel(_hard_swish)
_GELU = _unary_kernel(_gelu)
_GELU_TANH = _unary_kernel(_gelu_tanh)
_SOFTPLUS = _unary_kernel(_softplus)


@cuda.jit
def _clip(x, out, lo, hi):  # pragma: no cover - runs on the device
    """out = min(max(x, lo[0]), hi[0]) as numpy's maximum / minimum: a NaN anywhere wins."""
    low = lo[0]
    high = hi[0]
    i = cuda.grid(1)
    step = cuda.gridsize(1)
    while i < out.shape[0]:
        y = x[i]
        if y < low or low != low:
            y = low
        if y > high or high != high:
            y = high
        out[i] = y
        i += step


@cuda.jit
def _convert(x, out):  # pragma: no cover - runs on the device
    """out[i] = x[i] converted to out's dtype (float -> int truncates toward zero)."""
    i = cuda.grid(1)
    step = cuda.gridsize(1)
    while i < out.shape[0]:
        out[i] = x[i]
        i += step


def _unary(step: StepSpec, kernel: Any, a: float = 0.0, b: float = 0.0, dtypes: Sequence[np.dtype] = FLOATS
           ) -> DeviceRun | None:
    """The run of a one-input op whose input dtype is in `dtypes`; None otherwise."""
    x, out = step.inputs[0], step.outputs[0]
    if x is None or x.dtype not in dtypes or out.dtype != x.dtype:
        return None
    n = out.size
    k = tuple(x.dtype.type(v) for v in (a, b, 0, 1, 0.5))

    def run(ins, outs, ctx):
        launch_1d(kernel, n, ctx, ins[0].reshape(n), outs[0].reshape(n), k)

    return run


@claims("Relu")
def relu(step: StepSpec) -> DeviceRun | None:
    """float32/64 and int32/64 (Relu-14); NaN stays NaN."""
    return _unary(step, _RELU, dtypes=NUMERIC)


@claims("Sigmoid")
def sigmoid(step: StepSpec) -> DeviceRun | None:
    """float32/64."""
    return _unary(step, _SIGMOID)


@claims("Tanh")
def tanh(step: StepSpec) -> DeviceRun | None:
    """float32/64."""
    return _unary(step, _TANH)


@claims("Exp")
def exp(step: StepSpec) -> DeviceRun | None:
    """float32/64; overflow gives inf."""
    return _unary(step, _EXP, math.inf, _EXP_OVERFLOW.get(step.inputs[0].dtype, 0.0))


@claims("Log")
def log(step: StepSpec) -> DeviceRun | None:
    """float32/64; log(0) = -inf, log(x < 0) = NaN."""
    return _unary(step, _LOG, math.nan, -math.inf)


@claims("Sqrt")
def sqrt(step: StepSpec) -> DeviceRun | None:
    """float32/64; sqrt(x < 0) = NaN."""
    return _unary(step, _SQRT, math.nan)


@claims("Neg")
def neg(step: StepSpec) -> DeviceRun | None:
    """float32/64 and int32/64 (the minimum wraps to itself)."""
    return _unary(step, _NEG, dtypes=NUMERIC)


@claims("Abs")
def abs_(step: StepSpec) -> DeviceRun | None:
    """float32/64 and int32/64 (the minimum wraps to itself); refuses unsigned and narrow ints."""
    return _unary(step, _ABS, dtypes=NUMERIC)


@claims("Reciprocal")
def reciprocal(step: StepSpec) -> DeviceRun | None:
    """float32/64; 1 / 0 = inf."""
    return _unary(step, _RECIPROCAL)


@claims("Erf")
def erf(step: StepSpec) -> DeviceRun | None:
    """float32/64; refuses the integer inputs Erf also takes."""
    return _unary(step, _ERF)


@claims("LeakyRelu")
def leaky_relu(step: StepSpec) -> DeviceRun | None:
    """float32/64, the reference's alpha."""
    return _unary(step, _LEAKY_RELU, step.kernel.alpha)


@claims("Elu")
def elu(step: StepSpec) -> DeviceRun | None:
    """float32/64, the reference's alpha."""
    return _unary(step, _ELU, step.kernel.alpha)


@claims("HardSigmoid")
def hard_sigmoid(step: StepSpec) -> DeviceRun | None:
    """float32/64, the reference's alpha and beta; NaN stays NaN."""
    return _unary(step, _HARD_SIGMOID, step.kernel.alpha, step.kernel.beta)


@claims("HardSwish")
def hard_swish(step: StepSpec) -> DeviceRun | None:
    """float32/64."""
    return _unary(step, _HARD_SWISH, 1 / 6)


@claims("Gelu")
def gelu(step: StepSpec) -> DeviceRun | None:
    """float32/64, approximate "none" (erf) and "tanh"."""
    if step.kernel.tanh:
        return _unary(step, _GELU_TANH, math.sqrt(2 / math.pi), 0.044715)
    return _unary(step, _GELU, 1 / math.sqrt(2))


@claims("Softplus")
def softplus(step: StepSpec) -> DeviceRun | None:
    """float32/64."""
    return _unary(step, _SOFTPLUS)


@claims("Clip")
def clip(step: StepSpec) -> DeviceRun | None:
    """float32/64 with bounds from attributes (Clip-1/6), constant inputs or inputs known only
    at run time (Clip-11+; omitted: unbounded). min > max gives max everywhere, as the
    reference; NaN in X or a bound gives NaN. Refuses integer X."""
    x, k = step.inputs[0], step.kernel
    if x is None or x.dtype not in FLOATS:
        return None
    if k.version < 11:
        fixed = [None if v is None else np.array([v]) for v in k.bounds]
        runtime = [False, False]
    else:
        given = [step.inputs[i] if i < len(step.inputs) else None for i in (1, 2)]
        fixed = [g if g is None or step.constant[i] else None for i, g in zip((1, 2), given, strict=True)]
        runtime = [g is not None and not step.constant[i] for i, g in zip((1, 2), given, strict=True)]
    bounds = [None if live else cuda.to_device(np.array([inf if v is None else v.reshape(-1)[0]]).astype(x.dtype))
              for v, live, inf in zip(fixed, runtime, (-math.inf, math.inf), strict=True)]
    n = x.size

    def run(ins, outs, ctx):
        lo, hi = (b if b is not None else ins[i].reshape(1) for i, b in zip((1, 2), bounds, strict=True))
        launch_1d(_clip, n, ctx, ins[0].reshape(n), outs[0].reshape(n), lo, hi)

    return run


@claims("Identity")
def identity(step: StepSpec) -> DeviceRun | None:
    """A tensor of any dtype of 1-8 bytes, copied as bits."""
    x = step.inputs[0]
    if x is None or not movable(x.dtype):
        return None
    n = x.size

    def run(ins, outs, ctx):
        launch_1d(_convert, n, ctx, as_bits(ins[0]), as_bits(outs[0]))

    return run


@claims("Cast")
def cast(step: StepSpec) -> DeviceRun | None:
    """Between float32, float64, int32 and int64 (float -> int truncates toward zero; NaN,
    inf and out-of-range values, undefined in ONNX, differ from the host's), and a Cast to the
    dtype X has, as a copy. Refuses every other type."""
    x, out = step.inputs[0], step.outputs[0]
    if x is None or x.dtype not in NUMERIC or out.dtype not in NUMERIC:
        return None
    n = x.size

    def run(ins, outs, ctx):
        launch_1d(_convert, n, ctx, ins[0].reshape(n), outs[0].reshape(n))

    return run


# ------------------------------------------------------------------------ two-input arithmetic
@cuda.jit(device=True)
def _add(a, b):  # pragma: no cover - runs on the device
    return a + b


@cuda.jit(device=True)
def _sub(a, b):  # pragma: no cover - runs on the device
    return a - b


@cuda.jit(device=True)
def _mul(a, b):  # pragma: no cover - runs on the device
    return a * b


@cuda.jit(device=True)
def _div(a, b):  # pragma: no cover - runs on the device
    return a / b


@cuda.jit(device=True)
def _pow(a, b):  # pragma: no cover - runs on the device
    return a**b


@cuda.jit(device=True)
def _max(a, b):  # pragma: no cover - runs on the device
    return a if a != a or a > b else b  # NaN on either side wins


@cuda.jit(device=True)
def _min(a, b):  # pragma: no cover - runs on the device
    return a if a != a or a < b else b


@cuda.jit(device=True)
def _prelu(x, slope):  # pragma: no cover - runs on the device
    return x if x >= 0 else x * slope


@dataclass(frozen=True)
class _BinaryKernels:
    """The four kernels of a two-input op: `same` shapes, one-element `scalar_a` / `scalar_b`,
    and `broadcast` (output index -> input offsets through collapsed strides)."""

    same: Any
    scalar_a: Any
    scalar_b: Any
    broadcast: Any


def _binary_kernels(fn: Any) -> _BinaryKernels:
    """The kernels computing out = fn(a, b), a and b broadcast to out's shape."""

    @cuda.jit
    def same(a, b, out):  # pragma: no cover - runs on the device
        i = cuda.grid(1)
        step = cuda.gridsize(1)
        while i < out.shape[0]:
            out[i] = fn(a[i], b[i])
            i += step

    @cuda.jit
    def scalar_a(a, b, out):  # pragma: no cover - runs on the device
        s = a[0]
        i = cuda.grid(1)
        step = cuda.gridsize(1)
        while i < out.shape[0]:
            out[i] = fn(s, b[i])
            i += step

    @cuda.jit
    def scalar_b(a, b, out):  # pragma: no cover - runs on the device
        s = b[0]
        i = cuda.grid(1)
        step = cuda.gridsize(1)
        while i < out.shape[0]:
            out[i] = fn(a[i], s)
            i += step

    @cuda.jit
    def broadcast(a, b, out, shape, stride_a, stride_b):  # pragma: no cover - runs on the device
        i = cuda.grid(1)
        step = cuda.gridsize(1)
        rank = shape.shape[0]
        while i < out.shape[0]:
            rem = i
            ia = 0
            ib = 0
            for d in range(rank - 1, -1, -1):
                dim = shape[d]
                c = rem % dim
                rem //= dim
                ia += c * stride_a[d]
                ib += c * stride_b[d]
            out[i] = fn(a[ia], b[ib])
            i += step

    return _BinaryKernels(same, scalar_a, scalar_b, broadcast)


_ADD = _binary_kernels(_add)
_SUB = _binary_kernels(_sub)
_MUL = _binary_kernels(_mul)
_DIV = _binary_kernels(_div)
_POW = _binary_kernels(_pow)
_MAX = _binary_kernels(_max)
_MIN = _binary_kernels(_min)
_PRELU = _binary_kernels(_prelu)

Launch = Callable[[Any, Any, Any, LaunchContext], None]


def binary_launch(kernels: _BinaryKernels, a_shape: Sequence[int], b_shape: Sequence[int],
                  out_shape: Sequence[int]) -> Launch:
    """launch(a, b, out, ctx) computing out (of `out_shape`) from device arrays of
    `a_shape` and `b_shape` broadcast to it, by the cheapest of the kernels that fits; the
    strides of the general case go to the GPU here, once."""
    n, na, nb = prod(out_shape), prod(a_shape), prod(b_shape)
    if na == n and nb == n:
        kernel, extra = kernels.same, ()
    elif na == 1 and nb == n:
        kernel, extra = kernels.scalar_a, ()
    elif nb == 1 and na == n:
        kernel, extra = kernels.scalar_b, ()
    else:
        shape, strides = collapse_dims(out_shape, [broadcast_strides(a_shape, out_shape),
                                                   broadcast_strides(b_shape, out_shape)])
        kernel, extra = kernels.broadcast, tuple(cuda.to_device(np.asarray(v, np.int64)) for v in (shape, *strides))

    def launch(a, b, out, ctx):
        launch_1d(kernel, n, ctx, a.reshape(a.size), b.reshape(b.size), out.reshape(n), *extra)

    return launch


def _binary(step: StepSpec, kernels: _BinaryKernels, dtypes: Sequence[np.dtype] = NUMERIC) -> DeviceRun | None:
    """The run of a two-input op whose inputs both have a dtype in `dtypes` (the output's);
    the legacy broadcast (opset < 7, B aligned to A's `axis`) as the reference aligned it."""
    a, b = step.inputs[0], step.inputs[1]
    out = step.outputs[0]
    if a is None or b is None or not a.dtype == b.dtype == out.dtype or a.dtype not in dtypes:
        return None
    b_shape = getattr(step.kernel, "b_shape", None) or b.shape
    launch = binary_launch(kernels, a.shape, b_shape, out.shape)

    def run(ins, outs, ctx):
        launch(ins[0], ins[1], outs[0], ctx)

    return run


@claims("Add")
def add(step: StepSpec) -> DeviceRun | None:
    """float32/64 and int32/64 (wrapping), numpy broadcasting."""
    return _binary(step, _ADD)


@claims("Sub")
def sub(step: StepSpec) -> DeviceRun | None:
    """float32/64 and int32/64 (wrapping), numpy broadcasting."""
    return _binary(step, _SUB)


@claims("Mul")
def mul(step: StepSpec) -> DeviceRun | None:
    """float32/64 and int32/64 (wrapping), numpy broadcasting."""
    return _binary(step, _MUL)


@claims("Div")
def div(step: StepSpec) -> DeviceRun | None:
    """float32/64 (IEEE: x / 0 is inf or NaN), numpy broadcasting; refuses integers (their
    truncating division stays on the host)."""
    return _binary(step, _DIV, FLOATS)


@claims("Pow")
def pow_(step: StepSpec) -> DeviceRun | None:
    """float32/64 base and exponent of one dtype, numpy broadcasting; a constant exponent of
    2 is one multiply. Refuses integer bases and exponents of another dtype."""
    x, y = step.inputs[0], step.inputs[1]
    if (x is not None and y is not None and step.constant[1] and y.size == 1 and x.dtype in FLOATS
            and y.dtype == x.dtype and float(y.reshape(-1)[0]) == 2.0 and x.shape == step.outputs[0].shape):
        return _unary(step, _SQUARE)
    return _binary(step, _POW, FLOATS)


@claims("PRelu")
def prelu(step: StepSpec) -> DeviceRun | None:
    """float32/64, the slope broadcast to X as the reference shaped it (one per channel
    before opset 7); NaN stays NaN. Refuses integer X."""
    x, slope = step.inputs[0], step.inputs[1]
    if x is None or slope is None or x.dtype not in FLOATS or slope.dtype != x.dtype:
        return None
    launch = binary_launch(_PRELU, x.shape, step.kernel.slope_shape, x.shape)

    def run(ins, outs, ctx):
        launch(ins[0], ins[1], outs[0], ctx)

    return run


def _variadic(step: StepSpec, kernels: _BinaryKernels, dtypes: Sequence[np.dtype], mean: bool = False
              ) -> DeviceRun | None:
    """Max, Min, Sum, Mean of any number of inputs broadcast together: a copy of one input;
    else the first two into the output, then each next one into it in place."""
    out = step.outputs[0]
    if any(a is None for a in step.inputs) or out.dtype not in dtypes:
        return None
    shapes = [a.shape for a in step.inputs]
    if len(shapes) == 1:
        n = out.size

        def copy(ins, outs, ctx):
            launch_1d(_convert, n, ctx, ins[0].reshape(n), outs[0].reshape(n))

        return copy
    first = binary_launch(kernels, shapes[0], shapes[1], out.shape)
    rest = [binary_launch(kernels, out.shape, shape, out.shape) for shape in shapes[2:]]
    count = cuda.to_device(np.array([len(shapes)], out.dtype)) if mean else None
    scale = binary_launch(_DIV, out.shape, (), out.shape) if mean else None

    def run(ins, outs, ctx):
        first(ins[0], ins[1], outs[0], ctx)
        for launch, x in zip(rest, ins[2:], strict=True):
            launch(outs[0], x, outs[0], ctx)
        if scale is not None:
            scale(outs[0], count, outs[0], ctx)

    return run


@claims("Max")
def max_(step: StepSpec) -> DeviceRun | None:
    """Any number of float32/64 or int32/64 inputs, broadcast; NaN wins."""
    return _variadic(step, _MAX, NUMERIC)


@claims("Min")
def min_(step: StepSpec) -> DeviceRun | None:
    """Any number of float32/64 or int32/64 inputs, broadcast; NaN wins."""
    return _variadic(step, _MIN, NUMERIC)


@claims("Sum")
def sum_(step: StepSpec) -> DeviceRun | None:
    """Any number of float32/64 inputs, broadcast, added left to right as the reference."""
    return _variadic(step, _ADD, FLOATS)


@claims("Mean")
def mean(step: StepSpec) -> DeviceRun | None:
    """Any number of float32/64 inputs, broadcast: their sum divided by their count."""
    return _variadic(step, _ADD, FLOATS, mean=True)

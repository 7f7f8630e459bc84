"""Element-wise arithmetic, math, activations, comparisons, selection, casts, generators and
reductions (float32 and the integer / bool types these builtins take un-quantized).

Each converter maps a TFLite builtin onto ONNX-semantics nodes; where TFLite's kernels
differ from the ONNX op of the same name the converter composes TFLite's behaviour (LiteRT
is the oracle the tests compare against):

* fused activations on ADD / SUB / MUL / DIV clamp only, as LiteRT's kernels do (RELU,
  RELU6, RELU_N1_TO_1; TANH and SIGN_BIT leave the result as it is), for ints as well;
* MAXIMUM / MINIMUM on floats are `a > b ? a : b` (a NaN in the first operand loses, one
  in the second wins), not ONNX Max / Min (any NaN wins);
* FLOOR_DIV and FLOOR_MOD round toward -inf (Python's // and %), for ints and floats;
* ATAN2 has no ONNX op: it is composed from Atan(y / x) with std::atan2's quadrants,
  signed zeros and infinities;
* SELECT (v1) takes a rank-1 condition that picks whole rows along dimension 0;
* reductions take their axes as an int tensor (constant or computed; a scalar is one axis,
  negative axes count from the back, no axes reduce nothing; repeats count once in a
  constant, while computed axes that repeat one fail at run time as ONNX's do);
* ATAN2 broadcasts its operands (LiteRT wants equal shapes: a superset of what it runs).
"""

from __future__ import annotations

import math

import numpy as np

from edgerun.converters.tflite.context import OpContext
from edgerun.converters.tflite.registry import converts
from edgerun.runtime.graph import Value

# TFLite tensor type -> ONNX TensorProto element type (Cast's `to`).
ONNX_TYPES = {
    "FLOAT32": 1, "UINT8": 2, "INT8": 3, "UINT16": 4, "INT16": 5, "INT32": 6, "INT64": 7, "BOOL": 9,
    "FLOAT16": 10, "FLOAT64": 11, "UINT32": 12, "UINT64": 13,
}
# The bounds LiteRT's CalculateActivationRange clamps a fused activation to (None: unbounded).
def _dtype(ctx: OpContext, i: int = 0) -> np.dtype:
    """Input `i`'s element type (numpy)."""
    dtype = ctx.tensor(i).dtype
    if dtype is None or dtype == np.dtype(object):
        raise ctx.fail(f"input {i} has type {ctx.tensor(i).type}, which this converter does not take")
    return dtype


def _is_float(ctx: OpContext, i: int = 0) -> bool:
    return _dtype(ctx, i).kind == "f"


def _scalar(ctx: OpContext, name: str, value: float, dtype: np.dtype) -> Value:
    return ctx.const(name, np.asarray(value, dtype=dtype))


def _binary_inputs(ctx: OpContext) -> tuple[Value, Value]:
    ctx.need_inputs(2)
    if ctx.tensor(0).type != ctx.tensor(1).type:
        raise ctx.fail(f"input types differ: {ctx.tensor(0).type} and {ctx.tensor(1).type}")
    return ctx.input(0), ctx.input(1)


# --- binary arithmetic ------------------------------------------------------------------

_ARITHMETIC = {"ADD": "Add", "SUB": "Sub", "MUL": "Mul", "DIV": "Div"}


@converts("ADD", "SUB", "MUL", "DIV")
def arithmetic(ctx: OpContext) -> None:
    """a op b with broadcasting, then the fused activation's clamp. Integer DIV truncates
    toward zero (as LiteRT's int32 DIV)."""
    a, b = _binary_inputs(ctx)
    y = ctx.emit(_ARITHMETIC[ctx.op.opcode], [a, b])
    ctx.bind(0, ctx.activation(y, dtype=_dtype(ctx)))


@converts("MAXIMUM", "MINIMUM")
def maximum_minimum(ctx: OpContext) -> None:
    """Element-wise max / min with broadcasting; floats follow LiteRT's `a > b ? a : b`
    (`a < b ? a : b`), so NaN wins only as the second operand."""
    a, b = _binary_inputs(ctx)
    if not _is_float(ctx):
        ctx.bind(0, ctx.emit("Max" if ctx.op.opcode == "MAXIMUM" else "Min", [a, b]))
        return
    pick_a = ctx.emit("Greater" if ctx.op.opcode == "MAXIMUM" else "Less", [a, b])
    ctx.bind(0, ctx.emit("Where", [pick_a, a, b]))


@converts("SQUARED_DIFFERENCE")
def squared_difference(ctx: OpContext) -> None:
    """(a - b)**2 with broadcasting."""
    a, b = _binary_inputs(ctx)
    d = ctx.emit("Sub", [a, b])
    ctx.bind(0, ctx.emit("Mul", [d, d]))


@converts("POW")
def pow_(ctx: OpContext) -> None:
    """a ** b with broadcasting (int32: exact; LiteRT refuses negative int exponents at run time,
    edgerun gives the truncated 1 / a**-b)."""
    a, b = _binary_inputs(ctx)
    ctx.bind(0, ctx.emit("Pow", [a, b]))


@converts("FLOOR_DIV")
def floor_div(ctx: OpContext) -> None:
    """floor(a / b): floats as Floor(a / b); ints as (a - a mod b) / b, exact since the
    remainder (divisor's sign, ONNX Mod fmod=0) makes the division exact."""
    a, b = _binary_inputs(ctx)
    if _is_float(ctx):
        ctx.bind(0, ctx.emit("Floor", [ctx.emit("Div", [a, b])]))
        return
    remainder = ctx.emit("Mod", [a, b], fmod=0)
    ctx.bind(0, ctx.emit("Div", [ctx.emit("Sub", [a, remainder]), b]))


@converts("FLOOR_MOD")
def floor_mod(ctx: OpContext) -> None:
    """a mod b with the divisor's sign (Python's %), ints and floats: Mod with fmod=0."""
    a, b = _binary_inputs(ctx)
    ctx.bind(0, ctx.emit("Mod", [a, b], fmod=0))


def _sign_bit(ctx: OpContext, v: Value, dtype: np.dtype) -> Value:
    """True where `v`'s sign bit is set (-0.0 included): its bits read as a signed int are < 0."""
    as_int = "INT64" if dtype.itemsize == 8 else "INT32"
    bits = ctx.emit("BitCast", [v], to=ONNX_TYPES[as_int], version=26)
    return ctx.emit("Less", [bits, _scalar(ctx, "zero_bits", 0, np.dtype(as_int.lower()))])


@converts("ATAN2")
def atan2(ctx: OpContext) -> None:
    """atan2(y, x) in (-pi, pi] as std::atan2: Atan(y / x) moved into x's half plane, with
    x = 0 giving +-pi/2 (or +-0 / +-pi by the zeros' signs) and two infinities +-pi/4 or
    +-3pi/4 (they are replaced by their signs first)."""
    y, x = _binary_inputs(ctx)
    dtype = _dtype(ctx)
    both_inf = ctx.emit("And", [ctx.emit("IsInf", [y]), ctx.emit("IsInf", [x])])
    y = ctx.emit("Where", [both_inf, ctx.emit("Sign", [y]), y])
    x = ctx.emit("Where", [both_inf, ctx.emit("Sign", [x]), x])
    zero = _scalar(ctx, "zero", 0, dtype)
    pi_y = ctx.emit("Where", [_sign_bit(ctx, y, dtype), _scalar(ctx, "minus_pi", -math.pi, dtype),
                              _scalar(ctx, "pi", math.pi, dtype)])
    base = ctx.emit("Atan", [ctx.emit("Div", [y, x])])
    off_axis = ctx.emit("Where", [ctx.emit("Less", [x, zero]), ctx.emit("Add", [base, pi_y]), base])
    on_zero = ctx.emit("Where", [_sign_bit(ctx, x, dtype), pi_y, y])   # atan2(+-0, +-0)
    half_pi = ctx.emit("Mul", [ctx.emit("Sign", [y]), _scalar(ctx, "half_pi", math.pi / 2, dtype)])
    on_axis = ctx.emit("Where", [ctx.emit("Equal", [y, zero]), on_zero, half_pi])
    ctx.bind(0, ctx.emit("Where", [ctx.emit("Equal", [x, zero]), on_axis, off_axis]))


@converts("ADD_N")
def add_n(ctx: OpContext) -> None:
    """The sum of 1 or more tensors of one shape and type (Sum for floats, chained Add for ints)."""
    if ctx.num_inputs < 1:
        raise ctx.fail("expects at least 1 input, has 0")
    types = {ctx.tensor(i).type for i in range(ctx.num_inputs)}
    if len(types) > 1:
        raise ctx.fail(f"input types differ: {sorted(types)}")
    values = [ctx.input(i) for i in range(ctx.num_inputs)]
    if _is_float(ctx):
        ctx.bind(0, ctx.emit("Sum", values))
        return
    total = values[0]
    for v in values[1:]:
        total = ctx.emit("Add", [total, v])
    ctx.bind(0, total)


# --- one input --------------------------------------------------------------------------

_UNARY = {
    "ABS": "Abs", "NEG": "Neg", "EXP": "Exp", "LOG": "Log", "SQRT": "Sqrt", "SIN": "Sin", "COS": "Cos",
    "FLOOR": "Floor", "CEIL": "Ceil", "ROUND": "Round", "SIGN": "Sign", "LOGISTIC": "Sigmoid",
    "TANH": "Tanh", "RELU": "Relu", "HARD_SWISH": "HardSwish", "ELU": "Elu", "LOGICAL_NOT": "Not",
}


@converts("ABS", "NEG", "EXP", "LOG", "SQRT", "SIN", "COS", "FLOOR", "CEIL", "ROUND", "SIGN", "LOGISTIC",
          "TANH", "RELU", "HARD_SWISH", "ELU", "LOGICAL_NOT")
def unary(ctx: OpContext) -> None:
    """The ONNX op of the same meaning (ROUND: half to even; ELU: alpha 1; LOGISTIC: Sigmoid)."""
    ctx.need_inputs(1)
    ctx.bind(0, ctx.emit(_UNARY[ctx.op.opcode], [ctx.input(0)]))


@converts("RSQRT")
def rsqrt(ctx: OpContext) -> None:
    """1 / sqrt(x) (0 -> inf, -0 -> -inf, negative -> NaN)."""
    ctx.need_inputs(1)
    ctx.bind(0, ctx.emit("Reciprocal", [ctx.emit("Sqrt", [ctx.input(0)])]))


@converts("SQUARE")
def square(ctx: OpContext) -> None:
    """x * x."""
    ctx.need_inputs(1)
    x = ctx.input(0)
    ctx.bind(0, ctx.emit("Mul", [x, x]))


_CLIPS = {"RELU6": (0.0, 6.0), "RELU_N1_TO_1": (-1.0, 1.0), "RELU_0_TO_1": (0.0, 1.0)}


@converts("RELU6", "RELU_N1_TO_1", "RELU_0_TO_1")
def clipped_relu(ctx: OpContext) -> None:
    """Clip to [0, 6], [-1, 1] or [0, 1] (NaN stays NaN)."""
    ctx.need_inputs(1)
    dtype = _dtype(ctx)
    low, high = _CLIPS[ctx.op.opcode]
    ctx.bind(0, ctx.emit("Clip", [ctx.input(0), _scalar(ctx, "min", low, dtype), _scalar(ctx, "max", high, dtype)]))


@converts("LEAKY_RELU")
def leaky_relu(ctx: OpContext) -> None:
    """x > 0 ? x : alpha * x (option alpha)."""
    ctx.need_inputs(1)
    ctx.bind(0, ctx.emit("LeakyRelu", [ctx.input(0)], alpha=float(ctx.options["alpha"])))


@converts("GELU")
def gelu(ctx: OpContext) -> None:
    """x * Phi(x); option approximate selects the tanh form (ONNX Gelu approximate="tanh")."""
    ctx.need_inputs(1)
    ctx.bind(0, ctx.emit("Gelu", [ctx.input(0)], approximate="tanh" if ctx.options["approximate"] else "none"))


@converts("PRELU")
def prelu(ctx: OpContext) -> None:
    """x >= 0 ? x : alpha * x with alpha broadcast to x's shape (usually (C,) or (1, 1, C) for
    NHWC input; LiteRT, like ONNX PRelu, requires the result to have x's shape)."""
    ctx.need_inputs(2)
    x_shape, a_shape = ctx.tensor(0).signature, ctx.tensor(1).signature
    if len(a_shape) > len(x_shape) or any(a not in (1, d) and -1 not in (a, d)
                                          for a, d in zip(a_shape[::-1], x_shape[::-1], strict=False)):
        raise ctx.fail(f"alpha shape {list(a_shape)} does not broadcast to the input shape {list(x_shape)}")
    ctx.bind(0, ctx.emit("PRelu", [ctx.input(0), ctx.input(1)]))


# --- comparisons, logic and selection ---------------------------------------------------

_COMPARISONS = {"LESS": "Less", "LESS_EQUAL": "LessOrEqual", "GREATER": "Greater",
                "GREATER_EQUAL": "GreaterOrEqual", "EQUAL": "Equal", "LOGICAL_AND": "And", "LOGICAL_OR": "Or"}


@converts("LESS", "LESS_EQUAL", "GREATER", "GREATER_EQUAL", "EQUAL", "LOGICAL_AND", "LOGICAL_OR")
def comparison(ctx: OpContext) -> None:
    """Bool result of the comparison (or logical op) with broadcasting."""
    a, b = _binary_inputs(ctx)
    ctx.bind(0, ctx.emit(_COMPARISONS[ctx.op.opcode], [a, b]))


@converts("NOT_EQUAL")
def not_equal(ctx: OpContext) -> None:
    """Not(Equal(a, b)) (NaN != NaN is True)."""
    a, b = _binary_inputs(ctx)
    ctx.bind(0, ctx.emit("Not", [ctx.emit("Equal", [a, b])]))


@converts("SELECT", any_dtype=True)
def select(ctx: OpContext) -> None:
    """TFLite SELECT (v1): x and y of one shape; the condition has their shape, is a scalar,
    or is rank 1 with x's first dimension, choosing whole slices along dimension 0."""
    ctx.need_inputs(3)
    cond, x, y = (ctx.input(i) for i in range(3))
    c_shape, x_shape = ctx.tensor(0).signature, ctx.tensor(1).signature
    if len(c_shape) == 1 and len(x_shape) > 1:
        axes = ctx.const("axes", np.arange(1, len(x_shape), dtype=np.int64))
        cond = ctx.emit("Unsqueeze", [cond, axes])
    elif len(c_shape) not in (0, len(x_shape)):
        raise ctx.fail(f"condition shape {list(c_shape)} must be x's shape {list(x_shape)}, a scalar or "
                       "rank 1 with x's first dimension")
    ctx.bind(0, ctx.emit("Where", [cond, x, y]))


@converts("SELECT_V2", any_dtype=True)
def select_v2(ctx: OpContext) -> None:
    """x where condition else y, all three broadcast (ONNX Where)."""
    ctx.need_inputs(3)
    ctx.bind(0, ctx.emit("Where", [ctx.input(0), ctx.input(1), ctx.input(2)]))


# --- types and generators ---------------------------------------------------------------

def _onnx_type(ctx: OpContext, tflite_type: str, what: str) -> int:
    if tflite_type not in ONNX_TYPES:
        raise ctx.fail(f"{what} has type {tflite_type}, which edgerun cannot convert to")
    return ONNX_TYPES[tflite_type]


@converts("CAST", any_dtype=True)
def cast(ctx: OpContext) -> None:
    """The input converted to the output tensor's type (float -> int truncates, non-zero ->
    bool is True); quantization parameters are ignored, as LiteRT's CAST does."""
    ctx.need_inputs(1)
    _onnx_type(ctx, ctx.tensor(0).type, "the input")
    to = _onnx_type(ctx, ctx.output_tensor(0).type, "the output")
    ctx.bind(0, ctx.emit("Cast", [ctx.input(0)], to=to))


@converts("ZEROS_LIKE", any_dtype=True)
def zeros_like(ctx: OpContext) -> None:
    """Zeros of the input's shape and type."""
    ctx.need_inputs(1)
    zero = np.zeros(1, _dtype(ctx))
    ctx.bind(0, ctx.emit("ConstantOfShape", [ctx.emit("Shape", [ctx.input(0)])], value=zero))


@converts("FILL", any_dtype=True)
def fill(ctx: OpContext) -> None:
    """A tensor of shape `dims` (1-D int32 / int64) holding the scalar `value` everywhere."""
    ctx.need_inputs(2)
    dims, value = ctx.tensor(0), ctx.tensor(1)
    if len(dims.shape) != 1 or dims.type not in ("INT32", "INT64"):
        raise ctx.fail(f"dims must be a 1-D int32 or int64 tensor, got {dims.type} of shape {list(dims.shape)}")
    if len(value.shape) != 0:
        raise ctx.fail(f"value must be a scalar, got shape {list(value.shape)}")
    shape = ctx.emit("Cast", [ctx.input(0)], to=ONNX_TYPES["INT64"])
    ctx.bind(0, ctx.emit("Expand", [ctx.input(1), shape]))


@converts("RANGE")
def range_(ctx: OpContext) -> None:
    """start, start + delta, ... up to limit (exclusive): scalars of one type (ONNX Range)."""
    ctx.need_inputs(3)
    types = {ctx.tensor(i).type for i in range(3)}
    if len(types) > 1:
        raise ctx.fail(f"start, limit and delta types differ: {sorted(types)}")
    ctx.bind(0, ctx.emit("Range", [ctx.input(i) for i in range(3)]))


# --- reductions -------------------------------------------------------------------------

_REDUCTIONS = {"MEAN": "ReduceMean", "SUM": "ReduceSum", "REDUCE_MAX": "ReduceMax", "REDUCE_MIN": "ReduceMin",
               "REDUCE_PROD": "ReduceProd", "REDUCE_ANY": "ReduceMax", "REDUCE_ALL": "ReduceMin"}


def _axes(ctx: OpContext, rank: int) -> Value:
    """The axis input as ONNX's 1-D int64 axes: a constant is checked against `rank`,
    normalized and deduplicated; a run-time one is cast and flattened."""
    tensor = ctx.tensor(1)
    if tensor.type not in ("INT32", "INT64"):
        raise ctx.fail(f"the axis input must be int32 or int64, got {tensor.type}")
    if not ctx.is_constant(1):
        flat = ctx.emit("Reshape", [ctx.input(1), ctx.const("flat", np.array([-1], np.int64))])
        return ctx.emit("Cast", [flat], to=ONNX_TYPES["INT64"])
    axes = []
    for axis in ctx.constant(1).reshape(-1).tolist():
        if not -rank <= axis < rank:
            raise ctx.fail(f"axis {axis} is out of range for an input of rank {rank}")
        if axis % rank not in axes:
            axes.append(axis % rank)
    return ctx.const("axes", np.array(sorted(axes), np.int64))


@converts("MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN", "REDUCE_PROD", "REDUCE_ANY", "REDUCE_ALL")
def reduce(ctx: OpContext) -> None:
    """Reduce over the axis input (see _axes) with option keep_dims; REDUCE_ANY / REDUCE_ALL
    are bool max / min. No axes give the input unchanged. Integer MEAN truncates toward zero."""
    ctx.need_inputs(2)
    rank = len(ctx.tensor(0).shape)
    keep = int(bool(ctx.options.get("keep_dims", False)))
    axes = _axes(ctx, rank)
    ctx.bind(0, ctx.emit(_REDUCTIONS[ctx.op.opcode], [ctx.input(0), axes], keepdims=keep, noop_with_empty_axes=1))


@converts("ARG_MAX", "ARG_MIN", any_dtype=True)
def arg_max_min(ctx: OpContext) -> None:
    """Index of the first largest / smallest element along the axis input (a constant
    one-element int tensor, may be negative), the axis removed, as the output's int32 / int64."""
    ctx.need_inputs(2)
    rank = len(ctx.tensor(0).shape)
    axis_values = ctx.constant(1, "the axis input (ONNX ArgMax/ArgMin take the axis as an attribute)")
    if axis_values.size != 1:
        raise ctx.fail(f"the axis input must hold one axis, got shape {list(axis_values.shape)}")
    axis = int(axis_values.reshape(-1)[0])
    if not -rank <= axis < rank:
        raise ctx.fail(f"axis {axis} is out of range for an input of rank {rank}")
    out_type = ctx.output_tensor(0).type
    if out_type not in ("INT32", "INT64"):
        raise ctx.fail(f"the output must be int32 or int64, got {out_type}")
    x = ctx.input(0)
    if ctx.tensor(0).type == "BOOL":
        x = ctx.emit("Cast", [x], to=ONNX_TYPES["UINT8"])
    index = ctx.emit("ArgMax" if ctx.op.opcode == "ARG_MAX" else "ArgMin", [x], axis=axis % rank, keepdims=0)
    ctx.bind(0, index if out_type == "INT64" else ctx.emit("Cast", [index], to=ONNX_TYPES["INT32"]))


@converts("CUMSUM")
def cumsum(ctx: OpContext) -> None:
    """Running sum along the scalar axis input (constant or computed), options exclusive and
    reverse (ONNX CumSum)."""
    ctx.need_inputs(2)
    axis = ctx.tensor(1)
    if axis.type not in ("INT32", "INT64") or len(axis.shape) > 1 or math.prod(axis.shape) != 1:
        raise ctx.fail(f"the axis input must be one int32 or int64, got {axis.type} of shape {list(axis.shape)}")
    ctx.bind(0, ctx.emit("CumSum", [ctx.input(0), ctx.input(1)], exclusive=int(bool(ctx.options["exclusive"])),
                         reverse=int(bool(ctx.options["reverse"]))))

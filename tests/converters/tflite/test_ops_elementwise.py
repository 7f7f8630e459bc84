"""Element-wise, activation, comparison, selection, cast, generator and reduction builtins,
each compared with LiteRT (the oracle) on small generated models."""

from __future__ import annotations

import numpy as np
import pytest

import edgerun.converters.tflite.ops.elementwise  # noqa: F401
from edgerun import Interpreter
from edgerun.converters.tflite import from_tflite
from edgerun.runtime.errors import ConversionError
from tests.converters.tflite.builder import TFLiteBuilder, litert_run

TYPES = {"float32": "FLOAT32", "int32": "INT32", "int64": "INT64", "bool": "BOOL", "uint8": "UINT8",
         "int8": "INT8", "int16": "INT16", "float64": "FLOAT64"}
OPTIONS = {"ADD": "AddOptions", "SUB": "SubOptions", "MUL": "MulOptions", "DIV": "DivOptions"}
SPECIAL = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 2.5, -2.5, 0.5, 1.5, -1.0, 3.0, 1e-3], np.float32)


def build(opcode: str, arrays: list[np.ndarray], out_shape, out_type: str | None = None, *, const=(),
          options_type: str | None = None, **options) -> bytes:
    """A one-operator model: inputs x0, x1, ... (those in `const` are constants), output y."""
    b = TFLiteBuilder()
    ids = [b.constant(f"x{i}", a) if i in const else b.input(f"x{i}", a.shape, TYPES[a.dtype.name])
           for i, a in enumerate(arrays)]
    y = b.tensor("y", out_shape, out_type or TYPES[arrays[0].dtype.name])
    b.op(opcode, ids, [y], options_type, **options)
    b.output(y)
    return b.build()


def ours(data: bytes, arrays: list[np.ndarray], const=()) -> np.ndarray:
    feeds = {f"x{i}": a for i, a in enumerate(arrays) if i not in const}
    return Interpreter(from_tflite(data)).run(feeds)["y"]


def check(opcode: str, arrays: list[np.ndarray], out_shape=None, out_type: str | None = None, *, const=(),
          reference: bool = False, rtol: float = 1e-5, atol: float = 1e-6, options_type: str | None = None,
          **options) -> np.ndarray:
    """Convert, run on edgerun and LiteRT, assert equal dtype, shape and values; returns LiteRT's."""
    if out_shape is None:
        out_shape = np.broadcast_shapes(*(a.shape for a in arrays))
    data = build(opcode, arrays, out_shape, out_type, const=const, options_type=options_type, **options)
    want = litert_run(data, [a for i, a in enumerate(arrays) if i not in const], reference=reference)[0]
    got = ours(data, arrays, const)
    assert got.dtype == want.dtype, (got.dtype, want.dtype)
    assert got.shape == want.shape, (got.shape, want.shape)
    if want.dtype.kind == "f":
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, equal_nan=True)
    else:
        np.testing.assert_array_equal(got, want)
    return want


def rand(shape, dtype="float32", low=-5.0, high=5.0, seed=0, nonzero=False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if dtype == "bool":
        return rng.random(shape) < 0.5
    x = rng.uniform(low, high, shape) if dtype.startswith("float") else rng.integers(low, high, shape, endpoint=True)
    x = np.asarray(x).astype(dtype)
    if nonzero:
        x[x == 0] = 1
    return x


# --- binary arithmetic -----------------------------------------------------------------

@pytest.mark.parametrize("act", range(6))
@pytest.mark.parametrize("opcode", ["ADD", "SUB", "MUL", "DIV"])
@pytest.mark.parametrize("dtype", ["float32", "int32"])
def test_arithmetic_fused_activations(opcode, dtype, act):
    a = rand((2, 3, 4), dtype, -8, 8, seed=1)
    b = rand((3, 1), dtype, -3, 3, seed=2, nonzero=opcode == "DIV")
    check(opcode, [a, b], options_type=OPTIONS[opcode], fused_activation_function=act)


@pytest.mark.parametrize("shapes", [[(2, 3, 4), (4,)], [(1, 3, 1), (2, 1, 5)], [(), (2, 3)],
                                    [(2, 1, 1, 1, 3), (4, 1, 3)]])
@pytest.mark.parametrize("opcode", ["ADD", "SUB", "MUL", "DIV"])
def test_arithmetic_broadcasting(opcode, shapes):
    a, b = rand(shapes[0], seed=3), rand(shapes[1], seed=4, low=0.5)
    check(opcode, [a, b], options_type=OPTIONS[opcode])


@pytest.mark.parametrize("opcode", ["ADD", "SUB", "MUL"])
def test_arithmetic_int64_and_constant_operand(opcode):
    a, b = rand((3, 4), "int64", -100, 100, seed=5), rand((4,), "int64", -9, 9, seed=6)
    check(opcode, [a, b], options_type=OPTIONS[opcode], fused_activation_function=1)
    check(opcode, [a.astype(np.float32), b.astype(np.float32)], const=(1,), options_type=OPTIONS[opcode])


@pytest.mark.parametrize("opcode", ["MAXIMUM", "MINIMUM"])
@pytest.mark.parametrize("reference", [False, True])
def test_maximum_minimum_nan_as_litert(opcode, reference):
    a = np.array([np.nan, 1, np.nan, 2, -np.inf, 0.0, 5], np.float32)
    b = np.array([1, np.nan, np.nan, -np.inf, 3, -0.0, 5], np.float32)
    check(opcode, [a, b], reference=reference)


@pytest.mark.parametrize("dtype", ["float32", "int32", "int64"])
@pytest.mark.parametrize("opcode", ["MAXIMUM", "MINIMUM"])
def test_maximum_minimum_broadcasting(opcode, dtype):
    check(opcode, [rand((2, 3, 4), dtype, -9, 9, seed=7), rand((3, 1), dtype, -9, 9, seed=8)])


@pytest.mark.parametrize("dtype", ["float32", "int32"])
def test_squared_difference(dtype):
    check("SQUARED_DIFFERENCE", [rand((2, 3, 4), dtype, -20, 20, seed=9), rand((4,), dtype, -20, 20, seed=10)])


def test_pow_float_and_int():
    check("POW", [rand((3, 4), low=0.1, high=3, seed=11), rand((4,), low=-2, high=2, seed=12)], rtol=1e-5)
    check("POW", [rand((3, 4), "int32", -4, 4, seed=13), rand((4,), "int32", 0, 5, seed=14)])


@pytest.mark.parametrize("opcode", ["FLOOR_DIV", "FLOOR_MOD"])
@pytest.mark.parametrize("dtype", ["float32", "int32"])
def test_floor_div_mod_signs(opcode, dtype):
    a = np.array([7, -7, 7, -7, 0, 6, -6, 5, 9, -1], dtype)
    b = np.array([2, 2, -2, -2, 3, 3, 3, -7, 4, 8], dtype)
    check(opcode, [a, b])
    check(opcode, [rand((3, 5), dtype, -50, 50, seed=15), rand((5,), dtype, -9, 9, seed=16, nonzero=True)])


def test_floor_div_mod_float_fractions_and_specials():
    a = np.array([5.5, -5.5, 3.0, -3.0, np.nan, np.inf, 1.0], np.float32)
    b = np.array([1.5, 1.5, np.inf, np.inf, 1.0, 2.0, -0.75], np.float32)
    check("FLOOR_MOD", [a, b], reference=True)
    check("FLOOR_DIV", [a[[0, 1, 4, 6]], b[[0, 1, 4, 6]]], reference=True)


def test_atan2_quadrants_zeros_and_infinities():
    y = np.array([0, 0, 1, -1, 0, np.inf, np.nan, 0, -0.0, -0.0, -np.inf, 1, -1, 3, np.inf, 2], np.float32)
    x = np.array([0, -1, 0, -1, -0.0, np.inf, 1, np.nan, -1, 0, -np.inf, -0.0, 0, np.inf, 2, -np.inf], np.float32)
    check("ATAN2", [y, x], reference=True)
    check("ATAN2", [rand((4, 5), seed=17), rand((4, 5), seed=18)])


@pytest.mark.parametrize("dtype", ["float32", "int32"])
@pytest.mark.parametrize("count", [2, 3])
def test_add_n(dtype, count):
    check("ADD_N", [rand((2, 3), dtype, -9, 9, seed=19 + i) for i in range(count)])


# --- one input -------------------------------------------------------------------------

UNARY_DOMAINS = {
    "ABS": (-5, 5), "NEG": (-5, 5), "EXP": (-5, 5), "LOG": (0.01, 9), "SQRT": (0, 9), "RSQRT": (0.01, 9),
    "SQUARE": (-5, 5), "SIN": (-6, 6), "COS": (-6, 6), "FLOOR": (-5, 5), "CEIL": (-5, 5), "ROUND": (-5, 5),
    "SIGN": (-5, 5), "LOGISTIC": (-8, 8), "TANH": (-4, 4), "RELU": (-5, 5), "RELU6": (-3, 9),
    "RELU_N1_TO_1": (-2, 2), "RELU_0_TO_1": (-1, 2), "HARD_SWISH": (-5, 5), "ELU": (-4, 4),
}


@pytest.mark.parametrize("opcode", sorted(UNARY_DOMAINS))
def test_unary_float(opcode):
    low, high = UNARY_DOMAINS[opcode]
    x = rand((2, 3, 4), low=low, high=high, seed=23)
    if opcode == "ROUND":
        x[0, 0, :] = [0.5, 1.5, 2.5, -0.5]  # halves go to even
    check(opcode, [x], rtol=1e-5, atol=1e-6)


# (LiteRT's optimized EXP / LOG / RSQRT do not propagate NaN and inf; its reference kernels do,
# and lack CEIL, ROUND and ELU, which are compared with the optimized ones.)
@pytest.mark.parametrize("opcode", ["ABS", "NEG", "EXP", "LOG", "SQRT", "RSQRT", "SQUARE", "SIN", "COS", "FLOOR",
                                    "SIGN", "LOGISTIC", "TANH", "RELU", "RELU6", "RELU_N1_TO_1", "RELU_0_TO_1",
                                    "HARD_SWISH"])
def test_unary_nan_inf_signed_zero(opcode):
    check(opcode, [SPECIAL], reference=True)


@pytest.mark.parametrize("opcode", ["CEIL", "ROUND", "ELU"])
def test_unary_nan_inf_optimized_only(opcode):
    check(opcode, [SPECIAL])


@pytest.mark.parametrize("opcode", ["ABS", "NEG", "SIGN"])
def test_unary_int32(opcode):
    check(opcode, [np.array([-3, 0, 5, -2**31, 2**31 - 1, 1, -1], np.int32)])


@pytest.mark.parametrize("alpha", [0.0, 0.2, -0.5, 1.5])
def test_leaky_relu_alpha(alpha):
    check("LEAKY_RELU", [rand((2, 3, 4), seed=24)], options_type="LeakyReluOptions", alpha=alpha)


@pytest.mark.parametrize("approximate", [False, True])
def test_gelu(approximate):
    x = np.concatenate([rand((30,), low=-6, high=6, seed=25), SPECIAL[1:]])
    check("GELU", [x], rtol=1e-5, atol=1e-6, options_type="GeluOptions", approximate=approximate)


@pytest.mark.parametrize("alpha_shape", [(3,), (1, 1, 3), (1, 1, 1, 3), (5, 1, 3), (5, 4, 3), (1,), ()])
@pytest.mark.parametrize("constant", [True, False])
def test_prelu_alpha_broadcast(alpha_shape, constant):
    x, alpha = rand((2, 5, 4, 3), seed=26), rand(alpha_shape, low=-1, high=1, seed=27)
    check("PRELU", [x, alpha], const=(1,) if constant else ())


# --- comparisons, logic, selection -------------------------------------------------------

@pytest.mark.parametrize("opcode", ["LESS", "LESS_EQUAL", "GREATER", "GREATER_EQUAL", "EQUAL", "NOT_EQUAL"])
@pytest.mark.parametrize("dtype", ["float32", "int32", "int64"])
def test_comparisons(opcode, dtype):
    a, b = rand((2, 3, 4), dtype, -3, 3, seed=28), rand((3, 1), dtype, -3, 3, seed=29)
    if dtype == "float32":  # make ties
        a, b = np.round(a), np.round(b)
    check(opcode, [a, b], out_type="BOOL")


@pytest.mark.parametrize("opcode", ["EQUAL", "NOT_EQUAL", "LESS", "GREATER_EQUAL"])
def test_comparisons_nan(opcode):
    a = np.array([np.nan, np.nan, 1, np.inf, -0.0], np.float32)
    b = np.array([np.nan, 1, np.nan, np.inf, 0.0], np.float32)
    check(opcode, [a, b], out_type="BOOL", reference=True)


@pytest.mark.parametrize("opcode", ["EQUAL", "NOT_EQUAL", "LOGICAL_AND", "LOGICAL_OR"])
def test_bool_binary(opcode):
    check(opcode, [rand((2, 3, 4), "bool", seed=30), rand((4,), "bool", seed=31)])


def test_logical_not():
    check("LOGICAL_NOT", [rand((3, 4), "bool", seed=32)])


@pytest.mark.parametrize("cond_shape", [(4, 2, 3), (4,), ()])
@pytest.mark.parametrize("dtype", ["float32", "int32"])
def test_select_v1(cond_shape, dtype):
    cond = rand(cond_shape, "bool", seed=33)
    check("SELECT", [cond, rand((4, 2, 3), dtype, -9, 9, seed=34), rand((4, 2, 3), dtype, -9, 9, seed=35)], (4, 2, 3))


@pytest.mark.parametrize("shapes", [[(2, 3, 4), (2, 3, 4), (2, 3, 4)], [(3, 1), (1, 4), ()], [(4,), (2, 3, 4), (3, 1)]])
def test_select_v2_broadcasting(shapes):
    cond, x, y = rand(shapes[0], "bool", seed=36), rand(shapes[1], seed=37), rand(shapes[2], seed=38)
    check("SELECT_V2", [cond, x, y])


# --- casts and generators ------------------------------------------------------------------

@pytest.mark.parametrize("pair", [("float32", "INT32"), ("int32", "FLOAT32"), ("float32", "BOOL"), ("bool", "FLOAT32"),
                                  ("int32", "INT64"), ("int64", "INT32"), ("uint8", "FLOAT32"), ("bool", "INT32"),
                                  ("int32", "BOOL"), ("float32", "INT64"), ("int8", "INT32"), ("int16", "FLOAT32")])
def test_cast(pair):
    dtype, to = pair
    x = rand((3, 7), dtype, -100 if dtype[0] != "u" else 0, 100, seed=39)
    if dtype == "float32":
        x[0, :4] = [0.0, -0.7, 0.7, -2.5]  # truncation toward zero; 0 -> False
    check("CAST", [x], out_type=to)


@pytest.mark.parametrize("dtype", ["float32", "int32", "int64"])
def test_zeros_like(dtype):
    x = rand((2, 3), dtype, -9, 9, seed=40)
    if dtype == "float32":
        x[0, 0] = np.nan
    check("ZEROS_LIKE", [x])


@pytest.mark.parametrize("value", [np.float32(2.5), np.int32(-7), np.int64(3), np.bool_(True)])
@pytest.mark.parametrize("dims_constant", [True, False])
def test_fill(value, dims_constant):
    dims = np.array([2, 3, 1], np.int32)
    check("FILL", [dims, np.asarray(value)], (2, 3, 1), TYPES[np.asarray(value).dtype.name],
          const=(0,) if dims_constant else ())


@pytest.mark.parametrize("args", [(0, 10, 3), (10, 0, -3), (-5, 5, 1), (0.5, 3.0, 0.25), (3.0, -1.0, -0.7)])
@pytest.mark.parametrize("constant", [True, False])
def test_range(args, constant):
    dtype = np.float32 if isinstance(args[0], float) else np.int32
    arrays = [np.asarray(a, dtype) for a in args]
    count = len(np.arange(*args))
    check("RANGE", arrays, (count,), const=(0, 1, 2) if constant else ())


# --- reductions ------------------------------------------------------------------------------

REDUCE_TYPES = {"MEAN": "float32", "SUM": "float32", "REDUCE_MAX": "float32", "REDUCE_MIN": "float32",
                "REDUCE_PROD": "float32", "REDUCE_ANY": "bool", "REDUCE_ALL": "bool"}


def reduced_shape(shape, axes, keep):
    axes = {a % len(shape) for a in np.asarray(axes).reshape(-1).tolist()}
    return tuple(1 if i in axes else d for i, d in enumerate(shape) if keep or i not in axes)


@pytest.mark.parametrize("axes", [[1], [-1], [0, 2], [2, 0], [1, -2], 1, -3, [0, 1, 2]])
@pytest.mark.parametrize("keep", [False, True])
@pytest.mark.parametrize("opcode", sorted(REDUCE_TYPES))
def test_reductions(opcode, keep, axes):
    x = rand((3, 4, 5), REDUCE_TYPES[opcode], low=0.5 if opcode == "REDUCE_PROD" else -5,
             high=1.5 if opcode == "REDUCE_PROD" else 5, seed=41)
    axis = np.asarray(axes, np.int32)
    check(opcode, [x, axis], reduced_shape(x.shape, axes, keep), const=(1,), rtol=1e-5,
          options_type="ReducerOptions", keep_dims=keep)


@pytest.mark.parametrize("opcode", ["MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN", "REDUCE_PROD"])
@pytest.mark.parametrize("dtype", ["int32", "int64"])
def test_reductions_int(opcode, dtype):
    x = rand((3, 4, 5), dtype, -3 if opcode == "REDUCE_PROD" else -50, 3 if opcode == "REDUCE_PROD" else 50, seed=42)
    for axes, keep in (([1], False), ([0, 2], True), ([-1], False)):
        check(opcode, [x, np.array(axes, np.int32)], reduced_shape(x.shape, axes, keep), const=(1,),
              options_type="ReducerOptions", keep_dims=keep)


@pytest.mark.parametrize("opcode", ["MEAN", "SUM", "REDUCE_MAX", "REDUCE_ANY"])
def test_reductions_run_time_axes(opcode):
    x = rand((3, 4, 5), REDUCE_TYPES[opcode], seed=43)
    for axes in ([1], [-1, 0], []):
        check(opcode, [x, np.array(axes, np.int32)], reduced_shape(x.shape, axes, True),
              options_type="ReducerOptions", keep_dims=True)


def test_reductions_nan():
    x = np.array([[np.nan, 1.0, 2.0], [3.0, np.inf, -1.0]], np.float32)
    for opcode in ("MEAN", "SUM", "REDUCE_PROD"):
        check(opcode, [x, np.array([1], np.int32)], (2,), const=(1,), reference=True, options_type="ReducerOptions")


@pytest.mark.parametrize("opcode", ["ARG_MAX", "ARG_MIN"])
@pytest.mark.parametrize("out_type", ["INT32", "INT64"])
@pytest.mark.parametrize("axis", [0, 1, -1, -3])
@pytest.mark.parametrize("dtype", ["float32", "int32"])
def test_arg_max_min(opcode, out_type, axis, dtype):
    x = rand((3, 4, 5), dtype, -2, 2, seed=44)  # ints in [-2, 2]: many ties, the first index wins
    options = {"options_type": "ArgMaxOptions" if opcode == "ARG_MAX" else "ArgMinOptions", "output_type": 2 if
               out_type == "INT32" else 4}
    check(opcode, [x, np.array([axis], np.int32)], reduced_shape(x.shape, [axis], False), out_type, const=(1,),
          **options)


def test_arg_max_scalar_axis_and_bool():
    options = {"options_type": "ArgMaxOptions", "output_type": 4}
    check("ARG_MAX", [rand((4, 6), seed=45), np.array(1, np.int32)], (4,), "INT64", const=(1,), **options)
    check("ARG_MAX", [rand((4, 6), "bool", seed=46), np.array(0, np.int64)], (6,), "INT64", const=(1,), **options)


@pytest.mark.parametrize("exclusive", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("axis", [0, 2, -1])
@pytest.mark.parametrize("dtype", ["float32", "int32"])
def test_cumsum(exclusive, reverse, axis, dtype):
    x = rand((3, 4, 5), dtype, -9, 9, seed=47)
    check("CUMSUM", [x, np.array(axis, np.int32)], x.shape, const=(1,), options_type="CumsumOptions",
          exclusive=exclusive, reverse=reverse)


def test_cumsum_run_time_axis():
    x = rand((3, 4, 5), seed=48)
    check("CUMSUM", [x, np.array(1, np.int32)], x.shape, options_type="CumsumOptions", reverse=True)


# --- refused models --------------------------------------------------------------------------

def refused(opcode, arrays, out_shape, out_type=None, *, const=(), options_type=None, **options) -> str:
    data = build(opcode, arrays, out_shape, out_type, const=const, options_type=options_type, **options)
    with pytest.raises(ConversionError) as info:
        from_tflite(data)
    return str(info.value)


def test_arg_max_run_time_axis_is_refused():
    message = refused("ARG_MAX", [rand((3, 4)), np.array([1], np.int32)], (3,), "INT64",
                      options_type="ArgMaxOptions", output_type=4)
    assert "operator 0 (ARG_MAX): the axis input (ONNX ArgMax/ArgMin take the axis as an attribute) must be a " \
           "constant tensor in the model" in message


def test_arg_max_float_output_is_refused():
    message = refused("ARG_MIN", [rand((3, 4)), np.array([1], np.int32)], (3,), "FLOAT32", const=(1,))
    assert "(ARG_MIN): the output must be int32 or int64, got FLOAT32" in message


@pytest.mark.parametrize("opcode", ["MEAN", "ARG_MAX"])
def test_axis_out_of_range_is_refused(opcode):
    message = refused(opcode, [rand((3, 4, 5)), np.array([3], np.int32)], (3, 4, 5), "INT64" if opcode == "ARG_MAX"
                      else None, const=(1,))
    assert f"({opcode}): axis 3 is out of range for an input of rank 3" in message


def test_float_axis_is_refused():
    message = refused("SUM", [rand((3, 4)), np.array([1.0], np.float32)], (3,), const=(1,))
    assert "(SUM): the axis input must be int32 or int64, got FLOAT32" in message


def test_mixed_input_types_are_refused():
    message = refused("ADD", [rand((3,)), rand((3,), "int32")], (3,))
    assert "(ADD): input types differ: FLOAT32 and INT32" in message


def test_unknown_fused_activation_is_refused():
    message = refused("MUL", [rand((3,)), rand((3,))], (3,), options_type="MulOptions", fused_activation_function=9)
    assert "(MUL): unknown fused activation code 9" in message


def test_fill_with_non_scalar_value_is_refused():
    message = refused("FILL", [np.array([2, 2], np.int32), np.ones(2, np.float32)], (2, 2), "FLOAT32", const=(0,))
    assert "(FILL): value must be a scalar, got shape [2]" in message


def test_select_with_wrong_condition_rank_is_refused():
    message = refused("SELECT", [rand((2, 3), "bool"), rand((2, 3, 4)), rand((2, 3, 4))], (2, 3, 4))
    assert "(SELECT): condition shape [2, 3] must be x's shape [2, 3, 4]" in message


def test_cast_to_string_is_refused():
    message = refused("CAST", [rand((3,))], (3,), "STRING")
    assert "(CAST): the output has type STRING, which edgerun cannot convert to" in message


def test_cumsum_axis_must_be_scalar():
    message = refused("CUMSUM", [rand((3, 4)), np.array([0, 1], np.int32)], (3, 4), const=(1,))
    assert "(CUMSUM): the axis input must be one int32 or int64, got INT32 of shape [2]" in message



def test_prelu_alpha_wider_than_input_is_refused():
    message = refused("PRELU", [rand((4, 3)), rand((2, 1, 3))], (4, 3))
    assert "(PRELU): alpha shape [2, 1, 3] does not broadcast to the input shape [4, 3]" in message


def test_dynamic_batch():
    """Shapes with -1 in the signature: one converted model serves every batch size."""
    b = TFLiteBuilder()
    x = b.input("x0", (1, 3, 4), signature=(-1, 3, 4))
    cond = b.input("x1", (1,), "BOOL", signature=(-1,))
    c = b.constant("c", rand((4,), seed=51))
    added, mean, zeros, chosen = (b.tensor(n, s) for n, s in (("add", (1, 3, 4)), ("mean", (1, 4)),
                                                             ("zeros", (1, 3, 4)), ("y", (1, 3, 4))))
    b.op("ADD", [x, c], [added], "AddOptions", fused_activation_function=3)
    b.op("MEAN", [added, b.constant("axis", np.array([-2], np.int32))], [mean], "ReducerOptions")
    b.op("ZEROS_LIKE", [added], [zeros])
    b.op("SELECT", [cond, added, zeros], [chosen])
    for t in (mean, chosen):
        b.output(t)
    data = b.build()
    interpreter = Interpreter(from_tflite(data))
    for batch in (1, 5):
        feeds = [rand((batch, 3, 4), seed=batch), rand((batch,), "bool", seed=batch)]
        want = litert_run(data, feeds)
        got = interpreter.run({"x0": feeds[0], "x1": feeds[1]})
        np.testing.assert_allclose(got["mean"], want[0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got["y"], want[1], rtol=1e-5, atol=1e-6)

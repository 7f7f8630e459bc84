"""The cuda backend's elementwise kernels (devices/cuda/elementwise.py) against the CPU
reference, one ONNX node per model, under numba's CUDA simulator (tests/conftest.py): every
unary op and attribute variant, Clip's bound forms, Cast, PRelu, and the binary and variadic
arithmetic over each broadcasting case, NaN and infinities included, float32 and float64.
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

import edgerun.devices.cuda.elementwise  # noqa: F401  (registers the claims)
from edgerun.devices.cuda.layout import broadcast_strides, collapse_dims
from tests.devices.cuda.harness import expect_same_as_cpu
from tests.onnx_models import make_model

# the simulator's numpy scalars warn where the GPU silently gives inf / NaN
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

TOL = {np.float32: {"rtol": 1e-4, "atol": 1e-5}, np.float64: {"rtol": 1e-10, "atol": 1e-10}}
ONNX_TYPE = {np.float32: TensorProto.FLOAT, np.float64: TensorProto.DOUBLE, np.int32: TensorProto.INT32,
             np.int64: TensorProto.INT64, np.float16: TensorProto.FLOAT16, np.bool_: TensorProto.BOOL,
             np.int8: TensorProto.INT8}
FLOATS = [np.float32, np.float64]
SPECIALS = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1000.0, -1000.0, 1e-30]


def _model(op: str, inputs: dict[str, np.ndarray], consts: dict[str, np.ndarray] | None = None,
           order: list[str] | None = None, opset: int = 17, out_type: int | None = None, **attrs) -> bytes:
    """One node `op` named "n" over graph inputs `inputs` and initializers `consts`, wired in
    `order` ("" for an omitted input; default: the inputs, then the constants)."""
    consts = consts or {}
    order = order if order is not None else [*inputs, *consts]
    infos = [helper.make_tensor_value_info(name, ONNX_TYPE[a.dtype.type], a.shape) for name, a in inputs.items()]
    first = next(iter(inputs.values()))
    out = helper.make_tensor_value_info("y", out_type or ONNX_TYPE[first.dtype.type], None)
    node = helper.make_node(op, order, ["y"], name="n", **attrs)
    return make_model([node], infos, [out], consts, opset=opset).SerializeToString()


def _check(op: str, inputs: dict[str, np.ndarray], consts=None, dtype=np.float32, device=True, **kwargs) -> None:
    """`op` on the GPU gives the CPU's outputs, and ran there (on the host when not `device`)."""
    tol = TOL.get(dtype, {"rtol": 0, "atol": 0})
    placement = expect_same_as_cpu(_model(op, inputs, consts, **kwargs), inputs, **tol,
                                   on_device=(op,) if device else ())
    assert placement["n"] == ("device" if device else "host")


def _data(shape, dtype, seed=0, scale=3.0, specials=True) -> np.ndarray:
    """Normal values of `shape` (times `scale`), the first few replaced by NaN, +-inf, +-0..."""
    x = np.random.default_rng(seed).standard_normal(shape) * scale
    flat = x.reshape(-1)
    if specials:
        k = min(len(SPECIALS), flat.size)
        flat[:k] = SPECIALS[:k]
    return x.astype(dtype)


UNARY = [
    ("Relu", {}), ("Sigmoid", {}), ("Tanh", {}), ("Exp", {}), ("Log", {}), ("Sqrt", {}), ("Neg", {}),
    ("Abs", {}), ("Reciprocal", {}), ("Erf", {}), ("LeakyRelu", {}), ("LeakyRelu", {"alpha": 0.3}),
    ("Elu", {}), ("Elu", {"alpha": 0.5}), ("HardSigmoid", {}), ("HardSigmoid", {"alpha": 0.3, "beta": 0.4}),
    ("HardSwish", {}), ("Gelu", {}), ("Gelu", {"approximate": "tanh"}), ("Softplus", {}), ("Identity", {}),
]


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize(("op", "attrs"), UNARY)
def test_unary_matches_cpu(op, attrs, dtype):
    x = _data((3, 37), dtype)
    _check(op, {"x": x}, dtype=dtype, opset=20, **attrs)


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
@pytest.mark.parametrize("op", ["Relu", "Neg", "Abs", "Identity"])
def test_integer_unary_matches_cpu(op, dtype):
    x = np.random.default_rng(1).integers(-50, 50, (2, 45)).astype(dtype)
    _check(op, {"x": x}, dtype=dtype)


@pytest.mark.parametrize("dtype", [np.float16, np.bool_, np.int8])
def test_identity_moves_any_dtype(dtype):
    x = np.random.default_rng(2).standard_normal((3, 7)).astype(dtype)
    _check("Identity", {"x": x}, dtype=dtype)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("bounds", [{}, {"min": -0.5}, {"max": 0.25}, {"min": -1.0, "max": 2.0},
                                    {"min": 1.0, "max": -1.0}])
def test_clip_attribute_bounds(bounds, dtype):
    _check("Clip", {"x": _data((3, 37), dtype)}, dtype=dtype, opset=6, **bounds)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize(("lo", "hi"), [(None, None), (-0.5, None), (None, 0.5), (0.0, 6.0), (2.0, -2.0),
                                        (np.nan, 1.0)])
@pytest.mark.parametrize("where", ["constant", "input"])
def test_clip_input_bounds(lo, hi, where, dtype):
    x = _data((5, 23), dtype)
    bounds = {name: np.array(v, dtype) for name, v in (("lo", lo), ("hi", hi)) if v is not None}
    order = ["x", "lo" if lo is not None else "", "hi" if hi is not None else ""]
    if where == "constant":
        _check("Clip", {"x": x}, bounds, dtype=dtype, order=order, opset=13)
    else:
        _check("Clip", {"x": x, **bounds}, dtype=dtype, order=order, opset=13)


@pytest.mark.parametrize("src", [np.float32, np.float64, np.int32, np.int64])
@pytest.mark.parametrize("dst", [np.float32, np.float64, np.int32, np.int64])
def test_cast_between_floats_and_ints(src, dst):
    x = (np.random.default_rng(3).standard_normal((3, 29)) * 100).astype(src)
    _check("Cast", {"x": x}, dtype=None, to=ONNX_TYPE[dst], out_type=ONNX_TYPE[dst])  # exact


def test_cast_to_float16_runs_on_the_host():
    x = _data((2, 9), np.float32)
    _check("Cast", {"x": x}, device=False, to=TensorProto.FLOAT16, out_type=TensorProto.FLOAT16)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("slope_shape", [(1,), (3, 1, 1), (5,), (2, 3, 4, 5), (4, 1)])
@pytest.mark.parametrize("where", ["constant", "input"])
def test_prelu_slope_broadcasts(slope_shape, where, dtype):
    x = _data((2, 3, 4, 5), dtype)
    slope = {"s": (np.random.default_rng(4).random(slope_shape) * 0.5).astype(dtype)}
    if where == "constant":
        _check("PRelu", {"x": x}, slope, dtype=dtype)
    else:
        _check("PRelu", {"x": x, **slope}, dtype=dtype)


def test_prelu_per_channel_slope_of_opset_6():
    x = _data((2, 3, 4, 5), np.float32)
    _check("PRelu", {"x": x}, {"s": np.array([0.1, 0.2, 0.3], np.float32)}, opset=6)


# (A shape, B shape): equal, scalar either side, row, column, rank mismatch, size-1 dims on both sides
BROADCASTS = [((3, 37), (3, 37)), ((3, 37), ()), ((), (3, 37)), ((3, 37), (37,)),
              ((3, 37), (3, 1)), ((2, 1, 5), (3, 1)), ((1, 4, 1, 3), (2, 1, 5, 1)), ((2, 3, 4, 5), (3, 1, 5))]
BINARY = ["Add", "Sub", "Mul", "Div", "Pow", "Max", "Min"]


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize(("a_shape", "b_shape"), BROADCASTS)
@pytest.mark.parametrize("op", BINARY)
def test_binary_broadcasts(op, a_shape, b_shape, dtype):
    a = _data(a_shape, dtype, seed=5)
    b = _data(b_shape, dtype, seed=6, specials=False)
    if b.size > 2:
        b.reshape(-1)[:3] = [0.0, np.nan, 2.0]  # x / 0, NaN from the right, a square
    _check(op, {"a": a, "b": b}, dtype=dtype)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("b_shape", [(), (37,), (3, 1)])
@pytest.mark.parametrize("op", BINARY)
def test_binary_with_a_constant_operand(op, b_shape, dtype):
    a = _data((3, 37), dtype, seed=7)
    b = np.full(b_shape, 2.0, dtype) if op == "Pow" and b_shape == () else _data(b_shape, dtype, 8, specials=False)
    _check(op, {"a": a}, {"b": b}, dtype=dtype)


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Max", "Min"])
def test_integer_binary_broadcasts(op, dtype):
    rng = np.random.default_rng(9)
    a, b = rng.integers(-100, 100, (3, 4, 5)).astype(dtype), rng.integers(-100, 100, (4, 1)).astype(dtype)
    _check(op, {"a": a, "b": b}, dtype=dtype)


def test_binary_legacy_axis_broadcast():
    a, b = _data((2, 3, 4, 5), np.float32), _data((3, 4), np.float32, seed=1)
    _check("Add", {"a": a, "b": b}, opset=6, broadcast=1, axis=1)


@pytest.mark.parametrize("op", ["Max", "Min", "Sum", "Mean"])
@pytest.mark.parametrize("shapes", [[(3, 37)], [(3, 37), (37,), (3, 1)], [(2, 1, 5), (3, 1), (1,), (2, 3, 5)]])
@pytest.mark.parametrize("dtype", FLOATS)
def test_variadic_ops(op, shapes, dtype):
    inputs = {f"x{i}": _data(s, dtype, seed=10 + i, specials=i == 1) for i, s in enumerate(shapes)}
    _check(op, inputs, dtype=dtype)


@pytest.mark.parametrize(("op", "inputs", "kwargs"), [
    ("Div", {"a": np.arange(1, 13, dtype=np.int32).reshape(3, 4), "b": np.array([3, -5, 7, 2], np.int32)}, {}),
    ("Pow", {"a": np.linspace(0.5, 2, 12, dtype=np.float32), "b": np.arange(12, dtype=np.int64) % 4}, {}),
    ("Erf", {"a": np.arange(-3, 3, dtype=np.int32)}, {}),
    ("Clip", {"a": np.arange(-6, 6, dtype=np.int64)}, {"opset": 13}),
])
def test_refused_cases_run_on_the_host(op, inputs, kwargs):
    _check(op, inputs, device=False, **kwargs)


def test_broadcast_strides_collapse_to_the_fewest_dimensions():
    out = (2, 3, 4, 5)
    strides = [broadcast_strides((2, 3, 4, 5), out), broadcast_strides((4, 5), out)]
    assert collapse_dims(out, strides) == ([6, 20], [[20, 1], [0, 1]])
    assert collapse_dims((1, 1), [[0, 0]]) == ([1], [[0]])
    assert broadcast_strides((3, 1), (2, 3, 4)) == [0, 1, 0]


def test_every_op_of_the_module_is_claimed():
    from edgerun.devices.cuda.claims import claimed_ops

    ops = {"Relu", "Sigmoid", "Tanh", "Exp", "Log", "Sqrt", "Neg", "Abs", "Reciprocal", "Erf", "Clip", "LeakyRelu",
           "Elu", "HardSigmoid", "HardSwish", "Gelu", "Softplus", "Identity", "Cast", "PRelu", "Add", "Sub", "Mul",
           "Div", "Pow", "Max", "Min", "Sum", "Mean"}
    assert ops <= set(claimed_ops())

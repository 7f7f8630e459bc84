"""Math-family kernels (elementwise, activations, reduce, linalg) beyond the ONNX conformance cases:
forms and attributes those cases leave out checked against onnxruntime, the pre-opset-7 forms
checked against numpy, invalid nodes, and mutated nodes that may fail only with ModelError.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgerun.runtime.errors import ModelError, UnsupportedOpError, ValueNeeded
from edgerun.runtime.kernels import TensorSpec, resolve
from tests.runtime.test_kernels import case, check, run_ours

I64 = np.int64
I32 = np.int32

# --- against onnxruntime ----------------------------------------------------------------------

ORT_CASES = [
    case("ReduceSum", [(2, 3, 4)], {"axes": [0, 2], "keepdims": 0}, opset=11),
    case("ReduceSum", [(2, 3, 4), np.array([], I64)], {"noop_with_empty_axes": 1}, opset=13, consts=(1,)),
    case("ReduceSum", [(2, 3, 4), np.array([-1, 0], I64)], {}, opset=13, dtype=np.int32, consts=(1,)),
    case("ReduceSumSquare", [(2, 3), np.array([], I64)], {"noop_with_empty_axes": 1}, opset=18, consts=(1,)),
    case("ReduceL2", [(2, 3), np.array([], I64)], {"noop_with_empty_axes": 1}, opset=18, consts=(1,)),
    case("ReduceMean", [(2, 3, 4)], {"axes": [-1]}, opset=13),
    case("ReduceMax", [(2, 3, 4), np.array([1], I64)], {"keepdims": 0}, opset=18, consts=(1,)),
    case("ReduceMin", [(3, 4)], {}, opset=13, dtype=np.int32),
    case("ReduceProd", [(2, 3)], {"axes": [1]}, opset=13),
    case("ReduceL1", [(2, 3, 4)], {"axes": [1]}, opset=13),
    case("ReduceL2", [(2, 3, 4)], {"axes": [0, 1]}, opset=13),
    case("ReduceLogSumExp", [(2, 3, 4)], {"axes": [2], "keepdims": 0}, opset=13),
    case("ReduceSumSquare", [(2, 3, 4)], {"axes": [1]}, opset=13),
    case("ArgMax", [(3, 8)], {"axis": 1, "select_last_index": 1}, opset=13, dtype=np.int32),
    case("ArgMin", [(2, 3, 4)], {"axis": -2, "keepdims": 0}, opset=13),
    case("TopK", [(3, 5), np.array([2], I64)], {"axis": 1, "largest": 0}, opset=11, consts=(1,), outputs=2),
    case("TopK", [(9,), np.array([6], I64)], {}, opset=11, dtype=np.int64, consts=(1,), outputs=2),
    case("TopK", [(4, 3), np.array([4], I64)], {"axis": 0}, opset=10, consts=(1,), outputs=2),
    case("CumSum", [(3, 4), np.array(1, I64)], {"exclusive": 1, "reverse": 1}, opset=14, consts=(1,)),
    case("CumSum", [(3, 4), np.array(-2, I32)], {}, opset=14, dtype=np.int64, consts=(1,)),
    case("Hardmax", [(2, 3, 4)], {"axis": 1}, opset=11),
    case("Hardmax", [(2, 3, 4)], {"axis": 0}, opset=13),
    case("Clip", [(3, 4)], {"min": -0.5, "max": 0.5}, opset=7),
    case("Clip", [(3, 4), np.array(-3, I32)], {}, opset=13, dtype=np.int32, consts=(1,)),
    case("Clip", [(3, 4), None, np.array(0.25, np.float32)], {}, opset=13, consts=(2,)),
    case("PRelu", [(2, 3, 4), (3, 1)], opset=9),
    case("Mod", [(3, 4), (4,)], {}, opset=13, dtype=np.int32),
    case("Mod", [(3, 4), (3, 4)], {"fmod": 1}, opset=13, dtype=np.int64),
    case("Pow", [(3, 4), (4,)], opset=15),
    case("Einsum", [(2, 3), (3, 4)], {"equation": "ij,jk"}, opset=12),
    case("Einsum", [(2, 3, 3)], {"equation": "bii->b"}, opset=12),
    case("Einsum", [(2, 2, 3), (3, 4)], {"equation": "...ij,jk->...ik"}, opset=12),
    case("Det", [(2, 3, 3)], opset=11),
    case("Trilu", [(2, 4, 5), np.array(-1, I64)], {"upper": 0}, opset=14, consts=(1,)),
    case("Trilu", [(4, 3), np.array(9, I64)], {}, opset=14, consts=(1,)),
    case("Gelu", [(3, 4)], {"approximate": "tanh"}, opset=20),
    case("Max", [(2, 3), (3,), (1, 3)], opset=13),
    case("Min", [(2, 3), (2, 1)], opset=13, dtype=np.int32),
    case("Mean", [(2, 3), (3,)], opset=13),
    case("Sum", [(2, 3), (2, 3), (1,)], opset=13, dtype=np.float64),
    case("Equal", [(3, 4), (4,)], opset=13, dtype=np.int64),
    case("Greater", [(2, 3), (3,)], opset=9),
    case("Abs", [(3, 4)], opset=13, dtype=np.int32),
    case("Sign", [(3, 4)], opset=13),
    case("Erf", [(3, 4)], opset=13),
    *[case(op, [(3, 4)], opset=20) for op in ["Softplus", "Softsign", "Elu", "Selu", "HardSigmoid", "HardSwish",
                                              "ThresholdedRelu", "Shrink", "Mish", "Celu"]],
    case("Shrink", [(3, 4)], {"bias": 1.5, "lambd": 1.0}, opset=13, dtype=np.int32),
    case("LeakyRelu", [(3, 4)], {"alpha": 0.25}, opset=16, dtype=np.float64),
]


@pytest.mark.parametrize("op, shapes, attrs, opset, dtype, consts, outputs", ORT_CASES)
def test_math_ops_match_onnxruntime(op, shapes, attrs, opset, dtype, consts, outputs):
    check(op, shapes, attrs, opset, dtype, consts or (), outputs)


# --- the pre-opset-7 forms, against numpy ---------------------------------------------------------

RNG = np.random.default_rng(7)
A = RNG.standard_normal((2, 3, 4, 5)).astype(np.float32)
X3 = RNG.standard_normal((2, 3, 4)).astype(np.float32)


@pytest.mark.parametrize("op, opset, inputs, attrs, expected", [
    ("Add", 6, [A, A[0, :, :, 0]], {"broadcast": 1, "axis": 1}, A + A[0, :, :, 0][None, :, :, None]),
    ("Sub", 1, [A, A[0, 0, 0]], {"broadcast": 1}, A - A[0, 0, 0]),
    ("Mul", 6, [A, A], {}, A * A),
    ("Pow", 1, [np.abs(A), A[:, :, 0, 0]], {"broadcast": 1, "axis": 0}, np.abs(A) ** A[:, :, 0, 0][:, :, None, None]),
    ("Greater", 1, [A, A[0, 0, :, 0]], {"broadcast": 1, "axis": 2}, A > A[0, 0, :, 0][:, None]),
    ("PRelu", 6, [X3, np.array([0.1, 0.2, 0.3], np.float32)], {},
     np.where(X3 >= 0, X3, X3 * np.array([0.1, 0.2, 0.3], np.float32)[:, None])),
    ("Clip", 1, [X3], {"max": 0.5}, np.minimum(X3, 0.5)),
    ("Clip", 6, [X3], {"min": -0.5}, np.maximum(X3, -0.5)),
    ("Hardmax", 1, [X3], {}, np.eye(12, dtype=np.float32)[X3.reshape(2, 12).argmax(1)].reshape(2, 3, 4)),
    ("ReduceSum", 1, [X3], {"axes": [0, 2]}, X3.sum(axis=(0, 2), keepdims=True)),
    ("ReduceMax", 11, [X3], {"keepdims": 0}, X3.max()),
    ("TopK", 1, [X3], {"k": 2}, np.sort(X3, axis=-1)[..., ::-1][..., :2]),
    ("ArgMin", 1, [X3], {"axis": 1}, X3.argmin(axis=1)[:, None]),
])
def test_old_opsets_match_numpy(op, opset, inputs, attrs, expected):
    for x in inputs:
        x.flags.writeable = False
    (out, *_) = run_ours(op, inputs, attrs, opset, (), 2 if op == "TopK" else 1)
    assert out.dtype == np.asarray(expected).dtype and out.shape == np.shape(expected)
    np.testing.assert_allclose(out, expected, rtol=1e-6)


def test_empty_reductions_give_the_identity():
    x = np.zeros((2, 0, 3), np.float32)
    axes = np.array([1], I64)
    expected = {"ReduceSum": 0, "ReduceProd": 1, "ReduceMax": -np.inf, "ReduceMin": np.inf, "ReduceL2": 0,
                "ReduceLogSumExp": -np.inf, "ReduceMean": np.nan}
    for op, value in expected.items():
        (out,) = run_ours(op, [x, axes], {}, 18, (1,))
        np.testing.assert_array_equal(out, np.full((2, 1, 3), value, np.float32), err_msg=op)
    (out,) = run_ours("ReduceMin", [np.zeros((0, 2), np.int8), np.array([0], I64)], {"keepdims": 0}, 18, (1,))
    np.testing.assert_array_equal(out, [127, 127])


def test_integer_pow_is_exact_and_negative_exponents_truncate():
    x = np.array([3, -2, 1, -1, -1, 5, 0], I64)
    y = np.array([39, 3, -4, -3, -2, -1, 0], I64)
    (z,) = run_ours("Pow", [x, y], {}, 15, ())
    np.testing.assert_array_equal(z, [3**39, -8, 1, -1, 1, 0, 1])


def test_topk_breaks_ties_by_index_both_ways():
    x = np.array([[2, 1, 2, 1, 2]], I64)
    for largest, want in [(1, [0, 2, 4, 1]), (0, [1, 3, 0, 2])]:
        values, index = run_ours("TopK", [x, np.array([4], I64)], {"largest": largest}, 11, (1,), 2)
        np.testing.assert_array_equal(index, [want])
        np.testing.assert_array_equal(values, x[:, want])


# --- invalid nodes: ModelError naming the node ----------------------------------------------------


def spec(shape, dtype=np.float32):
    return TensorSpec(np.dtype(dtype), tuple(shape))


INVALID = [
    # op, opset, input specs, constant values by index, attrs, message fragment
    ("ReduceSum", 13, [spec((2, 3, 4)), spec((1,), I64)], {1: np.array([3], I64)}, {}, "axis 3 is out of range"),
    ("ReduceMean", 18, [spec((2, 3, 4)), spec((2,), I64)], {1: np.array([1, -2], I64)}, {}, "repeat an axis"),
    ("ReduceMax", 18, [spec((2, 3)), spec((1,))], {1: np.array([0.0], np.float32)}, {}, "axes: expected a 1-D int"),
    ("ReduceL1", 11, [spec((2, 3))], {}, {"axes": [-3]}, "out of range"),
    ("ReduceSum", 11, [spec((2, 3))], {}, {"keepdims": 2}, "'keepdims' must be 0 or 1"),
    ("ReduceSum", 11, [spec((2, 3)), spec((1,), I64)], {}, {}, "expected 1..1 inputs"),
    ("ReduceProd", 18, [spec((2, 3), bool)], {}, {}, "data: expected a float"),
    ("ArgMax", 13, [spec((2, 3))], {}, {"axis": 2}, "axis 2 is out of range"),
    ("ArgMax", 1, [spec((2, 3))], {}, {"axis": -1}, "out of range"),
    ("ArgMin", 13, [spec((2, 0))], {}, {"axis": 1}, "is empty"),
    ("TopK", 11, [spec((3, 4)), spec((1,), I64)], {1: np.array([5], I64)}, {}, "k=5 is out of range"),
    ("TopK", 11, [spec((3, 4)), spec((2,), I64)], {1: np.array([1, 2], I64)}, {}, "K: expected one value"),
    ("TopK", 1, [spec((3, 4))], {}, {}, "'k' is required"),
    ("CumSum", 14, [spec((3, 4)), spec((), I64)], {1: np.array(2, I64)}, {}, "axis 2 is out of range"),
    ("CumSum", 14, [spec((3, 4)), spec((2,), I64)], {}, {}, "axis: expected a scalar"),
    ("CumSum", 14, [spec((3, 4)), spec((), np.float32)], {}, {}, "axis: expected a signed int"),
    ("Add", 14, [spec((3, 4)), spec((5,))], {}, {}, "(3, 4), (5,) do not broadcast"),
    ("Add", 6, [spec((2, 3)), spec((2, 3))], {}, {"broadcast": 1, "axis": 1}, "does not fit A shape (2, 3)"),
    ("Add", 6, [spec((2, 3)), spec((2,))], {}, {"broadcast": 1, "axis": 1}, "B shape (2,) does not broadcast"),
    ("Add", 6, [spec((2, 3)), spec((3,))], {}, {}, "'broadcast' is 0"),
    ("Add", 6, [spec((2, 3)), spec((2,))], {}, {"broadcast": 1}, "B shape (2,) does not broadcast to (2, 3)"),
    ("Sub", 14, [spec((3,), np.int32), spec((3,), np.int64)], {}, {}, "dtypes differ: int32 and int64"),
    ("Pow", 7, [spec((3,)), spec((3,), I64)], {}, {}, "allowed from opset 12"),
    ("Pow", 15, [spec((3,), np.uint8), spec((3,), np.uint8)], {}, {}, "X: expected a float/signed int"),
    ("Pow", 15, [spec((3,)), spec((3,), bool)], {}, {}, "Y: expected a float"),
    ("Mod", 13, [spec((3,), I64), spec((3,), I64)], {}, {"fmod": 2}, "'fmod' must be 0 or 1"),
    ("BitShift", 11, [spec((3,), np.int32), spec((3,), np.int32)], {}, {"direction": "LEFT"}, "unsigned int"),
    ("BitShift", 11, [spec((3,), np.uint8), spec((3,), np.uint8)], {}, {"direction": "UP"}, "LEFT or RIGHT"),
    ("BitwiseAnd", 18, [spec((3,)), spec((3,))], {}, {}, "expected a signed int/unsigned int"),
    ("And", 7, [spec((3,), np.int32), spec((3,), np.int32)], {}, {}, "expected a bool"),
    ("Equal", 13, [spec((3,), I64), spec((3,), np.int32)], {}, {}, "dtypes differ"),
    ("Less", 13, [spec((3,), bool), spec((3,), bool)], {}, {}, "expected a float"),
    ("Not", 1, [spec((3,))], {}, {}, "expected a bool"),
    ("Where", 16, [spec((3,)), spec((3,)), spec((3,))], {}, {}, "condition: expected a bool"),
    ("Where", 16, [spec((3,), bool), spec((3,)), spec((3,), np.float64)], {}, {}, "X and Y: dtypes differ"),
    ("Where", 16, [spec((3,), bool), spec((2,)), spec((3,))], {}, {}, "do not broadcast"),
    ("Max", 13, [spec((3,)), spec((3,), np.float64)], {}, {}, "dtypes differ"),
    ("Max", 13, [spec((3,)), None], {}, {}, "omitted"),
    ("Sum", 13, [spec((3,), np.int32)], {}, {}, "expected a float"),
    ("Sqrt", 13, [spec((3,), np.int32)], {}, {}, "expected a float"),
    ("IsNaN", 13, [spec((3,), np.int32)], {}, {}, "expected a float"),
    ("Celu", 12, [spec((3,))], {}, {"alpha": 0.0}, "must not be 0"),
    ("Gelu", 20, [spec((3,))], {}, {"approximate": "fast"}, "'none' or 'tanh'"),
    ("Elu", 6, [spec((3,))], {}, {"alpha": "one"}, "expected a float"),
    ("PRelu", 16, [spec((2, 3)), spec((4,))], {}, {}, "slope shape (4,) does not broadcast to (2, 3)"),
    ("PRelu", 16, [spec((2, 3)), spec((3,), np.float64)], {}, {}, "slope dtype float64 differs"),
    ("Clip", 13, [spec((3,)), spec((), np.float64)], {}, {}, "min: expected a scalar of X's dtype"),
    ("Clip", 13, [spec((3,)), None, spec((2,))], {}, {}, "max: expected a scalar"),
    ("Clip", 6, [spec((3,)), spec(())], {}, {}, "expected 1..1 inputs"),
    ("Hardmax", 13, [spec((2, 3, 4))], {}, {"axis": 3}, "out of range"),
    ("Einsum", 12, [spec((2, 3)), spec((4, 5))], {}, {"equation": "ij,jk"}, "label 'j' has sizes 3 and 4"),
    ("Einsum", 12, [spec((2, 3, 4))], {}, {"equation": "ij"}, "does not match input shape"),
    ("Einsum", 12, [spec((2, 3)), spec((3, 4))], {}, {"equation": "ij,jk->iz"}, "in no input term"),
    ("Einsum", 12, [spec((2,))], {}, {"equation": "i,j"}, "2 terms for 1 inputs"),
    ("Einsum", 12, [spec((2,))], {}, {"equation": "i1->i"}, "malformed"),
    ("Det", 11, [spec((2, 3))], {}, {}, "square matrices"),
    ("Det", 11, [spec((3, 3), I64)], {}, {}, "expected a float"),
    ("Trilu", 14, [spec((3,))], {}, {}, "rank >= 2"),
    ("Trilu", 14, [spec((3, 3)), spec((2,), I64)], {}, {}, "k: expected a scalar"),
]


@pytest.mark.parametrize("op, opset, specs, values, attrs, message", INVALID)
def test_invalid_nodes_raise_model_error(op, opset, specs, values, attrs, message):
    kernel = resolve("", op, opset, "bad")(op, "bad", attrs, opset)
    with pytest.raises(ModelError, match=f"node 'bad' \\({op}\\): .*{re.escape(message)}"):
        kernel.prepare(specs, [values.get(i) for i in range(len(specs))])


@pytest.mark.parametrize("op, opset, specs", [
    ("ReduceSum", 13, [spec((2, 3)), spec((1,), I64)]),
    ("TopK", 11, [spec((2, 3)), spec((1,), I64)]),
])
def test_shape_defining_inputs_must_be_known(op, opset, specs):
    kernel = resolve("", op, opset, "late")(op, "late", {}, opset)
    with pytest.raises(ValueNeeded, match="node 'late'.*input 1 must be known"):
        kernel.prepare(specs, [None, None])


def test_cumsum_axis_fed_at_run_time_is_checked_then():
    kernel = resolve("", "CumSum", 14, "scan")("CumSum", "scan", {}, 14)
    (out,) = kernel.prepare([spec((2, 3)), spec((), I64)], [None, None])
    with pytest.raises(ModelError, match="node 'scan' \\(CumSum\\): axis -3 is out of range"):
        kernel.run([np.ones((2, 3), np.float32), np.array(-3, I64)], [np.empty(out.shape, out.dtype)])


@pytest.mark.parametrize("op, opset", [("GreaterOrEqual", 11), ("Mod", 9), ("Einsum", 11), ("Trilu", 13)])
def test_versions_before_the_first_kernel_are_unsupported(op, opset):
    with pytest.raises(UnsupportedOpError, match="older than the first supported"):
        resolve("", op, opset, "old")


# --- fuzzing: mutated valid nodes fail only with ModelError ----------------------------------------

TEMPLATES = [
    ("Add", [(2, 3), (3,)], {}, 14), ("Add", [(2, 3), (3,)], {"broadcast": 1, "axis": 1}, 6),
    ("Div", [(2, 3), (2, 3)], {}, 14), ("Pow", [(2, 3), (3,)], {}, 15), ("Mod", [(4,), (4,)], {"fmod": 1}, 13),
    ("Equal", [(2, 3), (3,)], {}, 13), ("Max", [(2, 3), (3,), (1, 3)], {}, 13), ("Mean", [(2, 3), (3,)], {}, 13),
    ("Where", [(2, 3), (2, 3), (3,)], {}, 16), ("Clip", [(2, 3), (), ()], {}, 13), ("Clip", [(3,)], {"min": 0.0}, 6),
    ("PRelu", [(2, 3), (3,)], {}, 16), ("Hardmax", [(2, 3)], {"axis": 1}, 13), ("Gelu", [(3,)], {}, 20),
    ("Elu", [(3,)], {"alpha": 0.5}, 6), ("Abs", [(3,)], {}, 13), ("IsInf", [(3,)], {"detect_negative": 0}, 20),
    ("ReduceSum", [(2, 3, 4), (1,)], {"keepdims": 0}, 13), ("ReduceMean", [(2, 3, 4)], {"axes": [1]}, 13),
    ("ReduceLogSumExp", [(2, 3), (2,)], {}, 18), ("ArgMax", [(2, 3)], {"axis": 1, "select_last_index": 1}, 13),
    ("TopK", [(3, 4), (1,)], {"axis": 1}, 11), ("CumSum", [(3, 4), ()], {"exclusive": 1}, 14),
    ("Einsum", [(2, 3), (3, 4)], {"equation": "ij,jk->ik"}, 12), ("Det", [(2, 2, 2)], {}, 11),
    ("Trilu", [(3, 4), ()], {"upper": 0}, 14), ("BitShift", [(3,), (3,)], {"direction": "LEFT"}, 11),
]
# inputs given as constants: the ints among them are axes, K, axis or k
CONSTANT_INPUTS = {"ReduceSum": 1, "ReduceLogSumExp": 1, "TopK": 1, "CumSum": 1, "Trilu": 1}
ATTR_KEYS = st.sampled_from(["axis", "axes", "keepdims", "noop_with_empty_axes", "select_last_index", "largest",
                             "sorted", "exclusive", "reverse", "upper", "fmod", "direction", "equation",
                             "broadcast", "alpha", "min", "approximate", "detect_negative"])
ATTR_VALUES = st.one_of(
    st.integers(-4, 5), st.sampled_from([2**40, True]), st.lists(st.integers(-4, 4), max_size=4),
    st.sampled_from(["LEFT", "ij->ji", "...i", "a,b->c", "", b"\xff", "tanh"]), st.floats(), st.none(),
)
DTYPES = st.sampled_from([np.float32, np.float64, np.float16, np.int64, np.int32, np.bool_, np.uint8])


def _template_dtypes(op: str, count: int) -> list[np.dtype]:
    dtypes = [np.dtype(np.float32)] * count
    if op == "Where":
        dtypes[0] = np.dtype(bool)
    if op == "BitShift":
        dtypes = [np.dtype(np.uint8)] * count
    if op in CONSTANT_INPUTS:
        dtypes[CONSTANT_INPUTS[op]] = np.dtype(I64)
    return dtypes


def _value(spec: TensorSpec, rng: np.random.Generator) -> np.ndarray:
    if spec.dtype.kind == "f":
        return rng.standard_normal(spec.shape).astype(spec.dtype)
    return rng.integers(-3, 6, spec.shape).astype(spec.dtype)


@st.composite
def mutated_nodes(draw):
    op, shapes, attrs, opset = draw(st.sampled_from(TEMPLATES))
    specs = [TensorSpec(d, s) for d, s in zip(_template_dtypes(op, len(shapes)), shapes, strict=True)]
    attrs = dict(attrs)
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["attr", "attr", "drop", "shape", "dtype", "opset"]))
        i = draw(st.integers(0, len(specs) - 1))
        if kind == "attr":
            attrs[draw(ATTR_KEYS)] = draw(ATTR_VALUES)
        elif kind == "drop" and attrs:
            attrs.pop(draw(st.sampled_from(sorted(attrs))))
        elif kind == "shape":
            specs[i] = TensorSpec(specs[i].dtype, tuple(draw(st.lists(st.integers(0, 4), max_size=4))))
        elif kind == "dtype":
            specs[i] = TensorSpec(np.dtype(draw(DTYPES)), specs[i].shape)
        elif kind == "opset":
            opset = draw(st.integers(1, 28))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    values = [_value(s, rng) if i == CONSTANT_INPUTS.get(op) else None for i, s in enumerate(specs)]
    return op, opset, specs, values, attrs, rng


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(node=mutated_nodes())
def test_mutated_math_nodes_fail_only_with_model_error(node):
    op, opset, specs, values, attrs, rng = node
    try:
        kernel = resolve("", op, opset, "fuzz")(op, "fuzz", attrs, opset)
        out_specs = kernel.prepare(specs, values)
    except (UnsupportedOpError, ModelError):
        return
    assert all(isinstance(d, int) and d >= 0 for s in out_specs for d in s.shape)
    arrays = [v if v is not None else _value(s, rng) for s, v in zip(specs, values, strict=True)]
    try:
        with np.errstate(all="ignore"):
            kernel.run(arrays, [np.empty(s.shape, s.dtype) for s in out_specs])
    except ModelError:
        pass


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_pow_by_a_constant_two_and_a_cast_to_the_same_type_match_numpy(dtype):
    """Their shortcuts (one multiply; one copy) against numpy's power, NaN and inf included."""
    from edgerun.runtime.graph import GraphBuilder
    from edgerun.runtime.interpreter import Interpreter

    g = GraphBuilder("square", opset=17)
    x = g.input("x", dtype, (6,))
    squared = g.op("Pow", [x, g.constant("two", np.array(2.0, np.float32))], name="pow")
    g.output(g.op("Cast", [squared], name="same", to=int({np.float16: 10, np.float32: 1, np.float64: 11}[dtype])),
             "y")
    it = Interpreter(g.build())
    values = np.array([-3.5, 0.0, 1e-3, np.nan, -np.inf, 250.0], dtype)
    got = it.run({"x": values})["y"]
    np.testing.assert_array_equal(got, np.power(values, 2).astype(dtype))
    assert got.dtype == dtype
    runs = {node.name: run.__name__ for run, _, _, node in it._plans["serving_default"].prepared.steps}
    assert runs == {"pow": "_square", "same": "_copy"}

"""Gradient kernels against central finite differences, and the forward kernels training added
(LeakyRelu, LogSoftmax, Neg) against onnxruntime.

Each gradient case draws float64 inputs X and an upstream gradient dY, and compares the gradient
kernel's output with the numerical gradient of L = sum(forward(X) * dY). Binary-op cases compose
the kernels the gradient rules emit (SumTo, Mul, Div, Neg).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgerun.runtime.errors import ModelError, UnsupportedOpError
from edgerun.runtime.kernels import TensorSpec, resolve
from tests.gradcheck import numerical_input_gradients, run_kernel
from tests.runtime.test_kernels import case, check, mutate, random_array

RTOL, ATOL = 1e-6, 1e-8


def grad(op: str, inputs: list, attrs: dict | None = None, **kwargs) -> list[np.ndarray]:
    return run_kernel(op, inputs, attrs, domain="edgerun", **kwargs)


def assert_gradients(
    forward: Callable[[list[np.ndarray]], np.ndarray],
    inputs: list[np.ndarray],
    dy: np.ndarray,
    analytic: list[np.ndarray],
    wrt: list[int],
) -> None:
    numerical = numerical_input_gradients(forward, inputs, dy, wrt)
    for i, got, want in zip(wrt, analytic, numerical, strict=True):
        assert got.shape == inputs[i].shape and got.dtype == inputs[i].dtype, f"input {i}"
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg=f"input {i}")


def randn(rng: np.random.Generator, shape: tuple[int, ...], away_from_zero: bool = False) -> np.ndarray:
    x = rng.standard_normal(shape)
    return np.where(np.abs(x) < 0.05, 0.5, x) if away_from_zero else x  # no kink within eps


# --- activations -------------------------------------------------------------------------------

ACTIVATIONS = [  # forward op, gradient op, gradient reads the output (else the input), attributes
    ("Relu", "ReluGrad", False, {}),
    ("LeakyRelu", "LeakyReluGrad", False, {}),
    ("LeakyRelu", "LeakyReluGrad", False, {"alpha": 0.3}),
    ("LeakyRelu", "LeakyReluGrad", False, {"alpha": 1.7}),
    ("Sigmoid", "SigmoidGrad", True, {}),
    ("Tanh", "TanhGrad", True, {}),
]


@pytest.mark.parametrize("shape", [(), (7,), (3, 4), (2, 3, 4)])
@pytest.mark.parametrize("op, grad_op, reads_output, attrs", ACTIVATIONS)
def test_activation_grads(op, grad_op, reads_output, attrs, shape):
    rng = np.random.default_rng(0)
    x, dy = randn(rng, shape, away_from_zero=True), rng.standard_normal(shape)
    y = run_kernel(op, [x], attrs)[0]
    (dx,) = grad(grad_op, [dy, y if reads_output else x], attrs)
    assert_gradients(lambda a: run_kernel(op, a, attrs)[0], [x], dy, [dx], [0])


def test_neg_grad_is_neg():
    rng = np.random.default_rng(1)
    x, dy = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    assert_gradients(lambda a: run_kernel("Neg", a)[0], [x], dy, run_kernel("Neg", [dy]), [0])


# --- broadcasting binary ops: SumTo and what the rules compose from it --------------------------

BROADCASTS = [
    ((3, 4), (3, 4)),
    ((2, 3, 4), (4,)),
    ((2, 1, 4), (3, 1)),
    ((), (2, 3)),
    ((5, 1), (1,)),
    ((2, 3, 1, 5), (4, 1)),
    ((1, 3), (2, 1)),
]


@pytest.mark.parametrize("grad_shape, like_shape", [
    ((3, 4), (3, 4)), ((2, 3, 4), (4,)), ((2, 3, 4), (3, 1)), ((2, 3, 4), ()), ((2, 3, 4), (1, 1, 1)),
    ((2, 3, 4), (2, 1, 4)), ((5,), (1,)), ((0, 3), (1, 3)),
])
def test_sum_to_is_the_gradient_of_broadcasting(grad_shape, like_shape):
    rng = np.random.default_rng(2)
    like, dy = rng.standard_normal(like_shape), rng.standard_normal(grad_shape)
    (dx,) = grad("SumTo", [dy, like])
    assert_gradients(lambda a: np.broadcast_to(a[0], grad_shape), [like], dy, [dx], [0])


def sum_to(g: np.ndarray, like: np.ndarray) -> np.ndarray:
    return grad("SumTo", [g, like])[0]


def binary_grads(op: str, a: np.ndarray, b: np.ndarray, dy: np.ndarray) -> list[np.ndarray]:
    """The rules' composition (converters/training/rules/elementwise.py), kernel by kernel."""
    if op == "Add":
        return [sum_to(dy, a), sum_to(dy, b)]
    if op == "Sub":
        return [sum_to(dy, a), run_kernel("Neg", [sum_to(dy, b)])[0]]
    if op == "Mul":
        return [sum_to(run_kernel("Mul", [dy, b])[0], a), sum_to(run_kernel("Mul", [dy, a])[0], b)]
    y = run_kernel("Div", [a, b])[0]
    dy_over_b = run_kernel("Div", [dy, b])[0]
    db = run_kernel("Neg", [sum_to(run_kernel("Mul", [dy_over_b, y])[0], b)])[0]
    return [sum_to(dy_over_b, a), db]


@pytest.mark.parametrize("a_shape, b_shape", BROADCASTS)
@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div"])
def test_broadcasting_binary_grads(op, a_shape, b_shape):
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal(a_shape), randn(rng, b_shape, away_from_zero=True)
    dy = rng.standard_normal(np.broadcast_shapes(a_shape, b_shape))
    analytic = binary_grads(op, a, b, dy)
    assert_gradients(lambda xs: run_kernel(op, xs)[0], [a, b], dy, analytic, [0, 1])


# --- Gemm and MatMul ----------------------------------------------------------------------------

@pytest.mark.parametrize("alpha, beta", [(1.0, 1.0), (0.5, -2.0)])
@pytest.mark.parametrize("c_shape", [(5,), (3, 5), (1, 1), (3, 1), (), None])
@pytest.mark.parametrize("trans_a, trans_b", [(0, 0), (0, 1), (1, 0), (1, 1)])
def test_gemm_grad(trans_a, trans_b, c_shape, alpha, beta):
    rng = np.random.default_rng(4)
    m, k, n = 3, 4, 5
    a = rng.standard_normal((k, m) if trans_a else (m, k))
    b = rng.standard_normal((n, k) if trans_b else (k, n))
    inputs = [a, b] + ([] if c_shape is None else [rng.standard_normal(c_shape)])
    attrs = {"alpha": alpha, "beta": beta, "transA": trans_a, "transB": trans_b}
    dy = rng.standard_normal((m, n))
    analytic = grad("GemmGrad", [dy, *inputs], attrs)
    assert len(analytic) == len(inputs)
    forward = lambda xs: run_kernel("Gemm", xs, attrs, version=13)[0]  # noqa: E731
    assert_gradients(forward, inputs, dy, analytic, list(range(len(inputs))))


def test_gemm_grad_node_without_dc_output():
    rng = np.random.default_rng(5)
    a, b, c, dy = (rng.standard_normal(s) for s in [(3, 4), (4, 5), (5,), (3, 5)])
    full = grad("GemmGrad", [dy, a, b, c], {"alpha": 2.0})
    trimmed = grad("GemmGrad", [dy, a, b, c], {"alpha": 2.0}, num_outputs=2)
    assert len(trimmed) == 2
    for got, want in zip(trimmed, full[:2], strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("a_shape, b_shape", [
    ((3, 4), (4, 5)),
    ((4,), (4, 5)),
    ((3, 4), (4,)),
    ((4,), (4,)),
    ((2, 1, 3, 4), (5, 4, 2)),
    ((2, 3, 4), (4, 5)),
    ((3, 4), (2, 4, 5)),
    ((1, 3, 4), (2, 4, 5)),
    ((4,), (2, 4, 3)),
    ((2, 3, 4), (4,)),
])
def test_matmul_grad(a_shape, b_shape):
    rng = np.random.default_rng(6)
    a, b = rng.standard_normal(a_shape), rng.standard_normal(b_shape)
    dy = rng.standard_normal(np.matmul(a, b).shape)
    analytic = grad("MatMulGrad", [dy, a, b])
    assert_gradients(lambda xs: run_kernel("MatMul", xs)[0], [a, b], dy, analytic, [0, 1])


# --- Softmax and LogSoftmax ---------------------------------------------------------------------

SOFTMAX_AXES = [  # forward opset, forward attrs, input shape
    (13, {}, (3, 5)),
    (13, {"axis": 0}, (2, 3, 4)),
    (13, {"axis": 1}, (2, 3, 4)),
    (13, {"axis": -2}, (2, 3, 4, 2)),
    (11, {"axis": 0}, (2, 3, 4)),
    (11, {"axis": 1}, (2, 3, 4)),
    (11, {"axis": -1}, (2, 3, 4)),
    (1, {}, (2, 3, 4)),
    (13, {}, (6,)),
]


def softmax_grad_attrs(opset: int, attrs: dict) -> dict:
    """What the Softmax/LogSoftmax rules pass: flatten=1 with the forward axis below opset 13."""
    flatten = int(opset < 13)
    return {"axis": attrs.get("axis", 1 if flatten else -1), "flatten": flatten}


@pytest.mark.parametrize("opset, attrs, shape", SOFTMAX_AXES)
@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
def test_softmax_grads(op, opset, attrs, shape):
    rng = np.random.default_rng(7)
    x, dy = rng.standard_normal(shape), rng.standard_normal(shape)
    forward = lambda xs: run_kernel(op, xs, attrs, version=opset)[0]  # noqa: E731
    y = forward([x])
    analytic = grad(f"{op}Grad", [dy, y], softmax_grad_attrs(opset, attrs))
    assert_gradients(forward, [x], dy, analytic, [0])


# --- shape ops ----------------------------------------------------------------------------------

@pytest.mark.parametrize("op, shape, attrs, target", [
    ("Reshape", (2, 3, 4), {}, [0, -1]),
    ("Reshape", (6,), {}, [3, 1, 2]),
    ("Flatten", (2, 3, 4), {"axis": 0}, None),
    ("Flatten", (2, 3, 4), {}, None),
    ("Flatten", (2, 3, 4), {"axis": -1}, None),
])
def test_reshape_like(op, shape, attrs, target):
    rng = np.random.default_rng(8)
    x = rng.standard_normal(shape)
    extra = [] if target is None else [np.array(target, np.int64)]
    forward = lambda xs: run_kernel(op, xs + extra, attrs, constants=(1,))[0]  # noqa: E731
    dy = rng.standard_normal(forward([x]).shape)
    assert_gradients(forward, [x], dy, grad("ReshapeLike", [dy, x]), [0])


@pytest.mark.parametrize("shape, perm", [((2, 3, 4), None), ((2, 3, 4, 5), [0, 2, 3, 1]), ((3, 4), [1, 0])])
def test_transpose_grad_is_the_inverse_permutation(shape, perm):
    rng = np.random.default_rng(9)
    x = rng.standard_normal(shape)
    attrs = {} if perm is None else {"perm": perm}
    forward = lambda xs: run_kernel("Transpose", xs, attrs)[0]  # noqa: E731
    dy = rng.standard_normal(forward([x]).shape)
    inverse = {} if perm is None else {"perm": [int(p) for p in np.argsort(perm)]}  # as the rule does
    assert_gradients(forward, [x], dy, run_kernel("Transpose", [dy], inverse), [0])


@pytest.mark.parametrize("shapes, axis", [
    ([(2, 3), (4, 3)], 0),
    ([(2, 3, 4), (2, 1, 4), (2, 2, 4)], 1),
    ([(2, 3), (2, 5)], -1),
    ([(2, 3)], 1),
    ([(2, 0), (2, 2)], 1),
])
def test_concat_grad(shapes, axis):
    rng = np.random.default_rng(10)
    xs = [rng.standard_normal(s) for s in shapes]
    forward = lambda a: run_kernel("Concat", a, {"axis": axis})[0]  # noqa: E731
    dy = rng.standard_normal(forward(xs).shape)
    analytic = grad("ConcatGrad", [dy, *xs], {"axis": axis})
    assert_gradients(forward, xs, dy, analytic, list(range(len(xs))))


# --- float32 agrees with float64 ----------------------------------------------------------------

GRAD_CASES = [  # gradient op, input shapes, attributes
    ("ReluGrad", [(3, 4), (3, 4)], {}),
    ("LeakyReluGrad", [(3, 4), (3, 4)], {"alpha": 0.2}),
    ("SigmoidGrad", [(3, 4), (3, 4)], {}),
    ("TanhGrad", [(3, 4), (3, 4)], {}),
    ("SoftmaxGrad", [(2, 3, 4), (2, 3, 4)], {"axis": 1}),
    ("SoftmaxGrad", [(2, 3, 4), (2, 3, 4)], {"axis": 1, "flatten": 1}),
    ("LogSoftmaxGrad", [(2, 3, 4), (2, 3, 4)], {"axis": -1}),
    ("SumTo", [(2, 3, 4), (3, 1)], {}),
    ("GemmGrad", [(3, 5), (4, 3), (5, 4), (5,)], {"transA": 1, "transB": 1, "alpha": 0.5, "beta": 2.0}),
    ("MatMulGrad", [(2, 3, 5), (3, 4), (2, 4, 5)], {}),
    ("ReshapeLike", [(6, 4), (2, 3, 4)], {}),
    ("ConcatGrad", [(2, 5), (2, 3), (2, 2)], {"axis": 1}),
]


@pytest.mark.parametrize("op, shapes, attrs", GRAD_CASES)
def test_float32_agrees_with_float64(op, shapes, attrs):
    rng = np.random.default_rng(11)
    wide = [rng.standard_normal(s) for s in shapes]
    narrow = [a.astype(np.float32) for a in wide]
    for got, want in zip(grad(op, narrow, attrs), grad(op, wide, attrs), strict=True):
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


# --- invalid gradient nodes ---------------------------------------------------------------------

def spec(shape, dtype=np.float64):
    return TensorSpec(np.dtype(dtype), tuple(shape))


INVALID = [  # gradient op, input specs, attributes, message fragment
    ("ReluGrad", [spec((3, 4)), spec((3, 5))], {}, "differs from the forward tensor's shape"),
    ("ReluGrad", [spec((3, 4)), spec((3, 4), np.float32)], {}, "dtypes differ"),
    ("ReluGrad", [spec((3, 4), np.int64), spec((3, 4), np.int64)], {}, "expected a float"),
    ("SigmoidGrad", [spec((3,)), spec((3, 1))], {}, "differs"),
    ("TanhGrad", [spec((3, 4))], {}, "expected 2..2 inputs"),
    ("LeakyReluGrad", [spec((3,)), spec((3,))], {"alpha": "x"}, "expected a float"),
    ("SoftmaxGrad", [spec((2, 3)), spec((3, 2))], {}, "differs from Y shape"),
    ("SoftmaxGrad", [spec((2, 3)), spec((2, 3))], {"axis": 2}, "out of range"),
    ("LogSoftmaxGrad", [spec((2, 3)), spec((2, 3))], {"flatten": 2}, "must be 0 or 1"),
    ("SumTo", [spec((2, 4)), spec((3,))], {}, "does not broadcast"),
    ("SumTo", [spec((4,)), spec((2, 4))], {}, "does not broadcast"),
    ("GemmGrad", [spec((3, 4)), spec((3, 4)), spec((4, 5))], {}, "differs from the output shape"),
    ("GemmGrad", [spec((3, 5)), spec((3, 4)), spec((5, 4))], {}, "inner dimensions"),
    ("GemmGrad", [spec((3, 5)), spec((3, 4)), spec((4, 5)), spec((4,))], {}, "does not broadcast"),
    ("GemmGrad", [spec((3, 5)), spec((3, 4)), spec((4, 5)), spec((1, 3, 5))], {}, "does not broadcast"),
    ("GemmGrad", [spec((3, 5)), spec((2, 3, 4)), spec((4, 5))], {}, "rank 2"),
    ("MatMulGrad", [spec((3, 4)), spec((3, 4)), spec((4, 5))], {}, "differs from the output shape"),
    ("MatMulGrad", [spec((1, 3)), spec((4,)), spec((4, 3))], {}, "differs from the output shape"),
    ("MatMulGrad", [spec((3, 5)), spec((3, 4)), spec((3, 5))], {}, "inner dimensions"),
    ("ReshapeLike", [spec((3, 4)), spec((5, 2))], {}, "cannot reshape"),
    ("ConcatGrad", [spec((2, 5)), spec((2, 3)), spec((2, 3))], {"axis": 1}, "do not add up"),
    ("ConcatGrad", [spec((2, 5)), spec((3, 3)), spec((2, 2))], {"axis": 1}, "outside axis"),
    ("ConcatGrad", [spec((2, 5)), spec((2, 5))], {}, "'axis' is required"),
    ("ConcatGrad", [spec((2, 5)), spec((2, 5))], {"axis": -3}, "out of range"),
    ("ConcatGrad", [spec((2, 5)), spec((2, 5)), None], {"axis": 0}, "may not be omitted"),
]


@pytest.mark.parametrize("op, specs, attrs, message", INVALID)
def test_invalid_gradient_nodes_raise_model_error(op, specs, attrs, message):
    kernel = resolve("edgerun", op, 1, "n")(op, "n", attrs, 1)
    with pytest.raises(ModelError, match=message):
        kernel.prepare(specs, [None] * len(specs))


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_gradient_nodes_fail_only_with_model_error(data):
    op, shapes, attrs = data.draw(st.sampled_from(GRAD_CASES))
    specs = [spec(s) for s in shapes]
    attrs = dict(attrs)
    for _ in range(data.draw(st.integers(1, 3))):
        mutate(data.draw, specs, attrs)  # an "opset" mutation is ignored: gradient kernels are v1
    try:
        kernel = resolve("edgerun", op, 1, "fuzz")(op, "fuzz", attrs, 1)
        out_specs = kernel.prepare(specs, [None] * len(specs))
    except (ModelError, UnsupportedOpError):
        return
    assert all(isinstance(d, int) and d >= 0 for s in out_specs for d in s.shape)
    if sum(s.size for s in out_specs) + sum(s.size for s in specs if s is not None) > 100_000:
        return
    rng = np.random.default_rng(0)
    arrays = [None if s is None else random_array(s, rng) for s in specs]
    with np.errstate(all="ignore"):
        kernel.run(arrays, [np.empty(s.shape, s.dtype) for s in out_specs])


# --- forward kernels added for training, against onnxruntime ------------------------------------

FORWARD = [
    case("LeakyRelu", [(3, 4)]),
    case("LeakyRelu", [(2, 3, 4)], {"alpha": 0.2}, opset=6),
    case("LeakyRelu", [(5,)], {"alpha": 1.5}, opset=16, dtype=np.float64),
    case("LeakyRelu", [np.array([-2.0, -0.0, 0.0, 3.0, np.inf, -np.inf], np.float32)], {"alpha": 0.1}),
    case("LogSoftmax", [(3, 5)], opset=11),
    case("LogSoftmax", [(2, 3, 4)], {"axis": 0}, opset=11),
    case("LogSoftmax", [(2, 3, 4)], {"axis": -1}, opset=11),
    case("LogSoftmax", [(2, 3, 4)], {"axis": 1}, opset=1),
    case("LogSoftmax", [(2, 3, 4)], opset=13),
    case("LogSoftmax", [(2, 3, 4)], {"axis": 1}, opset=13),
    case("LogSoftmax", [(6,)], dtype=np.float64),
    case("LogSoftmax", [np.array([[1000.0, 0.0, -1000.0]], np.float32)]),
    case("Neg", [(3, 4)]),
    case("Neg", [(2, 3)], opset=6, dtype=np.float64),
    case("Neg", [(5,)], dtype=np.int32),
    case("Neg", [(2, 2)], opset=6, dtype=np.int64),
]


@pytest.mark.parametrize("op, shapes, attrs, opset, dtype, consts, outputs", FORWARD)
def test_training_forward_ops_match_onnxruntime(op, shapes, attrs, opset, dtype, consts, outputs):
    check(op, shapes, attrs, opset, dtype, consts, outputs)


@pytest.mark.parametrize("op, opset, dtype, message", [
    ("LeakyRelu", 16, np.int32, "expected a float"),
    ("Neg", 13, np.uint8, "expected a float/signed int"),
    ("LogSoftmax", 1, np.float32, "out of range"),
])
def test_invalid_training_forward_nodes(op, opset, dtype, message):
    attrs = {"axis": 7} if op == "LogSoftmax" else {}
    kernel = resolve("", op, opset, "n")(op, "n", attrs, opset)
    with pytest.raises(ModelError, match=message):
        kernel.prepare([spec((2, 3), dtype)], [None])

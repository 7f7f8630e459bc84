"""Gradient rules of the elementwise math ops and activations (rules/math.py) and of GlobalMaxPool,
Resize and ConvTranspose (rules/spatial.py): the nodes each rule emits, float64 central finite
differences of the forward kernel through those nodes run kernel by kernel, a float32 smoke run,
and whole models (a MobileNetV2-style block; a ConvTranspose/Resize/Gelu/GlobalMaxPool net)
trained one SGD step through make_trainable and the interpreter.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

import edgerun.converters.training.rules.math  # noqa: F401  (registers the rules until rules/__init__ lists them)
import edgerun.converters.training.rules.spatial  # noqa: F401
import edgerun.runtime.kernels.math_grad  # noqa: F401  (registers the kernels until kernels/__init__ imports them)
import edgerun.runtime.kernels.spatial_grad  # noqa: F401
from edgerun.converters.training import make_trainable
from edgerun.converters.training.rules import TRAINING_DOMAIN, GradContext, differentiable_ops, gradient_rule
from edgerun.runtime import GraphBuilder, Interpreter, serialize
from edgerun.runtime.errors import ModelError
from edgerun.runtime.graph import Node, Value
from edgerun.runtime.kernels import resolve
from tests.gradcheck import numerical_gradient, numerical_input_gradients, run_kernel

F64 = np.dtype(np.float64)
MATH_OPS = ["Exp", "Log", "Sqrt", "Erf", "Pow", "Clip", "HardSigmoid", "HardSwish", "Gelu"]
SPATIAL_OPS = ["GlobalMaxPool", "Resize", "ConvTranspose"]


# --- helpers: build a forward node, apply its rule, run the emitted nodes ---------------------------

def forward_node(op: str, specs: list, attrs: dict, version: int, dtype=F64) -> Node:
    """A one-output node; a spec is a shape (a variable input of `dtype`), "unknown" (one of
    unknown shape), an ndarray (a constant input) or None (an omitted optional input)."""
    inputs = [None if s is None else Value(f"x{i}", s.dtype, s.shape, data=s) if isinstance(s, np.ndarray)
              else Value(f"x{i}", np.dtype(dtype), None if s == "unknown" else tuple(s))
              for i, s in enumerate(specs)]
    return Node(op, inputs, [Value("y", None, None)], dict(attrs), f"fwd_{op}", "", version)


def backward(node: Node, needs_grad=None) -> tuple[GradContext, Value, list]:
    ctx = GradContext(opset=node.version)
    if needs_grad is not None:
        ctx.needs_grad = needs_grad
    dy = Value("dy", None, None)
    return ctx, dy, gradient_rule(node.op_type)(ctx, node, [dy])


def run_node(node: Node, env: dict[int, np.ndarray]) -> list[np.ndarray]:
    arrays = [None if v is None else env.get(id(v), v.data) for v in node.inputs]
    constants = [i for i, v in enumerate(node.inputs) if v is not None and v.data is not None]
    return run_kernel(node.op_type, arrays, node.attrs, domain=node.domain, version=node.version,
                      constants=constants, num_outputs=len(node.outputs))


def forward_fn(node: Node, wrt: list[int]):
    """arrays of the `wrt` inputs -> the forward kernel's output."""
    def forward(arrays: list[np.ndarray]) -> np.ndarray:
        env = {id(node.inputs[i]): a for i, a in zip(wrt, arrays, strict=True)}
        return run_node(node, env)[0]
    return forward


def rule_gradients(node: Node, xs: list[np.ndarray], wrt: list[int], dy: np.ndarray, needs_grad=None) -> list:
    """The gradients the rule's nodes compute for the `wrt` inputs (None where it gives none)."""
    y = forward_fn(node, wrt)(xs)
    ctx, dy_value, grads = backward(node, needs_grad)
    env = {id(node.inputs[i]): a for i, a in zip(wrt, xs, strict=True)}
    env.update({id(node.outputs[0]): y, id(dy_value): dy})
    for emitted in ctx.nodes:
        env.update((id(v), a) for v, a in zip(emitted.outputs, run_node(emitted, env), strict=True))
    return [None if grads[i] is None else env[id(grads[i])] for i in wrt]


def check_gradients(node: Node, xs: list[np.ndarray], wrt: list[int], rtol=1e-6, atol=1e-8, seed=0) -> None:
    """The rule's gradients equal central finite differences of the forward kernel."""
    forward = forward_fn(node, wrt)
    dy = np.random.default_rng(seed).standard_normal(forward(xs).shape)
    got = rule_gradients(node, xs, wrt, dy)
    want = numerical_input_gradients(forward, xs, dy, range(len(wrt)))
    for i, mine, expected in zip(wrt, got, want, strict=True):
        assert mine is not None, f"input {i} got no gradient"
        assert mine.shape == xs[wrt.index(i)].shape and mine.dtype == F64
        np.testing.assert_allclose(mine, expected, rtol=rtol, atol=atol, err_msg=f"input {i}")


def away_from(x: np.ndarray, kinks: list[float], margin: float = 1e-3) -> np.ndarray:
    """x with every element within `margin` of a kink moved 2 * margin above it."""
    x = x.copy()
    for k in kinks:
        near = np.abs(x - k) < margin
        x[near] = k + 2 * margin
    return x


def variable_inputs(specs: list) -> list[int]:
    return [i for i, s in enumerate(specs) if s is not None and not isinstance(s, np.ndarray)]


# --- elementwise math and activations -----------------------------------------------------------

def scalar(v, dtype=F64):
    return np.asarray(v, dtype)


RUN_TIME_BOUNDS = (-0.5, 0.7)  # a Clip's min and max where they are variable inputs
MATH = [  # op, input specs, attrs, version, sampling range, kinks to keep away from
    ("Exp", [(2, 3)], {}, 13, (-2, 2), []),
    ("Log", [(2, 3, 2)], {}, 13, (0.3, 3), []),
    ("Sqrt", [(4,)], {}, 13, (0.2, 4), []),
    ("Erf", [(3, 4)], {}, 13, (-2.5, 2.5), []),
    ("Pow", [(2, 3), (2, 3)], {}, 15, (0.3, 2.5), []),
    ("Pow", [(2, 3, 4), (3, 1)], {}, 15, (0.3, 2.5), []),
    ("Pow", [(3, 1), (1, 4)], {}, 13, (0.3, 2.5), []),
    ("Pow", [(4,), (2, 3, 4)], {}, 15, (0.3, 2.5), []),
    ("Pow", [(2, 3), ()], {}, 15, (0.3, 2.5), []),
    ("Pow", [(2, 3), np.array(3, np.int64)], {}, 15, (-2, 2), []),
    ("Pow", [(2, 3), np.array([-2, 0, 3], np.int32)], {}, 15, (0.3, 2), []),
    ("Pow", [(2, 3), scalar(0.5)], {}, 15, (0.3, 2), []),
    ("Clip", [(3, 4), scalar(-0.5), scalar(0.7)], {}, 13, (-2, 2), [-0.5, 0.7]),
    ("Clip", [(3, 4), scalar(0.0), scalar(6.0)], {}, 11, (-3, 9), [0, 6]),  # Relu6
    ("Clip", [(3, 4), scalar(-0.5)], {}, 13, (-2, 2), [-0.5]),
    ("Clip", [(3, 4), None, scalar(0.7)], {}, 12, (-2, 2), [0.7]),
    ("Clip", [(3, 4)], {}, 13, (-2, 2), []),
    ("Clip", [(3, 4), (), ()], {}, 13, (-2, 2), list(RUN_TIME_BOUNDS)),  # bounds fed at run time
    ("Clip", [(3, 4)], {"min": 0.0, "max": 6.0}, 6, (-3, 9), [0, 6]),
    ("Clip", [(3, 4)], {"min": -0.3}, 6, (-2, 2), [-0.3]),
    ("Clip", [(3, 4)], {}, 6, (-2, 2), []),
    ("Clip", [(3, 4)], {"max": 0.3}, 1, (-2, 2), [0.3]),
    ("HardSigmoid", [(3, 5)], {}, 6, (-4, 4), [-2.5, 2.5]),
    ("HardSigmoid", [(3, 5)], {"alpha": 0.5, "beta": 0.2}, 6, (-3, 3), [-0.4, 1.6]),
    ("HardSwish", [(4, 6)], {}, 14, (-5, 5), [-3, 3]),
    ("Gelu", [(3, 4)], {}, 20, (-3, 3), []),
    ("Gelu", [(3, 4)], {"approximate": "none"}, 20, (-3, 3), []),
    ("Gelu", [(3, 4)], {"approximate": "tanh"}, 20, (-3, 3), []),
]


def math_inputs(op, specs, low_high, kinks, rng) -> list[np.ndarray]:
    """Arrays for the variable inputs, away from the kinks."""
    return [np.asarray(RUN_TIME_BOUNDS[i - 1]) if op == "Clip" and i > 0
            else away_from(rng.uniform(*low_high, specs[i]), kinks) for i in variable_inputs(specs)]


def case_id(case) -> str:
    op, specs, attrs, version = case[:4]
    shapes = ",".join("-" if s is None else f"c{s.shape}" if isinstance(s, np.ndarray) else str(s) for s in specs)
    return f"{op}{version}-{shapes}-{attrs}".replace(" ", "")


@pytest.mark.parametrize("op, specs, attrs, version, low_high, kinks", MATH, ids=map(case_id, MATH))
def test_math_gradient_matches_finite_differences(op, specs, attrs, version, low_high, kinks):
    node = forward_node(op, specs, attrs, version)
    wrt = variable_inputs(specs)
    xs = math_inputs(op, specs, low_high, kinks, np.random.default_rng(1))
    if op == "Clip" and len(wrt) > 1:  # run-time bounds: only X is differentiated
        forward = forward_fn(node, wrt)
        dy = np.random.default_rng(0).standard_normal(xs[0].shape)
        got = rule_gradients(node, xs, wrt, dy)
        want = numerical_gradient(lambda x: float(np.sum(forward([x, *xs[1:]]) * dy)), xs[0])
        np.testing.assert_allclose(got[0], want, rtol=1e-6, atol=1e-8)
        assert got[1:] == [None, None]
        return
    check_gradients(node, xs, wrt)


def test_pow_exponent_gradient_is_zero_where_the_base_is_not_positive():
    a = np.array([[-1.5, 0.0, 0.8], [2.0, -0.3, 1.3]])
    b = np.array([[2.0, 3.0, 1.5], [2.5, 4.0, 3.0]])  # integral where a <= 0, so Y is defined
    node = forward_node("Pow", [a.shape, b.shape], {}, 15)
    forward = forward_fn(node, [0, 1])
    dy = np.random.default_rng(3).standard_normal(a.shape)
    da, db = rule_gradients(node, [a, b], [0, 1], dy)
    want_da, want_db = numerical_input_gradients(forward, [a, b], dy, [0, 1])
    np.testing.assert_allclose(da, want_da, rtol=1e-6, atol=1e-8)
    positive = a > 0
    np.testing.assert_allclose(db[positive], want_db[positive], rtol=1e-6)
    assert np.all(db[~positive] == 0)


def test_pow_base_gradient_is_zero_for_a_zero_exponent():
    a, b = np.array([0.0, 2.0, -1.0]), np.array([0.0, 0.0, 2.0])
    da, db = rule_gradients(forward_node("Pow", [(3,), (3,)], {}, 15), [a, b], [0, 1], np.ones(3))
    np.testing.assert_array_equal(da, [0.0, 0.0, -2.0])
    np.testing.assert_array_equal(db, [0.0, math.log(2.0), 0.0])


BOUNDARIES = [  # op, attrs, version, extra inputs, x, the gradient at x for dY = 1
    ("Clip", {}, 13, [scalar(0.0), scalar(6.0)], [-1, 0, 3, 6, 7], [0, 0, 1, 0, 0]),
    ("Clip", {"min": 0.0, "max": 6.0}, 6, [], [-1, 0, 3, 6, 7], [0, 0, 1, 0, 0]),
    ("Clip", {}, 13, [scalar(2.0), scalar(1.0)], [0, 1, 1.5, 2, 3], [0, 0, 0, 0, 0]),  # min > max
    ("Clip", {}, 13, [scalar(1.0), scalar(1.0)], [0, 1, 2, 1, 1], [0, 0, 0, 0, 0]),  # min == max
    ("HardSwish", {}, 14, [], [-4, -3, 0, 3, 4], [0, 0, 0.5, 1, 1]),
    ("HardSigmoid", {}, 6, [], [-3, -2.5, 0, 2.5, 3], [0, 0, 0.2, 0, 0]),
]


@pytest.mark.parametrize("op, attrs, version, extra, x, want", BOUNDARIES)
def test_piecewise_gradient_at_the_kinks_is_the_outer_pieces(op, attrs, version, extra, x, want):
    x = np.asarray(x, F64)
    node = forward_node(op, [x.shape, *extra], attrs, version)
    (got,) = rule_gradients(node, [x], [0], np.ones_like(x))
    np.testing.assert_allclose(got, want, rtol=1e-12)


SMOKE = [c for c in MATH if c[0] != "Pow"] + [MATH[5], MATH[9]]


@pytest.mark.parametrize("op, specs, attrs, version, low_high, kinks", SMOKE, ids=map(case_id, SMOKE))
def test_math_gradient_float32_smoke(op, specs, attrs, version, low_high, kinks):
    """float32 inputs give float32 gradients close to the float64 ones."""
    specs32 = [s.astype(np.float32) if isinstance(s, np.ndarray) and s.dtype == F64 else s for s in specs]
    node64 = forward_node(op, specs, attrs, version)
    node32 = forward_node(op, specs32, attrs, version, dtype=np.float32)
    wrt = variable_inputs(specs)
    xs = math_inputs(op, specs, low_high, kinks, np.random.default_rng(2))
    dy = np.random.default_rng(5).standard_normal(forward_fn(node64, wrt)(xs).shape)
    want = rule_gradients(node64, xs, wrt, dy)
    got = rule_gradients(node32, [x.astype(np.float32) for x in xs], wrt, dy.astype(np.float32))
    for mine, expected in zip(got, want, strict=True):
        if expected is None:
            assert mine is None
            continue
        assert mine.dtype == np.float32
        np.testing.assert_allclose(mine, expected, rtol=2e-4, atol=1e-5)


STRUCTURE = [  # op, input specs, attrs, version, emitted (op, attrs), inputs that get no gradient
    ("Exp", [(2,)], {}, 13, [("Mul", {})], []),
    ("Log", [(2,)], {}, 13, [("Div", {})], []),
    ("Sqrt", [(2,)], {}, 13, [("Add", {}), ("Div", {})], []),
    ("Erf", [(2,)], {}, 13, [("ErfGrad", {})], []),
    ("Pow", [(2, 3), (2, 3)], {}, 15, [("PowGrad", {})], []),
    ("Pow", [(2, 3), (3,)], {}, 15, [("PowGrad", {}), ("SumTo", {})], []),
    ("Pow", [(3,), (2, 3)], {}, 15, [("PowGrad", {}), ("SumTo", {})], []),
    ("Pow", [(2, 1), (3,)], {}, 15, [("PowGrad", {}), ("SumTo", {}), ("SumTo", {})], []),
    ("Pow", ["unknown", "unknown"], {}, 15, [("PowGrad", {}), ("SumTo", {}), ("SumTo", {})], []),
    ("Pow", [(2, 3), np.array(2, np.int64)], {}, 15, [("PowGrad", {"compute_db": 0})], [1]),
    ("Clip", [(2,), scalar(0.0), scalar(6.0)], {}, 13, [("ClipGrad", {})], [1, 2]),
    ("Clip", [(2,), None, scalar(6.0)], {}, 13, [("ClipGrad", {})], [1, 2]),
    ("Clip", [(2,), scalar(0.0), None], {}, 13, [("ClipGrad", {})], [1, 2]),
    ("Clip", [(2,)], {"min": 0.0, "max": 6.0}, 6, [("ClipGrad", {"min": 0.0, "max": 6.0})], []),
    ("Clip", [(2,)], {"max": 6.0}, 6, [("ClipGrad", {"min": -3.4028234663852886e38, "max": 6.0})], []),
    ("Clip", [(2,)], {"max": 6.0}, 1, [("ClipGrad", {"max": 6.0})], []),
    ("HardSigmoid", [(2,)], {}, 6, [("HardSigmoidGrad", {"alpha": 0.2, "beta": 0.5})], []),
    ("HardSwish", [(2,)], {}, 14, [("HardSwishGrad", {})], []),
    ("Gelu", [(2,)], {}, 20, [("GeluGrad", {"approximate": "none"})], []),
    ("Gelu", [(2,)], {"approximate": "tanh"}, 20, [("GeluGrad", {"approximate": "tanh"})], []),
    ("GlobalMaxPool", [(1, 2, 3)], {}, 1, [("GlobalMaxPoolGrad", {})], []),
    ("Resize", [(1, 1, 2, 2), None, np.array([1, 1, 2, 2], np.float32)], {"mode": "linear"}, 13,
     [("ResizeGrad", {"mode": "linear", "resize_version": 13})], [1, 2]),
    ("Resize", [(1, 1, 2, 2), np.array([1, 1, 2, 2], np.float32)], {}, 10,
     [("ResizeGrad", {"resize_version": 10})], [1]),
    ("ConvTranspose", [(1, 2, 3, 3), (2, 3, 2, 2), (3,)], {"strides": [2, 2]}, 11,
     [("ConvTransposeGrad", {"strides": [2, 2]})], []),
    ("ConvTranspose", [(1, 2, 3, 3), (2, 3, 2, 2)], {"group": 1}, 11, [("ConvTransposeGrad", {"group": 1})], []),
]


@pytest.mark.parametrize("op, specs, attrs, version, emitted, no_grad", STRUCTURE, ids=map(case_id, STRUCTURE))
def test_rule_structure(op, specs, attrs, version, emitted, no_grad):
    node = forward_node(op, specs, attrs, version)
    ctx, dy, grads = backward(node)
    assert [(n.op_type, n.attrs) for n in ctx.nodes] == emitted
    assert len(grads) == len(node.inputs)
    assert [i for i, g in enumerate(grads) if g is None] == no_grad
    known = {id(v) for v in (dy, *node.inputs, *node.outputs) if v is not None}
    for made in ctx.nodes:
        assert made.inputs[-1] is not None and all(v is None or id(v) in known for v in made.inputs), made
        known.update(id(v) for v in made.outputs)
        resolve(made.domain, made.op_type, made.version, made.name)
        assert made.version == (1 if made.domain == TRAINING_DOMAIN else version)
    assert all(g is None or id(g) in known for g in grads)


@pytest.mark.parametrize("op", MATH_OPS + SPATIAL_OPS)
def test_rule_is_registered_and_adds_nothing_without_an_incoming_gradient(op):
    assert op in differentiable_ops()
    node = forward_node(op, [(1, 2, 3), (2, 2, 2)] if op in ("Pow", "ConvTranspose") else [(1, 2, 3)], {}, 20)
    ctx = GradContext(opset=20)
    assert gradient_rule(op)(ctx, node, [None]) == [None] * len(node.inputs)
    assert ctx.nodes == []


def test_pow_skips_the_exponent_gradient_when_it_needs_none():
    node = forward_node("Pow", [(3,), (2, 3)], {}, 15)
    ctx, _, grads = backward(node, needs_grad=lambda v: v is not node.inputs[1])
    assert [(n.op_type, n.attrs) for n in ctx.nodes] == [("PowGrad", {"compute_db": 0}), ("SumTo", {})]
    assert grads[1] is None and grads[0] is ctx.nodes[1].outputs[0]


# --- GlobalMaxPool ------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (1, 2, 7), (2, 1, 2, 3, 2), (3, 2, 1, 1)])
def test_global_max_pool_gradient_matches_finite_differences(shape):
    x = np.random.default_rng(0).standard_normal(shape)
    check_gradients(forward_node("GlobalMaxPool", [shape], {}, 1), [x], [0])


def test_global_max_pool_gradient_goes_to_the_first_maximum_in_row_major_order():
    x = np.zeros((1, 2, 2, 3))
    x[0, 0] = [[1, 5, 2], [5, 0, 5]]  # ties at (0, 1), (1, 0), (1, 2)
    x[0, 1] = [[7, 7, 7], [7, 7, 7]]
    (dx,) = rule_gradients(forward_node("GlobalMaxPool", [x.shape], {}, 1), [x], [0], np.array([[[[2.0]], [[3.0]]]]))
    want = np.zeros_like(x)
    want[0, 0, 0, 1], want[0, 1, 0, 0] = 2.0, 3.0
    np.testing.assert_array_equal(dx, want)


# --- Resize --------------------------------------------------------------------------------------

NEAREST_TRANSFORMS = ["half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners", "asymmetric",
                      "tf_half_pixel_for_nn"]
NEAREST_MODES = ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"]
LINEAR_TRANSFORMS = ["half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners", "asymmetric"]
X_SHAPE = (1, 2, 3, 4)
UP_SCALES = np.array([1, 1, 2.5, 1.5], np.float32)  # (3, 4) -> (7, 6)
DOWN_SIZES = np.array([1, 2, 2, 3], np.int64)  # (3, 4) -> (2, 3)


def resize_case(mode, transform, nearest_mode, how, version=13, extra=None):
    attrs = {"mode": mode, "coordinate_transformation_mode": transform, **(extra or {})}
    if nearest_mode:
        attrs["nearest_mode"] = nearest_mode
    specs = [X_SHAPE, None, UP_SCALES] if how == "scales" else [X_SHAPE, None, None, DOWN_SIZES]
    return pytest.param(specs, attrs, version, id=f"{mode}-{transform}-{nearest_mode}-{how}-v{version}")


RESIZE = [
    *(resize_case("nearest", t, m, how) for t, m, how in
      itertools.product(NEAREST_TRANSFORMS, NEAREST_MODES, ("scales", "sizes"))),
    *(resize_case(mode, t, None, how) for mode, t, how in
      itertools.product(("linear", "cubic"), LINEAR_TRANSFORMS, ("scales", "sizes"))),
    resize_case("cubic", "half_pixel", None, "sizes", extra={"exclude_outside": 1, "cubic_coeff_a": -0.5}),
    resize_case("linear", "half_pixel", None, "sizes", 18, {"antialias": 1}),
    resize_case("cubic", "pytorch_half_pixel", None, "sizes", 18, {"antialias": 1}),
    pytest.param([X_SHAPE, None, None, np.array([5, 2], np.int64)], {"mode": "linear", "axes": [-1, 2]}, 18,
                 id="linear-axes-v18"),
    pytest.param([X_SHAPE, None, None, np.array([2, 9], np.int64)],
                 {"mode": "nearest", "axes": [2, 3], "keep_aspect_ratio_policy": "not_larger"}, 18,
                 id="nearest-not_larger-v18"),
    pytest.param([X_SHAPE, np.array([0, 0, 0.2, 0.1, 1, 1, 0.9, 1.2], np.float32), None, np.array([1, 2, 4, 5])],
                 {"mode": "linear", "coordinate_transformation_mode": "tf_crop_and_resize",
                  "extrapolation_value": 3.0}, 13, id="linear-tf_crop_and_resize"),
    pytest.param([X_SHAPE, np.array([1, 1, 2, 0.5], np.float32)], {"mode": "nearest"}, 10, id="nearest-v10"),
    pytest.param([X_SHAPE, np.array([1, 1, 0.7, 2], np.float32)], {"mode": "linear"}, 10, id="linear-v10"),
    pytest.param([(2, 6), None, np.array([1.5, 0.5], np.float32)], {"mode": "linear"}, 11, id="linear-2d-v11"),
]


@pytest.mark.parametrize("specs, attrs, version", RESIZE)
def test_resize_gradient_matches_finite_differences_of_the_forward_kernel(specs, attrs, version):
    """Resize is linear in X and its sampling positions depend only on shapes, scales and sizes,
    so perturbing X never flips a nearest rounding: the differences are exact up to rounding."""
    x = np.random.default_rng(0).standard_normal(specs[0])
    check_gradients(forward_node("Resize", specs, attrs, version), [x], [0])


def test_resize_nearest_gradient_counts_how_often_each_input_is_copied():
    specs = [(1, 1, 1, 4), None, np.array([1, 1, 1, 2.5], np.float32)]
    node = forward_node("Resize", specs, {"mode": "nearest", "coordinate_transformation_mode": "asymmetric",
                                          "nearest_mode": "floor"}, 13)
    (dx,) = rule_gradients(node, [np.arange(4.0).reshape(1, 1, 1, 4)], [0], np.ones((1, 1, 1, 10)))
    np.testing.assert_array_equal(dx.reshape(-1), [3, 2, 3, 2])  # floor(i / 2.5) for i in 0..9


def test_resize_grad_refuses_a_missing_forward_version():
    x = np.zeros((1, 1, 2, 2))
    with pytest.raises(ModelError, match="resize_version"):
        run_kernel("ResizeGrad", [np.zeros((1, 1, 4, 4)), x, None, np.array([1, 1, 2, 2], np.float32)],
                   {"mode": "linear"}, domain=TRAINING_DOMAIN, constants=[3])


# --- ConvTranspose -------------------------------------------------------------------------------

CONV_TRANSPOSE = [  # X shape, W shape, bias, attrs
    ((2, 3, 3, 3), (3, 2, 3, 3), True, {}),
    ((1, 2, 3, 4), (2, 3, 3, 2), True, {"strides": [2, 3], "pads": [1, 0, 0, 1]}),
    ((1, 2, 3, 3), (2, 2, 2, 3), True, {"dilations": [2, 1], "pads": [0, 1, 2, 0]}),
    ((1, 4, 3, 3), (4, 2, 2, 2), True, {"group": 2, "strides": [2, 1]}),
    ((1, 3, 3, 3), (3, 1, 3, 3), True, {"group": 3, "pads": [1, 1, 1, 1]}),  # depthwise
    ((1, 2, 3, 3), (2, 2, 3, 3), True, {"strides": [2, 2], "output_padding": [1, 0]}),
    ((1, 2, 3, 3), (2, 2, 3, 3), False, {"strides": [2, 2], "output_shape": [7, 8]}),
    ((1, 2, 3, 3), (2, 2, 3, 3), True, {"strides": [2, 2], "output_shape": [9, 6]}),  # past Z at both ends
    ((1, 2, 3, 3), (2, 2, 3, 3), True, {"strides": [2, 2], "auto_pad": "SAME_UPPER"}),
    ((1, 2, 3, 3), (2, 2, 2, 2), True, {"strides": [2, 2], "auto_pad": "SAME_LOWER"}),
    ((1, 2, 3, 3), (2, 2, 3, 3), False, {"strides": [2, 1], "auto_pad": "VALID"}),
    ((2, 2, 5), (2, 3, 3), True, {"strides": [2], "pads": [1, 2], "dilations": [2]}),  # 1-D
    ((1, 2, 2, 2, 3), (2, 2, 2, 2, 2), True, {"strides": [1, 2, 1], "pads": [0, 1, 0, 1, 0, 0]}),  # 3-D
    ((1, 2, 3, 3), (2, 4, 2, 2), True, {"strides": [2, 2], "group": 2, "output_padding": [1, 1],
                                        "dilations": [1, 2], "pads": [0, 1, 1, 0]}),
]


def conv_transpose_case(x_shape, w_shape, bias, attrs):
    m = w_shape[1] * attrs.get("group", 1)
    return [x_shape, w_shape] + ([(m,)] if bias else [])


@pytest.mark.parametrize("x_shape, w_shape, bias, attrs", CONV_TRANSPOSE, ids=[str(c[3]) for c in CONV_TRANSPOSE])
def test_conv_transpose_gradient_matches_finite_differences(x_shape, w_shape, bias, attrs):
    specs = conv_transpose_case(x_shape, w_shape, bias, attrs)
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal(s) for s in specs]
    check_gradients(forward_node("ConvTranspose", specs, attrs, 11), xs, list(range(len(specs))))


@pytest.mark.parametrize("bias", [True, False])
def test_conv_transpose_skips_dx_when_x_needs_none_and_matches_the_full_gradient(bias):
    x_shape, w_shape, _, attrs = CONV_TRANSPOSE[1]
    specs = conv_transpose_case(x_shape, w_shape, bias, attrs)
    node = forward_node("ConvTranspose", specs, attrs, 11)
    ctx, _, grads = backward(node, needs_grad=lambda v: v is not node.inputs[0])
    (made,) = ctx.nodes
    assert made.attrs == {**attrs, "compute_dx": 0} and len(made.outputs) == len(specs) - 1
    assert grads == [None, *made.outputs]
    rng = np.random.default_rng(1)
    xs = [rng.standard_normal(s) for s in specs]
    dy = rng.standard_normal(forward_fn(node, [0, 1, 2][: len(specs)])(xs).shape)
    full = rule_gradients(node, xs, list(range(len(specs))), dy)
    skipped = rule_gradients(node, xs, list(range(len(specs))), dy, lambda v: v is not node.inputs[0])
    assert skipped[0] is None
    for mine, want in zip(skipped[1:], full[1:], strict=True):
        np.testing.assert_allclose(mine, want, rtol=1e-12)


# --- float32 smoke for the spatial ops ------------------------------------------------------------

SPATIAL_SMOKE = [
    ("GlobalMaxPool", [(2, 3, 4, 4)], {}, 1),
    ("Resize", [X_SHAPE, None, UP_SCALES], {"mode": "linear"}, 13),
    ("Resize", [X_SHAPE, None, UP_SCALES], {"mode": "nearest"}, 13),
    ("ConvTranspose", conv_transpose_case(*CONV_TRANSPOSE[13]), CONV_TRANSPOSE[13][3], 11),
]


@pytest.mark.parametrize("op, specs, attrs, version", SPATIAL_SMOKE, ids=[c[0] for c in SPATIAL_SMOKE])
def test_spatial_gradient_float32_smoke(op, specs, attrs, version):
    wrt = variable_inputs(specs)
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal(specs[i]) for i in wrt]
    node64 = forward_node(op, specs, attrs, version)
    node32 = forward_node(op, specs, attrs, version, dtype=np.float32)
    dy = rng.standard_normal(forward_fn(node64, wrt)(xs).shape)
    want = rule_gradients(node64, xs, wrt, dy)
    got = rule_gradients(node32, [x.astype(np.float32) for x in xs], wrt, dy.astype(np.float32))
    for mine, expected in zip(got, want, strict=True):
        assert mine.dtype == np.float32
        np.testing.assert_allclose(mine, expected, rtol=1e-4, atol=1e-5)


# --- whole models: make_trainable, one SGD step -------------------------------------------------

def sgd_step_gradients(graph, feeds: dict, names: list[str] | None = None):
    """(interpreter, parameter values before, the gradient one SGD step with lr 1 applied)."""
    it = Interpreter(serialize(make_trainable(graph, optimizer=("sgd", {"lr": 1.0}))))
    before = it.run({}, "save")
    it.run({**feeds, "learning_rate": np.asarray(1.0)}, "train")
    after = it.run({}, "save")
    it.run(before, "restore")
    return it, before, {n: before[n] - after[n] for n in names or before}


def mobilenet_block(rng: np.random.Generator) -> tuple:
    """Conv 1x1 (4 -> 8) -> Clip(0, 6) -> depthwise Conv 3x3 -> HardSwish -> Conv 1x1 (8 -> 4)
    -> + input -> GlobalAveragePool -> Flatten -> Gemm (4 -> 3); float64 (graph, weights)."""
    weights = {
        "expand.weight": rng.standard_normal((8, 4, 1, 1)) * 2.5, "expand.bias": rng.standard_normal(8),
        "dw.weight": rng.standard_normal((8, 1, 3, 3)) * 0.8, "dw.bias": rng.standard_normal(8),
        "project.weight": rng.standard_normal((4, 8, 1, 1)) * 0.5, "project.bias": rng.standard_normal(4) * 0.1,
        "fc.weight": rng.standard_normal((3, 4)), "fc.bias": rng.standard_normal(3) * 0.1,
    }
    g = GraphBuilder("mbv2_block", opset=17)
    x = g.input("x", np.float64, (-1, 4, 5, 5))
    w = {name: g.constant(name, value) for name, value in weights.items()}
    h = g.op("Conv", [x, w["expand.weight"], w["expand.bias"]], name="expand")
    h = g.op("Clip", [h, g.constant("relu6.min", np.asarray(0.0)), g.constant("relu6.max", np.asarray(6.0))],
             name="relu6")
    h = g.op("Conv", [h, w["dw.weight"], w["dw.bias"]], name="dw", group=8, pads=[1, 1, 1, 1])
    h = g.op("HardSwish", [h], name="hswish")
    h = g.op("Conv", [h, w["project.weight"], w["project.bias"]], name="project")
    h = g.op("GlobalAveragePool", [g.op("Add", [h, x], name="residual")], name="gap")
    h = g.op("Gemm", [g.op("Flatten", [h], name="flat"), w["fc.weight"], w["fc.bias"]], name="fc", transB=1)
    g.output(h, "logits")
    return g.build(), weights


def numpy_block_loss(p: dict, x: np.ndarray, labels: np.ndarray, report: dict | None = None) -> float:
    """The block's mean softmax cross-entropy in plain numpy (the oracle for the train step)."""
    def pointwise(h, w, b):
        return np.einsum("nchw,mc->nmhw", h, w[:, :, 0, 0]) + b[None, :, None, None]

    expanded = pointwise(x, p["expand.weight"], p["expand.bias"])
    h = np.clip(expanded, 0, 6)
    padded = np.pad(h, ((0, 0), (0, 0), (1, 1), (1, 1)))
    dw = sum(padded[:, :, i:i + 5, j:j + 5] * p["dw.weight"][None, :, 0, i, j, None, None]
             for i in range(3) for j in range(3)) + p["dw.bias"][None, :, None, None]
    h = dw * np.clip(dw / 6 + 0.5, 0, 1)
    h = pointwise(h, p["project.weight"], p["project.bias"]) + x
    logits = h.mean(axis=(2, 3)) @ p["fc.weight"].T + p["fc.bias"]
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    if report is not None:
        report.update(expanded=expanded, dw=dw)
    return float(-log_probs[np.arange(len(labels)), labels].mean())


def test_mobilenet_block_sgd_step_matches_numpy_finite_differences():
    rng = np.random.default_rng(7)
    graph, weights = mobilenet_block(rng)
    x, labels = rng.standard_normal((3, 4, 5, 5)), np.array([0, 2, 1])
    # Prepare: the data reaches every piece of Clip and HardSwish, away from their kinks
    seen: dict = {}
    numpy_block_loss(weights, x, labels, seen)
    expanded, dw = seen["expanded"], seen["dw"]
    assert (expanded < 0).any() and (expanded > 6).any() and ((expanded > 0) & (expanded < 6)).any()
    assert (dw < -3).any() and (dw > 3).any() and ((dw > -3) & (dw < 3)).any()
    assert min(np.abs(expanded - k).min() for k in (0, 6)) > 1e-4
    assert min(np.abs(dw - k).min() for k in (-3, 3)) > 1e-4
    # Execute
    it, before, analytic = sgd_step_gradients(graph, {"x": x, "labels": labels})
    loss = float(it.run({"x": x, "labels": labels, "learning_rate": np.asarray(0.0)}, "train")["loss"])
    # Assert
    assert set(analytic) == set(weights)
    assert loss == pytest.approx(numpy_block_loss(weights, x, labels), rel=1e-12)
    for name, value in weights.items():
        want = numerical_gradient(lambda v, name=name: numpy_block_loss({**weights, name: v}, x, labels), value)
        assert np.abs(want).max() > 1e-3, name  # the parameter matters
        np.testing.assert_allclose(analytic[name], want, rtol=1e-6, atol=1e-9, err_msg=name)


def spatial_net(rng: np.random.Generator):
    """ConvTranspose (2 -> 3, stride 2, asymmetric pads, output_padding) -> Resize linear to 9x7
    (sizes) -> Gelu -> Conv 3x3 (3 -> 4) -> GlobalMaxPool -> Flatten -> Gemm (4 -> 3); float64."""
    g = GraphBuilder("spatial_net", opset=20)
    x = g.input("x", np.float64, (-1, 2, 3, 3))
    h = g.op("ConvTranspose", [x, g.constant("up.weight", rng.standard_normal((2, 3, 3, 3))),
                               g.constant("up.bias", rng.standard_normal(3))],
             name="up", strides=[2, 2], pads=[1, 0, 0, 1], output_padding=[1, 0])
    h = g.op("Resize", [h, None, None, g.constant("sizes", np.array([2, 3, 9, 7], np.int64))], name="resize",
             mode="linear", coordinate_transformation_mode="pytorch_half_pixel")
    h = g.op("Gelu", [h], name="gelu", approximate="tanh")
    h = g.op("Conv", [h, g.constant("conv.weight", rng.standard_normal((4, 3, 3, 3)) * 0.3),
                      g.constant("conv.bias", rng.standard_normal(4))], name="conv")
    h = g.op("Flatten", [g.op("GlobalMaxPool", [h], name="gmp")], name="flat")
    h = g.op("Gemm", [h, g.constant("fc.weight", rng.standard_normal((3, 4))),
                      g.constant("fc.bias", rng.standard_normal(3))], name="fc", transB=1)
    g.output(h, "logits")
    return g.build()


def test_spatial_net_sgd_step_matches_finite_differences_of_the_train_loss():
    rng = np.random.default_rng(11)
    graph = spatial_net(rng)
    feeds = {"x": rng.standard_normal((2, 2, 3, 3)), "labels": np.array([1, 0])}
    it, before, analytic = sgd_step_gradients(graph, feeds)
    assert set(analytic) == {"up.weight", "up.bias", "conv.weight", "conv.bias", "fc.weight", "fc.bias"}

    def loss_at(name: str, value: np.ndarray) -> float:
        it.run({**before, name: value}, "restore")
        return float(it.run({**feeds, "learning_rate": np.asarray(0.0)}, "train")["loss"])

    for name in analytic:
        want = numerical_gradient(lambda v, name=name: loss_at(name, v), before[name])
        assert np.abs(want).max() > 1e-4, name
        np.testing.assert_allclose(analytic[name], want, rtol=1e-6, atol=1e-8, err_msg=name)

"""Momentum, Adam and Adagrad of ONNX's training-preview domain, checked against onnx's
ReferenceEvaluator over several steps (state fed back), against closed-form results, and on
bad graphs and bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper
from onnx.reference import ReferenceEvaluator

from edgerun.converters.onnx_backend import EdgerunBackend
from edgerun.runtime.errors import InputError, ModelError
from edgerun.runtime.kernels import TensorSpec, resolve

DOMAIN = "ai.onnx.preview.training"
STATES = {"Momentum": 1, "Adam": 2, "Adagrad": 1}  # optimizer state tensors per X


def model(op, arrays, attrs, num_outputs):
    """A one-node ONNX model of `op` with inputs in0.. and outputs out0.."""
    names = [f"in{i}" for i in range(len(arrays))]
    outs = [f"out{i}" for i in range(num_outputs)]
    node = helper.make_node(op, names, outs, domain=DOMAIN, **attrs)
    inputs = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
              for n, a in zip(names, arrays, strict=True)]
    elem = helper.np_dtype_to_tensor_dtype(arrays[2].dtype)
    graph = helper.make_graph([node], "g", inputs, [helper.make_tensor_value_info(o, elem, None) for o in outs])
    opsets = [helper.make_opsetid("", 20), helper.make_opsetid(DOMAIN, 1)]
    return helper.make_model(graph, opset_imports=opsets, ir_version=10)


def run_kernel(op, arrays, attrs):
    """resolve -> prepare -> run into NaN-filled outputs; inputs are read-only. Float attributes
    are rounded to float32, as an ONNX model stores them (the closed-form tests use values float32
    holds exactly)."""
    for a in arrays:
        a.flags.writeable = False
    attrs = {k: float(np.float32(v)) if isinstance(v, float) else v for k, v in attrs.items()}
    kernel = resolve(DOMAIN, op, 1, "n")(op, "n", attrs, 1)
    specs = kernel.prepare([TensorSpec(a.dtype, a.shape) for a in arrays], [None] * len(arrays))
    outs = [np.full(s.shape, np.nan, s.dtype) for s in specs]
    kernel.run(list(arrays), outs)
    return outs


def steps(run, op, xs, grads, attrs, r=0.1, t0=0, dtype=np.float32):
    """Run len(grads) updates, feeding X and the states back; T counts up from t0. Returns the
    outputs of every step."""
    n = len(xs)
    tensors = list(xs) + [np.zeros_like(x) for x in xs] * STATES[op]
    history = []
    for k, g in enumerate(grads):
        arrays = [np.array(r, dtype), np.array(t0 + k, np.int64), *tensors[:n], *g, *tensors[n:]]
        out = run(op, [np.array(a) for a in arrays], attrs)
        history.append(out)
        tensors = list(out)
    return history


def reference_run(op, arrays, attrs):
    ref = ReferenceEvaluator(model(op, arrays, attrs, (STATES[op] + 1) * ((len(arrays) - 2) // (STATES[op] + 2))))
    return ref.run(None, {f"in{i}": a for i, a in enumerate(arrays)})


def random_problem(shapes, count, dtype, seed=0):
    rng = np.random.default_rng(seed)
    xs = [rng.standard_normal(s).astype(dtype) for s in shapes]
    grads = [[rng.standard_normal(s).astype(dtype) for s in shapes] for _ in range(count)]
    return xs, grads


# --- against onnx's ReferenceEvaluator, several steps ----------------------------------------

CASES = [
    ("Momentum", {"alpha": 0.9, "beta": 0.5, "mode": "standard", "norm_coefficient": 0.01}),
    ("Momentum", {"alpha": 0.8, "beta": 1.0, "mode": "nesterov", "norm_coefficient": 0.0}),
    ("Momentum", {"alpha": 0.0, "beta": 0.3, "mode": "nesterov", "norm_coefficient": 0.2}),
    ("Adam", {}),
    ("Adam", {"alpha": 0.5, "beta": 0.7, "epsilon": 1e-3, "norm_coefficient": 0.05, "norm_coefficient_post": 0.01}),
    ("Adagrad", {}),
    ("Adagrad", {"decay_factor": 0.3, "epsilon": 1e-2, "norm_coefficient": 0.1}),
]


@pytest.mark.parametrize("op, attrs", CASES)
@pytest.mark.parametrize("shapes", [[(5,)], [(3,), (2, 4), (1,)], [(2, 3, 2), ()]])
def test_matches_reference_evaluator_over_steps(op, attrs, shapes):
    xs, grads = random_problem(shapes, 5, np.float32)
    ours = steps(run_kernel, op, xs, grads, attrs)
    ref = steps(reference_run, op, xs, grads, attrs)
    for got, want in zip(ours, ref, strict=True):
        assert len(got) == len(want) == (STATES[op] + 1) * len(shapes)
        for g, w in zip(got, want, strict=True):
            assert g.dtype == np.float32 and g.shape == w.shape
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)  # onnx computes some in float64


@pytest.mark.parametrize("op, attrs", CASES)
def test_float64_matches_reference_evaluator(op, attrs):
    xs, grads = random_problem([(4, 3)], 4, np.float64, seed=1)
    ours = steps(run_kernel, op, xs, grads, attrs, r=0.05, t0=1, dtype=np.float64)
    ref = steps(reference_run, op, xs, grads, attrs, r=0.05, t0=1, dtype=np.float64)
    for got, want in zip(ours, ref, strict=True):
        for g, w in zip(got, want, strict=True):
            assert g.dtype == np.float64
            # onnx takes float attributes as np.float32, so its 1 - norm_coefficient_post is rounded to float32
            np.testing.assert_allclose(g, w, rtol=1e-7 if "norm_coefficient_post" in attrs else 1e-12, atol=1e-14)


def test_imported_model_runs_through_the_backend():
    """The converter carries the domain through: a two-tensor Adam node as an ONNX model."""
    xs, grads = random_problem([(3,), (2, 2)], 1, np.float32, seed=2)
    arrays = [np.array(0.1, np.float32), np.array(3, np.int64), *xs, *grads[0], *[np.ones_like(x) for x in xs] * 2]
    attrs = {"alpha": 0.9, "beta": 0.99}
    got = EdgerunBackend.prepare(model("Adam", arrays, attrs, 6)).run(arrays)
    for g, w in zip(got, reference_run("Adam", arrays, attrs), strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-7)


# --- closed-form results ----------------------------------------------------------------------


def test_momentum_constant_gradient_closed_form():
    """V_1 = g, V_k = alpha V_(k-1) + beta g: V_k = alpha^(k-1) g + beta g (1 - alpha^(k-1)) / (1 - alpha)."""
    alpha, beta, r, k = 0.5, 0.25, 0.1, 6
    x0, g = np.array([1.0, -2.0, 3.0]), np.array([0.5, 1.0, -4.0])
    history = steps(run_kernel, "Momentum", [x0], [[g]] * k,
                    {"alpha": alpha, "beta": beta, "mode": "standard", "norm_coefficient": 0.0}, r=r, dtype=np.float64)
    v = [alpha ** (j - 1) * g + beta * g * (1 - alpha ** (j - 1)) / (1 - alpha) for j in range(1, k + 1)]
    np.testing.assert_allclose(history[-1][1], v[-1], rtol=1e-12)
    np.testing.assert_allclose(history[-1][0], x0 - r * sum(v), rtol=1e-12)


def test_nesterov_step_closed_form():
    """First step (T=0) from V=0: V_new = G_reg, X_new = X - R * (1 + alpha) * G_reg."""
    x, g, c, alpha, r = np.array([2.0, -1.0]), np.array([0.5, 0.25]), 0.125, 0.875, 0.01
    (x_new, v_new), = steps(run_kernel, "Momentum", [x], [[g]],
                            {"alpha": alpha, "beta": 0.3, "mode": "nesterov", "norm_coefficient": c},
                            r=r, dtype=np.float64)
    np.testing.assert_allclose(v_new, c * x + g, rtol=1e-12)
    np.testing.assert_allclose(x_new, x - r * (1 + alpha) * (c * x + g), rtol=1e-12)


def test_momentum_norm_coefficient_shrinks_geometrically():
    """G = 0, alpha = 0, beta = 1: each step is X <- (1 - R c) X."""
    x0, r, c, k = np.array([[1.0, -3.0], [0.5, 8.0]]), 0.1, 0.5, 5
    history = steps(run_kernel, "Momentum", [x0], [[np.zeros_like(x0)]] * k,
                    {"alpha": 0.0, "beta": 1.0, "mode": "standard", "norm_coefficient": c}, r=r, dtype=np.float64)
    np.testing.assert_allclose(history[-1][0], (1 - r * c) ** k * x0, rtol=1e-12)


def test_adam_bias_corrected_steps_move_by_the_learning_rate():
    """Constant gradient, zero state, T from 1, epsilon 0: every step moves X by R * sign(G)."""
    x0, g, r, k = np.array([1.0, 2.0, -3.0]), np.array([0.3, -2.0, 7.0]), 0.01, 7
    history = steps(run_kernel, "Adam", [x0], [[g]] * k, {"alpha": 0.75, "beta": 0.9375, "epsilon": 0.0},
                    r=r, t0=1, dtype=np.float64)
    x, v, h = history[-1]
    np.testing.assert_allclose(x, x0 - k * r * np.sign(g), rtol=1e-12)
    np.testing.assert_allclose(v, (1 - 0.75**k) * g, rtol=1e-12)
    np.testing.assert_allclose(h, (1 - 0.9375**k) * g**2, rtol=1e-12)


def test_adam_norm_coefficient_post_decays_x():
    """G = 0 and zero state: V and H stay 0, so each step only scales X by (1 - post)."""
    x0, post, k = np.array([4.0, -1.0]), 0.125, 3
    history = steps(run_kernel, "Adam", [x0], [[np.zeros_like(x0)]] * k,
                    {"norm_coefficient_post": post, "epsilon": 1e-3}, dtype=np.float64)
    np.testing.assert_allclose(history[-1][0], (1 - post) ** k * x0, rtol=1e-12)


def test_adagrad_decay_factor_closed_form():
    """Constant gradient, zero state, epsilon 0: H_k = k g^2 and step j moves X by
    R / (1 + (j - 1) d) * sign(g) / sqrt(j)."""
    x0, g, r, d, k = np.array([1.0, -1.0, 0.0]), np.array([2.0, -0.5, 1e-3]), 0.1, 0.25, 6
    history = steps(run_kernel, "Adagrad", [x0], [[g]] * k, {"decay_factor": d, "epsilon": 0.0}, r=r,
                    dtype=np.float64)
    moved = sum(r / (1 + (j - 1) * d) / np.sqrt(j) for j in range(1, k + 1))
    np.testing.assert_allclose(history[-1][0], x0 - moved * np.sign(g), rtol=1e-12)
    np.testing.assert_allclose(history[-1][1], k * g**2, rtol=1e-12)


def test_adagrad_epsilon_and_norm_coefficient():
    """One step from H = 0: X_new = X - R * G_reg / (|G_reg| + epsilon), G_reg = G + c X."""
    x, g, c, eps, r = np.array([1.0, 2.0]), np.array([0.5, -3.0]), 0.5, 0.25, 0.2
    (x_new, h_new), = steps(run_kernel, "Adagrad", [x], [[g]],
                            {"epsilon": eps, "norm_coefficient": c}, r=r, dtype=np.float64)
    g_reg = g + c * x
    np.testing.assert_allclose(h_new, g_reg**2, rtol=1e-12)
    np.testing.assert_allclose(x_new, x - r * g_reg / (np.abs(g_reg) + eps), rtol=1e-12)


def test_tensors_of_one_node_are_updated_independently():
    """Two tensors in one node give what each gives in a node of its own."""
    xs, grads = random_problem([(3,), (2, 2)], 3, np.float32, seed=3)
    attrs = {"alpha": 0.9, "beta": 0.5, "mode": "standard", "norm_coefficient": 0.1}
    joint = steps(run_kernel, "Momentum", xs, grads, attrs)[-1]
    for i in range(2):
        alone = steps(run_kernel, "Momentum", [xs[i]], [[g[i]] for g in grads], attrs)[-1]
        np.testing.assert_array_equal(joint[i], alone[0])
        np.testing.assert_array_equal(joint[2 + i], alone[1])


# --- bad graphs and bad inputs ----------------------------------------------------------------

R, T = np.array(0.1, np.float32), np.array(1, np.int64)
X = np.ones(3, np.float32)
MOMENTUM = {"alpha": 0.9, "beta": 0.1, "mode": "standard", "norm_coefficient": 0.0}


@pytest.mark.parametrize("op, arrays, attrs, message", [
    ("Momentum", [R, T, X, X, X, X], MOMENTUM, "got 4 tensors, which 3 groups do not divide"),
    ("Adam", [R, T, X, X, X, X, X, X], {}, "got 6 tensors, which 4 groups do not divide"),
    ("Adagrad", [R, T, X, X], {}, "got 2 tensors, which 3 groups do not divide"),
    ("Momentum", [R, T, X, np.ones(4, np.float32), X], MOMENTUM, "X[0] and G[0]: shapes differ: (3,) and (4,)"),
    ("Adam", [R, T, *[X, np.ones(2, np.float32)] * 3, X, X],
     {}, "X[1] and H[1]: shapes differ: (2,) and (3,)"),
    ("Adagrad", [R, T, X, X, X.astype(np.float64)], {}, "X[0], G[0], H[0]: dtypes differ"),
    ("Adagrad", [R, T, *[np.ones(3, np.int32)] * 3], {}, "X[0]: expected a float tensor, got int32"),
    ("Adagrad", [np.ones(2, np.float32), T, X, X, X], {}, "R: expected a scalar of shape (), got shape (2,)"),
    ("Adagrad", [R, np.array(1.0, np.float32), X, X, X], {}, "T: expected a signed int/unsigned int tensor"),
    ("Momentum", [R, T, X, X, X], {"beta": 0.1, "mode": "standard", "norm_coefficient": 0.0},
     "attribute 'alpha' is required"),
    ("Momentum", [R, T, X, X, X], {**MOMENTUM, "mode": "heavy-ball"},
     "attribute 'mode' must be 'standard' or 'nesterov', got 'heavy-ball'"),
    ("Adam", [R, T, X, X, X, X], {"alpha": 1.0}, "attribute 'alpha' must be finite and in [0.0, 1.0), got 1.0"),
    ("Adagrad", [R, T, X, X, X], {"decay_factor": -0.5}, "attribute 'decay_factor' must be finite and in [0.0, inf)"),
])
def test_bad_graph_is_a_model_error(op, arrays, attrs, message):
    with pytest.raises(ModelError, match="node 'n'") as info:
        run_kernel(op, [np.array(a) for a in arrays], attrs)
    assert message in str(info.value)


@pytest.mark.parametrize("r, t, message", [
    (-0.1, 1, "learning rate must be finite and >= 0, got -0.1"),
    (np.nan, 1, "learning rate must be finite and >= 0, got nan"),
    (0.1, -2, "T (the update count) must be >= 0, got -2"),
])
def test_bad_rate_or_count_is_an_input_error(r, t, message):
    arrays = [np.array(r, np.float64), np.array(t, np.int64), X, X, X]
    with pytest.raises(InputError) as info:
        run_kernel("Adagrad", arrays, {})
    assert message in str(info.value)


def test_more_node_outputs_than_the_update_makes_are_refused():
    arrays = [R, T, X, X, X]
    with pytest.raises(ModelError, match="has 3 outputs, the kernel produces 2"):
        EdgerunBackend.prepare(model("Adagrad", arrays, {}, 3)).run(arrays)

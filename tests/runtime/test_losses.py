"""Loss and metric kernels (runtime/kernels/losses.py) and their gradient rules.

Values are checked against closed forms written here in plain numpy (float64, the naive
formulas: they are only used where they cannot overflow); gradient kernels against central
finite differences of the forward kernel; the rules by running the nodes they build.
Inputs are read-only to prove kernels never write into them.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgerun.converters.training.rules import GradContext, gradient_rule
from edgerun.runtime.errors import InputError, ModelError
from edgerun.runtime.graph import Node, Value
from tests.gradcheck import numerical_input_gradients, run_kernel

SHAPES_NC = [(1, 1), (1, 4), (3, 2), (5, 7)]
SHAPES_ANY = [(), (1,), (6,), (2, 3), (2, 3, 4)]


def frozen(*arrays: np.ndarray) -> list[np.ndarray]:
    out = [np.array(a) for a in arrays]
    for a in out:
        a.flags.writeable = False
    return out


def run(op: str, *inputs: np.ndarray) -> np.ndarray:
    return run_kernel(op, frozen(*inputs), domain="edgerun")[0]


def make_labels(kind: str, n: int, c: int, rng: np.random.Generator, dtype=np.float64) -> np.ndarray:
    """Class indices (int32/int64), one-hot rows, or soft targets (rows of probabilities)."""
    index = rng.integers(0, c, n)
    if kind in ("int32", "int64"):
        return index.astype(kind)
    if kind == "onehot":
        return np.eye(c, dtype=dtype)[index]
    soft = rng.random((n, c)) + 0.1
    return (soft / soft.sum(axis=1, keepdims=True)).astype(dtype)


def dense(labels: np.ndarray, c: int) -> np.ndarray:
    return np.eye(c)[labels] if labels.dtype.kind in "iu" else labels.astype(np.float64)


def cross_entropy_reference(logits: np.ndarray, labels: np.ndarray) -> float:
    z = logits.astype(np.float64)
    probs = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    return float(-(dense(labels, z.shape[1]) * np.log(probs)).sum() / z.shape[0])


LABEL_KINDS = ["int32", "int64", "onehot", "soft"]


# ------------------------------------------------------------------ SoftmaxCrossEntropy
@pytest.mark.parametrize("kind", LABEL_KINDS)
@pytest.mark.parametrize("shape", SHAPES_NC)
@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-12), (np.float32, 1e-5)])
def test_cross_entropy_matches_closed_form(shape, kind, dtype, rtol):
    rng = np.random.default_rng(0)
    logits = (rng.standard_normal(shape) * 3).astype(dtype)
    labels = make_labels(kind, *shape, rng, dtype)
    loss = run("SoftmaxCrossEntropy", logits, labels)
    assert loss.shape == () and loss.dtype == dtype
    np.testing.assert_allclose(loss, cross_entropy_reference(logits, labels), rtol=rtol)


def test_cross_entropy_matches_scipy_log_softmax():
    special = pytest.importorskip("scipy.special")
    rng = np.random.default_rng(1)
    logits, labels = rng.standard_normal((4, 5)) * 50, np.array([0, 4, 2, 2])
    want = -special.log_softmax(logits, axis=1)[np.arange(4), labels].mean()
    np.testing.assert_allclose(run("SoftmaxCrossEntropy", logits, labels), want, rtol=1e-12)


@pytest.mark.parametrize("kind", LABEL_KINDS)
@pytest.mark.parametrize("shape", SHAPES_NC)
def test_cross_entropy_grad_matches_finite_differences(shape, kind):
    rng = np.random.default_rng(2)
    logits, labels, dloss = rng.standard_normal(shape), make_labels(kind, *shape, rng), np.array(0.7)
    got = run("SoftmaxCrossEntropyGrad", dloss, logits, labels)
    want = numerical_input_gradients(lambda a: run("SoftmaxCrossEntropy", a[0], labels), [logits], dloss, [0])
    np.testing.assert_allclose(got, want[0], rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_extreme_logits_stay_finite(dtype):
    logits = np.array([[1000, -1000, 0], [-1000, 1000, 1000]], dtype)
    labels = np.array([0, 0])
    loss = run("SoftmaxCrossEntropy", logits, labels)
    grad = run("SoftmaxCrossEntropyGrad", np.array(1, dtype), logits, labels)
    # row 0: log_softmax = 0; row 1: -2000 - log(2)
    np.testing.assert_allclose(loss, (2000 + np.log(2)) / 2, rtol=1e-6)
    np.testing.assert_allclose(grad, [[0, 0, 0], [-0.5, 0.25, 0.25]], atol=1e-7)
    assert np.isfinite(run("SoftmaxCrossEntropy", logits, np.eye(3, dtype=dtype)[[1, 2]]))


@pytest.mark.parametrize("op", ["SoftmaxCrossEntropy", "SoftmaxCrossEntropyGrad", "Accuracy"])
@pytest.mark.parametrize("bad", [3, 7, -1])
def test_out_of_range_label_is_an_input_error(op, bad):
    logits, labels = np.zeros((2, 3)), np.array([1, bad])
    inputs = (np.array(1.0), logits, labels) if op.endswith("Grad") else (logits, labels)
    with pytest.raises(InputError, match=rf"label {bad} at row 1 .*3 classes"):
        run(op, *inputs)


# ------------------------------------------------------------------ MSELoss and BCEWithLogits
def bce_reference(z: np.ndarray, t: np.ndarray) -> float:
    p = 1 / (1 + np.exp(-z))
    return float(np.mean(-(t * np.log(p) + (1 - t) * np.log(1 - p))))


@pytest.mark.parametrize("shape", SHAPES_ANY)
@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-12), (np.float32, 1e-5)])
def test_elementwise_losses_match_closed_form(shape, dtype, rtol):
    rng = np.random.default_rng(3)
    pred, target = rng.standard_normal(shape).astype(dtype), rng.random(shape).astype(dtype)
    mse, bce = run("MSELoss", pred, target), run("BCEWithLogits", pred, target)
    assert mse.shape == bce.shape == () and mse.dtype == bce.dtype == dtype
    p64, t64 = pred.astype(np.float64), target.astype(np.float64)
    np.testing.assert_allclose(mse, np.mean((p64 - t64) ** 2), rtol=rtol)
    np.testing.assert_allclose(bce, bce_reference(p64, t64), rtol=rtol)


@pytest.mark.parametrize("op", ["MSELoss", "BCEWithLogits"])
@pytest.mark.parametrize("shape", SHAPES_ANY)
def test_elementwise_loss_grads_match_finite_differences(op, shape):
    rng = np.random.default_rng(4)
    pred, target, dloss = rng.standard_normal(shape), rng.random(shape), np.array(-1.3)
    got = run(f"{op}Grad", dloss, pred, target)
    want = numerical_input_gradients(lambda a: run(op, a[0], target), [pred], dloss, [0])
    np.testing.assert_allclose(got, want[0], rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bce_extreme_logits_stay_finite(dtype):
    z, t = np.array([1000, -1000, 1000, -1000], dtype), np.array([1, 1, 0, 0], dtype)
    np.testing.assert_allclose(run("BCEWithLogits", z, t), 2000 / 4, rtol=1e-6)
    np.testing.assert_allclose(run("BCEWithLogitsGrad", np.array(1, dtype), z, t), [0, -0.25, 0.25, 0])


# ------------------------------------------------------------------ SumSquares and Accuracy
@pytest.mark.parametrize("shapes", [[(3,)], [(2, 2), ()], [(4, 1), (0,), (2, 3, 2)]])
def test_sum_squares_matches_closed_form(shapes):
    rng = np.random.default_rng(5)
    xs = [rng.standard_normal(s) for s in shapes]
    got = run("SumSquares", *xs)
    assert got.shape == () and got.dtype == np.float64
    np.testing.assert_allclose(got, sum(float((x**2).sum()) for x in xs), rtol=1e-12)
    assert run("SumSquares", *[x.astype(np.float32) for x in xs]).dtype == np.float32


SOFT_ROWS = np.array([[0.2, 0.7, 0.1], [0.5, 0.3, 0.2], [0.0, 0.4, 0.6]])  # argmax 1, 0, 2


@pytest.mark.parametrize("labels", [np.array([1, 0, 2], np.int32), np.array([1, 0, 2]), np.eye(3)[[1, 0, 2]],
                                    SOFT_ROWS])
def test_accuracy_is_the_fraction_of_matching_argmax(labels):
    logits = np.array([[0.1, 2.0, 0.3], [1.0, 1.0, 0.0], [5.0, 0.0, 4.0]])  # argmax 1, 0 (tie), 0
    got = run("Accuracy", logits, labels)
    assert got.dtype == np.float32 and got.shape == ()
    assert got == np.float32(2 / 3)


# ------------------------------------------------------------------ prepare errors
ERRORS = [
    ("SoftmaxCrossEntropy", [(3, 4), np.zeros(2, np.int64)], "expected shape \\(3,\\)"),
    ("SoftmaxCrossEntropy", [(3, 4), np.zeros((3, 5))], "logits' shape"),
    ("SoftmaxCrossEntropy", [(3, 4), np.zeros((3, 4), np.float32)], "dtypes differ"),
    ("SoftmaxCrossEntropy", [(3, 4, 1), np.zeros(3, np.int64)], "expected rank 2"),
    ("SoftmaxCrossEntropy", [np.zeros((3, 4), np.int64), np.zeros(3, np.int64)], "float tensor"),
    ("SoftmaxCrossEntropy", [(0, 4), np.zeros(0, np.int64)], "empty"),
    ("SoftmaxCrossEntropy", [(3, 4), np.zeros(3, bool)], "integer class indices"),
    ("SoftmaxCrossEntropyGrad", [(2,), (3, 4), np.zeros(3, np.int64)], "scalar"),
    ("SoftmaxCrossEntropyGrad", [np.zeros((), np.float32), (3, 4), np.zeros(3, np.int64)], "dtypes differ"),
    ("MSELoss", [(3, 4), (4, 3)], "shapes differ"),
    ("MSELoss", [(3, 4), (3, 1)], "shapes differ"),
    ("MSELoss", [(0, 4), (0, 4)], "empty"),
    ("MSELossGrad", [(), (3,), (4,)], "shapes differ"),
    ("BCEWithLogits", [(2,), np.zeros(2, np.float32)], "dtypes differ"),
    ("BCEWithLogitsGrad", [(1, 1), (1,), (1,)], "scalar"),
    ("SumSquares", [(2,), np.zeros(2, np.float32)], "dtypes differ"),
    ("SumSquares", [np.zeros(2, np.int32)], "float tensor"),
    ("Accuracy", [(3, 4), np.zeros(4, np.int64)], "expected shape \\(3,\\)"),
]


@pytest.mark.parametrize("op, inputs, message", ERRORS, ids=[f"{e[0]}-{e[2]}" for e in ERRORS])
def test_bad_shapes_and_dtypes_are_model_errors(op, inputs, message):
    arrays = [np.zeros(a) if isinstance(a, tuple) else a for a in inputs]
    with pytest.raises(ModelError, match=message):
        run(op, *arrays)


# ------------------------------------------------------------------ gradient rules
def run_nodes(nodes: list[Node], env: dict[Value, np.ndarray]) -> None:
    """Run rule-built nodes in order, reading constants from their data."""
    for node in nodes:
        inputs = [env[v] if v in env else v.data for v in node.inputs]
        outs = run_kernel(node.op_type, frozen(*inputs), node.attrs, domain=node.domain, version=node.version)
        env.update(zip(node.outputs, outs, strict=True))


@pytest.mark.parametrize("op", ["SoftmaxCrossEntropy", "MSELoss", "BCEWithLogits"])
def test_loss_rules_use_the_grad_kernel_for_the_prediction_only(op):
    ctx = GradContext(opset=17)
    pred, labels, loss, dloss = (Value(n, np.float64) for n in ("pred", "labels", "loss", "dloss"))
    node = Node(op, [pred, labels], [loss], name="loss")
    dpred, dlabels = gradient_rule(op)(ctx, node, [dloss])
    (grad_node,) = ctx.nodes
    assert (grad_node.op_type, grad_node.domain) == (f"{op}Grad", "edgerun")
    assert grad_node.inputs == [dloss, pred, labels]
    assert grad_node.outputs == [dpred] and dlabels is None
    assert gradient_rule(op)(GradContext(opset=17), node, [None]) == [None, None]


def sum_squares_rule(dtype) -> tuple[GradContext, list[Value], Value, list[Value | None]]:
    ctx = GradContext(opset=17)
    xs, dy = [Value(f"x{i}", dtype) for i in range(2)], Value("dy", dtype)
    node = Node("SumSquares", xs, [Value("y", dtype)])
    return ctx, xs, dy, gradient_rule("SumSquares")(ctx, node, [dy])


def test_sum_squares_rule_matches_finite_differences():
    rng = np.random.default_rng(6)
    xs, dy = [rng.standard_normal((2, 3)), rng.standard_normal(4)], np.array(0.3)
    ctx, x_values, dy_value, grads = sum_squares_rule(np.float64)
    env = {dy_value: dy, **dict(zip(x_values, xs, strict=True))}
    run_nodes(ctx.nodes, env)
    want = numerical_input_gradients(lambda a: run("SumSquares", *a), xs, dy, [0, 1])
    for grad, expected in zip(grads, want, strict=True):
        np.testing.assert_allclose(env[grad], expected, rtol=1e-6, atol=1e-9)


def test_sum_squares_rule_defaults_to_float32_when_dtypes_are_unknown():
    ctx, _, _, grads = sum_squares_rule(None)
    constants = [v for node in ctx.nodes for v in node.inputs if v.data is not None]
    assert [c.data.dtype for c in constants] == [np.float32] and len(grads) == 2
    assert gradient_rule("SumSquares")(ctx, Node("SumSquares", [Value("a", None)], []), [None]) == [None]

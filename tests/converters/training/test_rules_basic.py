"""Gradient rules of the elementwise, nn and shape ops: what each emits, and that its nodes compute
the gradient.

A forward node is built by hand, its rule is applied with a GradContext, and the emitted nodes are
checked for op types, attributes and wiring. The numeric section then runs the emitted nodes kernel
by kernel (no interpreter) and compares with finite differences.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgerun.converters.training.rules import GradContext, differentiable_ops, gradient_rule
from edgerun.runtime.graph import Node, Value
from edgerun.runtime.kernels import resolve
from tests.gradcheck import numerical_input_gradients, run_kernel

F32 = np.dtype(np.float32)


def forward_node(op: str, shapes: list, attrs: dict | None = None, version: int = 17) -> Node:
    """A one-output ONNX node whose inputs have the given shapes (None: unknown); an ndarray
    becomes a constant input and "omitted" an omitted optional input."""
    inputs = [
        None if isinstance(s, str)
        else Value(f"x{i}", s.dtype, s.shape, data=s) if isinstance(s, np.ndarray)
        else Value(f"x{i}", F32, s)
        for i, s in enumerate(shapes)
    ]
    return Node(op, inputs, [Value("y", F32, None)], dict(attrs or {}), f"fwd_{op}", "", version)


def apply_rule(node: Node, opset: int = 17) -> tuple[GradContext, Value, list]:
    ctx = GradContext(opset)
    dy = Value("dy", F32, None)
    grads = gradient_rule(node.op_type)(ctx, node, [dy])
    return ctx, dy, grads


def assert_wired(ctx: GradContext, node: Node, dy: Value, grads: list) -> None:
    """Every emitted input exists before its node; every gradient is dY or an emitted output."""
    known = {id(v) for v in (dy, *node.inputs, *node.outputs) if v is not None}
    for emitted in ctx.nodes:
        assert all(v is not None and id(v) in known for v in emitted.inputs), emitted
        known.update(id(v) for v in emitted.outputs)
    assert all(g is None or id(g) in known for g in grads)


SUMTO_UNKNOWN = ["SumTo", "SumTo"]
STRUCTURE = [  # op, input shapes, attrs, version, emitted op types, which inputs get no gradient
    ("Add", [None, None], {}, 17, SUMTO_UNKNOWN, []),
    ("Add", [(2, 3), (3,)], {}, 17, SUMTO_UNKNOWN, []),
    ("Add", [(2, 3), (2, 3)], {}, 17, [], []),
    ("Add", [(-1, 3), (-1, 3)], {}, 17, SUMTO_UNKNOWN, []),
    ("Sub", [None, None], {}, 17, ["SumTo", "SumTo", "Neg"], []),
    ("Sub", [(4,), (4,)], {}, 17, ["Neg"], []),
    ("Mul", [(2, 3), (3,)], {}, 17, ["Mul", "SumTo", "Mul", "SumTo"], []),
    ("Div", [(2, 3), (3,)], {}, 17, ["Div", "Mul", "SumTo", "SumTo", "Neg"], []),
    ("Neg", [None], {}, 17, ["Neg"], []),
    ("Relu", [None], {}, 17, ["ReluGrad"], []),
    ("LeakyRelu", [None], {"alpha": 0.2}, 16, ["LeakyReluGrad"], []),
    ("Sigmoid", [None], {}, 17, ["SigmoidGrad"], []),
    ("Tanh", [None], {}, 17, ["TanhGrad"], []),
    ("Softmax", [None], {}, 13, ["SoftmaxGrad"], []),
    ("Softmax", [None], {"axis": 2}, 11, ["SoftmaxGrad"], []),
    ("LogSoftmax", [None], {"axis": 0}, 17, ["LogSoftmaxGrad"], []),
    ("Gemm", [None, None, None], {"transB": 1}, 17, ["GemmGrad"], []),
    ("Gemm", [None, None], {}, 17, ["GemmGrad"], []),
    ("Gemm", [None, None, "omitted"], {}, 17, ["GemmGrad"], [2]),
    ("MatMul", [None, None], {}, 17, ["MatMulGrad"], []),
    ("Reshape", [None, np.array([-1], np.int64)], {}, 17, ["ReshapeLike"], [1]),
    ("Flatten", [None], {"axis": 2}, 17, ["ReshapeLike"], []),
    ("Transpose", [None], {}, 17, ["Transpose"], []),
    ("Transpose", [None], {"perm": [0, 2, 3, 1]}, 17, ["Transpose"], []),
    ("Concat", [None, None, None], {"axis": 1}, 17, ["ConcatGrad"], []),
    ("Concat", [None], {"axis": 0}, 17, ["ConcatGrad"], []),
    ("Identity", [None], {}, 17, [], []),
]


def params(cases: list[tuple]) -> list:
    """pytest params named op+version-shapes-attrs."""
    return [pytest.param(*c, id=f"{c[0]}{c[3]}-{c[1]}-{c[2]}".replace(" ", "")) for c in cases]


@pytest.mark.parametrize("op, shapes, attrs, version, emitted, no_grad", params(STRUCTURE))
def test_rule_structure(op, shapes, attrs, version, emitted, no_grad):
    node = forward_node(op, shapes, attrs, version)
    ctx, dy, grads = apply_rule(node)
    assert len(grads) == len(node.inputs)
    assert [i for i, g in enumerate(grads) if g is None] == no_grad
    assert [n.op_type for n in ctx.nodes] == emitted
    assert_wired(ctx, node, dy, grads)
    for n in ctx.nodes:  # every emitted node has a kernel at its version
        resolve(n.domain, n.op_type, n.version, n.name)
        assert n.version == (17 if n.domain == "" else 1)


def only_node(op: str, shapes: list, attrs: dict | None = None, version: int = 17) -> tuple[Node, Node, list]:
    node = forward_node(op, shapes, attrs, version)
    ctx, _, grads = apply_rule(node)
    (emitted,) = ctx.nodes
    return node, emitted, grads


@pytest.mark.parametrize("op, reads", [
    ("Relu", "input"), ("LeakyRelu", "input"), ("Sigmoid", "output"), ("Tanh", "output"),
    ("Softmax", "output"), ("LogSoftmax", "output"),
])
def test_activation_grads_read_the_right_forward_tensor(op, reads):
    node, emitted, _ = only_node(op, [None])
    assert emitted.domain == "edgerun"
    assert emitted.inputs[0].name == "dy"
    assert emitted.inputs[1] is (node.inputs[0] if reads == "input" else node.outputs[0])


def test_leaky_relu_passes_alpha_with_onnx_default():
    assert only_node("LeakyRelu", [None], {"alpha": 0.2})[1].attrs == {"alpha": 0.2}
    assert only_node("LeakyRelu", [None])[1].attrs == {"alpha": 0.01}


@pytest.mark.parametrize("version, attrs, want", [
    (13, {}, {"axis": -1, "flatten": 0}),
    (13, {"axis": 1}, {"axis": 1, "flatten": 0}),
    (11, {}, {"axis": 1, "flatten": 1}),
    (11, {"axis": -1}, {"axis": -1, "flatten": 1}),
    (1, {"axis": 2}, {"axis": 2, "flatten": 1}),
])
@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
def test_softmax_grads_follow_the_forward_axis_semantics(op, version, attrs, want):
    assert only_node(op, [None], attrs, version)[1].attrs == want


@pytest.mark.parametrize("inputs, outputs", [(3, 3), (2, 2)])
def test_gemm_grad_has_an_output_per_present_input(inputs, outputs):
    attrs = {"alpha": 0.5, "beta": 2.0, "transA": 1, "transB": 0}
    node, emitted, grads = only_node("Gemm", [None] * inputs, attrs)
    assert emitted.inputs[1:] == node.inputs and len(emitted.outputs) == outputs
    assert emitted.attrs == attrs
    assert grads == emitted.outputs


@pytest.mark.parametrize("perm, want", [(None, None), ([0, 2, 3, 1], [0, 3, 1, 2]), ([1, 2, 0], [2, 0, 1])])
def test_transpose_grad_uses_the_inverse_permutation(perm, want):
    _, emitted, _ = only_node("Transpose", [None], {} if perm is None else {"perm": perm})
    assert emitted.domain == "" and emitted.attrs.get("perm") == want


def test_concat_grad_splits_into_one_output_per_input():
    node, emitted, grads = only_node("Concat", [None, None, None], {"axis": -1})
    assert emitted.attrs == {"axis": -1} and emitted.inputs[1:] == node.inputs
    assert grads == emitted.outputs and len(grads) == 3


def test_no_upstream_gradient_gives_no_input_gradients():
    for op in differentiable_ops():
        if op not in {case[0] for case in STRUCTURE}:
            continue  # another module's rule
        node = forward_node(op, [None, None] if op in {"Add", "Sub", "Mul", "Div", "MatMul"} else [None])
        ctx = GradContext(17)
        assert gradient_rule(op)(ctx, node, [None]) == [None] * len(node.inputs)
        assert ctx.nodes == []


def test_every_op_here_has_a_rule():
    assert {case[0] for case in STRUCTURE} <= set(differentiable_ops())


# --- numeric: run the emitted nodes kernel by kernel -------------------------------------------

NUMERIC = [  # op, input shapes (an ndarray is a constant input), attrs, version
    ("Add", [(2, 3, 4), (3, 1)], {}, 17),
    ("Sub", [(4,), (2, 4)], {}, 17),
    ("Mul", [(2, 1, 4), (3, 1)], {}, 17),
    ("Div", [(2, 3), (3,)], {}, 17),
    ("Neg", [(3,)], {}, 17),
    ("Relu", [(3, 4)], {}, 17),
    ("LeakyRelu", [(3, 4)], {"alpha": 0.2}, 16),
    ("Sigmoid", [(3, 4)], {}, 17),
    ("Tanh", [(3, 4)], {}, 17),
    ("Softmax", [(2, 3, 4)], {"axis": 1}, 11),
    ("Softmax", [(2, 3, 4)], {"axis": 1}, 13),
    ("LogSoftmax", [(2, 3, 4)], {}, 17),
    ("Gemm", [(4, 3), (5, 4), (5,)], {"transA": 1, "transB": 1, "alpha": 0.5, "beta": 2.0}, 17),
    ("Gemm", [(3, 4), (4, 5)], {}, 17),
    ("MatMul", [(2, 1, 3, 4), (5, 4, 2)], {}, 17),
    ("Reshape", [(2, 3, 4), np.array([4, -1], np.int64)], {}, 17),
    ("Flatten", [(2, 3, 4)], {"axis": 2}, 17),
    ("Transpose", [(2, 3, 4)], {"perm": [1, 2, 0]}, 17),
    ("Transpose", [(2, 3, 4)], {}, 17),
    ("Concat", [(2, 3), (2, 1), (2, 2)], {"axis": -1}, 17),
    ("Identity", [(3,)], {}, 17),
]


def run_node(node: Node, env: dict[int, np.ndarray]) -> list[np.ndarray]:
    arrays = [env[id(v)] if id(v) in env else v.data for v in node.inputs]
    constants = [i for i, v in enumerate(node.inputs) if v.data is not None]
    return run_kernel(node.op_type, arrays, node.attrs, domain=node.domain, version=node.version,
                      constants=constants, num_outputs=len(node.outputs))


def bind(values: list[Value], arrays: list[np.ndarray]) -> dict[int, np.ndarray]:
    return {id(v): a for v, a in zip(values, arrays, strict=True)}


@pytest.mark.parametrize("op, shapes, attrs, version", params(NUMERIC))
def test_rule_computes_the_gradient(op, shapes, attrs, version):
    rng = np.random.default_rng(0)
    node = forward_node(op, shapes, attrs, version)
    wrt = [i for i, s in enumerate(shapes) if not isinstance(s, np.ndarray)]
    low = 0.5 if op == "Div" else -1.0  # keep Div away from 0
    xs = [s if isinstance(s, np.ndarray) else rng.uniform(low, 1.5, s) for s in shapes]
    forward = lambda arrays: run_node(node, bind(node.inputs, arrays))[0]  # noqa: E731
    y = forward(xs)
    dy = rng.standard_normal(y.shape)
    ctx, dy_value, grads = apply_rule(node, opset=version)
    env = bind([*node.inputs, node.outputs[0], dy_value], [*xs, y, dy])
    for emitted in ctx.nodes:
        env.update((id(v), a) for v, a in zip(emitted.outputs, run_node(emitted, env), strict=True))
    want = numerical_input_gradients(forward, xs, dy, wrt)
    for i, expected in zip(wrt, want, strict=True):
        np.testing.assert_allclose(env[id(grads[i])], expected, rtol=1e-6, atol=1e-8, err_msg=f"input {i}")

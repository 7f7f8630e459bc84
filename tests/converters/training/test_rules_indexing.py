"""Gradient rules of the indexing, re-shaping and reducing ops (Gather, Slice, Split, Pad, Expand,
Squeeze, Unsqueeze, ReduceSum, ReduceMean, LayerNormalization): what each emits, that the
emitted nodes compute the gradient (run through the interpreter, against float64 central finite
differences of the forward kernel) and, whole-model, an embedding model trained by make_trainable
against a numpy closed form."""

from __future__ import annotations

import numpy as np
import pytest

import edgerun.converters.training.rules.indexing  # noqa: F401  (registers the rules)
import edgerun.converters.training.rules.reduce  # noqa: F401
import edgerun.runtime.kernels.normalization_grad  # noqa: F401  (registers the kernels)
import edgerun.runtime.kernels.shape_grad  # noqa: F401
from edgerun.converters.training import make_trainable
from edgerun.converters.training.rules import GradContext, differentiable_ops, gradient_rule
from edgerun.runtime import GraphBuilder, Interpreter, serialize
from edgerun.runtime.errors import ModelError
from edgerun.runtime.graph import Graph, Node, Value
from edgerun.runtime.kernels import TensorSpec, resolve
from tests.gradcheck import numerical_gradient, run_kernel


def ints(*values) -> np.ndarray:
    return np.asarray(values, np.int64)


def idx(data) -> np.ndarray:
    """Gather indices of any shape (a constant input)."""
    return np.asarray(data, np.int64)


class Case:
    """A forward node: `inputs` are shapes (float inputs that take a gradient), int arrays
    (constant inputs) or None (omitted); `grads` says which outputs get an upstream gradient."""

    def __init__(self, op, inputs, attrs=None, version=17, outputs=1, grads=None):
        self.op, self.inputs, self.attrs, self.version = op, inputs, dict(attrs or {}), version
        self.outputs = outputs
        self.grads = [True] * outputs if grads is None else grads

    def __repr__(self) -> str:
        shown = [s if isinstance(s, tuple | type(None)) else s.tolist() for s in self.inputs]
        return f"{self.op}{self.version}-{shown}-{self.attrs}-{self.grads}".replace(" ", "")

    def floats(self) -> list[int]:
        return [i for i, s in enumerate(self.inputs) if isinstance(s, tuple)]

    def node(self, dtype=np.float64) -> Node:
        values = [None if s is None else Value(f"x{i}", dtype, s) if isinstance(s, tuple)
                  else Value(f"x{i}", s.dtype, s.shape, data=s) for i, s in enumerate(self.inputs)]
        outputs = [Value(f"y{k}", None, None) for k in range(self.outputs)]
        return Node(self.op, values, outputs, dict(self.attrs), f"fwd_{self.op}", "", self.version)

    def forward(self, arrays: list) -> list[np.ndarray]:
        """The forward kernel's outputs (run as a node with `outputs` outputs would run it)."""
        kernel = resolve("", self.op, self.version, "test")("Test", "test", dict(self.attrs), self.version)
        kernel.num_outputs = self.outputs
        specs = [None if a is None else TensorSpec(a.dtype, a.shape) for a in arrays]
        outputs = [np.empty(s.shape, s.dtype) for s in kernel.prepare(specs, list(arrays))[: self.outputs]]
        kernel.run(arrays, outputs)
        return outputs


def backward(case: Case, dtype=np.float64, shapes=None) -> tuple[GradContext, Node, list, list]:
    """Apply the rule to the case's node; returns (ctx, node, dY values, input gradients)."""
    node = case.node(dtype)
    shapes = shapes or [None] * case.outputs
    dys = [Value(f"dy{k}", dtype, shapes[k]) if want else None for k, want in enumerate(case.grads)]
    ctx = GradContext(case.version)
    return ctx, node, dys, gradient_rule(case.op)(ctx, node, dys)


def run_gradients(case: Case, xs: list, upstream: list, dtype) -> dict[int, np.ndarray]:
    """The rule's gradients for the float inputs, by running its nodes through the interpreter."""
    ctx, node, dys, grads = backward(case, dtype, [None if u is None else u.shape for u in upstream])
    wanted = {i: grads[i] for i in case.floats() if grads[i] is not None}
    feeds = {node.inputs[i].name: xs[i].astype(dtype) for i in case.floats()}
    feeds.update({v.name: u.astype(dtype) for v, u in zip(dys, upstream, strict=True) if v is not None})
    outputs = list({id(g): g for g in wanted.values()}.values())
    inputs = [node.inputs[i] for i in case.floats()] + [v for v in dys if v is not None]
    graph = Graph("grad", [node, *ctx.nodes], inputs, outputs)
    results = Interpreter(graph, device="cpu").run(feeds)
    return {i: results[g.name] for i, g in wanted.items()}


def inputs_and_upstream(case: Case, seed: int = 0) -> tuple[list, list]:
    rng = np.random.default_rng(seed)
    xs = [rng.uniform(-1.0, 1.5, s) if isinstance(s, tuple) else s for s in case.inputs]
    ys = case.forward(xs)
    return xs, [rng.standard_normal(y.shape) if want else None for y, want in zip(ys, case.grads, strict=True)]


def finite_differences(case: Case, xs: list, upstream: list, i: int) -> np.ndarray:
    def loss(x: np.ndarray) -> float:
        args = list(xs)
        args[i] = x
        ys = case.forward(args)
        return float(sum(np.sum(y * u) for y, u in zip(ys, upstream, strict=True) if u is not None))

    return numerical_gradient(loss, xs[i])


CASES = [
    # Gather: any axis, negative and repeated indices, a scalar index
    Case("Gather", [(5, 3), idx([[0, 2, 2], [4, -1, 0]])]),
    Case("Gather", [(2, 5, 3), idx([1, -2, 1, 1])], {"axis": 1}, version=11),
    Case("Gather", [(2, 3, 4), idx(2)], {"axis": -1}),
    Case("Gather", [(4,), idx([[3, 3], [0, -4]])], version=1),
    # Slice: negative, clamped, stepped (also backwards), omitted axes/steps, the attribute form
    Case("Slice", [(5, 6), ints(1, -4), ints(4, 100), ints(0, 1)], version=13),
    Case("Slice", [(5, 6), ints(-1), ints(-100), ints(0), ints(-2)], version=13),
    Case("Slice", [(4, 5, 6), ints(0, 1), ints(10, -1), ints(-1, 1), ints(2, 3)], version=13),
    Case("Slice", [(4, 5), ints(1), ints(3)], version=10),
    Case("Slice", [(4, 5), ints(3, 0), ints(0, 9), None, ints(-1, 2)], version=13),
    Case("Slice", [(4, 5)], {"starts": [1, -3], "ends": [3, 1000], "axes": [1, 0]}, version=9),
    Case("Slice", [(4, 5)], {"starts": [1], "ends": [-1]}, version=1),
    # Split: sizes as input or attribute, equal parts, num_outputs, outputs without a gradient
    Case("Split", [(6, 4), ints(2, 4)], version=13, outputs=2),
    Case("Split", [(4, 6)], {"axis": -1}, version=13, outputs=3),
    Case("Split", [(4, 6)], {"axis": -1}, version=13, outputs=3, grads=[False, True, False]),
    Case("Split", [(2, 7)], {"axis": 1, "num_outputs": 3}, version=18, outputs=3, grads=[True, False, True]),
    Case("Split", [(3, 3), ints(1, 2)], {"axis": 1}, version=18, outputs=2, grads=[False, True]),
    Case("Split", [(2, 3)], {"axis": 1, "split": [1, 2]}, version=11, outputs=2),
    Case("Split", [(2, 3)], {"axis": -1, "split": [2, 1]}, version=2, outputs=2),
    # Pad: every mode, negative pads, the constant value (a float input: it takes a gradient)
    Case("Pad", [(3, 4), ints(1, 0, 2, -1), ()], version=13),
    Case("Pad", [(3, 4), ints(0, 2, 1, 1)], version=13),
    Case("Pad", [(3, 4), ints(-1, 2, 0, 1), None, ints(1, 0)], version=18),
    Case("Pad", [(3, 4), ints(2, 1, 1, 3)], {"mode": "reflect"}, version=13),
    Case("Pad", [(3, 4), ints(0, 5, 0, 0)], {"mode": "reflect"}, version=13),
    Case("Pad", [(2, 3, 2), ints(1, 0, 2, 0, 3, 1)], {"mode": "edge"}, version=13),
    Case("Pad", [(3, 4), ints(-1, 2, 0, 1)], {"mode": "edge"}, version=13),
    Case("Pad", [(3, 4), ints(1, 2, 3, 1)], {"mode": "wrap"}, version=19),
    Case("Pad", [(2, 3, 4), ints(1, 2, 0, 1), None, ints(-1, 0)], {"mode": "reflect"}, version=18),
    Case("Pad", [(2, 3)], {"pads": [1, 0, 0, 2], "value": 1.5}, version=2),
    # Expand, Squeeze, Unsqueeze
    Case("Expand", [(3, 1), ints(2, 3, 4)]),
    Case("Expand", [(4,), ints(3, 1, 1)]),
    Case("Expand", [(2, 1, 3), ints(1)]),
    Case("Squeeze", [(3, 1, 4, 1), ints(1, -1)], version=13),
    Case("Squeeze", [(1, 3, 1)], version=13),
    Case("Squeeze", [(3, 1, 2)], {"axes": [-2]}, version=11),
    Case("Unsqueeze", [(3, 4), ints(0, -1)], version=13),
    Case("Unsqueeze", [(3, 4)], {"axes": [1]}, version=11),
    # ReduceSum / ReduceMean: axes as attribute or input, keepdims, noop_with_empty_axes
    Case("ReduceSum", [(2, 3, 4), ints(1, -1)], {"keepdims": 0}, version=13),
    Case("ReduceSum", [(2, 3, 4), ints(0)], version=13),
    Case("ReduceSum", [(2, 3, 4)], {"keepdims": 0}, version=13),
    Case("ReduceSum", [(2, 3), np.zeros(0, np.int64)], {"noop_with_empty_axes": 1}, version=13),
    Case("ReduceSum", [(2, 3, 4)], {"axes": [-2], "keepdims": 0}, version=11),
    Case("ReduceSum", [(2, 3)], {}, version=11),
    Case("ReduceMean", [(2, 3, 4), ints(-1, 0)], {"keepdims": 0}, version=18),
    Case("ReduceMean", [(2, 3, 4)], {"keepdims": 0}, version=18),
    Case("ReduceMean", [(2, 3), np.zeros(0, np.int64)], {"noop_with_empty_axes": 1, "keepdims": 0}, version=18),
    Case("ReduceMean", [(2, 3, 4)], {"axes": [1]}, version=17),
    Case("ReduceMean", [(2, 3, 4)], {"axes": [0, 2], "keepdims": 0}, version=13),
    Case("ReduceMean", [(3, 4)], {}, version=13),
    # LayerNormalization: axes, epsilon, Scale broadcast, B omitted, gradients into Mean/InvStdDev
    Case("LayerNormalization", [(2, 3, 4), (4,), (4,)]),
    Case("LayerNormalization", [(2, 3, 4), (3, 4)], {"axis": 1, "epsilon": 0.1}, outputs=3),
    Case("LayerNormalization", [(2, 3, 4), (4,), (1, 4)], {"axis": -2}, outputs=3, grads=[True, False, True]),
    Case("LayerNormalization", [(3, 5), (5,), (5,)], {"axis": 0}, outputs=2, grads=[False, True]),
    Case("LayerNormalization", [(3, 5), (1,)], {"epsilon": 1e-3}, outputs=3, grads=[False, False, True]),
]


def params(cases):
    return [pytest.param(c, id=repr(c)) for c in cases]


@pytest.mark.parametrize("case", params(CASES))
def test_rule_computes_the_gradient(case):
    xs, upstream = inputs_and_upstream(case)
    got = run_gradients(case, xs, upstream, np.float64)
    assert sorted(got) == case.floats()
    for i in case.floats():
        want = finite_differences(case, xs, upstream, i)
        np.testing.assert_allclose(got[i], want, rtol=1e-6, atol=1e-8, err_msg=f"input {i}")


@pytest.mark.parametrize("case", params(CASES))
def test_rule_runs_in_float32(case):
    xs, upstream = inputs_and_upstream(case, seed=1)
    exact = run_gradients(case, xs, upstream, np.float64)
    single = run_gradients(case, xs, upstream, np.float32)
    for i, grad in single.items():
        assert grad.dtype == np.float32
        np.testing.assert_allclose(grad, exact[i], rtol=1e-4, atol=1e-5, err_msg=f"input {i}")


# --- structure: what each rule emits -----------------------------------------------------------

STRUCTURE = [  # case, emitted op types
    (CASES[0], ["GatherGrad"]),
    (CASES[4], ["SliceGrad"]),
    (CASES[9], ["SliceGrad"]),
    (CASES[11], ["Concat"]),
    (CASES[13], ["SplitGrad"]),
    (CASES[17], ["SplitGrad"]),  # a negative axis before opset 11: Concat would not take it
    (CASES[18], ["Pad", "ReduceSum", "ReduceSum", "Sub", "ReshapeLike"]),
    (CASES[19], ["Pad"]),
    (CASES[21], ["PadGrad"]),
    (CASES[27], ["Pad"]),
    (CASES[28], ["SumTo"]),
    (CASES[31], ["ReshapeLike"]),
    (CASES[34], ["ReshapeLike"]),
    (CASES[36], ["ReduceSumGrad"]),
    (CASES[43], ["ReduceMeanGrad"]),
    (CASES[48], ["LayerNormalizationGrad"]),
]


@pytest.mark.parametrize("case, emitted", [pytest.param(c, e, id=repr(c)) for c, e in STRUCTURE])
def test_rule_structure(case, emitted):
    ctx, node, dys, grads = backward(case)
    assert [n.op_type for n in ctx.nodes] == emitted
    assert len(grads) == len(node.inputs)
    assert [i for i, g in enumerate(grads) if g is not None] == case.floats()
    known = {id(v) for v in (*dys, *node.inputs, *node.outputs) if v is not None}
    for made in ctx.nodes:  # each input exists before its node; each node has a kernel
        assert all(v is None or id(v) in known or v.is_constant for v in made.inputs), made
        known.update(id(v) for v in made.outputs)
        resolve(made.domain, made.op_type, made.version, made.name)
    assert all(g is None or id(g) in known for g in grads)


def test_gather_grad_gets_the_axis_and_the_forward_indices():
    case = Case("Gather", [(2, 5), idx([1, 1])], {"axis": -1})
    ctx, node, dys, _ = backward(case)
    (made,) = ctx.nodes
    assert made.attrs == {"axis": -1} and made.inputs == [dys[0], *node.inputs]


def test_pad_constant_value_that_needs_no_gradient_costs_nothing():
    ctx, node, _, _ = backward(CASES[18])
    ctx2 = GradContext(13)
    ctx2.needs_grad = lambda v: v is not node.inputs[2]
    grads = gradient_rule("Pad")(ctx2, node, [Value("dy", np.float64, None)])
    assert [n.op_type for n in ctx2.nodes] == ["Pad"] and grads[1:] == [None, None]
    assert list(ctx2.nodes[0].inputs[1].data) == [-1, 0, -2, 1]


def test_pad_pads_computed_at_run_time_are_negated_by_a_node():
    x, pads, dy = Value("x", np.float64, (3, 4)), Value("pads", np.int64, (4,)), Value("dy", np.float64, (6, 3))
    node = Node("Pad", [x, pads], [Value("y", None, None)], {}, "pad", "", 13)
    ctx = GradContext(13)
    (dx, _) = gradient_rule("Pad")(ctx, node, [dy])
    assert [n.op_type for n in ctx.nodes] == ["Neg", "Pad"]
    upstream = np.arange(18.0).reshape(6, 3)
    got = Interpreter(Graph("g", ctx.nodes, [pads, dy], [dx]), device="cpu").run(
        {"pads": ints(1, 0, 2, -1), "dy": upstream})[dx.name]
    np.testing.assert_array_equal(got, np.pad(upstream[1:4], [(0, 0), (0, 1)]))


@pytest.mark.parametrize("case", params(CASES[::4]))
def test_no_upstream_gradient_gives_no_input_gradients(case):
    node = case.node()
    ctx = GradContext(case.version)
    assert gradient_rule(case.op)(ctx, node, [None] * case.outputs) == [None] * len(node.inputs)
    assert ctx.nodes == []


def test_every_op_here_has_a_rule():
    assert {c.op for c in CASES} <= set(differentiable_ops())


# --- the kernels' checks --------------------------------------------------------------------------

@pytest.mark.parametrize("op, inputs, attrs, message", [
    ("GatherGrad", [np.ones((2, 3)), np.ones((4, 3)), ints(0, 4)], {}, "out of range"),
    ("GatherGrad", [np.ones((3, 3)), np.ones((4, 3)), ints(0, 1)], {}, "forward output"),
    ("SliceGrad", [np.ones((2, 3)), np.ones((4, 3)), ints(0), ints(3)], {}, "forward output"),
    ("SplitGrad", [np.ones((4, 3)), ints(1, 3), np.ones((1, 2))], {}, "pieces"),
    ("SplitGrad", [np.ones((4, 3)), ints(1, 3), np.ones((1, 2)), None], {}, "dY1"),
    ("PadGrad", [np.ones((3, 3)), np.ones((2, 3)), ints(1, 0, 1, 0)], {"mode": "edge"}, "forward output"),
    ("ReduceMeanGrad", [np.ones((2, 3)), np.ones((2, 3, 4)), ints(1)], {}, "forward output"),
    ("LayerNormalizationGrad", [None, np.ones((2, 3)), np.ones(3)], {}, "at least one"),
])
def test_gradient_kernels_reject_what_the_forward_does_not_make(op, inputs, attrs, message):
    with pytest.raises(ModelError, match=message):
        run_kernel(op, inputs, attrs, domain="edgerun", constants=range(len(inputs)))


@pytest.mark.parametrize("pads, axes", [(ints(1, 0, 2, -1), None), (ints(-1, 2, 0, 1), ints(1, 0))])
def test_pad_grad_in_constant_mode_crops_like_the_negated_pad(pads, axes):
    """The rule crops constant-mode dY with Pad; PadGrad gives the same."""
    x, rng = np.zeros((3, 4)), np.random.default_rng(3)
    extra = [] if axes is None else [None, axes]
    dy = rng.standard_normal(run_kernel("Pad", [x, pads, *extra], version=18, constants=range(2 + len(extra)))[0].shape)
    want = run_kernel("Pad", [dy, -pads, *extra], version=18, constants=range(1, 2 + len(extra)))[0]
    got = run_kernel("PadGrad", [dy, x, pads] + extra[1:], {"mode": "constant"}, domain="edgerun",
                     constants=range(1, 3 + len(extra[1:])))[0]
    np.testing.assert_array_equal(got, want)


def test_gather_grad_accumulates_repeated_rows_and_leaves_the_others_zero():
    dy = np.arange(6.0).reshape(3, 2)
    dx = run_kernel("GatherGrad", [dy, np.zeros((4, 2)), ints(2, -2, 0)], domain="edgerun")[0]
    np.testing.assert_array_equal(dx, [[4, 5], [0, 0], [2, 4], [0, 0]])


# --- whole model: an embedding language-model head --------------------------------------------------

def embedding_head(vocab: int, dim: int, classes: int, seq: int, opset: int, rng) -> Graph:
    """tokens (N, seq) -> Gather(embedding) -> ReduceMean over the sequence -> Gemm -> logits."""
    g = GraphBuilder("embedding_head", opset=opset)
    tokens = g.input("tokens", np.int64, (-1, seq))
    table = g.constant("embedding", rng.standard_normal((vocab, dim)))
    w = g.constant("head.weight", rng.standard_normal((classes, dim)) * 0.5)
    b = g.constant("head.bias", rng.standard_normal(classes) * 0.1)
    h = g.op("Gather", [table, tokens], name="embed")
    if opset >= 18:
        h = g.op("ReduceMean", [h, g.constant("seq_axis", ints(1))], name="pool", keepdims=0)
    else:
        h = g.op("ReduceMean", [h], name="pool", axes=[1], keepdims=0)
    g.output(g.op("Gemm", [h, w, b], name="head", transB=1), "logits")
    return g.build()


@pytest.mark.parametrize("opset", [17, 18])
def test_embedding_head_trains_the_embedding_like_the_closed_form(opset):
    rng = np.random.default_rng(5)
    vocab, dim, classes, seq, n, lr = 9, 4, 3, 5, 6, 0.5
    graph = embedding_head(vocab, dim, classes, seq, opset, rng)
    it = Interpreter(serialize(make_trainable(graph, optimizer=("sgd", {"lr": lr}))))
    assert set(it.signatures["save"].outputs) == {"embedding", "head.weight", "head.bias"}
    tokens = rng.integers(0, vocab - 3, (n, seq))  # the last three rows are never looked up
    tokens[0, :2] = -1  # negative indices count from the back: row vocab - 1 is used after all
    labels = rng.integers(0, classes, n)
    before = it.run({}, "save")

    table, w, b = before["embedding"], before["head.weight"], before["head.bias"]
    h = table[tokens].mean(axis=1)
    logits = h @ w.T + b
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    loss = -np.mean(np.log(p[np.arange(n), labels]))
    d_logits = (p - np.eye(classes)[labels]) / n
    d_table = np.zeros_like(table)
    np.add.at(d_table, tokens, np.repeat((d_logits @ w)[:, None, :] / seq, seq, axis=1))

    out = it.run({"tokens": tokens, "labels": labels, "learning_rate": np.asarray(lr)}, "train")
    after = it.run({}, "save")
    assert float(out["loss"]) == pytest.approx(loss, rel=1e-12)
    np.testing.assert_allclose(after["embedding"], table - lr * d_table, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(after["head.weight"], w - lr * d_logits.T @ h, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(after["head.bias"], b - lr * d_logits.sum(axis=0), rtol=1e-12, atol=1e-14)
    untouched = [vocab - 3, vocab - 2]
    np.testing.assert_array_equal(after["embedding"][untouched], table[untouched])
    assert not np.array_equal(after["embedding"][vocab - 1], table[vocab - 1])


def normalized_head(rng) -> Graph:
    """tokens (N, 6) -> Gather -> LayerNormalization -> Slice (every other position from 1) ->
    Pad (edge, one more position) -> ReduceSum over positions -> Gemm -> logits."""
    g = GraphBuilder("normalized_head", opset=18)
    tokens = g.input("tokens", np.int64, (-1, 6))
    h = g.op("Gather", [g.constant("embedding", rng.standard_normal((7, 4))), tokens], name="embed")
    h = g.op("LayerNormalization", [h, g.constant("norm.scale", rng.uniform(0.5, 1.5, 4)),
                                    g.constant("norm.bias", rng.standard_normal(4) * 0.1)], name="norm")
    h = g.op("Slice", [h, g.constant("starts", ints(1)), g.constant("ends", ints(100)), g.constant("axes", ints(1)),
                       g.constant("steps", ints(2))], name="every_other")
    h = g.op("Pad", [h, g.constant("pads", ints(0, 0, 0, 0, 1, 0))], name="pad", mode="edge")
    h = g.op("ReduceSum", [h, g.constant("seq_axis", ints(1))], name="pool", keepdims=0)
    w, b = g.constant("head.weight", rng.standard_normal((3, 4)) * 0.5), g.constant("head.bias", np.zeros(3))
    g.output(g.op("Gemm", [h, w, b], name="head", transB=1), "logits")
    return g.build()


def test_normalized_head_step_matches_finite_differences_of_the_train_loss():
    rng = np.random.default_rng(8)
    it = Interpreter(serialize(make_trainable(normalized_head(rng), optimizer=("sgd", {"lr": 1.0}))))
    names = ["embedding", "norm.scale", "norm.bias", "head.weight", "head.bias"]
    assert sorted(it.signatures["save"].outputs) == sorted(names)
    feeds = {"tokens": rng.integers(-2, 4, (3, 6)), "labels": rng.integers(0, 3, 3)}
    start = it.run({}, "save")

    def loss_at(name: str, value: np.ndarray) -> float:
        it.run({**start, name: value}, "restore")
        return float(it.run(feeds, "train")["loss"])

    numeric = {n: numerical_gradient(lambda v, n=n: loss_at(n, v), start[n]) for n in names}
    it.run(start, "restore")
    it.run(feeds, "train")  # one SGD step with lr 1: new = old - gradient
    after = it.run({}, "save")
    for name in names:
        np.testing.assert_allclose(start[name] - after[name], numeric[name], rtol=1e-6, atol=1e-8, err_msg=name)
    assert np.array_equal(after["embedding"][4], start["embedding"][4])  # tokens in [-2, 4) skip row 4

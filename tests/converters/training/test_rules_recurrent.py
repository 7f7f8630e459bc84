"""Gradient rules of RNN, GRU and LSTM (RNNGrad, GRUGrad, LSTMGrad): the node each rule emits, its
gradients against float64 central finite differences of the forward kernel over directions,
layouts, activations, clip, linear_before_reset, input_forget, omitted optional inputs and which
outputs feed the loss, and whole models trained one SGD step through the interpreter."""

from __future__ import annotations

import numpy as np
import pytest

import edgerun.converters.training.rules.recurrent  # noqa: F401  (registers the rules)
import edgerun.runtime.kernels.recurrent_grad  # noqa: F401  (registers the kernels)
from edgerun.converters.training import make_trainable
from edgerun.converters.training.rules import TRAINING_DOMAIN, GradContext, gradient_rule
from edgerun.runtime import GraphBuilder, Interpreter, serialize
from edgerun.runtime.errors import ModelError
from edgerun.runtime.graph import Node, Value
from edgerun.runtime.kernels.recurrent import _ACTIVATIONS
from edgerun.runtime.kernels.recurrent_grad import _DERIVATIVES, Activation
from tests.gradcheck import check_sgd_step, numerical_gradient, run_kernel

GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}
SLOTS = {"RNN": 6, "GRU": 6, "LSTM": 8}  # forward input slots
OUTPUTS = {"RNN": 2, "GRU": 2, "LSTM": 3}
FLOAT_SLOTS = {"RNN": [0, 1, 2, 3, 5], "GRU": [0, 1, 2, 3, 5], "LSTM": [0, 1, 2, 3, 5, 6, 7]}
NAMES = ["X", "W", "R", "B", "sequence_lens", "initial_h", "initial_c", "P"]


def make_inputs(op: str, attrs: dict, present: str, seq=3, batch=2, size=3, hidden=2, lengths=None,
                seed=0, dtype=np.float64) -> list[np.ndarray | None]:
    """Random forward inputs: X, W, R always; the optional ones named in `present` (comma-separated
    from NAMES), else None; trailing omitted ones dropped."""
    rng = np.random.default_rng(seed)
    dirs = 2 if attrs.get("direction") == "bidirectional" else 1
    layout = attrs.get("layout", 0)
    gates = GATES[op] * hidden
    state = (dirs, batch, hidden) if layout == 0 else (batch, dirs, hidden)
    shapes = {"X": (seq, batch, size) if layout == 0 else (batch, seq, size), "W": (dirs, gates, size),
              "R": (dirs, gates, hidden), "B": (dirs, 2 * gates), "initial_h": state, "initial_c": state,
              "P": (dirs, 3 * hidden)}
    wanted = {"X", "W", "R", *filter(None, present.split(","))}
    arrays = []
    for name in NAMES[: SLOTS[op]]:
        if name not in wanted:
            arrays.append(None)
        elif name == "sequence_lens":
            arrays.append(np.asarray(lengths if lengths is not None else [seq, seq - 1][:batch], np.int32))
        else:
            arrays.append(rng.standard_normal(shapes[name]).astype(dtype))
    while arrays[-1] is None:
        arrays.pop()
    return arrays


def forward_node(op: str, arrays: list, attrs: dict, outputs: int) -> Node:
    inputs = [None if a is None else Value(NAMES[i], a.dtype, a.shape) for i, a in enumerate(arrays)]
    outs = [Value(f"{op}:out{i}", np.dtype(np.float64), None) for i in range(outputs)]
    return Node(op, inputs, outs, dict(attrs), op.lower(), "", 14)


def rule_gradients(op: str, arrays: list, attrs: dict, out_grads: list) -> tuple[Node, list]:
    """Apply the rule to a forward node and run the node it emits; returns (that node, the
    gradient arrays in the forward's input slots, None where the rule gives none)."""
    node = forward_node(op, arrays, attrs, len(out_grads))
    grad_values = [None if g is None else Value(f"d{i}", g.dtype, g.shape) for i, g in enumerate(out_grads)]
    ctx = GradContext(opset=14)
    grads = gradient_rule(op)(ctx, node, grad_values)
    (made,) = ctx.nodes
    env = {id(v): a for v, a in zip([*node.inputs, *grad_values], [*arrays, *out_grads], strict=True)
           if v is not None}
    results = run_kernel(made.op_type, [None if v is None else env[id(v)] for v in made.inputs], made.attrs,
                         domain=made.domain)
    by_value = {id(v): r for v, r in zip(made.outputs, results, strict=True)}
    return made, [None if g is None else by_value[id(g)] for g in grads]


def numeric_gradient(op: str, arrays: list, attrs: dict, out_grads: list, slot: int) -> np.ndarray:
    """d/d arrays[slot] of sum over outputs of output * its gradient (absent gradients: 0)."""

    def loss(value: np.ndarray) -> float:
        args = list(arrays)
        args[slot] = value
        outs = run_kernel(op, args, attrs, num_outputs=len(out_grads))
        return sum(float(np.sum(o * g)) for o, g in zip(outs, out_grads, strict=True) if g is not None)

    return numerical_gradient(loss, arrays[slot])


def output_gradients(op: str, arrays: list, attrs: dict, which: str, seed=1) -> list:
    """Random gradients for the outputs marked 1 in `which` ("101": Y and Y_c); the node has
    len(which) outputs."""
    outs = run_kernel(op, arrays, attrs, num_outputs=len(which))
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(o.shape) if flag == "1" else None for o, flag in zip(outs, which, strict=True)]


BIDI = {"direction": "bidirectional"}
CASES = [  # op, attrs, present optional inputs, which outputs take a gradient, extra make_inputs args
    ("RNN", {}, "B,initial_h", "11", {}),
    ("RNN", {"direction": "reverse", "hidden_size": 3}, "", "1", {"hidden": 3, "seq": 4}),
    ("RNN", {**BIDI, "activations": ["Relu", "Tanh"]}, "B,sequence_lens,initial_h", "01", {}),
    ("RNN", {"activations": ["LeakyRelu"], "activation_alpha": [0.3], "clip": 1.5, "layout": 1}, "B", "11", {}),
    ("RNN", {**BIDI, "layout": 1, "activations": ["Softsign", "Elu"], "activation_alpha": [0.0, 0.7]},
     "sequence_lens,initial_h", "11", {"lengths": [0, 3]}),
    ("GRU", {}, "B,initial_h", "11", {}),
    ("GRU", {"linear_before_reset": 1}, "B,initial_h", "11", {"hidden": 3}),
    ("GRU", {"direction": "reverse", "linear_before_reset": 1, "layout": 1}, "initial_h", "01", {"seq": 4}),
    ("GRU", {**BIDI, "activations": ["HardSigmoid", "Softsign", "Sigmoid", "ScaledTanh"],
             "activation_alpha": [0.3, 0.0, 0.0, 1.2], "activation_beta": [0.4, 0.0, 0.0, 0.8], "clip": 2.0},
     "B,sequence_lens,initial_h", "10", {}),
    ("GRU", {"direction": "reverse"}, "sequence_lens", "11", {"lengths": [1, 3]}),
    ("GRU", {**BIDI, "layout": 1, "linear_before_reset": 1, "clip": 1.0}, "B,sequence_lens,initial_h", "11",
     {"lengths": [2, 0]}),
    ("LSTM", {}, "B,initial_h,initial_c,P", "111", {}),
    ("LSTM", {"hidden_size": 3}, "", "01", {"hidden": 3, "seq": 4}),
    ("LSTM", {"direction": "reverse", "layout": 1}, "B,sequence_lens,initial_h,initial_c", "001", {}),
    ("LSTM", {**BIDI, "clip": 1.0}, "B,sequence_lens,initial_h,initial_c,P", "111", {"lengths": [1, 3]}),
    ("LSTM", {"input_forget": 1}, "initial_c,P", "101", {}),
    ("LSTM", {**BIDI, "activations": ["HardSigmoid", "Softplus", "Affine", "Sigmoid", "Tanh", "ThresholdedRelu"],
              "activation_alpha": [0.3, 0.0, 0.5, 0.0, 0.0, 0.1], "activation_beta": [0.45, 0.0, 0.2]},
     "B,initial_h,initial_c,P", "11", {}),
    ("LSTM", {"direction": "reverse"}, "initial_c,P", "111", {}),
    ("LSTM", {**BIDI, "layout": 1, "input_forget": 1, "clip": 1.5}, "B,sequence_lens,initial_h,P", "011",
     {"lengths": [3, 0], "seq": 3}),
]


def case_id(case: tuple) -> str:
    op, attrs, present, which, _ = case
    text = ",".join(f"{k}={v}" for k, v in attrs.items())
    return f"{op}[{text}]-in[{present}]-out{which}".replace(" ", "").replace("'", "")


@pytest.mark.parametrize("op, attrs, present, which, sizes", CASES, ids=[case_id(c) for c in CASES])
def test_gradients_match_finite_differences(op, attrs, present, which, sizes):
    arrays = make_inputs(op, attrs, present, **sizes)
    out_grads = output_gradients(op, arrays, attrs, which)
    _, grads = rule_gradients(op, arrays, attrs, out_grads)
    assert len(grads) == len(arrays)
    for slot, (array, grad) in enumerate(zip(arrays, grads, strict=True)):
        if array is None or slot == 4:
            assert grad is None, NAMES[slot]
            continue
        want = numeric_gradient(op, arrays, attrs, out_grads, slot)
        assert grad.shape == array.shape and np.any(want != 0), NAMES[slot]
        np.testing.assert_allclose(grad, want, rtol=1e-6, atol=1e-9, err_msg=NAMES[slot])


@pytest.mark.parametrize("op", ["RNN", "GRU", "LSTM"])
def test_constant_weights_give_the_same_gradients(op):
    """W, R, B (and P) known at prepare take the forward kernel's precomputed-parameters path."""
    attrs = {**BIDI, "linear_before_reset": 1} if op == "GRU" else BIDI
    arrays = make_inputs(op, attrs, "B,sequence_lens,initial_h,initial_c,P" if op == "LSTM" else "B,initial_h")
    assert len(arrays) == SLOTS[op]
    inputs = arrays + output_gradients(op, arrays, attrs, "1" * OUTPUTS[op])
    plain = run_kernel(f"{op}Grad", inputs, attrs, domain=TRAINING_DOMAIN)
    constant = run_kernel(f"{op}Grad", inputs, attrs, domain=TRAINING_DOMAIN, constants=(1, 2, 3, 7))
    for a, b in zip(plain, constant, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("op", ["RNN", "GRU", "LSTM"])
def test_float32_gradients_are_float32_and_close_to_float64(op):
    attrs = {"direction": "bidirectional", "layout": 1}
    present = "B,sequence_lens,initial_h,initial_c,P" if op == "LSTM" else "B,sequence_lens,initial_h"
    arrays = make_inputs(op, attrs, present)
    out_grads = output_gradients(op, arrays, attrs, "1" * OUTPUTS[op])
    _, want = rule_gradients(op, arrays, attrs, out_grads)
    single = [None if a is None or a.dtype.kind != "f" else a.astype(np.float32) for a in arrays]
    single[4] = arrays[4]
    _, got = rule_gradients(op, single, attrs, [g.astype(np.float32) for g in out_grads])
    for slot in FLOAT_SLOTS[op]:
        assert got[slot].dtype == np.float32
        np.testing.assert_allclose(got[slot], want[slot], rtol=1e-4, atol=1e-5, err_msg=NAMES[slot])


@pytest.mark.parametrize("name", sorted(_ACTIVATIONS))
def test_every_activation_derivative_matches_finite_differences(name):
    alpha, beta = {"thresholdedrelu": (0.4, 0.0), "hardsigmoid": (0.3, 0.45)}.get(name, (0.7, 1.3))
    act = Activation(name, alpha, beta)
    x = np.array([-2.5, -1.1, -0.37, 0.21, 0.9, 1.7, 3.2])
    want = [numerical_gradient(lambda v: float(act(v).sum()), x[i : i + 1])[0] for i in range(len(x))]
    np.testing.assert_allclose(act.grad(x), want, rtol=1e-6, atol=1e-9)
    assert set(_DERIVATIVES) == set(_ACTIVATIONS)


# --- the rule's node ------------------------------------------------------------------------------

def value(name: str) -> Value:
    return Value(name, np.dtype(np.float32), None)


def test_lstm_rule_emits_one_lstm_grad_with_the_forward_inputs_and_output_gradients():
    attrs = {"hidden_size": 2, "direction": "bidirectional", "activations": ["Sigmoid", "Tanh", "Relu"] * 2,
             "clip": 3.0, "layout": 1, "input_forget": 1}
    x, w, r, lens, c0 = value("x"), value("w"), value("r"), value("lens"), value("c0")
    node = Node("LSTM", [x, w, r, None, lens, None, c0], [value("y"), value("y_h")], attrs, "lstm", "", 14)
    dy, dy_h = value("dy"), value("dy_h")
    ctx = GradContext(opset=14)
    grads = gradient_rule("LSTM")(ctx, node, [dy, dy_h])
    (made,) = ctx.nodes
    assert (made.op_type, made.domain, made.version, made.attrs) == ("LSTMGrad", TRAINING_DOMAIN, 1, attrs)
    assert made.inputs == [x, w, r, None, lens, None, c0, None, dy, dy_h, None]
    assert len(made.outputs) == 7  # dX, dW, dR, dB, d initial_h, d initial_c, dP
    assert grads == [*made.outputs[:3], None, None, None, made.outputs[5]]


@pytest.mark.parametrize("op, grad_op", [("RNN", "RNNGrad"), ("GRU", "GRUGrad")])
def test_rnn_and_gru_rules_skip_inputs_that_need_no_gradient(op, grad_op):
    x, w, r, b, h0 = value("x"), value("w"), value("r"), value("b"), value("h0")
    node = Node(op, [x, w, r, b, None, h0], [value("y")], {"linear_before_reset": 1}, "n", "", 14)
    ctx = GradContext(opset=14)
    ctx.needs_grad = lambda v: v is not x
    dy = value("dy")
    grads = gradient_rule(op)(ctx, node, [dy])
    (made,) = ctx.nodes
    assert made.op_type == grad_op and made.inputs == [x, w, r, b, None, h0, dy, None]
    assert grads == [None, *made.outputs[1:4], None, made.outputs[4]]


@pytest.mark.parametrize("op, outputs", [("RNN", 2), ("GRU", 2), ("LSTM", 3)])
def test_no_incoming_gradient_adds_nothing(op, outputs):
    node = Node(op, [value("x"), value("w"), value("r")], [value(f"o{i}") for i in range(outputs)], {}, "n", "", 7)
    ctx = GradContext(opset=7)
    assert gradient_rule(op)(ctx, node, [None] * outputs) == [None] * 3 and ctx.nodes == []


def test_grad_kernel_rejects_a_misshaped_output_gradient_and_a_wrong_arity():
    arrays = make_inputs("GRU", {}, "B")
    inputs = arrays + [None, None, np.zeros((3, 1, 2)), np.zeros((1, 2, 2))]
    with pytest.raises(ModelError, match=r"gradient of output 0: expected shape \(3, 1, 2, 2\)"):
        run_kernel("GRUGrad", inputs, domain=TRAINING_DOMAIN)
    with pytest.raises(ModelError, match="expected 8 inputs"):
        run_kernel("GRUGrad", arrays, domain=TRAINING_DOMAIN)


# --- whole models through make_trainable and the interpreter --------------------------------------

def sigmoid(v: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-v))


def lstm_model_loss(p: dict[str, np.ndarray], x: np.ndarray, labels: np.ndarray) -> float:
    """numpy reference: forward LSTM with peepholes from initial states, last H -> Gemm -> MSE."""
    n = p["R"].shape[-1]
    w, r, b, peep = p["W"][0], p["R"][0], p["B"][0], p["P"][0]
    h, c = p["initial_h"][0], p["initial_c"][0]
    for step in x:
        g = step @ w.T + h @ r.T + b[: 4 * n] + b[4 * n :]
        i = sigmoid(g[:, :n] + peep[:n] * c)
        f = sigmoid(g[:, 2 * n : 3 * n] + peep[2 * n :] * c)
        c = f * c + i * np.tanh(g[:, 3 * n :])
        h = sigmoid(g[:, n : 2 * n] + peep[n : 2 * n] * c) * np.tanh(c)
    y = h @ p["fc.weight"].T + p["fc.bias"]
    return float(np.mean((y - labels) ** 2))


def test_lstm_model_sgd_step_matches_a_numpy_finite_difference_gradient():
    rng = np.random.default_rng(5)
    seq, batch, size, hidden, classes = 4, 2, 3, 3, 2
    start = {"W": rng.standard_normal((1, 4 * hidden, size)) * 0.5,
             "R": rng.standard_normal((1, 4 * hidden, hidden)) * 0.5,
             "B": rng.standard_normal((1, 8 * hidden)) * 0.1, "initial_h": rng.standard_normal((1, batch, hidden)),
             "initial_c": rng.standard_normal((1, batch, hidden)), "P": rng.standard_normal((1, 3 * hidden)) * 0.3,
             "fc.weight": rng.standard_normal((classes, hidden)), "fc.bias": rng.standard_normal(classes)}
    g = GraphBuilder("lstm", opset=14)
    x = g.input("x", np.float64, (seq, batch, size))
    weights = {name: g.constant(name, array) for name, array in start.items()}
    lstm_inputs = [x, *(weights[n] for n in ("W", "R", "B")), None,
                   *(weights[n] for n in ("initial_h", "initial_c", "P"))]
    _, y_h = g.op("LSTM", lstm_inputs, num_outputs=2, name="lstm", hidden_size=hidden)
    last = g.op("Reshape", [y_h, g.constant("shape", np.array([batch, hidden], np.int64))])
    g.output(g.op("Gemm", [last, weights["fc.weight"], weights["fc.bias"]], name="fc", transB=1), "y")
    lr = 0.5
    it = Interpreter(serialize(make_trainable(g.build(), loss="mse", optimizer=("sgd", {"lr": lr}))))
    xs, labels = rng.standard_normal((seq, batch, size)), rng.standard_normal((batch, classes))
    check_sgd_step(it, {"x": xs, "labels": labels}, start, lambda p: lstm_model_loss(p, xs, labels), lr)


def recurrent_model(op: str, attrs: dict, seed: int):
    """X (batch 2, seq 3, input 3; layout 1) -> op (hidden 2, every output) -> Flatten of Y and
    of each final state, concatenated -> Gemm to 2; all weights constants."""
    arrays = make_inputs(op, attrs, "B,initial_h,initial_c,P" if op == "LSTM" else "B,initial_h", seed=seed)
    g = GraphBuilder(op.lower(), opset=14)
    x = g.input("x", np.float64, arrays[0].shape)
    inputs = [x] + [None if a is None else g.constant(NAMES[i], a) for i, a in enumerate(arrays) if i]
    outs = g.op(op, inputs, num_outputs=OUTPUTS[op], name="rnn", **attrs)
    flat = [g.op("Flatten", [o], axis=1) for o in outs]
    features = 2 * 3 * 2 + 2 * 2 * (OUTPUTS[op] - 1)  # dirs * seq * hidden + dirs * hidden per state
    rng = np.random.default_rng(seed)
    fc = [g.constant("fc.weight", rng.standard_normal((2, features))), g.constant("fc.bias", np.zeros(2))]
    g.output(g.op("Gemm", [g.op("Concat", flat, axis=1), *fc], transB=1), "y")
    return g.build(), arrays[0].shape


@pytest.mark.parametrize("op, attrs", [
    ("RNN", {"direction": "bidirectional", "layout": 1}),
    ("GRU", {"direction": "bidirectional", "layout": 1, "linear_before_reset": 1}),
    ("LSTM", {"direction": "bidirectional", "layout": 1, "clip": 2.0}),
])
def test_bidirectional_models_sgd_step_matches_finite_differences_of_the_train_loss(op, attrs):
    """Every output feeds the loss; the oracle differentiates the train signature's loss numerically
    (the forward kernels only) through restore."""
    graph, x_shape = recurrent_model(op, attrs, seed=7)
    it = Interpreter(serialize(make_trainable(graph, loss="mse", optimizer=("sgd", {"lr": 1.0}))))
    rng = np.random.default_rng(8)
    feeds = {"x": rng.standard_normal(x_shape), "labels": rng.standard_normal((2, 2))}
    start = it.run({}, "save")

    def loss_at(name: str, v: np.ndarray) -> float:
        it.run({**start, name: v}, "restore")
        return float(it.run(feeds, "train")["loss"])

    numeric = {name: numerical_gradient(lambda v, name=name: loss_at(name, v), start[name]) for name in start}
    it.run(start, "restore")
    it.run(feeds, "train")
    after = it.run({}, "save")
    assert len(start) == len(FLOAT_SLOTS[op]) + 1  # every weight slot and the Gemm's two
    for name in start:
        np.testing.assert_allclose(start[name] - after[name], numeric[name], rtol=1e-6, atol=1e-9, err_msg=name)

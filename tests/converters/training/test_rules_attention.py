"""Gradient rule of Attention (AttentionGrad): the node the rule emits, its gradients against float64
central finite differences of the forward kernel over 3-D and 4-D inputs, grouped-query heads,
scale, is_causal, bool and float (broadcast, short) masks, softcap and the KV cache, and a small
self-attention classifier trained one SGD step through make_trainable and the interpreter."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import edgerun.converters.training.rules.attention  # noqa: F401  (registers the rule)
import edgerun.runtime.kernels.attention_grad  # noqa: F401  (registers the kernel)
from edgerun.converters.training import make_trainable
from edgerun.converters.training.rules import TRAINING_DOMAIN, GradContext, gradient_rule
from edgerun.runtime import GraphBuilder, Interpreter, serialize
from edgerun.runtime.errors import ConversionError, ModelError
from edgerun.runtime.graph import Node, Value
from tests.gradcheck import check_sgd_step, numerical_gradient, run_kernel

NAMES = ["Q", "K", "V", "attn_mask", "past_key", "past_value", "nonpad_kv_seqlen"]
FLOAT_SLOTS = (0, 1, 2, 3, 4, 5)


def make_inputs(attrs: dict, batch=2, q_heads=2, kv_heads=2, q_len=3, kv_len=4, head=3, v_head=2, past=0,
                mask=None, rank=4, nonpad=None, seed=0, dtype=np.float64) -> list:
    """Random forward inputs in the 7 slots (omitted ones None, trailing ones dropped); `mask` is a
    (shape, "bool" | "float" | "float-inf") pair or None."""
    rng = np.random.default_rng(seed)
    if rank == 4:
        shapes = [(batch, q_heads, q_len, head), (batch, kv_heads, kv_len, head), (batch, kv_heads, kv_len, v_head)]
    else:
        shapes = [(batch, q_len, q_heads * head), (batch, kv_len, kv_heads * head), (batch, kv_len, kv_heads * v_head)]
    arrays = [rng.standard_normal(s).astype(dtype) for s in shapes] + [None] * 4
    if mask is not None:
        shape, kind = mask
        arrays[3] = rng.random(shape) > 0.3 if kind == "bool" else rng.standard_normal(shape).astype(dtype)
        if kind == "float-inf":
            arrays[3][..., 0] = -np.inf
    if past:
        arrays[4] = rng.standard_normal((batch, kv_heads, past, head)).astype(dtype)
        arrays[5] = rng.standard_normal((batch, kv_heads, past, v_head)).astype(dtype)
    if nonpad is not None:
        arrays[6] = np.asarray(nonpad, np.int64)
    while arrays[-1] is None:
        arrays.pop()
    return arrays


def forward(arrays: list, attrs: dict, outputs: int = 3) -> list[np.ndarray]:
    return run_kernel("Attention", arrays, attrs, version=25, num_outputs=outputs)


def forward_node(arrays: list, attrs: dict, outputs: int) -> Node:
    inputs = [None if a is None else Value(NAMES[i], a.dtype, a.shape) for i, a in enumerate(arrays)]
    outs = [Value(f"out{i}", np.dtype(np.float64), None) for i in range(outputs)]
    return Node("Attention", inputs, outs, dict(attrs), "attention", "", 25)


def rule_gradients(arrays: list, attrs: dict, out_grads: list) -> list:
    """Apply the rule and run the one node it emits; the gradient arrays in the forward's input
    slots (None where the rule gives none)."""
    node = forward_node(arrays, attrs, len(out_grads))
    grad_values = [None if g is None else Value(f"d{i}", g.dtype, g.shape) for i, g in enumerate(out_grads)]
    ctx = GradContext(opset=25)
    grads = gradient_rule("Attention")(ctx, node, grad_values)
    (made,) = ctx.nodes
    env = {id(v): a for v, a in zip([*node.inputs, *grad_values], [*arrays, *out_grads], strict=True)
           if v is not None}
    results = run_kernel(made.op_type, [None if v is None else env[id(v)] for v in made.inputs], made.attrs,
                         domain=made.domain)
    by_value = {id(v): r for v, r in zip(made.outputs, results, strict=True)}
    return [None if g is None else by_value[id(g)] for g in grads]


def numeric_gradient(arrays: list, attrs: dict, out_grads: list, slot: int) -> np.ndarray:
    """d/d arrays[slot] of the sum over outputs of output * its gradient (absent ones: 0)."""

    def loss(value: np.ndarray) -> float:
        args = list(arrays)
        args[slot] = value
        outs = forward(args, attrs, len(out_grads))
        return sum(float(np.sum(o * g)) for o, g in zip(outs, out_grads, strict=True) if g is not None)

    return numerical_gradient(loss, arrays[slot])


def output_gradients(arrays: list, attrs: dict, which: str, seed=1) -> list:
    """Random gradients for the outputs marked 1 in `which` ("101": Y and present_value)."""
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(o.shape) if flag == "1" else None
            for o, flag in zip(forward(arrays, attrs, len(which)), which, strict=True)]


GQA3 = {"q_num_heads": 4, "kv_num_heads": 2}
CASES = [  # attrs, make_inputs arguments, which outputs take a gradient
    ({}, {}, "1"),
    ({"q_num_heads": 2, "kv_num_heads": 2}, {"rank": 3}, "1"),
    (GQA3, {"rank": 3, "q_heads": 4}, "1"),
    ({"scale": 0.7}, {"q_heads": 4, "kv_heads": 1}, "1"),
    ({"is_causal": 1}, {"kv_len": 3}, "1"),
    ({"is_causal": 1, "scale": 0.4}, {"q_heads": 4, "past": 2, "mask": ((3, 6), "float")}, "111"),
    ({}, {"mask": ((3, 4), "bool")}, "1"),
    ({}, {"q_heads": 4, "kv_heads": 2, "mask": ((2, 4, 3, 4), "bool"), "seed": 3}, "1"),
    ({}, {"mask": ((2, 2, 3, 4), "float")}, "1"),
    ({}, {"q_heads": 4, "kv_heads": 2, "mask": ((1, 4, 1, 4), "float")}, "1"),
    (GQA3, {"rank": 3, "q_heads": 4, "mask": ((2, 1, 3, 4), "float")}, "1"),
    ({}, {"mask": ((1, 3, 4), "float-inf")}, "1"),
    ({}, {"mask": ((4,), "float")}, "1"),
    ({}, {"mask": ((2, 1, 3, 2), "float")}, "1"),  # shorter than the keys: padded with -inf
    ({"softcap": 1.5}, {}, "1"),
    ({"softcap": 0.8, "scale": 1.3}, {"q_heads": 4, "kv_heads": 2, "mask": ((3, 4), "float")}, "1"),
    (GQA3, {"rank": 3, "q_heads": 4, "past": 2}, "111"),
    ({}, {"past": 3, "kv_len": 1, "q_len": 1}, "101"),
    ({"is_causal": 1}, {"past": 2}, "011"),  # only the cache outputs read
    ({"softmax_precision": 11, "left_window_size": 1}, {"kv_len": 3}, "1"),
    ({}, {"nonpad": [2, 4]}, "1"),
]


def case_id(case: tuple) -> str:
    attrs, sizes, which = case
    text = ",".join(f"{k}={v}" for k, v in {**attrs, **sizes}.items())
    return f"[{text}]-out{which}".replace(" ", "").replace("'", "")


@pytest.mark.parametrize("attrs, sizes, which", CASES, ids=[case_id(c) for c in CASES])
def test_gradients_match_finite_differences(attrs, sizes, which):
    arrays = make_inputs(attrs, **sizes)
    out_grads = output_gradients(arrays, attrs, which)
    grads = rule_gradients(arrays, attrs, out_grads)
    assert len(grads) == len(arrays)
    for slot, (array, grad) in enumerate(zip(arrays, grads, strict=True)):
        if array is None or array.dtype.kind != "f":
            assert grad is None, NAMES[slot]
            continue
        want = numeric_gradient(arrays, attrs, out_grads, slot)
        assert grad.shape == array.shape and grad.dtype == array.dtype, NAMES[slot]
        assert np.any(want != 0) or (which[0] == "0" and slot in (0, 3)), NAMES[slot]  # dQ needs dY
        np.testing.assert_allclose(grad, want, rtol=1e-6, atol=1e-9, err_msg=NAMES[slot])


def test_grouped_query_gradient_sums_over_the_shared_query_heads():
    """With every query head of a group equal, dK of the group's kv head is the sum of what each
    of them would give alone: twice the gradient of one query head attending to it."""
    arrays = make_inputs({}, q_heads=1, kv_heads=1)
    pair = [np.repeat(arrays[0], 2, axis=1), *arrays[1:]]
    dy = np.random.default_rng(4).standard_normal((2, 1, 3, 2))
    single = rule_gradients(arrays, {}, [dy])
    double = rule_gradients(pair, {}, [np.repeat(dy, 2, axis=1)])
    np.testing.assert_allclose(double[1], 2 * single[1], rtol=1e-12)
    np.testing.assert_allclose(double[2], 2 * single[2], rtol=1e-12)


def test_fully_masked_query_rows_take_no_gradient():
    mask = np.ones((3, 4), bool)
    mask[1] = False
    arrays = make_inputs({})[:3] + [mask]
    dq, dk, dv, _ = rule_gradients(arrays, {}, [np.ones((2, 2, 3, 2))])
    assert np.all(dq[:, :, 1] == 0) and np.all(dq[:, :, 0] != 0)
    assert np.all(np.isfinite(dk)) and np.all(np.isfinite(dv))


def test_float32_gradients_are_float32_and_close_to_float64():
    attrs, sizes = {**GQA3, "softcap": 2.0, "is_causal": 1}, {"rank": 3, "q_heads": 4, "past": 1,
                                                              "mask": ((1, 3, 5), "float")}
    arrays = make_inputs(attrs, **sizes)
    out_grads = output_gradients(arrays, attrs, "111")
    want = rule_gradients(arrays, attrs, out_grads)
    got = rule_gradients(make_inputs(attrs, **sizes, dtype=np.float32), attrs,
                         [g.astype(np.float32) for g in out_grads])
    for slot in FLOAT_SLOTS:
        assert got[slot].dtype == np.float32, NAMES[slot]
        np.testing.assert_allclose(got[slot], want[slot], rtol=1e-4, atol=1e-5, err_msg=NAMES[slot])


# --- the rule's node ------------------------------------------------------------------------------

def value(name: str, dtype=np.float32) -> Value:
    return Value(name, np.dtype(dtype), None)


def test_rule_emits_one_attention_grad_with_the_forward_slots_and_output_gradients():
    attrs = {"q_num_heads": 4, "kv_num_heads": 2, "is_causal": 1, "softcap": 2.0}
    q, k, v, mask, past_k, past_v = (value(n) for n in NAMES[:6])
    node = Node("Attention", [q, k, v, mask, past_k, past_v], [value("y"), value("pk")], attrs, "att", "", 23)
    ctx = GradContext(opset=23)
    ctx.needs_grad = lambda x: x is not past_v
    dy, dpk = value("dy"), value("dpk")
    grads = gradient_rule("Attention")(ctx, node, [dy, dpk])
    (made,) = ctx.nodes
    assert (made.op_type, made.domain, made.version, made.attrs) == ("AttentionGrad", TRAINING_DOMAIN, 1, attrs)
    assert made.inputs == [q, k, v, mask, past_k, past_v, None, dy, dpk, None]
    assert grads == [*made.outputs[:5], None]


def test_rule_gives_no_gradient_to_a_bool_mask_or_the_sequence_lengths():
    q, k, v = value("q"), value("k"), value("v")
    mask, lengths = value("mask", bool), value("lengths", np.int64)
    node = Node("Attention", [q, k, v, mask, None, None, lengths], [value("y")], {}, "att", "", 24)
    ctx = GradContext(opset=24)
    grads = gradient_rule("Attention")(ctx, node, [value("dy")])
    (made,) = ctx.nodes
    assert grads == [*made.outputs[:3], None, None, None, None]


def test_no_incoming_gradient_adds_nothing():
    node = Node("Attention", [value("q"), value("k"), value("v")], [value("y"), value("pk"), value("pv")], {},
                "att", "", 23)
    ctx = GradContext(opset=23)
    assert gradient_rule("Attention")(ctx, node, [None] * 3) == [None] * 3 and ctx.nodes == []


def test_a_gradient_of_qk_matmul_output_is_a_conversion_error():
    outputs = [value(f"o{i}") for i in range(4)]
    node = Node("Attention", [value("q"), value("k"), value("v")], outputs, {"qk_matmul_output_mode": 3}, "att",
                "", 23)
    with pytest.raises(ConversionError, match=r"'att'.*qk_matmul_output \(output 3, qk_matmul_output_mode 3\)"):
        gradient_rule("Attention")(GradContext(opset=23), node, [value("dy"), None, None, value("dqk")])


def test_grad_kernel_rejects_a_misshaped_output_gradient_and_a_wrong_arity():
    arrays = make_inputs({})
    with pytest.raises(ModelError, match=r"dY shape \(2, 2, 3, 3\): expected the forward output's \(2, 2, 3, 2\)"):
        run_kernel("AttentionGrad", arrays + [None] * 4 + [np.zeros((2, 2, 3, 3)), None, None], domain=TRAINING_DOMAIN)
    with pytest.raises(ModelError, match="expected 10 inputs"):
        run_kernel("AttentionGrad", arrays + [np.zeros((2, 2, 3, 2))], domain=TRAINING_DOMAIN)
    with pytest.raises(ModelError, match="3-D inputs need q_num_heads"):
        run_kernel("AttentionGrad", make_inputs({}, rank=3) + [None] * 4 + [np.zeros((2, 3, 4)), None, None],
                   domain=TRAINING_DOMAIN)


# --- the forward against onnxruntime -------------------------------------------------------------

def test_forward_matches_onnxruntime_for_grouped_query_3d_inputs_with_a_causal_float_mask_and_softcap():
    """The forward the gradients differentiate: 3-D GQA inputs, a broadcast float mask, is_causal,
    and softcap (applied before the mask is added)."""
    attrs = {**GQA3, "is_causal": 1, "scale": 0.6, "softcap": 1.5}
    arrays = make_inputs(attrs, rank=3, q_heads=4, mask=((3, 3), "float"), kv_len=3, dtype=np.float32)
    names = NAMES[:4]
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, a.shape) for n, a in zip(names, arrays, strict=True)]
    graph = helper.make_graph([helper.make_node("Attention", names, ["Y"], **attrs)], "g", inputs,
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, (2, 3, 8))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)])
    onnx.checker.check_model(model)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (want,) = session.run(None, dict(zip(names, arrays, strict=True)))
    np.testing.assert_allclose(forward(arrays, attrs, 1)[0], want, rtol=1e-5, atol=1e-6)


# --- a whole model through make_trainable and the interpreter -------------------------------------

def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def classifier_loss(p: dict[str, np.ndarray], x: np.ndarray, labels: np.ndarray) -> float:
    """numpy reference: Q/K/V projections, causal grouped-query attention (2 query heads, 1 kv
    head of size 2) with a learned additive position bias, output projection, mean over the
    sequence, Gemm to logits, cross-entropy."""
    batch, seq, _ = x.shape
    q = (x @ p["wq"]).reshape(batch, seq, 2, 2).transpose(0, 2, 1, 3)
    k = (x @ p["wk"])[:, None]
    v = (x @ p["wv"])[:, None]
    scores = q @ k.swapaxes(-1, -2) / np.sqrt(2) + p["pos_bias"] + np.triu(np.full((seq, seq), -np.inf), 1)
    heads = (softmax(scores) @ v).transpose(0, 2, 1, 3).reshape(batch, seq, 4)
    logits = (heads @ p["wo"]).mean(axis=1) @ p["fc.weight"].T + p["fc.bias"]
    log_probs = logits - logits.max(axis=1, keepdims=True)
    log_probs -= np.log(np.exp(log_probs).sum(axis=1, keepdims=True))
    return float(-np.mean(log_probs[np.arange(batch), labels]))


def test_self_attention_classifier_sgd_step_matches_a_numpy_finite_difference_gradient():
    rng = np.random.default_rng(11)
    batch, seq, dim, classes = 3, 4, 4, 3
    start = {"wq": rng.standard_normal((dim, 4)) * 0.6, "wk": rng.standard_normal((dim, 2)) * 0.6,
             "wv": rng.standard_normal((dim, 2)) * 0.6, "pos_bias": rng.standard_normal((seq, seq)) * 0.5,
             "wo": rng.standard_normal((4, dim)) * 0.6,
             "fc.weight": rng.standard_normal((classes, dim)), "fc.bias": rng.standard_normal(classes) * 0.1}
    g = GraphBuilder("attention", opset=23)
    x = g.input("x", np.float64, (batch, seq, dim))
    w = {name: g.constant(name, array) for name, array in start.items()}
    q, k, v = (g.op("MatMul", [x, w[n]], name=n[1]) for n in ("wq", "wk", "wv"))
    att = g.op("Attention", [q, k, v, w["pos_bias"]], name="attention", q_num_heads=2, kv_num_heads=1, is_causal=1)
    pooled = g.op("ReduceMean", [g.op("MatMul", [att, w["wo"]], name="o"), g.constant("axes", np.array([1]))],
                  keepdims=0)
    g.output(g.op("Gemm", [pooled, w["fc.weight"], w["fc.bias"]], name="fc", transB=1), "y")
    lr = 0.5
    it = Interpreter(serialize(make_trainable(g.build(), loss="cross_entropy", optimizer=("sgd", {"lr": lr}))))
    xs, labels = rng.standard_normal((batch, seq, dim)), np.array([0, 2, 1])
    check_sgd_step(it, {"x": xs, "labels": labels}, start, lambda p: classifier_loss(p, xs, labels), lr)

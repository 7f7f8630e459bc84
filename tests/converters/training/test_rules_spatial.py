"""The gradient and training-forward rules of Conv, the pools, BatchNormalization and Dropout:
which nodes they add, wired to which values, with which attributes."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from edgerun.converters.training.rules import TRAINING_DOMAIN, GradContext, gradient_rule, training_forward_rule
from edgerun.runtime.errors import ConversionError
from edgerun.runtime.graph import Node, Value
from tests.gradcheck import run_kernel

F32 = np.float32


def value(name, shape=None, data=None, variable=False):
    dtype = F32 if data is None else np.asarray(data).dtype
    return Value(name, dtype, shape, data=data, is_variable=variable)


def node(op, inputs, n_outputs=1, version=17, name=None, **attrs):
    outputs = [value(f"{op}:out{i}") for i in range(n_outputs)]
    return Node(op, inputs, outputs, attrs, name or op.lower(), "", version)


def backward(op_node, grads):
    ctx = GradContext(opset=17)
    return ctx, gradient_rule(op_node.op_type)(ctx, op_node, grads)


def only_node(ctx):
    (made,) = ctx.nodes
    assert made.domain == TRAINING_DOMAIN and made.version == 1
    return made


# --- Conv and pools ------------------------------------------------------------------------------

CONV_ATTRS = {"pads": [1, 1, 0, 0], "strides": [2, 1], "dilations": [1, 2], "group": 2,
              "kernel_shape": [3, 3]}


def test_conv_gradient_is_one_conv_grad_with_the_forward_attributes():
    x, w, b, dy = value("x"), value("w", variable=True), value("b", variable=True), value("dy")
    conv = node("Conv", [x, w, b], **CONV_ATTRS)
    ctx, grads = backward(conv, [dy])
    made = only_node(ctx)
    assert made.op_type == "ConvGrad" and made.attrs == CONV_ATTRS
    assert made.inputs[0] is dy and made.inputs[1] is x and made.inputs[2] is w
    assert len(grads) == 3 and all(g is o for g, o in zip(grads, made.outputs, strict=True))


@pytest.mark.parametrize("inputs", [2, 3], ids=["no-bias-input", "omitted-bias"])
def test_conv_gradient_without_bias_has_no_bias_output(inputs):
    conv = node("Conv", [value("x"), value("w"), None][:inputs])
    ctx, grads = backward(conv, [value("dy")])
    made = only_node(ctx)
    assert len(made.outputs) == 2 and grads[:2] == made.outputs
    assert grads[2:] == [None] * (inputs - 2)


@pytest.mark.parametrize("inputs", [3, 2], ids=["bias", "no-bias"])
def test_conv_gradient_skips_dx_when_x_needs_none(inputs):
    x, dy = value("x"), value("dy")
    conv = node("Conv", [x, value("w"), value("b")][:inputs], **CONV_ATTRS)
    ctx = GradContext(opset=17)
    ctx.needs_grad = lambda v: v is not x
    grads = gradient_rule("Conv")(ctx, conv, [dy])
    made = only_node(ctx)
    assert made.op_type == "ConvGrad" and made.attrs == {**CONV_ATTRS, "compute_dx": 0}
    assert len(made.outputs) == inputs - 1 and grads == [None, *made.outputs]


def test_conv_gradient_without_dx_runs_and_matches_the_full_one():
    x, w, b, dy = value("x"), value("w"), value("b"), value("dy")
    ctx = GradContext(opset=17)
    ctx.needs_grad = lambda v: v is not x
    gradient_rule("Conv")(ctx, node("Conv", [x, w, b], pads=[1, 1, 1, 1]), [dy])
    made = only_node(ctx)
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(s) for s in ((2, 4, 5, 5), (2, 3, 5, 5), (4, 3, 3, 3))]
    full = run_kernel("ConvGrad", arrays, {"pads": [1, 1, 1, 1]}, domain=TRAINING_DOMAIN)
    skipped = run_kernel("ConvGrad", arrays, made.attrs, domain=TRAINING_DOMAIN)
    assert len(skipped) == 2
    for mine, want in zip(skipped, full[1:], strict=True):
        np.testing.assert_array_equal(mine, want)


@pytest.mark.parametrize("op, inputs", [("Conv", 3), ("MaxPool", 1), ("AveragePool", 1),
                                        ("GlobalAveragePool", 1), ("BatchNormTraining", 5),
                                        ("DropoutTraining", 1)])
def test_no_incoming_gradient_adds_nothing(op, inputs):
    ctx, grads = backward(node(op, [value(f"in{i}") for i in range(inputs)], n_outputs=2), [None, None])
    assert grads == [None] * inputs and ctx.nodes == []


POOLS = [
    # forward op, its attrs, gradient op, the attrs the gradient keeps
    ("MaxPool", {"kernel_shape": [2, 2], "strides": [2, 2], "storage_order": 1, "ceil_mode": 1},
     "MaxPoolGrad", {"kernel_shape": [2, 2], "strides": [2, 2], "ceil_mode": 1}),
    ("AveragePool", {"kernel_shape": [3], "pads": [1, 1], "count_include_pad": 1, "auto_pad": "NOTSET"},
     "AveragePoolGrad", {"kernel_shape": [3], "pads": [1, 1], "count_include_pad": 1, "auto_pad": "NOTSET"}),
    ("GlobalAveragePool", {}, "GlobalAveragePoolGrad", {}),
]


@pytest.mark.parametrize("op, attrs, grad_op, grad_attrs", POOLS)
def test_pool_gradient_is_its_grad_kernel(op, attrs, grad_op, grad_attrs):
    x, dy = value("x"), value("dy")
    pool = node(op, [x], n_outputs=2 if op == "MaxPool" else 1, **attrs)
    ctx, grads = backward(pool, [dy, None][: len(pool.outputs)])
    made = only_node(ctx)
    assert (made.op_type, made.attrs) == (grad_op, grad_attrs)
    assert made.inputs[0] is dy and made.inputs[1] is x and grads == made.outputs


# --- BatchNormalization --------------------------------------------------------------------------

def batch_norm(n_outputs=1, version=15, **attrs):
    inputs = [value("x"), *(value(n, (3,), variable=True) for n in ("scale", "b", "mean", "var"))]
    return node("BatchNormalization", inputs, n_outputs, version, **attrs)


def training_forward(op_node, seed=None):
    ctx = GradContext(opset=17, prefix="train", seed=seed)
    return ctx, training_forward_rule(op_node.op_type)(ctx, op_node)


def test_batch_norm_trains_with_batch_norm_training_and_updates_running_stats():
    bn = batch_norm(epsilon=1e-3, momentum=0.8)
    ctx, (outputs, updates) = training_forward(bn)
    made = only_node(ctx)
    assert made.op_type == "BatchNormTraining" and made.attrs == {"epsilon": 1e-3, "momentum": 0.8}
    assert all(a is b for a, b in zip(made.inputs, bn.inputs, strict=True)) and len(made.outputs) == 5
    assert outputs == [made.outputs[0]]
    assert updates == {bn.inputs[3]: made.outputs[1], bn.inputs[4]: made.outputs[2]}


def test_batch_norm_defaults_follow_onnx_and_running_stat_outputs_are_the_updates():
    bn = batch_norm(n_outputs=3, version=14)
    ctx, (outputs, _) = training_forward(bn)
    made = only_node(ctx)
    assert made.attrs == {"epsilon": 1e-5, "momentum": 0.9}
    assert outputs == made.outputs[:3]


def test_batch_norm_opset9_extra_outputs_are_none():
    ctx, (outputs, _) = training_forward(batch_norm(n_outputs=5, version=9))
    assert outputs[:3] == only_node(ctx).outputs[:3] and outputs[3:] == [None, None]


def test_batch_norm_spatial_zero_cannot_train():
    with pytest.raises(ConversionError, match="spatial=0"):
        training_forward(batch_norm(version=7, spatial=0))


def test_batch_norm_training_gradient_uses_the_saved_statistics():
    bn = batch_norm()
    forward_ctx, _ = training_forward(bn)
    training = only_node(forward_ctx)
    dy = value("dy")
    ctx, grads = backward(training, [dy, value("unused"), None, None, None])
    made = only_node(ctx)
    assert made.op_type == "BatchNormGrad"
    want_inputs = [dy, bn.inputs[0], bn.inputs[1], training.outputs[3], training.outputs[4]]
    assert all(a is b for a, b in zip(made.inputs, want_inputs, strict=True))
    assert grads == [*made.outputs, None, None]


def test_rule_built_batch_norm_nodes_run():
    bn = batch_norm(epsilon=1e-3, momentum=0.7)
    ctx, _ = training_forward(bn)
    (training,) = ctx.nodes
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal((4, 3, 2)), *(rng.uniform(0.5, 1.5, 3) for _ in range(4))]
    outs = run_kernel(training.op_type, inputs, training.attrs, domain=training.domain)
    np.testing.assert_allclose(outs[1], inputs[3] * 0.7 + inputs[0].mean(axis=(0, 2)) * 0.3, rtol=1e-12)


# --- Dropout -------------------------------------------------------------------------------------

def test_dropout_v13_takes_ratio_input_and_seed_attribute():
    x = value("x")
    dropout = node("Dropout", [x, value("ratio", data=np.array(0.2, F32))], n_outputs=2, version=13, seed=7)
    ctx, (outputs, updates) = training_forward(dropout)
    made = only_node(ctx)
    assert made.op_type == "DropoutTraining" and made.inputs[0] is x and made.inputs[1:] == []
    assert made.attrs["ratio"] == pytest.approx(0.2) and made.attrs["seed"] == 7
    assert outputs == made.outputs and updates == {}


def test_dropout_v7_takes_ratio_attribute_and_drops_the_float_mask():
    dropout = node("Dropout", [value("x")], n_outputs=2, version=7, ratio=0.3)
    ctx, (outputs, _) = training_forward(dropout)
    made = only_node(ctx)
    assert made.attrs["ratio"] == 0.3 and outputs == [made.outputs[0], None]


def test_dropout_without_a_seed_gets_none_so_sessions_differ():
    assert "seed" not in only_node(training_forward(node("Dropout", [value("x")], name="drop1"))[0]).attrs


def test_dropout_seed_from_make_trainable_is_combined_with_the_node_name_crc():
    seeds = [only_node(training_forward(node("Dropout", [value("x")], name=n), seed=3)[0]).attrs["seed"]
             for n in ("drop1", "drop2")]
    assert seeds == [(3 << 32) + zlib.crc32(b"drop1"), (3 << 32) + zlib.crc32(b"drop2")]
    own = node("Dropout", [value("x")], version=13, name="drop1", seed=7)  # the node's own seed wins
    assert only_node(training_forward(own, seed=3)[0]).attrs["seed"] == 7


def test_dropout_default_ratio_is_half_and_training_mode_is_ignored():
    mode = value("mode", data=np.array(False))
    ctx, (outputs, _) = training_forward(node("Dropout", [value("x"), None, mode], version=13))
    assert only_node(ctx).attrs["ratio"] == 0.5 and len(outputs) == 1


@pytest.mark.parametrize("ratio", [value("fed"), value("ratio", data=np.array(1.0, F32)),
                                   value("ratio", data=np.array([0.1, 0.2], F32))],
                         ids=["not-constant", "one", "not-scalar"])
def test_dropout_bad_ratio_cannot_train(ratio):
    with pytest.raises(ConversionError, match="ratio"):
        training_forward(node("Dropout", [value("x"), ratio], version=13, name="d"))


def test_dropout_training_gradient_uses_the_mask():
    ctx, _ = training_forward(node("Dropout", [value("x")], version=13))
    training = only_node(ctx)
    training.attrs["ratio"] = 0.25
    dy = value("dy")
    ctx, grads = backward(training, [dy, None])
    made = only_node(ctx)
    assert made.op_type == "DropoutGrad" and made.attrs == {"ratio": 0.25}
    assert made.inputs[0] is dy and made.inputs[1] is training.outputs[1] and grads == made.outputs


def test_rules_are_registered():
    from edgerun.converters.training.rules import differentiable_ops

    assert {"Conv", "MaxPool", "AveragePool", "GlobalAveragePool", "BatchNormTraining",
            "DropoutTraining"} <= set(differentiable_ops())
    assert training_forward_rule("BatchNormalization") and training_forward_rule("Dropout")

"""Memory of a train step: fine-tuning MobileNetV2 within a Raspberry Pi Zero 2 W's budget,
the frozen part kept as plain inference, activations recomputed when a budget demands it,
shape-only reads that keep nothing alive, and the train signature of an optimized model
(FusedConv)."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from edgerun.converters.optimize import optimize
from edgerun.converters.training import make_trainable
from edgerun.converters.training.recompute import recompute_activations
from edgerun.converters.training.rules import GradContext
from edgerun.converters.training.trainable import train_step_memory
from edgerun.devices.profiles import get_profile
from edgerun.runtime import Interpreter
from edgerun.runtime.errors import ConversionError
from edgerun.runtime.graph import Node, Value
from tests.converters.training.models import mobilenet_v2
from tests.gradcheck import numerical_gradient, run_kernel

MiB = 1 << 20
PI_ZERO_2 = get_profile("rpi-zero2").memory_budget_bytes  # 256 MiB: half of the board's 512 MB
MOMENTUM = ("sgd", {"lr": 0.01, "momentum": 0.9})


@pytest.fixture(scope="module")
def mnv2():
    return mobilenet_v2()  # the full 224x224 network, 3.5 M weights


def record(graph) -> dict:
    return json.loads(graph.metadata["edgerun.training"])


# --- fine-tuning the last layers on a Pi Zero 2 W ------------------------------------------------

@pytest.mark.parametrize("k", [1, 2, 3])
def test_fine_tuning_the_last_k_layers_of_mobilenet_v2_fits_a_pi_zero_2_at_batch_8(mnv2, k):
    graph = make_trainable(mnv2, trainable=k, optimizer=MOMENTUM)
    need = train_step_memory(graph, batch_size=8)
    assert need.fits(PI_ZERO_2), str(need)
    params = list(graph.signatures["save"].outputs.values())
    param_bytes = sum(v.data.nbytes for v in params)
    assert need.variable_bytes == 2 * param_bytes  # the parameters and their momentum, nothing else
    assert need.optimizer_state_bytes == param_bytes
    frozen = sum(v.data.nbytes for v in mnv2.values() if v.is_constant and v.data.ndim >= 1) - param_bytes
    assert frozen <= need.weight_bytes <= frozen + 4096  # the frozen weights (+ a few loss constants)
    assert need.total_bytes == need.arena_bytes + need.weight_bytes + need.variable_bytes

    # The frozen part is plain inference: a train step needs no more activation memory than
    # inference at the same batch (the early layers' activations are the peak and die early) ...
    interpreter = Interpreter(graph, device="cpu")
    interpreter.resize_inputs({"x": (8, 3, 224, 224), "labels": (8,)}, signature="train")
    interpreter.resize_input("x", (8, 3, 224, 224), signature="infer")
    assert interpreter.arena_bytes("train") == interpreter.arena_bytes("infer")
    # ... and no backward node reads an activation of the frozen part, nor differentiates it.
    forward = [n for n in graph.nodes if n.name.endswith("/train")]
    made_at = {v: i for i, n in enumerate(forward) for v in n.outputs if v is not None}
    first_trained = min(i for i, n in enumerate(forward) if set(params) & set(n.inputs))
    backward = [n for n in graph.nodes if n.name.startswith("grad/")]
    read = [made_at[v] for n in backward for v in n.inputs if v in made_at]
    assert min(read) >= first_trained - 1  # the input of the first trained layer at the earliest
    conv_grads = sum(n.op_type == "ConvGrad" for n in backward)
    assert conv_grads == k - 1 and sum(n.op_type == "GemmGrad" for n in backward) == 1


def test_training_all_of_mobilenet_v2_fits_a_pi_zero_2_only_by_recomputing_activations(mnv2, caplog):
    plain = make_trainable(mnv2, optimizer=MOMENTUM)
    kept = train_step_memory(plain, batch_size=8)
    assert not kept.fits(PI_ZERO_2)  # every activation kept for the backward: over 256 MiB
    with caplog.at_level(logging.INFO, logger="edgerun.converters.training"):
        fitted = make_trainable(mnv2, optimizer=MOMENTUM, memory_budget=PI_ZERO_2, batch_size=8)
    need = train_step_memory(fitted, batch_size=8)
    assert need.fits(PI_ZERO_2), str(need)
    clips = sum(n.op_type == "Clip" for n in mnv2.nodes)
    assert record(fitted)["recomputed"] == clips == 35  # every Relu6 output, from the Conv output kept anyway
    assert need.arena_bytes < 0.6 * kept.arena_bytes  # the Relu6 outputs were ~45 % of what the backward kept
    assert need.variable_bytes == kept.variable_bytes and need.weight_bytes == kept.weight_bytes
    saved = (kept.total_bytes - need.total_bytes) / MiB
    assert f"recomputing 35 activations saves {saved:.1f} MiB of a train step at batch 8" in caplog.text


def test_a_train_step_over_the_budget_even_recomputed_is_an_error_saying_what_it_needs(mnv2):
    with pytest.raises(ConversionError, match=r"a train step at batch 8 needs \d+\.\d MiB \(train: .*arena .*\), "
                                              r"over the 100\.0 MiB memory budget even with recomputed activations; "
                                              r"train fewer layers"):
        make_trainable(mnv2, optimizer=MOMENTUM, memory_budget=100 * MiB, batch_size=8)


def test_a_budget_that_fits_recomputes_nothing(mnv2):
    graph = make_trainable(mnv2, trainable=2, memory_budget=PI_ZERO_2, batch_size=8)
    assert record(graph)["recomputed"] == 0
    assert not any(n.name.endswith("/recomputed") for n in graph.nodes)


# --- recomputed activations train exactly as kept ones --------------------------------------------

def small_mobilenet(batch_norm: bool = False):
    return mobilenet_v2(width=0.35, size=32, classes=10, stages=((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 2, 2)),
                        batch_norm=batch_norm)


@pytest.mark.parametrize("batch_norm", [False, True])
def test_recomputed_activations_train_bit_for_bit_as_kept_ones_in_less_memory(batch_norm):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3, 32, 32)).astype(np.float32)
    labels = rng.integers(0, 10, 4)
    results = {}
    for recompute in (False, True):
        graph = make_trainable(small_mobilenet(batch_norm), optimizer=("sgd", {"lr": 1e-4, "momentum": 0.9}),
                               recompute=recompute)
        interpreter = Interpreter(graph, device="cpu")
        losses = [float(interpreter.run({"x": x, "labels": labels}, signature="train")["loss"]) for _ in range(3)]
        results[recompute] = (losses, interpreter.variables(), interpreter.arena_bytes("train"), record(graph))
    (kept_losses, kept_vars, kept_arena, _), (losses, variables, arena, meta) = results[False], results[True]
    assert losses == kept_losses and losses[2] < losses[0]
    assert all(np.array_equal(variables[name], kept_vars[name]) for name in kept_vars)
    assert meta["recomputed"] > 0 and arena < kept_arena


def chain(*ops: str):
    """Forward nodes x -> ops[0] -> ops[1] ... (values v0, v1, ...)."""
    x = Value("x", np.float32, (2, 3))
    nodes, h = [], x
    for i, op in enumerate(ops):
        out = Value(f"v{i}", np.float32, (2, 3))
        nodes.append(Node(op, [h], [out], {}, f"n{i}", "", 14))
        h = out
    return x, nodes


def reader(name: str, *inputs: Value) -> Node:
    return Node("Add" if len(inputs) == 2 else "Neg", list(inputs), [Value(f"{name}.out", np.float32, (2, 3))],
                {}, name, "", 14)


def test_a_cheap_value_is_recomputed_before_its_first_backward_reader_from_a_value_kept_anyway():
    x, (conv_like, relu) = chain("Softmax", "Relu")
    v0, v1 = conv_like.outputs[0], relu.outputs[0]
    first, second = reader("b0", v1), reader("b1", v0, v1)  # v0 is kept until b1 anyway
    nodes, names = recompute_activations([conv_like, relu], [first, second], free=[x])
    assert names == ["v1"]  # Softmax is not cheap enough to redo: v0 stays as it was
    copy = nodes[0]
    assert (copy.op_type, copy.inputs, copy.name) == ("Relu", [v0], "n1/recomputed")
    assert nodes[1:] == [first, second] and first.inputs == [copy.outputs[0]]
    assert second.inputs == [v0, copy.outputs[0]]  # every backward reader reads the copy


def test_nothing_is_recomputed_that_would_keep_another_value_alive_longer():
    x, (conv_like, relu) = chain("Softmax", "Relu")
    v0, v1 = conv_like.outputs[0], relu.outputs[0]
    early, late = reader("b0", v0), reader("b1", v1)  # v0's last backward read comes before v1's first
    nodes, names = recompute_activations([conv_like, relu], [early, late], free=[x])
    assert names == [] and nodes == [early, late] and late.inputs == [v1]


def test_a_copy_is_only_read_after_it_is_made():
    x, nodes = chain("Softmax", "Relu", "Neg")
    v0, v1, v2 = (n.outputs[0] for n in nodes)
    b0, b1, b2 = reader("b0", v2), reader("b1", v1), reader("b2", v0)
    new, names = recompute_activations(nodes, [b0, b1, b2], free=[x])
    # v1 = Relu(v0) is redone before b1 from v0 (alive until b2). v2 = Neg(v1) would be needed
    # at b0, before v1's copy exists, and the original v1 is no longer read: v2 stays kept.
    assert names == ["v1"]
    assert [n.name for n in new] == ["b0", "n1/recomputed", "b1", "b2"]
    assert b0.inputs == [v2] and b1.inputs == [new[1].outputs[0]] and new[1].inputs == [v0]


def test_shape_only_reads_keep_no_activation_alive():
    # x + b broadcast: the gradient of b sums dY down to b's shape with SumTo(dY, b), which reads
    # only b's shape. Were the read to keep b alive, a big b would stay in the arena.
    from edgerun.runtime import GraphBuilder

    g = GraphBuilder("sumto", opset=17)
    x = g.input("x", np.float32, (-1, 64))
    w = g.constant("w", np.eye(64, dtype=np.float32))
    h = g.op("MatMul", [x, w])
    big = g.op("Relu", [g.op("MatMul", [x, w])])
    y = g.op("Add", [h, big])
    g.output(g.op("ReduceSum", [y, g.constant("axes", np.array([1]))], keepdims=0), "y")
    graph = make_trainable(g.build(), loss="mse")
    assert any(n.op_type == "SumTo" for n in graph.nodes)
    interpreter = Interpreter(graph, device="cpu")
    interpreter.resize_inputs({"x": (256, 64), "labels": (256,)}, signature="train")
    x_in = np.random.default_rng(0).standard_normal((256, 64)).astype(np.float32)
    before = interpreter.variables()["w"]
    interpreter.run({"x": x_in, "labels": np.zeros(256, np.float32)}, signature="train")
    # d loss / d w through both branches, in closed form: loss = mean((sum(xw + relu(xw)))^2)
    z = x_in @ before
    s = (z + np.maximum(z, 0)).sum(axis=1)
    dz = (2 * s / 256)[:, None] * (1 + (z > 0))
    np.testing.assert_allclose(interpreter.variables()["w"], before - 0.01 * x_in.T @ dz, rtol=1e-4, atol=1e-6)


# --- an optimized model (FusedConv) trains ---------------------------------------------------------

@pytest.mark.parametrize("z_shape", [(2, 4, 5, 5), (1, 4, 1, 1)])
def test_fused_conv_gradient_matches_finite_differences(z_shape):
    rng = np.random.default_rng(1)
    x, w, b = rng.standard_normal((2, 3, 5, 5)), rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4)
    z, dy = rng.standard_normal(z_shape), rng.standard_normal((2, 4, 5, 5))
    attrs = {"pads": [1, 1, 1, 1]}
    values = [Value(n, np.float64, a.shape) for n, a in zip("xwbz", (x, w, b, z), strict=True)]
    node = Node("FusedConv", values, [Value("y", np.float64, dy.shape)], attrs, "fused", "edgerun", 1)
    ctx = GradContext(opset=17)
    dy_value = Value("dy", np.float64, dy.shape)
    from edgerun.converters.training.rules import gradient_rule

    grads = gradient_rule("FusedConv")(ctx, node, [dy_value])
    env = {id(v): a for v, a in zip(values, (x, w, b, z), strict=True)} | {id(dy_value): dy}
    for emitted in ctx.nodes:
        arrays = [None if v is None else env[id(v)] for v in emitted.inputs]
        outs = run_kernel(emitted.op_type, arrays, emitted.attrs, domain=emitted.domain, version=emitted.version)
        env.update({id(v): a for v, a in zip(emitted.outputs, outs, strict=False) if v is not None})

    def loss(arrays):
        return float(np.sum(run_kernel("FusedConv", arrays, attrs, domain="edgerun", version=1)[0] * dy))

    inputs = [x, w, b, z]
    for i, grad in enumerate(grads):
        def f(a, i=i):
            return loss([a if j == i else inputs[j] for j in range(4)])
        np.testing.assert_allclose(env[id(grad)], numerical_gradient(f, inputs[i]), rtol=1e-6, atol=1e-8)


def test_an_optimized_mobilenet_trains_as_the_unoptimized_one():
    plain = small_mobilenet()
    fused = small_mobilenet()
    report = optimize(fused)
    assert any(n.op_type == "FusedConv" for n in fused.nodes), report
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 3, 32, 32)).astype(np.float32)
    labels = rng.integers(0, 10, 3)
    after = []
    for graph in (plain, fused):
        interpreter = Interpreter(make_trainable(graph, optimizer=MOMENTUM), device="cpu")
        for _ in range(2):
            interpreter.run({"x": x, "labels": labels}, signature="train")
        after.append(interpreter.run({"x": x}, signature="infer")["y"])
    np.testing.assert_allclose(after[1], after[0], rtol=1e-4, atol=1e-5)


def test_cli_fits_a_profile_and_reports_the_train_step_memory(tmp_path, capsys):
    from edgerun.cli import main
    from edgerun.runtime import save_model

    model = save_model(small_mobilenet(), tmp_path / "small.erm")
    out = tmp_path / "small.train.erm"
    assert main(["make-trainable", str(model), "--profile", "rpi-zero2", "--batch-size", "8", "--recompute",
                 "-o", str(out)]) == 0
    clips = sum(n.op_type == "Clip" for n in small_mobilenet().nodes)
    printed = capsys.readouterr().out
    assert "a train step at batch 8 holds train: " in printed and f"; {clips} activations recomputed" in printed
    from edgerun.runtime import load_model

    assert record(load_model(out))["recomputed"] == clips
    assert main(["make-trainable", str(model), "--profile", "abacus", "-o", str(out)]) == 1
    assert "unknown device profile 'abacus'" in capsys.readouterr().err


def residual_block():
    """Conv 1x1 -> Relu -> Conv 3x3 + skip -> Relu -> GAP -> Gemm: optimize() makes the second
    Conv a FusedConv that adds the skip and applies the Relu (a fused activation)."""
    from edgerun.runtime import GraphBuilder

    rng = np.random.default_rng(0)
    g = GraphBuilder("res", opset=17)
    x = g.input("x", np.float32, (-1, 3, 6, 6))
    h = g.op("Relu", [g.op("Conv", [x, g.constant("w0", rng.standard_normal((4, 3, 1, 1)).astype(np.float32))])])
    c = g.op("Conv", [h, g.constant("w1", (rng.standard_normal((4, 4, 3, 3)) * 0.2).astype(np.float32)),
                      g.constant("b1", np.zeros(4, np.float32))], pads=[1, 1, 1, 1])
    y = g.op("Flatten", [g.op("GlobalAveragePool", [g.op("Relu", [g.op("Add", [c, h])])])])
    g.output(g.op("Gemm", [y, g.constant("fc", rng.standard_normal((5, 4)).astype(np.float32))], transB=1), "y")
    return g.build()


def test_an_optimized_residual_block_with_a_fused_relu_trains_as_the_unoptimized_one():
    fused = residual_block()
    optimize(fused)
    assert [n.attrs.get("activation") for n in fused.nodes if n.op_type == "FusedConv"] == ["Relu"]
    x = np.random.default_rng(1).standard_normal((2, 3, 6, 6)).astype(np.float32)
    after = []
    for graph in (residual_block(), fused):
        interpreter = Interpreter(make_trainable(graph, optimizer="sgd"), device="cpu")
        interpreter.run({"x": x, "labels": np.array([1, 4])}, signature="train")
        after.append(interpreter.run({}, signature="save"))
    for name in after[0]:
        np.testing.assert_allclose(after[1][name], after[0][name], rtol=1e-5, atol=1e-6, err_msg=name)


def test_the_budget_is_checked_even_on_a_host_whose_own_budget_is_smaller(monkeypatch):
    # On the device itself (a Pi Zero 2: half of 512 MB), the measurement of the step without
    # recomputation must not be refused by the host's budget before recomputation is tried.
    graph = small_mobilenet()
    plain = train_step_memory(make_trainable(graph, optimizer=MOMENTUM), batch_size=16)
    recomputed = train_step_memory(make_trainable(graph, optimizer=MOMENTUM, recompute=True), batch_size=16)
    monkeypatch.setattr("edgerun.runtime.plan._physical_memory", lambda: 2 * (recomputed.arena_bytes + 4096))
    fitted = make_trainable(graph, optimizer=MOMENTUM, memory_budget=recomputed.total_bytes, batch_size=16)
    assert plain.total_bytes > recomputed.total_bytes and record(fitted)["recomputed"] > 0

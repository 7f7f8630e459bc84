"""The cuda backend's training kernels (devices/cuda/training.py) against the CPU reference kernels,
under numba's CUDA simulator: train steps of small trainable models (make_trainable) run on
device="cuda" and on device="cpu" give the same losses, accuracies and variables afterwards.
Covers SGD (momentum, nesterov, weight decay), Adam and AdamW, the activation gradients,
softmax cross-entropy with class indices and one-hot targets, GemmGrad (transA, alpha, beta,
C shapes), ConvGrad (strides, pads, dilations, auto_pad, groups, depthwise), MaxPoolGrad
(overlapping windows, ties, ceil_mode) and the host fallback of 1-D convolutions and pools."""

from __future__ import annotations

import numpy as np
import pytest

from edgerun.converters.training import make_trainable
from edgerun.devices.cuda import training  # registers the claims
from edgerun.runtime import Interpreter
from edgerun.runtime.graph import Graph, GraphBuilder
from tests.converters.training.models import cnn, mlp
from tests.devices.cuda.harness import expect_same_as_cpu

TOL = {np.float32: dict(rtol=1e-4, atol=1e-5), np.float64: dict(rtol=1e-10, atol=1e-10)}
TRAINING = {"SGDUpdate", "AdamUpdate", "ReluGrad", "LeakyReluGrad", "SigmoidGrad", "TanhGrad", "SoftmaxCrossEntropy",
            "SoftmaxCrossEntropyGrad", "Accuracy", "GemmGrad", "ConvGrad", "MaxPoolGrad", "GlobalAveragePoolGrad",
            "ReshapeLike"}


def train_both(model: Graph, feeds: dict[str, np.ndarray], dtype, steps: int = 2) -> dict[str, str]:
    """Run `steps` train steps on cuda and cpu: same outputs every step, same variables after;
    assert every training op of the model ran on the GPU. Returns the placement."""
    cpu, gpu = Interpreter(model, device="cpu"), Interpreter(model, device="cuda")
    for step in range(steps):
        want, got = cpu.run(dict(feeds), "train"), gpu.run(dict(feeds), "train")
        for name in want:
            np.testing.assert_allclose(got[name], want[name], **TOL[dtype], err_msg=f"step {step}: {name}")
    want, got = cpu.variables(), gpu.variables()
    assert got.keys() == want.keys()
    for name in want:
        assert got[name].dtype == want[name].dtype, name
        np.testing.assert_allclose(got[name], want[name], **TOL[dtype], err_msg=name)
    placement = gpu.placement("train")
    ops = {node.name: node.op_type for node in model.nodes}
    off = [f"{name} ({ops[name]})" for name, where in placement.items()
           if ops.get(name) in TRAINING and where != "device"]
    assert not off, f"ran on the host, not the GPU: {off}"
    return placement


def classes(rng: np.random.Generator, batch: int, count: int) -> np.ndarray:
    return rng.integers(0, count, batch).astype(np.int64)


# ------------------------------------------------------------------ optimizers and losses on an MLP
@pytest.mark.parametrize("dtype, optimizer", [
    (np.float32, ("sgd", {"lr": 0.1})),
    (np.float64, ("sgd", {"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01})),
    (np.float32, ("adam", {"lr": 0.01, "weight_decay": 0.1})),
    (np.float64, ("adamw", {"lr": 0.01, "weight_decay": 0.1})),
])
def test_mlp_train_steps(dtype, optimizer):
    rng = np.random.default_rng(1)
    model = make_trainable(mlp((6, 5, 3), dtype=dtype), optimizer=optimizer)
    feeds = {"x": rng.standard_normal((5, 6)).astype(dtype), "labels": classes(rng, 5, 3),
             "learning_rate": np.array(optimizer[1]["lr"], dtype)}
    placement = train_both(model, feeds, dtype)
    updates = [name for name in placement if "Update" in name]
    assert len(updates) == 4


def test_one_hot_labels():
    rng = np.random.default_rng(2)
    model = make_trainable(mlp((6, 5, 3), dtype=np.float64), optimizer=("sgd", {"lr": 0.5}), one_hot_labels=True)
    labels = np.eye(3)[classes(rng, 5, 3)]
    labels[0] = (0.2, 0.5, 0.3)  # a soft target
    feeds = {"x": rng.standard_normal((5, 6)), "labels": labels, "learning_rate": np.array(0.5)}
    train_both(model, feeds, np.float64)


def optimizer_nodes(dtype) -> tuple[Graph, dict[str, np.ndarray]]:
    """SGDUpdate with momentum and AdamUpdate (an int64 step, a float64 learning rate) whose
    nodes keep only their new parameter: the state outputs are omitted."""
    rng = np.random.default_rng(10)
    g = GraphBuilder("updates", opset=17)
    feeds = {name: rng.standard_normal((3, 7)).astype(dtype) for name in ("param", "grad", "state", "m", "v")}
    feeds["v"] = np.abs(feeds["v"])
    feeds.update(lr=np.array(0.05), step=np.array(4, np.int64))
    x = {name: g.input(name, array.dtype, array.shape) for name, array in feeds.items()}
    sgd = g.op("SGDUpdate", [x["param"], x["grad"], x["lr"], x["state"]], name="sgd", domain="edgerun",
               momentum=0.8, nesterov=1, weight_decay=0.1)
    adam = g.op("AdamUpdate", [x["param"], x["grad"], x["lr"], x["m"], x["v"], x["step"]], name="adam",
                domain="edgerun", beta1=0.8, beta2=0.95, epsilon=1e-6)
    g.output(sgd, "new_param_sgd")
    g.output(adam, "new_param_adam")
    return g.build(), feeds


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_updates_without_state_outputs(dtype):
    model, feeds = optimizer_nodes(dtype)
    expect_same_as_cpu(model, feeds, **TOL[dtype], on_device=("SGDUpdate", "AdamUpdate"))


def test_losses_with_int32_labels_and_ties():
    rng = np.random.default_rng(11)
    g = GraphBuilder("losses", opset=17)
    logits, labels = rng.standard_normal((9, 37)), rng.integers(0, 37, 9).astype(np.int32)
    logits[2] = 1.5  # a row of ties: argmax is the first class
    labels[2] = 0
    x, y, dloss = g.input("x", np.float64, (9, 37)), g.input("y", np.int32, (9,)), g.input("dloss", np.float64, ())
    g.output(g.op("SoftmaxCrossEntropy", [x, y], name="sce", domain="edgerun"), "loss")
    g.output(g.op("SoftmaxCrossEntropyGrad", [dloss, x, y], name="sce_grad", domain="edgerun"), "dlogits")
    g.output(g.op("Accuracy", [x, y], name="acc", domain="edgerun"), "accuracy")
    feeds = {"x": logits, "y": labels, "dloss": np.array(0.7)}
    expect_same_as_cpu(g.build(), feeds, **TOL[np.float64],
                       on_device=("SoftmaxCrossEntropy", "SoftmaxCrossEntropyGrad", "Accuracy"))


def activations_mlp() -> Graph:
    """Gemm -> LeakyRelu -> Sigmoid -> Tanh -> Gemm, float32."""
    rng = np.random.default_rng(3)
    g = GraphBuilder("activations", opset=17)
    w0 = g.constant("fc0.weight", rng.standard_normal((5, 4)).astype(np.float32))
    h = g.op("Gemm", [g.input("x", np.float32, (-1, 4)), w0], name="fc0", transB=1)
    h = g.op("Tanh", [g.op("Sigmoid", [g.op("LeakyRelu", [h], name="leaky", alpha=0.2)], name="sigmoid")], name="tanh")
    w1 = g.constant("fc1.weight", rng.standard_normal((3, 5)).astype(np.float32))
    g.output(g.op("Gemm", [h, w1], name="fc1", transB=1), "y")
    return g.build()


def test_activation_grads():
    rng = np.random.default_rng(4)
    model = make_trainable(activations_mlp(), optimizer=("sgd", {"lr": 0.3}))
    feeds = {"x": rng.standard_normal((7, 4)).astype(np.float32), "labels": classes(rng, 7, 3),
             "learning_rate": np.array(0.3, np.float32)}
    placement = train_both(model, feeds, np.float32)
    ops = {node.op_type for node in model.nodes if node.name in placement}
    assert {"LeakyReluGrad", "SigmoidGrad", "TanhGrad"} <= ops


def gemm_variants() -> Graph:
    """Gemm(W, x^T) with C (5, 1), then Gemm(h^T, W2) with transA, alpha, beta and a row C; float64."""
    rng = np.random.default_rng(5)
    g = GraphBuilder("gemms", opset=17)
    x = g.input("x", np.float64, (-1, 4))
    w, c = g.constant("w", rng.standard_normal((5, 4))), g.constant("c", rng.standard_normal((5, 1)))
    h = g.op("Relu", [g.op("Gemm", [w, x, c], name="g0", transB=1)], name="relu")  # (5, N)
    w2, c2 = g.constant("w2", rng.standard_normal((5, 3))), g.constant("c2", rng.standard_normal((1, 3)))
    g.output(g.op("Gemm", [h, w2, c2], name="g1", transA=1, alpha=0.5, beta=2.0), "y")
    return g.build()


def test_gemm_grad_variants():
    rng = np.random.default_rng(6)
    model = make_trainable(gemm_variants(), optimizer=("adam", {"lr": 0.05}))
    feeds = {"x": rng.standard_normal((6, 4)), "labels": classes(rng, 6, 3), "learning_rate": np.array(0.05)}
    train_both(model, feeds, np.float64)


# ------------------------------------------------------------------ convolutions and pools
def test_cnn_train_steps():
    rng = np.random.default_rng(7)
    model = make_trainable(cnn(batch_norm=False), optimizer=("sgd", {"lr": 0.1, "momentum": 0.9}))
    feeds = {"x": rng.standard_normal((2, 1, 8, 8)).astype(np.float32), "labels": classes(rng, 2, 10),
             "learning_rate": np.array(0.1, np.float32)}
    placement = train_both(model, feeds, np.float32, steps=1)  # one step: the simulator's GEMMs are slow
    ops = {node.op_type for node in model.nodes if node.name in placement}
    assert {"ConvGrad", "MaxPoolGrad", "GlobalAveragePoolGrad", "ReshapeLike"} <= ops


def conv_net(dtype, shape: tuple[int, ...], pool: dict, convs: list[dict]) -> Graph:
    """x -> Conv 1x1 (4 channels) -> Relu -> MaxPool(pool) -> Conv(c) -> Relu for each c in convs
    -> GlobalAveragePool -> Flatten -> Gemm (3 classes): every Conv but the first and the pool
    get dX as well as dW. A conv's `out` is its output channels (default 4), `kernel` its
    kernel (default 3 wide)."""
    rng = np.random.default_rng(8)
    g = GraphBuilder("convs", opset=17)
    spatial, channels = len(shape) - 2, 4
    x = g.input("x", dtype, (-1, *shape[1:]))
    w0 = g.constant("w0", rng.standard_normal((channels, shape[1]) + (1,) * spatial).astype(dtype))
    h = g.op("MaxPool", [g.op("Relu", [g.op("Conv", [x, w0], name="conv0")], name="relu0")], name="pool", **pool)
    for i, conv in enumerate(convs, 1):
        attrs = dict(conv)
        kernel, out = attrs.pop("kernel", (3,) * spatial), attrs.pop("out", 4)
        w = g.constant(f"w{i}", rng.standard_normal((out, channels // attrs.get("group", 1), *kernel)).astype(dtype))
        b = g.constant(f"b{i}", rng.standard_normal(out).astype(dtype))
        h = g.op("Relu", [g.op("Conv", [h, w, b], name=f"conv{i}", **attrs)], name=f"relu{i}")
        channels = out
    h = g.op("Flatten", [g.op("GlobalAveragePool", [h], name="gap")], name="flat")
    w = g.constant("fc", rng.standard_normal((3, channels)).astype(dtype))
    g.output(g.op("Gemm", [h, w], name="fc", transB=1), "y")
    return g.build()


def conv_feeds(dtype, shape: tuple[int, ...]) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(9)
    return {"x": rng.standard_normal(shape).astype(dtype), "labels": classes(rng, shape[0], 3),
            "learning_rate": np.array(0.1, dtype)}


def test_conv_and_pool_grads_strides_pads_dilations_groups(monkeypatch):
    monkeypatch.setattr(training, "COLUMN_BUDGET", 64)  # one image per im2col chunk: dW and dB add up chunks
    pool = dict(kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1])  # overlapping windows; Relu's zeros tie
    convs = [dict(strides=[2, 2], pads=[1, 0, 2, 1]),
             dict(dilations=[2, 1], pads=[2, 1, 1, 1], kernel=(2, 3), group=2, out=6)]
    model = make_trainable(conv_net(np.float64, (2, 2, 7, 6), pool, convs), optimizer=("sgd", {"lr": 0.1}))
    train_both(model, conv_feeds(np.float64, (2, 2, 7, 6)), np.float64, steps=1)
    with_dx = [n for n in model.nodes if n.op_type == "ConvGrad" and n.attrs.get("compute_dx", 1)]
    assert len(with_dx) == 2


def test_conv_and_pool_grads_ceil_mode_auto_pad_depthwise():
    pool = dict(kernel_shape=[2, 3], strides=[2, 2], dilations=[1, 2], ceil_mode=1)
    convs = [dict(group=4, auto_pad="SAME_UPPER", strides=[2, 1]),  # depthwise
             dict(group=4, out=8, pads=[1, 0, 0, 1], kernel=(2, 2))]  # depthwise, channel multiplier 2
    model = make_trainable(conv_net(np.float32, (3, 1, 8, 9), pool, convs), optimizer=("adam", {"lr": 0.1}))
    train_both(model, conv_feeds(np.float32, (3, 1, 8, 9)), np.float32, steps=1)


def test_1d_conv_and_pool_grads_fall_back_to_the_host():
    model = make_trainable(conv_net(np.float64, (2, 2, 8), dict(kernel_shape=[2], strides=[2]), [dict(pads=[1, 1])]),
                           optimizer=("sgd", {"lr": 0.1}))
    placement = expect_same_as_cpu(model, conv_feeds(np.float64, (2, 2, 8)), **TOL[np.float64],
                                   on_device=("GemmGrad", "ReluGrad", "SGDUpdate"), signature="train")
    ops = {node.name: node.op_type for node in model.nodes}
    assert {placement[n] for n, op in ops.items() if op in ("ConvGrad", "MaxPoolGrad") and n in placement} == {"host"}


# ------------------------------------------------------------------ bad data: the host's errors, nothing changed
@pytest.mark.parametrize(("optimizer", "feeds", "message"), [
    (("sgd", {"lr": 0.1}), {"labels": np.array([0, 3, 1, 2, 0])}, r"label 3 at row 1 is out of range for 3 classes"),
    (("sgd", {"lr": 0.1}), {"labels": np.array([0, -1, 1, 2, 0])}, r"label -1 at row 1 is out of range"),
    (("sgd", {"lr": 0.1}), {"learning_rate": np.array(-0.1, np.float32)}, r"learning rate must be finite and >= 0"),
    (("adam", {"lr": 0.01}), {"learning_rate": np.array(np.nan, np.float32)}, r"learning rate must be finite"),
])
def test_bad_labels_and_rates_are_the_hosts_input_errors(optimizer, feeds, message):
    """A kernel cannot raise: the device steps' checks run on the host before the run, with the
    reference kernels' messages, and leave every variable as it was."""
    from edgerun.runtime.errors import InputError

    rng = np.random.default_rng(3)
    model = make_trainable(mlp((6, 5, 3)), optimizer=optimizer)
    good = {"x": rng.standard_normal((5, 6)).astype(np.float32), "labels": classes(rng, 5, 3),
            "learning_rate": np.array(optimizer[1]["lr"], np.float32)}
    gpu, cpu = Interpreter(model, device="cuda"), Interpreter(model, device="cpu")
    gpu.run(dict(good), "train")
    cpu.run(dict(good), "train")
    before = gpu.variables()
    for it in (gpu, cpu):  # the same error as the CPU's
        with pytest.raises(InputError, match=message):
            it.run({**good, **feeds}, "train")
    assert {k: v.tolist() for k, v in gpu.variables().items()} == {k: v.tolist() for k, v in before.items()}
    checked = [n.name for n in model.nodes if n.op_type in ("SGDUpdate", "AdamUpdate", "SoftmaxCrossEntropy")]
    assert all(gpu.placement("train")[name] == "device" for name in checked)
    np.testing.assert_allclose(gpu.run(dict(good), "train")["loss"], cpu.run(dict(good), "train")["loss"], rtol=1e-5)

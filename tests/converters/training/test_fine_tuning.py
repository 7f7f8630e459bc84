"""Fine-tuning the last layers: the frozen part of the network stays plain inference."""

from __future__ import annotations

import numpy as np

from edgerun.converters.training import make_trainable
from edgerun.runtime import GraphBuilder, Interpreter, save_model


def mobile_cnn(seed: int = 0):
    """Conv -> Relu6 three times, global average pool, a Gemm head (a MobileNet-like stack)."""
    rng = np.random.default_rng(seed)
    g = GraphBuilder("cnn", opset=17)
    h = g.input("x", np.float32, (-1, 3, 8, 8))
    for i in range(3):
        w = g.constant(f"c{i}.w", (rng.standard_normal((8, 3 if i == 0 else 8, 3, 3)) * 0.2).astype(np.float32))
        h = g.op("Conv", [h, w], pads=[1, 1, 1, 1])
        h = g.op("Clip", [h, g.constant(f"lo{i}", np.float32(0)), g.constant(f"hi{i}", np.float32(6))])
    h = g.op("Flatten", [g.op("GlobalAveragePool", [h])])
    head = g.constant("fc.w", (rng.standard_normal((10, 8)) * 0.2).astype(np.float32))
    h = g.op("Gemm", [h, head, g.constant("fc.b", np.zeros(10, np.float32))], transB=1)
    g.output(h, "y")
    return g.build()


def test_training_the_last_layer_adds_no_gradient_node_for_the_frozen_part(tmp_path):
    graph = make_trainable(mobile_cnn(), trainable=1, optimizer=("sgd", {"lr": 0.5}))
    assert list(graph.signatures["save"].outputs) == ["fc.w", "fc.b"]
    grads = sorted(n.op_type for n in graph.nodes if n.op_type.endswith("Grad"))
    assert grads == ["GemmGrad", "SoftmaxCrossEntropyGrad"]  # no ConvGrad, ClipGrad or pool gradient

    frozen = {v.name: v for node in graph.nodes for v in node.inputs if v is not None and v.name.endswith(".w")}
    assert all(frozen[f"c{i}.w"].is_constant for i in range(3))  # constants: nothing can update them

    model = Interpreter(save_model(graph, tmp_path / "cnn.train.erm"))
    before = model.run({}, signature="save")
    x = np.random.default_rng(1).standard_normal((4, 3, 8, 8)).astype(np.float32)
    model.run({"x": x, "labels": np.array([0, 1, 2, 3])}, signature="train")
    after = model.run({}, signature="save")
    assert not np.allclose(after["fc.w"], before["fc.w"])  # the head trained


# --- fine-tuning the head of a depthwise CNN on digits, against a numpy reference -----------------

def _conv3x3(x: np.ndarray, w: np.ndarray, b: np.ndarray, group: int = 1) -> np.ndarray:
    """A 3x3 convolution with padding 1 in float64 numpy (the reference, independent of edgerun)."""
    from numpy.lib.stride_tricks import sliding_window_view

    windows = sliding_window_view(np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1))), (3, 3), axis=(2, 3))
    if group == 1:
        return np.einsum("nchwij,ocij->nohw", windows, w) + b[None, :, None, None]
    return np.einsum("nchwij,cij->nchw", windows, w[:, 0]) + b[None, :, None, None]


def _pool(a: np.ndarray) -> np.ndarray:
    """2x2 average pooling of (n, c, 8, 8), flattened to (n, c * 16) as Flatten orders it."""
    return a.reshape(len(a), a.shape[1], 4, 2, 4, 2).mean(axis=(3, 5)).reshape(len(a), -1)


def _reference_fine_tuning(weights: dict, x: np.ndarray, y: np.ndarray, batches: list, lr: float,
                           momentum: float) -> dict:
    """SGD with momentum (PyTorch's convention) on the head (1x1 conv + Relu6 + 2x2 average pool +
    Gemm) in
    float64, the backbone's features computed once: the closed-form gradients of mean softmax
    cross-entropy."""
    features = np.clip(_conv3x3(np.clip(_conv3x3(x.astype(np.float64), weights["stem.weight"], weights["stem.bias"]),
                                        0, 6), weights["dw.weight"], weights["dw.bias"], group=16), 0, 6)
    params = {k: weights[k].astype(np.float64) for k in ("head.weight", "head.bias", "fc.weight", "fc.bias")}
    velocity = {k: np.zeros_like(v) for k, v in params.items()}
    for batch in batches:
        f, labels = features[batch], y[batch]
        z = np.einsum("oc,nchw->nohw", params["head.weight"][:, :, 0, 0], f) + params["head.bias"][None, :, None, None]
        pooled = _pool(np.clip(z, 0, 6))
        logits = pooled @ params["fc.weight"].T + params["fc.bias"]
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        p[np.arange(len(labels)), labels] -= 1
        dlogits = p / len(labels)
        dpooled = (dlogits @ params["fc.weight"]).reshape(-1, 32, 4, 1, 4, 1) / 4
        dz = np.broadcast_to(dpooled, (len(labels), 32, 4, 2, 4, 2)).reshape(z.shape) * ((z > 0) & (z < 6))
        grads = {"fc.weight": dlogits.T @ pooled, "fc.bias": dlogits.sum(axis=0),
                 "head.weight": np.einsum("nohw,nchw->oc", dz, f)[:, :, None, None],
                 "head.bias": dz.sum(axis=(0, 2, 3))}
        for k in params:
            velocity[k] = momentum * velocity[k] + grads[k]
            params[k] = params[k] - lr * velocity[k]
    return params


def test_fine_tuning_a_depthwise_cnn_head_on_digits_matches_the_numpy_reference():
    from tests.converters.training.models import depthwise_cnn, digits

    x_train, y_train, x_test, y_test = digits(images=True)
    graph = depthwise_cnn()
    weights = {v.name: v.data for v in graph.values() if v.is_constant and v.data.ndim >= 1}
    trainable = make_trainable(graph, trainable=2, optimizer=("sgd", {"lr": 0.1, "momentum": 0.9}))
    assert list(trainable.signatures["save"].outputs) == ["head.weight", "head.bias", "fc.weight", "fc.bias"]
    model = Interpreter(trainable, device="cpu")
    order = np.random.default_rng(3).permutation(len(y_train))
    batches = [order[i:i + 32] for i in range(0, len(order) - 31, 32)] * 2  # two epochs of 32
    for batch in batches:
        model.run({"x": x_train[batch], "labels": y_train[batch]}, signature="train")
    want = _reference_fine_tuning(weights, x_train, y_train, batches, lr=0.1, momentum=0.9)
    got = model.run({}, signature="save")
    for name, value in want.items():
        np.testing.assert_allclose(got[name], value, rtol=2e-3, atol=2e-4, err_msg=name)

    def accuracy(logits):
        return float(np.mean(np.argmax(logits, axis=1) == y_test))

    ours = accuracy(model.run({"x": x_test}, signature="infer")["y"])
    reference = {**weights, **want}
    features = np.clip(_conv3x3(np.clip(_conv3x3(x_test.astype(np.float64), reference["stem.weight"],
                                                 reference["stem.bias"]), 0, 6),
                                reference["dw.weight"], reference["dw.bias"], group=16), 0, 6)
    z = np.einsum("oc,nchw->nohw", reference["head.weight"][:, :, 0, 0], features)
    pooled = _pool(np.clip(z + reference["head.bias"][None, :, None, None], 0, 6))
    theirs = accuracy(pooled @ reference["fc.weight"].T + reference["fc.bias"])
    assert abs(ours - theirs) <= 0.01 and ours > 0.8  # the head learned digits from frozen random features

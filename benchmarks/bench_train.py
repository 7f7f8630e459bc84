"""Training steps per second: edgerun's train signature vs plain numpy and PyTorch CPU.

Two models from tests/converters/training/models.py, float32, batch 32 of sklearn's
digits (the same fixed batch every step), softmax cross-entropy, SGD with lr 0.01:
  MLP  64-64-10 (Gemm, Relu, Gemm)
  CNN  1x8x8 -> Conv 3x3 (8), BatchNorm (batch statistics), Relu, MaxPool 2,
       Conv 3x3 (16), Relu, GlobalAveragePool, Flatten, Gemm 16->10

    .venv/bin/python benchmarks/bench_train.py [--threads 2] [--blocks 5] [--steps 100] [--markdown]

Candidates, all measured in the same run in alternating blocks (`--blocks x --steps`
steps each, every step timed on its own, median reported):
  edgerun  Interpreter(serialize(make_trainable(...))) running the "train" signature
           (device "auto"), which also returns the loss and the batch accuracy.
  numpy    the same forward, backward and SGD update written directly in numpy (im2col
           convolutions over NHWC arrays): the least a Python runtime can pay.
  torch    the same architecture in torch.nn with edgerun's weights: zero_grad, forward,
           cross_entropy, backward, SGD step. Skipped when torch is not installed.
`--threads` is edgerun's num_threads (it caps the process-wide BLAS pool, which numpy
uses too) and torch.set_num_threads. Before timing, one step of numpy and of torch from
edgerun's starting weights must give edgerun's updated weights (rtol 1e-4) and the same
weight update (rtol 1e-3 of the update itself), else SystemExit. Ratios are edgerun's
time over the other's: > 1.00 means edgerun is slower.
"""

# ruff: noqa: E402 - the repository root goes on sys.path before project imports
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from benchmarks._harness import machine, print_table, time_interleaved
from edgerun.converters.training import make_trainable
from edgerun.runtime import Interpreter, serialize
from tests.converters.training.models import cnn, digits, mlp

BATCH, LR, BN_EPS, BN_MOMENTUM = 32, 0.01, 1e-5, 0.9
Params = dict[str, np.ndarray]


# ------------------------------------------------------------------ numpy floor
def _softmax_xent(logits: np.ndarray, labels: np.ndarray) -> tuple[float, float, np.ndarray]:
    """(mean loss, accuracy, dloss/dlogits) of softmax cross-entropy on integer labels."""
    n = len(labels)
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    total = exp.sum(axis=1, keepdims=True)
    rows = np.arange(n)
    loss = float(np.mean(np.log(total[:, 0]) - shifted[rows, labels]))
    accuracy = float(np.mean(logits.argmax(axis=1) == labels))
    dlogits = exp / total
    dlogits[rows, labels] -= 1
    dlogits /= n
    return loss, accuracy, dlogits


def _sgd(p: Params, grads: Params) -> None:
    for name, grad in grads.items():
        p[name] -= LR * grad


def numpy_mlp_step(p: Params, x: np.ndarray, labels: np.ndarray) -> float:
    """One SGD step of the MLP on `p` (updated in place); returns the loss."""
    h = x @ p["fc0.weight"].T + p["fc0.bias"]
    a = np.maximum(h, 0)
    loss, _, dz = _softmax_xent(a @ p["fc1.weight"].T + p["fc1.bias"], labels)
    dh = dz @ p["fc1.weight"]
    dh *= h > 0
    _sgd(p, {"fc1.weight": dz.T @ a, "fc1.bias": dz.sum(axis=0),
             "fc0.weight": dh.T @ x, "fc0.bias": dh.sum(axis=0)})
    return loss


def _im2col(x: np.ndarray, k: int = 3) -> np.ndarray:
    """NHWC (N, H, W, C) -> (N*H*W, C*k*k) patches of a stride-1, zero-padded 'same' conv."""
    n, h, w, c = x.shape
    pad = k // 2
    padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    return sliding_window_view(padded, (k, k), axis=(1, 2)).reshape(n * h * w, c * k * k)


def _col2im(cols: np.ndarray, shape: tuple[int, int, int, int], k: int = 3) -> np.ndarray:
    """The adjoint of _im2col: sums patch gradients (N*H*W, C*k*k) back into NHWC `shape`."""
    n, h, w, c = shape
    pad = k // 2
    patches = cols.reshape(n, h, w, c, k, k)
    out = np.zeros((n, h + 2 * pad, w + 2 * pad, c), cols.dtype)
    for i in range(k):
        for j in range(k):
            out[:, i:i + h, j:j + w, :] += patches[..., i, j]
    return out[:, pad:pad + h, pad:pad + w, :]


def _cnn_forward(p: Params, x: np.ndarray) -> dict[str, np.ndarray]:
    """The CNN's training-mode forward pass over NHWC input; returns what backward needs."""
    n = len(x)
    w1, w2 = p["conv1.weight"], p["conv2.weight"]
    c1 = _im2col(x)
    z1 = c1 @ w1.reshape(len(w1), -1).T + p["conv1.bias"]                # (N*64, 8)
    mean, var = z1.mean(axis=0), z1.var(axis=0)
    inv_std = 1 / np.sqrt(var + BN_EPS)
    xhat = (z1 - mean) * inv_std
    bn = xhat * p["bn1.scale"] + p["bn1.bias"]
    windows = np.maximum(bn, 0).reshape(n, 4, 2, 4, 2, 8).transpose(0, 1, 3, 5, 2, 4).reshape(n, 4, 4, 8, 4)
    route = windows.argmax(axis=-1)[..., None]
    pooled = np.take_along_axis(windows, route, axis=-1)[..., 0]          # (N, 4, 4, 8)
    c2 = _im2col(pooled)
    z2 = c2 @ w2.reshape(len(w2), -1).T + p["conv2.bias"]                # (N*16, 16)
    gap = np.maximum(z2, 0).reshape(n, 16, 16).mean(axis=1)
    logits = gap @ p["fc.weight"].T + p["fc.bias"]
    return {"c1": c1, "mean": mean, "var": var, "inv_std": inv_std, "xhat": xhat, "bn": bn,
            "route": route, "pooled": pooled, "c2": c2, "z2": z2, "gap": gap, "logits": logits}


def numpy_cnn_step(p: Params, x_nchw: np.ndarray, labels: np.ndarray) -> float:
    """One SGD step of the CNN on `p` (updated in place, running statistics too); returns the loss."""
    n = len(x_nchw)
    f = _cnn_forward(p, x_nchw.transpose(0, 2, 3, 1))
    loss, _, dlogits = _softmax_xent(f["logits"], labels)
    w2 = p["conv2.weight"]
    dz2 = np.repeat(dlogits @ p["fc.weight"] / 16, 16, axis=0)           # (N*16, 16)
    dz2 *= f["z2"] > 0
    dpooled = _col2im(dz2 @ w2.reshape(len(w2), -1), f["pooled"].shape)
    dwindows = np.zeros((n, 4, 4, 8, 4), np.float32)
    np.put_along_axis(dwindows, f["route"], dpooled[..., None], axis=-1)
    dbn = dwindows.reshape(n, 4, 4, 8, 2, 2).transpose(0, 1, 4, 2, 5, 3).reshape(n * 64, 8)
    dbn *= f["bn"] > 0
    m = len(dbn)
    dbeta, dgamma = dbn.sum(axis=0), (dbn * f["xhat"]).sum(axis=0)
    dz1 = p["bn1.scale"] * f["inv_std"] * (dbn - dbeta / m - f["xhat"] * (dgamma / m))
    _sgd(p, {"fc.weight": dlogits.T @ f["gap"], "fc.bias": dlogits.sum(axis=0),
             "conv2.weight": (dz2.T @ f["c2"]).reshape(w2.shape), "conv2.bias": dz2.sum(axis=0),
             "bn1.scale": dgamma, "bn1.bias": dbeta,
             "conv1.weight": (dz1.T @ f["c1"]).reshape(p["conv1.weight"].shape),
             "conv1.bias": dz1.sum(axis=0)})
    p["bn1.mean"] *= BN_MOMENTUM
    p["bn1.mean"] += (1 - BN_MOMENTUM) * f["mean"]
    p["bn1.var"] *= BN_MOMENTUM
    p["bn1.var"] += (1 - BN_MOMENTUM) * f["var"] * (m / (m - 1))
    return loss


# ------------------------------------------------------------------ PyTorch
# edgerun variable name -> torch state_dict key, where they differ.
_TORCH_NAMES = {"bn1.scale": "bn1.weight", "bn1.mean": "bn1.running_mean", "bn1.var": "bn1.running_var"}


def torch_model(model: str, params: Params):
    """The model in torch.nn (module names = edgerun's node names) holding copies of `params`."""
    from collections import OrderedDict

    import torch
    from torch import nn

    if model == "mlp":
        layers = OrderedDict(fc0=nn.Linear(64, 64), relu0=nn.ReLU(), fc1=nn.Linear(64, 10))
    else:
        layers = OrderedDict(conv1=nn.Conv2d(1, 8, 3, padding=1), bn1=nn.BatchNorm2d(8, eps=BN_EPS,
                             momentum=1 - BN_MOMENTUM), relu1=nn.ReLU(), pool1=nn.MaxPool2d(2),
                             conv2=nn.Conv2d(8, 16, 3, padding=1), relu2=nn.ReLU(),
                             gap=nn.AdaptiveAvgPool2d(1), flat=nn.Flatten(), fc=nn.Linear(16, 10))
    net = nn.Sequential(layers)
    state = net.state_dict()  # keeps bn1.num_batches_tracked, which edgerun has no variable for
    state.update({_TORCH_NAMES.get(k, k): torch.from_numpy(v.copy()) for k, v in params.items()})
    net.load_state_dict(state)
    return net


def torch_step_fn(net, x: np.ndarray, labels: np.ndarray) -> Callable[[], object]:
    """A closure running one SGD step of `net` on the fixed batch."""
    import torch

    xt, yt = torch.from_numpy(x), torch.from_numpy(labels)
    optimizer = torch.optim.SGD(net.parameters(), lr=LR)
    net.train()

    def step() -> object:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(xt), yt)
        loss.backward()
        optimizer.step()
        return loss

    return step


def torch_params(net, names: list[str]) -> Params:
    """Copies of `net`'s parameters and running statistics under edgerun's `names`."""
    state = net.state_dict()
    return {name: state[_TORCH_NAMES.get(name, name)].detach().numpy().copy() for name in names}


def _torch_version() -> str | None:
    try:
        import torch
    except ImportError:
        return None
    return torch.__version__


# ------------------------------------------------------------------ checks and timing
def check_step(label: str, start: Params, edgerun: Params, other: Params) -> str:
    """SystemExit unless one step of `other` from `start` gave edgerun's weights (rtol 1e-4) and
    the same update new - old, within 1e-3 of that tensor's largest update or 1e-5 of the model's
    (a mathematically zero gradient, conv1.bias before BatchNorm, leaves float32 rounding only).
    Returns a summary line."""
    updates = {name: ours - start[name].astype(np.float64) for name, ours in edgerun.items()}
    floor = 1e-5 * max(float(np.abs(u).max()) for u in updates.values())
    worst = 0.0
    for name, update in updates.items():
        ours, theirs = edgerun[name], other[name]
        their_update = theirs - start[name].astype(np.float64)
        scale = float(np.abs(update).max())
        ulps = 4 * np.finfo(np.float32).eps * float(np.abs(start[name]).max())
        if not (np.allclose(theirs, ours, rtol=1e-4, atol=1e-7)
                and np.allclose(their_update, update, rtol=1e-3, atol=max(1e-3 * scale, floor) + ulps)):
            diff = np.abs(theirs.astype(np.float64) - ours).max()
            raise SystemExit(f"{label}: {name!r} after one step differs from edgerun's "
                             f"(max abs diff {diff:.3g}, largest update {scale:.3g})")
        worst = max(worst, float(np.abs(their_update - update).max()) / max(scale, floor))
    return f"# check {label}: one step matches edgerun's (worst update error {worst:.1e} of the update)"


def measure(model: str, threads: int, has_torch: bool, args: argparse.Namespace) -> list[list[object]]:
    """Table rows for one model: every candidate's median step time, after the agreement checks."""
    graph = mlp((64, 64, 10)) if model == "mlp" else cnn()
    it = Interpreter(serialize(make_trainable(graph, optimizer=("sgd", {"lr": LR}))), num_threads=threads)
    x_all, y_all, _, _ = digits(images=model == "cnn")
    x, labels = np.ascontiguousarray(x_all[:BATCH]), np.ascontiguousarray(y_all[:BATCH])
    feeds = {"x": x, "labels": labels}
    start = it.run({}, "save")
    it.run(feeds, "train")
    after = it.run({}, "save")

    params = {k: v.copy() for k, v in start.items()}
    numpy_step = numpy_mlp_step if model == "mlp" else numpy_cnn_step
    numpy_step(params, x, labels)
    print(check_step(f"{model} numpy", start, after, params))
    candidates: dict[str, Callable[[], object]] = {
        "edgerun": lambda: it.run(feeds, "train"),
        "numpy": lambda: numpy_step(params, x, labels),
    }
    if has_torch:
        net = torch_model(model, start)
        candidates["torch"] = torch_step_fn(net, x, labels)
        candidates["torch"]()
        print(check_step(f"{model} torch", start, after, torch_params(net, list(start))))
    for fn in candidates.values():
        for _ in range(args.warmup):
            fn()
    times = time_interleaved(candidates, args.blocks, args.steps)
    return _rows(model, times, has_torch)


def _rows(model: str, times: dict[str, np.ndarray], has_torch: bool) -> list[list[object]]:
    title = "MLP 64-64-10" if model == "mlp" else "CNN 8x8 (conv-bn-pool-conv-gap-fc)"
    ours = float(np.median(times["edgerun"]))
    rows: list[list[object]] = []
    for name in ("edgerun", "numpy", "torch"):
        if name not in times:
            rows.append([f"{title}: {name}", "torch not installed", "-", "-"])
            continue
        median = float(np.median(times[name]))
        rows.append([f"{title}: {name}", f"{1e6 / median:,.0f}", f"{median / 1e3:.3f}",
                     f"{ours / median:.2f}"])
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="edgerun num_threads and torch threads (2)")
    parser.add_argument("--blocks", type=int, default=5, help="alternating blocks (default 5)")
    parser.add_argument("--steps", type=int, default=100, help="timed steps per block (default 100)")
    parser.add_argument("--warmup", type=int, default=20, help="untimed steps first (default 20)")
    parser.add_argument("--markdown", action="store_true", help="print README table rows")
    args = parser.parse_args(argv)

    version = _torch_version()
    if version is not None:
        import torch

        torch.set_num_threads(args.threads)
    has_torch = version is not None
    rows = [row for model in ("mlp", "cnn") for row in measure(model, args.threads, has_torch, args)]
    print(f"# {machine()}, torch {version or 'not installed'}; batch {BATCH}, float32, SGD lr {LR}, "
          f"{args.threads} threads; {args.blocks} x {args.steps} steps each, interleaved")
    print_table(["candidate", "steps/s", "ms/step", "edgerun / this"], rows, args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())

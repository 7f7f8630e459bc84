"""Fine-tuning on a device: edgerun's train signature against PyTorch CPU, in the same run.

1. Step time and memory: a train step of MobileNetV2 (224x224, batch 8, SGD with momentum 0.9)
   training its last k layers (`make_trainable(trainable=k)`; the rest stays frozen inference),
   against torchvision's MobileNetV2 with the same weights and the same layers trainable. The
   memory column is edgerun's `Interpreter.memory_report("train")` (arena + weights + optimizer
   state) at that batch, beside the `rpi-zero2` profile's budget (256 MiB). A last row trains
   every layer with recomputed activations (`recompute=True`), which is what fits it there.
2. Accuracy: fine-tuning the head (1x1 conv + Gemm) of a small depthwise CNN on sklearn's
   digits for 2 epochs from the same frozen random backbone, the same optimizer (SGD, lr 0.1,
   momentum 0.9) and the same batches, edgerun against PyTorch (target: within 1 %).

    pip install -e '.[bench]'       # torch and torchvision
    python benchmarks/bench_fine_tune.py [--threads 2] [--batch 8] [--ks 1,2,3] [--blocks 3] [--steps 3]

Both sides start from edgerun's weights: torchvision's BatchNormalization layers are set to the
identity (eval mode), which is what folding them into the convolutions (as the ONNX export does)
leaves. Before timing, one step of each must give the same loss (rtol 1e-3), else SystemExit.
Ratios are edgerun's time over PyTorch's: > 1.00 means edgerun is slower.
"""

# ruff: noqa: E402 - the repository root goes on sys.path before project imports
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from benchmarks._harness import machine, print_table, time_interleaved
from edgerun.converters.training import make_trainable
from edgerun.converters.training.trainable import train_step_memory
from edgerun.devices.profiles import get_profile
from edgerun.runtime import Interpreter
from tests.converters.training.models import depthwise_cnn, digits, mobilenet_v2

MiB = 1 << 20
LR, MOMENTUM = 0.01, 0.9


def _torch():
    try:
        import torch
        import torchvision
    except ImportError:
        raise SystemExit("this benchmark needs torch and torchvision: pip install -e '.[bench]'") from None
    return torch, torchvision


def _weights(graph) -> list[np.ndarray]:
    """The graph's Conv and Gemm weights and biases, in node order: [(w, b), ...]."""
    pairs = []
    for node in graph.nodes:
        if node.op_type in ("Conv", "Gemm"):
            pairs.append((node.inputs[1].data, node.inputs[2].data))
    return pairs


def torch_mobilenet_v2(graph, trainable: int | None):
    """torchvision's MobileNetV2 carrying `graph`'s weights (BatchNorm as the identity), with the
    last `trainable` weighted layers trainable (None: all)."""
    torch, torchvision = _torch()
    model = torchvision.models.mobilenet_v2(weights=None).eval()
    layers = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)]
    pairs = _weights(graph)
    if len(layers) != len(pairs):
        raise SystemExit(f"architectures differ: {len(layers)} torch layers, {len(pairs)} edgerun ones")
    with torch.no_grad():
        for layer, (w, b) in zip(layers, pairs, strict=True):
            layer.weight.copy_(torch.from_numpy(w))
            if isinstance(layer, torch.nn.Linear):
                layer.bias.copy_(torch.from_numpy(b))
        for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
            bn.weight.fill_(1), bn.bias.zero_(), bn.running_mean.zero_(), bn.running_var.fill_(1 - bn.eps)
    for p in model.parameters():
        p.requires_grad_(False)
    chosen = layers if trainable is None else layers[-trainable:]
    for layer in chosen:
        for p in layer.parameters():
            p.requires_grad_(True)
    return model, [p for p in model.parameters() if p.requires_grad]


def step_time_rows(args) -> list[list[object]]:
    torch, _ = _torch()
    torch.set_num_threads(args.threads)
    budget = get_profile("rpi-zero2").memory_budget_bytes
    graph = mobilenet_v2()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch, 3, 224, 224)).astype(np.float32)
    labels = rng.integers(0, 1000, args.batch)
    rows = []
    for k in [*args.ks, None]:
        trained = make_trainable(graph, trainable=k, optimizer=("sgd", {"lr": LR, "momentum": MOMENTUM}),
                                 recompute=k is None)
        need = train_step_memory(trained, args.batch)
        ours = Interpreter(trained, num_threads=args.threads)
        model, params = torch_mobilenet_v2(graph, k)
        optimizer = torch.optim.SGD(params, lr=LR, momentum=MOMENTUM)
        tx, ty = torch.from_numpy(x), torch.from_numpy(labels)

        def torch_step(model=model, optimizer=optimizer, tx=tx, ty=ty):
            optimizer.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(model(tx), ty)
            loss.backward()
            optimizer.step()
            return loss.item()

        def edgerun_step(ours=ours):
            return float(ours.run({"x": x, "labels": labels}, signature="train")["loss"])

        first_ours, first_torch = edgerun_step(), torch_step()
        if not np.isclose(first_ours, first_torch, rtol=1e-3):
            raise SystemExit(f"k={k}: first-step losses differ: edgerun {first_ours}, torch {first_torch}")
        times = time_interleaved({"edgerun": edgerun_step, "torch": torch_step}, args.blocks, args.steps)
        ms = {name: float(np.median(t)) / 1000 for name, t in times.items()}
        label = f"last {k}" if k is not None else "all (recompute)"
        rows.append([label, f"{ms['edgerun']:.0f}", f"{ms['torch']:.0f}", f"{ms['edgerun'] / ms['torch']:.2f}",
                     f"{need.total_bytes / MiB:.0f}", f"{need.arena_bytes / MiB:.0f}",
                     "yes" if need.fits(budget) else "no"])
    return rows


def accuracy_rows(args) -> list[list[object]]:
    torch, _ = _torch()
    x_train, y_train, x_test, y_test = digits(images=True)
    graph = depthwise_cnn()
    order = np.random.default_rng(3).permutation(len(y_train))
    batches = [order[i:i + 32] for i in range(0, len(order) - 31, 32)] * 2
    ours = Interpreter(make_trainable(graph, trainable=2, optimizer=("sgd", {"lr": 0.1, "momentum": 0.9})),
                       num_threads=args.threads)
    for batch in batches:
        ours.run({"x": x_train[batch], "labels": y_train[batch]}, signature="train")
    our_accuracy = float(np.mean(np.argmax(ours.run({"x": x_test}, signature="infer")["y"], 1) == y_test))

    (stem_w, stem_b), (dw_w, dw_b), (head_w, head_b), (fc_w, fc_b) = _weights(graph)
    nn = torch.nn
    model = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU6(), nn.Conv2d(16, 16, 3, padding=1, groups=16),
                          nn.ReLU6(), nn.Conv2d(16, 32, 1), nn.ReLU6(), nn.AvgPool2d(2), nn.Flatten(),
                          nn.Linear(512, 10))
    with torch.no_grad():
        for layer, (w, b) in zip([model[0], model[2], model[4], model[8]],
                                 [(stem_w, stem_b), (dw_w, dw_b), (head_w, head_b), (fc_w, fc_b)], strict=True):
            layer.weight.copy_(torch.from_numpy(w)), layer.bias.copy_(torch.from_numpy(b))
    for layer in (model[0], model[2]):
        layer.requires_grad_(False)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1, momentum=0.9)
    for batch in batches:
        optimizer.zero_grad()
        logits = model(torch.from_numpy(x_train[batch]))
        nn.functional.cross_entropy(logits, torch.from_numpy(y_train[batch])).backward()
        optimizer.step()
    with torch.no_grad():
        torch_accuracy = float((model(torch.from_numpy(x_test)).argmax(1).numpy() == y_test).mean())
    return [["depthwise CNN head, digits, 2 epochs", f"{our_accuracy:.4f}", f"{torch_accuracy:.4f}",
             f"{100 * (our_accuracy - torch_accuracy):+.2f}"]]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--ks", default="1,2,3", help="comma-separated k for trainable=k (default: %(default)s)")
    parser.add_argument("--blocks", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    args.ks = [int(k) for k in args.ks.split(",") if k]
    torch, _ = _torch()
    print(f"{machine()}; torch {torch.__version__}")
    print(f"\nMobileNetV2 224x224, batch {args.batch}, SGD momentum {MOMENTUM}, {args.threads} threads; "
          f"memory: edgerun's train step against rpi-zero2's {get_profile('rpi-zero2').memory_budget_bytes // MiB} MiB")
    print_table(["trains", "edgerun ms", "torch ms", "ratio", "edgerun MiB", "arena MiB", "fits rpi-zero2"],
                step_time_rows(args), args.markdown)
    print("\nFine-tuning accuracy (same weights, optimizer and batches)")
    print_table(["model", "edgerun acc", "torch acc", "diff (points)"], accuracy_rows(args), args.markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

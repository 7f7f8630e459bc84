"""`edgerun train`: run a trainable model's train signature over an .npz data set."""

from __future__ import annotations

import argparse
import json
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from edgerun.runtime.errors import InputError

NPZ_LAYOUT = ("an .npz archive (numpy.savez) with the labels as 'y' (or 'labels') and the features as 'x' "
              "or by input name")


def add_parser(subparsers: Any) -> None:
    """Register the `train` command."""
    p = subparsers.add_parser("train", help="train a model made by make-trainable on .npz data")
    p.add_argument("model", type=Path, help="trainable .erm (has a 'train' signature)")
    p.add_argument("--data", type=Path, required=True, help=NPZ_LAYOUT)
    p.add_argument("--epochs", type=int, default=1, help="passes over the data")
    p.add_argument("--batch-size", type=int, default=32, help="mini-batch size (examples)")
    p.add_argument("--lr", type=float, default=None,
                   help="learning rate (default: the one stored in the model by make-trainable --lr)")
    p.add_argument("--seed", type=int, default=0, help="seed of the shuffling of the examples")
    p.add_argument("--device", default="auto",
                   help="kernel backend: auto, cpu, numba, or cuda (an NVIDIA GPU: pip install 'edgerun[cuda]')")
    p.add_argument("-o", "--output", type=Path, default=None,
                   help="trained model .erm file (default: MODEL with suffix .trained.erm)")
    p.add_argument("--metrics", type=Path, default=None,
                   help="JSON file for per-epoch metrics (default: OUTPUT with suffix .metrics.json)")
    p.set_defaults(func=cmd_train)


def read_npz(path: Path, layout: str = NPZ_LAYOUT) -> dict[str, np.ndarray]:
    """Every array of the .npz archive at `path`, by name (no pickles). InputError, saying that
    `layout` is expected, for a file that is not such an archive (a single .npy array, text,
    a broken zip); OSError when it cannot be read."""
    from edgerun.runtime.cli import describe_file

    kind = describe_file(path)
    if kind not in ("an .npz (zip) archive", "an .npy array"):
        raise InputError(f"{path}: holds {kind}, not an .npz archive; expected {layout}")
    try:
        loaded = np.load(path, allow_pickle=False)
    except (ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise InputError(f"{path}: not an .npz archive ({exc}); expected {layout}") from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise InputError(f"{path}: a single array (.npy), not an .npz archive; expected {layout}")
    try:
        with loaded as data:
            return {k: data[k] for k in data.files}
    except (ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise InputError(f"{path}: an array cannot be read ({exc}); expected {layout}") from None


def load_dataset(path: Path, input_names: list[str]) -> tuple[Any, np.ndarray]:
    """(features, labels) from an .npz; InputError naming what is missing."""
    arrays = read_npz(path)
    label_key = "y" if "y" in arrays else "labels" if "labels" in arrays else None
    if label_key is None:
        raise InputError(f"{path}: no labels; expected an array 'y' or 'labels', found {sorted(arrays)}")
    labels = arrays.pop(label_key)
    if len(input_names) == 1 and "x" in arrays:
        return arrays["x"], labels
    missing = [n for n in input_names if n not in arrays]
    if missing:
        raise InputError(f"{path}: no array for model input(s) {missing}; found {sorted(arrays)}")
    return {n: arrays[n] for n in input_names}, labels


def cmd_train(args: argparse.Namespace) -> int:
    """Train, print one line per epoch (loss, accuracy, examples/s; a per-batch bar too on a
    terminal), save the model and the metrics."""
    from edgerun.runtime import Interpreter
    from edgerun.runtime.cli import check_output_file
    from edgerun.runtime.training import fit, save_trained

    base = args.model.name.removesuffix(".erm").removesuffix(".train")
    output = args.output or args.model.with_name(base + ".trained.erm")
    metrics = args.metrics or output.with_suffix(".metrics.json")
    check_output_file(output)
    check_output_file(metrics, ".json")
    it = Interpreter(args.model, device=args.device)
    if "train" not in it.signatures:
        raise InputError(f"{args.model} has no 'train' signature: make it with 'edgerun make-trainable'")
    inputs = [n for n in it.signatures["train"].inputs if n not in ("labels", "learning_rate")]
    x, y = load_dataset(args.data, inputs)
    with EpochProgress(len(y), args.batch_size, args.epochs) as progress:
        history = fit(it, x, y, epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr,
                      seed=args.seed, on_batch=progress)
    save_trained(it, output)
    metrics.write_text(json.dumps([{**m.__dict__, "examples_per_second": m.examples_per_second}
                                   for m in history], indent=2))
    print(f"saved {output} and {metrics}")
    return 0


def epoch_line(epoch: int, epochs: int, loss: float, accuracy: float | None, rate: float) -> str:
    """'epoch 2/5: loss 0.3120 accuracy 0.9100, 41,000 examples/s'."""
    shown = "" if accuracy is None else f" accuracy {accuracy:.4f}"
    return f"epoch {epoch + 1}/{epochs}: loss {loss:.4f}{shown}, {rate:,.0f} examples/s"


class EpochProgress:
    """fit's on_batch: a bar of the batches on a terminal, and one line per epoch anywhere, its
    loss and accuracy averaged over the epoch's examples as fit averages them."""

    def __init__(self, examples: int, batch_size: int, epochs: int) -> None:
        from edgerun.runtime.progress import Progress

        self.examples, self.batch_size, self.epochs = examples, batch_size, epochs
        self.batches = -(-examples // batch_size)
        self.bar = Progress(self.batches, "batch", "epoch 1")
        self.start = time.perf_counter()
        self.totals: dict[str, float] = {}

    def __call__(self, epoch: int, batch: int, outputs: dict[str, float]) -> None:
        if batch == 0 and epoch > 0:
            self.bar.restart(f"epoch {epoch + 1}")
        size = min(self.batch_size, self.examples - batch * self.batch_size)
        for key, value in outputs.items():
            self.totals[key] = self.totals.get(key, 0.0) + value * size
        self.bar.update(1, **{k: f"{v:.4f}" for k, v in sorted(outputs.items())})
        if batch == self.batches - 1:
            now = time.perf_counter()
            accuracy = self.totals["accuracy"] / self.examples if "accuracy" in self.totals else None
            loss = self.totals.get("loss", float("nan")) / self.examples
            self.bar.line(epoch_line(epoch, self.epochs, loss, accuracy, self.examples / max(now - self.start, 1e-9)))
            self.start, self.totals = now, {}

    def __enter__(self) -> EpochProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.close()

"""`edgerun train`: run a trainable model's train signature over an .npz data set."""

from __future__ import annotations

import argparse
import json
import sys
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
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: the model's)")
    p.add_argument("--seed", type=int, default=0, help="shuffling seed")
    p.add_argument("-o", "--output", type=Path, default=None,
                   help="trained model (default: MODEL with suffix .trained.erm)")
    p.add_argument("--metrics", type=Path, default=None,
                   help="JSON file for per-epoch metrics (default: OUTPUT with suffix .metrics.json)")
    p.set_defaults(func=cmd_train)


def read_npz(path: Path, layout: str = NPZ_LAYOUT) -> dict[str, np.ndarray]:
    """Every array of the .npz archive at `path`, by name (no pickles). InputError, saying that
    `layout` is expected, for a file that is not such an archive (a single .npy array, text,
    a broken zip); OSError when it cannot be read."""
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
    """Train, print a progress line per batch (loss, accuracy, examples/s), save model and metrics."""
    from edgerun.runtime import Interpreter
    from edgerun.runtime.training import fit, save_trained

    it = Interpreter(args.model)
    if "train" not in it.signatures:
        raise InputError(f"{args.model} has no 'train' signature: make it with 'edgerun make-trainable'")
    inputs = [n for n in it.signatures["train"].inputs if n not in ("labels", "learning_rate")]
    x, y = load_dataset(args.data, inputs)
    progress = _Progress(len(y), args.batch_size)
    history = fit(it, x, y, epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr,
                  seed=args.seed, on_batch=progress)
    for m in history:
        accuracy = "" if m.accuracy is None else f" accuracy {m.accuracy:.4f}"
        print(f"\repoch {m.epoch + 1}/{args.epochs}: loss {m.loss:.4f}{accuracy}, "
              f"{m.examples_per_second:,.0f} examples/s" + " " * 10)
    base = args.model.name.removesuffix(".erm").removesuffix(".train")
    output = args.output or args.model.with_name(base + ".trained.erm")
    save_trained(it, output)
    metrics = args.metrics or output.with_suffix(".metrics.json")
    metrics.write_text(json.dumps([{**m.__dict__, "examples_per_second": m.examples_per_second}
                                   for m in history], indent=2))
    print(f"saved {output} and {metrics}")
    return 0


class _Progress:
    """A one-line progress bar on stderr: batch, running loss/accuracy, examples/s."""

    def __init__(self, examples: int, batch_size: int) -> None:
        import time

        self.batches = -(-examples // batch_size)
        self.batch_size = batch_size
        self.clock = time.perf_counter
        self.start = self.clock()

    def __call__(self, epoch: int, batch: int, outputs: dict[str, float]) -> None:
        if batch == 0:  # rates count the batches after the first, timed from its end
            self.start = self.clock()
        done = (batch + 1) / self.batches
        bar = "#" * int(done * 20)
        rate = batch * self.batch_size / max(self.clock() - self.start, 1e-9)
        metrics = " ".join(f"{k} {v:.4f}" for k, v in sorted(outputs.items()))
        shown = f" {rate:,.0f} ex/s" if batch else ""
        sys.stderr.write(f"\repoch {epoch + 1} [{bar:<20}] {metrics}{shown}")
        sys.stderr.flush()

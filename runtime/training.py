"""Device-side training: run a trainable model's `train` signature over a data set.

Needs nothing but the interpreter (the gradients are already in the model, put
there by converters.training.make_trainable):

    it = Interpreter("mlp.train.erm")
    history = fit(it, x, y, epochs=5, batch_size=32)
    save_trained(it, "mlp.trained.erm")
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgerun.runtime.errors import InputError
from edgerun.runtime.interpreter import Interpreter
from edgerun.runtime.writer import save_model

TRAIN, INFER = "train", "infer"


@dataclass(frozen=True)
class EpochMetrics:
    """Averages over one epoch (weighted by batch size); accuracy is None without one."""

    epoch: int
    loss: float
    accuracy: float | None
    examples: int
    seconds: float

    @property
    def examples_per_second(self) -> float:
        return self.examples / self.seconds if self.seconds > 0 else float("inf")


BatchCallback = Callable[[int, int, dict[str, float]], None]  # (epoch, batch, outputs)


def fit(
    interpreter: Interpreter,
    x: np.ndarray | Mapping[str, np.ndarray],
    y: np.ndarray,
    *,
    epochs: int = 1,
    batch_size: int = 32,
    learning_rate: float | None = None,
    shuffle: bool = True,
    seed: int = 0,
    on_batch: BatchCallback | None = None,
    inputs: Mapping[str, np.ndarray] | None = None,
) -> list[EpochMetrics]:
    """Train with mini-batches through the `train` signature; returns per-epoch metrics.

    `x` is one array (for a model with one input) or arrays by input name; all
    have the same number of examples as `y`. `learning_rate` overrides the
    model's default; `inputs` are fixed extra inputs for every step (e.g.
    proximal_mu). Raises InputError if the model has no train signature or
    the data does not fit it (wrong names, lengths, dtypes, shapes).
    """
    features = _features(interpreter, x)
    y = np.asarray(y).astype(interpreter.signatures[TRAIN].inputs["labels"].dtype, copy=False)
    n = len(y)
    if any(len(a) != n for a in features.values()):
        raise InputError(f"features have {[len(a) for a in features.values()]} examples, labels {n}")
    if epochs < 1 or batch_size < 1 or n == 0:
        raise InputError(f"need epochs >= 1, batch_size >= 1 and data; got {epochs}, {batch_size}, {n}")
    extra = dict(inputs or {})
    if learning_rate is not None:
        lr_dtype = interpreter.signatures[TRAIN].inputs["learning_rate"].dtype
        extra["learning_rate"] = np.asarray(learning_rate, lr_dtype)
    rng = np.random.default_rng(seed)
    history = []
    for epoch in range(epochs):
        order = rng.permutation(n) if shuffle else np.arange(n)
        totals: dict[str, float] = {}
        start = time.perf_counter()
        for batch, begin in enumerate(range(0, n, batch_size)):
            index = order[begin : begin + batch_size]
            feeds = {name: a[index] for name, a in features.items()}
            out = interpreter.run({**feeds, "labels": y[index], **extra}, signature=TRAIN)
            scalars = {k: float(v) for k, v in out.items() if np.ndim(v) == 0}
            for k, v in scalars.items():
                totals[k] = totals.get(k, 0.0) + v * len(index)
            if on_batch is not None:
                on_batch(epoch, batch, scalars)
        seconds = time.perf_counter() - start
        accuracy = totals["accuracy"] / n if "accuracy" in totals else None
        history.append(EpochMetrics(epoch, totals.get("loss", float("nan")) / n, accuracy, n, seconds))
    return history


def predict(
    interpreter: Interpreter, x: np.ndarray | Mapping[str, np.ndarray], batch_size: int = 256
) -> dict[str, np.ndarray]:
    """Outputs of the `infer` signature (or serving_default) over all examples, batched."""
    signature = INFER if INFER in interpreter.signatures else "serving_default"
    features = _features(interpreter, x, signature)
    n = len(next(iter(features.values())))
    parts: dict[str, list[np.ndarray]] = {}
    for begin in range(0, n, batch_size):
        out = interpreter.run({k: a[begin : begin + batch_size] for k, a in features.items()}, signature)
        for k, v in out.items():
            parts.setdefault(k, []).append(v)
    return {k: np.concatenate(v) for k, v in parts.items()}


def save_trained(interpreter: Interpreter, path: str | os.PathLike) -> Path:
    """Write the model with its variables' current values as their initial values."""
    current = interpreter.variables()
    graph = interpreter.graph
    for value in graph.values():
        if value.is_variable:
            value.data = current[value.name]
    return save_model(graph, path)


def _features(
    interpreter: Interpreter, x: np.ndarray | Mapping[str, np.ndarray], signature: str = TRAIN
) -> dict[str, np.ndarray]:
    if signature not in interpreter.signatures:
        raise InputError(f"the model has no {signature!r} signature; make it with make_trainable")
    # Data inputs: everything but the labels and the inputs that have defaults
    # (learning_rate, proximal_mu, ...), which are settings rather than examples.
    wanted = [name for name, info in interpreter.signatures[signature].inputs.items()
              if name != "labels" and not info.has_default]
    inputs = interpreter.signatures[signature].inputs
    if not isinstance(x, Mapping):
        if len(wanted) != 1:
            raise InputError(f"the model has inputs {wanted}: pass a dict of arrays by name")
        x = {wanted[0]: x}
    return {name: np.asarray(a).astype(inputs[name].dtype, copy=False) if name in inputs else np.asarray(a)
            for name, a in x.items()}


"""What a device does in a round, with nothing but the interpreter: load the
global parameters into its trainable model, train on local data through the
`train` signature, and return the clipped weight delta.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgerun.federated.aggregate import clip_by_global_norm
from edgerun.runtime.errors import InputError
from edgerun.runtime.interpreter import Interpreter
from edgerun.runtime.training import fit, predict

Arrays = dict[str, np.ndarray]


@dataclass(frozen=True)
class LocalResult:
    """A round's result on one device: the delta (trained minus global), clipped."""

    delta: Arrays
    num_examples: int
    metrics: dict[str, float]


def parameter_spec(interpreter: Interpreter) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
    """Name -> (dtype, shape) of the model variables that federated rounds exchange."""
    outputs = interpreter.signatures["save"].outputs
    return {name: (info.dtype, tuple(info.shape)) for name, info in outputs.items()}


def local_update(
    interpreter: Interpreter, parameters: Arrays, x: Any, y: np.ndarray, config: dict[str, Any]
) -> LocalResult:
    """Train from `parameters` for config["epochs"] epochs; returns the clipped delta.

    Config keys: epochs (1), batch_size (32), lr or learning_rate (the model's
    default), clip_norm (0 or absent: no clipping), seed (0), proximal_mu (0: FedProx's
    mu / 2 * ||w - parameters||^2 joins the local loss; > 0 needs a model made with
    make_trainable(..., proximal=True)). Raises InputError when the data or parameters
    do not fit the model, or proximal_mu is negative or the model lacks the proximal
    term (the model is left at `parameters` or unchanged).
    """
    extra = _proximal_inputs(interpreter, config)
    interpreter.run(parameters, signature="restore")
    if extra:
        interpreter.run({}, signature="set_anchor")  # the proximal term pulls towards `parameters`
    history = fit(
        interpreter, x, y, inputs=extra,
        epochs=int(config.get("epochs", 1)), batch_size=int(config.get("batch_size", 32)),
        learning_rate=config.get("lr", config.get("learning_rate")), seed=int(config.get("seed", 0)),
    )
    trained = interpreter.run({}, signature="save")
    names = list(parameters)
    clipped, norm = clip_by_global_norm([trained[n] - parameters[n] for n in names], config.get("clip_norm"))
    delta = dict(zip(names, clipped, strict=True))
    last = history[-1]
    metrics = {"loss": last.loss, "delta_norm": norm}
    if last.accuracy is not None:
        metrics["accuracy"] = last.accuracy
    return LocalResult(delta, len(y), metrics)


def _proximal_inputs(interpreter: Interpreter, config: dict[str, Any]) -> Arrays:
    """{"proximal_mu": mu} for the train signature when config asks for mu > 0, else {}."""
    mu = float(config.get("proximal_mu") or 0.0)
    if not math.isfinite(mu) or mu < 0:
        raise InputError(f"proximal_mu must be a finite number >= 0, got {mu}")
    if mu == 0:
        return {}
    if "set_anchor" not in interpreter.signatures:
        raise InputError(f"proximal_mu={mu} needs a model with a proximal term; "
                         "make it with make_trainable(..., proximal=True)")
    dtype = interpreter.signatures["train"].inputs["proximal_mu"].dtype
    return {"proximal_mu": np.asarray(mu, dtype)}


def require_trainable(interpreter: Interpreter, source: Any) -> None:
    """InputError naming `source` (the model's file) unless the model has the signatures a
    federated round runs: train, save and restore (from make_trainable)."""
    missing = [name for name in ("train", "save", "restore") if name not in interpreter.signatures]
    if missing:
        raise InputError(f"{source}: not a trainable model (no {missing[0]!r} signature); "
                         "make it with 'edgerun make-trainable'")


def training_loss(interpreter: Interpreter) -> str | None:
    """The loss make_trainable gave the model ("cross_entropy", "mse", "bce_logits"), None if unknown."""
    recorded = interpreter.graph.metadata.get("edgerun.training")
    return None if recorded is None else json.loads(recorded).get("loss")


def local_evaluate(interpreter: Interpreter, parameters: Arrays, x: Any, y: np.ndarray) -> dict[str, float]:
    """How well `parameters` do on held-out data: for a regression model (trained with the
    "mse" loss) {"mse", "loss" (the same), "num_examples"}; otherwise, classification,
    {"accuracy", "loss" (cross-entropy), "num_examples"}.

    A classifier's output is read as probabilities when its rows are non-negative and sum
    to 1 (a final Softmax), else as logits."""
    interpreter.run(parameters, signature="restore")
    outputs = next(iter(predict(interpreter, x).values())).astype(np.float64)
    if training_loss(interpreter) == "mse":
        targets = np.asarray(y, np.float64).reshape(outputs.shape)
        mse = float(np.mean(np.square(outputs - targets))) if len(targets) else float("nan")
        return {"mse": mse, "loss": mse, "num_examples": float(len(targets))}
    y = np.asarray(y).astype(np.int64)
    if np.all(outputs >= 0) and np.allclose(outputs.sum(axis=-1), 1.0, atol=1e-4):
        log_p = np.log(np.clip(outputs, 1e-12, None))
    else:
        shifted = outputs - outputs.max(axis=-1, keepdims=True)
        log_p = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    loss = float(-np.mean(log_p[np.arange(len(y)), y])) if len(y) else float("nan")
    return {"accuracy": float(np.mean(outputs.argmax(axis=-1) == y)), "loss": loss, "num_examples": float(len(y))}

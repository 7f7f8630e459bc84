"""Helpers for gradient tests: run one kernel directly, and central finite differences.

    y = run_kernel("Relu", [x])[0]
    dx = run_kernel("ReluGrad", [dy, x], domain="edgerun")[0]
    want = numerical_gradient(lambda x_: float(np.sum(run_kernel("Relu", [x_])[0] * dy)), x)
    np.testing.assert_allclose(dx, want, rtol=1e-6, atol=1e-9)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from edgerun.runtime.kernels import TensorSpec, resolve


def run_kernel(
    op_type: str,
    inputs: Sequence[np.ndarray | None],
    attrs: dict[str, Any] | None = None,
    *,
    domain: str = "",
    version: int | None = None,
    constants: Sequence[int] = (),
    num_outputs: int | None = None,
) -> list[np.ndarray]:
    """Prepare and run one kernel on numpy inputs; returns its outputs.

    `constants`: indices of inputs passed to prepare as known values (weights,
    shapes). Outputs are filled with NaN first, so an unwritten element shows.
    `num_outputs` trims the outputs (as a node with fewer outputs would).
    """
    version = version if version is not None else (1 if domain else 17)
    cls = resolve(domain, op_type, version, "test")
    kernel = cls(op_type, "test", dict(attrs or {}), version)
    specs = [None if a is None else TensorSpec(np.asarray(a).dtype, np.asarray(a).shape) for a in inputs]
    values = [np.asarray(a) if i in constants and a is not None else None for i, a in enumerate(inputs)]
    out_specs = kernel.prepare(specs, values)[: num_outputs or None]
    outputs = [np.full(s.shape, np.nan, s.dtype) if s.dtype.kind == "f" else np.zeros(s.shape, s.dtype)
               for s in out_specs]
    kernel.run([None if a is None else np.asarray(a) for a in inputs], outputs)
    return outputs


def numerical_gradient(f: Callable[[np.ndarray], float], x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """d f / d x by central differences (use float64 x; f returns a scalar)."""
    x = np.array(x, dtype=np.float64)
    grad = np.zeros_like(x)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        saved = flat[i]
        flat[i] = saved + eps
        plus = f(x.copy())
        flat[i] = saved - eps
        minus = f(x.copy())
        flat[i] = saved
        gflat[i] = (plus - minus) / (2 * eps)
    return grad


def numerical_input_gradients(
    forward: Callable[[list[np.ndarray]], np.ndarray],
    inputs: list[np.ndarray],
    upstream: np.ndarray,
    wrt: Sequence[int],
    eps: float = 1e-6,
) -> list[np.ndarray]:
    """Gradients of L = sum(forward(inputs) * upstream) with respect to inputs[i], i in `wrt`."""

    def loss_for(i: int) -> Callable[[np.ndarray], float]:
        def loss(x: np.ndarray) -> float:
            args = list(inputs)
            args[i] = x
            return float(np.sum(forward(args) * upstream))

        return loss

    return [numerical_gradient(loss_for(i), inputs[i], eps) for i in wrt]


def check_sgd_step(interpreter, feeds: dict, start: dict[str, np.ndarray], loss: Callable[[dict], float],
                   lr: float) -> None:
    """One train step of a make_trainable model with plain SGD at `lr`, against the numpy loss
    `loss(parameters)`: the reported loss equals loss(start) (rel 1e-12), and each parameter moved
    by lr times the central finite-difference gradient of `loss` (rel 1e-6; every gradient nonzero)."""
    import pytest

    assert set(interpreter.signatures["save"].outputs) == set(start)
    reported = float(interpreter.run(feeds, "train")["loss"])
    assert reported == pytest.approx(loss(start), rel=1e-12)
    after = interpreter.run({}, "save")
    for name, array in start.items():
        numeric = numerical_gradient(lambda a, name=name: loss({**start, name: a}), array)
        assert np.any(numeric != 0), name
        np.testing.assert_allclose((array - after[name]) / lr, numeric, rtol=1e-6, atol=1e-9, err_msg=name)

"""Optimizer update kernels (runtime/kernels/optimizers.py) against the textbook formulas.

Each test runs a few steps of a tiny "training": the gradient is a function of the current
parameter, each step's outputs are fed back as the next step's inputs, and the result is
compared step by step with the PyTorch formulas written out below in plain numpy.
Inputs are read-only to prove kernels never write into them.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgerun.runtime.errors import InputError, ModelError
from tests.gradcheck import run_kernel

STEPS = 4
LRS = [0.1, 0.1, 0.05, 0.02]  # a schedule: lr is an input, it may change between steps
P0 = np.array([[0.5, -1.0, 2.0], [0.0, 3.0, -0.25]])
SCALE = np.array([[1.0, -2.0, 0.5], [3.0, 1.0, -1.0]])


def loss_grad(p: np.ndarray) -> np.ndarray:
    """Gradient of a made-up loss, so that every step's gradient depends on the parameter."""
    return SCALE * p + 0.5 * np.sin(p)


def update(op: str, inputs: list, attrs: dict, num_outputs: int | None = None) -> list[np.ndarray]:
    arrays = [np.array(a) for a in inputs]
    for a in arrays:
        a.flags.writeable = False
    return run_kernel(op, arrays, attrs, domain="edgerun", num_outputs=num_outputs)


# ------------------------------------------------------------------ SGD
def sgd_reference(momentum: float, nesterov: bool, weight_decay: float) -> list[np.ndarray]:
    """torch.optim.SGD's documented algorithm (dampening 0), float64."""
    p, buf, params = P0.copy(), None, []
    for lr in LRS:
        g = loss_grad(p) + weight_decay * p
        if momentum:
            buf = g.copy() if buf is None else momentum * buf + g
            g = g + momentum * buf if nesterov else buf
        p = p - lr * g
        params.append(p)
    return params


def sgd_kernel(momentum: float, nesterov: bool, weight_decay: float, dtype) -> list[np.ndarray]:
    attrs = {"momentum": momentum, "nesterov": int(nesterov), "weight_decay": weight_decay}
    p, velocity, params = P0.astype(dtype), np.zeros(P0.shape, dtype), []
    for lr in LRS:
        inputs = [p, loss_grad(p).astype(dtype), np.array(lr, dtype)]
        outs = update("SGDUpdate", inputs + ([velocity] if momentum else []), attrs)
        assert len(outs) == (2 if momentum else 1) and all(o.dtype == dtype for o in outs)
        p, velocity = outs[0], outs[-1]
        params.append(p)
    return params


SGD_CASES = [(0.0, False, 0.0), (0.0, False, 0.1), (0.9, False, 0.0), (0.9, True, 0.0), (0.5, True, 0.01)]


@pytest.mark.parametrize("momentum, nesterov, weight_decay", SGD_CASES)
@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-12), (np.float32, 1e-5)])
def test_sgd_matches_the_textbook_step_by_step(momentum, nesterov, weight_decay, dtype, rtol):
    got = sgd_kernel(momentum, nesterov, weight_decay, dtype)
    reference = sgd_reference(momentum, nesterov, weight_decay)
    for step, (mine, want) in enumerate(zip(got, reference, strict=True)):
        np.testing.assert_allclose(mine, want, rtol=rtol, atol=rtol, err_msg=f"step {step}")


def test_lr_of_another_float_dtype_is_cast_to_the_param_dtype():
    (new,) = update("SGDUpdate", [P0, SCALE, np.array(0.5, np.float32)], {})
    assert new.dtype == np.float64
    np.testing.assert_array_equal(new, P0 - 0.5 * SCALE)


def test_sgd_omitted_velocity_output_still_updates_the_param():
    full = update("SGDUpdate", [P0, SCALE, np.array(0.1), np.ones_like(P0)], {"momentum": 0.9})
    (only,) = update("SGDUpdate", [P0, SCALE, np.array(0.1), np.ones_like(P0)], {"momentum": 0.9}, 1)
    np.testing.assert_array_equal(only, full[0])
    np.testing.assert_allclose(full[1], 0.9 + SCALE, rtol=1e-15)


# ------------------------------------------------------------------ Adam and AdamW
ADAM = {"beta1": 0.8, "beta2": 0.95, "epsilon": 1e-6}


def adam_reference(weight_decay: float, decoupled: bool) -> list[np.ndarray]:
    """Adam (Kingma & Ba) with PyTorch's weight decay: L2 in the gradient, or AdamW's decay."""
    b1, b2, eps = ADAM["beta1"], ADAM["beta2"], ADAM["epsilon"]
    p, m, v, params = P0.copy(), np.zeros_like(P0), np.zeros_like(P0), []
    for t, lr in enumerate(LRS, start=1):
        g = loss_grad(p)
        if decoupled:
            p = p * (1 - lr * weight_decay)
        else:
            g = g + weight_decay * p
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
        p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
        params.append(p)
    return params


def adam_kernel(weight_decay: float, decoupled: bool, dtype, step_dtype) -> list[np.ndarray]:
    attrs = {**ADAM, "weight_decay": weight_decay, "decoupled": int(decoupled)}
    p, m, v, params = P0.astype(dtype), np.zeros(P0.shape, dtype), np.zeros(P0.shape, dtype), []
    for taken, lr in enumerate(LRS):
        inputs = [p, loss_grad(p).astype(dtype), np.array(lr, dtype), m, v, np.array(taken, step_dtype)]
        p, m, v = update("AdamUpdate", inputs, attrs)
        assert p.dtype == m.dtype == v.dtype == dtype
        params.append(p)
    return params


ADAM_CASES = [(0.0, False), (0.1, False), (0.0, True), (0.1, True)]


@pytest.mark.parametrize("weight_decay, decoupled", ADAM_CASES)
@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-12), (np.float32, 1e-5)])
@pytest.mark.parametrize("step_dtype", [np.float32, np.int64])
def test_adam_matches_the_textbook_step_by_step(weight_decay, decoupled, dtype, rtol, step_dtype):
    got = adam_kernel(weight_decay, decoupled, dtype, step_dtype)
    reference = adam_reference(weight_decay, decoupled)
    for step, (mine, want) in enumerate(zip(got, reference, strict=True)):
        np.testing.assert_allclose(mine, want, rtol=rtol, atol=rtol, err_msg=f"step {step}")


def test_adam_and_adamw_differ_only_with_weight_decay():
    plain, adamw = adam_kernel(0.0, False, np.float64, np.int64), adam_kernel(0.0, True, np.float64, np.int64)
    np.testing.assert_array_equal(plain[-1], adamw[-1])
    assert not np.allclose(adam_kernel(0.1, False, np.float64, np.int64)[-1],
                           adam_kernel(0.1, True, np.float64, np.int64)[-1])


# ------------------------------------------------------------------ errors
P, F32 = np.zeros((2, 3)), np.zeros((2, 3), np.float32)
LR, STEP = np.array(0.1), np.array(0.0)
ERRORS = [
    ("SGDUpdate", [P, np.zeros((3, 2)), LR], {}, "param and grad: shapes differ"),
    ("SGDUpdate", [P, F32, LR], {}, "dtypes differ"),
    ("SGDUpdate", [P, P, np.array([0.1, 0.2])], {}, "lr: expected a scalar"),
    ("SGDUpdate", [P, P, np.array(1)], {}, "lr: expected a float"),
    ("SGDUpdate", [P, P, LR], {"momentum": 0.9}, "takes 4 inputs"),
    ("SGDUpdate", [P, P, LR, P], {}, "takes 3 inputs"),
    ("SGDUpdate", [P, P, LR, np.zeros(6)], {"momentum": 0.9}, "param and velocity: shapes differ"),
    ("SGDUpdate", [P, P, LR], {"nesterov": 1}, "nesterov=1 needs momentum"),
    ("SGDUpdate", [P, P, LR], {"weight_decay": -0.1}, "'weight_decay' must be"),
    ("SGDUpdate", [np.zeros(3, np.int32), np.zeros(3, np.int32), LR], {}, "param: expected a float"),
    ("AdamUpdate", [P, P, LR, P, np.zeros((2, 1)), STEP], {}, "param and v: shapes differ"),
    ("AdamUpdate", [P, P, LR, F32, P, STEP], {}, "dtypes differ"),
    ("AdamUpdate", [P, P, LR, P, P, np.zeros(2)], {}, "step: expected a scalar"),
    ("AdamUpdate", [P, P, LR, P, P], {}, "expected 6..6 inputs"),
    ("AdamUpdate", [P, P, LR, P, P, STEP], {"beta1": 1.0}, "'beta1' must be"),
    ("AdamUpdate", [P, P, LR, P, P, STEP], {"epsilon": -1e-8}, "'epsilon' must be"),
    ("AdamUpdate", [P, P, LR, P, P, STEP], {"decoupled": 2}, "'decoupled' must be 0 or 1"),
]


@pytest.mark.parametrize("op, inputs, attrs, message", ERRORS, ids=[f"{e[0]}-{e[3]}" for e in ERRORS])
def test_bad_shapes_dtypes_and_settings_are_model_errors(op, inputs, attrs, message):
    with pytest.raises(ModelError, match=message):
        update(op, inputs, attrs)


@pytest.mark.parametrize("op, inputs, message", [
    ("SGDUpdate", [P, P, np.array(-0.1)], "learning rate must be finite and >= 0, got -0.1"),
    ("SGDUpdate", [P, P, np.array(np.nan)], "learning rate"),
    ("AdamUpdate", [P, P, LR, P, P, np.array(-1.0)], "step .* must be finite and >= 0, got -1.0"),
    ("AdamUpdate", [P, P, np.array(np.inf), P, P, STEP], "learning rate"),
])
def test_bad_learning_rate_or_step_is_an_input_error(op, inputs, message):
    with pytest.raises(InputError, match=message):
        update(op, inputs, {})

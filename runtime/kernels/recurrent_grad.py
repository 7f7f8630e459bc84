"""Gradients of the recurrent kernels (edgerun domain, for training): RNNGrad, GRUGrad, LSTMGrad.

Backpropagation through time over the whole sequence. Each gradient kernel is its forward kernel
(recurrent.py) with the same attributes, and takes the forward node's inputs in their ONNX slots
(omitted ones None) followed by the gradients of its outputs (None where none flows):

    RNNGrad, GRUGrad: X, W, R, B, sequence_lens, initial_h, dY, dY_h
    LSTMGrad:         X, W, R, B, sequence_lens, initial_h, initial_c, P, dY, dY_h, dY_c

Outputs dX, dW, dR, dB, d initial_h (LSTM: then d initial_c, dP), shaped like those inputs
(dB and the state and peephole gradients also when that input was omitted: the gradient with
respect to a zero bias, zero initial state or zero peepholes). Nothing is saved by the forward
pass: the kernel reruns it (the forward `cell`) keeping the states before each step, then walks
the steps backwards, recomputing each step's gates from its input state. Steps at or past a
sample's sequence length pass the state gradient through unchanged. Computed in float64; the
outputs are cast to X's dtype.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from edgerun.runtime.kernels.base import TensorSpec
from edgerun.runtime.kernels.recurrent import _ACTIVATIONS, GRU, LSTM, RNN, _Recurrent
from edgerun.runtime.kernels.registry import register


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


# (name) -> derivative of the activation of the same name in recurrent._ACTIVATIONS, as a
# function of (x, alpha, beta); at a kink, the derivative of the branch np.where picks there.
_DERIVATIVES: dict[str, Callable[[np.ndarray, float, float], np.ndarray]] = {
    "relu": lambda x, a, b: (x > 0).astype(np.float64),
    "tanh": lambda x, a, b: 1 - np.tanh(x) ** 2,
    "sigmoid": lambda x, a, b: _sigmoid(x) * (1 - _sigmoid(x)),
    "affine": lambda x, a, b: np.full_like(x, a),
    "leakyrelu": lambda x, a, b: np.where(x >= 0, 1.0, a),
    "thresholdedrelu": lambda x, a, b: (x > a).astype(np.float64),
    "scaledtanh": lambda x, a, b: a * b * (1 - np.tanh(b * x) ** 2),
    "hardsigmoid": lambda x, a, b: np.where((a * x + b > 0) & (a * x + b < 1), a, 0.0),
    "elu": lambda x, a, b: np.where(x >= 0, 1.0, a * np.exp(x)),
    "softsign": lambda x, a, b: 1 / (1 + np.abs(x)) ** 2,
    "softplus": lambda x, a, b: _sigmoid(x),
}


@dataclass(frozen=True)
class Activation:
    """One activation with its alpha and beta: call it for f(x), `grad` for f'(x)."""

    name: str
    alpha: float
    beta: float

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return _ACTIVATIONS[self.name][2](x, self.alpha, self.beta)

    def grad(self, x: np.ndarray) -> np.ndarray:
        return _DERIVATIVES[self.name](x, self.alpha, self.beta)


@dataclass
class ParamGrads:
    """One direction's running sums: dW (gates * hidden, input), dR (gates * hidden, hidden),
    dB (2 * gates * hidden), dP (3 * hidden; LSTM only)."""

    w: np.ndarray
    r: np.ndarray
    b: np.ndarray
    p: np.ndarray


class _RecurrentGrad(_Recurrent):
    """The BPTT driver; subclasses give `cell_backward` (one step's gradients)."""

    forward_inputs = 6  # X, W, R, B, sequence_lens, initial_h (LSTM: + initial_c, P)

    def prepare(self, inputs, values):
        expected = self.forward_inputs + 1 + self.states
        if len(inputs) != expected:
            raise self.fail(f"expected {expected} inputs (the forward's {self.forward_inputs} slots, then "
                            f"the gradients of its {1 + self.states} outputs), got {len(inputs)}")
        n = self.forward_inputs
        outputs = super().prepare(list(inputs[:n]), list(values[:n]))
        for i, (grad, out) in enumerate(zip(inputs[n:], outputs, strict=True)):
            if grad is not None and grad.shape != out.shape:
                raise self.fail(f"gradient of output {i}: expected shape {out.shape}, got {grad.shape}")
        x, w, r = inputs[:3]
        dirs = w.shape[0]
        state = self._state_shape(dirs, x.shape[1 - self.layout])
        shapes = [x.shape, w.shape, r.shape, (dirs, 2 * self.gates * self.hidden), state]
        if self.states == 2:
            shapes += [state, (dirs, 3 * self.hidden)]
        return [TensorSpec(x.dtype, shape) for shape in shapes]

    def _activations(self, dirs: int) -> list[list[Activation]]:
        """As the forward's, as Activation objects (which also give the derivative)."""
        return [[Activation(*spec) for spec in direction] for direction in self._activation_specs(dirs)]

    def run(self, inputs, outputs):
        n = self.forward_inputs
        forward = inputs[:n]
        x = inputs[0].astype(np.float64)
        if self.layout == 1:
            x = x.swapaxes(0, 1)
        seq, batch = x.shape[:2]
        lengths = self._lengths(forward, seq, batch)
        dy, dfinal = self._output_grads(inputs[n:], seq, batch)
        dx = np.zeros_like(x)
        per_direction = []
        for d in range(len(self.activations)):
            dx_d, grads, dstates = self._direction(forward, x, lengths, d, dy[:, d], [g[d] for g in dfinal])
            dx += dx_d
            per_direction.append((grads, dstates))
        np.copyto(outputs[0], dx if self.layout == 0 else dx.swapaxes(0, 1), casting="unsafe")
        for k, field in enumerate(("w", "r", "b")):
            np.copyto(outputs[1 + k], np.stack([getattr(g, field) for g, _ in per_direction]), casting="unsafe")
        for k in range(self.states):
            state = np.stack([s[k] for _, s in per_direction])
            np.copyto(outputs[4 + k], state if self.layout == 0 else state.swapaxes(0, 1), casting="unsafe")
        if self.states == 2:
            np.copyto(outputs[6], np.stack([g.p for g, _ in per_direction]), casting="unsafe")

    def _output_grads(self, grads: list, seq: int, batch: int) -> tuple[np.ndarray, list[np.ndarray]]:
        """dY as (seq, dirs, batch, hidden) and each final state's gradient as (dirs, batch,
        hidden), in float64 whatever the layout; zeros where no gradient flows."""
        dirs = len(self.activations)
        dy = np.zeros((seq, dirs, batch, self.hidden))
        if grads[0] is not None:
            dy[...] = grads[0] if self.layout == 0 else grads[0].transpose(1, 2, 0, 3)
        finals = []
        for grad in grads[1:]:
            state = np.zeros((dirs, batch, self.hidden))
            if grad is not None:
                state[...] = grad if self.layout == 0 else grad.swapaxes(0, 1)
            finals.append(state)
        return dy, finals

    def _direction(self, inputs, x, lengths, d, dy, dstates):
        """Direction d (`inputs`: the forward's): rerun its steps keeping each step's input states, then backpropagate.
        Returns dX (seq, batch, input), its ParamGrads and the initial states' gradients."""
        seq, batch = x.shape[:2]
        params = self.constant_params[d] if self.constant_params else self._params(inputs, d)
        acts = self.activations[d]
        order = range(seq - 1, -1, -1) if self.direction == "reverse" or d == 1 else range(seq)
        masks = [np.ones((batch, 1)) if lengths is None else (t < lengths)[:, None].astype(np.float64)
                 for t in range(seq)]
        states, history = self._initial(inputs, d, batch), []
        for t in order:
            history.append(states)
            new = self.cell(x[t], states, params, acts)
            states = [np.where(masks[t] > 0, a, b) for a, b in zip(new, states, strict=True)]
        w, r = params[:2]
        grads = ParamGrads(np.zeros_like(w), np.zeros_like(r), np.zeros(2 * r.shape[0]), np.zeros(3 * self.hidden))
        dx = np.zeros_like(x)
        dstates = [g.copy() for g in dstates]
        for t, before in zip(reversed(order), reversed(history), strict=True):
            dstates[0] = dstates[0] + dy[t] * masks[t]  # Y is 0 (a constant) past the length
            dx[t], dbefore = self.cell_backward(x[t], before, params, acts,
                                                [g * masks[t] for g in dstates], grads)
            dstates = [a + g * (1 - masks[t]) for a, g in zip(dbefore, dstates, strict=True)]
        return dx, grads, dstates

    def _through(self, act: Activation, v: np.ndarray, grad: np.ndarray) -> np.ndarray:
        """d loss / d v for act(clip(v)), given d loss / d act(clip(v)); clipped entries get 0."""
        grad = grad * act.grad(self._clip(v))
        return grad if self.clip is None else grad * (np.abs(v) <= self.clip)

    @staticmethod
    def _pre_backward(x, h, params, dxw, dhr, grads: ParamGrads) -> tuple[np.ndarray, np.ndarray]:
        """Backward of `_pre` (X W^T + Wb, H R^T + Rb): accumulates dW, dR, dB; returns (dx, dh)."""
        w, r = params[:2]
        half = grads.b.shape[0] // 2
        grads.w += dxw.T @ x
        grads.r += dhr.T @ h
        grads.b[:half] += dxw.sum(axis=0)
        grads.b[half:] += dhr.sum(axis=0)
        return dxw @ w, dhr @ r

    def cell_backward(self, x, states, params, acts, dnew, grads: ParamGrads):
        """One step backwards: from the step's input states and the gradients of its new states,
        returns (dx, gradients of the input states) and accumulates into `grads`."""
        raise NotImplementedError


@register("RNNGrad", since=1, domain="edgerun")
class RNNGrad(_RecurrentGrad, RNN):
    """Gradients of RNN (see the module docstring)."""

    def cell_backward(self, x, states, params, acts, dnew, grads):
        h = states[0]
        xw, hr = self._pre(x, h, params)
        dv = self._through(acts[0], xw + hr, dnew[0])
        dx, dh = self._pre_backward(x, h, params, dv, dv, grads)
        return dx, [dh]


@register("GRUGrad", since=1, domain="edgerun")
class GRUGrad(_RecurrentGrad, GRU):
    """Gradients of GRU, both linear_before_reset forms (see the module docstring)."""

    def cell_backward(self, x, states, params, acts, dnew, grads):
        h, n = states[0], self.hidden
        r_weights, bias = params[1], params[2]
        xw, hr = self._pre(x, h, params)
        vz, vr = xw[:, :n] + hr[:, :n], xw[:, n : 2 * n] + hr[:, n : 2 * n]
        z, r = acts[0](self._clip(vz)), acts[0](self._clip(vr))
        if self.linear_before_reset:
            vh = xw[:, 2 * n :] + r * hr[:, 2 * n :]
        else:
            vh = xw[:, 2 * n :] + (r * h) @ r_weights[2 * n :].T + (bias[5 * n :] if bias is not None else 0)
        candidate = acts[1](self._clip(vh))
        dh_new = dnew[0]
        dh = dh_new * z
        dvh = self._through(acts[1], vh, dh_new * (1 - z))
        if self.linear_before_reset:
            dhr_h, dr = dvh * r, dvh * hr[:, 2 * n :]
        else:  # H R^T's candidate block is unused; (r * H) Rh^T + Rbh replaces it
            dhr_h = np.zeros_like(dvh)
            d_reset_h = dvh @ r_weights[2 * n :]
            grads.r[2 * n :] += dvh.T @ (r * h)
            grads.b[5 * n :] += dvh.sum(axis=0)
            dr, dh = d_reset_h * h, dh + d_reset_h * r
        dvz = self._through(acts[0], vz, dh_new * (h - candidate))
        dvr = self._through(acts[0], vr, dr)
        dxw = np.concatenate([dvz, dvr, dvh], axis=1)
        dhr = np.concatenate([dvz, dvr, dhr_h], axis=1)
        dx, dh_pre = self._pre_backward(x, h, params, dxw, dhr, grads)
        return dx, [dh + dh_pre]


@register("LSTMGrad", since=1, domain="edgerun")
class LSTMGrad(_RecurrentGrad, LSTM):
    """Gradients of LSTM, with peepholes and input_forget (see the module docstring)."""

    forward_inputs = 8

    def cell_backward(self, x, states, params, acts, dnew, grads):
        h, c = states
        n = self.hidden
        xw, hr = self._pre(x, h, params)
        pre = xw + hr
        p = params[3] if params[3] is not None else np.zeros(3 * n)
        vi = pre[:, :n] + p[:n] * c
        i = acts[0](self._clip(vi))
        vf = pre[:, 2 * n : 3 * n] + p[2 * n :] * c
        f = 1 - i if self.input_forget else acts[0](self._clip(vf))
        vc = pre[:, 3 * n :]
        candidate = acts[1](self._clip(vc))
        c_new = f * c + i * candidate
        vo = pre[:, n : 2 * n] + p[n : 2 * n] * c_new
        o = acts[0](self._clip(vo))
        dh_new, dc_new = dnew
        dvo = self._through(acts[0], vo, dh_new * acts[2](c_new))
        dc = dc_new + dh_new * o * acts[2].grad(c_new) + dvo * p[n : 2 * n]
        grads.p[n : 2 * n] += (dvo * c_new).sum(axis=0)
        df, di = dc * c, dc * candidate
        dc_prev = dc * f
        if self.input_forget:  # f = 1 - i
            dvf, di = np.zeros_like(df), di - df
        else:
            dvf = self._through(acts[0], vf, df)
        dvi = self._through(acts[0], vi, di)
        dc_prev += dvi * p[:n] + dvf * p[2 * n :]
        grads.p[:n] += (dvi * c).sum(axis=0)
        grads.p[2 * n :] += (dvf * c).sum(axis=0)
        dvc = self._through(acts[1], vc, dc * i)
        dpre = np.concatenate([dvi, dvo, dvf, dvc], axis=1)
        dx, dh = self._pre_backward(x, h, params, dpre, dpre, grads)
        return dx, [dh, dc_prev]

"""Recurrent kernels (ONNX semantics): RNN, GRU and LSTM, one shared driver.

Inputs X (seq, batch, input) (layout 0) or (batch, seq, input) (layout 1), W (dirs, gates *
hidden, input), R (dirs, gates * hidden, hidden), optional B (dirs, 2 * gates * hidden: W's
bias then R's), sequence_lens (batch,), initial_h (and LSTM's initial_c) (dirs, batch, hidden)
(layout 1: (batch, dirs, hidden)) and LSTM's peepholes P (dirs, 3 * hidden).
Outputs Y (seq, dirs, batch, hidden) (layout 1: (batch, seq, dirs, hidden)), Y_h (and LSTM's
Y_c) shaped like initial_h. Steps at or past a sample's sequence length leave its state as it
was and give zeros in Y; the reverse direction of a sample starts at its last valid step.
Gates are computed in float64 and the outputs cast to X's dtype.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from edgerun.runtime.errors import InputError
from edgerun.runtime.kernels.attrs import FLOAT_KINDS, float_attr, int_attr, require_kind, str_attr
from edgerun.runtime.kernels.base import Kernel, TensorSpec
from edgerun.runtime.kernels.registry import register

Activation = Callable[[np.ndarray], np.ndarray]
DIRECTIONS = {"forward": 1, "reverse": 1, "bidirectional": 2}
# (name) -> (alpha default, beta default, function of (x, alpha, beta))
_ACTIVATIONS: dict[str, tuple[float, float, Callable[[np.ndarray, float, float], np.ndarray]]] = {
    "relu": (0.0, 0.0, lambda x, a, b: np.maximum(x, 0)),
    "tanh": (0.0, 0.0, lambda x, a, b: np.tanh(x)),
    "sigmoid": (0.0, 0.0, lambda x, a, b: 1 / (1 + np.exp(-x))),
    "affine": (1.0, 0.0, lambda x, a, b: a * x + b),
    "leakyrelu": (0.01, 0.0, lambda x, a, b: np.where(x >= 0, x, a * x)),
    "thresholdedrelu": (1.0, 0.0, lambda x, a, b: np.where(x > a, x, 0)),
    "scaledtanh": (1.0, 1.0, lambda x, a, b: a * np.tanh(b * x)),
    "hardsigmoid": (0.2, 0.5, lambda x, a, b: np.clip(a * x + b, 0, 1)),
    "elu": (1.0, 0.0, lambda x, a, b: np.where(x >= 0, x, a * (np.exp(x) - 1))),
    "softsign": (0.0, 0.0, lambda x, a, b: x / (1 + np.abs(x))),
    "softplus": (0.0, 0.0, lambda x, a, b: np.logaddexp(0, x)),
}


def _list_attr(kernel: Kernel, key: str, kind: type) -> list:
    """A list-of-strings (kind str; bytes are decoded) or list-of-floats attribute; [] when absent."""
    value = kernel.attr(key)
    if value is None:
        return []
    ok = isinstance(value, list | tuple) and all(
        isinstance(v, str | bytes) if kind is str else isinstance(v, int | float | np.integer | np.floating)
        for v in value
    )
    if not ok:
        raise kernel.fail(f"attribute {key!r}: expected a list of {kind.__name__}s, got {value!r}")
    if kind is str:
        return [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in value]
    return [float(v) for v in value]


class _Recurrent(Kernel):
    """The driver: validation, layout, directions and sequence lengths; subclasses give `gates`
    (how many blocks W holds), `defaults` (activation names) and `cell` (one step)."""

    min_inputs, max_inputs = 3, 6
    gates = 1
    defaults: tuple[str, ...] = ("Tanh",)
    states = 1  # hidden state only; LSTM adds the cell state

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x, w, r = inputs[:3]
        require_kind(self, x, FLOAT_KINDS, "X")
        self.layout = int_attr(self, "layout", 0)
        if self.layout not in (0, 1) or len(x.shape) != 3:
            raise self.fail(f"X shape {x.shape} with layout {self.layout}: expected rank 3 and layout 0 or 1")
        seq, batch = x.shape[:2] if self.layout == 0 else x.shape[1::-1]
        direction = str_attr(self, "direction", "forward")
        if direction not in DIRECTIONS:
            raise self.fail(f"direction {direction!r} must be one of {', '.join(DIRECTIONS)}")
        self.direction, dirs = direction, DIRECTIONS[direction]
        hidden = int_attr(self, "hidden_size", r.shape[-1] if len(r.shape) == 3 else 0)
        self.hidden = hidden
        want = {1: (dirs, self.gates * hidden, x.shape[2]), 2: (dirs, self.gates * hidden, hidden),
                3: (dirs, 2 * self.gates * hidden), 4: (batch,), 5: self._state_shape(dirs, batch),
                6: self._state_shape(dirs, batch), 7: (dirs, 3 * hidden)}
        for i, spec in enumerate(inputs[1:], start=1):
            if spec is not None and spec.shape != want[i]:
                raise self.fail(f"input {i} shape {spec.shape} must be {want[i]} for X {x.shape}, "
                                f"hidden_size {hidden}, direction {direction}")
        clip = self.attr("clip")
        self.clip = None if clip is None else float_attr(self, "clip", 0.0)
        self.linear_before_reset = int_attr(self, "linear_before_reset", 0) != 0  # GRU
        self.input_forget = int_attr(self, "input_forget", 0) != 0  # LSTM
        self.activations = self._activations(dirs)
        # W, R, B, P in float64 per direction, converted once when they are constants
        self.constant_params = None
        if all(i >= len(inputs) or inputs[i] is None or (i < len(values) and values[i] is not None)
               for i in (1, 2, 3, 7)):
            self.constant_params = [self._params(values, d) for d in range(dirs)]
        y = (seq, dirs, batch, hidden) if self.layout == 0 else (batch, seq, dirs, hidden)
        state = TensorSpec(x.dtype, self._state_shape(dirs, batch))
        return [TensorSpec(x.dtype, y)] + [state] * self.states

    def _state_shape(self, dirs: int, batch: int) -> tuple[int, int, int]:
        return (dirs, batch, self.hidden) if self.layout == 0 else (batch, dirs, self.hidden)

    def _activation_specs(self, dirs: int) -> list[list[tuple[str, float, float]]]:
        """Per direction, the (name, alpha, beta) of its activation functions (f, g[, h]),
        the attributes' or the ONNX defaults; ModelError for a wrong count or an unknown name."""
        names = _list_attr(self, "activations", str) or list(self.defaults) * dirs
        per = len(self.defaults)
        if len(names) != per * dirs:
            raise self.fail(f"activations {names}: expected {per * dirs} names for {dirs} direction(s)")
        alphas = _list_attr(self, "activation_alpha", float)
        betas = _list_attr(self, "activation_beta", float)
        specs = []
        for i, name in enumerate(names):
            key = name.lower()
            if key not in _ACTIVATIONS:
                raise self.fail(f"activation {name!r} is not one of {', '.join(_ACTIVATIONS)}")
            alpha, beta, _ = _ACTIVATIONS[key]
            specs.append((key, alphas[i] if i < len(alphas) else alpha, betas[i] if i < len(betas) else beta))
        return [specs[d * per : (d + 1) * per] for d in range(dirs)]

    def _activations(self, dirs: int) -> list[list[Activation]]:
        """Per direction, the activation functions (f, g[, h]) with their alpha and beta."""
        return [[lambda v, fn=_ACTIVATIONS[key][2], a=alpha, b=beta: fn(v, a, b) for key, alpha, beta in direction]
                for direction in self._activation_specs(dirs)]

    def run(self, inputs, outputs):
        x = inputs[0].astype(np.float64)
        if self.layout == 1:
            x = x.swapaxes(0, 1)
        seq, batch = x.shape[:2]
        lengths = self._lengths(inputs, seq, batch)
        y = np.zeros((seq, len(self.activations), batch, self.hidden))
        finals = []
        for d in range(len(self.activations)):
            params = self.constant_params[d] if self.constant_params else self._params(inputs, d)
            states = self._initial(inputs, d, batch)
            reverse = self.direction == "reverse" or d == 1
            every = lengths is None  # no sequence_lens: every step is valid for every batch entry
            for t in range(seq - 1, -1, -1) if reverse else range(seq):
                new = self.cell(x[t], states, params, self.activations[d])
                if every:
                    states = new
                    y[t, d] = states[0]
                    continue
                valid = (t < lengths)[:, None]
                states = [np.where(valid, n, s) for n, s in zip(new, states, strict=True)]
                y[t, d] = np.where(valid, states[0], 0)
            finals.append(states)
        if self.layout == 1:
            y = y.transpose(2, 0, 1, 3)
        np.copyto(outputs[0], y, casting="unsafe")
        for k, out in enumerate(outputs[1:]):
            state = np.stack([f[k] for f in finals])
            np.copyto(out, state if self.layout == 0 else state.swapaxes(0, 1), casting="unsafe")

    @staticmethod
    def _params(arrays: list, d: int) -> list[np.ndarray | None]:
        """Direction d's W, R, B and P (None where omitted), in float64."""
        return [None if i >= len(arrays) or arrays[i] is None else np.asarray(arrays[i][d], np.float64)
                for i in (1, 2, 3, 7)]

    def _lengths(self, inputs, seq: int, batch: int) -> np.ndarray | None:
        """sequence_lens as int64, checked; None when omitted (every step of every entry counts)."""
        if len(inputs) <= 4 or inputs[4] is None:
            return None
        lengths = inputs[4].astype(np.int64)
        if lengths.min(initial=0) < 0 or lengths.max(initial=0) > seq:
            raise InputError(f"node {self.name!r} ({self.op_type}): sequence_lens {lengths.tolist()} "
                             f"must lie in [0, {seq}]")
        return lengths

    def _initial(self, inputs, d: int, batch: int) -> list[np.ndarray]:
        states = []
        for i in range(5, 5 + self.states):
            value = inputs[i] if len(inputs) > i else None
            if value is None:
                states.append(np.zeros((batch, self.hidden)))
            else:
                states.append((value[d] if self.layout == 0 else value[:, d]).astype(np.float64))
        return states

    def _pre(self, x: np.ndarray, h: np.ndarray, params: list) -> tuple[np.ndarray, np.ndarray]:
        """(X W^T + Wb, H R^T + Rb), each (batch, gates * hidden)."""
        w, r, b = params[:3]
        xw, hr = x @ w.T, h @ r.T
        if b is not None:
            half = b.shape[0] // 2
            xw, hr = xw + b[:half], hr + b[half:]
        return xw, hr

    def _clip(self, v: np.ndarray) -> np.ndarray:
        return v if self.clip is None else np.clip(v, -self.clip, self.clip)

    def cell(self, x, states, params, acts) -> list[np.ndarray]:
        raise NotImplementedError


@register("RNN", since=1)
class RNN(_Recurrent):
    """H = f(X W^T + H R^T + Wb + Rb), f default Tanh."""

    def cell(self, x, states, params, acts):
        xw, hr = self._pre(x, states[0], params)
        return [acts[0](self._clip(xw + hr))]


@register("GRU", since=1)
class GRU(_Recurrent):
    """Gates z, r, h (in W's order): z = f(.), r = f(.), h~ = g(X Wh + (r * H) Rh + Rbh + Wbh), or
    with linear_before_reset g(X Wh + r * (H Rh + Rbh) + Wbh); H = (1 - z) * h~ + z * H.
    f, g default Sigmoid, Tanh."""

    gates = 3
    defaults = ("Sigmoid", "Tanh")

    def cell(self, x, states, params, acts):
        h = states[0]
        n = self.hidden
        xw, hr = self._pre(x, h, params)
        z = acts[0](self._clip(xw[:, :n] + hr[:, :n]))
        r = acts[0](self._clip(xw[:, n : 2 * n] + hr[:, n : 2 * n]))
        if self.linear_before_reset:
            candidate = xw[:, 2 * n :] + r * hr[:, 2 * n :]
        else:
            rb = params[2][5 * n :] if params[2] is not None else 0
            candidate = xw[:, 2 * n :] + (r * h) @ params[1][2 * n :].T + rb
        candidate = acts[1](self._clip(candidate))
        return [(1 - z) * candidate + z * h]


@register("LSTM", since=1)
class LSTM(_Recurrent):
    """Gates i, o, f, c (in W's order), peepholes P = (Pi, Po, Pf):
    i = f(. + Pi * C), f = f(. + Pf * C) (1 - i with input_forget), c~ = g(.), C' = f * C + i * c~,
    o = f(. + Po * C'), H = o * h(C'). f, g, h default Sigmoid, Tanh, Tanh."""

    max_inputs = 8
    gates = 4
    defaults = ("Sigmoid", "Tanh", "Tanh")
    states = 2

    def cell(self, x, states, params, acts):
        h, c = states
        n = self.hidden
        xw, hr = self._pre(x, h, params)
        pre = xw + hr
        p = params[3] if params[3] is not None else np.zeros(3 * n)
        i = acts[0](self._clip(pre[:, :n] + p[:n] * c))
        if self.input_forget:
            f = 1 - i
        else:
            f = acts[0](self._clip(pre[:, 2 * n : 3 * n] + p[2 * n :] * c))
        candidate = acts[1](self._clip(pre[:, 3 * n :]))
        c_new = f * c + i * candidate
        o = acts[0](self._clip(pre[:, n : 2 * n] + p[n : 2 * n] * c_new))
        return [o * acts[2](c_new), c_new]

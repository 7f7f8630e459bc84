"""The numba backend's LSTM: the input projection of every time step in one BLAS product,
then one compiled loop over the steps (the recurrent product, the gates and the state update
without a numpy call each). A streaming model (Silero VAD: one step of a 128-unit LSTM per
audio chunk) paid ~30 numpy calls a step on the reference path.

Taken for float32/float64 LSTMs with constant W, R (and B, P when given), the default
activations (Sigmoid, Tanh, Tanh), no clip, no input_forget and no sequence_lens; the reference
kernel (runtime/kernels/recurrent.py, float64 throughout) runs everything else. The compiled
loop computes in the tensor's dtype, as onnxruntime does.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from edgerun.runtime.kernels.registry import accelerate

BACKEND = "numba"
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
_DEFAULTS = ("sigmoid", "tanh", "tanh")


@njit(cache=True, nogil=True)
def lstm_direction(xw, rt, peep, h, c, y, d, reverse):  # pragma: no cover - compiled
    """Run one direction over the sequence, in place on h, c (batch, n) and into y[:, d].

    xw (seq, batch, 4n): X W^T + Wb + Rb per step; rt (n, 4n): R^T; peep (3n,): Pi, Po, Pf
    (zeros when the node has none); gates in ONNX's i, o, f, c order."""
    seq, batch, four = xw.shape
    n = four // 4
    one = xw.dtype.type(1.0)
    gates = np.empty(four, xw.dtype)
    for step in range(seq):
        t = seq - 1 - step if reverse else step
        for b in range(batch):
            for j in range(four):
                gates[j] = xw[t, b, j]
            for k in range(n):
                hk = h[b, k]
                row = rt[k]
                for j in range(four):
                    gates[j] += hk * row[j]
            for j in range(n):
                cj = c[b, j]
                i = one / (one + math.exp(-(gates[j] + peep[j] * cj)))
                f = one / (one + math.exp(-(gates[2 * n + j] + peep[2 * n + j] * cj)))
                cell = f * cj + i * math.tanh(gates[3 * n + j])
                o = one / (one + math.exp(-(gates[n + j] + peep[n + j] * cell)))
                c[b, j] = cell
                h[b, j] = o * math.tanh(cell)
                y[t, d, b, j] = h[b, j]


@accelerate("LSTM", BACKEND)
class NumbaLSTM:
    """LSTM with the default activations and constant weights: BLAS projection + compiled steps."""

    def prepare(self, inputs, values):
        specs = super().prepare(inputs, values)
        x = inputs[0]
        names = [str(a).lower() for a in self.attr("activations", None) or []]
        constant = all(i < len(values) and values[i] is not None for i in (1, 2)) and all(
            i >= len(inputs) or inputs[i] is None or values[i] is not None for i in (3, 7))
        if (x.dtype not in _FLOATS or not constant or self.clip is not None or self.input_forget
                or (len(inputs) > 4 and inputs[4] is not None)
                or (names and names != list(_DEFAULTS) * len(self.activations))
                or self.attr("activation_alpha") or self.attr("activation_beta") or specs[0].size == 0):
            return specs
        n, dtype = self.hidden, x.dtype
        self.w_t = [np.ascontiguousarray(np.asarray(w, dtype).T) for w in values[1]]
        self.r_t = [np.ascontiguousarray(np.asarray(r, dtype).T) for r in values[2]]
        dirs = len(self.w_t)
        bias = values[3] if len(inputs) > 3 and inputs[3] is not None else np.zeros((dirs, 8 * n))
        self.bias = [np.asarray(b[: 4 * n] + b[4 * n :], dtype) for b in np.asarray(bias, np.float64)]
        peep = values[7] if len(inputs) > 7 and inputs[7] is not None else np.zeros((dirs, 3 * n))
        self.peep = [np.ascontiguousarray(p, dtype) for p in peep]
        self.run = self._run_compiled
        return specs

    def _run_compiled(self, inputs, outputs):
        x = inputs[0] if self.layout == 0 else inputs[0].swapaxes(0, 1)
        seq, batch, size = x.shape
        n = self.hidden
        y = outputs[0] if self.layout == 0 else outputs[0].transpose(1, 2, 0, 3)  # (seq, dirs, batch, n)
        flat = np.ascontiguousarray(x).reshape(seq * batch, size)
        finals = []
        for d in range(len(self.w_t)):
            xw = (flat @ self.w_t[d] + self.bias[d]).reshape(seq, batch, 4 * n)
            h, c = (self._initial_state(inputs, i, d, batch, x.dtype) for i in (5, 6))
            reverse = self.direction == "reverse" or d == 1
            lstm_direction(xw, self.r_t[d], self.peep[d], h, c, y, d, reverse)
            finals.append((h, c))
        for k, out in enumerate(outputs[1:3]):
            if out is not None:
                state = out if self.layout == 0 else out.swapaxes(0, 1)  # (dirs, batch, n)
                for d, final in enumerate(finals):
                    state[d] = final[k]

    def _initial_state(self, inputs, index, d, batch, dtype) -> np.ndarray:
        """A private (batch, n) copy of the initial state (zeros when omitted)."""
        state = inputs[index] if len(inputs) > index else None
        if state is None:
            return np.zeros((batch, self.hidden), dtype)
        return np.array(state[d] if self.layout == 0 else state[:, d], dtype)

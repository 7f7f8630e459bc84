"""Gradient kernel (edgerun domain, for training) of Attention (attention.py): AttentionGrad.

Nothing is saved by the forward pass: the kernel recomputes the softmax probabilities from Q, K,
the mask and the cache (the forward kernel's `_split` and `_bias`), in float64, and casts each
gradient to its input's dtype.
"""

from __future__ import annotations

import numpy as np

from edgerun.runtime.kernels.attention import Attention
from edgerun.runtime.kernels.base import TensorSpec
from edgerun.runtime.kernels.elementwise import sum_to
from edgerun.runtime.kernels.registry import register

FORWARD_SLOTS = 7  # Q, K, V, attn_mask, past_key, past_value, nonpad_kv_seqlen
OUTPUT_GRADS = 3  # dY, d present_key, d present_value


@register("AttentionGrad", since=1, domain="edgerun")
class AttentionGrad(Attention):
    """(Q, K, V, attn_mask, past_key, past_value, nonpad_kv_seqlen, dY, dPresentKey, dPresentValue;
    the forward's attributes) -> (dQ, dK, dV, d attn_mask, d past_key, d past_value).

    The first 7 inputs are the forward node's input slots (omitted ones None), the last 3 the
    gradients of its outputs Y, present_key and present_value (None where none flows; not all
    three). Each gradient has its input's shape: d attn_mask is summed over the axes the mask
    broadcast along (the padded tail of a short mask takes none); it is an empty (0,) tensor for
    a bool mask or none. d past_key / d past_value are (batch, kv_heads, 0, head) without a cache.
    The softmax runs in float64 whatever softmax_precision says; fully masked query rows take no
    gradient. ModelError when the forward would reject the inputs, or a gradient's shape differs
    from its output's.
    """

    min_inputs, max_inputs = FORWARD_SLOTS + OUTPUT_GRADS, FORWARD_SLOTS + OUTPUT_GRADS

    def check_arity(self, inputs):
        """What the forward `prepare` checks of its slots (this kernel's count is checked before)."""
        if len(inputs) < 3 or any(x is None for x in inputs[:3]):
            raise self.fail("inputs Q, K and V (0, 1, 2) are required")

    def prepare(self, inputs, values):
        if len(inputs) != self.max_inputs:
            raise self.fail(f"expected {self.max_inputs} inputs (the forward's {FORWARD_SLOTS} slots, then the "
                            f"gradients of Y, present_key and present_value), got {len(inputs)}")
        forward = list(inputs[:FORWARD_SLOTS])
        while forward[-1] is None:
            forward.pop()
        outs = super().prepare(forward, list(values[: len(forward)]))
        grads = inputs[FORWARD_SLOTS:]
        if all(g is None for g in grads):
            raise self.fail("at least one of dY, dPresentKey and dPresentValue is required")
        for grad, out, what in zip(grads, outs, ("dY", "dPresentKey", "dPresentValue"), strict=False):
            if grad is not None and grad.shape != out.shape:
                raise self.fail(f"{what} shape {grad.shape}: expected the forward output's {out.shape}")
        q, k, v, mask, past_k, past_v = inputs[:6]
        float_mask = mask is not None and mask.dtype != bool
        mask_spec = TensorSpec(mask.dtype, mask.shape) if float_mask else TensorSpec(q.dtype, (0,))
        pasts = [past_k, past_v] if past_k is not None else [
            TensorSpec(q.dtype, (*x.shape[:2], 0, x.shape[3])) for x in (outs[1], outs[2])]
        return [TensorSpec(x.dtype, x.shape) for x in (q, k, v, mask_spec, *pasts)]

    def run(self, inputs, outputs):
        q, k, v, mask, past_k, past_v, nonpad = inputs[:FORWARD_SLOTS]
        dy, d_present_k, d_present_v = (None if g is None else g.astype(np.float64) for g in inputs[FORWARD_SLOTS:])
        q, k, v = (self._split(x.astype(np.float64), h) for x, h in ((q, self.q_heads), (k, self.kv_heads),
                                                                      (v, self.kv_heads)))
        past = 0 if past_k is None else past_k.shape[2]
        if past_k is not None:
            k = np.concatenate((past_k.astype(np.float64), k), axis=2)
            v = np.concatenate((past_v.astype(np.float64), v), axis=2)
        f64_mask = None if mask is None or mask.dtype == bool else mask.astype(np.float64)
        bias = self._bias(q, k, mask if f64_mask is None else f64_mask, past_k, nonpad)
        dq, dk, dv, d_bias = self._backward(q, k, v, bias, dy)
        dk = dk if d_present_k is None else dk + d_present_k
        dv = dv if d_present_v is None else dv + d_present_v
        np.copyto(outputs[0], self._merge(dq), casting="unsafe")
        np.copyto(outputs[1], self._merge(dk[:, :, past:]), casting="unsafe")
        np.copyto(outputs[2], self._merge(dv[:, :, past:]), casting="unsafe")
        if f64_mask is not None:
            sum_to(d_bias[..., : mask.shape[-1]], outputs[3])
        np.copyto(outputs[4], dk[:, :, :past], casting="unsafe")
        np.copyto(outputs[5], dv[:, :, :past], casting="unsafe")

    def _merge(self, x: np.ndarray) -> np.ndarray:
        """(batch, heads, seq, head) back to the inputs' layout (the inverse of `_split`)."""
        if self.rank == 4:
            return x
        return x.transpose(0, 2, 1, 3).reshape(x.shape[0], x.shape[2], x.shape[1] * x.shape[3])

    def _backward(self, q, k, v, bias, dy) -> tuple[np.ndarray, ...]:
        """(dQ, dK, dV, d bias) in float64 over the 4-D heads (K, V with the cache, bias broadcast
        to the scores) from dY (None: zero), as the forward `_attend` computes Y."""
        reps = q.shape[1] // k.shape[1]
        k_rep, v_rep = np.repeat(k, reps, axis=1), np.repeat(v, reps, axis=1)
        with np.errstate(all="ignore"):  # a negative scale gives nan, as in the forward
            root = np.sqrt(self.scale or 1 / np.sqrt(q.shape[3]))
        raw = np.matmul(q * root, np.swapaxes(k_rep, -1, -2) * root)
        scores = np.tanh(raw / self.softcap) * self.softcap if self.softcap > 0 else raw
        probs = _softmax(scores + bias)
        probs = np.where(np.isneginf(np.max(bias, axis=-1, keepdims=True)), 0.0, probs)
        if dy is None:
            dy = np.zeros(probs.shape[:3] + v.shape[3:])
        else:
            dy = self._split(dy, self.q_heads)
        dv_rep = np.matmul(np.swapaxes(probs, -1, -2), dy)
        d_probs = np.matmul(dy, np.swapaxes(v_rep, -1, -2))
        d_biased = probs * (d_probs - np.sum(d_probs * probs, axis=-1, keepdims=True))
        d_raw = d_biased * (1 - (scores / self.softcap) ** 2) if self.softcap > 0 else d_biased
        dq = np.matmul(d_raw, k_rep * root) * root
        dk_rep = np.matmul(np.swapaxes(d_raw, -1, -2), q * root) * root
        return dq, _sum_groups(dk_rep, k.shape[1]), _sum_groups(dv_rep, k.shape[1]), d_biased


def _softmax(x: np.ndarray) -> np.ndarray:
    """Softmax over the last axis; a row of -inf gives zeros (no nan)."""
    row_max = np.max(x, axis=-1, keepdims=True)
    weights = np.exp(x - np.where(np.isneginf(row_max), 0, row_max))
    total = np.sum(weights, axis=-1, keepdims=True)
    return weights / np.where(total == 0, 1, total)


def _sum_groups(x: np.ndarray, kv_heads: int) -> np.ndarray:
    """(batch, q_heads, ...) summed over the query heads that share each kv head (np.repeat order)."""
    return x.reshape(x.shape[0], kv_heads, x.shape[1] // kv_heads, *x.shape[2:]).sum(axis=2)

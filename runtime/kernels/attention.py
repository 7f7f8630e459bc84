"""The attention family: Attention and RotaryEmbedding (opset 23), LinearAttention (27)
and FlexAttention (ai.onnx.preview), computed as the ONNX reference computes them."""

from __future__ import annotations

import numpy as np

from edgerun.runtime.errors import InputError
from edgerun.runtime.graph import Graph
from edgerun.runtime.kernels.attrs import (
    FLOAT_KINDS,
    flag_attr,
    float_attr,
    int_attr,
    require_kind,
    require_rank,
    require_same_dtype,
    str_attr,
)
from edgerun.runtime.kernels.base import Kernel, TensorSpec
from edgerun.runtime.kernels.registry import register


@register("Attention", since=23)
class Attention(Kernel):
    """Scaled dot-product attention, as the ONNX reference computes it (in Q's dtype).

    Inputs Q, K, V: 4-D (batch, heads, seq, head_size) or 3-D (batch, seq, heads * head_size)
    with q_num_heads / kv_num_heads; optional attn_mask (bool: True attends; float: added),
    broadcasting to (batch, q_heads, q_seq, total_kv) and padded (masked) when shorter than
    total_kv; past_key / past_value (batch, kv_heads, past, head_size) prepended to K and V;
    nonpad_kv_seqlen (batch,) (opset 24) masks keys at or past each sample's length.
    Attributes scale (1/sqrt(head_size)), is_causal (bottom-right aligned after the cache),
    softcap, softmax_precision, qk_matmul_output_mode 0-3, left/right_window_size (opset 25).
    K and V heads repeat for grouped-query attention. A fully masked query row gives zeros.
    Outputs Y (Q's layout, V's head size), present_key, present_value, qk_matmul_output
    (batch, q_heads, q_seq, total_kv).
    """

    min_inputs, max_inputs = 3, 7

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        q, k, v = inputs[:3]
        require_kind(self, q, FLOAT_KINDS, "Q")
        require_same_dtype(self, [q, k, v], "Q, K and V")
        rank = len(q.shape)
        if rank not in (3, 4) or len(k.shape) != rank or len(v.shape) != rank:
            raise self.fail(f"Q, K, V shapes {q.shape}, {k.shape}, {v.shape}: expected all 3-D or all 4-D")
        q4, k4, v4 = self._heads(q.shape, k.shape, v.shape)
        past = inputs[4] if len(inputs) > 4 else None
        total = k4[2] + (past.shape[2] if past is not None else 0)
        if q4[0] != k4[0] or k4[:3] != v4[:3] or q4[3] != k4[3] or q4[1] % k4[1]:
            raise self.fail(f"Q {q.shape}, K {k.shape}, V {v.shape} do not fit together")
        if past is not None and (len(past.shape) != 4 or past.shape[:2] != k4[:2] or past.shape[3] != k4[3]):
            raise self.fail(f"past_key shape {past.shape} does not fit K heads {k4}")
        self._check_optional(inputs, (q4[0], q4[1], q4[2], total), (v4[0], v4[1], total - k4[2], v4[3]))
        self._options()
        self.rank, self.q_heads, self.kv_heads = rank, q4[1], k4[1]
        y = (q4[0], q4[1], q4[2], v4[3]) if rank == 4 else (q4[0], q4[2], q4[1] * v4[3])
        present_k = TensorSpec(q.dtype, (k4[0], k4[1], total, k4[3]))
        present_v = TensorSpec(q.dtype, (v4[0], v4[1], total, v4[3]))
        return [TensorSpec(q.dtype, y), present_k, present_v, TensorSpec(q.dtype, (q4[0], q4[1], q4[2], total))]

    def _check_optional(self, inputs, scores: tuple[int, ...], past_v: tuple[int, ...]) -> None:
        """attn_mask broadcasts to the scores (its last axis may be shorter: padded as masked),
        past_value matches past_key, nonpad_kv_seqlen is (batch,) integers without past_key."""
        mask, past_k, past_v_spec, nonpad = (inputs[i] if len(inputs) > i else None for i in range(3, 7))
        if mask is not None:
            if mask.dtype != bool:
                require_kind(self, mask, FLOAT_KINDS, "attn_mask")
            padded = mask.shape[:-1] + scores[-1:] if mask.shape and mask.shape[-1] <= scores[-1] else None
            if padded is None or len(padded) > 4 or any(
                    d not in (1, s) for d, s in zip(padded[::-1], scores[::-1], strict=False)):
                raise self.fail(f"attn_mask shape {mask.shape} does not broadcast to the scores {scores}")
        if (past_k is None) != (past_v_spec is None) or (past_v_spec is not None and past_v_spec.shape != past_v):
            raise self.fail(f"past_key and past_value must come together, past_value shaped {past_v}")
        if nonpad is not None and (nonpad.shape != scores[:1] or nonpad.dtype.kind not in "iu" or past_k is not None):
            raise self.fail(f"nonpad_kv_seqlen must be ({scores[0]},) integers, without past_key")

    def _options(self) -> None:
        """Read the attributes (ModelError for bad ones) once, at prepare."""
        self.mode = int_attr(self, "qk_matmul_output_mode", 0)
        if self.mode not in (0, 1, 2, 3):
            raise self.fail(f"qk_matmul_output_mode {self.mode} must be 0..3")
        self.scale = float_attr(self, "scale", 0.0)
        self.softcap = float_attr(self, "softcap", 0.0)
        self.causal = flag_attr(self, "is_causal")
        self.left, self.right = int_attr(self, "left_window_size", -1), int_attr(self, "right_window_size", -1)
        precision = int_attr(self, "softmax_precision", 0)
        precisions = {0: None, 1: np.float32, 10: np.float16, 11: np.float64, 16: np.float32}
        if precision not in precisions:
            raise self.fail(f"softmax_precision {precision} is not a float type")
        self.precision = precisions[precision]

    def _heads(self, q, k, v) -> tuple[tuple[int, ...], ...]:
        """Q, K, V shapes as (batch, heads, seq, head_size); sets self.kv_heads for 3-D inputs."""
        if len(q) == 4:
            return q, k, v
        qh, kvh = int_attr(self, "q_num_heads", 0), int_attr(self, "kv_num_heads", 0)
        if qh < 1 or kvh < 1 or q[2] % qh or k[2] % kvh or v[2] % kvh:
            raise self.fail(f"3-D inputs need q_num_heads and kv_num_heads dividing {q[2]}, {k[2]}, {v[2]}")
        return ((q[0], qh, q[1], q[2] // qh), (k[0], kvh, k[1], k[2] // kvh), (v[0], kvh, v[1], v[2] // kvh))

    def _split(self, x: np.ndarray, heads: int) -> np.ndarray:
        if self.rank == 4:
            return x
        return x.reshape(x.shape[0], x.shape[1], heads, x.shape[2] // heads).transpose(0, 2, 1, 3)

    def run(self, inputs, outputs):
        q, k, v = inputs[:3]
        opt = [inputs[i] if len(inputs) > i else None for i in range(3, 7)]
        mask, past_k, past_v, nonpad = opt
        q, k, v = self._split(q, self.q_heads), self._split(k, self.kv_heads), self._split(v, self.kv_heads)
        if past_k is not None:
            k = np.concatenate((past_k, k), axis=2)
        if past_v is not None:
            v = np.concatenate((past_v, v), axis=2)
        for out, value in zip(outputs[1:3], (k, v), strict=False):
            np.copyto(out, value)
        bias = self._bias(q, k, mask, past_k, nonpad)
        y, qk = self._attend(q, k, v, bias)
        if self.rank == 3:
            y = y.transpose(0, 2, 1, 3).reshape(outputs[0].shape)
        np.copyto(outputs[0], y, casting="unsafe")
        if len(outputs) > 3:
            np.copyto(outputs[3], qk, casting="unsafe")

    def _bias(self, q, k, mask, past_k, nonpad) -> np.ndarray:
        """The additive bias (0 or -inf, or the float mask's values) over (..., q_seq, total_kv)."""
        dtype, (q_len, kv_len) = q.dtype, (q.shape[2], k.shape[2])
        if mask is not None and mask.shape[-1] < kv_len:
            width = [(0, 0)] * (mask.ndim - 1) + [(0, kv_len - mask.shape[-1])]
            mask = np.pad(mask, width, constant_values=False if mask.dtype == bool else -np.inf)
        if mask is not None and mask.dtype == bool:
            mask = np.where(mask, dtype.type(0), dtype.type(-np.inf))
        bias = np.zeros((q_len, kv_len), dtype) if mask is None else mask.astype(dtype)
        if past_k is None and nonpad is not None:
            offset = nonpad.reshape(-1, 1, 1, 1).astype(np.int64) - q_len
        else:
            offset = past_k.shape[2] if past_k is not None else 0
        diff = np.arange(q_len)[:, None] + offset - np.arange(kv_len)  # query position - key position
        allowed = np.ones(np.shape(diff), bool)
        if self.causal:
            allowed &= diff >= 0
        if self.left >= 0:
            allowed &= diff <= self.left
        if self.right >= 0:
            allowed &= -diff <= self.right
        bias = bias + np.where(allowed, dtype.type(0), dtype.type(-np.inf))
        if nonpad is not None:
            keep = np.arange(kv_len) < nonpad.astype(np.int64)[:, None]
            bias = bias + np.where(keep, dtype.type(0), dtype.type(-np.inf)).reshape(-1, 1, 1, kv_len)
        return bias

    def _attend(self, q, k, v, bias) -> tuple[np.ndarray, np.ndarray]:
        """(Y, the qk_matmul_output of the chosen mode) in Q's dtype."""
        dtype = q.dtype
        if q.shape[1] != k.shape[1]:
            reps = q.shape[1] // k.shape[1]
            k, v = np.repeat(k, reps, axis=1), np.repeat(v, reps, axis=1)
        with np.errstate(all="ignore"):  # a negative scale gives nan, as in the reference
            root = dtype.type(np.sqrt(self.scale or 1 / np.sqrt(q.shape[3])))
        scores = np.matmul(q * root, np.swapaxes(k, -1, -2) * root)
        if self.softcap > 0:
            scores = np.tanh(scores / dtype.type(self.softcap)) * dtype.type(self.softcap)
        biased = scores + bias
        qk = biased if self.mode == 2 else scores
        if self.precision is not None:
            biased = biased.astype(self.precision)
        row_max = np.max(biased, axis=-1, keepdims=True)
        weights = np.exp(biased - np.where(np.isneginf(row_max), 0, row_max))
        total = np.sum(weights, axis=-1, keepdims=True)
        weights = weights / np.where(total == 0, 1, total)
        masked_rows = np.isneginf(np.max(bias, axis=-1, keepdims=True))
        weights = np.where(masked_rows, 0, weights)
        if self.mode == 3:
            qk = weights
        return np.matmul(weights.astype(dtype), v), qk.astype(dtype)


@register("RotaryEmbedding", since=23)
class RotaryEmbedding(Kernel):
    """Rotary position embedding of X: (batch, heads, seq, head) or (batch, seq, num_heads * head).

    The first rotary_embedding_dim (default: all) values of each head are rotated as pairs
    (x1, x2) -> (cos * x1 - sin * x2, sin * x1 + cos * x2): the two halves when `interleaved`
    is 0, else the even and odd positions. cos_cache / sin_cache are (batch, seq, dim / 2), or
    (max_position, dim / 2) indexed by position_ids (batch, seq). A position outside the cache
    is an InputError."""

    min_inputs, max_inputs = 3, 4

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x, cos, sin = inputs[:3]
        positions = inputs[3] if len(inputs) > 3 else None
        require_kind(self, x, FLOAT_KINDS, "X")
        require_rank(self, x, 3, 4, what="X")
        self.heads = int_attr(self, "num_heads", 0)
        if len(x.shape) == 3 and (self.heads < 1 or x.shape[2] % self.heads):
            raise self.fail(f"num_heads {self.heads} must divide X's last axis {x.shape[2]} for 3-D X")
        head = x.shape[3] if len(x.shape) == 4 else x.shape[2] // self.heads
        self.dim = int_attr(self, "rotary_embedding_dim", 0) or head
        self.interleaved = flag_attr(self, "interleaved")
        if self.dim % 2 or self.dim > head:
            raise self.fail(f"rotary_embedding_dim {self.dim} must be even and at most the head size {head}")
        batch, seq = x.shape[0], x.shape[2] if len(x.shape) == 4 else x.shape[1]
        if positions is not None:
            require_kind(self, positions, "iu", "position_ids")
            want = (None, self.dim // 2)
            ok = positions.shape == (batch, seq) and all(len(s.shape) == 2 for s in (cos, sin))
        else:
            want = (batch, seq, self.dim // 2)
            ok = True
        ok = ok and cos.shape == sin.shape
        for name, spec in (("cos_cache", cos), ("sin_cache", sin)):
            ok = ok and spec.dtype == x.dtype and spec.shape[-1] == want[-1] and (
                positions is not None or spec.shape == want)
            if not ok:
                raise self.fail(f"{name} {spec.dtype} {spec.shape} does not fit X {x.shape} "
                                f"(rotary dim {self.dim}, position_ids {positions is not None})")
        return [x]

    def run(self, inputs, outputs):
        x, cos, sin = inputs[:3]
        if len(inputs) > 3 and inputs[3] is not None:
            positions = inputs[3].astype(np.int64)
            if positions.size and (positions.min() < 0 or positions.max() >= cos.shape[0]):
                raise InputError(f"node {self.name!r} (RotaryEmbedding): position_ids outside the "
                                 f"{cos.shape[0]} cached positions")
            cos, sin = cos[positions], sin[positions]
        # work in (batch, seq, heads, head)
        if x.ndim == 4:
            x4 = x.transpose(0, 2, 1, 3)
        else:  # explicit head size: reshape cannot infer -1 for an empty tensor
            x4 = x.reshape(x.shape[0], x.shape[1], self.heads, x.shape[2] // self.heads)
        cos, sin = cos[:, :, None, :], sin[:, :, None, :]
        rotate = x4[..., : self.dim]
        if self.interleaved:
            x1, x2 = rotate[..., 0::2], rotate[..., 1::2]
        else:
            x1, x2 = rotate[..., : self.dim // 2], rotate[..., self.dim // 2 :]
        real, imag = cos * x1 - sin * x2, sin * x1 + cos * x2
        y = x4.copy()
        if self.interleaved:
            y[..., 0 : self.dim : 2], y[..., 1 : self.dim : 2] = real, imag
        else:
            y[..., : self.dim // 2], y[..., self.dim // 2 : self.dim] = real, imag
        np.copyto(outputs[0], y.transpose(0, 2, 1, 3) if x.ndim == 4 else y.reshape(x.shape))


@register("LinearAttention", since=27)
class LinearAttention(Kernel):
    """Recurrent linear attention over 3-D (batch, seq, heads * head) query, key, value, as the ONNX
    reference computes it (float32 state), one step at a time:
        state *= exp(decay_t)                        (update_rule gated, gated_delta)
        v_t = beta_t * (v_t - state^T k_t)           (delta, gated_delta)
        state += k_t v_t^T ;  y_t = scale * q_t^T state   (kv heads repeat for grouped queries)
    Inputs past_state (batch, kv_heads, d_k, d_v), decay (last axis kv_heads or kv_heads * d_k)
    and beta (last axis kv_heads or 1) are optional as the rule requires. Outputs Y (batch, seq,
    q_heads * d_v) and present_state."""

    min_inputs, max_inputs = 3, 6
    RULES = ("linear", "gated", "delta", "gated_delta")

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        q, k, v = inputs[:3]
        past, decay, beta = (inputs[i] if len(inputs) > i else None for i in (3, 4, 5))
        require_kind(self, q, FLOAT_KINDS, "query")
        require_same_dtype(self, [q, k, v], "query, key and value")
        for name, spec in (("past_state", past), ("decay", decay), ("beta", beta)):
            if spec is not None:
                require_kind(self, spec, FLOAT_KINDS, name)
        self.rule = str_attr(self, "update_rule", "gated_delta")
        if self.rule not in self.RULES:
            raise self.fail(f"update_rule {self.rule!r} is not one of {', '.join(self.RULES)}")
        self.gated, self.delta = "gated" in self.rule, "delta" in self.rule
        qh, kvh = int_attr(self, "q_num_heads", 0), int_attr(self, "kv_num_heads", 0)
        shapes = [s.shape for s in (q, k, v)]
        if (qh < 1 or kvh < 1 or qh % kvh or any(len(s) != 3 for s in shapes) or shapes[0][2] % qh
                or shapes[1][2] % kvh or shapes[2][2] % kvh or len({s[:2] for s in shapes}) != 1):
            raise self.fail(f"query/key/value shapes {shapes} do not fit q_num_heads {qh}, kv_num_heads {kvh}")
        (b, t, _), self.heads = shapes[0], (qh, kvh)
        self.d_k, self.d_v = shapes[0][2] // qh, shapes[2][2] // kvh
        if shapes[1][2] // kvh != self.d_k:
            raise self.fail(f"key head size {shapes[1][2] // kvh} differs from the query's {self.d_k}")
        if (decay is not None) != self.gated or (beta is not None) != self.delta:
            raise self.fail(f"update_rule {self.rule!r} needs decay: {self.gated}, beta: {self.delta}")
        if decay is not None and (decay.shape[:2] != (b, t) or decay.shape[2:] not in ((kvh,), (kvh * self.d_k,))):
            raise self.fail(f"decay shape {decay.shape} must be ({b}, {t}, {kvh} or {kvh * self.d_k})")
        if beta is not None and (beta.shape[:2] != (b, t) or beta.shape[2:] not in ((kvh,), (1,))):
            raise self.fail(f"beta shape {beta.shape} must be ({b}, {t}, {kvh} or 1)")
        state = (b, kvh, self.d_k, self.d_v)
        if past is not None and past.shape != state:
            raise self.fail(f"past_state shape {past.shape} must be {state}")
        self.scale = float_attr(self, "scale", 0.0) or 1 / np.sqrt(self.d_k)
        return [TensorSpec(q.dtype, (b, t, qh * self.d_v)), TensorSpec(q.dtype if past is None else past.dtype, state)]

    def run(self, inputs, outputs):
        q, k, v = (x.astype(np.float32) for x in inputs[:3])
        past, decay, beta = (inputs[i] if len(inputs) > i else None for i in (3, 4, 5))
        (b, t, _), (qh, kvh) = q.shape, self.heads
        q = q.reshape(b, t, qh, self.d_k)
        k, v = k.reshape(b, t, kvh, self.d_k), v.reshape(b, t, kvh, self.d_v)
        state = np.zeros((b, kvh, self.d_k, self.d_v), np.float32) if past is None else past.astype(np.float32)
        y = np.zeros((b, t, qh, self.d_v), np.float32)
        for i in range(t):
            v_t = v[:, i]
            if decay is not None:
                g = decay[:, i].astype(np.float32).reshape(b, kvh, -1)  # (B, H, 1 or d_k)
                state = state * np.exp(g)[..., None]
            if beta is not None:
                retrieved = np.einsum("bhdm,bhd->bhm", state, k[:, i])
                v_t = beta[:, i].astype(np.float32).reshape(b, -1, 1) * (v_t - retrieved)
            state = state + k[:, i][..., :, None] * v_t[..., None, :]
            read = np.repeat(state, qh // kvh, axis=1) if qh != kvh else state
            y[:, i] = self.scale * np.einsum("bhd,bhdm->bhm", q[:, i], read)
        np.copyto(outputs[0], y.reshape(outputs[0].shape), casting="unsafe")
        if len(outputs) > 1:
            np.copyto(outputs[1], state, casting="unsafe")


@register("FlexAttention", since=1, domain="ai.onnx.preview")
class FlexAttention(Kernel):
    """Attention with optional graph hooks, as the ONNX reference computes it: Q (B, Hq, L, E),
    K (B, Hkv, S, E), V (B, Hkv, S, Ev) (kv heads repeat for grouped queries); scores =
    (Q * sqrt(scale)) @ (K * sqrt(scale))^T in the softmax dtype (softmax_precision, else float32
    for half floats, else Q's dtype), then the `score_mod` graph (scores -> scores), softmax over
    S, the `prob_mod` graph (probabilities -> probabilities), and @ V, cast to V's dtype.
    Values the hooks read from the enclosing graph arrive as the node's last `captures` inputs."""

    min_inputs, max_inputs = 3, 1 << 16
    PRECISIONS = {1: np.float32, 10: np.float16, 11: np.float64}

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        q, k, v = inputs[:3]
        require_kind(self, q, FLOAT_KINDS, "Q")
        require_same_dtype(self, [q, k, v], "Q, K and V")
        self.captures = int_attr(self, "captures", 0)
        if len(inputs) != 3 + self.captures or any(len(s.shape) != 4 for s in (q, k, v)):
            raise self.fail(f"expected 4-D Q, K, V (+ {self.captures} captures), got {len(inputs)} inputs")
        (b, hq, length, e), (bk, hkv, s, ek), (bv, hv, sv, ev) = q.shape, k.shape, v.shape
        if b != bk or b != bv or hkv != hv or s != sv or e != ek or hkv < 1 or hq % hkv:
            raise self.fail(f"Q {q.shape}, K {k.shape}, V {v.shape} do not fit together")
        precision = int_attr(self, "softmax_precision", 0)
        if precision and precision not in self.PRECISIONS:
            raise self.fail(f"softmax_precision {precision} is not float, float16 or double")
        self.compute = np.dtype(self.PRECISIONS[precision] if precision else
                                np.float32 if q.dtype.itemsize < 4 else q.dtype)
        self.scale = float_attr(self, "scale", 0.0) or 1 / np.sqrt(e)
        self.hooks = [self._hook(key) for key in ("score_mod", "prob_mod")]
        return [TensorSpec(v.dtype, (b, hq, length, ev))]

    def _hook(self, key: str) -> Graph | None:
        graph = self.attr(key)
        if graph is not None and not isinstance(graph, Graph):
            raise self.fail(f"attribute {key!r} must be a graph")
        return graph

    def _apply(self, hook: Graph | None, x: np.ndarray, captures: list) -> np.ndarray:
        if hook is None:
            return x
        result = self.run_graph(hook, [x, *captures])
        if len(result) != 1 or result[0].shape != x.shape:
            raise self.fail(f"a score/prob hook must return one tensor of shape {x.shape}")
        return result[0].astype(self.compute)

    def run(self, inputs, outputs):
        q, k, v = inputs[:3]
        captures = list(inputs[3:])
        reps = q.shape[1] // k.shape[1]
        if reps > 1:
            k, v = np.repeat(k, reps, axis=1), np.repeat(v, reps, axis=1)
        root = q.dtype.type(np.sqrt(np.float32(self.scale)))
        scores = np.matmul(q * root, np.swapaxes(k * root, -1, -2)).astype(self.compute)
        scores = self._apply(self.hooks[0], scores, captures)
        probs = np.exp(scores - np.max(scores, axis=-1, keepdims=True))
        probs = probs / np.sum(probs, axis=-1, keepdims=True)
        probs = self._apply(self.hooks[1], probs, captures)
        np.copyto(outputs[0], np.matmul(probs, v.astype(self.compute)), casting="unsafe")

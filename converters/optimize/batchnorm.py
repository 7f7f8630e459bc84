"""BatchNormalization folded into the Conv or Gemm before it, and per-channel Mul / Add
constants after it folded into the BatchNormalization.

With s = scale / sqrt(var + epsilon), inference BN is y = x * s + (B - mean * s) per
channel, so a Conv's weights scale by s along the output channels and its bias
becomes (b - mean) * s + B; a Gemm's B' columns scale by s and its C term likewise.
Folded only when the BN is in inference mode, its parameters and the producer's
weights are constants, the producer's output is read by the BN alone, and the
producer has no fused activation yet. New weights are new constants; the old ones are
left to dead-code elimination (another node may share them).

`fold_batchnorm_affine`: a Mul by m or an Add of t, a constant with one value per channel
(or one in all), after an inference BN whose output it alone reads, becomes that BN's
parameters: (x - mean) / sqrt(var + eps) * scale + B, times m, is the same BN with scale * m
and B * m; plus t, with B + t. Caffe-era exports write such a Scale layer after every
BatchNormalization (DenseNet-121's 120 Mul + Add after BNs that follow a Concat, where no
Conv can take them: 8.7 of its 66 ms here).
"""

from __future__ import annotations

import numpy as np

from edgerun.converters.optimize import rewrite
from edgerun.converters.optimize.conv_add import per_channel
from edgerun.converters.optimize.infer import infer
from edgerun.converters.optimize.manager import Pass
from edgerun.runtime.graph import Graph, Node


class FoldBatchNorm(Pass):
    name = "fold_batchnorm"

    def run(self, graph: Graph) -> dict[str, int]:
        fed, keep = rewrite.feeds(graph), rewrite.pinned(graph)
        users, made = rewrite.consumers(graph), rewrite.producers(graph)
        names = rewrite.Names(graph)
        folded: dict[str, int] = {}
        for bn in list(graph.nodes):
            params = _inference_params(bn, fed, users, keep)
            producer = made.get(bn.inputs[0]) if params is not None else None
            if producer is None or rewrite.sole_consumer(bn.inputs[0], users, keep) is not bn:
                continue
            if producer.domain != "" or "activation" in producer.attrs:
                continue
            fold = {"Conv": _fold_into_conv, "Gemm": _fold_into_gemm}.get(producer.op_type)
            if fold is None or not fold(producer, params, fed, names):
                continue
            producer.outputs = [bn.outputs[0]]
            graph.nodes.remove(bn)
            key = f"BatchNormalization into {producer.op_type}"
            folded[key] = folded.get(key, 0) + 1
        return folded


class FoldBatchNormAffine(Pass):
    name = "fold_batchnorm_affine"

    def run(self, graph: Graph) -> dict[str, int]:
        fed, keep = rewrite.feeds(graph), rewrite.pinned(graph)
        users, made = rewrite.consumers(graph), rewrite.producers(graph)
        names = rewrite.Names(graph)
        facts = None
        folded: dict[str, int] = {}
        for op in list(graph.nodes):
            if op.op_type not in ("Mul", "Add") or op.domain != "" or op.version < 7 or len(op.inputs) != 2:
                continue
            for x, c in (op.inputs, op.inputs[::-1]):
                bn = made.get(x)
                if (bn is None or _inference_params(bn, fed, users, keep) is None
                        or rewrite.sole_consumer(x, users, keep) is not op):
                    continue
                facts = infer(graph) if facts is None else facts
                fact = facts.get(bn.inputs[0])
                constant = rewrite.constant_data(c, fed)
                if fact is None or not _fold_channel_constant(bn, op.op_type, constant, fact, fed, names):
                    continue
                bn.outputs = [op.outputs[0]]
                graph.nodes.remove(op)
                key = f"{op.op_type} into BatchNormalization"
                folded[key] = folded.get(key, 0) + 1
                break
        return folded


def _fold_channel_constant(bn: Node, op_type: str, c: np.ndarray | None, fact, fed: set,
                           names: rewrite.Names) -> bool:
    """Fold `c` (Mul: scale and B times c; Add: B plus c) into the BN's parameters when it is a
    float constant of X's dtype with one value per channel of X (rank `fact.shape`) or one in
    all, so that the result's shape and dtype are X's; False (nothing changed) otherwise."""
    scale, bias = (rewrite.constant_data(v, fed) for v in bn.inputs[1:3])
    channels = scale.shape[0]
    if c is None or c.dtype != fact.dtype or c.dtype.kind != "f" or not per_channel(c, len(fact.shape), channels):
        return False
    values = np.broadcast_to(c.reshape(-1).astype(np.float64), (channels,))
    if op_type == "Mul":
        new_scale, new_bias = scale.astype(np.float64) * values, bias.astype(np.float64) * values
    else:
        new_scale, new_bias = scale.astype(np.float64), bias.astype(np.float64) + values
    tag = op_type.lower()
    bn.inputs = [bn.inputs[0],
                 names.constant(f"{bn.inputs[1].name}_{tag}", new_scale.astype(scale.dtype)),
                 names.constant(f"{bn.inputs[2].name}_{tag}", new_bias.astype(bias.dtype)),
                 *bn.inputs[3:]]
    return True


def _inference_params(bn: Node, fed: set, users: dict, keep: set) -> tuple[np.ndarray, np.ndarray] | None:
    """(s, shift) as float64 vectors with y = x * s + shift, for an inference-mode ONNX BN
    with per-channel constant parameters whose extra outputs nobody reads; else None."""
    if bn.op_type != "BatchNormalization" or bn.domain != "" or len(bn.inputs) != 5 or bn.version < 7:
        return None
    if int(bn.attrs.get("training_mode", 0)) or int(bn.attrs.get("spatial", 1)) != 1:
        return None
    if bn.inputs[0] is None or bn.outputs[0] is None:
        return None
    if any(v is not None and (users.get(v) or v in keep) for v in bn.outputs[1:]):
        return None
    arrays = [rewrite.constant_data(v, fed) for v in bn.inputs[1:]]
    if any(a is None or a.ndim != 1 or a.dtype.kind != "f" for a in arrays):
        return None
    if len({a.shape for a in arrays}) != 1:
        return None
    scale, bias, mean, var = (a.astype(np.float64) for a in arrays)
    with np.errstate(all="ignore"):
        s = scale / np.sqrt(var + float(bn.attrs.get("epsilon", 1e-5)))
    return s, bias - mean * s


def _fold_into_conv(conv: Node, params: tuple, fed: set, names: rewrite.Names) -> bool:
    s, shift = params
    w = rewrite.constant_data(conv.inputs[1] if len(conv.inputs) > 1 else None, fed)
    b_value = conv.inputs[2] if len(conv.inputs) > 2 else None
    b = rewrite.constant_data(b_value, fed)
    if w is None or w.dtype.kind != "f" or w.ndim < 3 or w.shape[0] != s.shape[0]:
        return False
    if b_value is not None and (b is None or b.shape != s.shape):
        return False
    bias = shift if b is None else b.astype(np.float64) * s + shift
    new_w = (w.astype(np.float64) * s.reshape((-1,) + (1,) * (w.ndim - 1))).astype(w.dtype)
    conv.inputs = [conv.inputs[0],
                   names.constant(f"{conv.inputs[1].name}_bn", new_w),
                   names.constant(f"{conv.name}_bias_bn", bias.astype(w.dtype))]
    return True


def _fold_into_gemm(gemm: Node, params: tuple, fed: set, names: rewrite.Names) -> bool:
    s, shift = params
    b_value, c_value = gemm.inputs[1], gemm.inputs[2] if len(gemm.inputs) > 2 else None
    b = rewrite.constant_data(b_value, fed)
    c = rewrite.constant_data(c_value, fed)
    trans_b = bool(gemm.attrs.get("transB", 0))
    if b is None or b.dtype.kind != "f" or b.ndim != 2 or b.shape[0 if trans_b else 1] != s.shape[0]:
        return False
    if c_value is not None and c is None:
        return False
    beta = float(gemm.attrs.get("beta", 1.0))
    c_term = 0.0 if c is None or beta == 0 else c.astype(np.float64) * beta
    scaled = b.astype(np.float64) * (s[:, None] if trans_b else s[None, :])
    new_c = np.asarray(c_term * s + shift)
    gemm.inputs = [gemm.inputs[0],
                   names.constant(f"{b_value.name}_bn", scaled.astype(b.dtype)),
                   names.constant(f"{gemm.name}_bias_bn", new_c.astype(b.dtype))]
    gemm.attrs["beta"] = 1.0
    return True

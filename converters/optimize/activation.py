"""Activation fusion (and its inverse): a Relu, Clip, LeakyRelu, HardSigmoid, HardSwish, Sigmoid or Tanh
that alone reads the output of a Conv, ConvTranspose, Gemm or MatMul becomes that
node's `activation` / `activation_params` attributes (format: runtime.kernels.fused),
which the kernels apply to their output. Only float outputs are fused, a Clip only
when its bounds are constants, and a PRelu only into a Conv or ConvTranspose (channels on
axis 1) when its slope is a constant with one value per output channel or one in all.

`unfuse_activations` splits such nodes back into two, for consumers that do not know
the attributes (the training converter's gradient rules).
"""

from __future__ import annotations

import numpy as np

from edgerun.converters.optimize import rewrite
from edgerun.converters.optimize.infer import infer
from edgerun.converters.optimize.manager import Pass
from edgerun.runtime.graph import Graph, Node, Value
from edgerun.runtime.kernels.fused import ACTIVATIONS, fused_activation

PRODUCERS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
FUSED_PRODUCERS = (("edgerun", "FusedConv"),)  # edgerun's own ops that honour the attributes


class FuseActivations(Pass):
    name = "fuse_activations"

    def run(self, graph: Graph) -> dict[str, int]:
        fed, keep = rewrite.feeds(graph), rewrite.pinned(graph)
        users, made = rewrite.consumers(graph), rewrite.producers(graph)
        facts = None
        fused: dict[str, int] = {}
        for act in list(graph.nodes):
            if act.op_type not in ACTIVATIONS or act.domain != "" or not act.inputs or act.inputs[0] is None:
                continue
            producer = made.get(act.inputs[0])
            if (producer is None or not honours_activation(producer)
                    or "activation" in producer.attrs or len(producer.outputs) != 1
                    or rewrite.sole_consumer(act.inputs[0], users, keep) is not act):
                continue
            params = _params(act, fed, producer)
            is_float = rewrite.float_dtype(producer)
            if is_float is None:
                facts = infer(graph) if facts is None else facts
                fact = facts.get(act.inputs[0])
                is_float = fact is not None and fact.dtype.kind == "f"
            if params is None or not is_float:
                continue
            producer.attrs["activation"] = act.op_type
            if params:
                producer.attrs["activation_params"] = params
            producer.outputs = [act.outputs[0]]
            graph.nodes.remove(act)
            key = f"{producer.op_type}+{act.op_type}"
            fused[key] = fused.get(key, 0) + 1
        return fused


def honours_activation(node: Node) -> bool:
    return (node.domain == "" and node.op_type in PRODUCERS) or (node.domain, node.op_type) in FUSED_PRODUCERS


def _params(act: Node, fed: set, producer: Node) -> list[float] | None:
    """The activation's parameters as runtime.kernels.fused expects them; None when they
    are not known at convert time (Clip bounds computed at run time) or cannot be fused
    (a PRelu slope that is not per channel)."""
    attrs = act.attrs
    if act.op_type == "PRelu":
        return _prelu_slopes(act, fed, producer)
    if act.op_type == "LeakyRelu":
        return [float(attrs.get("alpha", 0.01))]
    if act.op_type == "HardSigmoid":
        return [float(attrs.get("alpha", 0.2)), float(attrs.get("beta", 0.5))]
    if act.op_type != "Clip":
        return [] if len(act.inputs) == 1 else None
    if act.version < 11:
        limit = float(np.finfo(np.float32).max)  # Clip-6's defaults: the float range
        return [float(attrs.get("min", -limit)), float(attrs.get("max", limit))]
    bounds = [_scalar(act.inputs[i] if i < len(act.inputs) else None, fed, default)
              for i, default in ((1, -np.inf), (2, np.inf))]
    return None if None in bounds else bounds


def _prelu_slopes(act: Node, fed: set, producer: Node) -> list[float] | None:
    """A PRelu's slopes when they are one per channel of a Conv / ConvTranspose output: a
    constant of shape (C, 1, ..., 1) or (1, C, 1, ..., 1), or one value; else None. The
    channel count comes from the producer's constant weights."""
    if producer.op_type not in ("Conv", "ConvTranspose", "FusedConv") or len(act.inputs) != 2:
        return None
    slope = rewrite.constant_data(act.inputs[1], fed)
    weights = rewrite.constant_data(producer.inputs[1] if len(producer.inputs) > 1 else None, fed)
    if slope is None or weights is None or weights.ndim < 3 or act.version < 7:
        return None
    channels = weights.shape[0] if producer.op_type != "ConvTranspose" else \
        weights.shape[1] * int(producer.attrs.get("group", 1))
    rank = weights.ndim  # the output's rank
    if slope.size == 1 and slope.ndim <= rank:
        return [float(slope.reshape(()))]
    shape = (1,) * (rank - slope.ndim) + slope.shape
    if slope.ndim > rank or shape[1] != channels or slope.size != channels:
        return None
    return [float(v) for v in slope.reshape(-1)]


def _scalar(value: Value | None, fed: set, default: float) -> float | None:
    if value is None:
        return default
    data = rewrite.constant_data(value, fed)
    return None if data is None or data.size != 1 else float(data.reshape(()))


ACTIVATION_OPSET = 14  # HardSwish's first version; every other fusable activation exists by then


def unfuse_activations(graph: Graph) -> int:
    """Split every top-level node with a fused activation back into the node and an ONNX
    activation node of the same opset version, in place; returns how many were split.
    ModelError for a malformed activation attribute."""
    names = rewrite.Names(graph)
    nodes: list[Node] = []
    split = 0
    # An ONNX activation node, whatever domain its producer has (edgerun:FusedConv is version 1):
    # the model's opset, and at least 14, the first opset with every fusable activation (HardSwish).
    opset = max((n.version for n in graph.nodes if n.domain in ("", "ai.onnx")), default=ACTIVATION_OPSET)
    activation_version = max(opset, ACTIVATION_OPSET)
    for node in graph.nodes:
        nodes.append(node)
        activation = fused_activation(node.attrs, f"node {node.name!r} ({node.op_type})")
        if activation is None:
            continue
        node.attrs.pop("activation")
        node.attrs.pop("activation_params", None)
        kind, params = activation
        result = node.outputs[0]
        hidden = Value(names.fresh(f"{result.name}_pre_{kind.lower()}"), result.dtype, result.shape)
        node.outputs = [hidden]
        if kind == "Swish":  # (fused from two nodes: x * Sigmoid(x))
            gate = Value(names.fresh(f"{result.name}_sigmoid"), result.dtype, result.shape)
            nodes.append(Node("Sigmoid", [hidden], [gate], {}, names.fresh(f"{node.name}_sigmoid"), "", 13))
            nodes.append(Node("Mul", [hidden, gate], [result], {}, names.fresh(f"{node.name}_swish"), "", 14))
            split += 1
            continue
        inputs, attrs = _unfused_operands(node, kind, params, names)
        nodes.append(Node(kind, [hidden, *inputs], [result], attrs, names.fresh(f"{node.name}_{kind.lower()}"),
                          "", activation_version))
        split += 1
    graph.nodes = nodes
    return split


def _unfused_operands(node: Node, kind: str, params: tuple[float, ...],
                      names: rewrite.Names) -> tuple[list[Value | None], dict]:
    """Extra inputs and attributes of the activation node `kind` with `params`."""
    if kind == "LeakyRelu":
        return [], {"alpha": params[0]}
    if kind == "HardSigmoid":
        return [], {"alpha": params[0], "beta": params[1]}
    if kind == "PRelu":
        dtype = next((v.dtype for v in node.inputs if v is not None and v.dtype is not None), np.dtype(np.float32))
        weights = node.inputs[1].data if len(node.inputs) > 1 and node.inputs[1] is not None else None
        rank = weights.ndim if weights is not None else 4
        shape = (len(params),) + (1,) * (rank - 2) if len(params) > 1 else ()
        return [names.constant(f"{node.name}_prelu_slope", np.array(params, dtype).reshape(shape))], {}
    if kind != "Clip":
        return [], {}
    finite = [p if np.isfinite(p) else None for p in params]
    if node.version < 11:
        return [], {key: p for key, p in zip(("min", "max"), finite, strict=True) if p is not None}
    dtype = next((v.dtype for v in node.inputs if v is not None and v.dtype is not None), np.dtype(np.float32))
    bounds = [None if p is None else names.constant(f"{node.name}_clip_{key}", np.array(p, dtype))
              for key, p in zip(("min", "max"), finite, strict=True)]
    while bounds and bounds[-1] is None:
        bounds.pop()
    return bounds, {}

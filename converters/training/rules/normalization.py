"""Training rules of BatchNormalization and Dropout: in the train signature they run as edgerun
training ops (BatchNormTraining, DropoutTraining), whose gradients are BatchNormGrad and
DropoutGrad (kernels in runtime/kernels/batch_norm.py and dropout.py)."""

from __future__ import annotations

import zlib

import numpy as np

from edgerun.converters.training.rules import GradContext, gradient, training_forward
from edgerun.runtime.errors import ConversionError
from edgerun.runtime.graph import Node, Value

DEFAULT_RATIO = 0.5


@training_forward("BatchNormalization")
def batch_norm(ctx: GradContext, node: Node) -> tuple[list[Value | None], dict[Value, Value]]:
    """BatchNormTraining with the node's epsilon and momentum (ONNX defaults 1e-5 and 0.9): Y uses
    batch statistics and the running mean/variance inputs are updated. The node's optional
    running-statistics outputs (1, 2) are the updated statistics; later outputs get None.
    ConversionError for the per-activation `spatial=0` form of opsets 7-8."""
    if node.attrs.get("spatial", 1) != 1:
        raise ConversionError(f"node {node.name!r} (BatchNormalization): spatial=0 cannot be trained")
    x, scale, bias, mean, var = node.inputs
    y, new_mean, new_var, _, _ = ctx.op(
        "BatchNormTraining", [x, scale, bias, mean, var], num_outputs=5,
        epsilon=float(node.attrs.get("epsilon", 1e-5)), momentum=float(node.attrs.get("momentum", 0.9)),
    )
    outputs = [y, new_mean, new_var] + [None] * max(0, len(node.outputs) - 3)
    return outputs[: len(node.outputs)], {mean: new_mean, var: new_var}


@gradient("BatchNormTraining")
def batch_norm_training(ctx: GradContext, node: Node, grads: list[Value | None]) -> list[Value | None]:
    """(dX, dscale, dB) from BatchNormGrad over the saved batch statistics; the running
    statistics take none (gradients reaching the statistics outputs are ignored)."""
    if grads[0] is None:
        return [None] * 5
    x, scale = node.inputs[0], node.inputs[1]
    saved_mean, saved_inv_std = node.outputs[3], node.outputs[4]
    dx, dscale, db = ctx.op("BatchNormGrad", [grads[0], x, scale, saved_mean, saved_inv_std], num_outputs=3)
    return [dx, dscale, db, None, None]


@training_forward("Dropout")
def dropout(ctx: GradContext, node: Node) -> tuple[list[Value | None], dict[Value, Value]]:
    """DropoutTraining with the node's ratio (attribute before opset 12, constant input 1 from
    opset 12; default 0.5). The seed is the node's `seed` attribute (opset 12+) when set; else,
    when make_trainable was given a seed (`ctx.seed`), that seed combined with the CRC-32 of
    the node's name, so different Dropout nodes draw different masks; either is taken modulo
    2**63. Otherwise the node gets no seed and draws other masks in every interpreter session.
    The training_mode input is ignored: the train signature always drops. The mask output is
    the bool mask from opset 10; before, its dtype differs (None).
    ConversionError for a ratio that is not a constant or not in [0, 1)."""
    seed = node.attrs.get("seed")
    if seed is None and ctx.seed is not None:
        seed = (int(ctx.seed) << 32) + zlib.crc32(node.name.encode("utf-8"))
    fixed = {} if seed is None else {"seed": int(seed) % (1 << 63)}
    y, mask = ctx.op("DropoutTraining", [node.inputs[0]], num_outputs=2, ratio=_ratio(node), **fixed)
    outputs = [y, mask if node.version >= 10 else None]
    return outputs[: len(node.outputs)], {}


def _ratio(node: Node) -> float:
    where = f"node {node.name!r} (Dropout)"
    if node.version < 12:
        ratio = float(node.attrs.get("ratio", DEFAULT_RATIO))
    elif len(node.inputs) < 2 or node.inputs[1] is None:
        ratio = DEFAULT_RATIO
    elif not node.inputs[1].is_constant or np.size(node.inputs[1].data) != 1:
        raise ConversionError(f"{where}: ratio {node.inputs[1].name!r} must be a constant scalar to train")
    else:
        ratio = float(np.asarray(node.inputs[1].data).reshape(()))
    if not 0 <= ratio < 1:
        raise ConversionError(f"{where}: ratio {ratio} must be in [0, 1)")
    return ratio


@gradient("DropoutTraining")
def dropout_training(ctx: GradContext, node: Node, grads: list[Value | None]) -> list[Value | None]:
    """dX = DropoutGrad(dY, mask) with the forward's ratio."""
    if grads[0] is None:
        return [None]
    return [ctx.op("DropoutGrad", [grads[0], node.outputs[1]], ratio=node.attrs.get("ratio", DEFAULT_RATIO))]

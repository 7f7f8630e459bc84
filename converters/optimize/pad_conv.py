"""A zero Pad over the spatial axes that only a Conv reads becomes the Conv's own padding.

TFLite models pad explicitly before their stride-2 convolutions (PAD, then CONV_2D with VALID
padding): mediapipe's face detector runs 43 such Pads. The Conv pads with zeros itself, so
folding the Pad's amounts into its `pads` gives the same result without the copy. Only a Pad
in "constant" mode with value 0 (or none), constant non-negative pads that leave the batch and
channel axes alone, read by Convs alone (plain or edgerun's FusedConv), whose own padding is
explicit (not SAME_*), is folded. MaxPool and AveragePool pad differently, so they are left.
"""

from __future__ import annotations

import numpy as np

from edgerun.converters.optimize import rewrite
from edgerun.converters.optimize.manager import Pass
from edgerun.runtime.graph import Graph, Node

_CONVS = (("", "Conv"), ("edgerun", "FusedConv"))


class FoldPadIntoConv(Pass):
    name = "fold_pad_into_conv"

    def run(self, graph: Graph) -> dict[str, int]:
        fed, keep = rewrite.feeds(graph), rewrite.pinned(graph)
        users = rewrite.consumers(graph)
        folded = 0
        for pad in list(graph.nodes):
            if pad.op_type != "Pad" or pad.domain != "" or not pad.inputs or pad.outputs[0] is None:
                continue
            readers = users.get(pad.outputs[0], [])
            if not readers or pad.outputs[0] in keep or not all(_takes(conv, pad) for conv in readers):
                continue
            amounts = _spatial_pads(pad, fed)
            if amounts is None:
                continue
            for conv in readers:
                rank = len(amounts) // 2
                own = conv.attrs.get("pads") or [0] * (2 * rank)
                if len(own) != 2 * rank:
                    break
                conv.attrs["pads"] = [int(a) + int(b) for a, b in zip(own, amounts, strict=True)]
                conv.attrs.pop("auto_pad", None)
                conv.inputs[0] = pad.inputs[0]
            else:
                graph.nodes.remove(pad)
                folded += 1
        return {"Pad into Conv": folded} if folded else {}


def _takes(conv: Node, pad: Node) -> bool:
    """Whether `conv` is a Conv that reads the Pad's output as its input X (only) and pads
    explicitly."""
    return ((conv.domain, conv.op_type) in _CONVS and conv.inputs and conv.inputs[0] is pad.outputs[0]
            and all(v is not pad.outputs[0] for v in conv.inputs[1:])
            and conv.attrs.get("auto_pad", "NOTSET") in ("NOTSET", "VALID"))


def _spatial_pads(pad: Node, fed: set) -> list[int] | None:
    """The Pad's amounts on the spatial axes in Conv's `pads` order (all begins, then all ends),
    or None when the Pad is not a zero pad of the spatial axes alone."""
    if pad.attrs.get("mode", "constant") not in ("constant", b"constant"):
        return None
    if pad.version < 11:
        amounts = pad.attrs.get("pads")
        if amounts is None or float(pad.attrs.get("value", 0.0)) != 0.0:
            return None
        amounts = np.asarray(amounts, np.int64)
    else:
        amounts = rewrite.constant_data(pad.inputs[1] if len(pad.inputs) > 1 else None, fed)
        if amounts is None:
            return None
        if len(pad.inputs) > 2 and pad.inputs[2] is not None:
            value = rewrite.constant_data(pad.inputs[2], fed)
            if value is None or value.size != 1 or value.reshape(-1)[0] != 0:
                return None
        if len(pad.inputs) > 3 and pad.inputs[3] is not None:
            return None  # (opset 18's axes: rare; left as it is)
    amounts = np.asarray(amounts, np.int64).reshape(-1)
    rank = amounts.size // 2
    if rank < 3 or amounts.size != 2 * rank or np.any(amounts < 0):
        return None
    begins, ends = amounts[:rank], amounts[rank:]
    if begins[:2].any() or ends[:2].any():
        return None
    return [int(v) for v in (*begins[2:], *ends[2:])]

"""Channels-last regions: which tensors between a prepared plan's steps live in NHWC memory.

Graphs, specs and every tensor a user sees are NCHW. A backend's kernel may offer, once
prepared, to read some inputs and write its first output channels-last: the same bytes, the
same arena slot, but ordered (N, H, W, C) under the (N, C, H, W) spec (`Kernel.channels_last`).
A tensor goes channels-last when its producer offers to write it so and every step that reads
it offers to read it so, one of them gaining from it, and nothing else reads it: not the
signature's outputs or updates, not a view (a Reshape sharing its bytes), not an eager tail or
an offloading backend (the plan never lays out such preparations). Inputs a kernel ties to its
output's layout (a FusedConv's residual) go channels-last together with it or not at all. So
conversions happen only where a region starts or ends, inside the kernels at its border (a
pointwise convolution converts for free, through its product's transposes); inside, depthwise
convolutions read contiguous channels. The kernels' offers (`Kernel.channels_last`, a
ChannelsLastOffer) say where that pays; a kernel without the method never joins a region.

    lay_out(prepared.steps, keep={...values read from outside the steps...})

`ENABLED` (and the environment variable EDGERUN_LAYOUT=nchw) turn it off: the outputs are the
same either way (within float rounding: products may sum in another order), only the speed
differs (MobileNetV2, 1 and 2 threads: 4-6 % faster with it).
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

ENABLED = os.environ.get("EDGERUN_LAYOUT", "").lower() != "nchw"


@dataclass(frozen=True)
class ChannelsLastOffer:
    """What a prepared kernel can do channels-last: read the inputs at `inputs` (indices),
    write output 0 (`output`); the inputs at `tied` must have output 0's layout. `gains`:
    whether it runs faster so (a depthwise convolution) rather than only as fast (a pointwise
    one, converting through its product): a tensor goes channels-last only next to a kernel
    that gains."""

    inputs: frozenset[int] = frozenset()
    output: bool = False
    tied: frozenset[int] = field(default_factory=frozenset)
    gains: bool = False


def lay_out(steps: list, keep: set) -> int:
    """Choose the channels-last tensors among `steps` (a prepared plan's (run, ins, outs, node)
    list) and tell their kernels (`Kernel.use_channels_last`), rebinding each changed step's
    run. `keep`: values something besides the steps reads (outputs, updates, view owners),
    which stay NCHW. Returns how many tensors went channels-last."""
    kernels = [getattr(run, "__self__", None) for run, *_ in steps]
    offers: list[ChannelsLastOffer | None] = [
        k.channels_last() if k is not None and hasattr(k, "channels_last") else None for k in kernels]
    readers: dict[Any, list[tuple[int, int]]] = defaultdict(list)
    made: dict[Any, int] = {}
    for index, (*_, node) in enumerate(steps):
        for slot, value in enumerate(node.inputs):
            if value is not None:
                readers[value].append((index, slot))
        for value in node.outputs:
            if value is not None:
                made[value] = index
    candidates = set()
    for value, index in made.items():
        offer = offers[index]
        if (offer is None or not offer.output or value is not steps[index][3].outputs[0] or value in keep
                or not readers.get(value)):
            continue
        if all(offers[i] is not None and slot in offers[i].inputs for i, slot in readers[value]):
            candidates.add(value)
    chosen = _next_to_a_gain(steps, offers, candidates, readers, made)
    changed = True
    while changed:  # tied inputs and outputs: both channels-last or neither
        changed = False
        for index, (*_, node) in enumerate(steps):
            offer = offers[index]
            for slot in offer.tied if offer is not None else ():
                value, out = node.inputs[slot], node.outputs[0]
                if (value in chosen) != (out in chosen):
                    chosen.discard(value)
                    chosen.discard(out)
                    changed = True
    for index, (_, ins, outs, node) in enumerate(steps):
        inputs = frozenset(slot for slot, v in enumerate(node.inputs) if v is not None and v in chosen)
        output = bool(node.outputs) and node.outputs[0] in chosen
        if inputs or output:
            kernels[index].use_channels_last(inputs, output)
            steps[index] = (kernels[index].run, ins, outs, node)
    return len(chosen)


def _next_to_a_gain(steps: list, offers: list, candidates: set, readers: dict, made: dict) -> set:
    """The candidates worth making channels-last: those a gaining kernel writes or reads, and
    those tied to such a one through a kernel that keeps the layout (a squeeze-excite Mul
    between a depthwise convolution and the projection reading its result)."""
    def gains(index: int) -> bool:
        return offers[index] is not None and offers[index].gains

    worth = {v for v in candidates if gains(made[v]) or any(gains(i) for i, _ in readers[v])}
    pending = list(worth)
    while pending:
        value = pending.pop()
        linked = []
        producer = offers[made[value]]  # the output is tied to these inputs of its producer
        linked += [steps[made[value]][3].inputs[slot] for slot in producer.tied]
        for index, slot in readers[value]:  # a reader whose output is tied to this input
            if slot in offers[index].tied:
                linked.append(steps[index][3].outputs[0])
        for other in linked:
            if other in candidates and other not in worth:
                worth.add(other)
                pending.append(other)
    return worth

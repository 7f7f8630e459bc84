"""Padding kernels: Pad (constant, reflect, edge and wrap modes; negative pads crop) and
CenterCropPad. Any dtype.
"""

from __future__ import annotations

import numpy as np

from edgerun.runtime.kernels.attrs import float_attr, has_input, ints_attr, ints_input, normalize_axis, str_attr
from edgerun.runtime.kernels.base import Kernel, TensorSpec
from edgerun.runtime.kernels.registry import register


@register("Pad", since=1)
class Pad(Kernel):
    """Y = X padded by pads [begin_1.., end_1..] (negative: cropped) along `axes` (opset 18,
    default all): attribute `paddings` (opset 1) or `pads` (2), input 1 from opset 11 (needed
    at prepare time). mode constant (value: attribute `value`, or input 2 from 11, default 0),
    reflect, edge, or wrap (opset 19)."""

    max_inputs = 4

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x = inputs[0]
        rank = len(x.shape)
        modes = ("constant", "reflect", "edge") + (("wrap",) if self.version >= 19 else ())
        self.mode = str_attr(self, "mode", "constant")
        if self.mode not in modes:
            raise self.fail(f"mode {self.mode!r} is not one of {', '.join(modes)}")
        axes = tuple(range(rank))
        if self.version < 11:
            pads = ints_attr(self, "pads" if self.version >= 2 else "paddings")
        else:
            pads = ints_input(self, inputs, values, 1, "pads")
            if self.version >= 18 and has_input(inputs, 3):
                axes = tuple(normalize_axis(self, a, rank) for a in ints_input(self, inputs, values, 3, "axes"))
        if pads is None or len(pads) != 2 * len(axes) or len(set(axes)) != len(axes):
            raise self.fail(f"pads {pads} must hold 2 x {len(axes)} counts for axes {list(axes)}")
        widths = [(0, 0)] * rank
        for i, axis in enumerate(axes):
            widths[axis] = (pads[i], pads[i + len(axes)])
        shape = tuple(d + b + e for d, (b, e) in zip(x.shape, widths, strict=True))
        if any(d < 0 for d in shape):
            raise self.fail(f"pads {list(pads)} crop X shape {x.shape} below zero")
        self.crop = tuple(slice(max(-b, 0), d - max(-e, 0)) for d, (b, e) in zip(x.shape, widths, strict=True))
        self.widths = [(max(b, 0), max(e, 0)) for b, e in widths]
        cropped = [s.stop - s.start for s in self.crop]
        if min(cropped, default=0) < 0:
            raise self.fail(f"pads {list(pads)} crop more than X shape {x.shape} holds")
        if self.mode != "constant" and any(n == 0 and w != (0, 0) for n, w in zip(cropped, self.widths, strict=True)):
            raise self.fail(f"mode {self.mode!r} cannot pad an empty axis (X shape {x.shape})")
        self.value = float_attr(self, "value", 0.0) if self.version < 11 else None
        self.interior = tuple(slice(b, b + n) for (b, _), n in zip(self.widths, cropped, strict=True))
        self.cropped = cropped
        self.sources: list[tuple[int, np.ndarray]] | None = None  # made by the first run (see _gathers)
        return [TensorSpec(x.dtype, shape)]

    def run(self, inputs, outputs):
        x, out = inputs[0][self.crop], outputs[0]
        sources = self._gathers() if self.mode != "constant" else []
        if x.ndim == 0 or (self.mode != "constant" and not sources):  # nothing to pad
            np.copyto(out, x)
        elif self.mode != "constant":
            for k, (axis, index) in enumerate(sources):  # one gather per padded axis
                x = np.take(x, index, axis=axis, out=out if k == len(sources) - 1 else None)
        else:
            value = self.value
            if value is None:
                value = 0 if len(inputs) < 3 or inputs[2] is None or inputs[2].size == 0 else inputs[2].reshape(-1)[0]
            out[...] = value
            out[self.interior] = x


    def _gathers(self) -> list[tuple[int, np.ndarray]]:
        """reflect / edge / wrap: per padded axis, the source index of every output position
        along it. Made at the first run, not at prepare: an index as long as a padded axis
        must wait until the plan has checked the output against its memory budget."""
        if self.sources is None:
            self.sources = [(axis, _source_index(self.mode, n, b, e))
                            for axis, (n, (b, e)) in enumerate(zip(self.cropped, self.widths, strict=True)) if b or e]
        return self.sources


def _source_index(mode: str, n: int, begin: int, end: int) -> np.ndarray:
    """For an axis of n elements padded by (begin, end) in `mode`, the element each output
    position copies (as numpy.pad: reflections and wraps repeat when a pad exceeds the axis)."""
    i = np.arange(-begin, n + end)
    if mode == "edge" or n == 1:
        return np.clip(i, 0, n - 1)
    if mode == "wrap":
        return i % n
    period = i % (2 * (n - 1))  # reflect: ... 2 1 | 0 1 2 .. n-1 | n-2 n-3 ...
    return np.where(period < n, period, 2 * (n - 1) - period)


@register("CenterCropPad", since=18)
class CenterCropPad(Kernel):
    """Y = X cropped or zero-padded, centred, to the sizes of input 1 (needed at prepare
    time) along `axes` (default all); an odd difference puts the extra element at the end."""

    min_inputs = max_inputs = 2

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x = inputs[0]
        rank = len(x.shape)
        sizes = ints_input(self, inputs, values, 1, "shape")
        axes = tuple(normalize_axis(self, a, rank) for a in (ints_attr(self, "axes") or range(rank)))
        if len(sizes) != len(axes) or any(d < 0 for d in sizes):
            raise self.fail(f"shape {list(sizes)} must hold a non-negative size for each of axes {list(axes)}")
        shape = list(x.shape)
        self.source = [slice(None)] * rank
        self.target = [slice(None)] * rank
        for axis, want in zip(axes, sizes, strict=True):
            have = x.shape[axis]
            start = abs(have - want) // 2
            span = slice(start, start + min(have, want))
            (self.source if want < have else self.target)[axis] = span
            shape[axis] = want
        return [TensorSpec(x.dtype, tuple(shape))]

    def run(self, inputs, outputs):
        out = outputs[0]
        out[...] = 0
        out[tuple(self.target)] = inputs[0][tuple(self.source)]

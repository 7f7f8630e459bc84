"""Kernels that reorder elements across axes: Transpose, and DepthToSpace / SpaceToDepth
(a reshape, a transpose and a reshape). Any dtype.
"""

from __future__ import annotations

import numpy as np

from edgerun.runtime.kernels.attrs import int_attr, ints_attr, require_rank, str_attr
from edgerun.runtime.kernels.base import Kernel, TensorSpec
from edgerun.runtime.kernels.registry import register


@register("Transpose", since=1)
class Transpose(Kernel):
    """Y = X with axes permuted by `perm` (default: reversed)."""

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x = inputs[0]
        rank = len(x.shape)
        perm = ints_attr(self, "perm")
        self.perm = tuple(range(rank))[::-1] if perm is None else perm
        if sorted(self.perm) != list(range(rank)):
            raise self.fail(f"perm {self.perm} is not a permutation of the {rank} axes of X")
        return [TensorSpec(x.dtype, tuple(x.shape[p] for p in self.perm))]

    def run(self, inputs, outputs):
        np.copyto(outputs[0], inputs[0].transpose(self.perm))


@register("DepthToSpace", since=1)
class DepthToSpace(Kernel):
    """(N, C, H, W) -> (N, C / b^2, H * b, W * b) with b = `blocksize`: depth moves into
    b x b spatial blocks, in DCR order (depth, column, row) or, from opset 11, CRD."""

    inverse = False  # SpaceToDepth

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x = inputs[0]
        require_rank(self, x, 4, 4, what="input")
        b = int_attr(self, "blocksize")
        mode = str_attr(self, "mode", "DCR") if self.version >= 11 or self.inverse else "DCR"
        if b <= 0 or mode not in ("DCR", "CRD"):
            raise self.fail(f"blocksize {b} must be positive and mode {mode!r} DCR or CRD")
        n, c, h, w = x.shape
        if self.inverse:
            if h % b or w % b:
                raise self.fail(f"H and W of input shape {x.shape} must be multiples of blocksize {b}")
            self.split = (n, c, h // b, b, w // b, b)
            self.perm = (0, 3, 5, 1, 2, 4) if mode == "DCR" else (0, 1, 3, 5, 2, 4)
            out = (n, c * b * b, h // b, w // b)
        else:
            if c % (b * b):
                raise self.fail(f"C of input shape {x.shape} must be a multiple of blocksize^2 = {b * b}")
            depth = c // (b * b)
            self.split = (n, b, b, depth, h, w) if mode == "DCR" else (n, depth, b, b, h, w)
            self.perm = (0, 3, 4, 1, 5, 2) if mode == "DCR" else (0, 1, 4, 2, 5, 3)
            out = (n, depth, h * b, w * b)
        return [TensorSpec(x.dtype, out)]

    def run(self, inputs, outputs):
        blocks = inputs[0].reshape(self.split).transpose(self.perm)
        np.copyto(outputs[0], blocks.reshape(outputs[0].shape))


@register("SpaceToDepth", since=1)
class SpaceToDepth(DepthToSpace):
    """(N, C, H, W) -> (N, C * b^2, H / b, W / b): the inverse of DepthToSpace; DCR order,
    from opset 28 `mode` may be CRD."""

    inverse = True

    def prepare(self, inputs, values):
        if self.version < 28 and "mode" in self.attrs:
            raise self.fail("the mode attribute needs opset 28")
        return super().prepare(inputs, values)

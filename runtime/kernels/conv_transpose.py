"""Kernels that add column blocks back into an image, the adjoint of Conv's im2col:
ConvTranspose (honours a fused activation, runtime.kernels.fused) and Col2Im.
"""

from __future__ import annotations

import itertools

import numpy as np

from edgerun.runtime.kernels.attrs import (
    FLOAT_KINDS,
    int_attr,
    ints_attr,
    ints_input,
    prod,
    require_kind,
    require_rank,
    str_attr,
)
from edgerun.runtime.kernels.base import Kernel, TensorSpec
from edgerun.runtime.kernels.fused import apply_activation, check_channels, fused_activation
from edgerun.runtime.kernels.registry import register
from edgerun.runtime.kernels.spatial import AUTO_PADS, MAX_TAPS, MIN_PADDED_LIMIT, PADDING_FACTOR, Window, scratch


@register("ConvTranspose", since=1)
class ConvTranspose(Kernel):
    """Y = the transpose (gradient) of a convolution, + B. X (N, C, *in), W (C, M/group, *kernel),
    B (M,) optional; Y (N, M, *out). Honours a fused activation (runtime.kernels.fused).

    Every input position i scatters X[i] * W[k] to the full output position i * stride +
    k * dilation; the full extent is (in - 1) * stride + (kernel - 1) * dilation + 1. Y is that
    cropped by `pads` (begin, end) and extended by `output_padding` (zeros past the full extent).
    With `output_shape` (or auto_pad SAME_*, which targets in * stride), pads are derived from it
    as the spec gives: total = full + output_padding - output_shape, begin = total // 2 for
    SAME_UPPER, else total - total // 2 (floor division, so a total of -1 extends Y at the end,
    as the ONNX reference does; onnxruntime truncates instead and extends at the start).
    """

    min_inputs, max_inputs = 2, 3

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x, w = inputs[0], inputs[1]
        bias = inputs[2] if len(inputs) > 2 else None
        require_kind(self, x, FLOAT_KINDS, "X")
        require_rank(self, x, 3, what="X (N, C, *spatial)")
        group = int_attr(self, "group", 1)
        if len(w.shape) != len(x.shape) or group < 1 or x.shape[1] % group or w.shape[0] != x.shape[1]:
            raise self.fail(f"W shape {w.shape} does not fit X shape {x.shape} with group {group}")
        m = w.shape[1] * group
        for name, spec in (("W", w), ("B", bias)):
            if spec is not None and spec.dtype != x.dtype:
                raise self.fail(f"{name} dtype {spec.dtype} differs from X dtype {x.dtype}")
        if bias is not None and bias.shape != (m,):
            raise self.fail(f"B shape {bias.shape} must be ({m},)")
        self.group, self.has_bias = group, bias is not None
        in_shape, kernel = x.shape[2:], w.shape[2:]
        self.window, out_shape, self.begin = self._geometry(in_shape, kernel)
        self.taps = self.window.taps()
        self.activation = fused_activation(self.attrs, f"node {self.name!r} (ConvTranspose)")
        check_channels(self.activation, m, f"node {self.name!r} (ConvTranspose)")
        return [TensorSpec(x.dtype, (x.shape[0], m) + out_shape)]

    def _geometry(self, in_shape, kernel) -> tuple[Window, tuple[int, ...], tuple[int, ...]]:
        """(the scatter window over the full output, Y's spatial shape, crop start per axis)."""
        n = len(in_shape)
        strides = ints_attr(self, "strides") or (1,) * n
        dilations = ints_attr(self, "dilations") or (1,) * n
        out_pad = ints_attr(self, "output_padding") or (0,) * n
        kshape = ints_attr(self, "kernel_shape") or kernel
        if tuple(kshape) != tuple(kernel):
            raise self.fail(f"kernel_shape {kshape} does not match W's {kernel}")
        if any(len(v) != n for v in (strides, dilations)) or len(out_pad) not in (n, 2 * n):
            raise self.fail(f"strides {strides}, dilations {dilations}, output_padding {out_pad}: need {n} each")
        if min(strides + dilations) < 1 or min(out_pad) < 0:
            raise self.fail(f"strides {strides} and dilations {dilations} must be >= 1, output_padding >= 0")
        full = tuple((i - 1) * s + (k - 1) * d + 1
                     for i, s, k, d in zip(in_shape, strides, kernel, dilations, strict=True))
        natural = tuple(f + p for f, p in zip(full, out_pad[:n], strict=True))
        auto_pad = str_attr(self, "auto_pad", "NOTSET")
        if auto_pad not in AUTO_PADS:
            raise self.fail(f"auto_pad {auto_pad!r} is not one of {', '.join(AUTO_PADS)}")
        target = ints_attr(self, "output_shape")
        if target is not None and len(target) == n + 2:
            target = target[2:]
        if target is not None and len(target) != n:
            raise self.fail(f"output_shape {target} invalid: need {n} values")
        pads = ints_attr(self, "pads")
        same = auto_pad in ("SAME_UPPER", "SAME_LOWER") and pads is None
        if same or target is not None:
            target = target or tuple(i * s for i, s in zip(in_shape, strides, strict=True))
            total = [nat - t for nat, t in zip(natural, target, strict=True)]  # < 0: Y extends past the full extent
            begin = tuple(t // 2 if auto_pad == "SAME_UPPER" else t - t // 2 for t in total)
        else:
            pads = pads or (0,) * (2 * n)
            if len(pads) != 2 * n or min(pads) < 0:
                raise self.fail(f"pads {pads} invalid: need {2 * n} values >= 0")
            begin = pads[:n]
            target = tuple(nat - b - e for nat, b, e in zip(natural, pads[:n], pads[n:], strict=True))
        limit = max(MIN_PADDED_LIMIT, PADDING_FACTOR * prod(in_shape) * prod(kernel))
        if min(target) < 1 or max(prod(target), prod(full)) > limit or prod(kernel) > MAX_TAPS:
            raise self.fail(f"output shape {tuple(target)} (full extent {full}) is invalid or too large "
                            f"for input {in_shape} and kernel {kernel}")
        window = Window(full, tuple(kernel), tuple(strides), tuple(dilations), (0,) * n, (0,) * n, tuple(in_shape))
        return window, tuple(target), tuple(begin)

    def run(self, inputs, outputs):
        x, w, out = inputs[0], inputs[1], outputs[0]
        (n, c), g = x.shape[:2], self.group
        k = len(self.taps)
        weights = w.reshape(g, c // g, prod(w.shape[1:])).swapaxes(1, 2)  # (G, M/G * K, C/G)
        cols = np.matmul(weights, x.reshape(n, g, c // g, prod(x.shape[2:])))  # (N, G, M/G * K, positions)
        cols = cols.reshape((n, out.shape[1], k) + x.shape[2:])
        full = scratch("convt.full", (n, out.shape[1]) + self.window.in_shape, x.dtype)
        full.fill(0)
        for i, tap in enumerate(self.taps):
            view = full[tap]
            np.add(view, cols[:, :, i], out=view)
        out.fill(0)
        src, dst = [Ellipsis], [Ellipsis]
        for b, size, f in zip(self.begin, out.shape[2:], self.window.in_shape, strict=True):
            lo, hi = max(0, b), min(f, b + size)  # the full positions Y keeps
            src.append(slice(lo, max(lo, hi)))
            dst.append(slice(lo - b, max(lo, hi) - b))
        np.copyto(out[tuple(dst)], full[tuple(src)])
        if self.has_bias:
            b = inputs[2]
            np.add(out, b.reshape(b.shape + (1,) * (out.ndim - 2)), out=out)
        apply_activation(out, self.activation)


@register("Col2Im", since=18)
class Col2Im(Kernel):
    """(N, C * prod(block), L) columns -> (N, C, *image_shape): each column is a block
    added back at its sliding position (the inverse of im2col; overlaps sum). image_shape
    and block_shape (inputs 1, 2) are needed at prepare time; strides, dilations and pads
    as in Conv."""

    min_inputs = max_inputs = 3

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x = inputs[0]
        image = ints_input(self, inputs, values, 1, "image_shape")
        block = ints_input(self, inputs, values, 2, "block_shape")
        d = len(image)
        strides = ints_attr(self, "strides") or (1,) * d
        dilations = ints_attr(self, "dilations") or (1,) * d
        pads = ints_attr(self, "pads") or (0,) * (2 * d)
        if len(block) != d or len(strides) != d or len(dilations) != d or len(pads) != 2 * d or len(x.shape) != 3:
            raise self.fail(f"input shape {x.shape}, image_shape {list(image)}, block_shape {list(block)}, "
                            f"strides, dilations and pads must agree on {d} spatial axes")
        if min((*block, *strides, *dilations)) <= 0 or min(pads) < 0:
            raise self.fail("block_shape, strides and dilations must be positive, pads non-negative")
        padded = [n + pads[i] + pads[i + d] for i, n in enumerate(image)]
        geometry = list(zip(padded, dilations, block, strides, strict=True))
        counts = [(p - dl * (k - 1) - 1) // s + 1 for p, dl, k, s in geometry]
        taps = prod(block)
        if x.shape[1] % taps or prod(counts) != x.shape[2] or min(counts) <= 0:
            raise self.fail(f"input shape {x.shape} does not fit {taps} taps per channel and {counts} blocks")
        n, c = x.shape[0], x.shape[1] // taps
        self.columns = (n, c, *block, *counts)
        self.padded = (n, c, *padded)
        self.places = [  # where each block tap lands in the padded image, for every block position
            (Ellipsis, *(slice(o * dl, o * dl + (m - 1) * s + 1, s)
                         for o, dl, m, s in zip(off, dilations, counts, strides, strict=True)))
            for off in itertools.product(*(range(k) for k in block))
        ]
        self.crop = (Ellipsis, *(slice(pads[i], pads[i] + image[i]) for i in range(d)))
        return [TensorSpec(x.dtype, (n, c, *image))]

    def run(self, inputs, outputs):
        d = len(self.places[0]) - 1
        columns = inputs[0].reshape(self.columns)
        taps = columns.reshape(self.columns[:2] + (-1,) + self.columns[2 + d :])
        canvas = np.zeros(self.padded, outputs[0].dtype)
        for i, place in enumerate(self.places):
            canvas[place] += taps[:, :, i]
        np.copyto(outputs[0], canvas[self.crop])

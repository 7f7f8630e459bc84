"""Gradient kernels (edgerun domain) of GlobalMaxPool, Resize and ConvTranspose.

Each reuses its forward kernel's own geometry: ResizeGrad prepares a Resize kernel and scatters
dY back through the same per-axis sampling (resize.AxisSampling: indices and weights) in reverse
order; ConvTransposeGrad prepares a ConvTranspose kernel for the output geometry and then runs a
Conv (dX) and a ConvGrad (dW) kernel, since ConvTranspose is the adjoint of a Conv over its
uncropped output.
"""

from __future__ import annotations

import numpy as np

from edgerun.runtime.kernels.attrs import FLOAT_KINDS, int_attr, prod, require_kind
from edgerun.runtime.kernels.base import Kernel, TensorSpec
from edgerun.runtime.kernels.conv import Conv, ConvGrad
from edgerun.runtime.kernels.conv_transpose import ConvTranspose
from edgerun.runtime.kernels.global_pool import _GlobalPool
from edgerun.runtime.kernels.registry import register
from edgerun.runtime.kernels.resize import AxisSampling, Resize
from edgerun.runtime.kernels.spatial import require_output_grad, scratch


@register("GlobalMaxPoolGrad", since=1, domain="edgerun")
class GlobalMaxPoolGrad(_GlobalPool):
    """dX of Y = GlobalMaxPool(X) from (dY, X): each (sample, channel) plane's dY goes to one
    position, its first maximum in row-major order over the spatial axes (np.argmax's pick;
    MaxPoolGrad and PyTorch's max pooling choose the same), and every other position gets 0."""

    min_inputs = max_inputs = 2

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        dy, x = inputs
        require_output_grad(self, dy, x, self._output(x).shape)
        return [x]

    def run(self, inputs, outputs):
        dy, x = inputs
        planes = prod(x.shape[:2])
        winners = np.argmax(x.reshape(planes, -1), axis=1)
        dx = outputs[0].reshape(planes, -1, copy=False)
        dx.fill(0)
        dx[np.arange(planes), winners] = dy.reshape(planes)


@register("ResizeGrad", since=1, domain="edgerun")
class ResizeGrad(Kernel):
    """dX of Y = Resize(X, ...) from (dY, X, *the Resize node's other inputs); the node carries
    the forward Resize's attributes and its opset as `resize_version` (required).

    Resize is linear in X: per resized axis, output i is sum_k weights[i, k] * X[index[i, k]]
    (resize.axis_sampling). Run applies the transposes in reverse axis order: dY[i] * weights[i, k]
    is added to position index[i, k], positions tf_crop_and_resize extrapolates take none, and
    mode nearest sends each output's gradient to the one input it copies. roi, scales and sizes
    are needed at prepare time, as for Resize; they take no gradient. Computed in float64."""

    min_inputs, max_inputs = 2, 5

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        version = int_attr(self, "resize_version", 0)
        if version < 10:
            raise self.fail(f"attribute 'resize_version' must be the forward Resize's opset (>= 10), got {version}")
        attrs = {key: value for key, value in self.attrs.items() if key != "resize_version"}
        forward = Resize("Resize", self.name, attrs, version)
        dy, x = inputs[:2]
        require_kind(self, x, FLOAT_KINDS, "X")
        (out,) = forward.prepare(inputs[1:], values[1:])
        require_output_grad(self, dy, x, out.shape)
        self.plans, self.nearest = forward.plans, forward.nearest
        return [x]

    def run(self, inputs, outputs):
        grad = inputs[0].astype(np.float64)
        for plan in reversed(self.plans):
            grad = scatter_axis(grad, plan, inputs[1].shape[plan.axis], self.nearest)
        np.copyto(outputs[0], grad, casting="unsafe")


def scatter_axis(grad: np.ndarray, plan: AxisSampling, size: int, nearest: bool) -> np.ndarray:
    """The transpose of resampling one axis: `grad` (its axis of the output's length) scattered
    onto an axis of `size` through the plan's indices and weights."""
    moved = np.moveaxis(grad, plan.axis, 0)
    if plan.outside is not None:
        moved = np.where(plan.outside.reshape((-1,) + (1,) * (moved.ndim - 1)), 0.0, moved)
    index, weights = plan.index, plan.weights
    if nearest:  # the forward copies the tap of weight 1
        rows = np.arange(len(index))
        pick = np.argmax(weights, axis=1)
        index, weights = index[rows, pick][:, None], weights[rows, pick][:, None]
    result = np.zeros((size,) + moved.shape[1:])
    per_output = (-1,) + (1,) * (moved.ndim - 1)
    for k in range(index.shape[1]):
        np.add.at(result, index[:, k], moved * weights[:, k].reshape(per_output))
    return np.moveaxis(result, 0, plan.axis)


@register("ConvTransposeGrad", since=1, domain="edgerun")
class ConvTransposeGrad(Kernel):
    """(dX, dW, dB) of Y = ConvTranspose(X, W, B) from (dY, X, W); the node carries the forward
    ConvTranspose's attributes (pads, output_padding, output_shape, auto_pad, ...).

    Let Z (N, M, *full) be Y before cropping: ConvTranspose is the adjoint of Z -> Conv(Z, W)
    (same strides, dilations and group, no padding), whose output has X's shape. So with dZ the
    part of dY that falls inside Z (zeros where the crop removed positions; output_padding and
    output_shape positions past Z take none): dX = Conv(dZ, W) and dW is the weight gradient
    of that Conv for upstream X, ConvGrad(X, dZ, W)'s dW. dB = dY summed over all but channels.
    Attribute compute_dx (0 or 1, default 1): with 0 there is no dX output (dW[, dB]). dB is
    skipped when the node has one output fewer.
    """

    min_inputs = max_inputs = 3

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        dy, x, w = inputs
        self.compute_dx = int_attr(self, "compute_dx", 1)
        if self.compute_dx not in (0, 1):
            raise self.fail(f"attribute 'compute_dx' must be 0 or 1, got {self.compute_dx}")
        attrs = {key: value for key, value in self.attrs.items() if key != "compute_dx"}
        forward = ConvTranspose("ConvTranspose", self.name, attrs, self.version)
        (out,) = forward.prepare([x, w], [None, None])
        if forward.activation is not None:
            raise self.fail("a ConvTranspose with a fused activation has no gradient kernel")
        require_output_grad(self, dy, x, out.shape)
        self.full = forward.window.in_shape
        self.crop = _crop(forward.begin, out.shape[2:], self.full)
        z = TensorSpec(x.dtype, out.shape[:2] + self.full)
        conv_attrs = {key: attrs[key] for key in ("strides", "dilations", "group") if key in attrs}
        self.conv = Conv("Conv", self.name, conv_attrs, 11)
        self.conv.prepare([z, w], [None, None])
        self.weight_grad = ConvGrad("ConvGrad", self.name, {**conv_attrs, "compute_dx": 0}, 1)
        self.weight_grad.prepare([x, z, w], [None, None, None])
        specs = [x, w, TensorSpec(x.dtype, (out.shape[1],))]
        return specs if self.compute_dx else specs[1:]

    def run(self, inputs, outputs):
        dy, x, w = inputs
        dx, dw, *db = outputs if self.compute_dx else [None, *outputs]
        dz = scratch("convtgrad.dz", dy.shape[:2] + self.full, dy.dtype)
        dz.fill(0)
        z_part, y_part = self.crop
        np.copyto(dz[z_part], dy[y_part])
        if dx is not None:
            self.conv.run([dz, w], [dx])
        self.weight_grad.run([x, dz, w], [dw])
        for out in db:
            np.sum(dy, axis=(0, *range(2, dy.ndim)), out=out)


def _crop(begin: tuple[int, ...], out: tuple[int, ...], full: tuple[int, ...]) -> tuple[tuple, tuple]:
    """(the region of Z, the region of Y) that hold the same positions: Y position p is Z
    position p + begin (begin < 0 or a Y past Z's end: Y extends beyond Z there)."""
    z_part, y_part = [Ellipsis], [Ellipsis]
    for b, size, f in zip(begin, out, full, strict=True):
        lo, hi = max(0, b), max(max(0, b), min(f, b + size))
        z_part.append(slice(lo, hi))
        y_part.append(slice(lo - b, hi - b))
    return tuple(z_part), tuple(y_part)

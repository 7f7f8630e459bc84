"""Kernels that normalize along an axis: Softmax and LogSoftmax, each followed by its gradient
kernel (edgerun domain), and Hardmax.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgerun.runtime.kernels.attrs import (
    FLOAT_KINDS,
    flag_attr,
    int_attr,
    normalize_axis,
    prod,
    require_kind,
    require_same_dtype,
)
from edgerun.runtime.kernels.base import Kernel
from edgerun.runtime.kernels.registry import register


def softmax_view(shape: tuple[int, ...], axis: int, flatten: bool) -> tuple[tuple[int, ...], int]:
    """The shape a softmax-like op works on and the axis it normalizes: the 2-D view
    (prod(shape[:axis]), prod(shape[axis:])) and 1 when `flatten` (before opset 13), else
    `shape` and `axis` itself (axis already in [0, rank))."""
    if flatten:
        return (prod(shape[:axis]), prod(shape[axis:])), 1
    return shape, axis


def softmax(x: np.ndarray, out: np.ndarray, axis: int) -> None:
    """out = exp(x - max) / sum(exp(x - max)) along `axis`; out may not alias x."""
    if out.size == 0:
        return
    np.subtract(x, np.max(x, axis=axis, keepdims=True), out=out)
    np.exp(out, out=out)
    np.divide(out, np.sum(out, axis=axis, keepdims=True), out=out)


def log_softmax(x: np.ndarray, out: np.ndarray, axis: int) -> None:
    """out = (x - max) - log(sum(exp(x - max))) along `axis`; out may not alias x."""
    if out.size == 0:
        return
    np.subtract(x, np.max(x, axis=axis, keepdims=True), out=out)
    np.subtract(out, np.log(np.sum(np.exp(out), axis=axis, keepdims=True)), out=out)


@dataclass(frozen=True)
class SoftmaxParams:
    """What Softmax's (and LogSoftmax's) prepare works out, read by their run and the numba fast
    path (devices/numba_kernels.py)."""

    axis: int  # in [0, rank)
    flatten: bool  # the opset < 13 form: normalize over everything from `axis` on
    view: tuple[int, ...]  # the shape run computes in (2-D when flatten)
    view_axis: int  # the axis of `view` it normalizes
    rows: tuple[int, int]  # X as (prod(shape[:axis]), prod(shape[axis:]))


@register("Softmax", since=1)
class Softmax(Kernel):
    """Before opset 13: X viewed as 2-D (prod(shape[:axis]), prod(shape[axis:])), softmax over
    each row; axis defaults to 1. ONNX allows a negative axis from opset 11; older models
    (PyTorch exports) use one too, so it is accepted at every version, counting from the back."""

    default_axis = 1
    flatten = True  # the opset < 13 2-D view
    compute = staticmethod(softmax)

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x = inputs[0]
        require_kind(self, x, FLOAT_KINDS, "input")
        axis = normalize_axis(self, int_attr(self, "axis", self.default_axis), len(x.shape))
        view, view_axis = softmax_view(x.shape, axis, self.flatten)
        rows = (prod(x.shape[:axis]), prod(x.shape[axis:]))
        self.params = SoftmaxParams(axis, self.flatten, view, view_axis, rows)
        return [x]

    def run(self, inputs, outputs):
        p = self.params
        out = outputs[0].reshape(p.view, copy=False)
        self.compute(inputs[0].reshape(p.view), out, p.view_axis)


@register("Softmax", since=13)
class Softmax13(Softmax):
    """From opset 13: softmax along one axis (default -1), other axes independent."""

    default_axis = -1
    flatten = False


@register("LogSoftmax", since=1)
class LogSoftmax(Softmax):
    """log(Softmax(X)), computed stably; the same axis semantics as Softmax of each version."""

    compute = staticmethod(log_softmax)


@register("LogSoftmax", since=13)
class LogSoftmax13(LogSoftmax):
    default_axis = -1
    flatten = False


class _SoftmaxGrad(Kernel):
    """(dY, Y; axis=-1, flatten=0) -> dX for a softmax-like forward with output Y. `axis` may be
    negative; flatten=1 gives the opset < 13 semantics (the 2-D view of `softmax_view`), so a rule
    passes the forward node's axis (default 1) with flatten=1 below opset 13, else axis (default -1)
    with flatten=0. ModelError unless dY and Y are floats of the same shape and dtype."""

    min_inputs = max_inputs = 2

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        dy, y = inputs
        require_kind(self, dy, FLOAT_KINDS, "dY")
        require_same_dtype(self, [dy, y], "dY and Y")
        if dy.shape != y.shape:
            raise self.fail(f"dY shape {dy.shape} differs from Y shape {y.shape}")
        axis = normalize_axis(self, int_attr(self, "axis", -1), len(y.shape))
        self.view, self.axis = softmax_view(y.shape, axis, flag_attr(self, "flatten"))
        return [dy]


@register("SoftmaxGrad", since=1, domain="edgerun")
class SoftmaxGrad(_SoftmaxGrad):
    """dX = Y * (dY - sum(dY * Y)), the sum along the softmax axis."""

    def run(self, inputs, outputs):
        dy, y = inputs[0].reshape(self.view), inputs[1].reshape(self.view)
        out = outputs[0].reshape(self.view, copy=False)
        np.multiply(dy, y, out=out)
        total = np.sum(out, axis=self.axis, keepdims=True)
        np.subtract(dy, total, out=out)
        np.multiply(out, y, out=out)


@register("LogSoftmaxGrad", since=1, domain="edgerun")
class LogSoftmaxGrad(_SoftmaxGrad):
    """dX = dY - exp(Y) * sum(dY), the sum along the softmax axis; Y is the LogSoftmax output."""

    def run(self, inputs, outputs):
        dy, y = inputs[0].reshape(self.view), inputs[1].reshape(self.view)
        out = outputs[0].reshape(self.view, copy=False)
        np.exp(y, out=out)
        np.multiply(out, np.sum(dy, axis=self.axis, keepdims=True), out=out)
        np.subtract(dy, out, out=out)


@register("Hardmax", since=1)
class Hardmax(Kernel):
    """Y = 1 at the first maximum along `axis`, else 0. Before opset 13 the input is viewed as a
    matrix [prod(dims before axis), prod(dims from axis)] (axis default 1) and the maximum taken
    per row; from 13 the maximum is along `axis` alone (default -1)."""

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x = inputs[0]
        require_kind(self, x, FLOAT_KINDS, "input 0")
        rank = len(x.shape)
        if self.version >= 13:
            self.axis = normalize_axis(self, int_attr(self, "axis", -1), rank)
            self.view = x.shape
        else:
            axis = normalize_axis(self, int_attr(self, "axis", 1), rank, negative=self.version >= 11)
            self.view = (prod(x.shape[:axis]), prod(x.shape[axis:]))
            self.axis = 1
        return [x]

    def run(self, inputs, outputs):
        x = inputs[0].reshape(self.view)
        out = outputs[0].reshape(self.view)
        out.fill(0)
        if out.size:
            first = np.expand_dims(np.argmax(x, axis=self.axis), self.axis)
            np.put_along_axis(out, first, 1, axis=self.axis)

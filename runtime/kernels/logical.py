"""Logical kernels: And, Or, Xor and Not on bools, the comparisons (Equal, Greater, Less,
GreaterOrEqual, LessOrEqual; bool results; Equal compares strings too) and Where, which
selects by a bool condition. Binary ones broadcast (numpy/ONNX rules).
"""

from __future__ import annotations

import numpy as np

from edgerun.runtime.kernels.attrs import NUMERIC_KINDS, require_kind, require_same_dtype
from edgerun.runtime.kernels.base import Kernel, TensorSpec
from edgerun.runtime.kernels.elementwise import Binary, Unary, broadcast_shape
from edgerun.runtime.kernels.registry import register


class _Logical(Binary):
    """Bool results; inputs of one dtype, kind in `kinds`."""

    kinds = "b"

    def out_dtype(self, a, b):
        return np.dtype(np.bool_)


@register("And", since=1)
class And(_Logical):
    ufunc = np.logical_and


@register("Or", since=1)
class Or(_Logical):
    ufunc = np.logical_or


@register("Xor", since=1)
class Xor(_Logical):
    ufunc = np.logical_xor


@register("Not", since=1)
class Not(Unary):
    kinds = "b"

    def fn(self, x, out):
        np.logical_not(x, out=out)


@register("Equal", since=1)
class Equal(_Logical):
    """Also compares string tensors (opset 19 on; object arrays of str), element by element."""

    kinds = NUMERIC_KINDS + "b" + "O"
    ufunc = np.equal


@register("Greater", since=1)
class Greater(_Logical):
    kinds = NUMERIC_KINDS
    ufunc = np.greater


@register("Less", since=1)
class Less(_Logical):
    kinds = NUMERIC_KINDS
    ufunc = np.less


@register("GreaterOrEqual", since=12)
class GreaterOrEqual(_Logical):
    kinds = NUMERIC_KINDS
    ufunc = np.greater_equal


@register("LessOrEqual", since=12)
class LessOrEqual(_Logical):
    kinds = NUMERIC_KINDS
    ufunc = np.less_equal


@register("Where", since=9)
class Where(Kernel):
    """(Condition, X, Y) -> X where Condition else Y, all three broadcast; X and Y share a dtype."""

    min_inputs = max_inputs = 3

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        cond, x, y = inputs
        require_kind(self, cond, "b", "condition")
        require_same_dtype(self, [x, y], "X and Y")
        return [TensorSpec(x.dtype, broadcast_shape(self, [cond.shape, x.shape, y.shape]))]

    def run(self, inputs, outputs):
        cond, x, y = inputs
        np.copyto(outputs[0], y)
        np.copyto(outputs[0], x, where=cond)

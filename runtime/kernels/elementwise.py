"""The shared machinery of elementwise kernels: the `Unary` and `Binary` bases and numpy/ONNX
broadcasting (`broadcast_shape`, `check_broadcasts_to`, and `sum_to`, its gradient).

It registers no op. The ops are grouped by family: unary_math.py (Abs, Exp, Sin, ...),
activations.py (Relu, Sigmoid, ...), arithmetic.py (Add, Mul, Pow, Sum, ...), logical.py
(And, Equal, Where, ...) and bitwise.py.
"""

from __future__ import annotations

import numpy as np

from edgerun.runtime.kernels.attrs import FLOAT_KINDS, NUMERIC_KINDS, flag_attr, int_attr, normalize_axis, require_kind
from edgerun.runtime.kernels.base import Kernel, TensorSpec


class Unary(Kernel):
    """Y = fn(X): one input whose dtype kind is in `kinds`, one output of its shape and dtype.
    Subclasses override `fn(x, out)`, which runs with numpy's floating-point warnings off
    (domain errors give nan/inf as in IEEE), or `run` itself."""

    kinds: str = FLOAT_KINDS

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        require_kind(self, inputs[0], self.kinds, "input 0")
        return [inputs[0]]

    def run(self, inputs, outputs):
        with np.errstate(all="ignore"):
            self.fn(inputs[0], outputs[0])

    def fn(self, x: np.ndarray, out: np.ndarray) -> None:
        raise NotImplementedError


class Binary(Kernel):
    """(A, B) -> C: A's dtype kind in `kinds`, B of A's dtype, numpy broadcasting from opset
    `legacy_until` on. Before it (the opset 1/6 forms) B is broadcast onto A only when attribute
    `broadcast` is 1, aligned with A's dimension `axis` (default: A's trailing dimensions), and C
    has A's shape; with `broadcast` 0 the shapes must be equal."""

    min_inputs = max_inputs = 2
    kinds: str = NUMERIC_KINDS
    legacy_until: int = 7
    ufunc: np.ufunc

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        a, b = inputs
        self.check_dtypes(a, b)
        return [TensorSpec(self.out_dtype(a, b), self.out_shape(a.shape, b.shape))]

    def check_dtypes(self, a: TensorSpec, b: TensorSpec) -> None:
        if a.dtype != b.dtype:
            raise self.fail(f"input dtypes differ: {a.dtype} and {b.dtype}")
        require_kind(self, a, self.kinds, "input 0")

    def out_dtype(self, a: TensorSpec, b: TensorSpec) -> np.dtype:
        return a.dtype

    def out_shape(self, a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
        self.b_shape: tuple[int, ...] | None = None  # B's shape aligned to A's (legacy form)
        if self.version >= self.legacy_until:
            return broadcast_shape(self, [a, b])
        if not flag_attr(self, "broadcast"):
            if a != b:
                raise self.fail(f"shapes {a} and {b} differ and attribute 'broadcast' is 0")
            return a
        aligned = b
        if self.attr("axis") is not None:
            axis = normalize_axis(self, int_attr(self, "axis"), len(a))
            if axis + len(b) > len(a):
                raise self.fail(f"B shape {b} does not fit A shape {a} from axis {axis}")
            aligned = b + (1,) * (len(a) - axis - len(b))
        check_broadcasts_to(self, aligned, a, "B")
        self.b_shape = aligned
        return a

    def operands(self, inputs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        a, b = inputs
        return a, b if self.b_shape is None else b.reshape(self.b_shape)

    def run(self, inputs, outputs):
        a, b = self.operands(inputs)
        self.ufunc(a, b, out=outputs[0])


def broadcast_shape(kernel: Kernel, shapes: list[tuple[int, ...]]) -> tuple[int, ...]:
    """numpy/ONNX multidirectional broadcasting; ModelError naming the node if impossible."""
    try:
        return tuple(np.broadcast_shapes(*shapes))
    except ValueError:
        raise kernel.fail(f"shapes {', '.join(map(str, shapes))} do not broadcast") from None


def check_broadcasts_to(kernel: Kernel, shape: tuple[int, ...], target: tuple[int, ...], what: str) -> None:
    """ModelError unless `shape` broadcasts to exactly `target` (numpy rules, one direction)."""
    trailing = zip(shape[::-1], target[::-1], strict=False)
    if len(shape) > len(target) or any(d not in (1, t) for d, t in trailing):
        raise kernel.fail(f"{what} shape {shape} does not broadcast to {target}")


def sum_to(x: np.ndarray, out: np.ndarray) -> None:
    """out = x summed over the axes along which out's shape broadcasts to x's: x's extra leading
    axes and the axes where out has 1 and x has not (the caller checks that it broadcasts)."""
    lead = x.ndim - out.ndim
    axes = tuple(range(lead)) + tuple(
        lead + i for i, d in enumerate(out.shape) if d == 1 and x.shape[lead + i] != 1
    )
    if not axes:
        np.copyto(out, x)
        return
    np.sum(x, axis=axes, keepdims=True, out=out.reshape((1,) * lead + out.shape, copy=False))

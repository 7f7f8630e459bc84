"""Elementwise kernels: unary math/activations and broadcasting binary ops."""

from __future__ import annotations

import numpy as np

from runtime.kernels.base import Kernel, TensorSpec
from runtime.kernels.registry import register


@register("Relu", since=6)
class Relu(Kernel):
    def prepare(self, inputs, values):
        self.check_arity(inputs)
        return [inputs[0]]

    def run(self, inputs, outputs):
        np.maximum(inputs[0], 0, out=outputs[0])


def broadcast_shape(kernel: Kernel, shapes: list[tuple[int, ...]]) -> tuple[int, ...]:
    """numpy/ONNX multidirectional broadcasting; ModelError naming the node if impossible."""
    try:
        return tuple(np.broadcast_shapes(*shapes))
    except ValueError:
        raise kernel.fail(f"shapes {', '.join(map(str, shapes))} do not broadcast") from None


class _Binary(Kernel):
    min_inputs = max_inputs = 2
    ufunc: np.ufunc

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        a, b = inputs
        if a.dtype != b.dtype:
            raise self.fail(f"input dtypes differ: {a.dtype} and {b.dtype}")
        return [TensorSpec(a.dtype, broadcast_shape(self, [a.shape, b.shape]))]

    def run(self, inputs, outputs):
        self.ufunc(inputs[0], inputs[1], out=outputs[0])


@register("Add", since=7)
class Add(_Binary):
    ufunc = np.add

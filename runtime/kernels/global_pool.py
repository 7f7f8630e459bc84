"""Global pooling kernels, one value per (sample, channel) plane of (N, C, *spatial):
GlobalAveragePool followed by its gradient kernel (edgerun domain), GlobalMaxPool and
GlobalLpPool.
"""

from __future__ import annotations

import numpy as np

from edgerun.runtime.kernels.attrs import FLOAT_KINDS, prod, require_kind, require_rank
from edgerun.runtime.kernels.base import Kernel, TensorSpec
from edgerun.runtime.kernels.pool import p_attr
from edgerun.runtime.kernels.registry import register
from edgerun.runtime.kernels.spatial import require_output_grad


class _GlobalPool(Kernel):
    def prepare(self, inputs, values):
        self.check_arity(inputs)
        return [self._output(inputs[0])]

    def _output(self, x: TensorSpec) -> TensorSpec:
        require_kind(self, x, FLOAT_KINDS, "X")
        require_rank(self, x, 3, what="X (N, C, *spatial)")
        if 0 in x.shape[2:]:
            raise self.fail(f"X shape {x.shape} has an empty spatial axis")
        self.axes = tuple(range(2, len(x.shape)))
        return TensorSpec(x.dtype, x.shape[:2] + (1,) * len(self.axes))


@register("GlobalAveragePool", since=1)
class GlobalAveragePool(_GlobalPool):
    def run(self, inputs, outputs):
        np.mean(inputs[0], axis=self.axes, keepdims=True, out=outputs[0])


@register("GlobalAveragePoolGrad", since=1, domain="edgerun")
class GlobalAveragePoolGrad(_GlobalPool):
    """dX of Y = GlobalAveragePool(X) from (dY, X): dY / (spatial size), broadcast over space."""

    min_inputs = max_inputs = 2

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        dy, x = inputs
        require_output_grad(self, dy, x, self._output(x).shape)
        self.count = prod(x.shape[2:])
        return [x]

    def run(self, inputs, outputs):
        np.divide(inputs[0], self.count, out=outputs[0])


@register("GlobalMaxPool", since=1)
class GlobalMaxPool(_GlobalPool):
    def run(self, inputs, outputs):
        np.max(inputs[0], axis=self.axes, keepdims=True, out=outputs[0])


@register("GlobalLpPool", since=1)
class GlobalLpPool(_GlobalPool):
    """Y = (sum over all spatial positions of |X|^p)^(1/p), p default 2."""

    def prepare(self, inputs, values):
        self.p = p_attr(self)
        return super().prepare(inputs, values)

    def run(self, inputs, outputs):
        total = np.sum(np.abs(inputs[0].astype(np.float64)) ** self.p, axis=self.axes, keepdims=True)
        np.copyto(outputs[0], total ** (1 / self.p), casting="unsafe")

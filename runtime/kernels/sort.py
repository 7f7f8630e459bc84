"""Sorting kernels: TopK (the k largest or smallest along an axis, with their indices) and
Unique (sorted or first-occurrence unique values, with indices and counts).
"""

from __future__ import annotations

import numpy as np

from edgerun.runtime.kernels.attrs import NUMERIC_KINDS, flag_attr, int_attr, int_list, normalize_axis, require_kind
from edgerun.runtime.kernels.base import Kernel, TensorSpec
from edgerun.runtime.kernels.registry import register


@register("TopK", since=1)
class TopK(Kernel):
    """(X[, K]) -> (Values, Indices int64): the k largest (largest=1, default) or smallest
    elements along `axis` (default -1), best first, equal values in index order. k is attribute
    `k` in opset 1 and input K (one int64) from opset 10; `largest` and `sorted` from opset 11."""

    def prepare(self, inputs, values):
        self.min_inputs = self.max_inputs = 1 if self.version < 10 else 2
        self.check_arity(inputs)
        x = inputs[0]
        require_kind(self, x, NUMERIC_KINDS, "X")
        if self.version < 10:
            k = int_attr(self, "k")
        else:
            ks = int_list(self, self.value_of(values, 1), "K")
            if len(ks) != 1:
                raise self.fail(f"K: expected one value, got {list(ks)}")
            k = ks[0]
        self.axis = normalize_axis(self, int_attr(self, "axis", -1), len(x.shape))
        self.largest = flag_attr(self, "largest", 1)
        if not 0 <= k <= x.shape[self.axis]:
            raise self.fail(f"k={k} is out of range [0, {x.shape[self.axis]}] for axis {self.axis} of {x.shape}")
        self.k = k
        shape = x.shape[: self.axis] + (k,) + x.shape[self.axis + 1 :]
        return [TensorSpec(x.dtype, shape), TensorSpec(np.dtype(np.int64), shape)]

    def run(self, inputs, outputs):
        x = inputs[0]
        if self.largest:  # a stable ascending sort of the reversed axis, reversed: ties by index
            n = x.shape[self.axis]
            order = n - 1 - np.flip(np.argsort(np.flip(x, self.axis), axis=self.axis, kind="stable"), self.axis)
        else:
            order = np.argsort(x, axis=self.axis, kind="stable")
        index = np.take(order, np.arange(self.k), axis=self.axis)
        np.copyto(outputs[1], index)
        np.copyto(outputs[0], np.take_along_axis(x, index, axis=self.axis))


@register("Unique", since=11)
class Unique(Kernel):
    """(Y, indices, inverse_indices, counts) = the unique elements (or slices along `axis`)
    of X, sorted (`sorted`=1, default) or in order of first occurrence; the other outputs
    are int64. X is needed at prepare time."""

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x = inputs[0]
        axis = self.attr("axis")
        self.axis = None if axis is None else normalize_axis(self, int_attr(self, "axis"), len(x.shape))
        results = self._unique(self.value_of(values, 0))
        return [TensorSpec(r.dtype, r.shape) for r in results]

    def _unique(self, x: np.ndarray) -> list[np.ndarray]:
        y, first, inverse, counts = np.unique(
            x, return_index=True, return_inverse=True, return_counts=True, axis=self.axis
        )
        inverse = inverse.reshape(-1)
        if int_attr(self, "sorted", 1) == 0:
            order = np.argsort(first, kind="stable")
            y = np.take(y, order, axis=0 if self.axis is None else self.axis)
            first, counts = first[order], counts[order]
            inverse = np.argsort(order)[inverse]
        return [y, *(a.astype(np.int64) for a in (first, inverse, counts))]

    def run(self, inputs, outputs):
        results = self._unique(inputs[0])
        if [r.shape for r in results[: len(outputs)]] != [o.shape for o in outputs]:
            raise self.fail("X's unique values changed since prepare")
        for out, result in zip(outputs, results, strict=False):
            np.copyto(out, result)

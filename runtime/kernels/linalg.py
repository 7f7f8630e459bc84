"""Linear-algebra kernels: Einsum, Det and Trilu. (MatMul and Gemm live in nn.py.)"""

from __future__ import annotations

import numpy as np

from edgerun.runtime.kernels.attrs import (
    FLOAT_KINDS,
    NUMERIC_KINDS,
    int_attr,
    require_kind,
    require_rank,
    require_same_dtype,
    str_attr,
)
from edgerun.runtime.kernels.base import Kernel, TensorSpec
from edgerun.runtime.kernels.elementwise import broadcast_shape
from edgerun.runtime.kernels.registry import register


@register("Einsum", since=12)
class Einsum(Kernel):
    """Einstein summation (numpy.einsum) over any number of inputs of one numeric dtype.
    Labels are letters; "..." stands for the same broadcast dimensions in every term; without
    "->" the output is "..." then the labels used once, sorted. Spaces are ignored."""

    max_inputs = 2**31 - 1

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        if any(spec is None for spec in inputs):
            raise self.fail("an input is omitted")
        require_kind(self, inputs[0], NUMERIC_KINDS, "input 0")
        require_same_dtype(self, inputs, "inputs")
        self.equation = str_attr(self, "equation", "").replace(" ", "")
        return [TensorSpec(inputs[0].dtype, self._output_shape([s.shape for s in inputs]))]

    def _output_shape(self, shapes: list[tuple[int, ...]]) -> tuple[int, ...]:
        lhs, arrow, rhs = self.equation.partition("->")
        terms = lhs.split(",")
        if len(terms) != len(shapes):
            raise self.fail(f"equation {self.equation!r} has {len(terms)} terms for {len(shapes)} inputs")
        sizes: dict[str, int] = {}
        ellipsis: tuple[int, ...] = ()
        for term, shape in zip(terms, shapes, strict=True):
            labels, dims, extra = self._split(term, shape)
            ellipsis = broadcast_shape(self, [ellipsis, extra])
            for label, dim in zip(labels, dims, strict=True):
                if sizes.setdefault(label, dim) != dim:
                    raise self.fail(f"label {label!r} has sizes {sizes[label]} and {dim}")
        if not arrow:
            once = sorted(c for c in sizes if lhs.count(c) == 1)
            return ellipsis + tuple(sizes[c] for c in once)
        head, dots, tail = rhs.partition("...")
        if not _letters(head + tail) or len(set(head + tail)) < len(head + tail):
            raise self.fail(f"output term {rhs!r} is malformed: expected distinct letters and at most one '...'")
        missing = [c for c in head + tail if c not in sizes]
        if missing:
            raise self.fail(f"output labels {missing} are in no input term")
        return tuple(sizes[c] for c in head) + (ellipsis if dots else ()) + tuple(sizes[c] for c in tail)

    def _split(self, term: str, shape: tuple[int, ...]) -> tuple[str, tuple[int, ...], tuple[int, ...]]:
        """(labels, their sizes, the ellipsis' dims) of one input term."""
        head, dots, tail = term.partition("...")
        if not _letters(head + tail):
            raise self.fail(f"term {term!r} is malformed: expected letters and at most one '...'")
        labels = head + tail
        extra = len(shape) - len(labels)
        if extra < 0 or (extra and not dots):
            raise self.fail(f"term {term!r} does not match input shape {shape}")
        return labels, shape[: len(head)] + shape[len(head) + extra :], shape[len(head) : len(head) + extra]

    def run(self, inputs, outputs):
        # optimize: contract pairwise through tensordot/BLAS instead of one nested loop
        np.copyto(outputs[0], np.einsum(self.equation, *inputs, optimize=len(inputs) > 1), casting="unsafe")


def _letters(labels: str) -> bool:
    return all("a" <= c <= "z" or "A" <= c <= "Z" for c in labels)


@register("Det", since=11)
class Det(Kernel):
    """[..., M, M] float -> [...] determinants."""

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x = inputs[0]
        require_kind(self, x, FLOAT_KINDS, "X")
        require_rank(self, x, 2, what="X")
        if x.shape[-1] != x.shape[-2]:
            raise self.fail(f"X: expected square matrices, got shape {x.shape}")
        return [TensorSpec(x.dtype, x.shape[:-2])]

    def run(self, inputs, outputs):
        x = inputs[0]
        wide = x.astype(np.float32) if x.dtype == np.float16 else x
        np.copyto(outputs[0], np.linalg.det(wide), casting="unsafe")


@register("Trilu", since=14)
class Trilu(Kernel):
    """(X[, k]) -> X with the elements below (upper=1, default) or above (upper=0) the k-th
    diagonal of each of its last-two-axes matrices zeroed; k (default 0) is read at run time."""

    max_inputs = 2

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x = inputs[0]
        require_rank(self, x, 2, what="input")
        if len(inputs) > 1 and inputs[1] is not None:
            require_kind(self, inputs[1], "i", "k")
            if inputs[1].size != 1 or len(inputs[1].shape) > 1:
                raise self.fail(f"k: expected a scalar, got shape {inputs[1].shape}")
        self.upper = int_attr(self, "upper", 1)
        if self.upper not in (0, 1):
            raise self.fail(f"attribute 'upper' must be 0 or 1, got {self.upper}")
        return [x]

    def run(self, inputs, outputs):
        x = inputs[0]
        k = int(inputs[1].reshape(())) if len(inputs) > 1 and inputs[1] is not None else 0
        k = max(min(k, x.shape[-1] + 1), -x.shape[-2] - 1)  # beyond the matrix: all or nothing
        np.copyto(outputs[0], np.triu(x, k) if self.upper else np.tril(x, k))

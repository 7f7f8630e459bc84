"""Linear-algebra kernels: MatMul and Gemm, each followed by its gradient kernel (edgerun
domain), Einsum, Det and Trilu. MatMul and Gemm honour a fused activation
(runtime.kernels.fused); the integer and quantized products live in quantize.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgerun.runtime.kernels.attrs import (
    FLOAT_KINDS,
    NUMERIC_KINDS,
    flag_attr,
    float_attr,
    int_attr,
    require_kind,
    require_rank,
    require_same_dtype,
    str_attr,
)
from edgerun.runtime.kernels.base import Kernel, TensorSpec
from edgerun.runtime.kernels.elementwise import broadcast_shape, check_broadcasts_to, sum_to
from edgerun.runtime.kernels.fused import Activation, apply_activation, fused_activation
from edgerun.runtime.kernels.registry import register


@register("MatMul", since=1)
class MatMul(Kernel):
    """numpy.matmul: 1-D operands are promoted and the added axis dropped; batch axes broadcast."""

    min_inputs = max_inputs = 2

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        a, b = inputs
        require_same_dtype(self, [a, b], "A and B")
        require_kind(self, a, NUMERIC_KINDS, "A")
        self.activation = fused_activation(self.attrs, f"node {self.name!r} (MatMul)")
        return [TensorSpec(a.dtype, matmul_shape(self, a.shape, b.shape))]

    def run(self, inputs, outputs):
        np.matmul(inputs[0], inputs[1], out=outputs[0])
        apply_activation(outputs[0], self.activation)


def matmul_shape(kernel: Kernel, a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    """Result shape of numpy.matmul(a, b); the node's ModelError when they do not multiply."""
    if not a or not b:
        raise kernel.fail(f"MatMul needs inputs of rank >= 1, got shapes {a} and {b}")
    a2 = (1,) + a if len(a) == 1 else a
    b2 = b + (1,) if len(b) == 1 else b
    if a2[-1] != b2[-2]:
        raise kernel.fail(f"inner dimensions differ: A shape {a}, B shape {b}")
    batch = broadcast_shape(kernel, [a2[:-2], b2[:-2]])
    rows = a2[-2:-1] if len(a) > 1 else ()
    cols = b2[-1:] if len(b) > 1 else ()
    return batch + rows + cols


@register("MatMulGrad", since=1, domain="edgerun")
class MatMulGrad(Kernel):
    """(dY, A, B) -> (dA, dB) of Y = numpy.matmul(A, B): with 1-D operands promoted to 2-D,
    dA = dY @ B^T and dB = A^T @ dY, each summed over the batch axes its operand was broadcast
    along and shaped like the operand. ModelError unless dY has Y's shape."""

    min_inputs = max_inputs = 3

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        dy, a, b = inputs
        require_kind(self, dy, FLOAT_KINDS, "dY")
        require_same_dtype(self, [dy, a, b], "dY, A and B")
        y = matmul_shape(self, a.shape, b.shape)
        if dy.shape != y:
            raise self.fail(f"dY shape {dy.shape} differs from the output shape {y} of A @ B")
        self.a2 = (1,) + a.shape if len(a.shape) == 1 else a.shape
        self.b2 = b.shape + (1,) if len(b.shape) == 1 else b.shape
        batch = broadcast_shape(self, [self.a2[:-2], self.b2[:-2]])
        self.dy2 = batch + (self.a2[-2], self.b2[-1])
        return [a, b]

    def run(self, inputs, outputs):
        dy, a, b = inputs[0].reshape(self.dy2), inputs[1].reshape(self.a2), inputs[2].reshape(self.b2)
        da = outputs[0].reshape(self.a2, copy=False)
        _matmul_to(dy, np.swapaxes(b, -1, -2), da)
        if len(outputs) > 1:
            _matmul_to(np.swapaxes(a, -1, -2), dy, outputs[1].reshape(self.b2, copy=False))


def _matmul_to(x: np.ndarray, y: np.ndarray, out: np.ndarray) -> None:
    """out = x @ y summed down to out's shape (out's batch axes broadcast to the product's)."""
    if np.broadcast_shapes(x.shape[:-2], y.shape[:-2]) == out.shape[:-2]:
        np.matmul(x, y, out=out)
    else:
        sum_to(np.matmul(x, y), out)


@dataclass(frozen=True, eq=False)
class GemmParams:
    """What Gemm's prepare works out, read by Gemm.run and the numba fast path
    (devices/numba_kernels.py): Y = alpha * A' @ B' + beta * C, then `activation`."""

    trans_a: bool  # A' = A.T
    trans_b: bool  # B' = B.T
    alpha: np.generic  # in the inputs' dtype
    beta: np.generic
    use_c: bool  # C is given and beta != 0
    c_term: np.ndarray | None  # beta * C, computed once when C is a constant (used only with use_c)
    activation: Activation | None  # a fused activation (runtime.kernels.fused)


def _constant_term(c: np.ndarray | None, beta: np.generic) -> np.ndarray | None:
    """beta * C computed once when C is a constant; None when it is not."""
    if c is None or beta == 1:
        return c
    with np.errstate(all="ignore"):
        return c * beta


@register("Gemm", since=1)
class Gemm(Kernel):
    """Y = alpha * A' @ B' + beta * C with A' = A.T when transA (B' likewise); A', B' are 2-D
    and C broadcasts to Y's (M, N). C is required before opset 11. Opsets 1-6 carry a
    `broadcast` flag for C; C is accepted whenever it broadcasts (what broadcast=1 allows).
    Honours a fused activation (runtime.kernels.fused)."""

    min_inputs, max_inputs = 3, 3

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        a, b = inputs[0], inputs[1]
        c = inputs[2] if len(inputs) > 2 else None
        require_same_dtype(self, [s for s in (a, b, c) if s is not None], "A, B and C")
        require_kind(self, a, NUMERIC_KINDS, "A")
        require_rank(self, a, 2, 2, what="A")
        require_rank(self, b, 2, 2, what="B")
        trans_a, trans_b = flag_attr(self, "transA"), flag_attr(self, "transB")
        m, k = a.shape[::-1] if trans_a else a.shape
        k2, n = b.shape[::-1] if trans_b else b.shape
        if k != k2:
            raise self.fail(f"inner dimensions differ: A' is ({m}, {k}), B' is ({k2}, {n})")
        alpha, beta = self._scalar("alpha", a.dtype), self._scalar("beta", a.dtype)
        use_c = c is not None and beta != 0
        if c is not None:
            self._check_c(c.shape, (m, n))
        constant_c = values[2] if len(values) > 2 else None
        self.params = GemmParams(
            trans_a, trans_b, alpha, beta, use_c, _constant_term(constant_c, beta) if use_c else None,
            fused_activation(self.attrs, f"node {self.name!r} (Gemm)"),
        )
        return [TensorSpec(a.dtype, (m, n))]

    def _scalar(self, key: str, dtype: np.dtype) -> np.generic:
        value = float_attr(self, key, 1.0)
        if dtype.kind == "f":
            with np.errstate(over="ignore"):  # a huge alpha becomes inf, as in ONNX Runtime
                return dtype.type(value)
        info = np.iinfo(dtype)
        if not value.is_integer() or not info.min <= value <= info.max:
            raise self.fail(f"{key}={value} is not representable in the inputs' {dtype}")
        return dtype.type(int(value))

    def _check_c(self, c: tuple[int, ...], y: tuple[int, int]) -> None:
        if len(c) > 2 or any(dc not in (1, dy) for dc, dy in zip(c[::-1], y[::-1], strict=False)):
            raise self.fail(f"C shape {c} does not broadcast to the output shape {y}")

    def run(self, inputs, outputs):
        p, a, b, out = self.params, inputs[0], inputs[1], outputs[0]
        np.matmul(a.T if p.trans_a else a, b.T if p.trans_b else b, out=out)
        if p.alpha != 1:
            np.multiply(out, p.alpha, out=out)
        if p.use_c:
            c = p.c_term if p.c_term is not None else inputs[2] * p.beta
            np.add(out, c, out=out)
        apply_activation(out, p.activation)


@register("Gemm", since=11)
class Gemm11(Gemm):
    """Gemm-11 makes C optional."""

    min_inputs = 2


@register("GemmGrad", since=1, domain="edgerun")
class GemmGrad(Kernel):
    """(dY, A, B[, C]) -> (dA, dB[, dC]) of Y = alpha * A' @ B' + beta * C (Gemm), with the
    forward node's alpha, beta, transA and transB: dA' = alpha * dY @ B'^T, dB' = alpha * A'^T @ dY
    (transposed back to A's and B's layout) and dC = beta * dY summed down to C's shape. dC exists
    only when C is given. ModelError unless dY has Y's shape (M, N)."""

    min_inputs, max_inputs = 3, 4

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        dy, a, b = inputs[:3]
        c = inputs[3] if len(inputs) > 3 else None
        require_kind(self, dy, FLOAT_KINDS, "dY")
        require_same_dtype(self, [s for s in (dy, a, b, c) if s is not None], "dY, A, B and C")
        require_rank(self, a, 2, 2, what="A")
        require_rank(self, b, 2, 2, what="B")
        self.trans_a, self.trans_b = flag_attr(self, "transA"), flag_attr(self, "transB")
        m, k = a.shape[::-1] if self.trans_a else a.shape
        k2, n = b.shape[::-1] if self.trans_b else b.shape
        if k != k2:
            raise self.fail(f"inner dimensions differ: A' is ({m}, {k}), B' is ({k2}, {n})")
        if dy.shape != (m, n):
            raise self.fail(f"dY shape {dy.shape} differs from the output shape {(m, n)}")
        if c is not None:
            check_broadcasts_to(self, c.shape, (m, n), "C")
        self.alpha = dy.dtype.type(float_attr(self, "alpha", 1.0))
        self.beta = dy.dtype.type(float_attr(self, "beta", 1.0))
        return [a, b] + ([TensorSpec(dy.dtype, c.shape)] if c is not None else [])

    def run(self, inputs, outputs):
        dy, a, b = inputs[:3]
        a_ = a.T if self.trans_a else a  # A', B' as in the forward op
        b_ = b.T if self.trans_b else b
        if self.trans_a:  # dA = dA'^T = alpha * B' @ dY^T
            np.matmul(b_, dy.T, out=outputs[0])
        else:
            np.matmul(dy, b_.T, out=outputs[0])
        if len(outputs) > 1 and self.trans_b:  # dB = dB'^T = alpha * dY^T @ A'
            np.matmul(dy.T, a_, out=outputs[1])
        elif len(outputs) > 1:
            np.matmul(a_.T, dy, out=outputs[1])
        if len(outputs) > 2:
            sum_to(dy, outputs[2])
        for out, scale in zip(outputs, (self.alpha, self.alpha, self.beta), strict=False):
            if scale != 1:
                np.multiply(out, scale, out=out)


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

"""The cuda backend's data movement: Concat, Split, Transpose, Slice, Pad, Expand, Tile and
Gather, and the stride arithmetic they and the broadcasting elementwise ops share.

Every op here is an index remap worked out once, in its claim: the output is read as an
array of some `shape` and each element comes from the input at `base + sum(coord[d] *
strides[d])` (or, for Concat, goes to the output there). `collapse_dims` first merges the
dimensions a remap walks contiguously, so a Transpose of (N, C, H, W) -> (N, H, W, C) runs as a
rank-3 remap and a Slice of whole rows as rank 2. The shape and strides go to the GPU once as
small int64 arrays; a run is one grid-stride launch per output (per input for Concat).

Data is moved as raw bits (unsigned ints of the element's size), so these kernels take any
dtype of 1, 2, 4 or 8 bytes: floats, ints, bool, float16, bfloat16. Reshape, Flatten, Squeeze
and Unsqueeze are views of the arena in the plan, not steps, and have no kernel here.
"""

from __future__ import annotations

from collections.abc import Sequence
from math import prod
from typing import Any

import numpy as np
from numba import cuda

from edgerun.devices.cuda.claims import DeviceRun, LaunchContext, StepSpec, claims, launch_1d

_BITS = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


# ----------------------------------------------------------------------------- stride arithmetic
def contiguous_strides(shape: Sequence[int]) -> list[int]:
    """Element strides of a C-contiguous array of `shape`."""
    strides, step = [], 1
    for dim in reversed(shape):
        strides.append(step)
        step *= dim
    return strides[::-1]


def broadcast_strides(shape: Sequence[int], out_shape: Sequence[int]) -> list[int]:
    """Element strides of a C-contiguous array of `shape` read at the coordinates of
    `out_shape`, which it broadcasts to (numpy rules): 0 along the dimensions it repeats."""
    padded = (1,) * (len(out_shape) - len(shape)) + tuple(shape)
    strides = contiguous_strides(padded)
    return [0 if d == 1 and o != 1 else s for d, o, s in zip(padded, out_shape, strides, strict=True)]


def collapse_dims(shape: Sequence[int], strides: Sequence[Sequence[int]]) -> tuple[list[int], list[list[int]]]:
    """`shape` and the per-operand `strides` over it with size-1 dimensions dropped and
    neighbours merged where every operand walks them as one (stride[d] == stride[d+1] *
    shape[d+1]): the same flat index -> offset map at a lower rank (at least 1)."""
    dims = [(n, [s[d] for s in strides]) for d, n in enumerate(shape) if n != 1]
    merged: list[tuple[int, list[int]]] = []
    for n, st in dims:
        if merged and all(p == s * n for p, s in zip(merged[-1][1], st, strict=True)):
            merged[-1] = (merged[-1][0] * n, st)
        else:
            merged.append((n, st))
    if not merged:
        merged = [(1, [0] * len(strides))]
    return [n for n, _ in merged], [[st[k] for _, st in merged] for k in range(len(strides))]


def as_bits(array: Any) -> Any:
    """A flat device array viewed as unsigned ints of its element size (no copy)."""
    return array.reshape(array.size).view(_BITS[array.dtype.itemsize])


def movable(dtype: np.dtype) -> bool:
    """Whether the copy kernels move elements of `dtype` (any of 1, 2, 4 or 8 bytes)."""
    return not dtype.hasobject and dtype.itemsize in _BITS


def _ints(values: Sequence[int]) -> Any:
    return cuda.to_device(np.asarray(values, np.int64))


class Remap:
    """One collapsed index remap, on the GPU: output (or, scattering, input) flat index i ->
    the other side's element `base + sum(coord(i)[d] * strides[d])`, coord(i) being i's
    coordinates in `shape`."""

    def __init__(self, shape: Sequence[int], strides: Sequence[int], base: int = 0) -> None:
        self.size = prod(shape)
        collapsed, (st,) = collapse_dims(shape, [strides])
        self.base = base
        self.shape, self.strides = _ints(collapsed), _ints(st)

    def gather(self, x: Any, out: Any, ctx: LaunchContext) -> None:
        """out (flat, `size` elements) = x read through the remap."""
        launch_1d(_gather, self.size, ctx, as_bits(x), as_bits(out), self.base, self.shape, self.strides)

    def scatter(self, x: Any, out: Any, ctx: LaunchContext) -> None:
        """out written through the remap with x's `size` elements, in order."""
        launch_1d(_scatter, self.size, ctx, as_bits(x), as_bits(out), self.base, self.shape, self.strides)


# -------------------------------------------------------------------------------------- kernels
@cuda.jit(device=True)
def _strided_offset(i, base, shape, strides):  # pragma: no cover - runs on the device
    """base + sum_d coord_d(i) * strides[d], coord(i) = flat index i's coordinates in shape."""
    rem = i
    offset = base
    for d in range(shape.shape[0] - 1, -1, -1):
        dim = shape[d]
        offset += (rem % dim) * strides[d]
        rem //= dim
    return offset


@cuda.jit
def _gather(x, out, base, shape, strides):  # pragma: no cover - runs on the device
    """out[i] = x[_strided_offset(i)]."""
    i = cuda.grid(1)
    step = cuda.gridsize(1)
    while i < out.shape[0]:
        out[i] = x[_strided_offset(i, base, shape, strides)]
        i += step


@cuda.jit
def _scatter(x, out, base, shape, strides):  # pragma: no cover - runs on the device
    """out[_strided_offset(i)] = x[i]."""
    i = cuda.grid(1)
    step = cuda.gridsize(1)
    while i < x.shape[0]:
        out[_strided_offset(i, base, shape, strides)] = x[i]
        i += step


@cuda.jit
def _pad(x, out, value, shape, strides, table, starts):  # pragma: no cover - runs on the device
    """out[i] = x at the coordinates table[starts[d] + coord_d(i)] (strides: x's), or value[0]
    where any of them is -1 (a padded position)."""
    i = cuda.grid(1)
    step = cuda.gridsize(1)
    rank = shape.shape[0]
    while i < out.shape[0]:
        rem = i
        src = 0
        inside = True
        for d in range(rank - 1, -1, -1):
            dim = shape[d]
            c = table[starts[d] + rem % dim]
            rem //= dim
            if c < 0:
                inside = False
            src += c * strides[d]
        out[i] = x[src] if inside else value[0]
        i += step


@cuda.jit
def _take(x, indices, out, dim, inner, count):  # pragma: no cover - runs on the device
    """out (outer, count, inner) = x (outer, dim, inner) at indices along the middle axis
    (negative ones count from the back); an index out of [-dim, dim) gives zeros."""
    i = cuda.grid(1)
    step = cuda.gridsize(1)
    while i < out.shape[0]:
        r = i % inner
        t = i // inner
        j = indices[t % count]
        if j < 0:
            j += dim
        if 0 <= j < dim:
            out[i] = x[((t // count) * dim + j) * inner + r]
        else:
            out[i] = 0
        i += step


# --------------------------------------------------------------------------------------- claims
def _movable_step(step: StepSpec) -> bool:
    x = step.inputs[0]
    return x is not None and movable(x.dtype) and all(movable(o.dtype) for o in step.outputs)


def _gather_run(remap: Remap) -> DeviceRun:
    def run(ins, outs, ctx):
        remap.gather(ins[0], outs[0], ctx)

    return run


@claims("Transpose")
def transpose(step: StepSpec) -> DeviceRun | None:
    """Any perm, any rank, any dtype of 1-8 bytes: out[.., j, ..] = x[.., perm[j], ..] as a
    remap (dimensions that stay neighbours move as one)."""
    if not _movable_step(step):
        return None
    x = step.inputs[0]
    in_strides = contiguous_strides(x.shape)
    perm = step.kernel.perm
    return _gather_run(Remap([x.shape[p] for p in perm], [in_strides[p] for p in perm]))


@claims("Slice")
def slice_(step: StepSpec) -> DeviceRun | None:
    """Any starts/ends/axes/steps the reference resolved (its `index`, bounds clamped,
    negative steps included), any dtype of 1-8 bytes."""
    if not _movable_step(step):
        return None
    x = step.inputs[0]
    in_strides = contiguous_strides(x.shape)
    base, shape, strides = 0, [], []
    for s, dim, stride in zip(step.kernel.index, x.shape, in_strides, strict=True):
        start, stop, stride_step = s.indices(dim)
        base += start * stride
        shape.append(len(range(start, stop, stride_step)))
        strides.append(stride_step * stride)
    return _gather_run(Remap(shape, strides, base if prod(shape) else 0))


@claims("Expand")
def expand(step: StepSpec) -> DeviceRun | None:
    """X broadcast to the output shape (numpy rules), any dtype of 1-8 bytes."""
    if not _movable_step(step):
        return None
    out_shape = step.outputs[0].shape
    return _gather_run(Remap(out_shape, broadcast_strides(step.inputs[0].shape, out_shape)))


@claims("Tile")
def tile(step: StepSpec) -> DeviceRun | None:
    """X repeated along each axis (Tile-6's `repeats` or Tile-1's tiles/axis), any dtype of
    1-8 bytes: the output read as (r0, d0, r1, d1, ..) with stride 0 along each r."""
    if not _movable_step(step):
        return None
    x = step.inputs[0]
    shape, strides = [], []
    for r, d, s in zip(step.kernel.repeats, x.shape, contiguous_strides(x.shape), strict=True):
        shape += [r, d]
        strides += [0, s]
    return _gather_run(Remap(shape, strides))


@claims("Split")
def split(step: StepSpec) -> DeviceRun | None:
    """Pieces along the reference's `axis` of its split sizes (`bounds`), any dtype of 1-8
    bytes: one launch per output."""
    if not _movable_step(step):
        return None
    x = step.inputs[0]
    axis, bounds = step.kernel.axis, step.kernel.bounds
    in_strides = contiguous_strides(x.shape)
    remaps = [Remap(out.shape, in_strides, bounds[k] * in_strides[axis]) for k, out in enumerate(step.outputs)]

    def run(ins, outs, ctx):
        for remap, out in zip(remaps, outs, strict=True):
            remap.gather(ins[0], out, ctx)

    return run


@claims("Concat")
def concat(step: StepSpec) -> DeviceRun | None:
    """N inputs along any axis (negative ones as the reference normalized them), any dtype of
    1-8 bytes: each input is scattered into its slice of the output, one launch per input."""
    if not _movable_step(step) or any(a is None for a in step.inputs):
        return None
    out_strides = contiguous_strides(step.outputs[0].shape)
    axis, offset, remaps = step.kernel.axis, 0, []
    for x in step.inputs:
        remaps.append(Remap(x.shape, out_strides, offset * out_strides[axis]))
        offset += x.shape[axis]

    def run(ins, outs, ctx):
        for remap, x in zip(remaps, ins, strict=True):
            remap.scatter(x, outs[0], ctx)

    return run


@claims("Pad")
def pad(step: StepSpec) -> DeviceRun | None:
    """Constant, reflect, edge and wrap modes, negative pads (crops) included, any dtype of
    1-8 bytes; the constant from the attribute (Pad-2), a constant input 2 or one known only at
    run time. Refuses a value input known only at run time whose dtype is not X's."""
    if not _movable_step(step):
        return None
    k, x = step.kernel, step.inputs[0]
    if not _pad_value_ok(step):
        return None
    value = _pad_constant(step)
    out_shape = step.outputs[0].shape
    tables = [_pad_sources(k.mode, s.start, n, b, e)
              for s, n, (b, e) in zip(k.crop, k.cropped, k.widths, strict=True)]
    starts = np.cumsum([0] + [len(t) for t in tables[:-1]])
    table = np.concatenate(tables) if tables else np.zeros(1, np.int64)
    shape = _ints(out_shape or (1,))
    strides = _ints(contiguous_strides(x.shape) or [0])
    table, starts = _ints(table), _ints(starts if tables else [0])
    n = prod(out_shape)

    def run(ins, outs, ctx):
        fill = value if value is not None else ins[2]
        launch_1d(_pad, n, ctx, as_bits(ins[0]), as_bits(outs[0]), as_bits(fill), shape, strides, table, starts)

    return run


def _pad_value_ok(step: StepSpec) -> bool:
    """Whether the kernel reads Pad's constant as the reference does: refused only for a value
    input known at run time alone that is not of X's dtype (its first element is the constant)."""
    given = step.inputs[2] if step.kernel.version >= 11 and len(step.inputs) > 2 else None
    return given is None or step.constant[2] or given.size == 0 or given.dtype == step.inputs[0].dtype


def _pad_constant(step: StepSpec) -> Any:
    """Pad's constant as a one-element device array of X's dtype, None when it is an input
    known only at run time."""
    k, dtype = step.kernel, step.inputs[0].dtype
    if k.version < 11:
        return cuda.to_device(np.array([k.value]).astype(dtype))
    given = step.inputs[2] if len(step.inputs) > 2 else None
    if given is None or given.size == 0:
        return cuda.to_device(np.zeros(1, dtype))
    if step.constant[2]:
        return cuda.to_device(np.array([given.reshape(-1)[0]]).astype(dtype))
    return None


def _pad_sources(mode: str, start: int, n: int, begin: int, end: int) -> np.ndarray:
    """For an axis whose kept part is x[start:start + n], padded by (begin, end): the x
    coordinate each output position reads, -1 where it takes the constant (numpy.pad's
    reflect / edge / wrap, repeating when a pad is longer than the axis)."""
    i = np.arange(-begin, n + end, dtype=np.int64)
    if mode == "constant":
        return np.where((i >= 0) & (i < n), i + start, -1)
    if mode == "edge" or n == 1:
        return np.clip(i, 0, n - 1) + start
    if mode == "wrap":
        return i % n + start
    period = i % (2 * (n - 1))  # reflect
    return np.where(period < n, period, 2 * (n - 1) - period) + start


@claims("Gather")
def gather(step: StepSpec) -> DeviceRun | None:
    """Any axis, any data dtype of 1-8 bytes, with constant indices as the reference checked them.
    Indices known only at run time stay on the host: an index out of range must fail the run
    with an error naming it, which a kernel cannot raise."""
    if not _movable_step(step):
        return None
    k, x, indices = step.kernel, step.inputs[0], step.inputs[1]
    if k.fixed is None:
        return None
    axis = k.axis
    dim, inner = x.shape[axis], prod(x.shape[axis + 1:])
    count, n = indices.size, step.outputs[0].size
    fixed = cuda.to_device(np.ascontiguousarray(k.fixed, np.int64).reshape(-1))

    def run(ins, outs, ctx):
        launch_1d(_take, n, ctx, as_bits(ins[0]), fixed, as_bits(outs[0]), dim, inner, count)

    return run

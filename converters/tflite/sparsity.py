"""TFLite's sparse constant tensors, and the DENSIFY operator that makes them dense.

    dense = densify(tensor)      # a TFLiteTensor with .sparsity: the dense numpy array

The format (SparsityParameters in schema/tflite.fbs; TFLite's FormatConverter in
kernels/internal/utils/sparsity_format_converter.cc is the reference): a tensor of rank n
with k blocked dimensions is stored as n + k levels. Dimension d of `block_map[j]` is split
into shape[d] / b_j blocks of b_j elements; levels 0..n-1 walk the (blocked) original
dimensions in `traversal_order[:n]`, levels n..n+k-1 the block dimensions in
`traversal_order[n:]` (a permutation of n..n+k-1). Level L is DENSE (every index 0..size-1,
`dense_size` says the size) or SPARSE_CSR: for each position p of the level above,
`array_indices[array_segments[p]:array_segments[p + 1]]` are the indices present. The
positions of the last level are the stored values, in order, in the tensor's buffer; every
element not stored is zero.

Everything is checked before any element is written (a file is untrusted): the traversal
order is a permutation of that shape, block dimensions are DENSE and divide their
dimensions, dense sizes agree with the shape, segments start at 0, never decrease and end
at the number of indices, indices are within their level, no two stored values land on the
same element, and the number of stored values is exactly the buffer's size over the type's
size. A failure is a ModelError naming the tensor. Densifying is vectorized: one int64
array of flat destinations, as long as the positions of the widest level, which may not
outgrow what the file holds (the stored values, or the segments of a sparse level below):
a few bytes of metadata cannot make a huge index array. The dense result is at most
MAX_DENSE_ELEMENTS elements and `max_bytes` bytes (the converter's allowance, which scales
with the file size).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgerun.converters.tflite.context import OpContext
from edgerun.converters.tflite.reader import TFLiteTensor
from edgerun.converters.tflite.registry import converts
from edgerun.runtime.errors import ModelError

DENSE, SPARSE_CSR = 0, 1
# The most elements a densified tensor may have: a few bytes of sparse metadata must not make
# gigabytes of zeros (2**26 float32 elements are 256 MiB).
MAX_DENSE_ELEMENTS = 1 << 26
_VALUE_TYPES = ("FLOAT32", "FLOAT16", "FLOAT64", "INT8", "UINT8", "INT16", "INT32", "INT64", "UINT16",
                "UINT32", "UINT64", "BOOL")


def densify(tensor: TFLiteTensor, max_bytes: int | None = None) -> np.ndarray:
    """The dense contents of sparse constant `tensor` (its dtype and shape); ModelError
    naming the tensor when its sparsity parameters or stored values are malformed, or when
    the dense array would take more than `max_bytes` (None: no limit but MAX_DENSE_ELEMENTS)."""
    what = f"sparse tensor {tensor.name!r}"
    sparsity = tensor.sparsity
    if sparsity is None or tensor.raw is None:
        raise ModelError(f"{what}: no sparsity parameters or no stored values")
    if tensor.type not in _VALUE_TYPES:
        raise ModelError(f"{what}: sparse tensors of type {tensor.type} are not supported")
    dtype = np.dtype(tensor.dtype)
    shape = tuple(tensor.shape)
    elements = int(np.prod(shape, dtype=np.int64))
    if elements > MAX_DENSE_ELEMENTS:
        raise ModelError(f"{what}: shape {list(shape)} has {elements:,} elements, over the limit of "
                         f"{MAX_DENSE_ELEMENTS:,} for a densified tensor")
    if max_bytes is not None and elements * dtype.itemsize > max_bytes:
        raise ModelError(f"{what}: densifying shape {list(shape)} takes {elements * dtype.itemsize:,} bytes, "
                         f"more than the {max(max_bytes, 0):,} left of what this model's size allows for its "
                         "constants")
    if len(tensor.raw) % dtype.itemsize:
        raise ModelError(f"{what}: {len(tensor.raw)} bytes of values are not a whole number of "
                         f"{tensor.type} elements")
    stored = len(tensor.raw) // dtype.itemsize
    sizes, weights = _levels(what, shape, sparsity)
    flat = _destinations(what, sparsity["dim_metadata"], sizes, weights, stored)
    if flat.size != stored:
        raise ModelError(f"{what}: the sparsity parameters place {flat.size} values, the buffer holds {stored}")
    if np.unique(flat).size != flat.size:
        raise ModelError(f"{what}: two stored values land on the same element")
    values = np.frombuffer(tensor.raw, dtype, count=stored)
    if tensor.type == "BOOL" and np.any(values.view(np.uint8) > 1):
        raise ModelError(f"{what}: a BOOL buffer holds bytes other than 0 and 1")
    dense = np.zeros(elements, dtype)
    dense[flat] = values
    return dense.reshape(shape)


def _int_list(values: Any) -> list[int]:
    return [] if values is None else [int(v) for v in values]


def _levels(what: str, shape: tuple[int, ...], sparsity: dict[str, Any]) -> tuple[list[int], list[int]]:
    """(size, flat-index weight) of each level, after checking the traversal order, block
    map and the dense levels' sizes against `shape`."""
    rank = len(shape)
    order = _int_list(sparsity["traversal_order"])
    block_map = _int_list(sparsity["block_map"])
    metadata = sparsity["dim_metadata"] or []
    levels = rank + len(block_map)
    if len(order) != levels or len(metadata) != levels:
        raise ModelError(f"{what}: rank {rank} with {len(block_map)} block dimensions needs {levels} entries in "
                         f"traversal_order and dim_metadata, got {len(order)} and {len(metadata)}")
    if sorted(order[:rank]) != list(range(rank)) or sorted(order[rank:]) != list(range(rank, levels)):
        raise ModelError(f"{what}: traversal_order {order} is not a permutation of the {rank} dimensions "
                         f"followed by one of the {len(block_map)} block dimensions")
    if any(not 0 <= d < rank for d in block_map) or any(a >= b for a, b in zip(block_map, block_map[1:], strict=False)):
        raise ModelError(f"{what}: block_map {block_map} must name distinct dimensions of the rank-{rank} "
                         "shape in increasing order")
    for level, meta in enumerate(metadata):
        if meta is None or meta["format"] not in (DENSE, SPARSE_CSR):
            raise ModelError(f"{what}: dim_metadata {level} is missing or has an unknown format")
    block_sizes = []
    for j, dim in enumerate(block_map):
        meta = metadata[order.index(rank + j)]
        size = int(meta["dense_size"])
        if meta["format"] != DENSE or size < 1 or shape[dim] % size:
            raise ModelError(f"{what}: block dimension {j} must be DENSE with a size dividing dimension {dim} "
                             f"({shape[dim]}), got size {size}")
        block_sizes.append(size)
    # The dense tensor's row-major strides; a blocked dimension's block index steps b_j rows.
    strides = [int(np.prod(shape[d + 1:], dtype=np.int64)) for d in range(rank)]
    expanded = list(shape) + block_sizes
    expanded_weights = list(strides) + [strides[dim] for dim in block_map]
    for j, dim in enumerate(block_map):
        expanded[dim] = shape[dim] // block_sizes[j]
        expanded_weights[dim] = strides[dim] * block_sizes[j]
    sizes = [expanded[d] for d in order]
    for level, meta in enumerate(metadata):
        if meta["format"] == DENSE and int(meta["dense_size"]) != sizes[level]:
            raise ModelError(f"{what}: dense level {level} has size {meta['dense_size']}, but the shape makes "
                             f"it {sizes[level]}")
    return sizes, [expanded_weights[d] for d in order]


def _destinations(what: str, metadata: list[dict[str, Any]], sizes: list[int], weights: list[int],
                  stored: int) -> np.ndarray:
    """The flat dense index of every stored value, level by level. A level's positions are
    at most what the file holds: the `stored` values at the end, or the segments of the
    next sparse level (one per position, plus one)."""
    segments = [_index_vector(what, level, meta, "array_segments").size
                for level, meta in enumerate(metadata) if meta["format"] == SPARSE_CSR]
    most = max([stored, *segments])
    flat = np.zeros(1, np.int64)  # one position above the first level
    for level, (meta, size, weight) in enumerate(zip(metadata, sizes, weights, strict=True)):
        if meta["format"] == DENSE:
            if flat.size * size > most:
                raise ModelError(f"{what}: dense level {level} makes {flat.size * size:,} positions, more than "
                                 f"the {stored} stored values or any sparse level's segments account for")
            flat = (flat[:, None] + np.arange(size, dtype=np.int64) * weight).reshape(-1)
            continue
        segments = _index_vector(what, level, meta, "array_segments")
        indices = _index_vector(what, level, meta, "array_indices")
        if segments.size != flat.size + 1:
            raise ModelError(f"{what}: sparse level {level} has {segments.size} segment entries, the level "
                             f"above has {flat.size} positions (needs {flat.size + 1})")
        counts = np.diff(segments)
        if segments[0] != 0 or np.any(counts < 0) or segments[-1] != indices.size:
            raise ModelError(f"{what}: sparse level {level}: segments must start at 0, never decrease and end "
                             f"at the {indices.size} indices")
        if indices.size and (indices.min() < 0 or indices.max() >= size):
            raise ModelError(f"{what}: sparse level {level} has an index outside 0..{size - 1}")
        flat = np.repeat(flat, counts) + indices * weight
    return flat


def _index_vector(what: str, level: int, meta: dict[str, Any], field: str) -> np.ndarray:
    vector = meta[field]
    values = None if vector is None else vector.get("values")
    if values is None:
        raise ModelError(f"{what}: sparse level {level} has no {field}")
    return np.asarray(values).astype(np.int64)


@converts("DENSIFY", any_dtype=True)
def densify_op(ctx: OpContext) -> None:
    """DENSIFY: its input is a sparse constant, so its output becomes the dense constant
    (the same type, shape and quantization); nothing is left to do at run time. The input
    is made dense once however many operators read it, within the converter's allowance."""
    ctx.need_inputs(1)
    if ctx.num_outputs != 1:
        raise ctx.fail(f"expects 1 output, has {ctx.num_outputs}")
    tensor = ctx.tensor(0)
    if tensor is None or tensor.sparsity is None:
        raise ctx.fail("the input must be a sparse constant tensor")
    out = ctx.output_tensor(0)
    if out.type != tensor.type or tuple(out.shape) != tuple(tensor.shape):
        raise ctx.fail(f"the output ({out.type} {list(out.shape)}) must have the sparse input's type and "
                       f"shape ({tensor.type} {list(tensor.shape)})")
    ctx.bind(0, ctx.input(0))

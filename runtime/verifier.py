"""Semantic verification of a decoded .erm model (after runtime.flatread).

Checks what the bytes mean, before anything is used: schema version, every
buffer/tensor/subgraph index in range, external buffers inside the file and
aligned, buffer sizes equal to dtype x shape (4- and 2-bit types packed, see
runtime/schema/edgerun.fbs), string buffers inline and decoding to exactly one valid UTF-8
string per element (each buffer parsed once), shapes within memory limits, operators in topological
order (no cycles, every input produced earlier), no tensor written twice or both
read and written by one op, no op writing a constant or a graph input, subgraph
references acyclic, unique names, value kinds known (a sequence, optional or sequence of
maps holds no data, is no variable and is never a variable's update; a sequence of maps has
an int64 or string key type, is no subgraph input and no operator reads it: maps are outputs
only, and no other kind has a key type).
Every failure is a ModelError that says what and where.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgerun.runtime import dtypes
from edgerun.runtime.errors import ModelError
from edgerun.runtime.format import (
    BUFFER_ALIGNMENT,
    MAP_KEY_DTYPE_CODES,
    SCHEMA_VERSION,
    SEQUENCE_MAP_KIND,
    VALUE_KINDS,
)
from edgerun.runtime.schema.fb.AttributeType import AttributeType
from edgerun.runtime.schema.fb.DType import DType

MAX_RANK = 16
MAX_SUBGRAPH_DEPTH = 32
# Operators one pass through a subgraph may run, its nested bodies counted once per reference
# (a body shared by two Ifs in each of 30 levels would run 2**30 times); files with more
# operators than this / EXPANSION_FACTOR may expand to EXPANSION_FACTOR times their own count.
MAX_EXPANDED_OPERATORS = 1 << 16
EXPANSION_FACTOR = 4
# Largest tensor a model may declare (elements x itemsize); 1 TiB.
MAX_TENSOR_BYTES = 1 << 40

Raw = dict[str, Any]


def verify_model(model: Raw, file_size: int) -> None:
    """Raise ModelError unless the decoded `model` is well-formed for a file of `file_size`."""
    version = model["schema_version"]
    if version != SCHEMA_VERSION:
        raise ModelError(f"schema version {version} is not supported (this edgerun reads {SCHEMA_VERSION})")
    subgraphs = model["subgraphs"] or []
    if not subgraphs:
        raise ModelError("model has no subgraphs")
    buffers = model["buffers"] or []
    buffer_sizes = [_check_buffer(b, i, file_size) for i, b in enumerate(buffers)]
    strings = _StringBuffers(buffers)
    available = [
        _check_subgraph(sub, index, buffer_sizes, len(subgraphs), strings)
        for index, sub in enumerate(subgraphs)
    ]
    _check_subgraph_references(subgraphs)
    _check_signatures(model["signatures"] or [], subgraphs, available)
    _unique([kv["key"] for kv in model["metadata"] or []], "metadata key")


def _unique(names: list[str], what: str) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ModelError(f"{what} {name!r} appears twice")
        seen.add(name)


def _check_buffer(buffer: Raw, index: int, file_size: int) -> int:
    """The buffer's byte size, after checking it lies inside the file."""
    data, offset, size = buffer["data"], buffer["offset"], buffer["size"]
    if offset == 0:
        inline = 0 if data is None else len(data)
        if size not in (0, inline):
            raise ModelError(f"buffer {index}: size {size} but {inline} inline bytes")
        return inline
    if data is not None and len(data):
        raise ModelError(f"buffer {index}: has both inline data and an external offset")
    if offset % BUFFER_ALIGNMENT:
        raise ModelError(f"buffer {index}: offset {offset} is not {BUFFER_ALIGNMENT}-byte aligned")
    if size > file_size or offset > file_size - size:
        raise ModelError(
            f"buffer {index}: bytes [{offset}, {offset + size}) lie outside the file ({file_size} bytes)"
        )
    return size


def _tensor_bytes(tensor: Raw, where: str) -> int | None:
    """Bytes of a tensor with a static shape, None if its shape is unknown or dynamic."""
    shape = tensor["shape"]
    if shape is None:
        return None
    if len(shape) > MAX_RANK:
        raise ModelError(f"{where}: rank {len(shape)} exceeds the maximum of {MAX_RANK}")
    dims = [int(d) for d in shape]
    if any(d < -1 for d in dims):
        raise ModelError(f"{where}: invalid dimension in shape {dims}")
    dtype = dtypes.to_numpy(tensor["dtype"]) if tensor["dtype"] else np.dtype(np.uint8)
    bound = 1  # dynamic and zero dims counted as 1: a bound that holds for any batch
    for d in dims:
        bound *= max(d, 1)
        if bound * dtype.itemsize > MAX_TENSOR_BYTES:  # in memory: one byte even for int4
            raise ModelError(f"{where}: shape {dims} needs more than {MAX_TENSOR_BYTES} bytes")
    if -1 in dims:
        return None
    return dtypes.stored_nbytes(dtype, 0 if 0 in dims else bound)  # 4- and 2-bit types packed


class _StringBuffers:
    """How many strings each string buffer holds, parsed (UTF-8 included) once per buffer,
    so tensors sharing a buffer cost no extra work: in all, linear in the file size."""

    def __init__(self, buffers: list[Raw]) -> None:
        self.buffers = buffers
        self.counts: dict[int, int] = {}

    def count(self, index: int, where: str) -> int:
        if index not in self.counts:
            buffer = self.buffers[index]
            if buffer["offset"]:
                raise ModelError(f"{where}: string data must be inline, buffer {index} is external")
            data = buffer["data"]
            try:
                self.counts[index] = len(dtypes.decode_strings(b"" if data is None else data))
            except ValueError as exc:
                raise ModelError(f"{where}: buffer {index} is not valid string data: {exc}") from None
        return self.counts[index]


def _check_kind(tensor: Raw, where: str) -> None:
    """A known value kind; a sequence, optional or sequence of maps has no data, quantization
    or variable flag; a sequence of maps has an int64 or string key type, nothing else has one."""
    kind, key = tensor["kind"], tensor["key_dtype"]
    if not 0 <= kind < len(VALUE_KINDS):
        raise ModelError(f"{where}: value kind {kind} is unknown (known: "
                         f"{', '.join(f'{i} {k}' for i, k in enumerate(VALUE_KINDS))})")
    if kind and (tensor["buffer"] or tensor["is_variable"] or tensor["quantization"] is not None):
        raise ModelError(f"{where}: a {VALUE_KINDS[kind]} value cannot hold data, be a variable or be quantized")
    if kind == SEQUENCE_MAP_KIND and key not in MAP_KEY_DTYPE_CODES:
        raise ModelError(f"{where}: a sequence of maps needs key type INT64 or STRING, got {dtypes.dtype_name(key)}")
    if kind != SEQUENCE_MAP_KIND and key:
        raise ModelError(f"{where}: a {VALUE_KINDS[kind]} value has no key type, got {dtypes.dtype_name(key)}")


def _check_tensor(tensor: Raw, where: str, buffer_sizes: list[int], strings: _StringBuffers) -> None:
    _check_kind(tensor, where)
    code = tensor["dtype"]
    if code != 0:
        try:
            dtypes.to_numpy(code)
        except KeyError:
            raise ModelError(f"{where}: dtype {dtypes.dtype_name(code)} is not supported") from None
    nbytes = _tensor_bytes(tensor, where)
    buffer = tensor["buffer"]
    if buffer >= len(buffer_sizes):
        raise ModelError(f"{where}: buffer index {buffer} out of range (model has {len(buffer_sizes)})")
    if buffer != 0:
        if code == 0 or nbytes is None:
            raise ModelError(f"{where}: tensor with data needs a dtype and a static shape")
        if code == DType.STRING:
            dims = [int(d) for d in tensor["shape"]]
            count, found = int(np.prod(dims, dtype=np.int64)), strings.count(buffer, where)
            if found != count:
                raise ModelError(f"{where}: buffer {buffer} holds {found} strings, shape {dims} needs {count}")
        elif buffer_sizes[buffer] != nbytes:
            bits = dtypes.bit_width(dtypes.to_numpy(code))
            packed = f" ({dtypes.dtype_name(code)} packs {8 // bits} per byte)" if bits < 8 else ""
            raise ModelError(
                f"{where}: buffer {buffer} holds {buffer_sizes[buffer]} bytes, "
                f"dtype x shape needs {nbytes}{packed}"
            )
    elif tensor["is_variable"]:
        raise ModelError(f"{where}: variable has no initial value")
    _check_quantization(tensor, where)


def _check_quantization(tensor: Raw, where: str) -> None:
    q = tensor["quantization"]
    if q is None:
        return
    scale, zero = q["scale"], q["zero_point"]
    n_scale = 0 if scale is None else len(scale)
    n_zero = 0 if zero is None else len(zero)
    if n_scale == 0 or n_scale != n_zero:
        raise ModelError(f"{where}: quantization has {n_scale} scales and {n_zero} zero points")
    if n_scale > 1:
        shape = tensor["shape"]
        rank = 0 if shape is None else len(shape)
        axis = q["axis"]
        if not 0 <= axis < rank or int(shape[axis]) != n_scale:
            raise ModelError(f"{where}: per-axis quantization on axis {axis} does not fit the shape")


def _check_index_list(indices: Any, count: int, where: str, optional: bool = False) -> list[int]:
    items = [] if indices is None else [int(i) for i in indices]
    low = -1 if optional else 0
    for i in items:
        if not low <= i < count:
            raise ModelError(f"{where}: tensor index {i} out of range (subgraph has {count})")
    return items


def _check_subgraph(
    sub: Raw, index: int, buffer_sizes: list[int], n_subgraphs: int, strings: _StringBuffers
) -> set[int]:
    """Check one subgraph; returns the indices of tensors that have a value after it runs."""
    where = f"subgraph {index} ({sub['name']!r})"
    tensors = sub["tensors"] or []
    for t, tensor in enumerate(tensors):
        _check_tensor(tensor, f"{where} tensor {t} ({tensor['name']!r})", buffer_sizes, strings)
    _unique([t["name"] for t in tensors], f"{where}: tensor name")
    inputs = _check_index_list(sub["inputs"], len(tensors), f"{where} inputs")
    outputs = _check_index_list(sub["outputs"], len(tensors), f"{where} outputs")
    if len(set(inputs)) != len(inputs):
        raise ModelError(f"{where}: a tensor is listed twice as a subgraph input")
    available = set(inputs) | {i for i, t in enumerate(tensors) if t["buffer"] or t["is_variable"]}
    for i in inputs:
        if tensors[i]["is_variable"]:
            raise ModelError(f"{where}: input {tensors[i]['name']!r} is a variable")
        if tensors[i]["kind"] == SEQUENCE_MAP_KIND:
            raise ModelError(f"{where}: input {tensors[i]['name']!r} is a sequence of maps (maps are outputs only)")
    written: set[int] = set()
    for o, op in enumerate(sub["operators"] or []):
        _check_operator(op, f"{where} operator {o} ({op['name']!r}, {op['op_type']})",
                        tensors, available, written, n_subgraphs)
    for i in outputs:
        if i not in available:
            raise ModelError(f"{where}: output {tensors[i]['name']!r} is never produced")
    return available


def _check_operator(
    op: Raw, where: str, tensors: list[Raw], available: set[int], written_before: set[int],
    n_subgraphs: int,
) -> None:
    """Check one operator; adds what it writes to `available` and `written_before`."""
    if not op["op_type"]:
        raise ModelError(f"{where}: empty op_type")
    if op["version"] < 1:
        raise ModelError(f"{where}: invalid opset version {op['version']}")
    inputs = _check_index_list(op["inputs"], len(tensors), f"{where} inputs", optional=True)
    outputs = _check_index_list(op["outputs"], len(tensors), f"{where} outputs", optional=True)
    for i in inputs:
        if i >= 0 and i not in available:
            raise ModelError(
                f"{where}: input {tensors[i]['name']!r} is not produced by an earlier operator "
                "(operators out of order or a cycle)"
            )
        if i >= 0 and tensors[i]["kind"] == SEQUENCE_MAP_KIND:
            raise ModelError(f"{where}: input {tensors[i]['name']!r} is a sequence of maps, "
                             "which no operator reads (maps are outputs only)")
    written = [i for i in outputs if i >= 0]
    if len(set(written)) != len(written):
        raise ModelError(f"{where}: the same tensor is written twice")
    for i in written:
        if i in inputs:
            raise ModelError(f"{where}: tensor {tensors[i]['name']!r} is both input and output")
        if tensors[i]["is_variable"]:
            raise ModelError(f"{where}: writes variable {tensors[i]['name']!r} (only signature updates may)")
        if tensors[i]["buffer"]:
            raise ModelError(f"{where}: writes constant tensor {tensors[i]['name']!r}")
        if i in available or i in written_before:
            raise ModelError(f"{where}: tensor {tensors[i]['name']!r} is produced twice")
        available.add(i)
        written_before.add(i)
    _check_attributes(op["attributes"] or [], where, tensors, n_subgraphs)


_KNOWN_ATTRIBUTE_TYPES = {v for k, v in vars(AttributeType).items() if not k.startswith("_")} - {0}


def _check_attributes(attributes: list[Raw], where: str, tensors: list[Raw], n_subgraphs: int) -> None:
    _unique([a["name"] for a in attributes], f"{where}: attribute")
    for attr in attributes:
        kind, name = attr["type"], attr["name"]
        if kind not in _KNOWN_ATTRIBUTE_TYPES:
            raise ModelError(f"{where}: attribute {name!r} has unknown type {kind}")
        if kind in (AttributeType.TENSOR, AttributeType.TENSORS):
            refs = _check_index_list(attr["tensors"], len(tensors), f"{where} attribute {name!r}")
            if kind == AttributeType.TENSOR and len(refs) != 1:
                raise ModelError(f"{where}: attribute {name!r} must reference exactly one tensor")
            if any(not tensors[r]["buffer"] for r in refs):
                raise ModelError(f"{where}: attribute {name!r} references a tensor without data")
        if kind in (AttributeType.GRAPH, AttributeType.GRAPHS):
            refs = [] if attr["graphs"] is None else [int(g) for g in attr["graphs"]]
            if kind == AttributeType.GRAPH and len(refs) != 1:
                raise ModelError(f"{where}: attribute {name!r} must reference exactly one subgraph")
            for g in refs:
                if not 0 < g < n_subgraphs:
                    raise ModelError(f"{where}: attribute {name!r} references subgraph {g}, "
                                     f"valid are 1..{n_subgraphs - 1}")
        if kind == AttributeType.STRING and attr["s"] is not None:
            try:
                bytes(attr["s"]).decode("utf-8")
            except UnicodeDecodeError:
                raise ModelError(f"{where}: attribute {name!r} is not valid UTF-8") from None


def _subgraph_refs(sub: Raw) -> list[int]:
    """The subgraphs `sub`'s operators hold in attributes, once per reference."""
    refs: list[int] = []
    for op in sub["operators"] or []:
        for attr in op["attributes"] or []:
            if attr["type"] in (AttributeType.GRAPH, AttributeType.GRAPHS) and attr["graphs"] is not None:
                refs.extend(int(g) for g in attr["graphs"])
    return refs


def _check_subgraph_references(subgraphs: list[Raw]) -> None:
    """Control-flow bodies must not (indirectly) contain themselves, nor nest too deep, nor
    (by sharing one body among many references, level after level) make one pass through a
    subgraph run more than max(MAX_EXPANDED_OPERATORS, EXPANSION_FACTOR x the file's operators)
    operators, counting every body a reference holds as run once (both branches of an If)."""
    references = [_subgraph_refs(s) for s in subgraphs]
    edges = [sorted(set(refs)) for refs in references]
    limit = max(MAX_EXPANDED_OPERATORS, EXPANSION_FACTOR * sum(len(s["operators"] or []) for s in subgraphs))
    expanded = [0] * len(subgraphs)  # operators one pass through each subgraph runs, its bodies' included
    state = [0] * len(subgraphs)  # 0 new, 1 on the stack, 2 done
    depth = [0] * len(subgraphs)  # longest chain of nested bodies below each subgraph
    for start in range(len(subgraphs)):
        if state[start]:
            continue
        stack = [(start, iter(edges[start]))]
        state[start] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                state[node] = 2
                depth[node] = 1 + max((depth[c] for c in edges[node]), default=0)
                if depth[node] > MAX_SUBGRAPH_DEPTH:
                    raise ModelError(f"subgraph {node}: control flow nests deeper than {MAX_SUBGRAPH_DEPTH}")
                expanded[node] = len(subgraphs[node]["operators"] or []) + sum(expanded[c] for c in references[node])
                if expanded[node] > limit:
                    raise ModelError(f"subgraph {node}: with its control-flow bodies (shared bodies counted once per "
                                     f"reference) one pass runs {expanded[node]} operators, over the limit of {limit}")
                stack.pop()
            elif state[child] == 1:
                raise ModelError(f"subgraph {child} contains itself through control-flow attributes")
            elif state[child] == 0:
                state[child] = 1
                stack.append((child, iter(edges[child])))


def _check_signatures(signatures: list[Raw], subgraphs: list[Raw], available: list[set[int]]) -> None:
    _unique([s["name"] for s in signatures], "signature")
    for sig in signatures:
        where = f"signature {sig['name']!r}"
        if not sig["name"]:
            raise ModelError("a signature has an empty name")
        if sig["subgraph"] >= len(subgraphs):
            raise ModelError(f"{where}: subgraph {sig['subgraph']} out of range")
        sub = subgraphs[sig["subgraph"]]
        n = len(sub["tensors"] or [])
        graph_inputs = {int(i) for i in (sub["inputs"] if sub["inputs"] is not None else [])}
        for kind in ("inputs", "outputs"):
            refs = sig[kind] or []
            _unique([r["name"] for r in refs], f"{where} {kind[:-1]}")
            for ref in refs:
                if ref["tensor"] >= n:
                    raise ModelError(f"{where}: {kind[:-1]} {ref['name']!r} refers to tensor "
                                     f"{ref['tensor']}, subgraph has {n}")
                if kind == "inputs" and ref["tensor"] not in graph_inputs:
                    raise ModelError(f"{where}: input {ref['name']!r} is not a subgraph input")
                if kind == "outputs" and ref["tensor"] not in available[sig["subgraph"]]:
                    raise ModelError(f"{where}: output {ref['name']!r} is never produced")
        _unique([str(r["tensor"]) for r in sig["inputs"] or []], f"{where}: input tensor")
        _check_updates(sig["updates"] or [], where, sub["tensors"] or [], available[sig["subgraph"]])


def _check_updates(updates: list[Raw], where: str, tensors: list[Raw], available: set[int]) -> None:
    """Each update stores an available, non-variable value into a distinct variable of its type."""
    _unique([str(u["variable"]) for u in updates], f"{where}: updated variable")
    for u in updates:
        variable, value = u["variable"], u["value"]
        if variable >= len(tensors) or value >= len(tensors):
            bad = max(variable, value)
            raise ModelError(f"{where}: update refers to tensor {bad}, subgraph has {len(tensors)}")
        var, new = tensors[variable], tensors[value]
        if not var["is_variable"]:
            raise ModelError(f"{where}: updates {var['name']!r}, which is not a variable")
        if new["is_variable"] or value not in available:
            raise ModelError(f"{where}: update of {var['name']!r} takes {new['name']!r}, not a value")
        if new["kind"]:
            raise ModelError(f"{where}: update of {var['name']!r} takes {new['name']!r}, "
                             f"a {VALUE_KINDS[new['kind']]}, not a tensor")
        if new["dtype"] and new["dtype"] != var["dtype"]:
            raise ModelError(f"{where}: update of {var['name']!r} takes a value of another dtype")

"""Eager execution of a graph: each node prepared with its actual input values,
then run, one after another, with fresh output arrays.

This is how control-flow bodies (If branches, Loop and Scan bodies) run, and
how a signature runs when some output shape depends on run-time contents (a
Reshape by a computed shape, NonZero...): shape inference then needs the
values, so planning an arena ahead of time is impossible. Slower than a
planned run, never less correct.

`EagerContext` is the execution context a plan hands its kernels: control-flow
kernels run their bodies through it, on the plan's backend, without importing
this module.

`PreparedKernels` keeps the cost down: a node's kernel, once prepared, is reused
while the node sees the same input shapes and the same contents of the (small)
inputs its prepare read, so a streaming model pays for preparation once.

Values may be sequences (lists of arrays) and optionals (None or a value) too: their
specs come from the graph inputs' declarations and from the kernels that make them.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgerun.runtime.errors import MemoryBudgetError, ModelError, raise_node_failure
from edgerun.runtime.graph import Graph, Node, Value, reachable_nodes
from edgerun.runtime.kernels.base import (
    ExecutionContext,
    Kernel,
    Spec,
    TensorSpec,
    longest_string,
    spec_nbytes,
    spec_of,
)
from edgerun.runtime.kernels.registry import resolve
from edgerun.runtime.planned_body import run_planned
from edgerun.runtime.verifier import MAX_TENSOR_BYTES

CONTROL_FLOW = frozenset({"If", "Loop", "Scan"})  # their prepare runs the body: never reused
MAX_KEY_BYTES = 4096  # inputs a prepare read, compared on reuse; a node reading more is re-prepared


class _Reads(list):
    """The values list handed to a kernel's prepare, noting which inputs it looked at."""

    def __init__(self, values: list) -> None:
        super().__init__(values)
        self.read: set[int] = set()

    def __getitem__(self, index):
        if isinstance(index, slice):
            self.read.update(range(*index.indices(len(self))))
        else:
            self.read.add(index if index >= 0 else len(self) + index)
        return super().__getitem__(index)

    def __iter__(self):
        self.read.update(range(len(self)))
        return super().__iter__()

    def _all(self):
        self.read.update(range(len(self)))
        return self

    # every other way to look at the contents counts as reading them all
    def __contains__(self, item):
        return list.__contains__(self._all(), item)

    def __reversed__(self):
        return list.__reversed__(self._all())

    def __add__(self, other):
        return list.__add__(self._all(), other)

    def copy(self):
        return list(self._all())

    def index(self, *args):
        return list.index(self._all(), *args)

    def count(self, item):
        return list.count(self._all(), item)


class PreparedKernels:
    """Prepared kernels of one graph's nodes, reused across eager runs (one thread's).

    A kernel is reused when its node sees the same input dtypes and shapes and the same
    contents of every input its prepare read. Inputs are handed to prepare as private copies
    (when small), so a kernel that keeps a reference to one is unaffected by a caller that
    changes its arrays in place. Control-flow kernels (whose prepare runs the body) are never
    reused, nor kernels with a sequence or optional input or output, nor kernels whose
    prepare read more than MAX_KEY_BYTES of input contents. Random
    kernels are, as a planned run reuses them: their generator, made at prepare, advances run
    after run instead of restarting."""

    def __init__(self) -> None:
        self._entries: dict[int, tuple] = {}

    def prepare(self, node: Node, cls: type[Kernel], specs: list, values: list,
                context: ExecutionContext | None = None) -> tuple[Kernel, list[TensorSpec]]:
        """The node's kernel (made with `context`) prepared for `specs`/`values` and its
        output specs. Raises what the kernel's prepare raises."""
        shapes = tuple(specs)
        entry = self._entries.get(id(node))
        if entry is not None and entry[0] == shapes and all(_same(values[i], seen) for i, seen in entry[1]):
            return entry[2], entry[3]
        kernel = cls.for_node(node, context)
        tensors = all(s is None or isinstance(s, TensorSpec) for s in specs)
        if not tensors:
            kernel.check_kinds(specs)
        small = [v.copy() if isinstance(v, np.ndarray) and v.nbytes <= MAX_KEY_BYTES else v for v in values]
        reads = _Reads(small)
        out_specs = list(kernel.prepare(specs, reads))
        read = [(i, small[i]) for i in sorted(reads.read) if i < len(small) and small[i] is not None]
        if (node.op_type not in CONTROL_FLOW
                and tensors and all(isinstance(s, TensorSpec) for s in out_specs)
                and sum(a.nbytes for _, a in read) <= MAX_KEY_BYTES
                and all(a.nbytes <= MAX_KEY_BYTES for _, a in read)):
            self._entries[id(node)] = (shapes, read, kernel, out_specs)
        else:
            self._entries.pop(id(node), None)
        return kernel, out_specs


def _same(value, seen: np.ndarray) -> bool:
    """Bit for bit (so -0.0 differs from 0.0, and NaN equals the same NaN)."""
    return (isinstance(value, np.ndarray) and value.dtype == seen.dtype and value.shape == seen.shape
            and value.tobytes() == seen.tobytes())


@dataclass(frozen=True)
class EagerContext:
    """The ExecutionContext (runtime.kernels.base) of a plan on `backend`: nested graphs
    run eagerly, on the same backend, with kernels kept per thread (PreparedKernels).
    `work_budget` is the plan's (None: unlimited), for kernels whose work depends on values;
    `num_threads` the interpreter's (None: one per core), for kernels with parallel loops;
    `memory_budget` the plan's in bytes (None: unlimited): body plans get it, and an eager
    node whose outputs would pass it is a MemoryBudgetError before they are allocated."""

    backend: str = "cpu"
    work_budget: int | None = None
    num_threads: int | None = None
    memory_budget: int | None = None

    def run_graph(self, graph: Graph, inputs: Sequence, repeated: bool = False) -> list:
        if repeated:  # a Loop or Scan body: planned once for its input shapes (runtime.planned_body)
            outputs = run_planned(graph, inputs, self)
            if outputs is not None:
                return outputs
        return run_graph(graph, inputs, self)


_threads = threading.local()
MAX_CACHED_GRAPHS = 64


def _graph_cache(graph: Graph, backend: str) -> PreparedKernels:
    """This thread's PreparedKernels for `graph` on `backend`."""
    caches = _threads.__dict__.setdefault("caches", {})
    key = (id(graph), backend)
    entry = caches.get(key)
    if entry is None or entry[0] is not graph:
        if len(caches) >= MAX_CACHED_GRAPHS:  # graphs come and go (reloaded models): stay bounded
            caches.clear()
        entry = caches[key] = (graph, PreparedKernels())
    return entry[1]


def run_graph(graph: Graph, inputs: Sequence, context: ExecutionContext | None = None) -> list:
    """Run every node `graph.outputs` need (on `context`'s backend, "cpu" by default);
    returns the outputs in order.

    `inputs` match `graph.inputs` one to one (arrays; lists of arrays for sequences, None
    for an empty optional). Raises ModelError (naming the node) when a node cannot
    prepare or fails, or an input count mismatch.
    """
    context = context or EagerContext()
    if len(inputs) != len(graph.inputs):
        raise ModelError(f"graph {graph.name!r} takes {len(graph.inputs)} inputs, got {len(inputs)}")
    env: dict[Value, Any] = dict(zip(graph.inputs, inputs, strict=True))
    specs: dict[Value, Spec | None] = {v: spec_of(a, v.kind, v.dtype) for v, a in env.items()}
    cache = _graph_cache(graph, context.backend)
    for node in _needed(graph):
        args = [None if v is None else _read(env, v, node) for v in node.inputs]
        arg_specs = [None if v is None else specs[v] if v in specs else spec_of(a, v.kind, v.dtype)
                     for v, a in zip(node.inputs, args, strict=True)]
        outs, out_specs = _evaluate(node, args, arg_specs, context, cache)
        for value, array, spec in zip(node.outputs, outs, out_specs, strict=False):
            if value is not None:
                env[value], specs[value] = array, spec
    return [_read(env, v, None) for v in graph.outputs]


def run_node(node: Node, inputs: list, context: ExecutionContext | None = None,
             cache: PreparedKernels | None = None) -> list:
    """Prepare `node`'s kernel with `inputs` as known values (or reuse the one `cache` holds),
    run it on `context`'s backend ("cpu" by default), return its outputs. An input's spec
    comes from its value and the declared kind of the node's input Value."""
    specs = [None if v is None else spec_of(a, v.kind, v.dtype) for v, a in zip(node.inputs, inputs, strict=False)]
    return _evaluate(node, inputs, specs, context or EagerContext(), cache)[0]


def _evaluate(node: Node, inputs: list, specs: list, context: ExecutionContext,
              cache: PreparedKernels | None) -> tuple[list, list[Spec]]:
    """`node`'s outputs and their specs, for `inputs` whose specs are `specs`."""
    cls = resolve(node.domain, node.op_type, node.version, node.name, context.backend)
    try:
        if cache is None:
            kernel: Kernel = cls.for_node(node, context)
            kernel.check_kinds(specs)
            out_specs = list(kernel.prepare(specs, list(inputs)))
        else:
            kernel, out_specs = cache.prepare(node, cls, specs, list(inputs), context)
        for spec in out_specs:
            if isinstance(spec, TensorSpec) and (any(d < 0 for d in spec.shape) or spec.nbytes > MAX_TENSOR_BYTES):
                raise ModelError(f"node {node.name!r}: output shape {spec.shape} is invalid or too large")
        _check_memory(node, inputs, out_specs, getattr(context, "memory_budget", None))
        outs = kernel.evaluate(list(inputs), out_specs)
    except Exception as exc:
        raise_node_failure(node, exc)
    return outs, out_specs


def _check_memory(node: Node, inputs: list, out_specs: list[Spec], budget: int | None) -> None:
    """MemoryBudgetError when `node`'s tensor outputs would take more than `budget` bytes
    (strings counted at the longest its string inputs allow); nothing when `budget` is None."""
    if budget is None:
        return
    strings = any(isinstance(s, TensorSpec) and s.dtype.hasobject for s in out_specs)
    longest = longest_string(inputs) if strings else 0
    need = sum(spec_nbytes(spec, longest) for spec in out_specs)
    if need > budget:
        raise MemoryBudgetError(f"node {node.name!r} ({node.op_type}): its outputs need {need} bytes, "
                                f"over the memory budget of {budget}")


def _read(env: dict[Value, Any], value: Value, node: Node | None) -> Any:
    if value in env:
        return env[value]
    if value.data is not None:
        return value.data
    where = f"node {node.name!r} ({node.op_type})" if node is not None else "graph output"
    raise ModelError(f"{where}: {value.name!r} is neither an input, a constant, nor produced before it")


def _needed(graph: Graph) -> list[Node]:
    """The nodes the outputs depend on, in graph order (cached on the graph)."""
    cached = getattr(graph, "_eager_needed", None)
    if cached is None:
        cached = graph._eager_needed = reachable_nodes(graph, graph.outputs)  # type: ignore[attr-defined]
    return cached

"""Eager execution of a graph: each node prepared with its actual input values,
then run, one after another, with fresh output arrays.

This is how control-flow bodies (If branches, Loop and Scan bodies) run, and
how a signature runs when some output shape depends on run-time contents (a
Reshape by a computed shape, NonZero...): shape inference then needs the
values, so planning an arena ahead of time is impossible. Slower than a
planned run (a prepare per node per run), never less correct.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from runtime.errors import EdgerunError, ModelError
from runtime.graph import Graph, Node, Value
from runtime.kernels.base import Kernel, TensorSpec
from runtime.kernels.registry import resolve
from runtime.verifier import MAX_TENSOR_BYTES


def run_graph(graph: Graph, inputs: Sequence[np.ndarray], backend: str = "cpu") -> list[np.ndarray]:
    """Run every node `graph.outputs` need; returns the outputs in order.

    `inputs` match `graph.inputs` one to one. Raises ModelError (naming the node)
    when a node cannot prepare or fails, or an input count mismatch.
    """
    if len(inputs) != len(graph.inputs):
        raise ModelError(f"graph {graph.name!r} takes {len(graph.inputs)} inputs, got {len(inputs)}")
    env: dict[Value, np.ndarray] = dict(zip(graph.inputs, inputs, strict=True))
    for node in _needed(graph):
        outs = run_node(node, [None if v is None else _read(env, v, node) for v in node.inputs], backend)
        for value, array in zip(node.outputs, outs, strict=False):
            if value is not None:
                env[value] = array
    return [_read(env, v, None) for v in graph.outputs]


def run_node(node: Node, inputs: list[np.ndarray | None], backend: str = "cpu") -> list[np.ndarray]:
    """Prepare `node`'s kernel with `inputs` as known values, run it, return its outputs."""
    kernel: Kernel = resolve(node.domain, node.op_type, node.version, node.name, backend).for_node(node)
    specs = [None if a is None else TensorSpec(a.dtype, a.shape) for a in inputs]
    try:
        out_specs = list(kernel.prepare(specs, list(inputs)))
        for spec in out_specs:
            if any(d < 0 for d in spec.shape) or spec.nbytes > MAX_TENSOR_BYTES:
                raise ModelError(f"node {node.name!r}: output shape {spec.shape} is invalid or too large")
        outs = [np.empty(spec.shape, spec.dtype) for spec in out_specs]
        kernel.run(list(inputs), outs)
    except EdgerunError:
        raise
    except Exception as exc:  # a kernel bug or bad data must not escape as a numpy error
        raise ModelError(f"node {node.name!r} ({node.op_type}) failed: {exc}") from exc
    return outs


def _read(env: dict[Value, np.ndarray], value: Value, node: Node | None) -> np.ndarray:
    if value in env:
        return env[value]
    if value.data is not None:
        return value.data
    where = f"node {node.name!r} ({node.op_type})" if node is not None else "graph output"
    raise ModelError(f"{where}: {value.name!r} is neither an input, a constant, nor produced before it")


def _needed(graph: Graph) -> list[Node]:
    """The nodes the outputs depend on, in graph order (cached on the graph)."""
    cached = getattr(graph, "_eager_needed", None)
    if cached is not None:
        return cached
    producer = {v: i for i, n in enumerate(graph.nodes) for v in n.outputs if v is not None}
    stack = [producer[v] for v in graph.outputs if v in producer]
    needed: set[int] = set()
    while stack:
        index = stack.pop()
        if index not in needed:
            needed.add(index)
            stack.extend(producer[v] for v in graph.nodes[index].inputs if v is not None and v in producer)
    nodes = [n for i, n in enumerate(graph.nodes) if i in needed]
    graph._eager_needed = nodes  # type: ignore[attr-defined]
    return nodes

"""Graph facts and edits shared by the passes: who produces and who uses a value, which
values must keep their identity, replacing one value by another, fresh names.

Passes work on the top-level graph only. A node with nested graphs (If/Loop/Scan
bodies) counts as using every Value referenced anywhere inside them, so an outer
value a body reads by object (or receives as a capture input) is never removed.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from edgerun.runtime.graph import Graph, Node, Value, graphs_within


def nested_graphs(node: Node) -> list[Graph]:
    """The graphs held directly in `node`'s attributes (not those nested deeper)."""
    found: list[Graph] = []
    for attr in node.attrs.values():
        for item in attr if isinstance(attr, list) else [attr]:
            if isinstance(item, Graph):
                found.append(item)
    return found


def _graph_values(graph: Graph) -> Iterator[Value]:
    """Every Value a graph and the graphs nested in it refer to (repeats included; a nested
    graph held by several nodes is walked once)."""
    for g in (graph, *graph.subgraphs()):
        yield from _own_values(g)


def _own_values(graph: Graph) -> Iterator[Value]:
    """The Values `graph` itself refers to (not those of its nested graphs)."""
    yield from graph.inputs
    yield from graph.outputs
    for node in graph.nodes:
        yield from (v for v in (*node.inputs, *node.outputs) if v is not None)


def used_values(node: Node) -> list[Value]:
    """The values `node` reads: its inputs plus everything its nested graphs refer to
    (each nested graph walked once, however many references share it)."""
    used = [v for v in node.inputs if v is not None]
    for sub in graphs_within([node]):
        used.extend(_own_values(sub))
    return used


def producers(graph: Graph) -> dict[Value, Node]:
    """Value -> the top-level node that computes it."""
    return {v: node for node in graph.nodes for v in node.outputs if v is not None}


def consumers(graph: Graph) -> dict[Value, list[Node]]:
    """Value -> the top-level nodes that use it (each node once per value)."""
    users: dict[Value, list[Node]] = {}
    for node in graph.nodes:
        for value in dict.fromkeys(used_values(node)):
            users.setdefault(value, []).append(node)
    return users


def roots(graph: Graph) -> list[Value]:
    """The values a run must deliver: graph outputs, every signature's outputs and the
    new values of its variable updates."""
    found = list(graph.outputs)
    for sig in graph.signatures.values():
        found.extend(sig.outputs.values())
        found.extend(sig.updates.values())
    return found


def feeds(graph: Graph) -> set[Value]:
    """Values a caller supplies: graph and signature inputs (even those with a default)."""
    fed = set(graph.inputs)
    for sig in graph.signatures.values():
        fed.update(sig.inputs.values())
    return fed


def pinned(graph: Graph) -> set[Value]:
    """Values whose identity (object and name) the outside world sees: feeds, roots and
    variables that signatures update. A pass may not replace or drop them."""
    found = feeds(graph) | set(roots(graph))
    for sig in graph.signatures.values():
        found.update(sig.updates)
    return found


def constant_data(value: Value | None, fed: set[Value]) -> np.ndarray | None:
    """The contents of a constant value, None for anything else (inputs with a default
    value and variables are not constants)."""
    if value is None or not value.is_constant or value in fed:
        return None
    return value.data


def sole_consumer(value: Value, users: dict[Value, list[Node]], keep: set[Value]) -> Node | None:
    """The only node using `value`, or None when it has several, none, or is pinned."""
    found = users.get(value, [])
    return found[0] if len(found) == 1 and value not in keep else None


def replace_value(graph: Graph, old: Value, new: Value) -> None:
    """Make every use of `old` (node inputs, graph outputs, signatures) use `new`
    instead, in `graph` and every graph nested in it."""
    for g in (graph, *graph.subgraphs()):  # each nested graph once, however many nodes share it
        for node in g.nodes:
            node.inputs = [new if v is old else v for v in node.inputs]
        g.outputs = [new if v is old else v for v in g.outputs]
        for sig in g.signatures.values():
            sig.outputs = {k: new if v is old else v for k, v in sig.outputs.items()}
            sig.updates = {k: new if v is old else v for k, v in sig.updates.items()}


def make_constant(value: Value, array: np.ndarray) -> None:
    """Turn a node output into a constant holding `array` (same object, same name)."""
    array = _contiguous(array)
    value.data, value.dtype, value.shape = array, array.dtype, array.shape


def _contiguous(array: np.ndarray) -> np.ndarray:
    """`array` in C order, 0-d arrays staying 0-d (np.ascontiguousarray makes them 1-d)."""
    array = np.asarray(array)
    return array if array.flags.c_contiguous else array.copy(order="C")


class Names:
    """Fresh value names for a graph: unique against every name in it and its subgraphs."""

    def __init__(self, graph: Graph) -> None:
        self.taken = {v.name for v in _graph_values(graph)}
        for sig in graph.signatures.values():
            self.taken.update(v.name for v in (*sig.inputs.values(), *sig.outputs.values()))

    def fresh(self, base: str) -> str:
        name, i = base, 0
        while name in self.taken:
            i += 1
            name = f"{base}_{i}"
        self.taken.add(name)
        return name

    def constant(self, base: str, array: np.ndarray) -> Value:
        """A new constant Value named after `base`."""
        array = _contiguous(array)
        return Value(self.fresh(base), array.dtype, array.shape, data=array)


def float_dtype(node: Node) -> bool | None:
    """Whether `node`'s inputs are floating point: True/False when some input's dtype is
    known, None when none is."""
    for value in node.inputs:
        if value is not None and value.dtype is not None:
            return value.dtype.kind == "f"
    return None

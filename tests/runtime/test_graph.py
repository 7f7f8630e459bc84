"""runtime.graph.reachable_nodes: the one search for the nodes some values depend on."""

from __future__ import annotations

import numpy as np

from edgerun.runtime.graph import GraphBuilder, reachable_nodes


def _diamond():
    """x -> a -> (b, c) -> d ; e reads x only; order a, e, b, c, d."""
    g = GraphBuilder("diamond")
    x = g.input("x", np.float32, (2,))
    a = g.op("Relu", [x], name="a")
    e = g.op("Neg", [x], name="e")
    b = g.op("Neg", [a], name="b")
    c = g.op("Abs", [a], name="c")
    d = g.op("Add", [b, c], name="d")
    g.output(d, "out")
    return g.build(), {"x": x, "a": a, "b": b, "c": c, "d": d, "e": e}


def names(nodes):
    return [n.name for n in nodes]


def test_the_nodes_a_root_needs_come_in_graph_order_each_once():
    graph, v = _diamond()
    assert names(reachable_nodes(graph, [v["d"]])) == ["a", "b", "c", "d"]
    assert names(reachable_nodes(graph, [v["e"], v["b"]])) == ["a", "e", "b"]
    assert reachable_nodes(graph, [v["x"]]) == []  # produced by no node


def test_leaves_stop_the_walk():
    graph, v = _diamond()
    assert names(reachable_nodes(graph, [v["d"]], leaves={v["a"]})) == ["b", "c", "d"]
    assert reachable_nodes(graph, [v["d"]], leaves={v["d"]}) == []  # a root that is a leaf


def test_reads_widens_what_a_node_depends_on():
    graph, v = _diamond()
    extra = {"b": [v["e"]]}  # as if b's nested graph used e
    got = reachable_nodes(graph, [v["b"]], reads=lambda n: [*n.inputs, *extra.get(n.name, [])])
    assert names(got) == ["a", "e", "b"]

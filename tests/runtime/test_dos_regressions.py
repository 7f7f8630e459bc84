"""Denial-of-service regressions for untrusted models: each test builds a small model that used
to take minutes or gigabytes and asserts the specific edgerun error (or a correct result) within
a time bound the old code failed by far.

- Loop (runtime/kernels/control.py): a condition that stays true stops at MAX_LOOP_ITERATIONS
  with a ModelError (it used to return silently), and all iterations together count against the
  work budget (it used to check one iteration at a time).
- Pad (runtime/kernels/pad.py): no index array as long as a padded axis at prepare, before the
  memory budget has seen the output (a 2 GiB allocation for paddings [[0, 2**28], [0, 0]]).
- Shared bodies (runtime/graph.py, plan.py, verifier.py, writer.py, converters/optimize/rewrite.py):
  If nodes sharing one body level after level are walked once per distinct graph (they were
  walked once per path: 4x per level), and the verifier refuses a file whose shared bodies
  would run exponentially many operators.
- GraphBuilder names: n values of one name cost linear time (they cost n squared).
"""

from __future__ import annotations

import time
import tracemalloc

import numpy as np
import pytest

from edgerun.converters.optimize import rewrite
from edgerun.runtime import Interpreter, serialize
from edgerun.runtime.errors import MemoryBudgetError, ModelError, WorkBudgetError
from edgerun.runtime.graph import Graph, GraphBuilder
from edgerun.runtime.kernels import control


def _elapsed(fn) -> float:  # noqa: ANN001
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# ---------------------------------------------------------------- Loop
def _loop(n: int, step: str, constant_start: bool = True, trip: int | None = None, cond: bool = True) -> Graph:
    """Loop over x (n float32s, start all ones): x = Abs(x) ("abs": never grows, so `x < 10`
    stays true) or x = x + 1 ("add"); the condition out is max(x) < 10. `trip`/`cond`: whether
    the node gets a trip count / an initial condition."""
    body = GraphBuilder("body", opset=17)
    body.input("i", np.int64, ())
    body.input("cond_in", np.bool_, ())
    x = body.input("x", np.float32, (n,))
    if step == "abs":
        nxt = body.op("Abs", [x], name="abs")
    else:
        nxt = body.op("Add", [x, body.constant("one", np.array(1, np.float32))], name="add")
    high = body.op("ReduceMax", [nxt], name="max", keepdims=0)
    body.output(body.op("Less", [high, body.constant("ten", np.array(10, np.float32))], name="less"), "cond_out")
    body.output(nxt, "x_out")
    g = GraphBuilder("outer", opset=17)
    start = g.constant("x0", np.ones(n, np.float32)) if constant_start else g.input("x0", np.float32, (n,))
    m = None if trip is None else g.constant("m", np.array(trip, np.int64))
    c = g.constant("c0", np.array(True)) if cond else None
    g.output(g.op("Loop", [m, c, start], body=body.build(), name="loop"), "y")
    return g.build()


def test_the_loop_cap_is_sane_for_an_edge_runtime():
    assert control.MAX_LOOP_ITERATIONS <= 1_000_000


def test_a_loop_whose_condition_stays_true_is_refused_at_the_cap(monkeypatch):
    monkeypatch.setattr(control, "MAX_LOOP_ITERATIONS", 2000)
    with pytest.raises(ModelError, match=r"node 'loop' \(Loop\): Loop ran 2000 iterations and its condition "
                                         r"is still true; a Loop may run at most 2000 iterations"):
        Interpreter(_loop(1, "abs"))  # constant inputs: folded while the interpreter is made


def test_a_trip_count_past_the_cap_is_refused(monkeypatch):
    monkeypatch.setattr(control, "MAX_LOOP_ITERATIONS", 2000)
    with pytest.raises(ModelError, match=r"Loop ran 2000 iterations and its trip count 1000000000000 is not reached"):
        Interpreter(_loop(1, "abs", trip=10**12, cond=False))


@pytest.mark.parametrize("constant_start", [True, False])
def test_the_work_budget_counts_every_iteration_of_a_loop(monkeypatch, constant_start):
    monkeypatch.setattr(control, "MAX_LOOP_ITERATIONS", 20_000)  # unfixed: 20,000 iterations, then silence
    model = _loop(1000, "abs", constant_start)

    def make_and_run():
        Interpreter(model, work_budget=10**6).run({} if constant_start else {"x0": np.ones(1000, np.float32)})

    start = time.perf_counter()
    with pytest.raises(WorkBudgetError, match=r"node 'loop' \(Loop\): (\d+) iterations of its body take an "
                                              r"estimated \d+ multiply-adds, over the work budget of 1000000") as info:
        make_and_run()
    assert time.perf_counter() - start < 2
    # each iteration reads and writes 1000 floats: stopped after about 10**6 / 2000 of them
    iterations = int(str(info.value).split("): ")[1].split()[0])
    assert 250 <= iterations <= 1000


def test_a_loop_within_the_work_budget_still_runs():
    got = Interpreter(_loop(1000, "add", constant_start=False), work_budget=10**6).run(
        {"x0": np.ones(1000, np.float32)})["y"]
    np.testing.assert_array_equal(got, np.full(1000, 10, np.float32))  # 1 + 9 iterations, then max < 10 fails


def test_the_work_budget_counts_every_iteration_of_a_scan():
    body = GraphBuilder("body", opset=17)
    acc = body.input("acc", np.float32, (500,))
    row = body.input("row", np.float32, (500,))
    body.output(body.op("Add", [acc, row], name="add"), "acc_out")
    g = GraphBuilder("outer", opset=17)
    rows = g.input("rows", np.float32, (4000, 500))
    g.output(g.op("Scan", [g.constant("zero", np.zeros(500, np.float32)), rows], body=body.build(),
                  num_scan_inputs=1, name="scan"), "total")
    rows_in = {"rows": np.ones((4000, 500), np.float32)}
    with pytest.raises(WorkBudgetError, match=r"node 'scan' \(Scan\): \d+ iterations of its body"):
        Interpreter(g.build(), work_budget=10**5).run(rows_in)
    np.testing.assert_array_equal(Interpreter(g.build()).run(rows_in)["total"], np.full(500, 4000, np.float32))


# ---------------------------------------------------------------- Pad
def _pad(mode: str, pads: list[int], shape: tuple[int, ...] = (2, 2)) -> Graph:
    g = GraphBuilder("pad", opset=19)
    x = g.input("x", np.float32, shape)
    g.output(g.op("Pad", [x, g.constant("pads", np.array(pads, np.int64))], name="pad", mode=mode), "y")
    return g.build()


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge", "wrap"])
def test_a_huge_pad_is_refused_by_the_memory_budget_before_allocating(mode):
    model = _pad(mode, [0, 0, 2**28, 0])  # paddings [[0, 2**28], [0, 0]]: a 2 GiB output
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(MemoryBudgetError, match=r"over the memory budget of 1048576"):
            Interpreter(model, memory_budget=1 << 20)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - start < 2
    assert peak < 64 << 20  # unfixed: a 2 GiB index array at prepare


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge", "wrap"])
def test_pad_modes_still_match_numpy_on_every_run(mode):
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    it = Interpreter(_pad(mode, [2, 1, 1, 5], (3, 4)))
    want = np.pad(x, [(2, 1), (1, 5)], mode=mode)
    for _ in range(2):  # the second run reuses what the first made
        np.testing.assert_array_equal(it.run({"x": x})["y"], want)


# ---------------------------------------------------------------- shared bodies
def _shared_ifs(depth: int, ifs_per_level: int) -> Graph:
    """`depth` levels of bodies; each level's `ifs_per_level` If nodes hold the level below as
    both branches (one Graph object: 2 x ifs_per_level references to it)."""
    body = None
    for k in range(depth + 1):
        b = GraphBuilder(f"b{k}" if k < depth else "top", opset=17)
        c = b.input("c", np.bool_, ())
        x = b.input("x", np.float32, ())
        if body is None:
            x = b.op("Identity", [x], name="id")
        for j in range(ifs_per_level if body is not None else 0):
            x = b.op("If", [c, c, x], then_branch=body, else_branch=body, captures=2, name=f"if{j}")
        b.output(x, "y")
        body = b.build()
    return body


def test_shared_bodies_are_walked_once_per_graph():
    graph = _shared_ifs(13, 2)  # 4**13 paths to the innermost body
    assert _elapsed(graph.subgraphs) < 1
    assert len(graph.subgraphs()) == 13
    assert len({id(g) for g in graph.subgraphs()}) == 13
    assert _elapsed(lambda: (rewrite.consumers(graph), rewrite.Names(graph))) < 1
    one = graph.nodes[0]
    assert _elapsed(lambda: rewrite.used_values(one)) < 1


def test_a_file_sharing_bodies_level_after_level_is_refused_quickly():
    graph = _shared_ifs(13, 2)
    start = time.perf_counter()
    data = serialize(graph)  # unfixed: minutes (the writer walked every path)
    assert len(data) < 32 << 10
    with pytest.raises(ModelError, match=r"subgraph \d+: with its control-flow bodies \(shared bodies counted once "
                                         r"per reference\) one pass runs \d+ operators, over the limit of 65536"):
        Interpreter(data)
    assert time.perf_counter() - start < 2


def test_a_shared_body_chain_within_the_limit_loads_fast_and_runs():
    data = serialize(_shared_ifs(13, 1))  # 2 references a level: 2**14 operators per pass
    start = time.perf_counter()
    it = Interpreter(data)
    assert time.perf_counter() - start < 2
    assert it.run({"c": np.array(True), "x": np.array(3.5, np.float32)})["y"] == np.float32(3.5)


# ---------------------------------------------------------------- builder names
def test_many_values_of_one_name_get_unique_names_in_linear_time():
    g = GraphBuilder("chain")
    x = g.input("x", np.float32, (1,))

    def build():
        nonlocal x
        for _ in range(12_000):
            x = g.op("Relu", [x], name="t")

    assert _elapsed(build) < 2  # unfixed: about 12 s (quadratic)
    names = [n.name for n in g.build().nodes]
    assert names[:3] == ["t", "t_1", "t_2"] and names[-1] == "t_11999"
    assert len(set(names)) == len(names)

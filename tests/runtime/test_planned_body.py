"""Loop and Scan bodies run as planned graphs (runtime.planned_body): one plan per body and
input shapes, reused by every iteration. Oracles: numpy closed forms; the eager path."""

from __future__ import annotations

import numpy as np
import pytest

from edgerun.runtime import planned_body
from edgerun.runtime.errors import ModelError
from edgerun.runtime.graph import GraphBuilder
from edgerun.runtime.interpreter import Interpreter


def _power_loop(grow: bool = False):
    """acc_{k+1} = tanh(acc_k @ w + i) for i < M (M an input); with `grow`, acc also gets one
    more column each iteration (shapes that change from iteration to iteration)."""
    body = GraphBuilder("body", opset=17)
    i = body.input("i", np.int64, ())
    body.input("cond_in", np.bool_, ())
    acc = body.input("acc", np.float32, (2, -1))
    w = body.input("w", np.float32, (-1, -1))  # a captured outer value
    step = body.op("Cast", [i], name="step", to=1)
    if grow:
        nxt = body.op("Concat", [acc, body.op("Slice", [acc, body.constant("s", np.array([0], np.int64)),
                                                         body.constant("e", np.array([1], np.int64)),
                                                         body.constant("a", np.array([1], np.int64))],
                                              name="first")], name="grow", axis=1)
    else:
        nxt = body.op("Tanh", [body.op("Add", [body.op("MatMul", [acc, w], name="mm"), step], name="add")],
                      name="tanh")
    body.output(body.op("Identity", [body.constant("true", np.array(True))], name="keep"), "cond_out")
    body.output(nxt, "acc_out")
    g = GraphBuilder("loop", opset=17)
    m = g.input("m", np.int64, ())
    start = g.input("start", np.float32, (2, 3))
    w_in = g.input("w", np.float32, (-1, -1))
    g.output(g.op("Loop", [m, None, start, w_in], body=body.build(), captures=1, name="loop"), "final")
    return g.build()


def _closed_form(m: int, start: np.ndarray, w: np.ndarray) -> np.ndarray:
    acc = start.astype(np.float64)
    for i in range(m):
        acc = np.tanh(acc @ w + i)
    return acc


def test_a_loop_body_is_planned_once_and_reused_by_every_iteration(monkeypatch):
    made = []
    original = planned_body._plan
    monkeypatch.setattr(planned_body, "_plan", lambda *a: made.append(a[0].name) or original(*a))
    it = Interpreter(_power_loop())
    rng = np.random.default_rng(0)
    start, w = rng.standard_normal((2, 3)).astype(np.float32), (rng.standard_normal((3, 3)) / 2).astype(np.float32)
    for m in (40, 7):
        got = it.run({"m": np.array(m, np.int64), "start": start, "w": w})["final"]
        np.testing.assert_allclose(got, _closed_form(m, start, w), rtol=1e-5, atol=1e-6)
    assert made == ["body"]  # one plan for 47 iterations over two runs


def test_planned_and_eager_bodies_agree(monkeypatch):
    rng = np.random.default_rng(1)
    feeds = {"m": np.array(12, np.int64), "start": rng.standard_normal((2, 3)).astype(np.float32),
             "w": rng.standard_normal((3, 3)).astype(np.float32)}
    planned = Interpreter(_power_loop()).run(feeds)["final"]
    monkeypatch.setattr(planned_body, "run_planned", lambda *a: None)
    from edgerun.runtime import eager

    monkeypatch.setattr(eager, "run_planned", lambda *a: None)
    np.testing.assert_array_equal(Interpreter(_power_loop()).run(feeds)["final"], planned)


def test_a_body_whose_shapes_keep_changing_falls_back_to_eager_runs(monkeypatch):
    made = []
    original = planned_body._plan
    monkeypatch.setattr(planned_body, "_plan", lambda *a: made.append(1) or original(*a))
    it = Interpreter(_power_loop(grow=True))
    start = np.arange(6, dtype=np.float32).reshape(2, 3)
    got = it.run({"m": np.array(10, np.int64), "start": start, "w": np.zeros((3, 3), np.float32)})["final"]
    want = start
    for _ in range(10):
        want = np.concatenate([want, want[:, :1]], axis=1)
    np.testing.assert_array_equal(got, want)
    assert len(made) == planned_body.MAX_PLANS_PER_BODY  # then eager for the rest


def test_a_failing_body_is_a_model_error_naming_the_node():
    it = Interpreter(_power_loop())
    with pytest.raises(ModelError, match="mm"):  # (2, 3) @ (4, 4): the body's MatMul cannot run
        it.run({"m": np.array(3, np.int64), "start": np.ones((2, 3), np.float32), "w": np.ones((4, 4), np.float32)})


def test_a_scan_body_is_planned_too(monkeypatch):
    made = []
    original = planned_body._plan
    monkeypatch.setattr(planned_body, "_plan", lambda *a: made.append(1) or original(*a))
    body = GraphBuilder("scan_body", opset=17)
    total = body.input("total", np.float32, (4,))
    row = body.input("row", np.float32, (4,))
    nxt = body.op("Add", [total, body.op("Mul", [row, row], name="sq")], name="acc")
    body.output(nxt, "total_out")
    body.output(body.op("Identity", [nxt], name="copy"), "scan_out")
    g = GraphBuilder("scan", opset=17)
    init, rows = g.input("init", np.float32, (4,)), g.input("rows", np.float32, (30, 4))
    final, partial = g.op("Scan", [init, rows], body=body.build(), num_scan_inputs=1, name="scan",
                          num_outputs=2)
    g.output(final, "final")
    g.output(partial, "partial")
    x = np.random.default_rng(2).standard_normal((30, 4)).astype(np.float32)
    out = Interpreter(g.build()).run({"init": np.zeros(4, np.float32), "rows": x})
    np.testing.assert_allclose(out["partial"], np.cumsum(x * x, axis=0), rtol=1e-5)
    np.testing.assert_allclose(out["final"], (x * x).sum(axis=0), rtol=1e-5)
    assert len(made) == 1

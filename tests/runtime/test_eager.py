"""Plans whose output shapes depend on run-time contents run eagerly; control flow
bodies run through runtime.eager. Oracles: numpy's reshape and plain Python."""

from __future__ import annotations

import numpy as np
import pytest

from edgerun.runtime.errors import InputError, ModelError, ValueNeeded
from edgerun.runtime.graph import GraphBuilder
from edgerun.runtime.interpreter import Interpreter
from edgerun.runtime.plan import ExecutionPlan


def _reshape_by_input(shape_length: int = -1):
    """y = Relu(Reshape(x, shape)), with `shape` an input: of dynamic length (-1) it cannot
    be specialized on, so the plan runs eagerly; of a fixed length, plans specialize on it."""
    g = GraphBuilder("reshape_by_input", opset=17)
    x = g.input("x", np.float32, (-1, 6))
    shape = g.input("shape", np.int64, (shape_length,))
    g.output(g.op("Relu", [g.op("Reshape", [x, shape], name="reshape")], name="relu"), "y")
    return g.build()


def test_reshape_by_a_runtime_shape_runs_eagerly_and_matches_numpy():
    it = Interpreter(_reshape_by_input())
    plan = it._plans["serving_default"]
    assert plan.eager  # the reshape target is an input: no arena can be planned ahead
    x = np.arange(-12, 12, dtype=np.float32).reshape(4, 6)
    for target in ([3, 8], [8, -1], [24, 1]):
        got = it.run({"x": x, "shape": np.array(target, np.int64)})["y"]
        np.testing.assert_array_equal(got, np.maximum(x.reshape(target), 0))
    got = it.run({"x": x[:1], "shape": np.array([2, 3], np.int64)})["y"]  # a new batch size too
    np.testing.assert_array_equal(got, np.maximum(x[:1].reshape(2, 3), 0))


def test_eager_outputs_are_fresh_arrays():
    it = Interpreter(_reshape_by_input())
    x = np.ones((2, 6), np.float32)
    first = it.run({"x": x, "shape": np.array([3, 4], np.int64)})["y"]
    first[...] = -5
    again = it.run({"x": x, "shape": np.array([3, 4], np.int64)})["y"]
    np.testing.assert_array_equal(again, np.ones((3, 4), np.float32))


def test_eager_bad_runtime_shape_is_a_model_error_naming_the_node():
    it = Interpreter(_reshape_by_input())
    with pytest.raises(ModelError, match="reshape"):
        it.run({"x": np.ones((2, 6), np.float32), "shape": np.array([5, 5], np.int64)})
    # the interpreter is still usable afterwards
    out = it.run({"x": np.ones((2, 6), np.float32), "shape": np.array([4, 3], np.int64)})["y"]
    assert out.shape == (4, 3)


def test_eager_still_checks_inputs():
    it = Interpreter(_reshape_by_input())
    with pytest.raises(InputError, match="shape"):
        it.run({"x": np.ones((2, 6), np.float32), "shape": np.array([4, 3], np.int32)})


def test_value_needed_is_a_model_error_naming_node_and_input():
    error = ValueNeeded("n1", "Reshape", 1)
    assert isinstance(error, ModelError) and "n1" in str(error) and "input 1" in str(error)


def _counting_loop(trip: int | None, stop_at: float | None):
    """Loop: acc += 1 each iteration while acc < stop_at (if given), `trip` times at most;
    also scans acc out each iteration."""
    body = GraphBuilder("body", opset=17)
    body.input("i", np.int64, ())
    body.input("cond_in", np.bool_, ())
    acc = body.input("acc", np.float32, (1,))
    one = body.constant("one", np.ones(1, np.float32))
    nxt = body.op("Add", [acc, one], name="inc")
    if stop_at is None:
        cond = body.op("Identity", [body.constant("true", np.array(True))], name="keep")
    else:
        limit = body.constant("limit", np.array([stop_at], np.float32))
        cond = body.op("Reshape", [body.op("Less", [nxt, limit], name="less"),
                                   body.constant("scalar", np.zeros(0, np.int64))], name="squeeze")
    body.output(cond, "cond_out")
    body.output(nxt, "acc_out")
    body.output(body.op("Identity", [nxt], name="scan"), "scan_out")
    g = GraphBuilder("loop", opset=17)
    start = g.input("start", np.float32, (1,))
    m = g.constant("m", np.array(trip, np.int64)) if trip is not None else None
    final, scanned = g.op("Loop", [m, None, start], body=body.build(), name="loop",
                          output_names=["final", "scanned"])
    g.output(final, "final")
    g.output(scanned, "scanned")
    return g.build()


def test_loop_with_trip_count_matches_python():
    it = Interpreter(_counting_loop(trip=5, stop_at=None))
    out = it.run({"start": np.array([2.0], np.float32)})
    np.testing.assert_array_equal(out["final"], [7.0])
    np.testing.assert_array_equal(out["scanned"], np.array([[3.0], [4.0], [5.0], [6.0], [7.0]], np.float32))


def test_loop_stops_on_its_condition():
    it = Interpreter(_counting_loop(trip=100, stop_at=4.0))
    out = it.run({"start": np.array([0.0], np.float32)})
    np.testing.assert_array_equal(out["final"], [4.0])  # 1, 2, 3 (cond true), 4 (cond false, still produced)
    assert out["scanned"].shape == (4, 1)


def test_loop_with_zero_trips_returns_the_initial_value_and_an_empty_scan():
    it = Interpreter(_counting_loop(trip=0, stop_at=None))
    out = it.run({"start": np.array([9.0], np.float32)})
    np.testing.assert_array_equal(out["final"], [9.0])
    assert out["scanned"].shape[0] == 0


def test_an_unsupported_op_inside_a_body_fails_at_construction():
    body = GraphBuilder("body", opset=17)
    bx = body.input("bx", np.float32, (2,))
    body.output(body.op("NoSuchOp", [bx], name="inner_bad"), "by")
    g = GraphBuilder("outer", opset=17)
    cond = g.input("cond", np.bool_, ())
    x = g.input("x", np.float32, (2,))
    branch = body.build()
    g.output(g.op("If", [cond, x], then_branch=branch, else_branch=branch, captures=1, name="if"), "y")
    with pytest.raises(ModelError, match="inner_bad"):
        Interpreter(g.build())


def _window_over_dynamic_length():
    """y = Conv(x, w) with a width-4 window over a dynamic length: cannot be prepared
    at the placeholder length 1."""
    g = GraphBuilder("window", opset=17)
    x = g.input("x", np.float32, (1, 1, -1))
    w = g.constant("w", np.array([[[1.0, 2.0, 3.0, 4.0]]], np.float32))
    g.output(g.op("Conv", [x, w], name="conv"), "y")
    return g.build()


def test_a_model_that_cannot_prepare_at_length_one_prepares_on_its_first_run():
    it = Interpreter(_window_over_dynamic_length())
    x = np.arange(8, dtype=np.float32).reshape(1, 1, 8)
    want = np.array([np.dot(x[0, 0, i : i + 4], [1, 2, 3, 4]) for i in range(5)], np.float32)
    np.testing.assert_allclose(it.run({"x": x})["y"].reshape(-1), want)
    with pytest.raises(InputError, match="cannot run with input shapes"):
        it.run({"x": np.ones((1, 1, 2), np.float32)})  # too short for the window
    np.testing.assert_allclose(it.run({"x": x})["y"].reshape(-1), want)  # still fine


def test_a_static_model_that_cannot_prepare_fails_at_construction():
    g = GraphBuilder("window", opset=17)
    x = g.input("x", np.float32, (1, 1, 2))
    w = g.constant("w", np.ones((1, 1, 4), np.float32))
    g.output(g.op("Conv", [x, w], name="conv"), "y")
    with pytest.raises(ModelError, match="conv"):
        Interpreter(g.build())


# --- eager runs reuse prepared kernels (runtime.eager.PreparedKernels) ----------------------------

class _CountingKernel:
    """Reads input 0 at prepare time; counts how often it is prepared."""

    deterministic = True
    prepared = 0

    @classmethod
    def for_node(cls, node, backend="cpu"):
        return cls()

    def prepare(self, specs, values):
        type(self).prepared += 1
        self.seen = values[0]
        return [specs[0]]


class _Node:
    def __init__(self, op_type: str = "Counting") -> None:
        self.op_type = op_type


def _spec(array):
    from edgerun.runtime.kernels.base import TensorSpec

    return TensorSpec(array.dtype, array.shape)


@pytest.mark.parametrize("op_type,deterministic,size,reused", [
    ("Counting", True, 4, True),
    ("Counting", True, 4096, False),   # reads more than MAX_KEY_BYTES: prepared every time
    ("Counting", False, 4, True),      # random kernels too: their generator must advance, not restart
    ("If", True, 4, False),            # control flow runs its body in prepare: never reused
])
def test_prepared_kernels_reuse_rules(op_type, deterministic, size, reused):
    from edgerun.runtime.eager import PreparedKernels

    kernel_class = type("K", (_CountingKernel,), {"deterministic": deterministic, "prepared": 0})
    cache, node = PreparedKernels(), _Node(op_type)
    value = np.arange(size, dtype=np.int32)
    first, _ = cache.prepare(node, kernel_class, [_spec(value)], [value])
    second, _ = cache.prepare(node, kernel_class, [_spec(value)], [value.copy()])
    assert (second is first) == reused and kernel_class.prepared == (1 if reused else 2)
    value[0] = 99  # the caller changes its array in place: a kept kernel saw a private copy
    assert first.seen[0] == 0 or not reused
    third, _ = cache.prepare(node, kernel_class, [_spec(value)], [value])
    assert third is not first and third.seen[0] == 99  # other contents: prepared again


def test_reuse_compares_contents_bit_for_bit():
    from edgerun.runtime.eager import PreparedKernels

    kernel_class = type("K", (_CountingKernel,), {"prepared": 0})
    cache, node = PreparedKernels(), _Node()
    negative_zero = np.array([-0.0, np.nan], np.float32)
    first, _ = cache.prepare(node, kernel_class, [_spec(negative_zero)], [negative_zero])
    assert cache.prepare(node, kernel_class, [_spec(negative_zero)], [negative_zero.copy()])[0] is first  # same NaN
    positive_zero = np.array([0.0, np.nan], np.float32)
    again, _ = cache.prepare(node, kernel_class, [_spec(positive_zero)], [positive_zero])
    assert again is not first and np.signbit(first.seen[0]) and not np.signbit(again.seen[0])


def test_every_way_of_looking_at_the_values_counts_as_reading_them():
    from edgerun.runtime.eager import _Reads

    for look in (lambda v: v.copy(), lambda v: 5 in v, lambda v: list(reversed(v)), lambda v: v + [],
                 lambda v: v.index(None), lambda v: v.count(1), lambda v: [*v], lambda v: v[1:]):
        reads = _Reads([0, None, 2])  # plain items: `in`, index and count compare them
        look(reads)
        assert reads.read >= {1, 2}


def _dropout(eager: bool):
    """y = Dropout(x, 0.5, training) with seed 7; with `eager`, x is first reshaped by an input."""
    g = GraphBuilder("dropout", opset=17)
    x = g.input("x", np.float32, (4, 6))
    if eager:
        x = g.op("Reshape", [x, g.input("shape", np.int64, (-1,))], name="reshape")
    ratio, training = g.constant("ratio", np.array(0.5, np.float32)), g.constant("training", np.array(True))
    g.output(g.op("Dropout", [x, ratio, training], seed=7, name="dropout"), "y")
    return g.build()


def test_seeded_dropout_advances_from_run_to_run_in_eager_runs_as_in_planned_ones():
    x = np.ones((4, 6), np.float32)
    planned, eager = Interpreter(_dropout(False)), Interpreter(_dropout(True))
    assert eager._plans["serving_default"].eager and not planned._plans["serving_default"].eager
    shape = np.array([4, 6], np.int64)
    masks = [(planned.run({"x": x})["y"], eager.run({"x": x, "shape": shape})["y"]) for _ in range(3)]
    for want, got in masks:
        np.testing.assert_array_equal(got, want)
    assert not np.array_equal(masks[0][0], masks[1][0])  # a new mask every run


def test_eager_signature_reuses_kernels_and_follows_new_values():
    it = Interpreter(_reshape_by_input())
    plan = it._plans["serving_default"]
    x = np.arange(-12, 12, dtype=np.float32).reshape(4, 6)
    shape = np.array([3, 8], np.int64)
    it.run({"x": x, "shape": shape})
    kept = {k: entry[2] for k, entry in plan.eager_kernels._entries.items()}
    got = it.run({"x": x + 1, "shape": shape.copy()})["y"]
    assert len(kept) == 2 and all(plan.eager_kernels._entries[k][2] is kernel for k, kernel in kept.items())
    np.testing.assert_array_equal(got, np.maximum((x + 1).reshape(3, 8), 0))
    shape[:] = [8, 3]  # changed in place, between runs
    np.testing.assert_array_equal(it.run({"x": x, "shape": shape})["y"], np.maximum(x.reshape(8, 3), 0))


def test_if_branches_follow_the_condition_on_every_eager_run():
    then_body = GraphBuilder("then", opset=17)
    tx = then_body.input("tx", np.float32, (2,))
    then_body.output(then_body.op("Relu", [tx], name="then_relu"), "ty")
    else_body = GraphBuilder("else", opset=17)
    ex = else_body.input("ex", np.float32, (2,))
    else_body.output(else_body.op("Neg", [ex], name="else_neg"), "ey")
    g = GraphBuilder("choose", opset=17)
    cond = g.input("cond", np.bool_, ())
    x = g.input("x", np.float32, (2,))
    g.output(g.op("If", [cond, x], then_branch=then_body.build(), else_branch=else_body.build(), captures=1,
                  name="if"), "y")
    it = Interpreter(g.build())
    x = np.array([-1.0, 2.0], np.float32)
    for flag in (True, False, True, True, False):
        got = it.run({"cond": np.array(flag), "x": x})["y"]
        np.testing.assert_array_equal(got, np.maximum(x, 0) if flag else -x)


@pytest.mark.parametrize("device", ["cpu", "numba"])
def test_control_flow_bodies_run_on_the_plans_backend(device):
    from edgerun.runtime.kernels import resolve

    body = GraphBuilder("body", opset=17)
    bx = body.input("bx", np.float32, (2,))
    body.output(body.op("Relu", [bx], name="body_relu"), "by")
    branch = body.build()
    g = GraphBuilder("outer", opset=17)
    x = g.input("x", np.float32, (2,))
    cond = g.op("Greater", [g.op("ReduceSum", [x], keepdims=0, name="sum"), g.constant("zero", np.float32(0))],
                name="positive")  # computed from float data: no plan can know it ahead
    g.output(g.op("If", [cond, x], then_branch=branch, else_branch=branch, captures=1, name="if"), "y")
    it = Interpreter(g.build(), device=device)
    np.testing.assert_array_equal(it.run({"x": np.array([-1, 3], np.float32)})["y"], [0, 3])
    plan = it._plans["serving_default"]
    assert plan.prepared.tail  # ReduceSum and Greater planned, the If an eager tail that inlines its branch
    kernels = {entry[2].name: type(entry[2]) for entry in plan.eager_kernels._entries.values()}
    assert kernels["body_relu"] is resolve("", "Relu", 17, "body_relu", device)


def test_control_flow_made_outside_a_plan_names_the_missing_context():
    """Kernels reach the executor only through the context a plan hands them."""
    from edgerun.runtime.kernels import resolve

    body = GraphBuilder("body", opset=17)
    body.output(body.op("Relu", [body.input("bx", np.float32, (2,))], name="body_relu"), "by")
    g = GraphBuilder("outer", opset=17)
    x = g.input("x", np.float32, (2,))
    g.output(g.op("If", [g.constant("cond", np.array(True)), x], then_branch=body.build(),
                  else_branch=body.build(), captures=1, name="if"), "y")
    node = g.build().nodes[0]
    kernel = resolve("", "If", 17, "if").for_node(node)
    specs = [_spec(np.array(True)), _spec(np.zeros(2, np.float32))]
    with pytest.raises(ModelError, match=r"node 'if' \(If\): runs a nested graph, which needs an execution context"):
        kernel.prepare(specs, [np.array(True), np.zeros(2, np.float32)])
    assert kernel.backend == "cpu"


def _reshape_to_a_fixed_width(width: int = 96):
    """y = Reshape(x, [-1, width]) of a (1, ?) input: prepares at neither probe size
    (1 and 512 are not multiples of 96) but runs at any multiple of the width."""
    g = GraphBuilder("fixed_width", opset=17)
    x = g.input("x", np.float32, (1, -1))
    shape = g.constant("shape", np.array([-1, width], np.int64))
    g.output(g.op("Reshape", [x, shape], name="to_rows"), "y")
    return g.build()


def test_a_model_no_probe_size_fits_is_accepted_and_runs_at_its_real_size():
    it = Interpreter(_reshape_to_a_fixed_width())
    assert it.signatures["serving_default"].inputs["x"].shape == (1, -1)
    x = np.arange(192, dtype=np.float32).reshape(1, 192)
    np.testing.assert_array_equal(it.run({"x": x})["y"], x.reshape(2, 96))
    with pytest.raises(InputError, match=r"to_rows.*\(1, 100\)|\(1, 100\).*to_rows"):
        it.run({"x": np.zeros((1, 100), np.float32)})  # names the node and the shapes


def test_a_failure_no_dynamic_dim_reaches_is_refused_at_construction():
    """The input is dynamic, but the broken Conv reads only constants: the model is broken."""
    g = GraphBuilder("broken", opset=17)
    x = g.input("x", np.float32, (1, -1))
    short = g.constant("short", np.ones((1, 1, 2), np.float32))
    wide = g.constant("wide", np.ones((1, 1, 4), np.float32))
    g.output(g.op("Conv", [short, wide], name="static_conv"), "y")
    g.output(g.op("Relu", [x], name="relu"), "z")
    with pytest.raises(ModelError, match="static_conv"):
        Interpreter(g.build())


def count_prepares(monkeypatch) -> list[dict]:
    """The input shapes of every ExecutionPlan preparation from now on."""
    prepares, original = [], ExecutionPlan._prepare

    def counting(self, shapes, *args, **kwargs):
        prepares.append(shapes)
        return original(self, shapes, *args, **kwargs)

    monkeypatch.setattr(ExecutionPlan, "_prepare", counting)
    return prepares


def test_prepared_shapes_are_kept_for_the_last_four_and_within_the_memory_budget(monkeypatch):
    it = Interpreter(_reshape_to_a_fixed_width())
    prepares = count_prepares(monkeypatch)
    widths = [96, 192, 288, 384]
    for _ in range(3):
        for w in widths:
            it.run({"x": np.ones((1, w), np.float32)})
    assert len(prepares) == 4  # four kept: each width prepared once
    it.run({"x": np.ones((1, 480), np.float32)})  # a fifth evicts the least recent (96)
    it.run({"x": np.ones((1, 192), np.float32)})
    it.run({"x": np.ones((1, 96), np.float32)})
    assert [s["x"][1] for s in prepares[4:]] == [480, 96]


def test_kept_preparations_share_the_memory_budget(monkeypatch):
    """Two arenas of 80 KB each do not fit a 100 KB budget together: only the live one is kept."""
    g = GraphBuilder("twice", opset=17)
    x = g.input("x", np.float32, (1, -1))
    g.output(g.op("Relu", [g.op("Neg", [x], name="neg")], name="relu"), "y")
    it = Interpreter(g.build(), memory_budget=100_000)
    prepares = count_prepares(monkeypatch)
    for w in [10_000, 10_001, 10_000, 10_001]:
        np.testing.assert_array_equal(it.run({"x": -np.ones((1, w), np.float32)})["y"], np.ones((1, w)))
    assert len(prepares) == 4


# --- plans specialized on small inputs, and If branches inlined into the plan ------------------

def test_a_small_integer_input_that_decides_shapes_gets_a_specialized_plan(monkeypatch):
    it = Interpreter(_reshape_by_input(shape_length=2))
    plan = it._plans["serving_default"]
    assert plan.specialize_on == ("shape",) and not plan.eager
    prepares = count_prepares(monkeypatch)
    x = np.arange(-12, 12, dtype=np.float32).reshape(4, 6)
    for _ in range(3):
        for target in ([3, 8], [8, -1], [2, 12]):
            got = it.run({"x": x, "shape": np.array(target, np.int64)})["y"]
            np.testing.assert_array_equal(got, np.maximum(x.reshape(target), 0))
    assert len(prepares) == 3  # one plan per value, reused: the value is the guard
    assert plan.prepared.steps  # planned steps, not eager evaluation
    with pytest.raises(InputError, match=r"reshape.*\[5, 5\]"):
        it.run({"x": x, "shape": np.array([5, 5], np.int64)})
    np.testing.assert_array_equal(it.run({"x": x, "shape": np.array([6, 4], np.int64)})["y"],
                                  np.maximum(x.reshape(6, 4), 0))


def _choose(cond_from_input: bool = True):
    """y = If(cond, Relu(x), Neg(x)) with cond a bool input."""
    then_body = GraphBuilder("then", opset=17)
    then_body.output(then_body.op("Relu", [then_body.input("tx", np.float32, (-1,))], name="then_relu"), "ty")
    else_body = GraphBuilder("else", opset=17)
    else_x = else_body.input("ex", np.float32, (-1,))
    else_body.output(else_x, "ey")  # returns its capture as it is: an Identity when inlined
    g = GraphBuilder("choose", opset=17)
    cond = g.input("cond", np.bool_, ())
    x = g.input("x", np.float32, (-1,))
    g.output(g.op("If", [cond, x], then_branch=then_body.build(), else_branch=else_body.build(), captures=1,
                  name="if"), "y")
    return g.build()


@pytest.mark.parametrize("device", ["cpu", "numba"])
def test_an_if_on_a_specialized_condition_is_inlined_into_the_plan(device):
    it = Interpreter(_choose(), device=device)
    plan = it._plans["serving_default"]
    x = np.array([-1.0, 2.0, -3.0], np.float32)
    for flag in (True, False, True):
        got = it.run({"cond": np.array(flag), "x": x})["y"]
        np.testing.assert_array_equal(got, np.maximum(x, 0) if flag else x)
        steps = {node.name: run for run, _, _, node in plan.prepared.steps}
        assert not plan.eager and "if" not in steps
        assert ("then_relu" in steps) == flag
    from edgerun.runtime.kernels import resolve

    relu = next(run for run, _, _, node in plan.prepared.steps if node.name == "then_relu")
    assert type(relu.__self__) is resolve("", "Relu", 17, "then_relu", device)  # the plan's backend


def test_a_deferred_model_that_fits_no_shapes_yet_fails_its_first_run_as_a_model_error():
    """Until some shapes have prepared, a failure may be the model's: ModelError, naming the node."""
    it = Interpreter(_reshape_to_a_fixed_width())
    with pytest.raises(ModelError, match=r"to_rows.*nor with any shapes before"):
        it.run({"x": np.zeros((1, 100), np.float32)})
    np.testing.assert_array_equal(it.run({"x": np.ones((1, 96), np.float32)})["y"], np.ones((1, 96)))


# --- hybrid plans: a planned prefix, an eager tail ------------------------------------------------

def _scores_then_nonzero():
    """s = Sigmoid(x @ w); keep = NonZero(s > 0.5); y = Gather(s, keep) -> a value-dependent length."""
    g = GraphBuilder("detect", opset=17)
    x = g.input("x", np.float32, (-1, 4))
    w = g.constant("w", np.array([[1.0], [-1.0], [0.5], [2.0]], np.float32))
    s = g.op("Reshape", [g.op("Sigmoid", [g.op("MatMul", [x, w], name="score")], name="sig"),
                         g.constant("flat", np.array([-1], np.int64))], name="flatten")
    keep = g.op("NonZero", [g.op("Greater", [s, g.constant("half", np.float32(0.5))], name="gt")], name="nz")
    g.output(g.op("Gather", [s, g.op("Reshape", [keep, g.constant("one", np.array([-1], np.int64))], name="r")],
                  name="pick"), "y")
    g.output(s, "scores")
    return g.build()


def test_a_value_dependent_tail_runs_eagerly_behind_a_planned_prefix():
    it = Interpreter(_scores_then_nonzero())
    plan = it._plans["serving_default"]
    assert not plan.eager
    rng = np.random.default_rng(0)
    for rows in (5, 9, 5):
        x = rng.standard_normal((rows, 4)).astype(np.float32)
        got = it.run({"x": x})
        assert [node.name for _, _, _, node in plan.prepared.steps] == ["score", "sig", "gt"]  # flatten: a view
        assert [node.name for node, _ in plan.prepared.tail] == ["nz", "r", "pick"]
        scores = 1 / (1 + np.exp(-(x @ np.array([1.0, -1.0, 0.5, 2.0], np.float32))))
        np.testing.assert_allclose(got["scores"], scores, rtol=1e-6)
        np.testing.assert_allclose(got["y"], scores[scores > 0.5], rtol=1e-6)


def test_a_detector_with_nms_in_the_graph_plans_everything_before_the_nms():
    g = GraphBuilder("nms", opset=17)
    boxes = g.input("boxes", np.float32, (1, -1, 4))
    logits = g.input("logits", np.float32, (1, 1, -1))
    scores = g.op("Sigmoid", [logits], name="scores")
    limit, iou = g.constant("limit", np.array([3], np.int64)), g.constant("iou", np.array([0.5], np.float32))
    g.output(g.op("NonMaxSuppression", [boxes, scores, limit, iou], name="nms"), "selected")
    it = Interpreter(g.build())
    b = np.array([[[0, 0, 1, 1], [0, 0.1, 1, 1.1], [0, 2, 1, 3], [5, 5, 6, 6]]], np.float32)
    logits_in = np.array([[[2.0, 3.0, 0.5, -1.0]]], np.float32)
    got = it.run({"boxes": b, "logits": logits_in})["selected"]
    np.testing.assert_array_equal(got, [[0, 0, 1], [0, 0, 2], [0, 0, 3]])  # box 0 overlaps box 1 (IoU 0.82)
    plan = it._plans["serving_default"]
    assert [n.name for _, _, _, n in plan.prepared.steps] == ["scores"] and plan.prepared.tail

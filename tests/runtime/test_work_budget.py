"""The work budget: multiply-add estimates against closed-form counts, and refusals at every
preparation (construction, resize_input, a run with new dynamic dims, a value-dependent run).
The oracle for each estimate is the textbook formula, written out by hand in the test."""

from __future__ import annotations

import time
import tracemalloc

import numpy as np
import pytest

from edgerun.runtime import GraphBuilder, Interpreter
from edgerun.runtime.errors import EdgerunError, WorkBudgetError
from edgerun.runtime.profiles import DeviceProfile
from edgerun.runtime.writer import serialize
from tests.runtime.graphs import mlp_graph, table_cnn
from tests.runtime.mutate import repoint_input

F32 = np.float32


def _one_op(op: str, x_shape: tuple[int, ...], weights: list[tuple[int, ...]], **attrs) -> Interpreter:
    """An interpreter over y = op(x, *weights) with random float32 weights."""
    rng = np.random.default_rng(0)
    g = GraphBuilder(op.lower())
    x = g.input("x", F32, x_shape)
    ws = [g.constant(f"w{i}", rng.standard_normal(s).astype(F32)) for i, s in enumerate(weights)]
    outs = g.op(op, [x, *ws], name="node", num_outputs=attrs.pop("num_outputs", 1), **attrs)
    g.output(outs[0] if isinstance(outs, list) else outs, "y")
    return Interpreter(g.build(), device="cpu")


def _out(size: int, kernel: int, stride: int = 1, pads: int = 0) -> int:
    return (size + pads - kernel) // stride + 1


# case -> (interpreter factory, the closed-form count)
CASES = {
    # Conv: N * Cout * Hout * Wout * (Cin / group) * kH * kW
    "conv": (lambda: _one_op("Conv", (2, 4, 9, 11), [(6, 4, 3, 2)]),
             2 * 6 * _out(9, 3) * _out(11, 2) * 4 * 3 * 2),
    "conv strided padded grouped": (
        lambda: _one_op("Conv", (2, 4, 9, 11), [(6, 2, 3, 2)], group=2, strides=[2, 1], pads=[1, 0, 1, 0]),
        2 * 6 * _out(9, 3, 2, 2) * _out(11, 2) * (4 // 2) * 3 * 2),
    # ConvTranspose: N * Cin * H * W * (Cout / group) * kH * kW
    "conv transpose": (lambda: _one_op("ConvTranspose", (1, 4, 5, 6), [(4, 3, 3, 3)]), 1 * 4 * 5 * 6 * 3 * 3 * 3),
    # Gemm: M * N * K whichever operand is transposed
    "gemm": (lambda: _one_op("Gemm", (5, 7), [(7, 3)]), 5 * 3 * 7),
    "gemm transposed": (lambda: _one_op("Gemm", (7, 5), [(3, 7)], transA=1, transB=1), 5 * 3 * 7),
    # MatMul: batch * M * N * K
    "matmul": (lambda: _one_op("MatMul", (5, 6), [(6, 7)]), 5 * 7 * 6),
    "matmul batched": (lambda: _one_op("MatMul", (3, 4, 5, 6), [(6, 7)]), 3 * 4 * 5 * 7 * 6),
    "matmul broadcast": (lambda: _one_op("MatMul", (2, 1, 5, 6), [(3, 6, 7)]), 2 * 3 * 5 * 7 * 6),
    "matmul vector": (lambda: _one_op("MatMul", (6,), [(6, 7)]), 7 * 6),
    # pools: output elements * window taps
    "max pool": (lambda: _one_op("MaxPool", (2, 3, 10, 10), [], kernel_shape=[3, 3], strides=[2, 2]),
                 2 * 3 * _out(10, 3, 2) ** 2 * 3 * 3),
    "average pool": (lambda: _one_op("AveragePool", (1, 3, 10, 12), [], kernel_shape=[2, 3], strides=[2, 3]),
                     3 * _out(10, 2, 2) * _out(12, 3, 3) * 2 * 3),
    "global average pool": (lambda: _one_op("GlobalAveragePool", (2, 3, 10, 12), []), 2 * 3 * 10 * 12),
    # LSTM: seq * batch * 4 gates * hidden * (input + hidden), per direction
    "lstm": (lambda: _one_op("LSTM", (5, 2, 4), [(1, 4 * 3, 4), (1, 4 * 3, 3)], hidden_size=3, num_outputs=3),
             5 * 2 * 4 * 3 * (4 + 3)),
    "gru bidirectional": (lambda: _one_op("GRU", (5, 2, 4), [(2, 3 * 3, 4), (2, 3 * 3, 3)], hidden_size=3,
                                          direction="bidirectional", num_outputs=2),
                          2 * 5 * 2 * 3 * 3 * (4 + 3)),
    # elementwise and reductions: one per element
    "relu": (lambda: _one_op("Relu", (3, 4, 5), []), 3 * 4 * 5),
    "reduce sum": (lambda: _one_op("ReduceSum", (3, 4, 5), [], keepdims=0), 3 * 4 * 5),
}


@pytest.mark.parametrize("case", CASES)
def test_estimate_matches_the_closed_form(case) -> None:
    make, expected = CASES[case]
    assert make().estimated_macs() == expected


def test_attention_counts_both_products() -> None:
    # (batch 2, heads 3, query length 4, key length 6, head size 5): QK^T and P @ V
    g = GraphBuilder("attention", opset=23)
    q, k, v = (g.input(n, F32, s) for n, s in (("q", (2, 3, 4, 5)), ("k", (2, 3, 6, 5)), ("v", (2, 3, 6, 5))))
    g.output(g.op("Attention", [q, k, v], name="node"), "y")
    assert Interpreter(g.build(), device="cpu").estimated_macs() == 2 * 3 * 4 * 6 * 5 + 2 * 3 * 4 * 6 * 5


def test_estimate_sums_nodes_and_follows_the_batch() -> None:
    it = Interpreter(mlp_graph((64, 32, 10)), device="cpu")
    per_row = 64 * 32 + 32 + 32 * 10  # Gemm, Relu, Gemm
    assert it.estimated_macs() == per_row
    it.resize_input("x", (8, 64))
    assert it.estimated_macs() == 8 * per_row


def test_the_four_byte_mutation_is_refused_quickly() -> None:
    # conv1 reads the (960, 3, 16, 16) table instead of x + table[0]: the rest runs at batch 960
    honest = serialize(table_cnn(rows=960))
    mutated = repoint_input(honest, "conv1", 0, "table")
    assert sum(a != b for a, b in zip(honest, mutated, strict=True)) <= 4
    budget = 10 * Interpreter(honest, device="cpu").estimated_macs()

    it = Interpreter(honest, device="cpu", work_budget=budget)
    assert it.run({"x": np.zeros((1, 3, 16, 16), F32)})["y"].shape == (1, 10)
    tracemalloc.start()
    start = time.perf_counter()
    with pytest.raises(WorkBudgetError) as refused:
        Interpreter(mutated, device="cpu", work_budget=budget)
    seconds = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    conv1 = 960 * 16 * 16 * 16 * 3 * 3 * 3  # N * Cout * H * W * Cin * kH * kW
    assert f"at least {conv1} multiply-adds" in str(refused.value)
    assert f"work budget of {budget}" in str(refused.value)
    assert "node 'conv1' (Conv" in str(refused.value)
    assert seconds < 2.0  # not a batch-960 network: conv1's output alone is 15.7 MB
    assert peak < 960 * 16 * 16 * 16 * 4  # refused before computing it


def test_resize_and_runs_past_the_budget_keep_the_old_preparation() -> None:
    per_row = 64 * 32 + 32 + 32 * 10
    it = Interpreter(mlp_graph((64, 32, 10)), device="cpu", work_budget=4 * per_row)
    x = np.ones((3, 64), F32)
    expected = it.run({"x": x})["y"]
    # counting stops at the node that passes the budget: fc0 alone at 5 rows
    message = rf"at least {5 * 64 * 32} multiply-adds \(counted up to node 'fc0'\) .* budget of {4 * per_row}"
    with pytest.raises(WorkBudgetError, match=message):
        it.resize_input("x", (5, 64))
    assert it.estimated_macs() == 3 * per_row
    with pytest.raises(WorkBudgetError, match="'fc0' \\(Gemm"):
        it.run({"x": np.ones((100, 64), F32)})
    np.testing.assert_array_equal(it.run({"x": x})["y"], expected)
    it.resize_input("x", (4, 64))
    assert it.estimated_macs() == 4 * per_row


def test_value_dependent_shapes_are_checked_on_every_run() -> None:
    # Reshape by an input's values: the plan prepares each run with the actual shape
    g = GraphBuilder("reshape_matmul")
    x, shape = g.input("x", F32, (-1,)), g.input("shape", np.int64, (2,))
    w = g.constant("w", np.ones((64, 64), F32))
    g.output(g.op("MatMul", [g.op("Reshape", [x, shape]), w], name="mm"), "y")
    it = Interpreter(g.build(), device="cpu", work_budget=10 * 64 * 64)
    assert it.run({"x": np.ones(2 * 64, F32), "shape": np.array([2, 64])})["y"].shape == (2, 64)
    assert it.estimated_macs() >= 2 * 64 * 64
    before = it.estimated_macs()
    with pytest.raises(WorkBudgetError, match="node 'mm' \\(MatMul"):
        it.run({"x": np.ones(100 * 64, F32), "shape": np.array([100, 64])})
    assert it.estimated_macs() == before  # the refused run does not wipe the last estimate


def test_profile_default_and_explicit_budget() -> None:
    tight = DeviceProfile("tight", 1, 1 << 30, ("float32",), work_budget_macs=100)
    with pytest.raises(WorkBudgetError, match="device profile 'tight'"):
        Interpreter(mlp_graph(), device="cpu", profile=tight)
    assert Interpreter(mlp_graph(), device="cpu", profile=tight, work_budget=10**6).estimated_macs() > 100
    with pytest.raises(EdgerunError, match="work_budget must be >= 1"):
        Interpreter(mlp_graph(), device="cpu", work_budget=0)


def test_a_budget_for_one_row_keeps_declared_dynamic_outputs() -> None:
    # outputs are found dynamic by preparing at size 2, which this budget refuses
    g = GraphBuilder("declared")
    x = g.input("x", F32, (-1, 64))
    y = g.op("MatMul", [x, g.constant("w", np.ones((64, 10), F32))], name="mm")
    y.dtype, y.shape = np.dtype(F32), (-1, 10)
    g.output(y, "y")
    it = Interpreter(g.build(), device="cpu", work_budget=64 * 10)
    assert it.signatures["serving_default"].outputs["y"].shape == (-1, 10)


def test_einsum_counts_the_broadcast_of_the_ellipsis_blocks() -> None:
    # "...i,...i->..." on (1000, 1, 512) x (1, 1000, 512): a 1000 x 1000 grid of 512-long dots
    g = GraphBuilder("einsum")
    a, b = g.input("a", F32, (1000, 1, 512)), g.input("b", F32, (1, 1000, 512))
    g.output(g.op("Einsum", [a, b], name="node", equation="...i,...i->..."), "y")
    model = g.build()
    assert Interpreter(model, device="cpu").estimated_macs() == 1000 * 1000 * 512
    with pytest.raises(WorkBudgetError, match="node 'node' \\(Einsum"):
        Interpreter(model, device="cpu", work_budget=5_000_000)


def _roi_align(x_shape: tuple[int, ...], budget: int | None = None, **attrs) -> Interpreter:
    g = GraphBuilder("roi_align", opset=16)
    x, rois, idx = g.input("x", F32, x_shape), g.input("rois", F32, (-1, 4)), g.input("idx", np.int64, (-1,))
    g.output(g.op("RoiAlign", [x, rois, idx], name="roi", output_height=7, output_width=7, **attrs), "y")
    return Interpreter(g.build(), device="cpu", work_budget=budget)


def _onnxruntime_roi_align(x: np.ndarray, rois: np.ndarray, idx: np.ndarray, **attrs) -> np.ndarray:
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    node = helper.make_node("RoiAlign", ["x", "rois", "idx"], ["y"], output_height=7, output_width=7, **attrs)
    graph = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape),
         helper.make_tensor_value_info("rois", TensorProto.FLOAT, rois.shape),
         helper.make_tensor_value_info("idx", TensorProto.INT64, idx.shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 16)])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x, "rois": rois, "idx": idx})[0]


def test_roi_align_work_follows_the_roi_values() -> None:
    # the adaptive sampling grid is ceil(roi side / 7) per axis, from the rois a request sends
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 8, 32, 32)).astype(F32)
    idx = np.array([0, 1, 1])
    honest = np.array([[1, 2, 20, 30], [0, 0, 31, 31], [-4, 3, 40, 12]], F32)  # grids 3x4, 5x5, 7x2
    budget = 8 * 7 * 7 * (3 * 4 + 5 * 5 + 7 * 2)  # C * out cells * the grids' samples
    it = _roi_align(x.shape, budget)
    np.testing.assert_allclose(it.run({"x": x, "rois": honest, "idx": idx})["y"],
                               _onnxruntime_roi_align(x, honest, idx), rtol=1e-4, atol=1e-5)

    huge = np.array([[0, 0, 1e6, 1e6]] * 3, F32)  # a 142858^2 grid per bin: ~2.4e16 samples
    start = time.perf_counter()
    with pytest.raises(WorkBudgetError, match="node 'roi' \\(RoiAlign\\).* work budget of"):
        it.run({"x": x, "rois": huge, "idx": idx})
    assert time.perf_counter() - start < 2.0
    with pytest.raises(WorkBudgetError):  # one sample past the budget is refused
        _roi_align(x.shape, budget - 1).run({"x": x, "rois": honest, "idx": idx})

    # no budget: a large ROI (mostly past the image) still runs, right, in bounded memory
    big = np.array([[-10, -10, 400, 300]], F32)
    tracemalloc.start()
    got = _roi_align(x.shape).run({"x": x, "rois": big, "idx": idx[:1]})["y"]
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    np.testing.assert_allclose(got, _onnxruntime_roi_align(x, big, idx[:1]), rtol=1e-4, atol=1e-5)
    samples = 8 * 7 * 7 * 59 * 45  # all samples at once, float64, were ~4 x 8 x this many bytes
    assert peak < samples * 8

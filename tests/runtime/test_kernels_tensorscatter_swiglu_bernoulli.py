"""TensorScatter (indexing.py), SwiGLU (activations.py) and Bernoulli (generators.py) beyond
the ONNX conformance cases. TensorScatter against onnxruntime; SwiGLU against its closed form
in float64 (onnxruntime 1.32 has no Swish-24 to expand it into); Bernoulli, whose draws no
other implementation shares, by what must hold of any draw, by statistics, by reproducibility
from its seed and against ONNX's reference evaluator, which draws from the same generator.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from edgerun.runtime.errors import ModelError
from edgerun.runtime.graph import GraphBuilder
from edgerun.runtime.interpreter import Interpreter
from edgerun.runtime.kernels import TensorSpec, resolve

F32 = np.float32
BF16 = np.dtype(ml_dtypes.bfloat16)


def make(op, attrs, opset, name="n"):
    return resolve("", op, opset, name)(op, name, dict(attrs), opset)


def ours(op, arrays, attrs, opset, name="n"):
    """resolve -> prepare -> run into sentinel-filled outputs (input values unknown at prepare)."""
    kernel = make(op, attrs, opset, name)
    specs = [None if a is None else TensorSpec(a.dtype, a.shape) for a in arrays]
    (spec,) = kernel.prepare(specs, [None] * len(arrays))
    out = np.full(spec.shape, np.nan if spec.dtype.kind == "f" else 7, spec.dtype)
    kernel.run(list(arrays), [out])
    return out


def prepare_error(op, arrays, attrs, opset, message, name="n"):
    specs = [None if a is None else TensorSpec(a.dtype, a.shape) for a in arrays]
    with pytest.raises(ModelError, match=rf"node '{name}' \({op}\): " + message):
        make(op, attrs, opset, name).prepare(specs, [None] * len(arrays))


# --- TensorScatter ------------------------------------------------------------------------------


def onnxruntime_scatter(arrays, attrs):
    names = ["past", "update", "write"][: len(arrays)]
    elem = helper.np_dtype_to_tensor_dtype(arrays[0].dtype)
    types = [elem, elem, TensorProto.INT64]
    inputs = [helper.make_tensor_value_info(n, t, a.shape) for n, t, a in zip(names, types, arrays, strict=False)]
    node = helper.make_node("TensorScatter", names, ["y"], **attrs)
    graph = helper.make_graph([node], "g", inputs, [helper.make_tensor_value_info("y", elem, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 24)], ir_version=10)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, dict(zip(names, arrays, strict=False)))[0]


@pytest.mark.parametrize("cache, update, writes, attrs, dtype", [
    ((3, 2, 6, 4), (3, 2, 2, 4), (0, 4, 2), {}, F32),
    ((3, 2, 6, 4), (3, 2, 3, 4), (5, 4, 11), {"mode": "circular"}, F32),
    ((2, 5, 3), (2, 5, 3), (2, 0), {"mode": "circular", "axis": 1}, F32),
    ((2, 7, 3), (2, 7, 3), (0, 0), {"axis": 1}, np.float64),
    ((2, 3, 4, 5), (2, 3, 4, 2), (1, 3), {"axis": -1}, np.int64),
    ((2, 3, 4, 5), (2, 1, 4, 5), (2, 0), {"axis": 1, "mode": "linear"}, np.int32),
    ((4, 2, 8, 3, 2), (4, 2, 8, 2, 2), (1, 0, 1, 0), {"axis": 3, "mode": "circular"}, F32),
    ((2, 6, 3), (2, 4, 3), None, {"axis": 1}, np.float16),
    ((2, 6, 3), (2, 0, 3), (6, 1), {"axis": 1}, F32),
])
def test_tensor_scatter_matches_onnxruntime(cache, update, writes, attrs, dtype):
    rng = np.random.default_rng(len(cache) + sum(update))
    arrays = [rng.integers(-50, 50, cache).astype(dtype), rng.integers(100, 200, update).astype(dtype)]
    if writes is not None:
        arrays.append(np.array(writes, np.int64))
    got = ours("TensorScatter", arrays, attrs, 24)
    want = onnxruntime_scatter(arrays, attrs)
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


def test_tensor_scatter_wraps_a_circular_update_past_the_end():
    past = np.zeros((1, 4, 1), F32)
    update = np.array([[[1], [2], [3]]], F32)
    got = ours("TensorScatter", [past, update, np.array([3])], {"axis": 1, "mode": "circular"}, 24)
    assert got.reshape(-1).tolist() == [2, 3, 0, 1]


CACHE, UPDATE = np.zeros((2, 3, 5, 4), F32), np.ones((2, 3, 2, 4), F32)


@pytest.mark.parametrize("arrays, attrs, message", [
    ([CACHE, UPDATE], {"axis": 0}, r"axis 0 is the batch axis of past_cache shape \(2, 3, 5, 4\)"),
    ([CACHE, UPDATE], {"axis": -4}, r"axis -4 is the batch axis"),
    ([CACHE, UPDATE], {"axis": 4}, r"axis 4 is out of range \[-4, 3\] for rank 4"),
    ([CACHE, UPDATE], {"mode": "ring"}, r"mode 'ring' is not one of linear, circular"),
    ([CACHE, np.ones((2, 3, 6, 4), F32)], {}, r"update float32\(2, 3, 6, 4\) must match past_cache float32"
                                              r"\(2, 3, 5, 4\) but for a sequence length \(axis 2\) of at most 5"),
    ([CACHE, np.ones((2, 2, 2, 4), F32)], {}, r"update float32\(2, 2, 2, 4\) must match past_cache"),
    ([CACHE, UPDATE.astype(np.float64)], {}, r"update float64\(2, 3, 2, 4\) must match past_cache float32"),
    ([CACHE, UPDATE[0]], {}, r"update float32\(3, 2, 4\) must match past_cache"),
    ([CACHE, UPDATE, np.zeros(3, np.int64)], {}, r"write_indices shape \(3,\) must be \(2,\)"),
    ([CACHE, UPDATE, np.zeros(2, F32)], {}, r"write_indices: expected a signed int/unsigned int tensor"),
])
def test_tensor_scatter_bad_nodes_are_model_errors(arrays, attrs, message):
    prepare_error("TensorScatter", arrays, attrs, 24, message)


@pytest.mark.parametrize("writes, mode, message", [
    ((0, 4), "linear", r"write_indices \[0, 4\] must be in \[0, 3\] \(cache length 5, update 2\)"),
    ((-1, 0), "linear", r"write_indices \[-1, 0\] must be in \[0, 3\]"),
    ((0, -2), "circular", r"write_indices \[0, -2\] must be 0 or more"),
])
def test_tensor_scatter_bad_write_indices_fail_when_it_runs(writes, mode, message):
    g = GraphBuilder("g", opset=24)
    past, update = g.input("past", F32, CACHE.shape), g.input("update", F32, UPDATE.shape)
    writes_in = g.input("writes", np.int64, (2,))
    g.output(g.op("TensorScatter", [past, update, writes_in], name="kv", mode=mode), "y")
    it = Interpreter(g.build())
    it.run({"past": CACHE, "update": UPDATE, "writes": np.array([1, 2])})  # fine
    with pytest.raises(ModelError, match=r"node 'kv' \(TensorScatter\): " + message):
        it.run({"past": CACHE, "update": UPDATE, "writes": np.array(writes)})


# --- SwiGLU -------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape, dtype, alpha, rtol", [
    ((3, 5), F32, None, 1e-6),
    ((2, 3, 8), np.float64, 1.702, 1e-14),
    ((4, 6), np.float16, 0.5, 1e-3),
    ((16,), BF16, -1.0, 4e-3),
    ((), F32, 2.0, 1e-6),
    ((0, 4), F32, None, 0),
])
def test_swiglu_matches_its_closed_form(shape, dtype, alpha, rtol):
    rng = np.random.default_rng(3)
    a = (rng.standard_normal(shape) * 4).astype(dtype)
    b = rng.standard_normal(shape).astype(dtype)
    attrs = {} if alpha is None else {"alpha": alpha}
    got = ours("SwiGLU", [a, b], attrs, 28)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    want = a64 / (1 + np.exp(-(1.0 if alpha is None else alpha) * a64)) * b64
    assert got.dtype == np.dtype(dtype) and got.shape == shape
    np.testing.assert_allclose(got.astype(np.float64), want, rtol=rtol, atol=rtol * 1e-2)


def test_swiglu_saturates_without_overflow():
    a = np.array([-1000, -100, 0, 100, 1000], F32)
    got = ours("SwiGLU", [a, np.full(5, 2, F32)], {}, 28)
    np.testing.assert_array_equal(got, [0, 0, 0, 200, 2000])


@pytest.mark.parametrize("arrays, message", [
    ([np.zeros((2, 3), F32), np.zeros((3,), F32)], r"A shape \(2, 3\) and B shape \(3,\) must be equal"),
    ([np.zeros((2, 3), F32), np.zeros((2, 3), np.float64)], r"A and B: dtypes differ: float32, float64"),
    ([np.zeros((2, 3), np.int32), np.zeros((2, 3), np.int32)], r"A: expected a float tensor, got int32"),
])
def test_swiglu_bad_inputs_are_model_errors(arrays, message):
    prepare_error("SwiGLU", arrays, {}, 28, message)


# --- Bernoulli ----------------------------------------------------------------------------------


def test_bernoulli_draws_only_zeros_and_ones_with_p_0_and_1_exact():
    p = np.tile(np.array([0.0, 1.0, 0.5, 0.01, 0.99], F32), 400)
    for seed in (None, 0.0, 7.0):
        y = ours("Bernoulli", [p], {} if seed is None else {"seed": seed}, 15)
        assert y.dtype == F32 and set(np.unique(y).tolist()) == {0.0, 1.0}
        assert not y[p == 0].any() and y[p == 1].all()


@pytest.mark.parametrize("p", [0.03, 0.3, 0.5, 0.85])
def test_bernoulli_mean_is_close_to_p(p):
    n = 200_000  # the mean's standard deviation is at most 0.0012: 0.006 is five of them
    y = ours("Bernoulli", [np.full(n, p, np.float64)], {"seed": 3.0}, 22)
    assert abs(y.mean() - p) < 0.006


def test_bernoulli_draws_per_element_probabilities():
    p = np.linspace(0, 1, 11)
    y = ours("Bernoulli", [np.tile(p, (20_000, 1))], {"seed": 1.0}, 15)
    np.testing.assert_allclose(y.mean(axis=0), p, atol=0.015)  # five standard deviations


def test_bernoulli_same_seed_same_draws_other_seed_others():
    p = np.full((50, 40), 0.5, F32)
    first, again = (ours("Bernoulli", [p], {"seed": 11.0}, 15) for _ in range(2))
    np.testing.assert_array_equal(first, again)
    assert (ours("Bernoulli", [p], {"seed": 12.0}, 15) != first).any()


def test_bernoulli_seeded_draws_match_the_onnx_reference_evaluator():
    p = np.random.default_rng(0).random((6, 7)).astype(F32)
    node = helper.make_node("Bernoulli", ["p"], ["y"], seed=5.0, dtype=TensorProto.DOUBLE)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("p", TensorProto.FLOAT, p.shape)],
                              [helper.make_tensor_value_info("y", TensorProto.DOUBLE, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])
    want = ReferenceEvaluator(model).run(None, {"p": p})[0]
    got = ours("Bernoulli", [p], {"seed": 5.0, "dtype": TensorProto.DOUBLE}, 15)
    assert got.dtype == want.dtype == np.float64
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype, code, want", [
    (np.float16, None, np.float16), (F32, TensorProto.INT32, np.int32), (np.float64, TensorProto.BOOL, np.bool_),
    (BF16, None, BF16), (F32, TensorProto.BFLOAT16, BF16), (np.float64, TensorProto.UINT8, np.uint8),
])
def test_bernoulli_output_type_is_dtype_or_the_inputs(dtype, code, want):
    p = np.array([0, 1, 1, 0], dtype)
    y = ours("Bernoulli", [p], {} if code is None else {"dtype": code}, 22)
    assert y.dtype == np.dtype(want)
    assert y.astype(np.float64).tolist() == [0, 1, 1, 0]


def test_bernoulli_is_never_folded_and_each_run_draws_again():
    def build():
        g = GraphBuilder("g", opset=15)
        p = g.constant("p", np.full(1000, 0.5, F32))
        g.output(g.op("Bernoulli", [p], name="coin", seed=4.0), "y")
        return Interpreter(g.build())

    it = build()
    first, second = it.run({})["y"], it.run({})["y"]
    assert (first != second).any()  # equal by chance with probability 2 ** -1000
    np.testing.assert_array_equal(build().run({})["y"], first)  # a new plan restarts the sequence


@pytest.mark.parametrize("p, bad", [([0.2, 1.5], "1.5"), ([1, -0.1], "-0.1"), ([np.nan], "nan")])
def test_bernoulli_probability_outside_0_1_is_a_model_error(p, bad):
    p = np.array(p, F32)
    kernel = make("Bernoulli", {"seed": 0.0}, 15, "coin")
    (spec,) = kernel.prepare([TensorSpec(p.dtype, p.shape)], [None])
    with pytest.raises(ModelError, match=rf"node 'coin' \(Bernoulli\): probability {bad} is outside \[0, 1\]"):
        kernel.run([p], [np.empty(spec.shape, spec.dtype)])


@pytest.mark.parametrize("arrays, attrs, message", [
    ([np.zeros(3, np.int32)], {}, r"input: expected a float tensor, got int32"),
    ([np.zeros(3, F32)], {"seed": float("inf")}, r"seed inf must be finite"),
    ([np.zeros(3, F32)], {"dtype": TensorProto.STRING}, r"attribute 'dtype': element type 8 is not supported"),
])
def test_bernoulli_bad_nodes_are_model_errors(arrays, attrs, message):
    prepare_error("Bernoulli", arrays, attrs, 15, message)

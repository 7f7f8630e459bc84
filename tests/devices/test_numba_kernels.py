"""The numba backend's fast paths agree with onnxruntime, and fall back to the
reference kernels where they do not apply."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from converters import from_onnx
from runtime import Interpreter
from tests.onnx_models import make_mlp, make_model, ort_run

F32 = TensorProto.FLOAT


def run_both(model, feeds, device="numba"):
    it = Interpreter(from_onnx(model), device=device)
    ours = it.run(feeds)
    theirs = ort_run(model, feeds)
    for name, want in theirs.items():
        np.testing.assert_allclose(ours[name], want, rtol=1e-5, atol=1e-6)
    return [step[0].__name__ for step in it._plans["serving_default"].prepared.steps]


def gemm_model(m, k, n, *, trans_a=0, trans_b=0, alpha=1.0, beta=1.0, c_shape=(None,), const_b=True):
    rng = np.random.default_rng(m * 100 + k * 10 + n)
    a_shape = (k, m) if trans_a else (m, k)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(np.float32)
    inits, inputs = {}, [helper.make_tensor_value_info("a", F32, a_shape)]
    if const_b:
        inits["b"] = b
    else:
        inputs.append(helper.make_tensor_value_info("b", F32, b.shape))
    names = ["a", "b"]
    if c_shape != (None,):
        inits["c"] = rng.standard_normal(c_shape).astype(np.float32)
        names.append("c")
    node = helper.make_node("Gemm", names, ["y"], transA=trans_a, transB=trans_b, alpha=alpha, beta=beta)
    model = make_model([node], inputs, [helper.make_tensor_value_info("y", F32, None)], inits)
    feeds = {"a": rng.standard_normal(a_shape).astype(np.float32)}
    if not const_b:
        feeds["b"] = b
    return model, feeds


@pytest.mark.parametrize("kwargs", [
    dict(m=1, k=64, n=32, trans_b=1, c_shape=(32,)),
    dict(m=3, k=8, n=5, c_shape=(3, 5)),
    dict(m=4, k=6, n=2, trans_a=1, alpha=0.5, beta=2.0, c_shape=(1, 2)),
    dict(m=2, k=3, n=4, c_shape=()),
    dict(m=5, k=7, n=3, trans_a=1, trans_b=1),
    dict(m=2, k=5, n=3, beta=0.0, c_shape=(3,)),
])
def test_small_gemm_takes_the_fast_path(kwargs):
    assert run_both(*gemm_model(**kwargs)) == ["_run_small"]


@pytest.mark.parametrize("kwargs", [
    dict(m=64, k=256, n=256, c_shape=(256,)),   # too big: BLAS
    dict(m=2, k=3, n=4, const_b=False),          # B is not a constant
])
def test_gemm_falls_back_to_the_reference(kwargs):
    assert run_both(*gemm_model(**kwargs)) == ["run"]


@pytest.mark.parametrize("shape,axis,opset,fast", [
    ((1, 10), -1, 13, True),
    ((2, 3, 4), 2, 13, True),
    ((2, 3, 4), 1, 13, False),   # not the last axis: reference
    ((2, 3, 4), 1, 11, True),    # opset < 13 flattens the tail
    ((5, 6), 0, 11, True),
])
def test_softmax(shape, axis, opset, fast):
    node = helper.make_node("Softmax", ["x"], ["y"], axis=axis)
    model = make_model([node], [helper.make_tensor_value_info("x", F32, shape)],
                       [helper.make_tensor_value_info("y", F32, None)], opset=opset)
    x = (np.random.default_rng(0).standard_normal(shape) * 20).astype(np.float32)
    assert run_both(model, {"x": x}) == (["_run_rows"] if fast else ["run"])


@pytest.mark.parametrize("device", ["numba", "cpu"])
def test_mlp_matches_onnxruntime_on_both_backends(device):
    x = np.random.default_rng(3).standard_normal((4, 64)).astype(np.float32)
    run_both(make_mlp(), {"x": x}, device=device)

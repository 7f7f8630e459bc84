"""The cuda backend's Gemm and MatMul (devices/cuda/gemm.py) against the CPU reference kernels,
under numba's CUDA simulator: the tiled GEMM (sizes that are no multiple of its 16x16 tiles),
transA / transB, alpha / beta, every C shape, C read at run time, fused activations, batched
and broadcast MatMul with 1-D operands, float64; and integer products left to the host."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

import edgerun.devices.cuda.gemm  # noqa: F401  (registers the claims)
from edgerun.converters.onnx_import import from_onnx
from tests.devices.cuda.harness import expect_same_as_cpu
from tests.onnx_models import make_model

ELEM = {np.float32: TensorProto.FLOAT, np.float64: TensorProto.DOUBLE, np.int32: TensorProto.INT32}
TOL = {np.float32: dict(rtol=1e-4, atol=1e-5), np.float64: dict(rtol=1e-10, atol=1e-10)}


def _data(rng: np.random.Generator, shape: tuple[int, ...], dtype) -> np.ndarray:
    if np.dtype(dtype).kind == "i":
        return rng.integers(-5, 6, shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


def gemm_model(m, k, n, *, c_shape=None, c_input=False, dtype=np.float32, activation=None, **attrs):
    """a (M, K) input -> Gemm with constant B [and C] [-> activation] -> y; the feeds."""
    rng = np.random.default_rng(m * 100 + k * 10 + n)
    a_shape = (k, m) if attrs.get("transA") else (m, k)
    b_shape = (n, k) if attrs.get("transB") else (k, n)
    inits, names = {"b": _data(rng, b_shape, dtype)}, ["a", "b"]
    inputs = [helper.make_tensor_value_info("a", ELEM[dtype], a_shape)]
    feeds = {"a": _data(rng, a_shape, dtype)}
    if c_shape is not None:
        names.append("c")
        c = _data(rng, c_shape, dtype)
        if c_input:
            inputs.append(helper.make_tensor_value_info("c", ELEM[dtype], c_shape))
            feeds["c"] = c
        else:
            inits["c"] = c
    nodes = [helper.make_node("Gemm", names, ["g" if activation else "y"], name="gemm", **attrs)]
    if activation:
        act_inputs = ["g"]
        if activation[0] == "Clip":  # Relu6: opset 11+ takes the bounds as (constant) inputs
            inits.update(lo=np.array(0, dtype), hi=np.array(6, dtype))
            act_inputs += ["lo", "hi"]
            feeds["a"] *= 4  # reach both bounds
        nodes.append(helper.make_node(activation[0], act_inputs, ["y"], name="act", **activation[1]))
    model = make_model(nodes, inputs, [helper.make_tensor_value_info("y", ELEM[dtype], None)], inits)
    return model.SerializeToString(), feeds


def matmul_model(a_shape, b_shape, *, dtype=np.float32, activation=None):
    """a, b inputs -> MatMul [-> activation] -> y; the feeds."""
    rng = np.random.default_rng(sum(a_shape) * 10 + sum(b_shape))
    inputs = [helper.make_tensor_value_info(n, ELEM[dtype], s) for n, s in (("a", a_shape), ("b", b_shape))]
    nodes = [helper.make_node("MatMul", ["a", "b"], ["p" if activation else "y"], name="matmul")]
    if activation:
        nodes.append(helper.make_node(activation, ["p"], ["y"], name="act"))
    model = make_model(nodes, inputs, [helper.make_tensor_value_info("y", ELEM[dtype], None)])
    return model.SerializeToString(), {"a": _data(rng, a_shape, dtype), "b": _data(rng, b_shape, dtype)}


def fused(model: bytes, op: str):
    """The optimized graph, asserting it is one `op` node (an activation fused into it)."""
    graph = from_onnx(model)
    assert [node.op_type for node in graph.nodes] == [op]
    return graph


@pytest.mark.parametrize("trans_a,trans_b", [(0, 0), (1, 0), (0, 1), (1, 1)])
def test_gemm_transposes_alpha_beta_full_c(trans_a, trans_b):
    model, feeds = gemm_model(19, 21, 7, c_shape=(19, 7), transA=trans_a, transB=trans_b, alpha=0.5, beta=-1.5)
    expect_same_as_cpu(model, feeds, on_device=("Gemm",), **TOL[np.float32])


@pytest.mark.parametrize("c_shape", [(), (1,), (18,), (1, 18), (5, 1), (1, 1)])
def test_gemm_c_broadcasts(c_shape):
    model, feeds = gemm_model(5, 23, 18, c_shape=c_shape, beta=0.7)
    expect_same_as_cpu(model, feeds, on_device=("Gemm",), **TOL[np.float32])


@pytest.mark.parametrize("c_shape", [(3, 17), (17,)])
def test_gemm_c_read_at_run_time(c_shape):
    model, feeds = gemm_model(3, 33, 17, c_shape=c_shape, c_input=True, transB=1, beta=2.0)
    expect_same_as_cpu(model, feeds, on_device=("Gemm",), **TOL[np.float32])


@pytest.mark.parametrize("kwargs", [dict(alpha=3.0), dict(c_shape=(4, 9), beta=0.0), dict(c_shape=(9,), alpha=-1.0)])
def test_gemm_without_c_or_with_beta_zero(kwargs):
    model, feeds = gemm_model(4, 1, 9, **kwargs)
    expect_same_as_cpu(model, feeds, on_device=("Gemm",), **TOL[np.float32])


@pytest.mark.parametrize("trans_b", [0, 1])
def test_gemm_float64(trans_b):
    model, feeds = gemm_model(17, 20, 3, c_shape=(3,), dtype=np.float64, transB=trans_b, alpha=0.3, beta=1.1)
    expect_same_as_cpu(model, feeds, on_device=("Gemm",), **TOL[np.float64])


@pytest.mark.parametrize("activation", [("Relu", {}), ("Clip", {}), ("LeakyRelu", dict(alpha=0.2)),
                                        ("HardSigmoid", dict(alpha=0.3, beta=0.4)), ("HardSwish", {}),
                                        ("Sigmoid", {}), ("Tanh", {})])
def test_gemm_fused_activation(activation):
    model, feeds = gemm_model(6, 5, 8, c_shape=(8,), transB=1, activation=activation)
    expect_same_as_cpu(fused(model, "Gemm"), feeds, on_device=("Gemm",), **TOL[np.float32])


def test_integer_gemm_stays_on_the_host():
    model, feeds = gemm_model(5, 7, 6, c_shape=(6,), dtype=np.int32, transB=1, beta=2.0)
    placement = expect_same_as_cpu(model, feeds, rtol=0, atol=0)
    assert placement == {"gemm": "host"}


@pytest.mark.parametrize("a_shape,b_shape", [
    ((7, 23), (23, 18)),                # 2-D, two tiles wide and two deep
    ((3, 5, 9), (3, 9, 6)),             # batched
    ((2, 1, 4, 5), (3, 5, 6)),          # batch axes broadcast both ways
    ((4, 17), (2, 17, 3)),              # a 2-D A against a batch of B
    ((5,), (2, 5, 4)),                  # 1-D A: promoted, the row axis dropped
    ((2, 3, 5), (5,)),                  # 1-D B: the column axis dropped
    ((6,), (6,)),                       # a dot product: a scalar
])
def test_matmul_shapes(a_shape, b_shape):
    model, feeds = matmul_model(a_shape, b_shape)
    expect_same_as_cpu(model, feeds, on_device=("MatMul",), **TOL[np.float32])


def test_matmul_float64_batched():
    model, feeds = matmul_model((2, 3, 19), (19, 5), dtype=np.float64)
    expect_same_as_cpu(model, feeds, on_device=("MatMul",), **TOL[np.float64])


@pytest.mark.parametrize("activation", ["Relu", "Sigmoid"])
def test_matmul_fused_activation(activation):
    model, feeds = matmul_model((2, 4, 6), (6, 5), activation=activation)
    expect_same_as_cpu(fused(model, "MatMul"), feeds, on_device=("MatMul",), **TOL[np.float32])


def test_integer_matmul_stays_on_the_host():
    model, feeds = matmul_model((3, 4), (4, 2), dtype=np.int32)
    placement = expect_same_as_cpu(model, feeds, rtol=0, atol=0)
    assert placement == {"matmul": "host"}

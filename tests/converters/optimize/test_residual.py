"""fuse_residual_add: Conv + Add of a same-shape tensor (+ Relu) becomes one edgerun:FusedConv;
optimize_and_check compares the optimized graph's outputs with onnxruntime's on the original,
and the numba backend's FusedConv paths are checked against onnxruntime too."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from edgerun.converters import from_onnx
from edgerun.runtime import Interpreter
from tests.converters.optimize.helpers import info, ops, optimize_and_check
from tests.onnx_models import make_model, ort_run

node = helper.make_node


def _residual_block(op="Add", relu=True, group=1, kernel=1, strides=1, bias=True, z_shape=None, swap=False):
    """x -> Conv -> (op with x or a z input) [-> Relu] -> y; the Conv keeps x's shape."""
    rng = np.random.default_rng(9)
    c = 4
    inits = {"w": (rng.standard_normal((c, c // group, kernel, kernel)) / 3).astype(np.float32)}
    conv_inputs = ["x", "w"]
    if bias:
        inits["b"] = rng.standard_normal(c).astype(np.float32)
        conv_inputs.append("b")
    pad = kernel // 2
    nodes = [node("Conv", conv_inputs, ["h"], group=group, pads=[pad] * 4, strides=[strides] * 2)]
    other = "x" if z_shape is None else "z"
    nodes.append(node(op, [other, "h"] if swap else ["h", other], ["s" if relu else "y"]))
    if relu:
        nodes.append(node("Relu", ["s"], ["y"]))
    inputs = [info("x", ["n", c, 6, 6])] + ([info("z", list(z_shape))] if z_shape is not None else [])
    return make_model(nodes, inputs, [info("y", None)], inits)


@pytest.mark.parametrize("kwargs", [
    dict(), dict(op="Sum"), dict(relu=False), dict(swap=True), dict(bias=False),
    dict(kernel=3), dict(kernel=3, group=4), dict(kernel=3, group=2),
])
def test_residual_add_becomes_one_fused_conv(kwargs):
    graph, report = optimize_and_check(_residual_block(**kwargs))
    assert ops(graph) == ["FusedConv"]
    assert graph.nodes[0].domain == "edgerun"
    assert report.passes[0].name  # the optimizer ran
    assert ("activation" in graph.nodes[0].attrs) == kwargs.get("relu", True)


@pytest.mark.parametrize("z_shape", [(4, 1, 1), (1, 4, 6, 1)])
def test_add_that_broadcasts_stays(z_shape):
    graph, _ = optimize_and_check(_residual_block(z_shape=z_shape), passes=["fuse_residual_add"])
    assert ops(graph)[:2] == ["Conv", "Add"]


def test_strided_conv_adds_a_tensor_of_its_output_shape():
    model = _residual_block(kernel=3, strides=2, z_shape=("n", 4, 3, 3))
    graph, _ = optimize_and_check(model, passes=["fuse_residual_add"])
    assert ops(graph) == ["FusedConv", "Relu"]


@pytest.mark.parametrize("kwargs", [dict(), dict(kernel=3), dict(kernel=3, group=4), dict(kernel=3, group=2),
                                    dict(bias=False, relu=False)])
@pytest.mark.parametrize("device", ["numba", "cpu"])
def test_fused_conv_kernels_match_onnxruntime(kwargs, device):
    model = _residual_block(**kwargs)
    x = np.random.default_rng(1).standard_normal((3, 4, 6, 6)).astype(np.float32)
    it = Interpreter(from_onnx(model), device=device)
    np.testing.assert_allclose(it.run({"x": x})["y"], ort_run(model, {"x": x})["y"], rtol=1e-5, atol=1e-5)
    (step,) = it._plans["serving_default"].prepared.steps
    assert step[3].op_type == "FusedConv"
    if device == "numba":
        assert step[0].__name__ in ("_run_gemm", "_run_blocks", "_run_then_add")


def test_fused_conv_with_a_broadcast_residual_runs_the_reference():
    """A FusedConv whose Z broadcasts (written by hand: the optimizer fuses same shapes only)."""
    from edgerun.runtime.graph import Graph, Node, Value

    rng = np.random.default_rng(2)
    x = Value("x", np.dtype(np.float32), (1, 2, 4, 4))
    w = Value("w", np.dtype(np.float32), (2, 2, 1, 1), data=rng.standard_normal((2, 2, 1, 1)).astype(np.float32))
    z = Value("z", np.dtype(np.float32), (2, 1, 1), data=np.array([[[1.0]], [[-1.0]]], np.float32))
    y = Value("y", np.dtype(np.float32), None)
    graph = Graph("g", [Node("FusedConv", [x, w, None, z], [y], {}, "fc", "edgerun", 1)], [x], [y])
    xs = rng.standard_normal((1, 2, 4, 4)).astype(np.float32)
    got = Interpreter(graph, device="numba").run({"x": xs})["y"]
    want = np.einsum("oc,nchw->nohw", w.data[:, :, 0, 0], xs) + z.data
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("length, path", [(50, "_run_gather_1d"), (3000, "_run_lifted")])
def test_a_1d_fused_conv_adds_its_residual_once(length, path):
    """1-D: the small-gather path and the height-1 2-D path each add Z in their own epilogue."""
    rng = np.random.default_rng(4)
    c = 24
    nodes = [node("Conv", ["x", "w", "b"], ["h"], pads=[1, 1]), node("Add", ["h", "x"], ["s"]),
             node("Relu", ["s"], ["y"])]
    inits = {"w": (rng.standard_normal((c, c, 3)) / 8).astype(np.float32),
             "b": rng.standard_normal(c).astype(np.float32)}
    model = make_model(nodes, [info("x", [2, c, length])], [info("y", None)], inits)
    x = rng.standard_normal((2, c, length)).astype(np.float32)
    it = Interpreter(from_onnx(model), device="numba")
    np.testing.assert_allclose(it.run({"x": x})["y"], ort_run(model, {"x": x})["y"], rtol=1e-5, atol=1e-5)
    (step,) = it._plans["serving_default"].prepared.steps
    assert step[3].op_type == "FusedConv" and step[0].__name__ == path

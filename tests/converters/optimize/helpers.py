"""Shared by the optimizer tests: convert without optimizing, optimize, and check that
edgerun's outputs before and after match onnxruntime's on the original model."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper

from edgerun.converters import from_onnx
from edgerun.converters.optimize import OptimizeReport, optimize
from edgerun.runtime import Interpreter
from edgerun.runtime.graph import Graph
from tests.onnx_models import ort_run

RTOL, ATOL = 1e-4, 1e-5


def info(name: str, shape: Sequence[int | str] | None, elem: int = TensorProto.FLOAT) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, shape)


def convert(model: onnx.ModelProto) -> Graph:
    """The graph exactly as imported (no optimization, whatever from_onnx's default)."""
    return from_onnx(model, optimize=False)


def run(graph: Graph, feeds: dict[str, np.ndarray], device: str = "auto") -> dict[str, np.ndarray]:
    """Outputs of `graph` (serialized, verified and loaded, as a file would be)."""
    return Interpreter(graph, device=device).run(feeds)


def random_feeds(graph: Graph, seed: int = 0) -> dict[str, np.ndarray]:
    """Standard-normal float inputs of the declared shapes (dynamic dims -> 2)."""
    rng = np.random.default_rng(seed)
    return {v.name: rng.standard_normal(tuple(2 if d < 0 else d for d in v.shape)).astype(v.dtype)
            for v in graph.inputs}


def assert_outputs_close(got: dict[str, np.ndarray], want: dict[str, np.ndarray],
                         rtol: float = RTOL, atol: float = ATOL) -> None:
    assert got.keys() == want.keys()
    for name, array in want.items():
        assert got[name].shape == array.shape and got[name].dtype == array.dtype, name
        np.testing.assert_allclose(got[name], array, rtol=rtol, atol=atol, err_msg=name)


def optimize_and_check(
    model: onnx.ModelProto,
    feeds: dict[str, np.ndarray] | None = None,
    passes: Sequence[str] | None = None,
    device: str = "auto",
) -> tuple[Graph, OptimizeReport]:
    """Optimize the converted `model` and assert that its outputs, and the unoptimized
    graph's, equal onnxruntime's. Returns the optimized graph and the report."""
    graph = convert(model)
    feeds = random_feeds(graph) if feeds is None else feeds
    want = ort_run(model, feeds)
    assert_outputs_close(run(graph, feeds, device), want)
    report = optimize(graph, passes)
    assert_outputs_close(run(graph, feeds, device), want)
    return graph, report


def ops(graph: Graph) -> list[str]:
    return [n.op_type for n in graph.nodes]

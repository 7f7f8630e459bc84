"""Run a model on the cuda backend (numba's CUDA simulator in the suite) and on the CPU.

    outputs, placement = run_on_cuda(model, {"x": x})
    placement = expect_same_as_cpu(model, {"x": x}, rtol=1e-4, atol=1e-5, on_device=("Conv",))

`model` is ONNX ModelProto bytes (or a ModelProto), or an edgerun Graph. The oracle is the
numpy reference kernels (device="cpu"); `placement` maps node name -> "device" | "host", and
`on_device` asserts that every node of those op types ran on the GPU (a claim that silently
fell back to the host would otherwise pass).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from edgerun.runtime import Interpreter
from edgerun.runtime.graph import Graph

SIGNATURE = "serving_default"


def as_graph(model) -> Graph:  # noqa: ANN001 - ONNX bytes, a ModelProto or a Graph
    if isinstance(model, Graph):
        return model
    from edgerun.converters.onnx_import import from_onnx

    return from_onnx(model if isinstance(model, bytes) else model.SerializeToString())


def run_on_cuda(model, inputs: Mapping[str, np.ndarray], signature: str = SIGNATURE):  # noqa: ANN001, ANN201
    """(outputs, placement) of one run on device="cuda"."""
    interpreter = Interpreter(as_graph(model), device="cuda")
    outputs = interpreter.run(dict(inputs), signature)
    return outputs, interpreter.placement(signature)


def expect_same_as_cpu(model, inputs: Mapping[str, np.ndarray], rtol: float = 1e-4, atol: float = 1e-5,  # noqa: ANN001
                       on_device: Iterable[str] = (), signature: str = SIGNATURE) -> dict[str, str]:
    """Assert device="cuda" gives device="cpu"'s outputs (NaN where it has NaN) and that every
    node whose op type is in `on_device` ran on the GPU; returns the placement."""
    graph = as_graph(model)
    expected = Interpreter(graph, device="cpu").run(dict(inputs), signature)
    got, placement = run_on_cuda(graph, inputs, signature)
    assert got.keys() == expected.keys()
    for name in expected:
        assert got[name].dtype == expected[name].dtype, name
        assert got[name].shape == expected[name].shape, name
        np.testing.assert_allclose(got[name], expected[name], rtol=rtol, atol=atol, equal_nan=True, err_msg=name)
    wanted = set(on_device)
    ops = {node.name: node.op_type for node in graph.nodes}
    off = [f"{name} ({ops.get(name)})" for name, where in placement.items()
           if ops.get(name) in wanted and where != "device"]
    assert not off, f"ran on the host, not the GPU: {off}"
    assert not wanted or any(ops.get(name) in wanted for name in placement), f"no {sorted(wanted)} node was planned"
    return placement

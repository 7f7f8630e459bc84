"""A Concat whose parts are contiguous ranges of its output runs as no step: the steps that make
its inputs write them into their parts of its arena bytes (ExecutionPlan._concat_in_place).
Every case against onnxruntime, on the reference and numba backends (the numba cases are left
out where numba is not installed: tasks.py NO_NUMBA_DESELECTED) or on "auto", with the plan's
steps inspected."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from edgerun.converters import from_onnx
from edgerun.runtime import Interpreter
from tests.onnx_models import make_model, ort_run

F32 = TensorProto.FLOAT


def conv(name: str, x: str, cin: int, cout: int, rng, inits: dict) -> helper.NodeProto:
    inits[f"{name}.w"] = (rng.standard_normal((cout, cin, 3, 3)) * 0.3).astype(np.float32)
    return helper.make_node("Conv", [x, f"{name}.w"], [name], pads=[1, 1, 1, 1])


def fire_model(batch: int = 1, outputs: tuple[str, ...] = ("y",), extra: list | None = None):
    """squeezenet's fire module: x -> squeeze -> (expand a, expand b) -> Concat -> Relu -> y."""
    rng, inits = np.random.default_rng(0), {}
    nodes = [conv("s", "x", 3, 4, rng, inits), helper.make_node("Relu", ["s"], ["sr"]),
             conv("a", "sr", 4, 5, rng, inits), conv("b", "sr", 4, 6, rng, inits),
             helper.make_node("Concat", ["a", "b"], ["cat"], axis=1), helper.make_node("Relu", ["cat"], ["y"]),
             *(extra or [])]
    model = make_model(nodes, [helper.make_tensor_value_info("x", F32, (batch, 3, 9, 9))],
                       [helper.make_tensor_value_info(name, F32, None) for name in outputs], inits)
    return model, {"x": rng.standard_normal((batch, 3, 9, 9)).astype(np.float32)}


def run_against_onnxruntime(model, feeds, device: str) -> list[str]:
    it = Interpreter(from_onnx(model), device=device)
    for _ in range(2):  # the second run reads arena bytes that the first left behind
        ours, theirs = it.run(feeds), ort_run(model, feeds)
        for name, want in theirs.items():
            np.testing.assert_allclose(ours[name], want, rtol=1e-5, atol=1e-5)
    return [step[3].op_type for step in it._plans["serving_default"].prepared.steps]


@pytest.mark.parametrize("device", ["cpu", "numba"])
def test_a_batch_1_concat_along_channels_is_no_step(device):
    ops = run_against_onnxruntime(*fire_model(), device)
    assert "Concat" not in ops and ops.count("Conv") + ops.count("FusedConv") == 3


@pytest.mark.parametrize("device", ["cpu", "numba"])
def test_a_batch_of_2_is_copied(device):
    """At batch 2 each part is two ranges of the output: the Concat stays a step."""
    assert "Concat" in run_against_onnxruntime(*fire_model(batch=2), device)


def test_parts_read_elsewhere_and_given_out_stay_right():
    """A part that a later node reads too, and a part that is itself a signature output: both
    read their range of the Concat's output, which lives until their last reader."""
    extra = [helper.make_node("Add", ["a", "a"], ["later"])]
    ops = run_against_onnxruntime(*fire_model(outputs=("y", "later", "b"), extra=extra), "auto")
    assert "Concat" not in ops


def test_only_one_concat_may_own_a_part():
    """DenseNet's pattern: x0 and x1 go into one Concat, then x0, x1 and x2 into another; the
    second copies (its parts already belong to the first's output)."""
    rng, inits = np.random.default_rng(1), {}
    nodes = [conv("x0", "x", 2, 3, rng, inits), conv("x1", "x0", 3, 3, rng, inits),
             helper.make_node("Concat", ["x0", "x1"], ["c1"], axis=1), conv("x2", "c1", 6, 3, rng, inits),
             helper.make_node("Concat", ["x0", "x1", "x2"], ["c2"], axis=1), helper.make_node("Relu", ["c2"], ["y"])]
    model = make_model(nodes, [helper.make_tensor_value_info("x", F32, (1, 2, 7, 7))],
                       [helper.make_tensor_value_info("y", F32, None)], inits)
    ops = run_against_onnxruntime(model, {"x": rng.standard_normal((1, 2, 7, 7)).astype(np.float32)}, "auto")
    assert ops.count("Concat") == 1


@pytest.mark.parametrize("inputs,why", [
    (["x", "a"], "a signature input"),
    (["a", "a"], "the same tensor twice"),
    (["ra", "b"], "a Reshape's view"),
])
def test_parts_that_are_not_the_steps_own_are_copied(inputs, why):
    rng, inits = np.random.default_rng(2), {"shape": np.array([1, 2, 5, 5], np.int64)}
    nodes = [conv("a", "x", 2, 2, rng, inits), conv("b", "a", 2, 2, rng, inits),
             helper.make_node("Reshape", ["a", "shape"], ["ra"]),
             helper.make_node("Concat", inputs, ["cat"], axis=1), helper.make_node("Relu", ["cat"], ["y"])]
    model = make_model(nodes, [helper.make_tensor_value_info("x", F32, (1, 2, 5, 5))],
                       [helper.make_tensor_value_info("y", F32, None)], inits)
    ops = run_against_onnxruntime(model, {"x": rng.standard_normal((1, 2, 5, 5)).astype(np.float32)}, "auto")
    assert "Concat" in ops, why


def test_a_later_axis_with_unit_dimensions_before_it():
    """(1, 1, H, W) parts along the height: still one range each."""
    rng, inits = np.random.default_rng(3), {}
    nodes = [conv("a", "x", 1, 1, rng, inits), conv("b", "x", 1, 1, rng, inits),
             helper.make_node("Concat", ["a", "b"], ["cat"], axis=-2), helper.make_node("Sigmoid", ["cat"], ["y"])]
    model = make_model(nodes, [helper.make_tensor_value_info("x", F32, (1, 1, 6, 4))],
                       [helper.make_tensor_value_info("y", F32, None)], inits)
    ops = run_against_onnxruntime(model, {"x": rng.standard_normal((1, 1, 6, 4)).astype(np.float32)}, "auto")
    assert "Concat" not in ops


def test_a_new_batch_size_plans_again():
    """The same model at batch 1 (placed) and batch 3 (copied) in one interpreter: the plan
    keeps both preparations and each gives onnxruntime's result."""
    model, _ = fire_model()
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "n"
    it = Interpreter(from_onnx(model))
    for batch in (1, 3, 1):
        x = np.random.default_rng(batch).standard_normal((batch, 3, 9, 9)).astype(np.float32)
        np.testing.assert_allclose(it.run({"x": x})["y"], ort_run(model, {"x": x})["y"], rtol=1e-5, atol=1e-5)
        ops = [step[3].op_type for step in it._plans["serving_default"].prepared.steps]
        assert ("Concat" in ops) == (batch > 1)

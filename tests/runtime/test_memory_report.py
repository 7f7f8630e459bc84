"""Interpreter.memory_report: the arena, the weights a signature reads and the variables; and
resize_inputs, which changes inputs whose shapes must agree together."""

from __future__ import annotations

import numpy as np
import pytest

from edgerun.converters.training import make_trainable
from edgerun.runtime import GraphBuilder, Interpreter
from edgerun.runtime.errors import InputError


def two_layers():
    """x (batch, 16) -> Gemm 16x32 -> Relu -> Gemm 32x4: 2,688 float32 weights + biases."""
    g = GraphBuilder("two", opset=17)
    x = g.input("x", np.float32, (-1, 16))
    h = g.op("Relu", [g.op("Gemm", [x, g.constant("w1", np.ones((32, 16), np.float32)),
                                    g.constant("b1", np.zeros(32, np.float32))], transB=1)])
    g.output(g.op("Gemm", [h, g.constant("w2", np.ones((4, 32), np.float32))], transB=1), "y")
    return g.build()


def test_inference_report_counts_the_weights_once_and_the_arena_at_the_prepared_batch():
    interpreter = Interpreter(two_layers(), device="cpu")
    interpreter.resize_input("x", (100, 16))
    report = interpreter.memory_report()
    assert report.weight_bytes == 4 * (32 * 16 + 32 + 4 * 32)
    assert report.variable_bytes == report.optimizer_state_bytes == 0
    # (100, 32) float32 hidden activations live at once with at least one other tensor of the batch
    assert 100 * 32 * 4 <= report.arena_bytes == interpreter.arena_bytes()
    assert report.total_bytes == report.arena_bytes + report.weight_bytes
    assert report.fits(report.total_bytes) and not report.fits(report.total_bytes - 1)
    assert str(report).startswith("serving_default: 0.0 MiB (arena 0.0, weights 0.0, variables 0.0)")


def test_a_trainable_model_reports_parameters_and_adam_state_apart():
    graph = make_trainable(two_layers(), trainable="w2", optimizer="adam")
    report = Interpreter(graph, device="cpu").memory_report("train")
    # w2 (128 floats), its two Adam moments and the step counter
    assert report.variable_bytes == 3 * 4 * 128 + 4
    assert report.optimizer_state_bytes == 2 * 4 * 128 + 4
    assert "optimizer state" in str(report)


def test_resize_inputs_changes_inputs_that_must_agree_together_or_keeps_the_old_shapes():
    graph = make_trainable(two_layers(), optimizer="sgd")
    interpreter = Interpreter(graph, device="cpu")
    with pytest.raises(InputError, match="expected shape"):  # one at a time the batch sizes disagree
        interpreter.resize_input("x", (8, 16), signature="train")
    interpreter.resize_inputs({"x": (8, 16), "labels": (8,)}, signature="train")
    before = interpreter.arena_bytes("train")
    with pytest.raises(InputError, match="no input 'z'"):
        interpreter.resize_inputs({"x": (9, 16), "z": (9,)}, signature="train")
    assert interpreter.arena_bytes("train") == before  # nothing changed
    out = interpreter.run({"x": np.ones((8, 16), np.float32), "labels": np.zeros(8, np.int64)}, signature="train")
    assert np.isfinite(out["loss"])

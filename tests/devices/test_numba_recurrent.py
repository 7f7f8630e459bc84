"""The numba LSTM (devices/numba_recurrent.py) against onnxruntime, and where it must leave the
work to the reference kernel."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from edgerun.converters import from_onnx
from edgerun.runtime import Interpreter
from tests.onnx_models import make_model, ort_run

F32 = TensorProto.FLOAT


def lstm_model(seq, batch, size, hidden, *, direction="forward", layout=0, bias=True, peepholes=False,
               initial=False, lengths=False, **attrs):
    """x [, h0, c0] -> LSTM (constant W, R, B, P) -> y, y_h, y_c."""
    rng = np.random.default_rng(hidden * 100 + size)  # the same weights for any sequence length
    dirs = 2 if direction == "bidirectional" else 1
    inits = {"W": (rng.standard_normal((dirs, 4 * hidden, size)) / 3).astype(np.float32),
             "R": (rng.standard_normal((dirs, 4 * hidden, hidden)) / 3).astype(np.float32)}
    names = ["x", "W", "R", "B" if bias else "", "lens" if lengths else "", "h0" if initial else "",
             "c0" if initial else "", "P" if peepholes else ""]
    if bias:
        inits["B"] = rng.standard_normal((dirs, 8 * hidden)).astype(np.float32)
    if peepholes:
        inits["P"] = rng.standard_normal((dirs, 3 * hidden)).astype(np.float32)
    while names[-1] == "":
        names.pop()
    x_shape = (seq, batch, size) if layout == 0 else (batch, seq, size)
    state = (dirs, batch, hidden) if layout == 0 else (batch, dirs, hidden)
    inputs = [helper.make_tensor_value_info("x", F32, x_shape)]
    feeds = {"x": rng.standard_normal(x_shape).astype(np.float32)}
    if initial:
        for name in ("h0", "c0"):
            inputs.append(helper.make_tensor_value_info(name, F32, state))
            feeds[name] = rng.standard_normal(state).astype(np.float32)
    if lengths:
        inputs.append(helper.make_tensor_value_info("lens", TensorProto.INT32, (batch,)))
        feeds["lens"] = np.full(batch, seq, np.int32)
    node = helper.make_node("LSTM", names, ["y", "y_h", "y_c"], hidden_size=hidden, direction=direction,
                            layout=layout, **attrs)
    outputs = [helper.make_tensor_value_info(n, F32, None) for n in ("y", "y_h", "y_c")]
    return make_model([node], inputs, outputs, inits, opset=14), feeds


def run_lstm(model, feeds, layout=0):
    it = Interpreter(from_onnx(model), device="numba")
    got = it.run(feeds)
    # onnxruntime has no batch-first (layout 1) LSTM: there the reference kernel is the oracle
    want = ort_run(model, feeds) if layout == 0 else Interpreter(from_onnx(model), device="cpu").run(feeds)
    for name in ("y", "y_h", "y_c"):
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-5, err_msg=name)
    (step,) = it._plans["serving_default"].prepared.steps
    return step[0].__name__


@pytest.mark.parametrize("kwargs", [
    dict(seq=1, batch=1, size=16, hidden=32),                      # a streaming step
    dict(seq=7, batch=3, size=5, hidden=4, initial=True),
    dict(seq=6, batch=2, size=3, hidden=5, direction="reverse"),
    dict(seq=5, batch=2, size=4, hidden=3, direction="bidirectional", initial=True),
    dict(seq=4, batch=3, size=6, hidden=4, layout=1, initial=True, direction="bidirectional"),
    dict(seq=5, batch=2, size=3, hidden=4, peepholes=True, initial=True),
    dict(seq=3, batch=2, size=3, hidden=4, bias=False),
    dict(seq=3, batch=1, size=2, hidden=3, activations=["Sigmoid", "Tanh", "Tanh"]),
])
def test_lstm_matches_onnxruntime_on_the_compiled_path(kwargs):
    assert run_lstm(*lstm_model(**kwargs), layout=kwargs.get("layout", 0)) == "_run_compiled"


@pytest.mark.parametrize("kwargs", [
    dict(clip=0.5),
    dict(input_forget=1),
    dict(lengths=True),
    dict(activations=["HardSigmoid", "Tanh", "Tanh"]),
])
def test_lstm_variants_the_compiled_loop_does_not_cover_take_the_reference(kwargs):
    assert run_lstm(*lstm_model(4, 2, 3, 5, **kwargs)) == "run"


def test_lstm_state_carries_over_a_stream_of_single_steps():
    """One step at a time with the state fed back equals the whole sequence at once."""
    model, feeds = lstm_model(6, 2, 4, 8, initial=True)
    it = Interpreter(from_onnx(model), device="numba")
    whole = it.run(feeds)
    single, _ = lstm_model(1, 2, 4, 8, initial=True)
    stream = Interpreter(from_onnx(single), device="numba")
    h, c = feeds["h0"], feeds["c0"]
    for t in range(6):
        out = stream.run({"x": feeds["x"][t : t + 1], "h0": h, "c0": c})
        np.testing.assert_allclose(out["y"][0], whole["y"][t], rtol=1e-5, atol=1e-6)
        h, c = out["y_h"], out["y_c"]

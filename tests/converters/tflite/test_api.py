"""How a user meets the TFLite importer: Interpreter and load_model on .tflite paths and bytes,
`edgerun convert`, buffers stored after the flatbuffer, one error naming every operator that
cannot be converted, and custom operators taught with register_custom_op."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgerun import Interpreter, from_tflite, load_model
from edgerun.converters.tflite import layout, register_custom_op
from edgerun.runtime.errors import ConversionError, ModelError
from edgerun.runtime.flatread import FlatReader
from tests.converters.tflite.builder import TFLiteBuilder, litert_run

ROOT = Path(__file__).resolve().parents[3]
MEDIAPIPE = Path(importlib.util.find_spec("mediapipe").submodule_search_locations[0]) / "modules"


def _model(external: bool = False) -> bytes:
    rng = np.random.default_rng(0)
    b = TFLiteBuilder()
    x = b.input("image", (1, 6, 6, 3), signature=(-1, 6, 6, 3))
    w = b.constant("w", rng.standard_normal((4, 3, 3, 3)).astype(np.float32))
    y = b.tensor("features", (1, 6, 6, 4))
    b.op("CONV_2D", [x, w, b.constant("b", rng.standard_normal(4).astype(np.float32))], [y], "Conv2DOptions",
         padding=0, stride_w=1, stride_h=1, fused_activation_function=1)
    b.output(y)
    return b.build(external=external)


def test_interpreter_runs_a_tflite_path_and_bytes(tmp_path):
    data = _model()
    path = tmp_path / "model.tflite"
    path.write_bytes(data)
    x = np.random.default_rng(1).standard_normal((2, 6, 6, 3)).astype(np.float32)
    want = litert_run(data, [x])[0]
    for source in (path, str(path), data):
        it = Interpreter(source)
        assert list(it.signatures["serving_default"].inputs) == ["image"]
        assert it.signatures["serving_default"].inputs["image"].shape == (-1, 6, 6, 3)
        np.testing.assert_allclose(it.run({"image": x})["features"], want, rtol=1e-5, atol=1e-6)
    assert [v.name for v in load_model(path).inputs] == ["image"]


def test_buffers_after_the_flatbuffer_are_read_by_offset():
    inline, external = _model(), _model(external=True)
    raw = FlatReader(external, layout.TABLES, layout.UNIONS, shared=True).read_root(b"TFL3", "Model", ".tflite")
    stored = [b for b in raw["buffers"] if b["offset"] > 1]
    assert len(stored) == 2 and all(b["data"] is None and b["offset"] % 16 == 0 for b in stored)
    x = np.random.default_rng(2).standard_normal((1, 6, 6, 3)).astype(np.float32)
    want = litert_run(inline, [x])[0]
    np.testing.assert_allclose(Interpreter(external).run({"image": x})["features"], want, rtol=1e-5, atol=1e-6)


def test_a_buffer_past_the_end_of_the_file_is_refused():
    data = _model(external=True)
    with pytest.raises(ModelError, match="run past the end of the file"):
        Interpreter(data[:-8])


def test_convert_command(tmp_path):
    path = tmp_path / "model.tflite"
    path.write_bytes(_model())
    out = tmp_path / "model.erm"
    done = subprocess.run([sys.executable, "-m", "edgerun", "convert", str(path), "-o", str(out)],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert re.search(r"converted .*model\.tflite -> .*model\.erm: \d+ nodes", done.stdout)
    x = np.ones((1, 6, 6, 3), np.float32)
    np.testing.assert_allclose(Interpreter(out).run({"image": x})["features"],
                               Interpreter(path).run({"image": x})["features"])


def test_every_unconvertible_operator_is_named_in_one_error():
    """mediapipe's attention face-landmark model uses 11 custom ops of mediapipe's own."""
    with pytest.raises(ConversionError) as info:
        from_tflite(MEDIAPIPE / "face_landmark" / "face_landmark_with_attention.tflite")
    message = str(info.value)
    assert "11 operator(s)" in message
    for op in ("Landmarks2TransformMatrix", "TransformTensorBilinear", "TransformLandmarks"):
        assert f"custom op {op} (subgraph 0, operator " in message
    assert "register_custom_op" in message


def _custom_model(code: str) -> bytes:
    b = TFLiteBuilder()
    x = b.input("x", (2, 3))
    y = b.tensor("y", (2, 3))
    b.op("CUSTOM", [x], [y], custom_code=code, custom_options=b"\x02")
    b.output(y)
    return b.build()


def test_users_teach_custom_ops():
    code = "TestScaleByOption"  # y = x * (the option byte)

    @register_custom_op(code)
    def scale(ctx):
        factor = np.float32(ctx.custom_options[0])
        ctx.bind(0, ctx.emit("Mul", [ctx.input(0), ctx.const("factor", factor)]))

    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(Interpreter(_custom_model(code)).run({"x": x})["y"], x * 2)
    with pytest.raises(ValueError, match="already registered"):
        register_custom_op(code, scale)
    register_custom_op(code, lambda ctx: ctx.bind(0, ctx.input(0)), replace=True)
    np.testing.assert_array_equal(Interpreter(_custom_model(code)).run({"x": x})["y"], x)


def test_an_unknown_custom_op_is_a_conversion_error():
    with pytest.raises(ConversionError, match=r"custom op NoSuchOp \(subgraph 0, operator 0\)"):
        Interpreter(_custom_model("NoSuchOp"))

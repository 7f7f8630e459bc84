"""The `light` models shipped with the onnx package (AlexNet, DenseNet-121, Inception v1/v2,
ResNet-50, ShuffleNet, SqueezeNet, VGG-19, ZFNet-512), with their ConstantOfShape-made
constant weights replaced by random initializers (so outputs depend on the input, and
BatchNormalization folding has constant weights to fold into): the optimized graph
computes what the unoptimized one does, and both what onnxruntime does, on a random input."""

from __future__ import annotations

import os
from pathlib import Path

import onnx
import pytest

from edgerun.converters.optimize import optimize
from tests.converters.optimize.helpers import assert_outputs_close, convert, random_feeds, run
from tests.converters.test_light_models import with_random_weights
from tests.onnx_models import ort_run

LIGHT_DIR = Path(os.path.dirname(onnx.__file__)) / "backend" / "test" / "data" / "light"
LIGHT_MODELS = sorted(p.stem for p in LIGHT_DIR.glob("light_*.onnx"))


def test_all_nine_models_are_found() -> None:
    assert len(LIGHT_MODELS) == 9, LIGHT_MODELS


@pytest.mark.parametrize("name", LIGHT_MODELS)
def test_light_model(name: str) -> None:
    model = with_random_weights(onnx.load(LIGHT_DIR / f"{name}.onnx"))
    plain, optimized = convert(model), convert(model)
    report = optimize(optimized)
    assert report.nodes_after < report.nodes_before, report.lines()
    feeds = random_feeds(plain)
    want = ort_run(model, feeds)
    before = run(plain, feeds)
    after = run(optimized, feeds)
    assert_outputs_close(after, before)
    assert_outputs_close(before, want)
    assert_outputs_close(after, want)

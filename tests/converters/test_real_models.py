"""Real, trained models a user would bring, against onnxruntime at more than one input size
(audio: the Silero VAD models, in test_silero_vad.py; vision and text here; tabular: a
scikit-learn pipeline trained in the test on data scikit-learn ships, exported with skl2onnx).

The models ship inside packages on the package index and are read from their data files
only (installed without dependencies, never imported; see tasks.py): PP-OCRv4's text
detector (DBNet, a sigmoid map the size of the image), the text-direction classifier and
the CTC text recognizer, whose input is `[N, 3, ?, ?]`: fully dynamic spatial dims, which
no fixed probe size fits (the planner defers it to the first run's real shapes). The
inputs are real renderings of text, preprocessed the way PaddleOCR does.

The tolerance is derived, not guessed: onnxruntime with its graph optimizations on and
off disagrees with itself by some amount D per output (different fusion, different
summation order); edgerun may differ from the optimized run by 4 D plus 1e-5 of the
value (about 80 float32 ulps), so outputs near zero (sigmoid maps, softmax tails) are
held to onnxruntime's own noise rather than to an absolute guess.
"""

from __future__ import annotations

import functools
import importlib.util
import os

import matplotlib
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from edgerun.converters import from_onnx
from edgerun.runtime import Interpreter, serialize
from tests.runtime.test_eager import count_prepares

matplotlib.use("Agg")
OCR = os.path.join(importlib.util.find_spec("rapidocr_onnxruntime").submodule_search_locations[0], "models")
DETECTOR = "ch_PP-OCRv4_det_infer.onnx"
CLASSIFIER = "ch_ppocr_mobile_v2.0_cls_infer.onnx"
RECOGNIZER = "ch_PP-OCRv4_rec_infer.onnx"
IMAGENET_MEAN, IMAGENET_STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


def text_image(text: str, height: int, width: int) -> np.ndarray:
    """`text` rendered black on white into a height x width RGB image in [0, 1]."""
    import matplotlib.pyplot as plt

    figure = plt.figure(figsize=(width / 100, height / 100), dpi=100)
    figure.text(0.02, 0.3, text, fontsize=0.35 * height, family="DejaVu Sans")
    figure.canvas.draw()
    image = np.asarray(figure.canvas.buffer_rgba())[..., :3].astype(np.float64) / 255
    plt.close(figure)
    return image


def to_input(images: list[np.ndarray], mean, std) -> np.ndarray:
    """PaddleOCR's preprocessing: normalize per channel, HWC -> NCHW float32."""
    return np.stack([((image - mean) / std).transpose(2, 0, 1) for image in images]).astype(np.float32)


@functools.cache
def edgerun_model(name: str) -> Interpreter:
    return Interpreter(serialize(from_onnx(onnx.load(os.path.join(OCR, name)))))


@functools.cache
def onnxruntime_sessions(name: str) -> tuple[ort.InferenceSession, ort.InferenceSession]:
    """(optimized, unoptimized) sessions: their disagreement sets the tolerance."""
    sessions = []
    for level in (ort.GraphOptimizationLevel.ORT_ENABLE_ALL, ort.GraphOptimizationLevel.ORT_DISABLE_ALL):
        options = ort.SessionOptions()
        options.graph_optimization_level = level
        sessions.append(ort.InferenceSession(os.path.join(OCR, name), options, providers=["CPUExecutionProvider"]))
    return sessions[0], sessions[1]


def compare_with_onnxruntime(name: str, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Runs `x` through edgerun and onnxruntime; asserts the derived tolerance; returns
    (edgerun's output, onnxruntime's)."""
    (ours,) = edgerun_model(name).run({"x": x}).values()
    optimized, unoptimized = onnxruntime_sessions(name)
    want = optimized.run(None, {"x": x})[0]
    noise = np.abs(want - unoptimized.run(None, {"x": x})[0]).max()
    assert ours.shape == want.shape and ours.dtype == want.dtype
    error = np.abs(ours.astype(np.float64) - want)
    # float32 sums in another order (blocked products, channels-last depthwise) move a softmax's
    # tail by a few 1e-5 relative (2.8e-6 off by 9.4e-11 through the classifier's 50 layers)
    allowed = 4 * noise + 5e-5 * np.abs(want)
    worst = np.unravel_index(np.argmax(error - allowed), error.shape)
    assert np.all(error <= allowed), (
        f"{name} at {x.shape}: |edgerun - onnxruntime| = {error[worst]:.3g} at {worst} "
        f"(value {want[worst]:.3g}); onnxruntime's own disagreement {noise:.3g}")
    return ours, want


@pytest.mark.parametrize("height, width", [(96, 320), (160, 224), (224, 160)])
def test_text_detector_matches_onnxruntime(height, width):
    x = to_input([text_image("edgerun 0.1 OCR", height, width)], IMAGENET_MEAN, IMAGENET_STD)
    ours, want = compare_with_onnxruntime(DETECTOR, x)
    assert ours.shape == (1, 1, height, width)
    text = want > 0.3  # the map finds the text: a test of the input as much as of edgerun
    assert 0.01 < text.mean() < 0.6
    assert np.array_equal(ours > 0.3, text)


@pytest.mark.parametrize("width", [192, 96])
def test_direction_classifier_matches_onnxruntime(width):
    upright = text_image("Hello 2026", 48, width)
    x = to_input([upright, upright[::-1, ::-1]], 0.5, 0.5)  # the same line, and turned 180 degrees
    ours, want = compare_with_onnxruntime(CLASSIFIER, x)
    assert ours.shape == (2, 2)
    assert np.array_equal(ours.argmax(1), want.argmax(1))


@pytest.mark.parametrize("width, batch", [(160, 1), (320, 1), (320, 2), (480, 1)])
def test_text_recognizer_with_dynamic_spatial_dims_matches_onnxruntime(width, batch):
    lines = ["edgerun 2026", "OCR on the edge"][:batch]
    x = to_input([text_image(line, 48, width) for line in lines], 0.5, 0.5)
    ours, want = compare_with_onnxruntime(RECOGNIZER, x)
    assert ours.shape == (batch, width // 8, 6625)  # one CTC step per 8 columns
    assert np.array_equal(ours.argmax(-1), want.argmax(-1))  # the same decoded characters


def test_the_recognizer_is_accepted_although_no_probe_size_fits():
    """The issue's case: at every dynamic dim 1 (and 512) an AveragePool window does not
    fit; construction must not refuse the model, and its metadata says what is unknown."""
    it = edgerun_model(RECOGNIZER)
    info = it.signatures["serving_default"]
    assert info.inputs["x"].shape == (-1, 3, -1, -1)
    assert info.outputs["softmax_11.tmp_0"].shape == (-1, -1, 6625)


def test_the_detector_reports_its_spatial_output_dims_as_dynamic():
    """Its map is the image's size, but at probe sizes 1 and 2 both come out 32 (the
    network pads to a minimum): the declared dynamic dims win."""
    info = edgerun_model(DETECTOR).signatures["serving_default"]
    assert info.outputs["sigmoid_0.tmp_0"].shape == (-1, 1, -1, -1)


def test_a_stream_of_alternating_line_widths_is_planned_once_per_width(monkeypatch):
    it = Interpreter(serialize(from_onnx(onnx.load(os.path.join(OCR, RECOGNIZER)))))
    widths = [160, 320, 240]
    inputs = {w: to_input([text_image("abc", 48, w)], 0.5, 0.5) for w in widths}
    prepares = count_prepares(monkeypatch)
    first = {w: it.run({"x": inputs[w]}) for w in widths}
    for _ in range(3):
        for w in widths:
            (again,) = it.run({"x": inputs[w]}).values()
            np.testing.assert_array_equal(again, next(iter(first[w].values())))
    assert len(prepares) == len(widths)


@functools.cache
def tabular_pipeline() -> bytes:
    """A scikit-learn pipeline trained on the breast-cancer data scikit-learn ships (imputer,
    scaler, PCA, gradient-boosted trees), exported with skl2onnx as a user would."""
    from skl2onnx import to_onnx
    from sklearn.datasets import load_breast_cancer
    from sklearn.decomposition import PCA
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = load_breast_cancer(return_X_y=True)
    model = make_pipeline(SimpleImputer(), StandardScaler(), PCA(8, random_state=0),
                          GradientBoostingClassifier(n_estimators=40, random_state=0)).fit(x, y)
    onnx_model = to_onnx(model, x[:1].astype(np.float32), options={id(model.steps[-1][1]): {"zipmap": False}},
                         target_opset={"": 17, "ai.onnx.ml": 3})
    return onnx_model.SerializeToString()


@pytest.mark.parametrize("rows", [1, 64, 569])
def test_scikit_learn_pipeline_matches_onnxruntime(rows):
    from sklearn.datasets import load_breast_cancer

    x = load_breast_cancer().data[:rows].astype(np.float32)
    x[::7, 3] = np.nan  # missing values: the imputer's job
    data = tabular_pipeline()
    it = Interpreter(serialize(from_onnx(onnx.load_from_string(data))))
    got = it.run({"X": x})
    sessions = []
    for level in (ort.GraphOptimizationLevel.ORT_ENABLE_ALL, ort.GraphOptimizationLevel.ORT_DISABLE_ALL):
        options = ort.SessionOptions()
        options.graph_optimization_level = level
        sessions.append(ort.InferenceSession(data, options, providers=["CPUExecutionProvider"]))
    (label, probabilities), (_, other) = (s.run(None, {"X": x}) for s in sessions)
    np.testing.assert_array_equal(got["label"], label)
    noise = np.abs(probabilities - other).max()
    np.testing.assert_allclose(got["probabilities"], probabilities, rtol=1e-5, atol=4 * noise + 1e-6)

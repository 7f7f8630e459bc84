"""NonMaxSuppression beyond the ONNX conformance cases: random boxes (several batches and
classes, both box formats, score ties, thresholds) against onnxruntime, output lengths that
follow run-time values, and bad inputs that must fail with a ModelError naming the node.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from edgerun.runtime.errors import ModelError, WorkBudgetError
from edgerun.runtime.graph import GraphBuilder
from edgerun.runtime.interpreter import Interpreter
from edgerun.runtime.kernels import TensorSpec, resolve

F32 = np.float32
NAMES = ("boxes", "scores", "max_output", "iou", "score_threshold")
TYPES = (TensorProto.FLOAT, TensorProto.FLOAT, TensorProto.INT64, TensorProto.FLOAT, TensorProto.FLOAT)


def onnxruntime_nms(arrays, center, opset):
    """selected_indices from onnxruntime, every present input fed at run time."""
    inputs = [helper.make_tensor_value_info(n, t, None) for n, t, a in zip(NAMES, TYPES, arrays, strict=False)
              if a is not None]
    node = helper.make_node("NonMaxSuppression", [n if a is not None else "" for n, a in
                                                  zip(NAMES, arrays, strict=False)], ["y"], center_point_box=center)
    graph = helper.make_graph([node], "g", inputs, [helper.make_tensor_value_info("y", TensorProto.INT64, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, {n: a for n, a in zip(NAMES, arrays, strict=False) if a is not None})[0]


def ours(arrays, center=0, opset=11, name="nms"):
    """resolve -> prepare (with every value known) -> run into a sentinel-filled output."""
    kernel = resolve("", "NonMaxSuppression", opset, name)("NonMaxSuppression", name,
                                                           {"center_point_box": center}, opset)
    specs = [None if a is None else TensorSpec(a.dtype, a.shape) for a in arrays]
    (spec,) = kernel.prepare(specs, list(arrays))
    out = np.full(spec.shape, -7, spec.dtype)
    kernel.run(list(arrays), [out])
    return out


def random_inputs(seed, batches, classes, n, center, *, ties=False, flip=False):
    """Boxes clustered so that many overlap; scores with many equal values when `ties`."""
    rng = np.random.default_rng(seed)
    centers = rng.uniform(0, 2, (batches, n, 2))
    sizes = rng.uniform(0.3, 2.0, (batches, n, 2))
    if center:
        boxes = np.concatenate([centers, sizes], axis=2)
    else:  # [y1, x1, y2, x2] from the same boxes, corners swapped at random when `flip`
        low, high = centers[..., ::-1] - sizes[..., ::-1] / 2, centers[..., ::-1] + sizes[..., ::-1] / 2
        if flip:
            swap = rng.random((batches, n, 2)) < 0.5
            low, high = np.where(swap, high, low), np.where(swap, low, high)
        boxes = np.concatenate([low, high], axis=2)
    scores = rng.integers(0, 4, (batches, classes, n)) / 4 if ties else rng.random((batches, classes, n))
    return boxes.astype(F32), scores.astype(F32)


def scalars(limit, iou, score):
    return (None if limit is None else np.array([limit], np.int64), None if iou is None else np.array([iou], F32),
            None if score is None else np.array([score], F32))


@pytest.mark.parametrize("batches, classes, n, center, limit, iou, score, ties, flip, opset", [
    (1, 1, 30, 0, 10, 0.5, None, False, False, 11),
    (3, 4, 25, 0, 5, 0.3, 0.2, False, True, 11),
    (2, 3, 40, 1, 40, 0.5, 0.0, False, False, 11),
    (2, 2, 30, 1, 7, 0.0, None, True, False, 11),
    (1, 5, 30, 0, 30, 0.7, 0.5, True, True, 11),
    (2, 2, 20, 0, 100, 1.0, None, True, False, 10),
    (1, 1, 1, 1, 3, 0.5, None, False, False, 10),
    (2, 3, 0, 0, 3, 0.5, None, False, False, 11),
    (1, 2, 50, 1, 2**40, 0.4, 0.9, False, False, 11),
    (1, 2, 15, 0, -3, 0.4, None, False, False, 11),
    (2, 2, 15, 0, 6, None, None, False, True, 11),
])
def test_nms_matches_onnxruntime(batches, classes, n, center, limit, iou, score, ties, flip, opset):
    boxes, scores = random_inputs(batches * 100 + n, batches, classes, n, center, ties=ties, flip=flip)
    arrays = [boxes, scores, *scalars(limit, iou, score)]
    while arrays[-1] is None:
        arrays.pop()
    want = onnxruntime_nms(arrays, center, opset)
    got = ours(arrays, center, opset)
    assert got.dtype == np.int64 and got.shape == want.shape
    np.testing.assert_array_equal(got, want)


def test_nms_without_max_output_selects_nothing_as_onnx_defaults_to_zero():
    boxes, scores = random_inputs(0, 1, 2, 10, 0)
    assert ours([boxes, scores]).shape == (0, 3)
    assert onnxruntime_nms([boxes, scores], 0, 11).shape == (0, 3)


def test_nms_keeps_a_box_whose_iou_equals_the_threshold_and_drops_one_above():
    boxes = np.array([[[0, 0, 2, 2], [0, 1, 2, 3]]], F32)  # intersection 2, union 4 + 4 - 2
    scores = np.array([[[0.9, 0.8]]], F32)
    iou = F32(2) / F32(6)  # the IoU as float32 computes it
    assert ours([boxes, scores, *scalars(5, iou, None)]).tolist() == [[0, 0, 0], [0, 0, 1]]
    assert ours([boxes, scores, *scalars(5, np.nextafter(F32(iou), F32(0)), None)]).tolist() == [[0, 0, 0]]


def test_nms_never_selects_a_nan_score_without_a_score_threshold():
    boxes = np.array([[[0, 0, 1, 1], [5, 5, 6, 6], [9, 9, 10, 10]]], F32)
    scores = np.array([[[0.2, np.nan, 0.1]]], F32)
    assert ours([boxes, scores, *scalars(3, 0.5, None)]).tolist() == [[0, 0, 0], [0, 0, 2]]


def test_nms_output_length_follows_run_time_values():
    g = GraphBuilder("g", opset=11)
    boxes, scores = g.input("boxes", F32, (1, 3, 4)), g.input("scores", F32, (1, 1, 3))
    limit = g.constant("limit", np.array([3], np.int64))
    iou = g.constant("iou", np.array([0.5], F32))
    g.output(g.op("NonMaxSuppression", [boxes, scores, limit, iou], name="nms"), "y")
    it = Interpreter(g.build())
    apart = np.array([[[0, 0, 1, 1], [2, 2, 3, 3], [4, 4, 5, 5]]], F32)
    same = np.array([[[0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 1, 1]]], F32)
    s = np.array([[[0.1, 0.3, 0.2]]], F32)
    assert it.run({"boxes": apart, "scores": s})["y"].tolist() == [[0, 0, 1], [0, 0, 2], [0, 0, 0]]
    assert it.run({"boxes": same, "scores": s})["y"].tolist() == [[0, 0, 1]]


def test_nms_work_past_the_budget_is_refused_before_it_runs():
    g = GraphBuilder("g", opset=11)
    boxes, scores = g.input("boxes", F32, (1, 40, 4)), g.input("scores", F32, (1, 2, 40))
    limit = g.constant("limit", np.array([40], np.int64))
    g.output(g.op("NonMaxSuppression", [boxes, scores, limit], name="nms"), "y")
    b, s = random_inputs(1, 1, 2, 40, 0)
    assert Interpreter(g.build(), work_budget=10_000).run({"boxes": b, "scores": s})["y"].shape[1] == 3
    with pytest.raises(WorkBudgetError, match=r"node 'nms' \(NonMaxSuppression\): up to 3200 box overlap tests"):
        Interpreter(g.build(), work_budget=3000).run({"boxes": b, "scores": s})


BOXES, SCORES = random_inputs(2, 2, 3, 5, 0)


@pytest.mark.parametrize("arrays, attrs, message", [
    ([BOXES, SCORES[:, :, :4]], {}, r"boxes shape \(2, 5, 4\) and scores shape \(2, 3, 4\) must be"),
    ([BOXES[:1], SCORES], {}, r"boxes shape \(1, 5, 4\) and scores shape \(2, 3, 5\) must be"),
    ([BOXES[..., :3], SCORES], {}, r"boxes shape \(2, 5, 3\) and scores shape"),
    ([BOXES[0], SCORES], {}, r"boxes: expected a rank-3 float32 tensor, got float32 of shape \(5, 4\)"),
    ([BOXES, SCORES.astype(np.float64)], {}, r"scores: expected a rank-3 float32 tensor, got float64"),
    ([BOXES, SCORES], {"center_point_box": 2}, r"attribute 'center_point_box' must be 0 or 1, got 2"),
    ([BOXES, SCORES, np.array([3, 4], np.int64)], {}, r"max_output_boxes_per_class must hold one value"),
    ([BOXES, SCORES, np.array([3.0], F32)], {}, r"max_output_boxes_per_class: expected a signed int/unsigned int"),
    ([BOXES, SCORES, *scalars(3, 1.5, None)], {}, r"iou_threshold 1.5 must be in \[0, 1\]"),
    ([BOXES, SCORES, *scalars(3, -0.1, None)], {}, r"iou_threshold -0.1 must be in \[0, 1\]"),
    ([BOXES, SCORES, *scalars(3, np.nan, None)], {}, r"iou_threshold nan must be in \[0, 1\]"),
])
def test_nms_bad_inputs_are_model_errors_naming_the_node(arrays, attrs, message):
    kernel = resolve("", "NonMaxSuppression", 11, "nms")("NonMaxSuppression", "nms", attrs, 11)
    specs = [None if a is None else TensorSpec(a.dtype, a.shape) for a in arrays]
    with pytest.raises(ModelError, match=r"node 'nms' \(NonMaxSuppression\): " + message):
        kernel.prepare(specs, list(arrays))

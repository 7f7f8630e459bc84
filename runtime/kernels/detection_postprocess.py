"""TFLite's SSD post-processing (custom op TFLite_Detection_PostProcess) as a kernel of
domain ai.edgerun.tflite: anchor-relative box decoding, then greedy non-max suppression,
with LiteRT's arithmetic and ordering (tensorflow/lite/kernels/detection_postprocess.cc).

ONNX's NonMaxSuppression differs in too many details to stand in for it (scores at or
above the threshold pass here, strictly above there; a box may carry several classes; the
regular mode keeps a running top-k across classes), so this is one kernel of its own.
"""

from __future__ import annotations

import numpy as np

from edgerun.runtime.errors import WorkBudgetError
from edgerun.runtime.kernels.attrs import float_attr, int_attr
from edgerun.runtime.kernels.base import Kernel, TensorSpec
from edgerun.runtime.kernels.registry import register

DOMAIN = "ai.edgerun.tflite"


@register("TFLiteDetectionPostProcess", since=1, domain=DOMAIN)
class TFLiteDetectionPostProcess(Kernel):
    """(box_encodings (1, N, >=4), class_predictions (1, N, C), anchors (N, 4)), all float32
    -> (boxes (1, D, 4), classes (1, D), scores (1, D), num_detections (1,)), float32, with
    D = max_detections * max_classes_per_detection.

    Boxes are decoded against the anchors (each [y, x, h, w]): center = encoding / scale *
    anchor size + anchor center, half size = 0.5 * exp(encoding / scale) * anchor size, in
    float64 then rounded to float32 as LiteRT does, giving [ymin, xmin, ymax, xmax]. C is
    num_classes, or num_classes + 1 with a leading background class that is skipped.
    Single-class NMS: scores >= nms_score_threshold, best first (ties by box index); a box
    is kept unless its IoU with a kept box is > nms_iou_threshold (IoU in float32; a box of
    no area overlaps nothing).

    use_regular_nms=0 (fast): each box competes with its best class score; each kept box
    fills max_classes_per_detection rows with its best classes (best first). Rows past
    num_detections are zero; so are a kept box's rows beyond num_classes.
    use_regular_nms=1: NMS per class keeping detections_per_class, merged into the best
    max_detections over all classes (score order; equal scores keep the earlier class).

    ModelError for shapes that disagree, options out of range (iou threshold outside
    (0, 1], a non-positive max_classes_per_detection or detections_per_class, a negative
    max_detections) and, when it runs, a decoded box whose min exceeds its max (LiteRT's
    check; it comes from a negative anchor size). WorkBudgetError when the worst case of
    the IoU tests passes the plan's work budget.
    """

    min_inputs = max_inputs = 3

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        boxes, scores, anchors = inputs
        for spec, what in ((boxes, "box_encodings"), (scores, "class_predictions"), (anchors, "anchors")):
            if spec.dtype != np.float32:
                raise self.fail(f"{what} must be float32, got {spec.dtype}")
        self._read_options()
        if len(boxes.shape) != 3 or boxes.shape[0] != 1 or boxes.shape[2] < 4:
            raise self.fail(f"box_encodings must be (1, boxes, >=4), got {boxes.shape}")
        n = boxes.shape[1]
        if len(scores.shape) != 3 or scores.shape[:2] != (1, n):
            raise self.fail(f"class_predictions must be (1, {n}, classes), got {scores.shape}")
        if anchors.shape != (n, 4):
            raise self.fail(f"anchors must be ({n}, 4), got {anchors.shape}")
        self.offset = scores.shape[2] - self.num_classes
        if self.offset not in (0, 1):
            raise self.fail(f"class_predictions has {scores.shape[2]} classes; num_classes={self.num_classes} "
                            "must be that or one less (a background class)")
        self._check_work(n)
        d = self.max_detections * self.max_classes
        f32 = np.dtype(np.float32)
        return [TensorSpec(f32, (1, d, 4)), TensorSpec(f32, (1, d)), TensorSpec(f32, (1, d)), TensorSpec(f32, (1,))]

    def _read_options(self) -> None:
        self.max_detections = int_attr(self, "max_detections")
        self.max_classes = int_attr(self, "max_classes_per_detection")
        self.per_class = int_attr(self, "detections_per_class", 100)
        self.regular = bool(int_attr(self, "use_regular_nms", 0))
        self.num_classes = int_attr(self, "num_classes")
        self.score_threshold = np.float32(float_attr(self, "nms_score_threshold", 0.0))
        self.iou_threshold = np.float32(float_attr(self, "nms_iou_threshold", 0.0))
        self.scales = np.array([float_attr(self, k, 0.0) for k in ("y_scale", "x_scale", "h_scale", "w_scale")],
                               np.float32).astype(np.float64)
        if self.max_detections < 0 or self.max_classes < 1 or self.num_classes < 1:
            raise self.fail(f"max_detections={self.max_detections} must be >= 0, max_classes_per_detection="
                            f"{self.max_classes} and num_classes={self.num_classes} >= 1")
        if self.regular and self.per_class < 1:
            raise self.fail(f"detections_per_class={self.per_class} must be >= 1")
        if not 0 < self.iou_threshold <= 1:
            raise self.fail(f"nms_iou_threshold {self.iou_threshold} must be in (0, 1]")

    def _check_work(self, n: int) -> None:
        budget = getattr(self.context, "work_budget", None)
        work = n * min(n, self.per_class) * self.num_classes if self.regular else n * min(n, self.max_detections)
        if budget is not None and work > budget:
            raise WorkBudgetError(f"node {self.name!r} ({self.op_type}): up to {work} box overlap tests, over the "
                                  f"work budget of {budget}")

    def run(self, inputs, outputs):
        encodings, predictions, anchors = inputs
        boxes = self._decode(encodings[0], anchors)
        scores = predictions[0, :, self.offset:]
        for out in outputs:
            out.fill(0)
        if self.regular:
            rows, classes, kept = self._regular(boxes, scores)
        else:
            rows, classes, kept = self._fast(boxes, scores)
        outputs[0][0, rows] = boxes[kept]
        outputs[1][0, rows] = classes
        outputs[2][0, rows] = scores[kept, classes]
        outputs[3][0] = self.num_detections

    def _decode(self, encodings: np.ndarray, anchors: np.ndarray) -> np.ndarray:
        """[ymin, xmin, ymax, xmax] float32 boxes; ModelError for a box turned inside out."""
        e, a = encodings[:, :4].astype(np.float64), anchors.astype(np.float64)
        y_scale, x_scale, h_scale, w_scale = self.scales
        with np.errstate(all="ignore"):
            yc = (e[:, 0] / y_scale * a[:, 2] + a[:, 0]).astype(np.float32)
            xc = (e[:, 1] / x_scale * a[:, 3] + a[:, 1]).astype(np.float32)
            half_h = (0.5 * np.exp(e[:, 2] / h_scale) * a[:, 2]).astype(np.float32)
            half_w = (0.5 * np.exp(e[:, 3] / w_scale) * a[:, 3]).astype(np.float32)
            boxes = np.stack([yc - half_h, xc - half_w, yc + half_h, xc + half_w], axis=1)
        bad = np.flatnonzero((boxes[:, 0] > boxes[:, 2]) | (boxes[:, 1] > boxes[:, 3]))
        if bad.size:
            raise self.fail(f"decoded box {int(bad[0])} has its min corner past its max corner "
                            f"({boxes[bad[0]].tolist()}); is an anchor size negative?")
        return boxes

    def _fast(self, boxes: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each box by its best class score; each kept box's best classes in its rows."""
        per_box = min(self.max_classes, self.num_classes)
        best = _decreasing(scores, axis=1)[:, :per_box]
        kept = _nms(boxes, np.take_along_axis(scores, best[:, :1], axis=1)[:, 0], self.score_threshold,
                    self.iou_threshold, self.max_detections)
        self.num_detections = kept.size
        rows = (np.arange(kept.size)[:, None] * self.max_classes + np.arange(per_box)).reshape(-1)
        return rows, best[kept].reshape(-1), np.repeat(kept, per_box)

    def _regular(self, boxes: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """NMS per class, keeping a running best max_detections (box, class) pairs."""
        kept_boxes = np.zeros(0, np.int64)
        kept_classes = np.zeros(0, np.int64)
        kept_scores = np.zeros(0, np.float32)
        for c in range(self.num_classes):
            selected = _nms(boxes, scores[:, c], self.score_threshold, self.iou_threshold, self.per_class)
            kept_boxes = np.concatenate([kept_boxes, selected])
            kept_classes = np.concatenate([kept_classes, np.full(selected.size, c, np.int64)])
            kept_scores = np.concatenate([kept_scores, scores[selected, c]])
            order = _decreasing(kept_scores)[: self.max_detections]
            kept_boxes, kept_classes, kept_scores = kept_boxes[order], kept_classes[order], kept_scores[order]
        self.num_detections = kept_boxes.size
        return np.arange(kept_boxes.size), kept_classes, kept_boxes


def _decreasing(values: np.ndarray, axis: int = -1) -> np.ndarray:
    """Indices sorting `values` best first along `axis`, equal values in index order."""
    return np.argsort(-values, axis=axis, kind="stable")


def _nms(boxes: np.ndarray, scores: np.ndarray, threshold: np.float32, iou: np.float32, limit: int) -> np.ndarray:
    """LiteRT's NonMaxSuppressionSingleClassHelper: the boxes kept, in selection order."""
    candidates = np.flatnonzero(scores >= threshold)
    order = candidates[_decreasing(scores[candidates])]
    heights, widths = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    areas = heights * widths
    kept: list[int] = []
    active = np.ones(order.size, bool)
    for i in range(order.size):
        if len(kept) >= limit:
            break
        if not active[i]:
            continue
        box = order[i]
        kept.append(int(box))
        rest = order[i + 1:]
        active[i + 1:] &= ~(_iou(boxes, areas, box, rest) > iou)
    return np.array(kept, np.int64)


def _iou(boxes: np.ndarray, areas: np.ndarray, i: int, others: np.ndarray) -> np.ndarray:
    """LiteRT's ComputeIntersectionOverUnion of box i with each of `others`, in float32."""
    b, o = boxes[i], boxes[others]
    with np.errstate(all="ignore"):
        height = np.maximum(np.minimum(b[2], o[:, 2]) - np.maximum(b[0], o[:, 0]), np.float32(0))
        width = np.maximum(np.minimum(b[3], o[:, 3]) - np.maximum(b[1], o[:, 1]), np.float32(0))
        intersection = height * width
        ratio = intersection / (areas[i] + areas[others] - intersection)
    return np.where((areas[i] > 0) & (areas[others] > 0), ratio, np.float32(0))

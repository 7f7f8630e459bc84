"""Detection kernels: NonMaxSuppression, the greedy per-class selection of boxes by score
and overlap (intersection over union) that ends object detectors.
"""

from __future__ import annotations

import numpy as np

from edgerun.runtime.errors import WorkBudgetError
from edgerun.runtime.kernels.attrs import flag_attr, has_input, require_kind
from edgerun.runtime.kernels.base import Kernel, TensorSpec
from edgerun.runtime.kernels.registry import register

_SCALARS = ((2, "max_output_boxes_per_class", "iu"), (3, "iou_threshold", "f"), (4, "score_threshold", "f"))


@register("NonMaxSuppression", since=10)
@register("NonMaxSuppression", since=11)
class NonMaxSuppression(Kernel):
    """(boxes, scores[, max_output_boxes_per_class, iou_threshold, score_threshold]) ->
    selected_indices, int64 rows (batch, class, box) of shape (selected, 3).

    boxes: float32 (batches, boxes, 4), each [y1, x1, y2, x2] with any two diagonal corners
    (center_point_box 0, the default) or [x_center, y_center, width, height] (center_point_box
    1); scores: float32 (batches, classes, boxes). The optional inputs hold one value each.
    For each batch and class, the boxes scoring strictly above score_threshold (when given;
    else every box whose score is not NaN) are visited best score first, equal scores in box
    order; a box is selected unless its IoU with a box already selected for that class is
    strictly above iou_threshold (default 0, within [0, 1]), until max_output_boxes_per_class
    are selected (default 0, so nothing; a negative count is 0 and a huge one is the box
    count, as in onnxruntime). Rows come by batch, then class, then selection order. IoU is
    computed in float32 in onnxruntime's order of operations; a pair of boxes where either has
    no positive area (or a NaN coordinate) never suppresses.

    Every input is needed at prepare time: the output's length depends on their values.
    ModelError for shapes that disagree, center_point_box other than 0/1, a threshold out of
    range or an optional input not holding one value; WorkBudgetError when the worst case of
    the IoU tests (per class: candidates x min(candidates, max_output_boxes_per_class)) passes
    the plan's work budget.
    """

    min_inputs, max_inputs = 2, 5

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        self.center = flag_attr(self, "center_point_box", 0)
        boxes, scores = inputs[0], inputs[1]
        for spec, what in ((boxes, "boxes"), (scores, "scores")):
            if spec.dtype != np.float32 or len(spec.shape) != 3:
                raise self.fail(f"{what}: expected a rank-3 float32 tensor, got {spec.dtype} of shape {spec.shape}")
        if boxes.shape[2] != 4 or scores.shape[0] != boxes.shape[0] or scores.shape[2] != boxes.shape[1]:
            raise self.fail(f"boxes shape {boxes.shape} and scores shape {scores.shape} must be "
                            f"(batches, boxes, 4) and (batches, classes, boxes)")
        for index, what, kinds in _SCALARS:
            if has_input(inputs, index):
                require_kind(self, inputs[index], kinds, what)
                if inputs[index].size != 1:
                    raise self.fail(f"{what} must hold one value, got shape {inputs[index].shape}")
        arrays = [self.value_of(values, i) if has_input(inputs, i) else None for i in range(len(inputs))]
        return [TensorSpec(np.dtype(np.int64), self._select(arrays).shape)]

    def run(self, inputs, outputs):
        selected = self._select(inputs)
        if selected.shape != outputs[0].shape:
            raise self.fail(f"{selected.shape[0]} boxes selected, prepared for {outputs[0].shape[0]}")
        np.copyto(outputs[0], selected)

    def _options(self, arrays: list) -> tuple[int, np.float32, np.float32 | None]:
        """(max boxes per class, iou_threshold, score_threshold or None) from the optional inputs."""
        limit, iou, score = (None if len(arrays) <= i or arrays[i] is None else arrays[i].reshape(-1)[0]
                             for i, _, _ in _SCALARS)
        limit = min(max(int(limit), 0), arrays[0].shape[1]) if limit is not None else 0
        iou = np.float32(0 if iou is None else iou)
        if not 0 <= iou <= 1:
            raise self.fail(f"iou_threshold {iou!s} must be in [0, 1]")
        return limit, iou, None if score is None else np.float32(score)

    def _select(self, arrays: list) -> np.ndarray:
        """The selected (batch, class, box) rows for inputs `arrays` (None: omitted)."""
        boxes, scores = arrays[0], arrays[1]
        limit, iou, score = self._options(arrays)
        rows = [np.zeros((0, 3), np.int64)]
        if limit == 0:
            return rows[0]
        candidates = ~np.isnan(scores) if score is None else scores > score
        self._check_work(np.count_nonzero(candidates, axis=2), limit)
        for b in range(boxes.shape[0]):
            edges = _edges(boxes[b], self.center)
            for c in range(scores.shape[1]):
                kept = _greedy(edges, scores[b, c], np.flatnonzero(candidates[b, c]), limit, iou)
                rows.append(np.stack([np.full_like(kept, b), np.full_like(kept, c), kept], axis=1))
        return np.concatenate(rows)

    def _check_work(self, counts: np.ndarray, limit: int) -> None:
        """WorkBudgetError when the most IoU tests the candidate counts allow pass the budget."""
        budget = getattr(self.context, "work_budget", None)
        work = int(np.sum(counts.astype(np.int64) * np.minimum(counts, limit)))
        if budget is not None and work > budget:
            raise WorkBudgetError(
                f"node {self.name!r} (NonMaxSuppression): up to {work} box overlap tests "
                f"(candidates x min(candidates, {limit}) per class), over the work budget of {budget}")


def _edges(boxes: np.ndarray, center: bool) -> tuple[np.ndarray, ...]:
    """(x_min, x_max, y_min, y_max, area) of (n, 4) float32 boxes, as onnxruntime derives them."""
    if center:
        half_w, half_h = boxes[:, 2] / np.float32(2), boxes[:, 3] / np.float32(2)
        x_min, x_max = boxes[:, 0] - half_w, boxes[:, 0] + half_w
        y_min, y_max = boxes[:, 1] - half_h, boxes[:, 1] + half_h
    else:  # [y1, x1, y2, x2]: min is the second of a pair when the first is >= it
        x_swap, y_swap = boxes[:, 1] >= boxes[:, 3], boxes[:, 0] >= boxes[:, 2]
        x_min, x_max = np.where(x_swap, boxes[:, 3], boxes[:, 1]), np.where(x_swap, boxes[:, 1], boxes[:, 3])
        y_min, y_max = np.where(y_swap, boxes[:, 2], boxes[:, 0]), np.where(y_swap, boxes[:, 0], boxes[:, 2])
    return x_min, x_max, y_min, y_max, (x_max - x_min) * (y_max - y_min)


def _greedy(edges: tuple, scores: np.ndarray, candidates: np.ndarray, limit: int, iou: np.float32) -> np.ndarray:
    """Indices of the boxes selected among `candidates`: best score first (ties by index),
    each removing the remaining candidates it overlaps by IoU > `iou`, at most `limit`."""
    order = candidates[np.argsort(-scores[candidates], kind="stable")]
    kept = []
    while order.size and len(kept) < limit:
        kept.append(order[0])
        order = order[1:][~_suppresses(edges, order[0], order[1:], iou)]
    return np.array(kept, np.int64)


def _suppresses(edges: tuple, i: int, others: np.ndarray, iou: np.float32) -> np.ndarray:
    """Whether box `i` suppresses each of `others`: onnxruntime's SuppressByIOU, vectorized."""
    x_min, x_max, y_min, y_max, area = edges
    left, right = np.maximum(x_min[i], x_min[others]), np.minimum(x_max[i], x_max[others])
    low, high = np.maximum(y_min[i], y_min[others]), np.minimum(y_max[i], y_max[others])
    with np.errstate(all="ignore"):
        inter = (right - left) * (high - low)
        union = area[i] + area[others] - inter
        ratio = inter / union
    overlap = (right > left) & (high > low) & (inter > 0)
    return overlap & (area[i] > 0) & (area[others] > 0) & (union > 0) & (ratio > iou)

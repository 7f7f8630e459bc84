"""ZipMap: a classifier's [N, C] probabilities -> a sequence of N maps {class label: probability},
the labels from classlabels_int64s or classlabels_strings (one of them), in column order.

At run time the sequence is a Python list of N dicts, keys Python int or str in ascending
order, values Python float (each float32 probability exactly): what onnxruntime returns (its
maps are sorted; a label listed twice keeps its last column's probability). A sequence of maps never
lives in the arena, so a ZipMap runs in the plan's eager tail (`evaluate`), and nothing reads
its output (the verifier refuses an operator that would): it is a graph output.

ModelError at prepare when both or neither label list is given, when X is not a float tensor
of rank 1 (one row) or 2, or when X has another number of columns than there are labels.
"""

from __future__ import annotations

import numpy as np

from edgerun.runtime import dtypes
from edgerun.runtime.kernels.base import Kernel, MapSequenceSpec
from edgerun.runtime.kernels.ml.attrs import F32, I64, ML, class_labels
from edgerun.runtime.kernels.registry import register


@register("ZipMap", since=1, domain=ML)
class ZipMap(Kernel):
    """Z[n] = {label[c]: X[n, c] for each column c}; see the module docstring."""

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        labels, source = class_labels(self, "classlabels_int64s", "classlabels_strings")
        key = dtypes.STRING if source == "classlabels_strings" else I64
        labels = labels.tolist()  # Python int or str keys
        x = inputs[0]
        if x.dtype != F32 or len(x.shape) not in (1, 2):
            raise self.fail(f"X: expected a float32 tensor of rank 1 or 2, got {x.dtype}{list(x.shape)}")
        if x.shape[-1] != len(labels):
            raise self.fail(f"X has {x.shape[-1]} columns (classes) but there are {len(labels)} class labels")
        self.order = sorted(range(len(labels)), key=labels.__getitem__)  # stable: a repeated label's last column wins
        self.keys = [labels[c] for c in self.order]
        return [MapSequenceSpec(F32, key)]

    def evaluate(self, inputs, out_specs):
        rows = np.asarray(inputs[0], F32).reshape(-1, len(self.keys))[:, self.order].tolist()  # Python floats
        return [[dict(zip(self.keys, row, strict=True)) for row in rows]]

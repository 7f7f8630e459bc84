"""The preprocessing ops of scikit-learn pipelines: Scaler, Normalizer, Binarizer, Imputer,
OneHotEncoder and ArrayFeatureExtractor."""

from __future__ import annotations

import numpy as np

from edgerun.runtime import dtypes
from edgerun.runtime.kernels.attrs import flag_attr, float_attr, int_attr, require_kind, require_rank
from edgerun.runtime.kernels.base import Kernel, TensorSpec
from edgerun.runtime.kernels.ml.attrs import (
    F32,
    F64,
    FEATURE_KINDS,
    ML,
    choice,
    float64s,
    int64s,
    is_set,
    string_array,
    strings,
    type_name,
)
from edgerun.runtime.kernels.ml.lookup import find
from edgerun.runtime.kernels.registry import register


def _per_feature(kernel: Kernel, key: str, array: np.ndarray, features: int) -> np.ndarray:
    if len(array) not in (1, features):
        raise kernel.fail(f"{key} has {len(array)} values, expected 1 or {features} (X's last dimension)")
    return array


@register("Scaler", since=1, domain=ML)
class Scaler(Kernel):
    """Y float = (X - offset) * scale along X's last axis (offset and scale: 1 value or one
    per feature; absent: 0 and 1). X: float, double, int32, int64, rank >= 1."""

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x = inputs[0]
        require_kind(self, x, FEATURE_KINDS, "X")
        require_rank(self, x, 1, what="X")
        offset, scale = float64s(self, "offset"), float64s(self, "scale")
        offset = np.zeros(1) if offset is None or offset.size == 0 else offset
        scale = np.ones(1) if scale is None or scale.size == 0 else scale
        self.offset = _per_feature(self, "offset", offset, x.shape[-1])
        self.scale = _per_feature(self, "scale", scale, x.shape[-1])
        return [TensorSpec(F32, x.shape)]

    def run(self, inputs, outputs):
        outputs[0][...] = (inputs[0].astype(F64) - self.offset) * self.scale


@register("Normalizer", since=1, domain=ML)
class Normalizer(Kernel):
    """Y float = X divided, along the last axis, by its max (norm MAX, default), its sum of
    absolute values (L1) or its Euclidean length (L2); a row whose divisor is 0 is copied."""

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        require_kind(self, inputs[0], FEATURE_KINDS, "X")
        require_rank(self, inputs[0], 1, what="X")
        self.norm = choice(self, "norm", "MAX", ("MAX", "L1", "L2"))
        return [TensorSpec(F32, inputs[0].shape)]

    def run(self, inputs, outputs):
        x = inputs[0].astype(F64)
        if x.size == 0:
            return
        if self.norm == "MAX":
            d = x.max(axis=-1, keepdims=True)
        elif self.norm == "L1":
            d = np.abs(x).sum(axis=-1, keepdims=True)
        else:
            d = np.sqrt((x * x).sum(axis=-1, keepdims=True))
        outputs[0][...] = np.divide(x, d, out=x.copy(), where=d != 0)


@register("Binarizer", since=1, domain=ML)
class Binarizer(Kernel):
    """Y = 1 where X > threshold (default 0), else 0 (NaN too), in X's dtype (float, double,
    int32, int64)."""

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        require_kind(self, inputs[0], FEATURE_KINDS, "X")
        self.threshold = float_attr(self, "threshold", 0.0)
        return [inputs[0]]

    def run(self, inputs, outputs):
        outputs[0][...] = inputs[0] > self.threshold


@register("Imputer", since=1, domain=ML)
class Imputer(Kernel):
    """Y = X with each element equal to the replaced value (NaN matches NaN) set to the
    imputed value of its feature (last axis; 1 value or one per feature): float X uses
    replaced_value_float / imputed_value_floats, int X replaced_value_int64 /
    imputed_value_int64s. Y has X's dtype."""

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x = inputs[0]
        require_kind(self, x, FEATURE_KINDS, "X")
        require_rank(self, x, 1, what="X")
        kind = "floats" if x.dtype.kind == "f" else "int64s"
        other = "int64s" if kind == "floats" else "floats"
        imputed = float64s(self, f"imputed_value_{kind}") if kind == "floats" else int64s(self, "imputed_value_int64s")
        if imputed is None or imputed.size == 0:
            raise self.fail(f"{x.dtype} X needs attribute 'imputed_value_{kind}'"
                            + (f" (the model sets 'imputed_value_{other}')" if self.attr(f"imputed_value_{other}")
                               else ""))
        if kind == "int64s":
            info = np.iinfo(x.dtype)
            if imputed.min() < info.min or imputed.max() > info.max:
                raise self.fail(f"imputed_value_int64s: a value does not fit X's {x.dtype}")
            self.replaced = int_attr(self, "replaced_value_int64", 0)
        else:
            self.replaced = float_attr(self, "replaced_value_float", 0.0)
        self.imputed = _per_feature(self, f"imputed_value_{kind}", imputed, x.shape[-1]).astype(x.dtype)
        return [x]

    def run(self, inputs, outputs):
        x = inputs[0]
        match = np.isnan(x) if isinstance(self.replaced, float) and np.isnan(self.replaced) else x == self.replaced
        outputs[0][...] = np.where(match, self.imputed, x)


@register("OneHotEncoder", since=1, domain=ML)
class OneHotEncoder(Kernel):
    """Y float [*X.shape, C]: 1 at the position of each element's category, all zeros for an
    unknown value with zeros=1 (default), a ModelError at run with zeros=0. Numeric X is
    matched against cats_int64s (float X truncated to an integer first), string X against
    cats_strings; the other list, or both, set is a ModelError at prepare."""

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x = inputs[0]
        text = dtypes.is_string(x.dtype)
        if not text:
            require_kind(self, x, FEATURE_KINDS, "X")
        key, other = ("cats_strings", "cats_int64s") if text else ("cats_int64s", "cats_strings")
        if not is_set(self, key) or is_set(self, other):
            raise self.fail(f"{type_name(x.dtype)} X needs attribute {key!r} and not {other!r}")
        cats = string_array(strings(self, key)) if text else int64s(self, key)
        self.key, self.zeros = key, flag_attr(self, "zeros", 1)
        self.cats, self.first = np.unique(cats, return_index=True)
        return [TensorSpec(F32, (*x.shape, len(cats)))]

    def run(self, inputs, outputs):
        x = inputs[0].reshape(-1)
        if x.dtype.kind == "f":
            valid = np.isfinite(x) & (np.abs(x) < 2.0**63)
            x = np.where(valid, np.trunc(np.where(valid, x, 0)), 0).astype(np.int64)
        else:
            valid = np.ones(x.shape, bool)
        at, found = find(self.cats, x)
        found &= valid
        if not self.zeros and not found.all():
            value = inputs[0].reshape(-1)[np.argmin(found)]
            shown = repr(value) if isinstance(value, str) else value
            raise self.fail(f"value {shown} is not in {self.key} (zeros=0)")
        out = outputs[0].reshape(-1, outputs[0].shape[-1])
        out[...] = 0
        out[np.nonzero(found)[0], self.first[at[found]]] = 1


@register("ArrayFeatureExtractor", since=1, domain=ML)
class ArrayFeatureExtractor(Kernel):
    """(X, Y int) -> Z = X[..., Y] (Y flattened; each index in [0, X's last dimension)); X
    numeric or strings. Z has shape [*X.shape[:-1], Y.size], [1, Y.size] for 1-D X (as
    onnxruntime)."""

    min_inputs = max_inputs = 2

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x, y = inputs
        if not dtypes.is_string(x.dtype):
            require_kind(self, x, FEATURE_KINDS + "u", "X")
        require_rank(self, x, 1, what="X")
        require_kind(self, y, "iu", "Y")
        if values[1] is not None:
            self._indices(values[1], x.shape[-1])
        lead = (1,) if len(x.shape) == 1 else x.shape[:-1]
        return [TensorSpec(x.dtype, (*lead, y.size))]

    def _indices(self, y: np.ndarray, size: int) -> np.ndarray:
        idx = y.reshape(-1).astype(np.int64)
        bad = idx[(idx < 0) | (idx >= size)]
        if bad.size:
            raise self.fail(f"Y: index {int(bad[0])} is out of range [0, {size})")
        return idx

    def run(self, inputs, outputs):
        x, y = inputs
        outputs[0][...] = np.take(x, self._indices(y, x.shape[-1]), axis=-1).reshape(outputs[0].shape)

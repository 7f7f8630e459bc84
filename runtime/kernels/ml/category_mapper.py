"""CategoryMapper: strings to int64 and back through the pairs cats_strings[i] <-> cats_int64s[i],
a lookup table (`lookup.Table`) in each direction."""

from __future__ import annotations

import numpy as np

from edgerun.runtime import dtypes
from edgerun.runtime.kernels.attrs import int_attr, str_attr
from edgerun.runtime.kernels.base import Kernel, TensorSpec
from edgerun.runtime.kernels.ml.attrs import I64, ML, STRING, UNUSED, int64s, same_length, string_array, strings
from edgerun.runtime.kernels.ml.lookup import Table
from edgerun.runtime.kernels.registry import register


class StringIntMapping(Kernel):
    """Shared by CategoryMapper and LabelEncoder opset 1: pairs names[i] <-> ints[i] looked up
    in the direction X's dtype says, with the default_int64 (-1) / default_string ("_Unused")
    attributes for what is not listed."""

    def _prepare_pairs(self, names: np.ndarray, ints: np.ndarray, x: TensorSpec) -> list[TensorSpec]:
        if dtypes.is_string(x.dtype):
            self.table = Table(names, ints, np.array(int_attr(self, "default_int64", -1), I64))
        elif x.dtype == I64:
            self.table = Table(ints, names, np.array(str_attr(self, "default_string", UNUSED), STRING))
        else:
            raise self.fail(f"X: expected a string or int64 tensor, got {x.dtype}")
        return [TensorSpec(self.table.values.dtype, x.shape)]

    def run(self, inputs, outputs):
        outputs[0][...] = self.table(inputs[0])


@register("CategoryMapper", since=1, domain=ML)
class CategoryMapper(StringIntMapping):
    """X strings -> Y int64: the cats_int64s entry paired with each element in cats_strings,
    default_int64 (-1) where it is not listed. X int64 -> Y strings: the cats_strings entry
    paired with it, default_string ("_Unused") where none is. A category listed twice maps
    to its last pair. ModelError at prepare when either list is missing, their lengths
    differ, or X is neither strings nor int64."""

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        names, ints = strings(self, "cats_strings"), int64s(self, "cats_int64s")
        if names is None or ints is None:
            raise self.fail("attributes 'cats_strings' and 'cats_int64s' are both required")
        same_length(self, {"cats_strings": names, "cats_int64s": ints})
        return self._prepare_pairs(string_array(names), ints, inputs[0])

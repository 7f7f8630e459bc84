"""ONNX sequences and optionals: a sequence is a Python list of arrays of one dtype (their
shapes may differ), an optional None (empty) or the tensor or sequence it holds (see
runtime.graph.ValueKind and the contract in runtime.kernels.base).

SequenceEmpty, SequenceConstruct, SequenceInsert, SequenceErase, SplitToSequence and
SequenceMap make sequences, Optional makes optionals: their prepare returns a SequenceSpec /
OptionalSpec and `evaluate` the value. SequenceAt, SequenceLength, ConcatFromSequence,
OptionalHasElement and OptionalGetElement read them. The plan prepares a node that reads a
sequence or optional with its value, so positions, lengths and element shapes are checked
in prepare; the tensors these kernels make are new arrays (a sequence's elements may be
shared between sequences: nothing writes into them).

Every failure is a ModelError naming the node: a position out of range, an element of
another dtype, elements whose shapes cannot be concatenated, an empty optional read, a
sequence where a tensor belongs (or the reverse), a sequence of maps (ZipMap's, an output
only) as an input. A sequence that would pass the plan's memory budget (its elements' data
plus SEQUENCE_ELEMENT_BYTES each) is a MemoryBudgetError before it is made.
"""

from __future__ import annotations

import re

import numpy as np

from edgerun.runtime.errors import MemoryBudgetError
from edgerun.runtime.graph import Graph
from edgerun.runtime.kernels.attrs import flag_attr, int_attr, str_attr
from edgerun.runtime.kernels.base import (
    SEQUENCE_ELEMENT_BYTES,
    Kernel,
    MapSequenceSpec,
    OptionalSpec,
    SequenceSpec,
    Spec,
    TensorSpec,
    copy_value,
    describe,
    spec_of,
    value_nbytes,
)
from edgerun.runtime.kernels.cast import onnx_dtype
from edgerun.runtime.kernels.registry import register
from edgerun.runtime.kernels.shape import Identity

MAX_SEQUENCE_LENGTH = 1 << 24  # elements one sequence may hold (SplitToSequence of a long axis)


class _Sequences(Kernel):
    """Shared by the kernels of this module: typed access to inputs at prepare time."""

    takes_sequences = True

    def check_kinds(self, inputs: list[Spec | None]) -> None:
        """Sequences and optionals are welcome, sequences of maps (ZipMap's) are not."""
        for i, spec in enumerate(inputs):
            if isinstance(spec, MapSequenceSpec):
                raise self.fail(f"input {i} is a sequence of maps; {self.op_type} takes tensors and "
                                "sequences of tensors")

    def check_memory(self, nbytes: int, what: str) -> None:
        """MemoryBudgetError when `what` needs more than the plan's memory budget (when the
        kernel's context has one)."""
        budget = getattr(self.context, "memory_budget", None)
        if budget is not None and nbytes > budget:
            raise MemoryBudgetError(f"node {self.name!r} ({self.op_type}): {what} needs {nbytes} bytes, "
                                    f"over the memory budget of {budget}")

    def sequence(self, inputs: list[Spec | None], values: list, i: int) -> list[np.ndarray]:
        """Input `i`, which must be a sequence (its value: the plan knows it at prepare)."""
        if not isinstance(inputs[i], SequenceSpec):
            raise self.fail(f"input {i} must be a sequence, got {describe(inputs[i])}")
        return list(self.value_of(values, i))

    def tensor(self, inputs: list[Spec | None], i: int) -> TensorSpec:
        """Input `i`'s spec, which must be a tensor."""
        if not isinstance(inputs[i], TensorSpec):
            raise self.fail(f"input {i} must be a tensor, got {describe(inputs[i])}")
        return inputs[i]

    def position(self, inputs: list[Spec | None], values: list, i: int, length: int, insert: bool = False) -> int:
        """Input `i` as an index into a sequence of `length` elements, negative counting from
        the end: in [-length, length - 1], or [-length, length] for an insert; non-negative."""
        spec = self.tensor(inputs, i)
        if spec.dtype not in (np.int32, np.int64) or spec.size != 1:
            raise self.fail(f"the position (input {i}) must be one int32 or int64, got {spec.dtype}{list(spec.shape)}")
        position = int(self.value_of(values, i).reshape(-1)[0])
        high = length if insert else length - 1
        if not -length <= position <= high:
            raise self.fail(f"position {position} is out of range for a sequence of {length} elements "
                            f"(valid: {-length}..{high})")
        return position + length if position < 0 else position


@register("SequenceEmpty", since=11)
class SequenceEmpty(_Sequences):
    """An empty sequence of elements of type `dtype` (an ONNX element type; float32 by default)."""

    min_inputs = max_inputs = 0

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        return [SequenceSpec(onnx_dtype(self, "dtype", np.dtype(np.float32), strings=True))]

    def evaluate(self, inputs, out_specs):
        return [[]]


@register("SequenceConstruct", since=11)
class SequenceConstruct(_Sequences):
    """The sequence of its inputs, in order: tensors of one dtype (their shapes may differ)."""

    max_inputs = 1 << 16

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        specs = [self.tensor(inputs, i) for i in range(len(inputs))]
        for i, spec in enumerate(specs):
            if spec.dtype != specs[0].dtype:
                raise self.fail(f"input {i} is {spec.dtype} but input 0 is {specs[0].dtype}: "
                                "a sequence holds one dtype")
        self.check_memory(sum(spec.nbytes + SEQUENCE_ELEMENT_BYTES for spec in specs), "the sequence (copies)")
        return [SequenceSpec(specs[0].dtype)]

    def evaluate(self, inputs, out_specs):
        return [[np.array(x, copy=True) for x in inputs]]


@register("SequenceAt", since=11)
class SequenceAt(_Sequences):
    """The element at `position` (one int; negative counts from the end)."""

    min_inputs = max_inputs = 2

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        sequence = self.sequence(inputs, values, 0)
        self.index = self.position(inputs, values, 1, len(sequence))
        element = sequence[self.index]
        return [TensorSpec(element.dtype, element.shape)]

    def run(self, inputs, outputs):
        np.copyto(outputs[0], inputs[0][self.index])


@register("SequenceInsert", since=11)
class SequenceInsert(_Sequences):
    """The sequence with `tensor` inserted before `position` (default: appended at the end;
    negative counts from the end). The tensor must have the sequence's element dtype."""

    min_inputs, max_inputs = 2, 3

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        sequence = self.sequence(inputs, values, 0)
        tensor = self.tensor(inputs, 1)
        if tensor.dtype != inputs[0].dtype:
            raise self.fail(f"cannot insert a {tensor.dtype} tensor into a sequence of {inputs[0].dtype}")
        if len(sequence) >= MAX_SEQUENCE_LENGTH:
            raise self.fail(f"the sequence already holds {len(sequence)} elements, the most one may hold")
        self.check_memory(tensor.nbytes + SEQUENCE_ELEMENT_BYTES + 8 * len(sequence), "the new sequence")
        self.index = len(sequence)
        if len(inputs) > 2 and inputs[2] is not None:
            self.index = self.position(inputs, values, 2, len(sequence), insert=True)
        return [SequenceSpec(tensor.dtype)]

    def evaluate(self, inputs, out_specs):
        sequence = list(inputs[0])
        sequence.insert(self.index, np.array(inputs[1], copy=True))
        return [sequence]


@register("SequenceErase", since=11)
class SequenceErase(_Sequences):
    """The sequence without the element at `position` (default: the last one)."""

    min_inputs, max_inputs = 1, 2

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        sequence = self.sequence(inputs, values, 0)
        if not sequence:
            raise self.fail("cannot erase from an empty sequence")
        self.index = len(sequence) - 1
        if len(inputs) > 1 and inputs[1] is not None:
            self.index = self.position(inputs, values, 1, len(sequence))
        return [inputs[0]]

    def evaluate(self, inputs, out_specs):
        sequence = list(inputs[0])
        del sequence[self.index]
        return [sequence]


@register("SequenceLength", since=11)
class SequenceLength(_Sequences):
    """The number of elements, as an int64 scalar."""

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        self.sequence(inputs, values, 0)
        return [TensorSpec(np.dtype(np.int64), ())]

    def run(self, inputs, outputs):
        outputs[0][...] = len(inputs[0])


@register("SplitToSequence", since=11)
class SplitToSequence(_Sequences):
    """`input` split along `axis` into a sequence: into parts of the lengths `split` lists
    (1-D, summing to the axis length), into parts of `split` elements (a scalar; the last part
    takes the rest), or, without `split`, into parts of one element, the axis dropped unless
    `keepdims` (default 1)."""

    min_inputs, max_inputs = 1, 2

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        spec = self.tensor(inputs, 0)
        self.value_of(values, 0)  # the parts are made from its contents: known first
        rank = len(spec.shape)
        axis = int_attr(self, "axis", 0)
        if not -rank <= axis < rank:
            raise self.fail(f"axis {axis} is out of range for rank {rank}")
        self.axis = axis % rank
        length = spec.shape[self.axis]
        self.squeeze = False
        if len(inputs) > 1 and inputs[1] is not None:
            self.lengths = self._lengths(inputs, values, length)
        else:
            self._check_count(spec, length)
            self.lengths = [1] * length
            self.squeeze = not flag_attr(self, "keepdims", 1)
        return [SequenceSpec(spec.dtype)]

    def _check_count(self, spec: TensorSpec, count: int) -> None:
        """Before the parts are listed: at most MAX_SEQUENCE_LENGTH of them, within the budget."""
        if count > MAX_SEQUENCE_LENGTH:
            raise self.fail(f"makes {count} parts, more than a sequence may hold ({MAX_SEQUENCE_LENGTH})")
        self.check_memory(spec.nbytes + count * SEQUENCE_ELEMENT_BYTES, f"the sequence of {count} parts")

    def _lengths(self, inputs: list, values: list, length: int) -> list[int]:
        spec = self.tensor(inputs, 1)
        split = self.value_of(values, 1)
        if spec.dtype not in (np.int32, np.int64) or split.ndim > 1:
            raise self.fail(f"split must be an int32/int64 scalar or 1-D tensor, got {spec.dtype}{list(spec.shape)}")
        if split.ndim == 0:
            size = int(split)
            if size < 1:
                raise self.fail(f"split {size} must be positive")
            self._check_count(inputs[0], -(-length // size))
            return [size] * (length // size) + ([length % size] if length % size else [])
        self._check_count(inputs[0], split.size)
        lengths = [int(n) for n in split]
        if any(n < 0 for n in lengths) or sum(lengths) != length:
            raise self.fail(f"split {lengths} must be non-negative and sum to the axis length {length}")
        return lengths

    def evaluate(self, inputs, out_specs):
        x = inputs[0]
        parts, start = [], 0
        for n in self.lengths:  # each part copied as it is cut (no list of views first)
            part = np.take(x, start, axis=self.axis) if self.squeeze else x[(slice(None),) * self.axis
                                                                               + (slice(start, start + n),)]
            parts.append(np.array(part, copy=True))
            start += n
        return [parts]


@register("ConcatFromSequence", since=11)
class ConcatFromSequence(_Sequences):
    """The elements joined along `axis` (required): concatenated, or stacked along a new
    axis with `new_axis`=1 (then `axis` may also be the rank, a new last axis). The
    sequence must not be empty; shapes must agree but on `axis` (everywhere when stacking)."""

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        sequence = self.sequence(inputs, values, 0)
        if not sequence:
            raise self.fail("cannot concatenate an empty sequence")
        stack = flag_attr(self, "new_axis", 0)
        first = sequence[0].shape
        rank = len(first) + stack
        axis = int_attr(self, "axis")
        if not -rank <= axis < rank or rank == 0:
            raise self.fail(f"axis {axis} is out of range for elements of rank {len(first)}"
                            f"{' stacked' if stack else ''}")
        self.axis, self.stack = axis % rank, stack
        for i, element in enumerate(sequence):
            other = element.shape
            if len(other) != len(first) or any(
                    a != b for k, (a, b) in enumerate(zip(other, first, strict=True)) if stack or k != self.axis):
                how = "stacked" if stack else f"concatenated along axis {self.axis}"
                raise self.fail(f"element {i} has shape {other}, element 0 {first}: they cannot be {how}")
        if stack:
            shape = (*first[: self.axis], len(sequence), *first[self.axis :])
        else:
            shape = (*first[: self.axis], sum(e.shape[self.axis] for e in sequence), *first[self.axis + 1 :])
        return [TensorSpec(inputs[0].dtype, shape)]

    def run(self, inputs, outputs):
        if self.stack:
            np.stack(inputs[0], axis=self.axis, out=outputs[0])
        else:
            np.concatenate(inputs[0], axis=self.axis, out=outputs[0])


@register("SequenceMap", since=17)
class SequenceMap(_Sequences):
    """Runs `body` once per element of the input sequence: iteration i gets element i of each
    sequence input and every tensor input whole (then the node's captures); each body output
    is collected into one output sequence. Sequence inputs must have the same length; body
    outputs must be tensors of one dtype across iterations."""

    max_inputs = 1 << 16

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        captures = int(self.attr("captures", 0))
        if not 0 <= captures <= len(inputs) - 1:
            raise self.fail(f"captures={captures} does not fit its {len(inputs)} inputs")
        body = self.attr("body")
        formal = len(inputs) - captures
        if not isinstance(body, Graph) or len(body.inputs) != len(inputs):
            raise self.fail(f"body must be a graph taking {formal} inputs (and {captures} captures)")
        self.sequence(inputs, values, 0)
        for i in range(1, formal):
            if not isinstance(inputs[i], TensorSpec | SequenceSpec):
                raise self.fail(f"input {i} must be a sequence or a tensor, got {describe(inputs[i])}")
        known = [values[i] if isinstance(spec, OptionalSpec) else None if spec is None else self.value_of(values, i)
                 for i, spec in enumerate(inputs)]  # (an empty optional capture is None, and known)
        per_element = [i for i in range(formal) if isinstance(inputs[i], SequenceSpec)]
        count = len(known[0])
        for i in per_element:
            if len(known[i]) != count:
                raise self.fail(f"input {i} holds {len(known[i])} elements, input 0 {count}: they must agree")
        outputs: list[list[np.ndarray]] = [[] for _ in body.outputs]
        made = 0  # bytes of the outputs collected so far
        for n in range(count):
            args = [known[i][n] if i in per_element else known[i] for i in range(len(inputs))]
            for k, item in enumerate(self.run_graph(body, args)):
                if not isinstance(item, np.ndarray):
                    what = "an empty optional" if item is None else "a sequence"
                    raise self.fail(f"body output {k} must be a tensor, the body made {what}")
                if outputs[k] and item.dtype != outputs[k][0].dtype:
                    raise self.fail(f"body output {k} is {item.dtype} in iteration {n}, "
                                    f"{outputs[k][0].dtype} before: a sequence holds one dtype")
                made += value_nbytes(item) + SEQUENCE_ELEMENT_BYTES
                self.check_memory(made, f"the output sequences after iteration {n}")
                outputs[k].append(item)
        self.results = outputs
        return [SequenceSpec(items[0].dtype if items else spec_of([], "sequence", declared.dtype).dtype)
                for items, declared in zip(outputs, body.outputs, strict=True)]  # (empty: as declared)

    def evaluate(self, inputs, out_specs):
        return [list(items) for items in self.results]


# The `type` attribute of Optional, as the converter writes ONNX's TypeProto: "tensor(FLOAT)"
# or "seq(tensor(INT64))" (element types named as TensorProto names them).
_TYPE = re.compile(r"(?P<seq>seq\()?tensor\((?P<elem>\w+)\)(?(seq)\))")


@register("Optional", since=15)
class Optional(_Sequences):
    """An optional holding the input (a tensor or a sequence), or, without an input, an empty
    optional of the type the `type` attribute names ("tensor(FLOAT)", "seq(tensor(INT64))")."""

    min_inputs, max_inputs = 0, 1

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        if inputs and inputs[0] is not None:
            if isinstance(inputs[0], OptionalSpec):
                raise self.fail("input 0 is an optional: an optional holds a tensor or a sequence")
            return [OptionalSpec(inputs[0].dtype, of_sequence=isinstance(inputs[0], SequenceSpec))]
        text = str_attr(self, "type", "")
        match = _TYPE.fullmatch(text)
        if match is None:
            raise self.fail(f"without an input it needs a `type` attribute such as 'tensor(FLOAT)' or "
                            f"'seq(tensor(FLOAT))', got {text!r}")
        self.attrs["element type"] = match["elem"]  # read as Cast-1 reads a type name
        return [OptionalSpec(onnx_dtype(self, "element type", strings=True), of_sequence=bool(match["seq"]))]

    def evaluate(self, inputs, out_specs):
        return [copy_value(inputs[0]) if inputs else None]


@register("OptionalHasElement", since=15)
class OptionalHasElement(_Sequences):
    """True (a bool scalar) unless the input is an empty optional or is omitted; a tensor or
    a sequence (opset 18) always has its element."""

    min_inputs, max_inputs = 0, 1

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        spec = inputs[0] if inputs else None
        if spec is None:
            self.has = False
        elif isinstance(spec, OptionalSpec):
            self.has = values[0] is not None  # known: see runtime.kernels.base
        else:
            self.has = True
        return [TensorSpec(np.dtype(np.bool_), ())]

    def run(self, inputs, outputs):
        outputs[0][...] = self.has


@register("OptionalGetElement", since=15)
class OptionalGetElement(_Sequences, Identity):
    """What the optional input holds (a tensor or a sequence); a tensor or sequence input
    (opset 18) is returned as it is. An empty optional is a ModelError."""

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        spec = inputs[0]
        if isinstance(spec, OptionalSpec):
            value = values[0]  # known: see runtime.kernels.base
            if value is None:
                raise self.fail("the optional input is empty: it holds no element to get")
            if spec.of_sequence:
                return [SequenceSpec(spec.dtype)]
            return [TensorSpec(value.dtype, value.shape)]
        return [spec]  # run / evaluate: Identity's, a copy of what it holds

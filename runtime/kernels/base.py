"""What every kernel is: a prepare step (validation, shape/dtype inference,
precomputation) and a run step (compute into preallocated outputs).

A kernel object is made once per node from the node's attributes. The
interpreter calls `prepare` whenever input shapes change and `run` on every
invoke, with outputs that are views into the memory arena: `run` must write
every element of every output and must not keep references to them.

Sequences and optionals (ONNX; see runtime.graph.ValueKind) are values too, but
never arena memory. A kernel that takes them sets `takes_sequences`; their specs
are `SequenceSpec` / `OptionalSpec`, and the plan prepares a node that reads one
only with its actual value in `values` (a list of arrays; for an optional None when
empty, else what it holds). A kernel that makes one returns such a spec from
`prepare` and overrides `evaluate`, which returns the outputs; the plan then runs
that node with its actual inputs (an eager tail, an eager plan, or folding).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from edgerun.runtime.errors import ModelError, ValueNeeded


class ExecutionContext(Protocol):
    """What a kernel may ask of whoever runs it: the backend its plan runs on, and a way
    to run a nested graph (a control-flow body, an attention hook) to its outputs.

    The plan hands one to every kernel it makes (see `Kernel.for_node`); the kernels
    never import the executor themselves (`runtime.eager.EagerContext` implements it).
    """

    backend: str
    # The plan's work budget in multiply-adds (None: unlimited). A kernel whose work depends
    # on input values, not just shapes (RoiAlign's adaptive sampling grid), checks its run
    # against it and raises WorkBudgetError before doing the work (see runtime.work).
    work_budget: int | None
    # Threads a kernel's parallel loops may use (the interpreter's num_threads; None: one per
    # core). BLAS's own pool is capped process-wide by the interpreter.
    num_threads: int | None
    # The plan's memory budget in bytes (None: unlimited). A kernel that makes values whose size
    # its output specs do not tell (a sequence, a nested graph's results) checks them against it
    # and raises MemoryBudgetError before making them; nested graphs run within it too.
    memory_budget: int | None

    def run_graph(self, graph: Any, inputs: Sequence[np.ndarray], repeated: bool = False) -> list[np.ndarray]:
        """Run every node `graph.outputs` need with `inputs` bound to `graph.inputs`;
        returns the outputs in order (a sequence as a list of arrays, an empty optional as
        None). `repeated`: the graph runs many times with the same input shapes (a Loop or Scan
        body), so it is worth planning. Raises ModelError naming a node that fails."""
        ...


@dataclass(frozen=True)
class TensorSpec:
    """Static facts about a tensor at prepare time: concrete shape and dtype."""

    dtype: np.dtype
    shape: tuple[int, ...]

    @property
    def size(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize


@dataclass(frozen=True)
class SequenceSpec:
    """A sequence at prepare time: the dtype of its elements (their shapes may differ).
    At run time a Python list of arrays."""

    dtype: np.dtype


@dataclass(frozen=True)
class MapSequenceSpec(SequenceSpec):
    """A sequence of maps at prepare time (ZipMap's output): `dtype` is the values' type,
    `key_dtype` the keys' (int64, or the string dtype). At run time a list of dicts."""

    key_dtype: np.dtype | None = None


@dataclass(frozen=True)
class OptionalSpec:
    """An optional at prepare time: it holds a tensor, or a sequence when `of_sequence`,
    of elements of `dtype`. At run time None (empty) or the value it holds."""

    dtype: np.dtype
    of_sequence: bool = False


Spec = TensorSpec | SequenceSpec | OptionalSpec

# Memory estimates beyond the array data: each element of a sequence is a numpy array object
# (about 112 bytes) in a list slot; each element of a string tensor a reference to a str object
# (at least 49 bytes) -- the estimate for a string tensor whose contents are not known yet.
SEQUENCE_ELEMENT_BYTES = 128
STRING_ELEMENT_BYTES = 64


def value_nbytes(data: Any) -> int:
    """Bytes a run-time value takes: an array's data (a string array's references and the str
    objects they point to, shared ones counted each time), a sequence's elements plus
    SEQUENCE_ELEMENT_BYTES each, a map (a dict) 16 bytes an entry, None nothing."""
    if isinstance(data, dict):
        return 16 * len(data)
    if isinstance(data, list | tuple):
        return sum(value_nbytes(a) + SEQUENCE_ELEMENT_BYTES for a in data)
    if data is None:
        return 0
    if not isinstance(data, np.ndarray):  # (kernels return arrays; anything else by its object size)
        return sys.getsizeof(data)
    if data.dtype.hasobject:
        return data.nbytes + sum(map(sys.getsizeof, data.flat))
    return data.nbytes


def longest_string(values: Sequence[Any]) -> int:
    """A bound on the sys.getsizeof of one str a string op makes from `values` (a Concat's
    result is at most its parts): the sum of each string array's largest element;
    STRING_ELEMENT_BYTES - 8 when none of `values` holds strings."""
    total = sum(max(map(sys.getsizeof, a.flat), default=0)
                for a in values if isinstance(a, np.ndarray) and a.dtype.hasobject)
    return max(total, STRING_ELEMENT_BYTES - 8)


def spec_nbytes(spec: Spec | None, longest_string: int = STRING_ELEMENT_BYTES - 8) -> int:
    """Bytes a value of `spec` takes: a tensor's data; for a string tensor, a reference and a
    str object of `longest_string` bytes (sys.getsizeof) per element. 0 for a sequence or an
    optional (their size is known only once made) and for None."""
    if not isinstance(spec, TensorSpec):
        return 0
    if spec.dtype.hasobject:
        return spec.size * (8 + longest_string)
    return spec.nbytes


def describe(spec: Spec | None) -> str:
    """'a tensor', 'a sequence', 'an optional sequence'...: what a spec is, for messages."""
    if spec is None or isinstance(spec, TensorSpec):
        return "a tensor"
    if isinstance(spec, MapSequenceSpec):
        return "a sequence of maps"
    if isinstance(spec, SequenceSpec):
        return "a sequence"
    return "an optional sequence" if spec.of_sequence else "an optional tensor"


def spec_of(data: Any, kind: str = "tensor", dtype: np.dtype | None = None) -> Spec | None:
    """The spec of a run-time value: an array, a list of arrays (a sequence), or None.

    `kind` (a runtime.graph.ValueKind) and `dtype` are what the value's declaration says:
    a declared optional gets an OptionalSpec (None is then an empty optional, else None is
    an omitted input and gets no spec); `dtype` names the element type of an empty sequence
    or optional (float32 when it is not declared either)."""
    declared = np.dtype(np.float32 if dtype is None else dtype)
    if isinstance(data, list | tuple) and data and isinstance(data[0], dict):  # ZipMap's maps
        return MapSequenceSpec(declared)
    if isinstance(data, list | tuple):
        element = data[0].dtype if data and isinstance(data[0], np.ndarray) else declared
    else:
        element = declared if data is None else data.dtype
    if kind in ("optional_tensor", "optional_sequence"):
        of_sequence = isinstance(data, list | tuple) if data is not None else kind == "optional_sequence"
        return OptionalSpec(element, of_sequence)
    if data is None:
        return None
    if isinstance(data, list | tuple):
        return SequenceSpec(element)
    return TensorSpec(data.dtype, data.shape)


def copy_value(data: Any) -> Any:
    """A copy of a run-time value that shares no array with it (None stays None)."""
    if isinstance(data, list | tuple):
        return [np.array(a, copy=True) for a in data]
    return None if data is None else np.array(data, copy=True)


class Kernel:
    """Base class of kernels. Subclasses set `num_inputs` bounds and override
    `prepare` and `run`.

    Attributes:
        op_type, name: the node's op and name, for error messages.
        attrs: the node's attributes (ints, floats, strs, arrays, lists, graphs).
        version: the opset version the node follows.
        params: where an op has a backend fast path, what its prepare worked out for the
            current input shapes, as a frozen dataclass (e.g. conv.ConvParams): the reference
            `run` and the fast path both read it, so neither depends on the other's fields.
    """

    min_inputs: int = 1
    max_inputs: int = 1
    # False for kernels whose outputs change from run to run (random draws):
    # the interpreter never evaluates them at prepare time.
    deterministic: bool = True
    # True for kernels whose outputs depend only on the input shapes and dtypes
    # (Shape, Size): the plan evaluates them at prepare time, so shape arithmetic
    # (Shape -> Gather -> Concat -> Reshape) folds once input shapes are known.
    shape_only: bool = False
    # Inputs whose contents the kernel never reads, only their shape and dtype (SumTo's Like):
    # such a read does not keep the input's arena bytes alive, so the bytes may hold another
    # tensor by the time the kernel runs.
    shape_only_inputs: tuple[int, ...] = ()
    # (output, input) pairs whose arrays may be one: the plan may bind the output to the
    # input variable's own storage (a sparse optimizer update writes only the rows it
    # changes; see ExecutionPlan._in_place). The kernel must give the same result either way.
    in_place: tuple[tuple[int, int], ...] = ()
    # How many output slots the node has (omitted optional ones included); set by
    # `for_node`. Split into equal parts, for one, depends on it.
    num_outputs: int = 1
    # The plan's execution context (set by `for_node`): its backend, and how control
    # flow runs its bodies (on the same backend). None outside a plan.
    context: ExecutionContext | None = None
    # True for kernels that take sequence or optional inputs (see the module docstring);
    # any other kernel given one fails with a ModelError naming the input (`check_kinds`).
    takes_sequences: bool = False

    def __init__(self, op_type: str, name: str, attrs: dict[str, Any], version: int) -> None:
        self.op_type = op_type
        self.name = name
        self.attrs = attrs
        self.version = version

    @classmethod
    def for_node(cls, node: Any, context: ExecutionContext | None = None) -> Kernel:
        """A kernel object for `node` (a runtime.graph.Node): its attributes, version,
        output count and the execution context of the plan that runs it."""
        kernel = cls(node.op_type, node.name, dict(node.attrs), node.version)
        kernel.num_outputs = len(node.outputs)
        kernel.context = context
        return kernel

    @property
    def backend(self) -> str:
        """The backend the node's plan runs on ("cpu" outside a plan)."""
        return "cpu" if self.context is None else self.context.backend

    def run_graph(self, graph: Any, inputs: Sequence[np.ndarray], repeated: bool = False) -> list[np.ndarray]:
        """Run a nested graph through the plan's context (see ExecutionContext); a
        ModelError naming this node when the kernel was made outside a plan."""
        if self.context is None:
            raise self.fail("runs a nested graph, which needs an execution context (make it with for_node)")
        return self.context.run_graph(graph, inputs, repeated)

    def attr(self, key: str, default: Any = None) -> Any:
        return self.attrs.get(key, default)

    def fail(self, message: str) -> ModelError:
        """A ModelError that names this node; use as `raise self.fail("...")`."""
        return ModelError(f"node {self.name!r} ({self.op_type}): {message}")

    def value_of(self, values: list[np.ndarray | None], index: int) -> np.ndarray:
        """Input `index`'s contents at prepare time. Raises ValueNeeded when it is not
        known yet (the plan then prepares this node with the run's actual values)."""
        value = values[index] if index < len(values) else None
        if value is None:
            raise ValueNeeded(self.name, self.op_type, index)
        return value

    def check_kinds(self, inputs: list[Spec | None]) -> None:
        """ModelError naming the first sequence or optional input of a kernel that takes
        tensors only; the executors call it before `prepare`."""
        if self.takes_sequences:
            return
        for i, spec in enumerate(inputs):
            if spec is not None and not isinstance(spec, TensorSpec):
                raise self.fail(f"input {i} is {describe(spec)}; {self.op_type} takes tensors only")

    def check_arity(self, inputs: list[TensorSpec | None]) -> None:
        present = len(inputs)
        if not self.min_inputs <= present <= self.max_inputs:
            raise self.fail(
                f"expected {self.min_inputs}..{self.max_inputs} inputs, got {present}"
            )
        for i in range(self.min_inputs):
            if inputs[i] is None:
                raise self.fail(f"required input {i} is missing")

    def prepare(
        self, inputs: list[TensorSpec | None], values: list[np.ndarray | None]
    ) -> list[TensorSpec]:
        """Validate inputs and return the output specs.

        `values[i]` is input i's contents when it is a constant, else None.
        Raises ModelError (via `self.fail`) when inputs or attributes are invalid.
        """
        raise NotImplementedError

    def run(self, inputs: list[np.ndarray | None], outputs: list[np.ndarray]) -> None:
        """Compute outputs from inputs, writing into `outputs` in place."""
        raise NotImplementedError

    def evaluate(self, inputs: list[Any], out_specs: list[Spec]) -> list[Any]:
        """The outputs for `inputs` as new values, one per spec `prepare` returned: how a node
        runs outside the arena (eagerly, or folded at prepare time). The default allocates the
        tensor outputs and calls `run`. A kernel with a sequence or optional output overrides
        it and returns lists of arrays / None / arrays; tensors it returns must be new arrays
        (never an input: the plan may mark them read-only), list elements may be shared."""
        outputs = [np.empty(spec.shape, spec.dtype) for spec in out_specs]
        self.run(inputs, outputs)
        return outputs

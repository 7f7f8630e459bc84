"""One signature's execution plan: kernels, shape inference, arena, invoke loop.

Prepare walks the operators the signature's outputs need, in model order:
each kernel infers its output specs; an operator whose inputs are all
constants is evaluated right then (constant folding at prepare time); the
remaining operators become steps whose outputs live in one arena placed by
`runtime.arena`. Invoke is a plain loop over (run, inputs, outputs) with
every array bound in advance, so steady-state runs allocate only the results.
Variable updates are copied into the variables' storage when a run ends, except those
a kernel may write in place (a sparse optimizer update; see ExecutionPlan._in_place).
Every kernel gets the plan's `EagerContext`: its backend, and how control flow
runs its bodies.

Sequences and optionals (runtime.graph.ValueKind) never live in the arena: a node
that reads one that is not a constant, or makes one that cannot be folded, and
every node after it run in the eager tail (or the whole signature eagerly when
nothing can be planned before it).
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, NoReturn

import numpy as np

from edgerun.runtime import dtypes, layout
from edgerun.runtime.arena import TensorLife, plan_arena
from edgerun.runtime.eager import EagerContext, PreparedKernels
from edgerun.runtime.errors import (
    EdgerunError,
    InputError,
    MemoryBudgetError,
    ModelError,
    ValueNeeded,
    WorkBudgetError,
    raise_node_failure,
)
from edgerun.runtime.graph import Graph, Node, Signature, Value, ValueKind, graphs_within, reachable_nodes
from edgerun.runtime.kernels import Kernel, TensorSpec, resolve
from edgerun.runtime.kernels.base import (
    STRING_ELEMENT_BYTES,
    MapSequenceSpec,
    OptionalSpec,
    SequenceSpec,
    Spec,
    copy_value,
    describe,
    longest_string,
    spec_nbytes,
    value_nbytes,
)
from edgerun.runtime.kernels.control import metering, record_body_work
from edgerun.runtime.verifier import MAX_TENSOR_BYTES
from edgerun.runtime.work import WorkTally, node_macs

ARENA_ALIGNMENT = 64
_NAMED = (str, Value)  # output sources looked up in a run's arrays (an input name, a tail value)
_VIEW_OPS = frozenset({"Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity"})  # same bytes, new shape
_RECENT_PREPARATIONS = 4  # prepared input-shape sets kept for reuse (their arenas within the budget)
_END = 1 << 62  # "live until the end of the run"


@dataclass(frozen=True)
class TensorInfo:
    """A signature value: name, dtype and shape (-1 marks a dynamic dimension).

    `has_default`: an input that may be omitted (the model holds its default value).
    `kind`: "tensor", or "sequence" (a list of arrays), "optional_tensor" / "optional_sequence"
    (None or the value); for those, `dtype` and `shape` are the element tensors' as declared
    (shape () when the model declares none). See runtime.graph.ValueKind.
    """

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]
    has_default: bool = False
    kind: ValueKind = ValueKind.TENSOR


Step = tuple[Callable[[list, list], None], list, list, Node]


@dataclass
class _Prepared:
    """Everything that depends on input shapes; swapped in whole after a successful prepare."""

    shapes: dict[str, tuple[int, ...]]
    steps: list[Step] = field(default_factory=list)
    input_slots: dict[str, list[tuple[list, int]]] = field(default_factory=dict)
    output_sources: dict[str, Any] = field(default_factory=dict)  # name -> array or input name
    # (new value: array or input name, variable storage), copied when a run ends
    updates: list[tuple[Any, np.ndarray]] = field(default_factory=list)
    # updates a step writes straight into the variable's storage (see ExecutionPlan._in_place)
    in_place: set[Value] = field(default_factory=set)
    arena_bytes: int = 0
    # the host arena (bytes) and where its planned offset 0 lies in it: an offload (a GPU
    # backend) mirrors the arena on its device at the same planned offsets
    arena: np.ndarray | None = None
    arena_base: int = 0
    # what an offload made for this preparation (a GPU program), kept as long as it is
    offloaded: Any = None
    folded_bytes: int = 0  # the tensors constant-folded at prepare time, which this preparation holds
    work: WorkTally = field(default_factory=WorkTally)  # estimated multiply-adds per run
    deferred: bool = False  # not prepared yet: the first run's shapes decide
    laid_out: bool = False  # whether its steps' tensor layouts were chosen (runtime.layout; first host run)
    # the contents of the small inputs this preparation is specialized on (name -> bytes):
    # a run with other contents prepares again (see ExecutionPlan.specialize_on)
    fixed: dict[str, bytes] = field(default_factory=dict)
    # A hybrid plan's eager tail: the nodes after the first that needs run-time contents, the
    # values they read from the planned part (arena views, constants) and from the inputs,
    # and the values they make (output sources may name one).
    tail: list[tuple[Node, type[Kernel]]] = field(default_factory=list)
    tail_known: dict[Value, np.ndarray] = field(default_factory=dict)
    tail_feeds: dict[Value, str] = field(default_factory=dict)
    tail_values: set[Value] = field(default_factory=set)
    # Values that are views of another value's arena bytes: value -> (the value that owns the
    # bytes, its shape, its byte offset in them). Reshape-like results share their input's bytes
    # (ExecutionPlan._as_view: no step); the inputs of a Concat placed in its output are written
    # there by their producers (ExecutionPlan._concat_in_place: no copy, no step).
    views_of: dict[Value, tuple[Value, tuple[int, ...], int]] = field(default_factory=dict)
    concats_in_place: bool = False  # whether some Concat's inputs are views of its output (above)
    tail_specs: dict[Value, Spec] = field(default_factory=dict)  # of the known and fed values it reads
    # specs of outputs folded at prepare time (sequences and optionals among them)
    output_specs: dict[str, Spec] = field(default_factory=dict)


class ExecutionPlan:
    """Runs one signature of a graph. Raises ModelError/UnsupportedOpError on construction;
    MemoryBudgetError / WorkBudgetError when its input shapes need more than `memory_budget`
    bytes / `work_budget` multiply-adds (None: unlimited; see runtime.work).

    The memory budget bounds the arena (with the string tensors beside it, STRING_ELEMENT_BYTES
    an element) plus the weights the plan holds: the constants its nodes read, each counted
    once, and every variable in `variables` (`weight_bytes`; what Interpreter.memory_report
    reports). That sum is checked before the arena is allocated. The budget also bounds each
    value folded at prepare time (estimated before it is made, strings by their characters,
    sequences with SEQUENCE_ELEMENT_BYTES an element) and all of them together, and reaches
    control-flow bodies through the kernels' context. `budget_owner` (say "device profile
    'rpi4'") is named beside the budget when the arena and weights do not fit."""

    def __init__(
        self,
        graph: Graph,
        name: str,
        signature: Signature,
        variables: dict[Value, np.ndarray],
        memory_budget: int | None,
        backend: str = "cpu",
        work_budget: int | None = None,
        num_threads: int | None = None,
        budget_owner: str | None = None,
    ) -> None:
        self.name = name
        self.budget_owner = budget_owner
        self.work_budget = work_budget
        self.signature = signature
        self.variables = variables
        self.backend = backend
        self.memory_budget = memory_budget if memory_budget is not None else _physical_memory() // 2
        # handed to every kernel: control flow runs bodies through it, within the same budgets
        self.context = EagerContext(backend, work_budget, num_threads, self.memory_budget)
        self.nodes = _needed_nodes(graph, signature)
        # Resolved once (unknown ops fail here); instantiated afresh by each prepare,
        # so a failed or probing prepare never disturbs the live one.
        self.kernel_classes = [
            resolve(n.domain, n.op_type, n.version, n.name, backend) for n in self.nodes
        ]
        self._body_reads: dict[int, list[Value]] = {}  # id(body graph) -> what it and its bodies read
        # the weights every preparation holds besides its arena (checked with it, reported by memory_report)
        self.constant_bytes = self._constant_bytes()
        self.variable_bytes = sum(a.nbytes for a in variables.values())
        for body in graphs_within(self.nodes):  # control-flow bodies run eagerly: unknown ops fail now
            for n in body.nodes:
                resolve(n.domain, n.op_type, n.version, n.name, "cpu")
        self._eager_work = WorkTally()
        self.eager = False  # set for good once a kernel needs run-time values to infer shapes
        # Small integer inputs (a sample rate, a mode flag) whose contents decide shapes or
        # branches: plans are then specialized on their values, guarded at every run.
        self.specialize_on: tuple[str, ...] = ()
        self._inlined: dict[tuple[int, str], list[tuple[Node, type[Kernel]]]] = {}
        self.eager_kernels = PreparedKernels()  # eager runs reuse a kernel while its inputs allow
        # An offloading backend's runner (runtime.backends.Backend.offload): its run_steps(prepared)
        # replaces the host loop over a prepared plan's steps, leaving every value the outputs,
        # updates and eager tail read valid in the host arena. None: the steps run here.
        self.offload: Any = None
        self.input_info = {n: _declared(n, v, name) for n, v in signature.inputs.items()}
        self._non_tensor_inputs = {n for n, info in self.input_info.items() if info.kind != ValueKind.TENSOR}
        shapes = {n: _probe_shape(info, 1) for n, info in self.input_info.items()}
        self._recent: dict[tuple, _Prepared] = {}
        self._has_prepared = False  # whether any input shapes have prepared yet
        try:
            self.prepared = self._prepare(shapes)
            if not self.prepared.deferred:
                self._recent[(tuple(shapes.items()), ())] = self.prepared
                self._has_prepared = True
        except (MemoryBudgetError, WorkBudgetError):
            raise  # larger shapes would need more still
        except ModelError as exc:
            # Dynamic dims are prepared at 1 until a run says otherwise, and no fixed probe
            # size fits every model (a 256-wide window over a length-1 signal, a Reshape to
            # a fixed width). A failure downstream of a dynamic input waits for the first
            # run's real shapes; one that no dynamic dim reaches is a broken model.
            if not self._reached_by_dynamic_dims(getattr(exc, "node", None)):
                raise
            self.prepared = _Prepared(dict(shapes), deferred=True)
        self.output_info = self._describe_outputs(shapes)

    def _reached_by_dynamic_dims(self, failed: Node | None) -> bool:
        """Whether a dynamic input dim can reach node `failed` (through the shapes or
        the contents of its inputs); False when the signature has no dynamic dims."""
        dynamic = {v for n, v in self.signature.inputs.items()  # (a sequence's shapes never shape a plan)
                   if self.input_info[n].kind == ValueKind.TENSOR and -1 in self.input_info[n].shape}
        if not dynamic or failed is None:
            return False
        for node in self.nodes:
            if any(v in dynamic for v in self._node_values(node)):
                if node is failed:
                    return True
                dynamic.update(v for v in node.outputs if v is not None)
        return False

    def _node_values(self, node: Node) -> list[Value]:
        """A node's inputs, and the outer values its control-flow bodies read (each body's
        once per plan, however many nodes share it)."""
        values = [v for v in node.inputs if v is not None]
        for body in _bodies(node):
            values.extend(self._graph_reads(body))
        return values

    def _graph_reads(self, graph: Graph) -> list[Value]:
        """The values `graph`'s nodes and the graphs nested in them read, each once; worked
        out once per graph object."""
        reads = self._body_reads.get(id(graph))
        if reads is None:
            self._body_reads[id(graph)] = []  # (a graph holding itself adds nothing through itself)
            found = dict.fromkeys(v for n in graph.nodes for v in n.inputs if v is not None)
            for body in (b for n in graph.nodes for b in _bodies(n)):
                found.update(dict.fromkeys(self._graph_reads(body)))
            reads = self._body_reads[id(graph)] = list(found)
        return reads

    def _constant_bytes(self) -> int:
        """Bytes of the constant tensors the plan's nodes (and their control-flow bodies) read,
        each counted once however many nodes read it."""
        found = {id(v): v.data.nbytes for node in self.nodes for v in self._node_values(node)
                 if v.is_constant and isinstance(v.data, np.ndarray)}
        return sum(found.values())

    @property
    def weight_bytes(self) -> int:
        """The weights the plan holds besides its arena: its constants and every variable."""
        return self.constant_bytes + self.variable_bytes

    @property
    def arena_bytes(self) -> int:
        return self.prepared.arena_bytes

    @property
    def folded_bytes(self) -> int:
        """The tensors folded at prepare time for the current shapes (Transpose of a weight, the
        float copy of a dequantized int8 weight), held beside the arena."""
        return self.prepared.folded_bytes

    @property
    def work(self) -> WorkTally:
        """The work estimate of a run at the prepared shapes (for a plan that prepares every
        run, of the last run that passed the budget; empty before the first)."""
        return self._eager_work if self.eager else self.prepared.work

    def _describe_outputs(self, shapes: dict[str, tuple[int, ...]]) -> dict[str, TensorInfo]:
        """Output dtypes and shapes; a dim is dynamic (-1) if it follows a dynamic input dim.

        Found by preparing once more with every dynamic input dim set to 2 and
        comparing, and from the declarations: a dim the model declares dynamic stays -1
        even where sizes 1 and 2 happen to agree (a detector's map padded to a minimum).
        Declared output shapes are otherwise hints: trusted when shapes are not known
        before a run (-1 where the declaration says nothing), and for which dims are
        dynamic when the work budget refuses 2.
        """
        if self.eager or self.prepared.deferred:  # shapes not known yet: trust the declarations
            return {name: TensorInfo(name, value.dtype, tuple(value.shape or ()), kind=value.kind)
                    for name, value in self.signature.outputs.items()}
        probe, refused = None, False
        if any(-1 in info.shape for info in self.input_info.values()):
            other = {n: _probe_shape(info, 2) for n, info in self.input_info.items()}
            try:
                probe = self._prepare(other)
            except WorkBudgetError:  # the budget allows size 1 only
                refused = True
            except EdgerunError:
                probe = None
        infos = {}
        for name, value in self.signature.outputs.items():
            kind, dtype, shape = self._output_spec(self.prepared, name)
            if kind != ValueKind.TENSOR:  # elements as declared
                infos[name] = TensorInfo(name, dtype, shape, kind=kind)
                continue
            if probe is not None:
                _, _, other_shape = self._output_spec(probe, name)
                shape = tuple(-1 if a != b else a for a, b in zip(shape, other_shape, strict=False))
            if (probe is not None or refused) and value.shape is not None and len(value.shape) == len(shape):
                shape = tuple(-1 if d < 0 else s for s, d in zip(shape, value.shape, strict=True))
            infos[name] = TensorInfo(name, dtype, tuple(shape))
        return infos

    def _output_spec(self, prepared: _Prepared, name: str) -> tuple[ValueKind, np.dtype, tuple[int, ...]]:
        """(kind, dtype, shape) of output `name` as `prepared` makes it."""
        source = prepared.output_sources[name]
        declared = self.signature.outputs[name]
        if isinstance(source, str):
            info = self.input_info[source]
            return info.kind, info.dtype, info.shape if info.kind != ValueKind.TENSOR else prepared.shapes[source]
        if isinstance(source, Value):  # made by an eager tail: its declaration, -1 where unknown
            return source.kind, source.dtype, tuple(-1 if d is None else d for d in (source.shape or ()))
        spec = prepared.output_specs.get(name)
        if isinstance(spec, SequenceSpec | OptionalSpec):  # folded at prepare time
            kind = ValueKind.SEQUENCE if isinstance(spec, SequenceSpec) else (
                ValueKind.OPTIONAL_SEQUENCE if spec.of_sequence else ValueKind.OPTIONAL_TENSOR)
            return kind, spec.dtype, tuple(declared.shape or ())
        return ValueKind.TENSOR, source.dtype, source.shape

    # ----------------------------------------------------------------- run
    def run(self, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        arrays = self._check_inputs(inputs)
        prepared = self.prepared
        if self.eager:  # shapes need run-time values: prepare with them, every run
            prepared = self._prepare(prepared.shapes, arrays)  # a refusal keeps the last estimate
            self._eager_work = prepared.work
        for input_name, slots in prepared.input_slots.items():
            array = arrays[input_name]
            for slot_list, index in slots:
                slot_list[index] = array
        if self.offload is not None and not self.eager:
            self.offload.run_steps(prepared)  # names the failing node as run_steps does
        else:
            if not prepared.laid_out and not self.eager:
                self._lay_out(prepared)
            run_steps(prepared.steps)
        if prepared.tail:
            arrays = {**arrays, **self._run_tail(prepared, arrays)}  # sources name tail values too
        # a Loop or Scan body's plan: its iterations together must fit the work budget
        if metering():
            record_body_work((self._eager_work if self.eager or prepared.tail else prepared.work).total)
        for source, storage in prepared.updates:
            if isinstance(source, Value):  # made by the eager tail: checked now, not at prepare
                self._update(storage, arrays[source], source)
            else:
                np.copyto(storage, arrays[source] if isinstance(source, str) else source)
        return {  # a source names an input or a tail value, or is the array itself
            name: _copy_output(arrays[source] if isinstance(source, _NAMED) else source)
            for name, source in prepared.output_sources.items()
        }

    def _update(self, storage: np.ndarray, data: Any, source: Value) -> None:
        """Copy a variable's new value, made by an eager tail (so unchecked at prepare), into its
        storage; ModelError when it is not a tensor of the variable's dtype and shape."""
        if not isinstance(data, np.ndarray) or (data.dtype, data.shape) != (storage.dtype, storage.shape):
            name = source.name
            got = f"{data.dtype}{list(data.shape)}" if isinstance(data, np.ndarray) else describe(
                SequenceSpec(storage.dtype) if isinstance(data, list | tuple) else OptionalSpec(storage.dtype))
            raise ModelError(f"signature {self.name!r}: the update {name!r} of a {storage.dtype}"
                             f"{list(storage.shape)} variable is {got}")
        np.copyto(storage, data)

    def _check_inputs(self, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        if not isinstance(inputs, Mapping):
            raise InputError(f"inputs must be a dict of name -> array, not {type(inputs).__name__}")
        expected = self.input_info
        if inputs.keys() != expected.keys():
            inputs = self._with_defaults(inputs)
        arrays, changed = {}, {}
        for name, info in expected.items():
            if name in self._non_tensor_inputs:  # never in the arena: nodes reading it run eagerly
                arrays[name] = _as_value(inputs[name], name, info.kind, info.dtype, self.signature.inputs[name].shape)
                continue
            array = _as_array(inputs[name], name, info.dtype)
            if array.dtype != info.dtype:
                raise InputError(f"input {name!r}: expected dtype {info.dtype}, got {array.dtype}")
            if array.shape != self.prepared.shapes[name]:
                self._check_shape(name, array.shape)
                changed[name] = array.shape
            arrays[name] = array
        if changed or self.prepared.deferred or (
            self.specialize_on and any(arrays[n].tobytes() != self.prepared.fixed.get(n) for n in self.specialize_on)
        ):
            self.prepared = self._reprepare({**self.prepared.shapes, **changed}, arrays)
        return arrays

    def _reprepare(self, shapes: dict[str, tuple[int, ...]], arrays: dict[str, np.ndarray] | None = None) -> _Prepared:
        """Prepare for new input shapes, reusing one of the last few preparations (a
        training loop alternates full and last-partial batches, an OCR stream a few line
        widths); the kept arenas stay within the memory budget together. Inputs that do
        not fit together are an InputError naming the node and the shapes."""
        fixed = None
        if self.specialize_on:
            if arrays is None:  # resize_input: the values come with the first run
                return _Prepared(dict(shapes), deferred=True)
            fixed = {n: np.array(arrays[n]) for n in self.specialize_on}
        key = (tuple(shapes.items()), tuple((n, a.tobytes()) for n, a in (fixed or {}).items()))
        cached = self._recent.pop(key, None)
        if cached is None:  # (a successful prepare proves the model; failures then blame the inputs)
            try:
                cached = self._prepare(shapes, fixed=fixed)
            except (MemoryBudgetError, WorkBudgetError):
                raise  # the caller's limit, not a model or input fault: keep its type
            except ModelError as exc:
                values = "".join(f", {n}={a.tolist()}" for n, a in (fixed or {}).items())
                message = f"signature {self.name!r} cannot run with input shapes {shapes}{values}: {exc}"
                if not self._has_prepared:  # no shapes have fitted yet: blame the model, not the input
                    raise ModelError(f"{message} (nor with any shapes before)") from exc
                raise InputError(message) from exc
        self._recent[key] = cached
        self._has_prepared = self._has_prepared or not cached.deferred
        while len(self._recent) > 1 and (
            len(self._recent) > _RECENT_PREPARATIONS
            or sum(p.arena_bytes + p.folded_bytes for p in self._recent.values()) + self.weight_bytes
            > self.memory_budget
        ):
            self._recent.pop(next(iter(self._recent)))  # the least recently used
        return cached

    def _with_defaults(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """`inputs` plus the defaults of omitted optional inputs; InputError for a missing
        required input or an unknown name."""
        expected = self.input_info
        if any(n not in expected for n in inputs) or any(
            n not in inputs and not info.has_default for n, info in expected.items()
        ):
            self._name_error(inputs)
        return {n: inputs[n] if n in inputs else self.signature.inputs[n].data for n in expected}

    def _name_error(self, inputs: Mapping[str, Any]) -> None:
        expected = self.input_info
        want = ", ".join(repr(n) for n in expected) or "none"
        missing = [n for n, info in expected.items() if n not in inputs and not info.has_default]
        if missing:
            got = ", ".join(repr(n) for n in missing)
            raise InputError(f"signature {self.name!r}: missing input {got}; expected {want}")
        extra = ", ".join(repr(n) for n in inputs if n not in expected)
        raise InputError(f"signature {self.name!r}: unexpected input {extra}; expected {want}")

    def _check_shape(self, name: str, shape: tuple[int, ...]) -> None:
        declared = self.input_info[name].shape
        pretty = "(" + ", ".join("?" if d < 0 else str(d) for d in declared) + ")"
        if len(shape) != len(declared):
            raise InputError(f"input {name!r}: expected rank {len(declared)} {pretty}, got shape {shape}")
        for want, got in zip(declared, shape, strict=True):
            if want >= 0 and want != got:
                raise InputError(f"input {name!r}: expected shape {pretty}, got {shape}")

    def resize(self, shapes: Mapping[str, tuple[int, ...]]) -> None:
        """Prepare for new shapes of the inputs named in `shapes`, all at once (inputs whose
        shapes depend on each other, such as a batch of images and its labels, can only
        change together); the others keep theirs."""
        checked = {}
        for name, shape in shapes.items():
            if name not in self.input_info:
                known = ", ".join(repr(n) for n in self.input_info) or "none"
                raise InputError(f"signature {self.name!r} has no input {name!r}; inputs: {known}")
            if self.input_info[name].kind != ValueKind.TENSOR:
                raise InputError(f"input {name!r} is a {self.input_info[name].kind}, which has no shape to resize")
            if not all(isinstance(d, int | np.integer) and d >= 0 for d in shape):
                raise InputError(f"input {name!r}: shape {shape} must be non-negative integers")
            checked[name] = tuple(int(d) for d in shape)
            self._check_shape(name, checked[name])
        if any(shape != self.prepared.shapes[name] for name, shape in checked.items()) or self.prepared.deferred:
            self.prepared = self._reprepare({**self.prepared.shapes, **checked})

    # ------------------------------------------------------------- prepare
    def _prepare(
        self,
        shapes: dict[str, tuple[int, ...]],
        arrays: dict[str, np.ndarray] | None = None,
        fixed: dict[str, np.ndarray] | None = None,
    ) -> _Prepared:
        """Prepare for input `shapes`. With `arrays` (an eager run), every node is
        evaluated with the actual inputs and the result holds the outputs. With `fixed`,
        those inputs' contents are constants of the plan (a specialization).

        When a kernel needs run-time contents to infer shapes, the plan first tries
        specializing on its small integer inputs (deferred to the first run, which has
        their values); when that is not enough either, the nodes from that kernel on form
        an eager tail behind the planned steps (a hybrid plan), or, when no step comes
        before it, the whole signature runs eagerly for good."""
        if self.eager and arrays is None:
            return _Prepared(dict(shapes))
        try:
            prepared = self._prepare_nodes(shapes, arrays, fixed)
            if prepared.tail and fixed is None and arrays is None and self._small_inputs():
                self.specialize_on = self._small_inputs()  # their values may plan the tail too
                return _Prepared(dict(shapes), deferred=True)
            return prepared
        except ValueNeeded:
            if arrays is not None:
                raise
            if fixed is None and self._small_inputs():
                self.specialize_on = self._small_inputs()
                return _Prepared(dict(shapes), deferred=True)
            self.eager, self.specialize_on = True, ()
            return _Prepared(dict(shapes))

    def _small_inputs(self) -> tuple[str, ...]:
        """Inputs a plan may be specialized on: integer or bool, static shape, <= 16 elements."""
        return tuple(
            name for name, info in self.input_info.items()
            if info.kind == ValueKind.TENSOR and info.dtype.kind in "biu" and -1 not in info.shape
            and int(np.prod(info.shape)) <= 16
        )

    def _prepare_nodes(
        self, shapes: dict[str, tuple[int, ...]], arrays: dict[str, np.ndarray] | None,
        fixed: dict[str, np.ndarray] | None = None,
    ) -> _Prepared:
        fixed = fixed or {}
        prepared = _Prepared(dict(shapes), fixed={n: a.tobytes() for n, a in fixed.items()})
        specs: dict[Value, Spec] = {}
        known: dict[Value, Any] = {}
        feeds: dict[Value, str] = {}
        eager = arrays is not None
        for input_name, value in self.signature.inputs.items():
            if value.kind == ValueKind.TENSOR:
                specs[value] = TensorSpec(value.dtype, shapes[input_name])
            else:
                specs[value] = _declared_spec(value)
            if eager:
                known[value] = arrays[input_name]
            elif input_name in fixed:
                known[value] = fixed[input_name]
                known[value].flags.writeable = False
            else:
                feeds[value] = input_name
        if eager:
            for value, storage in self.variables.items():
                known[value], specs[value] = storage, TensorSpec(storage.dtype, storage.shape)
        arena_values: list[Value] = []
        lives: dict[Value, list[int]] = {}
        work = deque(zip(self.nodes, self.kernel_classes, strict=True))
        tail = self._walk(work, prepared, specs, known, feeds, eager, arena_values, lives)
        if tail:  # a hybrid plan: what the eager tail reads stays in the arena to the end
            reads = {v for n, _ in tail for v in self._node_values(n)}
            for v in {prepared.views_of.get(v, (v,))[0] for v in reads} & lives.keys():
                lives[v][1] = _END
        views = self._allocate(prepared, arena_values, lives, specs)
        if tail:
            prepared.tail = tail
            prepared.tail_feeds = {v: feeds[v] for v in reads if v in feeds}
            prepared.tail_known = {v: views[v] if v in views else known[v] for v in reads if v in views or v in known}
            prepared.tail_values = {v for n, _ in tail for v in n.outputs if v is not None}
            prepared.tail_specs = {v: specs[v] for v in (*prepared.tail_feeds, *prepared.tail_known)}
        self._bind_results(prepared, views, known, feeds, specs)
        return prepared

    def _walk(self, work: deque, prepared: _Prepared, specs: dict, known: dict, feeds: dict, eager: bool,
              arena_values: list, lives: dict) -> list[tuple[Node, type[Kernel]]]:
        """Prepare the nodes of `work` in order: evaluated when `eager` or foldable, else
        steps of `prepared` with their outputs in the arena. Returns the nodes left when one
        needs run-time contents to infer its shapes (the eager tail of a hybrid plan; a
        ValueNeeded when not even one step came before it), else []."""
        folded_bytes = 0
        failing = None
        origin: dict[int, Node] = {}  # an inlined body node -> the top-level node it came from
        try:
            while work:
                node, cls = work.popleft()
                failing = origin.get(id(node), node)
                in_values = self._node_inputs(node, specs, known)
                if node.op_type == "If" and node.domain == "" and in_values and in_values[0] in known:
                    branch = self._inlined_branch(node, known[in_values[0]])
                    origin.update((id(n), failing) for n, _ in branch)
                    work.extendleft(reversed(branch))
                    continue
                in_specs = [None if v is None else specs[v] for v in in_values]
                in_known = [known.get(v) for v in in_values]
                if not eager and _reads_unknown_sequence(in_values, in_specs, known):
                    cls.for_node(node, self.context).check_kinds(in_specs)  # a tensor kernel fails now, at load
                    if not prepared.steps:  # sequences never live in the arena: the node runs eagerly
                        raise ValueNeeded(node.name, node.op_type, 0)
                    return [(node, cls), *work]
                if eager:  # prepared with this run's values, or reused from a run that had the same ones
                    kernel, out_specs = self._infer(
                        node, partial(self.eager_kernels.prepare, node, cls, in_specs, in_known, self.context))
                else:
                    try:
                        kernel, out_specs = self._infer(node, partial(_prepare_fresh, cls, node, self.context,
                                                                      in_specs, in_known))
                    except ValueNeeded:
                        if not prepared.steps:
                            raise  # nothing to plan ahead of it: the whole signature runs eagerly
                        return [(node, cls), *work]
                fold = eager or self._foldable(node, kernel, in_values, known, out_specs)
                if not fold and not all(isinstance(spec, TensorSpec) for spec in out_specs):
                    if not prepared.steps:  # makes a sequence or optional: it runs eagerly
                        raise ValueNeeded(node.name, node.op_type, 0)
                    return [(node, cls), *work]
                prepared.work.add(node, node_macs(node, _tensors(in_specs), _tensors(out_specs)))
                prepared.work.check(self.work_budget, self.name, node)  # before the node is evaluated
                if fold:
                    outs = self._fold(node, kernel, in_values, known, out_specs, specs)
                    folded_bytes += sum(value_nbytes(a) for a in outs)
                    self._check_budget(folded_bytes, "constant-folded tensors")
                    prepared.folded_bytes = folded_bytes
                    for value, array, spec in zip(node.outputs, outs, out_specs, strict=True):
                        if value is not None:
                            known[value], specs[value] = array, spec
                    continue
                step_index = len(prepared.steps)
                if self._as_view(node, in_values, out_specs, specs, lives, prepared):
                    continue
                if self._concat_in_place(node, in_values, out_specs, specs, lives, arena_values, prepared, step_index):
                    continue
                in_place = self._in_place(node, kernel, in_values, work, prepared)
                outputs = self._bind_outputs(node, out_specs, specs, arena_values, lives, step_index, in_place)
                for i, v in enumerate(in_values):
                    v = prepared.views_of.get(v, (v,))[0]
                    if v in lives and i not in kernel.shape_only_inputs:  # (its shape alone keeps no bytes)
                        lives[v][1] = step_index
                prepared.steps.append((kernel.run, [None] * len(in_values), outputs, node))
                self._remember_inputs(prepared, in_values, known, feeds)
        except ModelError as exc:
            exc.node = failing  # which node: construction decides from it whether to wait for a run
            raise
        return []

    @staticmethod
    def _as_view(node: Node, in_values: list, out_specs: list, specs: dict, lives: dict, prepared: _Prepared) -> bool:
        """Whether `node` (a Reshape, Squeeze, Unsqueeze, Flatten or Identity of an arena tensor)
        becomes a view of its input's bytes instead of a step that copies them: the output
        shares the arena slot, whose life then lasts as long as the view's uses."""
        out = node.outputs[0] if len(node.outputs) == 1 else None
        if (node.op_type not in _VIEW_OPS or node.domain != "" or out is None or out.is_variable
                or not in_values or in_values[0] is None):
            return False
        owner, _, offset = prepared.views_of.get(in_values[0], (in_values[0], None, 0))
        spec, source = out_specs[0], specs.get(in_values[0])
        if (owner not in lives or not isinstance(spec, TensorSpec) or not isinstance(source, TensorSpec)
                or spec.dtype != source.dtype or spec.nbytes != source.nbytes or spec.dtype.hasobject):
            return False
        prepared.views_of[out] = (owner, spec.shape, offset)
        specs[out] = spec
        return True

    def _concat_in_place(self, node: Node, in_values: list, out_specs: list, specs: dict, lives: dict,
                         arena_values: list, prepared: _Prepared, step_index: int) -> bool:
        """Whether `node` (a Concat) needs no step: its output takes the arena bytes and each
        input becomes a view of its part of them, so the steps that make the inputs write them
        in place and nothing is copied. Only where each part is one contiguous byte range of
        the output (every dimension before the axis is 1: batch 1 along channels) and every
        input is a distinct arena tensor that no other view owns or is (an input already placed
        in another Concat, a Reshape's result, a signature input or a constant is copied as
        before); never for a plan that an offloading backend runs (its device program tracks
        whole tensors). The output's bytes then live from the first input's step on."""
        out = node.outputs[0] if len(node.outputs) == 1 else None
        if (node.op_type != "Concat" or node.domain != "" or out is None or out.is_variable
                or len(in_values) < 2 or self.offload is not None):
            return False
        spec = out_specs[0]
        if not isinstance(spec, TensorSpec) or spec.dtype.hasobject or spec.nbytes == 0:
            return False
        axis = int(node.attrs.get("axis", 0))
        axis = axis + len(spec.shape) if axis < 0 else axis
        if not 0 <= axis < len(spec.shape) or int(np.prod(spec.shape[:axis])) != 1:
            return False
        owners = {owner for owner, *_ in prepared.views_of.values()}
        parts = [specs.get(v) for v in in_values]
        if (len(set(in_values)) != len(in_values) or any(
                v is None or v not in lives or v in prepared.views_of or v in owners or v.is_variable
                for v in in_values)
                or any(not isinstance(p, TensorSpec) or p.dtype != spec.dtype or p.nbytes == 0 for p in parts)
                or sum(p.nbytes for p in parts) != spec.nbytes):
            return False
        specs[out] = spec
        arena_values.append(out)
        lives[out] = [min(lives[v][0] for v in in_values), max(step_index, *(lives[v][1] for v in in_values))]
        offset = 0
        for value, part in zip(in_values, parts, strict=True):
            prepared.views_of[value] = (out, part.shape, offset)
            offset += part.nbytes
            arena_values.remove(value)
            del lives[value]
        prepared.concats_in_place = True
        return True

    def offload_to(self, offload: Any) -> None:
        """Hand this plan's steps to an offloading backend's runner (runtime.backends): from now
        on preparations place no Concat in place (the runner tracks whole tensors), and the
        kept ones that did are dropped (the current one made again)."""
        self.offload = offload
        if any(p.concats_in_place for p in (self.prepared, *self._recent.values())):
            self._recent.clear()
            shapes = dict(self.prepared.shapes)
            if self.specialize_on:  # its preparations need the specialized inputs' values: the next run's
                self.prepared = _Prepared(shapes, deferred=True)
            else:
                self.prepared = self._prepare(shapes)
                self._recent[(tuple(shapes.items()), ())] = self.prepared

    def _in_place(self, node: Node, kernel: Kernel, in_values: list, work: deque,
                  prepared: _Prepared) -> dict[int, np.ndarray]:
        """Outputs of `node` that the step writes straight into a variable's storage, by index.

        A kernel declares `in_place`, (output, input) pairs whose arrays may be one (it then
        gives the same result: a sparse optimizer update writes only the rows it changes).
        Output i takes input j's storage when input j is a variable, output i is this
        signature's update of it and nothing else, and no later node and no output of the
        signature reads the variable (nodes read variables as they were when the run started).
        The variable then changes when the step runs, not when the run ends: the trainable
        graph puts such updates last, and the kernels check everything before writing."""
        pairs = kernel.in_place
        found: dict[int, np.ndarray] = {}
        later: set[Value] | None = None
        updates = self.signature.updates
        for out, into in pairs:
            variable = in_values[into] if into < len(in_values) else None
            value = node.outputs[out] if out < len(node.outputs) else None
            if (value is None or variable not in self.variables or updates.get(variable) is not value
                    or sum(v is value for v in updates.values()) != 1):
                continue
            if later is None:
                later = {v for n, _ in work for v in self._node_values(n)} | set(self.signature.outputs.values())
            if variable not in later and value not in later:
                found[out] = self.variables[variable]
                prepared.in_place.add(value)
        return found

    def _lay_out(self, prepared: _Prepared) -> None:
        """Let the steps' kernels keep channels-last regions (runtime.layout) where nothing but
        the steps reads the tensors: at the first run on the host, so an offloading backend
        (set after preparing) never sees them; never with an eager tail."""
        if layout.ENABLED and not prepared.tail:
            signature = self.signature
            keep = {*signature.outputs.values(), *signature.updates.values(), *signature.updates,
                    *prepared.in_place, *prepared.views_of, *(owner for owner, *_ in prepared.views_of.values())}
            layout.lay_out(prepared.steps, keep)  # asks every kernel before it tells any
        prepared.laid_out = True

    def _run_tail(self, prepared: _Prepared, arrays: dict[str, np.ndarray]) -> dict[Value, np.ndarray]:
        """Evaluate a hybrid plan's eager tail after its planned steps ran: each node
        prepared with this run's values (kernels reused while they allow); returns every
        value the tail computed."""
        known = dict(prepared.tail_known)
        for value, name in prepared.tail_feeds.items():
            known[value] = arrays[name]
        specs = dict(prepared.tail_specs)
        for value, storage in self.variables.items():
            if value not in known:
                known[value], specs[value] = storage, TensorSpec(storage.dtype, storage.shape)
        tally = _Prepared(prepared.shapes, work=replace(prepared.work))
        self._walk(deque(prepared.tail), tally, specs, known, {}, True, [], {})
        self._eager_work = tally.work
        return known

    def _inlined_branch(self, node: Node, condition: np.ndarray) -> list[tuple[Node, type[Kernel]]]:
        """The branch an If takes when its condition is known at prepare time, as nodes
        of this plan: the body's captured inputs renamed to the If's inputs and its
        outputs to the If's outputs (an Identity where a branch returns a value it did
        not compute). Made once per If and branch, so eager runs reuse their kernels."""
        if condition.size != 1:
            raise ModelError(f"node {node.name!r} (If): the condition must have one element, "
                             f"got shape {condition.shape}")
        key = "then_branch" if bool(condition.reshape(-1)[0]) else "else_branch"
        if (id(node), key) in self._inlined:
            return self._inlined[(id(node), key)]
        body = node.attrs.get(key)
        captures = node.inputs[1:]
        if not isinstance(body, Graph) or len(body.inputs) != len(captures) or len(body.outputs) != len(node.outputs):
            raise ModelError(f"node {node.name!r} (If): {key} must be a graph reading the node's "
                             f"{len(captures)} captured values and making its {len(node.outputs)} outputs")
        rename: dict[Value, Value | None] = dict(zip(body.inputs, captures, strict=True))
        computed = {v for n in body.nodes for v in n.outputs if v is not None}
        tail = []
        for inner, outer in zip(body.outputs, node.outputs, strict=True):
            if outer is None:
                continue
            if inner in computed and inner not in rename:
                rename[inner] = outer
            else:
                name = f"{node.name}/{key}/{outer.name}"
                tail.append(Node("Identity", [rename.get(inner, inner)], [outer], {}, name))

        def renamed(values: list[Value | None]) -> list[Value | None]:
            return [None if v is None else rename.get(v, v) for v in values]

        nodes = [Node(n.op_type, renamed(n.inputs), renamed(n.outputs), n.attrs, n.name, n.domain, n.version)
                 for n in body.nodes] + tail
        branch = [(n, resolve(n.domain, n.op_type, n.version, n.name, self.backend)) for n in nodes]
        self._inlined[(id(node), key)] = branch
        return branch

    @staticmethod
    def _foldable(
        node: Node, kernel: Kernel, in_values: list, known: dict, out_specs: list[Spec]
    ) -> bool:
        """All inputs constant, a deterministic kernel, and the result not much bigger
        than its inputs (a tiny model must not make prepare materialise gigabytes)."""
        if kernel.shape_only and kernel.deterministic:
            return True
        if not kernel.deterministic or not in_values or not all(v is None or v in known for v in in_values):
            return False
        if any(v is not None and v.is_variable for v in node.outputs):
            return False
        args = [known[v] for v in in_values if v is not None]
        in_bytes = sum(value_nbytes(a) for a in args)  # (strings by their characters)
        out_bytes = _result_bytes(args, out_specs)
        return out_bytes <= max(4 * in_bytes, 16 << 20)

    def _node_inputs(self, node: Node, specs: dict, known: dict) -> list[Value | None]:
        for value in node.inputs:
            if value is None or value in specs:
                continue
            if value.data is not None and not value.is_variable:
                known[value] = value.data
                specs[value] = TensorSpec(value.data.dtype, value.data.shape)
            elif value in self.variables:
                specs[value] = TensorSpec(self.variables[value].dtype, self.variables[value].shape)
            else:
                raise ModelError(
                    f"node {node.name!r} ({node.op_type}): input {value.name!r} is neither a "
                    f"signature input of {self.name!r}, a constant, nor produced before it"
                )
        return list(node.inputs)

    def _infer(self, node: Node, prepare) -> tuple[Kernel, list[Spec]]:
        """`prepare()` -> (kernel, output specs), checked against the node's declarations."""
        try:
            kernel, out_specs = prepare()
            out_specs = list(out_specs)
        except Exception as exc:
            raise_node_failure(node, exc, "failed to prepare")
        if len(out_specs) < len(node.outputs):
            raise ModelError(
                f"node {node.name!r} ({node.op_type}): has {len(node.outputs)} outputs, "
                f"the kernel produces {len(out_specs)}"
            )
        for value, spec in zip(node.outputs, out_specs, strict=False):
            tensor = isinstance(spec, TensorSpec)
            if tensor and (any(d < 0 for d in spec.shape) or spec.nbytes > MAX_TENSOR_BYTES):
                raise ModelError(f"node {node.name!r}: output shape {spec.shape} is invalid or too large")
            if value is not None and value.kind != ValueKind.TENSOR and value.kind != _kind(spec):
                raise ModelError(f"node {node.name!r} ({node.op_type}): output {value.name!r} is declared "
                                 f"a {value.kind} but computes a {_kind(spec)}")
            if value is not None and isinstance(spec, MapSequenceSpec) and value.kind == ValueKind.TENSOR:
                raise ModelError(f"node {node.name!r} ({node.op_type}): output {value.name!r} computes a sequence "
                                 f"of maps but is declared a {value.kind}: maps must be declared sequence_map "
                                 "(a signature output, never an operator's input)")
            if value is not None and value.dtype is not None and value.dtype != spec.dtype:
                raise ModelError(
                    f"node {node.name!r} ({node.op_type}): output {value.name!r} is declared "
                    f"{value.dtype} but computes {spec.dtype}"
                )
        return kernel, out_specs[: len(node.outputs)]

    def _fold(self, node: Node, kernel: Kernel, in_values: list, known: dict, out_specs: list, specs: dict) -> list:
        """Evaluate `node` at prepare time. Its outputs' size is checked against the budget
        before (estimated: see _result_bytes) and after (string and sequence contents)."""
        args = [None if v is None else known[v] if v in known else _placeholder(specs[v]) for v in in_values]
        estimate = _result_bytes([None if v is None else known.get(v) for v in in_values], out_specs)
        self._check_budget(estimate, f"output of {node.name!r}")
        try:
            outs = kernel.evaluate(args, out_specs)
        except Exception as exc:
            raise_node_failure(node, exc)
        for value in outs:
            if isinstance(value, np.ndarray):  # (a sequence's elements may be shared: not marked)
                value.flags.writeable = False
            if not isinstance(value, np.ndarray) or value.dtype.hasobject:  # strings by their characters
                self._check_budget(value_nbytes(value), f"output of {node.name!r}")
        return outs

    def _bind_outputs(self, node, out_specs, specs, arena_values, lives, step_index,  # noqa: ANN001
                      in_place: dict[int, np.ndarray]) -> list:
        outputs: list[Any] = []
        for i, spec in enumerate(out_specs):
            value = node.outputs[i]
            if value is not None and value.is_variable:
                raise ModelError(f"node {node.name!r} ({node.op_type}): writes variable {value.name!r}")
            if i in in_place:  # the variable's own storage: no arena bytes, no copy at the end
                specs[value] = spec
                outputs.append(in_place[i])
                continue
            if value is None:  # an omitted optional output still needs scratch space
                value = Value(f"{node.name}:unused{i}", spec.dtype, spec.shape)
            specs[value] = spec
            arena_values.append(value)
            lives.setdefault(value, [step_index, step_index])
            outputs.append(value)  # replaced by the arena view in _allocate
        return outputs

    def _remember_inputs(self, prepared: _Prepared, in_values: list, known: dict, feeds: dict) -> None:
        slot_list = prepared.steps[-1][1]
        for i, value in enumerate(in_values):
            if value is None:
                continue
            if value in feeds:
                prepared.input_slots.setdefault(feeds[value], []).append((slot_list, i))
            elif value in known:
                slot_list[i] = known[value]
            elif value in self.variables:
                slot_list[i] = self.variables[value]
            else:
                slot_list[i] = value  # an arena tensor: replaced in _allocate

    def _allocate(
        self, prepared: _Prepared, arena_values: list, lives: dict, specs: dict
    ) -> dict[Value, np.ndarray]:
        """Place arena tensors, bind their views into the steps; returns the views."""
        for value in (*self.signature.outputs.values(), *self.signature.updates.values()):
            value = prepared.views_of.get(value, (value,))[0]
            if value in lives:
                lives[value][1] = _END
        owned = [v for v in arena_values if specs[v].dtype.hasobject]  # strings: arrays of their own
        arena_values = [v for v in arena_values if not specs[v].dtype.hasobject]
        layout = plan_arena(
            [TensorLife(specs[v].nbytes, *lives[v]) for v in arena_values], ARENA_ALIGNMENT
        )
        strings = sum(specs[v].size * STRING_ELEMENT_BYTES for v in owned)  # their str objects: estimated
        self._check_arena(prepared.shapes, layout.size, strings, prepared.folded_bytes)  # before it is allocated
        try:
            arena = np.empty(layout.size + ARENA_ALIGNMENT, np.uint8)
        except MemoryError:
            raise MemoryBudgetError(f"signature {self.name!r}: cannot allocate a {layout.size}-byte arena") from None
        base = -arena.ctypes.data % ARENA_ALIGNMENT
        views: dict[Value, np.ndarray] = {}
        for value, offset in zip(arena_values, layout.offsets, strict=True):
            spec = specs[value]
            start = base + offset
            views[value] = arena[start : start + spec.nbytes].view(spec.dtype).reshape(spec.shape)
        for value in owned:  # object arrays (str elements) cannot live in raw bytes
            views[value] = np.empty(specs[value].shape, specs[value].dtype)
        for value, (owner, shape, offset) in prepared.views_of.items():  # bytes of another value's
            whole, nbytes = views[owner], specs[value].nbytes
            if offset == 0 and nbytes == whole.nbytes:  # a reshape: all of them
                views[value] = whole.reshape(shape)
            else:  # a Concat's input: its part
                part = whole.reshape(-1).view(np.uint8)[offset : offset + nbytes]
                views[value] = part.view(specs[value].dtype).reshape(shape)
        for _, ins, outs, _node in prepared.steps:
            for slots in (ins, outs):
                for i, item in enumerate(slots):
                    if isinstance(item, Value):
                        slots[i] = views[item]
        prepared.arena_bytes = layout.size
        prepared.arena, prepared.arena_base = arena, base
        return views

    def _bind_results(self, prepared: _Prepared, views: dict, known: dict, feeds: dict, specs: dict) -> None:
        """Where each output and each variable update reads from after the steps ran."""
        def source(value: Value, what: str) -> Any:
            if value in feeds:
                return feeds[value]
            if value in views:
                return views[value]
            if value in known or (value.data is not None and not value.is_variable):
                return known.get(value, value.data)
            if value in self.variables:
                return self.variables[value]
            if value in prepared.tail_values:
                return value  # made by the eager tail, at each run
            raise ModelError(f"signature {self.name!r}: {what} is never produced")

        for name, value in self.signature.outputs.items():
            prepared.output_sources[name] = source(value, f"output {name!r}")
            if value in specs:
                prepared.output_specs[name] = specs[value]
        for variable, value in self.signature.updates.items():
            storage = self.variables[variable]
            spec = specs.get(value) or TensorSpec(value.dtype, tuple(value.shape or ()))
            if not isinstance(spec, TensorSpec) or value.kind != ValueKind.TENSOR:
                what = describe(spec) if not isinstance(spec, TensorSpec) else f"declared a {value.kind}"
                raise ModelError(f"signature {self.name!r}: variable {variable.name!r} is updated from "
                                 f"{value.name!r}, which is {what}: a variable holds a tensor")
            if (spec.dtype, spec.shape) != (storage.dtype, storage.shape):
                raise ModelError(
                    f"signature {self.name!r}: variable {variable.name!r} is "
                    f"{storage.dtype}{list(storage.shape)} but its update is {spec.dtype}{list(spec.shape)}"
                )
            if value not in prepared.in_place:
                prepared.updates.append((source(value, f"update of {variable.name!r}"), storage))

    def _check_budget(self, nbytes: int, what: str) -> None:
        if nbytes > self.memory_budget:
            raise MemoryBudgetError(
                f"signature {self.name!r}: {what} needs {nbytes} bytes, "
                f"over the memory budget of {self.memory_budget}"
            )

    def _check_arena(self, shapes: dict[str, tuple[int, ...]], arena: int, strings: int, folded: int = 0) -> None:
        """MemoryBudgetError when an arena of `arena` bytes for input `shapes`, `strings` bytes of
        string tensors, `folded` bytes of constant-folded tensors and the plan's weights would pass
        the memory budget: names each part, the budget and what helps."""
        need = arena + strings + folded + self.weight_bytes
        if need <= self.memory_budget:
            return
        parts = (f"arena {_size(arena)}" + (f" + string tensors {_size(strings)}" if strings else "")
                 + (f" + folded constants {_size(folded)}" if folded else ""))
        owner = f", {self.budget_owner}" if self.budget_owner else ""
        raise MemoryBudgetError(
            f"signature {self.name!r} at input shapes {shapes}: {parts} + weights {_size(self.weight_bytes)} "
            f"= {need} bytes, over the memory budget of {self.memory_budget} ({_size(self.memory_budget)}{owner}); "
            "use a smaller batch, a device profile with more memory or an int8 model"
        )


def run_steps(steps: list[Step]) -> None:
    """Run prepared steps in order on the host. A kernel's EdgerunError propagates as it is,
    anything else becomes a ModelError naming the node (runtime.errors.raise_node_failure)."""
    node = None
    try:
        for run, ins, outs, node in steps:  # noqa: B007 - node names a failure
            run(ins, outs)
    except Exception as exc:
        raise_node_failure(node, exc)


def _bodies(node: Node) -> list[Graph]:
    """The graphs held in `node`'s attributes (If branches, Loop and Scan bodies)."""
    return [g for v in node.attrs.values() for g in (v if isinstance(v, list) else [v]) if isinstance(g, Graph)]


def _placeholder(spec: TensorSpec) -> np.ndarray:
    """A read-only array of `spec`'s shape and dtype backed by one element: what a
    shape-only kernel receives at prepare time for an input not known yet."""
    base = np.zeros(1, spec.dtype)
    view = np.lib.stride_tricks.as_strided(base, spec.shape, (0,) * len(spec.shape))
    view.flags.writeable = False
    return view


def _prepare_fresh(cls: type[Kernel], node: Node, context: EagerContext, specs: list, values: list):
    """A new kernel for `node` and its output specs for `specs`/`values`."""
    kernel = cls.for_node(node, context)
    kernel.check_kinds(specs)
    return kernel, kernel.prepare(specs, values)


def _needed_nodes(graph: Graph, signature: Signature) -> list[Node]:
    """The nodes the signature's outputs and updates depend on, in graph order. Fed inputs
    and variables are leaves: nodes read variables as they were when the run started."""
    leaves = {*signature.inputs.values(), *(v for v in graph.values() if v.is_variable)}
    return reachable_nodes(graph, (*signature.outputs.values(), *signature.updates.values()), leaves)


def _declared(name: str, value: Value, signature: str) -> TensorInfo:
    if value.kind != ValueKind.TENSOR:  # sequences and optionals: the element dtype is enough
        if value.dtype is None:
            raise ModelError(f"signature {signature!r}: input {name!r} needs a declared element dtype")
        return TensorInfo(name, value.dtype, tuple(value.shape or ()), kind=value.kind)
    if value.dtype is None or value.shape is None:
        raise ModelError(f"signature {signature!r}: input {name!r} needs a declared dtype and shape")
    return TensorInfo(name, value.dtype, value.shape, has_default=value.data is not None)


def _probe_shape(info: TensorInfo, fill: int) -> tuple[int, ...]:
    """The shape an input is first prepared at: dynamic dims at `fill`; () for a sequence or
    optional (its contents never shape a plan)."""
    return tuple(fill if d < 0 else d for d in info.shape) if info.kind == ValueKind.TENSOR else ()


def _declared_spec(value: Value) -> Spec:
    """The spec of a sequence or optional signature input, from its declaration."""
    if value.kind == ValueKind.SEQUENCE:
        return SequenceSpec(value.dtype)
    return OptionalSpec(value.dtype, of_sequence=value.kind == ValueKind.OPTIONAL_SEQUENCE)


def _kind(spec: Spec) -> ValueKind:
    if isinstance(spec, TensorSpec):
        return ValueKind.TENSOR
    if isinstance(spec, SequenceSpec):  # one with a key type holds maps (ZipMap's)
        return ValueKind.SEQUENCE_MAP if isinstance(spec, MapSequenceSpec) else ValueKind.SEQUENCE
    return ValueKind.OPTIONAL_SEQUENCE if spec.of_sequence else ValueKind.OPTIONAL_TENSOR


def _reads_unknown_sequence(in_values: list, in_specs: list, known: dict) -> bool:
    """Whether a node reads a sequence or optional whose value is not known at prepare time."""
    return any(v is not None and not isinstance(spec, TensorSpec) and v not in known
               for v, spec in zip(in_values, in_specs, strict=True))


def _tensors(specs: list) -> list[TensorSpec | None]:
    """`specs` with sequences and optionals as None (the work estimate counts tensors)."""
    return [spec if isinstance(spec, TensorSpec) else None for spec in specs]


def _result_bytes(args: list, out_specs: list[Spec]) -> int:
    """An estimate, before evaluating, of the bytes a node's outputs take given its inputs
    `args`: tensors by their specs (a string by the longest its string inputs allow, as a
    concatenation makes), sequences and optionals as much as all the inputs (what a node that
    copies its inputs into a sequence makes; value-dependent ones check themselves)."""
    strings = any(isinstance(s, TensorSpec) and s.dtype.hasobject for s in out_specs)
    longest = longest_string(args) if strings else 0
    total = sum(spec_nbytes(spec, longest) for spec in out_specs)
    if not all(isinstance(spec, TensorSpec) for spec in out_specs):
        total += sum(value_nbytes(a) for a in args)
    return total


def _copy_output(data: Any) -> Any:
    """A fresh copy of an output (copy_value); maps in a sequence as new dicts. ModelError for
    a value that is not an array, a sequence or None (a kernel's fault, never a TypeError)."""
    if isinstance(data, np.ndarray):  # the common case first: the invoke loop's hot path
        return data.copy()
    if isinstance(data, list | tuple):
        return [dict(m) if isinstance(m, dict) else _copy_output(m) if isinstance(m, np.ndarray) else _bad_output(m)
                for m in data]
    if data is not None and not isinstance(data, np.ndarray):
        _bad_output(data)
    return copy_value(data)


def _bad_output(data: Any) -> NoReturn:
    raise ModelError(f"an output holds a {type(data).__name__}, not a tensor, a sequence or a map")


def _as_value(data: Any, name: str, kind: ValueKind, dtype: np.dtype, shape: tuple[int, ...] | None) -> Any:
    """A sequence or optional input checked against its declaration (element `dtype`, and
    element `shape` unless None: its rank and static dims). A sequence is a list or tuple of
    arrays (Python lists of numbers are converted), an optional None or what it holds.
    InputError naming the input (and element) otherwise."""
    if kind in (ValueKind.OPTIONAL_TENSOR, ValueKind.OPTIONAL_SEQUENCE):
        if data is None:
            return None
        if kind == ValueKind.OPTIONAL_TENSOR:
            return _element(data, f"input {name!r}", name, dtype, shape)
    if not isinstance(data, list | tuple):
        what = "an optional sequence" if kind == ValueKind.OPTIONAL_SEQUENCE else "a sequence"
        raise InputError(f"input {name!r}: expected {what} (a list of {dtype} arrays), got {type(data).__name__}")
    return [_element(item, f"input {name!r} element {i}", f"{name}[{i}]", dtype, shape) for i, item in enumerate(data)]


def _element(data: Any, where: str, name: str, dtype: np.dtype, shape: tuple[int, ...] | None) -> np.ndarray:
    if data is None or isinstance(data, list | tuple) and any(isinstance(x, np.ndarray) for x in data):
        raise InputError(f"{where}: expected a {dtype} array, got {type(data).__name__}")
    array = _as_array(data, name, dtype)
    if array.dtype != dtype:
        raise InputError(f"{where}: expected dtype {dtype}, got {array.dtype}")
    if shape is not None and (len(shape) != len(array.shape)
                              or any(0 <= d != n for d, n in zip(shape, array.shape, strict=True))):
        pretty = "(" + ", ".join("?" if d < 0 else str(d) for d in shape) + ")"
        raise InputError(f"{where}: expected shape {pretty}, got {array.shape}")
    return array


def _as_array(data: Any, name: str, dtype: np.dtype) -> np.ndarray:
    """numpy arrays pass as they are (their dtype must match); Python numbers and
    lists are converted to the expected dtype. A string input takes str elements (an
    object or str array, or lists; UTF-8 bytes are decoded), InputError for others."""
    if isinstance(data, np.ndarray) and data.dtype == dtype and not data.dtype.hasobject:
        return data  # the common case first: the invoke loop's hot path
    if dtypes.is_string(dtype):
        try:
            return dtypes.to_strings(data)
        except (TypeError, ValueError) as exc:
            raise InputError(f"input {name!r}: {exc}") from None
    if isinstance(data, np.ndarray):
        return data
    try:
        converted = np.asarray(data)
        if converted.dtype.kind in "biuf" and np.can_cast(converted, dtype, casting="same_kind"):
            return converted.astype(dtype, copy=False)
        return converted
    except (ValueError, TypeError) as exc:
        raise InputError(f"input {name!r}: cannot be read as an array: {exc}") from None


def _size(nbytes: int) -> str:
    """A byte count for a budget error: exact below 1 KiB, else in KiB or MiB to a tenth."""
    if nbytes < 1 << 10:
        return f"{nbytes} bytes"
    return f"{nbytes / 1024:.1f} KiB" if nbytes < 1 << 20 else f"{nbytes / (1 << 20):.1f} MiB"


def _physical_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 1 << 34

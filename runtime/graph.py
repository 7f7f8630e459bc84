"""The in-memory IR: Graph, Node, Value, plus a small builder.

A `Graph` is a list of `Node`s in topological order over `Value`s (tensors, and
ONNX sequences, optionals and sequences of maps: see `ValueKind`). Values are identified by object;
names are unique within one graph. A graph may carry named signatures (entry
points) and metadata; nested graphs (control flow bodies) appear as node attributes.

    g = GraphBuilder("mlp")
    x = g.input("x", np.float32, (-1, 64))
    h = g.op("Gemm", [x, g.constant("w1", w1), g.constant("b1", b1)], transB=1)
    y = g.op("Relu", [h])
    g.output(y, "y")
    graph = g.build()
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np

from edgerun.runtime import dtypes
from edgerun.runtime.errors import ModelError
from edgerun.runtime.format import MAP_KEY_DTYPE_CODES

Shape = tuple[int, ...]


@dataclass
class Quantization:
    """real = scale * (q - zero_point); one entry per tensor, or per slice along `axis`."""

    scale: np.ndarray
    zero_point: np.ndarray
    axis: int = 0

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Quantization)
            and self.axis == other.axis
            and np.array_equal(self.scale, other.scale)
            and np.array_equal(self.zero_point, other.zero_point)
        )


class ValueKind(StrEnum):
    """What a value holds. At run time a tensor is a numpy array, a sequence a Python list
    of arrays of one dtype (their shapes may differ), an optional None (empty) or the
    tensor / sequence it holds, a sequence of maps a Python list of dicts (keys Python int
    or str, as `Value.key_dtype` says; values Python numbers of the value's `dtype`, float for
    ZipMap's). None of them but tensors lives in a plan's arena."""

    TENSOR = "tensor"
    SEQUENCE = "sequence"
    OPTIONAL_TENSOR = "optional_tensor"
    OPTIONAL_SEQUENCE = "optional_sequence"
    SEQUENCE_MAP = "sequence_map"


# The key types a map may have: int64 and string (ONNX's map(int64|string, V), ZipMap's output).
MAP_KEY_DTYPES = tuple(dtypes.to_numpy(code) for code in MAP_KEY_DTYPE_CODES)


@dataclass(eq=False)
class Value:
    """A value of the graph: an input, a constant, a variable or an op result.

    `shape` uses -1 for dynamic dimensions; None means unknown (inferred later),
    and so does a `dtype` of None.
    `data` holds the contents of constants and the initial value of variables.
    `kind` says whether it is a tensor, a sequence, an optional or a sequence of maps
    (ValueKind); for sequences and optionals, `dtype` and `shape` describe the element
    tensors; for a sequence of maps `dtype` is the map values' type and `key_dtype` its keys'
    (one of MAP_KEY_DTYPES; None for every other kind). An op result whose kind no
    declaration states is left TENSOR: the kernel that makes it decides at run time.
    Constants and variables are tensors.
    """

    name: str
    dtype: np.dtype | None
    shape: Shape | None = None
    data: np.ndarray | None = None
    is_variable: bool = False
    quantization: Quantization | None = None
    kind: ValueKind = ValueKind.TENSOR
    key_dtype: np.dtype | None = None

    def __post_init__(self) -> None:
        self.kind = ValueKind(self.kind)
        if self.dtype is not None:
            self.dtype = np.dtype(self.dtype)
        if self.key_dtype is not None:
            self.key_dtype = np.dtype(self.key_dtype)
        if self.shape is not None:
            self.shape = tuple(int(d) for d in self.shape)

    @property
    def is_constant(self) -> bool:
        return self.data is not None and not self.is_variable

    def __repr__(self) -> str:
        kind = "" if self.kind is ValueKind.TENSOR else f", {self.kind}"
        if self.key_dtype is not None:
            kind += f", {'string' if dtypes.is_string(self.key_dtype) else self.key_dtype} keys"
        return f"Value({self.name!r}, {self.dtype}, {self.shape}{kind})"


@dataclass(eq=False)
class Node:
    """One operator application. `None` in inputs/outputs marks an omitted optional slot."""

    op_type: str
    inputs: list[Value | None]
    outputs: list[Value | None]
    attrs: dict[str, Any] = field(default_factory=dict)
    name: str = ""
    domain: str = ""
    version: int = 1

    def __repr__(self) -> str:
        return f"Node({self.op_type!r}, name={self.name!r}, v{self.version})"


@dataclass
class Signature:
    """A named entry point: signature-level names mapped to values of the graph.

    Nodes read a variable's value at the start of a run; `updates` maps
    variables to the values stored into them when a run of the signature ends.
    An input whose Value has `data` may be omitted: the data is its default.
    """

    inputs: dict[str, Value]
    outputs: dict[str, Value]
    updates: dict[Value, Value] = field(default_factory=dict)


@dataclass(eq=False)
class Graph:
    """A computation over values. `signatures` default to one, `serving_default`."""

    name: str
    nodes: list[Node]
    inputs: list[Value]
    outputs: list[Value]
    signatures: dict[str, Signature] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.signatures:
            self.signatures = {"serving_default": self.default_signature()}

    def default_signature(self) -> Signature:
        return Signature(
            inputs={v.name: v for v in self.inputs}, outputs={v.name: v for v in self.outputs}
        )

    def values(self) -> list[Value]:
        """Every value the graph uses, each once, in first-seen order."""
        seen: dict[int, Value] = {}

        def add(v: Value | None) -> None:
            if v is not None and not isinstance(v, Value):
                raise ModelError(f"graph {self.name!r}: {type(v).__name__} used where a Value belongs")
            if v is not None and id(v) not in seen:
                seen[id(v)] = v

        for v in self.inputs:
            add(v)
        for node in self.nodes:
            for v in (*node.inputs, *node.outputs):
                add(v)
        for v in self.outputs:
            add(v)
        for sig in self.signatures.values():
            for v in (*sig.inputs.values(), *sig.outputs.values(), *sig.updates, *sig.updates.values()):
                add(v)
        return list(seen.values())

    def subgraphs(self) -> list[Graph]:
        """Graphs nested in node attributes, depth first, each Graph object once however many
        nodes hold it (a loaded model shares one Graph per subgraph index), not including self
        (see graphs_within)."""
        return [g for g in graphs_within(self.nodes) if g is not self]

    def op_histogram(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for node in self.nodes:
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def graphs_within(nodes: Iterable[Node]) -> list[Graph]:
    """Every graph held in `nodes`' attributes, and every graph nested in those, depth first
    in node and attribute order, each Graph object once (the first time it is met): linear in
    the nodes of the distinct graphs, however many references share one."""
    seen: set[int] = set()
    order: list[Graph] = []
    stack = _held(nodes)[::-1]  # popped in attribute order
    while stack:
        graph = stack.pop()
        if id(graph) in seen:  # met before, with everything below it
            continue
        seen.add(id(graph))
        order.append(graph)
        stack.extend(reversed(_held(graph.nodes)))
    return order


def _held(nodes: Iterable[Node]) -> list[Graph]:
    """The graphs held directly in `nodes`' attributes, in node and attribute order."""
    return [item for node in nodes for value in node.attrs.values()
            for item in (value if isinstance(value, list) else [value]) if isinstance(item, Graph)]


def reachable_nodes(
    graph: Graph,
    roots: Iterable[Value],
    leaves: Collection[Value] = (),
    reads: Callable[[Node], Iterable[Value | None]] | None = None,
) -> list[Node]:
    """The nodes of `graph` that computing `roots` needs, in graph order.

    Walks back from each root to the node that produces it, then through that node's
    inputs (or through `reads(node)`: say, its inputs plus what its nested graphs use),
    never past a value in `leaves` (values supplied from outside the walk: fed inputs,
    variables read as they were when a run started). A value no node produces ends the
    walk there.
    """
    producer = {v: n for n in graph.nodes for v in n.outputs if v is not None}
    reads = reads or (lambda node: node.inputs)
    stop = set(leaves)
    stack = [producer[v] for v in roots if v not in stop and v in producer]
    needed: set[int] = set()
    while stack:
        node = stack.pop()
        if id(node) in needed:
            continue
        needed.add(id(node))
        stack.extend(producer[v] for v in reads(node) if v is not None and v not in stop and v in producer)
    return [node for node in graph.nodes if id(node) in needed]


class GraphBuilder:
    """Builds a `Graph` op by op, generating unique names where none are given."""

    def __init__(self, name: str = "main", opset: int = 21, domain: str = "") -> None:
        self.name = name
        self.opset = opset
        self.domain = domain
        self._nodes: list[Node] = []
        self._inputs: list[Value] = []
        self._outputs: list[Value] = []
        self._names: set[str] = set()
        self._suffixes: dict[str, int] = {}  # base name -> the last suffix _unique gave it
        self._signatures: dict[str, Signature] = {}
        self.metadata: dict[str, str] = {}

    def _unique(self, base: str) -> str:
        """`base`, or base_1, base_2, ...: the first free one after the last suffix given to
        `base` (so n values of one name cost n steps in all, not n squared)."""
        i = self._suffixes.get(base, 0)
        name = f"{base}_{i}" if i else base
        while name in self._names:
            i += 1
            name = f"{base}_{i}"
        self._suffixes[base] = i
        self._names.add(name)
        return name

    def _claim(self, name: str) -> str:
        if name in self._names:
            raise ModelError(f"value name {name!r} is already used in graph {self.name!r}")
        self._names.add(name)
        return name

    def input(self, name: str, dtype: Any, shape: Sequence[int], kind: ValueKind | str = ValueKind.TENSOR) -> Value:
        """Declare a graph input; -1 in `shape` marks a dynamic dimension. For a sequence or
        optional `kind`, `dtype` and `shape` are those of its element tensors."""
        value = Value(self._claim(name), np.dtype(dtype), tuple(shape), kind=ValueKind(kind))
        self._inputs.append(value)
        return value

    def constant(self, name: str, data: Any, dtype: Any = None) -> Value:
        """A constant tensor (a weight), renamed name_1, name_2, ... if the name is taken.
        `data` is kept as given, not copied."""
        array = np.asarray(data, dtype=dtype)
        _check_dtype(array.dtype, name)
        return Value(self._unique(name), array.dtype, array.shape, data=array)

    def variable(self, name: str, initial: Any) -> Value:
        """A persistent tensor whose value survives across runs (trainable state)."""
        array = np.asarray(initial)
        _check_dtype(array.dtype, name)
        return Value(self._claim(name), array.dtype, array.shape, data=array, is_variable=True)

    def op(
        self,
        op_type: str,
        inputs: Iterable[Value | None],
        *,
        num_outputs: int = 1,
        name: str | None = None,
        output_names: Sequence[str] | None = None,
        version: int | None = None,
        domain: str | None = None,
        **attrs: Any,
    ) -> Any:
        """Append a node; returns its output Value (or a list of them if num_outputs > 1).

        Output dtypes and shapes are left unknown: the interpreter infers them. `output_names`
        must be free (ModelError otherwise); generated ones ("<node>:<i>") are made unique
        like node names, since an imported model may already use such a name.
        """
        node_name = self._unique(name or op_type.lower())
        if output_names:
            names = [self._claim(n) for n in output_names]
        else:
            names = [self._unique(f"{node_name}:{i}") for i in range(num_outputs)]
        outputs = [Value(n, None, None) for n in names]
        node = Node(op_type, list(inputs), list(outputs), dict(attrs), node_name,
                    self.domain if domain is None else domain,
                    self.opset if version is None else version)
        self._nodes.append(node)
        return outputs[0] if len(outputs) == 1 else outputs

    def output(self, value: Value, name: str | None = None) -> Value:
        """Mark `value` as a graph output, renaming it to `name` if given."""
        if name is not None and name != value.name:
            self._names.discard(value.name)
            value.name = self._claim(name)
        self._outputs.append(value)
        return value

    def signature(
        self,
        name: str,
        inputs: dict[str, Value],
        outputs: dict[str, Value],
        updates: dict[Value, Value] | None = None,
    ) -> None:
        """Add a signature; `updates` maps variables to the values they take after a run."""
        self._signatures[name] = Signature(dict(inputs), dict(outputs), dict(updates or {}))

    def build(self) -> Graph:
        return Graph(self.name, list(self._nodes), list(self._inputs), list(self._outputs),
                     dict(self._signatures), dict(self.metadata))


def _check_dtype(dtype: np.dtype, name: str) -> None:
    if not dtypes.is_supported(dtype):
        raise ModelError(f"tensor {name!r}: dtype {dtype} cannot be stored in .erm")

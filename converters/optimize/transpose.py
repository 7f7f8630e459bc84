"""Transpose sinking: layout Transposes move through layout-agnostic ops until inverse pairs
meet and cancel. A TFLite (NHWC) graph wraps every NCHW kernel as Transpose(0,3,1,2) -> Conv
-> Transpose(0,2,3,1) with NHWC Add / Relu / Concat / Pad / Mean ... between; afterwards it
runs in NCHW with (ideally) one Transpose per graph input and output. tf2onnx models alike.

Strategy (as onnxruntime's transpose optimizer: sink toward the outputs, cancel pairs), repeated
over every Transpose T (perm p, X -> Y) until nothing changes:
  merge    T reads another Transpose: it reads that one's input with the composed perm (the
           identity: T goes; an Identity stays when both ends are pinned). A second
           Transpose(p) of X: T's readers read it instead.
  pull up  T alone reads an op whose operands exist in T's layout without new nodes (made by
           a Transpose that T cancels, or read by another Transpose(p)): the op runs on those
           and writes Y; T goes.
  sink     every reader of Y is a Transpose (merged) or a layout-agnostic op whose other
           operands are constants (permuted, numpy broadcasting: a lower rank constant gets
           leading 1s first), 1-element constants or exist in X's layout (as above): each op
           reads X, its axes remapped, and a Transpose after it restores its outputs. Sinking
           goes on through the new Transposes; the state along the way with the fewest
           Transposes (the latest of equals) is kept, so the count never grows.
Ops: unary elementwise (Relu, Clip with constant bounds, Sigmoid, Cast, per-tensor
Quantize/DequantizeLinear, ...), broadcasting elementwise (Add, Mul, Where, PRelu, ...), Concat,
Split, Pad, Reduce* (keepdims 0 or 1), Softmax / LogSoftmax / Hardmax (opset >= 13), Slice.
Reshape is not layout-agnostic and stops a Transpose. Pinned values (graph and signature
inputs, outputs, updated variables) keep their object and name; values read inside nested
graphs are never rewired.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgerun.converters.optimize import rewrite
from edgerun.converters.optimize.manager import Pass
from edgerun.runtime.graph import Graph, Node, Value

Perm = tuple[int, ...]

UNARY = frozenset({
    "Abs", "Acos", "Acosh", "Asin", "Asinh", "Atan", "Atanh", "BitwiseNot", "Cast", "Ceil", "Celu", "Cos",
    "Cosh", "Elu", "Erf", "Exp", "Floor", "Gelu", "HardSigmoid", "HardSwish", "Identity", "IsInf", "IsNaN",
    "LeakyRelu", "Log", "Mish", "Neg", "Not", "Reciprocal", "Relu", "Round", "Selu", "Shrink", "Sigmoid",
    "Sign", "Sin", "Sinh", "Softplus", "Softsign", "Sqrt", "Tan", "Tanh", "ThresholdedRelu",
    "Clip", "QuantizeLinear", "DequantizeLinear",  # extra inputs: constant scalars only
})
# broadcasting elementwise ops -> first opset with numpy-style broadcasting
ELEMENTWISE = {
    **dict.fromkeys(("Add", "Sub", "Mul", "Div", "Pow", "Equal", "Less", "Greater", "And", "Or", "Xor",
                     "PRelu", "LessOrEqual", "GreaterOrEqual", "Mod", "BitShift", "BitwiseAnd", "BitwiseOr",
                     "BitwiseXor", "Where"), 7),
    **dict.fromkeys(("Max", "Min", "Sum", "Mean"), 8),
}
# reductions -> first opset taking `axes` as an input instead of an attribute
REDUCE = {"ReduceSum": 13, **dict.fromkeys(("ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1",
                                            "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"), 18)}
SOFTMAX = frozenset({"Softmax", "LogSoftmax", "Hardmax"})  # opset >= 13: one `axis`
MAX_SESSION_STEPS = 64


class SinkTransposes(Pass):
    name = "sink_transposes"

    def run(self, graph: Graph) -> dict[str, int]:
        edit = _Editor(graph)
        start, moves = edit.count(), 0
        budget = 10 * len(graph.nodes) + 100
        progress = True
        while progress and budget > 0:
            progress = False
            for t in [n for n in graph.nodes if _perm(n) is not None]:
                if t in edit.alive and _perm(t) is not None and (edit.merge(t) or edit.pull_up(t) or edit.sink(t)):
                    progress, moves, budget = True, moves + 1, budget - 1
        removed = start - edit.count()
        changes = {"Transpose removed": removed, "Transpose moved": moves if removed == 0 else 0}
        return {what: n for what, n in changes.items() if n > 0}


# --- permutations -----------------------------------------------------------------------------

def _perm(node: Node) -> Perm | None:
    """The perm of a plain ONNX Transpose node (its default: reversed axes, when the rank is
    known); None for any other node or a malformed perm."""
    if node.op_type != "Transpose" or node.domain != "" or len(node.inputs) != 1 or len(node.outputs) != 1:
        return None
    x = node.inputs[0]
    if x is None or node.outputs[0] is None:
        return None
    raw = node.attrs.get("perm")
    if raw is None:
        return None if x.shape is None else tuple(range(len(x.shape)))[::-1]
    perm = tuple(int(a) for a in raw)
    return perm if sorted(perm) == list(range(len(perm))) else None


def _inverse(perm: Perm) -> Perm:
    return tuple(int(a) for a in np.argsort(perm))


def _then(first: Perm, second: Perm) -> Perm:
    """The perm of Transpose(first) followed by Transpose(second)."""
    return tuple(first[a] for a in second)


def _is_identity(perm: Perm) -> bool:
    return perm == tuple(range(len(perm)))


# --- how an op works on transposed operands ------------------------------------------------------

@dataclass
class _Plan:
    """`node` rewritten to read its layout operands transposed by q: its new attributes, its
    inputs (constants already permuted), the input slots that must be given transposed by q,
    and per output the perm e with new output = Transpose(old output, e)."""

    attrs: dict[str, Any]
    inputs: list[Value | None]
    data: list[int]
    outputs: list[Perm]


def _plan(node: Node, q: Perm, fed: set[Value], names: rewrite.Names) -> _Plan | None:
    """How `node` runs on operands transposed by `q` (None: it cannot, or not soundly)."""
    if node.domain != "" or rewrite.nested_graphs(node) or not node.inputs or node.inputs[0] is None:
        return None
    op, rank, where = node.op_type, len(q), _inverse(q)
    plan = _Plan(dict(node.attrs), list(node.inputs), [0], [q] * len(node.outputs))
    if op in UNARY:
        return plan if _scalar_operands(node, fed) else None
    if op in ELEMENTWISE:
        return _elementwise(node, plan, q, fed, names) if node.version >= ELEMENTWISE[op] else None
    if op == "Concat":
        return _concat(node, plan, q, fed, names)
    if op in ("Split", "Softmax", "LogSoftmax", "Hardmax"):
        if op in SOFTMAX and node.version < 13:
            return None
        axis = _axis(node.attrs.get("axis", 0 if op == "Split" else -1), rank)
        return None if axis is None else _with(plan, axis=where[axis])
    if op == "Pad":
        return _pad(node, plan, q, fed, names)
    if op in REDUCE:
        return _reduce(node, plan, q, fed, names)
    if op == "Slice":
        return _slice(node, plan, q, fed, names)
    return None


def _with(plan: _Plan, **attrs: Any) -> _Plan:
    plan.attrs.update(attrs)
    return plan


def _axis(axis: Any, rank: int) -> int | None:
    axis = int(axis)
    return axis + rank if -rank <= axis < 0 else axis if 0 <= axis < rank else None


def _axes(axes: Any, rank: int) -> list[int] | None:
    found = [_axis(a, rank) for a in np.asarray(axes).reshape(-1)]
    return None if None in found or len(set(found)) != len(found) else found


def _scalar_operands(node: Node, fed: set[Value]) -> bool:
    """A unary op's extra inputs (Clip bounds, quantization scale and zero point) are absent
    or 1-element constants; the ops without extra inputs have exactly one."""
    if node.op_type not in ("Clip", "QuantizeLinear", "DequantizeLinear"):
        return len(node.inputs) == 1
    if node.op_type != "Clip" and (len(node.inputs) < 2 or node.inputs[1] is None):
        return False
    for v in node.inputs[1:]:
        data = rewrite.constant_data(v, fed)
        if v is not None and (data is None or data.size != 1):
            return False
    return True


def _elementwise(node: Node, plan: _Plan, q: Perm, fed: set[Value], names: rewrite.Names) -> _Plan | None:
    plan.data = []
    for i, v in enumerate(node.inputs):
        data = rewrite.constant_data(v, fed)
        if v is None or (data is not None and data.ndim > len(q)):
            return None
        if data is None:
            plan.data.append(i)
        elif data.size != 1:  # a 1-element constant broadcasts the same in any layout
            full = data.reshape((1,) * (len(q) - data.ndim) + data.shape)
            plan.inputs[i] = names.constant(f"{v.name}_transposed", full.transpose(q))
    return plan


def _concat(node: Node, plan: _Plan, q: Perm, fed: set[Value], names: rewrite.Names) -> _Plan | None:
    raw = node.attrs.get("axis", 1 if node.version < 4 else None)
    axis = None if raw is None else _axis(raw, len(q))
    if axis is None:
        return None
    plan.data = []
    for i, v in enumerate(node.inputs):
        data = rewrite.constant_data(v, fed)
        if v is None or (data is not None and data.ndim != len(q)):
            return None
        if data is None:
            plan.data.append(i)
        else:
            plan.inputs[i] = names.constant(f"{v.name}_transposed", data.transpose(q))
    return _with(plan, axis=_inverse(q)[axis])


def _pad(node: Node, plan: _Plan, q: Perm, fed: set[Value], names: rewrite.Names) -> _Plan | None:
    rank, where = len(q), _inverse(q)
    if node.version < 11:
        key = "pads" if node.version >= 2 else "paddings"
        pads = node.attrs.get(key)
        if pads is None or len(pads) != 2 * rank:
            return None
        return _with(plan, **{key: [int(pads[q[i] + k * rank]) for k in (0, 1) for i in range(rank)]})
    pads = rewrite.constant_data(node.inputs[1] if len(node.inputs) > 1 else None, fed)
    axes_value = node.inputs[3] if len(node.inputs) > 3 else None
    if pads is None:
        return None
    if axes_value is not None:  # pads follow the listed axes: rename the axes
        data = rewrite.constant_data(axes_value, fed)
        axes = None if data is None else _axes(data, rank)
        if axes is None:
            return None
        plan.inputs[3] = names.constant(f"{axes_value.name}_transposed",
                                        np.array([where[a] for a in axes], data.dtype))
        return plan
    pads = pads.reshape(-1)
    if pads.size != 2 * rank:
        return None
    plan.inputs[1] = names.constant(f"{node.inputs[1].name}_transposed",
                                    np.concatenate([pads[list(q)], pads[[rank + a for a in q]]]))
    return plan


def _reduce(node: Node, plan: _Plan, q: Perm, fed: set[Value], names: rewrite.Names) -> _Plan | None:
    rank, where = len(q), _inverse(q)
    keep = int(node.attrs.get("keepdims", 1))
    from_input = node.version >= REDUCE[node.op_type]
    axes_value = node.inputs[1] if from_input and len(node.inputs) > 1 else None
    raw = node.attrs.get("axes") if not from_input else rewrite.constant_data(axes_value, fed)
    if axes_value is not None and raw is None:
        return None  # axes computed at run time
    if raw is None or np.asarray(raw).size == 0:
        if from_input and int(node.attrs.get("noop_with_empty_axes", 0)):
            return plan  # reduces nothing: elementwise
        plan.outputs = [q if keep else ()]  # reduces every axis
        return plan
    axes = _axes(raw, rank)
    if axes is None:
        return None
    new_axes = sorted(where[a] for a in axes)
    if not keep:
        old_left = [a for a in range(rank) if a not in axes]
        plan.outputs = [tuple(old_left.index(q[j]) for j in range(rank) if j not in new_axes)]
    if not from_input:
        return _with(plan, axes=new_axes)
    plan.inputs[1] = names.constant(f"{axes_value.name}_transposed", np.array(new_axes, np.asarray(raw).dtype))
    return plan


def _slice(node: Node, plan: _Plan, q: Perm, fed: set[Value], names: rewrite.Names) -> _Plan | None:
    rank, where = len(q), _inverse(q)
    if node.version < 10:
        starts = node.attrs.get("starts")
        axes = _axes(node.attrs.get("axes", range(len(starts or ()))), rank)
        return None if starts is None or axes is None else _with(plan, axes=[where[a] for a in axes])
    if len(node.inputs) < 3 or node.inputs[1] is None:
        return None
    starts = node.inputs[1]
    axes_value = node.inputs[3] if len(node.inputs) > 3 else None
    if axes_value is None:  # default: the first len(starts) axes
        count = _length(starts, fed)
        if count is None or starts.dtype is None:
            return None
        raw, dtype, base = np.arange(count), starts.dtype, f"{node.name}_axes"
    else:
        raw = rewrite.constant_data(axes_value, fed)
        if raw is None:
            return None
        dtype, base = raw.dtype, f"{axes_value.name}_transposed"
    axes = _axes(raw, rank)
    if axes is None:
        return None
    plan.inputs += [None] * (4 - len(plan.inputs))
    plan.inputs[3] = names.constant(base, np.array([where[a] for a in axes], dtype))
    return plan


def _length(value: Value, fed: set[Value]) -> int | None:
    """The element count of a 1-D value, from its data or its declared shape."""
    data = rewrite.constant_data(value, fed)
    if data is not None:
        return data.size
    return value.shape[0] if value.shape is not None and len(value.shape) == 1 and value.shape[0] >= 0 else None


# --- editing the graph ------------------------------------------------------------------------

class _Editor:
    """The graph with producer / consumer maps and the Transpose count kept current through
    every edit, a journal of edits to roll back, and the three moves (merge, pull up, sink)."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.fed, self.keep = rewrite.feeds(graph), rewrite.pinned(graph)
        self.names = rewrite.Names(graph)
        self.journal: list[tuple] = []
        self.reindex()

    def reindex(self) -> None:
        self.users = rewrite.consumers(self.graph)
        self.made = rewrite.producers(self.graph)
        self.alive = set(self.graph.nodes)
        self.transposes = sum(1 for n in self.graph.nodes if _counts(n))

    def count(self) -> int:
        return self.transposes

    def rollback(self, mark: int) -> None:
        """Undo the journal's edits after its first `mark` entries."""
        while len(self.journal) > mark:
            node, *state = self.journal.pop()
            if node is None:
                self.graph.nodes = state[0]
            else:
                node.inputs, node.outputs, node.attrs, node.op_type, node.version = state
        self.reindex()

    # elementary edits (journaled; attrs are replaced, never changed in place)

    def touch(self, node: Node | None) -> None:
        """Journal `node`'s fields (None: the node order) before an edit."""
        if node is None:
            self.journal.append((None, list(self.graph.nodes)))
        else:
            self.journal.append((node, list(node.inputs), list(node.outputs), node.attrs, node.op_type, node.version))

    def set_inputs(self, node: Node, inputs: list[Value | None]) -> None:
        self.touch(node)
        for v in set(node.inputs) - set(inputs) - {None}:
            self.users[v].remove(node)
        for v in set(inputs) - set(node.inputs) - {None}:
            self.users.setdefault(v, []).append(node)
        node.inputs = inputs

    def set_outputs(self, node: Node, outputs: list[Value | None]) -> None:
        self.touch(node)
        for v in node.outputs:
            if v is not None and self.made.get(v) is node:
                del self.made[v]
        self.made.update({v: node for v in outputs if v is not None})
        node.outputs = outputs

    def insert(self, node: Node, index: int) -> None:
        self.touch(None)
        self.graph.nodes.insert(index, node)
        self.alive.add(node)
        self.transposes += _counts(node)
        for v in dict.fromkeys(v for v in node.inputs if v is not None):
            self.users.setdefault(v, []).append(node)
        self.made.update({v: node for v in node.outputs if v is not None})

    def remove(self, node: Node) -> None:
        self.set_inputs(node, [])
        self.set_outputs(node, [])
        self.touch(None)
        self.graph.nodes.remove(node)
        self.alive.discard(node)
        self.transposes -= _counts(node)

    def move_before(self, node: Node, anchor: Node) -> None:
        """Move `node` just before `anchor` when it comes after it (its inputs are made
        before `anchor` whenever `anchor` reads one of them)."""
        nodes = self.graph.nodes
        if nodes.index(node) > nodes.index(anchor):
            self.touch(None)
            nodes.remove(node)
            nodes.insert(nodes.index(anchor), node)

    def drop_if_dead(self, node: Node | None) -> None:
        """Remove a Transpose whose output nobody reads and the outside world does not see."""
        if node is not None and node in self.alive and _perm(node) is not None:
            out = node.outputs[0]
            if not self.users.get(out) and out not in self.keep:
                self.remove(node)

    # operands in another layout

    def source(self, value: Value, q: Perm, reader: Node, exclude: Node) -> tuple[Value, Node | None] | None:
        """`value` transposed by q without a new node: the input of the Transpose that made it
        (when the perms cancel), or the output of a Transpose(q) already reading it (that node
        must then move before `reader`: the second item). None when neither exists."""
        maker = self.made.get(value)
        s = None if maker is None or maker is exclude else _perm(maker)
        if s is not None and len(s) == len(q) and _is_identity(_then(s, q)):
            return maker.inputs[0], None
        for other in self.users.get(value, []):
            if other is not exclude and other is not reader and _perm(other) == q:
                return other.outputs[0], other
        return None

    def apply(self, node: Node, plan: _Plan, sources: dict[int, tuple[Value, Node | None]]) -> None:
        """Rewrite `node`'s inputs and attributes by `plan`, reading `sources`."""
        inputs = list(plan.inputs)
        for i, (value, mover) in sources.items():
            inputs[i] = value
            if mover is not None:
                self.move_before(mover, node)
        self.set_inputs(node, inputs)
        node.attrs = plan.attrs

    def transpose_outputs(self, node: Node, perms: list[Perm], version: int) -> list[Node]:
        """Give `node` new outputs Transpose(old, e) per e in `perms` and add the Transposes
        that restore the old outputs right after it (returned); identity perms stay."""
        outputs, added = list(node.outputs), []
        for k, (old, e) in enumerate(zip(node.outputs, perms, strict=True)):
            if old is None or _is_identity(e):
                continue
            outputs[k] = _moved_value(old, e, self.names.fresh(f"{old.name}_pre_transpose"))
            added.append(Node("Transpose", [outputs[k]], [old], {"perm": list(_inverse(e))},
                              self.names.fresh(f"{node.name}_transpose"), "", version))
        self.set_outputs(node, outputs)
        at = self.graph.nodes.index(node) + 1
        for t in reversed(added):
            self.insert(t, at)
        return added

    def bypass(self, node: Node, source: Value) -> Value:
        """Remove a Transpose whose perm became the identity: its readers read `source`.
        When its output is pinned, the maker of `source` writes that output instead, or (a
        graph input, a pinned or nested-read source) the node becomes an Identity. Returns the
        value standing for `source` from now on."""
        out = node.outputs[0]
        if out not in self.keep and not any(rewrite.nested_graphs(u) for u in self.users.get(out, [])):
            for user in list(self.users.get(out, [])):
                self.set_inputs(user, [source if v is out else v for v in user.inputs])
            self.remove(node)
            return source
        maker = self.made.get(source)
        if (maker is None or source in self.keep or source in self.fed
                or any(rewrite.nested_graphs(u) for u in self.users.get(source, []))):
            self.set_inputs(node, [source])
            node.op_type, node.attrs = "Identity", {}
            self.transposes -= 1
            return source
        self.remove(node)
        self.set_outputs(maker, [out if v is source else v for v in maker.outputs])
        for user in list(self.users.get(source, [])):
            self.set_inputs(user, [out if v is source else v for v in user.inputs])
        if out.dtype is None:
            out.dtype, out.shape = source.dtype, source.shape
        return out

    def retarget(self, node: Node, source: Value, perm: Perm) -> Value:
        """Make Transpose `node` read `source` with `perm`; returns what stands for `source`."""
        if _is_identity(perm):
            return self.bypass(node, source)
        self.set_inputs(node, [source])
        node.attrs = {**node.attrs, "perm": list(perm)}
        return source

    # the moves

    def merge(self, t: Node) -> bool:
        """Transpose of a Transpose: one Transpose (or none) of the first one's input. A
        Transpose repeating another of the same value and perm: its readers read that one."""
        p, x, out = _perm(t), t.inputs[0], t.outputs[0]
        first = self.made.get(x)
        s = None if first is None else _perm(first)
        if s is not None and len(s) == len(p):
            self.retarget(t, first.inputs[0], _then(s, p))
            self.drop_if_dead(first)
            return True
        twin = next((u for u in self.users.get(x, []) if u is not t and _perm(u) == p), None)
        if twin is None or out in self.keep or any(rewrite.nested_graphs(u) for u in self.users.get(out, [])):
            return False
        self.move_before(twin, t)
        for user in list(self.users.get(out, [])):
            self.set_inputs(user, [twin.outputs[0] if v is out else v for v in user.inputs])
        self.remove(t)
        return True

    def pull_up(self, t: Node) -> bool:
        """The op `t` alone reads runs on operands already in `t`'s layout and writes `t`'s
        output; `t` goes. Strictly fewer Transposes."""
        q, between = _perm(t), t.inputs[0]
        op = self.made.get(between)
        if op is None or _perm(op) is not None or between in self.keep or self.users.get(between) != [t]:
            return False
        if len(op.outputs) != 1:
            return False
        plan = _plan(op, q, self.fed, self.names)
        if plan is None or plan.outputs != [q]:
            return False
        sources = {i: self.source(op.inputs[i], q, op, t) for i in plan.data}
        if None in sources.values():
            return False
        makers = [self.made.get(op.inputs[i]) for i in plan.data]
        out = t.outputs[0]
        self.remove(t)
        self.apply(op, plan, sources)
        self.set_outputs(op, [out])
        for maker in makers:
            self.drop_if_dead(maker)
        return True

    def sink(self, seed: Node) -> bool:
        """Sink `seed`, then the Transposes that sinking creates, breadth first, and keep the
        state with the fewest Transposes (the latest of equals): False when that is the start."""
        self.journal.clear()
        best, kept = self.count(), None
        work, steps = [seed], 0
        while work and steps < MAX_SESSION_STEPS:
            t = work.pop(0)
            step = self.prepare_sink(t) if t in self.alive and _perm(t) is not None else None
            if step is None:
                continue
            work.extend(step())
            steps += 1
            if self.count() <= best:
                best, kept = self.count(), len(self.journal)
        if kept is None or kept < len(self.journal):
            self.rollback(0 if kept is None else kept)
        self.journal.clear()
        return kept is not None

    def prepare_sink(self, t: Node) -> Callable[[], list[Node]] | None:
        """What moving `t` past every reader of its output takes, as a function doing it
        (returning the Transposes it adds); None when some reader cannot take it."""
        p, x, y = _perm(t), t.inputs[0], t.outputs[0]
        if y in self.keep or not self.users.get(y):
            return None
        q = _inverse(p)
        merges, rewrites = [], []
        for user in self.users[y]:
            if y not in user.inputs:
                return None  # read inside a nested graph
            s = _perm(user)
            if s is not None and len(s) == len(p):
                merges.append((user, _then(p, s)))
                continue
            plan = _plan(user, q, self.fed, self.names)
            if plan is None:
                return None
            sources = {i: (x, None) if user.inputs[i] is y else self.source(user.inputs[i], q, user, t)
                       for i in plan.data}
            if None in sources.values():
                return None
            rewrites.append((user, plan, sources))

        def move() -> list[Node]:
            added, source = [], x
            for user, plan, sources in rewrites:
                makers = [self.made.get(user.inputs[i]) for i in plan.data]
                self.apply(user, plan, sources)
                added += self.transpose_outputs(user, plan.outputs, t.version)
                for maker in makers:
                    if maker is not t:
                        self.drop_if_dead(maker)
            for user, perm in merges:
                source = self.retarget(user, source, perm)
            self.drop_if_dead(t)
            return added

        return move


def _counts(node: Node) -> int:
    return int(node.op_type == "Transpose" and node.domain == "")


def _moved_value(old: Value, e: Perm, name: str) -> Value:
    """A new value holding Transpose(old, e): shape and per-axis quantization follow."""
    shape = None if old.shape is None or len(old.shape) != len(e) else tuple(old.shape[a] for a in e)
    quant = old.quantization
    if quant is not None and np.asarray(quant.scale).size > 1 and len(e) > 0:
        quant = dataclasses.replace(quant, axis=_inverse(e)[quant.axis % len(e)])
    return Value(name, old.dtype, shape, quantization=quant, kind=old.kind)

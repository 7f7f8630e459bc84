"""ONNX's training-preview op Gradient (domain ai.onnx.preview.training, opset 1), rewritten at
import into ordinary ops, so no kernel runs it and the .erm never holds it.

    c = Add(a, b)
    dc_da, dc_db = Gradient[xs=["a", "b"], y="c"](a, b)

A Gradient names, by attribute, tensors of its own graph: `xs` (differentiated), `zs` (optional,
not differentiated) and `y`. Its inputs are the values at which xs and zs are taken; its i-th
output is dy/dxs[i], with y's gradient seeded with ones (for a tensor y: the gradient of the sum
of its elements). `expand_gradients` replaces each Gradient node with

- the forward nodes between xs+zs and y again, reading the Gradient's inputs, where those are
  not the named tensors themselves (the spec's "values fed into the graph identified by the
  attributes"); otherwise the existing forward nodes are reused;
- the backward nodes that the gradient rules of converters.training.rules build
  (`backpropagate`, as make_trainable does);
- an Identity per output.

Tensors that y reads besides xs and zs (initializers, other inputs) are taken as they are where
the Gradient stands. The spec calls xs and zs "the minimal independent variable set that
determines the value of y", so a tensor of xs or zs that y does not depend on is refused; an x
that y depends on only through inputs that take no gradient (a Reshape's shape) gets zeros.

Failures are ConversionErrors naming the Gradient node: a name that is no graph input,
initializer or output of an earlier node, input/output counts that do not match xs and zs, a
tensor of xs/zs that y does not depend on, an integer x, a y or x whose dtype neither a
declaration nor its producers tell, a non-scalar y or zero gradient under ai.onnx opset 9
(ConstantOfShape), and an op on the way from xs to y without a gradient rule (naming that op
and its node).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from edgerun.converters.training.backward import backpropagate, dependents
from edgerun.converters.training.rules import GradContext, gradient_rule
from edgerun.runtime.errors import ConversionError
from edgerun.runtime.graph import Graph, Node, Value, reachable_nodes

PREVIEW_TRAINING = "ai.onnx.preview.training"
GRADIENT_OP = f"{PREVIEW_TRAINING}:Gradient"  # as the importer names ops: "domain:op"
_FLOAT_KINDS = "f"  # T2 of the spec: float16, float, double


def is_gradient(node: Node) -> bool:
    return node.domain == PREVIEW_TRAINING and node.op_type == "Gradient"


def expand_gradients(nodes: list[Node], scope: Mapping[str, Value], opsets: Mapping[str, int]) -> list[Node]:
    """`nodes` (one graph's, in topological order) with every Gradient node replaced by the
    ordinary nodes that compute its outputs (see the module docstring); `nodes` itself if it
    holds none. `scope` maps names to the values the graph can read (its own and the enclosing
    graphs'); `opsets` the model's opset per domain ('' for ai.onnx), whose ai.onnx version the
    new nodes take. A later Gradient may differentiate an earlier one's outputs.

    Raises ConversionError as the module docstring lists."""
    if not any(is_gradient(n) for n in nodes):
        return nodes
    produced = {v for n in nodes for v in n.outputs if v is not None}
    result: list[Node] = []
    for node in nodes:
        if is_gradient(node):
            result.extend(_expand(node, result, _Names(scope, produced, result, node), opsets.get("")))
        else:
            result.append(node)
    return result


class _Names:
    """Resolves the tensor names a Gradient's attributes hold: graph inputs, initializers,
    enclosing graphs' values and outputs of the nodes before it, never later ones."""

    def __init__(self, scope: Mapping[str, Value], produced: set[Value], before: list[Node], node: Node) -> None:
        self.scope = scope
        self.later = produced.difference(v for n in before for v in n.outputs)
        self.where = f"Gradient node {node.name!r}"

    def __call__(self, name: str, attr: str) -> Value:
        value = self.scope.get(name)
        if value is None or value in self.later:
            raise ConversionError(f"{self.where}: attribute {attr!r} names {name!r}, which is no graph input, "
                                  f"initializer or output of an earlier node")
        return value


@dataclass
class _Request:
    """What one Gradient node asks for, its names resolved to values."""

    where: str
    x_names: list[str]
    leaf_names: list[str]  # xs, then zs
    y_name: str
    leaves: list[Value]  # the tensors xs and zs name
    target: Value  # the tensor y names
    at: dict[Value, Value]  # tensor of xs or zs -> the Gradient input fed for it

    @property
    def xs(self) -> list[Value]:
        return self.leaves[:len(self.x_names)]


def _request(node: Node, names: _Names) -> _Request:
    """The resolved attributes of Gradient `node`; ConversionError for missing attributes,
    unknown names and input/output counts that do not match xs and zs."""
    where = names.where
    xs, zs, y = node.attrs.get("xs"), node.attrs.get("zs", []), node.attrs.get("y")
    if not isinstance(xs, list) or not xs or not isinstance(y, str) or not isinstance(zs, list):
        raise ConversionError(f"{where}: needs the attributes xs (a non-empty list of tensor names) and y "
                              f"(a tensor name); zs, if given, is a list of tensor names")
    if len(node.inputs) != len(xs) + len(zs) or any(v is None for v in node.inputs):
        raise ConversionError(f"{where}: expected {len(xs) + len(zs)} inputs (one per tensor of xs and zs), "
                              f"got {len([v for v in node.inputs if v is not None])}")
    if len(node.outputs) > len(xs):
        raise ConversionError(f"{where}: {len(node.outputs)} outputs, but xs names {len(xs)} tensors")
    leaves = [names(n, "xs") for n in xs] + [names(n, "zs") for n in zs]
    target = names(y, "y")
    at: dict[Value, Value] = {}
    for value, fed in zip(leaves, node.inputs, strict=True):
        if at.setdefault(value, fed) is not fed:
            raise ConversionError(f"{where}: {value.name!r} appears twice in xs and zs with different inputs")
    return _Request(where, xs, [*xs, *zs], y, leaves, target, at)


def _expand(node: Node, before: list[Node], names: _Names, opset: int | None) -> list[Node]:
    """The nodes that replace Gradient `node`, which follows `before`; the new ONNX nodes
    take ai.onnx version `opset`."""
    request = _request(node, names)
    where = request.where
    if opset is None:
        raise ConversionError(f"{where}: the model imports no ai.onnx opset, which its gradient ops need")
    forward = reachable_nodes(Graph("gradient", before, [], []), [request.target], leaves=set(request.at))
    evaluated, clones = _evaluate_at(forward, request.at, node.name)
    y_at = request.at[request.target] if request.target in request.at else clones.get(request.target, request.target)
    x_at = [request.at[x] for x in request.xs]
    dtypes = _Dtypes(where, [*before, *evaluated])
    _check_leaves(request, evaluated, y_at, dtypes)
    ctx = GradContext(opset, prefix=node.name)
    dtype = dtypes.float_dtype(f"y {request.y_name!r}", y_at, request.target, *x_at, *request.xs)
    grads = _backward(ctx, evaluated, {y_at: _filled(ctx, y_at, 1, dtype, where)}, x_at, where)
    outputs = []
    for out, name, x, value in zip(node.outputs, request.x_names, request.xs, x_at, strict=False):
        if out is None:
            continue
        grad = grads.get(value)
        if grad is None:  # y depends on x only through inputs that take no gradient
            grad = _filled(ctx, value, 0, dtypes.float_dtype(f"xs {name!r}", value, x), where)
        outputs.append(Node("Identity", [grad], [out], {}, f"{node.name}/{out.name}", "", ctx.opset))
    reused = {id(n) for n in forward}
    return [*(n for n in evaluated if id(n) not in reused), *ctx.nodes, *outputs]


def _check_leaves(request: _Request, evaluated: list[Node], y_at: Value, dtypes: _Dtypes) -> None:
    """ConversionError for an x of a known non-float dtype and for a tensor of xs or zs that y
    does not depend on (the spec: xs and zs are "the minimal independent variable set that
    determines the value of y")."""
    for name, x in zip(request.x_names, request.xs, strict=True):
        dtype = dtypes.find(request.at[x], x)
        if dtype is not None and dtype.kind not in _FLOAT_KINDS:
            raise ConversionError(f"{request.where}: xs {name!r} is {dtype}; Gradient differentiates float16, "
                                  f"float and double")
    for name, leaf in zip(request.leaf_names, request.leaves, strict=True):
        if y_at not in dependents(evaluated, [request.at[leaf]]):
            raise ConversionError(f"{request.where}: y {request.y_name!r} does not depend on {name!r}; the spec "
                                  f"makes xs and zs the minimal set of tensors that determine y")


def _evaluate_at(forward: list[Node], at: dict[Value, Value], prefix: str) -> tuple[list[Node], dict[Value, Value]]:
    """`forward` with every node that reads a fed value other than the named tensor (directly or
    through another such node) replaced by a copy reading the fed value; returns the nodes and
    original value -> copy for the copied nodes' outputs."""
    swap = {named: fed for named, fed in at.items() if named is not fed}
    clones: dict[Value, Value] = {}
    evaluated = []
    for node in forward:
        if not any(v in swap for v in node.inputs if v is not None):
            evaluated.append(node)
            continue
        outputs = [None if v is None else Value(f"{prefix}/{v.name}", v.dtype, None, kind=v.kind)
                   for v in node.outputs]
        for old, new in zip(node.outputs, outputs, strict=True):
            if old is not None:
                swap[old] = clones[old] = new
        evaluated.append(Node(node.op_type, [None if v is None else swap.get(v, v) for v in node.inputs], outputs,
                              dict(node.attrs), f"{prefix}/{node.name}", node.domain, node.version))
    return evaluated, clones


class _Dtypes:
    """Dtypes of values the import left without one, found through their producers: an op with
    a gradient rule gives its first output the dtype of its first input (every rule's op keeps
    the float dtype it differentiates), so y and the xs it depends on share one."""

    def __init__(self, where: str, nodes: list[Node]) -> None:
        self.where = where
        self.producers = {v: n for n in nodes for v in n.outputs if v is not None}

    def find(self, *values: Value) -> np.dtype | None:
        """The first dtype known or found among `values`; None when there is none."""
        for value in values:
            while value.dtype is None:
                node = self.producers.get(value)
                if node is None or node.outputs[0] is not value or node.inputs[0] is None \
                        or gradient_rule(node.op_type) is None:
                    break
                value = node.inputs[0]
            if value.dtype is not None:
                return value.dtype
        return None

    def float_dtype(self, what: str, *values: Value) -> np.dtype:
        """`find`'s dtype; ConversionError when there is none or it is not a float type."""
        dtype = self.find(*values)
        if dtype is None:
            raise ConversionError(f"{self.where}: the dtype of {what} is unknown; declare it (value_info) to "
                                  f"differentiate")
        if dtype.kind not in _FLOAT_KINDS:
            raise ConversionError(f"{self.where}: {what} is {dtype}; Gradient differentiates float16, float and "
                                  f"double")
        return dtype


def _backward(ctx: GradContext, nodes: list[Node], seeds: dict[Value, Value], wrt: list[Value],
              where: str) -> dict[Value, Value]:
    try:
        return backpropagate(ctx, nodes, seeds, wrt)
    except ConversionError as exc:
        raise ConversionError(f"{where}: {exc}") from None


def _filled(ctx: GradContext, like: Value, fill: float, dtype: np.dtype, where: str) -> Value:
    """A tensor shaped like `like`, every element `fill`, of `dtype`: a constant for a scalar,
    else ConstantOfShape(Shape(like)) (ai.onnx opset 9 or later)."""
    if like.shape == ():
        return ctx.constant("ones" if fill == 1 else "zeros", np.full((), fill, dtype))
    if ctx.opset < 9:
        raise ConversionError(f"{where}: a non-scalar gradient needs ai.onnx opset 9 or later, the model has "
                              f"{ctx.opset}")
    shape = ctx.onnx("Shape", [like])
    return ctx.onnx("ConstantOfShape", [shape], value=np.full((1,), fill, dtype))

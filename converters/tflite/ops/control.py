"""Control flow: WHILE, IF and CALL_ONCE, whose bodies are other subgraphs of the model.

TFLite subgraphs are self-contained: a body reads only its own inputs and constants, so
each becomes an edgerun Graph of its own (ctx.subgraph), or is inlined into the graph
being built with its inputs bound to values already there (`inline`, below).

WHILE (WhileOptions cond/body_subgraph_index): every loop value is an input and the
matching output of the operator; `while cond(values): values = body(values)`. It becomes
an ONNX Loop without a trip count: the initial condition is the cond subgraph inlined on
the initial values, and the Loop body runs the body subgraph, then the cond subgraph on
the body's results, returning (condition, values...).

IF (IfOptions then/else_subgraph_index): input 0 is the one-element BOOL condition, the
others are handed to whichever branch runs. It becomes an ONNX If whose branches are the
two subgraphs, with the operator's other inputs as the If's captures (edgerun passes
captured values to the branch graphs as their inputs; runtime/kernels/control.py).

CALL_ONCE (CallOnceOptions init_subgraph_index): runs a subgraph without inputs or
outputs once, to initialize resource variables. Converted only when that subgraph does
nothing observable (no operator of it touches resources): then it is dropped.

Failures are ConversionErrors naming the operator: a subgraph index out of range, a
subgraph reached again from itself (recursion), input or output counts or types that
differ between the operator and its subgraphs, subgraphs nested deeper than
convert.MAX_NESTING, or more operator conversions than the model's size allows (each WHILE
converts its cond subgraph twice and its body once, each IF both branches: subgraphs used
by many operators, or chains of them, are refused; see converters.tflite.convert).

At run time a WHILE is an ONNX Loop without a trip count: it runs until its condition is
false, as in TFLite, and how long that may take is the runtime Loop kernel's to bound.
"""

from __future__ import annotations

import numpy as np

from edgerun.converters.tflite.context import OpContext
from edgerun.converters.tflite.convert import SubgraphConverter
from edgerun.converters.tflite.reader import TFLiteSubGraph
from edgerun.converters.tflite.registry import converts
from edgerun.runtime.graph import Graph, GraphBuilder, Value

# Operators with effects beyond their outputs (resource variables, hash tables).
_STATEFUL = ("VAR_HANDLE", "READ_VARIABLE", "ASSIGN_VARIABLE", "HASHTABLE", "HASHTABLE_FIND",
             "HASHTABLE_IMPORT", "HASHTABLE_SIZE", "CALL_ONCE")


class InlineSubgraph(SubgraphConverter):
    """Converts a subgraph into an existing builder, its inputs bound to given values
    (instead of becoming graph inputs)."""

    def __init__(self, outer: SubgraphConverter, graph: TFLiteSubGraph, builder: GraphBuilder,
                 inputs: list[Value]) -> None:
        super().__init__(outer.model, graph, builder, outer.stack)
        self.given = inputs

    def convert(self) -> None:
        for index, value in zip(self.graph.inputs, self.given, strict=True):
            self.values[index] = self.declared[index] = value
            self.bound.add(id(value))
        for op in self.graph.operators:
            self._convert_op(op)


def _subgraph(ctx: OpContext, index: int, what: str) -> TFLiteSubGraph:
    """Subgraph `index`, after checking it exists and is not being converted already."""
    subgraphs = ctx.converter.model.model.subgraphs
    if not 0 <= index < len(subgraphs):
        raise ctx.fail(f"{what} subgraph {index} does not exist (the model has {len(subgraphs)})")
    if index in ctx.converter.stack:
        raise ctx.fail(f"{what} subgraph {index} calls itself (recursion is not allowed)")
    return subgraphs[index]


def _check_signature(ctx: OpContext, graph: TFLiteSubGraph, what: str, inputs: list[int],
                     outputs: list[int] | None) -> None:
    """Fail unless `graph` takes tensors of the types of the operator's `inputs` (and, when
    given, makes those of its `outputs`)."""
    pairs = [("inputs", inputs, graph.inputs)] + ([("outputs", outputs, graph.outputs)] if outputs is not None else [])
    for kind, ours, theirs in pairs:
        if len(ours) != len(theirs):
            raise ctx.fail(f"{what} subgraph {graph.index} has {len(theirs)} {kind}, the operator passes "
                           f"{len(ours)}")
        for position, (mine, its) in enumerate(zip(ours, theirs, strict=True)):
            a, b = ctx.graph.tensors[mine].type, graph.tensors[its].type
            if a != b:
                raise ctx.fail(f"{what} subgraph {graph.index}: {kind[:-1]} {position} is {b}, the operator's is {a}")


def inline(ctx: OpContext, graph: TFLiteSubGraph, builder: GraphBuilder, inputs: list[Value],
           converter: SubgraphConverter | None = None) -> list[Value]:
    """The outputs of `graph` converted into `builder` with its inputs bound to `inputs`."""
    conv = InlineSubgraph(converter or ctx.converter, graph, builder, inputs)
    conv.convert()
    return conv.outputs()


@converts("WHILE")
def while_(ctx: OpContext) -> None:
    n = ctx.num_inputs
    if n == 0:
        raise ctx.fail("has no loop values")
    if ctx.num_outputs != n:
        raise ctx.fail(f"has {n} inputs but {ctx.num_outputs} outputs (each loop value is both)")
    for i in range(n):
        if ctx.tensor(i).type != ctx.output_tensor(i).type:
            raise ctx.fail(f"loop value {i} is {ctx.tensor(i).type} in and {ctx.output_tensor(i).type} out")
    cond = _subgraph(ctx, int(ctx.options["cond_subgraph_index"]), "cond")
    body = _subgraph(ctx, int(ctx.options["body_subgraph_index"]), "body")
    _check_signature(ctx, cond, "cond", ctx.op.inputs, None)
    if len(cond.outputs) != 1 or cond.tensors[cond.outputs[0]].type != "BOOL":
        raise ctx.fail(f"cond subgraph {cond.index} must make one BOOL output")
    _check_signature(ctx, body, "body", ctx.op.inputs, ctx.op.outputs)
    initial = [ctx.input(i) for i in range(n)]
    first = inline(ctx, cond, ctx.builder, initial)[0]
    graph = _loop_body(ctx, cond, body)
    results = ctx.emit("Loop", [None, first, *initial], num_outputs=n, body=graph)
    for i, value in enumerate([results] if n == 1 else results):
        ctx.bind(i, value)


def _loop_body(ctx: OpContext, cond: TFLiteSubGraph, body: TFLiteSubGraph) -> Graph:
    """(iteration, condition, values...) -> (cond(body(values)), body(values)...)."""
    builder = GraphBuilder(f"{ctx.prefix}_body")
    iteration = builder.input("iteration", np.int64, ())
    keep_going = builder.input("condition", np.bool_, ())
    conv = SubgraphConverter(ctx.converter.model, body, builder, ctx.converter.stack)
    conv.convert()
    values = conv.outputs()
    again = inline(ctx, cond, builder, values, conv)[0]
    builder._inputs = [iteration, keep_going, *conv.inputs()]
    builder._outputs = [again, *values]
    return builder.build()


@converts("IF")
def if_(ctx: OpContext) -> None:
    if ctx.num_inputs < 1:
        raise ctx.fail("needs the condition as input 0")
    condition = ctx.tensor(0)
    if condition.type != "BOOL" or (condition.shape and int(np.prod(condition.shape)) != 1):
        raise ctx.fail(f"the condition must be one BOOL element, got {condition.type} {list(condition.shape)}")
    branches = {}
    for key, what in (("then_subgraph_index", "then"), ("else_subgraph_index", "else")):
        graph = _subgraph(ctx, int(ctx.options[key]), what)
        _check_signature(ctx, graph, what, ctx.op.inputs[1:], ctx.op.outputs)
        branches[what] = ctx.subgraph(graph.index, what)
    captured = [ctx.input(i) for i in range(1, ctx.num_inputs)]
    n = ctx.num_outputs
    results = ctx.emit("If", [ctx.input(0), *captured], num_outputs=n, then_branch=branches["then"],
                       else_branch=branches["else"], captures=len(captured))
    for i, value in enumerate([results] if n == 1 else results):
        ctx.bind(i, value)


@converts("CALL_ONCE")
def call_once(ctx: OpContext) -> None:
    init = _subgraph(ctx, int(ctx.options["init_subgraph_index"]), "init")
    if ctx.num_inputs or ctx.num_outputs or init.inputs or init.outputs:
        raise ctx.fail("CALL_ONCE and its init subgraph must have no inputs and no outputs")
    stateful = sorted({op.name for op in init.operators if op.opcode in _STATEFUL})
    if stateful:
        raise ctx.fail(f"init subgraph {init.index} initializes state ({', '.join(stateful)}), which edgerun "
                       "cannot convert")

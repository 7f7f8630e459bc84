"""Loop and Scan bodies as planned graphs: one ExecutionPlan per body and input shapes, reused
by every iteration, instead of preparing node after node each time (runtime.eager).

A body runs many times with the same input shapes, so planning it once pays: its steps read
and write one arena and its value-dependent nodes still get what a signature's get (an If
inlined when its condition is known, an eager tail behind the planned steps). The plan is made
for a copy of the body whose inputs carry the iteration's actual dtypes and shapes (ONNX bodies
often declare none), within the memory budget of the plan that runs the body (its
context's); bodies whose inputs are sequences or optionals, and bodies whose input
shapes change from one iteration to the next more often than MAX_PLANS_PER_BODY, run eagerly
as before. Plans are kept per thread, bounded like runtime.eager's kernel caches.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

from edgerun.runtime.errors import InputError, ModelError
from edgerun.runtime.graph import Graph, Node, Signature, Value

MAX_PLANS = 32  # body plans one thread keeps, least recently used first out
MAX_PLANS_PER_BODY = 4  # a body needing more shapes than this runs eagerly (shapes that keep growing)

_threads = threading.local()


def run_planned(graph: Graph, inputs: Sequence[np.ndarray], context) -> list[np.ndarray] | None:  # noqa: ANN001
    """Run `graph` (a Loop or Scan body) through its plan for these input shapes; None when
    the body should run eagerly instead (non-tensor inputs, too many shapes). Raises ModelError
    naming the node when the body fails."""
    if not all(isinstance(a, np.ndarray) for a in inputs) or len(inputs) != len(graph.inputs):
        return None
    plans: OrderedDict = _threads.__dict__.setdefault("plans", OrderedDict())
    shapes = tuple((a.dtype.str, a.shape) for a in inputs)
    key = (id(graph), context.backend, getattr(context, "memory_budget", None), shapes)
    entry = plans.get(key)
    if entry is None or entry[0] is not graph:
        if sum(1 for k in plans if k[:3] == key[:3]) >= MAX_PLANS_PER_BODY:
            return None
        entry = plans[key] = (graph, _plan(graph, inputs, context))
        while len(plans) > MAX_PLANS:
            plans.popitem(last=False)
    plans.move_to_end(key)
    try:
        outputs = entry[1].run({f"in{i}": a for i, a in enumerate(inputs)})
    except InputError as exc:  # the body's own shapes: a model fault, not the caller's input
        raise ModelError(f"graph {graph.name!r}: {exc}") from exc
    return [outputs[f"out{i}"] for i in range(len(graph.outputs))]


def _plan(graph: Graph, inputs: Sequence[np.ndarray], context):  # noqa: ANN001, ANN202
    """An ExecutionPlan of a copy of `graph` whose inputs have `inputs`' dtypes and shapes."""
    from edgerun.runtime.plan import ExecutionPlan  # plan imports eager, which imports this module

    typed = {v: Value(v.name, a.dtype, a.shape) for v, a in zip(graph.inputs, inputs, strict=True)}

    def renamed(values: list[Value | None]) -> list[Value | None]:
        return [None if v is None else typed.get(v, v) for v in values]

    nodes = [Node(n.op_type, renamed(n.inputs), list(n.outputs), n.attrs, n.name, n.domain, n.version)
             for n in graph.nodes]
    outputs = renamed(graph.outputs)
    signature = Signature(inputs={f"in{i}": typed[v] for i, v in enumerate(graph.inputs)},
                          outputs={f"out{i}": v for i, v in enumerate(outputs)})
    body = Graph(graph.name, nodes, list(typed.values()), outputs, signatures={"body": signature})
    try:
        return ExecutionPlan(body, f"{graph.name} body", signature, {}, getattr(context, "memory_budget", None),
                             context.backend, context.work_budget, context.num_threads)
    except InputError as exc:
        raise ModelError(f"graph {graph.name!r}: {exc}") from exc

"""Control flow: If, Loop and Scan run their bodies (subgraphs held in attributes)
through the execution context their plan hands them (`Kernel.run_graph`).

The converter makes every value a body reads from the enclosing graph an
explicit *capture*: the node's last `captures` inputs, passed to every body
after its formal inputs. Shapes coming out of a body depend on the values
going in, so these kernels need all their inputs at prepare time (the plan
runs them eagerly, or folds them when every input is constant); prepare runs
the body and `run` copies the results out.

Inputs, captures and results may be sequences and optionals (a Loop carrying a
list, an If choosing between two): their specs follow the bodies' declared
outputs, and `evaluate` hands them out.

Work: a Loop or Scan charges the work of all its iterations together against the plan's
work budget (`context.work_budget`) and raises WorkBudgetError as soon as the total passes
it. An iteration costs what the body's plan estimates for one run (runtime.plan reports it
through `record_body_work`), or, for a body that runs eagerly, the elements it outputs.
A Loop stops with a ModelError after MAX_LOOP_ITERATIONS iterations that its bounds would
have continued.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from edgerun.runtime.errors import WorkBudgetError
from edgerun.runtime.graph import Graph, Value
from edgerun.runtime.kernels.base import Kernel, OptionalSpec, TensorSpec, copy_value, spec_of
from edgerun.runtime.kernels.registry import register

MAX_LOOP_ITERATIONS = 1_000_000  # the most iterations one Loop may run, whatever its bounds say

_meters = threading.local()  # .stack: the work meters of the Loops and Scans running on this thread


class _Meter:
    """The estimated multiply-adds a Loop's or Scan's iterations have taken so far."""

    macs: int = 0


def metering() -> bool:
    """Whether a Loop or Scan on this thread is counting its body's work (so a plan's run
    need not add up its work otherwise: the invoke loop stays as it was)."""
    return bool(getattr(_meters, "stack", None))


def record_body_work(macs: int) -> None:
    """Charge `macs` (one run of a body's plan) to every Loop and Scan running on this thread:
    the innermost one's body made the run, and the ones around it run that body."""
    for meter in getattr(_meters, "stack", ()):
        meter.macs += macs


@contextmanager
def _metered() -> Iterator[_Meter]:
    stack = _meters.__dict__.setdefault("stack", [])
    meter = _Meter()
    stack.append(meter)
    try:
        yield meter
    finally:
        stack.pop()


class _Body(Kernel):
    """Shared by the control-flow kernels: captures, body lookup, result copy-out."""

    max_inputs = 1 << 16
    takes_sequences = True

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        self.n_captures = int(self.attr("captures", 0))
        if not 0 <= self.n_captures <= len(inputs):
            raise self.fail(f"captures={self.n_captures} but the node has {len(inputs)} inputs")
        formal = len(inputs) - self.n_captures
        known = [None if spec is None else values[i] if isinstance(spec, OptionalSpec) else self.value_of(values, i)
                 for i, spec in enumerate(inputs)]  # (an empty optional is None, and known: see base)
        self.declared: list[Value] = []  # the body outputs the results come from, where known
        self.results = self.compute(known[:formal], known[formal:])
        declared = self.declared + [None] * (len(self.results) - len(self.declared))
        specs = [spec_of(r, "tensor" if d is None else d.kind, None if d is None else d.dtype)
                 for r, d in zip(self.results, declared, strict=True)]
        # a None result is an empty optional, even where no declaration says so
        return [OptionalSpec(np.dtype(np.float32)) if spec is None else spec for spec in specs]

    def run(self, inputs, outputs):
        for out, result in zip(outputs, self.results, strict=False):
            np.copyto(out, result)

    def evaluate(self, inputs, out_specs):
        if all(isinstance(spec, TensorSpec) for spec in out_specs):
            return super().evaluate(inputs, out_specs)
        return [copy_value(r) for r in self.results[: len(out_specs)]]

    def body(self, key: str) -> Graph:
        graph = self.attr(key)
        if not isinstance(graph, Graph):
            raise self.fail(f"attribute {key!r} must be a graph")
        return graph

    def compute(self, formal: list, captures: list) -> list:
        """The node's results for its formal inputs and captures (setting `declared`)."""
        raise NotImplementedError

    def run_iteration(self, body: Graph, inputs: list, meter: _Meter, iteration: int) -> list:
        """Run `body` once as iteration `iteration` (from 0) and charge its work to `meter`;
        WorkBudgetError when the iterations so far pass the work budget."""
        before = meter.macs
        outs = self.run_graph(body, inputs, repeated=True)
        if meter.macs == before:  # an eager body reports nothing: count the elements it made
            record_body_work(max(1, sum(o.size for o in outs if isinstance(o, np.ndarray))))
        budget = getattr(self.context, "work_budget", None)
        if budget is not None and meter.macs > budget:
            raise WorkBudgetError(f"node {self.name!r} ({self.op_type}): {iteration + 1} iterations of its body "
                                  f"take an estimated {meter.macs} multiply-adds, over the work budget of {budget}")
        return outs

    def tensors(self, values: list) -> list[np.ndarray]:
        """`values`, which must all be tensors (a Scan's states and scanned inputs)."""
        for i, value in enumerate(values):
            if not isinstance(value, np.ndarray):
                raise self.fail(f"input {i} must be a tensor, got {_describe(value)}")
        return values


@register("If", since=1)
class If(_Body):
    """Runs `then_branch` or `else_branch` by the single-element boolean input."""

    def compute(self, formal, captures):
        if len(formal) != 1:
            raise self.fail(f"takes one condition input, got {len(formal)}")
        cond = formal[0]
        if not isinstance(cond, np.ndarray) or cond.size != 1:
            raise self.fail(f"the condition must be a tensor of one element, got {_describe(cond)}")
        branch = self.body("then_branch" if bool(cond.reshape(-1)[0]) else "else_branch")
        self.declared = list(branch.outputs)
        return self.run_graph(branch, captures)


@register("Loop", since=1)
class Loop(_Body):
    """for i in range(M) while cond: carried = body(i, cond, carried); scan outputs stacked.

    Either bound may be omitted. A loop that would run more than MAX_LOOP_ITERATIONS
    iterations (a condition that stays true, a huge trip count) is a ModelError naming the
    node, and all iterations together must fit the work budget (WorkBudgetError)."""

    min_inputs = 0

    def compute(self, formal, captures):
        body = self.body("body")
        if len(formal) < 2:
            raise self.fail(f"takes a trip count and a condition slot (either may be empty), got {len(formal)}")
        trip, cond, carried = formal[0], formal[1], list(formal[2:])
        n_carried = len(carried)
        n_scan = len(body.outputs) - 1 - n_carried
        if n_scan < 0 or len(body.inputs) != 2 + n_carried + len(captures):
            raise self.fail(f"body has {len(body.inputs)} inputs and {len(body.outputs)} outputs, "
                            f"which does not fit {n_carried} loop-carried values")
        for name, bound in (("trip count", trip), ("condition", cond)):
            if bound is not None and (not isinstance(bound, np.ndarray) or bound.size != 1):
                raise self.fail(f"the {name} must be a tensor of one element, got {_describe(bound)}")
        self.declared = list(body.outputs[1 : 1 + n_carried])
        limit = None if trip is None else int(trip.reshape(-1)[0])
        keep_going = True if cond is None else bool(cond.reshape(-1)[0])
        scans: list[list[np.ndarray]] = [[] for _ in range(n_scan)]
        i = 0
        with _metered() as meter:
            while (limit is None or i < limit) and keep_going:
                if i == MAX_LOOP_ITERATIONS:
                    raise self.fail(self._endless(i, trip, cond))
                outs = self.run_iteration(body, [np.array(i, np.int64), np.array(keep_going), *carried, *captures],
                                          meter, i)
                keep_going = bool(np.asarray(outs[0]).reshape(-1)[0])
                carried = outs[1 : 1 + n_carried]
                for k, (collected, item) in enumerate(zip(scans, outs[1 + n_carried :], strict=True)):
                    if not isinstance(item, np.ndarray):
                        raise self.fail(f"scan output {k} must be a tensor, the body made {_describe(item)}")
                    collected.append(item)
                i += 1
        stacked = [self._stack(collected, body.outputs[1 + n_carried + k]) for k, collected in enumerate(scans)]
        return [*carried, *stacked]

    @staticmethod
    def _endless(i: int, trip, cond) -> str:  # noqa: ANN001
        """Why a loop stopped at MAX_LOOP_ITERATIONS."""
        if trip is None and cond is None:
            return f"ran {i} iterations with no trip count and no condition (at most {MAX_LOOP_ITERATIONS})"
        why = "its condition is still true" if cond is not None else f"its trip count {int(trip.reshape(-1)[0])}"
        if cond is not None and trip is not None:
            why += f" and its trip count {int(trip.reshape(-1)[0])} is not reached"
        elif trip is not None:
            why += " is not reached"
        return f"Loop ran {i} iterations and {why}; a Loop may run at most {MAX_LOOP_ITERATIONS} iterations"

    def _stack(self, items: list[np.ndarray], declared) -> np.ndarray:  # noqa: ANN001
        if items:
            if any(item.shape != items[0].shape for item in items):
                raise self.fail("scan output shapes differ between iterations")
            return np.stack(items)
        shape = tuple(max(d, 0) for d in (declared.shape or ()))
        return np.zeros((0, *shape), declared.dtype or np.float32)


@register("Scan", since=9)
class Scan(_Body):
    """Scans `num_scan_inputs` inputs along their scan axes, threading N state values
    through `body`; per-iteration scan outputs are stacked along their axes."""

    def compute(self, formal, captures):
        body = self.body("body")
        m = int(self.attr("num_scan_inputs", 0))
        n = len(formal) - m
        if m < 1 or n < 0:
            raise self.fail(f"num_scan_inputs={m} does not fit {len(formal)} inputs")
        states, scanned = list(formal[:n]), self.tensors(formal[n:])
        in_axes = self._axes("scan_input_axes", m, [x.ndim for x in scanned])
        in_dirs = list(self.attr("scan_input_directions", [0] * m))
        lengths = {x.shape[a] for x, a in zip(scanned, in_axes, strict=True)}
        if len(lengths) != 1:
            raise self.fail(f"scan inputs have different lengths along their axes: {sorted(lengths)}")
        length = lengths.pop()
        k = len(body.outputs) - n
        collected: list[list[np.ndarray]] = [[] for _ in range(k)]
        with _metered() as meter:
            for t in range(length):
                slices = [np.take(x, length - 1 - t if d else t, axis=a)
                          for x, a, d in zip(scanned, in_axes, in_dirs, strict=True)]
                outs = self.run_iteration(body, [*states, *slices, *captures], meter, t)
                states = outs[:n]
                for items, item in zip(collected, outs[n:], strict=True):
                    items.append(item)
        ranks = [body.outputs[n + j].shape for j in range(k)]
        out_axes = self._axes("scan_output_axes", k, [1 + (len(r) if r is not None else
                                                            (collected[j][0].ndim if collected[j] else 0))
                                                       for j, r in enumerate(ranks)])
        out_dirs = list(self.attr("scan_output_directions", [0] * k))
        stacked = []
        for items, axis, direction, declared in zip(collected, out_axes, out_dirs, body.outputs[n:], strict=True):
            if not items:
                shape = tuple(max(d, 0) for d in (declared.shape or ()))
                stacked.append(np.zeros((0, *shape), declared.dtype or np.float32))
                continue
            if direction:
                items = items[::-1]
            stacked.append(np.stack(items, axis=axis))
        return [*states, *stacked]

    def _axes(self, key: str, count: int, ranks: list[int]) -> list[int]:
        axes = list(self.attr(key, [0] * count))
        if len(axes) != count:
            raise self.fail(f"{key} has {len(axes)} entries, expected {count}")
        resolved = []
        for axis, rank in zip(axes, ranks, strict=True):
            if not -rank <= axis < rank:
                raise self.fail(f"{key}: axis {axis} out of range for rank {rank}")
            resolved.append(axis % rank)
        return resolved


@register("Scan", since=8)
class Scan8(Scan):
    """Opset 8 Scan: a leading optional `sequence_lens` input and a batch axis 0 on
    every state and scan tensor; each batch entry is scanned along axis 1 (axis 0
    of the entry). Sequence lengths shorter than the scan axis are refused."""

    min_inputs = 0

    def compute(self, formal, captures):
        lens, formal = formal[0], self.tensors(formal[1:])
        m = int(self.attr("num_scan_inputs", 0))
        n = len(formal) - m
        if m < 1 or n < 0:
            raise self.fail(f"num_scan_inputs={m} does not fit {len(formal)} inputs")
        batches = {x.shape[0] for x in formal if x.ndim}
        if len(batches) != 1 or any(x.ndim < 1 for x in formal):
            raise self.fail("every state and scan input needs the same batch size on axis 0")
        batch = batches.pop()
        full = formal[n].shape[1] if formal[n].ndim > 1 else 0
        if lens is not None and np.any(np.asarray(lens) != full):
            raise self.fail(f"sequence_lens other than the full length {full} are not supported")
        per_batch = [Scan.compute(self._as_v9(), [x[b] for x in formal], captures) for b in range(batch)]
        return [np.stack([results[j] for results in per_batch]) for j in range(len(per_batch[0]))]

    def _as_v9(self) -> Scan:
        attrs = dict(self.attrs)
        directions = attrs.pop("directions", None)
        if directions is not None:
            attrs["scan_input_directions"] = directions
        scan = Scan(self.op_type, self.name, attrs, 9)
        scan.context = self.context
        return scan


def _describe(value) -> str:  # noqa: ANN001
    """'shape (2, 3)', 'a sequence', 'an empty optional': what a run-time value is, for messages."""
    if isinstance(value, np.ndarray):
        return f"shape {value.shape}"
    return "an empty optional" if value is None else "a sequence"

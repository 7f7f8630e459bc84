"""Static shape inference through the runtime kernels' `prepare`.

Kernels need concrete shapes, so the graph is prepared twice, with every dynamic
input dimension set to 2 and then to 3 (as runtime.plan probes); a dimension that
comes out equal both times is static. Small deterministic results whose inputs are
all known are computed along the way, so shape arithmetic (Shape -> Gather ->
Concat -> Reshape) informs the shapes after it. A node that cannot be prepared
(no kernel, a value known only at run time, nested graphs) leaves its outputs, and
everything after them, unknown.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgerun.converters.optimize import rewrite
from edgerun.runtime.graph import Graph, Node, Value
from edgerun.runtime.kernels import TensorSpec, resolve

PROBE_DIMS = (2, 3)
_MAX_PROBE_VALUE_BYTES = 1 << 16  # results computed during a probe, at most


@dataclass(frozen=True)
class Facts:
    """A value's dtype and shape; -1 marks a dimension that depends on the inputs."""

    dtype: np.dtype
    shape: tuple[int, ...]

    @property
    def static(self) -> bool:
        return all(d >= 0 for d in self.shape)


def infer(graph: Graph) -> dict[Value, Facts]:
    """Facts for every top-level value whose dtype and rank could be inferred."""
    probes = [_probe(graph, fill) for fill in PROBE_DIMS]
    facts: dict[Value, Facts] = {}
    for value, spec in probes[0].items():
        other = [p.get(value) for p in probes[1:]]
        if any(o is None or o.dtype != spec.dtype or len(o.shape) != len(spec.shape) for o in other):
            continue
        shape = tuple(d if all(o.shape[i] == d for o in other) else -1 for i, d in enumerate(spec.shape))
        facts[value] = Facts(spec.dtype, shape)
    return facts


def _probe(graph: Graph, fill: int) -> dict[Value, TensorSpec]:
    """Specs of the values after preparing every node, dynamic input dims set to `fill`."""
    fed = rewrite.feeds(graph)
    specs: dict[Value, TensorSpec] = {}
    known: dict[Value, np.ndarray] = {}
    for value in fed:
        if value.dtype is not None and value.shape is not None:
            specs[value] = TensorSpec(value.dtype, tuple(fill if d < 0 else d for d in value.shape))
    for node in graph.nodes:
        for value in node.inputs:
            if value is not None and value not in specs and value.data is not None:
                specs[value] = TensorSpec(value.data.dtype, value.data.shape)
                if value.is_constant and value not in fed:
                    known[value] = value.data
        _prepare(node, specs, known)
    return specs


def _prepare(node: Node, specs: dict[Value, TensorSpec], known: dict[Value, np.ndarray]) -> None:
    """Add `node`'s output specs (and small values) to the maps; nothing when it fails."""
    if rewrite.nested_graphs(node) or any(v is not None and v not in specs for v in node.inputs):
        return
    try:
        kernel = resolve(node.domain, node.op_type, node.version, node.name).for_node(node)
        out_specs = list(kernel.prepare([None if v is None else specs[v] for v in node.inputs],
                                        [None if v is None else known.get(v) for v in node.inputs]))
    except Exception:  # noqa: BLE001 - any failure only means "unknown"
        return
    out_specs = out_specs[: len(node.outputs)]
    for value, spec in zip(node.outputs, out_specs, strict=False):
        if value is not None:
            specs[value] = spec
    computable = kernel.shape_only or all(v is None or v in known for v in node.inputs)
    if not (kernel.deterministic and computable and node.inputs):
        return
    if sum(s.nbytes for s in out_specs) > _MAX_PROBE_VALUE_BYTES:
        return
    try:
        outs = [np.empty(s.shape, s.dtype) for s in out_specs]
        kernel.run([None if v is None else known.get(v, _placeholder(specs[v])) for v in node.inputs], outs)
    except Exception:  # noqa: BLE001
        return
    for value, array in zip(node.outputs, outs, strict=False):
        if value is not None:
            known[value] = array


def _placeholder(spec: TensorSpec) -> np.ndarray:
    """A read-only zero array of `spec` backed by one element (for shape-only kernels)."""
    base = np.zeros(1, spec.dtype)
    view = np.lib.stride_tricks.as_strided(base, spec.shape, (0,) * len(spec.shape))
    view.flags.writeable = False
    return view

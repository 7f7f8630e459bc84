"""Graph optimizer: passes that make a converted graph smaller and faster while keeping
every signature's outputs equal. Works in place on the top-level graph (control-flow
bodies are left as they are) and returns a report:

    graph = from_onnx("model.onnx")
    report = optimize(graph)                     # default passes, to a fixed point
    report = optimize(graph, ["fold_constants", "eliminate_dead_code"])
    print("\\n".join(report.lines()))

Passes, in the default order (each its own module):
    remove_identity      Identity / inference Dropout removal        (identity.py)
    fold_shape_ops       Shape / Size of static shapes -> constants   (shape_ops.py)
    fold_constants       nodes of constant inputs -> constants        (constants.py)
    sink_transposes      layout Transposes moved until inverse pairs cancel (transpose.py)
    fold_pad_into_conv   a zero Pad before a Conv -> the Conv's pads     (pad_conv.py)
    fold_batchnorm       BatchNormalization into Conv / Gemm          (batchnorm.py)
    fold_batchnorm_affine  per-channel Mul / Add after a BN -> its params (batchnorm.py)
    fold_conv_mul        Conv + Mul(per-channel constant) -> weights  (conv_mul.py)
    fold_conv_add        Conv + Add(per-channel constant) -> bias     (conv_add.py)
    fuse_residual_add    Conv + Add(same-shape tensor) -> FusedConv   (residual.py)
    fuse_swish           Conv/Gemm/MatMul + x*Sigmoid(x) -> one node   (swish.py)
    fuse_activations     Conv/Gemm/MatMul + Relu/Clip/... -> one node (activation.py)
    eliminate_dead_code  nodes and constants no output needs          (dead_code.py)

`unfuse_activations(graph)` undoes fuse_activations, for consumers (such as the training
converter's gradient rules) that do not understand fused activation attributes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from edgerun.converters.optimize.activation import FuseActivations, unfuse_activations
from edgerun.converters.optimize.batchnorm import FoldBatchNorm, FoldBatchNormAffine
from edgerun.converters.optimize.constants import FoldConstants
from edgerun.converters.optimize.conv_add import FoldConvAdd
from edgerun.converters.optimize.conv_mul import FoldConvMul
from edgerun.converters.optimize.dead_code import EliminateDeadCode
from edgerun.converters.optimize.identity import RemoveIdentity
from edgerun.converters.optimize.manager import MAX_ROUNDS, OptimizeReport, Pass, PassSummary, run_passes
from edgerun.converters.optimize.pad_conv import FoldPadIntoConv
from edgerun.converters.optimize.residual import FuseResidualAdd
from edgerun.converters.optimize.shape_ops import FoldShapeOps
from edgerun.converters.optimize.swish import FuseSwish
from edgerun.converters.optimize.transpose import SinkTransposes
from edgerun.runtime.errors import ConversionError
from edgerun.runtime.graph import Graph

PASSES: dict[str, Callable[[], Pass]] = {
    cls.name: cls for cls in (RemoveIdentity, FoldShapeOps, FoldConstants, SinkTransposes, FoldPadIntoConv,
                              FoldBatchNorm, FoldBatchNormAffine,
                              FoldConvMul, FoldConvAdd, FuseResidualAdd, FuseSwish, FuseActivations, EliminateDeadCode)
}
DEFAULT_PASSES = tuple(PASSES)


def optimize(graph: Graph, passes: Sequence[str | Pass] | None = None,
             max_rounds: int = MAX_ROUNDS) -> OptimizeReport:
    """Optimize `graph` in place with `passes` (names from PASSES or Pass objects; default:
    all, in DEFAULT_PASSES order), repeated until a round changes nothing or `max_rounds`
    rounds ran. Returns what each pass did. ConversionError for an unknown pass name."""
    chosen = []
    for p in DEFAULT_PASSES if passes is None else passes:
        if isinstance(p, str):
            if p not in PASSES:
                raise ConversionError(f"unknown optimizer pass {p!r}; known: {', '.join(PASSES)}")
            p = PASSES[p]()
        chosen.append(p)
    return run_passes(graph, chosen, max_rounds)


__all__ = ["DEFAULT_PASSES", "PASSES", "OptimizeReport", "Pass", "PassSummary", "optimize", "unfuse_activations"]

"""Work estimates: the multiply-adds (MACs) a node takes, from its prepared shapes.

A plan adds up its nodes' figures as it prepares them (`WorkTally`) and refuses a preparation
whose total passes the interpreter's work budget with WorkBudgetError, before the node that
passes it is evaluated and before any arena is allocated. Memory is budgeted separately.

How a node counts (N batch, K the contracted length; sizes are element counts):
- Conv family: output size x (Cin / group) x kernel taps = N*Cout*Hout*Wout*(Cin/group)*kH*kW;
  ConvTranspose: input size x (Cout / group) x taps.
- Gemm, MatMul (batched or not), their quantized forms: output size x K = M*N*K per batch;
  Einsum: the product of every label's size and the broadcast size of the "..." blocks.
- LSTM, GRU, RNN: seq*batch x (W.size + R.size) = seq*batch*dirs*gates*hidden*(input+hidden);
  Attention: (Q.size + Y.size) x total key length (QK^T and the weighted sum of V).
- Window pools: output size x window taps; global pools, reductions, normalizations, softmax,
  sorts and losses: the largest tensor they read or write.
- Gradient ops: twice their forward's contraction (one product per gradient).
- Everything else (elementwise, copies, shape ops): its output size.
The figures are estimates for bounding work, not exact operation counts. Nodes inside
control-flow bodies (If, Loop, Scan) and attention hooks are not counted ahead: the node holding
them counts its outputs only. When they run, Loop and Scan add up the work of every iteration
(each body plan's estimate, reported through runtime.kernels.control.record_body_work) and raise
WorkBudgetError as soon as the total passes the budget.

Some work depends on input values, not shapes: RoiAlign's adaptive sampling grid follows the ROI
coordinates. Its estimate here is its output size; its kernel counts the samples from the actual
rois when it runs and raises WorkBudgetError before sampling when they alone pass the budget,
which kernels read as `context.work_budget` (runtime.kernels.base.ExecutionContext).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from edgerun.runtime.errors import WorkBudgetError
from edgerun.runtime.graph import Node
from edgerun.runtime.kernels import TensorSpec

Specs = Sequence[TensorSpec | None]
Rule = Callable[[Specs, Specs, dict[str, Any]], int]


def node_macs(node: Node, inputs: Specs, outputs: Specs) -> int:
    """Estimated multiply-adds of one evaluation of `node` with input and output specs as its
    kernel prepared them (None for an omitted optional tensor). Never negative."""
    return max(0, _RULES.get(node.op_type, _outputs)(inputs, outputs, node.attrs))


@dataclass
class WorkTally:
    """The running work estimate of one preparation: its total and its largest part."""

    total: int = 0
    heaviest: tuple[str, str, int] = ("", "", 0)  # node name, op, MACs

    def add(self, node: Node, macs: int) -> None:
        self.total += macs
        if macs > self.heaviest[2]:
            self.heaviest = (node.name, node.op_type, macs)

    def check(self, budget: int | None, signature: str, node: Node) -> None:
        """WorkBudgetError when the total so far (counted up to `node`) passes `budget`."""
        if budget is None or self.total <= budget:
            return
        name, op, macs = self.heaviest
        raise WorkBudgetError(
            f"signature {signature!r}: estimated work of at least {self.total} multiply-adds "
            f"(counted up to node {node.name!r}) is over the work budget of {budget}; "
            f"the largest part is node {name!r} ({op}, {macs} multiply-adds)"
        )


def _count(shape: Sequence[int]) -> int:
    return math.prod(int(d) for d in shape)


def _size(spec: TensorSpec | None) -> int:
    return 0 if spec is None else _count(spec.shape)


def _outputs(inputs: Specs, outputs: Specs, attrs: dict[str, Any]) -> int:
    return sum(_size(s) for s in outputs)


def _largest(inputs: Specs, outputs: Specs, attrs: dict[str, Any]) -> int:
    return max((_size(s) for s in (*inputs, *outputs)), default=0)


def _conv(weight: int) -> Rule:
    """Output size x the weight's per-output-channel taps (W is (Cout, Cin/group, *kernel))."""
    def rule(inputs: Specs, outputs: Specs, attrs: dict[str, Any]) -> int:
        return _size(outputs[0]) * _count(inputs[weight].shape[1:])
    return rule


def _conv_grad(inputs: Specs, outputs: Specs, attrs: dict[str, Any]) -> int:
    dy, _, w = inputs[:3]
    return 2 * _size(dy) * _count(w.shape[1:])


def _conv_transpose(inputs: Specs, outputs: Specs, attrs: dict[str, Any]) -> int:
    return _size(inputs[0]) * _count(inputs[1].shape[1:])  # W is (Cin, Cout/group, *kernel)


def _matmul(a: int) -> Rule:
    """Output size x K, K the last axis of A (input `a`)."""
    def rule(inputs: Specs, outputs: Specs, attrs: dict[str, Any]) -> int:
        shape = inputs[a].shape
        return _size(outputs[0]) * (int(shape[-1]) if shape else 1)
    return rule


def _matmul_grad(inputs: Specs, outputs: Specs, attrs: dict[str, Any]) -> int:
    return 2 * _matmul(1)(inputs, [inputs[0]], attrs)  # dY has Y's shape


def _gemm(inputs: Specs, outputs: Specs, attrs: dict[str, Any]) -> int:
    rows = int(outputs[0].shape[0]) if outputs[0].shape else 0  # M; A holds M*K whichever way round
    return _size(outputs[0]) * (_size(inputs[0]) // rows if rows else 0)


def _gemm_grad(inputs: Specs, outputs: Specs, attrs: dict[str, Any]) -> int:
    return 2 * _gemm(inputs[1:], [inputs[0]], attrs)


def _einsum(inputs: Specs, outputs: Specs, attrs: dict[str, Any]) -> int:
    equation = attrs.get("equation", "")
    equation = equation.decode() if isinstance(equation, bytes) else str(equation)
    terms = equation.replace(" ", "").partition("->")[0].split(",")
    sizes: dict[str, int] = {}
    blocks: list[list[int]] = []  # each input's "..." dims
    for term, spec in zip(terms, inputs, strict=False):
        shape = [int(d) for d in spec.shape] if spec is not None else []
        head, dots, tail = term.partition("...")
        tail_dims = shape[len(shape) - len(tail):] if tail else []
        for label, d in (*zip(head, shape, strict=False), *zip(tail, tail_dims, strict=False)):
            sizes[label] = max(sizes.get(label, 1), d)
        if dots:
            blocks.append(shape[len(head): len(shape) - len(tail)])
    return max(_count(_broadcast(blocks)) * math.prod(sizes.values()), _outputs(inputs, outputs, attrs))


def _broadcast(shapes: Sequence[Sequence[int]]) -> list[int]:
    """The numpy broadcast of `shapes` (right-aligned; per axis the largest size, so a
    mismatch the kernel refuses anyway never counts for less)."""
    rank = max((len(s) for s in shapes), default=0)
    out = [1] * rank
    for shape in shapes:
        for i, d in enumerate(shape, rank - len(shape)):
            out[i] = max(out[i], d) if d != 0 and out[i] != 0 else 0
    return out


def _window(taps_of: int | None) -> Rule:
    """Window taps x the size of input `taps_of` (a gradient's dY), or of the output if None."""
    def rule(inputs: Specs, outputs: Specs, attrs: dict[str, Any]) -> int:
        taps = _count(attrs.get("kernel_shape") or ())
        return taps * _size(outputs[0] if taps_of is None else inputs[taps_of])
    return rule


def _recurrent(inputs: Specs, outputs: Specs, attrs: dict[str, Any]) -> int:
    x, w, r = inputs[:3]  # X is (seq, batch, input) or (batch, seq, input)
    return int(x.shape[0]) * int(x.shape[1]) * (_size(w) + _size(r))


def _attention(inputs: Specs, outputs: Specs, attrs: dict[str, Any]) -> int:
    q, k = inputs[:2]
    past = inputs[4] if len(inputs) > 4 else None
    total = int(k.shape[2 if len(k.shape) == 4 else 1]) + (int(past.shape[2]) if past is not None else 0)
    return (_size(q) + _size(outputs[0])) * total


def _flex_attention(inputs: Specs, outputs: Specs, attrs: dict[str, Any]) -> int:
    return (_size(inputs[0]) + _size(outputs[0])) * int(inputs[1].shape[2])


def _linear_attention(inputs: Specs, outputs: Specs, attrs: dict[str, Any]) -> int:
    heads = max(1, int(attrs.get("q_num_heads", 1)))  # the state update, its delta and the read-out
    return 3 * _size(outputs[0]) * (int(inputs[0].shape[-1]) // heads)


def _det(inputs: Specs, outputs: Specs, attrs: dict[str, Any]) -> int:
    shape = inputs[0].shape
    return _size(inputs[0]) * (int(shape[-1]) if shape else 1)


def _lrn(inputs: Specs, outputs: Specs, attrs: dict[str, Any]) -> int:
    return _size(outputs[0]) * max(1, int(attrs.get("size", 1)))


_CONV = _conv(1)
_LARGEST_OPS = (
    "GlobalAveragePool", "GlobalAveragePoolGrad", "GlobalMaxPool", "GlobalLpPool",
    "ReduceSum", "ReduceMean", "ReduceProd", "ReduceMax", "ReduceMin", "ReduceL1", "ReduceL2",
    "ReduceSumSquare", "ReduceLogSum", "ReduceLogSumExp", "ArgMax", "ArgMin", "CumSum", "CumProd", "SumTo",
    "Softmax", "LogSoftmax", "Hardmax", "SoftmaxGrad", "LogSoftmaxGrad", "TopK", "Unique",
    "BatchNormalization", "BatchNormTraining", "BatchNormGrad", "LayerNormalization", "RMSNormalization",
    "InstanceNormalization", "GroupNormalization", "LpNormalization", "MeanVarianceNormalization",
    "SoftmaxCrossEntropy", "SoftmaxCrossEntropyGrad", "MSELoss", "MSELossGrad", "BCEWithLogits",
    "BCEWithLogitsGrad", "SumSquares", "Accuracy", "NegativeLogLikelihoodLoss", "SoftmaxCrossEntropyLoss",
    "Col2Im", "DynamicQuantizeLinear",
)
_RULES: dict[str, Rule] = {
    "Conv": _CONV, "FusedConv": _CONV, "ConvInteger": _CONV, "QLinearConv": _conv(3), "DeformConv": _CONV,
    "CausalConvWithState": _CONV, "ConvGrad": _conv_grad, "ConvTranspose": _conv_transpose,
    "MatMul": _matmul(0), "MatMulInteger": _matmul(0), "QLinearMatMul": _matmul(0), "MatMulGrad": _matmul_grad,
    "Gemm": _gemm, "GemmGrad": _gemm_grad, "Einsum": _einsum, "Det": _det,
    "MaxPool": _window(None), "AveragePool": _window(None), "LpPool": _window(None),
    "MaxPoolGrad": _window(0), "AveragePoolGrad": _window(0), "LRN": _lrn,
    "RNN": _recurrent, "GRU": _recurrent, "LSTM": _recurrent,
    "Attention": _attention, "FlexAttention": _flex_attention, "LinearAttention": _linear_attention,
    **dict.fromkeys(_LARGEST_OPS, _largest),
}

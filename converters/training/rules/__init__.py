"""Gradient rules: how to back-propagate through each op, written as graph nodes.

A rule receives the forward node (from the training forward graph) and the
gradients of the loss with respect to each of its outputs (None where no
gradient flows) and returns the gradient with respect to each of its inputs
(None for inputs that take none: integer shapes, indices, ...). It builds the
backward graph through `ctx`, usually with a gradient kernel that lives next to
the forward kernel in runtime/kernels (e.g. `Relu` and `ReluGrad`):

    @gradient("Relu")
    def relu(ctx, node, grads):
        return [ctx.op("ReluGrad", [grads[0], node.inputs[0]])]

A training-forward rule replaces a node whose behaviour differs while training
(BatchNormalization uses batch statistics, Dropout drops): it returns the
training node's outputs (in the forward node's output order) and the variable
updates the train signature must store (e.g. running statistics):

    @training_forward("Dropout")
    def dropout(ctx, node) -> tuple[list[Value | None], dict[Value, Value]]: ...

Rules are pure graph construction: they never run kernels. Modules in this
package register their rules when imported (see `load_rules`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import numpy as np

from edgerun.runtime.graph import Node, Value

# Domain of edgerun's own training ops (gradient, loss and optimizer kernels).
TRAINING_DOMAIN = "edgerun"

GradientRule = Callable[["GradContext", Node, list[Value | None]], list[Value | None]]
TrainingForwardRule = Callable[["GradContext", Node], tuple[list[Value | None], dict[Value, Value]]]

_GRADIENTS: dict[str, GradientRule] = {}
_TRAINING_FORWARD: dict[str, TrainingForwardRule] = {}
_RULE_MODULES = ("elementwise", "nn", "shape", "conv", "normalization", "losses", "recurrent", "indexing", "reduce",
                 "math", "spatial", "attention")


def gradient(op_type: str) -> Callable[[GradientRule], GradientRule]:
    """Register the gradient rule of an ONNX op (or of an edgerun training op)."""

    def decorate(rule: GradientRule) -> GradientRule:
        _GRADIENTS[op_type] = rule
        return rule

    return decorate


def training_forward(op_type: str) -> Callable[[TrainingForwardRule], TrainingForwardRule]:
    """Register how an op runs in the train signature when that differs from inference."""

    def decorate(rule: TrainingForwardRule) -> TrainingForwardRule:
        _TRAINING_FORWARD[op_type] = rule
        return rule

    return decorate


def load_rules() -> None:
    """Import every rule module once (each registers its rules); missing ones are skipped."""
    for name in _RULE_MODULES:
        try:
            importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise


def gradient_rule(op_type: str) -> GradientRule | None:
    load_rules()
    return _GRADIENTS.get(op_type)


def training_forward_rule(op_type: str) -> TrainingForwardRule | None:
    load_rules()
    return _TRAINING_FORWARD.get(op_type)


def differentiable_ops() -> list[str]:
    load_rules()
    return sorted(_GRADIENTS)


class GradContext:
    """What a rule may use to add nodes to the training graph.

    `nodes` collects the nodes in the order they were made (already topological,
    since a rule can only use values that exist). Names are made unique.
    `needs_grad(value)` says whether the gradient with respect to a forward value is used;
    a rule may return None for an input where it is False and skip that work. It defaults
    to True for every value; whoever builds the backward graph may set a sharper test.
    `seed` (None: none) fixes the masks of random training ops (Dropout) that have no seed
    of their own; without it they differ in every interpreter session.
    """

    def __init__(self, opset: int, prefix: str = "grad", seed: int | None = None) -> None:
        self.opset = opset
        self.prefix = prefix
        self.seed = seed
        self.nodes: list[Node] = []
        self.needs_grad: Callable[[Value], bool] = lambda value: True
        self._count = 0

    def _name(self, hint: str) -> str:
        self._count += 1
        return f"{self.prefix}/{hint}_{self._count}"

    def op(
        self,
        op_type: str,
        inputs: list[Value | None],
        *,
        num_outputs: int = 1,
        domain: str = TRAINING_DOMAIN,
        **attrs: Any,
    ) -> Any:
        """Add a node; returns its output Value, or a list of them if num_outputs > 1.

        `domain` defaults to edgerun's training ops; pass `domain=""` (or use
        `onnx`) for a standard ONNX op, which then follows the model's opset.
        """
        name = self._name(op_type)
        outputs = [Value(f"{name}:{i}", None, None) for i in range(num_outputs)]
        version = 1 if domain == TRAINING_DOMAIN else self.opset
        self.nodes.append(Node(op_type, list(inputs), list(outputs), dict(attrs), name, domain, version))
        return outputs[0] if num_outputs == 1 else outputs

    def onnx(self, op_type: str, inputs: list[Value | None], *, num_outputs: int = 1, **attrs: Any) -> Any:
        """A standard ONNX op at the model's opset (Mul, Neg, Transpose, ...)."""
        return self.op(op_type, inputs, num_outputs=num_outputs, domain="", **attrs)

    def constant(self, hint: str, data: Any) -> Value:
        array = np.asarray(data)
        return Value(self._name(hint), array.dtype, array.shape, data=array)

    def sum_to(self, grad: Value, like: Value) -> Value:
        """`grad` summed over the axes along which `like` was broadcast, reshaped to
        `like`'s shape (the gradient of a broadcasting elementwise op)."""
        return self.op("SumTo", [grad, like])

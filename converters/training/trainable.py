"""make_trainable: add a loss, reverse-mode gradients and optimizer updates to a graph.

The result is one graph with these signatures (all sharing the parameters,
which become variables):

    infer / serving_default   the original inputs -> the original outputs
    train                     inputs + labels [+ learning_rate] [+ proximal_mu] -> loss (+ accuracy);
                              stores new parameters, optimizer state and
                              BatchNormalization running statistics when it ends
    save                      -> every model variable by name (parameters and running stats)
    restore                   every model variable by name -> stores them all, or,
                              if any is missing, extra or mis-shaped, nothing (InputError)
    save_optimizer            -> the optimizer's state by name (SGD momentum `<p>.velocity`,
                              Adam moments `<p>.adam_m`, `<p>.adam_v` and `optimizer.step`;
                              nothing for plain SGD)
    restore_optimizer         that state by name -> stores it all, or nothing (InputError)
    set_anchor                (with proximal=True) -> nothing; copies every parameter into
                              its anchor variable `anchor/<name>` (not part of save/restore)

Optimizer state has signatures of its own, apart from save/restore: federated rounds
exchange and average exactly what `save` returns, while momentum and moments belong to
one device's run; a checkpoint that resumes training saves and restores both.

The train signature runs a copy of the forward graph in training mode
(BatchNormalization with batch statistics, Dropout dropping), the loss, the
backward nodes built by the gradient rules of converters.training.rules, and
one optimizer update per parameter. The device only runs signatures.

With proximal=True the train signature also minimises FedProx's proximal term
(Li et al. 2020), mu/2 * ||w - anchor||^2 with mu the optional input
`proximal_mu` (default 0): mu * (w - anchor) joins each parameter's gradient and
the term joins the reported loss.
"""

from __future__ import annotations

import fnmatch
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgerun.converters.training.backward import backpropagate
from edgerun.converters.training.rules import (
    TRAINING_DOMAIN,
    GradContext,
    gradient_rule,
    training_forward_rule,
)
from edgerun.runtime.errors import ConversionError
from edgerun.runtime.graph import Graph, Node, Signature, Value
from edgerun.runtime.memory import MemoryReport, MiB

_log = logging.getLogger("edgerun.converters.training")
LOSSES = ("cross_entropy", "mse", "bce_logits")
OPTIMIZERS = ("sgd", "adam", "adamw")
SPARSE_EMBEDDINGS = ("auto", "always", "never")
SPARSE_MIN_ELEMENTS = 65_536  # sparse_embeddings="auto": the smallest table that gets row-sparse updates
# Inputs that are settings or statistics, never trainable weights.
_NON_WEIGHT_SLOTS = {"BatchNormalization": (3, 4), "Dropout": (1, 2), "Clip": (1, 2), "Reshape": (1,),
                     "LeakyRelu": (), "Pad": (1, 2), "Resize": (1, 2), "Pow": (1,)}


@dataclass(frozen=True)
class Optimizer:
    """An optimizer name and its settings (lr is the default learning rate)."""

    name: str
    lr: float = 0.01
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.999
    epsilon: float = 1e-8

    def __post_init__(self) -> None:
        checks = [(self.lr >= 0, "lr must be >= 0"), (0 <= self.momentum < 1, "momentum must be in [0, 1)"),
                  (not self.nesterov or self.momentum > 0, "nesterov needs momentum > 0"),
                  (self.weight_decay >= 0, "weight_decay must be >= 0"),
                  (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1, "beta1 and beta2 must be in [0, 1)"),
                  (self.epsilon > 0, "epsilon must be > 0")]
        for ok, message in checks:
            if not ok:
                raise ConversionError(f"optimizer {self.name!r}: {message}")

    @classmethod
    def parse(cls, spec: str | tuple[str, dict[str, Any]] | Optimizer) -> Optimizer:
        if isinstance(spec, Optimizer):
            return spec
        name, options = (spec, {}) if isinstance(spec, str) else spec
        if name not in OPTIMIZERS:
            raise ConversionError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")
        allowed = {"lr", "weight_decay"} | ({"momentum", "nesterov"} if name == "sgd" else
                                             {"beta1", "beta2", "epsilon"})
        unknown = sorted(set(options) - allowed)
        if unknown:
            raise ConversionError(f"optimizer {name!r}: unknown settings {unknown}; known: {sorted(allowed)}")
        return cls(name, **options)


def make_trainable(
    graph: Graph,
    loss: str = "cross_entropy",
    optimizer: str | tuple[str, dict[str, Any]] | Optimizer = ("sgd", {"lr": 0.01}),
    trainable: None | str | Sequence[str] | int = None,
    *,
    l2: float = 0.0,
    output: str | None = None,
    one_hot_labels: bool = False,
    proximal: bool = False,
    seed: int | None = None,
    sparse_embeddings: str = "auto",
    recompute: bool = False,
    memory_budget: int | None = None,
    batch_size: int = 1,
) -> Graph:
    """A new graph with train/infer/save/restore signatures (see the module docstring).

    Args:
        graph: an inference graph (from from_onnx or GraphBuilder); not modified.
        loss: "cross_entropy" (softmax cross-entropy on logits; integer labels, or
            one-hot/probability labels with `one_hot_labels`), "mse", or
            "bce_logits". If the chosen output comes from Softmax (cross_entropy)
            or Sigmoid (bce_logits), the loss reads that op's input as logits.
            cross_entropy takes (batch, classes) logits with labels (batch,), or (batch, steps,
            classes) logits (a sequence model) with labels (batch, steps) and the mean over all
            steps; the labels input takes the logits' leading dims.
        optimizer: "sgd", "adam" or "adamw", optionally with settings, e.g.
            ("sgd", {"lr": 0.1, "momentum": 0.9, "nesterov": True}).
        trainable: which float constants train: None or "all" (all weights), a
            glob pattern ("fc2.*", comma-separated for several), a list of exact
            names, or an int k for the weights of the last k nodes that have any
            (transfer learning). The rest stay constants. None, "all" and k take
            scalar (rank-0) weights only when the model has no weights of rank >= 1;
            name a scalar (or match it with a pattern) to train it beside others.
        l2: L2 weight decay added to the loss as 0.5 * l2 * sum of squared weights.
        output: which output the loss applies to (default: the only one).
        proximal: add FedProx's proximal term: anchor variables, the train input
            `proximal_mu` (default 0.0, which trains exactly as without it) and the
            `set_anchor` signature (see the module docstring).
        seed: fixes the Dropout masks of the train signature (each Dropout node without a
            `seed` attribute of its own draws from this seed and its name); None: they
            differ in every interpreter session.
        sparse_embeddings: "auto", "always" or "never": whether an embedding table trains
            row-sparse. A weight read only by Gather nodes on axis 0 then gets its gradient as
            the rows the batch touches (GatherGradSparse: distinct rows, duplicates summed)
            and an update that writes those rows into the variable in place, so a step costs
            the rows touched, not the table. "auto" does it where that trains exactly as dense
            (plain SGD: no momentum, no weight_decay, no l2, no proximal term; an untouched row
            has gradient 0) and the table has at least 65,536 elements (SPARSE_MIN_ELEMENTS).
            "always" does it for any table and optimizer except under l2 or proximal (whose
            gradients touch every row): with momentum, weight_decay or Adam that is the lazy
            update of PyTorch's SparseAdam / TensorFlow's LazyAdam, which DIFFERS from dense
            training: rows the batch does not touch keep their value and their optimizer state
            (no decay of momentum or moments, no weight decay). "never": dense, every row,
            every step.
        recompute: recompute cheap activations (Relu6 and the other pointwise ops) in the
            backward pass instead of keeping them from the forward pass, where that frees
            arena memory and never makes any other value live longer (see
            converters/training/recompute.py); trains exactly as without it.
        memory_budget: the most bytes a train step at `batch_size` may hold (arena + weights +
            optimizer state, `Interpreter.memory_report("train")`), e.g. a device profile's
            `memory_budget_bytes`. Over it, activations are recomputed as `recompute` does
            (logged with the bytes it saves); still over it is a ConversionError.
        batch_size: the batch the budget is checked at (the train inputs' dynamic first dim).

    Raises ConversionError: unknown loss/optimizer/sparse_embeddings/output/parameter names, no
    trainable parameter, an op on the path to the loss without a gradient
    rule (naming the op and the node), or a train step over `memory_budget`.
    """
    if loss not in LOSSES:
        raise ConversionError(f"unknown loss {loss!r}; choose one of {', '.join(LOSSES)}")
    opt = Optimizer.parse(optimizer)
    copied = _copy_graph(graph)
    from edgerun.converters.optimize import unfuse_activations

    unfuse_activations(copied)  # an optimized .erm: gradient rules know the plain ops
    builder = _TrainableBuilder(copied, seed)
    builder.select_parameters(trainable, output)
    builder.build_training_forward()
    builder.add_loss(loss, output, one_hot_labels, l2)
    builder.add_backward()
    if proximal:
        builder.add_proximal()
    builder.add_optimizer(opt, sparse_embeddings)
    if recompute:
        builder.recompute_activations()
    trained = builder.finish(loss, opt, l2)
    if memory_budget is None:
        return trained
    return _within_budget(builder, trained, memory_budget, batch_size, lambda: builder.finish(loss, opt, l2))


def _within_budget(builder: _TrainableBuilder, trained: Graph, budget: int, batch_size: int,
                   rebuild: Callable[[], Graph]) -> Graph:
    """`trained`, or the graph rebuilt with recomputed activations when only that fits a train
    step at `batch_size` into `budget` bytes; ConversionError when neither fits."""
    if budget < 1 or batch_size < 1:
        raise ConversionError(f"memory_budget and batch_size must be >= 1, got {budget} and {batch_size}")
    need = train_step_memory(trained, batch_size)
    if need.fits(budget):
        return trained
    if not builder.recomputed:
        builder.recompute_activations()
        if builder.recomputed:
            before, trained = need, rebuild()
            need = train_step_memory(trained, batch_size)
            _log.info("recomputing %d activations saves %.1f MiB of a train step at batch %d",
                      len(builder.recomputed), (before.total_bytes - need.total_bytes) / MiB, batch_size)
            if need.fits(budget):
                return trained
    raise ConversionError(
        f"a train step at batch {batch_size} needs {need.total_bytes / MiB:.1f} MiB ({need}), over the "
        f"{budget / MiB:.1f} MiB memory budget even with recomputed activations; train fewer layers "
        "(trainable=k) or use a smaller batch")


_MEASURING_BUDGET = 1 << 40


def train_step_memory(trained: Graph, batch_size: int = 1) -> MemoryReport:
    """What one train step of a make_trainable graph holds at `batch_size` (the train inputs'
    dynamic first dim; other dynamic dims at 1): arena, weights and optimizer state."""
    from edgerun.runtime import Interpreter

    # Measured, not refused: the host's own budget must not stop the measurement that decides
    # whether to recompute (the arena is reserved, never touched, so it costs address space only).
    interpreter = Interpreter(trained, device="cpu", memory_budget=_MEASURING_BUDGET)
    inputs = interpreter.signatures["train"].inputs
    shapes = {name: tuple(batch_size if i == 0 and d < 0 else max(d, 1) for i, d in enumerate(info.shape))
              for name, info in inputs.items() if info.shape and -1 in info.shape}
    interpreter.resize_inputs(shapes, signature="train")
    return interpreter.memory_report("train")


def _copy_graph(graph: Graph) -> Graph:
    """A copy whose Values and Nodes are new objects (constant arrays are shared)."""
    mapping: dict[int, Value] = {}

    def new(v: Value | None) -> Value | None:
        if v is None:
            return None
        if id(v) not in mapping:
            mapping[id(v)] = Value(v.name, v.dtype, v.shape, v.data, v.is_variable, v.quantization, kind=v.kind)
        return mapping[id(v)]

    nodes = [Node(n.op_type, [new(v) for v in n.inputs], [new(v) for v in n.outputs], dict(n.attrs),
                  n.name, n.domain, n.version) for n in graph.nodes]
    serving = graph.signatures.get("serving_default") or graph.default_signature()
    signature = Signature({k: new(v) for k, v in serving.inputs.items()},
                          {k: new(v) for k, v in serving.outputs.items()})
    return Graph(graph.name, nodes, [new(v) for v in graph.inputs], [new(v) for v in graph.outputs],
                 {"serving_default": signature}, dict(graph.metadata))


class _TrainableBuilder:
    """The steps of make_trainable, sharing their bookkeeping."""

    def __init__(self, graph: Graph, seed: int | None = None) -> None:
        self.graph = graph
        self.serving = graph.signatures["serving_default"]
        self.opset = max((n.version for n in graph.nodes if n.domain in ("", "ai.onnx")), default=17)
        self.params: list[Value] = []
        self.refused: list[str] = []  # names of weights left frozen: no gradient reaches them
        self.statistics: list[Value] = []
        self.frozen: set[int] = set()  # ids of nodes that stay in inference mode while training
        self.forward = GradContext(self.opset, prefix="train", seed=seed)
        self.backward = GradContext(self.opset, prefix="grad")
        self.train_value: dict[Value, Value] = {}
        self.updates: dict[Value, Value] = {}
        self.train_inputs: dict[str, Value] = dict(self.serving.inputs)
        self.train_outputs: dict[str, Value] = {}
        self.extra_inputs: list[Value] = []
        self.anchor_updates: dict[Value, Value] = {}  # proximal anchor -> a copy of its parameter
        self.optimizer_state: list[Value] = []  # momentum, Adam moments and step
        self.recomputed: list[str] = []  # forward values the backward recomputes (recompute.py)
        self.sparse_tables: list[str] = []  # parameters with row-sparse updates (GatherGradSparse)

    # ---------------------------------------------------------------- parameters
    def select_parameters(self, trainable: None | str | Sequence[str] | int, output: str | None) -> None:
        """Weights that train: float constants in weight slots that the loss output's gradient
        reaches through ops with gradients, filtered by `trainable` (see `_choose`). A weight
        that `trainable` asks for by name, pattern or last-k but that cannot train is a
        ConversionError naming it and the ops that block it; the default ("all") leaves those
        frozen and logs one warning listing them. BatchNormalization statistics become
        variables only where that layer trains (a frozen layer stays in inference mode)."""
        output_name, loss_output = self._loss_output(output)
        reached, blockers = _gradient_paths(self.graph, loss_output)
        explicit = trainable not in (None, "all") and not isinstance(trainable, int)
        weights: list[tuple[Node, Value]] = []
        seen: set[Value] = set()
        for node in self.graph.nodes:
            skip = _NON_WEIGHT_SLOTS.get(node.op_type, ())
            for slot, v in enumerate(node.inputs):
                if v is None or not v.is_constant or v.dtype.kind != "f" or v in seen or slot in skip:
                    continue
                seen.add(v)
                if v in reached or v in blockers or explicit:
                    weights.append((node, v))
        requested = _choose(weights, trainable, has_tensors=any(v.data.ndim >= 1 for v in reached if v in seen))
        refused = {v.name: _why_frozen(v, blockers, output_name) for v in requested if v not in reached}
        listed = _listed(refused)
        if refused and (explicit or isinstance(trainable, int) or len(refused) == len(requested)):
            raise ConversionError(f"cannot train {len(refused)} requested weight(s): {listed}")
        if refused:
            _log.warning("%d weight(s) stay frozen behind ops without a gradient: %s", len(refused), listed)
        self.params = [v for v in requested if v in reached]
        self.refused = list(refused)
        if not self.params:
            raise ConversionError(f"no trainable parameters match {trainable!r}")
        chosen = set(self.params)
        for node in self.graph.nodes:
            if node.op_type == "BatchNormalization" and chosen.intersection(node.inputs[1:3]):
                self.statistics.extend(v for v in node.inputs[3:5] if v is not None and v.is_constant)
            elif node.op_type == "BatchNormalization":
                self.frozen.add(id(node))
        for v in (*self.params, *self.statistics):
            v.is_variable = True

    # ---------------------------------------------------------- training forward
    def build_training_forward(self) -> None:
        """A copy of the forward nodes in training mode; values map through train_value."""
        for node in self.graph.nodes:
            inputs = [self._train(v) for v in node.inputs]
            twin = Node(node.op_type, inputs, node.outputs, node.attrs, node.name, node.domain, node.version)
            rule = None if id(node) in self.frozen else training_forward_rule(node.op_type)
            if rule is not None:
                outputs, updates = rule(self.forward, twin)
                self.updates.update(updates)
            else:
                outputs = [None if v is None else Value(f"{v.name}/train", v.dtype, v.shape)
                           for v in node.outputs]
                self.forward.nodes.append(Node(node.op_type, inputs, outputs, dict(node.attrs),
                                               f"{node.name}/train", node.domain, node.version))
            for old, new in zip(node.outputs, outputs, strict=True):
                if old is not None:
                    self.train_value[old] = new

    def _train(self, v: Value | None) -> Value | None:
        return None if v is None else self.train_value.get(v, v)

    # ---------------------------------------------------------------------- loss
    def add_loss(self, loss: str, output: str | None, one_hot: bool, l2: float) -> None:
        name, value = self._loss_output(output)
        info = self._output_info(name)
        target = self._train(value)
        if loss == "cross_entropy" and len(info.shape) not in (2, 3):
            raise ConversionError(f"cross_entropy needs a (batch, classes) output or a (batch, steps, classes) "
                                  f"one; {name!r} has shape {info.shape}")
        producer = self._producer_of(target)
        if producer is not None and _is_final_activation(producer, loss, len(info.shape)):
            target = producer.inputs[0]  # the logits before the final activation
        taken = {v.name for v in self.graph.values()}
        for reserved in ("labels", "learning_rate"):
            if reserved in taken:
                raise ConversionError(f"the model already has a tensor named {reserved!r}; rename it first")
        # Integer labels take the logits' leading dims (one class index per row, or per step of a
        # (batch, steps, classes) output: the loss is the mean over every step); float targets take
        # the logits' shape.
        if loss == "cross_entropy" and not one_hot:
            labels = Value("labels", np.int64, tuple(info.shape[:-1]))
        else:
            labels = Value("labels", info.dtype, info.shape)
        loss_labels = labels
        if loss == "cross_entropy" and len(info.shape) == 3:
            target = self.forward.onnx("Flatten", [target], axis=2)
            loss_labels = (self.forward.onnx("Flatten", [labels], axis=2) if one_hot else
                           self.forward.onnx("Reshape", [labels, self.forward.constant("rows", np.array([-1]))]))
        self.train_inputs["labels"] = labels
        self.extra_inputs.append(labels)
        op = {"cross_entropy": "SoftmaxCrossEntropy", "mse": "MSELoss", "bce_logits": "BCEWithLogits"}[loss]
        self.loss_dtype = info.dtype
        total = self.forward.op(op, [target, loss_labels])
        if loss == "cross_entropy":
            self.train_outputs["accuracy"] = self.forward.op("Accuracy", [target, loss_labels])
        if l2 > 0:
            squares = self.forward.op("SumSquares", list(self.params))
            scale = self.forward.constant("l2_half", np.asarray(0.5 * l2, info.dtype))
            total = self.forward.onnx("Add", [total, self.forward.onnx("Mul", [squares, scale])])
        self.loss = total
        self.train_outputs["loss"] = total

    def _loss_output(self, output: str | None) -> tuple[str, Value]:
        outputs = self.serving.outputs
        if output is None:
            if len(outputs) != 1:
                raise ConversionError(f"the model has outputs {sorted(outputs)}: say which one the loss uses")
            output = next(iter(outputs))
        if output not in outputs:
            raise ConversionError(f"no output {output!r}; the model has {sorted(outputs)}")
        return output, outputs[output]

    def _output_info(self, name: str) -> Any:
        from edgerun.runtime import Interpreter

        info = Interpreter(self.graph, device="cpu").signatures["serving_default"].outputs[name]
        if info.dtype.kind != "f":
            raise ConversionError(f"output {name!r} is {info.dtype}; a loss needs floats")
        return info

    def _producer_of(self, value: Value) -> Node | None:
        for node in self.forward.nodes:
            if value in node.outputs:
                return node
        return None

    # ------------------------------------------------------------------ backward
    def add_backward(self) -> None:
        """Reverse-mode gradients of the loss with respect to every parameter."""
        one = self.backward.constant("loss_grad_seed", np.ones((), self.loss_dtype))
        self.grads: dict[Value, Value] = backpropagate(self.backward, self.forward.nodes, {self.loss: one},
                                                       self.params)

    # ------------------------------------------------------------------ proximal
    def add_proximal(self) -> None:
        """FedProx's mu/2 * sum ||p - anchor||^2: an `anchor/<name>` variable per parameter
        (initially the parameter), the train input `proximal_mu` (default 0), mu * (p - anchor)
        added to each gradient and the term added to the reported loss. The backward graph
        is not rebuilt: the term's gradient is written out here."""
        if "proximal_mu" in {v.name for v in self.graph.values()}:
            raise ConversionError("the model already has a tensor named 'proximal_mu'; rename it first")
        ctx, dtype = self.backward, self.loss_dtype
        mu = Value("proximal_mu", dtype, (), data=np.zeros((), dtype))
        self.train_inputs["proximal_mu"] = mu
        self.extra_inputs.append(mu)
        differences = []
        for param in self.params:
            anchor = _variable(f"anchor/{param.name}", param.data.copy())
            self.anchor_updates[anchor] = ctx.onnx("Identity", [param])  # updates take values, not variables
            difference = ctx.onnx("Sub", [param, anchor])
            differences.append(difference)
            if param in self.grads:  # a parameter without one fails in add_optimizer
                self.grads[param] = ctx.onnx("Add", [self.grads[param], ctx.onnx("Mul", [difference, mu])])
        half_mu = ctx.onnx("Mul", [mu, ctx.constant("proximal_half", np.asarray(0.5, dtype))])
        term = ctx.onnx("Mul", [ctx.op("SumSquares", differences), half_mu])
        self.train_outputs["loss"] = ctx.onnx("Add", [self.train_outputs["loss"], term])

    # ----------------------------------------------------------------- optimizer
    def add_optimizer(self, opt: Optimizer, sparse_embeddings: str = "never") -> None:
        """One update per parameter; the row-sparse ones (see `_sparse_tables`) come last,
        after every dense update, since they write into their variables while the run goes on."""
        if sparse_embeddings not in SPARSE_EMBEDDINGS:
            raise ConversionError(f"unknown sparse_embeddings {sparse_embeddings!r}; choose one of "
                                  f"{', '.join(SPARSE_EMBEDDINGS)}")
        ctx = self.backward
        lr = Value("learning_rate", self.loss_dtype, (), data=np.asarray(opt.lr, self.loss_dtype))
        self.train_inputs["learning_rate"] = lr
        self.extra_inputs.append(lr)
        step = None
        if opt.name in ("adam", "adamw"):
            step = _variable("optimizer.step", np.zeros((), np.float32))
            self.optimizer_state.append(step)
            self.updates[step] = ctx.onnx("Add", [step, ctx.constant("one", np.ones((), np.float32))])
        for param in self.params:
            if self.grads.get(param) is None:
                raise ConversionError(f"parameter {param.name!r} does not affect the loss")
        sparse = self._sparse_tables(opt, sparse_embeddings)
        for param in self.params:
            if param not in sparse:
                self._update(ctx, opt, param, [self.grads[param]], lr, step)
        for param, pairs in sparse.items():
            rows = ctx.op("GatherGradSparse", [param, *(v for pair in pairs for v in pair)], num_outputs=2)
            self._update(ctx, opt, param, rows, lr, step)
        self.sparse_tables = [p.name for p in sparse]
        if sparse:
            _log.info("row-sparse updates for %s", ", ".join(repr(p.name) for p in sparse))

    def _sparse_tables(self, opt: Optimizer, mode: str) -> dict[Value, list[tuple[Value, Value]]]:
        """The parameters that train row-sparse under `mode` (see make_trainable's
        sparse_embeddings), each with the (dY, indices) of the Gathers that read it; their
        dense GatherGrad nodes (and the Adds that sum them) leave the backward graph."""
        exact = opt.name == "sgd" and opt.momentum == 0 and opt.weight_decay == 0
        if mode == "never" or (mode == "auto" and not exact) or self.anchor_updates:
            return {}
        found: dict[Value, list[tuple[Value, Value]]] = {}
        dead: set[int] = set()
        for param in self.params:
            if mode == "auto" and param.data.size < SPARSE_MIN_ELEMENTS:
                continue
            readers = [n for n in self.forward.nodes if param in n.inputs]
            if not readers or not all(_gathers_rows(n, param) for n in readers):
                continue
            pairs, nodes = _gather_grad_terms(self.backward.nodes, self.grads[param], param)
            if pairs is not None and len(pairs) == len(readers):
                found[param] = pairs
                dead.update(map(id, nodes))
        self.backward.nodes[:] = [n for n in self.backward.nodes if id(n) not in dead]
        return found

    def _update(self, ctx: GradContext, opt: Optimizer, param: Value, grad: list[Value], lr: Value,
                step: Value | None) -> None:
        """The update of `param` by its gradient: `grad` is [the dense gradient] (SGDUpdate,
        AdamUpdate) or GatherGradSparse's [indices, rows] (SGDUpdateSparse, AdamUpdateSparse)."""
        kind = "Update" if len(grad) == 1 else "UpdateSparse"
        zeros = np.zeros_like(param.data)
        if opt.name == "sgd":
            attrs = {"momentum": opt.momentum, "nesterov": int(opt.nesterov),
                     "weight_decay": opt.weight_decay}
            if opt.momentum == 0:
                self.updates[param] = ctx.op(f"SGD{kind}", [param, *grad, lr], **attrs)
                return
            velocity = _variable(f"{param.name}.velocity", zeros)
            self.optimizer_state.append(velocity)
            new_param, new_velocity = ctx.op(f"SGD{kind}", [param, *grad, lr, velocity], num_outputs=2, **attrs)
            self.updates.update({param: new_param, velocity: new_velocity})
            return
        m, v = _variable(f"{param.name}.adam_m", zeros), _variable(f"{param.name}.adam_v", zeros.copy())
        self.optimizer_state.extend((m, v))
        new_param, new_m, new_v = ctx.op(
            f"Adam{kind}", [param, *grad, lr, m, v, step], num_outputs=3, beta1=opt.beta1, beta2=opt.beta2,
            epsilon=opt.epsilon, weight_decay=opt.weight_decay, decoupled=int(opt.name == "adamw"),
        )
        self.updates.update({param: new_param, m: new_m, v: new_v})

    # ----------------------------------------------------------------- recompute
    def recompute_activations(self) -> None:
        """Recompute cheap forward values in the backward instead of keeping them (once)."""
        if self.recomputed:
            return
        from edgerun.converters.training.recompute import recompute_activations

        self.backward.nodes, self.recomputed = recompute_activations(
            self.forward.nodes, self.backward.nodes, free=self.train_inputs.values())

    # -------------------------------------------------------------------- finish
    def finish(self, loss: str, opt: Optimizer, l2: float) -> Graph:
        save, restore, restore_inputs = _state_signatures("restore", [*self.params, *self.statistics])
        save_opt, restore_opt, restore_opt_inputs = _state_signatures("restore_optimizer", self.optimizer_state)
        signatures = {
            "serving_default": self.serving,
            "infer": Signature(dict(self.serving.inputs), dict(self.serving.outputs)),
            "train": Signature(self.train_inputs, self.train_outputs, self.updates),
            "save": save, "restore": restore, "save_optimizer": save_opt, "restore_optimizer": restore_opt,
        }
        if self.anchor_updates:
            signatures["set_anchor"] = Signature({}, {}, self.anchor_updates)
        nodes = [*self.graph.nodes, *self.forward.nodes, *self.backward.nodes]
        names = [v.name for v in (*self.updates, *restore_inputs, *restore_opt_inputs, *self.anchor_updates)]
        clash = sorted({n for n in names if names.count(n) > 1} | ({n for n in names} & {
            v.name for v in self.graph.values() if not v.is_variable}))
        if clash:
            raise ConversionError(f"tensor names {clash} would be used twice; rename them in the model first")
        inputs = [*self.graph.inputs, *self.extra_inputs, *restore_inputs, *restore_opt_inputs]
        metadata = dict(self.graph.metadata)
        metadata["edgerun.training"] = json.dumps({
            "loss": loss, "optimizer": opt.__dict__, "l2": l2,
            "parameters": [v.name for v in self.params], "frozen": self.refused,
            "statistics": [v.name for v in self.statistics],
            "optimizer_state": [v.name for v in self.optimizer_state], "proximal": bool(self.anchor_updates),
            "recomputed": len(self.recomputed), "sparse_embeddings": self.sparse_tables,
        })
        return Graph(self.graph.name, nodes, inputs, list(self.graph.outputs), signatures, metadata)


def _state_signatures(prefix: str, state: list[Value]) -> tuple[Signature, Signature, list[Value]]:
    """(save, restore, restore's input values) for the variables `state`: save outputs each by
    name; restore takes each by name (input value `<prefix>/<name>`) and stores them all."""
    inputs = {v.name: Value(f"{prefix}/{v.name}", v.dtype, v.data.shape) for v in state}
    save = Signature({}, {v.name: v for v in state})
    restore = Signature(inputs, {}, {v: inputs[v.name] for v in state})
    return save, restore, list(inputs.values())


def _is_final_activation(node: Node, loss: str, rank: int) -> bool:
    """A Softmax over the class axis before cross_entropy, or a Sigmoid before bce_logits."""
    if loss == "bce_logits":
        return node.op_type == "Sigmoid"
    if loss != "cross_entropy" or node.op_type != "Softmax":
        return False
    default = -1 if node.version >= 13 else 1
    axis = int(node.attrs.get("axis", default))
    return axis in (-1, rank - 1)


def _differentiable(op_type: str) -> bool:
    return gradient_rule(op_type) is not None or training_forward_rule(op_type) is not None


def _gathers_rows(node: Node, table: Value) -> bool:
    """Whether `node` is a Gather on axis 0 that reads `table` as its data only."""
    rank = len(table.data.shape)
    return (node.op_type == "Gather" and node.domain in ("", "ai.onnx") and rank >= 1
            and node.inputs[0] is table and table not in node.inputs[1:]
            and int(node.attrs.get("axis", 0)) % rank == 0)


def _gather_grad_terms(nodes: list[Node], grad: Value,
                       table: Value) -> tuple[list[tuple[Value, Value]] | None, list[Node]]:
    """((dY, indices) of each GatherGrad of `table` on axis 0 whose sum is `grad`, and the
    GatherGrad and Add nodes that make it), or (None, []) when `grad` is anything else."""
    producers = {id(v): n for n in nodes for v in n.outputs if v is not None}
    pairs: list[tuple[Value, Value]] = []
    used: list[Node] = []
    pending = [grad]
    while pending:
        node = producers.get(id(pending.pop()))
        if node is None:
            return None, []
        used.append(node)
        if node.op_type == "Add" and node.domain == "":
            pending.extend(reversed(node.inputs))
        elif (node.op_type == "GatherGrad" and node.inputs[1] is table
              and int(node.attrs.get("axis", 0)) % len(table.data.shape) == 0):
            pairs.append((node.inputs[0], node.inputs[2]))
        else:
            return None, []
    return pairs, used


def _variable(name: str, initial: np.ndarray) -> Value:
    return Value(name, initial.dtype, initial.shape, data=initial, is_variable=True)


def _gradient_paths(graph: Graph, loss_output: Value) -> tuple[set[Value], dict[Value, dict[str, Node]]]:
    """(the values the loss output's gradient reaches through ops with gradient rules, and for
    every other value upstream of it the nodes without a gradient on its paths to it, by name)."""
    reached = {loss_output}
    blockers: dict[Value, dict[str, Node]] = {}
    for node in reversed(graph.nodes):
        outputs = [v for v in node.outputs if v is not None]
        flows = any(v in reached for v in outputs)
        behind: dict[str, Node] = {}
        for v in outputs:
            behind.update(blockers.get(v, {}))
        if (flows or behind) and not _differentiable(node.op_type):
            flows, behind = False, {**behind, node.name: node}
        for v in node.inputs:
            if v is not None and flows:
                reached.add(v)
            if v is not None and behind:
                blockers.setdefault(v, {}).update(behind)
    return reached, blockers


def _why_frozen(weight: Value, blockers: dict[Value, dict[str, Node]], output: str) -> str:
    """Why `weight` cannot train, for messages: the ops without a gradient between it and the loss."""
    nodes = blockers.get(weight)
    if not nodes:
        return f"(does not affect output {output!r})"
    shown = list(nodes.values())[:_SHOWN]
    named = ", ".join(f"node {n.name!r}: op {n.op_type!r} has no gradient" for n in shown)
    more = f" and {len(nodes) - len(shown)} more" if len(nodes) > len(shown) else ""
    return f"(blocked by {named}{more})"


_SHOWN = 3  # blocking nodes and weights a message names before it says "and N more"


def _listed(refused: dict[str, str]) -> str:
    """Frozen weights and why, for one message: weights frozen for the same reason share it,
    and a long list names the first few groups and counts the rest (a whole backbone frozen
    behind one op would otherwise print the same reason for each of its weights)."""
    groups: dict[str, list[str]] = {}
    for name, why in refused.items():
        groups.setdefault(why, []).append(name)
    parts = []
    for why, names in list(groups.items())[:_SHOWN * 2]:
        shown = ", ".join(repr(n) for n in names[:_SHOWN])
        more = f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else ""
        parts.append(f"{shown}{more} {why}")
    hidden = sum(len(names) for names in list(groups.values())[_SHOWN * 2:])
    return "; ".join(parts) + (f"; and {hidden} more weight(s)" if hidden else "")


def _choose(candidates: list[tuple[Node, Value]], trainable: None | str | Sequence[str] | int,
            has_tensors: bool) -> list[Value]:
    """The candidate weights that `trainable` selects, in graph order.

    Names and patterns may pick any candidate. None, "all" and the last-k count pick weights
    of rank >= 1, and rank-0 (scalar) weights only in a model that has no others that can
    train (`has_tensors` False): in an imported model most scalars are constants of a formula
    (a LayerNorm's epsilon, GELU's 0.5) that must not train, while a model of scalars alone
    (y = W * x + b with scalar W and b, as `tf.get_variable(shape=[])` makes them) trains them
    all."""
    if (trainable is None or trainable == "all" or isinstance(trainable, int)) and has_tensors:
        candidates = [(node, v) for node, v in candidates if v.data.ndim >= 1]
    values = [v for _, v in candidates]
    if trainable is None or trainable == "all":
        return values
    if isinstance(trainable, int):
        nodes = list(dict.fromkeys(node.name for node, _ in candidates))
        keep = set(nodes[-trainable:]) if trainable > 0 else set()
        return [v for node, v in candidates if node.name in keep]
    if isinstance(trainable, str):
        patterns = [p.strip() for p in trainable.split(",") if p.strip()]
        return [v for v in values if any(fnmatch.fnmatchcase(v.name, p) for p in patterns)]
    names = list(trainable)
    known = {v.name for v in values}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConversionError(f"not trainable weights: {unknown}; the weights are {sorted(known)}")
    return [v for v in values if v.name in set(names)]


__all__ = ["LOSSES", "OPTIMIZERS", "Optimizer", "TRAINING_DOMAIN", "make_trainable"]

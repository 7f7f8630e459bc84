"""Optimizer update kernels of on-device training (domain "edgerun"): PyTorch's SGD and Adam/AdamW.

An update reads a parameter, its gradient, the learning rate and the optimizer state
and returns the new parameter and new state; the train signature stores them into
the variables. Arithmetic is in the parameter's dtype. The learning rate is a scalar
tensor (a signature input, so it can be scheduled); a negative or non-finite one is
bad input data: InputError when the update runs.

SGDUpdateSparse and AdamUpdateSparse take a row-sparse gradient (GatherGradSparse's
indices and rows, for an embedding table) and change only the rows it names: the lazy
semantics of PyTorch's SparseAdam and TensorFlow's LazyAdam, where an untouched row keeps
its value and its momentum/moments (the dense kernels decay every row's state). They
declare `in_place` pairs (output, input): the plan may hand them the variable's own
storage as that output, and then they write the touched rows and nothing else, so a step
costs the rows touched, not the table. Their results are the same either way; every check
that can fail comes before the first write.
"""

from __future__ import annotations

import math

import numpy as np

from edgerun.runtime.errors import InputError
from edgerun.runtime.kernels.attrs import FLOAT_KINDS, flag_attr, float_attr, require_kind, require_same_dtype
from edgerun.runtime.kernels.base import Kernel, TensorSpec
from edgerun.runtime.kernels.losses import require_same_shape, require_scalar
from edgerun.runtime.kernels.registry import register

TRAINING = "edgerun"


def require_state(kernel: Kernel, param: TensorSpec, specs: list[TensorSpec], names: list[str]) -> None:
    """ModelError unless each spec (gradient, optimizer state) has the param's dtype and shape."""
    require_kind(kernel, param, FLOAT_KINDS, "param")
    require_same_dtype(kernel, [param, *specs], "param, " + ", ".join(names))
    for spec, name in zip(specs, names, strict=True):
        require_same_shape(kernel, param, spec, f"param and {name}")


def bounded_attr(kernel: Kernel, key: str, default: float, lo: float, hi: float = math.inf) -> float:
    """A finite float attribute in [lo, hi); ModelError otherwise."""
    value = float_attr(kernel, key, default)
    if not (math.isfinite(value) and lo <= value < hi):
        raise kernel.fail(f"attribute {key!r} must be finite and in [{lo}, {hi}), got {value}")
    return value


def learning_rate(kernel: Kernel, lr: np.ndarray) -> float:
    """The learning rate as a float; InputError when it is negative or not finite."""
    value = float(lr.reshape(()))
    if not (math.isfinite(value) and value >= 0):
        raise InputError(f"node {kernel.name!r} ({kernel.op_type}): learning rate must be finite "
                         f"and >= 0, got {value}")
    return value


def steps_taken(kernel: Kernel, step: np.ndarray) -> float:
    """Adam's step input (the updates already taken) as a float; InputError when it is
    negative or not finite."""
    value = float(step.reshape(()))
    if not (math.isfinite(value) and value >= 0):
        raise InputError(f"node {kernel.name!r} ({kernel.op_type}): step (updates taken) must be "
                         f"finite and >= 0, got {value}")
    return value


def sgd_attrs(kernel: Kernel) -> None:
    """Set an SGD kernel's momentum, nesterov and weight_decay from its attributes;
    ModelError for a bad value or nesterov without momentum."""
    kernel.momentum = bounded_attr(kernel, "momentum", 0.0, 0.0)
    kernel.nesterov = flag_attr(kernel, "nesterov")
    kernel.weight_decay = bounded_attr(kernel, "weight_decay", 0.0, 0.0)
    if kernel.nesterov and kernel.momentum == 0:
        raise kernel.fail("nesterov=1 needs momentum > 0")


def scratch_outputs(outputs: list[np.ndarray], count: int, like: np.ndarray) -> list[np.ndarray]:
    """`outputs` padded with scratch arrays up to `count` (a node may omit trailing outputs)."""
    return list(outputs) + [np.empty_like(like) for _ in range(count - len(outputs))]


@register("SGDUpdate", since=1, domain=TRAINING)
class SGDUpdate(Kernel):
    """(param, grad, lr[, velocity]; momentum=0, nesterov=0, weight_decay=0)
    -> (new_param[, new_velocity]), as torch.optim.SGD (dampening 0):

        g = grad + weight_decay * param
        v = momentum * velocity + g                   (momentum > 0 only)
        step = g + momentum * v if nesterov else v    (g when momentum == 0)
        new_param = param - lr * step

    The velocity input and output exist exactly when momentum > 0; a zero velocity
    starts it, which matches PyTorch's first step (v = g)."""

    min_inputs, max_inputs = 3, 4

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        sgd_attrs(self)
        want = 4 if self.momentum else 3
        if len(inputs) != want or inputs[-1] is None:
            needs = "(param, grad, lr, velocity)" if self.momentum else "(param, grad, lr)"
            raise self.fail(f"momentum={self.momentum} takes {want} inputs {needs}, got {len(inputs)}")
        param, grad, lr = inputs[:3]
        require_state(self, param, [grad, *inputs[3:]], ["grad", "velocity"][: want - 2])
        require_scalar(self, lr, FLOAT_KINDS, "lr")
        return [param] * (want - 2)

    def run(self, inputs, outputs):
        param, grad, lr = inputs[:3]
        dtype = param.dtype.type
        rate = dtype(learning_rate(self, lr))
        g = grad + dtype(self.weight_decay) * param if self.weight_decay else grad
        step = g
        if self.momentum:
            v = scratch_outputs(outputs, 2, param)[1]
            momentum = dtype(self.momentum)
            np.multiply(inputs[3], momentum, out=v)
            np.add(v, g, out=v)
            step = g + momentum * v if self.nesterov else v
        new_param = outputs[0]
        np.multiply(step, rate, out=new_param)
        np.subtract(param, new_param, out=new_param)


@register("AdamUpdate", since=1, domain=TRAINING)
class AdamUpdate(Kernel):
    """(param, grad, lr, m, v, step; beta1=0.9, beta2=0.999, epsilon=1e-8, weight_decay=0,
    decoupled=0) -> (new_param, new_m, new_v), as torch.optim.Adam (decoupled=0: L2 added to
    the gradient) or torch.optim.AdamW (decoupled=1: param decays by lr * weight_decay first):

        t = step + 1                    (step: the number of updates already taken)
        g = grad + weight_decay * param                 (decoupled=0)
        base = param * (1 - lr * weight_decay)          (decoupled=1; else base = param)
        new_m = beta1 * m + (1 - beta1) * g
        new_v = beta2 * v + (1 - beta2) * g^2
        new_param = base - lr * (new_m / (1 - beta1^t)) / (sqrt(new_v / (1 - beta2^t)) + epsilon)

    `step` is a scalar of any numeric dtype; a negative or non-finite step is an InputError."""

    min_inputs = max_inputs = 6

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        param, grad, lr, m, v, step = inputs
        self.beta1 = bounded_attr(self, "beta1", 0.9, 0.0, 1.0)
        self.beta2 = bounded_attr(self, "beta2", 0.999, 0.0, 1.0)
        self.epsilon = bounded_attr(self, "epsilon", 1e-8, 0.0)
        self.weight_decay = bounded_attr(self, "weight_decay", 0.0, 0.0)
        self.decoupled = flag_attr(self, "decoupled")
        require_state(self, param, [grad, m, v], ["grad", "m", "v"])
        require_scalar(self, lr, FLOAT_KINDS, "lr")
        require_scalar(self, step, "fiu", "step")
        return [param, param, param]

    def run(self, inputs, outputs):
        param, grad, lr, m, v, step = inputs
        dtype = param.dtype.type
        rate = learning_rate(self, lr)
        t = steps_taken(self, step) + 1
        new_param, new_m, new_v = scratch_outputs(outputs, 3, param)
        g = grad
        if self.weight_decay and not self.decoupled:
            g = grad + dtype(self.weight_decay) * param
        np.multiply(m, dtype(self.beta1), out=new_m)
        np.add(new_m, dtype(1 - self.beta1) * g, out=new_m)
        np.multiply(v, dtype(self.beta2), out=new_v)
        np.add(new_v, dtype(1 - self.beta2) * np.square(g), out=new_v)
        m_hat = np.divide(new_m, dtype(1 - self.beta1**t), out=np.empty_like(new_m))  # arrays, rank 0 too
        v_hat = np.divide(new_v, dtype(1 - self.beta2**t), out=np.empty_like(new_v))
        np.sqrt(v_hat, out=v_hat)
        np.add(v_hat, dtype(self.epsilon), out=v_hat)
        np.divide(m_hat, v_hat, out=m_hat)
        np.multiply(m_hat, dtype(rate), out=m_hat)
        if self.weight_decay and self.decoupled:
            np.multiply(param, dtype(1 - rate * self.weight_decay), out=new_param)
        else:
            np.copyto(new_param, param)
        np.subtract(new_param, m_hat, out=new_param)


def sparse_rows(kernel: Kernel, indices: np.ndarray, rows: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(row numbers, gradient rows) of a row-sparse gradient, padding (index -1) dropped; the
    rows must be distinct and in [0, size), or -1: InputError otherwise (a duplicate would be
    applied once instead of summed)."""
    if indices.size and indices.min() < -1:
        raise InputError(f"node {kernel.name!r} ({kernel.op_type}): row {int(indices.min())} is out of "
                         f"range [0, {size - 1}] (only -1 marks padding)")
    keep = indices >= 0
    picked = indices[keep]
    if picked.size and picked.max() >= size:
        raise InputError(f"node {kernel.name!r} ({kernel.op_type}): row {int(picked.max())} is out of "
                         f"range [0, {size - 1}]")
    if picked.size > 1 and np.unique(picked).size != picked.size:
        raise InputError(f"node {kernel.name!r} ({kernel.op_type}): the gradient names a row twice; "
                         f"rows must be distinct (GatherGradSparse sums duplicates)")
    return picked, rows[keep]


def require_sparse_grad(kernel: Kernel, param: TensorSpec, indices: TensorSpec, rows: TensorSpec) -> None:
    """ModelError unless (indices, rows) is a row-sparse gradient of `param`: int64 (n,) and
    (n, *param.shape[1:]) of param's dtype."""
    require_kind(kernel, param, FLOAT_KINDS, "param")
    if not param.shape:
        raise kernel.fail("param must have rank >= 1 (the gradient names rows along axis 0)")
    if indices.dtype != np.int64 or len(indices.shape) != 1:
        raise kernel.fail(f"indices must be int64 (n,), got {indices.dtype} {indices.shape}")
    want = (indices.shape[0], *param.shape[1:])
    if rows.dtype != param.dtype or tuple(rows.shape) != want:
        raise kernel.fail(f"rows must be {param.dtype} {want}, got {rows.dtype} {rows.shape}")


def start_from(output: np.ndarray, current: np.ndarray) -> np.ndarray:
    """`output` holding `current`'s values: nothing to do when the plan made them one array
    (an in-place update), a copy otherwise."""
    if output is not current:
        np.copyto(output, current)
    return output


@register("SGDUpdateSparse", since=1, domain=TRAINING)
class SGDUpdateSparse(Kernel):
    """(param, indices, rows, lr[, velocity]; momentum=0, nesterov=0, weight_decay=0)
    -> (new_param[, new_velocity]): SGDUpdate on the rows a row-sparse gradient names
    (GatherGradSparse's outputs), every other row of param and velocity unchanged. With
    momentum 0 and weight_decay 0 that is exactly SGDUpdate with the dense gradient (a row
    no index names has gradient 0); with either, it is the lazy variant (see the module
    docstring). Output 0 may be param's storage, output 1 velocity's (`in_place`)."""

    min_inputs, max_inputs = 4, 5
    in_place = ((0, 0), (1, 4))

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        sgd_attrs(self)
        want = 5 if self.momentum else 4
        if len(inputs) != want or inputs[-1] is None:
            needs = "(param, indices, rows, lr" + (", velocity)" if self.momentum else ")")
            raise self.fail(f"momentum={self.momentum} takes {want} inputs {needs}, got {len(inputs)}")
        param, indices, rows, lr = inputs[:4]
        require_sparse_grad(self, param, indices, rows)
        require_state(self, param, inputs[4:], ["velocity"][: want - 4])
        require_scalar(self, lr, FLOAT_KINDS, "lr")
        return [param] * (want - 3)

    def run(self, inputs, outputs):
        param, indices, rows, lr = inputs[:4]
        dtype = param.dtype.type
        rate = dtype(learning_rate(self, lr))
        at, g = sparse_rows(self, indices, rows, param.shape[0])
        new_param = start_from(outputs[0], param)
        if self.weight_decay:
            g = g + dtype(self.weight_decay) * param[at]
        step = g
        if self.momentum:
            new_velocity = start_from(scratch_outputs(outputs, 2, param)[1], inputs[4])
            momentum = dtype(self.momentum)
            v = inputs[4][at] * momentum + g
            new_velocity[at] = v
            step = g + momentum * v if self.nesterov else v
        new_param[at] = param[at] - step * rate


@register("AdamUpdateSparse", since=1, domain=TRAINING)
class AdamUpdateSparse(Kernel):
    """(param, indices, rows, lr, m, v, step; beta1=0.9, beta2=0.999, epsilon=1e-8,
    weight_decay=0, decoupled=0) -> (new_param, new_m, new_v): AdamUpdate (with its bias
    correction by the global step) on the rows a row-sparse gradient names (GatherGradSparse's
    outputs); every other row of param, m and v is unchanged, as in PyTorch's SparseAdam and
    TensorFlow's LazyAdam, which differs from dense Adam (that decays every row's moments and
    moves rows whose gradient is 0). weight_decay, L2 (decoupled=0) or AdamW's (decoupled=1),
    applies to the touched rows only. Outputs 0, 1, 2 may be the storage of param, m, v
    (`in_place`)."""

    min_inputs = max_inputs = 7
    in_place = ((0, 0), (1, 4), (2, 5))

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        param, indices, rows, lr, m, v, step = inputs
        self.beta1 = bounded_attr(self, "beta1", 0.9, 0.0, 1.0)
        self.beta2 = bounded_attr(self, "beta2", 0.999, 0.0, 1.0)
        self.epsilon = bounded_attr(self, "epsilon", 1e-8, 0.0)
        self.weight_decay = bounded_attr(self, "weight_decay", 0.0, 0.0)
        self.decoupled = flag_attr(self, "decoupled")
        require_sparse_grad(self, param, indices, rows)
        require_state(self, param, [m, v], ["m", "v"])
        require_scalar(self, lr, FLOAT_KINDS, "lr")
        require_scalar(self, step, "fiu", "step")
        return [param, param, param]

    def run(self, inputs, outputs):
        param, indices, rows, lr, m, v, step = inputs
        dtype = param.dtype.type
        rate = learning_rate(self, lr)
        t = steps_taken(self, step) + 1
        at, g = sparse_rows(self, indices, rows, param.shape[0])
        new_param, new_m, new_v = scratch_outputs(outputs, 3, param)
        new_param, new_m, new_v = start_from(new_param, param), start_from(new_m, m), start_from(new_v, v)
        p = param[at]
        if self.weight_decay and not self.decoupled:
            g = g + dtype(self.weight_decay) * p
        m_rows = m[at] * dtype(self.beta1) + dtype(1 - self.beta1) * g
        v_rows = v[at] * dtype(self.beta2) + dtype(1 - self.beta2) * np.square(g)
        denominator = np.sqrt(v_rows / dtype(1 - self.beta2**t)) + dtype(self.epsilon)
        moved = (m_rows / dtype(1 - self.beta1**t)) / denominator * dtype(rate)
        if self.weight_decay and self.decoupled:
            p = p * dtype(1 - rate * self.weight_decay)
        new_m[at], new_v[at], new_param[at] = m_rows, v_rows, p - moved

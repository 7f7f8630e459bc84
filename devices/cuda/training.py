"""The cuda backend's training ops (domain "edgerun"): what the "train" signature of a
make_trainable model runs after its forward pass, on float32 / float64.

    SGDUpdate, AdamUpdate             one thread per parameter element
    ReluGrad, LeakyReluGrad,          one thread per element
    SigmoidGrad, TanhGrad
    SoftmaxCrossEntropy, Accuracy     one thread per row, then slots of threads sum the rows
    SoftmaxCrossEntropyGrad           one thread per row (max, sum of exponentials), then per element
    GemmGrad                          dA, dB as GemmPlan products (devices.cuda.gemm); dC summed per element
    ConvGrad (2-D)                    im2col of a chunk of images into (C*K, images*positions) columns:
                                      dW = dY @ columns^T and W^T @ dY per group (GemmPlan); dX gathers
                                      those column gradients (col2im, one thread per input element,
                                      no atomics); dB sums dY per channel. Depthwise: no GEMM, dW and
                                      dB summed by slots of threads, dX gathered per input element
    MaxPoolGrad (2-D)                 the winner of each window, then one thread per input element
                                      adding dY of the windows it won, in output order
    GlobalAveragePoolGrad, ReshapeLike

Arithmetic follows the reference kernels (runtime.kernels.optimizers, activations, losses,
linalg, conv, pool, global_pool) operation by operation in the input dtype, constants cast to
it as they cast them; sums may add in another order. A device run cannot raise, so the data the
reference refuses with an InputError (a negative or non-finite learning rate or Adam step, a
class label out of range) is checked on the host before the run (a DeviceRun's `check`, see
devices.cuda.claims), with the reference's own checks and messages; a step whose learning rate
or labels are computed on the device (not known on the host before the run) stays on the host.
Should bad values reach a kernel anyway, it does no harm: a bad rate leaves the parameter and
its state unchanged, a bad label gives a NaN loss and a zero gradient row.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import cache
from typing import Any

import numba
import numpy as np
from numba import cuda

from edgerun.devices.cuda.claims import (
    FLOATS,
    THREADS_PER_BLOCK,
    DeviceRun,
    LaunchContext,
    StepSpec,
    blocks_for,
    claims,
)
from edgerun.devices.cuda.gemm import GemmPlan
from edgerun.runtime.kernels.conv import conv_window
from edgerun.runtime.kernels.losses import check_label_range
from edgerun.runtime.kernels.optimizers import learning_rate, steps_taken

MAX_SLOTS = 1024  # most threads that sum one row (_RowSums)
COLUMN_BUDGET = 1 << 22  # elements of ConvGrad's column scratch; images run in chunks that fit it
RELU, LEAKY_RELU, SIGMOID, TANH = range(4)


def _floats(arrays: Sequence[np.ndarray | None]) -> bool:
    """Every present array float32 or float64, of one dtype, none empty."""
    present = [a for a in arrays if a is not None]
    return len({a.dtype for a in present}) == 1 and present[0].dtype in FLOATS and min(a.size for a in present) > 0


def _flat(array: Any) -> Any:
    return array.reshape(array.size)


def _launch(kernel: Any, n: int, ctx: LaunchContext, *args: Any) -> None:
    """claims.launch_1d, with blocks of fewer threads (whole warps) for fewer than
    THREADS_PER_BLOCK items: the small launches of a train step stay cheap in the simulator."""
    if n > 0:
        threads = min(THREADS_PER_BLOCK, -(-n // 32) * 32)
        kernel[blocks_for(n, threads), threads, ctx.stream](*args)


# ----------------------------------------------------------------------------- optimizers
@cache
def _optimizer_kernels(dtype: np.dtype) -> tuple[Any, Any]:
    """(sgd, adam) update kernels for parameters of `dtype` (they cast scalars to it)."""
    element, f64 = numba.from_dtype(dtype), numba.float64

    @cuda.jit
    def sgd(param, grad, lr, velocity, new_param, new_velocity, momentum, weight_decay, decay, use_momentum,
            nesterov):  # pragma: no cover - device
        """runtime.kernels.optimizers.SGDUpdate over flat arrays (velocity unused without momentum)."""
        rate_in = f64(lr[0])
        keep = not (rate_in >= 0 and rate_in - rate_in == 0)  # negative, NaN or inf: no update
        rate = element(rate_in)
        i = cuda.grid(1)
        stride = cuda.gridsize(1)
        while i < param.size:
            p = param[i]
            g = grad[i] + weight_decay * p if decay else grad[i]
            step = g
            if use_momentum:
                v0 = velocity[i]
                v = v0 * momentum + g
                step = g + momentum * v if nesterov else v
                new_velocity[i] = v0 if keep else v
            new_param[i] = p if keep else p - step * rate
            i += stride

    @cuda.jit
    def adam(param, grad, lr, m, v, taken, new_param, new_m, new_v, betas, constants, l2,
             decoupled):  # pragma: no cover - device
        """runtime.kernels.optimizers.AdamUpdate over flat arrays; betas (beta1, beta2, weight_decay)
        in float64, constants (beta1, 1 - beta1, beta2, 1 - beta2, epsilon, weight_decay) in dtype."""
        rate_in, done = f64(lr[0]), f64(taken[0])
        keep = not (rate_in >= 0 and rate_in - rate_in == 0 and done >= 0 and done - done == 0)
        t = done + 1.0
        c1, c2 = element(1.0 - betas[0] ** t), element(1.0 - betas[1] ** t)
        rate, shrink = element(rate_in), element(1.0 - rate_in * betas[2])
        i = cuda.grid(1)
        stride = cuda.gridsize(1)
        while i < param.size:
            p, m0, v0 = param[i], m[i], v[i]
            g = grad[i] + constants[5] * p if l2 else grad[i]
            mm = m0 * constants[0] + constants[1] * g
            vv = v0 * constants[2] + constants[3] * (g * g)
            moved = (mm / c1) / (element(math.sqrt(vv / c2)) + constants[4]) * rate
            base = p * shrink if decoupled else p
            new_param[i] = p if keep else base - moved
            new_m[i] = m0 if keep else mm
            new_v[i] = v0 if keep else vv
            i += stride

    return sgd, adam


def _spare_outputs(step: StepSpec, count: int) -> list:
    """Scratch for the trailing outputs of `count` (shaped like the parameter, flat) that the
    node omits, as the reference's scratch_outputs."""
    param = step.inputs[0]
    return [cuda.device_array(param.size, param.dtype) for _ in range(count - len(step.outputs))]


@claims("SGDUpdate", domain="edgerun")
def sgd_update_claim(step: StepSpec) -> DeviceRun | None:
    """Dense SGD (plain, momentum, nesterov, weight_decay) of a float32 / float64 parameter, the
    learning rate a float32 / float64 scalar. Refuses float16 and empty parameters."""
    k = step.kernel
    param, grad, lr = step.inputs[:3]
    if not _floats([param, grad, *step.inputs[3:], *step.outputs]) or lr.dtype not in FLOATS:
        return None
    if not step.host_before_run(2):  # the learning rate is checked on the host before the run
        return None
    sgd = _optimizer_kernels(param.dtype)[0]
    n, dtype, use_momentum = param.size, param.dtype.type, bool(k.momentum)
    settings = (dtype(k.momentum), dtype(k.weight_decay), bool(k.weight_decay), use_momentum, bool(k.nesterov))
    spare = _spare_outputs(step, 2 if use_momentum else 1)

    def run(ins: list, outs: list, ctx: LaunchContext) -> None:
        new = [_flat(o) for o in outs] + spare
        v, new_v = (_flat(ins[3]), new[1]) if use_momentum else new[:1] * 2
        _launch(sgd, n, ctx, _flat(ins[0]), _flat(ins[1]), ins[2].reshape(1), v, new[0], new_v, *settings)

    run.check = lambda host: learning_rate(k, host[2])
    return run


@claims("AdamUpdate", domain="edgerun")
def adam_update_claim(step: StepSpec) -> DeviceRun | None:
    """Dense Adam and AdamW (decoupled) of a float32 / float64 parameter, with any weight_decay;
    the learning rate a float32 / float64 scalar, the step an integer or float32 / float64 one.
    Refuses float16 and empty parameters."""
    k = step.kernel
    param, grad, lr, m, v, taken = step.inputs
    if not _floats([param, grad, m, v, *step.outputs]) or lr.dtype not in FLOATS:
        return None
    if taken.dtype.kind not in "iu" and taken.dtype not in FLOATS:
        return None
    if not (step.host_before_run(2) and step.host_before_run(5)):  # checked on the host before the run
        return None
    adam = _optimizer_kernels(param.dtype)[1]
    n, dtype = param.size, param.dtype.type
    betas = cuda.to_device(np.array([k.beta1, k.beta2, k.weight_decay], np.float64))
    constants = cuda.to_device(np.array([dtype(k.beta1), dtype(1 - k.beta1), dtype(k.beta2), dtype(1 - k.beta2),
                                         dtype(k.epsilon), dtype(k.weight_decay)], param.dtype))
    l2, decoupled = bool(k.weight_decay) and not k.decoupled, bool(k.weight_decay) and bool(k.decoupled)
    spare = _spare_outputs(step, 3)

    def run(ins: list, outs: list, ctx: LaunchContext) -> None:
        _launch(adam, n, ctx, _flat(ins[0]), _flat(ins[1]), ins[2].reshape(1), _flat(ins[3]), _flat(ins[4]),
                ins[5].reshape(1), *[_flat(o) for o in outs], *spare, betas, constants, l2, decoupled)

    def check(host: list) -> None:
        learning_rate(k, host[2])
        steps_taken(k, host[5])

    run.check = check
    return run


# ----------------------------------------------------------------------------- activation gradients
@cuda.jit
def _activation_grad_kernel(dy, t, dx, code, alpha, one, zero):  # pragma: no cover - device
    """dx = the gradient of activation `code` from dy and t (X for Relu / LeakyRelu, Y for
    Sigmoid / Tanh), as runtime.kernels.activations computes it."""
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    while i < dx.size:
        g, v = dy[i], t[i]
        if code == RELU:
            r = g if v > zero else zero
        elif code == LEAKY_RELU:
            r = g if v > zero else g * alpha
        elif code == SIGMOID:
            r = (one - v) * v * g
        else:
            r = (one - v * v) * g
        dx[i] = r
        i += stride


def _activation_grad(step: StepSpec, code: int) -> DeviceRun | None:
    if not _floats([*step.inputs, *step.outputs]):
        return None
    dtype, n = step.outputs[0].dtype.type, step.outputs[0].size
    constants = (code, dtype(getattr(step.kernel, "alpha", 0.0)), dtype(1), dtype(0))

    def run(ins: list, outs: list, ctx: LaunchContext) -> None:
        _launch(_activation_grad_kernel, n, ctx, _flat(ins[0]), _flat(ins[1]), _flat(outs[0]), *constants)

    return run


@claims("ReluGrad", domain="edgerun")
def relu_grad_claim(step: StepSpec) -> DeviceRun | None:
    """dY where X > 0, else 0; float32 / float64. Refuses float16 and empty tensors."""
    return _activation_grad(step, RELU)


@claims("LeakyReluGrad", domain="edgerun")
def leaky_relu_grad_claim(step: StepSpec) -> DeviceRun | None:
    """dY where X > 0, else alpha * dY; float32 / float64. Refuses float16 and empty tensors."""
    return _activation_grad(step, LEAKY_RELU)


@claims("SigmoidGrad", domain="edgerun")
def sigmoid_grad_claim(step: StepSpec) -> DeviceRun | None:
    """dY * Y * (1 - Y); float32 / float64. Refuses float16 and empty tensors."""
    return _activation_grad(step, SIGMOID)


@claims("TanhGrad", domain="edgerun")
def tanh_grad_claim(step: StepSpec) -> DeviceRun | None:
    """dY * (1 - Y^2); float32 / float64. Refuses float16 and empty tensors."""
    return _activation_grad(step, TANH)


# ----------------------------------------------------------------------------- sums of rows
@cuda.jit
def _slot_sums_kernel(values, partial, rows, length, slots, zero):  # pragma: no cover - device
    """partial[r * slots + s] = sum of values[r * length + j] over j = s, s + slots, ...: adjacent
    threads read adjacent values."""
    i = cuda.grid(1)
    while i < rows * slots:
        r, s = i // slots, i % slots
        acc = zero
        for j in range(s, length, slots):
            acc += values[r * length + j]
        partial[i] = acc
        i += cuda.gridsize(1)


@cuda.jit
def _row_totals_kernel(partial, out, slots, divisor, accumulate, zero):  # pragma: no cover - device
    """out[r] = sum(partial[r * slots: (r + 1) * slots]) / divisor, added to out[r] with `accumulate`."""
    r = cuda.grid(1)
    while r < out.size:
        acc = zero
        for s in range(slots):
            acc += partial[r * slots + s]
        total = acc / divisor
        out[r] = out[r] + total if accumulate else total
        r += cuda.gridsize(1)


class _RowSums:
    """out[r] (+)= the sum of row r of a flat (rows, length) array, divided by a divisor, in two
    launches and without shared memory: `slots` threads per row (each adding at least 32 values)
    then one thread per row. Made in a claim for rows of at most `length` values: it allocates
    the partial sums."""

    def __init__(self, rows: int, length: int, dtype: np.dtype) -> None:
        self.rows, self.slots = rows, max(1, min(MAX_SLOTS, length // 32))
        self.partial = cuda.device_array(rows * self.slots, dtype)
        self.zero = np.dtype(dtype).type(0)

    def run(self, values: Any, length: int, out: Any, divisor: Any, ctx: LaunchContext,
            accumulate: bool = False) -> None:
        _launch(_slot_sums_kernel, self.rows * self.slots, ctx, values, self.partial, self.rows, length, self.slots,
                self.zero)
        _launch(_row_totals_kernel, self.rows, ctx, self.partial, out, self.slots, divisor, accumulate, self.zero)


# ----------------------------------------------------------------------------- softmax cross-entropy
@cache
def _loss_kernels(dtype: np.dtype) -> tuple[Any, Any, Any, Any, Any]:
    """(row losses for class indices, row losses for float targets, row statistics, gradient for
    class indices, gradient for float targets) over (N, C) logits of `dtype`."""
    element = numba.from_dtype(dtype)

    @cuda.jit(device=True)
    def stats(logits, r):  # pragma: no cover - device
        """(max, sum of exp(x - max)) of row r; NaN when the row holds one."""
        top = logits[r, 0]
        for j in range(1, logits.shape[1]):
            v = logits[r, j]
            if v > top or v != v:
                top = v
        total = element(0)
        for j in range(logits.shape[1]):
            total += element(math.exp(logits[r, j] - top))
        return top, total

    @cuda.jit
    def index_losses(logits, labels, losses, nan):  # pragma: no cover - device
        """losses[r] = log(sum(exp(x - max))) - (x[label] - max); NaN for a label out of range."""
        r = cuda.grid(1)
        while r < losses.size:
            top, total = stats(logits, r)
            label = labels[r]
            if 0 <= label < logits.shape[1]:
                losses[r] = element(math.log(total)) - (logits[r, label] - top)
            else:
                losses[r] = nan
            r += cuda.gridsize(1)

    @cuda.jit
    def target_losses(logits, targets, losses):  # pragma: no cover - device
        """losses[r] = -sum(target * ((x - max) - log(sum(exp(x - max)))))."""
        r = cuda.grid(1)
        while r < losses.size:
            top, total = stats(logits, r)
            log_sum = element(math.log(total))
            acc = element(0)
            for j in range(logits.shape[1]):
                acc += targets[r, j] * ((logits[r, j] - top) - log_sum)
            losses[r] = -acc
            r += cuda.gridsize(1)

    @cuda.jit
    def row_stats(logits, row_stats_out):  # pragma: no cover - device
        """row_stats_out[r] = (max, sum of exp(x - max)) of row r."""
        r = cuda.grid(1)
        while r < logits.shape[0]:
            top, total = stats(logits, r)
            row_stats_out[r, 0], row_stats_out[r, 1] = top, total
            r += cuda.gridsize(1)

    @cuda.jit
    def index_grad(dloss, logits, labels, row, out, count):  # pragma: no cover - device
        """out = dloss / N * (softmax(logits) - one_hot(label)), row holding row_stats; 0 in a row
        whose label is out of range."""
        share = dloss[0] / count
        classes = logits.shape[1]
        i = cuda.grid(1)
        while i < out.size:
            r, j = i // classes, i % classes
            label = labels[r]
            if 0 <= label < classes:
                g = element(math.exp(logits[r, j] - row[r, 0])) * (share / row[r, 1])
                out[r, j] = g - share if j == label else g
            else:
                out[r, j] = element(0)
            i += cuda.gridsize(1)

    @cuda.jit
    def target_grad(dloss, logits, targets, row, out, count):  # pragma: no cover - device
        """out = (softmax(logits) - targets) * dloss / N, row holding row_stats."""
        share = dloss[0] / count
        classes = logits.shape[1]
        i = cuda.grid(1)
        while i < out.size:
            r, j = i // classes, i % classes
            out[r, j] = (element(math.exp(logits[r, j] - row[r, 0])) / row[r, 1] - targets[r, j]) * share
            i += cuda.gridsize(1)

    return index_losses, target_losses, row_stats, index_grad, target_grad


@claims("SoftmaxCrossEntropy", domain="edgerun")
def softmax_cross_entropy_claim(step: StepSpec) -> DeviceRun | None:
    """The mean softmax cross-entropy of float32 / float64 (N, C) logits, labels integer class
    indices (N,) or float targets (N, C). Refuses float16."""
    logits, labels = step.inputs
    if not _floats([logits, step.outputs[0]]):
        return None
    n, dtype = logits.shape[0], logits.dtype
    index_losses, target_losses = _loss_kernels(dtype)[:2]
    losses, sums = cuda.device_array(n, dtype), _RowSums(1, n, dtype)
    nan, count, indices = dtype.type(math.nan), dtype.type(n), step.kernel.indices
    if indices and not step.host_before_run(1):  # labels are checked on the host before the run
        return None

    def run(ins: list, outs: list, ctx: LaunchContext) -> None:
        if indices:
            _launch(index_losses, n, ctx, ins[0], ins[1], losses, nan)
        else:
            _launch(target_losses, n, ctx, ins[0], ins[1], losses)
        sums.run(losses, n, outs[0].reshape(1), count, ctx)

    if indices:
        run.check = _label_check(step.kernel, 1, logits.shape[1])
    return run


def _label_check(kernel: Any, index: int, classes: int) -> Any:
    """The host kernel's InputError for a class label outside [0, classes), before the run."""
    return lambda host: check_label_range(kernel, host[index], classes)


@claims("SoftmaxCrossEntropyGrad", domain="edgerun")
def softmax_cross_entropy_grad_claim(step: StepSpec) -> DeviceRun | None:
    """dloss * (softmax(logits) - target) / N for float32 / float64 (N, C) logits, labels class
    indices (N,) or float targets (N, C). Refuses float16."""
    logits = step.inputs[1]
    if not _floats([step.inputs[0], logits, step.outputs[0]]):
        return None
    row_stats, index_grad, target_grad = _loss_kernels(logits.dtype)[2:]
    kernel = index_grad if step.kernel.indices else target_grad
    if step.kernel.indices and not step.host_before_run(2):  # labels are checked on the host before the run
        return None
    (n, classes), dtype = logits.shape, logits.dtype
    rows, count = cuda.device_array((n, 2), dtype), dtype.type(n)

    def run(ins: list, outs: list, ctx: LaunchContext) -> None:
        _launch(row_stats, n, ctx, ins[1], rows)
        _launch(kernel, n * classes, ctx, ins[0].reshape(1), ins[1], ins[2], rows, outs[0], count)

    if step.kernel.indices:
        run.check = _label_check(step.kernel, 2, classes)
    return run


@cuda.jit(device=True)
def _argmax(x, r):  # pragma: no cover - device
    """numpy.argmax of row r: the first maximum, or the first NaN."""
    best, at = x[r, 0], 0
    for j in range(1, x.shape[1]):
        v = x[r, j]
        if best != best:
            break
        if v > best or v != v:
            best, at = v, j
    return at


@cuda.jit
def _index_hits(logits, labels, hits):  # pragma: no cover - device
    """hits[r] = 1.0 where argmax(logits[r]) == labels[r], else 0.0; NaN for a label out of range."""
    r = cuda.grid(1)
    while r < hits.size:
        label = labels[r]
        if 0 <= label < logits.shape[1]:
            hits[r] = 1.0 if _argmax(logits, r) == label else 0.0
        else:
            hits[r] = math.nan
        r += cuda.gridsize(1)


@cuda.jit
def _target_hits(logits, targets, hits):  # pragma: no cover - device
    """hits[r] = 1.0 where argmax(logits[r]) == argmax(targets[r]), else 0.0."""
    r = cuda.grid(1)
    while r < hits.size:
        hits[r] = 1.0 if _argmax(logits, r) == _argmax(targets, r) else 0.0
        r += cuda.gridsize(1)


@claims("Accuracy", domain="edgerun")
def accuracy_claim(step: StepSpec) -> DeviceRun | None:
    """The float32 fraction of rows of float32 / float64 (N, C) logits whose argmax is the label
    (class indices (N,) or the argmax of float targets (N, C)). Refuses float16 logits."""
    logits, labels = step.inputs
    if logits.dtype not in FLOATS or labels.dtype.kind not in "iuf" or logits.size == 0:
        return None
    if step.kernel.indices and not step.host_before_run(1):  # labels are checked on the host before the run
        return None
    n = logits.shape[0]
    hits, sums = cuda.device_array(n, np.float64), _RowSums(1, n, np.float64)
    kernel, count = (_index_hits if step.kernel.indices else _target_hits), np.float64(n)

    def run(ins: list, outs: list, ctx: LaunchContext) -> None:
        _launch(kernel, n, ctx, ins[0], ins[1], hits)
        sums.run(hits, n, outs[0].reshape(1), count, ctx)

    if step.kernel.indices:
        run.check = _label_check(step.kernel, 1, logits.shape[1])
    return run


# ----------------------------------------------------------------------------- GemmGrad
@cuda.jit
def _sum_to_kernel(dy, dc, rows_all, cols_all, beta, scale, zero):  # pragma: no cover - device
    """dc (rows, cols) = dy (M, N) summed over M where rows_all, over N where cols_all; times
    beta with `scale`."""
    m, n = dy.shape
    cols = 1 if cols_all else n
    i = cuda.grid(1)
    while i < dc.size:
        ci, cj = i // cols, i % cols
        acc = zero
        for r in range(m if rows_all else 1):
            for s in range(n if cols_all else 1):
                acc += dy[r if rows_all else ci, s if cols_all else cj]
        dc[i] = acc * beta if scale else acc
        i += cuda.gridsize(1)


@claims("GemmGrad", domain="edgerun")
def gemm_grad_claim(step: StepSpec) -> DeviceRun | None:
    """(dA, dB[, dC]) of a float32 / float64 Gemm with any transA, transB, alpha, beta and C of
    any shape that broadcasts to (M, N). Refuses float16 and empty tensors."""
    k = step.kernel
    dy, a, b = step.inputs[:3]
    c = step.inputs[3] if len(step.inputs) > 3 else None
    if not _floats([dy, a, b, c, *step.outputs]):
        return None
    dtype, alpha, beta = dy.dtype, float(k.alpha), float(k.beta)
    one = ([0], [0], dtype)
    if k.trans_a:  # dA = alpha * B' @ dY^T
        plan_a, order_a = GemmPlan(*one, trans_a=k.trans_b, trans_b=True, alpha=alpha), (2, 0)
    else:  # dA = alpha * dY @ B'^T
        plan_a, order_a = GemmPlan(*one, trans_b=not k.trans_b, alpha=alpha), (0, 2)
    if k.trans_b:  # dB = alpha * dY^T @ A'
        plan_b, order_b = GemmPlan(*one, trans_a=True, trans_b=k.trans_a, alpha=alpha), (0, 1)
    else:  # dB = alpha * A'^T @ dY
        plan_b, order_b = GemmPlan(*one, trans_a=not k.trans_a, alpha=alpha), (1, 0)
    c2 = (1,) * (2 - len(c.shape)) + c.shape if c is not None else (1, 1)
    sum_to = (c2[0] == 1, c2[1] == 1, dtype.type(beta), beta != 1, dtype.type(0))
    outputs = len(step.outputs)

    def run(ins: list, outs: list, ctx: LaunchContext) -> None:
        as3 = [x.reshape((1, *x.shape)) for x in ins[:3]]
        plan_a.run(as3[order_a[0]], as3[order_a[1]], outs[0].reshape((1, *outs[0].shape)), ctx)
        if outputs > 1:
            plan_b.run(as3[order_b[0]], as3[order_b[1]], outs[1].reshape((1, *outs[1].shape)), ctx)
        if outputs > 2:
            _launch(_sum_to_kernel, outs[2].size, ctx, ins[0], _flat(outs[2]), *sum_to)

    return run


# ----------------------------------------------------------------------------- ConvGrad
@cuda.jit
def _columns_kernel(x, cols, start, count, geometry, zero):  # pragma: no cover - device
    """cols[c * K + kh * kw_ + kw, b * P + oh * ow_ + ow] = x[start + b, c, ih, iw] for the `count`
    images from `start`, ih = oh * sh - pt + kh * dh (iw likewise), 0 in the padding."""
    oh_, ow_, kh_, kw_, sh, sw, dh, dw, pt, pl = geometry
    channels, h, w = x.shape[1], x.shape[2], x.shape[3]
    taps, positions = kh_ * kw_, oh_ * ow_
    width = count * positions
    i = cuda.grid(1)
    while i < channels * taps * width:
        col, row = i % width, i // width
        b, p, c, k = col // positions, col % positions, row // taps, row % taps
        ih = (p // ow_) * sh - pt + (k // kw_) * dh
        iw = (p % ow_) * sw - pl + (k % kw_) * dw
        cols[row, col] = x[start + b, c, ih, iw] if 0 <= ih < h and 0 <= iw < w else zero
        i += cuda.gridsize(1)


@cuda.jit
def _grad_rows_kernel(dy, rows, start, count):  # pragma: no cover - device
    """rows[m, b * P + p] = dy[start + b, m, p]: dY (N, M, P) of `count` images as (M, count * P)."""
    channels, positions = dy.shape[1], dy.shape[2]
    width = count * positions
    i = cuda.grid(1)
    while i < channels * width:
        m, col = i // width, i % width
        rows[m, col] = dy[start + col // positions, m, col % positions]
        i += cuda.gridsize(1)


@cuda.jit
def _col2im_kernel(dcols, dx, start, count, geometry, zero):  # pragma: no cover - device
    """dx[start + b, c, ih, iw] = the sum, over the taps (in kernel order) that read that input,
    of the column gradients dcols (C * K, count * P): im2col's adjoint as a gather."""
    oh_, ow_, kh_, kw_, sh, sw, dh, dw, pt, pl = geometry
    channels, h, w = dx.shape[1], dx.shape[2], dx.shape[3]
    taps, positions = kh_ * kw_, oh_ * ow_
    i = cuda.grid(1)
    while i < count * channels * h * w:
        iw, ih = i % w, (i // w) % h
        c, b = (i // (w * h)) % channels, i // (w * h * channels)
        acc = zero
        for kh in range(kh_):
            th = ih + pt - kh * dh
            if th >= 0 and th % sh == 0 and th // sh < oh_:
                for kw in range(kw_):
                    tw = iw + pl - kw * dw
                    if tw >= 0 and tw % sw == 0 and tw // sw < ow_:
                        acc += dcols[c * taps + kh * kw_ + kw, b * positions + (th // sh) * ow_ + tw // sw]
        dx[start + b, c, ih, iw] = acc
        i += cuda.gridsize(1)


@cuda.jit
def _add_kernel(out, part):  # pragma: no cover - device
    """out += part, flat."""
    i = cuda.grid(1)
    while i < out.size:
        out[i] += part[i]
        i += cuda.gridsize(1)


@cuda.jit
def _depthwise_weight_slots_kernel(dy, x, partial, geometry, slots, zero):  # pragma: no cover - device
    """partial[(m * K + k) * slots + s] = the sum over q = s, s + slots, ... < N * P (q = n * P + p)
    of dy[n, m, p] * x[n, m // mult, ih, iw], (ih, iw) where tap k of output p reads (nothing in
    the padding): slot s's share of dW[m, 0, k] of a depthwise conv, dY (N, M, P)."""
    oh_, ow_, kh_, kw_, sh, sw, dh, dw, pt, pl = geometry
    images, channels, positions = dy.shape
    h, w, mult, taps = x.shape[2], x.shape[3], channels // x.shape[1], kh_ * kw_
    i = cuda.grid(1)
    while i < channels * taps * slots:
        m, k, s = i // (taps * slots), (i // slots) % taps, i % slots
        acc = zero
        for q in range(s, images * positions, slots):
            b, p = q // positions, q % positions
            ih = (p // ow_) * sh - pt + (k // kw_) * dh
            iw = (p % ow_) * sw - pl + (k % kw_) * dw
            if 0 <= ih < h and 0 <= iw < w:
                acc += dy[b, m, p] * x[b, m // mult, ih, iw]
        partial[i] = acc
        i += cuda.gridsize(1)


@cuda.jit
def _channel_slots_kernel(dy, partial, slots, zero):  # pragma: no cover - device
    """partial[m * slots + s] = the sum of dy[n, m, p] over q = s, s + slots, ... < N * P (q = n * P + p)."""
    images, channels, positions = dy.shape
    i = cuda.grid(1)
    while i < channels * slots:
        m, s = i // slots, i % slots
        acc = zero
        for q in range(s, images * positions, slots):
            acc += dy[q // positions, m, q % positions]
        partial[i] = acc
        i += cuda.gridsize(1)


@cuda.jit
def _depthwise_input_kernel(dy, w, dx, geometry, zero):  # pragma: no cover - device
    """dx[n, c, ih, iw] = the sum, over the taps (in kernel order) that read it, of the sum over the
    channel's outputs m = c * mult + j of w[m, 0, kh, kw] * dy[n, m, oh, ow]: dX of a depthwise conv."""
    oh_, ow_, kh_, kw_, sh, sw, dh, dw, pt, pl = geometry
    channels, h, width = dx.shape[1], dx.shape[2], dx.shape[3]
    mult = w.shape[0] // channels
    i = cuda.grid(1)
    while i < dx.size:
        iw, ih = i % width, (i // width) % h
        c, b = (i // (width * h)) % channels, i // (width * h * channels)
        acc = zero
        for kh in range(kh_):
            th = ih + pt - kh * dh
            if th >= 0 and th % sh == 0 and th // sh < oh_:
                for kw in range(kw_):
                    tw = iw + pl - kw * dw
                    if tw >= 0 and tw % sw == 0 and tw // sw < ow_:
                        tap = zero
                        for m in range(c * mult, (c + 1) * mult):
                            tap += w[m, 0, kh, kw] * dy[b, m, th // sh, tw // sw]
                        acc += tap
        dx[b, c, ih, iw] = acc
        i += cuda.gridsize(1)


def _geometry(window: Any) -> Any:
    """A 2-D window's (oh, ow, kh, kw, sh, sw, dh, dw, pad_top, pad_left) on the device."""
    return cuda.to_device(np.array([*window.out_shape, *window.kernel, *window.strides, *window.dilations,
                                    *window.pads_begin], np.int64))


def _conv_grad_columns(x: np.ndarray, w: np.ndarray, group: int, window: Any, compute_dx: bool) -> DeviceRun:
    """ConvGrad through im2col: per chunk of images, columns (C * K, images * P) and dY as
    (M, images * P); dW_g = dY_g @ columns_g^T and dcols_g = W_g^T @ dY_g (GemmPlan), dX the
    col2im gather of dcols, dB the sums of dY's rows."""
    (n, c, h, wd), m, geometry = x.shape, w.shape[0], _geometry(window)
    positions, rows = math.prod(window.out_shape), c * math.prod(window.kernel)
    chunk = max(1, min(n, COLUMN_BUDGET // (rows * positions)))
    cols = cuda.device_array(rows * chunk * positions, x.dtype)
    grads = cuda.device_array(m * chunk * positions, x.dtype)
    part = cuda.device_array(w.size if chunk < n else 1, x.dtype)
    sums = _RowSums(m, chunk * positions, x.dtype)
    plan_w = GemmPlan(range(group), range(group), x.dtype, trans_b=True)  # dW_g = dY_g @ columns_g^T
    plan_x = GemmPlan(range(group), range(group), x.dtype, trans_a=True)  # dcols_g = W_g^T @ dY_g
    zero, one, w3 = x.dtype.type(0), x.dtype.type(1), (group, m // group, rows // group)

    def run(ins: list, outs: list, ctx: LaunchContext) -> None:
        dx, dw, *db = outs if compute_dx else [None, *outs]
        dy3 = ins[0].reshape(n, m, positions)
        for start in range(0, n, chunk):
            count = min(chunk, n - start)
            width = count * positions
            col, grad = cols[: rows * width].reshape(rows, width), grads[: m * width].reshape(m, width)
            _launch(_columns_kernel, rows * width, ctx, ins[1], col, start, count, geometry, zero)
            _launch(_grad_rows_kernel, m * width, ctx, dy3, grad, start, count)
            plan_w.run(grad.reshape(group, m // group, width), col.reshape(group, rows // group, width),
                       (dw if start == 0 else part).reshape(w3), ctx)
            if start > 0:
                _launch(_add_kernel, dw.size, ctx, _flat(dw), part)
            if db:
                sums.run(_flat(grad), width, db[0], one, ctx, accumulate=start > 0)
            if dx is not None:
                plan_x.run(ins[2].reshape(w3), grad.reshape(group, m // group, width),
                           col.reshape(group, rows // group, width), ctx)
                _launch(_col2im_kernel, count * c * h * wd, ctx, col, dx, start, count, geometry, zero)

    return run


def _conv_grad_depthwise(x: np.ndarray, w: np.ndarray, window: Any, compute_dx: bool) -> DeviceRun:
    """ConvGrad of a depthwise conv (one input channel per group) without GEMM or columns: dW and
    dB summed by slots of threads per weight (then per row), dX gathered per input element."""
    n, m, geometry = x.shape[0], w.shape[0], _geometry(window)
    positions, taps = math.prod(window.out_shape), math.prod(window.kernel)
    weight_sums, bias_sums = _RowSums(m * taps, n * positions, x.dtype), _RowSums(m, n * positions, x.dtype)
    zero, one = x.dtype.type(0), x.dtype.type(1)

    def run(ins: list, outs: list, ctx: LaunchContext) -> None:
        dx, dw, *db = outs if compute_dx else [None, *outs]
        dy3 = ins[0].reshape(n, m, positions)
        slots = weight_sums.slots
        _launch(_depthwise_weight_slots_kernel, m * taps * slots, ctx, dy3, ins[1], weight_sums.partial, geometry,
                slots, zero)
        _launch(_row_totals_kernel, m * taps, ctx, weight_sums.partial, _flat(dw), slots, one, False, zero)
        if db:
            slots = bias_sums.slots
            _launch(_channel_slots_kernel, m * slots, ctx, dy3, bias_sums.partial, slots, zero)
            _launch(_row_totals_kernel, m, ctx, bias_sums.partial, db[0], slots, one, False, zero)
        if dx is not None:
            _launch(_depthwise_input_kernel, dx.size, ctx, ins[0], ins[2], dx, geometry, zero)

    return run


@claims("ConvGrad", domain="edgerun")
def conv_grad_claim(step: StepSpec) -> DeviceRun | None:
    """(dX, dW[, dB]) of a 2-D NCHW float32 / float64 Conv with any strides, dilations, pads (auto_pad
    resolved), groups and batch; compute_dx=0 (no dX) too. Depthwise convs (one input channel per
    group, any channel multiplier) take a direct path, the rest im2col + GEMM. Refuses 1-D and
    3-D convolutions, float16 and empty tensors."""
    dy, x, w = step.inputs
    if x.ndim != 4 or not _floats([dy, x, w, *step.outputs]):
        return None
    group, window = conv_window(step.kernel, x, w, None)
    compute_dx = bool(step.kernel.compute_dx)
    if w.shape[1] == 1:
        return _conv_grad_depthwise(x, w, window, compute_dx)
    return _conv_grad_columns(x, w, group, window, compute_dx)


# ----------------------------------------------------------------------------- pools, reshape
@cuda.jit
def _pool_winners_kernel(x, winners, geometry, lowest):  # pragma: no cover - device
    """winners[o] = where in its plane (ih * w + iw) the window of output o has its first maximum
    in window order, as numpy.argmax over the padded window picks it (NaN wins); -1 when that is
    padding."""
    oh_, ow_, kh_, kw_, sh, sw, dh, dw, pt, pl = geometry
    h, w = x.shape[1], x.shape[2]
    i = cuda.grid(1)
    while i < winners.size:
        ow, oh, plane = i % ow_, (i // ow_) % oh_, i // (ow_ * oh_)
        best, at, first = lowest, -1, True
        for kh in range(kh_):
            for kw in range(kw_):
                ih, iw = oh * sh - pt + kh * dh, ow * sw - pl + kw * dw
                inside = 0 <= ih < h and 0 <= iw < w
                v = x[plane, ih, iw] if inside else lowest
                if first or (best == best and (v > best or v != v)):
                    best, at, first = v, (ih * w + iw if inside else -1), False
        winners[i] = at
        i += cuda.gridsize(1)


@cuda.jit
def _pool_scatter_kernel(dy, winners, dx, geometry, zero):  # pragma: no cover - device
    """dx[plane, ih, iw] = the sum of dy over the outputs whose window (ih, iw) won, in output order."""
    oh_, ow_, kh_, kw_, sh, sw, dh, dw, pt, pl = geometry
    h, w = dx.shape[1], dx.shape[2]
    i = cuda.grid(1)
    while i < dx.size:
        iw, ih, plane = i % w, (i // w) % h, i // (w * h)
        acc = zero
        for kh in range(kh_ - 1, -1, -1):  # taps backwards: outputs in increasing order
            th = ih + pt - kh * dh
            if th >= 0 and th % sh == 0 and th // sh < oh_:
                for kw in range(kw_ - 1, -1, -1):
                    tw = iw + pl - kw * dw
                    if tw >= 0 and tw % sw == 0 and tw // sw < ow_:
                        o = (plane * oh_ + th // sh) * ow_ + tw // sw
                        if winners[o] == ih * w + iw:
                            acc += dy[o]
        dx[plane, ih, iw] = acc
        i += cuda.gridsize(1)


@claims("MaxPoolGrad", domain="edgerun")
def max_pool_grad_claim(step: StepSpec) -> DeviceRun | None:
    """dX of a 2-D float32 / float64 MaxPool with any strides, dilations, pads, ceil_mode (all
    resolved by the reference prepare): dY goes to each window's first maximum. Refuses 1-D and
    3-D pools, float16 and empty tensors."""
    dy, x = step.inputs
    if x.ndim != 4 or not _floats([dy, x, *step.outputs]):
        return None
    geometry = _geometry(step.kernel.params.window)
    winners = cuda.device_array(dy.size, np.int64)
    planes = (x.shape[0] * x.shape[1], *x.shape[2:])
    lowest, zero = x.dtype.type(-math.inf), x.dtype.type(0)

    def run(ins: list, outs: list, ctx: LaunchContext) -> None:
        _launch(_pool_winners_kernel, winners.size, ctx, ins[1].reshape(planes), winners, geometry, lowest)
        _launch(_pool_scatter_kernel, outs[0].size, ctx, _flat(ins[0]), winners, outs[0].reshape(planes),
                  geometry, zero)

    return run


@cuda.jit
def _spread_kernel(dy, dx, plane, count):  # pragma: no cover - device
    """dx[i] = dy[i // plane] / count: one value per plane spread over it."""
    i = cuda.grid(1)
    while i < dx.size:
        dx[i] = dy[i // plane] / count
        i += cuda.gridsize(1)


@claims("GlobalAveragePoolGrad", domain="edgerun")
def global_average_pool_grad_claim(step: StepSpec) -> DeviceRun | None:
    """dY / (spatial size) over every position, for float32 / float64 inputs of any rank >= 3.
    Refuses float16 and empty tensors."""
    if not _floats([*step.inputs, *step.outputs]):
        return None
    dx = step.outputs[0]
    plane, count = math.prod(dx.shape[2:]), dx.dtype.type(step.kernel.count)

    def run(ins: list, outs: list, ctx: LaunchContext) -> None:
        _launch(_spread_kernel, outs[0].size, ctx, _flat(ins[0]), _flat(outs[0]), plane, count)

    return run


@cuda.jit
def _copy_kernel(src, dst):  # pragma: no cover - device
    i = cuda.grid(1)
    while i < dst.size:
        dst[i] = src[i]
        i += cuda.gridsize(1)


@claims("ReshapeLike", domain="edgerun")
def reshape_like_claim(step: StepSpec) -> DeviceRun | None:
    """dY copied into Like's shape, for boolean, integer and float tensors. Refuses other dtypes."""
    out = step.outputs[0]
    if out.dtype.kind not in "biuf" or out.dtype.itemsize > 8:
        return None
    n = out.size

    def run(ins: list, outs: list, ctx: LaunchContext) -> None:
        _launch(_copy_kernel, n, ctx, _flat(ins[0]), _flat(outs[0]))

    return run

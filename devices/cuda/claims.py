"""What the cuda backend runs on the GPU: the ops it claims and the contract of a device kernel.

The cuda backend runs a signature's prepared plan (runtime.plan): the host kernels prepare
every step (validate, infer shapes, build `kernel.params`) exactly as on the CPU, and the
backend then offers each step to the device kernels that claim its op. A claim looks at the
prepared step and returns a `DeviceRun` when it can run it on the GPU, None when it cannot
(the step then runs on the host, its inputs copied down and its outputs up):

    @claims("Relu")
    def relu(step: StepSpec) -> DeviceRun | None:
        if step.outputs[0].dtype not in FLOATS:
            return None
        n = step.outputs[0].size
        def run(ins, outs, ctx):
            launch_1d(_relu_kernel, n, ctx, ins[0].reshape(n), outs[0].reshape(n))
        return run

A DeviceRun gets device arrays (numba.cuda device arrays, C-contiguous, the shapes and dtypes
of `step.inputs` / `step.outputs`; None for an omitted optional input) and a LaunchContext;
it launches its work on `ctx.stream` and never synchronizes, allocates device memory or copies
to the host (a run must be capturable into a CUDA graph). Anything a claim needs beyond the
inputs (packed weights, scratch space) it makes once in the claim itself: weights with
`cuda.to_device`, scratch with `cuda.device_array`. Inputs whose values are known at prepare
time (weights, folded constants) are marked in `step.constant` and hold their data in
`step.inputs`; the others hold only shape and dtype there.

A kernel cannot raise, so bad data that the host kernel refuses (a label out of range, a
negative learning rate) is checked on the host before the run: a DeviceRun may carry a
`check(host_inputs)` attribute, called with the host arrays of the inputs that are on the host
before the run (signature inputs, variables, constants; `step.on_host` says which) and None for
the others, raising the host kernel's InputError. A claim whose check needs an input that is
not on the host before the run refuses the step (it then runs on the host, which checks).

Under numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1, how the suite runs without a GPU) the
same kernels run in Python threads: correct, and slow, so tests keep shapes small.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numba.core import config

from edgerun.runtime.graph import Node

FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
# Under the simulator every GPU thread is a Python thread: launches there are kept to a few
# threads that stride over the work (every kernel is a grid-stride loop), which also makes the
# suite exercise the striding that a large tensor needs on a real GPU.
SIMULATED = bool(config.ENABLE_CUDASIM)
THREADS_PER_BLOCK = 32 if SIMULATED else 256
MAX_BLOCKS = 2 if SIMULATED else 65_535  # grid-stride loops cover the rest


@dataclass
class StepSpec:
    """One prepared step of a plan, offered to a device kernel.

    `kernel` is the prepared host kernel (its `params` as the reference prepare built them);
    `inputs` / `outputs` are host arrays with the step's dtypes and shapes (None for an omitted
    optional input); `constant[i]` says input i is known at prepare time and holds its data.
    """

    node: Node
    kernel: Any
    inputs: list[np.ndarray | None]
    outputs: list[np.ndarray]
    constant: list[bool]
    on_host: list[bool] | None = None  # input i is on the host before the run (see DeviceRun's check)

    def host_before_run(self, index: int) -> bool:
        """Whether input `index` can be checked on the host before the run."""
        return bool(self.on_host and self.on_host[index])

    @property
    def op(self) -> str:
        return self.node.op_type

    def attr(self, name: str, default: Any = None) -> Any:
        """The node's attribute `name` (its Python value), `default` when absent."""
        attrs = getattr(self.node, "attrs", None) or {}
        return attrs.get(name, default)


class LaunchContext:
    """Where a device run launches its work: `stream`, a numba stream; `cupy_stream()` a
    context in which CuPy work (cuBLAS GEMM) goes to that same stream (a null context when
    CuPy is not in use)."""

    def __init__(self, stream: Any, cupy_stream: Any = None) -> None:
        self.stream = stream
        self._cupy_stream = cupy_stream

    def cupy_stream(self) -> contextlib.AbstractContextManager:
        return self._cupy_stream if self._cupy_stream is not None else contextlib.nullcontext()


DeviceRun = Callable[[list, list, LaunchContext], None]
Claim = Callable[[StepSpec], DeviceRun | None]

_CLAIMS: dict[tuple[str, str], Claim] = {}


def claims(op_type: str, domain: str = "") -> Callable[[Claim], Claim]:
    """Decorator: register `claim` for `op_type` (ONNX domain "" or "edgerun")."""

    def register(claim: Claim) -> Claim:
        _CLAIMS[(domain or "", op_type)] = claim
        return claim

    return register


def claim_for(node: Node) -> Claim | None:
    domain = "" if node.domain in ("", "ai.onnx") else node.domain
    return _CLAIMS.get((domain, node.op_type))


def claimed_ops() -> list[str]:
    """Every op a device kernel claims, as 'Op' or 'domain:Op'."""
    return sorted(claims_by_op())


def claims_by_op() -> dict[str, Claim]:
    """Every claim, by the op it claims ('Op' or 'domain:Op', as the kernel registry names ops)."""
    return {op if not domain else f"{domain}:{op}": claim for (domain, op), claim in sorted(_CLAIMS.items())}


def blocks_for(n: int, threads: int = THREADS_PER_BLOCK) -> int:
    """Blocks of `threads` for `n` work items (at least 1, at most MAX_BLOCKS: kernels use
    grid-stride loops)."""
    return max(1, min(MAX_BLOCKS, -(-n // threads)))


def launch_1d(kernel: Any, n: int, ctx: LaunchContext, *args: Any) -> None:
    """Launch a 1-D grid-stride `kernel(*args)` over `n` items on `ctx.stream`."""
    if n > 0:
        kernel[blocks_for(n), THREADS_PER_BLOCK, ctx.stream](*args)

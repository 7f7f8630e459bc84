"""Streams and CUDA graphs for the cuda backend: capture a run's launches once, replay them.

Batch-1 latency of a mobile CNN is bound by launching ~100 small kernels from Python; a CUDA
graph replays the whole sequence with one launch. Capture needs CuPy (its Stream's
begin_capture/end_capture and Graph.launch) and a real GPU; numba's launches join the capture
through `cuda.external_stream` on the same stream. Where that is missing (the simulator, no
CuPy) or a capture fails (an op that cannot be captured), runs launch step by step.

    stream, cupy_stream = make_stream()
    graph = capture(stream, ops)   # runs nothing yet; None when capture failed
    graph.replay(stream)
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Sequence
from typing import Any

from numba import cuda
from numba.core import config

_log = logging.getLogger("edgerun.devices.cuda")
ENABLED = True  # False: programs made from now on launch step by step (benchmarks/bench_gpu.py compares)
_cupy: Any = None
_cupy_checked = False


def cupy_module() -> Any:
    """CuPy when it imports and a real GPU is in use (never under the simulator), else None."""
    global _cupy, _cupy_checked
    if not _cupy_checked:
        _cupy_checked = True
        if not config.ENABLE_CUDASIM:
            try:
                _cupy = importlib.import_module("cupy")
            except Exception:  # noqa: BLE001 - CuPy missing or without its CUDA libraries
                _cupy = None
    return _cupy


def available() -> bool:
    """Whether runs can be captured into CUDA graphs here (and capture is ENABLED)."""
    return ENABLED and cupy_module() is not None


def make_stream() -> tuple[Any, Any]:
    """(numba stream, CuPy stream or None): one stream both libraries launch on."""
    cupy = cupy_module()
    if cupy is None:
        return cuda.stream(), None
    cupy_stream = cupy.cuda.Stream(non_blocking=True)
    return cuda.external_stream(cupy_stream.ptr), cupy_stream


class _Replay:
    def __init__(self, graph: Any, cupy_stream: Any) -> None:
        self.graph, self.cupy_stream = graph, cupy_stream

    def replay(self, stream: Any) -> None:  # noqa: ARG002 - the graph launches on its capture stream
        self.graph.launch(stream=self.cupy_stream)


class _StepByStep:
    def __init__(self, ops: Sequence[Callable[[], None]]) -> None:
        self.ops = list(ops)

    def replay(self, stream: Any) -> None:  # noqa: ARG002
        for op in self.ops:
            op()


def capture(stream: Any, ops: Sequence[Callable[[], None]], cupy_stream: Any = None) -> Any:
    """A replayable run of `ops` (each launches on `stream`): a CUDA graph when `cupy_stream`
    (the CuPy stream behind `stream`) can capture them, else one that launches step by step
    (said once in the log)."""
    if cupy_stream is None:
        return _StepByStep(ops)
    cupy_stream.synchronize()
    try:
        # a thread's first cuBLAS call creates its handle, which must not happen inside a capture
        cupy_module().cuda.device.get_cublas_handle()
        with cupy_stream:
            cupy_stream.begin_capture()
            try:
                for op in ops:
                    op()
            finally:
                graph = cupy_stream.end_capture()
        return _Replay(graph, cupy_stream)
    except Exception as exc:  # noqa: BLE001 - an op that cannot be captured: launch step by step
        _log.info(f"cuda: runs launch step by step (graph capture failed: {exc})")
        return _StepByStep(ops)

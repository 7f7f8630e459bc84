"""One loaded model version: its interpreters, settings, batcher and statistics.

A ServedModel is immutable once built; the repository swaps whole objects, so a request that
picked a version keeps it until it finishes even if the version is unloaded meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from edgerun.runtime.backends import AUTO, backend, select_backend
from edgerun.runtime.errors import EdgerunError, ErrorCode, InputError, MemoryBudgetError, WorkBudgetError
from edgerun.runtime.interpreter import Interpreter
from edgerun.serving import metrics
from edgerun.serving.batcher import Batcher
from edgerun.serving.config import WORK_BUDGET, ModelSettings, check_against
from edgerun.serving.errors import ServingError, invalid
from edgerun.serving.stats import ModelStats

WARM_MANY_ROWS = 64  # the batch a cheap model is also warmed up at (ServedModel.load)
WARM_MANY_ROWS_MAX_S = 0.02  # "cheap": its batch of one ran in at most this long

log = logging.getLogger("edgerun.serving")
SIGNATURE = "serving_default"
_CLOSING: set[asyncio.Task] = set()  # versions draining their batcher before the pool stops


class ServedModel:
    """A verified, warmed-up model version ready for traffic.

    Build it with `ServedModel.load`; `execute` runs a batch of decoded inputs. With one instance
    the model runs on the calling (event loop) thread; with more, on a pool of that many threads,
    each with its own Interpreter.
    """

    def __init__(self, settings: ModelSettings, version: int, interpreters: list[Interpreter], config) -> None:
        self.name = settings.name
        self.version = version
        self.version_str = str(version)
        self.settings = settings
        self.config = config
        self.interpreters = interpreters
        signature = interpreters[0].signatures[SIGNATURE]
        self.inputs = signature.inputs
        self.outputs = signature.outputs
        self.stats = ModelStats()
        self._free: queue.SimpleQueue[Interpreter] = queue.SimpleQueue()
        for it in interpreters:
            self._free.put(it)
        self._pool = ThreadPoolExecutor(len(interpreters), f"{self.name}-{version}") if len(interpreters) > 1 else None
        self.batcher = Batcher(self._run_rows, settings.batching) if settings.batching else None

    @classmethod
    def load(cls, settings: ModelSettings, version: int, path: Path, device: str = "auto") -> ServedModel:
        """Read, verify and warm up `path` (zero-filled runs per instance at batch 2, where the work
        budget allows it, then 1 twice, then WARM_MANY_ROWS where the second batch of one ran in
        at most WARM_MANY_ROWS_MAX_S and the budget allows it; the batches of more than one also
        read-only), on the config's device (`settings.device`) or else `device` (the server's
        --device; runtime.Interpreter's device names).

        The bytes are read into memory, so later changes to the file cannot disturb this version.
        Raises EdgerunError (bad model, no serving_default signature, a sequence (of tensors or maps)
        or optional input or output, config mismatch, a batch of one over the config's work_budget_macs) or OSError.
        """
        data = path.read_bytes()
        try:
            where = _device(settings.device or device)
            interpreters = [Interpreter(data, device=where, work_budget=settings.work_budget_macs)
                            for _ in range(settings.instances)]
        except WorkBudgetError as exc:
            raise WorkBudgetError(f"{exc} (parameter {WORK_BUDGET} of the model's config)") from None
        if SIGNATURE not in interpreters[0].signatures:
            raise EdgerunError(f"model has no {SIGNATURE!r} signature")
        signature = interpreters[0].signatures[SIGNATURE]
        for role, infos in (("input", signature.inputs), ("output", signature.outputs)):
            for name, info in infos.items():
                if info.kind != "tensor":  # KServe v2 carries tensors only
                    only = "serve tensors only" + (": export the classifier without ZipMap (skl2onnx option "
                                                   "{'zipmap': False})" if info.kind == "sequence_map" else "")
                    raise EdgerunError(f"model {role} {name!r} is a {info.kind} value: sequences and optionals "
                                       f"are not supported over KServe v2 ({only})")
        config = check_against(settings, signature.inputs, signature.outputs)
        for it in interpreters:  # batch 2 then 1: compiles kernels and plans before traffic
            took = None
            for rows in (2, 1, 1, WARM_MANY_ROWS):  # (the second batch of one times it, compiled)
                if rows == WARM_MANY_ROWS and (took is None or took > WARM_MANY_ROWS_MAX_S):
                    break  # (a cheap model only: a batch of many rows takes other compiled paths,
                    # numba's Gemm on its tiles among them, whose first compile held the event
                    # loop for 17 s on a request of 400 rows; a big model's batch of 2 has them)
                warm = {name: np.zeros([rows if d < 0 else d for d in info.shape], info.dtype)
                        for name, info in signature.inputs.items() if not info.has_default}
                start = time.perf_counter()
                try:
                    it.run(warm, signature=SIGNATURE)
                except WorkBudgetError:
                    if rows == 1:
                        raise
                    continue
                except MemoryBudgetError:  # (the extra batch of many rows only: a budget may not hold it)
                    if rows != WARM_MANY_ROWS:
                        raise
                    continue
                took = time.perf_counter() - start
                if rows != 1 and backend(it.backend).offload is None:
                    # read-only too, as gRPC's raw inputs arrive (numba compiles those apart; an
                    # offloading backend copies its inputs over: a run more costs 5 s on CUDA's
                    # simulator and gains nothing)
                    for value in warm.values():
                        value.flags.writeable = False
                    it.run(warm, signature=SIGNATURE)
        return cls(settings, version, interpreters, config)

    async def execute(self, arrays: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], float]:
        """Run one request's inputs (through the batcher if configured); returns all outputs and the
        seconds the request queued. ServingError INVALID_ARGUMENT if the model rejects the inputs,
        INTERNAL (message without details) if the model fails."""
        if self.batcher is not None and arrays:
            return await self.batcher.submit(arrays)
        rows = _rows(arrays)
        return await self._run_rows(arrays, rows), 0.0

    async def _run_rows(self, arrays: dict[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
        start = time.perf_counter()
        if self._pool is None:
            outputs = self._run(arrays)
        else:
            outputs = await asyncio.get_running_loop().run_in_executor(self._pool, self._run_pooled, arrays)
        seconds = time.perf_counter() - start
        self.stats.execution(rows, seconds)
        return outputs

    def _run_pooled(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        it = self._free.get()
        try:
            return self._run(arrays, it)
        finally:
            self._free.put(it)

    def _run(self, arrays: dict[str, np.ndarray], it: Interpreter | None = None) -> dict[str, np.ndarray]:
        try:
            return (it or self.interpreters[0]).run(arrays, signature=SIGNATURE)
        except (InputError, WorkBudgetError) as exc:  # the budget refuses before computing
            raise invalid(f"model {self.name!r}: {exc}") from None
        except Exception:
            log.exception("model %s version %s failed", self.name, self.version)
            raise ServingError(ErrorCode.INTERNAL,
                               f"model {self.name!r} version {self.version} failed to run") from None

    def close(self) -> None:
        """Publish the last statistics; flush what the batcher holds and stop the thread pool only
        once the batches in progress have finished (in the background when a loop is running)."""
        metrics.publish(self)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is None or self.batcher is None:
            self._shutdown_pool()
            return
        task = loop.create_task(self._close_after_drain())
        _CLOSING.add(task)
        task.add_done_callback(_CLOSING.discard)

    async def _close_after_drain(self) -> None:
        try:
            await self.batcher.drain()
        finally:
            self._shutdown_pool()
            metrics.publish(self)

    def _shutdown_pool(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False)


def _rows(arrays: dict[str, np.ndarray]) -> int:
    first = next(iter(arrays.values()), None)
    return int(first.shape[0]) if first is not None and first.ndim else 1


def _device(device: str) -> str:
    """An Interpreter device for a served model's: "host" (a config's KIND_CPU) is the best host
    backend, which device="auto" may not give on a machine with a GPU."""
    return select_backend(AUTO) if device == "host" else device

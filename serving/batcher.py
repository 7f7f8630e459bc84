"""Dynamic batching on the event loop: gather requests for up to `max_delay_s` or
`max_batch_size` rows, run them as one batch, split the outputs by rows.

Requests whose inputs differ in anything but the first dimension (dtype or trailing dims) go to
separate batches. All of this runs on one asyncio loop, so no locks are needed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import numpy as np

from edgerun.serving.errors import invalid

if TYPE_CHECKING:  # config imports the protos; keep this module importable without them
    from edgerun.serving.config import Batching

Runner = Callable[[dict[str, np.ndarray], int], Awaitable[dict[str, np.ndarray]]]


class _Pending:
    __slots__ = ("arrays", "rows", "future", "enqueued")

    def __init__(self, arrays: dict[str, np.ndarray], rows: int, future: asyncio.Future) -> None:
        self.arrays, self.rows, self.future, self.enqueued = arrays, rows, future, time.perf_counter()


class Batcher:
    """Queues requests per input layout and runs them together with `run(arrays, rows)`."""

    def __init__(self, run: Runner, settings: Batching) -> None:
        self._run = run
        self.settings = settings
        self._queues: dict[tuple, list[_Pending]] = {}
        self._timers: dict[tuple, asyncio.TimerHandle] = {}
        self._running: set[asyncio.Task] = set()

    async def submit(self, arrays: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], float]:
        """Queue one request (first dim = its rows, <= max_batch_size); returns its outputs and the
        seconds it waited. Raises whatever the batch run raised (every request of that batch does)."""
        loop = asyncio.get_running_loop()
        rows = batch_rows(arrays)
        key = tuple((name, a.dtype.str, a.shape[1:]) for name, a in sorted(arrays.items()))
        pending = _Pending(arrays, rows, loop.create_future())
        group = self._queues.setdefault(key, [])
        if group and sum(p.rows for p in group) + rows > self.settings.max_batch_size:
            self._flush(key)
            group = self._queues.setdefault(key, [])
        group.append(pending)
        if sum(p.rows for p in group) >= self.settings.max_batch_size:
            self._flush(key)
        elif key not in self._timers:
            self._timers[key] = loop.call_later(self.settings.max_delay_s, self._flush, key)
        return await pending.future

    def _flush(self, key: tuple) -> None:
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        group = self._queues.pop(key, [])
        if group:
            task = asyncio.get_running_loop().create_task(self._execute(group))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def drain(self, now: bool = False) -> None:
        """Wait until every queued request has run (when its batch fills or its delay ends; at once
        with `now`) and every batch in progress has finished."""
        while self._queues or self._running:
            if now:
                for key in list(self._queues):
                    self._flush(key)
            if self._running:
                await asyncio.gather(*list(self._running), return_exceptions=True)
            else:
                await asyncio.sleep(min(self.settings.max_delay_s, 0.01) or 0.001)

    async def _execute(self, group: list[_Pending]) -> None:
        started = time.perf_counter()
        rows = sum(p.rows for p in group)
        try:
            if len(group) == 1:
                outputs = await self._run(group[0].arrays, rows)
                parts = [outputs]
            else:
                names = group[0].arrays.keys()
                merged = {name: np.concatenate([p.arrays[name] for p in group]) for name in names}
                outputs = await self._run(merged, rows)
                bounds = np.cumsum([p.rows for p in group])[:-1]
                split = {name: np.split(array, bounds) for name, array in outputs.items()}
                parts = [{name: split[name][i] for name in outputs} for i in range(len(group))]
        except Exception as exc:
            if len(group) == 1:
                if not group[0].future.done():
                    group[0].future.set_exception(exc)
                return
            # one bad request must not fail the others: run each on its own, so only it fails
            for p in group:
                await self._execute_one(p, started)
            return
        for p, part in zip(group, parts, strict=True):
            if not p.future.done():
                p.future.set_result((part, started - p.enqueued))

    async def _execute_one(self, p: _Pending, started: float) -> None:
        try:
            outputs = await self._run(p.arrays, p.rows)
        except Exception as exc:
            if not p.future.done():
                p.future.set_exception(exc)
            return
        if not p.future.done():
            p.future.set_result((outputs, started - p.enqueued))


def batch_rows(arrays: dict[str, np.ndarray]) -> int:
    """The first dimension every input shares; InvalidArgument naming the input that differs (or if
    an input is a scalar or there are no inputs)."""
    rows, first = None, ""
    for name, array in arrays.items():
        if array.ndim == 0:
            raise invalid(f"input {name!r}: a batched model needs a batch dimension")
        if rows is None:
            rows, first = int(array.shape[0]), name
        elif array.shape[0] != rows:
            raise invalid(f"input {name!r}: batch size {array.shape[0]} differs from input {first!r} "
                          f"(batch size {rows}); every input needs the same first dimension")
    if rows is None:
        raise invalid("a batched request needs at least one input")
    return rows

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

if TYPE_CHECKING:  # config imports the protos; keep this module importable without them
    from serving.config import Batching

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

    async def submit(self, arrays: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], float]:
        """Queue one request (first dim = its rows, <= max_batch_size); returns its outputs and the
        seconds it waited. Raises whatever the batch run raised (every request of that batch does)."""
        loop = asyncio.get_running_loop()
        key = tuple((name, a.dtype.str, a.shape[1:]) for name, a in sorted(arrays.items()))
        rows = next(iter(arrays.values())).shape[0]
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
            asyncio.get_running_loop().create_task(self._execute(group))

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
        except Exception as exc:  # every request of the batch gets the batch's error
            for p in group:
                if not p.future.done():
                    p.future.set_exception(exc)
            return
        for p, part in zip(group, parts, strict=True):
            if not p.future.done():
                p.future.set_result((part, started - p.enqueued))

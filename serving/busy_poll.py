"""Busy polling for a worker's event loop: trade CPU for latency, as Linux's `busy_poll` does.

When the loop would block waiting for I/O, it first polls the selector without blocking for up to
`spin_s`. A request that arrives within that window is picked up without the thread (and, on a
virtual machine, the virtual CPU) going to sleep and being woken again, which on small models is a
large share of a request's latency. The cost is CPU: after each burst of activity the loop spins
for up to `spin_s` before it sleeps, so an idle server spins only once per timer wake-up. Off
(`spin_s` = 0) by default, since on battery-powered devices the CPU matters more.
"""

from __future__ import annotations

import asyncio
import selectors
import time


class BusyPollSelector(selectors.DefaultSelector):
    """The platform's default selector, spinning up to `spin_s` before each blocking select."""

    def __init__(self, spin_s: float) -> None:
        if spin_s < 0:
            raise ValueError(f"spin time must be >= 0 seconds, got {spin_s}")
        super().__init__()
        self.spin_s = spin_s

    def select(self, timeout: float | None = None) -> list:
        """As `selectors.BaseSelector.select`: events ready within `timeout` seconds (None: wait
        as long as it takes), polling without blocking for the first `spin_s` of that wait."""
        if self.spin_s <= 0 or (timeout is not None and timeout <= 0):
            return super().select(timeout)
        start = time.perf_counter()
        spin_end = start + (self.spin_s if timeout is None else min(self.spin_s, timeout))
        while True:
            ready = super().select(0)
            if ready:
                return ready
            now = time.perf_counter()
            if now >= spin_end:
                break
        if timeout is None:
            return super().select(None)
        remaining = timeout - (now - start)
        return super().select(remaining) if remaining > 0 else []


def loop_factory(spin_s: float):
    """A callable making event loops that busy-poll for `spin_s` (plain loops when it is 0), for
    `asyncio.Runner(loop_factory=...)`."""
    if spin_s <= 0:
        return asyncio.new_event_loop
    return lambda: asyncio.SelectorEventLoop(BusyPollSelector(spin_s))

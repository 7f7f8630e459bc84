"""Which asyncio event loop a worker runs: uvloop (libuv) where installed, else asyncio's own.

uvloop is optional (`pip install 'edgerun[serve-fast]'`): the server behaves the same on either
loop. Busy polling (`--busy-poll-us`) needs asyncio's selector loop, whose selector it replaces, so
it picks that loop whatever is installed.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Callable

from edgerun.serving.busy_poll import loop_factory as busy_poll_factory

CHOICES = ("auto", "asyncio", "uvloop")
INSTALL_HINT = "pip install 'edgerun[serve-fast]'"


def uvloop_installed() -> bool:
    return importlib.util.find_spec("uvloop") is not None


def check(kind: str, spin_s: float) -> None:
    """ValueError naming the problem if `kind` cannot run: unknown, uvloop missing, or uvloop asked
    for together with busy polling."""
    if kind not in CHOICES:
        raise ValueError(f"--event-loop must be one of {', '.join(CHOICES)}, got {kind!r}")
    if kind == "uvloop" and not uvloop_installed():
        raise ValueError(f"--event-loop uvloop needs the uvloop package: {INSTALL_HINT}")
    if kind == "uvloop" and spin_s > 0:
        raise ValueError("--busy-poll-us needs --event-loop asyncio (or auto): uvloop has no selector to poll")


def resolve(kind: str, spin_s: float) -> str:
    """'asyncio' or 'uvloop': what `kind` ('auto' = uvloop if installed, unless busy polling) runs."""
    if kind == "auto":
        return "uvloop" if spin_s <= 0 and uvloop_installed() else "asyncio"
    return kind


def loop_factory(kind: str = "auto", spin_s: float = 0.0) -> Callable[[], asyncio.AbstractEventLoop]:
    """A callable making the event loops `kind` names, for `asyncio.Runner(loop_factory=...)`;
    asyncio's loops busy-poll for `spin_s` seconds (0 = off). ValueError as `check`."""
    check(kind, spin_s)
    if resolve(kind, spin_s) == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return busy_poll_factory(spin_s)

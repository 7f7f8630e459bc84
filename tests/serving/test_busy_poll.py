"""Busy polling: the selector still reports exactly the ready events and honours timeouts, and an
event loop built on it serves real sockets."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from edgerun.serving.busy_poll import BusyPollSelector, loop_factory


def test_ready_events_are_reported_during_and_after_the_spin() -> None:
    left, right = socket.socketpair()
    selector = BusyPollSelector(0.005)
    try:
        selector.register(left, 1)  # EVENT_READ
        assert selector.select(0.05) == []  # nothing to read: empty after the timeout
        right.send(b"x")
        assert [key.fileobj for key, _ in selector.select(1.0)] == [left]  # found while spinning
        left.recv(1)
        selector.spin_s = 0.001
        start = time.monotonic()
        assert selector.select(0.1) == []  # a timeout longer than the spin is waited out in full
        assert time.monotonic() - start >= 0.09
    finally:
        selector.close()
        left.close()
        right.close()


def test_zero_timeout_never_spins_and_negative_spin_is_refused() -> None:
    selector = BusyPollSelector(10.0)  # a spin this long would show
    try:
        start = time.monotonic()
        assert selector.select(0) == []
        assert time.monotonic() - start < 1.0
    finally:
        selector.close()
    with pytest.raises(ValueError, match="spin time must be >= 0"):
        BusyPollSelector(-1)


def test_an_event_loop_that_busy_polls_serves_a_socket() -> None:
    async def main() -> bytes:
        async def echo(reader, writer):
            writer.write(await reader.readexactly(5))
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await asyncio.sleep(0.01)  # a timer wake-up goes through the spinning select too
        writer.write(b"hello")
        data = await reader.read()
        writer.close()
        server.close()
        return data

    with asyncio.Runner(loop_factory=loop_factory(0.0005)) as runner:
        assert isinstance(runner.get_loop()._selector, BusyPollSelector)
        assert runner.run(main()) == b"hello"
    assert loop_factory(0) is asyncio.new_event_loop

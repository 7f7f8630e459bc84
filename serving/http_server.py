"""A small asyncio HTTP/1.1 server: keep-alive, Content-Length bodies, TLS, SO_REUSEPORT, draining.

Enough for the v2 REST API and its clients (tritonclient.http, curl, load balancers); no chunked
request bodies. Pipelined requests are answered one after another, in order.

It is an `asyncio.Protocol`, not a stream reader: bytes are parsed where they arrive and a request
whose handler finishes without waiting is answered in the same callback, with no task, no timer
and one write. On a small model that halves the server's share of a request's latency. Time
limits are enforced by one sweep per server (`Limits.sweep_s`) over the connections' deadlines.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

log = logging.getLogger("edgerun.serving")
MAX_HEAD = 16 * 1024  # request line plus headers
MAX_HEADERS = 100
SMALL_BODY = 1 << 16  # responses up to this size go out with their headers in one write
READ_AHEAD = 1 << 16  # bytes buffered beyond the request in progress before reading pauses
_REASONS = {status.value: status.phrase for status in HTTPStatus}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


@dataclass(frozen=True)
class Limits:
    """Per-connection limits: seconds to send the request line and headers, to send the body, to
    start the next request on a kept-alive connection; and how many connections at once (more are
    answered 503 and closed)."""

    header_timeout_s: float = 10.0
    body_timeout_s: float = 60.0
    idle_timeout_s: float = 60.0
    max_connections: int = 1024

    @property
    def sweep_s(self) -> float:
        """How often deadlines are checked: a quarter of the shortest limit, within [10 ms, 1 s]."""
        return min(1.0, max(0.01, min(self.header_timeout_s, self.body_timeout_s, self.idle_timeout_s) / 4))


@dataclass
class Request:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


App = Callable[[Request], Awaitable[Response]]
# called with the request (body not read yet) once the headers are in; a Response refuses it
Authorize = Callable[[Request], Response | None]


class HttpServer:
    """Serves `app` on (host, port). Bodies over `max_body` bytes get 413 without being read."""

    def __init__(self, app: App, max_body: int, ssl_context: ssl.SSLContext | None = None,
                 limits: Limits | None = None, authorize: Authorize | None = None) -> None:
        self.app, self.max_body, self.ssl_context = app, max_body, ssl_context
        self.limits = limits or Limits()
        self.authorize = authorize if authorize is not None else getattr(app, "authorize", None)
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.Task | None = None
        self._connections: set[_Connection] = set()
        self._active = 0  # requests whose handler is running
        self._closing = False

    async def start(self, host: str, port: int) -> None:
        """Bind and listen (SO_REUSEPORT on). OSError if the port cannot be bound."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), host, port, reuse_port=True,
                                                ssl=self.ssl_context)
        self._sweeper = loop.create_task(self._sweep())

    async def stop(self, grace_s: float) -> None:
        """Stop accepting, let requests in progress finish (up to `grace_s`), close the rest."""
        self._closing = True
        if self._server is not None:
            self._server.close()
        for connection in list(self._connections):
            if connection.idle:
                connection.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        while self._active and loop.time() < deadline:
            await asyncio.sleep(0.01)
        for connection in list(self._connections):
            connection.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper

    async def _sweep(self) -> None:
        """Close, unanswered, every connection past its deadline (a client too slow to send)."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.limits.sweep_s)
            now = loop.time()
            for connection in list(self._connections):
                if connection.deadline is not None and now >= connection.deadline:
                    connection.close()


class _Connection(asyncio.Protocol):
    """One client connection: buffers bytes, parses one request at a time, answers in order."""

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.limits = server.limits
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.request: Request | None = None  # headers parsed, body not yet complete
        self.body_length = 0
        self.busy = False  # a handler is running or its answer is being written
        self.closed = False
        self.peer_done = False  # the client has half-closed
        self.write_paused = False
        self.read_paused = False
        self.deadline: float | None = None

    @property
    def idle(self) -> bool:
        return not self.busy and self.request is None and not self.buffer

    # --- asyncio.Protocol -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server._connections.add(self)
        if len(self.server._connections) > self.limits.max_connections:
            self._answer(_plain(503, "too many connections"), keep=False)
            return
        self.deadline = self.loop.time() + self.limits.header_timeout_s

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.deadline = None
        self.server._connections.discard(self)

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        if self.idle and data:  # the next request starts: its headers have header_timeout_s
            self.deadline = self.loop.time() + self.limits.header_timeout_s
        self.buffer += data
        if self.busy or self.write_paused:
            if len(self.buffer) > READ_AHEAD and not self.read_paused:
                self.transport.pause_reading()
                self.read_paused = True
            return
        self._advance()

    def eof_received(self) -> bool:
        self.peer_done = True
        return self.busy  # keep the transport open to answer the request in progress

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        if not self.busy:
            self._advance()

    # --- requests -------------------------------------------------------------------------------

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.deadline = None
            self.transport.close()

    def _advance(self) -> None:
        """Parse and dispatch what the buffer holds, one request at a time."""
        while not (self.busy or self.closed or self.write_paused):
            if self.request is None:
                while self.buffer[:2] == b"\r\n":  # blank lines before a request line are allowed
                    del self.buffer[:2]
                end = self.buffer.find(b"\r\n\r\n", 0, MAX_HEAD + 4)
                if end < 0:
                    if len(self.buffer) > MAX_HEAD:
                        self._answer(_plain(400, f"request line and headers exceed {MAX_HEAD} bytes"), keep=False)
                    elif self.peer_done:
                        self.close()
                    return
                head = bytes(self.buffer[:end])
                del self.buffer[:end + 4]
                if not self._start(head):
                    return
            if len(self.buffer) < self.body_length:
                if self.peer_done:
                    self.close()
                return
            request, self.request = self.request, None
            if self.body_length:
                request.body = bytes(self.buffer[:self.body_length])
                del self.buffer[:self.body_length]
            self._dispatch(request)

    def _start(self, head: bytes) -> bool:
        """Parse the request line and headers and check them; False if the request was refused
        (answered, and the connection is closing)."""
        try:
            lines = head.decode("latin-1").split("\r\n")
            method, target, version = lines[0].split(" ")
            if not version.startswith("HTTP/1."):
                raise ValueError(version)
            headers: dict[str, str] = {}
            for raw in lines[1:]:
                if len(headers) >= MAX_HEADERS:
                    raise ValueError("too many headers")
                key, colon, value = raw.partition(":")
                if not colon or not key or key != key.strip():
                    raise ValueError(raw)
                headers[key.lower()] = value.strip()
        except ValueError:
            self._answer(_plain(400, "malformed request line or headers"), keep=False)
            return False
        path, _, query = target.partition("?")
        request = Request(method.upper(), path, query, headers, b"")
        if self.server.authorize is not None:
            refusal = self.server.authorize(request)
            if refusal is not None:  # answered before the body is read; the connection then closes
                self._answer(refusal, keep=False)
                return False
        if "chunked" in headers.get("transfer-encoding", "").lower():
            self._answer(_plain(411, "send a Content-Length body (chunked is not supported)"), keep=False)
            return False
        length_text = headers.get("content-length", "0")
        length = int(length_text) if length_text.isdigit() else -1
        if length < 0:
            self._answer(_plain(400, "bad Content-Length"), keep=False)
            return False
        if length > self.server.max_body:
            self._answer(_plain(413, f"request body of {length} bytes exceeds the limit of "
                                     f"{self.server.max_body} bytes"), keep=False)
            return False
        self.request, self.body_length = request, length
        if length > len(self.buffer):
            self.deadline = self.loop.time() + self.limits.body_timeout_s
            if headers.get("expect", "").lower() == "100-continue":
                self.transport.write(_CONTINUE)
        return True

    def _dispatch(self, request: Request) -> None:
        """Run the app on `request`: to its end at once if it never waits, else in a task."""
        self.busy, self.deadline = True, None
        self.server._active += 1
        try:
            step = _run_until_suspended(self.server.app(request))
        except Exception:
            self._finish(request, _internal_error(request))
            return
        if isinstance(step, Response):
            self._finish(request, step)
        else:
            self.loop.create_task(self._await(request, step))

    async def _await(self, request: Request, pending: Awaitable[Response]) -> None:
        try:
            response = await pending
        except Exception:
            response = _internal_error(request)
        self._finish(request, response)

    def _finish(self, request: Request, response: Response) -> None:
        self.server._active -= 1
        keep = (request.headers.get("connection", "").lower() != "close" and not self.server._closing
                and not self.peer_done)
        self._answer(response, keep)
        if not keep or self.closed:
            return
        self.busy = False
        self.deadline = self.loop.time() + (self.limits.header_timeout_s if self.buffer
                                            else self.limits.idle_timeout_s)
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()
        self._advance()

    def _answer(self, response: Response, keep: bool) -> None:
        """Write `response`; with `keep` false, close once it is sent."""
        if self.closed:
            return
        head = [f"HTTP/1.1 {response.status} {_REASONS.get(response.status, '')}",
                f"Content-Length: {len(response.body)}",
                "Connection: keep-alive" if keep else "Connection: close"]
        head += [f"{k}: {v}" for k, v in response.headers.items()]
        data = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
        if len(response.body) <= SMALL_BODY:  # one send: each write is a syscall
            self.transport.write(data + response.body)
        else:
            self.transport.write(data)
            self.transport.write(response.body)
        if not keep:
            self.close()  # the transport flushes what it holds before it closes


def _run_until_suspended(coro: Coroutine[Any, Any, Response]) -> Response | Awaitable[Response]:
    """Run `coro` in this callback until it returns or first waits. Returns its result, or an
    awaitable that finishes it (the future it waits on is handed on to the awaiting task)."""
    try:
        waiting_on = coro.send(None)
    except StopIteration as done:
        return done.value
    return _Resumed(coro, waiting_on)


class _Resumed:
    """A started coroutine that an asyncio task can take over: yields the future the coroutine is
    blocked on first, then relays sends and throws to it."""

    def __init__(self, coro: Coroutine, waiting_on: Any) -> None:
        self.coro, self.waiting_on = coro, waiting_on

    def __await__(self):
        yielded = self.waiting_on
        while True:
            try:
                sent = yield yielded
            except BaseException as exc:  # noqa: BLE001 - relayed, e.g. cancellation
                try:
                    yielded = self.coro.throw(exc)
                except StopIteration as done:
                    return done.value
            else:
                try:
                    yielded = self.coro.send(sent)
                except StopIteration as done:
                    return done.value


def _internal_error(request: Request) -> Response:
    log.exception("HTTP %s %s failed", request.method, request.path)
    return _plain(500, "internal error")


def _plain(status: int, message: str) -> Response:
    return Response(status, json.dumps({"error": message}).encode(), {"Content-Type": "application/json"})

"""A small asyncio HTTP/1.1 server: keep-alive, Content-Length bodies, TLS, SO_REUSEPORT, draining.

Enough for the v2 REST API and its clients (tritonclient.http, curl, load balancers); no chunked
request bodies. Pipelined requests are answered one after another, in order.

The framing of HTTP/1.1 (request line, headers, where a message ends, keep-alive) is parsed by
httptools (llhttp, Node's parser, as in uvicorn), in its strict mode: bare LF line ends, obsolete
line folding, a Content-Length beside a Transfer-Encoding or repeated, and control characters are
refused with 400, as a proxy that reads them differently could be smuggled a request. Around it
this module keeps its own limits: the request line and headers (MAX_HEAD bytes, MAX_HEADERS
lines), the body size, the time limits, and the connection and body budgets below. The parser is
fed one request at a time, never the bytes of the next, so a head is measured exactly and
pipelined requests wait in the buffer, not in memory the parser holds.

Memory is bounded whatever clients do: a connection buffers at most the request line and headers
(MAX_HEAD) plus READ_AHEAD bytes, except for a request body, which is received into a buffer of its
own only after its Content-Length was reserved from the server's body budget (`Limits.body_budget`:
bytes of bodies being received or handled, across connections). A body that does not fit the
budget, or would take the bodies one client address has reserved past its share
(`Limits.client_body_budget`), is refused with 503 before it is read. Holding a reservation costs
the client bandwidth: a body that arrives slower than `Limits.min_body_rate` on average (after a
grace of `Limits.body_rate_grace_s`) is answered 408 and its reservation given back, so headers
that announce a large body and then nothing hold it for seconds, not the whole body timeout.
Connections are capped in total and per client address.

It is an `asyncio.Protocol`, not a stream reader: bytes are parsed where they arrive and a request
whose handler finishes without waiting is answered in the same callback, with no task, no timer
and one write. On a small model that halves the server's share of a request's latency. Time
limits are enforced by one sweep per server (`Limits.sweep_s`) over the connections' deadlines.

A request refused here (malformed, too large, over a budget, too slow, unauthorized) is reported
to the app's optional `refused(request, response)` hook, so it can count it.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import ipaddress
import json
import logging
import re
import ssl
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import httptools

log = logging.getLogger("edgerun.serving")
MAX_HEAD = 16 * 1024  # request line plus headers
MAX_HEADERS = 100
SMALL_BODY = 1 << 16  # responses up to this size go out with their headers in one write
READ_AHEAD = 1 << 16  # bytes buffered beyond the request in progress before reading pauses
UNBUDGETED_BODY = READ_AHEAD  # bodies up to this size need no reservation: any connection may buffer this much
_REASONS = {status.value: status.phrase for status in HTTPStatus}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
# connections the kernel completes before we accept them (asyncio's default is 100): past it, a
# burst of connections looks open to clients that then wait for SYN-ACK retransmits (1 s, 3 s, ...)
BACKLOG = 1024


@dataclass(frozen=True)
class Limits:
    """Per-connection limits: seconds to send the request line and headers, to send the body, to
    start the next request on a kept-alive connection; how many connections at once, in all and
    from one client address (more are answered 503 and closed); and the body budget in bytes
    (None = 4 x the server's largest body): request bodies over UNBUDGETED_BODY bytes being received
    or handled may add up to this much, and one that does not fit is answered 503 unread.

    Of that budget one client address (an IPv6 one by its /64 network) may hold at most
    `client_body_budget` bytes at once (None = the larger of the largest body and a quarter of the
    budget), so that no one address takes it all. A body over UNBUDGETED_BODY bytes must arrive at
    `min_body_rate` bytes/s or faster, averaged from its headers, after a grace of
    `body_rate_grace_s` seconds (0 = no minimum); a slower one is answered 408 and closed."""

    header_timeout_s: float = 10.0
    body_timeout_s: float = 60.0
    idle_timeout_s: float = 60.0
    max_connections: int = 1024
    max_connections_per_client: int = 64
    body_budget: int | None = None
    client_body_budget: int | None = None
    min_body_rate: int = 64 * 1024
    body_rate_grace_s: float = 2.0

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
    version: str = "HTTP/1.1"
    keep_alive: bool = True  # HTTP/1.1 unless 'Connection: close'; HTTP/1.0 only with 'keep-alive'


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


# The app runs its first step in the protocol callback, outside any asyncio task (in a context of
# its own): until it first waits, asyncio.current_task() is None, so asyncio.timeout() must wait.
App = Callable[[Request], Awaitable[Response]]
# called with the request (body not read yet) once the headers are in; a Response refuses it
Authorize = Callable[[Request], Response | None]
# told of every request refused before the app saw it: the request (None when its head could not be
# parsed) and the refusal sent
Refused = Callable[[Request | None, Response], None]


class HttpServer:
    """Serves `app` on (host, port). Bodies over `max_body` bytes get 413 without being read.
    `authorize` and `refused` default to the app's methods of those names, if it has them."""

    def __init__(self, app: App, max_body: int, ssl_context: ssl.SSLContext | None = None,
                 limits: Limits | None = None, authorize: Authorize | None = None,
                 refused: Refused | None = None) -> None:
        self.app, self.max_body, self.ssl_context = app, max_body, ssl_context
        self.limits = limits or Limits()
        self.body_budget = self.limits.body_budget if self.limits.body_budget is not None else 4 * max_body
        self.body_bytes = 0  # reserved by the bodies being received or handled
        self.client_body_budget = (self.limits.client_body_budget if self.limits.client_body_budget is not None
                                   else max(max_body, self.body_budget // 4))
        self._reserved_by: dict[str, int] = {}  # reservation key (see _reservation_key) -> bytes it holds
        self.authorize = authorize if authorize is not None else getattr(app, "authorize", None)
        self.refused = refused if refused is not None else getattr(app, "refused", None)
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.Task | None = None
        self._connections: set[_Connection] = set()
        self._per_client: dict[str, int] = {}  # client address -> its open connections
        self.admitted = 0  # open connections counted against the limits (= sum of _per_client)
        self._tasks: set[asyncio.Task] = set()  # handlers that had to wait
        self._active = 0  # requests whose handler is running
        self._closing = False

    async def start(self, host: str, port: int) -> None:
        """Bind and listen (SO_REUSEPORT on). OSError if the port cannot be bound."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), host, port, reuse_port=True,
                                                ssl=self.ssl_context, backlog=BACKLOG)
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
            connection.expire()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper

    def reserve(self, size: int, key: str = "") -> str | None:
        """Reserve `size` bytes of the body budget for the client `key` (see _reservation_key):
        None, or why nothing was reserved (they do not fit the budget or the client's share)."""
        held = self._reserved_by.get(key, 0)
        if held + size > self.client_body_budget:
            return (f"your address is sending other request bodies ({held} bytes); retry a request body "
                    f"of {size} bytes later")
        if self.body_bytes + size > self.body_budget:
            return f"the server is busy receiving other request bodies; retry a request body of {size} bytes later"
        self.body_bytes += size
        self._reserved_by[key] = held + size
        return None

    def release(self, size: int, key: str = "") -> None:
        self.body_bytes -= size
        held = self._reserved_by.pop(key) - size
        if held:
            self._reserved_by[key] = held

    def admit(self, client: str) -> bool:
        """Count a connection from `client`; False (not counted) if it has its maximum already."""
        count = self._per_client.get(client, 0)
        if count >= self.limits.max_connections_per_client:
            return False
        self._per_client[client] = count + 1
        self.admitted += 1
        return True

    def discharge(self, client: str) -> None:
        self.admitted -= 1
        count = self._per_client.pop(client) - 1
        if count:
            self._per_client[client] = count

    async def _sweep(self) -> None:
        """Close every connection past a deadline: a client too slow to send its request
        (unanswered) or to read our answer (dropping what it has not read)."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.limits.sweep_s)
            now = loop.time()
            for connection in list(self._connections):
                if connection.expired(now):
                    connection.expire()
                elif connection.too_slow(now):
                    connection.cut_off()


class _Connection(asyncio.Protocol):
    """One client connection: buffers bytes, parses one request at a time, answers in order.

    Every callback leaves the connection in one of these states: reading a request (with a
    deadline), running one (`busy`, no deadline), or closed. Requests are taken from the buffer by
    the loop in `_advance`, never by recursion, so any number of pipelined requests is safe. The
    parser (httptools) gets the bytes of one request at a time: its head up to the blank line that
    ends it, then, once the head was accepted, exactly Content-Length bytes of body."""

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.limits = server.limits
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.buffer = bytearray()  # bytes not fed to the parser yet
        self.head = _Head()  # what the parser reported of the request head being fed
        self.head_fed = 0  # bytes of that head fed so far
        self.tail = b""  # the last bytes fed of it, for a blank line split between two reads
        self.message_done = False  # the parser has seen the end of the request being read
        self.upgraded = False  # the parser saw an Upgrade: it parses no more (we close after answering)
        self.request: Request | None = None  # head accepted, body not yet complete
        self.body_length = 0
        self.body: bytearray | None = None  # the body being received, when it was not all in `buffer`
        self.reserved = 0  # bytes of the server's body budget held by the request in progress
        self.reserved_by = ""  # the reservation key they count against
        self.body_started = 0.0  # when the reserved body's headers were in (for the minimum rate)
        self.client: str | None = None  # the address this connection counts against, once admitted
        self.busy = False  # a handler is running
        self.closed = False  # no more reading, parsing or answering
        self.peer_done = False  # the client has half-closed: answer what is buffered, then close
        self.write_paused = False
        self.read_paused = False
        self.deadline: float | None = None  # for the client to send (or, once closed, to read) its bytes
        self.write_deadline: float | None = None  # for the client to read what we have sent

    @property
    def idle(self) -> bool:
        return not self.busy and self.request is None and not self.buffer and not self.head_fed

    def expired(self, now: float) -> bool:
        return any(d is not None and now >= d for d in (self.deadline, self.write_deadline))

    def too_slow(self, now: float) -> bool:
        """Whether the reserved body being received is behind the minimum rate (Limits.min_body_rate
        bytes/s on average since its headers, after the grace)."""
        if not self.reserved or self.request is None or self.closed or self.limits.min_body_rate <= 0:
            return False
        received = len(self.body) if self.body is not None else len(self.buffer)
        due = self.limits.min_body_rate * (now - self.body_started - self.limits.body_rate_grace_s)
        return received < self.body_length and received < due

    def cut_off(self) -> None:
        """Answer a body too slow for the minimum rate with 408, give back its reservation, close."""
        request, self.request, self.body = self.request, None, None
        self.buffer.clear()
        self._release()
        self._refuse(_plain(408, f"request body sent slower than {self.limits.min_body_rate} bytes/s"), request)

    # --- httptools callbacks (during feed_data: they only record) ---------------------------------

    def on_message_begin(self) -> None:
        self.head, self.message_done = _Head(), False

    def on_url(self, url: bytes) -> None:
        self.head.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head.headers.append((name, value))

    def on_headers_complete(self) -> None:
        head = self.head
        head.complete, head.version = True, self.parser.get_http_version()
        head.upgrade = self.parser.should_upgrade()
        head.keep_alive = self.parser.should_keep_alive() and not head.upgrade

    def on_message_complete(self) -> None:
        self.message_done = True

    # --- asyncio.Protocol -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server._connections.add(self)
        peer = transport.get_extra_info("peername")
        client = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        # the address's cap first, and only admitted connections count toward the total: a
        # flood of connections refused (still closing) must not crowd out other addresses
        if not self.server.admit(client):
            self._answer(_plain(503, "too many connections from your address"), keep=False)
            return
        self.client = client  # counted from here; connection_lost discharges it
        if self.server.admitted > self.limits.max_connections:
            self._answer(_plain(503, "too many connections"), keep=False)
            return
        self.deadline = self.loop.time() + self.limits.header_timeout_s

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.deadline = self.write_deadline = None
        self.server._connections.discard(self)
        if self.client is not None:
            self.server.discharge(self.client)
            self.client = None
        if not self.busy:  # a running handler still holds its body: _finish releases it
            self.body = None
            self._release()
        # The parser holds bound methods of this connection (a reference cycle): break it, and
        # drop the read buffer, so a closed connection's memory goes now, not at the next
        # collection of cycles.
        self.parser = None
        self.buffer = bytearray()

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        if self.idle and data:  # the next request starts: its headers have header_timeout_s
            self.deadline = self.loop.time() + self.limits.header_timeout_s
        if self.body is not None:  # a body being received: its bytes go straight into it
            room = self.body_length - len(self.body)
            if len(data) <= room:
                self.body += data
                data = b""
            else:
                view = memoryview(data)
                self.body += view[:room]
                data = view[room:]
        self.buffer += data
        if self.busy or self.write_paused:
            if len(self.buffer) > READ_AHEAD and not self.read_paused:
                self.transport.pause_reading()
                self.read_paused = True
            return
        self._advance()

    def eof_received(self) -> bool:
        self.peer_done = True
        if not self.busy:
            self._advance()  # answers what is complete, then closes
        # keep the transport open for the answers; a TLS transport closes regardless (and warns
        # if asked to stay open)
        return self.transport.get_extra_info("sslcontext") is None

    def pause_writing(self) -> None:
        self.write_paused = True
        self.write_deadline = self.loop.time() + self.limits.body_timeout_s

    def resume_writing(self) -> None:
        self.write_paused = False
        self.write_deadline = None
        if not self.busy:
            self._advance()

    # --- requests -------------------------------------------------------------------------------

    def close(self) -> None:
        """Close once what was written is sent; the client then has body_timeout_s to read it."""
        if not self.closed:
            self.closed = True
            self.deadline = self.loop.time() + self.limits.body_timeout_s
            self.transport.close()

    def expire(self) -> None:
        """Past a deadline: close, dropping whatever the client has not read."""
        self.closed = True
        self.deadline = self.write_deadline = None
        if self.transport.get_write_buffer_size():
            self.transport.abort()
        else:
            self.transport.close()

    def _advance(self) -> None:
        """Parse and dispatch what the buffer holds, one request at a time, until a handler has to
        wait, the client must send more, or the connection closes."""
        try:
            while not (self.busy or self.closed or self.write_paused):
                if self.read_paused:
                    self.read_paused = False
                    self.transport.resume_reading()
                if self.request is None and not self._take_head():
                    if self.peer_done and not self.closed:
                        self.close()
                    return
                body = self._take_body()
                if body is None:
                    if self.peer_done:
                        self.close()
                    return
                request, self.request = self.request, None
                request.body = body
                self._dispatch(request)
        except Exception:
            log.exception("HTTP connection failed")
            self.expire()

    def _take_head(self) -> bool:
        """Feed the parser the next request head from the buffer, up to and including the blank
        line that ends it; True once the head is complete and accepted, False if more bytes are
        needed or it was refused."""
        while self.buffer:
            end = self._head_end()
            size = end if end >= 0 else len(self.buffer)
            if self.head_fed + size > MAX_HEAD + 4:
                self._refuse(_plain(400, f"request line and headers exceed {MAX_HEAD} bytes"))
                return False
            piece = bytes(self.buffer[:size])
            del self.buffer[:size]
            self.head_fed += size
            self.tail = (self.tail + piece)[-3:]
            try:
                self.parser.feed_data(piece)
            except httptools.HttpParserUpgrade:
                pass  # on_headers_complete saw it: answered, then the connection closes
            except httptools.HttpParserError as exc:
                self._refuse(_plain(400, f"malformed request: {exc}"))
                return False
            if self.head.complete:
                head, self.head, self.head_fed, self.tail = self.head, _Head(), 0, b""
                return self._start(head)
        return False

    def _head_end(self) -> int:
        """The end of the head in `buffer` (just past its first CRLFCRLF, which may have begun in
        the bytes fed before), or -1 if it is not there within MAX_HEAD bytes."""
        if self.tail:
            joined = self.tail + bytes(self.buffer[:3])
            found = joined.find(b"\r\n\r\n")
            if found >= 0:
                return found + 4 - len(self.tail)
        found = self.buffer.find(b"\r\n\r\n", 0, MAX_HEAD + 4)
        return found + 4 if found >= 0 else -1

    def _take_body(self) -> bytes | None:
        """The body of the request in progress once it is complete, else None (what arrived so
        far is moved from `buffer` into a body buffer of its own, which then takes the rest)."""
        length = self.body_length
        if self.body is None:
            if len(self.buffer) >= length:  # all here (small requests): no second buffer
                body = bytes(self.buffer[:length]) if length else b""
                del self.buffer[:length]
                return self._end_body(body)
            self.body, self.buffer = self.buffer, bytearray()
            return None
        if len(self.body) < length:
            return None
        body, self.body = bytes(self.body), None  # one copy, then the buffer is freed at once
        return self._end_body(body)

    def _end_body(self, body: bytes) -> bytes:
        """Feed the parser the body (it skips it) so that it ends the message where we do."""
        if self.upgraded:
            return body
        if body:
            self.parser.feed_data(body)
        if not self.message_done:
            raise RuntimeError("the parser did not end the message with its Content-Length body")
        return body

    def _release(self) -> None:
        """Give back the body budget the request in progress reserved."""
        if self.reserved:
            self.server.release(self.reserved, self.reserved_by)
            self.reserved = 0

    def _start(self, head: _Head) -> bool:
        """Check the request line and headers; False if the request was refused (answered, and
        the connection is closing)."""
        request = _request(head, self.parser.get_method())
        if isinstance(request, Response):
            self._refuse(request)
            return False
        self.upgraded = head.upgrade
        if self.server.authorize is not None:
            refusal = self.server.authorize(request)
            if refusal is not None:  # answered before the body is read; the connection then closes
                self._refuse(refusal, request)
                return False
        headers = request.headers
        if "transfer-encoding" in headers:
            self._refuse(_plain(411, "send a Content-Length body (Transfer-Encoding is not supported)"), request)
            return False
        length_text = headers.get("content-length", "0")
        if not _LENGTH.fullmatch(length_text):
            self._refuse(_plain(400, "bad Content-Length"), request)
            return False
        length = int(length_text)
        if length > self.server.max_body:
            self._refuse(_plain(413, f"request body of {length} bytes exceeds the limit of "
                                     f"{self.server.max_body} bytes"), request)
            return False
        if length > UNBUDGETED_BODY:
            key = _reservation_key(self.client or "")
            why = self.server.reserve(length, key)
            if why is not None:
                refusal = _plain(503, why)
                refusal.headers["Retry-After"] = "1"
                self._refuse(refusal, request)
                return False
            self.reserved, self.reserved_by, self.body_started = length, key, self.loop.time()
        self.request, self.body_length = request, length
        if length > len(self.buffer):
            self.deadline = self.loop.time() + self.limits.body_timeout_s
            if headers.get("expect", "").lower() == "100-continue":
                self.transport.write(_CONTINUE)
        return True

    def _refuse(self, response: Response, request: Request | None = None) -> None:
        """Answer `response` to a request refused before its handler ran, tell the app's
        `refused` hook, and close once it is sent."""
        if self.server.refused is not None and not self.closed:
            try:
                self.server.refused(request, response)
            except Exception:
                log.exception("HTTP refusal hook failed")
        self._answer(response, keep=False)

    def _dispatch(self, request: Request) -> None:
        """Run the app on `request` in a context of its own: to its end at once if it never
        waits (then `busy` is false again on return), else in a task."""
        self.busy, self.deadline = True, None
        self.server._active += 1
        context = contextvars.copy_context()
        try:
            step = context.run(_run_until_suspended, self.server.app, request)
        except asyncio.CancelledError:
            step = _plain(503, "request cancelled")
        except Exception:
            step = _internal_error(request)
        if isinstance(step, Response):
            self._finish(request, step)
            return
        task = self.loop.create_task(self._await(request, step), context=context)
        self.server._tasks.add(task)
        task.add_done_callback(self.server._tasks.discard)

    async def _await(self, request: Request, pending: Awaitable[Response]) -> None:
        try:
            response = await pending
        except asyncio.CancelledError:
            stopping = asyncio.current_task().cancelling() > 0  # this task, not just the handler
            self._finish(request, _plain(503, "request cancelled"), keep=not stopping)
            if stopping:
                raise
            response = None
        except Exception:
            response = _internal_error(request)
        if response is not None:
            self._finish(request, response)
        self._advance()

    def _finish(self, request: Request, response: Response, keep: bool = True) -> None:
        """Answer `request`; the connection is then ready for the next one, or closed."""
        self.server._active -= 1
        self.busy = False
        self._release()
        keep = keep and request.keep_alive and not self.server._closing
        if self.peer_done and not self.buffer:
            keep = False
        self._answer(response, keep)
        if not self.closed:
            self.deadline = self.loop.time() + (self.limits.header_timeout_s if self.buffer
                                                else self.limits.idle_timeout_s)

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
            self.close()


_TARGET = re.compile(r"/[\x21-\x7e]*")  # origin-form, visible ASCII only
_LENGTH = re.compile(r"[0-9]{1,18}")
_SINGLE = frozenset({"content-length", "transfer-encoding", "host", "authorization", "expect",
                     "content-encoding", "inference-header-content-length"})  # repeated: refused


@dataclass
class _Head:
    """A request line and headers as the parser reports them (raw bytes)."""

    url: bytes = b""
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    complete: bool = False
    version: str = ""
    keep_alive: bool = False
    upgrade: bool = False


def _request(head: _Head, method: bytes) -> Request | Response:
    """The parsed head as a Request (body empty), or the 400 Response refusing it: HTTP/1.0 and
    1.1 only, an origin-form target (a path), at most MAX_HEADERS headers, none of the framing or
    credential headers repeated (others repeated are joined with ', ')."""
    target = head.url.decode("latin-1")
    if head.version not in ("1.0", "1.1") or not _TARGET.fullmatch(target):
        return _plain(400, "malformed request line (HTTP/1.0 or HTTP/1.1 to a path starting with '/')")
    if len(head.headers) > MAX_HEADERS:
        return _plain(400, f"more than {MAX_HEADERS} headers")
    headers: dict[str, str] = {}
    for raw_name, raw_value in head.headers:
        name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1").strip(" \t")
        if name in headers:
            if name in _SINGLE:
                return _plain(400, f"repeated {name} header")
            value = f"{headers[name]}, {value}"
        headers[name] = value
    path, _, query = target.partition("?")
    return Request(method.decode("ascii"), path, query, headers, b"", f"HTTP/{head.version}", head.keep_alive)


def _reservation_key(address: str) -> str:
    """The client a body reservation counts against: the IPv4 address, or the /64 network of an
    IPv6 one (one host usually has a whole /64 to pick addresses from)."""
    if ":" not in address:
        return address
    try:
        ip = ipaddress.IPv6Address(address.partition("%")[0])
    except ValueError:
        return address
    if ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))


def _run_until_suspended(app: App, request: Request) -> Response | Awaitable[Response]:
    """Run `app(request)` in this callback until it returns or first waits. Returns its result, or
    an awaitable that finishes it (the future it waits on is handed on to the awaiting task)."""
    coro = app(request)
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

"""A small asyncio HTTP/1.1 server: keep-alive, Content-Length bodies, TLS, SO_REUSEPORT, draining.

Enough for the v2 REST API and its clients (tritonclient.http, curl, load balancers); no chunked
request bodies, no pipelining beyond sequential keep-alive requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus

log = logging.getLogger("edgerun.serving")
MAX_HEADER_LINE = 16 * 1024
MAX_HEADERS = 100
SMALL_BODY = 1 << 16  # responses up to this size go out with their headers in one write


@dataclass(frozen=True)
class Limits:
    """Per-connection limits: seconds to send the request line and headers, to send the body, to
    start the next request on a kept-alive connection; and how many connections at once (more are
    answered 503 and closed)."""

    header_timeout_s: float = 10.0
    body_timeout_s: float = 60.0
    idle_timeout_s: float = 60.0
    max_connections: int = 1024


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
        self._active = 0
        self._connections = 0
        self._idle: set[asyncio.StreamWriter] = set()
        self._closing = False

    async def start(self, host: str, port: int) -> None:
        """Bind and listen (SO_REUSEPORT on). OSError if the port cannot be bound."""
        self._server = await asyncio.start_server(self._connection, host, port, reuse_port=True,
                                                  ssl=self.ssl_context, limit=MAX_HEADER_LINE)

    async def stop(self, grace_s: float) -> None:
        """Stop accepting, let requests in progress finish (up to `grace_s`), close the rest."""
        self._closing = True
        if self._server is not None:
            self._server.close()
        for writer in list(self._idle):
            writer.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        while self._active and loop.time() < deadline:
            await asyncio.sleep(0.01)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._connections += 1
        try:
            if self._connections > self.limits.max_connections:
                await self._write(writer, _plain(503, "too many connections"), False)
                return
            first = True
            while not self._closing:
                self._idle.add(writer)
                request = await self._read_request(reader, writer, first)
                first = False
                self._idle.discard(writer)
                if request is None:
                    break
                self._active += 1
                try:
                    response = await self.app(request)
                finally:
                    self._active -= 1
                keep = request.headers.get("connection", "").lower() != "close" and not self._closing
                await self._write(writer, response, keep)
                if not keep:
                    break
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, TimeoutError):
            pass
        except Exception:
            log.exception("HTTP connection failed")
        finally:
            self._connections -= 1
            self._idle.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _read_request(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                            first: bool = True) -> Request | None:
        """The next request, or None once the connection should close (answered if need be).
        TimeoutError when the client is too slow (the connection is then closed unanswered)."""
        loop = asyncio.get_running_loop()
        try:
            # The request line and headers in one read under one deadline (a timer per line
            # costs more than the parsing): header_timeout_s for a new connection, and for a
            # kept-alive one idle_timeout_s to start plus header_timeout_s to finish.
            if first:
                async with asyncio.timeout(self.limits.header_timeout_s):
                    block = await reader.readuntil(b"\r\n\r\n")
            else:
                async with asyncio.timeout(self.limits.idle_timeout_s):
                    started = await reader.read(1)
                if not started:
                    return None
                async with asyncio.timeout_at(loop.time() + self.limits.header_timeout_s):
                    block = started + await reader.readuntil(b"\r\n\r\n")
            lines = block.decode("latin-1").split("\r\n")
            method, target, _version = lines[0].split()
            headers: dict[str, str] = {}
            for raw in lines[1:]:
                if not raw:
                    continue
                if len(headers) >= MAX_HEADERS:
                    raise ValueError("too many headers")
                key, _, value = raw.partition(":")
                headers[key.strip().lower()] = value.strip()
        except asyncio.IncompleteReadError as exc:
            if exc.partial.strip():
                raise
            return None
        except (ValueError, asyncio.LimitOverrunError):
            await self._write(writer, _plain(400, "malformed request line or headers"), False)
            return None
        path, _, query = target.partition("?")
        request = Request(method.upper(), path, query, headers, b"")
        if self.authorize is not None:
            refusal = self.authorize(request)
            if refusal is not None:  # answered before the body is read; the connection then closes
                await self._write(writer, refusal, False)
                return None
        if "chunked" in headers.get("transfer-encoding", "").lower():
            await self._write(writer, _plain(411, "send a Content-Length body (chunked is not supported)"), False)
            return None
        try:
            length = int(headers.get("content-length", "0"))
        except ValueError:
            length = -1
        if length < 0:
            await self._write(writer, _plain(400, "bad Content-Length"), False)
            return None
        if length > self.max_body:
            await self._write(writer, _plain(413, f"request body of {length} bytes exceeds the limit of "
                                                  f"{self.max_body} bytes"), False)
            return None
        if length:
            async with asyncio.timeout(self.limits.body_timeout_s):
                request.body = await reader.readexactly(length)
        return request

    async def _write(self, writer: asyncio.StreamWriter, response: Response, keep: bool) -> None:
        reason = HTTPStatus(response.status).phrase if response.status in HTTPStatus._value2member_map_ else ""
        head = [f"HTTP/1.1 {response.status} {reason}", f"Content-Length: {len(response.body)}",
                "Connection: keep-alive" if keep else "Connection: close"]
        head += [f"{k}: {v}" for k, v in response.headers.items()]
        data = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
        if len(response.body) <= SMALL_BODY:  # one send: each write is a syscall, half a request's cost
            writer.write(data + response.body)
        else:
            writer.write(data)
            writer.write(response.body)
        await writer.drain()


def _plain(status: int, message: str) -> Response:
    import json

    return Response(status, json.dumps({"error": message}).encode(), {"Content-Type": "application/json"})

"""The asyncio HTTP/1.1 server on its own, in-process, over real loopback sockets: framing (split,
pipelined, Expect: 100-continue), refusals, time limits, handlers that wait or fail, draining."""

from __future__ import annotations

import asyncio
import json

import pytest

from serving.http_server import MAX_HEAD, HttpServer, Limits, Request, Response


async def _echo(request: Request) -> Response:
    """Answers at once: the method, path, query and body it got."""
    doc = {"method": request.method, "path": request.path, "query": request.query, "body": request.body.decode()}
    return Response(200, json.dumps(doc).encode(), {"Content-Type": "application/json"})


async def _slow(request: Request) -> Response:
    """Waits before answering (so the server must finish the request in a task)."""
    await asyncio.sleep(0.02)
    await asyncio.sleep(0)
    return await _echo(request)


async def _fails_at_once(request: Request) -> Response:
    raise RuntimeError("/secret/path exploded")


async def _fails_later(request: Request) -> Response:
    await asyncio.sleep(0.01)
    raise RuntimeError("/secret/path exploded")


def _post(path: str, body: bytes = b"", *headers: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: x", f"Content-Length: {len(body)}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    status = int(head[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:] if line)}
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers, body


def _serve(app, scenario, limits: Limits | None = None, max_body: int = 1 << 20):
    """Start a server with `app` on a free port, run `await scenario(server, port)`, stop the server."""
    async def main():
        server = HttpServer(app, max_body, limits=limits)
        await server.start("127.0.0.1", 0)
        port = server._server.sockets[0].getsockname()[1]
        try:
            return await asyncio.wait_for(scenario(server, port), 30)
        finally:
            await server.stop(1.0)
    return asyncio.run(main())


@pytest.mark.parametrize("app", [_echo, _slow])
def test_pipelined_requests_are_answered_in_order(app) -> None:
    async def scenario(server, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"".join(_post(f"/r{i}?n={i}", f"body {i}".encode()) for i in range(5)))
        answers = [await _read_response(reader) for _ in range(5)]
        writer.close()
        return answers

    for i, (status, headers, body) in enumerate(_serve(app, scenario)):
        assert status == 200 and headers["connection"] == "keep-alive"
        assert json.loads(body) == {"method": "POST", "path": f"/r{i}", "query": f"n={i}", "body": f"body {i}"}


def test_a_request_sent_byte_by_byte() -> None:
    async def scenario(server, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for byte in b"\r\n" + _post("/bytes", b"0123456789"):  # a blank line first is allowed
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0)
        answer = await _read_response(reader)
        writer.close()
        return answer

    status, _, body = _serve(_echo, scenario)
    assert status == 200 and json.loads(body)["body"] == "0123456789"


def test_expect_continue_gets_100_before_the_body() -> None:
    async def scenario(server, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(_post("/big", b"", "Expect: 100-continue").replace(b"Content-Length: 0", b"Content-Length: 4"))
        interim = await reader.readuntil(b"\r\n\r\n")
        writer.write(b"abcd")
        answer = await _read_response(reader)
        writer.close()
        return interim, answer

    interim, (status, _, body) = _serve(_echo, scenario)
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert status == 200 and json.loads(body)["body"] == "abcd"


@pytest.mark.parametrize("app", [_fails_at_once, _fails_later])
def test_a_failing_handler_gets_500_without_details_and_the_connection_lives(app) -> None:
    async def scenario(server, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        answers = []
        for _ in range(2):
            writer.write(_post("/x"))
            answers.append(await _read_response(reader))
        writer.close()
        return answers

    for status, headers, body in _serve(app, scenario):
        assert status == 500 and headers["connection"] == "keep-alive"
        assert json.loads(body) == {"error": "internal error"}


@pytest.mark.parametrize("raw,status,words", [
    (b"GET /a HTTP/1.1\r\nNoColonHere\r\n\r\n", 400, "malformed"),
    (b"GET /a\r\n\r\n", 400, "malformed"),
    (b"GET /a SPDY/3\r\n\r\n", 400, "malformed"),
    (b"GET /a HTTP/1.1\r\n" + b"".join(b"H%d: v\r\n" % i for i in range(101)) + b"\r\n", 400, "malformed"),
    (b"GET /a HTTP/1.1\r\nX: " + b"a" * MAX_HEAD + b"\r\n\r\n", 400, f"exceed {MAX_HEAD} bytes"),
    (b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 411, "chunked"),
    (b"POST /a HTTP/1.1\r\nContent-Length: -5\r\n\r\n", 400, "Content-Length"),
    (b"POST /a HTTP/1.1\r\nContent-Length: 12x\r\n\r\n", 400, "Content-Length"),
    (b"POST /a HTTP/1.1\r\nContent-Length: 2000000\r\n\r\n", 413, "exceeds the limit of 1048576 bytes"),
])
def test_bad_requests_are_refused_and_the_connection_closed(raw, status, words) -> None:
    async def scenario(server, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(raw)
        answer = await _read_response(reader)
        rest = await reader.read()  # the server closes the connection
        writer.close()
        return answer, rest

    (got, headers, body), rest = _serve(_echo, scenario)
    assert got == status and headers["connection"] == "close" and rest == b""
    assert words in json.loads(body)["error"]


def test_connection_close_is_honoured() -> None:
    async def scenario(server, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(_post("/a", b"", "Connection: close"))
        answer = await _read_response(reader)
        rest = await reader.read()
        writer.close()
        return answer, rest

    (status, headers, _), rest = _serve(_echo, scenario)
    assert status == 200 and headers["connection"] == "close" and rest == b""


def test_slow_clients_are_closed_unanswered_but_idle_time_is_separate() -> None:
    limits = Limits(header_timeout_s=0.2, body_timeout_s=0.2, idle_timeout_s=0.6)

    async def scenario(server, port):
        results = []
        for partial in (b"GET /a HTTP/1.1\r\nHost: x\r\n", _post("/a", b"12345")[:-2]):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(partial)
            results.append(await asyncio.wait_for(reader.read(), 5))  # b"": closed, nothing sent
            writer.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(_post("/a"))
        await _read_response(reader)
        await asyncio.sleep(0.35)  # longer than the header limit, shorter than the idle one
        writer.write(_post("/b"))
        results.append((await _read_response(reader))[0])
        writer.close()
        return results

    assert _serve(_echo, scenario, limits) == [b"", b"", 200]


def test_large_bodies_both_ways() -> None:
    payload = bytes(range(256)) * 8192  # 2 MiB, above the read-ahead and the one-write size

    async def mirror(request: Request) -> Response:
        return Response(200, request.body[::-1])

    async def scenario(server, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(_post("/m", payload))
        answer = await _read_response(reader)
        writer.close()
        return answer

    status, _, body = _serve(mirror, scenario, max_body=4 << 20)
    assert status == 200 and body == payload[::-1]


def test_stop_finishes_requests_in_progress() -> None:
    async def scenario(server, port):
        gate = asyncio.Event()

        async def slow_app(request: Request) -> Response:
            gate.set()
            await asyncio.sleep(0.2)
            return Response(200, b"done")

        server.app = slow_app
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(_post("/a"))
        await gate.wait()
        stopping = asyncio.create_task(server.stop(5.0))
        answer = await _read_response(reader)
        await stopping
        writer.close()
        return answer

    status, headers, body = _serve(_echo, scenario)
    assert (status, body, headers["connection"]) == (200, b"done", "close")

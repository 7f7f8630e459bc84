"""The asyncio HTTP/1.1 server on its own, in-process, over real loopback sockets: framing (split,
pipelined, Expect: 100-continue), refusals, time limits, handlers that wait or fail, draining."""

from __future__ import annotations

import asyncio
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgerun.serving.http_server import MAX_HEAD, HttpServer, Limits, Request, Response


async def _echo(request: Request) -> Response:
    """Answers at once: the method, path, query and body it got."""
    doc = {"method": request.method, "path": request.path, "query": request.query,
           "body": request.body.decode(errors="replace")}
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


async def _two_requests(server, port):
    """Two requests, one after the other, on one connection: their answers, then the count of
    requests the server still thinks are running."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answers = []
    for _ in range(2):
        writer.write(_post("/x"))
        answers.append(await _read_response(reader))
    writer.close()
    return answers, server._active


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
    answers, active = _serve(app, _two_requests)
    assert active == 0
    for status, headers, body in answers:
        assert status == 500 and headers["connection"] == "keep-alive"
        assert json.loads(body) == {"error": "internal error"}


# Refusals by the parser (llhttp, strict) say "malformed request: <llhttp's reason>"; the old
# hand-written parser's own words for them ("malformed header", "repeated content-length", 411 for a
# Transfer-Encoding beside a Content-Length) are not kept, the refusal and the close are.
@pytest.mark.parametrize("raw,status,words", [
    (b"GET /a HTTP/1.1\r\nNoColonHere\r\n\r\n", 400, "malformed request"),
    (b"GET /a\r\n\r\n", 400, "malformed request line"),  # HTTP/0.9
    (b"GET /a SPDY/3\r\n\r\n", 400, "malformed request"),
    (b"GET /a HTTP/1.1\r\n" + b"".join(b"H%d: v\r\n" % i for i in range(101)) + b"\r\n", 400, "more than 100"),
    (b"GET /a HTTP/1.1\r\nX: " + b"a" * MAX_HEAD + b"\r\n\r\n", 400, f"exceed {MAX_HEAD} bytes"),
    (b"GET /a HTTP/1.1\r\n" + b"X: a\r\n" * 3000, 400, f"exceed {MAX_HEAD} bytes"),  # never ends
    (b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 411, "Transfer-Encoding"),
    # framing a proxy could read differently (request smuggling): refused, never guessed
    (b"POST /a HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 0\r\n\r\nGET /b HTTP/1.1\r\n\r\n", 400,
     "malformed request"),
    (b"POST /a HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\nGET /b HTTP/1.1\r\n\r\n", 400,
     "malformed request"),
    (b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n", 400,
     "malformed request"),
    (b"POST /a HTTP/1.1\r\nTransfer-Encoding: gzip\r\nContent-Length: 3\r\n\r\nabc", 400, "malformed request"),
    (b"POST /a HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400,
     "malformed request"),
    (b"POST /a HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, "repeated host"),
    (b"POST /a HTTP/1.1\r\nX: a\nContent-Length: 28\r\n\r\n", 400, "malformed request"),
    (b"POST /a HTTP/1.1\r\nX: a\rContent-Length: 28\r\n\r\n", 400, "malformed request"),
    (b"POST /a HTTP/1.1\r\nContent Length: 5\r\n\r\nhello", 400, "malformed request"),
    (b"POST /a HTTP/1.1\r\n X: folded\r\n\r\n", 400, "malformed request"),
    (b"POST /a HTTP/1.1\r\nX: a\x01b\r\n\r\n", 400, "malformed request"),
    (b"POST /a HTTP/1.1\r\nContent-Length: 3\xa0\r\n\r\nabc", 400, "Content-Length"),
    (b"POST /a HTTP/1.1\r\nContent-Length: \xc2\xb2\r\n\r\nab", 400, "Content-Length"),
    (b"POST /a HTTP/1.1\r\nContent-Length: " + b"0" * 5000 + b"\r\n\r\n", 400, "Content-Length"),
    (b"GET /a HTTP/1.1\n\n", 400, "CRLF"),
    (b" /a HTTP/1.1\r\n\r\n", 400, "malformed request"),
    (b"BREW /a HTTP/1.1\r\n\r\n", 400, "malformed request"),
    (b"GET a HTTP/1.1\r\n\r\n", 400, "malformed request"),
    (b"GET http://example.com/a HTTP/1.1\r\n\r\n", 400, "malformed request line"),
    (b"GET /a HTTP/1.9\r\n\r\n", 400, "malformed request"),
    (b"GET /a HTTP/2.0\r\n\r\n", 400, "malformed request line"),
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


def test_hundreds_of_pipelined_requests_in_one_write() -> None:
    async def scenario(server, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /p HTTP/1.1\r\n\r\n" * 1000)
        answers = [await _read_response(reader) for _ in range(1000)]
        writer.close()
        return answers, server._active

    answers, active = _serve(_echo, scenario)
    assert [a[0] for a in answers] == [200] * 1000 and active == 0


async def _cancelled_at_once(request: Request) -> Response:
    raise asyncio.CancelledError


async def _cancelled_later(request: Request) -> Response:
    future = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_later(0.01, future.cancel)
    return await future


@pytest.mark.parametrize("app", [_cancelled_at_once, _cancelled_later])
def test_a_cancelled_handler_gets_503_and_the_connection_lives(app) -> None:
    answers, active = _serve(app, _two_requests)
    assert [(a[0], a[1]["connection"]) for a in answers] == [(503, "keep-alive")] * 2 and active == 0


def test_each_request_gets_its_own_context() -> None:
    import contextvars

    seen: contextvars.ContextVar[str] = contextvars.ContextVar("seen", default="none")

    async def app(request: Request) -> Response:
        before = seen.get()
        seen.set(request.path)
        return Response(200, before.encode())

    async def scenario(server, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        bodies = []
        for path in ("/a", "/b"):
            writer.write(_post(path))
            bodies.append((await _read_response(reader))[2])
        writer.close()
        return bodies

    assert _serve(app, scenario) == [b"none", b"none"]


def test_pipelined_requests_before_a_half_close_are_all_answered() -> None:
    async def scenario(server, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(_post("/1") + _post("/2") + _post("/3"))
        writer.write_eof()
        answers = [await _read_response(reader) for _ in range(3)]
        rest = await reader.read()
        return answers, rest

    answers, rest = _serve(_slow, scenario)
    assert [json.loads(a[2])["path"] for a in answers] == ["/1", "/2", "/3"] and rest == b""
    assert answers[-1][1]["connection"] == "close"


@pytest.mark.parametrize("version,connection,kept", [
    ("HTTP/1.0", "", False), ("HTTP/1.0", "Keep-Alive", True), ("HTTP/1.1", "keep-alive, close", False),
    ("HTTP/1.1", "", True)])
def test_keep_alive_rules(version, connection, kept) -> None:
    async def scenario(server, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET /a {version}\r\n".encode() + (f"Connection: {connection}\r\n".encode()
                                                          if connection else b"") + b"\r\n")
        answer = await _read_response(reader)
        writer.close()
        return answer[1]["connection"]

    assert _serve(_echo, scenario) == ("keep-alive" if kept else "close")


def test_reading_resumes_after_the_client_drains_a_large_answer() -> None:
    big, upload = b"x" * (4 << 20), b"y" * (4 << 20)

    async def app(request: Request) -> Response:
        return Response(200, big if request.path == "/big" else b"%d" % len(request.body))

    async def scenario(server, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 10)
        writer.write(b"GET /big HTTP/1.1\r\n\r\n" + _post("/up", upload))  # the answer is not read yet
        await asyncio.sleep(0.2)
        first = await _read_response(reader)
        second = await _read_response(reader)
        writer.close()
        return first, second

    first, second = _serve(app, scenario, max_body=8 << 20)
    assert first[2] == big and second[2] == b"%d" % len(upload)


def test_a_client_that_never_reads_loses_its_connection_slot() -> None:
    import socket

    limits = Limits(header_timeout_s=0.3, body_timeout_s=0.3, idle_timeout_s=0.3, max_connections=1)

    async def app(request: Request) -> Response:
        return Response(200, b"x" * (16 << 20))

    async def scenario(server, port):
        stuck = socket.create_connection(("127.0.0.1", port))
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stuck.sendall(b"GET /big HTTP/1.1\r\n\r\n")
        await asyncio.sleep(1.5)  # past the limit for reading the answer
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /x HTTP/1.1\r\n\r\n")
        status = (await _read_response(reader))[0]
        writer.close()
        stuck.close()
        return status

    assert _serve(app, scenario, limits) == 200


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


def test_bodies_that_overrun_the_budget_are_refused_unread_and_the_budget_comes_back() -> None:
    big = 1 << 20  # over UNBUDGETED_BODY: reserved; two do not fit a budget of 1.5 MiB
    limits = Limits(body_budget=big * 3 // 2, client_body_budget=2 * big)  # the budget binds, not the share

    async def scenario(server, port):
        held_reader, held = await asyncio.open_connection("127.0.0.1", port)
        held.write(_post("/a", b"x" * big)[:-1000])  # the headers and most of the body
        await asyncio.sleep(0.1)
        reserved = server.body_bytes
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(_post("/b", b"y" * big)[:200])
        refusal = await _read_response(reader)
        closed = await reader.read()
        small = await _two_requests(server, port)  # small bodies need no reservation
        held.write(b"x" * 1000)
        answer = await _read_response(held_reader)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(_post("/a", b"z" * big)[:-1])  # reserved, then the client goes away
        await asyncio.sleep(0.1)
        writer.close()
        await asyncio.sleep(0.1)
        return reserved, refusal, closed, small, answer, server.body_bytes

    reserved, (status, headers, body), closed, (small, _), answer, left = _serve(_echo, scenario, limits, big)
    assert reserved == big and left == 0
    assert status == 503 and headers["retry-after"] == "1" and headers["connection"] == "close" and closed == b""
    assert "busy" in json.loads(body)["error"]
    assert [s for s, _, _ in small] == [200, 200]
    assert answer[0] == 200 and len(json.loads(answer[2])["body"]) == big


def test_one_address_holds_at_most_its_share_of_the_budget() -> None:
    big = 1 << 20  # budget 4 MiB, a quarter (1 MiB) per address: one reserved body each
    limits = Limits(body_budget=4 * big, min_body_rate=0)

    async def scenario(server, port):
        held_reader, held = await asyncio.open_connection("127.0.0.1", port)
        held.write(_post("/a", b"x" * big)[:300])  # headers and a little: the body is reserved
        await asyncio.sleep(0.1)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(_post("/b", b"y" * big)[:300])
        refusal = await _read_response(reader)
        other_reader, other = await asyncio.open_connection("127.0.0.1", port, local_addr=("127.0.0.2", 0))
        other.write(_post("/c", b"z" * big))
        answer = await _read_response(other_reader)
        shares = dict(server._reserved_by)
        held.close()
        await asyncio.sleep(0.1)
        return refusal, answer, shares, dict(server._reserved_by), server.body_bytes

    (status, headers, body), answer, shares, left, left_bytes = _serve(_echo, scenario, limits, big)
    assert status == 503 and headers["retry-after"] == "1" and b"your address" in body
    assert answer[0] == 200 and len(json.loads(answer[2])["body"]) == big
    assert shares == {"127.0.0.1": big}  # the other address's body was released when answered
    assert left == {} and left_bytes == 0


def test_a_body_slower_than_the_minimum_rate_is_cut_off_and_released() -> None:
    big = 1 << 20
    limits = Limits(body_budget=big, min_body_rate=256 * 1024, body_rate_grace_s=0.3, header_timeout_s=0.4)

    async def scenario(server, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(_post("/slow", b"x" * big)[:1000])
        start = asyncio.get_running_loop().time()
        answer = await _read_response(reader)
        elapsed = asyncio.get_running_loop().time() - start
        closed = await reader.read()
        reserved = server.body_bytes
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(_post("/fast", b"y" * big))
        fast = await _read_response(reader)
        writer.close()
        return answer, elapsed, closed, reserved, fast

    (status, headers, body), elapsed, closed, reserved, fast = _serve(_echo, scenario, limits, big)
    assert status == 408 and headers["connection"] == "close" and closed == b"" and b"bytes/s" in body
    assert elapsed < 2 and reserved == 0
    assert fast[0] == 200


def test_reservation_keys() -> None:
    from edgerun.serving.http_server import _reservation_key

    assert _reservation_key("10.0.0.1") == "10.0.0.1"
    assert _reservation_key("2001:db8:1:2:aaaa::1") == _reservation_key("2001:db8:1:2:bbbb::9") == "2001:db8:1:2::/64"
    assert _reservation_key("2001:db8:1:3::1") != _reservation_key("2001:db8:1:2::1")
    assert _reservation_key("::ffff:10.0.0.1") == "10.0.0.1"
    assert _reservation_key("fe80::1%eth0") == "fe80::/64"
    assert _reservation_key("") == ""


def test_connections_are_capped_per_client_address() -> None:
    async def scenario(server, port):
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        refusal = await _read_response(reader)
        other_reader, other_writer = await asyncio.open_connection("127.0.0.1", port, local_addr=("127.0.0.2", 0))
        other_writer.write(_post("/other-address"))
        other = await _read_response(other_reader)
        for _, w in held:
            w.close()
        await asyncio.sleep(0.1)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(_post("/again"))
        again = await _read_response(reader)
        return refusal, other, again, dict(server._per_client)

    refusal, other, again, per_client = _serve(_echo, scenario, Limits(max_connections_per_client=2))
    assert refusal[0] == 503 and b"from your address" in refusal[2]
    assert other[0] == 200 and again[0] == 200
    assert per_client == {"127.0.0.1": 1, "127.0.0.2": 1}


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


# --- fuzzing: arbitrary bytes, in arbitrary pieces, straight into the protocol ------------------

class _Transport:
    """Records what the server writes; enough of asyncio.Transport for _Connection."""

    def __init__(self) -> None:
        self.written, self.closed, self.after_close = bytearray(), False, 0

    def write(self, data: bytes) -> None:
        if self.closed:
            self.after_close += 1
        self.written += data

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_extra_info(self, name: str, default=None):
        return default


_VALID = _post("/v2/x", b"hello") + b"GET /a?b HTTP/1.1\r\nConnection: keep-alive\r\n\r\n"


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=400),
                 st.builds(lambda cut, junk: _VALID[:cut] + junk + _VALID[cut:],
                           st.integers(0, len(_VALID)), st.binary(max_size=40))),
       st.lists(st.integers(1, 64), min_size=1, max_size=20))
def test_fuzzed_bytes_get_well_formed_answers_or_a_close(data: bytes, pieces: list[int]) -> None:
    from edgerun.serving.http_server import _Connection

    async def main() -> _Transport:
        server = HttpServer(_echo, 1 << 10)
        connection, transport = _Connection(server), _Transport()
        connection.connection_made(transport)
        position = 0
        for size in pieces * (len(data) // max(sum(pieces), 1) + 1):
            if position >= len(data):
                break
            connection.data_received(data[position:position + size])
            position += size
        connection.eof_received()
        return transport

    transport = asyncio.run(main())
    assert transport.after_close == 0
    rest = bytes(transport.written)
    while rest:  # every byte written belongs to a complete HTTP/1.1 response
        head, sep, rest = rest.partition(b"\r\n\r\n")
        assert sep and head.startswith(b"HTTP/1.1 "), head[:80]
        status = int(head.split(b" ")[1])
        assert status in (100, 200, 400, 411, 413), status
        if status != 100:
            length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
            assert len(rest) >= length
            rest = rest[length:]


def test_tls_requests_and_closes_without_warnings(tmp_path, caplog) -> None:
    import logging
    import ssl

    from edgerun.serving.tls import TlsFiles, ssl_context
    from tests.tls_certs import make_pki

    pki = make_pki(tmp_path)
    client_context = ssl.create_default_context(cafile=str(pki["ca"]))

    async def main():
        server = HttpServer(_echo, 1 << 20, ssl_context(TlsFiles(pki["server_cert"], pki["server_key"])))
        await server.start("127.0.0.1", 0)
        port = server._server.sockets[0].getsockname()[1]
        try:
            answers = []
            for _ in range(2):  # each connection: one request, then the client closes it
                reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_context,
                                                               server_hostname="localhost")
                writer.write(_post("/tls", b"secret"))
                answers.append(await _read_response(reader))
                writer.close()
                await writer.wait_closed()
            await asyncio.sleep(0.1)
            return answers
        finally:
            await server.stop(1.0)

    with caplog.at_level(logging.WARNING, logger="asyncio"):
        answers = asyncio.run(main())
    assert [(status, json.loads(body)["body"]) for status, _, body in answers] == [(200, "secret")] * 2
    assert not [r for r in caplog.records if "eof_received" in r.getMessage()]


def test_refusals_are_reported_to_the_apps_refused_hook() -> None:
    seen = []

    class App:
        async def __call__(self, request: Request) -> Response:
            return await _echo(request)

        def refused(self, request: Request | None, response: Response) -> None:
            seen.append((request.path if request is not None else None, response.status))

    async def scenario(server, port):
        for raw in (b"GET /a HTTP/1.1\r\nNoColonHere\r\n\r\n", _post("/big", b"x" * 2000), _post("/ok", b"fine")):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(raw)
            await _read_response(reader)
            writer.close()

    _serve(App(), scenario, max_body=1000)
    assert seen == [(None, 400), ("/big", 413)]


def test_an_upgrade_request_is_answered_then_the_connection_closed() -> None:
    async def scenario(server, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(_post("/up", b"body", "Connection: Upgrade", "Upgrade: h2c") + b"GET /next HTTP/1.1\r\n\r\n")
        answer = await _read_response(reader)
        rest = await reader.read()
        writer.close()
        return answer, rest

    (status, headers, body), rest = _serve(_echo, scenario)
    assert status == 200 and json.loads(body)["body"] == "body" and headers["connection"] == "close" and rest == b""


@pytest.mark.parametrize("split", [1, 2, 3])
def test_the_blank_line_ending_a_head_may_be_split_between_reads(split) -> None:
    async def scenario(server, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        raw = _post("/split", b"abc")
        cut = raw.index(b"\r\n\r\n") + split
        writer.write(raw[:cut])
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(raw[cut:])
        answer = await _read_response(reader)
        writer.close()
        return answer

    status, _, body = _serve(_echo, scenario)
    assert status == 200 and json.loads(body)["body"] == "abc"


def test_a_closed_connection_frees_its_memory_without_waiting_for_the_cycle_collector(monkeypatch):
    """The parser holds the connection's bound methods (a cycle): closed connections and their
    read buffers (200 KB of junk each here) must go when they close, not at the next collection."""
    import gc
    import weakref

    from edgerun.serving import http_server

    made = []
    original = http_server._Connection.__init__

    def remember(self, server):
        original(self, server)
        made.append(weakref.ref(self))

    monkeypatch.setattr(http_server._Connection, "__init__", remember)

    async def app(request):
        return Response(200, b"ok")

    async def main():
        server = HttpServer(app, 1 << 20)
        await server.start("127.0.0.1", 0)
        port = server._server.sockets[0].getsockname()[1]
        for _ in range(20):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET / HTTP/1.1\r\n\r\n" + b"Z" * 200_000)
            try:
                await reader.read()
            except ConnectionResetError:
                pass
            writer.close()
        await asyncio.sleep(0.5)
        alive = sum(ref() is not None for ref in made)
        await server.stop(0.1)
        return alive

    gc.disable()
    try:
        alive = asyncio.run(main())
    finally:
        gc.enable()
    assert len(made) == 20 and alive == 0

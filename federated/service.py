"""gRPC adapter for the coordinator: authenticate, call a plain handler, map errors
to status codes. Large payloads stream in chunks; keep-alives keep slow devices
connected while they train.

The service runs on grpc.aio, in its own event-loop thread (`serve`). A call waiting for
bytes from the network is a coroutine, not a thread: an open stream holds no worker, so
idle or unauthenticated streams cannot starve other calls. The coordinator's handlers
(SQLite, locks, signatures) run on a small thread pool, each a short, bounded piece of
work. What one peer or client may hold is bounded (federated.limits.ServiceLimits): a
stream must send its authenticated header within `header_timeout` and each next chunk
within `idle_timeout` or it is cancelled; concurrent streams per IP address and per
client are capped; requests are rate-limited per enrolled client (once its signature
verified and the request is fresh and unseen, so replays cost the client nothing) and
unauthenticated calls and failed authentications per IP address, RESOURCE_EXHAUSTED
beyond: an address that spent its failure budget has its signed requests refused on the
event loop, before they take a worker, a key lookup or a signature verification. Refusals
are logged at most a few per address and minute, then counted.

GetWork is a long-poll when the device asks for one (WorkRequest.wait_seconds > 0): once
authenticated, a call with nothing to do is held on the event loop (a future, no thread)
until the coordinator's work watcher says a round, an evaluation or the end of the run may
have work for that device (Coordinator.subscribe_work), or the wait ends (WAIT). Idle
devices then cost one request per wait instead of one per poll interval. At most one call
per client is held (a newer one releases the older) and `max_waiting` in all; the held
clients count as seen (available for selection) while they wait. GetWork is most of what a
fleet sends, so its common case (a client whose key is in memory, with nothing to do) is
answered on the event loop, without the hop to the pool and back that would cost more CPU
than the check; whatever might wait (the store, a busy coordinator lock) still goes to the pool.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hmac
import json
import logging
import threading
from collections.abc import AsyncIterator, Callable
from concurrent import futures
from typing import Any, TypeVar

import grpc
import numpy as np

from edgerun.federated.auth import AuthError, ReplayGuard, ReplayLimit, SignedFields, request_message, sha256, verify
from edgerun.federated.coordinator import CLIENT_ID, Action, Coordinator, Work, check_enrolment
from edgerun.federated.errors import Rejected
from edgerun.federated.limits import LogThrottle, RateLimiter, ServiceLimits, Slots, peer_host
from edgerun.federated.protos import federated_pb2 as pb
from edgerun.federated.protos import federated_pb2_grpc as pb_grpc
from edgerun.federated.secagg import wire
from edgerun.federated.secagg.errors import MalformedVector
from edgerun.federated.secagg.quantize import unpack
from edgerun.federated.typing import EvaluateRes
from edgerun.runtime.errors import ErrorCode

log = logging.getLogger("edgerun.federated")

T = TypeVar("T")
CHUNK_BYTES = 1 << 20
# Server and client agree on keep-alives so a device training for minutes stays connected.
KEEPALIVE_OPTIONS = [
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.http2.max_pings_without_data", 0),
]
GRPC_CODES = {code: getattr(grpc.StatusCode, code.name) for code in ErrorCode}
_ACTIONS = {Action.WAIT: pb.WorkReply.WAIT, Action.TRAIN: pb.WorkReply.TRAIN, Action.STOP: pb.WorkReply.STOP,
            Action.EVALUATE: pb.WorkReply.EVALUATE}


def _fields(auth: pb.Auth) -> SignedFields:
    return SignedFields(auth.client_id, auth.timestamp, auth.nonce, auth.signature)


def _work_reply(work: Work) -> pb.WorkReply:
    return pb.WorkReply(action=_ACTIONS[work.action], round=work.round, model_version=work.model_version,
                        config_json=json.dumps(work.config), deadline=work.deadline, retry_after=work.retry_after)


def _settle(future: asyncio.Future[bool], value: bool) -> None:
    if not future.done():
        future.set_result(value)


class LongPolls:
    """The GetWork calls held on one event loop, by client id: at most one per client and
    `limit` in all. Loop-only, except `notify` (any thread)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, limit: int, per_peer: int | None = None) -> None:
        self.loop, self.limit, self.per_peer = loop, limit, per_peer or limit
        self.generation = 0  # the latest work generation this loop has been told of
        self.held: dict[str, asyncio.Future[bool]] = {}
        self.peers: collections.Counter[str] = collections.Counter()  # held calls by IP address
        self.closing = False

    def notify(self, generation: int, due: frozenset[str] | None) -> None:
        """Coordinator.subscribe_work's listener (its watcher thread): hand over to the loop."""
        with contextlib.suppress(RuntimeError):  # the loop is closed: nothing is held any more
            self.loop.call_soon_threadsafe(self._wake, generation, due)

    def _wake(self, generation: int, due: frozenset[str] | None) -> None:
        self.generation = max(self.generation, generation)
        held = self.held
        woken = list(held) if due is None else ([c for c in due if c in held] if len(due) < len(held)
                                                else [c for c in held if c in due])
        for client in woken:
            _settle(held[client], True)

    def can_hold(self, client: str, peer: str) -> bool:
        """Whether a call of `client` from address `peer` may be held now (its own older call
        is replaced, so it always may; else below `limit` in all and `per_peer` for `peer`)."""
        return not self.closing and (client in self.held or (len(self.held) < self.limit
                                                             and self.peers[peer] < self.per_peer))

    async def hold(self, client: str, peer: str, timeout: float) -> bool:
        """Wait up to `timeout` seconds: True when `client` may have work now, False at the
        timeout, when a newer call of the same client takes its place, or at shutdown."""
        older = self.held.get(client)
        if older is not None:
            _settle(older, False)
        future = self.held[client] = self.loop.create_future()
        self.peers[peer] += 1
        timer = self.loop.call_later(timeout, _settle, future, False)
        try:
            return await future
        finally:
            timer.cancel()
            if self.held.get(client) is future:
                del self.held[client]
            self.peers[peer] -= 1
            if not self.peers[peer]:
                del self.peers[peer]

    def close(self) -> None:
        """Release every held call (they answer WAIT) and hold no more: the server stops."""
        self.closing = True
        for future in self.held.values():
            _settle(future, False)


class CoordinatorServicer(pb_grpc.CoordinatorServicer):
    """Thin: every method authenticates, runs a Coordinator handler on the worker pool (GetWork
    on the loop when nothing can wait) and maps Rejected to its status code; the limits and
    long-polls are applied here (module docstring)."""

    def __init__(self, coordinator: Coordinator, pool: futures.Executor, limits: ServiceLimits | None = None,
                 max_update_bytes: int | None = None) -> None:
        self.coordinator, self.pool = coordinator, pool
        self.limits = limits = limits or ServiceLimits()
        self.guard = ReplayGuard()
        self.client_rate = RateLimiter(limits.client_rate, limits.client_burst)
        self.peer_rate = RateLimiter(limits.peer_rate, limits.peer_burst)
        # failed authentications per IP address: a bucket of the same size, apart from the
        # one Enrol and Status spend, so a fleet enrolling behind one address is not refused
        # its signed requests for it
        self.peer_failures = RateLimiter(limits.peer_rate, limits.peer_burst)
        self.refusal_log = LogThrottle()
        self.peer_streams, self.client_streams = Slots(limits.streams_per_peer), Slots(limits.streams_per_client)
        spec_bytes = sum(dt.itemsize * int(np.prod(shape)) for dt, shape in coordinator.spec.values())
        self.max_update_bytes = max_update_bytes or 2 * spec_bytes + (1 << 16)
        self.long_polls: LongPolls | None = None  # set by `hold_long_polls` on the serving loop
        self._unsubscribe: Callable[[], None] | None = None

    def hold_long_polls(self, loop: asyncio.AbstractEventLoop) -> None:
        """Hold GetWork long-polls on `loop` (the one serving the calls), woken by the coordinator;
        without this call GetWork answers at once, whatever a device asks."""
        self.long_polls = LongPolls(loop, self.limits.max_waiting, self.limits.waiting_per_peer)
        self._unsubscribe = self.coordinator.subscribe_work(self.long_polls.notify)

    def release_long_polls(self) -> None:
        """Answer every held long-poll (WAIT) and hold no more (on the serving loop, at shutdown)."""
        if self.long_polls is not None:
            self.long_polls.close()
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    async def refresh_seen(self) -> None:
        """Runs on the serving loop until cancelled: counts the clients whose long-poll is held
        as seen (Coordinator.mark_seen) a few times per `available_window`, so a device that
        waits stays available for selection however long it waits."""
        period = min(10.0, max(0.2, self.coordinator.config.available_window / 4))
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(period)
            if self.long_polls is not None and self.long_polls.held:
                await loop.run_in_executor(self.pool, self.coordinator.mark_seen, list(self.long_polls.held))

    # ------------------------------------------------------------ plumbing
    async def _run(self, context: grpc.aio.ServicerContext, fn: Callable[..., T], *args: Any) -> T:
        """fn(*args) on the worker pool; a Rejected it raises ends the call with its status."""
        try:
            return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)
        except Rejected as exc:
            await self._refuse(context, exc)
            raise  # not reached: abort raises

    async def _refuse(self, context: grpc.aio.ServicerContext, exc: Rejected) -> None:
        """End the call with `exc`'s status (logged, throttled); raises."""
        if exc.routine:
            log.info("refused (from %s): %s", peer_host(context.peer()), exc)
        else:
            self._log_refusal(peer_host(context.peer()), str(exc))
        await context.abort(GRPC_CODES[exc.code], str(exc))

    def _log_refusal(self, peer: str, message: str) -> None:
        """A WARNING for a refused call: the first few per address and minute, then a count."""
        write, left_out = self.refusal_log.admit(peer)
        if write:
            more = f" ({left_out} more refusals from {peer} not logged in the minute before)" if left_out else ""
            log.warning("refused (from %s): %s%s", peer, message, more)

    async def _admit(self, context: grpc.aio.ServicerContext, method: str) -> str:
        """The caller's IP address, once it may have a signed request verified: an address
        whose failed-authentication bucket is empty is refused (RESOURCE_EXHAUSTED) here, on
        the event loop, before any worker, key lookup or signature check is spent on it."""
        peer = peer_host(context.peer())
        if not self.peer_failures.has_token(peer):
            message = (f"{method} from {peer}: over {self.limits.peer_rate:g} failed authentications/s "
                       f"(burst {self.limits.peer_burst:g}); retry later")
            self._log_refusal(peer, message)
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, message)
        return peer

    def _refuse_unauthenticated(self, peer: str, message: str) -> Rejected:
        """The refusal of a request that failed authentication, charged to its address:
        UNAUTHENTICATED, or RESOURCE_EXHAUSTED once the address's failure bucket is spent."""
        if self.peer_failures.allow(peer):
            return Rejected(ErrorCode.UNAUTHENTICATED, message)
        return Rejected(ErrorCode.RESOURCE_EXHAUSTED, f"{message}; and {peer} is over {self.limits.peer_rate:g} "
                        f"failed authentications/s (burst {self.limits.peer_burst:g}): retry later")

    def _charge_client(self, client: str) -> None:
        if not self.client_rate.allow(client):
            raise Rejected(ErrorCode.RESOURCE_EXHAUSTED, f"client {client!r}: over {self.limits.client_rate:g} "
                           f"requests/s (burst {self.limits.client_burst:g}); retry later")

    def _verify(self, auth: pb.Auth, method: str, body: bytes, peer: str, key: bytes | None = None) -> str:
        """The id of the enrolled client that signed this request, sent from address `peer`
        (worker pool, or the loop when `key` is given). Rejected: UNAUTHENTICATED (unknown
        client, bad signature, stale or replayed; each charged to `peer`'s failure bucket,
        RESOURCE_EXHAUSTED once it is spent), RESOURCE_EXHAUSTED (over the client's rate or
        replay-window limit). The order is: signature, freshness and nonce unseen, the
        client's rate, then the nonce is remembered; so only a fresh request signed by the
        client spends its budget, never an outsider claiming its id nor a replay of its
        requests. `key`: the client's key when the caller has it (then nothing here waits on
        the store: the event loop may call it)."""
        if not CLIENT_ID.fullmatch(auth.client_id):  # before any lookup or cache sees it
            raise self._refuse_unauthenticated(peer, f"{method}: malformed client id ({len(auth.client_id)} "
                                                     "characters; see federated.coordinator.CLIENT_ID)")
        key = key or self.coordinator.public_key_of(auth.client_id)
        if key is None:
            raise self._refuse_unauthenticated(peer, f"{method}: unknown client {auth.client_id[:128]!r}: enrol first")
        fields = _fields(auth)
        try:
            verify(key, fields.signature, request_message(method, fields.client_id, fields.timestamp, fields.nonce,
                                                          sha256(body)), f"client {fields.client_id!r} {method}")
            self.guard.check(fields, charge=lambda: self._charge_client(auth.client_id))
        except ReplayLimit as exc:
            raise Rejected(ErrorCode.RESOURCE_EXHAUSTED, str(exc)) from None
        except AuthError as exc:
            raise self._refuse_unauthenticated(peer, f"{method}: {exc}") from None
        return auth.client_id

    async def _limit_peer(self, context: grpc.aio.ServicerContext, method: str) -> None:
        """Charge an unauthenticated call to its IP address's bucket; RESOURCE_EXHAUSTED when empty."""
        peer = peer_host(context.peer())
        if not self.peer_rate.allow(peer):
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                f"{method} from {peer}: over {self.limits.peer_rate:g} unauthenticated calls/s "
                                f"(burst {self.limits.peer_burst:g}); retry later")

    @contextlib.asynccontextmanager
    async def _slot(self, context: grpc.aio.ServicerContext, slots: Slots, key: str,
                    what: str) -> AsyncIterator[None]:
        """Hold one of `key`'s stream slots for the block; RESOURCE_EXHAUSTED when it has none left."""
        if not slots.acquire(key):
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                f"{what} {key!r} already has {slots.limit} streams open; retry later")
        try:
            yield
        finally:
            slots.release(key)

    async def _next(self, context: grpc.aio.ServicerContext, chunks: AsyncIterator[Any], timeout: float,
                    what: str) -> Any:
        """The next message of a stream (None at its end); DEADLINE_EXCEEDED if it does not
        arrive within `timeout` seconds, which ends the stream and frees what it held."""
        try:
            return await asyncio.wait_for(anext(chunks), timeout)
        except StopAsyncIteration:
            return None
        except TimeoutError:
            log.warning("stream from %s cancelled: %s did not arrive within %g s", context.peer(), what, timeout)
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, f"{what} did not arrive within {timeout:g} s")

    async def _receive(self, requests: AsyncIterator[Any], context: grpc.aio.ServicerContext, method: str,
                       what: str, signed_body: Callable[[Any], bytes]) -> tuple[str, Any, bytes]:
        """(client, header, payload) of a chunked upload (Upload, UploadMasked). The header must
        come first, within `header_timeout`, and is authenticated before anything else is read
        (`signed_body` gives the bytes its signature covers), so an unauthenticated caller
        cannot make the coordinator buffer anything or hold the stream open; then the client
        holds one of its stream slots while the chunks come, each within `idle_timeout`, and
        `what` it uploads may not exceed the size limit."""
        chunks = aiter(requests)
        chunk = await self._next(context, chunks, self.limits.header_timeout, "the first chunk (with the header)")
        if chunk is None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "empty upload")
        if not chunk.HasField("header"):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first chunk must carry the header")
        header = chunk.header
        peer = await self._admit(context, method)
        client = await self._run(context, self._verify, header.auth, method, signed_body(header), peer)
        if header.total_size > self.max_update_bytes:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                f"{what} of {header.total_size} bytes exceeds {self.max_update_bytes}")
        parts, size = [], 0
        async with self._slot(context, self.client_streams, client, "client"):
            while chunk is not None:
                size += len(chunk.data)
                if size > header.total_size:
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "more bytes than the header announced")
                parts.append(chunk.data)
                chunk = await self._next(context, chunks, self.limits.idle_timeout, "the next chunk")
        return client, header, b"".join(parts)

    @staticmethod
    def _check_payload(header: Any, blob: bytes) -> None:
        if len(blob) != header.total_size or sha256(blob) != header.sha256:
            raise Rejected(ErrorCode.INVALID_ARGUMENT, "payload size or sha256 does not match the header")

    # ------------------------------------------------------------ methods
    async def Enrol(self, request: pb.EnrolRequest, context: grpc.aio.ServicerContext) -> pb.EnrolReply:
        await self._limit_peer(context, "Enrol")
        return pb.EnrolReply(coordinator_public_key=await self._run(context, self._enrol, request))

    def _enrol(self, request: pb.EnrolRequest) -> bytes:
        info = dict(request.info)
        check_enrolment(request.client_id, info)  # bounded fields before any work on them
        body = request.public_key + request.token.encode()
        try:  # proof of possession: signed with the key being enrolled (a replay only meets ALREADY_EXISTS,
            # so unenrolled callers cannot grow the replay guard)
            message = request_message("Enrol", request.auth.client_id, request.auth.timestamp, request.auth.nonce,
                                      sha256(body))
            verify(request.public_key, request.auth.signature, message, f"client {request.client_id!r} Enrol")
        except AuthError as exc:
            raise Rejected(ErrorCode.UNAUTHENTICATED, str(exc)) from None
        if request.auth.client_id != request.client_id:
            raise Rejected(ErrorCode.UNAUTHENTICATED, "client id differs from the signed one")
        return self.coordinator.enrol(request.client_id, request.public_key, request.token, info)

    async def GetWork(self, request: pb.WorkRequest, context: grpc.aio.ServicerContext) -> pb.WorkReply:
        """The device's work; a long-poll (held until there is work, at most `wait_seconds`
        capped at `max_wait`) when it asks for one and has nothing to do now."""
        peer = await self._admit(context, "GetWork")
        key = self.coordinator.known_key(request.auth.client_id)
        if key is None:  # the key from the store: on the pool
            client, (work, generation) = await self._run(context, self._get_work, request.auth, peer)
        else:  # the common case, on the loop unless the coordinator is busy (see _poll_work)
            try:
                client = self._verify(request.auth, "GetWork", b"", peer, key)
            except Rejected as exc:
                await self._refuse(context, exc)
            work, generation = await self._poll_work(context, client)
        wait = min(request.wait_seconds, self.limits.max_wait) if request.wait_seconds > 0 else 0.0  # NaN: 0
        if wait > 0 and work.action is Action.WAIT:
            work = await self._long_poll(context, client, peer, wait, generation)
        return _work_reply(work)

    def _get_work(self, auth: pb.Auth, peer: str) -> tuple[str, tuple[Work, int]]:
        client = self._verify(auth, "GetWork", b"", peer)
        return client, self.coordinator.poll_work(client)

    async def _poll_work(self, context: grpc.aio.ServicerContext, client: str) -> tuple[Work, int]:
        """Coordinator.poll_work(client): answered on the loop when that needs no waiting (most
        calls: a client with nothing to do), else on the pool. A hop to the pool and back costs
        more CPU than the check itself, and GetWork is most of what a fleet sends."""
        answer = self.coordinator.poll_work_nowait(client)
        return answer if answer is not None else await self._run(context, self.coordinator.poll_work, client)

    async def _long_poll(self, context: grpc.aio.ServicerContext, client: str, peer: str, wait: float,
                         generation: int) -> Work:
        """Hold an authenticated client's GetWork until it has work or `wait` seconds passed
        (WAIT, ask again at once). `generation`: the one its WAIT was decided in; a change the
        loop heard of after it is checked again before holding, so no wake-up is missed."""
        polls = self.long_polls
        if polls is None or not polls.can_hold(client, peer):
            return Work(Action.WAIT, retry_after=1.0)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while (left := deadline - loop.time()) > 0 and not polls.closing:
            if generation >= polls.generation:
                if not polls.can_hold(client, peer):  # its slot went to another call meanwhile
                    return Work(Action.WAIT, retry_after=1.0)
                if not await polls.hold(client, peer, left):
                    break  # the wait is over, a newer call of this client took its place, or shutdown
            work, generation = await self._poll_work(context, client)
            if work.action is not Action.WAIT:
                return work
        return Work(Action.WAIT, retry_after=1.0 if polls.closing else 0.0)

    async def Download(self, request: pb.DownloadRequest, context: grpc.aio.ServicerContext) -> AsyncIterator[pb.Chunk]:
        kind = "model" if request.kind == pb.DownloadRequest.MODEL else "parameters"
        body = f"{kind}:{request.model_version}".encode()
        peer = await self._admit(context, "Download")
        async with self._slot(context, self.peer_streams, peer, "peer"):
            client = await self._run(context, self._verify, request.auth, "Download", body, peer)
            async with self._slot(context, self.client_streams, client, "client"):
                blob, digest, signature = await self._run(context, self.coordinator.payload, kind,
                                                          request.model_version)
                for start in range(0, max(len(blob), 1), CHUNK_BYTES):
                    first = start == 0
                    yield pb.Chunk(data=blob[start : start + CHUNK_BYTES],
                                   total_size=len(blob) if first else 0, sha256=digest if first else b"",
                                   signature=signature if first else b"",
                                   model_version=request.model_version if first else 0)

    async def Upload(self, request_iterator: AsyncIterator[pb.UploadChunk],
                     context: grpc.aio.ServicerContext) -> pb.UploadReply:
        """A plain update: header (round, examples, metrics, size, sha256), then the payload."""
        async with self._slot(context, self.peer_streams, peer_host(context.peer()), "peer"):
            client, header, blob = await self._receive(
                request_iterator, context, "Upload", "update",
                lambda h: upload_body(h.round, h.num_examples, dict(h.metrics), h.sha256))
        await self._run(context, self._submit, client, header, blob)
        return pb.UploadReply(accepted=True, message="ok")

    def _submit(self, client: str, header: pb.UpdateHeader, blob: bytes) -> None:
        self._check_payload(header, blob)
        self.coordinator.submit(client, header.round, blob, header.num_examples, dict(header.metrics))

    async def ReportEvaluation(self, request: pb.EvaluationReport,
                               context: grpc.aio.ServicerContext) -> pb.UploadReply:
        peer = await self._admit(context, "ReportEvaluation")
        await self._run(context, self._report_evaluation, request, peer)
        return pb.UploadReply(accepted=True, message="ok")

    def _report_evaluation(self, request: pb.EvaluationReport, peer: str) -> None:
        body = evaluation_body(request.round, request.num_examples, request.loss, dict(request.metrics))
        client = self._verify(request.auth, "ReportEvaluation", body, peer)
        result = EvaluateRes(request.loss, request.num_examples, dict(request.metrics))
        self.coordinator.submit_evaluation(client, request.round, result)

    async def SecAgg(self, request: pb.SecAggRequest, context: grpc.aio.ServicerContext) -> pb.SecAggReply:
        """One secure-aggregation stage message (or poll), signed over the request without auth."""
        peer = await self._admit(context, "SecAgg")
        return wire.reply_to_pb(await self._run(context, self._secure_step, request, peer))

    def _secure_step(self, request: pb.SecAggRequest, peer: str) -> Any:
        client = self._verify(request.auth, "SecAgg", wire.request_body(request), peer)
        return self.coordinator.secure_step(client, request.round, request.stage, wire.payload_of(request))

    async def UploadMasked(self, request_iterator: AsyncIterator[pb.MaskedChunk],
                           context: grpc.aio.ServicerContext) -> pb.UploadReply:
        """A masked input: header (authenticated first), then packed ring elements matching it."""
        async with self._slot(context, self.peer_streams, peer_host(context.peer()), "peer"):
            client, header, blob = await self._receive(
                request_iterator, context, "UploadMasked", "masked input",
                lambda h: wire.masked_body(h.round, h.bits, h.length, h.sha256))
        await self._run(context, self._submit_masked, client, header, blob)
        return pb.UploadReply(accepted=True, message="ok")

    def _submit_masked(self, client: str, header: pb.MaskedHeader, blob: bytes) -> None:
        self._check_payload(header, blob)
        if not 2 <= header.bits <= 32:
            raise Rejected(ErrorCode.INVALID_ARGUMENT, f"bits must be in 2..32, got {header.bits}")
        try:
            vector = unpack(blob, header.bits, header.length)
        except MalformedVector as exc:
            raise Rejected(ErrorCode.INVALID_ARGUMENT, str(exc)) from None
        self.coordinator.submit_masked(client, header.round, header.bits, vector)

    async def Decline(self, request: pb.DeclineRequest, context: grpc.aio.ServicerContext) -> pb.UploadReply:
        """A selected device will not train in a round, and why: the round stops waiting for it."""
        peer = await self._admit(context, "Decline")
        counted = await self._run(context, self._decline, request, peer)
        return pb.UploadReply(accepted=counted, message="ok" if counted else "not selected in an open round")

    def _decline(self, request: pb.DeclineRequest, peer: str) -> bool:
        client = self._verify(request.auth, "Decline", decline_body(request.round, request.reason), peer)
        return self.coordinator.decline(client, request.round, request.reason)

    async def Status(self, request: pb.StatusRequest, context: grpc.aio.ServicerContext) -> pb.StatusReply:
        """Rounds, clients and metrics for an operator (metadata "authorization: Bearer <operator
        token>"); anyone else learns only that the coordinator is alive."""
        await self._limit_peer(context, "Status")
        if self._is_operator(context):
            status = await self._run(context, self.coordinator.status)
        else:
            status = self.coordinator.liveness()
        return pb.StatusReply(json=json.dumps(status, default=str))

    def _is_operator(self, context: grpc.aio.ServicerContext) -> bool:
        token = self.coordinator.config.operator_token
        if token is None:
            return False
        presented = dict(context.invocation_metadata() or ()).get("authorization", "")
        return hmac.compare_digest(presented.encode(), f"Bearer {token}".encode())


def upload_body(round_number: int, num_examples: int, metrics: dict[str, float], digest: bytes) -> bytes:
    """The bytes an Upload's auth signature covers (besides method, id, time and nonce)."""
    fields = json.dumps({"round": round_number, "num_examples": num_examples, "metrics": metrics},
                        sort_keys=True).encode()
    return fields + digest


def evaluation_body(round_number: int, num_examples: int, loss: float, metrics: dict[str, float]) -> bytes:
    """The bytes a ReportEvaluation's auth signature covers."""
    return json.dumps({"round": round_number, "num_examples": num_examples, "loss": loss, "metrics": metrics},
                      sort_keys=True).encode()


def decline_body(round_number: int, reason: str) -> bytes:
    """The bytes a Decline's auth signature covers."""
    return json.dumps({"round": round_number, "reason": reason}, sort_keys=True).encode()


class CoordinatorServer:
    """The coordinator's grpc.aio server, on its own event-loop thread, and the worker pool its
    handlers run on. `stop(grace)` returns a threading.Event set once it has stopped (as
    grpc.Server.stop does); RuntimeError at start if the address cannot be bound."""

    def __init__(self, coordinator: Coordinator, address: str, credentials: grpc.ServerCredentials | None,
                 workers: int, limits: ServiceLimits) -> None:
        self.pool = futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="coordinator")
        self.servicer = CoordinatorServicer(coordinator, self.pool, limits)
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Future[float | None] = self._loop.create_future()
        self._stopped = threading.Event()
        started: futures.Future[int] = futures.Future()
        self._thread = threading.Thread(target=self._main, args=(address, credentials, started), daemon=True,
                                        name="coordinator-grpc")
        self._thread.start()
        self.port = started.result(timeout=60)

    def _main(self, address: str, credentials: grpc.ServerCredentials | None, started: futures.Future) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._serve(address, credentials, started))
        finally:
            self._loop.close()
            self.pool.shutdown(wait=False, cancel_futures=True)
            self._stopped.set()

    async def _serve(self, address: str, credentials: grpc.ServerCredentials | None, started: futures.Future) -> None:
        limits = self.servicer.limits
        try:
            server = grpc.aio.server(options=[*KEEPALIVE_OPTIONS, ("grpc.max_receive_message_length",
                                                                   limits.max_message_bytes)],
                                     maximum_concurrent_rpcs=limits.max_concurrent_rpcs)
            pb_grpc.add_CoordinatorServicer_to_server(self.servicer, server)
            port = (server.add_secure_port(address, credentials) if credentials is not None
                    else server.add_insecure_port(address))
            if port == 0:
                raise RuntimeError(f"cannot bind the coordinator's gRPC address {address}")
            await server.start()
        except BaseException as exc:
            started.set_exception(exc)
            return
        self.servicer.hold_long_polls(self._loop)
        refresher = asyncio.create_task(self.servicer.refresh_seen())
        started.set_result(port)
        grace = await self._stop
        self.servicer.release_long_polls()  # held calls answer now instead of running into the grace period
        refresher.cancel()
        await server.stop(grace)
        # the calls stop() cancelled finish on this loop; let them before it closes
        pending = asyncio.all_tasks() - {asyncio.current_task()}
        if pending:
            await asyncio.wait(pending, timeout=1.0)

    def stop(self, grace: float | None) -> threading.Event:
        """Stop accepting calls, cancel those still running after `grace` seconds (None: at once)."""
        def request() -> None:
            if not self._stop.done():
                self._stop.set_result(grace)
        with contextlib.suppress(RuntimeError):  # the loop is already closed: stopped
            self._loop.call_soon_threadsafe(request)
        return self._stopped


def serve(coordinator: Coordinator, address: str = "127.0.0.1:0", credentials: grpc.ServerCredentials | None = None,
          workers: int = 16, limits: ServiceLimits | None = None) -> tuple[CoordinatorServer, int]:
    """Start a gRPC server for `coordinator`; returns (server, bound port). `workers`: threads
    that run the coordinator's handlers; `limits`: what one peer or client may hold."""
    server = CoordinatorServer(coordinator, address, credentials, workers, limits or ServiceLimits())
    return server, server.port

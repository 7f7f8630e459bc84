"""gRPC adapter for the coordinator: authenticate, call a plain handler, map errors
to status codes. Large payloads stream in chunks; keep-alives keep slow devices
connected while they train.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any

import grpc
import numpy as np

from edgerun.federated.auth import AuthError, ReplayGuard, SignedFields, request_message, sha256, verify, verify_request
from edgerun.federated.coordinator import Action, Coordinator
from edgerun.federated.errors import Rejected
from edgerun.federated.protos import federated_pb2 as pb
from edgerun.federated.protos import federated_pb2_grpc as pb_grpc
from edgerun.federated.secagg import wire
from edgerun.federated.secagg.errors import MalformedVector
from edgerun.federated.secagg.quantize import unpack
from edgerun.federated.typing import EvaluateRes
from edgerun.runtime.errors import ErrorCode

log = logging.getLogger("edgerun.federated")

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


class CoordinatorServicer(pb_grpc.CoordinatorServicer):
    """Thin: every method authenticates, delegates to the Coordinator, maps Rejected/AuthError."""

    def __init__(self, coordinator: Coordinator, max_update_bytes: int | None = None) -> None:
        self.coordinator = coordinator
        self.guard = ReplayGuard()
        spec_bytes = sum(dt.itemsize * int(np.prod(shape)) for dt, shape in coordinator.spec.values())
        self.max_update_bytes = max_update_bytes or 2 * spec_bytes + (1 << 16)

    def _authenticate(self, auth: pb.Auth, method: str, body: bytes, context: Any) -> str:
        key = self.coordinator.public_key_of(auth.client_id)
        if key is None:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, f"unknown client {auth.client_id!r}: enrol first")
        try:
            verify_request(key, _fields(auth), method, sha256(body), self.guard)
        except AuthError as exc:
            log.warning("%s refused: %s", method, exc)
            context.abort(grpc.StatusCode.UNAUTHENTICATED, str(exc))
        return auth.client_id

    @staticmethod
    def _abort(context: Any, exc: Rejected) -> None:
        log.warning("refused: %s", exc)
        context.abort(GRPC_CODES[exc.code], str(exc))

    def Enrol(self, request: pb.EnrolRequest, context: Any) -> pb.EnrolReply:
        body = request.public_key + request.token.encode()
        try:  # proof of possession: signed with the key being enrolled (a replay only meets ALREADY_EXISTS,
            # so unenrolled callers cannot grow the replay guard)
            message = request_message("Enrol", request.auth.client_id, request.auth.timestamp, request.auth.nonce,
                                      sha256(body))
            verify(request.public_key, request.auth.signature, message, f"client {request.client_id!r} Enrol")
        except AuthError as exc:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, str(exc))
        if request.auth.client_id != request.client_id:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "client id differs from the signed one")
        try:
            key = self.coordinator.enrol(request.client_id, request.public_key, request.token, dict(request.info))
        except Rejected as exc:
            self._abort(context, exc)
        return pb.EnrolReply(coordinator_public_key=key)

    def GetWork(self, request: pb.WorkRequest, context: Any) -> pb.WorkReply:
        client = self._authenticate(request.auth, "GetWork", b"", context)
        work = self.coordinator.work_for(client)
        return pb.WorkReply(action=_ACTIONS[work.action], round=work.round, model_version=work.model_version,
                            config_json=json.dumps(work.config), deadline=work.deadline,
                            retry_after=work.retry_after)

    def Download(self, request: pb.DownloadRequest, context: Any) -> Iterator[pb.Chunk]:
        kind = "model" if request.kind == pb.DownloadRequest.MODEL else "parameters"
        body = f"{kind}:{request.model_version}".encode()
        self._authenticate(request.auth, "Download", body, context)
        try:
            blob, digest, signature = self.coordinator.payload(kind, request.model_version)
        except Rejected as exc:
            self._abort(context, exc)
        for start in range(0, max(len(blob), 1), CHUNK_BYTES):
            first = start == 0
            yield pb.Chunk(data=blob[start : start + CHUNK_BYTES],
                           total_size=len(blob) if first else 0, sha256=digest if first else b"",
                           signature=signature if first else b"",
                           model_version=request.model_version if first else 0)

    def _receive(self, chunks: Iterator[Any], context: Any, method: str, what: str,
                 signed_body: Callable[[Any], bytes]) -> tuple[str, Any, bytes]:
        """(client, header, payload) of a chunked upload (Upload, UploadMasked). The header is
        authenticated on the first chunk (`signed_body` gives the bytes its signature covers),
        so an unauthenticated caller cannot make the coordinator buffer anything; the payload
        must then match the signed size and sha256, and `what` it is may not exceed the limit."""
        header, client, parts, size = None, "", [], 0
        for chunk in chunks:
            if header is None:
                if not chunk.HasField("header"):
                    context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first chunk must carry the header")
                header = chunk.header
                client = self._authenticate(header.auth, method, signed_body(header), context)
                if header.total_size > self.max_update_bytes:
                    context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                  f"{what} of {header.total_size} bytes exceeds {self.max_update_bytes}")
            size += len(chunk.data)
            if size > header.total_size:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "more bytes than the header announced")
            parts.append(chunk.data)
        if header is None:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "empty upload")
        blob = b"".join(parts)
        if len(blob) != header.total_size or sha256(blob) != header.sha256:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "payload size or sha256 does not match the header")
        return client, header, blob

    def Upload(self, request_iterator: Iterator[pb.UploadChunk], context: Any) -> pb.UploadReply:
        """A plain update: header (round, examples, metrics, size, sha256), then the payload."""
        client, header, blob = self._receive(
            request_iterator, context, "Upload", "update",
            lambda h: upload_body(h.round, h.num_examples, dict(h.metrics), h.sha256))
        try:
            self.coordinator.submit(client, header.round, blob, header.num_examples, dict(header.metrics))
        except Rejected as exc:
            self._abort(context, exc)
        return pb.UploadReply(accepted=True, message="ok")

    def ReportEvaluation(self, request: pb.EvaluationReport, context: Any) -> pb.UploadReply:
        body = evaluation_body(request.round, request.num_examples, request.loss, dict(request.metrics))
        client = self._authenticate(request.auth, "ReportEvaluation", body, context)
        result = EvaluateRes(request.loss, request.num_examples, dict(request.metrics))
        try:
            self.coordinator.submit_evaluation(client, request.round, result)
        except Rejected as exc:
            self._abort(context, exc)
        return pb.UploadReply(accepted=True, message="ok")

    def SecAgg(self, request: pb.SecAggRequest, context: Any) -> pb.SecAggReply:
        """One secure-aggregation stage message (or poll), signed over the request without auth."""
        client = self._authenticate(request.auth, "SecAgg", wire.request_body(request), context)
        try:
            reply = self.coordinator.secure_step(client, request.round, request.stage, wire.payload_of(request))
        except Rejected as exc:
            self._abort(context, exc)
        return wire.reply_to_pb(reply)

    def UploadMasked(self, request_iterator: Iterator[pb.MaskedChunk], context: Any) -> pb.UploadReply:
        """A masked input: header (authenticated first), then packed ring elements matching it."""
        client, header, blob = self._receive(request_iterator, context, "UploadMasked", "masked input",
                                             lambda h: wire.masked_body(h.round, h.bits, h.length, h.sha256))
        try:
            if not 2 <= header.bits <= 32:
                raise Rejected(ErrorCode.INVALID_ARGUMENT, f"bits must be in 2..32, got {header.bits}")
            vector = unpack(blob, header.bits, header.length)
            self.coordinator.submit_masked(client, header.round, header.bits, vector)
        except MalformedVector as exc:
            self._abort(context, Rejected(ErrorCode.INVALID_ARGUMENT, str(exc)))
        except Rejected as exc:
            self._abort(context, exc)
        return pb.UploadReply(accepted=True, message="ok")

    def Status(self, request: pb.StatusRequest, context: Any) -> pb.StatusReply:
        return pb.StatusReply(json=json.dumps(self.coordinator.status(), default=str))


def upload_body(round_number: int, num_examples: int, metrics: dict[str, float], digest: bytes) -> bytes:
    """The bytes an Upload's auth signature covers (besides method, id, time and nonce)."""
    fields = json.dumps({"round": round_number, "num_examples": num_examples, "metrics": metrics},
                        sort_keys=True).encode()
    return fields + digest


def evaluation_body(round_number: int, num_examples: int, loss: float, metrics: dict[str, float]) -> bytes:
    """The bytes a ReportEvaluation's auth signature covers."""
    return json.dumps({"round": round_number, "num_examples": num_examples, "loss": loss, "metrics": metrics},
                      sort_keys=True).encode()


def serve(coordinator: Coordinator, address: str = "127.0.0.1:0",
          credentials: grpc.ServerCredentials | None = None, workers: int = 16) -> tuple[grpc.Server, int]:
    """Start a gRPC server for `coordinator`; returns (server, bound port)."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers), options=KEEPALIVE_OPTIONS)
    pb_grpc.add_CoordinatorServicer_to_server(CoordinatorServicer(coordinator), server)
    port = (server.add_secure_port(address, credentials) if credentials is not None
            else server.add_insecure_port(address))
    server.start()
    return server, port

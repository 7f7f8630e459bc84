"""The device agent: enrol, ask for work, train locally, upload the delta.

Meant for a Raspberry Pi or a phone-like device: it keeps its Ed25519 key in a
file, verifies every model and parameter payload against the coordinator's key
before using it, and retries with exponential back-off (with jitter) while the
coordinator is unreachable. It asks for work with a long-poll (the coordinator holds
the call until there is work or `long_poll` seconds passed), so an idle device sends
one request per wait; `long_poll=0` polls as devices did before long-polls (and a
coordinator without them answers at once, with the interval to poll at).

With a device profile (`ClientOptions.profile`, `edgerun federated client --profile rpi-zero2`)
its interpreter runs within the profile's threads and memory budget, and before training in
a round it prepares the train step at the round's batch size: when the arena, weights and
optimizer state would not fit the budget, it declines the round (the Decline RPC, with the
budget error as the reason) instead of training, and the round goes on without it.
"""

from __future__ import annotations

import json
import logging
import math
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np

from edgerun.federated.auth import AuthError, KeyPair, payload_message, sha256, verify
from edgerun.federated.codec import decode_arrays
from edgerun.federated.compression import compress
from edgerun.federated.errors import LATE
from edgerun.federated.local import local_evaluate, local_update, parameter_spec
from edgerun.federated.privacy import gaussian_noise
from edgerun.federated.protos import federated_pb2 as pb
from edgerun.federated.protos import federated_pb2_grpc as pb_grpc
from edgerun.federated.secagg import wire
from edgerun.federated.secagg.device import secure_upload
from edgerun.federated.secagg.errors import SecAggError
from edgerun.federated.secagg.messages import SecAggParams, StageReply
from edgerun.federated.secagg.options import client_weight
from edgerun.federated.secagg.quantize import pack
from edgerun.federated.secagg.update import encode_update
from edgerun.federated.secagg.workflow import DROP_STAGES
from edgerun.federated.service import CHUNK_BYTES, KEEPALIVE_OPTIONS, decline_body, evaluation_body, upload_body
from edgerun.federated.stages import Stage
from edgerun.runtime.errors import MemoryBudgetError
from edgerun.runtime.interpreter import Interpreter
from edgerun.runtime.profiles import DeviceProfile

log = logging.getLogger("edgerun.federated.client")

_RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED}
STOP_CHECK_S = 0.5  # how often a device waiting in a long-poll looks at its stop event


@dataclass
class ClientOptions:
    """Back-off between failed calls doubles from `backoff_initial` up to `backoff_max` seconds.
    `long_poll`: seconds the coordinator may hold a request for work until there is some
    (asked with 20 % jitter below it, so devices that start together do not stay in step;
    the coordinator caps it); 0: poll at the interval the coordinator says."""

    token: str = ""
    long_poll: float = 30.0
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    max_retries: int = 8
    rpc_timeout: float = 60.0
    drop_probability: float = 0.0  # simulation: skip a selected round as if the device went away
    # simulation, secure aggregation: where a dropping device goes away: "start" (before training),
    # a secure-aggregation stage (federated.secagg.workflow.DROP_STAGES) or "random" (any of them)
    drop_stage: str = "start"
    delay_seconds: float = 0.0  # simulation: extra time a slow device spends on each round
    # simulation: called with (client id, round) when this device drops out of a round, so the
    # simulator can tell the coordinator not to wait for it (a real device that vanishes says nothing)
    on_drop: Callable[[str, int], None] | None = None
    seed: int = 0
    info: dict[str, str] = field(default_factory=dict)
    # a device profile (or a registered one's name: "rpi-zero2", "rpi4", "phone"): the interpreter's
    # threads and memory budget; a round whose train step does not fit it is declined. None: the host's
    # defaults (half the physical memory), still checked before training.
    profile: str | DeviceProfile | None = None
    # where the interpreter runs (runtime.Interpreter's device: "auto", "cpu", "numba", "cuda")
    device: str = "auto"


class FederatedClient:
    """One device. `data` is (x, y) or a callable returning (x, y) for each round."""

    def __init__(self, channel: grpc.Channel, client_id: str, key: KeyPair,
                 data: tuple[Any, np.ndarray] | Callable[[], tuple[Any, np.ndarray]],
                 options: ClientOptions | None = None,
                 eval_data: tuple[Any, np.ndarray] | None = None) -> None:
        self.stub = pb_grpc.CoordinatorStub(channel)
        self.client_id, self.key, self.data, self.eval_data = client_id, key, data, eval_data
        self.options = options or ClientOptions()
        self.rng = random.Random(self.options.seed)
        # the long-poll's jitter draws from its own generator: how many times a device asked for
        # work must not change which rounds a simulated device drops (self.rng's draws)
        self.jitter = random.Random(self.options.seed + 1)
        self.coordinator_key: bytes | None = None
        self.interpreter: Interpreter | None = None
        self.rounds_done: list[int] = []
        self.rounds_declined: dict[int, str] = {}  # round -> the reason told to the coordinator
        self._unfit: str | None = None  # why the model cannot load within the profile (said every round)
        self.pending_drop: str | None = None  # simulation: the secure-aggregation stage to drop at
        self.evaluations_done: list[int] = []
        self.bytes_uploaded = 0  # update payload bytes sent (plain deltas or masked inputs)

    # ------------------------------------------------------------ plumbing
    def _auth(self, method: str, body: bytes) -> pb.Auth:
        fields = self.key.sign_request(method, self.client_id, sha256(body))
        return pb.Auth(client_id=fields.client_id, timestamp=fields.timestamp, nonce=fields.nonce,
                       signature=fields.signature)

    def _call(self, make_call: Callable[[], Any]) -> Any:
        """Run an RPC (made afresh each try: signatures are single-use), retrying
        with exponential back-off while the coordinator is unreachable."""
        delay = self.options.backoff_initial
        for attempt in range(self.options.max_retries + 1):
            try:
                return make_call()
            except grpc.RpcError as exc:
                if exc.code() not in _RETRYABLE or attempt == self.options.max_retries:
                    raise
                log.info("%s: %s; retrying in %.1f s", self.client_id, exc.code().name, delay)
                time.sleep(delay * (0.5 + self.rng.random()))
                delay = min(delay * 2, self.options.backoff_max)
        raise AssertionError("unreachable")

    # -------------------------------------------------------------- steps
    def enrol(self) -> None:
        body = self.key.public_bytes + self.options.token.encode()
        request = lambda: self.stub.Enrol(  # noqa: E731
            pb.EnrolRequest(client_id=self.client_id, public_key=self.key.public_bytes,
                            token=self.options.token, info=self.options.info,
                            auth=self._auth("Enrol", body)), timeout=self.options.rpc_timeout)
        self.coordinator_key = self._call(request).coordinator_public_key

    def _download(self, kind: int, version: int) -> bytes:
        name = "model" if kind == pb.DownloadRequest.MODEL else "parameters"

        def fetch() -> bytes:
            auth = self._auth("Download", f"{name}:{version}".encode())
            chunks: Iterator[pb.Chunk] = self.stub.Download(
                pb.DownloadRequest(auth=auth, kind=kind, model_version=version), timeout=self.options.rpc_timeout)
            first = None
            parts = []
            for chunk in chunks:
                first = first or chunk
                parts.append(chunk.data)
            blob = b"".join(parts)
            if first is None or len(blob) != first.total_size or sha256(blob) != first.sha256:
                raise AuthError(f"{name} v{version}: payload does not match its announced size and sha256")
            verify(self.coordinator_key, first.signature, payload_message(name, version, first.sha256),
                   f"{name} v{version} from the coordinator")
            return blob

        return self._call(fetch)

    def _upload(self, round_number: int, blob: bytes, num_examples: int, metrics: dict[str, float]) -> None:
        digest = sha256(blob)
        self.bytes_uploaded += len(blob)

        def chunks() -> Iterator[pb.UploadChunk]:
            body = upload_body(round_number, num_examples, metrics, digest)
            header = pb.UpdateHeader(auth=self._auth("Upload", body), round=round_number,
                                     num_examples=num_examples, metrics=metrics, total_size=len(blob),
                                     sha256=digest)
            yield pb.UploadChunk(header=header, data=blob[:CHUNK_BYTES])
            for start in range(CHUNK_BYTES, len(blob), CHUNK_BYTES):
                yield pb.UploadChunk(data=blob[start : start + CHUNK_BYTES])

        self._call(lambda: self.stub.Upload(chunks(), timeout=self.options.rpc_timeout))

    def _load_model(self) -> Interpreter:
        """The interpreter of the coordinator's model (downloaded once), within the profile.
        MemoryBudgetError when the model does not fit the profile even at batch 1."""
        if self._unfit is not None:
            raise MemoryBudgetError(self._unfit)
        if self.interpreter is None:
            try:
                model = self._download(pb.DownloadRequest.MODEL, 0)
                self.interpreter = Interpreter(model, profile=self.options.profile, device=self.options.device)
            except MemoryBudgetError as exc:
                self._unfit = str(exc)
                raise
        return self.interpreter

    def memory_refusal(self, batch_size: int) -> str | None:
        """Why a train step at `batch_size` (the train inputs' dynamic first dim; other dynamic
        dims at 1) does not fit this device's memory budget, or None when it does: the step is
        prepared at that size (its arena is planned, the budget checked against arena, weights
        and optimizer state before anything is allocated) and stays prepared for training."""
        try:
            interpreter = self._load_model()
            if "train" not in interpreter.signatures:
                return None  # not trainable: local_update says so
            inputs = interpreter.signatures["train"].inputs
            shapes = {name: tuple(batch_size if i == 0 and d < 0 else max(d, 1) for i, d in enumerate(info.shape))
                      for name, info in inputs.items() if info.shape and -1 in info.shape}
            interpreter.resize_inputs(shapes, signature="train")
        except MemoryBudgetError as exc:
            return f"a train step at batch {batch_size} does not fit: {exc}"
        log.info("%s: a train step at batch %d holds %s", self.client_id, batch_size,
                 interpreter.memory_report("train"))
        return None

    def decline(self, round_number: int, reason: str) -> None:
        """Tell the coordinator this device will not train in `round_number`, and why."""
        self.rounds_declined[round_number] = reason
        log.warning("%s: round %d declined: %s", self.client_id, round_number, reason)
        body = decline_body(round_number, reason)
        self._call(lambda: self.stub.Decline(
            pb.DeclineRequest(auth=self._auth("Decline", body), round=round_number, reason=reason),
            timeout=self.options.rpc_timeout))

    def train_round(self, work: pb.WorkReply) -> None:
        x, y = self.data() if callable(self.data) else self.data
        config = json.loads(work.config_json or "{}")
        config.setdefault("seed", work.round)
        unfit = self.memory_refusal(max(1, min(int(config.get("batch_size", 32)), len(y))))  # fit's first batch
        if unfit is not None:
            self.decline(work.round, unfit)
            return
        spec = parameter_spec(self.interpreter)
        parameters = decode_arrays(self._download(pb.DownloadRequest.PARAMETERS, work.model_version), spec)
        if self.options.delay_seconds:
            time.sleep(self.options.delay_seconds)
        result = local_update(self.interpreter, parameters, x, y, config)
        delta = [result.delta[n] for n in spec]
        if config.get("dp", {}).get("mode") == "distributed":  # this client's share of the DP noise
            dp = config["dp"]
            stddev = dp["noise_multiplier"] * dp["clip_norm"] / math.sqrt(dp["expected_clients"])
            delta = [d + z.astype(d.dtype) for d, z in zip(delta, gaussian_noise([d.shape for d in delta], stddev),
                                                            strict=True)]
        if "secagg" in config:
            self.rounds_done.append(work.round)  # whatever happens, never train this round twice
            self._secure_upload(work, config, delta, result.num_examples)
            return
        blob = compress(dict(zip(spec, delta, strict=True)), config.get("compression", "none"))
        self._upload(work.round, blob, result.num_examples,
                     {k: float(v) for k, v in result.metrics.items()})
        self.rounds_done.append(work.round)

    def _secure_upload(self, work: pb.WorkReply, config: dict[str, Any], delta: list[np.ndarray],
                       num_examples: int) -> None:
        """Take part in the round's secure aggregation with the weighted, quantized delta."""
        secagg = config["secagg"]
        params = SecAggParams.from_config(secagg)
        weight = 1.0 if "dp" in config else client_weight(num_examples, int(secagg["max_weight"]))
        ring = encode_update(delta, weight, params.quantization)
        transport = _SecAggTransport(self, work.round, params.quantization.bits)
        deadline = work.deadline + 5 * float(secagg["stage_timeout"]) + 5.0
        try:
            outcome = secure_upload(self.client_id, self.key, params, ring, transport, deadline,
                                    drop_at=self.pending_drop)
        except SecAggError as exc:
            log.warning("%s: round %d secure aggregation ended: %s", self.client_id, work.round, exc)
            return
        finally:
            self.pending_drop = None
        if outcome == "dropped" and self.options.on_drop is not None:
            self.options.on_drop(self.client_id, work.round)
        log.info("%s: round %d secure aggregation: %s", self.client_id, work.round, outcome)

    def evaluate_round(self, work: pb.WorkReply) -> None:
        """Evaluate the round's global model on held-out data (or the training data if none)."""
        spec = parameter_spec(self._load_model())
        parameters = decode_arrays(self._download(pb.DownloadRequest.PARAMETERS, work.model_version), spec)
        x, y = self.eval_data or (self.data() if callable(self.data) else self.data)
        result = local_evaluate(self.interpreter, parameters, x, y)
        metrics = {k: result[k] for k in ("accuracy", "mse") if k in result}  # mse: a regression model
        body = evaluation_body(work.round, len(y), result["loss"], metrics)
        self._call(lambda: self.stub.ReportEvaluation(
            pb.EvaluationReport(auth=self._auth("ReportEvaluation", body), round=work.round, num_examples=len(y),
                                loss=result["loss"], metrics=metrics), timeout=self.options.rpc_timeout))
        self.evaluations_done.append(work.round)

    def _train_or_skip(self, work: pb.WorkReply) -> None:
        """Train (or evaluate) for one round; a refusal (late upload, bad payload) loses only that round."""
        try:
            if work.action == pb.WorkReply.EVALUATE:
                self.evaluate_round(work)
                return
            self.train_round(work)
        except grpc.RpcError as exc:
            if exc.code() in _RETRYABLE:
                raise
            late = (exc.details() or "").startswith(LATE)  # the round moved on without this device: routine
            (log.info if late else log.warning)("%s: round %d refused: %s %s", self.client_id, work.round,
                                                exc.code().name, exc.details())
        except AuthError as exc:
            log.error("%s: round %d skipped, payload refused: %s", self.client_id, work.round, exc)
        except MemoryBudgetError as exc:  # an evaluation too big for the profile (training declines instead)
            log.warning("%s: round %d not evaluated: %s", self.client_id, work.round, exc)
            if work.action == pb.WorkReply.EVALUATE:  # asked once: asking again would fail again, at once
                self.evaluations_done.append(work.round)

    def run(self, stop: threading.Event | None = None) -> None:
        """Enrol if needed, then follow the coordinator until it says stop (or `stop` is set)."""
        stop = stop or threading.Event()
        if self.coordinator_key is None:
            self.enrol()
        skipped: set[int] = set()
        while not stop.is_set():
            work = self._call(lambda: self._get_work(stop))
            if work is None or work.action == pb.WorkReply.STOP:
                return
            if work.action == pb.WorkReply.EVALUATE and work.round not in self.evaluations_done:
                self._train_or_skip(work)
                continue
            if (work.action == pb.WorkReply.TRAIN and work.round not in skipped and work.round not in self.rounds_done
                    and work.round not in self.rounds_declined):
                if self.rng.random() < self.options.drop_probability:
                    stage = self.options.drop_stage
                    if stage == "random":
                        stage = self.rng.choice(("start", *DROP_STAGES))
                    if stage == "start" or "secagg" not in json.loads(work.config_json or "{}"):
                        skipped.add(work.round)  # this device "drops out" of the round
                        if self.options.on_drop is not None:
                            self.options.on_drop(self.client_id, work.round)
                        continue
                    self.pending_drop = stage  # it goes away in the middle of secure aggregation
                self._train_or_skip(work)
                continue
            stop.wait(max(work.retry_after, 0.05))

    def _get_work(self, stop: threading.Event) -> pb.WorkReply | None:
        """One GetWork: a long-poll (unless `long_poll` is 0) that gives up, returning None,
        within STOP_CHECK_S seconds of `stop` being set. grpc.RpcError as the call ends."""
        wait = self.options.long_poll * (0.8 + 0.2 * self.jitter.random()) if self.options.long_poll > 0 else 0.0
        call = self.stub.GetWork.future(pb.WorkRequest(auth=self._auth("GetWork", b""), wait_seconds=wait),
                                        timeout=wait + self.options.rpc_timeout)
        done = threading.Event()
        call.add_done_callback(lambda _: done.set())
        while not done.wait(STOP_CHECK_S):
            if stop.is_set():
                call.cancel()
                return None
        return call.result()


class _SecAggTransport:
    """federated.secagg.device.Transport over this client's gRPC stub (signed requests)."""

    def __init__(self, client: FederatedClient, round_number: int, bits: int) -> None:
        self.client, self.round, self.bits = client, round_number, bits

    def send(self, stage: Stage, payload: Any) -> StageReply:
        def call() -> pb.SecAggReply:
            request = pb.SecAggRequest(round=self.round)
            wire.fill_request(request, stage, payload)
            request.auth.CopyFrom(self.client._auth("SecAgg", wire.request_body(request)))
            return self.client.stub.SecAgg(request, timeout=self.client.options.rpc_timeout)

        return wire.reply_from_pb(self.client._call(call))

    def upload_masked(self, vector: np.ndarray) -> None:
        blob = pack(vector, self.bits)
        digest = sha256(blob)
        length = len(vector)

        def chunks() -> Iterator[pb.MaskedChunk]:
            body = wire.masked_body(self.round, self.bits, length, digest)
            header = pb.MaskedHeader(auth=self.client._auth("UploadMasked", body), round=self.round, bits=self.bits,
                                     length=length, total_size=len(blob), sha256=digest)
            yield pb.MaskedChunk(header=header, data=blob[:CHUNK_BYTES])
            for start in range(CHUNK_BYTES, len(blob), CHUNK_BYTES):
                yield pb.MaskedChunk(data=blob[start : start + CHUNK_BYTES])

        self.client._call(lambda: self.client.stub.UploadMasked(chunks(), timeout=self.client.options.rpc_timeout))
        self.client.bytes_uploaded += len(blob)


def channel(target: str, credentials: grpc.ChannelCredentials | None = None) -> grpc.Channel:
    """A channel with the keep-alive settings the coordinator expects."""
    if credentials is None:
        return grpc.insecure_channel(target, options=KEEPALIVE_OPTIONS)
    return grpc.secure_channel(target, credentials, options=KEEPALIVE_OPTIONS)

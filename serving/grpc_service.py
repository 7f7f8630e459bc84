"""The gRPC front end: thin grpc.aio servicers over Handlers, plus grpc.health.v1 (the
standard messages and service from grpcio-health-checking)."""

from __future__ import annotations

import functools
import inspect
import logging

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from edgerun.runtime.errors import ErrorCode
from edgerun.serving.auth import metadata_token_ok
from edgerun.serving.errors import ServingError, quote
from edgerun.serving.grpc_codec import request_from_proto, response_to_proto
from edgerun.serving.handlers import Handlers
from edgerun.serving.protos import grpc_service_pb2 as pb
from edgerun.serving.protos import grpc_service_pb2_grpc as pb_grpc
from edgerun.serving.types import InferRequest

log = logging.getLogger("edgerun.serving")
DEFAULT_MAX_CONCURRENT_RPCS = 256  # more at once are refused with RESOURCE_EXHAUSTED
GRPC_CODES = {code: getattr(grpc.StatusCode, code.name) for code in ErrorCode}


def _fail(context: grpc.aio.ServicerContext, code: grpc.StatusCode, message: str) -> None:
    """End the call with `code` and `message` without raising. `context.abort()` raises an exception
    whose traceback holds the handler's frames (and so the request) and which grpc's call state
    keeps: a reference cycle, so every refused request, however large, would stay in memory until
    the garbage collector's next full pass."""
    context.set_code(code)
    context.set_details(message)


def _guarded(method):
    """Wrap a servicer method: ServingError -> its status; any other exception is logged with its
    traceback and answered INTERNAL 'internal error', so no exception text reaches clients."""
    name = method.__name__
    if inspect.isasyncgenfunction(method):
        @functools.wraps(method)
        async def stream(self, request, context):
            try:
                async for item in method(self, request, context):
                    yield item
            except grpc.aio.AbortError:
                raise
            except ServingError as exc:
                _fail(context, GRPC_CODES[exc.status], exc.message)
            except Exception:
                log.exception("gRPC %s failed", name)
                _fail(context, grpc.StatusCode.INTERNAL, "internal error")
        return stream

    @functools.wraps(method)
    async def unary(self, request, context):
        try:
            return await method(self, request, context)
        except grpc.aio.AbortError:
            raise
        except ServingError as exc:
            _fail(context, GRPC_CODES[exc.status], exc.message)
        except Exception:
            log.exception("gRPC %s failed", name)
            _fail(context, grpc.StatusCode.INTERNAL, "internal error")
        return None  # grpc sends no message when the status is not OK
    return unary


def _guard_all(cls):
    for attr, value in list(vars(cls).items()):
        if attr[:1].isupper() and callable(value):
            setattr(cls, attr, _guarded(value))
    return cls


@_guard_all
class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """inference.GRPCInferenceService: parse, call a handler; `_guard_all` maps ServingError to a
    status code (ModelStreamInfer reports each message's error in the stream instead)."""

    def __init__(self, handlers: Handlers) -> None:
        self.h = handlers

    async def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=self.h.server_live())

    async def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=self.h.server_ready())

    async def ModelReady(self, request, context):
        return pb.ModelReadyResponse(ready=self.h.model_ready(request.name, request.version))

    async def ServerMetadata(self, request, context):
        return pb.ServerMetadataResponse(**self.h.server_metadata())

    async def ModelMetadata(self, request, context):
        meta = self.h.model_metadata(request.name, request.version)
        msg = pb.ModelMetadataResponse(name=meta["name"], versions=meta["versions"], platform=meta["platform"])
        for kind in ("inputs", "outputs"):
            for t in meta[kind]:
                getattr(msg, kind).add(name=t["name"], datatype=t["datatype"], shape=t["shape"])
        return msg

    async def ModelInfer(self, request, context):
        return response_to_proto(await self.h.infer(self._decode(request)))

    def _decode(self, request) -> InferRequest:
        """The plain request; a malformed one is counted as refused (Handlers.infer counts the rest)."""
        try:
            return request_from_proto(request)
        except ServingError as exc:
            self.h.refused(request.model_name, exc.status.name)
            raise

    async def ModelStreamInfer(self, request_iterator, context):
        async for request in request_iterator:
            try:
                response = await self.h.infer(self._decode(request))
            except ServingError as exc:
                yield pb.ModelStreamInferResponse(error_message=exc.message,
                                                  infer_response=pb.ModelInferResponse(id=request.id))
                continue
            except Exception:
                log.exception("gRPC stream inference failed")
                yield pb.ModelStreamInferResponse(error_message="internal error",
                                                  infer_response=pb.ModelInferResponse(id=request.id))
                continue
            yield pb.ModelStreamInferResponse(infer_response=response_to_proto(response))

    async def ModelConfig(self, request, context):
        return pb.ModelConfigResponse(config=self.h.model_config(request.name, request.version))

    async def ModelStatistics(self, request, context):
        models = self.h.model_statistics(request.name, request.version)
        return pb.ModelStatisticsResponse(model_stats=[_stats(m) for m in models])

    async def RepositoryIndex(self, request, context):
        rows = self.h.repository_index(request.ready)
        return pb.RepositoryIndexResponse(models=[pb.RepositoryIndexResponse.ModelIndex(**r) for r in rows])

    async def RepositoryModelLoad(self, request, context):
        await self.h.load_model(request.model_name)
        return pb.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(self, request, context):
        await self.h.unload_model(request.model_name)
        return pb.RepositoryModelUnloadResponse()


def _stats(model) -> pb.ModelStatistics:
    s = model.stats
    with s.lock:
        infer = pb.InferStatistics(
            success=pb.StatisticDuration(count=s.success.count, ns=s.success.ns),
            fail=pb.StatisticDuration(count=s.fail.count, ns=s.fail.ns),
            queue=pb.StatisticDuration(count=s.queue.count, ns=s.queue.ns),
            compute_infer=pb.StatisticDuration(count=s.compute_infer.count, ns=s.compute_infer.ns))
        batches = [pb.InferBatchStatistics(batch_size=size, compute_infer=pb.StatisticDuration(count=d.count, ns=d.ns))
                   for size, d in sorted(s.batches.items())]
        return pb.ModelStatistics(name=model.name, version=model.version_str, last_inference=s.last_inference_ms,
                                  inference_count=s.inference_count, execution_count=s.execution_count,
                                  inference_stats=infer, batch_stats=batches)


SERVER_SERVICES = ("", "inference.GRPCInferenceService")  # health checks open to probes even with a token


@_guard_all
class HealthServicer(health_pb2_grpc.HealthServicer):
    """grpc.health.v1: '' is the server; a model name is SERVING when it has a ready version. With a
    `token`, only the server's own services answer without it (the interceptor lets health calls
    through): a model name without the token is UNAUTHENTICATED, so probes cannot list models."""

    def __init__(self, handlers: Handlers, token: str | None = None) -> None:
        self.h = handlers
        self.token = token

    def _authorize(self, service: str, context: grpc.aio.ServicerContext) -> None:
        if self.token and service not in SERVER_SERVICES:
            if not metadata_token_ok(context.invocation_metadata(), self.token):
                raise ServingError(ErrorCode.UNAUTHENTICATED, "missing or invalid bearer token (health checks "
                                                              "of models need it)")

    def _status(self, service: str) -> int:
        R = health_pb2.HealthCheckResponse
        if not service:
            return R.SERVING if self.h.server_ready() else R.NOT_SERVING
        if service in ("inference.GRPCInferenceService",):
            return R.SERVING if self.h.accepting else R.NOT_SERVING
        if service in self.h.repository.models:
            return R.SERVING if self.h.model_ready(service) else R.NOT_SERVING
        return R.SERVICE_UNKNOWN

    async def Check(self, request, context):
        self._authorize(request.service, context)
        status = self._status(request.service)
        if status == health_pb2.HealthCheckResponse.SERVICE_UNKNOWN:
            raise ServingError(ErrorCode.NOT_FOUND, f"unknown service {quote(request.service)}")
        return health_pb2.HealthCheckResponse(status=status)

    async def Watch(self, request, context):
        self._authorize(request.service, context)
        yield health_pb2.HealthCheckResponse(status=self._status(request.service))


def build_server(handlers: Handlers, address: str, max_message_bytes: int, interceptors=(),
                 credentials: grpc.ServerCredentials | None = None,
                 max_concurrent_rpcs: int | None = DEFAULT_MAX_CONCURRENT_RPCS,
                 token: str | None = None) -> grpc.aio.Server:
    """A grpc.aio server bound to `address` (SO_REUSEPORT on, so several workers share the port);
    `token` makes health checks of models require it (`interceptors` check the other calls).
    Raises RuntimeError if the address cannot be bound."""
    options = [("grpc.max_receive_message_length", max_message_bytes),
               ("grpc.max_send_message_length", max_message_bytes),
               ("grpc.so_reuseport", 1)]
    server = grpc.aio.server(interceptors=list(interceptors), options=options,
                             maximum_concurrent_rpcs=max_concurrent_rpcs or None)
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(handlers), server)
    health_pb2_grpc.add_HealthServicer_to_server(HealthServicer(handlers, token), server)
    port = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    if port == 0:
        raise RuntimeError(f"cannot bind gRPC address {address}")
    return server

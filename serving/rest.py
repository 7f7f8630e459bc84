"""The v2 REST front end: routes over Handlers, bearer-token check, JSON errors."""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from google.protobuf import json_format

from edgerun.runtime.errors import ErrorCode
from edgerun.serving.auth import token_ok
from edgerun.serving.errors import ServingError, quote
from edgerun.serving.handlers import Handlers
from edgerun.serving.http_server import Request, Response
from edgerun.serving.metrics import HTTP_REASONS
from edgerun.serving.rest_codec import encode_infer, parse_infer

log = logging.getLogger("edgerun.serving")
_MODEL = r"/v2/models/(?P<model>[^/]+)(?:/versions/(?P<version>[^/]+))?"
_INFER = re.compile(_MODEL + "/infer")
ROUTES = [  # inference first: it is nearly all the traffic
    ("POST", _INFER, "infer"),
    ("GET", re.compile(r"/v2/health/live"), "live"),
    ("GET", re.compile(r"/v2/health/ready"), "ready"),
    ("GET", re.compile(r"/v2"), "server_metadata"),
    ("GET", re.compile(r"/v2/models(?:/(?P<model>[^/]+)(?:/versions/(?P<version>[^/]+))?)?/stats"), "stats"),
    ("GET", re.compile(_MODEL), "model_metadata"),
    ("GET", re.compile(_MODEL + "/ready"), "model_ready"),
    ("GET", re.compile(_MODEL + "/config"), "model_config"),
    ("POST", re.compile(r"/v2/repository/index"), "index"),
    ("POST", re.compile(r"/v2/repository/models/(?P<model>[^/]+)/load"), "load"),
    ("POST", re.compile(r"/v2/repository/models/(?P<model>[^/]+)/unload"), "unload"),
]
OPEN_PATHS = ("/v2/health/live", "/v2/health/ready")


def _json(status: int, doc: Any) -> Response:
    return Response(status, json.dumps(doc).encode(), {"Content-Type": "application/json"})


def _error(exc: ServingError) -> Response:
    return _json(exc.status.http, {"error": exc.message})


class RestApp:
    """Callable HTTP app: `await app(request) -> Response`."""

    def __init__(self, handlers: Handlers, token: str | None = None) -> None:
        self.h = handlers
        self.token = token

    def authorize(self, request: Request) -> Response | None:
        """401 if a token is required and the request lacks it (the HTTP server calls this as soon as
        the headers are in, before reading the body); None if it may proceed."""
        if self.token and request.path not in OPEN_PATHS and not token_ok(request.headers.get("authorization"),
                                                                           self.token):
            return _json(401, {"error": "missing or invalid bearer token"})
        return None

    def refused(self, request: Request | None, response: Response) -> None:
        """Count a refused inference request in the failure metric (the HTTP server calls this for
        requests it refuses before the app sees them: too large, over a budget, unauthorized...)."""
        match = _INFER.fullmatch(request.path.rstrip("/")) if request is not None and request.method == "POST" else None
        if match:  # an unauthenticated caller is not trusted to name the model (as on gRPC)
            self.h.refused(match["model"] if response.status != 401 else "",
                           HTTP_REASONS.get(response.status, "INTERNAL"))

    async def __call__(self, request: Request) -> Response:
        refusal = self.authorize(request)
        if refusal is not None:
            self.refused(request, refusal)
            return refusal
        for method, pattern, name in ROUTES:
            match = pattern.fullmatch(request.path.rstrip("/") or "/")
            if match:
                if request.method != method:
                    return _json(405, {"error": f"{quote(request.method)} is not allowed on {quote(request.path)}"})
                try:
                    return await getattr(self, "_" + name)(request, **match.groupdict())
                except ServingError as exc:
                    return _error(exc)
                except Exception:
                    log.exception("REST %s %s failed", request.method, request.path)
                    return _json(500, {"error": "internal error"})
        return _json(404, {"error": f"no route for {quote(request.path)}"})

    async def _live(self, request: Request) -> Response:
        return _json(200 if self.h.server_live() else 503, {"live": self.h.server_live()})

    async def _ready(self, request: Request) -> Response:
        ready = self.h.server_ready()
        return _json(200 if ready else 503, {"ready": ready})

    async def _server_metadata(self, request: Request) -> Response:
        return _json(200, self.h.server_metadata())

    async def _model_metadata(self, request: Request, model: str, version: str | None) -> Response:
        return _json(200, self.h.model_metadata(model, version or ""))

    async def _model_ready(self, request: Request, model: str, version: str | None) -> Response:
        ready = self.h.model_ready(model, version or "")
        return _json(200 if ready else 400, {"name": model, "ready": ready})

    async def _model_config(self, request: Request, model: str, version: str | None) -> Response:
        config = self.h.model_config(model, version or "")
        return _json(200, json_format.MessageToDict(config, preserving_proto_field_name=True))

    async def _stats(self, request: Request, model: str | None = None, version: str | None = None) -> Response:
        models = self.h.model_statistics(model or "", version or "")
        docs = []
        for m in models:
            s = m.stats
            docs.append({"name": m.name, "version": m.version_str, "last_inference": s.last_inference_ms,
                         "inference_count": s.inference_count, "execution_count": s.execution_count,
                         "inference_stats": {k: {"count": getattr(s, k).count, "ns": getattr(s, k).ns}
                                             for k in ("success", "fail", "queue", "compute_infer")}})
        return _json(200, {"model_stats": docs})

    async def _infer(self, request: Request, model: str, version: str | None) -> Response:
        try:
            if request.headers.get("content-encoding", "identity") != "identity":
                raise ServingError(ErrorCode.INVALID_ARGUMENT, "compressed request bodies are not supported")
            infer = parse_infer(model, version or "", request.body,
                                request.headers.get("inference-header-content-length"))
        except ServingError as exc:  # refused before inference: counted here, the rest by Handlers.infer
            self.h.refused(model, exc.status.name)
            raise
        response = await self.h.infer(infer)
        body, header_length = encode_infer(response, infer)
        if header_length is None:
            return Response(200, body, {"Content-Type": "application/json"})
        return Response(200, body, {"Content-Type": "application/octet-stream",
                                    "Inference-Header-Content-Length": str(header_length)})

    async def _index(self, request: Request) -> Response:
        ready_only = False
        if request.body:
            try:
                ready_only = bool(json.loads(request.body).get("ready", False))
            except (ValueError, AttributeError, RecursionError):
                raise ServingError(ErrorCode.INVALID_ARGUMENT, "index body must be a JSON object") from None
        return _json(200, self.h.repository_index(ready_only))

    async def _load(self, request: Request, model: str) -> Response:
        await self.h.load_model(model)
        return _json(200, {})

    async def _unload(self, request: Request, model: str) -> Response:
        await self.h.unload_model(model)
        return _json(200, {})

"""Prometheus metrics, named after Triton's (`nv_inference_*`), shared by every worker process.

Workers run with PROMETHEUS_MULTIPROC_DIR set (by the supervisor), so each process writes its
samples to files there; the supervisor's metrics endpoint sums them (prometheus-client's
multiprocess mode). Requests only update in-process ModelStats; `publish` (every half second and
when a version is retired) turns their growth into these counters, keeping the file writes off the
request path. Durations are cumulative microseconds like Triton's; counters carry prometheus-client's
`_total` suffix.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, multiprocess, start_http_server
from prometheus_client.exposition import make_wsgi_app

from edgerun.serving.auth import token_ok

_LABELS = ("model", "version")
REQUEST_SUCCESS = Counter("nv_inference_request_success", "Successful inference requests", _LABELS)
# reason: the gRPC status name the request was refused with (INVALID_ARGUMENT, NOT_FOUND, UNAUTHENTICATED,
# RESOURCE_EXHAUSTED, UNAVAILABLE, DEADLINE_EXCEEDED, INTERNAL...), the same on REST and gRPC
REQUEST_FAILURE = Counter("nv_inference_request_failure", "Failed inference requests", ("model", "reason"))
# an HTTP refusal's status -> the reason label a gRPC refusal of the same kind carries
HTTP_REASONS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
                405: "UNIMPLEMENTED", 408: "DEADLINE_EXCEEDED", 411: "INVALID_ARGUMENT", 413: "RESOURCE_EXHAUSTED",
                500: "INTERNAL", 501: "UNIMPLEMENTED", 503: "UNAVAILABLE"}
INFERENCE_COUNT = Counter("nv_inference_count", "Inferences performed (batch rows)", _LABELS)
EXEC_COUNT = Counter("nv_inference_exec_count", "Model executions (batches)", _LABELS)
REQUEST_US = Counter("nv_inference_request_duration_us", "Cumulative end-to-end request time (us)", _LABELS)
QUEUE_US = Counter("nv_inference_queue_duration_us", "Cumulative time requests waited in the batch queue (us)",
                   _LABELS)
COMPUTE_US = Counter("nv_inference_compute_infer_duration_us", "Cumulative model execution time (us)", _LABELS)
BATCH_SIZE = Histogram("nv_inference_batch_size", "Rows per model execution", _LABELS,
                       buckets=(1, 2, 4, 8, 16, 32, 64, 128))
MODELS_LOADED = Gauge("nv_model_versions_loaded", "Model versions ready to serve (summed over workers)",
                      multiprocess_mode="livesum")
LOAD_FAILURES = Counter("nv_model_load_failure", "Model versions that failed to load", _LABELS)


def record_failure(model: str, reason: str) -> None:
    """Count a failed inference request right away (`model` is '' when the model is unknown, so a
    client cannot make up label values)."""
    REQUEST_FAILURE.labels(model, reason).inc()


def publish(model) -> None:
    """Add what a ServedModel's stats grew by since the last call to the counters."""
    now = model.stats.snapshot()
    last = getattr(model, "_published", None) or {k: 0 for k in now} | {"batches": {}}
    labels = (model.name, model.version_str)
    for metric, key, scale in ((REQUEST_SUCCESS, "success", 1), (REQUEST_US, "request_ns", 1e-3),
                               (QUEUE_US, "queue_ns", 1e-3), (COMPUTE_US, "compute_ns", 1e-3),
                               (EXEC_COUNT, "executions", 1), (INFERENCE_COUNT, "inferences", 1)):
        grown = now[key] - last[key]
        if grown:
            metric.labels(*labels).inc(grown * scale)
    histogram = BATCH_SIZE.labels(*labels)
    for size, count in now["batches"].items():
        for _ in range(count - last["batches"].get(size, 0)):
            histogram.observe(size)
    model._published = now


def serve_multiprocess(port: int, host: str = "127.0.0.1", token: str | None = None) -> None:
    """Serve /metrics on `port` (a daemon thread), summing the samples every worker wrote to
    PROMETHEUS_MULTIPROC_DIR. With `token`, requests without 'Authorization: Bearer <token>' get 401
    (the labels name every model). Raises KeyError if that variable is unset, OSError if the port
    is taken."""
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=os.environ["PROMETHEUS_MULTIPROC_DIR"])
    if token is None:
        start_http_server(port, addr=host, registry=registry)
        return
    app = make_wsgi_app(registry)

    def guarded(environ, start_response):
        if not token_ok(environ.get("HTTP_AUTHORIZATION"), token):
            start_response("401 Unauthorized", [("Content-Type", "text/plain"), ("WWW-Authenticate", "Bearer")])
            return [b"missing or invalid bearer token\n"]
        return app(environ, start_response)

    server = make_server(host, port, guarded, _ThreadingWSGIServer, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        pass


def worker_exited(pid: int) -> None:
    """Drop a dead worker's live gauges (its counters keep counting in the totals)."""
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ and Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]).is_dir():
        multiprocess.mark_process_dead(pid)

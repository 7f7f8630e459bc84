"""One worker process: the gRPC and REST front ends over one repository, on one asyncio loop.

Several workers bind the same ports with SO_REUSEPORT and the kernel spreads connections over
them, so Python's GIL limits each worker, not the server. SIGTERM stops accepting, drains the
requests in progress (up to `grace_s`) and exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal

from edgerun.serving import logs
from edgerun.serving.options import ServeOptions

log = logging.getLogger("edgerun.serving")
PUBLISH_S = 0.5  # how often request statistics reach the Prometheus counters


def run_worker(options: ServeOptions, index: int = 0) -> None:
    """Process entry point; returns when the worker has shut down."""
    logs.setup(options.log_level)
    if options.threads is not None:
        import numpy  # noqa: F401 - threadpoolctl limits only BLAS libraries already loaded
        from threadpoolctl import threadpool_limits

        threadpool_limits(options.threads)
    from edgerun.serving.event_loop import loop_factory

    with asyncio.Runner(loop_factory=loop_factory(options.event_loop, options.busy_poll_us / 1e6)) as runner:
        runner.run(_serve(options, index))


async def _serve(options: ServeOptions, index: int) -> None:
    from edgerun.serving.auth import TokenInterceptor
    from edgerun.serving.control import ControlLog, follow
    from edgerun.serving.grpc_service import build_server
    from edgerun.serving.handlers import Handlers
    from edgerun.serving.http_server import HttpServer, Limits
    from edgerun.serving.repository import Repository
    from edgerun.serving.rest import RestApp
    from edgerun.serving.tls import grpc_credentials, ssl_context

    repository = Repository(options.repository, options.mode, options.poll_s, startup_models=options.startup_models,
                            device=options.device)
    control = ControlLog(options.control_dir) if options.control_dir and options.mode == "explicit" else None
    handlers = Handlers(repository, model_control=options.mode == "explicit", control_log=control)
    await repository.start()
    follower = asyncio.get_running_loop().create_task(follow(control, handlers)) if control else None
    interceptors = [TokenInterceptor(options.token, handlers.refused)] if options.token else []
    credentials = grpc_credentials(options.tls) if options.tls else None
    grpc_server = build_server(handlers, f"{options.host}:{options.grpc_port}", options.max_message_bytes,
                               interceptors, credentials, options.max_concurrent_rpcs, options.token)
    limits = Limits(options.http_header_timeout_s, options.http_body_timeout_s, options.http_idle_timeout_s,
                    options.http_max_connections, options.http_max_connections_per_client,
                    options.http_body_budget_bytes, min_body_rate=options.http_min_body_rate)
    http_server = HttpServer(RestApp(handlers, options.token), options.max_message_bytes,
                             ssl_context(options.tls) if options.tls else None, limits)
    await grpc_server.start()
    await http_server.start(options.host, options.http_port)
    log.info("worker %d (pid %d) serving gRPC on %s:%d and HTTP on %s:%d, %d model version(s) ready "
             "(event loop %s)", index, os.getpid(), options.host, options.grpc_port, options.host,
             options.http_port, repository.loaded_count(), type(asyncio.get_running_loop()).__module__)
    for name, entry in sorted(repository.models.items()):
        if not entry.ready:
            log.warning("model %s has no ready version: %s", name, entry.reasons() or "none found")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    while not stop.is_set():
        repository.publish_metrics()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), PUBLISH_S)
    log.info("worker %d draining", index)
    await asyncio.gather(grpc_server.stop(options.grace_s), http_server.stop(options.grace_s))
    handlers.accepting = False
    await repository.stop()
    if follower is not None:
        follower.cancel()
    repository.publish_metrics()
    log.info("worker %d stopped", index)

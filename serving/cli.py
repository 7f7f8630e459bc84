"""`edgerun serve`: a KServe v2 / Triton-protocol model server over a model repository.

Without a token the server is open by design: anyone who can reach its ports may infer, read
model metadata, statistics and metrics, and (in explicit mode) load and unload models. Bind it to
loopback (--host 127.0.0.1) or a private network, or set a token.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

TOKEN_ENV = "EDGERUN_SERVE_TOKEN"


def add_parser(subparsers: Any) -> None:
    """Register `edgerun serve`."""
    p = subparsers.add_parser("serve", help="serve a model repository over gRPC and REST (KServe v2)")
    from edgerun.config_file import add_config_option

    add_arguments(p)
    add_config_option(p)
    p.set_defaults(func=cmd_serve)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model-repository", type=Path, required=True, help="DIR/<model>/<version>/model.erm")
    p.add_argument("--host", default="0.0.0.0", help="address to listen on (0.0.0.0: all interfaces)")
    p.add_argument("--grpc-port", type=int, default=8001, help="TCP port of the gRPC (KServe v2) endpoint")
    p.add_argument("--http-port", type=int, default=8000, help="TCP port of the REST (KServe v2) endpoint")
    p.add_argument("--metrics-port", type=int, default=8002, help="TCP port of Prometheus /metrics (0 = off)")
    p.add_argument("--workers", type=int, default=1, help="worker processes sharing the ports")
    p.add_argument("--blas-threads", type=int, default=1, dest="threads", metavar="N",
                   help="BLAS and OpenMP threads per worker process (threadpoolctl's limit; the interpreters' "
                        "own parallel kernels are not capped by it)")
    p.add_argument("--threads", type=int, dest="threads", action=DeprecatedAlias, new="--blas-threads",
                   help=argparse.SUPPRESS)
    p.add_argument("--device", default="auto",
                   help="kernel backend (auto, cpu, numba, cuda): where models run unless their config.pbtxt's "
                        "instance_group kind says (KIND_GPU: cuda, KIND_CPU: the host); cuda needs "
                        "'edgerun[cuda]' and an NVIDIA GPU")
    p.add_argument("--model-control-mode", choices=["none", "poll", "explicit"], default="none",
                   help="none: serve what the repository holds at start; poll: follow its changes; explicit: "
                        "load and unload through the API")
    p.add_argument("--repository-poll-secs", type=float, default=2.0, metavar="SECONDS",
                   help="seconds between two scans of the repository (poll mode)")
    p.add_argument("--load-model", action="append", default=[], metavar="MODEL",
                   help="explicit mode: a model to load at start (repeat for several)")
    p.add_argument("--tls-cert", type=Path, help="server certificate (PEM); enables TLS on gRPC and HTTP")
    p.add_argument("--tls-key", type=Path, help="server private key (PEM)")
    p.add_argument("--tls-client-ca", type=Path, help="require client certificates signed by this CA (mTLS)")
    p.add_argument("--auth-token-file", "--token-file", type=Path,
                   help="require 'Authorization: Bearer <token in file>' on every call but the server's "
                        "health checks, on gRPC, REST and /metrics. Or set the token in the environment "
                        f"variable {TOKEN_ENV}. No token = no authentication (keep the ports private)")
    p.add_argument("--max-message-size", type=int, default=64 * 1024 * 1024,
                   metavar="BYTES", help="largest request or response in bytes, both protocols (default 64 MiB)")
    p.add_argument("--grace-secs", type=float, default=10.0, metavar="SECONDS",
                   help="seconds calls in progress get to finish on SIGTERM")
    p.add_argument("--grpc-max-concurrent-rpcs", type=int, default=256,
                   help="gRPC calls in progress per worker; more are refused with RESOURCE_EXHAUSTED")
    p.add_argument("--http-max-connections", type=int, default=1024,
                   help="open HTTP connections per worker; more are answered 503 and closed")
    p.add_argument("--http-max-connections-per-client", type=int, default=64,
                   help="open HTTP connections per worker from one client IP address; more are answered "
                        "503 and closed (default 64)")
    p.add_argument("--http-body-budget", type=int, default=None, metavar="BYTES",
                   help="bytes of HTTP request bodies over 64 KiB that a worker receives and handles at once; "
                        "a body that does not fit is answered 503 before it is read (default 4 x "
                        "--max-message-size = 256 MiB; at least --max-message-size). One client IP address "
                        "(IPv6: /64 network) may hold at most the larger of --max-message-size and a "
                        "quarter of it")
    p.add_argument("--http-header-timeout-secs", type=float, default=10.0, metavar="SECONDS",
                   help="seconds a client has to send the request line and headers")
    p.add_argument("--http-body-timeout-secs", type=float, default=60.0, metavar="SECONDS",
                   help="seconds a client has to send the body")
    p.add_argument("--http-min-body-rate", type=int, default=64 * 1024, metavar="BYTES_PER_SEC",
                   help="slowest average rate in bytes per second, after a 2 s grace, at which an HTTP "
                        "request body over 64 KiB may arrive; a slower one is answered 408 and closed, "
                        "freeing its share of --http-body-budget (default 65536 = 64 KiB/s; 0 = no minimum)")
    p.add_argument("--http-idle-timeout-secs", type=float, default=60.0, metavar="SECONDS",
                   help="seconds an idle kept-alive connection stays open")
    p.add_argument("--busy-poll-us", type=int, default=0, metavar="MICROSECONDS",
                   help="microseconds each worker polls for I/O without sleeping before it blocks: lower "
                        "latency for more CPU (default 0 = off; 200-500 suits latency-bound serving)")
    p.add_argument("--event-loop", choices=["auto", "asyncio", "uvloop"], default="auto",
                   help="each worker's event loop: auto = uvloop when installed (pip install 'edgerun[serve-fast]') "
                        "unless --busy-poll-us is set, else asyncio's own")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
                   type=str.upper, help="the least severe log records written")


class DeprecatedAlias(argparse.Action):
    """An old flag name, hidden from --help, that stores as its new name does and warns once on stderr."""

    def __init__(self, option_strings: list[str], dest: str, new: str, **kwargs: Any) -> None:
        self.new = new
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        print(f"edgerun: warning: {option_string} is deprecated; use {self.new}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def options_from(args: argparse.Namespace):
    """ServeOptions from parsed arguments. ValueError for inconsistent TLS flags or an empty token."""
    from edgerun.serving.options import ServeOptions
    from edgerun.serving.tls import TlsFiles

    if (args.tls_cert is None) != (args.tls_key is None):
        raise ValueError("TLS needs both --tls-cert and --tls-key")
    if args.tls_client_ca and not args.tls_cert:
        raise ValueError("--tls-client-ca needs --tls-cert and --tls-key")
    tls = TlsFiles(args.tls_cert, args.tls_key, args.tls_client_ca) if args.tls_cert else None
    token = _token(args.auth_token_file)
    if args.device != "auto":  # an unknown device, or cuda without a GPU: one line now, not per model
        import edgerun.devices  # noqa: F401 - registers the backends
        from edgerun.runtime.backends import select_backend

        select_backend(args.device)
    return ServeOptions(args.model_repository, args.host, args.grpc_port, args.http_port, args.metrics_port,
                        args.workers, args.model_control_mode, args.repository_poll_secs, tuple(args.load_model),
                        tls, token, args.max_message_size, args.grace_secs, args.log_level, args.threads,
                        device=args.device,
                        max_concurrent_rpcs=args.grpc_max_concurrent_rpcs,
                        http_max_connections=args.http_max_connections,
                        http_max_connections_per_client=args.http_max_connections_per_client,
                        http_body_budget_bytes=args.http_body_budget,
                        http_header_timeout_s=args.http_header_timeout_secs,
                        http_body_timeout_s=args.http_body_timeout_secs,
                        http_idle_timeout_s=args.http_idle_timeout_secs,
                        http_min_body_rate=args.http_min_body_rate,
                        busy_poll_us=args.busy_poll_us, event_loop=args.event_loop)


def _token(path: Path | None) -> str | None:
    """The token from `path` or the TOKEN_ENV variable, or None. ValueError if both are given or
    the one given is empty."""
    from edgerun.serving.auth import read_token

    env = os.environ.get(TOKEN_ENV)
    if path is not None and env is not None:
        raise ValueError(f"give the token by --auth-token-file or by {TOKEN_ENV}, not both")
    if path is not None:
        return read_token(path)
    if env is not None:
        if not env.strip():
            raise ValueError(f"the token in {TOKEN_ENV} is empty")
        return env.strip()
    return None


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve until SIGTERM/SIGINT; exit code 0 after a clean drain."""
    from edgerun.serving.supervisor import serve

    return serve(options_from(args))

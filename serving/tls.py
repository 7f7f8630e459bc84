"""TLS and mutual TLS for both front ends, from PEM files."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import grpc


@dataclass(frozen=True)
class TlsFiles:
    """Server certificate and key; with `client_ca`, clients must present a certificate it signed."""

    cert: Path
    key: Path
    client_ca: Path | None = None


def grpc_credentials(files: TlsFiles) -> grpc.ServerCredentials:
    """gRPC server credentials. OSError if a file cannot be read."""
    ca = files.client_ca.read_bytes() if files.client_ca else None
    return grpc.ssl_server_credentials([(files.key.read_bytes(), files.cert.read_bytes())],
                                       root_certificates=ca, require_client_auth=ca is not None)


def ssl_context(files: TlsFiles) -> ssl.SSLContext:
    """An SSLContext for the HTTP server (TLS 1.2+). OSError/ssl.SSLError if the files are unusable."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(files.cert), str(files.key))
    if files.client_ca:
        context.load_verify_locations(str(files.client_ca))
        context.verify_mode = ssl.CERT_REQUIRED
    return context

"""TLS and mutual TLS credentials for coordinator traffic (PEM files)."""

from __future__ import annotations

import os
from pathlib import Path

import grpc


def _read(path: str | os.PathLike | None) -> bytes | None:
    return None if path is None else Path(path).read_bytes()


def server_credentials(cert: str | os.PathLike, key: str | os.PathLike,
                       client_ca: str | os.PathLike | None = None) -> grpc.ServerCredentials:
    """TLS for the coordinator; with `client_ca`, devices must present a certificate it signed."""
    return grpc.ssl_server_credentials([(_read(key), _read(cert))], root_certificates=_read(client_ca),
                                       require_client_auth=client_ca is not None)


def channel_credentials(ca: str | os.PathLike | None, cert: str | os.PathLike | None = None,
                        key: str | os.PathLike | None = None) -> grpc.ChannelCredentials:
    """TLS for a device: trust `ca` (None: the system roots); `cert`/`key` for mutual TLS."""
    if (cert is None) != (key is None):
        raise ValueError("a client certificate needs both --tls-cert and --tls-key")
    return grpc.ssl_channel_credentials(root_certificates=_read(ca), private_key=_read(key),
                                        certificate_chain=_read(cert))

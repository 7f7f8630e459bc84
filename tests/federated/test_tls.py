"""Coordinator traffic over TLS and mutual TLS."""

from __future__ import annotations

import threading

import grpc
import pytest

from edgerun.converters.training import make_trainable
from edgerun.federated.auth import KeyPair
from edgerun.federated.client import ClientOptions, FederatedClient, channel
from edgerun.federated.coordinator import Coordinator, CoordinatorConfig
from edgerun.federated.service import serve
from edgerun.federated.store import Store
from edgerun.federated.strategies import FedAvg
from edgerun.federated.tls import channel_credentials, server_credentials
from edgerun.runtime import save_model
from tests.converters.training.models import digits, mlp
from tests.tls_certs import make_pki


@pytest.fixture
def pki(tmp_path):
    return make_pki(tmp_path)


def run_one_round(tmp_path, server_creds, client_creds):
    model = save_model(make_trainable(mlp((64, 10)), optimizer=("sgd", {"lr": 0.1})), tmp_path / "m.train.erm")
    coordinator = Coordinator(model, Store(tmp_path / "c.db"), FedAvg(min_fit_clients=1, min_available_clients=1),
                              CoordinatorConfig(rounds=1, enrol_token="t", secagg=None), KeyPair.generate())
    server, port = serve(coordinator, "127.0.0.1:0", credentials=server_creds)
    x, y, _, _ = digits()
    client = FederatedClient(channel(f"localhost:{port}", client_creds), "dev", KeyPair.generate(), (x[:50], y[:50]),
                             ClientOptions(token="t", max_retries=0, rpc_timeout=10))
    runner = threading.Thread(target=coordinator.run, daemon=True)
    runner.start()
    try:
        client.run()
        return client.rounds_done
    finally:
        server.stop(0)


def test_tls_round(tmp_path, pki):
    creds = server_credentials(pki["server_cert"], pki["server_key"])
    assert run_one_round(tmp_path, creds, channel_credentials(pki["ca"])) == [1]


def test_mutual_tls_round(tmp_path, pki):
    creds = server_credentials(pki["server_cert"], pki["server_key"], client_ca=pki["ca"])
    client = channel_credentials(pki["ca"], pki["client_cert"], pki["client_key"])
    assert run_one_round(tmp_path, creds, client) == [1]


@pytest.mark.parametrize("client", ["plaintext", "untrusted_ca", "no_client_cert"])
def test_connections_that_do_not_authenticate_fail(tmp_path, pki, client):
    creds = server_credentials(pki["server_cert"], pki["server_key"], client_ca=pki["ca"])
    client_creds = {"plaintext": None, "untrusted_ca": channel_credentials(pki["other_ca"]),
                    "no_client_cert": channel_credentials(pki["ca"])}[client]
    with pytest.raises(grpc.RpcError) as err:
        run_one_round(tmp_path, creds, client_creds)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_half_a_client_certificate_is_refused(pki):
    with pytest.raises(ValueError, match="both"):
        channel_credentials(pki["ca"], cert=pki["client_cert"])

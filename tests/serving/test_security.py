"""TLS, mutual TLS, bearer tokens and message size limits, on both protocols."""

from __future__ import annotations

import contextlib
import queue
import ssl

import numpy as np
import pytest
import tritonclient.grpc as tg
import tritonclient.http as th

from tests.tls_certs import make_pki

X = np.ones((1, 64), np.float32)


def _grpc_infer(client: tg.InferenceServerClient, x: np.ndarray = X, **kwargs) -> np.ndarray:
    tensor = tg.InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    return client.infer("mlp", [tensor], **kwargs).as_numpy("y")


def _http_infer(client: th.InferenceServerClient, x: np.ndarray = X, **kwargs) -> np.ndarray:
    tensor = th.InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    return client.infer("mlp", [tensor], **kwargs).as_numpy("y")


def _ssl_factory(pki: dict, client_cert: bool):
    def factory() -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(pki["ca"]))
        if client_cert:
            context.load_cert_chain(str(pki["client_cert"]), str(pki["client_key"]))
        return context
    return factory


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict:
    return make_pki(tmp_path_factory.mktemp("pki"))


def test_tls(start_server, main_repo, pki, interpreters) -> None:
    server = start_server(main_repo, "--tls-cert", str(pki["server_cert"]), "--tls-key", str(pki["server_key"]))
    want = interpreters["mlp"].run({"x": X})["y"]
    client = tg.InferenceServerClient(f"localhost:{server.grpc_port}", ssl=True, root_certificates=str(pki["ca"]))
    np.testing.assert_allclose(_grpc_infer(client), want, rtol=1e-6)
    http = th.InferenceServerClient(f"localhost:{server.http_port}", ssl=True,
                                    ssl_context_factory=_ssl_factory(pki, False))
    np.testing.assert_allclose(_http_infer(http), want, rtol=1e-6)
    plain = tg.InferenceServerClient(server.grpc_url)
    with pytest.raises(tg.InferenceServerException):
        plain.is_server_live(client_timeout=3)
    untrusting = tg.InferenceServerClient(f"localhost:{server.grpc_port}", ssl=True,
                                          root_certificates=str(pki["other_ca"]))
    with pytest.raises(tg.InferenceServerException):
        untrusting.is_server_live(client_timeout=3)


def test_mutual_tls(start_server, main_repo, pki, interpreters) -> None:
    server = start_server(main_repo, "--tls-cert", str(pki["server_cert"]), "--tls-key", str(pki["server_key"]),
                          "--tls-client-ca", str(pki["ca"]))
    want = interpreters["mlp"].run({"x": X})["y"]
    client = tg.InferenceServerClient(f"localhost:{server.grpc_port}", ssl=True, root_certificates=str(pki["ca"]),
                                      private_key=str(pki["client_key"]),
                                      certificate_chain=str(pki["client_cert"]))
    np.testing.assert_allclose(_grpc_infer(client), want, rtol=1e-6)
    http = th.InferenceServerClient(f"localhost:{server.http_port}", ssl=True,
                                    ssl_context_factory=_ssl_factory(pki, True))
    np.testing.assert_allclose(_http_infer(http), want, rtol=1e-6)
    no_cert = tg.InferenceServerClient(f"localhost:{server.grpc_port}", ssl=True, root_certificates=str(pki["ca"]))
    with pytest.raises(tg.InferenceServerException):
        no_cert.is_server_live(client_timeout=3)
    http_no_cert = th.InferenceServerClient(f"localhost:{server.http_port}", ssl=True,
                                            ssl_context_factory=_ssl_factory(pki, False))
    with pytest.raises(Exception):  # noqa: B017 - the TLS handshake fails inside geventhttpclient
        http_no_cert.is_server_live()


def test_bearer_token(start_server, main_repo, tmp_path, interpreters) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token\n")
    server = start_server(main_repo, "--auth-token-file", str(token_file))
    good = {"authorization": "Bearer s3cret-token"}
    want = interpreters["mlp"].run({"x": X})["y"]
    client = tg.InferenceServerClient(server.grpc_url)
    np.testing.assert_allclose(_grpc_infer(client, headers=good), want, rtol=1e-6)
    for headers in (None, {"authorization": "Bearer wrong"}, {"authorization": "s3cret-token"}):
        with pytest.raises(tg.InferenceServerException) as info:
            _grpc_infer(client, headers=headers)
        assert info.value.status() == "StatusCode.UNAUTHENTICATED"
        with pytest.raises(tg.InferenceServerException) as info:
            client.get_model_metadata("mlp", headers=headers)
        assert info.value.status() == "StatusCode.UNAUTHENTICATED"
    errors: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: errors.put(error))  # no token on the stream
    tensor = tg.InferInput("x", [1, 64], "FP32")
    tensor.set_data_from_numpy(X)
    with contextlib.suppress(tg.InferenceServerException):  # the stream may already be refused
        client.async_stream_infer("mlp", [tensor])
    assert "UNAUTHENTICATED" in str(errors.get(timeout=10).status())
    client.stop_stream()
    http = th.InferenceServerClient(server.http_url)
    np.testing.assert_allclose(_http_infer(http, headers=good), want, rtol=1e-6)
    with pytest.raises(th.InferenceServerException) as info:
        _http_infer(http, headers={"authorization": "Bearer nope"})
    assert info.value.status() == "401"
    assert http.is_server_live()  # health stays open for probes


def test_message_size_limit(start_server, main_repo, interpreters) -> None:
    server = start_server(main_repo, "--max-message-size", str(1 << 20))
    big = np.zeros((5000, 64), np.float32)  # 1.28 MB of input
    client = tg.InferenceServerClient(server.grpc_url)
    with pytest.raises(tg.InferenceServerException) as info:
        _grpc_infer(client, big)
    assert info.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
    http = th.InferenceServerClient(server.http_url)
    with pytest.raises(th.InferenceServerException) as info:
        _http_infer(http, big)
    assert info.value.status() == "413"
    small = np.ones((3000, 64), np.float32)  # 768 KB still passes, above grpcio's default is tested below
    np.testing.assert_allclose(_grpc_infer(client, small), interpreters["mlp"].run({"x": small})["y"], rtol=1e-6)


def test_default_limit_is_64_mib_not_4(main_server, interpreters) -> None:
    x = np.random.default_rng(0).standard_normal((40000, 64)).astype(np.float32)  # 10 MB request
    client = tg.InferenceServerClient(main_server.grpc_url)
    np.testing.assert_allclose(_grpc_infer(client, x), interpreters["mlp"].run({"x": x})["y"], rtol=1e-5)
    http = th.InferenceServerClient(main_server.http_url, network_timeout=30)
    np.testing.assert_allclose(_http_infer(http, x), interpreters["mlp"].run({"x": x})["y"], rtol=1e-5)



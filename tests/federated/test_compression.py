"""Update compression: sizes, error bounds, unbiasedness and refusal of bad payloads."""

from __future__ import annotations

import numpy as np
import pytest

from edgerun.federated.codec import PayloadError, encode_arrays
from edgerun.federated.compression import compress, decompress, parse

SPEC = {"w": (np.dtype(np.float32), (100, 50)), "b": (np.dtype(np.float32), (50,))}


def arrays(seed=0):
    rng = np.random.default_rng(seed)
    return {"w": rng.normal(0, 0.1, (100, 50)).astype(np.float32), "b": rng.normal(0, 0.1, 50).astype(np.float32)}


def test_int8_is_a_quarter_of_the_size_and_within_one_step():
    a = arrays()
    blob = compress(a, "int8")
    assert len(blob) < 0.3 * len(compress(a, "none"))
    out = decompress(blob, SPEC, "int8")
    for name in a:
        step = np.abs(a[name]).max() / 127
        assert np.abs(out[name] - a[name]).max() <= step * 1.0001


def test_int8_stochastic_rounding_is_unbiased():
    a = {"w": np.full((100, 50), 0.0123, np.float32), "b": np.linspace(-1, 1, 50).astype(np.float32)}
    rng = np.random.default_rng(1)
    mean = sum(decompress(compress(a, "int8", rng), SPEC, "int8")["w"] for _ in range(200)) / 200
    assert abs(float(mean.mean()) - 0.0123) < 2e-4


def test_topk_keeps_the_largest_values_exactly():
    a = arrays(2)
    out = decompress(compress(a, "topk:0.1"), SPEC, "topk:0.1")
    flat, got = a["w"].ravel(), out["w"].ravel()
    keep = np.argsort(-np.abs(flat))[:500]
    assert np.array_equal(got[keep], flat[keep]) and np.count_nonzero(got) == 500
    assert len(compress(a, "topk:0.1")) < 0.25 * len(compress(a, "none"))


def test_bad_payloads_are_refused():
    a = arrays()
    with pytest.raises(PayloadError):
        decompress(compress(a, "int8"), SPEC, "topk:0.1")
    bad = {"w::index": np.full(500, 6000, np.uint32), "w::value": np.zeros(500, np.float32),
           "b::index": np.arange(5, dtype=np.uint32), "b::value": np.zeros(5, np.float32)}
    with pytest.raises(PayloadError, match="out of range"):
        decompress(encode_arrays(bad), SPEC, "topk:0.1")
    with pytest.raises(ValueError, match="compression"):
        parse("topk:2")


def test_int8_uploads_over_grpc_report_bytes_and_still_learn(tmp_path):
    from edgerun.converters.training import make_trainable
    from edgerun.federated import partition
    from edgerun.federated.auth import KeyPair
    from edgerun.federated.client import ClientOptions, FederatedClient, channel
    from edgerun.federated.coordinator import Coordinator, CoordinatorConfig
    from edgerun.federated.service import serve
    from edgerun.federated.store import Store
    from edgerun.federated.strategies import FedAvg
    from edgerun.runtime import save_model
    from tests.converters.training.models import digits, mlp
    from tests.federated.test_rounds import run_rounds

    model = save_model(make_trainable(mlp((64, 32, 10)), optimizer=("sgd", {"lr": 0.1})), tmp_path / "m.erm")
    results = {}
    for method in ("none", "int8"):
        coordinator = Coordinator(model, Store(tmp_path / f"{method}.db"),
                                  FedAvg(fraction_fit=1.0, min_fit_clients=2, min_available_clients=2, client_lr=0.1),
                                  CoordinatorConfig(rounds=3, enrol_token="t", secagg=None, compression=method),
                                  KeyPair.generate())
        server, port = serve(coordinator)
        x, y, x_test, y_test = digits()
        clients = [FederatedClient(channel(f"127.0.0.1:{port}"), f"d{i}", KeyPair.generate(), (x[idx], y[idx]),
                                   ClientOptions(token="t")) for i, idx in enumerate(partition.iid(400, 2, seed=0))]
        run_rounds(coordinator, server, clients)
        history = coordinator.store.history()
        assert [r.status for r in history] == ["aggregated"] * 3
        results[method] = history[-1].metrics["upload_bytes_per_client"]
    assert results["int8"] < 0.5 * results["none"]  # 2.4k values: .npz headers are a large share here

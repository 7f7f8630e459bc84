"""The issue's acceptance run: sklearn digits (80/20 stratified), 50 clients with 2 label
shards each, half of them selected per round and 20 % of those dropping out, FedAvg with
E = 5, B = 10, lr 0.1 on an MLP 64-64-10, over real gRPC: >= 93 % test accuracy within 50 rounds."""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_digits

from edgerun.converters.training import make_trainable
from edgerun.federated import partition
from edgerun.federated.simulation import SimulationConfig, simulate
from edgerun.runtime import GraphBuilder, save_model


def mlp_uniform_init(sizes=(64, 64, 10), seed=0):
    """Weights and biases ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (PyTorch's Linear default)."""
    rng = np.random.default_rng(seed)
    g = GraphBuilder("mlp", opset=17)
    h = g.input("x", np.float32, (-1, sizes[0]))
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        bound = 1 / np.sqrt(n_in)
        w = g.constant(f"fc{i}.weight", rng.uniform(-bound, bound, (n_out, n_in)).astype(np.float32))
        b = g.constant(f"fc{i}.bias", rng.uniform(-bound, bound, n_out).astype(np.float32))
        h = g.op("Gemm", [h, w, b], transB=1)
        if i < len(sizes) - 2:
            h = g.op("Relu", [h])
    g.output(h, "y")
    return g.build()


def test_fedavg_on_non_iid_digits_reaches_93_percent_within_50_rounds(tmp_path):
    data = load_digits()
    train, test = partition.stratified_split(data.target, 0.2, seed=0)
    x, y = data.data[train].astype(np.float32), data.target[train].astype(np.int64)
    mean, std = x.mean(0), x.std(0) + 1e-6  # standardized with training statistics only
    x = ((x - mean) / std).astype(np.float32)
    x_test = ((data.data[test] - mean) / std).astype(np.float32)
    model = save_model(make_trainable(mlp_uniform_init(), optimizer=("sgd", {"lr": 0.1})), tmp_path / "m.erm")
    config = SimulationConfig(num_clients=50, rounds=50, fraction_fit=0.5, partition="shards", shards_per_client=2,
                              drop_probability=0.2, report_goal=0.75, round_timeout=2.0, epochs=5, batch_size=10,
                              lr=0.1, seed=0)
    history = simulate(model, x, y, x_test, data.target[test].astype(np.int64), config)
    accuracy = [r.metrics.get("test_accuracy", 0.0) for r in history if r.status == "aggregated"]
    assert len(history) == 50 and len(accuracy) >= 45
    assert max(accuracy) >= 0.93, accuracy

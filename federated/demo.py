"""The federated part of the README demo: sklearn digits, an MLP 64-64-10, non-IID clients.

`digits_setup` builds the acceptance setup of the federated issues (80/20 stratified split,
standardized with training statistics, a trainable MLP with PyTorch's default init);
`run_secure_digits_demo` runs it over loopback gRPC with secure aggregation on, printing
accuracy per round and writing the plot.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def mlp_uniform_init(sizes: tuple[int, ...] = (64, 64, 10), seed: int = 0) -> Any:
    """An MLP graph, weights and biases ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    from edgerun.runtime import GraphBuilder

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


def digits_setup(workdir: str | Path) -> tuple[Path, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(trainable model path, x, y, x_test, y_test) for sklearn digits (SGD lr 0.1). MissingExtra
    without scikit-learn (the `demo` extra)."""
    from edgerun.converters.training import make_trainable
    from edgerun.federated import partition
    from edgerun.runtime import save_model
    from edgerun.runtime.extras import require

    datasets = require("sklearn.datasets", "demo", "the digits demo", "scikit-learn")
    data = datasets.load_digits()
    train, test = partition.stratified_split(data.target, 0.2, seed=0)
    x, y = data.data[train].astype(np.float32), data.target[train].astype(np.int64)
    mean, std = x.mean(0), x.std(0) + 1e-6
    x = ((x - mean) / std).astype(np.float32)
    x_test = ((data.data[test] - mean) / std).astype(np.float32)
    model = save_model(make_trainable(mlp_uniform_init(), optimizer=("sgd", {"lr": 0.1})),
                       Path(workdir) / "digits.train.erm")
    return Path(model), x, y, x_test, data.target[test].astype(np.int64)


def run_secure_digits_demo(workdir: str | Path, rounds: int = 30, plot: str | Path | None = "federated.png",
                           num_clients: int = 20, drop_probability: float = 0.2) -> list[Any]:
    """Federated training on digits over loopback gRPC with secure aggregation on (dropouts at
    random protocol stages); prints test accuracy per round, writes the plot (needs matplotlib)
    into `workdir` and returns the round history."""
    from edgerun.federated.secagg.options import SecAggOptions
    from edgerun.federated.simulation import SimulationConfig, plot_history, simulate

    model, x, y, x_test, y_test = digits_setup(workdir)
    config = SimulationConfig(num_clients=num_clients, rounds=rounds, fraction_fit=0.5, partition="shards",
                              drop_probability=drop_probability, drop_stage="random", report_goal=1.0,
                              round_timeout=10.0, epochs=5, batch_size=10, lr=0.1, seed=0,
                              secagg=SecAggOptions(stage_timeout=1.0))

    def show(record: Any) -> None:
        accuracy = record.metrics.get("test_accuracy")
        shown = "-" if accuracy is None else f"{accuracy:.4f}"
        print(f"round {record.round:3d}  {record.status:10s}  test accuracy {shown}  "
              f"(masked inputs from {record.metrics.get('reports', 0)} of {record.metrics.get('selected', '?')})",
              flush=True)

    history = simulate(model, x, y, x_test, y_test, config, on_round=show)
    if plot is not None:
        plot_history(history, Path(workdir) / plot)
        print(f"wrote {Path(workdir) / plot}")
    return history

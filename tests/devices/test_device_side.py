"""The device side as a Raspberry Pi or a phone runs it: load and verify a model, infer, train
through the `train` signature, take part in a secure federated round, and the numba fast paths
against the reference kernels. Oracles: numpy closed forms (a CNN, softmax cross-entropy SGD,
FedAvg), the reference kernels, and under emulation the x86 results.

It runs in the normal suite (natively: the round's coordinator and clients in this process) and
under emulated aarch64 (scripts/aarch64_ci.py), where it needs only numpy, grpcio, cryptography,
numba and pytest (no onnx, no scikit-learn, no `tests` package). The script sets:

- EDGERUN_X86_REFERENCE: a folder holding x86.npz, written natively by `write_x86_reference`:
  the model file and the inference and training results of x86, which must equal ours.
- EDGERUN_X86_COORDINATOR: HOST:PORT of a coordinator running natively on x86 (`serve_round`)
  with two x86 clients; this process is the third client of the secure round, and the round's
  result appears as round.npz in EDGERUN_X86_REFERENCE's folder.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from edgerun.converters.training import make_trainable
from edgerun.runtime import GraphBuilder, Interpreter, ModelError, load_model, save_model, serialize

REFERENCE = os.environ.get("EDGERUN_X86_REFERENCE")
COORDINATOR = os.environ.get("EDGERUN_X86_COORDINATOR")
TOKEN = "device-side"
SIZES = (6, 5, 3)  # the federated MLP
SHARD, CLIENTS = 24, 3  # examples per client, clients in the round (secure aggregation needs >= 2)
ROUND = dict(epochs=1, batch_size=8, lr=0.1)


# (a) a small CNN: Conv 3x3 (4) -> Relu -> MaxPool 2 -> Flatten -> Gemm (3)

def cnn_parameters() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"conv.weight": rng.standard_normal((4, 1, 3, 3)).astype(np.float32),
            "conv.bias": rng.standard_normal(4).astype(np.float32),
            "fc.weight": (rng.standard_normal((3, 64)) / 8).astype(np.float32),
            "fc.bias": rng.standard_normal(3).astype(np.float32)}


def cnn_graph():
    p = cnn_parameters()
    g = GraphBuilder("cnn", opset=17)
    x = g.input("x", np.float32, (-1, 1, 8, 8))
    h = g.op("Conv", [x, g.constant("conv.weight", p["conv.weight"]), g.constant("conv.bias", p["conv.bias"])],
             pads=[1, 1, 1, 1])
    h = g.op("MaxPool", [g.op("Relu", [h])], kernel_shape=[2, 2], strides=[2, 2])
    h = g.op("Gemm", [g.op("Flatten", [h]), g.constant("fc.weight", p["fc.weight"]),
                      g.constant("fc.bias", p["fc.bias"])], transB=1)
    g.output(h, "y")
    return g.build()


def cnn_input() -> np.ndarray:
    return np.random.default_rng(1).standard_normal((2, 1, 8, 8)).astype(np.float32)


def numpy_cnn(x: np.ndarray) -> np.ndarray:
    """The CNN in float64 numpy: the convolution as a sum of 9 shifted planes."""
    p = {k: v.astype(np.float64) for k, v in cnn_parameters().items()}
    padded = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    conv = np.zeros((len(x), 4, 8, 8)) + p["conv.bias"][None, :, None, None]
    for i in range(3):
        for j in range(3):
            conv += np.einsum("nchw,oc->nohw", padded[:, :, i:i + 8, j:j + 8], p["conv.weight"][:, :, i, j])
    pooled = np.maximum(conv, 0).reshape(len(x), 4, 4, 2, 4, 2).max(axis=(3, 5))
    return pooled.reshape(len(x), 64) @ p["fc.weight"].T + p["fc.bias"]


# (b) an MLP trained by SGD on softmax cross-entropy (float64 here, float32 in the round)

TRAIN_LR, TRAIN_STEPS = 0.5, 5


def mlp_parameters(sizes: tuple[int, ...], dtype=np.float64, seed: int = 0) -> dict[str, np.ndarray]:
    """He-initialized weights, zero biases: fc{i}.weight (out, in) and fc{i}.bias."""
    rng = np.random.default_rng(seed)
    params = {}
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        params[f"fc{i}.weight"] = (rng.standard_normal((n_out, n_in)) * np.sqrt(2 / n_in)).astype(dtype)
        params[f"fc{i}.bias"] = np.zeros(n_out, dtype)
    return params


def mlp_graph(sizes: tuple[int, ...], dtype=np.float64, seed: int = 0):
    """Gemm + Relu layers over `mlp_parameters`, logits out."""
    params = mlp_parameters(sizes, dtype, seed)
    g = GraphBuilder("mlp", opset=17)
    h = g.input("x", dtype, (-1, sizes[0]))
    for i in range(len(sizes) - 1):
        weight, bias = (g.constant(f"fc{i}.{k}", params[f"fc{i}.{k}"]) for k in ("weight", "bias"))
        h = g.op("Gemm", [h, weight, bias], transB=1)
        if i < len(sizes) - 2:
            h = g.op("Relu", [h])
    g.output(h, "y")
    return g.build()


def sgd_step(params: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray, lr: float) -> tuple[dict, float]:
    """One SGD step of a one-hidden-layer MLP on mean softmax cross-entropy, in float64:
    (new parameters, loss before the step)."""
    w0, b0, w1, b1 = (params[k].astype(np.float64) for k in ("fc0.weight", "fc0.bias", "fc1.weight", "fc1.bias"))
    h = np.maximum(x @ w0.T + b0, 0)
    z = h @ w1.T + b1
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    loss = float(-np.log(p[np.arange(len(y)), y]).mean())
    p[np.arange(len(y)), y] -= 1
    dz = p / len(y)
    dh = (dz @ w1) * (h > 0)
    new = {"fc0.weight": w0 - lr * dh.T @ x, "fc0.bias": b0 - lr * dh.sum(0),
           "fc1.weight": w1 - lr * dz.T @ h, "fc1.bias": b1 - lr * dz.sum(0)}
    return new, loss


def train_batch() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(2)
    return rng.standard_normal((8, 4)), rng.integers(0, 3, 8)


def train_steps() -> tuple[list[float], dict[str, np.ndarray]]:
    """(losses, parameters after TRAIN_STEPS steps) through the interpreter's `train` signature."""
    trainable = make_trainable(mlp_graph((4, 5, 3)), optimizer=("sgd", {"lr": TRAIN_LR}))
    it = Interpreter(serialize(trainable), device="cpu")
    x, y = train_batch()
    losses = [float(it.run({"x": x, "labels": y}, "train")["loss"]) for _ in range(TRAIN_STEPS)]
    return losses, it.run({}, "save")


def write_x86_reference(folder: str | os.PathLike) -> None:
    """Natively on x86 (scripts/aarch64_ci.py): folder/x86.npz, what the emulated run compares with."""
    path = save_model(cnn_graph(), Path(folder) / "cnn.erm")
    y = Interpreter(path, device="cpu").run({"x": cnn_input()})["y"]
    losses, trained = train_steps()
    np.savez(Path(folder) / "x86.npz", model=np.frombuffer(Path(path).read_bytes(), np.uint8), y=y,
             losses=np.array(losses), **{f"trained/{k}": v for k, v in trained.items()})


def x86() -> dict[str, np.ndarray] | None:
    """x86.npz's arrays under emulation; None natively."""
    if REFERENCE is None:
        return None
    with np.load(Path(REFERENCE) / "x86.npz") as data:
        return dict(data)


def test_a_saved_model_loads_verifies_and_infers_like_numpy_and_x86(tmp_path):
    path = save_model(cnn_graph(), tmp_path / "cnn.erm")
    ours = Interpreter(load_model(path), device="cpu").run({"x": cnn_input()})["y"]
    np.testing.assert_allclose(ours, numpy_cnn(cnn_input()), rtol=1e-5, atol=1e-5)
    (tmp_path / "cut.erm").write_bytes(Path(path).read_bytes()[:100])
    with pytest.raises(ModelError):
        load_model(tmp_path / "cut.erm")
    if (reference := x86()) is not None:
        assert Path(path).read_bytes() == reference["model"].tobytes()  # the same file on both machines
        theirs = Interpreter(load_model(reference["model"].tobytes()), device="cpu").run({"x": cnn_input()})["y"]
        np.testing.assert_array_equal(theirs, ours)
        np.testing.assert_allclose(ours, reference["y"], rtol=1e-6, atol=1e-6)


def test_train_steps_lower_the_loss_and_follow_numpy_sgd():
    losses, trained = train_steps()
    x, y = train_batch()
    params, want = mlp_parameters((4, 5, 3)), []
    for _ in range(TRAIN_STEPS):
        params, loss = sgd_step(params, x, y, TRAIN_LR)
        want.append(loss)
    assert all(b < a for a, b in zip(losses, losses[1:], strict=False)), losses
    np.testing.assert_allclose(losses, want, rtol=1e-10)
    for name, value in params.items():
        np.testing.assert_allclose(trained[name], value, rtol=1e-10, atol=1e-12, err_msg=name)
    if (reference := x86()) is not None:
        np.testing.assert_allclose(losses, reference["losses"], rtol=1e-12)
        for name, value in trained.items():
            np.testing.assert_allclose(value, reference[f"trained/{name}"], rtol=1e-12, atol=1e-14, err_msg=name)


# (c) a secure-aggregation round of CLIENTS devices (FedAvg, one round)

def round_shards() -> list[tuple[np.ndarray, np.ndarray]]:
    """Three classes around random means; no BLAS, so both machines draw identical data."""
    rng = np.random.default_rng(3)
    means = rng.standard_normal((SIZES[-1], SIZES[0])) * 2
    shards = []
    for _ in range(CLIENTS):
        y = rng.integers(0, SIZES[-1], SHARD)
        shards.append(((rng.standard_normal((SHARD, SIZES[0])) + means[y]).astype(np.float32), y.astype(np.int64)))
    return shards


def numpy_fedavg(params: dict[str, np.ndarray], round_number: int = 1) -> dict[str, np.ndarray]:
    """One FedAvg round of equal shards: each client's SGD on the batches runtime.training.fit draws
    (seed = the round), then the mean."""
    trained = []
    for x, y in round_shards():
        local = {k: v.astype(np.float64) for k, v in params.items()}
        for _ in range(ROUND["epochs"]):
            order = np.random.default_rng(round_number).permutation(len(y))
            for start in range(0, len(y), ROUND["batch_size"]):
                i = order[start:start + ROUND["batch_size"]]
                local, _ = sgd_step(local, x[i].astype(np.float64), y[i], ROUND["lr"])
        trained.append(local)
    return {k: np.mean([t[k] for t in trained], axis=0) for k in params}


def start_coordinator(workdir: Path):
    """(coordinator, server, "127.0.0.1:port"): one secure round, waiting minutes for slow devices."""
    from edgerun.federated.auth import KeyPair
    from edgerun.federated.coordinator import Coordinator, CoordinatorConfig
    from edgerun.federated.secagg.options import SecAggOptions
    from edgerun.federated.service import serve
    from edgerun.federated.store import Store
    from edgerun.federated.strategies import FedAvg

    model = save_model(make_trainable(mlp_graph(SIZES, np.float32, seed=1), optimizer=("sgd", {"lr": ROUND["lr"]})),
                       workdir / "mlp.train.erm")
    strategy = FedAvg(fraction_fit=1.0, min_fit_clients=CLIENTS, min_available_clients=CLIENTS,
                      local_epochs=ROUND["epochs"], batch_size=ROUND["batch_size"], client_lr=ROUND["lr"])
    config = CoordinatorConfig(rounds=1, enrol_token=TOKEN, round_timeout=300, wait_for_clients=180,
                               secagg=SecAggOptions(stage_timeout=60.0))
    coordinator = Coordinator(model, Store(workdir / "coordinator.db"), strategy, config, KeyPair.generate())
    server, port = serve(coordinator)
    return coordinator, server, f"127.0.0.1:{port}"


def device(target: str, index: int):
    """Client `index` of the round, holding shard `index`."""
    from edgerun.federated.auth import KeyPair
    from edgerun.federated.client import ClientOptions, FederatedClient, channel

    return FederatedClient(channel(target), f"dev{index}", KeyPair.generate(), round_shards()[index],
                           ClientOptions(token=TOKEN, long_poll=1.0))


def run_round(workdir: Path, devices: range, linger: float = 0.0) -> dict[str, np.ndarray]:
    """Coordinator here, `devices` in threads; writes coordinator.addr (when it listens) and
    round.npz (statuses, initial/*, final/*) into workdir, then waits up to `linger` seconds
    for workdir/done (the other devices' last word) before it stops serving."""
    coordinator, server, target = start_coordinator(workdir)
    initial = {k: v.copy() for k, v in coordinator.parameters.items()}
    stop = threading.Event()
    threads = [threading.Thread(target=device(target, i).run, args=(stop,)) for i in devices]
    for thread in threads:
        thread.start()
    (workdir / "coordinator.addr.tmp").write_text(target)
    (workdir / "coordinator.addr.tmp").replace(workdir / "coordinator.addr")
    try:
        coordinator.run()
        statuses = np.array([r.status for r in coordinator.store.history()])
        result = {"statuses": statuses, **{f"initial/{k}": v for k, v in initial.items()},
                  **{f"final/{k}": v for k, v in coordinator.parameters.items()}}
        np.savez(workdir / "round.tmp.npz", **result)
        (workdir / "round.tmp.npz").replace(workdir / "round.npz")
        deadline = time.monotonic() + linger
        while time.monotonic() < deadline and not (workdir / "done").exists():
            time.sleep(0.2)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
        server.stop(0)
    return result


def serve_round(folder: str | os.PathLike) -> None:
    """Natively on x86 (scripts/aarch64_ci.py): the coordinator and devices 0..CLIENTS-2; the
    emulated test is the last device."""
    run_round(Path(folder), range(CLIENTS - 1), linger=120.0)


def test_a_secure_round_with_this_device_as_a_client(tmp_path):
    if COORDINATOR is None:  # natively: everything in this process
        result = run_round(tmp_path, range(CLIENTS))
    else:
        client = device(COORDINATOR, CLIENTS - 1)
        client.run()  # until the coordinator says stop
        assert client.rounds_done == [1]
        folder = Path(REFERENCE)
        (folder / "done").touch()
        deadline = time.monotonic() + 60
        while not (folder / "round.npz").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        with np.load(folder / "round.npz") as data:
            result = dict(data)
    assert list(result["statuses"]) == ["aggregated"]
    initial = {k.split("/", 1)[1]: v for k, v in result.items() if k.startswith("initial/")}
    final = {k.split("/", 1)[1]: v for k, v in result.items() if k.startswith("final/")}
    assert not np.array_equal(final["fc0.weight"], initial["fc0.weight"])
    for name, value in numpy_fedavg(initial).items():  # secure aggregation's quantization: ~1e-9
        np.testing.assert_allclose(final[name], value, rtol=0, atol=1e-5, err_msg=name)


# (d) numba fast paths against the reference kernels (tiny: numba compiles slowly under emulation)

def numba_case(name: str):
    """(graph, feeds, the fast step expected first in the plan)."""
    rng = np.random.default_rng(4)
    g = GraphBuilder(name, opset=17)
    if name == "gemm":
        x = g.input("x", np.float32, (2, 8))
        y = g.op("Gemm", [x, g.constant("w", rng.standard_normal((4, 8)).astype(np.float32)),
                          g.constant("b", rng.standard_normal(4).astype(np.float32))], transB=1)
        shape, fast = (2, 8), "_run_small"
    elif name == "softmax":
        x = g.input("x", np.float32, (3, 5))
        y, shape, fast = g.op("Softmax", [x], axis=-1), (3, 5), "_run_rows"
    elif name == "max_pool":
        x = g.input("x", np.float32, (1, 2, 4, 4))
        y, shape, fast = g.op("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2]), (1, 2, 4, 4), "_run_2x2"
    elif name == "conv_relu":
        x = g.input("x", np.float32, (1, 2, 6, 6))
        conv = g.op("Conv", [x, g.constant("w", rng.standard_normal((3, 2, 3, 3)).astype(np.float32)),
                             g.constant("b", rng.standard_normal(3).astype(np.float32))], pads=[1, 1, 1, 1])
        # (our own GEMM's tiles at this CPU's vector width: an implicit GEMM, edge tiles both ways)
        y, shape, fast = g.op("Relu", [conv]), (1, 2, 6, 6), "_run_wide"
    else:
        raise ValueError(f"no numba case {name!r}")
    g.output(y, "y")
    return g.build(), {"x": rng.standard_normal(shape).astype(np.float32)}, fast


@pytest.mark.parametrize("name", ["gemm", "softmax", "max_pool", "conv_relu"])
def test_numba_fast_path_matches_the_reference_kernel(name):
    graph, feeds, fast = numba_case(name)
    want = Interpreter(graph, device="cpu").run(feeds)["y"]
    it = Interpreter(numba_case(name)[0], device="numba")
    got = it.run(feeds)["y"]
    assert [step[0].__name__ for step in it._plans["serving_default"].prepared.steps][0] == fast
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)

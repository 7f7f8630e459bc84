"""What a new user meets first, through the `edgerun` command line in-process: defaults said in
--help, the model's own learning rate, one-line errors that leave no files, a key file per client
id, `federated export`, and the seeds' scalar linear regression y = 0.1 x + 0.3 recovered through
make-trainable, simulate and export. Oracles: closed-form gradient steps and the known W and b."""

from __future__ import annotations

import json
import re
import threading
import time

import numpy as np
import onnx
import pytest

from edgerun.cli import main
from edgerun.converters.training import make_trainable
from edgerun.federated.strategies import FedAvg
from edgerun.runtime import Interpreter, save_model
from tests.converters.training.models import mlp
from tests.converters.training.scalar_models import scalar_linear_onnx

W0, B0, LR = 0.7, -0.4, 0.5  # the initial weights and the learning rate stored by make-trainable


def cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def help_text(capsys, command: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(["federated", command, "--help"])
    assert exit_info.value.code == 0
    return " ".join(capsys.readouterr().out.split())


def option_help(text: str, option: str) -> str:
    """The help of one option (below the usage lines): from its name to the next option's name."""
    match = re.search(rf"{re.escape(option)} (.*?)(?= --[a-z]|$)", text.split(" options: ", 1)[1])
    assert match, option
    return match.group(1)


@pytest.fixture
def linear(tmp_path, capsys):
    """(trainable model, data): y = 0.1 x + 0.3 (+ noise of sd 1e-3) at 300 points of U(0, 1)."""
    onnx.save(scalar_linear_onnx(W0, B0), tmp_path / "linear.onnx")
    model = tmp_path / "linear.train.erm"
    code, out, _ = cli(capsys, "make-trainable", tmp_path / "linear.onnx", "--loss", "mse", "--lr", LR, "-o", model)
    assert code == 0 and "2 trainable tensors (2 values)" in out
    rng = np.random.default_rng(0)
    x = rng.random(300).astype(np.float32)
    y = (0.1 * x + 0.3 + 1e-3 * rng.standard_normal(300)).astype(np.float32)
    np.savez(tmp_path / "linear.npz", x=x, y=y)
    return model, tmp_path / "linear.npz"


def saved(path) -> dict[str, float]:
    return {k: float(v) for k, v in Interpreter(path).run({}, "save").items()}


# --- the acceptance run ------------------------------------------------------------------------

def test_scalar_linear_regression_through_the_cli_recovers_w_and_b(tmp_path, capsys, linear):
    model, data = linear
    state, metrics, exported = tmp_path / "state.db", tmp_path / "rounds.json", tmp_path / "global.erm"
    code, out, err = cli(capsys, "federated", "simulate", "--model", model, "--data", data, "--clients", 4,
                         "--rounds", 5, "--fraction-fit", 1.0, "--secure-aggregation", "off", "--state", state,
                         "--metrics", metrics)
    assert code == 0, err
    rows = json.loads(metrics.read_text())
    assert [r["status"] for r in rows] == ["aggregated"] * 5
    assert "test_accuracy" not in rows[-1] and rows[-1]["test_mse"] < 1e-4  # regression: mse, no accuracy
    assert "test mse" in out
    code, out, _ = cli(capsys, "federated", "export", "--state", state, "--model", model, "-o", exported)
    assert code == 0 and "global model version 5" in out
    params = saved(exported)
    assert params["W"] == pytest.approx(0.1, abs=0.01) and params["b"] == pytest.approx(0.3, abs=0.01)
    y = Interpreter(exported).run({"x": np.array([0.0, 1.0], np.float32)}, "infer")["y"]
    np.testing.assert_allclose(y, [params["b"], params["W"] + params["b"]], rtol=1e-6)  # inference uses them

    code, _, _ = cli(capsys, "federated", "export", "--state", state, "--model", model, "-o", tmp_path / "v0.erm",
                     "--version", 0)
    assert code == 0 and saved(tmp_path / "v0.erm") == pytest.approx({"W": W0, "b": B0})
    other = save_model(make_trainable(mlp((4, 3))), tmp_path / "other.erm")
    for args, message in [(("--model", model, "-o", tmp_path / "x.erm", "--version", 9), "no global model version 9"),
                          (("--model", other, "-o", tmp_path / "x.erm"), "does not fit"),
                          (("--model", model, "-o", tmp_path), "is a directory")]:
        code, _, err = cli(capsys, "federated", "export", "--state", state, *args)
        assert code == 1 and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "x.erm").exists()


def one_gradient_step(data, lr: float) -> dict[str, float]:
    """Full-batch gradient descent on mean((W x + b - y)^2) from (W0, B0), in float64."""
    with np.load(data) as arrays:
        x, y = arrays["x"].astype(np.float64), arrays["y"].astype(np.float64)
    residual = W0 * x + B0 - y
    return {"W": W0 - lr * np.mean(2 * residual * x), "b": B0 - lr * np.mean(2 * residual)}


@pytest.mark.parametrize("lr_args, lr", [((), LR), (("--lr", 0.2), 0.2)], ids=["model-default", "flag"])
def test_simulate_trains_with_the_models_learning_rate_unless_told(tmp_path, capsys, linear, lr_args, lr):
    model, data = linear
    exported = tmp_path / "g.erm"
    code, _, err = cli(capsys, "federated", "simulate", "--model", model, "--data", data, "--clients", 1,
                       "--rounds", 1, "--fraction-fit", 1.0, "--epochs", 1, "--batch-size", 300,
                       "--secure-aggregation", "off", "--metrics", tmp_path / "m.json", "--export", exported, *lr_args)
    assert code == 0, err
    assert saved(exported) == pytest.approx(one_gradient_step(data, lr), abs=1e-6)


def test_a_regression_model_is_evaluated_by_its_mean_squared_error(linear):
    from edgerun.federated.local import local_evaluate

    model, data = linear
    with np.load(data) as arrays:
        x, y = arrays["x"], arrays["y"]
    result = local_evaluate(Interpreter(model), {"W": np.float32(2.0), "b": np.float32(1.0)}, x, y)
    want = np.mean((2.0 * x.astype(np.float64) + 1.0 - y) ** 2)
    assert "accuracy" not in result and result["mse"] == pytest.approx(want, rel=1e-6)
    assert result["loss"] == result["mse"] and result["num_examples"] == len(y)


def test_fedavg_without_a_learning_rate_leaves_it_to_the_model():
    assert "lr" not in FedAvg(client_lr=None).fit_config(1)
    assert FedAvg(client_lr=0.3).fit_config(1)["lr"] == 0.3


# --- --help --------------------------------------------------------------------------------------

def test_help_says_defaults_and_units(capsys):
    texts = {command: help_text(capsys, command) for command in ("coordinator", "simulate")}
    for command, text in texts.items():
        assert "SECONDS" in option_help(text, "--round-timeout") and "(default: 60.0)" in text, command
        assert "(default: 0.3)" in option_help(text, "--over-selection"), command
        assert "(default: 5)" in option_help(text, "--epochs") and "(default: 10)" in option_help(text, "--batch-size")
        assert "stored in the model" in option_help(text, "--lr"), command
        assert "seconds per protocol stage (default: 10.0)" in text, command
    assert "--export PATH" in texts["coordinator"] and "--export PATH" in texts["simulate"]
    assert "default: ID.key" in help_text(capsys, "client")
    export = help_text(capsys, "export")
    assert "--version" in export and "(default: coordinator.db)" in export


# --- one-line errors that leave no files ---------------------------------------------------------

@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A folder with a plain and a trainable model, data with and without x / y, an .npy and a
    token; the current folder while the test runs."""
    save_model(mlp((4, 3)), tmp_path / "plain.erm")
    save_model(make_trainable(mlp((4, 3))), tmp_path / "t.erm")
    x, y = np.zeros((6, 4), np.float32), np.zeros(6, np.int64)
    np.savez(tmp_path / "ok.npz", x=x, y=y)
    np.savez(tmp_path / "noy.npz", x=x)
    np.savez(tmp_path / "nox.npz", y=y)
    np.save(tmp_path / "x.npy", x)
    (tmp_path / "token").write_text("secret\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


ERRORS = [
    (["federated", "coordinator", "--model", "plain.erm", "--token-file", "token"], "plain.erm: not a trainable model"),
    (["federated", "simulate", "--model", "plain.erm", "--data", "ok.npz"], "plain.erm: not a trainable model"),
    (["federated", "simulate", "--model", "t.erm", "--data", "noy.npz"], "noy.npz: no array 'y'"),
    (["federated", "simulate", "--model", "t.erm", "--data", "nox.npz"], "nox.npz: no array 'x'"),
    (["federated", "simulate", "--model", "t.erm", "--data", "x.npy"], "x.npy: a single array (.npy)"),
    (["federated", "simulate", "--model", "t.erm", "--data", "ok.npz", "--state", "s.db", "--export", "."],
     "is a directory"),
    (["federated", "client", "--coordinator", "127.0.0.1:1", "--data", "noy.npz", "--id", "dev0"], "no array 'y'"),
    (["federated", "client", "--coordinator", "127.0.0.1:1", "--data", "ok.npz", "--id", "a/b"], "client id 'a/b'"),
    (["federated", "export", "--model", "t.erm", "-o", "g.erm"], "coordinator.db: no coordinator state file"),
    (["train", "t.erm", "--data", "x.npy"], "x.npy: a single array (.npy), not an .npz archive; expected an .npz"),
    # fails in Coordinator(), after the state and key files were made: both are removed again
    (["federated", "coordinator", "--model", "t.erm", "--token-file", "token", "--compression", "int8"],
     "compression applies to plain uploads"),
]


@pytest.mark.parametrize("args, message", ERRORS, ids=[f"{a[1]}-{i}" for i, (a, _) in enumerate(ERRORS)])
def test_errors_are_one_line_and_leave_no_files(workdir, capsys, args, message):
    before = sorted(p.name for p in workdir.iterdir())
    code, _, err = cli(capsys, *args)
    assert code == 1
    assert err.count("edgerun: error:") == 1 and "Traceback" not in err and message in err, err
    assert sorted(p.name for p in workdir.iterdir()) == before


# --- client keys -------------------------------------------------------------------------------

def wait_for(condition, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.05)


def test_clients_get_a_key_file_per_id_and_a_duplicate_id_is_a_one_line_error(workdir, capsys, monkeypatch):
    from edgerun.federated.auth import KeyPair
    from edgerun.federated.coordinator import Coordinator, CoordinatorConfig
    from edgerun.federated.service import serve
    from edgerun.federated.store import Store

    store = Store(workdir / "c.db")
    coordinator = Coordinator(workdir / "t.erm", store, FedAvg(fraction_fit=1.0, min_fit_clients=2,
                                                              min_available_clients=2, local_epochs=1),
                              CoordinatorConfig(rounds=1, round_timeout=20, enrol_token="secret", secagg=None),
                              KeyPair.generate())
    server, port = serve(coordinator)
    monkeypatch.setenv("EDGERUN_ENROL_TOKEN", "secret")
    codes: dict[str, int] = {}

    def device(client_id: str) -> threading.Thread:
        args = ["federated", "client", "--coordinator", f"127.0.0.1:{port}", "--data", "ok.npz", "--id", client_id]
        thread = threading.Thread(target=lambda: codes.setdefault(client_id, main(args)), daemon=True)
        thread.start()
        return thread

    running = threading.Thread(target=coordinator.run, daemon=True)
    running.start()
    try:
        first = device("dev0")
        wait_for(lambda: store.client("dev0") is not None)
        (workdir / "other").mkdir()
        code = main(["federated", "client", "--coordinator", f"127.0.0.1:{port}", "--data", "ok.npz",
                     "--id", "dev0", "--key", "other/dev0.key"])
        err = capsys.readouterr().err
        assert code == 1 and "Traceback" not in err
        lines = [line for line in err.splitlines() if line.startswith("edgerun: error:")]
        assert len(lines) == 1 and "refused client 'dev0' (ALREADY_EXISTS)" in lines[0] and "--id" in lines[0]
        assert list((workdir / "other").iterdir()) == []  # the unused new key is gone
        second = device("dev1")
        for thread in (first, second, running):
            thread.join(timeout=60)
    finally:
        server.stop(grace=1).wait()
    assert codes == {"dev0": 0, "dev1": 0}
    assert (workdir / "dev0.key").is_file() and (workdir / "dev1.key").is_file()
    assert (workdir / "dev0.key").read_bytes() != (workdir / "dev1.key").read_bytes()
    assert [r.status for r in store.history()] == ["aggregated"]

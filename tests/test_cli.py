"""The `edgerun` command line, in-process through edgerun.cli.main and once as a process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from edgerun import cli
from edgerun.runtime import cli as runtime_cli
from tests.onnx_models import make_mlp, ort_run

REPO = Path(__file__).resolve().parents[1]
MLP_PARAMS = 64 * 32 + 32 + 32 * 10 + 10


@pytest.fixture
def mlp_onnx(tmp_path: Path) -> Path:
    path = tmp_path / "mlp.onnx"
    onnx.save(make_mlp(), path)
    return path


@pytest.fixture
def mlp_erm(mlp_onnx: Path, capsys: pytest.CaptureFixture) -> Path:
    path = mlp_onnx.with_suffix(".erm")
    assert cli.main(["convert", str(mlp_onnx), "-o", str(path)]) == 0
    capsys.readouterr()
    return path


def _error_line(capsys: pytest.CaptureFixture) -> str:
    """The single stderr line of a failed command (asserting there is no traceback)."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgerun: error: "), err
    return lines[0]


# --- commands ------------------------------------------------------------------------------

def test_convert_prints_summary(mlp_onnx: Path, capsys: pytest.CaptureFixture) -> None:
    out_path = mlp_onnx.parent / "out.erm"
    assert cli.main(["convert", str(mlp_onnx), "-o", str(out_path)]) == 0
    out = capsys.readouterr().out
    assert out_path.is_file()
    assert "4 nodes" in out and f"{MLP_PARAMS:,} parameters" in out
    assert f"{out_path.stat().st_size:,} bytes" in out


def test_convert_default_output_path(mlp_onnx: Path) -> None:
    assert cli.main(["convert", str(mlp_onnx)]) == 0
    assert mlp_onnx.with_suffix(".erm").is_file()


def test_inspect(mlp_erm: Path, capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["inspect", str(mlp_erm)]) == 0
    out = capsys.readouterr().out
    assert "signature 'serving_default'" in out
    assert "input  x: float32 [?, 64]" in out
    assert "output y: float32 [?, 10]" in out
    assert "ops (3 nodes): Gemm x2, Softmax x1" in out  # the optimizer fused the Relu into its Gemm
    assert f"{MLP_PARAMS:,} parameters" in out
    assert "metadata producer: edgerun-tests" in out
    mlp_macs = 64 * 32 + 32 * 10 + 10  # Gemm (Relu fused), Gemm, Softmax at batch 1
    assert f"estimated work (multiply-adds per run, dynamic dims at 1): serving_default {mlp_macs:,}" in out


def test_run_matches_onnxruntime(mlp_erm: Path, capsys: pytest.CaptureFixture) -> None:
    x = np.random.default_rng(0).standard_normal((3, 64)).astype(np.float32)
    np.save(mlp_erm.parent / "x.npy", x)
    out_npz = mlp_erm.parent / "out.npz"
    code = cli.main(["run", str(mlp_erm), "--input", f"x={mlp_erm.parent / 'x.npy'}",
                     "-o", str(out_npz)])
    assert code == 0
    assert "y: float32 [3, 10]" in capsys.readouterr().out
    got = np.load(out_npz)["y"]
    np.testing.assert_allclose(got, ort_run(make_mlp(), {"x": x})["y"], rtol=1e-5, atol=1e-6)


def test_bench(mlp_erm: Path, capsys: pytest.CaptureFixture) -> None:
    args = ["bench", str(mlp_erm), "--runs", "5", "--warmup", "1", "--batch", "2"]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "x[2, 64]" in out and "5 runs" in out
    assert "p50" in out and "p99" in out and "mean" in out
    assert "peak activation memory:" in out
    assert f"estimated work: {2 * (64 * 32 + 32 * 10 + 10):,} multiply-adds per run" in out


def test_random_inputs_fill_dynamic_dims() -> None:
    from edgerun.runtime import TensorInfo

    infos = {"x": TensorInfo("x", np.dtype(np.float32), (-1, 3, -1)),
             "n": TensorInfo("n", np.dtype(np.int64), (2,))}
    arrays = runtime_cli.random_inputs(infos, batch=4)
    assert arrays["x"].shape == (4, 3, 1) and arrays["x"].dtype == np.float32
    assert arrays["n"].shape == (2,) and arrays["n"].dtype == np.int64


@pytest.mark.parametrize("specs, expected", [
    (["x=a.npy"], {"x": Path("a.npy")}),
    (["x=a.npy", "mask=dir/b=c.npy"], {"x": Path("a.npy"), "mask": Path("dir/b=c.npy")}),
    ([], {}),
])
def test_parse_input_specs(specs: list[str], expected: dict) -> None:
    assert runtime_cli.parse_input_specs(specs) == expected


# --- errors --------------------------------------------------------------------------------

@pytest.mark.parametrize("command", ["run", "bench"])
def test_unknown_profile_lists_the_known_ones(mlp_erm: Path, command: str, capsys: pytest.CaptureFixture) -> None:
    assert cli.main([command, str(mlp_erm), "--profile", "tpu"]) == 1
    assert "unknown device profile 'tpu'; known profiles: host, phone, rpi-zero2, rpi4" in _error_line(capsys)


@pytest.mark.parametrize("command", ["inspect", "run", "bench", "convert"])
def test_missing_file(tmp_path: Path, command: str, capsys: pytest.CaptureFixture) -> None:
    assert cli.main([command, str(tmp_path / "missing.erm")]) == 1
    assert "missing.erm" in _error_line(capsys)


@pytest.mark.parametrize("command", ["inspect", "run", "bench"])
def test_corrupt_model(tmp_path: Path, command: str, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "corrupt.erm"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    assert cli.main([command, str(path)]) == 1
    _error_line(capsys)


def test_convert_garbage_onnx(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "garbage.onnx"
    path.write_bytes(b"\x00\x01garbage")
    assert cli.main(["convert", str(path)]) == 1
    assert "cannot parse ONNX model" in _error_line(capsys)


@pytest.mark.parametrize("spec", ["x", "=a.npy", "x="])
def test_bad_input_spec(tmp_path: Path, spec: str, capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["run", str(tmp_path / "m.erm"), "--input", spec]) == 1
    assert f"bad --input {spec!r}" in _error_line(capsys)


def test_debug_shows_traceback(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["--debug", "inspect", str(tmp_path / "missing.erm")]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "edgerun: error: " in err


@pytest.mark.parametrize("argv", [["run"], ["nosuchcommand"], ["bench", "m.erm", "--runs", "x"]])
def test_usage_errors_exit_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2


def test_no_command_prints_help(capsys: pytest.CaptureFixture) -> None:
    assert cli.main([]) == 2
    assert "convert" in capsys.readouterr().out


def test_unimportable_plugin_fails_cleanly(monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setitem(cli.COMMANDS, "ghost", "no_such_module_for_edgerun")
    assert cli.main(["ghost", "anything"]) == 1
    assert "command 'ghost' is unavailable" in _error_line(capsys)


# --- as a process --------------------------------------------------------------------------

def _edgerun() -> list[str]:
    script = Path(sys.executable).parent / "edgerun"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "edgerun"]


def test_console_script(mlp_erm: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([*_edgerun(), "inspect", str(mlp_erm)], capture_output=True,
                          text=True, cwd=REPO, env=env)
    assert done.returncode == 0, done.stderr
    assert "signature 'serving_default'" in done.stdout
    missing = subprocess.run([sys.executable, "-m", "edgerun", "inspect", "missing.erm"],
                             capture_output=True, text=True, cwd=REPO, env=env)
    assert missing.returncode == 1
    assert missing.stderr.startswith("edgerun: error: ") and "Traceback" not in missing.stderr


# --- the mistakes of a first hour, each answered with one line --------------------------------

@pytest.fixture
def mlp_train(tmp_path: Path, capsys: pytest.CaptureFixture) -> Path:
    """A trainable MLP (x [?, 64] -> 10 classes) whose stored learning rate is 0.05."""
    from edgerun.converters.training import make_trainable
    from edgerun.runtime import save_model
    from tests.converters.training.models import mlp

    return save_model(make_trainable(mlp((64, 32, 10)), optimizer=("sgd", {"lr": 0.05})), tmp_path / "m.train.erm")


def test_inspect_shows_dtype_and_shape_of_every_output(mlp_train: Path, capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["inspect", str(mlp_train)]) == 0
    out = capsys.readouterr().out
    assert ": ? " not in out and "[...]" not in out  # no unknown dtype, no unknown rank
    assert "output loss: float32 []" in out and "output accuracy: float32 []" in out
    assert "output y: float32 [?, 10]" in out and "input  labels: int64 [?]" in out


def test_bench_train_feeds_the_models_learning_rate(mlp_train: Path, capsys: pytest.CaptureFixture) -> None:
    from edgerun.runtime import Interpreter

    inputs = runtime_cli.bench_inputs(Interpreter(mlp_train), "train", batch=4)
    assert inputs["learning_rate"] == np.float32(0.05) and inputs["learning_rate"].dtype == np.float32
    assert inputs["labels"].shape == (4,) and set(inputs["labels"].tolist()) <= {0, 1}
    assert cli.main(["bench", str(mlp_train), "-s", "train", "--runs", "3", "--warmup", "0"]) == 0
    assert "[train] x[1, 64], labels[1], learning_rate[]: 3 runs" in capsys.readouterr().out


@pytest.mark.parametrize("trainable", ["1", "last:1"])
def test_trainable_takes_k_or_last_k(mlp_onnx: Path, trainable: str, capsys: pytest.CaptureFixture) -> None:
    out_path = mlp_onnx.parent / "t.erm"
    assert cli.main(["make-trainable", str(mlp_onnx), "--trainable", trainable, "-o", str(out_path)]) == 0
    assert "2 trainable tensors (330 values)" in capsys.readouterr().out  # the last Gemm: 32 x 10 + 10


def test_trainable_last_needs_a_number(mlp_onnx: Path, capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["make-trainable", str(mlp_onnx), "--trainable", "last:two"]) == 1
    assert "--trainable last:K needs a whole number K, got 'two'" in _error_line(capsys)


def _commands_with_output(folder: Path, model: Path, train: Path) -> dict[str, list[str]]:
    np.savez(folder / "d.npz", x=np.zeros((4, 64), np.float32), y=np.zeros(4, np.int64))
    return {"convert": ["convert", str(model.with_suffix(".onnx"))],
            "make-trainable": ["make-trainable", str(model)],
            "train": ["train", str(train), "--data", str(folder / "d.npz")],
            "run": ["run", str(model)]}


@pytest.mark.parametrize("command", ["convert", "make-trainable", "train", "run"])
def test_output_that_is_a_directory(mlp_erm: Path, mlp_train: Path, command: str,
                                    capsys: pytest.CaptureFixture) -> None:
    folder = mlp_erm.parent / "somedir"
    folder.mkdir()
    argv = _commands_with_output(mlp_erm.parent, mlp_erm, mlp_train)[command]
    before = sorted(mlp_erm.parent.rglob("*"))
    assert cli.main([*argv, "-o", str(folder)]) == 1
    suffix = ".npz" if command == "run" else ".erm"
    assert f"{folder}: is a directory; give -o a file name, e.g. {folder / ('model' + suffix)}" in _error_line(capsys)
    assert sorted(mlp_erm.parent.rglob("*")) == before  # no temporary file left behind


@pytest.mark.parametrize("content, holds", [
    (b"hello world\n1 2 3\n", "holds text (starts 'hello world\\n1 2 3'), not an array"),
    (b"", "holds an empty file, not an array"),
    (None, "holds Python objects (needs pickle, never loaded)"),
])
def test_npy_that_is_not_an_array(mlp_erm: Path, content: bytes | None, holds: str,
                                  capsys: pytest.CaptureFixture) -> None:
    path = mlp_erm.parent / "x.npy"
    if content is None:
        np.save(path, np.array(["a", None], dtype=object), allow_pickle=True)
    else:
        path.write_bytes(content)
    assert cli.main(["run", str(mlp_erm), "--input", f"x={path}"]) == 1
    line = _error_line(capsys)
    assert f"{path}: {holds}; expected an array saved by numpy.save" in line and "pickled" not in line


def test_npz_that_holds_text(mlp_train: Path, capsys: pytest.CaptureFixture) -> None:
    data = mlp_train.parent / "data.npz"
    data.write_text("x,y\n1,2\n")
    assert cli.main(["train", str(mlp_train), "--data", str(data)]) == 1
    assert f"{data}: holds text (starts 'x,y\\n1,2'), not an .npz archive; expected an .npz" in _error_line(capsys)


def test_output_into_a_closed_pipe_ends_quietly(mlp_erm: Path) -> None:
    """`edgerun inspect m.erm | head -1`: the reader leaves early; no "Broken pipe" error, exit 0."""
    script = ("import os, sys\n"
              "from edgerun import cli\n"
              "read, write = os.pipe()\n"
              "os.close(read)\n"  # the reader is gone before the first write: every write fails
              "os.dup2(write, 1)\n"
              "sys.exit(cli.main(['inspect', sys.argv[1]]))\n")
    done = subprocess.run([sys.executable, "-c", script, str(mlp_erm)], capture_output=True, text=True, timeout=120,
                          cwd=REPO)
    assert done.returncode == 0 and done.stderr == "", (done.returncode, done.stderr)

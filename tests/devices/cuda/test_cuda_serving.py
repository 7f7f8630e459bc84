"""Serving on the cuda backend: a model's config.pbtxt instance_group kind (Triton's field) or
`edgerun serve --device` puts it on the GPU, dynamic batching included. Under numba's CUDA
simulator here (tests/conftest.py), against device="cpu" as the oracle."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as tg

from edgerun.converters import from_onnx
from edgerun.runtime import Interpreter
from edgerun.runtime.writer import save_model
from edgerun.serving.config import ConfigError, read_settings
from edgerun.serving.model import ServedModel
from tests.onnx_models import make_mlp
from tests.serving.conftest import OWN_CONNECTION, add_version

GPU = "instance_group [ { count: 2 kind: KIND_GPU } ]\n"
CPU = "instance_group [ { kind: KIND_CPU } ]\n"
BATCHING = "max_batch_size: 8\ndynamic_batching { max_queue_delay_microseconds: 20000 }\n"


@pytest.fixture(scope="module")
def mlp_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cuda_models") / "mlp.erm"
    save_model(from_onnx(make_mlp()), path)
    return path


def _settings(tmp_path: Path, config: str):
    folder = tmp_path / "m"
    folder.mkdir(exist_ok=True)
    (folder / "config.pbtxt").write_text(config)
    return read_settings(folder)


@pytest.mark.parametrize(("config", "device"), [
    ("", None), (GPU, "cuda"), (CPU, "host"), ("instance_group [ { kind: KIND_AUTO } ]", None),
    ("instance_group [ { kind: KIND_GPU }, { kind: KIND_AUTO count: 2 } ]", "cuda"),
])
def test_instance_group_kind_says_where_a_model_runs(tmp_path, config, device):
    assert _settings(tmp_path, config).device == device


@pytest.mark.parametrize("config", [
    "instance_group [ { kind: KIND_GPU }, { kind: KIND_CPU } ]", "instance_group [ { kind: KIND_MODEL } ]",
])
def test_mixed_or_model_kinds_are_refused(tmp_path, config):
    with pytest.raises(ConfigError, match="instance_group kind must be one of KIND_AUTO, KIND_CPU and KIND_GPU"):
        _settings(tmp_path, config)


def test_a_gpu_model_batches_on_the_gpu(tmp_path, mlp_file):
    model = ServedModel.load(_settings(tmp_path, GPU + BATCHING), 1, mlp_file)
    assert [it.backend for it in model.interpreters] == ["cuda", "cuda"]
    assert "device" in model.interpreters[0].placement().values()
    rows = [np.random.default_rng(i).standard_normal((1, 64)).astype(np.float32) for i in range(6)]

    async def requests():
        return await asyncio.gather(*(model.execute({"x": row}) for row in rows))

    answers = asyncio.run(requests())
    cpu = Interpreter(mlp_file, device="cpu")
    for row, (outputs, _) in zip(rows, answers, strict=True):
        np.testing.assert_allclose(outputs["y"], cpu.run({"x": row})["y"], rtol=1e-4, atol=1e-6)


def test_kind_cpu_overrides_the_servers_device(tmp_path, mlp_file):
    model = ServedModel.load(_settings(tmp_path, CPU), 1, mlp_file, device="cuda")
    assert model.interpreters[0].backend != "cuda"
    model = ServedModel.load(_settings(tmp_path, ""), 1, mlp_file, device="cuda")
    assert model.interpreters[0].backend == "cuda"


def test_a_server_with_device_cuda_answers_tritonclient(tmp_path, mlp_file, start_server):
    repo = tmp_path / "repo"
    add_version(repo, "mlp", 1, mlp_file, BATCHING)
    add_version(repo, "mlp_gpu", 1, mlp_file, GPU + BATCHING)
    server = start_server(repo, "--device", "cuda")
    client = tg.InferenceServerClient(server.grpc_url, channel_args=OWN_CONNECTION)
    config = client.get_model_config("mlp_gpu", as_json=True)["config"]
    assert config["instance_group"][0]["kind"] == "KIND_GPU"
    cpu = Interpreter(mlp_file, device="cpu")

    def infer(seed: int) -> None:
        x = np.random.default_rng(seed).standard_normal((2, 64)).astype(np.float32)
        for name in ("mlp", "mlp_gpu"):
            request = tg.InferInput("x", list(x.shape), "FP32")
            request.set_data_from_numpy(x)
            got = client.infer(name, [request]).as_numpy("y")
            np.testing.assert_allclose(got, cpu.run({"x": x})["y"], rtol=1e-4, atol=1e-6)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(infer, range(8)))
    client.close()


def test_an_unknown_device_is_one_line_at_start(tmp_path):
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "edgerun", "serve", "--model-repository", str(tmp_path),
                             "--device", "tpu"], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "edgerun: error: unknown device 'tpu': valid devices are 'auto', 'numba', 'cpu', 'cuda' "
        "(available now: 'auto', 'numba', 'cpu', 'cuda')"]

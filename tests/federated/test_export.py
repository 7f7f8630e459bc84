"""federated.export: the global model as a loadable .erm. Oracles: the arrays put in (save
returns them bit for bit) and a numpy forward pass of the MLP with those arrays."""

from __future__ import annotations

import numpy as np
import pytest

from edgerun.converters.training import make_trainable
from edgerun.federated.export import global_model, write_global_model
from edgerun.runtime import Interpreter, serialize
from edgerun.runtime.errors import InputError
from tests.converters.training.models import mlp

MODEL = serialize(make_trainable(mlp((5, 4, 3), seed=0), optimizer=("sgd", {"lr": 0.1, "momentum": 0.9})))
RNG = np.random.default_rng(7)
PARAMETERS = {"fc0.weight": RNG.standard_normal((4, 5)).astype(np.float32),
              "fc0.bias": RNG.standard_normal(4).astype(np.float32),
              "fc1.weight": RNG.standard_normal((3, 4)).astype(np.float32),
              "fc1.bias": RNG.standard_normal(3).astype(np.float32)}


def numpy_mlp(x: np.ndarray, p: dict[str, np.ndarray]) -> np.ndarray:
    h = np.maximum(x @ p["fc0.weight"].T + p["fc0.bias"], 0)
    return h @ p["fc1.weight"].T + p["fc1.bias"]


def test_the_exported_model_saves_and_infers_with_the_stored_parameters():
    it = Interpreter(global_model(MODEL, PARAMETERS))
    saved = it.run({}, "save")
    assert set(saved) == set(PARAMETERS)
    for name, want in PARAMETERS.items():
        np.testing.assert_array_equal(saved[name], want, err_msg=name)
    x = RNG.standard_normal((6, 5)).astype(np.float32)
    np.testing.assert_allclose(it.run({"x": x}, "infer")["y"], numpy_mlp(x, PARAMETERS), rtol=1e-5, atol=1e-6)
    assert {"train", "restore", "save_optimizer"} <= set(it.signatures)  # still trainable


def test_write_global_model_replaces_the_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "global.erm"
    target.write_bytes(b"old")
    assert write_global_model(MODEL, PARAMETERS, target) == target
    assert [p.name for p in tmp_path.iterdir()] == ["global.erm"]
    np.testing.assert_array_equal(Interpreter(target).run({}, "save")["fc1.bias"], PARAMETERS["fc1.bias"])


@pytest.mark.parametrize("change, message", [
    (lambda p: {k: v for k, v in p.items() if k != "fc0.bias"}, r"missing \['fc0.bias'\]"),
    (lambda p: {**p, "extra": np.zeros(2, np.float32)}, r"unexpected \['extra'\]"),
    (lambda p: {**p, "fc0.bias": np.zeros(5, np.float32)}, r"'fc0.bias': expected float32\[4\]"),
    (lambda p: {**p, "fc0.bias": np.zeros(4, np.float64)}, r"'fc0.bias': expected float32\[4\], got float64"),
], ids=["missing", "extra", "shape", "dtype"])
def test_parameters_that_do_not_fit_write_nothing(tmp_path, change, message):
    with pytest.raises(InputError, match=message):
        write_global_model(MODEL, change(PARAMETERS), tmp_path / "g.erm")
    assert list(tmp_path.iterdir()) == []


def test_a_directory_or_a_missing_folder_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="is a directory"):
        write_global_model(MODEL, PARAMETERS, tmp_path)
    with pytest.raises(InputError, match="does not exist"):
        write_global_model(MODEL, PARAMETERS, tmp_path / "no" / "g.erm")
    assert list(tmp_path.iterdir()) == []


def test_a_model_that_is_not_trainable_is_an_input_error():
    with pytest.raises(InputError, match="no 'save' signature"):
        global_model(serialize(mlp((5, 3))), PARAMETERS)

"""The cuda backend's Softmax, LogSoftmax, reductions and normalizations against the CPU
reference (devices/cuda/normalization.py), under numba's CUDA simulator: every claimed
attribute variant in float32 and float64, NaN propagation, and the cases the claims refuse
running on the host."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

import edgerun.devices.cuda.normalization  # noqa: F401 - registers the claims
from tests.devices.cuda.harness import expect_same_as_cpu
from tests.onnx_models import make_model

DTYPES = [np.float32, np.float64]
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NaN and inf inputs, on purpose
TOLERANCE = {np.float32: dict(rtol=1e-4, atol=1e-5), np.float64: dict(rtol=1e-10, atol=1e-10)}


def one_node_model(op: str, inputs: dict, attrs: dict | None = None, constants: dict | None = None,
                   outputs: tuple = ("y",), opset: int = 18):
    """A model of one node `op` named "node": `inputs` maps graph input names to arrays (their
    dtype and shape), `constants` names initializers; node inputs are inputs then constants,
    in order. An output is a name (of input 0's dtype) or (name, dtype)."""
    names = list(inputs) + list(constants or {})
    x_dtype = next(iter(inputs.values())).dtype
    typed = [(o, x_dtype) if isinstance(o, str) else o for o in outputs]
    node = helper.make_node(op, names, [n for n, _ in typed], name="node", **(attrs or {}))
    graph_inputs = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
                    for n, a in inputs.items()]
    graph_outputs = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(np.dtype(t)), None)
                     for n, t in typed]
    return make_model([node], graph_inputs, graph_outputs, constants, opset=opset)


def check(op: str, inputs: dict, dtype, attrs=None, constants=None, outputs=("y",), opset=18,
          device: bool = True) -> None:
    """The model of `one_node_model` gives the CPU's outputs on cuda, its node on the GPU
    (`device`) or on the host."""
    model = one_node_model(op, inputs, attrs, constants, outputs, opset)
    placement = expect_same_as_cpu(model, inputs, on_device=(op,) if device else (), **TOLERANCE[dtype])
    assert placement["node"] == ("device" if device else "host")


def data(shape, dtype, seed: int = 0, special: bool = False) -> np.ndarray:
    """Normal values; with `special`, a NaN, +inf and -inf in the first, second and last rows."""
    x = np.random.default_rng(seed).standard_normal(shape).astype(dtype)
    if special:
        flat = x.reshape(-1, shape[-1])
        flat[0, 1], flat[1, 0], flat[-1, -1] = np.nan, np.inf, -np.inf
    return x


# ----------------------------------------------------------------------------- softmax
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("axis", [-1, 1, 0])
def test_softmax_along_an_axis(op, axis, dtype):
    x = data((3, 5, 7), dtype) * 30  # large logits: only a max-subtracted softmax stays finite
    check(op, {"x": x}, dtype, {"axis": axis}, opset=13)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("axis", [1, 2, -1])
def test_softmax_over_the_flattened_tail_before_opset_13(op, axis, dtype):
    check(op, {"x": data((2, 3, 5), dtype, seed=1)}, dtype, {"axis": axis}, opset=11)


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
def test_softmax_spreads_nan_and_inf_as_the_reference(op):
    check(op, {"x": data((4, 9), np.float32, special=True)}, np.float32, {"axis": -1}, opset=13)


# ----------------------------------------------------------------------------- reductions
REDUCE_OPS = ["ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin"]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", REDUCE_OPS)
@pytest.mark.parametrize("axes,keepdims", [([-1], 1), ([1], 0), ([2, 3], 1), ([0, 1], 0), (None, 1)])
def test_reduce_over_adjacent_axes(op, axes, keepdims, dtype):
    constants = {"axes": np.array(axes, np.int64)} if axes is not None else {}
    check(op, {"x": data((2, 3, 5, 3), dtype)}, dtype, {"keepdims": keepdims}, constants)


@pytest.mark.parametrize("op", REDUCE_OPS)
def test_reduce_with_axes_as_an_attribute_and_nan(op):
    x = data((3, 7), np.float32, special=True)
    check(op, {"x": x}, np.float32, {"axes": [1], "keepdims": 0}, opset=13 if op != "ReduceSum" else 11)


def test_reduce_skips_axes_of_size_one_between_reduced_ones():
    x = data((3, 1, 5), np.float64)
    check("ReduceMean", {"x": x}, np.float64, {"keepdims": 0}, {"axes": np.array([0, 2], np.int64)})


def test_reduce_with_empty_axes_and_noop_copies():
    x = data((2, 5), np.float32)
    check("ReduceSum", {"x": x}, np.float32, {"noop_with_empty_axes": 1}, {"axes": np.zeros(0, np.int64)})


def test_reduce_over_axes_that_are_not_adjacent_runs_on_the_host():
    x = data((2, 3, 5), np.float32)
    check("ReduceMax", {"x": x}, np.float32, {}, {"axes": np.array([0, 2], np.int64)}, device=False)


# ----------------------------------------------------------------------------- batch norm
def _bn_params(channels: int, dtype, shape=None) -> dict:
    rng = np.random.default_rng(5)
    shape = shape or (channels,)
    return {"scale": rng.standard_normal(shape).astype(dtype), "B": rng.standard_normal(shape).astype(dtype),
            "mean": rng.standard_normal(shape).astype(dtype), "var": rng.uniform(0.5, 2, shape).astype(dtype)}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(3, 4, 3, 5), (5, 3), (2, 3, 7)])
def test_batch_norm_inference(shape, dtype):
    x = data(shape, dtype, special=True)
    check("BatchNormalization", {"x": x}, dtype, {"epsilon": 1e-3}, _bn_params(shape[1], dtype), opset=15)


def test_batch_norm_with_per_position_parameters_before_opset_9():
    x = data((2, 3, 2, 3), np.float32)
    check("BatchNormalization", {"x": x}, np.float32, {"spatial": 0}, _bn_params(3, np.float32, (3, 2, 3)),
          opset=7)


def test_batch_norm_in_training_mode_runs_on_the_host():
    x = data((4, 3, 2, 2), np.float32)
    check("BatchNormalization", {"x": x}, np.float32, {"training_mode": 1}, _bn_params(3, np.float32),
          outputs=("y", "running_mean", "running_var"), opset=15, device=False)


def test_batch_norm_with_run_time_parameters_runs_on_the_host():
    x = data((2, 3, 4), np.float32)
    check("BatchNormalization", {"x": x, **_bn_params(3, np.float32)}, np.float32, opset=15, device=False)


# ----------------------------------------------------------------------------- layer norm
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("axis", [-1, 1])
@pytest.mark.parametrize("stats", [False, True])
def test_layer_norm(axis, stats, dtype):
    x = data((2, 3, 5), dtype, special=True)
    tail = x.shape[axis:]
    rng = np.random.default_rng(2)
    constants = {"scale": rng.standard_normal(tail).astype(dtype), "B": rng.standard_normal(tail).astype(dtype)}
    outputs = ("y", "mean", "inv_std") if stats else ("y",)
    check("LayerNormalization", {"x": x}, dtype, {"axis": axis, "epsilon": 1e-3}, constants, outputs, opset=17)


def test_layer_norm_with_run_time_scale_and_no_bias_and_only_the_mean():
    x = data((4, 7), np.float64)
    scale = np.random.default_rng(3).standard_normal((1, 7))
    check("LayerNormalization", {"x": x, "scale": scale}, np.float64, {}, outputs=("y", "mean"), opset=17)


def test_layer_norm_broadcasts_a_constant_scale():
    x = data((2, 3, 5), np.float32)
    constants = {"scale": np.float32([0.5, 1, 2, 3, 4]), "B": np.float32([1.0])}
    check("LayerNormalization", {"x": x}, np.float32, {"axis": 1}, constants, opset=17)


def test_layer_norm_with_a_run_time_scale_that_broadcasts_runs_on_the_host():
    x = data((2, 3, 5), np.float32)
    scale = np.random.default_rng(4).standard_normal(5).astype(np.float32)
    check("LayerNormalization", {"x": x, "scale": scale}, np.float32, {"axis": 1}, opset=17, device=False)


# ----------------------------------------------------------------------------- instance norm
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (3, 2, 7)])
def test_instance_norm(shape, dtype):
    x = data(shape, dtype, special=True)
    rng = np.random.default_rng(6)
    scale, bias = rng.standard_normal(shape[1]).astype(dtype), rng.standard_normal(shape[1]).astype(dtype)
    check("InstanceNormalization", {"x": x, "scale": scale}, dtype, {"epsilon": 1e-3}, {"B": bias})


# ----------------------------------------------------------------------------- long lines: a block each
@pytest.mark.parametrize("op,dtype", [("Softmax", np.float32), ("LogSoftmax", np.float64)])
def test_softmax_of_long_rows(op, dtype):
    check(op, {"x": data((2, 131), dtype, special=True) * 10}, dtype, {"axis": -1}, opset=13)


@pytest.mark.parametrize("op,dtype", [("ReduceMax", np.float32), ("ReduceMean", np.float64)])
def test_reduce_of_long_rows(op, dtype):
    check(op, {"x": data((2, 130), dtype, special=op == "ReduceMax")}, dtype, {}, {"axes": np.int64([1])})


@pytest.mark.parametrize("dtype", DTYPES)
def test_layer_norm_of_long_rows(dtype):
    x = data((2, 2, 65), dtype)
    scale = np.random.default_rng(7).standard_normal((2, 65)).astype(dtype)
    check("LayerNormalization", {"x": x}, dtype, {"axis": 1}, {"scale": scale}, ("y", "mean", "inv_std"), opset=17)


def test_instance_norm_of_large_planes():
    x = data((1, 2, 12, 11), np.float32)
    check("InstanceNormalization", {"x": x, "scale": np.float32([0.5, 2])}, np.float32, {}, {"B": np.float32([1, -1])})

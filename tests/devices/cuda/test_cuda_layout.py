"""The cuda backend's data-movement kernels (devices/cuda/layout.py) against the CPU
reference, one ONNX node per model, under numba's CUDA simulator (tests/conftest.py): Concat
on every axis, Split, Transpose (channel shuffle included), Slice with steps and negative
indices, Pad in every mode, Expand, Tile and Gather, float32 and float64 and other dtypes.
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

import edgerun.devices.cuda.layout  # noqa: F401  (registers the claims)
from edgerun.devices.cuda.layout import Remap
from edgerun.runtime import Interpreter
from tests.devices.cuda.harness import as_graph, expect_same_as_cpu
from tests.onnx_models import make_model

ONNX_TYPE = {np.float32: TensorProto.FLOAT, np.float64: TensorProto.DOUBLE, np.int32: TensorProto.INT32,
             np.int64: TensorProto.INT64, np.float16: TensorProto.FLOAT16, np.bool_: TensorProto.BOOL,
             np.int8: TensorProto.INT8, np.uint8: TensorProto.UINT8}
FLOATS = [np.float32, np.float64]


def _model(op: str, inputs: dict[str, np.ndarray], consts: dict[str, np.ndarray] | None = None,
           order: list[str] | None = None, opset: int = 17, outputs: int = 1, **attrs) -> bytes:
    """One node `op` named "n" over graph inputs `inputs` and initializers `consts`, wired in
    `order` ("" for an omitted input; default: the inputs, then the constants)."""
    consts = consts or {}
    order = order if order is not None else [*inputs, *consts]
    infos = [helper.make_tensor_value_info(name, ONNX_TYPE[a.dtype.type], a.shape) for name, a in inputs.items()]
    dtype = ONNX_TYPE[next(iter(inputs.values())).dtype.type]
    names = [f"y{i}" for i in range(outputs)]
    node = helper.make_node(op, order, names, name="n", **attrs)
    outs = [helper.make_tensor_value_info(name, dtype, None) for name in names]
    return make_model([node], infos, outs, consts, opset=opset).SerializeToString()


def _check(op: str, inputs: dict[str, np.ndarray], consts=None, device: bool | None = True, **kwargs) -> None:
    """`op` on the GPU gives exactly the CPU's outputs (these kernels only move elements), and
    ran there (on the host when not `device`; either when None: the program keeps a step with
    an empty output on the host)."""
    placement = expect_same_as_cpu(_model(op, inputs, consts, **kwargs), inputs, rtol=0, atol=0,
                                   on_device=(op,) if device else ())
    if device is not None:
        assert placement["n"] == ("device" if device else "host")


def _data(shape, dtype=np.float32, seed=0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal(shape) * 10
    if x.size > 2 and np.dtype(dtype).kind == "f":
        x.reshape(-1)[:2] = [np.nan, -np.inf]
    return x.astype(dtype)


def _ints(*values: int) -> np.ndarray:
    return np.array(values, np.int64)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("axis", [0, 1, 2, -1, -2, -3])
def test_concat_on_every_axis(axis, dtype):
    shapes = [[2, 3, 5], [2, 3, 5], [2, 3, 5]]
    for i, extra in enumerate((1, 4, 2)):
        shapes[i][axis] = extra
    inputs = {f"x{i}": _data(s, dtype, seed=i) for i, s in enumerate(shapes)}
    _check("Concat", inputs, axis=axis)


@pytest.mark.parametrize("dtype", [np.int64, np.float16, np.bool_, np.int8])
def test_concat_moves_any_dtype_with_a_constant_part(dtype):
    x = _data((3, 4), dtype)
    _check("Concat", {"x": x}, {"c": _data((3, 2), dtype, seed=1)}, axis=1)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize(("opset", "attrs", "consts", "outputs"), [
    (11, {"axis": 1, "split": [1, 4, 2]}, {}, 3),
    (13, {"axis": -1}, {"split": _ints(2, 1, 2)}, 3),
    (13, {"axis": 0}, {}, 2),
    (18, {"axis": 1, "num_outputs": 3}, {}, 3),
])
def test_split(opset, attrs, consts, outputs, dtype):
    _check("Split", {"x": _data((4, 7, 5), dtype)}, consts, opset=opset, outputs=outputs, **attrs)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize(("shape", "perm"), [
    ((7, 5), None), ((3, 4, 5), [1, 0, 2]), ((2, 3, 4, 5), [0, 2, 3, 1]), ((2, 3, 4, 5), [0, 3, 1, 2]),
    ((2, 3, 4, 5), [3, 2, 1, 0]),
    ((2, 2, 3, 4, 5), [0, 2, 1, 3, 4]),  # channel shuffle: (N, g, C/g, H, W) -> (N, C/g, g, H, W)
    ((2, 1, 3, 2, 2, 3), [5, 0, 3, 1, 4, 2]),
])
def test_transpose(shape, perm, dtype):
    attrs = {} if perm is None else {"perm": perm}
    _check("Transpose", {"x": _data(shape, dtype)}, **attrs)


def test_transpose_moves_other_dtypes():
    _check("Transpose", {"x": _data((3, 4, 5), np.int32)}, perm=[2, 0, 1])
    _check("Transpose", {"x": _data((3, 4, 5), np.uint8)}, perm=[2, 0, 1])


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize(("starts", "ends", "axes", "steps"), [
    ((1,), (4,), (1,), None),
    ((0, 1), (5, -1), None, (2, 1)),
    ((-1,), (-100,), (2,), (-1,)),  # the whole axis reversed
    ((-2, 10), (0, -10), (0, -1), (-1, -2)),
    ((1, 0, 4), (3, 2, 0), (-3, 1, 2), (1, 1, -3)),
])
def test_slice(starts, ends, axes, steps, dtype):
    consts = {"starts": _ints(*starts), "ends": _ints(*ends)}
    order = ["x", "starts", "ends"]
    if axes is not None:
        consts["axes"] = _ints(*axes)
        order.append("axes")
    if steps is not None:
        consts["steps"] = _ints(*steps)
        order += [""] * (axes is None) + ["steps"]
    _check("Slice", {"x": _data((4, 6, 7), dtype)}, consts, order=order, opset=13)


def test_empty_outputs_are_still_correct():
    x = _data((4, 6, 7))
    _check("Slice", {"x": x}, {"starts": _ints(100), "ends": _ints(200), "axes": _ints(1)}, device=None, opset=13)
    _check("Tile", {"x": x}, {"repeats": _ints(0, 1, 2)}, device=None)
    _check("Split", {"x": x}, {"split": _ints(2, 0, 5)}, device=None, opset=13, outputs=3, axis=-1)


def test_slice_attributes_of_opset_1():
    _check("Slice", {"x": _data((4, 6, 7))}, opset=1, starts=[1, -3], ends=[3, 100], axes=[0, 2])


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("mode", ["constant", "reflect", "edge", "wrap"])
@pytest.mark.parametrize("pads", [(0, 1, 2, 0, 2, 1), (1, 0, 0, 2, 3, 4), (0, -1, 1, 1, 2, -2)])
def test_pad_modes(mode, pads, dtype):
    x = _data((2, 4, 5), dtype)
    consts = {"pads": _ints(*pads)}
    if mode == "constant":
        consts["value"] = np.array(1.5, dtype)
    _check("Pad", {"x": x}, consts, opset=19, mode=mode)


@pytest.mark.parametrize("dtype", FLOATS)
def test_pad_value_known_only_at_run_time_and_axes(dtype):
    x = _data((2, 3, 4), dtype)
    value = np.array(-7.0, dtype)
    _check("Pad", {"x": x, "v": value}, {"pads": _ints(1, 2, 0, 0, 3, 1)}, order=["x", "pads", "v"], opset=13)
    _check("Pad", {"x": x}, {"pads": _ints(1, 2, 2, 0), "axes": _ints(-1, 0)},
           order=["x", "pads", "", "axes"], opset=18)


def test_pad_attributes_of_opset_2_and_default_value():
    x = _data((3, 4))
    _check("Pad", {"x": x}, opset=2, pads=[1, 0, 2, 3], value=2.5)
    _check("Pad", {"x": _data((3, 4), np.int64)}, {"pads": _ints(0, 1, 1, 0)}, opset=13)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize(("shape", "target"), [((3, 1), (2, 3, 4)), ((1, 4, 1), (3, 1, 5)), ((5,), (1,)),
                                               ((2, 3), (2, 3))])
def test_expand(shape, target, dtype):
    _check("Expand", {"x": _data(shape, dtype)}, {"shape": _ints(*target)})


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("repeats", [(1, 1, 1), (2, 1, 3), (1, 3, 1), (2, 2, 2)])
def test_tile(repeats, dtype):
    _check("Tile", {"x": _data((2, 3, 5), dtype)}, {"repeats": _ints(*repeats)})


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize(("axis", "indices"), [
    (0, np.array([3, 0, -1, 2], np.int64)),
    (0, np.array([[1, -4], [0, 3]], np.int64)),
    (1, np.array([4, -5, 2], np.int64)),
    (-1, np.array(1, np.int64)),
])
def test_gather_constant_indices(axis, indices, dtype):
    _check("Gather", {"x": _data((4, 5, 3), dtype)}, {"i": indices}, axis=axis)


@pytest.mark.parametrize("index_dtype", [np.int64, np.int32, np.uint8])
def test_gather_indices_known_only_at_run_time_stay_on_the_host(index_dtype):
    """An index out of range must fail the run with the host's error: no kernel can raise one."""
    x = _data((6, 7))
    _check("Gather", {"x": x, "i": np.array([[5, 1, 0], [2, 2, 4]], index_dtype)}, device=False)


def test_gather_run_time_index_out_of_range_is_an_error_on_cuda():
    from edgerun.runtime.errors import EdgerunError

    model = _model("Gather", {"x": _data((6, 7)), "i": np.array([1], np.int64)}, {})
    it = Interpreter(as_graph(model), device="cuda")
    with pytest.raises(EdgerunError, match="Gather"):
        it.run({"x": _data((6, 7)), "i": np.array([9], np.int64)})


def test_remap_collapses_contiguous_dimensions():
    remap = Remap([2, 4, 5, 3], [60, 5, 1, 20])  # (2, 3, 4, 5) transposed (0, 2, 3, 1)
    assert remap.size == 120
    assert remap.shape.copy_to_host().tolist() == [2, 20, 3]  # H and W move together
    assert remap.strides.copy_to_host().tolist() == [60, 1, 20]
    whole = Remap([2, 3, 4], [12, 4, 1])
    assert whole.shape.copy_to_host().tolist() == [24]

"""The shape / data-movement TFLite builtins (converters.tflite.ops: reshape, combine, broadcast, slicing,
gather, search) against LiteRT.

Every case builds a one-operator model, runs it in LiteRT (the oracle) and in edgerun, and
asserts the same dtype, shape and values (these ops copy elements, so exactly). int8 cases
carry quantization parameters, which must pass through unchanged.
"""

from __future__ import annotations

import numpy as np
import pytest

import edgerun.converters.tflite.ops.broadcast  # noqa: F401
import edgerun.converters.tflite.ops.combine  # noqa: F401
import edgerun.converters.tflite.ops.gather  # noqa: F401
import edgerun.converters.tflite.ops.reshape  # noqa: F401
import edgerun.converters.tflite.ops.search  # noqa: F401
import edgerun.converters.tflite.ops.slicing  # noqa: F401
from edgerun import Interpreter
from edgerun.converters.tflite import from_tflite
from edgerun.runtime.errors import ConversionError, ModelError
from tests.converters.tflite.builder import TFLiteBuilder, litert_run

TYPES = {np.dtype(np.float32): "FLOAT32", np.dtype(np.int32): "INT32", np.dtype(np.int64): "INT64",
         np.dtype(np.int8): "INT8", np.dtype(np.bool_): "BOOL", np.dtype(np.int16): "INT16",
         np.dtype(np.uint8): "UINT8"}
QUANT = {"scale": 0.5, "zero_point": 3}
VERSIONS = {"BROADCAST_TO": 2}   # the operator versions LiteRT wants where 1 is not registered
RNG = np.random.default_rng(7)


class In:
    """A run-time model input: its value, and the shape signature (-1: dynamic) to declare."""

    def __init__(self, value: np.ndarray, signature: tuple[int, ...] | None = None) -> None:
        self.value = np.asarray(value)
        self.signature = signature


def data(shape: tuple[int, ...], dtype: str = "float32") -> np.ndarray:
    if dtype == "float32":
        return RNG.standard_normal(shape).astype(np.float32)
    if dtype == "bool":
        return RNG.random(shape) < 0.5
    return RNG.integers(-100, 100, shape).astype(dtype)


def build(opcode: str, inputs: list, outputs: list, options_type: str | None = None, **options) -> bytes:
    """A model of one operator. `inputs`: In (a graph input), an array (a constant) or -1;
    `outputs`: (type, rank) pairs (LiteRT sizes outputs itself; int8 ones get QUANT)."""
    b = TFLiteBuilder()
    indices = []
    for i, x in enumerate(inputs):
        if isinstance(x, In):
            kind = TYPES[x.value.dtype]
            quant = QUANT if kind == "INT8" else None
            signature = x.signature
            shape = x.value.shape if signature is None else tuple(max(d, 1) for d in signature)
            indices.append(b.input(f"in{i}", shape, kind, quant=quant, signature=signature))
        elif isinstance(x, int) and x == -1:
            indices.append(-1)
        else:
            array = np.asarray(x)
            kind = TYPES[array.dtype]
            indices.append(b.constant(f"c{i}", array, kind, quant=QUANT if kind == "INT8" else None))
    outs = [b.tensor(f"out{i}", (1,) * rank, kind, quant=QUANT if kind == "INT8" else None,
                     signature=(-1,) * rank) for i, (kind, rank) in enumerate(outputs)]
    b.op(opcode, indices, outs, options_type, version=VERSIONS.get(opcode, 1), **options)
    for o in outs:
        b.output(o)
    return b.build()


def ours(model: bytes, values: list[np.ndarray]) -> list[np.ndarray]:
    graph = from_tflite(model)
    results = Interpreter(graph).run({v.name: x for v, x in zip(graph.inputs, values, strict=True)})
    return [results[v.name] for v in graph.outputs]


def check(opcode: str, inputs: list, outputs: list, options_type: str | None = None, **options) -> list:
    """Assert edgerun gives LiteRT's outputs exactly (dtype, shape, values); returns them."""
    model = build(opcode, inputs, outputs, options_type, **options)
    values = [x.value for x in inputs if isinstance(x, In)]
    expected = litert_run(model, values)
    got = ours(model, values)
    for e, g in zip(expected, got, strict=True):
        assert g.dtype == e.dtype, (g.dtype, e.dtype)
        assert g.shape == e.shape, (g.shape, e.shape)
        np.testing.assert_array_equal(g, e)
    graph = from_tflite(model)
    for value, (kind, _) in zip(graph.outputs, outputs, strict=True):
        if kind == "INT8":   # quantization parameters pass through
            assert value.quantization is not None
            assert value.quantization.scale.tolist() == [QUANT["scale"]]
            assert value.quantization.zero_point.tolist() == [QUANT["zero_point"]]
    return got


def refused(opcode: str, inputs: list, outputs: list, options_type: str | None = None, error=ConversionError,
            **options) -> str:
    with pytest.raises(error) as info:
        from_tflite(build(opcode, inputs, outputs, options_type, **options))
    return str(info.value)


def i32(*values) -> np.ndarray:
    return np.asarray(values, np.int32)


DTYPES = ["float32", "int32", "int8"]


def kind(dtype: str) -> str:
    return TYPES[np.dtype(dtype)]


# --- RESHAPE, SQUEEZE, EXPAND_DIMS, SHAPE, RANK, TRANSPOSE ------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, new", [((2, 3, 4), (4, -1)), ((2, 3, 4), (24,)), ((6,), (1, 2, 1, 3)),
                                        ((0, 4), (0, 2, 2)), ((1,), ())])
def test_reshape_shape_input(dtype, shape, new):
    got = check("RESHAPE", [In(data(shape, dtype)), i32(*new)], [(kind(dtype), len(new))])
    assert got[0].shape == tuple(d if d >= 0 else 24 // 4 for d in new)


@pytest.mark.parametrize("dtype", DTYPES)
def test_reshape_from_options_and_runtime_shape(dtype):
    x = data((2, 6), dtype)
    check("RESHAPE", [In(x)], [(kind(dtype), 3)], "ReshapeOptions", new_shape=[3, 2, 2])
    check("RESHAPE", [In(x), In(i32(4, 3))], [(kind(dtype), 2)])
    check("RESHAPE", [In(np.ones(1, np.dtype(dtype)))], [(kind(dtype), 0)], "ReshapeOptions", new_shape=[0])


def test_reshape_dynamic_batch():
    x = data((5, 3, 4))
    got = check("RESHAPE", [In(x, (-1, 3, 4)), i32(-1, 12)], [("FLOAT32", 2)])
    assert got[0].shape == (5, 12)


@pytest.mark.parametrize("new, message", [((-1, -1), "one -1 at most"), ((5, 5), "cannot reshape"),
                                          ((0, -1), "no -1 beside a 0")])
def test_reshape_bad_shape(new, message):
    assert message in refused("RESHAPE", [In(data((2, 12))), i32(*new)], [("FLOAT32", 2)])


def test_reshape_without_shape():
    assert "neither a 1-D int shape input nor ReshapeOptions.new_shape" in refused(
        "RESHAPE", [In(data((2, 3)))], [("FLOAT32", 1)])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("dims", [[], [1], [-1], [0, 3], [-4, 1]])
def test_squeeze(dtype, dims):
    check("SQUEEZE", [In(data((1, 1, 3, 1), dtype))], [(kind(dtype), 1)], "SqueezeOptions", squeeze_dims=dims)


def test_squeeze_without_options_and_dynamic():
    check("SQUEEZE", [In(data((1, 3, 1)))], [("FLOAT32", 1)])
    got = check("SQUEEZE", [In(data((4, 1, 3)), (-1, 1, 3))], [("FLOAT32", 2)], "SqueezeOptions", squeeze_dims=[1])
    assert got[0].shape == (4, 3)


@pytest.mark.parametrize("dims, message", [([1], "cannot squeeze dimension 1 of size 3"),
                                           ([4], "squeeze dimension 4 is out of range for rank 3")])
def test_squeeze_bad(dims, message):
    assert message in refused("SQUEEZE", [In(data((1, 3, 1)))], [("FLOAT32", 2)], "SqueezeOptions", squeeze_dims=dims)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("axis", [0, 1, 3, -1, -4])
def test_expand_dims(dtype, axis):
    x = data((2, 3, 4), dtype)
    check("EXPAND_DIMS", [In(x), i32(axis)], [(kind(dtype), 4)])
    check("EXPAND_DIMS", [In(x), In(i32(axis))], [(kind(dtype), 4)])
    check("EXPAND_DIMS", [In(x), np.asarray([axis], np.int64)], [(kind(dtype), 4)])


def test_expand_dims_bad_axis():
    assert "axis 4 is out of range for rank 4" in refused("EXPAND_DIMS", [In(data((2, 3, 4))), i32(4)],
                                                          [("FLOAT32", 4)])
    assert "the axis must hold one integer, got int32 of shape [2]" in refused(
        "EXPAND_DIMS", [In(data((2, 3))), i32(1, 2)], [("FLOAT32", 3)])


@pytest.mark.parametrize("dtype", ["float32", "int8", "bool"])
@pytest.mark.parametrize("out", ["INT32", "INT64"])
def test_shape(dtype, out):
    got = check("SHAPE", [In(data((5, 2, 3), dtype), (-1, 2, 3))], [(out, 1)], "ShapeOptions",
                out_type=2 if out == "INT32" else 4)
    assert got[0].tolist() == [5, 2, 3]


def test_rank():
    got = check("RANK", [In(data((5, 2, 3)), (-1, 2, 3))], [("INT32", 0)])
    assert got[0] == 3


@pytest.mark.parametrize("dtype", DTYPES + ["bool"])
@pytest.mark.parametrize("perm", [(1, 0, 2), (2, 0, 1), (0, 1, 2), (2, 1, 0)])
def test_transpose(dtype, perm):
    check("TRANSPOSE", [In(data((2, 3, 4), dtype)), i32(*perm)], [(kind(dtype), 3)])


def test_transpose_dynamic():
    check("TRANSPOSE", [In(data((3, 2, 4)), (-1, 2, -1)), i32(2, 0, 1)], [("FLOAT32", 3)])


def test_transpose_bad():
    assert "perm [0, 0, 1] is not a permutation of the 3 dimensions" in refused(
        "TRANSPOSE", [In(data((2, 3, 4))), i32(0, 0, 1)], [("FLOAT32", 3)])
    assert "the permutation must be a constant tensor" in refused(
        "TRANSPOSE", [In(data((2, 3))), In(i32(1, 0))], [("FLOAT32", 2)])


# --- CONCATENATION, PACK, UNPACK, SPLIT, SPLIT_V ---------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "int32"])
@pytest.mark.parametrize("axis", [0, 1, 2, -1, -3])
def test_concatenation(dtype, axis):
    shapes = [[2, 3, 4], [2, 3, 4], [2, 3, 4]]
    for k, shape in enumerate(shapes):
        shape[axis] = k + 1
    check("CONCATENATION", [In(data(tuple(s), dtype)) for s in shapes], [(kind(dtype), 3)],
          "ConcatenationOptions", axis=axis)


def test_concatenation_with_a_constant():
    check("CONCATENATION", [In(data((2, 3))), data((2, 2)), In(data((2, 1)))], [("FLOAT32", 2)],
          "ConcatenationOptions", axis=1)


@pytest.mark.parametrize("activation, low, high", [(1, 0, np.inf), (2, -1, 1), (3, 0, 6)])
def test_concatenation_fused_activation(activation, low, high):
    # LiteRT's own kernel refuses a fused activation here and its XNNPACK delegate ignores it:
    # the closed form (the schema's meaning) is the reference.
    x, c = data((2, 3)) * 4, data((2, 2)) * 4
    model = build("CONCATENATION", [In(x), c], [("FLOAT32", 2)], "ConcatenationOptions", axis=1,
                  fused_activation_function=activation)
    np.testing.assert_array_equal(ours(model, [x])[0], np.clip(np.concatenate([x, c], axis=1), low, high))


def test_concatenation_dynamic_and_bad_axis():
    got = check("CONCATENATION", [In(data((3, 2)), (-1, 2)), In(data((3, 5)), (-1, 5))], [("FLOAT32", 2)],
                "ConcatenationOptions", axis=-1)
    assert got[0].shape == (3, 7)
    assert "axis 2 is out of range for rank 2" in refused("CONCATENATION", [In(data((2, 2))), In(data((2, 2)))],
                                                          [("FLOAT32", 2)], "ConcatenationOptions", axis=2)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("count, axis", [(1, 0), (2, 0), (3, 1), (2, 2), (3, -1), (2, -3)])
def test_pack(dtype, count, axis):
    check("PACK", [In(data((2, 3), dtype)) for _ in range(count)], [(kind(dtype), 3)], "PackOptions",
          values_count=count, axis=axis)


def test_pack_bad_count():
    assert "values_count 3 does not match its 2 inputs" in refused(
        "PACK", [In(data((2,))), In(data((2,)))], [("FLOAT32", 2)], "PackOptions", values_count=3)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_unpack(dtype, axis):
    x = data((2, 3, 2), dtype)
    num = x.shape[axis]
    check("UNPACK", [In(x)], [(kind(dtype), 2)] * num, "UnpackOptions", num=num, axis=axis)


def test_unpack_one_and_dynamic():
    check("UNPACK", [In(data((1, 4)))], [("FLOAT32", 1)], "UnpackOptions", num=1, axis=0)
    check("UNPACK", [In(data((5, 2)), (-1, 2))], [("FLOAT32", 1)] * 2, "UnpackOptions", num=2, axis=1)
    assert "num 3 must equal the 3 outputs and dimension 1 (2)" in refused(
        "UNPACK", [In(data((5, 2)))], [("FLOAT32", 1)] * 3, "UnpackOptions", num=3, axis=1)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("count, axis", [(1, 0), (2, 0), (3, 1), (2, -1)])
def test_split(dtype, count, axis):
    check("SPLIT", [i32(axis), In(data((4, 6, 2), dtype))], [(kind(dtype), 3)] * count, "SplitOptions",
          num_splits=count)


def test_split_dynamic_dimension():
    got = check("SPLIT", [i32(0), In(data((6, 2)), (-1, 2))], [("FLOAT32", 2)] * 3, "SplitOptions", num_splits=3)
    assert [g.shape for g in got] == [(2, 2)] * 3


def test_split_bad():
    assert "cannot split dimension 1 of size 5 into 2 equal parts" in refused(
        "SPLIT", [i32(1), In(data((2, 5)))], [("FLOAT32", 2)] * 2, "SplitOptions", num_splits=2)
    assert "the axis must be a constant tensor" in refused(
        "SPLIT", [In(i32(1)), In(data((2, 4)))], [("FLOAT32", 2)] * 2, "SplitOptions", num_splits=2)
    assert "num_splits 3 does not match its 2 outputs" in refused(
        "SPLIT", [i32(1), In(data((2, 6)))], [("FLOAT32", 2)] * 2, "SplitOptions", num_splits=3)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sizes, axis", [((1, 2, 3), 1), ((2, -1, 1), -2), ((-1,), 0), ((0, 4), 0)])
def test_split_v(dtype, sizes, axis):
    check("SPLIT_V", [In(data((4, 6), dtype)), i32(*sizes), i32(axis)], [(kind(dtype), 2)] * len(sizes),
          "SplitVOptions", num_splits=len(sizes))


def test_split_v_run_time_sizes_and_dynamic():
    check("SPLIT_V", [In(data((7, 3)), (-1, 3)), i32(2, -1, 1), i32(0)], [("FLOAT32", 2)] * 3, "SplitVOptions",
          num_splits=3)
    check("SPLIT_V", [In(data((7, 3)), (-1, 3)), In(i32(2, -1, 1)), i32(0)], [("FLOAT32", 2)] * 3,
          "SplitVOptions", num_splits=3)
    check("SPLIT_V", [In(data((7, 3))), In(i32(1, 2)), i32(1)], [("FLOAT32", 2)] * 2, "SplitVOptions", num_splits=2)


@pytest.mark.parametrize("sizes, message", [((-1, -1), "may hold one -1"), ((2, 3), "do not fit dimension 0"),
                                            ((5, -1), "do not fit dimension 0")])
def test_split_v_bad(sizes, message):
    assert message in refused("SPLIT_V", [In(data((4, 2))), i32(*sizes), i32(0)], [("FLOAT32", 2)] * 2,
                              "SplitVOptions", num_splits=2)


# --- SLICE, STRIDED_SLICE, REVERSE_V2 -------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("begin, size", [((0, 1, 0), (2, 2, 4)), ((1, 0, 2), (-1, -1, -1)), ((0, 2, 3), (1, 1, 1)),
                                         ((1, 2, 0), (1, 1, 2))])
def test_slice(dtype, begin, size):
    x = data((2, 3, 4), dtype)
    check("SLICE", [In(x), i32(*begin), i32(*size)], [(kind(dtype), 3)])
    check("SLICE", [In(x), In(i32(*begin)), In(i32(*size))], [(kind(dtype), 3)])


def test_slice_empty():
    # (LiteRT's Python API cannot read an empty dynamic output back: numpy is the reference)
    x = data((2, 3, 4))
    got = ours(build("SLICE", [In(x), In(i32(1, 3, 0)), In(i32(1, 0, 2))], [("FLOAT32", 3)]), [x, i32(1, 3, 0),
                                                                                            i32(1, 0, 2)])
    assert got[0].shape == (1, 0, 2)


def test_slice_dynamic_and_int64():
    got = check("SLICE", [In(data((5, 4)), (-1, 4)), np.asarray([1, 1], np.int64), np.asarray([-1, 2], np.int64)],
                [("FLOAT32", 2)])
    assert got[0].shape == (4, 2)


@pytest.mark.parametrize("begin, size", [((0, 3), (1, 2)), ((-1, 0), (1, 1)), ((0, 0), (1, -2))])
def test_slice_bad(begin, size):
    assert "do not fit the input shape [2, 4]" in refused("SLICE", [In(data((2, 4))), i32(*begin), i32(*size)],
                                                          [("FLOAT32", 2)])


# (begin, end, strides, options) on a (4, 5, 6) input, the numpy spelling beside each
STRIDED = {
    "basic": ((1, 0, 2), (3, 5, 6), (1, 2, 2), {}),                          # x[1:3, 0:5:2, 2:6:2]
    "negative_indices": ((-3, -5, -1), (-1, 5, -7), (1, 1, -1), {}),         # x[-3:-1, -5:5, -1:-7:-1]
    "negative_strides": ((3, 4, 5), (0, 0, 0), (-1, -2, -3), {}),            # x[3:0:-1, 4:0:-2, 5:0:-3]
    "reverse_all": ((0, 0, 0), (0, 0, 0), (-1, -1, -1), {"begin_mask": 7, "end_mask": 7}),   # x[::-1, ::-1, ::-1]
    "clamped": ((-10, 2, 9), (10, 100, -10), (1, 1, -1), {}),                # out-of-range bounds clamp
    "backward_from_before_start": ((-9, 0, 0), (0, 5, 6), (-1, 1, 1), {"end_mask": 1}),  # empty
    "masks": ((2, 1, 3), (3, 4, 1), (1, 1, 1), {"begin_mask": 5, "end_mask": 2}),  # x[:3, 1:, 3:1] -> empty last
    "shrink": ((1, 0, -1), (2, 5, 0), (1, 1, 1), {"shrink_axis_mask": 5}),   # x[1, 0:5, -1]
    "shrink_all": ((3, 4, 0), (0, 0, 0), (1, 1, 1), {"shrink_axis_mask": 7}),  # x[3, 4, 0]
    "shrink_with_begin_mask": ((3, 1, 0), (4, 2, 6), (1, 1, 1), {"shrink_axis_mask": 1, "begin_mask": 1}),
    "fewer_entries": ((1,), (3,), (1,), {}),                                   # x[1:3]
    "ellipsis_first": ((0, 1), (0, 3), (1, 1), {"ellipsis_mask": 1}),         # x[..., 1:3]
    "ellipsis_middle": ((1, 0, 2), (2, 0, 5), (1, 1, 2), {"ellipsis_mask": 2}),  # x[1:2, ..., 2:5:2]
    "ellipsis_shrink": ((0, -1), (0, 0), (1, 1), {"ellipsis_mask": 1, "shrink_axis_mask": 2}),  # x[..., -1]
    "new_axis": ((0, 1, 0), (0, 3, 0), (1, 1, 1), {"new_axis_mask": 1, "begin_mask": 4, "end_mask": 4}),
    "new_axis_middle": ((1, 0, 0, 2), (3, 0, 5, 4), (1, 1, 1, 1), {"new_axis_mask": 2}),  # x[1:3, None, 0:5, 2:4]
    "new_axis_and_ellipsis": ((0, 0, 1), (0, 0, 2), (1, 1, 1), {"ellipsis_mask": 1, "new_axis_mask": 2}),
    "new_axis_ellipsis_same_bit": ((0, 2), (0, 4), (1, 1), {"ellipsis_mask": 1, "new_axis_mask": 1}),
    "new_axis_shrink": ((0, 2, 0), (0, 3, 0), (1, 1, 1),
                        {"new_axis_mask": 1, "shrink_axis_mask": 2, "begin_mask": 4, "end_mask": 4}),
    "offset": ((1, 2, 0), (2, 3, 6), (1, 1, 1), {"offset": True}),             # begin + size
    "offset_strided": ((0, 1, 1), (4, 4, 5), (2, 2, 3), {"offset": True}),
    "extra_entries": ((1, 0, 0, 5), (3, 5, 6, 9), (1, 1, 1, 1), {}),           # LiteRT ignores the 4th
}


@pytest.mark.parametrize("case", list(STRIDED))
@pytest.mark.parametrize("dtype, runtime", [("float32", False), ("int32", True), ("int8", False)])
def test_strided_slice(case, dtype, runtime):
    begin, end, strides, options = STRIDED[case]
    indices = [i32(*v) for v in (begin, end, strides)]
    inputs = [In(data((4, 5, 6), dtype)), *(In(v) if runtime else v for v in indices)]
    if case == "backward_from_before_start" and runtime:
        # (LiteRT's Python API cannot read an empty dynamic output back: numpy is the reference)
        x = inputs[0].value
        got = ours(build("STRIDED_SLICE", inputs, [(kind(dtype), 3)], "StridedSliceOptions", **options),
                   [x, *indices])
        assert got[0].shape == x[-9::-1].shape == (0, 5, 6)
        return
    check("STRIDED_SLICE", inputs, [(kind(dtype), 3)], "StridedSliceOptions", **options)


@pytest.mark.parametrize("case", ["basic", "negative_strides", "ellipsis_middle", "new_axis_middle", "shrink",
                                  "new_axis_and_ellipsis", "clamped"])
@pytest.mark.parametrize("runtime", [False, True])
def test_strided_slice_dynamic_shape(case, runtime):
    begin, end, strides, options = STRIDED[case]
    indices = [i32(*v) for v in (begin, end, strides)]
    check("STRIDED_SLICE", [In(data((4, 5, 6)), (-1, 5, -1)), *(In(v) if runtime else v for v in indices)],
          [("FLOAT32", 3)], "StridedSliceOptions", **options)


def strided_cases(seed: int, count: int) -> list:
    """Random begin/end/strides and masks on random shapes (shrunk axes: stride 1 and an
    in-range begin, as LiteRT leaves the output unwritten otherwise)."""
    rng = np.random.default_rng(seed)
    cases = []
    for _ in range(count):
        rank = int(rng.integers(1, 5))
        shape = tuple(int(d) for d in rng.integers(1, 6, rank))
        n = int(rng.integers(1, rank + 1))
        begin, end = (rng.integers(-7, 7, n).astype(np.int32) for _ in range(2))
        strides = rng.choice([-3, -2, -1, 1, 2, 3], n).astype(np.int32)
        masks = {m: int(rng.integers(0, 1 << n)) for m in ("begin_mask", "end_mask", "shrink_axis_mask")}
        masks["new_axis_mask"] = int(rng.integers(0, 1 << n)) if rng.random() < 0.3 else 0
        masks["ellipsis_mask"] = 1 << int(rng.integers(0, n)) if rng.random() < 0.4 else 0
        for k in range(n):
            if masks["shrink_axis_mask"] >> k & 1:
                strides[k], begin[k] = 1, rng.integers(-1, 1)
        cases.append((shape, begin, end, strides, masks, bool(rng.random() < 0.3), bool(rng.random() < 0.3)))
    return cases


@pytest.mark.parametrize("shape, begin, end, strides, masks, dynamic, runtime", strided_cases(11, 60))
def test_strided_slice_sweep(shape, begin, end, strides, masks, dynamic, runtime):
    x = data(shape)
    inputs = [In(x, (-1,) * len(shape) if dynamic else None), *(In(v) if runtime else v for v in (begin, end, strides))]
    model = build("STRIDED_SLICE", inputs, [("FLOAT32", 1)], "StridedSliceOptions", **masks)
    values = [v.value for v in inputs if isinstance(v, In)]
    try:
        expected = litert_run(model, values, reference=True)[0]
    except ValueError:  # LiteRT's Python API cannot read an empty dynamic output: make them constants
        assert runtime
        constant = build("STRIDED_SLICE", [inputs[0], begin, end, strides], [("FLOAT32", 1)], "StridedSliceOptions",
                         **masks)
        expected = litert_run(constant, values[:1], reference=True)[0]
        assert expected.size == 0
    got = ours(model, values)[0]
    assert got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)


def test_strided_slice_bad():
    x = In(data((4, 5)))
    assert "strides [1, 0] hold a 0" in refused("STRIDED_SLICE", [x, i32(0, 0), i32(2, 2), i32(1, 0)],
                                                [("FLOAT32", 2)], "StridedSliceOptions")
    assert "must name at most one ellipsis among the 2 begin entries" in refused(
        "STRIDED_SLICE", [x, i32(0, 0), i32(2, 2), i32(1, 1)], [("FLOAT32", 2)], "StridedSliceOptions",
        ellipsis_mask=3)
    assert "begin, end and strides must have the same length" in refused(
        "STRIDED_SLICE", [x, i32(0, 0), i32(2), i32(1, 1)], [("FLOAT32", 2)], "StridedSliceOptions")
    assert "a shrunk axis' begin is out of range for shape [4, 5]" in refused(
        "STRIDED_SLICE", [x, i32(4, 0), i32(5, 2), i32(1, 1)], [("FLOAT32", 1)], "StridedSliceOptions",
        shrink_axis_mask=1)
    assert "begin must be an int32 or int64 tensor, got FLOAT32" in refused(
        "STRIDED_SLICE", [x, np.zeros(2, np.float32), i32(2, 2), i32(1, 1)], [("FLOAT32", 2)], "StridedSliceOptions")


@pytest.mark.parametrize("dtype", DTYPES + ["bool"])
@pytest.mark.parametrize("axes", [(0,), (1,), (-1,), (0, 1), (-1, 1), (0, 2), ()])
def test_reverse_v2(dtype, axes):
    x = data((2, 3, 4), dtype)
    axis = np.asarray(axes, np.int32)
    if axes in ((0, 2), ()):  # LiteRT refuses axes that are not adjacent and crashes on none: numpy
        model = build("REVERSE_V2", [In(x), axis], [(kind(dtype), 3)])
        np.testing.assert_array_equal(ours(model, [x])[0], np.flip(x, axes))
        return
    check("REVERSE_V2", [In(x), axis], [(kind(dtype), 3)])
    check("REVERSE_V2", [In(x, (-1, 3, -1)), In(axis)], [(kind(dtype), 3)])


# --- GATHER, GATHER_ND, SCATTER_ND, ONE_HOT ---------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("axis, batch_dims, index_shape", [(0, 0, (3,)), (1, 0, (2, 2)), (-1, 0, ()), (2, 0, (5,)),
                                                           (1, 1, (2, 3)), (2, 1, (2, 4)), (2, 2, (2, 3, 2)),
                                                           (2, -1, (2, 3, 2)), (3, 1, (2, 2, 2))])
def test_gather(dtype, axis, batch_dims, index_shape):
    params = data((2, 3, 4, 5), dtype)
    size = params.shape[axis]
    indices = RNG.integers(0, size, index_shape).astype(np.int32)
    check("GATHER", [In(params), In(indices)], [(kind(dtype), 4)], "GatherOptions", axis=axis, batch_dims=batch_dims)


def test_gather_constant_int64_indices_and_dynamic():
    check("GATHER", [In(data((6, 3)), (-1, 3)), np.asarray([[2, 0], [1, 1]], np.int64)], [("FLOAT32", 3)],
          "GatherOptions", axis=1)
    check("GATHER", [In(data((6, 3))), In(np.asarray([5, 0, 2], np.int64))], [("FLOAT32", 2)])


def test_gather_bad():
    assert "batch_dims 2 must lie in [0, 1]" in refused(
        "GATHER", [In(data((2, 3, 4))), In(i32(0, 1).reshape(1, 2))], [("FLOAT32", 3)], "GatherOptions", axis=1,
        batch_dims=2)
    assert "the indices must be int16, int32 or int64, got FLOAT32" in refused(
        "GATHER", [In(data((2, 3))), In(data((2,)))], [("FLOAT32", 2)], "GatherOptions")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("index", [[[1, 2], [0, 0]], [[1], [0], [1]], [[[1, 2, 3]], [[0, 1, 0]]]])
def test_gather_nd(dtype, index):
    check("GATHER_ND", [In(data((2, 3, 4), dtype)), In(np.asarray(index, np.int32))], [(kind(dtype), 2)])


def test_gather_nd_int64_dynamic():
    check("GATHER_ND", [In(data((5, 3)), (-1, 3)), np.asarray([[4, 2], [0, 1]], np.int64)], [("FLOAT32", 1)])


@pytest.mark.parametrize("dtype", DTYPES)
def test_scatter_nd(dtype):
    updates = data((4, 3), dtype)
    indices = In(np.asarray([[1], [3], [1], [0]], np.int32))     # index 1 twice: the updates add up
    got = check("SCATTER_ND", [indices, In(updates), i32(5, 3)], [(kind(dtype), 2)])
    assert got[0].shape == (5, 3)


def test_scatter_nd_elements_and_run_time_shape():
    indices = In(np.asarray([[0, 1], [2, 2], [0, 1]], np.int32))
    check("SCATTER_ND", [indices, In(data((3,))), In(i32(3, 4))], [("FLOAT32", 2)])
    assert "shape [3, -4] has a negative dimension" in refused(
        "SCATTER_ND", [indices, In(data((3,))), i32(3, -4)], [("FLOAT32", 2)])


@pytest.mark.parametrize("axis", [-1, 0, 1, 2])
@pytest.mark.parametrize("values", [(1.5, -2.0), (7, 3)])
def test_one_hot(axis, values):
    indices = In(np.asarray([[0, 3], [-1, 2], [4, 1]], np.int32))   # -1 and 4 (= depth) are all off
    on, off = (np.asarray(v, np.float32 if isinstance(v, float) else np.int32) for v in values)
    kind_ = "FLOAT32" if on.dtype == np.float32 else "INT32"
    check("ONE_HOT", [indices, i32(4), on, off], [(kind_, 3)], "OneHotOptions", axis=axis)
    check("ONE_HOT", [indices, In(i32(4)), In(on), In(off)], [(kind_, 3)], "OneHotOptions", axis=axis)


def test_one_hot_int8_and_bad_axis():
    indices = In(np.asarray([0, 2, 5], np.int64))
    on, off = np.asarray(9, np.int8), np.asarray(3, np.int8)
    check("ONE_HOT", [indices, i32(3), on, off], [("INT8", 2)], "OneHotOptions", axis=-1)
    assert "axis 3 is out of range for indices of rank 1" in refused(
        "ONE_HOT", [indices, i32(3), on, off], [("INT8", 2)], "OneHotOptions", axis=3)


# --- TILE, BROADCAST_TO, BROADCAST_ARGS -------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES + ["bool"])
@pytest.mark.parametrize("multiples", [(1, 1), (2, 3), (3, 1), (1, 0)])
def test_tile(dtype, multiples):
    x = data((2, 3), dtype)
    if 0 in multiples:  # (LiteRT's Python API cannot read back an empty output: numpy is the reference)
        np.testing.assert_array_equal(ours(build("TILE", [In(x), i32(*multiples)], [(kind(dtype), 2)]), [x])[0],
                                      np.tile(x, multiples))
        return
    check("TILE", [In(x), i32(*multiples)], [(kind(dtype), 2)])
    check("TILE", [In(x, (-1, 3)), In(np.asarray(multiples, np.int64))], [(kind(dtype), 2)])


def test_tile_bad():
    assert "multiples must hold 2 entries, one per dimension" in refused("TILE", [In(data((2, 3))), i32(2)],
                                                                         [("FLOAT32", 2)])
    assert "multiples [2, -1] hold a negative count" in refused("TILE", [In(data((2, 3))), i32(2, -1)],
                                                                [("FLOAT32", 2)])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, target", [((3,), (2, 3)), ((2, 1), (2, 4)), ((1, 1, 3), (2, 4, 3)), ((), (2, 2))])
def test_broadcast_to(dtype, shape, target):
    check("BROADCAST_TO", [In(data(shape, dtype)), i32(*target)], [(kind(dtype), len(target))])
    check("BROADCAST_TO", [In(data(shape, dtype)), In(np.asarray(target, np.int64))], [(kind(dtype), len(target))])


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
@pytest.mark.parametrize("a, b", [((2, 1, 3), (4, 3)), ((1,), (5, 1, 2)), ((0, 1), (1, 7)), ((3, 2), (3, 2))])
def test_broadcast_args(dtype, a, b):
    a, b = np.asarray(a, dtype), np.asarray(b, dtype)
    check("BROADCAST_ARGS", [In(a), In(b)], [(kind(dtype), 1)])
    check("BROADCAST_ARGS", [a, In(b)], [(kind(dtype), 1)])


def test_broadcast_args_constant_and_bad():
    model = build("BROADCAST_ARGS", [i32(2, 1), i32(3)], [("INT32", 1)])
    assert ours(model, [])[0].tolist() == [2, 3]
    assert "shapes [2, 3] and [1, 4] do not broadcast" in refused("BROADCAST_ARGS", [i32(2, 3), i32(4)],
                                                                  [("INT32", 1)])


# --- PAD, PADV2, MIRROR_PAD -------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "int32"])
@pytest.mark.parametrize("paddings", [((0, 0), (1, 2), (3, 0)), ((2, 2), (0, 0), (0, 0)), ((0, 0),) * 3])
def test_pad(dtype, paddings):
    x = data((2, 3, 4), dtype)
    p = np.asarray(paddings, np.int32)
    check("PAD", [In(x), p], [(kind(dtype), 3)])
    check("PAD", [In(x, (-1, 3, -1)), In(p.astype(np.int64))], [(kind(dtype), 3)])
    value = np.asarray([7], np.dtype(dtype))
    check("PADV2", [In(x), p, value], [(kind(dtype), 3)])
    check("PADV2", [In(x), In(p), In(value.reshape(()))], [(kind(dtype), 3)])


def test_pad_bad():
    x = In(data((2, 3)))
    assert "paddings [[0, 0], [-1, 2]] must be 2 pairs of counts >= 0" in refused(
        "PAD", [x, i32(0, 0, -1, 2).reshape(2, 2)], [("FLOAT32", 2)])
    assert "paddings must have shape [2, 2], got [3, 2]" in refused("PAD", [x, np.zeros((3, 2), np.int32)],
                                                                    [("FLOAT32", 2)])
    assert "constant_values has type INT32, the input FLOAT32" in refused(
        "PADV2", [x, np.zeros((2, 2), np.int32), i32(1)], [("FLOAT32", 2)])


@pytest.mark.parametrize("dtype", ["float32", "int32"])
@pytest.mark.parametrize("mode", [0, 1])
@pytest.mark.parametrize("paddings", [((1, 2), (0, 3)), ((0, 0), (3, 0)), ((2, 1), (1, 1))])
def test_mirror_pad(dtype, mode, paddings):
    x = data((3, 4), dtype)
    limit = x.shape[0] - 1 + mode
    p = np.minimum(np.asarray(paddings, np.int32), limit)
    check("MIRROR_PAD", [In(x), p], [(kind(dtype), 2)], "MirrorPadOptions", mode=mode)
    check("MIRROR_PAD", [In(x, (-1, -1)), In(p)], [(kind(dtype), 2)], "MirrorPadOptions", mode=mode)


@pytest.mark.parametrize("mode", [0, 1])
def test_mirror_pad_largest_and_3d(mode):
    x = data((2, 3, 4))
    p = np.asarray([[0, 0], [2 + mode, 2 + mode], [3 + mode, 1]], np.int32)
    check("MIRROR_PAD", [In(x), p], [("FLOAT32", 3)], "MirrorPadOptions", mode=mode)


@pytest.mark.parametrize("mode, message", [(0, "exceed what REFLECT mode allows for shape [3, 4]"),
                                           (1, "exceed what SYMMETRIC mode allows for shape [3, 4]")])
def test_mirror_pad_bad(mode, message):
    p = np.asarray([[0, 0], [4 + mode, 0]], np.int32)
    assert message in refused("MIRROR_PAD", [In(data((3, 4))), p], [("FLOAT32", 2)], "MirrorPadOptions", mode=mode)
    assert "unknown mirror pad mode 2" in refused("MIRROR_PAD", [In(data((3, 4))), p], [("FLOAT32", 2)],
                                                  "MirrorPadOptions", mode=2)


# --- TOPK_V2, WHERE, UNIQUE, REVERSE_SEQUENCE ---------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", [1, 3, 6])
def test_topk_v2(dtype, k):
    x = data((2, 3, 6), dtype)
    x[0, 0, :4] = x[0, 0, 5]   # ties: the lower index comes first
    check("TOPK_V2", [In(x), i32(k)], [(kind(dtype), 3), ("INT32", 3)])
    check("TOPK_V2", [In(x, (-1, 3, 6)), In(np.asarray(k, np.int32))], [(kind(dtype), 3), ("INT32", 3)])


def test_topk_v2_bad_k():
    assert "k 7 must lie in [0, 6]" in refused("TOPK_V2", [In(data((2, 6))), i32(7)], [("FLOAT32", 2), ("INT32", 2)])


@pytest.mark.parametrize("dtype", ["bool", "float32", "int32"])
@pytest.mark.parametrize("shape", [(5,), (3, 4), (2, 2, 3)])
def test_where(dtype, shape):
    x = data(shape, dtype)
    if dtype != "bool":
        x = np.where(RNG.random(shape) < 0.5, x, 0).astype(dtype)
    check("WHERE", [In(x)], [("INT64", 2)])


@pytest.mark.parametrize("dtype", ["float32", "int32", "int8"])
@pytest.mark.parametrize("index_type", [2, 4])
def test_unique(dtype, index_type):
    x = np.asarray([3, 1, 3, 7, 1, 1, 0], np.dtype(dtype))
    idx = "INT32" if index_type == 2 else "INT64"
    check("UNIQUE", [In(x)], [(kind(dtype), 1), (idx, 1)], "UniqueOptions", idx_out_type=index_type)
    check("UNIQUE", [In(x, (-1,))], [(kind(dtype), 1), (idx, 1)], "UniqueOptions", idx_out_type=index_type)


@pytest.mark.parametrize("dtype", ["float32", "int32"])
@pytest.mark.parametrize("seq_dim, batch_dim", [(1, 0), (0, 1), (2, 0), (1, 2), (2, 1)])
def test_reverse_sequence(dtype, seq_dim, batch_dim):
    x = data((3, 4, 3), dtype)
    lengths = RNG.integers(0, x.shape[seq_dim] + 1, x.shape[batch_dim]).astype(np.int32)
    check("REVERSE_SEQUENCE", [In(x), lengths], [(kind(dtype), 3)], "ReverseSequenceOptions", seq_dim=seq_dim,
          batch_dim=batch_dim)
    check("REVERSE_SEQUENCE", [In(x), In(lengths.astype(np.int64))], [(kind(dtype), 3)], "ReverseSequenceOptions",
          seq_dim=seq_dim, batch_dim=batch_dim)


def test_reverse_sequence_int8():
    # (LiteRT's kernel takes no int8: the closed form is the reference)
    x = data((2, 5, 3), "int8")
    lengths = i32(4, 0, 5)
    model = build("REVERSE_SEQUENCE", [In(x), lengths], [("INT8", 3)], "ReverseSequenceOptions", seq_dim=1,
                  batch_dim=2)
    expected = x.copy()
    for b, n in enumerate(lengths):
        expected[:, :n, b] = x[:, :n, b][:, ::-1]
    got = ours(model, [x])[0]
    assert got.dtype == np.int8
    np.testing.assert_array_equal(got, expected)


def test_reverse_sequence_bad():
    assert "seq_dim and batch_dim are both 1" in refused(
        "REVERSE_SEQUENCE", [In(data((2, 3))), i32(1, 1)], [("FLOAT32", 2)], "ReverseSequenceOptions",
        seq_dim=1, batch_dim=1)


# --- registration and run-time failures ---------------------------------------------------------


def test_registration_flags():
    from edgerun.converters.tflite.registry import _BUILTIN

    float_only = {"CONCATENATION", "PAD", "PADV2", "MIRROR_PAD", "BROADCAST_ARGS"}
    for opcode in ("RESHAPE", "SQUEEZE", "EXPAND_DIMS", "STRIDED_SLICE", "SLICE", "GATHER", "GATHER_ND", "TRANSPOSE",
                   "SHAPE", "RANK", "PACK", "UNPACK", "TILE", "BROADCAST_TO", "SPLIT", "SPLIT_V", "REVERSE_V2",
                   "ONE_HOT", "TOPK_V2", "WHERE", "SCATTER_ND", "REVERSE_SEQUENCE", "UNIQUE", *float_only):
        assert _BUILTIN[opcode].any_dtype == (opcode not in float_only), opcode


def test_omitted_input_is_malformed():
    assert "input 1 is omitted (-1), but it is not optional" in refused(
        "GATHER", [In(data((2, 3))), -1], [("FLOAT32", 2)], error=ModelError)


def test_run_time_shape_that_does_not_fit():
    model = build("RESHAPE", [In(data((2, 12))), In(i32(5, 5))], [("FLOAT32", 2)])
    with pytest.raises(ModelError, match=r"cannot reshape X shape \(2, 12\) \(24 elements\) to \[5, 5\]"):
        ours(model, [data((2, 12)), i32(5, 5)])

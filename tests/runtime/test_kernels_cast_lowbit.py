"""The 8-, 4- and 2-bit element types (float8 e4m3fn/e4m3fnuz/e5m2/e5m2fnuz/e8m0, float4 e2m1,
int4/uint4, int2/uint2): Cast, CastLike, BitCast, QuantizeLinear and DequantizeLinear against
ml_dtypes, onnx's reference evaluator and closed-form values from the ONNX Cast tables; .erm
storage (packed 4- and 2-bit buffers, bit-exact round trips, byte counts the verifier checks,
a file written before these types existed); and ONNX import of such tensors.
"""

from __future__ import annotations

from pathlib import Path

import ml_dtypes
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from edgerun.converters.onnx_import import from_onnx
from edgerun.runtime import Interpreter, serialize
from edgerun.runtime.errors import ModelError
from edgerun.runtime.graph import GraphBuilder
from edgerun.runtime.kernels import TensorSpec, resolve
from edgerun.runtime.loader import load_model
from tests.converters.conformance.cases import node_cases
from tests.runtime.fuzz_cases import lowbit_graph
from tests.runtime.mutate import patch_vector, raw_model

F32 = np.float32
E4M3FN, E4M3FNUZ = np.dtype(ml_dtypes.float8_e4m3fn), np.dtype(ml_dtypes.float8_e4m3fnuz)
E5M2, E5M2FNUZ = np.dtype(ml_dtypes.float8_e5m2), np.dtype(ml_dtypes.float8_e5m2fnuz)
E8M0, FLOAT4 = np.dtype(ml_dtypes.float8_e8m0fnu), np.dtype(ml_dtypes.float4_e2m1fn)
INT4, UINT4 = np.dtype(ml_dtypes.int4), np.dtype(ml_dtypes.uint4)
INT2, UINT2 = np.dtype(ml_dtypes.int2), np.dtype(ml_dtypes.uint2)
FLOAT8 = [E4M3FN, E4M3FNUZ, E5M2, E5M2FNUZ]
LOWBIT = [*FLOAT8, E8M0, FLOAT4, INT4, UINT4, INT2, UINT2]


def code(dtype: np.dtype) -> int:
    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


def run(op: str, inputs: list, attrs: dict | None = None, opset: int = 25) -> np.ndarray:
    """resolve -> prepare -> run one node; the output starts as 0x55 bytes so every write shows."""
    kernel = resolve("", op, opset, "n")(op, "n", dict(attrs or {}), opset)
    specs = [None if a is None else TensorSpec(a.dtype, a.shape) for a in inputs]
    (spec,) = kernel.prepare(specs, list(inputs))
    out = np.full(spec.shape, 0x55, np.uint8).view(spec.dtype) if spec.dtype.itemsize == 1 else \
        np.full(spec.shape, 7, spec.dtype)
    kernel.run(list(inputs), [out])
    return out


def bits(a: np.ndarray) -> np.ndarray:
    return np.asarray(a).view(np.uint8)


# Magnitudes from subnormal to far beyond every max, specials, and the values around each max.
EDGES = np.array([0.0, -0.0, np.nan, np.inf, -np.inf, 1e-9, -1e-9, 2**-10, 0.1, 0.3, 1.0, 1.0625,
                  3.0, 7.5, 240.0, 248.0, 250.0, 256.0, 448.0, 464.0, 470.0, 480.0, 1e4, 57344.0,
                  61439.0, 61440.0, 65504.0, 1e6, -448.0, -470.0, -57344.0, -1e6], F32)
RANDOM = (np.random.default_rng(0).standard_normal(2000) * np.logspace(-6, 5, 2000)).astype(F32)


# --- Cast against ml_dtypes and onnx's helpers ---------------------------------------------------

@pytest.mark.parametrize("dtype", FLOAT8, ids=str)
@pytest.mark.parametrize("saturate", [1, 0])
@pytest.mark.parametrize("source", [F32, np.float16, np.float64])
def test_cast_to_float8_matches_onnx_reference(dtype, saturate, source):
    with np.errstate(over="ignore"):
        x = np.concatenate([EDGES, RANDOM]).astype(source)
        want = numpy_helper.saturate_cast(x, dtype) if saturate else x.astype(dtype)
    got = run("Cast", [x], {"to": code(dtype), "saturate": saturate})
    np.testing.assert_array_equal(bits(got), bits(want))


@pytest.mark.parametrize("dtype", [*FLOAT8, E8M0, FLOAT4], ids=str)
@pytest.mark.parametrize("target", [F32, np.float16, np.float64, ml_dtypes.bfloat16])
def test_every_code_casts_to_wider_floats_as_ml_dtypes(dtype, target):
    per_byte = 16 if dtype == FLOAT4 else 256
    x = np.arange(per_byte, dtype=np.uint8).view(dtype)
    got = run("Cast", [x], {"to": code(target)})
    with np.errstate(over="ignore"):
        want = x.astype(np.float32).astype(target)
    np.testing.assert_array_equal(bits(got), bits(want))


# (type, input, saturate=1 byte, saturate=0 byte), from the ONNX Cast tables: max finite,
# just above max (rounds back to max / rounds past it), +-inf, NaN, and -0.
FLOAT8_TABLE = [
    (E4M3FN, 448.0, 0x7E, 0x7E), (E4M3FN, 464.0, 0x7E, 0x7E), (E4M3FN, 470.0, 0x7E, 0x7F),
    (E4M3FN, np.inf, 0x7E, 0x7F), (E4M3FN, -np.inf, 0xFE, 0xFF), (E4M3FN, -0.0, 0x80, 0x80),
    (E4M3FNUZ, 240.0, 0x7F, 0x7F), (E4M3FNUZ, 250.0, 0x7F, 0x80), (E4M3FNUZ, np.inf, 0x7F, 0x80),
    (E4M3FNUZ, -0.0, 0x00, 0x00), (E4M3FNUZ, np.nan, 0x80, 0x80),
    (E5M2, 57344.0, 0x7B, 0x7B), (E5M2, 61439.0, 0x7B, 0x7B), (E5M2, 61440.0, 0x7B, 0x7C),
    (E5M2, np.inf, 0x7B, 0x7C), (E5M2, -np.inf, 0xFB, 0xFC), (E5M2, -0.0, 0x80, 0x80),
    (E5M2FNUZ, 57344.0, 0x7F, 0x7F), (E5M2FNUZ, 1e6, 0x7F, 0x80), (E5M2FNUZ, -np.inf, 0xFF, 0x80),
]


@pytest.mark.parametrize("dtype, value, saturated, unsaturated", FLOAT8_TABLE)
def test_float8_saturation_edges(dtype, value, saturated, unsaturated):
    x = np.array([value], F32)
    for saturate, want in ((1, saturated), (0, unsaturated)):
        got = bits(run("Cast", [x], {"to": code(dtype), "saturate": saturate}))[0]
        assert got == want, f"{dtype} saturate={saturate}: {value} -> {got:#04x}, want {want:#04x}"


def test_nan_stays_nan_in_every_float8_type_either_way():
    for dtype in FLOAT8:
        for saturate in (0, 1):
            got = run("Cast", [np.array([np.nan, -np.nan], F32)], {"to": code(dtype), "saturate": saturate})
            assert np.isnan(got.astype(F32)).all()


def test_castlike_reads_saturate():
    x, like = np.array([1e6, -1e6], F32), np.zeros(1, E4M3FN)
    assert bits(run("CastLike", [x, like], {"saturate": 1})).tolist() == [0x7E, 0xFE]
    assert np.isnan(run("CastLike", [x, like], {"saturate": 0}).astype(F32)).all()


def test_float4_rounds_half_to_even_and_saturates():
    x = np.array([0.25, 0.75, 1.25, 2.5, 5.0, 7.0, 100.0, np.inf, -np.inf, -0.0, 0.4], F32)
    want = [0.0, 1.0, 1.0, 2.0, 4.0, 6.0, 6.0, 6.0, -6.0, -0.0, 0.5]
    got = run("Cast", [x], {"to": TensorProto.FLOAT4E2M1})
    np.testing.assert_array_equal(got.astype(F32), want)
    np.testing.assert_array_equal(bits(got), bits(x.astype(FLOAT4)))


@pytest.mark.parametrize("dtype, values, want", [
    (INT4, np.array([200, -56, 8, -9, 7, -8, 15], np.int32), [-8, -8, -8, 7, 7, -8, -1]),
    (UINT4, np.array([200, -1, 16, 15, -16], np.int64), [8, 15, 0, 15, 0]),
    (INT2, np.array([2, 3, -3, 1, -2, 5], np.int16), [-2, -1, 1, 1, -2, 1]),
    (UINT2, np.array([4, -1, 3, 6], np.int8), [0, 3, 3, 2]),
    (INT4, np.array([7.9, -8.9, 8.5, -0.5, 15.5], F32), [7, -8, -8, 0, -1]),  # truncate, then wrap
    (UINT4, np.array([True, False]), [1, 0]),
])
def test_small_ints_wrap_like_two_complement(dtype, values, want):
    got = run("Cast", [values], {"to": code(dtype)})
    assert got.dtype == dtype
    np.testing.assert_array_equal(got.astype(np.int64), want)
    np.testing.assert_array_equal(bits(got), bits(values.astype(dtype)))  # ml_dtypes agrees


@pytest.mark.parametrize("dtype", [INT4, UINT4, INT2, UINT2], ids=str)
def test_small_ints_widen_exactly(dtype):
    info = ml_dtypes.iinfo(dtype)
    x = np.arange(info.min, info.max + 1).astype(dtype)
    for target in (np.int8, np.uint8, np.int64, F32, np.float16, np.bool_):
        got = run("Cast", [x], {"to": code(target)})
        np.testing.assert_array_equal(got, np.arange(info.min, info.max + 1).astype(target))


@pytest.mark.parametrize("saturate", [True, False])
@pytest.mark.parametrize("mode", ["up", "down", "nearest"])
def test_e8m0_matches_onnx_helper(mode, saturate):
    x = np.concatenate([np.array([0.124, 0.25, 1.1, 1.5, 3.0, 3e38, 1e-40, 2.0**127 * 1.5], F32),
                        np.abs(RANDOM)])
    got = run("Cast", [x], {"to": TensorProto.FLOAT8E8M0, "saturate": int(saturate), "round_mode": mode})
    np.testing.assert_array_equal(bits(got), bits(numpy_helper.to_float8e8m0(x, saturate, mode)))


# --- BitCast -------------------------------------------------------------------------------------

@pytest.mark.parametrize("x, to, want", [
    (np.array([1.0, -2.0], F32), np.int32, np.array([1.0, -2.0], F32).view(np.int32)),
    (np.array([448.0, -0.0], F32).astype(E4M3FN), np.uint8, np.array([0x7E, 0x80], np.uint8)),
    (np.array([0x7E, 0x80], np.uint8), E5M2, np.array([0x7E, 0x80], np.uint8).view(E5M2)),
    (np.array([-1, -8, 7], np.int8).astype(INT4), UINT4, np.array([15, 8, 7], np.uint8).astype(UINT4)),
    (np.array([-0.0, 6.0], F32).astype(FLOAT4), INT4, np.array([-8, 7], np.int8).astype(INT4)),
    (np.array([-1, 1], np.int8).astype(INT2), UINT2, np.array([3, 1], np.uint8).astype(UINT2)),
    (np.array([0, 2, 1], np.uint8), np.bool_, np.array([False, True, True])),
])
def test_bitcast_reinterprets_bits(x, to, want):
    got = run("BitCast", [x], {"to": code(to)}, opset=26)
    assert got.dtype == np.dtype(to)
    np.testing.assert_array_equal(bits(got), bits(want))


def test_bitcast_float32_matches_onnx_reference():
    x = RANDOM.reshape(40, 50)
    model = helper.make_model(helper.make_graph(
        [helper.make_node("BitCast", ["x"], ["y"], to=TensorProto.INT32)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
        [helper.make_tensor_value_info("y", TensorProto.INT32, x.shape)]),
        opset_imports=[helper.make_opsetid("", 26)])
    (want,) = ReferenceEvaluator(model).run(None, {"x": x})
    np.testing.assert_array_equal(run("BitCast", [x], {"to": TensorProto.INT32}, opset=26), want)


# --- QuantizeLinear / DequantizeLinear against onnx's reference evaluator ------------------------

def reference(op: str, inputs: list[np.ndarray], attrs: dict, out_type: int, opset: int = 25) -> np.ndarray:
    names = [f"in{i}" for i in range(len(inputs))]
    model = helper.make_model(helper.make_graph(
        [helper.make_node(op, names, ["y"], **attrs)], "g",
        [helper.make_tensor_value_info(n, code(a.dtype), a.shape) for n, a in zip(names, inputs, strict=True)],
        [helper.make_tensor_value_info("y", out_type, None)]),
        opset_imports=[helper.make_opsetid("", opset)])
    (want,) = ReferenceEvaluator(model).run(None, dict(zip(names, inputs, strict=True)))
    return want


X = (np.random.default_rng(1).standard_normal((4, 6)) * 4).astype(F32)
X[0, :3] = [np.inf, -1e9, np.nan]
QUANTIZE = [  # zero point (None: output_dtype attribute), scale, attrs
    (np.zeros((), E4M3FN), np.array(0.01, F32), {}),
    (np.zeros((), E4M3FN), np.array(0.01, F32), {"saturate": 0}),
    (np.zeros((), E5M2), np.array(0.001, F32), {"saturate": 0}),
    (np.zeros(4, E4M3FNUZ), np.array([0.5, 1, 2, 4], F32), {"axis": 0}),
    (np.zeros((), FLOAT4), np.array(0.7, F32), {}),
    (np.array([3], UINT4), np.array(0.5, F32), {}),  # () and (1,) both mean per tensor
    (np.array([-1, 0, 1, 2], np.int8).astype(INT4), np.array([0.5, 1, 2, 4], F32), {"axis": 0}),
    (np.array([[1, 0, -1], [0, 1, 1], [-2, 0, 0], [1, 1, 1]], np.int8).astype(INT4),
     np.array([[0.5, 1, 2], [1, 1, 1], [3, 2, 1], [0.25, 4, 8]], F32), {"axis": 1, "block_size": 2}),
    (np.array(1, UINT2), np.array(1.5, F32), {}),
    (np.array(-1, INT2), np.array(0.8, F32), {}),
    (None, np.array(0.3, F32), {"output_dtype": TensorProto.INT4}),
]


@pytest.mark.parametrize("zero, scale, attrs", QUANTIZE)
def test_quantize_matches_onnx_reference(zero, scale, attrs):
    # onnx's reference goes through int32 (which overflows beyond 2**31) and has no NaN rule
    # for integer types: keep x finite and moderate except for the float8 saturate=0 cases
    x = X if attrs.get("saturate") == 0 else np.clip(np.nan_to_num(X), -1e6, 1e6)
    inputs = [x, scale] + ([] if zero is None else [zero])
    out_type = attrs.get("output_dtype") or code(zero.dtype)
    want = reference("QuantizeLinear", inputs, attrs, out_type)
    got = run("QuantizeLinear", inputs, attrs)
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(bits(got), bits(want))


@pytest.mark.parametrize("zero, scale, attrs", [q for q in QUANTIZE if q[0] is not None])
def test_dequantize_matches_onnx_reference(zero, scale, attrs):
    attrs = {k: v for k, v in attrs.items() if k in ("axis", "block_size")}
    x = np.arange(24, dtype=np.uint8).reshape(4, 6).view(zero.dtype) if zero.dtype != FLOAT4 else \
        (np.arange(24, dtype=np.uint8) % 16).reshape(4, 6).view(FLOAT4)
    if zero.dtype in (INT4, UINT4, INT2, UINT2):
        x = (x.view(np.uint8) & (15 if zero.dtype in (INT4, UINT4) else 3)).view(zero.dtype)
    if zero.dtype in FLOAT8:  # onnx's reference refuses non-zero float8 zero points; NaN codes aside
        zero = np.zeros(zero.shape, zero.dtype)
        x = np.where(np.isnan(x.astype(F32)), np.zeros(1, zero.dtype), x)
    want = reference("DequantizeLinear", [x, scale, zero], attrs, TensorProto.FLOAT)
    got = run("DequantizeLinear", [x, scale, zero], attrs)
    np.testing.assert_array_equal(got, want)


def test_dequantize_output_dtype_and_float16_scale():
    x = np.array([-8, -1, 0, 7], np.int8).astype(INT4)
    got = run("DequantizeLinear", [x, np.array(0.5, np.float16), np.array(1, np.int8).astype(INT4)],
              {"output_dtype": TensorProto.FLOAT}, opset=25)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, [-4.5, -1.0, -0.5, 3.0])


# --- .erm storage --------------------------------------------------------------------------------

def lowbit_arrays() -> dict[str, np.ndarray]:
    """One constant per type; odd sizes leave the packed buffers' last bytes half used."""
    values = np.array([0.5, -1.5, 3.0, -0.0, 6.0, 1e-3, -448.0], F32)
    made = {str(t): values.astype(t) for t in (*FLOAT8, FLOAT4)}
    made[str(E8M0)] = np.array([0.25, 1, 2, 2.0**100, 2.0**-127], F32).astype(E8M0)
    made[str(INT4)] = np.arange(-8, 7).astype(INT4).reshape(3, 5)
    made[str(UINT4)] = np.arange(0, 15).astype(UINT4)
    made[str(INT2)] = np.array([-2, -1, 0, 1, 1, -2, 0]).astype(INT2)
    made[str(UINT2)] = np.array([0, 1, 2, 3, 3, 2, 1, 0, 3]).astype(UINT2).reshape(9, 1)
    return made


def lowbit_model(inline_limit: int) -> bytes:
    g = GraphBuilder("lowbit_storage")
    x = g.input("x", F32, (1,))
    for name, array in lowbit_arrays().items():
        g.output(g.op("Identity", [g.constant(name, array)], name=f"id_{name}"), f"out_{name}")
    g.output(g.op("Identity", [x], name="id_x"), "y")
    return serialize(g.build(), inline_limit=inline_limit)


@pytest.mark.parametrize("inline_limit", [1024, 0])
def test_lowbit_constants_round_trip_bit_exact(inline_limit):
    data = lowbit_model(inline_limit)
    arrays = lowbit_arrays()
    loaded = {v.name: v for v in load_model(data).values() if v.data is not None}
    for name, array in arrays.items():
        assert loaded[name].dtype == array.dtype and loaded[name].data.shape == array.shape
        np.testing.assert_array_equal(bits(loaded[name].data), bits(array))
    outputs = Interpreter(data).run({"x": np.zeros(1, F32)})
    for name, array in arrays.items():
        np.testing.assert_array_equal(bits(outputs[f"out_{name}"]), bits(array))


def test_4_and_2_bit_buffers_are_packed_as_onnx_packs_them():
    data = lowbit_model(1024)
    raw = raw_model(data)
    buffers = raw["buffers"]
    tensors = {t["name"]: t for t in raw["subgraphs"][0]["tensors"]}
    arrays = lowbit_arrays()
    for name, pack in ((str(INT4), numpy_helper._pack_4bitx2), (str(FLOAT4), numpy_helper._pack_4bitx2),
                       (str(UINT2), numpy_helper._pack_2bitx4), (str(INT2), numpy_helper._pack_2bitx4)):
        stored = bytes(buffers[tensors[name]["buffer"]]["data"])
        assert stored == pack(arrays[name]).tobytes(), name
    assert len(bytes(buffers[tensors[str(E4M3FN)]["buffer"]]["data"])) == 7  # float8: one per byte


@pytest.mark.parametrize("name, dim, message", [
    (str(INT4), 4, r"tensor \d+ \('int4'\): buffer \d+ holds 8 bytes, dtype x shape needs 10 \(INT4 packs 2 per"),
    (str(UINT2), 8, r"tensor \d+ \('uint2'\): buffer \d+ holds 3 bytes, dtype x shape needs 2 \(UINT2 packs 4 per"),
    (str(E5M2), 8, r"tensor \d+ \('float8_e5m2'\): buffer \d+ holds 7 bytes, dtype x shape needs 8$"),
])
def test_wrong_byte_count_is_a_model_error_naming_the_tensor(name, dim, message):
    data = lowbit_model(0)
    index = next(i for i, t in enumerate(raw_model(data)["subgraphs"][0]["tensors"]) if t["name"] == name)
    bad = patch_vector(data, lambda r: r["subgraphs"][0]["tensors"][index]["shape"], 0, dim)
    with pytest.raises(ModelError, match=message):
        load_model(bad)


def test_float8_model_runs_from_erm_like_onnx_reference():
    data = serialize(lowbit_graph(), inline_limit=0)
    x = np.linspace(-2, 2, 21, dtype=F32).reshape(3, 7)
    got = Interpreter(data).run({"x": x})["y"]
    w8 = np.linspace(-3, 3, 7, dtype=F32).astype(E4M3FN).astype(F32)
    np.testing.assert_array_equal(got, x * w8 + np.arange(-4, 3, dtype=F32))


LEGACY = Path(__file__).parent / "data" / "legacy_v1_dtypes.erm"


def test_file_written_before_the_lowbit_types_still_loads_and_runs():
    """legacy_v1_dtypes.erm was written by edgerun before dtype codes 14.. existed (some buffers
    inline, some external)."""
    base = np.array([[0, 1, -2], [3, -4, 5]])
    want = {
        "f32": base.astype(F32) * 0.5, "f16": base.astype(np.float16) * 0.25, "f64": base / 3,
        "bf16": (base * 1.5).astype(ml_dtypes.bfloat16), "i8": base.astype(np.int8),
        "i16": base.astype(np.int16) * 300, "i32": base.astype(np.int32) * 70000,
        "i64": base.astype(np.int64) * 2**40, "u8": np.abs(base).astype(np.uint8) * 50,
        "u16": np.abs(base).astype(np.uint16) * 9000, "u32": np.abs(base).astype(np.uint32) * 10**8,
        "u64": np.abs(base).astype(np.uint64) * 2**60, "b": base > 0,
    }
    loaded = {v.name: v.data for v in load_model(LEGACY).values() if v.data is not None}
    assert set(loaded) == set(want)
    for name, array in want.items():
        assert loaded[name].dtype == array.dtype, name
        np.testing.assert_array_equal(loaded[name], array)
    outputs = Interpreter(LEGACY).run({"x": np.ones((2, 3), F32)})
    np.testing.assert_array_equal(outputs["y"], 1 + want["f32"])
    np.testing.assert_array_equal(outputs["out_u64"], want["u64"])


# --- ONNX import ---------------------------------------------------------------------------------

def test_onnx_lowbit_initializers_and_value_infos_import():
    w4 = np.array([-8, 7, 3, -1, 0]).astype(INT4)  # odd count: the ONNX tensor is packed too
    w8 = np.array([0.5, -2.0, 448.0, 1e-3, 3.0], F32).astype(E5M2)
    graph = helper.make_graph(
        [helper.make_node("Cast", ["w4"], ["a"], to=TensorProto.FLOAT),
         helper.make_node("Cast", ["w8"], ["b"], to=TensorProto.FLOAT),
         helper.make_node("Add", ["a", "b"], ["s"]),
         helper.make_node("Mul", ["s", "x"], ["m"]),
         helper.make_node("Cast", ["m"], ["y"], to=TensorProto.FLOAT8E4M3FN, saturate=1)],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT8E4M3FN, [5])],
        [numpy_helper.from_array(w4, "w4"), numpy_helper.from_array(w8, "w8")],
        value_info=[helper.make_tensor_value_info("a", TensorProto.FLOAT, [5])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    onnx.checker.check_model(model)
    graph_ir = from_onnx(model, optimize=False)
    consts = {v.name: v for v in graph_ir.values() if v.data is not None}
    assert consts["w4"].dtype == INT4 and consts["w8"].dtype == E5M2
    np.testing.assert_array_equal(bits(consts["w4"].data), bits(w4))
    assert graph_ir.outputs[0].dtype == E4M3FN
    x = np.array([1.0, 2.0, 100.0, -3.0, 0.5], F32)
    (want,) = ReferenceEvaluator(model).run(None, {"x": x})
    got = Interpreter(serialize(graph_ir)).run({"x": x})["y"]
    np.testing.assert_array_equal(bits(got), bits(want))


# --- conformance cases the harness cannot compare (float8 NaN), checked byte for byte ----------

NAN_CASES = [c for c in node_cases() if c.name.startswith(("test_cast_", "test_castlike_"))
             and any(t in c.name for t in ("_to_FLOAT8E4M3FN", "_to_FLOAT8E5M2FNUZ"))]


@pytest.mark.parametrize("case", NAN_CASES, ids=[c.name for c in NAN_CASES])
def test_float8_conformance_outputs_are_bit_identical(case):
    from edgerun.converters.onnx_backend import EdgerunBackend

    rep = EdgerunBackend.prepare(case.model)
    for inputs, expected in case.data_sets:
        (got,) = rep.run(list(inputs))
        assert got.dtype == expected[0].dtype
        np.testing.assert_array_equal(bits(got), bits(expected[0]))


# --- invalid nodes -------------------------------------------------------------------------------

def spec(shape, dtype=F32):
    return TensorSpec(np.dtype(dtype), tuple(shape))


@pytest.mark.parametrize("op, opset, specs, attrs, message", [
    ("Cast", 25, [spec((2,))], {"to": 1, "round_mode": "sideways"}, "round_mode 'sideways' must be one of"),
    ("Cast", 19, [spec((2,))], {"to": 17, "saturate": 2}, "attribute 'saturate' must be 0 or 1"),
    ("Cast", 19, [spec((2,))], {"to": 27}, "attribute 'to': element type 27 is not supported"),
    ("BitCast", 26, [spec((2,))], {"to": TensorProto.INT16}, r"float32 \(32 bits\) as int16 \(16 bits\)"),
    ("BitCast", 26, [spec((2,), INT4)], {"to": TensorProto.INT8}, r"int4 \(4 bits\) as int8 \(8 bits\)"),
    ("QuantizeLinear", 25, [spec((2,)), spec(())], {"output_dtype": TensorProto.FLOAT8E8M0},
     "quantized type float8_e8m0fnu .* is not one of"),
    ("QuantizeLinear", 25, [spec((2,)), spec(()), spec((), INT4)], {"output_dtype": TensorProto.UINT4},
     "differs from the zero point's"),
    ("DequantizeLinear", 25, [spec((2,), INT4), spec(()), spec((), UINT4)], {},
     "zero point dtype uint4 differs from X dtype int4"),
    ("DequantizeLinear", 25, [spec((2,), INT4), spec(())], {"output_dtype": TensorProto.INT8},
     r"output type int8 \(output_dtype, else the scale's\) is not float16"),
    ("QuantizeLinear", 25, [spec((2,)), spec((3,)), spec((3,), INT4)], {"axis": 0},
     r"scale shape \(3,\) must be \(\) or \(2,\)"),
])
def test_invalid_nodes_raise_model_error(op, opset, specs, attrs, message):
    kernel = resolve("", op, opset, "bad")(op, "bad", attrs, opset)
    with pytest.raises(ModelError, match=message) as info:
        kernel.prepare(specs, [None] * len(specs))
    assert "'bad'" in str(info.value)


def test_every_lowbit_dtype_is_a_cast_target():
    for dtype in LOWBIT:
        assert run("Cast", [np.ones(3, F32)], {"to": code(dtype)}).dtype == dtype

"""Shape, indexing, cast and resize kernels beyond the ONNX conformance cases: the forms
and attributes those cases leave out checked against onnxruntime, invalid nodes that must
fail with a ModelError naming the node, and shape arithmetic that folds at prepare time.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgerun.runtime.errors import ModelError, UnsupportedOpError
from edgerun.runtime.graph import GraphBuilder
from edgerun.runtime.interpreter import Interpreter
from edgerun.runtime.kernels import TensorSpec, resolve
from tests.runtime.test_kernels import case, check

I64 = np.int64
I32 = np.int32
F32 = np.float32


def i64(*values):
    return np.array(values, I64)


# --- against onnxruntime ------------------------------------------------------------------------
# `consts` lists the inputs that are initializers (known at prepare time).

ORT_CASES = [
    case("Shape", [(2, 3, 4)], {"start": -2}, opset=15),
    case("Size", [(2, 3, 4)], dtype=I32),
    case("Squeeze", [(1, 3, 1, 2)], {"axes": [0, 2]}, opset=1),
    case("Squeeze", [(1, 3, 1, 2)], {}, opset=11),
    case("Squeeze", [(1, 3, 1, 2), i64(-2)], opset=13, consts=(1,)),
    case("Unsqueeze", [(3, 4)], {"axes": [0, -1]}, opset=11),
    case("Unsqueeze", [(3, 4), i64(1, 3)], opset=13, consts=(1,), dtype=I64),
    case("Split", [(6, 4)], {"axis": 0, "split": [2, 4]}, opset=2, outputs=2),
    case("Split", [(3, 6)], {"axis": -1, "split": [1, 2, 3]}, opset=11, outputs=3),
    case("Split", [(3, 7)], {"axis": 1, "num_outputs": 3}, opset=18, outputs=3),
    case("Split", [(5, 2), i64(3, 2)], {}, opset=13, consts=(1,), outputs=2, dtype=I32),
    case("Slice", [(5, 6)], {"starts": [1, -4], "ends": [100, -1], "axes": [0, 1]}, opset=1),
    case("Slice", [(5, 6), i64(-1), i64(-100), i64(1), i64(-2)], opset=10, consts=(1, 2, 3, 4)),
    case("Slice", [(4, 5, 6), i64(5, 0), i64(0, 9), i64(-1, 0), i64(-2, 3)], opset=13, consts=(1, 2, 3, 4)),
    case("Gather", [(4, 5, 3), i64(-1, 0, 2)], {"axis": 1}, opset=13, consts=(1,)),
    case("Gather", [(5,), np.array([[0, 4], [3, -5]], I32)], {}, opset=11, consts=(1,), dtype=I64),
    case("GatherElements", [(3, 4), np.array([[0, -1], [2, 1]], I64)], {"axis": 1}, opset=13, consts=(1,)),
    case("GatherND", [(2, 3, 4), np.array([[1, 2], [0, -1]], I64)], {}, opset=11, consts=(1,)),
    case("GatherND", [(2, 3, 4), np.array([[[2], [0]], [[1], [1]]], I64)], {"batch_dims": 1}, opset=12, consts=(1,)),
    case("ScatterND", [(4, 3), np.array([[1], [3]], I64), (2, 3)], {}, opset=11, consts=(1,)),
    case("ScatterND", [(4, 3), np.array([[1, 2], [1, 2]], I64), (2,)], {"reduction": "add"}, opset=16,
         consts=(1,)),
    case("ScatterElements", [(3, 3), np.array([[1, 0, 2]], I64), (1, 3)], {"axis": 0}, opset=11, consts=(1,)),
    case("ScatterElements", [(3, 3), np.array([[1, 1], [0, 0]], I64), (2, 2)], {"axis": 1, "reduction": "mul"},
         opset=16, consts=(1,)),
    case("Expand", [(3, 1), i64(2, 1, 4)], opset=8, consts=(1,)),
    case("Expand", [(2, 3), i64(1, 1)], opset=13, consts=(1,), dtype=I32),
    case("Tile", [(2, 3), i64(2, 3)], opset=6, consts=(1,)),
    case("Tile", [(2, 3), i64(0, 1)], opset=13, consts=(1,), dtype=I64),
    case("Pad", [(3, 4)], {"pads": [1, 2, 0, 1], "mode": "reflect"}, opset=2),
    case("Pad", [(3, 4)], {"pads": [2, 0, 2, 1], "value": 1.5}, opset=2),
    case("Pad", [(3, 4), i64(0, -1, 2, 2), np.array(7, I32)], {}, opset=11, consts=(1,), dtype=I32),
    case("Pad", [(2, 3, 4), i64(1, 0, 2, 0, 1, 3)], {"mode": "edge"}, opset=13, consts=(1,)),
    case("Pad", [(2, 3, 4), i64(1, 1, 2, 0), None, i64(-1, 0)], {"mode": "wrap"}, opset=19, consts=(1, 3)),
    case("DepthToSpace", [(1, 8, 2, 3)], {"blocksize": 2}, opset=1),
    case("DepthToSpace", [(2, 8, 2, 3)], {"blocksize": 2, "mode": "CRD"}, opset=13),
    case("SpaceToDepth", [(2, 2, 4, 6)], {"blocksize": 2}, opset=13),
    case("Resize", [(1, 2, 3, 4), np.array([], F32), np.array([1, 1, 2, 1.5], F32)], {"mode": "linear"},
         opset=11, consts=(1, 2)),
    case("Resize", [(1, 1, 4, 4), None, np.array([1, 1, 0.5, 0.75], F32)], {"mode": "cubic"}, opset=13,
         consts=(2,)),
    case("Resize", [(1, 1, 3, 4), None, None, i64(5, 7)],
         {"mode": "nearest", "axes": [2, 3], "coordinate_transformation_mode": "asymmetric",
          "nearest_mode": "floor"}, opset=18, consts=(3,)),
    case("Resize", [(2, 3, 4), None, None, i64(2, 5, 3)],
         {"mode": "linear", "coordinate_transformation_mode": "align_corners"}, opset=13, consts=(3,)),
    case("Resize", [(1, 1, 2, 3), np.array([1, 1, 2, 3], F32)], {"mode": "nearest"}, opset=10, consts=(1,)),
    case("Upsample", [(1, 1, 2, 3), np.array([1, 1, 2, 3], F32)], {"mode": "nearest"}, opset=9, consts=(1,)),
    case("Upsample", [(1, 2, 2, 3)], {"mode": "linear", "scales": [1.0, 1.0, 2.0, 2.0]}, opset=7),
    case("Cast", [(3, 4)], {"to": 7}, opset=13),
    case("Cast", [(3, 4)], {"to": 9}, opset=13),
    case("Cast", [(3, 4)], {"to": 1}, opset=13, dtype=I32),
    case("CastLike", [(3, 4), np.zeros(1, np.int16)], {}, opset=15, dtype=I32, consts=(1,)),
    case("ConstantOfShape", [i64(2, 3)], {}, opset=9, consts=(0,)),
    case("Range", [np.array(10, I32), np.array(-3, I32), np.array(-4, I32)], {}, opset=11, consts=(0, 1, 2)),
    case("Range", [np.array(1.0, F32), np.array(2.0, F32), np.array(0.3, F32)], {}, opset=11, consts=(0, 1, 2)),
    case("EyeLike", [(3, 5)], {"k": 2, "dtype": 6}, opset=9),
    case("EyeLike", [(4, 3)], {"k": -1}, opset=9, dtype=I64),
    case("OneHot", [np.array([[0, 2], [-1, 5]], I64), np.array(3, I64), np.array([0, 9], F32)],
         {"axis": 0}, opset=11, consts=(0, 1, 2)),
    case("NonZero", [np.array([[0, 1, 0], [2, 0, 3]], I32)], {}, opset=13, consts=(0,)),
    case("Compress", [(3, 2), np.array([False, True, True], bool)], {}, opset=11, consts=(1,)),
    case("Compress", [(3, 4), np.array([True, False, True], bool)], {"axis": -1}, opset=11, consts=(1,)),
    case("ReverseSequence", [(3, 4, 2), i64(1, 3, 0)], {"batch_axis": 0, "time_axis": 1}, opset=10),
    case("Unique", [np.array([3, 1, 3, 2, 1, 7], F32)], {"sorted": 0}, opset=11, consts=(0,), outputs=4),
    case("Unique", [np.array([[1, 0], [2, 1], [1, 0]], I64)], {"axis": 0}, opset=11, consts=(0,), outputs=4),
    case("CenterCropPad", [(5, 4, 3), i64(2, 7)], {"axes": [0, -2]}, opset=18, consts=(1,)),
    case("Col2Im", [(1, 8, 9), i64(4, 5), i64(2, 2)], {"strides": [2, 2], "pads": [1, 0, 1, 1]}, opset=18,
         consts=(1, 2)),
]


@pytest.mark.parametrize("op, shapes, attrs, opset, dtype, consts, outputs", ORT_CASES)
def test_shape_family_matches_onnxruntime(op, shapes, attrs, opset, dtype, consts, outputs):
    check(op, shapes, attrs, opset, dtype, consts, outputs)


def test_split_into_equal_parts_takes_the_node_output_count():
    x = np.arange(12, dtype=F32).reshape(6, 2)
    g = GraphBuilder("g", opset=13)
    parts = g.op("Split", [g.input("x", F32, (6, 2))], name="sp", num_outputs=3, axis=0)
    for i, part in enumerate(parts):
        g.output(part, f"y{i}")
    out = Interpreter(g.build()).run({"x": x})
    for i, want in enumerate(np.split(x, 3)):
        np.testing.assert_array_equal(out[f"y{i}"], want)
    with pytest.raises(ModelError, match=r"node 'sp' \(Split\): cannot split a dimension of 6 into 4 equal parts"):
        kernel = resolve("", "Split", 13, "sp")("Split", "sp", {}, 13)
        kernel.num_outputs = 4
        kernel.prepare([TensorSpec(x.dtype, x.shape)], [None])


# --- invalid nodes ------------------------------------------------------------------------------


def _run_graph(build, feeds):
    g = GraphBuilder("g", opset=17)
    x = g.input("x", F32, (2, 3))
    g.output(build(g, x), "y")
    return Interpreter(g.build()).run({"x": np.zeros((2, 3), F32), **feeds})["y"]


@pytest.mark.parametrize("build, message", [
    (lambda g, x: g.op("Reshape", [x, g.constant("s", i64(4, 2))], name="rs"),
     r"node 'rs' \(Reshape\): cannot reshape X shape \(2, 3\) \(6 elements\) to \[4, 2\]"),
    (lambda g, x: g.op("Slice", [x, g.constant("a", i64(0)), g.constant("b", i64(2)), g.constant("c", i64(0)),
                                 g.constant("d", i64(0))], name="sl"),
     r"node 'sl' \(Slice\): steps may not be 0"),
    (lambda g, x: g.op("Expand", [x, g.constant("s", i64(4, 1, 2))], name="ex"),
     r"node 'ex' \(Expand\): cannot expand X shape \(2, 3\) to \[4, 1, 2\]"),
    (lambda g, x: g.op("Gather", [x, g.constant("i", i64(0, 3))], name="ga", axis=1),
     r"node 'ga' \(Gather\): indices of axis 1: index 3 is out of range \[-3, 2\]"),
    (lambda g, x: g.op("Cast", [x], name="ca", to=27),
     r"node 'ca' \(Cast\): attribute 'to': element type 27 is not supported"),
    (lambda g, x: g.op("Squeeze", [x, g.constant("a", i64(1))], name="sq"),
     r"node 'sq' \(Squeeze\): cannot squeeze axis 1 of X shape \(2, 3\)"),
])
def test_invalid_nodes_fail_at_load_naming_the_node(build, message):
    with pytest.raises(ModelError, match=message):
        _run_graph(build, {})


def test_gather_index_out_of_range_at_run_time_names_the_node():
    g = GraphBuilder("g", opset=17)
    x = g.input("x", F32, (4, 3))
    idx = g.input("idx", I64, (2,))
    g.output(g.op("Gather", [x, idx], name="lookup"), "y")
    it = Interpreter(g.build())
    np.testing.assert_array_equal(it.run({"x": np.eye(4, 3, dtype=F32), "idx": i64(3, -4)})["y"],
                                  np.eye(4, 3, dtype=F32)[[3, 0]])
    with pytest.raises(ModelError, match=r"node 'lookup' \(Gather\): indices of axis 0: index -5 is out of range"):
        it.run({"x": np.zeros((4, 3), F32), "idx": i64(0, -5)})


def test_scatter_index_out_of_range_is_a_model_error_naming_the_node():
    g = GraphBuilder("g", opset=18)
    x = g.input("x", F32, (3,))
    idx = g.input("idx", I64, (1, 1))
    g.output(g.op("ScatterND", [x, idx, g.constant("u", np.ones(1, F32))], name="put"), "y")
    with pytest.raises(ModelError, match=r"node 'put' \(ScatterND\): indices of axis 0: index 3"):
        Interpreter(g.build()).run({"x": np.zeros(3, F32), "idx": np.array([[3]], I64)})


# --- shape arithmetic folds at prepare time -----------------------------------------------------


def _flatten_by_shape_arithmetic():
    """y = reshape(x, concat(shape(x)[0:1], [12])): batch-preserving flatten, as exporters write it."""
    g = GraphBuilder("flatten_by_shape", opset=17)
    x = g.input("x", F32, (-1, 3, 4))
    batch = g.op("Gather", [g.op("Shape", [x], name="shape"), g.constant("zero", i64(0))], name="gather")
    target = g.op("Concat", [batch, g.constant("rest", i64(12))], name="concat", axis=0)
    g.output(g.op("Relu", [g.op("Reshape", [x, target], name="reshape")], name="relu"), "y")
    return g.build()


def test_shape_gather_concat_reshape_folds_and_follows_the_batch_size():
    it = Interpreter(_flatten_by_shape_arithmetic())
    plan = it._plans["serving_default"]
    assert not plan.eager
    assert [node.op_type for *_, node in plan.prepared.steps] == ["Reshape", "Relu"]
    it.resize_input("x", (5, 3, 4))
    assert [node.op_type for *_, node in plan.prepared.steps] == ["Reshape", "Relu"]
    x = np.arange(-30, 30, dtype=F32).reshape(5, 3, 4)
    np.testing.assert_array_equal(it.run({"x": x})["y"], np.maximum(x.reshape(5, 12), 0))
    x2 = x[:2]  # and again through run's own re-prepare
    np.testing.assert_array_equal(it.run({"x": x2})["y"], np.maximum(x2.reshape(2, 12), 0))


# --- fuzzing: mutated valid nodes fail only with ModelError -------------------------------------
# (op, input shapes, attributes, opset, {input: dtype} (default float32), inputs given as constants)

TEMPLATES = [
    ("Reshape", [(2, 3), (2,)], {}, 14, {1: I64}, (1,)), ("Flatten", [(2, 3, 4)], {"axis": 2}, 13, {}, ()),
    ("Squeeze", [(1, 3), (1,)], {}, 13, {1: I64}, (1,)), ("Unsqueeze", [(3,), (1,)], {}, 13, {1: I64}, (1,)),
    ("Squeeze", [(1, 3)], {"axes": [0]}, 11, {}, ()), ("Unsqueeze", [(3,)], {"axes": [0]}, 1, {}, ()),
    ("Transpose", [(2, 3)], {"perm": [1, 0]}, 13, {}, ()), ("Concat", [(2, 3), (1, 3)], {"axis": 0}, 13, {}, ()),
    ("Split", [(4, 3), (2,)], {"axis": 0}, 13, {1: I64}, (1,)), ("Split", [(4, 3)], {"num_outputs": 2}, 18, {}, ()),
    ("Slice", [(4, 3), (1,), (1,), (1,), (1,)], {}, 13, dict.fromkeys(range(1, 5), I64), (1, 2, 3, 4)),
    ("Slice", [(4, 3)], {"starts": [1], "ends": [3]}, 1, {}, ()),
    ("Gather", [(4, 3), (2,)], {"axis": 0}, 13, {1: I64}, ()),
    ("GatherElements", [(3, 3), (2, 3)], {"axis": 1}, 13, {1: I64}, ()),
    ("GatherND", [(3, 3), (2, 2)], {"batch_dims": 0}, 13, {1: I64}, ()),
    ("ScatterND", [(3, 3), (2, 1), (2, 3)], {"reduction": "add"}, 18, {1: I64}, ()),
    ("ScatterElements", [(3, 3), (2, 3), (2, 3)], {"axis": 0}, 18, {1: I64}, ()),
    ("Expand", [(3, 1), (2,)], {}, 13, {1: I64}, (1,)), ("Tile", [(2, 3), (2,)], {}, 13, {1: I64}, (1,)),
    ("Pad", [(2, 3), (4,)], {"mode": "reflect"}, 19, {1: I64}, (1,)),
    ("Pad", [(2, 3)], {"pads": [0, 1, 1, 0]}, 2, {}, ()),
    ("Resize", [(1, 1, 2, 3), (0,), (4,)], {"mode": "linear"}, 19, {}, (1, 2)),
    ("Resize", [(1, 1, 2, 3), (0,), (0,), (4,)], {"mode": "cubic", "keep_aspect_ratio_policy": "not_larger"}, 19,
     {3: I64}, (1, 2, 3)),
    ("Upsample", [(1, 1, 2, 2)], {"scales": [1.0, 1.0, 2.0, 2.0]}, 7, {}, ()),
    ("DepthToSpace", [(1, 4, 2, 2)], {"blocksize": 2}, 13, {}, ()),
    ("SpaceToDepth", [(1, 1, 4, 4)], {"blocksize": 2}, 13, {}, ()),
    ("Range", [(), (), ()], {}, 11, {}, (0, 1, 2)), ("ConstantOfShape", [(2,)], {}, 9, {0: I64}, (0,)),
    ("Cast", [(3,)], {"to": 7}, 13, {}, ()), ("CastLike", [(3,), (1,)], {}, 15, {1: I32}, ()),
    ("OneHot", [(3,), (), (2,)], {"axis": -1}, 11, {0: I64, 1: I64}, (1,)),
    ("NonZero", [(2, 3)], {}, 13, {}, (0,)), ("Compress", [(3, 2), (3,)], {"axis": 0}, 11, {1: np.bool_}, (1,)),
    ("EyeLike", [(3, 4)], {"k": 1}, 9, {}, ()), ("ReverseSequence", [(3, 2), (2,)], {}, 10, {1: I64}, ()),
    ("Unique", [(6,)], {"sorted": 1}, 11, {}, (0,)), ("CenterCropPad", [(4, 4), (2,)], {}, 18, {1: I64}, (1,)),
    ("Col2Im", [(1, 4, 4), (2,), (2,)], {"strides": [1, 1]}, 18, {1: I64, 2: I64}, (1, 2)),
    ("Shape", [(2, 3)], {"start": 1}, 15, {}, ()), ("Size", [(2, 3)], {}, 13, {}, ()),
]
ATTR_KEYS = st.sampled_from(["axis", "axes", "perm", "split", "num_outputs", "starts", "ends", "batch_dims",
                             "reduction", "mode", "pads", "value", "blocksize", "to", "k", "dtype", "sorted",
                             "batch_axis", "time_axis", "strides", "dilations", "start", "end", "allowzero",
                             "coordinate_transformation_mode", "nearest_mode", "antialias", "scales"])
ATTR_VALUES = st.one_of(
    st.integers(-4, 5), st.sampled_from([2**40, True]), st.lists(st.integers(-4, 4), max_size=4),
    st.sampled_from(["DCR", "CRD", "edge", "wrap", "max", "cubic", "align_corners", "ceil", "", b"\xff"]),
    st.floats(), st.none(), st.lists(st.floats(-2, 4), max_size=4),
)
DTYPES = st.sampled_from([np.float32, np.float64, np.float16, np.int64, np.int32, np.bool_, np.uint8])
TOO_BIG = 1 << 24  # bytes: a mutated shape may ask for huge outputs (the plan refuses those)


def _value(spec: TensorSpec, rng: np.random.Generator) -> np.ndarray:
    if spec.dtype.kind == "f":
        return rng.standard_normal(spec.shape).astype(spec.dtype)
    return rng.integers(-3, 6, spec.shape).astype(spec.dtype)


@st.composite
def mutated_nodes(draw):
    op, shapes, attrs, opset, dtypes, consts = draw(st.sampled_from(TEMPLATES))
    specs = [TensorSpec(np.dtype(dtypes.get(i, F32)), s) for i, s in enumerate(shapes)]
    attrs = dict(attrs)
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["attr", "attr", "drop", "shape", "dtype", "opset", "omit"]))
        i = draw(st.integers(0, len(specs) - 1))
        if specs[i] is None and kind in ("shape", "dtype"):
            continue
        if kind == "attr":
            attrs[draw(ATTR_KEYS)] = draw(ATTR_VALUES)
        elif kind == "drop" and attrs:
            attrs.pop(draw(st.sampled_from(sorted(attrs))))
        elif kind == "shape":
            specs[i] = TensorSpec(specs[i].dtype, tuple(draw(st.lists(st.integers(0, 4), max_size=4))))
        elif kind == "dtype":
            specs[i] = TensorSpec(np.dtype(draw(DTYPES)), specs[i].shape)
        elif kind == "opset":
            opset = draw(st.integers(1, 28))
        elif kind == "omit" and i > 0:
            specs[i] = None
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    values = [_value(s, rng) if i in consts and s is not None else None for i, s in enumerate(specs)]
    return op, opset, specs, values, attrs, rng


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(node=mutated_nodes())
def test_mutated_shape_nodes_fail_only_with_model_error(node):
    op, opset, specs, values, attrs, rng = node
    try:
        kernel = resolve("", op, opset, "fuzz")(op, "fuzz", attrs, opset)
        out_specs = kernel.prepare(specs, values)
    except (UnsupportedOpError, ModelError):  # ValueNeeded is a ModelError too
        return
    assert all(isinstance(d, int) and d >= 0 for s in out_specs for d in s.shape)
    if sum(s.nbytes for s in out_specs) > TOO_BIG:
        return
    arrays = [v if v is not None else None if s is None else _value(s, rng)
              for s, v in zip(specs, values, strict=True)]
    try:
        with np.errstate(all="ignore"):
            kernel.run(arrays, [np.empty(s.shape, s.dtype) for s in out_specs])
    except ModelError:
        pass

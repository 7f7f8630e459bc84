"""Sequences and optionals end to end: the kernels against onnxruntime on cases the ONNX
conformance suite does not cover, the .erm value kinds (round trip, an old file, a bad kind),
the interpreter's input checks and signature metadata, a planned prefix with a sequence tail,
and the errors bad inputs get."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from edgerun.converters.onnx_import import from_onnx
from edgerun.runtime import Interpreter, serialize
from edgerun.runtime.errors import EdgerunError, InputError, ModelError
from edgerun.runtime.graph import GraphBuilder, ValueKind
from edgerun.runtime.loader import load_model
from edgerun.runtime.schema.fb.Model import Model

FLOAT, INT64, INT32 = TensorProto.FLOAT, TensorProto.INT64, TensorProto.INT32
LEGACY = Path(__file__).parent / "data" / "legacy_v1_dtypes.erm"
RNG = np.random.default_rng(7)


# ---------------------------------------------------------------- helpers
def seq(name, elem=FLOAT, shape=None):
    return helper.make_value_info(name, helper.make_sequence_type_proto(helper.make_tensor_type_proto(elem, shape)))


def opt(name, inner):
    return helper.make_value_info(name, helper.make_optional_type_proto(inner))


def tensor(name, elem=FLOAT, shape=None):
    return helper.make_tensor_value_info(name, elem, shape)


def onnx_model(nodes, inputs, outputs, opset=18, initializers=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def ours(model, feeds):
    return Interpreter(serialize(from_onnx(model))).run(feeds)


def theirs(model, feeds):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds), strict=True))


def assert_same(got, want, where="output"):
    if isinstance(want, list):
        assert isinstance(got, list), f"{where}: {type(got).__name__}, expected a list"
        assert len(got) == len(want), f"{where}: {len(got)} elements, expected {len(want)}"
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            assert_same(g, w, f"{where}[{i}]")
        return
    assert isinstance(got, np.ndarray), f"{where}: {type(got).__name__}"
    assert (got.dtype, got.shape) == (want.dtype, want.shape), \
        f"{where}: {got.dtype}{got.shape}, expected {want.dtype}{want.shape}"
    np.testing.assert_allclose(got, want, rtol=1e-6, err_msg=where)


def floats(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def node(op, inputs, outputs, **attrs):
    return helper.make_node(op, inputs, outputs, **attrs)


# ------------------------------------------------------- kernels vs onnxruntime
def _construct_at(position, dtype=np.int64):
    model = onnx_model(
        [node("SequenceConstruct", ["a", "b", "c"], ["s"]), node("SequenceAt", ["s", "p"], ["y"])],
        [tensor("a", FLOAT, [2, 3]), tensor("b", FLOAT, [1, 3]), tensor("c", FLOAT, [4, 3]),
         tensor("p", INT64 if dtype == np.int64 else INT32, [])],
        [tensor("y", FLOAT)])
    return model, {"a": floats(2, 3), "b": floats(1, 3), "c": floats(4, 3), "p": np.array(position, dtype)}


def _insert_erase(insert_at, erase_at):
    nodes = [node("SequenceEmpty", [], ["e"], dtype=INT32), node("SequenceInsert", ["e", "a"], ["s1"]),
             node("SequenceInsert", ["s1", "b"], ["s2"]), node("SequenceInsert", ["s2", "c", "i"], ["s3"]),
             node("SequenceErase", ["s3", "r"], ["s4"]), node("SequenceErase", ["s4"], ["s5"]),
             node("SequenceLength", ["s3"], ["n3"]), node("SequenceLength", ["s5"], ["n5"])]
    model = onnx_model(nodes, [tensor("a", INT32, [3]), tensor("b", INT32, [2, 2]), tensor("c", INT32, []),
                               tensor("i", INT64, []), tensor("r", INT64, [])],
                       [seq("s3", INT32), seq("s5", INT32), tensor("n3", INT64, []), tensor("n5", INT64, [])])
    return model, {"a": np.arange(3, dtype=np.int32), "b": np.arange(4, dtype=np.int32).reshape(2, 2),
                   "c": np.array(9, np.int32), "i": np.array(insert_at, np.int64), "r": np.array(erase_at, np.int64)}


def _split(shape, axis, split=None, keepdims=1):
    inputs = [tensor("x", FLOAT, list(shape))]
    feeds = {"x": floats(*shape)}
    names = ["x"]
    if split is not None:
        split = np.asarray(split)
        inputs.append(tensor("split", INT64 if split.dtype == np.int64 else INT32, list(split.shape)))
        feeds["split"], names = split, ["x", "split"]
    nodes = [node("SplitToSequence", names, ["s"], axis=axis, keepdims=keepdims), node("SequenceLength", ["s"], ["n"])]
    return onnx_model(nodes, inputs, [seq("s"), tensor("n", INT64, [])]), feeds


def _concat(shapes, axis, new_axis):
    names = [f"x{i}" for i in range(len(shapes))]
    nodes = [node("SequenceConstruct", names, ["s"]), node("ConcatFromSequence", ["s"], ["y"], axis=axis,
                                                               new_axis=new_axis)]
    model = onnx_model(nodes, [tensor(n, FLOAT, list(s)) for n, s in zip(names, shapes, strict=True)], [tensor("y")])
    return model, {n: floats(*s) for n, s in zip(names, shapes, strict=True)}


def _sequence_map():
    body = helper.make_graph(
        [node("Mul", ["e", "w"], ["m"]), node("Shape", ["e"], ["shape"])], "body",
        [tensor("e", FLOAT, [None, 3]), tensor("w", FLOAT, [3])], [tensor("m", FLOAT), tensor("shape", INT64)])
    nodes = [node("SplitToSequence", ["x", "split"], ["s"], axis=0), node("SequenceMap", ["s", "w"], ["ms", "shapes"],
                                                                           body=body)]
    model = onnx_model(nodes, [tensor("x", FLOAT, [5, 3]), tensor("split", INT64, [3]), tensor("w", FLOAT, [3])],
                       [seq("ms"), seq("shapes", INT64)], opset=17)
    return model, {"x": floats(5, 3), "split": np.array([2, 0, 3], np.int64), "w": floats(3)}


def _optionals(empty):
    nodes = [node("Optional", [] if empty else ["x"], ["o"], **({"type": helper.make_tensor_type_proto(FLOAT, [])}
                                                               if empty else {})),
             node("OptionalHasElement", ["o"], ["has"])]
    outputs = [tensor("has", TensorProto.BOOL, [])]
    if not empty:
        nodes.append(node("OptionalGetElement", ["o"], ["y"]))
        outputs.append(tensor("y", FLOAT))
    return onnx_model(nodes, [tensor("x", FLOAT, [2])], outputs), {"x": floats(2)}


def _optional_sequence():
    nodes = [node("SequenceConstruct", ["x", "x"], ["s"]), node("Optional", ["s"], ["o"]),
             node("OptionalGetElement", ["o"], ["got"]), node("OptionalHasElement", ["s"], ["has"]),
             node("Identity", ["got"], ["same"])]
    return onnx_model(nodes, [tensor("x", FLOAT, [2, 2])], [seq("same"), tensor("has", TensorProto.BOOL, [])]), \
        {"x": floats(2, 2)}


def _if_sequences(flag):
    then = helper.make_graph([node("SequenceConstruct", ["x", "x"], ["t"])], "then", [], [seq("t")])
    other = helper.make_graph([node("SplitToSequence", ["x"], ["o"], axis=1, keepdims=0)], "else", [], [seq("o")])
    nodes = [node("If", ["c"], ["s"], then_branch=then, else_branch=other), node("SequenceLength", ["s"], ["n"])]
    model = onnx_model(nodes, [tensor("c", TensorProto.BOOL, []), tensor("x", FLOAT, [2, 3])],
                       [seq("s"), tensor("n", INT64, [])])
    return model, {"c": np.array(flag), "x": floats(2, 3)}


def _loop_sequence():
    body = helper.make_graph(
        [node("Identity", ["cond_in"], ["cond_out"]), node("Cast", ["i"], ["f"], to=FLOAT),
         node("Mul", ["x", "f"], ["scaled"]), node("SequenceInsert", ["s_in", "scaled", "zero"], ["s_out"])],
        "body", [tensor("i", INT64, []), tensor("cond_in", TensorProto.BOOL, []), seq("s_in")],
        [tensor("cond_out", TensorProto.BOOL, []), seq("s_out")],
        initializer=[helper.make_tensor("zero", INT64, [], [0])])
    nodes = [node("SequenceEmpty", [], ["empty"]), node("Loop", ["n", "", "empty"], ["s"], body=body),
             node("ConcatFromSequence", ["s"], ["y"], axis=0, new_axis=1)]
    model = onnx_model(nodes, [tensor("n", INT64, []), tensor("x", FLOAT, [3])], [seq("s"), tensor("y")])
    return model, {"n": np.array(4, np.int64), "x": floats(3)}


CASES = {
    "at_last_negative": lambda: _construct_at(-1),
    "at_first_negative": lambda: _construct_at(-3),
    "at_int32": lambda: _construct_at(1, np.int32),
    "insert_front_erase_middle": lambda: _insert_erase(0, 1),
    "insert_end_erase_negative": lambda: _insert_erase(2, -3),
    "insert_negative_erase_first": lambda: _insert_erase(-1, 0),
    "split_scalar_remainder": lambda: _split((3, 10), -1, np.array(4, np.int64)),
    "split_lengths_with_zero": lambda: _split((6, 2), 0, np.array([1, 0, 5], np.int32)),
    "split_ones_no_keepdims": lambda: _split((2, 3, 4), 1, keepdims=0),
    "split_ones_keepdims": lambda: _split((2, 3), 1),
    "concat_axis1_ragged": lambda: _concat([(2, 1, 3), (2, 4, 3), (2, 2, 3)], 1, 0),
    "concat_negative_axis": lambda: _concat([(2, 3), (2, 5)], -1, 0),
    "stack_new_last_axis": lambda: _concat([(2, 3), (2, 3), (2, 3)], -1, 1),
    "stack_axis0": lambda: _concat([(4,), (4,)], 0, 1),
    "sequence_map_two_outputs": _sequence_map,
    "optional_tensor": lambda: _optionals(False),
    "optional_empty": lambda: _optionals(True),
    "optional_sequence": _optional_sequence,
    "if_then_sequence": lambda: _if_sequences(True),
    "if_else_split": lambda: _if_sequences(False),
    "loop_builds_sequence": _loop_sequence,
}


@pytest.mark.parametrize("name", CASES)
def test_kernel_matches_onnxruntime(name):
    model, feeds = CASES[name]()
    got, want = ours(model, feeds), theirs(model, feeds)
    assert set(got) == set(want)
    for key, value in want.items():
        assert_same(got[key], value, key)


def test_sequence_input_against_onnxruntime():
    """A sequence graph input (element shapes differ) read by SequenceAt, SequenceLength and
    ConcatFromSequence, and passed through Identity to a sequence output."""
    model = onnx_model(
        [node("SequenceAt", ["s", "p"], ["at"]), node("SequenceLength", ["s"], ["n"]),
         node("ConcatFromSequence", ["s"], ["cat"], axis=0), node("Identity", ["s"], ["same"])],
        [seq("s", FLOAT, [None, 2]), tensor("p", INT64, [])],
        [tensor("at"), tensor("n", INT64, []), tensor("cat"), seq("same", FLOAT, [None, 2])])
    feeds = {"s": [floats(1, 2), floats(3, 2), floats(2, 2)], "p": np.array(-2, np.int64)}
    got, want = ours(model, feeds), theirs(model, feeds)
    for key, value in want.items():
        assert_same(got[key], value, key)


def test_loop_carrying_an_empty_optional_against_onnxruntime():
    """The carried value starts as an empty optional (a None input): the body makes a sequence
    when it finds none, else appends to the one it has."""
    opt_seq = opt("o_in", seq("_").type)
    start = helper.make_graph([node("SequenceConstruct", ["x"], ["fresh"])], "start", [], [seq("fresh")])
    keep = helper.make_graph([node("OptionalGetElement", ["o_in"], ["kept"])], "keep", [], [seq("kept")])
    body = helper.make_graph(
        [node("Identity", ["c_in"], ["c_out"]), node("OptionalHasElement", ["o_in"], ["has"]),
         node("If", ["has"], ["s"], then_branch=keep, else_branch=start),
         node("SequenceInsert", ["s", "x"], ["s_out"]), node("Optional", ["s_out"], ["o_out"])],
        "body", [tensor("i", INT64, []), tensor("c_in", TensorProto.BOOL, []), opt_seq],
        [tensor("c_out", TensorProto.BOOL, []), opt("o_out", seq("_").type)])
    model = onnx_model([node("Loop", ["n", "", "o"], ["r"], body=body), node("OptionalGetElement", ["r"], ["y"])],
                       [tensor("n", INT64, []), tensor("x", FLOAT, [2]), opt("o", seq("_").type)], [seq("y")])
    for start_value in (None, [floats(3)]):
        feeds = {"n": np.array(2, np.int64), "x": floats(2), "o": start_value}
        assert_same(ours(model, feeds)["y"], theirs(model, feeds)["y"], "y")


# ------------------------------------------------ format, interpreter, plans
def _sequence_graph():
    """y = ConcatFromSequence(SequenceInsert(seq, Relu(x))); `out` = that sequence."""
    g = GraphBuilder("seq", opset=17)
    s = g.input("seq", np.float32, (-1, 3), kind="sequence")
    x = g.input("x", np.float32, (-1, 3))
    relu = g.op("Relu", [x], name="relu")
    inserted = g.op("SequenceInsert", [s, relu], name="insert")
    g.output(g.op("ConcatFromSequence", [inserted], axis=0, name="concat"), "y")
    g.output(inserted, "out")
    inserted.kind = ValueKind.SEQUENCE
    return g.build()


def test_sequence_values_round_trip_through_erm():
    graph = load_model(serialize(_sequence_graph()))
    kinds = {v.name: v.kind for v in graph.values()}
    assert kinds["seq"] == kinds["out"] == ValueKind.SEQUENCE and kinds["x"] == ValueKind.TENSOR
    assert graph.signatures["serving_default"].inputs["seq"].shape == (-1, 3)


def test_interpreter_runs_a_sequence_input_and_output():
    it = Interpreter(serialize(_sequence_graph()))
    info = it.signatures["serving_default"]
    assert (info.inputs["seq"].kind, info.inputs["seq"].dtype) == ("sequence", np.float32)
    assert info.inputs["x"].kind == "tensor" and info.outputs["out"].kind == "sequence"
    items, x = [floats(2, 3), floats(1, 3)], floats(4, 3)
    result = it.run({"seq": items, "x": x})
    np.testing.assert_array_equal(result["y"], np.concatenate([*items, np.maximum(x, 0)]))
    assert len(result["out"]) == 3 and all(isinstance(a, np.ndarray) for a in result["out"])
    result["out"][0][...] = 99  # outputs are the caller's: the next run is unaffected
    again = it.run({"seq": (items[0],), "x": x[:1]})  # a tuple is a sequence too
    np.testing.assert_array_equal(again["y"], np.concatenate([items[0], np.maximum(x[:1], 0)]))


def test_a_planned_prefix_runs_before_the_sequence_tail():
    it = Interpreter(serialize(_sequence_graph()))
    plan = it._plans["serving_default"]
    assert not plan.eager and len(plan.prepared.steps) == 1  # Relu, in the arena
    assert [n.op_type for n, _ in plan.prepared.tail] == ["SequenceInsert", "ConcatFromSequence"]
    for rows in (2, 5):  # a new dynamic size re-prepares the prefix; the tail follows
        x = floats(rows, 3)
        np.testing.assert_array_equal(it.run({"seq": [], "x": x})["y"], np.maximum(x, 0))
    assert len(plan.prepared.steps) == 1


def test_an_old_file_loads_with_every_value_a_tensor():
    graph = load_model(LEGACY)
    assert graph.values() and all(v.kind == ValueKind.TENSOR for v in graph.values())
    outputs = Interpreter(LEGACY).run({"x": np.ones((2, 3), np.float32)})
    assert outputs and all(isinstance(a, np.ndarray) for a in outputs.values())


def test_optional_inputs_may_be_empty():
    g = GraphBuilder("opt", opset=18)
    o = g.input("o", np.int32, (2,), kind="optional_tensor")
    g.output(g.op("OptionalHasElement", [o], name="check"), "has")
    it = Interpreter(g.build())
    assert it.signatures["serving_default"].inputs["o"].kind == "optional_tensor"
    assert it.run({"o": None})["has"] == np.array(False)
    assert it.run({"o": np.array([1, 2], np.int32)})["has"] == np.array(True)
    with pytest.raises(InputError, match=r"input 'o': expected shape \(2\), got \(3,\)"):
        it.run({"o": np.zeros(3, np.int32)})


def test_optional_sequence_output_of_an_if_through_the_interpreter():
    then = helper.make_graph([node("Optional", [], ["e"], type=helper.make_sequence_type_proto(
        helper.make_tensor_type_proto(INT64, [])))], "then", [], [opt("e", seq("_", INT64).type)])
    other = helper.make_graph([node("SequenceConstruct", ["x"], ["s"]), node("Optional", ["s"], ["full"])],
                              "else", [], [opt("full", seq("_", INT64).type)])
    model = onnx_model([node("If", ["c"], ["r"], then_branch=then, else_branch=other)],
                       [tensor("c", TensorProto.BOOL, []), tensor("x", INT64, [2])], [opt("r", seq("_", INT64).type)])
    it = Interpreter(serialize(from_onnx(model)))
    assert it.signatures["serving_default"].outputs["r"].kind == "optional_sequence"
    assert it.run({"c": np.array(True), "x": np.arange(2)})["r"] is None
    np.testing.assert_array_equal(it.run({"c": np.array(False), "x": np.arange(2)})["r"], [np.arange(2)])


def test_converter_reads_sequence_and_optional_value_infos():
    model = onnx_model([node("Identity", ["s"], ["t"]), node("Identity", ["o"], ["p"])],
                       [seq("s", INT64, [3]), opt("o", seq("_", FLOAT).type)],
                       [seq("t", INT64), opt("p", seq("_", FLOAT).type)])
    graph = from_onnx(model)
    assert [(v.kind, v.dtype, v.shape) for v in graph.inputs] == [
        (ValueKind.SEQUENCE, np.int64, (3,)), (ValueKind.OPTIONAL_SEQUENCE, np.float32, None)]
    assert [v.kind for v in graph.outputs] == [ValueKind.SEQUENCE, ValueKind.OPTIONAL_SEQUENCE]


# ------------------------------------------------------------- bad inputs
def _insert_model():
    return onnx_model([node("SequenceInsert", ["s", "t", "p"], ["out"]), node("SequenceAt", ["out", "q"], ["y"])],
                      [seq("s", FLOAT, [None]), tensor("t", FLOAT, [None]), tensor("p", INT64, []),
                       tensor("q", INT64, [])], [tensor("y")])


@pytest.mark.parametrize("feeds,error,message", [
    ({"s": [np.zeros(2, np.float32)], "t": np.ones(1, np.float32), "p": 0, "q": 5}, ModelError,
     r"\(SequenceAt\): position 5 is out of range for a sequence of 2 elements \(valid: -2\.\.1\)"),
    ({"s": [np.zeros(2, np.float32)], "t": np.ones(1, np.float32), "p": 2, "q": 0}, ModelError,
     r"\(SequenceInsert\): position 2 is out of range for a sequence of 1 elements \(valid: -1\.\.1\)"),
    ({"s": np.zeros((2, 2), np.float32), "t": np.ones(1, np.float32), "p": 0, "q": 0}, InputError,
     r"input 's': expected a sequence \(a list of float32 arrays\), got ndarray"),
    ({"s": [np.zeros(2, np.float32), np.zeros(2, np.int64)], "t": np.ones(1, np.float32), "p": 0, "q": 0},
     InputError, r"input 's' element 1: expected dtype float32, got int64"),
    ({"s": [np.zeros((2, 2), np.float32)], "t": np.ones(1, np.float32), "p": 0, "q": 0}, InputError,
     r"input 's' element 0: expected shape \(\?\), got \(2, 2\)"),
    ({"s": [None], "t": np.ones(1, np.float32), "p": 0, "q": 0}, InputError,
     r"input 's' element 0: expected a float32 array, got NoneType"),
])
def test_bad_sequence_inputs_are_named(feeds, error, message):
    it = Interpreter(serialize(from_onnx(_insert_model())))
    feeds = {k: np.array(v, np.int64) if k in "pq" else v for k, v in feeds.items()}
    with pytest.raises(error, match=message):
        it.run(feeds)


def _one_node(op, inputs, build_inputs, opset=18, **attrs):
    g = GraphBuilder("bad", opset=opset)
    values = [g.input(*spec) for spec in build_inputs]
    g.output(g.op(op, [values[i] for i in inputs], name="n", **attrs), "y")
    return Interpreter(g.build())


@pytest.mark.parametrize("op,attrs,build,feeds,message", [
    ("SequenceInsert", {}, [("s", np.float32, (), "sequence"), ("t", np.int64, ())],
     {"s": [], "t": np.array(1)}, r"cannot insert a int64 tensor into a sequence of float32"),
    ("OptionalGetElement", {}, [("o", np.float32, (2,), "optional_tensor")], {"o": None},
     r"the optional input is empty: it holds no element to get"),
    ("SequenceErase", {}, [("s", np.float32, (), "sequence")], {"s": []}, r"cannot erase from an empty sequence"),
    ("ConcatFromSequence", {"axis": 0}, [("s", np.float32, (-1,), "sequence")], {"s": []},
     r"cannot concatenate an empty sequence"),
    ("ConcatFromSequence", {"axis": 0}, [("s", np.float32, (-1, -1), "sequence")],
     {"s": [np.zeros((1, 2), np.float32), np.zeros((1, 3), np.float32)]},
     r"element 1 has shape \(1, 3\), element 0 \(1, 2\): they cannot be concatenated along axis 0"),
    ("SplitToSequence", {}, [("x", np.float32, (4,)), ("split", np.int64, (2,))],
     {"x": np.zeros(4, np.float32), "split": np.array([1, 2])}, r"split \[1, 2\] must be non-negative and sum "
                                                                  r"to the axis length 4"),
    ("SequenceAt", {}, [("x", np.float32, (2,)), ("p", np.int64, ())], {"x": np.zeros(2, np.float32),
                                                                          "p": np.array(0)},
     r"input 0 must be a sequence, got a tensor"),
    ("Relu", {}, [("s", np.float32, (2,), "sequence")], {"s": [np.zeros(2, np.float32)]},
     r"node 'n' \(Relu\): input 0 is a sequence; Relu takes tensors only"),
])
def test_bad_sequence_values_are_model_errors(op, attrs, build, feeds, message):
    with pytest.raises(ModelError, match=message):
        _one_node(op, range(len(build)), build, **attrs).run(feeds)


def test_a_tensor_kernel_fed_a_sequence_is_refused_at_load():
    g = GraphBuilder("bad", opset=18)
    g.output(g.op("Relu", [g.input("s", np.float32, (-1, 2), kind="sequence")], name="relu"), "y")
    with pytest.raises(ModelError, match=r"node 'relu' \(Relu\): input 0 is a sequence; Relu takes tensors only"):
        Interpreter(g.build())


def _patch_kind(data: bytes, tensor_name: str, code: int) -> bytes:
    """`data` with the kind byte of tensor `tensor_name` (of subgraph 0) set to `code`."""
    out = bytearray(data)
    subgraph = Model.GetRootAs(out, 0).Subgraphs(0)
    for i in range(subgraph.TensorsLength()):
        tensor = subgraph.Tensors(i)
        if tensor.Name().decode() == tensor_name:
            offset = tensor._tab.Offset(16)  # the `kind` field (written even when 0)
            assert offset, "the writer always writes kind"
            out[tensor._tab.Pos + offset] = code
            return bytes(out)
    raise AssertionError(tensor_name)


def test_verifier_names_a_bad_value_kind():
    data = serialize(_sequence_graph())
    with pytest.raises(ModelError, match=r"tensor \d+ \('x'\): value kind 9 is unknown"):
        load_model(_patch_kind(data, "x", 9))


def test_verifier_refuses_a_sequence_holding_data():
    g = GraphBuilder("bad", opset=17)
    x = g.input("x", np.float32, (2,))
    g.output(g.op("Add", [x, g.constant("w", np.ones(2, np.float32))], name="add"), "y")
    data = _patch_kind(serialize(g.build()), "w", 1)
    with pytest.raises(ModelError, match=r"\('w'\): a sequence value cannot hold data, be a variable or be quantized"):
        load_model(data)


def test_a_declared_sequence_output_made_as_a_tensor_is_refused():
    g = GraphBuilder("bad", opset=17)
    x = g.input("x", np.float32, (2,))
    y = g.op("Relu", [x], name="relu")
    y.kind = ValueKind.SEQUENCE
    g.output(y, "y")
    with pytest.raises(ModelError, match=r"output 'y' is declared a sequence but computes a tensor"):
        Interpreter(g.build())


def test_serving_refuses_sequence_signatures_with_one_clear_error(tmp_path):
    from edgerun.serving.config import read_settings
    from edgerun.serving.model import ServedModel

    folder = tmp_path / "seq"
    (folder / "1").mkdir(parents=True)
    path = folder / "1" / "model.erm"
    path.write_bytes(serialize(_sequence_graph()))
    with pytest.raises(EdgerunError, match=r"model input 'seq' is a sequence value: sequences and optionals are "
                                           r"not supported over KServe v2"):
        ServedModel.load(read_settings(folder), 1, path)

"""Hostile .tflite files: small files built to make the importer spend far more time or
memory than their size, or to fail outside edgerun's errors. Each test is one defect found
in review, its file built with the test builder (or laid out by hand), and asserts the
specific error and, where the defect was cost, a bound on time or traced memory that the
old code broke by a wide margin.
"""

from __future__ import annotations

import struct
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import flatbuffers
import numpy as np
import pytest

import edgerun.converters.tflite.ops.control  # noqa: F401
import edgerun.converters.tflite.ops.custom  # noqa: F401
import edgerun.converters.tflite.ops.elementwise  # noqa: F401
import edgerun.converters.tflite.sparsity  # noqa: F401
from edgerun import Interpreter
from edgerun.converters.tflite import from_tflite, read_tflite, reader
from edgerun.converters.tflite.convert import MAX_NESTING
from edgerun.converters.tflite.flex import read_flex
from edgerun.converters.tflite.reader import TFLiteOperator, TFLiteSubGraph, TFLiteTensor, _check_dataflow
from edgerun.runtime.errors import ConversionError, MemoryBudgetError, ModelError
from edgerun.runtime.flatread import FlatReader
from edgerun.runtime.graph import GraphBuilder
from tests.converters.tflite.builder import TFLiteBuilder, _fb, litert_run
from tests.converters.tflite.test_custom_ops import shared_bomb

BUDGET = 64 << 20


def measured(fn: Callable[[], Any], trace: bool = True) -> tuple[Any, float, int]:
    """(fn()'s result or the exception it raised, seconds, peak traced bytes: 0 unless
    `trace`, which slows Python allocations down several times)."""
    if trace:
        tracemalloc.start()
    start = time.perf_counter()
    try:
        result: Any = fn()
    except Exception as exc:  # noqa: BLE001 - the caller asserts what it was
        result = exc
    seconds = time.perf_counter() - start
    peak = 0
    if trace:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return result, seconds, peak


def refused(fn: Callable[[], Any], error: type, message: str, seconds: float = 2.0,
            peak: int | None = None) -> None:
    """fn() raises `error` saying `message`, within `seconds` (and `peak` traced bytes)."""
    result, took, used = measured(fn, trace=peak is not None)
    assert isinstance(result, error), f"expected {error.__name__}, got {result!r}"
    assert message in str(result), str(result)
    assert took < seconds, f"took {took:.2f} s"
    assert peak is None or used < peak, f"peak {used:,} bytes"


class SharedBuilder(TFLiteBuilder):
    """Writes a tensor, subgraph or operator listed several times as one table that every
    entry points at (the flatbuffer format allows it; no writer does it)."""

    def _build(self, external: dict) -> bytes:
        self.memo: dict[tuple[str, int], int] = {}
        return super()._build(external)

    def _once(self, kind: str, item: Any, make: Callable[[], int]) -> int:
        key = (kind, id(item))
        if key not in self.memo:
            self.memo[key] = make()
        return self.memo[key]

    def _tensor(self, b: flatbuffers.Builder, t: dict) -> int:  # type: ignore[override]
        return self._once("tensor", t, lambda: TFLiteBuilder._tensor(b, t))

    def _graph(self, b: flatbuffers.Builder, g: Any) -> int:
        return self._once("graph", g, lambda: super(SharedBuilder, self)._graph(b, g))

    def _operator(self, b: flatbuffers.Builder, op: dict) -> int:
        return self._once("op", op, lambda: super(SharedBuilder, self)._operator(b, op))


# --- the flatbuffer reader: shared and overlapping objects ------------------------------


def test_a_subgraph_table_shared_by_many_subgraph_entries_counts_each_time():
    """3,000 subgraph entries pointing at one subgraph of 3,000 entries pointing at one
    tensor: 24 KB that decoded to 9 million tensors (46 s, 2.3 GB)."""
    b = SharedBuilder()
    x, y = b.input("x", (1,)), b.tensor("y", (1,))
    b.op("ABS", [x], [y])
    b.output(y)
    b.tensors.extend([b.tensors[0]] * 3000)
    b.graphs.extend([b] * 3000)
    data = b.build()
    assert len(data) < 30_000
    refused(lambda: read_tflite(data), ModelError, "decodes to more than", seconds=4.0, peak=8 << 20)


def test_an_operator_table_shared_by_many_operator_entries_counts_each_time():
    b = SharedBuilder()
    x, y = b.input("x", (1,)), b.tensor("y", (1,))
    b.op("ABS", [x], [y])
    b.op("RESHAPE", [x, x], [])
    b.ops.extend([b.ops[-1]] * 20000)
    b.output(y)
    refused(lambda: read_tflite(b.build()), ModelError, "decodes to more than", seconds=4.0)


def test_a_tensor_table_shared_by_many_entries_counts_each_time():
    """5,000 entries for one INT4 tensor of 40 KB: each was unpacked anew (60 KB -> 425 MB)."""
    b = SharedBuilder()
    b.tensor("w", (80000,), "INT4", data=bytes(40000))
    b.tensors.extend([b.tensors[0]] * 5000)
    refused(lambda: read_tflite(b.build()), ModelError, "decodes to more than", seconds=4.0, peak=16 << 20)


def _overlapping_vectors(count: int) -> bytes:
    """Root{items: [Item]}, Item{v: [i32]}: `count` items whose vectors start one word apart
    in one region of `count` words, each running to its end (no object is reached twice).
    Layout: header, the two vtables, root, items vector, item tables, region."""
    item_vtable, root_vtable, root = 8, 16, 24
    vector = root + 8
    items = vector + 4 + 4 * count
    region = items + 8 * count
    buf = bytearray(region + 4 * count)
    struct.pack_into("<I4s", buf, 0, root, b"TEST")
    struct.pack_into("<HHH", buf, item_vtable, 6, 8, 4)
    struct.pack_into("<HHH", buf, root_vtable, 6, 8, 4)
    struct.pack_into("<iI", buf, root, root - root_vtable, vector - (root + 4))
    struct.pack_into("<I", buf, vector, count)
    for i in range(count):
        table, slot = items + 8 * i, vector + 4 + 4 * i
        struct.pack_into("<I", buf, slot, table - slot)
        struct.pack_into("<iI", buf, table, table - item_vtable, region + 4 * i - (table + 4))
    buf[region:] = (np.arange(count, 0, -1, dtype=np.uint32) - 1).tobytes()  # word i: count - i - 1 follow
    return bytes(buf)


@pytest.mark.parametrize("shared", [False, True])
def test_vectors_laid_over_the_same_bytes_count_each_time(shared):
    """No object is reached twice, yet 2,000 vectors over one 8 KB region hold 2 million
    elements: whoever walks them (the TFLite checker turns each index into a Python int)
    would do quadratic work."""
    schema = {"Item": [("v", "[i32]")], "Root": [("items", "[Item]")]}
    data = _overlapping_vectors(2000)
    reader = FlatReader(data, schema, shared=shared)
    with pytest.raises(ModelError, match="decodes to more than"):
        reader.read_root(b"TEST", "Root")
    small = FlatReader(_overlapping_vectors(8), schema, shared=shared).read_root(b"TEST", "Root")
    assert [len(item["v"]) for item in small["items"]] == list(range(7, -1, -1))


# --- the semantic check: buffers shared by index, regions reused by offset -------------------


def _shared_buffer_model(type_name: str, data: bytes, shape: tuple[int, ...], tensors: int) -> bytes:
    """`tensors` tensor tables (distinct, small) all reading buffer 1."""
    b = TFLiteBuilder()
    b.buffers.append(data)
    for i in range(tensors):
        b.tensors.append(dict(name=f"c{i}", shape=list(shape), type=type_name, buffer=1, quant=None,
                              signature=None, is_variable=False, sparsity=None))
    return b.build()


def test_tensors_sharing_an_int4_buffer_unpack_it_once():
    """2,000 tensors reading one 40 KB INT4 buffer unpacked it 2,000 times (160 MB)."""
    data = _shared_buffer_model("INT4", bytes(range(256)) * 160, (81920,), 2000)
    model, took, peak = measured(lambda: read_tflite(data))
    tensors = model.subgraphs[0].tensors
    assert all(t.data is tensors[0].data for t in tensors)  # one unpacked array, however many readers
    assert tensors[0].data[:4].tolist() == [0, 0, 1, 0] and not tensors[0].data.flags.writeable
    # (memory, not time, tells once from 2,000 times: 16 MB against 160 MB; the time of one
    # unpack under a loaded CI machine says nothing)
    assert peak < 16 << 20, (took, peak)


def test_tensors_sharing_a_string_buffer_decode_it_once(monkeypatch):
    """1,000 tensors reading one buffer of 8,000 strings decoded 8 million strings (4.7 s)."""
    count = 8000
    header = np.array([count] + [4 * (count + 2)] * (count + 1), np.int32).tobytes()
    data = _shared_buffer_model("STRING", header, (count,), 1000)
    decoded = []
    real = reader._decode_strings
    monkeypatch.setattr(reader, "_decode_strings", lambda *a: decoded.append(1) or real(*a))
    model = read_tflite(data)
    tensors = model.subgraphs[0].tensors
    assert all(t.data is tensors[0].data for t in tensors) and tensors[0].data[0] == ""
    assert len(decoded) == 1  # (counted, not timed: CI's loaded machine runs 2-3x slower)


def test_a_string_buffer_must_hold_as_many_strings_as_the_shape():
    header = np.array([2, 16, 17, 18], np.int32).tobytes() + b"ab"
    with pytest.raises(ModelError, match="a string buffer of 2 strings does not fit shape"):
        read_tflite(_shared_buffer_model("STRING", header, (3,), 1))


def test_constants_sharing_a_buffer_become_one_constant():
    """800 ADDs of one 80 KB constant (tensors sharing its buffer): each became a constant
    of its own, stored again when the graph is saved (quadratic in the file size)."""
    b = TFLiteBuilder()
    x = b.input("x", (20000,))
    b.buffers.append(np.ones(20000, np.float32).tobytes())
    for i in range(800):
        b.tensors.append(dict(name=f"c{i}", shape=[20000], type="FLOAT32", buffer=1, quant=None,
                              signature=None, is_variable=False, sparsity=None))
        y = b.tensor(f"y{i}", (20000,))
        b.op("ADD", [x, len(b.tensors) - 2], [y], "AddOptions")
        b.output(y)
    graph = from_tflite(b.build(), optimize=False)
    constants = {id(v) for n in graph.nodes for v in n.inputs if v is not None and v.data is not None}
    assert len(constants) == 1
    got = Interpreter(graph).run({"x": np.full(20000, 2, np.float32)})
    assert len(got) == 800 and all(np.array_equal(v, np.full(20000, 3, np.float32)) for v in got.values())


def _external_region_model(buffers: int) -> bytes:
    """`buffers` buffers all naming, by offset and size, the one 64 KB region after the flatbuffer."""
    b = TFLiteBuilder()
    raw = np.ones(16384, np.float32).tobytes()
    for i in range(buffers):
        b.tensor(f"w{i}", (16384,), data=raw)
    placeholders = {i: (2**40, len(raw)) for i in range(1, buffers + 1)}
    offset = (len(b._build(placeholders)) + 15) // 16 * 16
    head = b._build({i: (offset, len(raw)) for i in range(1, buffers + 1)})
    return head + bytes(offset - len(head)) + raw


def test_buffers_by_offset_may_not_reuse_a_region():
    assert len(read_tflite(_external_region_model(1)).subgraphs[0].tensors[0].data) == 16384
    with pytest.raises(ModelError, match="add up to more than the"):
        read_tflite(_external_region_model(2))


class LargeOptionsBuilder(TFLiteBuilder):
    """Operators whose custom options are kept after the flatbuffer (`large` = (offset, size))."""

    def _operator(self, b: flatbuffers.Builder, op: dict) -> int:
        large = op["options"].pop("large", None)
        if large is None:
            return super()._operator(b, op)
        Op = _fb("Operator")
        iv = b.CreateNumpyVector(np.array(op["inputs"], np.int32))
        ov = b.CreateNumpyVector(np.array(op["outputs"], np.int32))
        Op.Start(b)
        Op.AddOpcodeIndex(b, op["opcode"])
        Op.AddInputs(b, iv)
        Op.AddOutputs(b, ov)
        Op.AddLargeCustomOptionsOffset(b, large[0])
        Op.AddLargeCustomOptionsSize(b, large[1])
        op["options"]["large"] = large
        return Op.End(b)


def test_large_custom_options_may_not_reuse_a_region():
    """Operators naming one region of custom options by offset: N operators would copy and
    parse it N times (a quadratic amount for the file's size)."""
    def model(ops: int, size: int = 4096) -> bytes:
        b = LargeOptionsBuilder()
        x = b.input("x", (1,))
        for i in range(ops):
            y = b.tensor(f"y{i}", (1,))
            b.op("CUSTOM", [x], [y], custom_code="MyOp", large=(2**40, size))
        head = b._build({})
        offset = (len(head) + 15) // 16 * 16
        for op in b.ops:
            op["options"]["large"] = (offset, size)
        head = b._build({})
        return head + bytes(offset - len(head)) + bytes(size)

    assert read_tflite(model(1)).subgraphs[0].operators[0].custom_options == bytes(4096)
    with pytest.raises(ModelError, match="add up to more than the"):
        read_tflite(model(50))


def test_the_dataflow_check_is_linear_in_an_operators_inputs_and_outputs():
    """`output in op.inputs` on a list made one operator of 20,000 inputs and 20,000 outputs
    cost 400 million comparisons."""
    n = 20000
    tensors = [TFLiteTensor(i, f"t{i}", "FLOAT32", (1,), (1,)) for i in range(n + 1)]
    op = TFLiteOperator(0, "ADD_N", "", 1, [0] * n, list(range(1, n + 1)), None, "", b"")
    graph = TFLiteSubGraph(0, "main", tensors, [0], [n], [op])
    _, took, _ = measured(lambda: _check_dataflow(graph), trace=False)
    assert took < 1.0, took


# --- conversion: control flow ------------------------------------------------------------------


def if_chain(depth: int, uses: int = 1, both: bool = True) -> bytes:
    """Subgraph k holds `uses` IFs whose then branch is subgraph k + 1, and the else branch
    too when `both`, else the last subgraph (a leaf: LOGICAL_NOT)."""
    b = TFLiteBuilder()
    graphs = [b] + [b.subgraph(f"g{i}") for i in range(1, depth + 2)]
    for k, g in enumerate(graphs):
        c = g.input("c", (1,), "BOOL")
        for j in range(uses if k < depth else 0):
            y = g.tensor(f"y{j}", (1,), "BOOL")
            g.op("IF", [c, c], [y], "IfOptions", then_subgraph_index=k + 1,
                 else_subgraph_index=k + 1 if both else depth + 1)
            c = y
        y = g.tensor("not", (1,), "BOOL")
        g.op("LOGICAL_NOT", [c], [y])
        g.output(y)
    return b.build()


def test_subgraphs_nested_up_to_the_limit_convert_and_run():
    data = if_chain(MAX_NESTING - 1, both=False)
    for flag in (True, False):
        got = Interpreter(data).run({"c": np.array([flag])})["not"]
        assert got.tolist() == litert_run(data, [np.array([flag])])[0].tolist() == [flag != (MAX_NESTING % 2 == 1)]


@pytest.mark.parametrize("depth", [MAX_NESTING, 600])
def test_subgraphs_nested_deeper_are_refused(depth):
    """600 nested IFs ended in a RecursionError."""
    refused(lambda: from_tflite(if_chain(depth, both=False)), ConversionError,
            f"subgraphs nest more than {MAX_NESTING} deep")


def test_a_chain_of_subgraphs_each_used_twice_is_refused():
    """Each level converted both branches of two IFs: 4**10 conversions from 3 KB (over a
    minute at depth 8; 2**40 work at depth 40)."""
    refused(lambda: from_tflite(if_chain(10, uses=2)), ConversionError, "operator conversions", seconds=3.0)


def test_one_cond_inlined_by_many_whiles_is_refused():
    """300 WHILEs over one 300-operator cond inline it 600 times (180,000 conversions)."""
    b = TFLiteBuilder()
    body, cond = b.subgraph("body"), b.subgraph("cond")
    bx, by = body.input("x", (1,), "INT32"), body.tensor("y", (1,), "INT32")
    body.op("ADD", [bx, body.constant("one", np.array([1], np.int32))], [by], "AddOptions")
    body.output(by)
    value = cond.input("x", (1,), "INT32")
    for j in range(300):
        y = cond.tensor(f"a{j}", (1,), "INT32")
        cond.op("ABS", [value], [y])
        value = y
    c = cond.tensor("c", (1,), "BOOL")
    cond.op("LESS", [value, cond.constant("ten", np.array([10], np.int32))], [c])
    cond.output(c)
    value = b.input("x", (1,), "INT32")
    for i in range(300):
        y = b.tensor(f"y{i}", (1,), "INT32")
        b.op("WHILE", [value], [y], "WhileOptions", cond_subgraph_index=cond.index, body_subgraph_index=body.index)
        value = y
    b.output(value)
    refused(lambda: from_tflite(b.build()), ConversionError, "operator conversions", seconds=3.0)


def test_a_big_constant_copied_into_many_branches_is_refused():
    """400 IF branches each holding a copy of one 256 KB constant: 100 MB to save from 280 KB."""
    b = TFLiteBuilder()
    branch = b.subgraph("branch")
    bx, by = branch.input("x", (1,)), branch.tensor("y", (65536,))
    branch.op("ADD", [bx, branch.constant("w", np.ones(65536, np.float32))], [by], "AddOptions")
    branch.output(by)
    c, x = b.input("c", (1,), "BOOL"), b.input("x", (1,))
    for i in range(200):
        b.output(b.tensor(f"y{i}", (65536,)))
        b.op("IF", [c, x], [b.outputs[-1]], "IfOptions", then_subgraph_index=1, else_subgraph_index=1)
    data = b.build()
    assert len(data) < 300_000
    refused(lambda: Interpreter(data, memory_budget=BUDGET), ModelError, "constants would take more than",
            seconds=5.0, peak=40 << 20)


def test_a_bool_buffer_is_checked_once_whatever_shapes_read_it(monkeypatch: pytest.MonkeyPatch):
    """3,000 tensors of different shapes reading one 16 MB BOOL buffer: each shape checked all
    of it (6 s). Counted, not timed: the 16 MB scan of its bytes runs once."""
    from edgerun.converters.tflite import reader

    decoded: list[tuple[str, tuple[int, ...]]] = []

    def counting_decode(what, type_name, shape, elements, data):
        decoded.append((type_name, shape))
        return decode(what, type_name, shape, elements, data)

    decode = reader._decode
    monkeypatch.setattr(reader, "_decode", counting_decode)
    b = TFLiteBuilder()
    b.buffers.append(bytes(1 << 24))
    shapes = [[1 << e for e in (a, c, d, 24 - a - c - d)]  # 2925 shapes of 2**24 elements
              for a in range(25) for c in range(25 - a) for d in range(25 - a - c)]
    for i in range(3000):
        shape = shapes[i % len(shapes)] + [1] * (i // len(shapes))
        b.tensors.append(dict(name=f"b{i}", shape=shape, type="BOOL", buffer=1, quant=None, signature=None,
                              is_variable=False, sparsity=None))
    data = b.build()
    model = read_tflite(data)
    assert [t for t, _ in decoded] == ["BOOL"], decoded
    arrays = [t.data for t in model.subgraphs[0].tensors]
    assert all(np.shares_memory(a, arrays[0]) for a in arrays)


# --- conversion: converters and names ------------------------------------------------------


def test_an_operator_without_the_outputs_its_converter_binds_is_a_conversion_error():
    """ADD with no outputs: the converter's IndexError escaped."""
    b = TFLiteBuilder()
    x, y = b.input("x", (1,)), b.tensor("y", (1,))
    b.op("ABS", [x], [y])
    b.op("ADD", [x, x], [], "AddOptions")
    b.output(y)
    with pytest.raises(ConversionError, match=r"operator 1 \(ADD\): cannot be converted \(IndexError"):
        from_tflite(b.build())


def test_the_unconvertible_operators_error_stays_small():
    """2,000 operators of one unknown 50 KB custom code (a 190 KB file): the error named each
    in full, a 100 MB message."""
    b = TFLiteBuilder()
    x = b.input("x", (1,))
    for i in range(2000):
        b.op("CUSTOM", [x], [b.tensor(f"y{i}", (1,))], custom_code="Z" * 50000)
    data = b.build()
    result, _, peak = measured(lambda: from_tflite(data))
    assert isinstance(result, ConversionError) and len(str(result)) < 2000, len(str(result))
    message = str(result)
    assert "uses 2000 operator(s)" in message and "(50,000 characters) (subgraph 0, operator 0;" in message
    assert "1992 more" in message and peak < 32 << 20, peak


def test_a_tensor_named_like_a_generated_value_converts():
    """An input named "op1_abs:0" collided with the name made for operator 1's output."""
    b = TFLiteBuilder()
    x, y, z = b.input("op1_abs:0", (2,)), b.tensor("y", (2,)), b.tensor("z", (2,))
    b.op("ABS", [x], [y])
    b.op("ABS", [y], [z])
    b.output(z)
    got = Interpreter(b.build()).run({"op1_abs:0": np.array([-1, 2], np.float32)})
    assert got["z"].tolist() == [1.0, 2.0]


class _CountedNames(set):
    """A set of names that counts the membership tests made on it."""

    probes = 0

    def __contains__(self, name: object) -> bool:
        _CountedNames.probes += 1
        return super().__contains__(name)


def test_many_tensors_of_one_name_convert_in_linear_time(monkeypatch):
    """6,000 tensors named "t": each new name counted up from t_1 again (18 million steps).
    The steps are counted (the names looked up), not timed: a loaded CI machine took 1.7 s
    over the linear conversion that runs in 0.7 s here."""
    b = TFLiteBuilder()
    value = b.input("t", (1,))
    for _ in range(6000):
        y = b.tensor("t", (1,))
        b.op("ABS", [value], [y])
        value = y
    b.output(value)
    model = read_tflite(b.build())
    plain_init = GraphBuilder.__init__

    def counted_init(self, *args, **kwargs):
        plain_init(self, *args, **kwargs)
        self._names = _CountedNames()

    monkeypatch.setattr(GraphBuilder, "__init__", counted_init)
    _CountedNames.probes = 0
    graph = from_tflite(model, optimize=False)
    assert len({v.name for n in graph.nodes for v in n.outputs}) == 6000
    assert 6000 <= _CountedNames.probes < 20 * 6000, _CountedNames.probes


# --- conversion: index arrays and dense sizes ------------------------------------------------


def _pool_params(*values: int) -> bytes:
    return struct.pack(f"<{len(values)}i", *values)


@pytest.mark.parametrize("op, shapes, outputs", [
    ("MaxPoolingWithArgmax2D", [(1, 1 << 30, 1, 1)], 2),
    ("MaxUnpooling2D", [(1, 1 << 30, 1, 1)] * 2, 1),
    ("MaxUnpooling2D", [(1 << 15, 1, 1, 1 << 15)] * 2, 1),
])
def test_mediapipe_index_arrays_are_made_at_run_time(op, shapes, outputs):
    """A 500-byte file declaring a tall input made 8 GiB index constants at conversion."""
    b = TFLiteBuilder()
    inputs = [b.input(f"x{i}", shape) for i, shape in enumerate(shapes)]
    outs = [b.tensor(f"y{i}", shapes[0]) for i in range(outputs)]
    b.op("CUSTOM", inputs, outs, custom_code=op, custom_options=_pool_params(1, 1, 1, 1, 1, 0))
    b.output(outs[0])
    data = b.build()
    graph, took, peak = measured(lambda: from_tflite(data))
    assert not isinstance(graph, Exception), graph
    assert took < 2.0 and peak < 16 << 20, (took, peak)
    with pytest.raises(MemoryBudgetError):
        Interpreter(data, memory_budget=BUDGET)


def _sparse_model(side: int, type_name: str, levels: list[dict], values: bytes, densify_ops: int) -> bytes:
    b = TFLiteBuilder()
    w = b.tensor("w", (side, side), type_name, data=values,
                 sparsity=dict(traversal_order=[0, 1], dim_metadata=levels))
    for i in range(densify_ops):
        b.output(b.tensor(f"d{i}", (side, side), type_name))
        b.op("DENSIFY", [w], [b.outputs[-1]])
    return b.build()


_ONE = dict(format=1, segments=np.array([0, 1], np.int32), indices=np.array([0], np.int32))


def test_a_tiny_sparse_tensor_may_not_densify_to_far_more_than_the_file():
    """576 bytes declaring an 8192 x 8192 FLOAT64 weight with one stored value: 1.1 GB."""
    data = _sparse_model(8192, "FLOAT64", [_ONE, _ONE], np.ones(1).tobytes(), 1)
    refused(lambda: Interpreter(data, memory_budget=BUDGET), ModelError, "what this model's size allows",
            peak=8 << 20)


def test_dense_levels_may_not_make_more_positions_than_the_file_holds():
    """All-DENSE levels over 2048 x 2048 with one stored value built a 32 MB index first."""
    dense = dict(format=0, dense_size=2048)
    data = _sparse_model(2048, "INT8", [dense, dense], bytes(1), 1)
    refused(lambda: from_tflite(data), ModelError, "dense level 0 makes 2,048 positions", peak=8 << 20)


def test_a_sparse_tensor_read_by_many_densify_ops_is_densified_once():
    """Eight DENSIFYs of one 4 MB weight made eight dense copies."""
    data = _sparse_model(1024, "FLOAT32", [_ONE, _ONE], np.float32(5).tobytes(), 8)
    assert len(data) < 2048
    graph, _, peak = measured(lambda: from_tflite(data, optimize=False))
    assert peak < 12 << 20, peak
    got = Interpreter(graph, memory_budget=BUDGET).run({})
    assert len(got) == 8 and all(v[0, 0] == 5 and v.sum() == 5 for v in got.values())


def test_flex_buffers_may_not_decode_to_far_more_values_than_their_bytes():
    """4,096 values from 600 bytes of shared vectors (under the old flat limit of a million:
    one million values per operator, read again by every operator using the options)."""
    data = shared_bomb(levels=2, k=64)
    assert len(data) < 1024
    with pytest.raises(ValueError, match="more than its"):
        read_flex(data)

"""The .tflite reader: our schema agrees with LiteRT's, real models decode, malformed files
are refused with a ModelError that says what is wrong (LiteRT itself crashes on some)."""

from __future__ import annotations

import importlib.util
import inspect
import re
from pathlib import Path

import numpy as np
import pytest

from edgerun.converters.tflite import layout
from edgerun.converters.tflite.reader import read_tflite
from edgerun.runtime.errors import ModelError
from tests.converters.tflite.builder import TFLiteBuilder

MEDIAPIPE = Path(importlib.util.find_spec("mediapipe").submodule_search_locations[0]) / "modules"
REAL_MODELS = sorted(MEDIAPIPE.glob("*/*.tflite"))


def _camel(name: str) -> str:
    return "".join(p[:1].upper() + p[1:] for p in name.split("_"))


def test_every_field_sits_in_the_slot_litert_reads_it_from():
    """Our hand-written tflite.fbs against the schema code LiteRT's wheel ships: each field's
    vtable slot and default, each union member's code, each builtin operator's number."""
    litert = pytest.importorskip("ai_edge_litert.schema_py_generated")
    checked = 0
    for table, fields in layout.TABLES.items():
        if table.startswith(("Stablehlo", "StableHLO")) or table in ("DilateOptions", "ReduceWindowOptions"):
            continue  # declared empty on purpose: we never read their fields
        cls = getattr(litert, table)
        for slot, (field, kind, default) in enumerate(fields):
            if field.endswith("_type") and kind == "u8" and fields[slot + 1][1].startswith("union:"):
                method = _camel(field[:-5]) + "Type"
            else:
                method = _camel(field)
            if not hasattr(cls, method):
                assert field in ("new_height", "new_width", "deprecated_tag"), (table, field)
                continue  # deprecated: the slot is kept, LiteRT has no accessor
            source = inspect.getsource(getattr(cls, method))
            assert f"Offset({4 + 2 * slot})" in source, (table, field, slot)
            if kind in ("i8", "u8", "i32", "u32", "i64", "u64", "bool") and default not in (None, 0, False):
                assert re.search(rf"return {int(default) if kind != 'bool' else default}\b", source), (table, field)
            checked += 1
    assert checked > 200
    for union, members in layout.UNIONS.items():
        for code, member in enumerate(members, start=1):
            assert getattr(getattr(litert, union), member) == code
    for code, name in layout.BUILTIN_OPERATORS.items():
        assert getattr(litert.BuiltinOperator, name) == code
    for code, name in layout.TENSOR_TYPES.items():
        assert getattr(litert.TensorType, name) == code


@pytest.mark.parametrize("path", REAL_MODELS, ids=[p.name for p in REAL_MODELS])
def test_real_models_decode(path):
    """mediapipe's trained models (float16 weights, sparse weights, custom ops) read whole."""
    model = read_tflite(path)
    main = model.subgraphs[0]
    assert main.operators and main.inputs and main.outputs
    assert all(t.data is not None or t.sparsity is not None or not t.is_constant for t in main.tensors)
    fp16 = [t for t in main.tensors if t.type == "FLOAT16" and t.data is not None]
    assert all(t.data.dtype == np.float16 for t in fp16)


def test_mediapipe_models_are_present():
    assert len(REAL_MODELS) >= 10


def _conv_model(**overrides) -> TFLiteBuilder:
    b = TFLiteBuilder()
    x = b.input("x", (1, 4, 4, 3))
    w = b.constant("w", np.ones((2, 1, 1, 3), np.float32))
    bias = b.constant("b", np.zeros(2, np.float32))
    y = b.tensor("y", (1, 4, 4, 2))
    b.op("CONV_2D", [x, w, bias], [y], "Conv2DOptions", padding=1, stride_w=1, stride_h=1)
    b.output(y)
    for key, value in overrides.items():
        setattr(b, key, value)
    return b


def _refused(data: bytes, message: str) -> None:
    with pytest.raises(ModelError, match=message):
        read_tflite(data)


def test_a_valid_model_reads():
    model = read_tflite(_conv_model().build())
    op = model.subgraphs[0].operators[0]
    assert (op.opcode, op.options["stride_w"], op.options["dilation_w_factor"]) == ("CONV_2D", 1, 1)
    assert model.subgraphs[0].tensors[1].data.shape == (2, 1, 1, 3)


@pytest.mark.parametrize("data,message", [
    (b"", "too short"),
    (b"\x08\x00\x00\x00ERM1\x00\x00\x00\x00", "not a .tflite file"),
    (b"\xff\xff\xff\x7fTFL3\x00\x00\x00\x00", "outside the file"),
])
def test_header_errors(data, message):
    _refused(data, message)


def test_every_truncation_is_refused_cleanly():
    data = _conv_model().build()
    for cut in range(0, len(data), 7):
        with pytest.raises(ModelError):
            read_tflite(data[:cut])


def test_schema_version():
    _refused(_conv_model(version=2).build(), "schema version 2")


def test_buffer_size_must_match_the_shape():
    b = _conv_model()
    b.buffers[1] = b.buffers[1][:-4]
    _refused(b.build(), r"needs 24 bytes, the file holds 20")


def test_first_buffer_must_be_empty():
    b = _conv_model()
    b.buffers[0] = b"\x01\x02"
    _refused(b.build(), "empty sentinel")


def test_tensor_index_out_of_range():
    b = _conv_model()
    b.ops[0]["inputs"] = [0, 1, 99]
    _refused(b.build(), "refers to tensor 99")


def test_minus_one_is_only_an_operator_input():
    b = _conv_model()
    b.ops[0]["outputs"] = [-1]
    _refused(b.build(), "refers to tensor -1")


def test_tensor_both_input_and_output_of_one_operator():
    b = _conv_model()
    b.ops[0]["outputs"] = [0]
    _refused(b.build(), "both an input and an output")


def test_constant_overwritten():
    b = _conv_model()
    b.ops[0]["outputs"] = [b.constant("c", np.zeros((1, 4, 4, 2), np.float32))]
    _refused(b.build(), "which is a constant")


def test_read_before_written():
    b = _conv_model()
    b.inputs = []
    _refused(b.build(), "before any operator writes it")


def test_written_twice():
    b = _conv_model()
    b.ops.append(dict(b.ops[0]))
    _refused(b.build(), "written by two operators")


def test_output_never_written():
    b = _conv_model()
    b.outputs = [b.tensor("dangling", (1,))]
    _refused(b.build(), "never written")


def test_opcode_index_out_of_range():
    b = _conv_model()
    b.ops[0]["opcode"] = 5
    _refused(b.build(), "opcode index 5 is out of range")


def test_negative_dimension():
    b = _conv_model()
    b.tensors[3]["shape"] = [1, -4, 4, 2]
    _refused(b.build(), "negative dimension")


def test_huge_shape_is_refused_before_any_allocation():
    b = _conv_model()
    b.tensors[3]["shape"] = [1 << 20, 1 << 20, 1 << 20, 2]
    _refused(b.build(), "over the limit")


def test_shape_signature_must_agree():
    b = _conv_model()
    b.tensors[0]["signature"] = [-1, 5, 4, 3]
    _refused(b.build(), "does not agree")


def test_per_channel_scales_must_fit_their_axis():
    b = _conv_model()
    b.tensors[1]["quant"] = {"scale": [0.1, 0.2, 0.3], "zero_point": [0, 0, 0], "axis": 0}
    _refused(b.build(), "do not fit dimension 0")


def test_scales_must_be_finite():
    b = _conv_model()
    b.tensors[1]["quant"] = {"scale": [float("nan")], "zero_point": [0]}
    _refused(b.build(), "finite")


def test_signature_tensor_out_of_range():
    b = _conv_model()
    b.signature("serving_default", {"x": 0}, {"y": 42})
    _refused(b.build(), "refers to tensor 42")


def test_bool_constants_hold_only_zero_and_one():
    b = _conv_model()
    b.constant("flags", np.array([0, 1, 2], np.uint8).view(np.bool_))
    _refused(b.build(), "BOOL buffer")

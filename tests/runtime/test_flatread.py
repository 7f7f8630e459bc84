"""The verifying reader agrees with the .fbs schema and refuses out-of-bounds offsets."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import pytest

from edgerun.runtime import load_model, serialize
from edgerun.runtime.errors import ModelError
from edgerun.runtime.flatread import SCHEMA, FlatReader
from edgerun.runtime.format import FILE_IDENTIFIER
from tests.runtime.graphs import feature_graph

FBS = Path(__file__).resolve().parents[2] / "runtime" / "schema" / "edgerun.fbs"
_FBS_TYPES = {
    "bool": "bool", "byte": "i8", "ubyte": "u8", "int": "i32", "uint": "u32", "long": "i64",
    "ulong": "u64", "double": "f64", "string": "string", "[ubyte]": "[u8]", "[int]": "[i32]",
    "[long]": "[i64]", "[float]": "[f32]", "[double]": "[f64]", "[string]": "[string]",
    "DType": "i8", "AttributeType": "i8",
}


def parse_fbs() -> dict[str, list[tuple[str, str]]]:
    text = re.sub(r"//[^\n]*", "", FBS.read_text())
    tables = {}
    for name, body in re.findall(r"table\s+(\w+)\s*\{(.*?)\}", text, re.S):
        fields = []
        for field, kind in re.findall(r"(\w+)\s*:\s*([\w\[\]]+)", body):
            fields.append((field, _FBS_TYPES.get(kind, kind)))
        tables[name] = fields
    return tables


def test_reader_schema_matches_the_fbs_file():
    assert parse_fbs() == SCHEMA


def test_reads_what_the_writer_wrote():
    raw = FlatReader(serialize(feature_graph())).read_root(FILE_IDENTIFIER)
    assert raw["schema_version"] == 1
    assert [s["name"] for s in raw["signatures"]] == ["serving_default", "raw"]


@pytest.mark.parametrize("data,message", [
    (b"", "too short"),
    (b"\x08\x00\x00\x00ERM", "too short"),
    (b"\x08\x00\x00\x00TFL3\x00\x00\x00\x00", "identifier"),
    (b"\xff\xff\xff\x7fERM1\x00\x00\x00\x00", "outside the file"),
    (b"\x00\x00\x00\x00ERM1\x00\x00\x00\x00", "outside the file"),
])
def test_header_errors(data, message):
    with pytest.raises(ModelError, match=message):
        FlatReader(data).read_root(FILE_IDENTIFIER)


def test_vtable_pointing_outside_the_file_is_refused():
    data = bytearray(serialize(feature_graph()))
    root = struct.unpack_from("<I", data, 0)[0]
    struct.pack_into("<i", data, root, -(1 << 30))
    with pytest.raises(ModelError, match="vtable"):
        FlatReader(bytes(data)).read_root(FILE_IDENTIFIER)


def test_every_truncation_is_refused_or_loses_only_padding():
    data = serialize(feature_graph())
    refused = 0
    for cut in range(0, len(data), 3):
        try:
            load_model(data[:cut])
        except ModelError:
            refused += 1
            continue
        assert data[cut:].strip(b"\0") == b""  # only trailing zero padding was cut
    assert refused >= len(data) // 3 - 8

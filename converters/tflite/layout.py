"""The TFLite schema as the verifying reader needs it, derived from schema/tflite.fbs.

    TABLES["Conv2DOptions"] -> [("padding", "i8", 0), ("stride_w", "i32", 0), ...]
    UNIONS["BuiltinOptions"] -> ["Conv2DOptions", "DepthwiseConv2DOptions", ...]
    BUILTIN_OPERATORS[3] -> "CONV_2D";  TENSOR_TYPES[9] -> "INT8"

The .fbs file is the one source: the same file generates the builder code the tests
write models with (scripts/gen_schema.py), so reader and writer cannot disagree. The
parser understands the subset of the flatbuffers grammar that file uses (tables,
enums, unions, `= default` and attributes in parentheses, `//` comments).
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

FBS = Path(__file__).resolve().parent / "schema" / "tflite.fbs"

_SCALAR_KINDS = {
    "bool": "bool", "byte": "i8", "ubyte": "u8", "short": "i16", "ushort": "u16",
    "int": "i32", "int32": "i32", "uint": "u32", "long": "i64", "ulong": "u64",
    "float": "f32", "double": "f64",
}


@cache
def parse(text: str) -> tuple[dict, dict, dict]:
    """(tables, unions, enums) of a schema text; enums map name -> (kind, {value: name})."""
    text = re.sub(r"//[^\n]*", "", text)
    enums: dict[str, tuple[str, dict[int, str]]] = {}
    for name, base, body in re.findall(r"\benum\s+(\w+)\s*:\s*(\w+)\s*\{(.*?)\}", text, re.S):
        members: dict[int, str] = {}
        value = -1
        for member, explicit in re.findall(r"(\w+)\s*(?:=\s*(-?\d+))?\s*(?:\([^)]*\))?\s*(?:,|$)",
                                           body.strip()):
            value = int(explicit) if explicit else value + 1
            members[value] = member
        enums[name] = (_SCALAR_KINDS[base], members)
    unions = {name: re.findall(r"(\w+)\s*(?:\([^)]*\))?\s*(?:,|$)", body.strip())
              for name, body in re.findall(r"\bunion\s+(\w+)\s*\{(.*?)\}", text, re.S)}
    tables: dict[str, list[tuple[str, str, object]]] = {}
    for name, body in re.findall(r"\btable\s+(\w+)\s*\{(.*?)\}", text, re.S):
        fields: list[tuple[str, str, object]] = []
        for field, kind, default in re.findall(
                r"(\w+)\s*:\s*([\w\[\]]+)\s*(?:=\s*([\w.\-]+))?\s*(?:\([^)]*\))?\s*;", body):
            if kind in unions:
                fields.append((f"{field}_type", "u8", 0))
                fields.append((field, f"union:{kind}", None))
                continue
            fields.append((field, *_kind_and_default(kind, default or None, enums)))
        tables[name] = fields
    return tables, unions, enums


def _kind_and_default(kind: str, default: str | None, enums: dict) -> tuple[str, object]:
    if kind.startswith("["):
        inner = kind[1:-1]
        if inner in _SCALAR_KINDS:
            return f"[{_SCALAR_KINDS[inner]}]", None
        if inner in enums:
            return f"[{enums[inner][0]}]", None
        return kind, None  # [string] or [Table]
    if kind == "string":
        return "string", None
    if kind in enums:
        base, members = enums[kind]
        names = {v: k for k, v in members.items()}
        return base, (names[default] if default in names else int(default or 0))
    if kind in _SCALAR_KINDS:
        scalar = _SCALAR_KINDS[kind]
        if default is None:
            return scalar, False if scalar == "bool" else 0
        if scalar == "bool":
            return scalar, default == "true"
        return scalar, float(default) if scalar.startswith("f") else int(default)
    return kind, None  # a table


TABLES, UNIONS, ENUMS = parse(FBS.read_text())
BUILTIN_OPERATORS: dict[int, str] = ENUMS["BuiltinOperator"][1]
TENSOR_TYPES: dict[int, str] = ENUMS["TensorType"][1]
ACTIVATIONS: dict[int, str] = ENUMS["ActivationFunctionType"][1]
PADDINGS: dict[int, str] = ENUMS["Padding"][1]
FILE_IDENTIFIER = b"TFL3"
SCHEMA_VERSION = 3

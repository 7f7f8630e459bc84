"""Which function converts which TFLite operator: builtins by name, custom ops by custom code.

    @converts("CONV_2D", optional=(2,))
    def conv_2d(ctx: OpContext) -> None: ...

    register_custom_op("MyOp", my_converter, optional=(1,))      # users extend it the same way

A converter reads the operator through its `OpContext` and emits edgerun IR nodes (ONNX
semantics) whose results it binds to the operator's outputs. `optional` lists the input
positions that may be -1 (omitted); -1 anywhere else is a ModelError, as a crafted file must
not smuggle an absent tensor into a kernel (CVE-2020-15211 in TFLite). A builtin has a float
converter and, where its integer arithmetic differs, a quantized one (`quantized=True`), which
is used when the operator reads or writes quantized integer tensors. `any_dtype=True` marks a
float converter whose nodes are exact for any element type (RESHAPE, TRANSPOSE, ...), so it
serves quantized tensors too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edgerun.converters.tflite.context import OpContext

OpConverter = Callable[["OpContext"], None]


@dataclass(frozen=True)
class Entry:
    convert: OpConverter
    optional: frozenset[int]
    any_dtype: bool = False


_BUILTIN: dict[str, Entry] = {}
_QUANTIZED: dict[str, Entry] = {}
_CUSTOM: dict[str, Entry] = {}


def converts(*opcodes: str, optional: Iterable[int] = (), quantized: bool = False,
             any_dtype: bool = False) -> Callable[[OpConverter], OpConverter]:
    """Decorator: `fn` converts the builtin operators `opcodes` (float, or with
    `quantized` their integer form)."""

    def decorate(fn: OpConverter) -> OpConverter:
        table = _QUANTIZED if quantized else _BUILTIN
        for opcode in opcodes:
            if opcode in table:
                raise ValueError(f"TFLite builtin {opcode} registered twice")
            table[opcode] = Entry(fn, frozenset(optional), any_dtype)
        return fn

    return decorate


def register_custom_op(custom_code: str, convert: OpConverter | None = None, *,
                       optional: Iterable[int] = (), replace: bool = False) -> OpConverter | Callable:
    """Teach the TFLite importer a custom operator (`custom_code` as the model names it).

    `convert(ctx)` gets an `OpContext` (ctx.custom_options holds the operator's raw custom
    options, ctx.flex_options() their FlexBuffer map) and emits edgerun nodes for it. Usable
    as a decorator. Registering a code twice is a ValueError unless `replace`.
    """

    def decorate(fn: OpConverter) -> OpConverter:
        if custom_code in _CUSTOM and not replace:
            raise ValueError(f"TFLite custom op {custom_code!r} is already registered "
                             "(pass replace=True to override it)")
        _CUSTOM[custom_code] = Entry(fn, frozenset(optional))
        return fn

    return decorate if convert is None else decorate(convert)


def lookup(opcode: str, custom_code: str, quantized: bool) -> Entry | None:
    """The converter for an operator; None when edgerun has none."""
    if opcode == "CUSTOM":
        return _CUSTOM.get(custom_code)
    if quantized:
        entry = _QUANTIZED.get(opcode)
        if entry is not None:
            return entry
        entry = _BUILTIN.get(opcode)
        return entry if entry is not None and entry.any_dtype else None
    return _BUILTIN.get(opcode)


def supported_builtins() -> tuple[list[str], list[str]]:
    """(float builtins, quantized builtins) edgerun converts, sorted."""
    quantized = set(_QUANTIZED) | {k for k, e in _BUILTIN.items() if e.any_dtype}
    return sorted(_BUILTIN), sorted(quantized)


def custom_ops() -> list[str]:
    return sorted(_CUSTOM)

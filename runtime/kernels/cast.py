"""Type conversion: Cast, CastLike and BitCast, `onnx_dtype`, which reads an ONNX element-type
attribute, and `cast_into`, the conversion they share.

Element types are named by their ONNX TensorProto codes; those numpy (with ml_dtypes) and .erm
can hold are accepted: float16/32/64, bfloat16, int8..64, uint8..64, bool, the float8 types
(e4m3fn, e4m3fnuz, e5m2, e5m2fnuz, e8m0), float4 e2m1, int4/uint4 and int2/uint2 (one element
per byte in memory); Cast and CastLike also take string (object arrays of str). Conversions
follow ONNX's Cast rules:

* float -> int truncates toward zero (out of range is undefined in ONNX: numpy's result for
  the wide types; the low bits of the truncated value for 4- and 2-bit ones), int -> narrower
  int keeps the low bits (200 -> int4 is -8), anything non-zero -> bool is True;
* -> float8 e4m3fn/e4m3fnuz/e5m2/e5m2fnuz rounds to nearest even; with `saturate` (the
  default) values beyond the largest finite one, infinities included, become +-max, without
  it they become NaN (inf for e5m2); NaN stays NaN;
* -> float4 e2m1 rounds to nearest even and always saturates to +-6 (it has no inf or NaN);
* -> float8 e8m0 (a power of two) keeps the float32 exponent, rounded per `round_mode`
  (up/down/nearest); with `saturate` it stops at the largest exponent, NaN stays NaN;
* -> string writes floats as C's "%.8g" ("0.33333334", "1e+20"), NaN as "NaN" and infinities
  as "INF" / "-INF" (as onnxruntime), ints in decimal and bools as "1" / "0";
* string -> float reads plain and scientific decimals ("-1.5", "1E8", surrounding whitespace
  allowed) and, in any case, "INF", "+INF", "-INF", "INFINITY" and "NaN"; string -> int reads
  decimal integers (a decimal fraction or exponent is truncated toward zero), then wraps as
  int64 -> int does; string -> bool is True for a non-zero number. Any other string (ONNX
  leaves it undefined) fails the run with an error naming it.
"""

from __future__ import annotations

import re

import ml_dtypes
import numpy as np

from edgerun.runtime import dtypes
from edgerun.runtime.kernels.attrs import flag_attr, int_attr, kind_of, str_attr
from edgerun.runtime.kernels.base import Kernel, TensorSpec
from edgerun.runtime.kernels.registry import register

_ONNX_TYPES: dict[int, tuple[str, type]] = {
    1: ("FLOAT", np.float32),
    2: ("UINT8", np.uint8),
    3: ("INT8", np.int8),
    4: ("UINT16", np.uint16),
    5: ("INT16", np.int16),
    6: ("INT32", np.int32),
    7: ("INT64", np.int64),
    9: ("BOOL", np.bool_),
    10: ("FLOAT16", np.float16),
    11: ("DOUBLE", np.float64),
    12: ("UINT32", np.uint32),
    13: ("UINT64", np.uint64),
    16: ("BFLOAT16", ml_dtypes.bfloat16),
    17: ("FLOAT8E4M3FN", ml_dtypes.float8_e4m3fn),
    18: ("FLOAT8E4M3FNUZ", ml_dtypes.float8_e4m3fnuz),
    19: ("FLOAT8E5M2", ml_dtypes.float8_e5m2),
    20: ("FLOAT8E5M2FNUZ", ml_dtypes.float8_e5m2fnuz),
    21: ("UINT4", ml_dtypes.uint4),
    22: ("INT4", ml_dtypes.int4),
    23: ("FLOAT4E2M1", ml_dtypes.float4_e2m1fn),
    24: ("FLOAT8E8M0", ml_dtypes.float8_e8m0fnu),
    25: ("UINT2", ml_dtypes.uint2),
    26: ("INT2", ml_dtypes.int2),
}

_BY_NAME = {name: code for code, (name, _) in _ONNX_TYPES.items()}
_STRING_CODE = 8  # TensorProto.STRING: only Cast and CastLike convert to and from it
# float8 types with a saturating and a non-saturating conversion (the `saturate` attribute)
FLOAT8 = tuple(np.dtype(t) for t in (ml_dtypes.float8_e4m3fn, ml_dtypes.float8_e4m3fnuz,
                                     ml_dtypes.float8_e5m2, ml_dtypes.float8_e5m2fnuz))
FLOAT4 = np.dtype(ml_dtypes.float4_e2m1fn)
E8M0 = np.dtype(ml_dtypes.float8_e8m0fnu)
SMALL_INTS = tuple(np.dtype(t) for t in (ml_dtypes.int4, ml_dtypes.uint4, ml_dtypes.int2, ml_dtypes.uint2))
# ml_dtypes' floats, read through float32 (which holds each of their values exactly)
_ML_FLOATS = (*FLOAT8, FLOAT4, E8M0, np.dtype(ml_dtypes.bfloat16))
ROUND_MODES = ("up", "down", "nearest")


def onnx_dtype(kernel: Kernel, key: str, default: np.dtype | None = None, *, strings: bool = False) -> np.dtype:
    """The numpy dtype named by the element-type attribute `key` (an ONNX code, or a
    name such as 'FLOAT' as in Cast-1); `default` when absent. ModelError for a type
    numpy cannot represent (complex, float6...), and for string unless `strings`."""
    value = kernel.attr(key)
    if value is None:
        if default is None:
            raise kernel.fail(f"attribute {key!r} is required")
        return default
    code = _BY_NAME.get(value.upper(), -1) if isinstance(value, str) else int_attr(kernel, key)
    if strings and (code == _STRING_CODE or value == "STRING"):
        return dtypes.STRING
    if code not in _ONNX_TYPES:
        raise kernel.fail(f"attribute {key!r}: element type {value!r} is not supported "
                          f"(supported: {', '.join(_BY_NAME)})")
    return np.dtype(_ONNX_TYPES[code][1])


def _widened(x: np.ndarray) -> np.ndarray:
    """x with ml_dtypes' floats as float32 and their small ints as int8 (values unchanged)."""
    if x.dtype in _ML_FLOATS:
        return x.astype(np.float32)
    if x.dtype in SMALL_INTS:
        return x.astype(np.int8)
    return x


def cast_into(out: np.ndarray, x: np.ndarray, saturate: bool = True, round_mode: str = "up") -> None:
    """out = x converted to out's dtype by ONNX's Cast rules (see the module docstring).
    ValueError for a string that is not a number when converting from strings."""
    if dtypes.is_string(out.dtype) or dtypes.is_string(x.dtype):
        _cast_strings(out, x, saturate, round_mode)
        return
    src = _widened(x)
    with np.errstate(invalid="ignore", over="ignore"):  # NaN/inf -> int is undefined in ONNX
        if out.dtype in SMALL_INTS:
            ints = np.trunc(src).astype(np.int64) if src.dtype.kind == "f" else src.astype(np.int64)
            mask = (1 << dtypes.bit_width(out.dtype)) - 1
            np.copyto(out.view(np.uint8), ints & mask, casting="unsafe")
            return
        if out.dtype == E8M0:
            np.copyto(out.view(np.uint8), e8m0_codes(src, saturate, round_mode))
            return
        if out.dtype in (*FLOAT8, FLOAT4) and src.dtype.kind != "f":
            src = src.astype(np.float64)
        if out.dtype in FLOAT8 and saturate:
            limit = float(ml_dtypes.finfo(out.dtype).max)
            src = np.clip(src, -limit, limit)  # NaN stays NaN
        np.copyto(out, src, casting="unsafe")


# No two ways to match one string (after the digits, a '.' or nothing; the exponent only after
# an 'e'), so a fullmatch fails in time linear in the text, never backtracking quadratically.
_DECIMAL = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_INTEGER = re.compile(r"[+-]?\d+")
_SPECIAL = {"inf": np.inf, "+inf": np.inf, "-inf": -np.inf, "infinity": np.inf, "+infinity": np.inf,
            "-infinity": -np.inf, "nan": np.nan, "+nan": np.nan, "-nan": np.nan}


def _cast_strings(out: np.ndarray, x: np.ndarray, saturate: bool, round_mode: str) -> None:
    """cast_into where `out` or `x` holds strings (see the module docstring)."""
    if dtypes.is_string(x.dtype) and dtypes.is_string(out.dtype):
        np.copyto(out, x)
    elif dtypes.is_string(out.dtype):
        out[...] = _objects([_format(v, x.dtype) for v in _widened(x).reshape(-1).tolist()], x.shape)
    elif kind_of(out.dtype) in "iu":
        texts = x.reshape(-1).tolist()
        wide = np.uint64 if out.dtype == np.uint64 else np.int64
        try:
            ints = np.array([_parse_int(t) for t in texts], dtype=wide).reshape(x.shape)
        except OverflowError:
            raise ValueError(f"a string in {texts[:8]} is out of range for {out.dtype}") from None
        cast_into(out, ints, saturate, round_mode)
    else:
        floats = np.array([_parse_float(t) for t in x.reshape(-1).tolist()], np.float64).reshape(x.shape)
        cast_into(out, floats, saturate, round_mode)


def _objects(items: list, shape: tuple[int, ...]) -> np.ndarray:
    array = np.empty(len(items), dtype=object)
    array[:] = items
    return array.reshape(shape)


def _format(value: object, dtype: np.dtype) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if value != value:
        return "NaN"
    if value in (np.inf, -np.inf):
        return "INF" if value > 0 else "-INF"
    return format(value, ".8g")


def _parse_float(text: str) -> float:
    stripped = text.strip()
    if stripped.lower() in _SPECIAL:
        return _SPECIAL[stripped.lower()]
    if not _DECIMAL.fullmatch(stripped):
        raise ValueError(f"cannot convert string {text[:40]!r} to a number")
    return float(stripped)


def _parse_int(text: str) -> int:
    stripped = text.strip()
    if _INTEGER.fullmatch(stripped):
        return int(stripped)
    value = _parse_float(text)
    if value != value or value in (np.inf, -np.inf):
        raise ValueError(f"cannot convert string {text[:40]!r} to an integer")
    return int(value)


def e8m0_codes(x: np.ndarray, saturate: bool, round_mode: str) -> np.ndarray:
    """Bytes of float8 e8m0 (2**(code - 127); 0xFF is NaN) for float `x`, as ONNX's reference:
    the float32 exponent field, incremented per `round_mode` when mantissa bits are set
    ("nearest": round half to even on the exponent), at most 0xFE with `saturate`. The sign
    is ignored (negative input is undefined in ONNX); +-inf gives 0xFE with `saturate`, else
    NaN."""
    bits = np.asarray(x, np.float32).view(np.uint32)
    exponent = ((bits >> 23) & 0xFF).astype(np.uint16)
    fraction = bits & 0x7FFFFF
    if round_mode == "up":
        exponent += fraction > 0
    elif round_mode == "nearest":
        guard, rest = (bits & 0x400000) > 0, (bits & 0x3FFFFF) > 0
        exponent += guard & (rest | (exponent > 0))
    special = ((bits >> 23) & 0xFF) == 0xFF
    if saturate:
        exponent = np.minimum(exponent, 0xFE)
        exponent[special & (fraction == 0)] = 0xFE  # inf
    exponent[special & (fraction != 0)] = 0xFF  # NaN
    return np.minimum(exponent, 0xFF).astype(np.uint8)


class _Converting(Kernel):
    """Reads `saturate` (opset 19+, default 1) and `round_mode` (opset 24+, default "up")."""

    def _conversion_attrs(self) -> None:
        self.saturate = flag_attr(self, "saturate", 1)
        self.round_mode = str_attr(self, "round_mode", "up")
        if self.round_mode not in ROUND_MODES:
            raise self.fail(f"round_mode {self.round_mode!r} must be one of {', '.join(ROUND_MODES)}")

    def run(self, inputs, outputs):
        cast_into(outputs[0], inputs[0], self.saturate, self.round_mode)


@register("Cast", since=1)
class Cast(_Converting):
    """Y = X converted to the element type `to` (see the module docstring for the rules and
    the `saturate` and `round_mode` attributes)."""

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        self._conversion_attrs()
        to = onnx_dtype(self, "to", strings=True)
        if to == inputs[0].dtype and not dtypes.is_string(to):
            self.run = self._copy  # a Cast to the type it already has (exporters leave many)
        return [TensorSpec(to, inputs[0].shape)]

    def _copy(self, inputs, outputs):
        np.copyto(outputs[0], inputs[0])


@register("CastLike", since=15)
class CastLike(_Converting):
    """Y = X converted to the element type of input 1 (only its dtype is read), as Cast."""

    min_inputs = max_inputs = 2

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        self._conversion_attrs()
        return [TensorSpec(inputs[1].dtype, inputs[0].shape)]


@register("BitCast", since=26)
class BitCast(Kernel):
    """Y = X's bits read as the element type `to`, which must have X's bit width (bool counts
    as 8 bits, int4/uint4/float4e2m1 as 4, int2/uint2 as 2). Bytes are little endian. A byte
    read as bool is True when non-zero."""

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x = inputs[0]
        dtype = onnx_dtype(self, "to")
        if dtypes.is_string(x.dtype):
            raise self.fail("cannot reinterpret a string tensor's bits")
        if dtypes.bit_width(dtype) != dtypes.bit_width(x.dtype):
            raise self.fail(f"cannot reinterpret {x.dtype} ({dtypes.bit_width(x.dtype)} bits) as "
                            f"{dtype} ({dtypes.bit_width(dtype)} bits): bit widths differ")
        return [TensorSpec(dtype, x.shape)]

    def run(self, inputs, outputs):
        x, out = np.ascontiguousarray(inputs[0]), outputs[0]
        bits = dtypes.bit_width(x.dtype)
        if bits < 8:
            np.copyto(out.view(np.uint8), x.view(np.uint8) & np.uint8((1 << bits) - 1))
        elif out.dtype == np.bool_:
            np.not_equal(x.view(np.uint8), 0, out=out)
        else:
            np.copyto(out, x.view(out.dtype))

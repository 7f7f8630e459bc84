"""Sliding-window geometry shared by Conv and the pools (ONNX semantics, (N, C, *spatial)).

A `Window` is computed once in prepare from the node's attributes. Kernels then
see the input as a padded buffer in which every kernel tap is a plain strided
slice (`Window.taps`), so run is a short loop of whole-array numpy calls.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass

import numpy as np

from edgerun.runtime.kernels.attrs import ints_attr, prod, str_attr
from edgerun.runtime.kernels.base import Kernel, TensorSpec

AUTO_PADS = ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID")
MAX_TAPS = 1 << 16  # kernels with more positions than this are refused
# The padded copy of an input may hold at most this many elements, or PADDING_FACTOR times
# the input's, whichever is more: malformed pads cannot make us allocate without bound.
MIN_PADDED_LIMIT = 1 << 22
PADDING_FACTOR = 16

Index = tuple[object, ...]


@dataclass(frozen=True)
class Window:
    """Where a window visits the spatial axes of an input, per axis."""

    in_shape: tuple[int, ...]
    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    pads_begin: tuple[int, ...]
    pads_end: tuple[int, ...]
    out_shape: tuple[int, ...]

    @property
    def padded_shape(self) -> tuple[int, ...]:
        """Extent the windows touch, counted from the first padded position."""
        return tuple(
            (o - 1) * s + (k - 1) * d + 1
            for o, s, k, d in zip(self.out_shape, self.strides, self.kernel, self.dilations, strict=True)
        )

    @property
    def needs_padding(self) -> bool:
        return any(self.pads_begin) or any(
            p > n for p, n in zip(self.padded_shape, self.in_shape, strict=True)
        )

    def taps(self) -> list[Index]:
        """For each kernel position (row-major), the index into a padded (..., *padded_shape)
        buffer that gathers that tap for every output position: shape (..., *out_shape)."""
        result = []
        for offsets in itertools.product(*(range(k) for k in self.kernel)):
            result.append((Ellipsis,) + tuple(
                slice(i * d, i * d + (o - 1) * s + 1, s)
                for i, d, o, s in zip(offsets, self.dilations, self.out_shape, self.strides, strict=True)
            ))
        return result

    def tap_shifts(self) -> list[int]:
        """For each kernel position (row-major, as `taps`), how far it lies from the window's first
        position in a flattened (*padded_shape) plane: the window starting at p reads p + shift.
        With stride 1, windows start at consecutive positions, so a tap is one shift of the plane."""
        plane_strides = [prod(self.padded_shape[i + 1 :]) for i in range(len(self.padded_shape))]
        return [
            sum(i * d * s for i, d, s in zip(offsets, self.dilations, plane_strides, strict=True))
            for offsets in itertools.product(*(range(k) for k in self.kernel))
        ]


def window_from_attrs(
    kernel: Kernel, x_shape: tuple[int, ...], kernel_shape: tuple[int, ...], *,
    ceil_mode: bool = False, pads_below_kernel: bool = False,
) -> Window:
    """The window a Conv/pool node describes, for an (N, C, *spatial) input of `x_shape`,
    with its strides, dilations, pads and auto_pad attributes.

    `pads_below_kernel` refuses pads >= kernel size (pools, as ONNX Runtime does).
    Raises the node's ModelError for bad attributes, a window that fits nowhere, or
    a kernel or padding too large for the reference kernels.
    """
    in_shape = x_shape[2:]
    n = len(in_shape)
    if any(size < 1 for size in in_shape):
        raise kernel.fail(f"input shape {x_shape} has an empty spatial axis")
    if len(kernel_shape) != n or any(k < 1 for k in kernel_shape):
        raise kernel.fail(f"kernel_shape {kernel_shape} invalid for {n} spatial axes")
    strides = _per_axis(kernel, "strides", n)
    dilations = _per_axis(kernel, "dilations", n)
    extent = [(k - 1) * d + 1 for k, d in zip(kernel_shape, dilations, strict=True)]
    auto_pad = str_attr(kernel, "auto_pad", "NOTSET")
    begin, end = _pads(kernel, auto_pad, in_shape, strides, extent)
    if pads_below_kernel and any(p >= k for p, k in zip(begin + end, kernel_shape * 2, strict=True)):
        raise kernel.fail(f"pads {begin + end} must be smaller than kernel_shape {kernel_shape}")
    out = tuple(
        _out_size(i, b + e, x, s, ceil_mode and auto_pad == "NOTSET", b)
        for i, b, e, x, s in zip(in_shape, begin, end, extent, strides, strict=True)
    )
    if any(o < 1 for o in out):
        raise kernel.fail(
            f"window of extent {tuple(extent)} does not fit input {in_shape} padded by {begin + end}"
        )
    window = Window(in_shape, kernel_shape, strides, dilations, begin, end, out)
    padded = prod(x_shape[:2]) * prod(window.padded_shape)
    if prod(kernel_shape) > MAX_TAPS or padded > max(MIN_PADDED_LIMIT, PADDING_FACTOR * prod(x_shape)):
        raise kernel.fail(
            f"kernel {kernel_shape} over input {x_shape} padded to {window.padded_shape} is too large"
        )
    return window


def _per_axis(kernel: Kernel, key: str, n: int) -> tuple[int, ...]:
    values = ints_attr(kernel, key) or (1,) * n
    if len(values) != n or any(v < 1 for v in values):
        raise kernel.fail(f"{key} {values} invalid: need {n} values >= 1")
    return values


def _pads(
    kernel: Kernel, auto_pad: str, in_shape: tuple[int, ...], strides: tuple[int, ...], extent: list[int]
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(pads at the start, pads at the end) per spatial axis, from `pads` or `auto_pad`."""
    n = len(in_shape)
    if auto_pad not in AUTO_PADS:
        raise kernel.fail(f"auto_pad {auto_pad!r} is not one of {', '.join(AUTO_PADS)}")
    if auto_pad == "VALID":
        return (0,) * n, (0,) * n
    if auto_pad != "NOTSET":
        return _same_pads(in_shape, strides, extent, upper=auto_pad == "SAME_UPPER")
    pads = ints_attr(kernel, "pads") or (0,) * (2 * n)
    if len(pads) != 2 * n or any(p < 0 for p in pads):
        raise kernel.fail(f"pads {pads} invalid: need {2 * n} values >= 0")
    return pads[:n], pads[n:]


def _same_pads(
    in_shape: tuple[int, ...], strides: tuple[int, ...], extent: list[int], upper: bool
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    begin, end = [], []
    for i, s, x in zip(in_shape, strides, extent, strict=True):
        out = -(-i // s)
        total = max(0, (out - 1) * s + x - i)
        small, large = total // 2, total - total // 2
        begin.append(small if upper else large)
        end.append(large if upper else small)
    return tuple(begin), tuple(end)


def _out_size(size: int, pad: int, extent: int, stride: int, ceil_mode: bool, begin: int) -> int:
    span = size + pad - extent  # may be negative: then only ceil_mode can fit a window
    if not ceil_mode:
        return span // stride + 1
    out = -(-span // stride) + 1
    if (out - 1) * stride >= size + begin:  # the last window must start inside the input
        out -= 1
    return out


class PaddedInput:
    """Callable giving an (N, C, *spatial) input as a (N, C, *padded_shape) array in which the
    padding holds `fill`; the input itself when no padding is needed. The padded copy lives in
    a per-thread scratch buffer, valid until the next call with the same `slot`."""

    def __init__(self, window: Window, fill: float, slot: str) -> None:
        self.window = window
        self.fill = fill
        self.slot = slot
        self.needed = window.needs_padding
        n = len(window.in_shape)
        kept = [
            max(0, min(size, padded - b))
            for size, padded, b in zip(window.in_shape, window.padded_shape, window.pads_begin, strict=True)
        ]
        self.src: Index = (Ellipsis,) + tuple(slice(0, k) for k in kept)
        self.dst: Index = (Ellipsis,) + tuple(
            slice(b, b + k) for b, k in zip(window.pads_begin, kept, strict=True)
        )
        self.borders: list[Index] = []
        for axis, (b, k) in enumerate(zip(window.pads_begin, kept, strict=True)):
            before = (slice(None),) * (2 + axis)
            after = (slice(None),) * (n - 1 - axis)
            self.borders.append(before + (slice(0, b),) + after)
            self.borders.append(before + (slice(b + k, None),) + after)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if not self.needed:
            return x
        buf = scratch(self.slot, x.shape[:2] + self.window.padded_shape, x.dtype)
        for region in self.borders:
            buf[region] = self.fill
        np.copyto(buf[self.dst], x[self.src])
        return buf


_local = threading.local()


def scratch(slot: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """A per-thread reusable array of `shape` and `dtype`, contents undefined. It stays valid
    until the next call with the same `slot` in the same thread; never keep it after run."""
    dtype = np.dtype(dtype)
    nbytes = prod(shape) * dtype.itemsize
    pool: dict[str, np.ndarray] = _local.__dict__.setdefault("pool", {})
    buf = pool.get(slot)
    if buf is None or buf.size < nbytes:
        buf = pool[slot] = np.empty(max(nbytes, 64), np.uint8)
    return buf[:nbytes].view(dtype).reshape(shape)


class TapGradient:
    """The adjoint of gathering kernel taps from a `PaddedInput` (col2im), for gradient kernels.

    `start` gives a zeroed (N, C, *padded_shape) buffer, `add` adds one tap's gradient
    (shaped (N, C, *out_shape)) into it, and `finish` crops it into the input's gradient:
    what fell on padding is dropped and input positions no window reaches get 0. When the
    windows cover exactly the input, the buffer is the gradient itself and `finish` is free.
    The buffer lives in per-thread scratch (`slot`), valid until the next use of the slot.
    """

    def __init__(self, window: Window, slot: str) -> None:
        self.window = window
        self.slot = slot
        self.taps = window.taps()
        padded = PaddedInput(window, 0.0, slot)
        self.src, self.dst = padded.src, padded.dst
        self.direct = not any(window.pads_begin) and window.padded_shape == window.in_shape

    def start(self, dx: np.ndarray) -> np.ndarray:
        shape = dx.shape[:2] + self.window.padded_shape
        buf = dx if self.direct else scratch(self.slot, shape, dx.dtype)
        buf.fill(0)
        return buf

    def add(self, buf: np.ndarray, k: int, grad: np.ndarray) -> None:
        """buf[tap k] += grad."""
        view = buf[self.taps[k]]
        np.add(view, grad, out=view)

    def finish(self, buf: np.ndarray, dx: np.ndarray) -> None:
        if buf is dx:
            return
        dx.fill(0)
        np.copyto(dx[self.src], buf[self.dst])


def require_output_grad(
    kernel: Kernel, dy: TensorSpec, x: TensorSpec, out_shape: tuple[int, ...], what: str = "dY"
) -> None:
    """ModelError unless the incoming gradient `dy` has the forward output's shape and X's dtype."""
    if dy.dtype != x.dtype or dy.shape != out_shape:
        raise kernel.fail(
            f"{what} is {dy.dtype} {dy.shape}; the forward output for X {x.shape} is {x.dtype} {out_shape}"
        )

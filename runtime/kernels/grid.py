"""Sampling by a grid of normalized coordinates: GridSample, and AffineGrid, which makes
such a grid from affine matrices.

A grid point holds one coordinate in [-1, 1] per spatial axis of X, fastest axis first
(x = width, y = height, z = depth). GridSample maps each coordinate to a pixel position
(`denormalize`) and reads the taps around it: 1 (nearest), 2 (linear) or 4 (cubic) per
axis. The padding mode extends the image for taps outside it (`resolve_taps`): zeros,
the edge pixels, or the image mirrored at its borders. Run gathers every combination of
taps for all output points at once and sums them weighted in float64.

The arithmetic follows onnxruntime (and PyTorch): coordinates are computed in the grid's
float type (at least float32) and nearest rounds half to even. ONNX's reference evaluator
agrees except for cubic with border padding, where it first clamps a coordinate outside
the image to the edge pixel (onnxruntime issue #10607); the conformance cases do not cover it.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from edgerun.runtime.kernels.attrs import (
    FLOAT_KINDS,
    NUMERIC_KINDS,
    flag_attr,
    int_list,
    prod,
    require_kind,
    str_attr,
)
from edgerun.runtime.kernels.base import Kernel, TensorSpec
from edgerun.runtime.kernels.registry import register

PADDING_MODES = ("zeros", "border", "reflection")
TAPS = {"nearest": 1, "linear": 2, "cubic": 4}
MAX_TAP_POINTS = 1 << 12  # taps ** spatial rank: the points one output reads
CUBIC_A = -0.75


@dataclass(frozen=True)
class Taps:
    """What one spatial axis contributes to every output point: for tap t, the input index
    (clipped into the axis), its weight (None in nearest mode) and whether it lies inside
    the image (False reads 0 under zeros padding, and for NaN coordinates)."""

    index: list[np.ndarray]  # per tap: (N, P) intp
    weight: list[np.ndarray] | None  # per tap: (N, P) float64
    valid: list[np.ndarray]  # per tap: (N, P) bool


def denormalize(n: np.ndarray, size: int, align_corners: bool) -> np.ndarray:
    """Pixel position of normalized coordinates `n` along an axis of `size`: -1 and 1 are
    the centers of the end pixels when `align_corners`, else their outer edges."""
    if align_corners:
        return (n + 1) / 2 * (size - 1)
    return ((n + 1) * size - 1) / 2


def reflect(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """`x` reflected by the nearer of the borders `lo` <= `hi` until it lies between them."""
    span = hi - lo
    if span == 0:
        return np.where(np.isnan(x), x, lo).astype(x.dtype)
    below, above = x < lo, x > hi
    dx = np.where(below, lo - x, np.where(above, x - hi, 0))
    turns = np.floor(dx / span)
    rest = dx - turns * span
    odd = turns % 2 == 1
    low_side = np.where(below, ~odd, odd)  # ends up measured from lo
    moved = np.where(low_side, lo + rest, hi - rest)
    return np.where(below | above, moved, x).astype(x.dtype)


def borders(size: int, align_corners: bool) -> tuple[float, float]:
    """The pixel positions that normalized -1 and 1 map to."""
    return (0.0, size - 1.0) if align_corners else (-0.5, size - 0.5)


def resolve_taps(i: np.ndarray, size: int, padding: str, align_corners: bool) -> tuple[np.ndarray, np.ndarray]:
    """Integer tap positions `i` (float array) as (index clipped into the axis, inside?):
    zeros padding marks outside taps invalid; border clamps them; reflection reflects them."""
    valid = np.isfinite(i)
    if padding == "zeros":
        valid &= (i >= 0) & (i <= size - 1)
    elif padding == "reflection":
        lo, hi = borders(size, align_corners)
        i = np.trunc(reflect(i, lo, hi))
    i = np.clip(np.where(valid, i, 0), 0, size - 1)
    return i.astype(np.intp), valid


def cubic_weights(f: np.ndarray) -> list[np.ndarray]:
    """Keys' cubic convolution weights (a = -0.75) of the taps at -1, 0, 1, 2 from the
    floor of a position whose fractional part is `f`."""
    a = CUBIC_A
    near = [f, 1 - f]
    far = [f + 1, 2 - f]
    inner = [((a + 2) * x - (a + 3)) * x * x + 1 for x in near]
    outer = [((a * x - 5 * a) * x + 8 * a) * x - 4 * a for x in far]
    return [outer[0], inner[0], inner[1], outer[1]]


def axis_taps(n: np.ndarray, size: int, mode: str, padding: str, align_corners: bool) -> Taps:
    """The taps one axis of `size` reads for normalized coordinates `n` (N, P)."""
    with np.errstate(invalid="ignore", over="ignore"):
        x = denormalize(n, size, align_corners)
        if padding != "reflection":  # every tap beyond these reads the same (0 or the edge): bounds ints and inf
            x = np.clip(x, -3, size + 2)
        if mode == "nearest":
            index, valid = resolve_taps(np.rint(x), size, padding, align_corners)
            return Taps([index], None, [valid])
        floor = np.floor(x)
        f = (x - floor).astype(np.float64)
        offsets = (0, 1) if mode == "linear" else (-1, 0, 1, 2)
        weights = [1 - f, f] if mode == "linear" else cubic_weights(f)
        resolved = [resolve_taps(floor + o, size, padding, align_corners) for o in offsets]
    finite = np.isfinite(f)
    weights = [np.where(finite, w, 0.0) for w in weights]
    return Taps([r[0] for r in resolved], weights, [r[1] for r in resolved])


def grid_sample(x: np.ndarray, grid: np.ndarray, mode: str, padding: str, align_corners: bool) -> np.ndarray:
    """(N, C, *out) samples of X (N, C, *dims) at `grid` (N, *out, r): in X's dtype for
    nearest, else in float64."""
    n, c, dims = x.shape[0], x.shape[1], x.shape[2:]
    r = len(dims)
    coord_type = np.result_type(grid.dtype, np.float32)
    points = grid.reshape(n, -1, r).astype(coord_type)
    taps = [axis_taps(points[..., r - 1 - k], dims[k], mode, padding, align_corners) for k in range(r)]
    strides = [prod(dims[k + 1 :]) for k in range(r)]
    flat = x.reshape(n, c, -1)
    total = None
    for combo in itertools.product(range(TAPS[mode]), repeat=r):
        index = sum(taps[k].index[t] * strides[k] for k, t in enumerate(combo))
        valid = np.logical_and.reduce([taps[k].valid[t] for k, t in enumerate(combo)])
        values = np.where(valid[:, None, :], np.take_along_axis(flat, index[:, None, :], axis=2), np.zeros((), x.dtype))
        if mode == "nearest":
            return values
        weight = np.prod([taps[k].weight[t] for k, t in enumerate(combo)], axis=0)
        term = values.astype(np.float64) * weight[:, None, :]
        total = term if total is None else total + term
    return total


class _GridSampleBase(Kernel):
    """GridSample: Y (N, C, *grid spatial) = X (N, C, *dims) sampled at `grid`
    (N, *out, r) of normalized coordinates, x (the last axis of X) first. Attributes:
    mode (see MODES), padding_mode zeros (outside reads 0) / border (clamps to the edge
    pixels) / reflection (mirrors at the borders), align_corners (0: -1 and 1 are the
    outer edges of the end pixels; 1: their centers). Nearest rounds half to even and
    copies values exactly; linear and cubic (Keys, a = -0.75) interpolate in float64 and
    round integer outputs half to even, saturating. A NaN coordinate reads 0. Fails at
    prepare on an unknown mode or padding_mode, a grid whose rank or last dim does not
    match X's spatial rank, differing batch sizes, or an empty X with a non-empty grid."""

    min_inputs = max_inputs = 2
    MODES: dict[str, str] = {}  # the attribute's spelling -> nearest / linear / cubic
    DEFAULT_MODE = ""
    SPATIAL_RANKS: tuple[int, int | None] = (1, None)

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x, grid = inputs
        self._read_attrs()
        require_kind(self, x, NUMERIC_KINDS + ("b" if self.mode == "nearest" else ""), "X")
        require_kind(self, grid, FLOAT_KINDS, "grid")
        r = len(x.shape) - 2
        lo, hi = self.SPATIAL_RANKS
        if r < lo or (hi is not None and r > hi):
            want = f"rank {lo + 2}" if hi == lo else f"rank >= {lo + 2}"
            raise self.fail(f"X: expected {want} (N, C, spatial...), got shape {x.shape}")
        if len(grid.shape) != r + 2 or grid.shape[-1] != r:
            raise self.fail(f"grid: expected shape (N, {', '.join(['out'] * r)}, {r}) for X of shape {x.shape}, "
                            f"got {grid.shape}")
        if grid.shape[0] != x.shape[0]:
            raise self.fail(f"grid batch {grid.shape[0]} differs from X batch {x.shape[0]}")
        if TAPS[self.mode] ** r > MAX_TAP_POINTS:
            raise self.fail(f"mode {self.mode!r} reads {TAPS[self.mode]}**{r} points per output, "
                            f"more than {MAX_TAP_POINTS}")
        out_shape = x.shape[:2] + grid.shape[1:-1]
        if prod(out_shape) > 0 and prod(x.shape[2:]) == 0:
            raise self.fail(f"X of shape {x.shape} has no pixels to sample for an output of shape {out_shape}")
        return [TensorSpec(x.dtype, out_shape)]

    def _read_attrs(self) -> None:
        mode = str_attr(self, "mode", self.DEFAULT_MODE)
        if mode not in self.MODES:
            raise self.fail(f"mode {mode!r} is not one of {tuple(self.MODES)} at opset {self.version}")
        self.mode = self.MODES[mode]
        self.padding = str_attr(self, "padding_mode", "zeros")
        if self.padding not in PADDING_MODES:
            raise self.fail(f"padding_mode {self.padding!r} is not one of {PADDING_MODES}")
        self.align_corners = flag_attr(self, "align_corners")

    def run(self, inputs, outputs):
        out = outputs[0]
        if out.size == 0:
            return
        result = grid_sample(inputs[0], inputs[1], self.mode, self.padding, self.align_corners).reshape(out.shape)
        if out.dtype.kind in "iu" and self.mode != "nearest":
            info = np.iinfo(out.dtype)
            result = np.clip(np.rint(result), info.min, info.max)
        np.copyto(out, result, casting="unsafe")


@register("GridSample", since=16)
class GridSample16(_GridSampleBase):
    """GridSample-16: 4-D X and grid (2-D sampling); mode bilinear (default) / nearest / bicubic."""

    MODES = {"bilinear": "linear", "nearest": "nearest", "bicubic": "cubic"}
    DEFAULT_MODE = "bilinear"
    SPATIAL_RANKS = (2, 2)


@register("GridSample", since=20)
class GridSample(_GridSampleBase):
    """GridSample-20 (and 22, which adds bfloat16): any spatial rank r >= 1; mode linear
    (default) / nearest / cubic."""

    MODES = {"linear": "linear", "nearest": "nearest", "cubic": "cubic"}
    DEFAULT_MODE = "linear"


def base_coords(size: int, align_corners: bool) -> np.ndarray:
    """The normalized coordinates of the pixel centers of an axis of `size` (0 for size 1
    with align_corners)."""
    if align_corners:
        return np.linspace(-1.0, 1.0, size) if size > 1 else np.zeros(size)
    return (2 * np.arange(size) + 1) / size - 1


@register("AffineGrid", since=20)
class AffineGrid(Kernel):
    """(theta, size) -> grid: the normalized coordinates (x first) that the affine matrices
    theta (N, 2, 3) or (N, 3, 4) map the pixel centers of an image of `size` (N, C, H, W)
    or (N, C, D, H, W) to, shape (N, H, W, 2) or (N, D, H, W, 3), in theta's dtype
    (computed in float64). align_corners as in GridSample. `size` is needed at prepare
    time; fails when it is not 4 or 5 non-negative ints, when theta's shape does not match
    it, or theta is not float."""

    min_inputs = max_inputs = 2

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        theta = inputs[0]
        require_kind(self, theta, FLOAT_KINDS, "theta")
        size = int_list(self, self.value_of(values, 1), "size")
        if len(size) not in (4, 5) or any(d < 0 for d in size):
            raise self.fail(f"size {list(size)} must be 4 or 5 non-negative ints (N, C, [D,] H, W)")
        r = len(size) - 2
        if theta.shape != (size[0], r, r + 1):
            raise self.fail(f"theta: expected shape {(size[0], r, r + 1)} for size {list(size)}, got {theta.shape}")
        self.align_corners = flag_attr(self, "align_corners")
        self.spatial = size[2:]
        return [TensorSpec(theta.dtype, (size[0], *self.spatial, r))]

    def run(self, inputs, outputs):
        theta = inputs[0].astype(np.float64)
        axes = [base_coords(d, self.align_corners) for d in self.spatial]
        mesh = np.meshgrid(*axes, indexing="ij")  # slowest axis first
        points = np.stack([m.reshape(-1) for m in reversed(mesh)] + [np.ones(prod(self.spatial))], axis=1)
        grid = np.einsum("nij,pj->npi", theta, points)
        np.copyto(outputs[0], grid.reshape(outputs[0].shape), casting="unsafe")

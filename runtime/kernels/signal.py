"""Signal-processing kernels: DFT, STFT, the Hann, Hamming and Blackman windows and
MelWeightMatrix (opset 17 on; DFT's axis becomes an input in opset 20).

Complex tensors are real tensors whose last axis holds (real, imaginary); a last axis of size 1
is a real signal. Transforms run with numpy.fft in the input's precision (float64 for float64
input, float32 for the narrower types, as onnxruntime and ONNX's own expected outputs do).
Every input that decides an output shape (dft_length, axis, frame_step, frame_length, the
window size, num_mel_bins...) is read at prepare time; a negative or absurd value fails there
with a ModelError instead of allocating without bound.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from edgerun.runtime.kernels.attrs import FLOAT_KINDS, flag_attr, has_input, int_attr, kind_of, prod, require_kind
from edgerun.runtime.kernels.base import Kernel, TensorSpec
from edgerun.runtime.kernels.cast import cast_into, onnx_dtype
from edgerun.runtime.kernels.registry import register

MAX_LENGTH = 1 << 26  # the longest DFT, frame or window accepted
# An output may hold at most this many elements, or GROWTH_FACTOR times the input's, whichever is
# more: a malformed dft_length or frame_step cannot make us allocate without bound.
MIN_OUTPUT_LIMIT = 1 << 26
GROWTH_FACTOR = 16


# --- shared helpers ----------------------------------------------------------------------------


def _scalar(kernel: Kernel, value: np.ndarray, what: str, kinds: str) -> int | float:
    """The one element of `value` (a scalar or a one-element tensor) whose dtype kind is in `kinds`."""
    if value.size != 1 or value.ndim > 1 or kind_of(value.dtype) not in kinds:
        want = "an int" if kinds == "iu" else "a float"
        raise kernel.fail(f"{what}: expected {want} scalar, got {value.dtype} of shape {value.shape}")
    return value.reshape(()).item()


def _check_length(kernel: Kernel, length: int, what: str, lo: int = 1) -> int:
    if not lo <= length <= MAX_LENGTH:
        raise kernel.fail(f"{what} {length} is out of range [{lo}, {MAX_LENGTH}]")
    return length


def _check_output(kernel: Kernel, shape: tuple[int, ...], input_size: int) -> None:
    limit = max(MIN_OUTPUT_LIMIT, GROWTH_FACTOR * input_size)
    if prod(shape) > limit:
        raise kernel.fail(f"output shape {shape} ({prod(shape)} elements) is too large: at most {limit}")


def _check_signal(kernel: Kernel, x: TensorSpec, what: str) -> None:
    require_kind(kernel, x, FLOAT_KINDS, what)
    if len(x.shape) < 2 or x.shape[-1] not in (1, 2):
        raise kernel.fail(f"{what}: the last axis must hold 1 (real) or 2 (real, imaginary) values, "
                          f"got shape {x.shape}")


def _work_dtype(dtype: np.dtype) -> np.dtype:
    """The real dtype a transform of `dtype` data runs in: float64 for float64, else float32."""
    return np.dtype(np.float64 if dtype == np.float64 else np.float32)


def _as_complex(x: np.ndarray) -> np.ndarray:
    """A [..., 1] real tensor as a real one, a [..., 2] tensor as a complex one, without the last
    axis, in the precision `_work_dtype` picks."""
    x = x.astype(_work_dtype(x.dtype))
    return x[..., 0] if x.shape[-1] == 1 else x[..., 0] + 1j * x[..., 1]


def _store(out: np.ndarray, z: np.ndarray) -> None:
    """Write `z` into `out`: its real part, and its imaginary part when out's last axis has 2."""
    cast_into(out[..., 0], np.real(z))
    if out.shape[-1] == 2:
        cast_into(out[..., 1], np.imag(z))


# --- DFT ---------------------------------------------------------------------------------------


class _DFT(Kernel):
    """Shared by both versions: only where `axis` comes from differs."""

    min_inputs = 1

    def _axis(self, inputs: list[TensorSpec | None], values: list) -> int:
        raise NotImplementedError

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x = inputs[0]
        _check_signal(self, x, "input")
        rank = len(x.shape)
        axis = self._axis(inputs, values)
        if not -rank <= axis <= rank - 2 or axis == -1:
            raise self.fail(f"axis {axis} is out of range [{-rank}, -2] or [0, {rank - 2}] for rank {rank} "
                            "(the last axis holds real and imaginary parts)")
        self.axis = axis % rank
        self.inverse, self.onesided = flag_attr(self, "inverse"), flag_attr(self, "onesided")
        is_complex = x.shape[-1] == 2
        if self.onesided and not self.inverse and is_complex:
            raise self.fail(f"onesided=1 (real-to-complex DFT) needs real input (last axis 1), got shape {x.shape}")
        if self.onesided and self.inverse and not is_complex:
            raise self.fail(f"onesided=1 with inverse=1 (complex-to-real DFT) needs complex input (last axis 2), "
                            f"got shape {x.shape}")
        n = x.shape[self.axis]
        if has_input(inputs, 1):
            length = _scalar(self, self.value_of(values, 1), "dft_length", "iu")
        else:
            length = 2 * (n - 1) if self.onesided and self.inverse else n
        self.length = _check_length(self, length, "dft_length")
        bins = length // 2 + 1 if self.onesided and not self.inverse else length
        last = 1 if self.onesided and self.inverse else 2
        shape = x.shape[: self.axis] + (bins,) + x.shape[self.axis + 1 : -1] + (last,)
        _check_output(self, shape, x.size)
        return [TensorSpec(x.dtype, shape)]

    def run(self, inputs, outputs):
        z = _as_complex(inputs[0])
        n, axis = self.length, self.axis
        if self.inverse:
            y = np.fft.irfft(z, n, axis) if self.onesided else np.fft.ifft(z, n, axis)
        else:
            y = np.fft.rfft(z, n, axis) if self.onesided else np.fft.fft(z, n, axis)
        _store(outputs[0], y)


@register("DFT", since=17)
class DFT17(_DFT):
    """(input[, dft_length]) -> output: the DFT along attribute `axis` (default 1) of a real
    ([..., 1]) or complex ([..., 2]) float tensor, zero-padded or cut to `dft_length`
    (an int scalar, needed at prepare time; default the axis' size). `inverse`=1 gives the
    inverse DFT (scaled by 1/dft_length). `onesided`=1 with inverse=0 is the real-to-complex
    DFT (real input; dft_length // 2 + 1 bins); with inverse=1 the complex-to-real one
    (complex input, the first dft_length // 2 + 1 bins read; output [..., 1] of dft_length,
    default 2 * (axis size - 1)). ModelError for the last axis as `axis`, a dft_length
    outside [1, MAX_LENGTH] or an output too large."""

    max_inputs = 2

    def _axis(self, inputs, values):
        return int_attr(self, "axis", 1)


@register("DFT", since=20)
class DFT20(_DFT):
    """As DFT-17, but the axis is optional input 2 (an int scalar, needed at prepare time;
    default -2, the last signal axis) instead of an attribute."""

    max_inputs = 3

    def _axis(self, inputs, values):
        return _scalar(self, self.value_of(values, 2), "axis", "iu") if has_input(inputs, 2) else -2


# --- STFT --------------------------------------------------------------------------------------


@register("STFT", since=17)
class STFT(Kernel):
    """(signal, frame_step[, window, frame_length]) -> output [batch, frames, bins, 2]: the DFT
    of each frame of `frame_length` samples, frames starting every `frame_step` samples
    (frames = (signal_length - frame_length) // frame_step + 1), each multiplied by `window`
    (1-D, of signal's dtype; default all ones). signal is [batch, signal_length, 1 or 2].
    frame_length defaults to the window's length, else to signal_length; frame_step and
    frame_length are int scalars needed at prepare time. `onesided`=1 (the default) keeps
    frame_length // 2 + 1 bins (for a complex signal too, as onnxruntime does). ModelError for
    frame_step < 1, a frame_length outside [1, signal_length], a window whose length is not
    frame_length, or an output too large."""

    min_inputs, max_inputs = 2, 4

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        x = inputs[0]
        _check_signal(self, x, "signal")
        if len(x.shape) != 3:
            raise self.fail(f"signal: expected shape [batch, signal_length, 1 or 2], got {x.shape}")
        signal_length = x.shape[1]
        step = _scalar(self, self.value_of(values, 1), "frame_step", "iu")
        if step < 1:
            raise self.fail(f"frame_step must be >= 1, got {step}")
        window = inputs[2] if has_input(inputs, 2) else None
        if window is not None and (len(window.shape) != 1 or window.dtype != x.dtype):
            raise self.fail(f"window: expected a 1-D {x.dtype} tensor, got {window.dtype} of shape {window.shape}")
        if has_input(inputs, 3):
            length = _scalar(self, self.value_of(values, 3), "frame_length", "iu")
            if window is not None and window.shape[0] != length:
                raise self.fail(f"window has {window.shape[0]} values but frame_length is {length}")
        else:
            length = signal_length if window is None else window.shape[0]
        if not 1 <= length <= signal_length:
            raise self.fail(f"frame_length {length} is out of range [1, {signal_length}] (the signal's length)")
        self.step, self.length = step, length
        self.onesided = flag_attr(self, "onesided", 1)
        frames = (signal_length - length) // step + 1
        bins = length // 2 + 1 if self.onesided else length
        shape = (x.shape[0], frames, bins, 2)
        _check_output(self, shape, x.size)
        return [TensorSpec(x.dtype, shape)]

    def run(self, inputs, outputs):
        z = _as_complex(inputs[0])  # [batch, signal_length]
        frames = sliding_window_view(z, self.length, axis=1)[:, :: self.step]  # [batch, frames, length]
        window = inputs[2] if len(inputs) > 2 and inputs[2] is not None else None
        if window is not None:
            frames = frames * window.astype(frames.real.dtype)
        if self.onesided and not np.iscomplexobj(frames):
            y = np.fft.rfft(frames, axis=-1)
        else:
            y = np.fft.fft(frames, axis=-1)[..., : outputs[0].shape[2]]
        _store(outputs[0], y)


# --- windows -----------------------------------------------------------------------------------


class _Window(Kernel):
    """Shared by the cosine-sum windows: w[n] = a0 - a1 cos(2 pi n / N) + a2 cos(4 pi n / N)."""

    coefficients: tuple[float, float, float]

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        size = _check_length(self, _scalar(self, self.value_of(values, 0), "size", "iu"), "size")
        self.periodic = flag_attr(self, "periodic", 1)
        dtype = onnx_dtype(self, "output_datatype", np.dtype(np.float32))
        if dtype.kind == "b":
            raise self.fail("attribute 'output_datatype': bool is not a window type")
        return [TensorSpec(dtype, (size,))]

    def run(self, inputs, outputs):
        out = outputs[0]
        size = out.shape[0]
        period = size if self.periodic else size - 1
        a0, a1, a2 = self.coefficients
        with np.errstate(divide="ignore", invalid="ignore"):  # a symmetric window of size 1 is NaN, as in ONNX
            angle = np.arange(size, dtype=np.float64) * (2 * math.pi / period if period else math.inf)
            cast_into(out, a0 - a1 * np.cos(angle) + a2 * np.cos(2 * angle))


@register("HannWindow", since=17)
class HannWindow(_Window):
    """(size) -> output [size]: the Hann window 0.5 - 0.5 cos(2 pi n / N), N = size (`periodic`=1,
    the default) or size - 1 (symmetric; NaN for size 1, as ONNX's function defines it), of
    element type `output_datatype` (default float; an int type truncates). size is an int
    scalar needed at prepare time; ModelError outside [1, MAX_LENGTH] (ONNX's schema refuses 0)."""

    coefficients = (0.5, 0.5, 0.0)


@register("HammingWindow", since=17)
class HammingWindow(_Window):
    """(size) -> output [size]: the Hamming window 25/46 - 21/46 cos(2 pi n / N); otherwise as
    HannWindow."""

    coefficients = (25 / 46, 21 / 46, 0.0)


@register("BlackmanWindow", since=17)
class BlackmanWindow(_Window):
    """(size) -> output [size]: the Blackman window 0.42 - 0.5 cos(2 pi n / N) + 0.08 cos(4 pi n / N);
    otherwise as HannWindow."""

    coefficients = (0.42, 0.5, 0.08)


# --- MelWeightMatrix ---------------------------------------------------------------------------


@register("MelWeightMatrix", since=17)
class MelWeightMatrix(Kernel):
    """(num_mel_bins, dft_length, sample_rate, lower_edge_hertz, upper_edge_hertz) -> output
    [dft_length // 2 + 1, num_mel_bins]: triangular filters of peak 1 that map a one-sided
    spectrum onto mel bands (mel(f) = 2595 log10(1 + f / 700)), with ONNX's bin placement:
    num_mel_bins + 2 points evenly spaced in mel from lower to upper edge, each at DFT bin
    floor((dft_length + 1) * hz / sample_rate). Element type `output_datatype` (default float).
    All five scalars are needed at prepare time. ModelError for num_mel_bins or dft_length out of
    range, sample_rate < 1, edges not 0 <= lower <= upper, an upper edge past the last bin, or an
    output of more elements than MIN_OUTPUT_LIMIT. Prepare computes only the filters' bins; run
    writes the matrix straight into the output (each bin lies under two filters at most, so the
    work besides zeroing the output is linear in dft_length + num_mel_bins)."""

    min_inputs = max_inputs = 5

    def prepare(self, inputs, values):
        self.check_arity(inputs)
        mels, length, rate = (_scalar(self, self.value_of(values, i), name, "iu")
                              for i, name in enumerate(("num_mel_bins", "dft_length", "sample_rate")))
        lower, upper = (_scalar(self, self.value_of(values, i), name, "f")
                        for i, name in ((3, "lower_edge_hertz"), (4, "upper_edge_hertz")))
        _check_length(self, mels, "num_mel_bins", lo=0)
        _check_length(self, length, "dft_length")
        if rate < 1:
            raise self.fail(f"sample_rate must be >= 1, got {rate}")
        if not 0 <= lower <= upper < math.inf:
            raise self.fail(f"the edges must satisfy 0 <= lower_edge_hertz <= upper_edge_hertz, "
                            f"got {lower} and {upper}")
        shape = (length // 2 + 1, mels)
        _check_output(self, shape, 0)
        points = _mel_points(mels, length, rate, lower, upper)
        last = max(points[-2], points[-1] - 1) if mels else 0  # the last bin a filter writes
        if last >= shape[0]:
            raise self.fail(f"upper_edge_hertz {upper} falls in DFT bin {last:.0f}, past the last ({shape[0] - 1}) "
                            f"for dft_length {length} and sample_rate {rate}")
        self.points = points.astype(np.int64)
        return [TensorSpec(onnx_dtype(self, "output_datatype", np.dtype(np.float32)), shape)]

    def run(self, inputs, outputs):
        _mel_matrix_into(outputs[0], self.points)


def _mel_points(mels: int, length: int, rate: int, lower: float, upper: float) -> np.ndarray:
    """The DFT bins (whole float64s) of mels + 2 points evenly spaced in mel from `lower` to `upper`
    Hz (the last step falls short of `upper`: ONNX divides the range by mels + 2)."""
    low, high = (2595 * np.log10(1 + np.float64(f) / 700) for f in (lower, upper))
    mel = low + np.arange(mels + 2) * ((high - low) / (mels + 2))
    hz = 700 * (10 ** (mel / 2595) - 1)
    return np.floor((length + 1) * hz / rate)


def _mel_matrix_into(out: np.ndarray, points: np.ndarray) -> None:
    """out [bins, len(points) - 2] = the filters: filter i rises from points[i] to 1 at points[i + 1]
    and falls to 0 at points[i + 2]; a filter whose rise is empty is 1 at its centre. Only the
    filters' supports are computed (with `points` nondecreasing, O(bins + filters) elements):
    no temporary the size of `out`."""
    out[...] = 0
    left, centre, right = points[:-2], points[1:-1], points[2:]
    first, last = left, np.minimum(np.maximum(centre, right - 1), out.shape[0] - 1)  # the support
    count = np.maximum(last - first + 1, 0)
    filt = np.repeat(np.arange(len(left)), count)
    j = first[filt] + np.arange(filt.size) - np.repeat(np.cumsum(count) - count, count)
    left, centre, right = left[filt], centre[filt], right[filt]
    rise = (j - left) / np.maximum(centre - left, 1)
    up = np.where(centre == left, j == centre, np.where(j <= centre, rise, 0.0))
    fall = (right - j) / np.maximum(right - centre, 1)
    values = np.empty(j.size, out.dtype)
    cast_into(values, np.where((j >= centre) & (j < right), fall, up))
    out[j, filt] = values

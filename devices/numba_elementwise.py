"""The numba backend's fast paths for the cheap per-element ops between convolutions: Relu,
float32 Sigmoid, inference BatchNormalization (a per-channel multiply-add) and PRelu with one
slope per channel (mediapipe's face, iris and palm models run one after most convolutions),
each one compiled pass parallel over blocks or channel planes.

Sigmoid needs exp, which numba calls per element from libm (5 ns each here, slower than numpy's
vectorized exp); `sigmoid_f32` computes exp itself as Cephes' expf does, 2^n * e^r with |r| <=
ln2/2 and a degree-5 polynomial for e^r, which vectorizes: 1.4x numpy's four passes on one
thread, and it runs on all of them (max error 1.2e-7 against numpy's float32 sigmoid).

numpy runs these single-threaded, and its np.maximum (Relu) measured 5x slower than a
compare-and-blend on the AMD EPYC machines we benchmark on; DenseNet-121 runs 121 of each.
"""

from __future__ import annotations

from math import prod

import numpy as np
from numba import njit, prange

from edgerun.devices.numba_epilogue import _ONE, CLIP, activate_row, activation_code, exp_f32, prelu_planes, quotient
from edgerun.devices.numba_threads import thread_count, use_threads
from edgerun.runtime.kernels.registry import accelerate
from edgerun.runtime.layout import ChannelsLastOffer

BACKEND = "numba"
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
BLOCK = 1 << 14  # elements per parallel task of a flat elementwise loop
MIN_PARALLEL = 1 << 15  # below this many elements, numpy's one call is as fast
MIN_COMPILED = 1 << 14  # below this many elements numpy's four passes beat a compiled call (its ~10 µs launch)


@njit(parallel=True, cache=True, nogil=True)
def clip_blocks(x, out, consts):  # pragma: no cover - compiled
    """out = clip(x, consts[0], consts[1]) over flat arrays, NaN kept; parallel over blocks."""
    size = x.shape[0]
    for block in prange((size + BLOCK - 1) // BLOCK):
        start = block * BLOCK
        stop = min(size, start + BLOCK)
        src, dst = x[start:stop], out[start:stop]
        for k in range(stop - start):
            dst[k] = src[k]
        activate_row(dst, CLIP, consts)


@njit(parallel=True, cache=True, nogil=True)
def sigmoid_f32(x, out):  # pragma: no cover - compiled
    """out = 1 / (1 + exp(-x)) over flat float32 arrays, NaN kept; parallel over blocks, one
    vectorized loop per block (exp_f32, and a division without numba's zero test)."""
    size = x.shape[0]
    for block in prange((size + BLOCK - 1) // BLOCK):
        start = block * BLOCK
        stop = min(size, start + BLOCK)
        src, dst = x[start:stop], out[start:stop]
        for k in range(stop - start):
            v = src[k]
            dst[k] = v if v != v else quotient(_ONE, _ONE + exp_f32(-v))


@njit(parallel=True, cache=True, nogil=True)
def scale_shift_planes(x, mul, add, out):  # pragma: no cover - compiled
    """out[n, c, :] = x[n, c, :] * mul[c] + add[c]; parallel over the (n, c) planes."""
    n_, c_, p_ = x.shape
    for plane in prange(n_ * c_):
        n, c = plane // c_, plane % c_
        src, dst, m, a = x[n, c], out[n, c], mul[c], add[c]
        for k in range(p_):
            dst[k] = src[k] * m + a


@njit(parallel=True, cache=True, nogil=True)
def scale_channels(x, scale, out, x_last):  # pragma: no cover - compiled
    """out = x * scale per (image, channel): x and out (N, C, P), or (N, P, C) when x_last;
    scale (N or 1, C). Parallel over the images and channel planes (or pixel rows)."""
    n_ = x.shape[0]
    c_ = x.shape[2] if x_last else x.shape[1]
    p_ = x.shape[1] if x_last else x.shape[2]
    per = p_ if x_last else c_
    for task in prange(n_ * per):
        n, k = task // per, task % per
        s = scale[n if scale.shape[0] > 1 else 0]
        src, dst = x[n, k], out[n, k]
        if x_last:
            for c in range(c_):
                dst[c] = src[c] * s[c]
        else:
            factor = s[k]
            for q in range(p_):
                dst[q] = src[q] * factor


@accelerate("Mul", BACKEND)
class NumbaMul:
    """Float Mul of an (N, C, H, W) tensor by one factor per (image, channel), (N or 1, C, 1, 1):
    a squeeze-excite's scaling, one compiled pass; it keeps a channels-last region going
    (runtime.layout: the factors are the same bytes in either layout)."""

    def prepare(self, inputs, values):
        specs = super().prepare(inputs, values)
        a, b = inputs[0], inputs[1]
        self.big = None
        if (a is None or b is None or a.dtype not in _FLOATS or a.dtype != b.dtype or len(specs[0].shape) != 4
                or specs[0].size == 0):
            return specs
        shape = specs[0].shape
        for big, small in ((0, 1), (1, 0)):
            x, s = inputs[big], inputs[small]
            if (tuple(x.shape) == tuple(shape) and len(s.shape) == 4 and s.shape[2:] == (1, 1)
                    and s.shape[1] == shape[1] and s.shape[0] in (1, shape[0])):
                self.big, self.x_last = big, False
                self.threads = thread_count(getattr(self.context, "num_threads", None), prod(shape))
                self.run = self._run_scale
                break
        return specs

    def channels_last(self) -> ChannelsLastOffer | None:
        if getattr(self, "big", None) is None:
            return None
        return ChannelsLastOffer(frozenset({0, 1}), True, frozenset({self.big}))

    def use_channels_last(self, inputs: frozenset[int], output: bool) -> None:
        self.x_last = output  # the factors' layout does not matter; X's is tied to the output's

    def _run_scale(self, inputs, outputs):
        x, s, out = np.ascontiguousarray(inputs[self.big]), inputs[1 - self.big], outputs[0]
        if not out.flags.c_contiguous:
            super().run(inputs, outputs)
            return
        n, c = x.shape[:2]
        shape = (n, -1, c) if self.x_last else (n, c, -1)
        use_threads(self.threads)
        scale_channels(x.reshape(shape), np.ascontiguousarray(s).reshape(s.shape[0], c), out.reshape(shape),
                       self.x_last)


@accelerate("PRelu", BACKEND)
class NumbaPRelu:
    """Float PRelu of an (N, C, ...) tensor whose slope has one value per channel (or one in
    all): one compiled pass, parallel over the channel planes."""

    def prepare(self, inputs, values):
        specs = super().prepare(inputs, values)
        x = inputs[0]
        if x.dtype not in _FLOATS or len(x.shape) < 2 or specs[0].size < 4096:
            return specs
        channels = x.shape[1]
        per_channel = (1,) * (len(x.shape) - len(self.slope_shape)) + tuple(self.slope_shape)
        if all(d == 1 for i, d in enumerate(per_channel) if i != 1) and per_channel[1] in (1, channels):
            self.channels = channels
            self.threads = thread_count(getattr(self.context, "num_threads", None), specs[0].size)
            self.run = self._run_compiled
        return specs

    def _run_compiled(self, inputs, outputs):
        x, out = np.ascontiguousarray(inputs[0]), outputs[0]
        slope = np.ascontiguousarray(np.broadcast_to(inputs[1].reshape(-1), (self.channels,)))
        use_threads(self.threads)
        shape = (x.shape[0], self.channels, x.size // max(1, x.shape[0] * self.channels))
        prelu_planes(x.reshape(shape), slope, out.reshape(shape))


@accelerate("Relu", BACKEND)
class NumbaRelu:
    """Float Relu of a large tensor: one compiled pass, parallel (a Clip to [0, inf))."""

    def prepare(self, inputs, values):
        specs = super().prepare(inputs, values)
        x = inputs[0]
        if x.dtype in _FLOATS and specs[0].size >= MIN_PARALLEL:
            _, self.consts, _ = activation_code(("Relu", ()), x.dtype)
            self.threads = thread_count(getattr(self.context, "num_threads", None), specs[0].size)
            self.run = self._run_compiled
        return specs

    def _run_compiled(self, inputs, outputs):
        use_threads(self.threads)
        clip_blocks(np.ascontiguousarray(inputs[0]).reshape(-1), outputs[0].reshape(-1), self.consts)


@accelerate("Sigmoid", BACKEND)
class NumbaSigmoid:
    """float32 Sigmoid: one compiled pass with a vectorized exp, parallel over blocks."""

    def prepare(self, inputs, values):
        specs = super().prepare(inputs, values)
        if inputs[0].dtype == np.float32 and specs[0].size >= MIN_COMPILED:
            self.threads = thread_count(getattr(self.context, "num_threads", None), specs[0].size)
            self.run = self._run_compiled
        return specs

    def _run_compiled(self, inputs, outputs):
        use_threads(self.threads)
        sigmoid_f32(np.ascontiguousarray(inputs[0]).reshape(-1), outputs[0].reshape(-1))


@accelerate("BatchNormalization", BACKEND)
class NumbaBatchNormalization:
    """Inference BatchNormalization with constant parameters over float (N, C, ...) tensors: one
    compiled multiply-add pass, parallel over the channel planes."""

    def prepare(self, inputs, values):
        specs = super().prepare(inputs, values)
        x = inputs[0]
        per_channel = getattr(self, "param_shape", (None,))[0] == (x.shape[1] if len(x.shape) > 1 else None)
        if (x.dtype in _FLOATS and self.coeffs is not None and not getattr(self, "training", False)
                and per_channel and len(specs) == 1 and specs[0].size > 0):
            self.mul, self.add = (np.ascontiguousarray(c.reshape(-1)) for c in self.coeffs)
            self.threads = thread_count(getattr(self.context, "num_threads", None), specs[0].size)
            self.run = self._run_compiled
        return specs

    def _run_compiled(self, inputs, outputs):
        x, out = np.ascontiguousarray(inputs[0]), outputs[0]
        use_threads(self.threads)
        shape = (x.shape[0], x.shape[1], x.size // max(1, x.shape[0] * x.shape[1]))
        scale_shift_planes(x.reshape(shape), self.mul, self.add, out.reshape(shape))

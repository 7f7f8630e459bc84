"""The numba backend's Resize / Upsample over the two spatial axes of float NCHW tensors.

The reference (runtime.kernels.resize) gathers along one axis at a time with np.take into float64
temporaries, which costs milliseconds on the small upsamplings of detection and segmentation
heads (mediapipe's face and pose models run three). Here the prepared per-axis taps and weights
(the same `AxisSampling` plans the reference builds, so every coordinate mode, nearest rounding
and cubic coefficient is the reference's) drive one compiled pass, parallel over the channel
planes, accumulating each output in float64 as the reference does.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from edgerun.devices.numba_threads import thread_count, use_threads
from edgerun.runtime.kernels.registry import accelerate

BACKEND = "numba"
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


@njit(parallel=True, cache=True, nogil=True)
def resample_planes(x, iy, wy, ix, wx, out):  # pragma: no cover - compiled
    """out[p, y, z] = sum_i sum_j wy[y, i] * wx[z, j] * x[p, iy[y, i], ix[z, j]] in float64."""
    planes, oh, ow = out.shape
    ty, tx = iy.shape[1], ix.shape[1]
    for p in prange(planes):
        src, dst = x[p], out[p]
        for y in range(oh):
            for z in range(ow):
                acc = 0.0
                for i in range(ty):
                    row = src[iy[y, i]]
                    part = 0.0
                    for j in range(tx):
                        part += wx[z, j] * row[ix[z, j]]
                    acc += wy[y, i] * part
                dst[y, z] = acc


def _identity(size: int) -> tuple[np.ndarray, np.ndarray]:
    return np.arange(size, dtype=np.intp)[:, None], np.ones((size, 1))


class _CompiledResample:
    """Mixin for Resize and Upsample: the compiled path where it applies (float, rank 4, only
    the last two axes resampled, no extrapolation), the reference everywhere else."""

    def prepare(self, inputs, values):
        specs = super().prepare(inputs, values)
        x = inputs[0]
        plans = getattr(self, "plans", None)
        if (x.dtype not in _FLOATS or len(x.shape) != 4 or specs[0].size == 0 or plans is None
                or any(p.axis not in (2, 3) or p.outside is not None for p in plans)):
            return specs
        out_shape = specs[0].shape
        by_axis = {p.axis: p for p in plans}
        taps = []
        for axis in (2, 3):
            plan = by_axis.get(axis)
            if plan is None:
                taps.append(_identity(x.shape[axis]))
            elif self.nearest:  # one weight 1: the reference's pick
                pick = plan.index[np.arange(len(plan.index)), np.argmax(plan.weights, axis=1)]
                taps.append((np.ascontiguousarray(pick[:, None]), np.ones((len(pick), 1))))
            else:
                taps.append((np.ascontiguousarray(plan.index), np.ascontiguousarray(plan.weights, np.float64)))
        (self.iy, self.wy), (self.ix, self.wx) = taps
        self.planes = (x.shape[0] * x.shape[1], out_shape[2], out_shape[3])
        self.threads = thread_count(getattr(self.context, "num_threads", None), specs[0].size)
        self.run = self._run_compiled
        return specs

    def _run_compiled(self, inputs, outputs):
        x = np.ascontiguousarray(inputs[0])
        use_threads(self.threads)
        resample_planes(x.reshape(-1, x.shape[2], x.shape[3]), self.iy, self.wy, self.ix, self.wx,
                        outputs[0].reshape(self.planes))


@accelerate("Resize", BACKEND)
class NumbaResize(_CompiledResample):
    pass


@accelerate("Upsample", BACKEND)
class NumbaUpsample(_CompiledResample):
    pass

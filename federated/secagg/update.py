"""Model deltas <-> ring vectors: a client's weighted delta and its weight in one vector, so
the weighted FedAvg numerator and denominator come out of one masked sum.

A client with weight w in [0, 1] (its example count over the round's `max_weight`) sends
quantize([w * delta..., w * R]); the coordinator's sum gives S = sum_i w_i delta_i and
W = sum_i w_i, and the weighted average S / W.

The weight slot of an honest client holds between one quantization step and R (weights in
(0, 1]; a weight below one step is sent as one step). The masks hide what each client put
there, so `decode_sum` refuses a total outside [m steps, m * R] for m survivors
(ImplausibleWeight): a client claiming a weight above 1 or at most 0 would rescale everyone's
average. A client inside the bounds can still overstate its own weight up to 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edgerun.federated.secagg.errors import ImplausibleWeight
from edgerun.federated.secagg.quantize import Quantization, dequantize_sum, quantize, to_signed


def vector_length(shapes: Sequence[tuple[int, ...]]) -> int:
    """Ring elements for a model with these parameter shapes: all values plus the weight."""
    return sum(int(np.prod(s, dtype=np.int64)) for s in shapes) + 1


def encode_update(delta: Sequence[np.ndarray], weight: float, q: Quantization) -> np.ndarray:
    """The ring vector of w * delta (clipped to [-R, R] per value) followed by
    max(w * R, one step). ValueError for a weight outside (0, 1] or non-finite values."""
    if not 0.0 < weight <= 1.0:
        raise ValueError(f"weight must be in (0, 1], got {weight}")
    flat = np.concatenate([np.asarray(d, dtype=np.float64).ravel() for d in delta] + [np.zeros(1)])
    flat *= weight
    flat[-1] = max(weight * q.clip_range, q.step)
    return quantize(flat, q)


def decode_sum(ring_sum: np.ndarray, q: Quantization, num_clients: int,
               shapes: Sequence[tuple[int, ...]]) -> tuple[list[np.ndarray], float]:
    """(sum_i w_i delta_i as float64 arrays of `shapes`, sum_i w_i). ValueError for a length
    mismatch; ConfigurationError when the sum of `num_clients` could have wrapped;
    ImplausibleWeight when the total weight is outside [num_clients steps, num_clients * 1]."""
    if len(ring_sum) != vector_length(shapes):
        raise ValueError(f"sum has {len(ring_sum)} elements, the model needs {vector_length(shapes)}")
    q.check_no_wrap(num_clients)
    steps = int(to_signed(np.asarray(ring_sum[-1:]), q.bits)[0])
    if not num_clients <= steps <= num_clients * q.levels:
        raise ImplausibleWeight(f"total weight {steps / q.levels:.6g} of {num_clients} clients is outside "
                                f"[{num_clients / q.levels:.3g}, {num_clients}]: some client sent a weight "
                                "outside (0, 1]")
    values = dequantize_sum(ring_sum, q, num_clients)
    out, start = [], 0
    for shape in shapes:
        size = int(np.prod(shape, dtype=np.int64))
        out.append(values[start : start + size].reshape(shape))
        start += size
    return out, float(values[-1] / q.clip_range)

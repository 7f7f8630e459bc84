"""Aggregation math of federated strategies: pure numpy functions of NDArrays.

Nothing here touches a strategy, a client or the network; every function takes arrays
and numbers and returns new arrays (inputs are never modified). Averages, sums and
server-optimizer states are computed and returned in float64; `apply_delta` casts the
result back to each parameter's dtype. Bad arguments (mismatched lists, impossible
hyperparameters) raise ValueError with a message that names what is wrong.

Sign convention (Reddi et al. 2021, "Adaptive Federated Optimization"): a client's
delta is its trained weights minus the global weights it received; the server's
pseudo-gradient is g = -(average delta), and server optimizers step x <- x - eta * step(g).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Integral, Real

import numpy as np

from edgerun.federated.typing import FitRes, Metrics, NDArrays

# ---------------------------------------------------------------- validation


def check_like(name: str, arrays: NDArrays, parameters: NDArrays) -> None:
    """ValueError unless `arrays` has as many arrays as `parameters`, with the same shapes."""
    if len(arrays) != len(parameters):
        raise ValueError(f"{name}: expected {len(parameters)} arrays, got {len(arrays)}")
    for i, (a, p) in enumerate(zip(arrays, parameters, strict=True)):
        if np.shape(a) != np.shape(p):
            raise ValueError(f"{name}[{i}]: expected shape {np.shape(p)}, got {np.shape(a)}")


def update_problem(parameters: NDArrays, res: FitRes) -> str | None:
    """Why a client's FitRes cannot be aggregated against `parameters`, or None if it can.

    A usable result has num_examples an integer > 0 and a delta with as many arrays as
    `parameters`, each an ndarray of the same shape and dtype and all values finite."""
    n = res.num_examples
    if isinstance(n, bool) or not isinstance(n, Integral) or n <= 0:
        return f"num_examples must be an integer > 0, got {n!r}"
    delta = res.delta
    if not isinstance(delta, (list, tuple)) or len(delta) != len(parameters):
        got = len(delta) if isinstance(delta, (list, tuple)) else type(delta).__name__
        return f"delta: expected {len(parameters)} arrays, got {got}"
    for i, (d, p) in enumerate(zip(delta, parameters, strict=True)):
        if not isinstance(d, np.ndarray):
            return f"delta[{i}]: expected an ndarray, got {type(d).__name__}"
        if d.shape != p.shape:
            return f"delta[{i}]: expected shape {p.shape}, got {d.shape}"
        if d.dtype != p.dtype:
            return f"delta[{i}]: expected dtype {p.dtype}, got {d.dtype}"
        if not np.all(np.isfinite(d)):
            return f"delta[{i}]: has NaN or Inf values"
    return None


def split_fit_results(
    parameters: NDArrays, results: Sequence[tuple[str, FitRes]]
) -> tuple[list[tuple[str, FitRes]], dict[str, str]]:
    """(accepted results in their order, {client id: reason} of the rejected ones).

    A result is rejected when `update_problem` finds a problem or when its client id
    already sent a result earlier in `results` (only the first one counts). Rejected
    results never reach an aggregate."""
    accepted: list[tuple[str, FitRes]] = []
    rejected: dict[str, str] = {}
    seen: set[str] = set()
    for cid, res in results:
        problem = "duplicate result for this client" if cid in seen else update_problem(parameters, res)
        seen.add(cid)
        if problem is None:
            accepted.append((cid, res))
        else:
            rejected.setdefault(cid, problem)
    return accepted, rejected


# ---------------------------------------------------------------- averaging


def weighted_sum(updates: Sequence[NDArrays], weights: Sequence[float]) -> NDArrays:
    """sum_i weights[i] * updates[i], per array, in float64.

    ValueError when there are no updates, the counts differ, or the updates' shapes differ."""
    if len(updates) == 0:
        raise ValueError("weighted_sum: no updates")
    if len(updates) != len(weights):
        raise ValueError(f"weighted_sum: {len(updates)} updates but {len(weights)} weights")
    for k, update in enumerate(updates[1:], start=1):
        check_like(f"update {k}", update, updates[0])
    total = [np.zeros(np.shape(a), dtype=np.float64) for a in updates[0]]
    for update, w in zip(updates, weights, strict=True):
        for acc, a in zip(total, update, strict=True):
            acc += float(w) * np.asarray(a, dtype=np.float64)
    return total


def weighted_average(updates: Sequence[NDArrays], weights: Sequence[float]) -> NDArrays:
    """sum_i w_i * updates[i] / sum_i w_i, per array, in float64.

    Weights must be finite and >= 0 with a positive total; ValueError otherwise (and as
    `weighted_sum`)."""
    w = np.asarray(weights, dtype=np.float64)
    if not (np.all(np.isfinite(w)) and np.all(w >= 0) and w.sum() > 0):
        raise ValueError(f"weighted_average: weights must be finite, >= 0, with a positive total; "
                         f"got {w.tolist()}")
    total = w.sum()
    return [a / total for a in weighted_sum(updates, list(w))]


def apply_delta(parameters: NDArrays, delta: NDArrays, scale: float = 1.0) -> NDArrays:
    """New arrays parameters[i] + scale * delta[i], each cast to parameters[i]'s dtype.

    ValueError when counts or shapes differ."""
    check_like("delta", delta, parameters)
    return [
        (np.asarray(p, dtype=np.float64) + scale * np.asarray(d, dtype=np.float64)).astype(p.dtype)
        for p, d in zip(parameters, delta, strict=True)
    ]


def clip_by_global_norm(arrays: NDArrays, max_norm: float | None) -> tuple[NDArrays, float]:
    """(`arrays` scaled down so that their global L2 norm is at most `max_norm`, each in its
    own dtype; their norm before). None or a bound <= 0 clips nothing, and arrays within the
    bound come back as they are. A non-finite norm under a bound gives NaN arrays: whatever
    aggregates them then fails as "not finite" instead of trusting a partial clip."""
    norm = math.sqrt(sum(float(np.sum(np.square(a, dtype=np.float64))) for a in arrays))
    if max_norm is None or max_norm <= 0 or norm <= max_norm:
        return list(arrays), norm
    if not math.isfinite(norm):
        return [np.full_like(a, np.nan) for a in arrays], norm
    scale = max_norm / norm
    return [(a * scale).astype(a.dtype) for a in arrays], norm


def weighted_metrics(pairs: Sequence[tuple[int, Metrics]]) -> Metrics:
    """Example-weighted mean of each metric key over the (num_examples, metrics) pairs that
    report it as a finite number; other values (strings, NaN, bools) are ignored."""
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for n, metrics in pairs:
        for key, value in metrics.items():
            if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
                continue
            sums[key] = sums.get(key, 0.0) + n * float(value)
            counts[key] = counts.get(key, 0) + n
    return {key: sums[key] / counts[key] for key in sums if counts[key] > 0}


# ---------------------------------------------------------------- server optimizers


def _state_or(name: str, state: NDArrays | None, parameters: NDArrays, fill: float) -> NDArrays:
    """`state` as float64 arrays, checked against `parameters`; `fill`-valued arrays when None/empty."""
    if not state:
        return [np.full(np.shape(p), fill, dtype=np.float64) for p in parameters]
    check_like(name, state, parameters)
    return [np.asarray(s, dtype=np.float64) for s in state]


def fedavgm_step(
    parameters: NDArrays, avg_delta: NDArrays, momentum_buffer: NDArrays | None, *,
    server_lr: float, momentum: float,
) -> tuple[NDArrays, NDArrays]:
    """One FedAvgM server step (Hsu et al. 2019), as torch SGD with momentum on g = -avg_delta:

        buf = momentum * buf + g      (buf starts at zero, so the first step has buf = g)
        x   = x - server_lr * buf

    Returns (new parameters in their dtypes, new buffer in float64). With momentum 0 and
    server_lr 1 this is FedAvg (x + avg_delta). ValueError on mismatched shapes."""
    check_like("avg_delta", avg_delta, parameters)
    buf = _state_or("momentum_buffer", momentum_buffer, parameters, 0.0)
    new_buf = [momentum * b - np.asarray(d, dtype=np.float64) for b, d in zip(buf, avg_delta, strict=True)]
    return apply_delta(parameters, new_buf, scale=-server_lr), new_buf


def _fedopt_step(
    variant: str, parameters: NDArrays, avg_delta: NDArrays, m: NDArrays | None, v: NDArrays | None,
    eta: float, beta_1: float, beta_2: float, tau: float,
) -> tuple[NDArrays, NDArrays, NDArrays]:
    """Reddi et al. 2021, Algorithm 2, without bias correction; m starts at 0 and v at tau**2."""
    check_like("avg_delta", avg_delta, parameters)
    m_prev = _state_or("m", m, parameters, 0.0)
    v_prev = _state_or("v", v, parameters, tau * tau)
    new_m, new_v, steps = [], [], []
    for d, m_i, v_i in zip(avg_delta, m_prev, v_prev, strict=True):
        g = -np.asarray(d, dtype=np.float64)
        m_i = beta_1 * m_i + (1.0 - beta_1) * g
        g2 = g * g
        if variant == "adagrad":
            v_i = v_i + g2
        elif variant == "adam":
            v_i = beta_2 * v_i + (1.0 - beta_2) * g2
        else:  # yogi
            v_i = v_i - (1.0 - beta_2) * g2 * np.sign(v_i - g2)
        new_m.append(m_i)
        new_v.append(v_i)
        steps.append(m_i / (np.sqrt(v_i) + tau))
    return apply_delta(parameters, steps, scale=-eta), new_m, new_v


def fedadagrad_step(
    parameters: NDArrays, avg_delta: NDArrays, m: NDArrays | None, v: NDArrays | None, *,
    eta: float, beta_1: float, tau: float,
) -> tuple[NDArrays, NDArrays, NDArrays]:
    """FedAdagrad: g = -avg_delta; m = b1 m + (1-b1) g; v = v + g^2; x = x - eta m / (sqrt(v) + tau).

    m None/empty starts at 0, v at tau^2. Returns (new parameters, m, v)."""
    return _fedopt_step("adagrad", parameters, avg_delta, m, v, eta, beta_1, 0.0, tau)


def fedadam_step(
    parameters: NDArrays, avg_delta: NDArrays, m: NDArrays | None, v: NDArrays | None, *,
    eta: float, beta_1: float, beta_2: float, tau: float,
) -> tuple[NDArrays, NDArrays, NDArrays]:
    """FedAdam: as fedadagrad_step but v = b2 v + (1-b2) g^2 (no bias correction)."""
    return _fedopt_step("adam", parameters, avg_delta, m, v, eta, beta_1, beta_2, tau)


def fedyogi_step(
    parameters: NDArrays, avg_delta: NDArrays, m: NDArrays | None, v: NDArrays | None, *,
    eta: float, beta_1: float, beta_2: float, tau: float,
) -> tuple[NDArrays, NDArrays, NDArrays]:
    """FedYogi: as fedadagrad_step but v = v - (1-b2) g^2 sign(v - g^2)."""
    return _fedopt_step("yogi", parameters, avg_delta, m, v, eta, beta_1, beta_2, tau)


# ---------------------------------------------------------------- robust aggregation


def _stack(updates: Sequence[NDArrays], index: int) -> np.ndarray:
    return np.stack([np.asarray(u[index], dtype=np.float64) for u in updates])


def _check_updates(name: str, updates: Sequence[NDArrays]) -> None:
    if len(updates) == 0:
        raise ValueError(f"{name}: no updates")
    for k, update in enumerate(updates[1:], start=1):
        check_like(f"{name}: update {k}", update, updates[0])


def coordinate_median(updates: Sequence[NDArrays]) -> NDArrays:
    """Coordinate-wise median (Yin et al. 2018), unweighted, in float64; with an even count,
    the mean of the two middle values. ValueError when empty or shapes differ."""
    _check_updates("coordinate_median", updates)
    return [np.median(_stack(updates, i), axis=0) for i in range(len(updates[0]))]


def trimmed_mean(updates: Sequence[NDArrays], beta: float) -> NDArrays:
    """Coordinate-wise trimmed mean (Yin et al. 2018), unweighted, in float64: per coordinate,
    drop the floor(beta * n) smallest and as many largest values and average the rest.

    ValueError unless 0 <= beta < 0.5 (at least one value is always kept), or as
    `coordinate_median`."""
    if not 0.0 <= beta < 0.5:
        raise ValueError(f"trimmed_mean: beta must be in [0, 0.5), got {beta}")
    _check_updates("trimmed_mean", updates)
    n = len(updates)
    cut = int(math.floor(beta * n))
    return [np.sort(_stack(updates, i), axis=0)[cut : n - cut].mean(axis=0) for i in range(len(updates[0]))]


def krum_scores(updates: Sequence[NDArrays], num_byzantine: int) -> np.ndarray:
    """Krum score of each update (Blanchard et al. 2017): the sum of squared L2 distances to
    its n - f - 2 nearest other updates (all arrays flattened into one vector).

    ValueError unless n > 2f + 2 (f = num_byzantine >= 0), or as `coordinate_median`."""
    _check_updates("krum", updates)
    n, f = len(updates), num_byzantine
    if f < 0 or n <= 2 * f + 2:
        raise ValueError(f"krum: needs n > 2f + 2 updates, got n={n} with f={f} (needs n >= {2 * f + 3})")
    flat = np.stack([np.concatenate([np.ravel(np.asarray(a, dtype=np.float64)) for a in u]) for u in updates])
    scores = np.empty(n, dtype=np.float64)
    for i in range(n):
        dist = np.sum((flat - flat[i]) ** 2, axis=1)
        others = np.sort(np.delete(dist, i))
        scores[i] = others[: n - f - 2].sum()
    return scores


def krum(
    updates: Sequence[NDArrays], num_byzantine: int, num_selected: int = 1
) -> tuple[NDArrays, list[int]]:
    """(Krum / multi-Krum aggregate in float64, indices of the selected updates).

    Selects the `num_selected` updates with the lowest `krum_scores` (ties go to the lower
    index) and returns their unweighted mean; num_selected = 1 is Krum. ValueError unless
    1 <= num_selected <= n - f, or as `krum_scores`."""
    scores = krum_scores(updates, num_byzantine)
    n = len(updates)
    if not 1 <= num_selected <= n - num_byzantine:
        raise ValueError(f"krum: num_selected must be in [1, n - f] = [1, {n - num_byzantine}], "
                         f"got {num_selected}")
    chosen = sorted(int(i) for i in np.argsort(scores, kind="stable")[:num_selected])
    picked = [updates[i] for i in chosen]
    return [_stack(picked, i).mean(axis=0) for i in range(len(updates[0]))], chosen

"""Aggregation math (federated.aggregate) and the strategies' aggregate_fit / aggregate_sum,
checked against hand-computed numbers and formulas written out here."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgerun.federated import aggregate as agg
from edgerun.federated.strategies import (
    FedAdagrad,
    FedAdam,
    FedAvg,
    FedAvgM,
    FedMedian,
    FedProx,
    FedTrimmedAvg,
    FedYogi,
    Krum,
    RoundFailed,
    SumAggregationUnsupported,
)
from edgerun.federated.typing import FitRes, NDArrays


def arr(*values: float, dtype=np.float64) -> np.ndarray:
    return np.array(values, dtype=dtype)


def res(delta: NDArrays, n: int = 1, **metrics: float) -> FitRes:
    return FitRes(delta=delta, num_examples=n, metrics=dict(metrics))


def scalar_results(deltas: list[float], ns: list[int] | None = None) -> list[tuple[str, FitRes]]:
    """Clients c0, c1, ... each sending a one-element delta."""
    ns = ns or [1] * len(deltas)
    return [(f"c{i}", res([arr(d)], n)) for i, (d, n) in enumerate(zip(deltas, ns, strict=True))]


# ---------------------------------------------------------------- averaging


def test_weighted_average_matches_hand_computation():
    a = [arr(1.0, 2.0), arr(10.0)]
    b = [arr(5.0, 6.0), arr(2.0)]

    out = agg.weighted_average([a, b], [1, 3])

    np.testing.assert_array_equal(out[0], [4.0, 5.0])  # (1 + 15) / 4, (2 + 18) / 4
    np.testing.assert_array_equal(out[1], [4.0])  # (10 + 6) / 4


@pytest.mark.parametrize("weights", [[0, 0], [-1, 2], [1, math.nan]])
def test_weighted_average_rejects_bad_weights(weights):
    with pytest.raises(ValueError, match="weights must be finite"):
        agg.weighted_average([[arr(1.0)], [arr(2.0)]], weights)


def test_weighted_average_rejects_mismatched_updates():
    with pytest.raises(ValueError, match=r"update 1\[0\]: expected shape \(2,\), got \(3,\)"):
        agg.weighted_average([[arr(1.0, 2.0)], [arr(1.0, 2.0, 3.0)]], [1, 1])


def test_apply_delta_keeps_dtype_and_scales():
    out = agg.apply_delta([arr(1.0, 2.0, dtype=np.float32)], [arr(0.5, -1.0)], scale=2.0)

    assert out[0].dtype == np.float32
    np.testing.assert_array_equal(out[0], [2.0, 0.0])


def test_weighted_metrics_weights_by_examples_and_skips_non_numbers():
    out = agg.weighted_metrics([(1, {"acc": 0.5, "tag": "x"}), (3, {"acc": 0.9, "loss": math.nan})])

    assert out == {"acc": pytest.approx(0.8)}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fedavg_equals_example_weighted_mean_of_client_weights(dtype):
    rng = np.random.default_rng(0)
    global_w = [rng.normal(size=(3, 2)).astype(dtype), rng.normal(size=4).astype(dtype)]
    clients = [[rng.normal(size=(3, 2)).astype(dtype), rng.normal(size=4).astype(dtype)] for _ in range(3)]
    ns = [10, 30, 60]
    results = [(f"c{i}", res([w - g for w, g in zip(cw, global_w, strict=True)], n))
               for i, (cw, n) in enumerate(zip(clients, ns, strict=True))]

    new, metrics = FedAvg().aggregate_fit(1, global_w, results, failures=0)

    for k in range(2):
        expected = sum(n * c[k].astype(np.float64) for c, n in zip(clients, ns, strict=True)) / sum(ns)
        assert new[k].dtype == dtype
        np.testing.assert_allclose(new[k], expected, rtol=1e-6 if dtype == np.float32 else 1e-12, atol=1e-6)
    assert metrics["num_examples"] == 100 and metrics["accepted"] == 3 and metrics["rejected"] == 0


def test_fit_metrics_are_example_weighted():
    results = [("a", res([arr(0.0)], 1, loss=2.0)), ("b", res([arr(0.0)], 3, loss=6.0))]

    _, metrics = FedAvg().aggregate_fit(1, [arr(0.0)], results, failures=2)

    assert metrics["loss"] == 5.0 and metrics["failures"] == 2


# ---------------------------------------------------------------- server optimizers


def test_fedavgm_with_zero_momentum_equals_fedavg():
    params = [arr(1.0, -2.0), arr(3.0)]
    results = [("a", res([arr(0.5, 1.0), arr(-1.0)], 2)), ("b", res([arr(1.5, 0.0), arr(2.0)], 6))]

    avg, _ = FedAvg().aggregate_fit(1, params, results, failures=0)
    avgm, _ = FedAvgM(momentum=0.0, server_lr=1.0).aggregate_fit(1, params, results, failures=0)

    for x, y in zip(avg, avgm, strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize(("server_lr", "after_1", "after_2"), [(1.0, 4.0, 6.5), (0.5, 2.5, 3.75)])
def test_fedavgm_two_rounds_by_hand(server_lr, after_1, after_2):
    # x0 = 1; round 1 average delta 3 -> buf = -3; round 2 average delta 1 -> buf = 0.5 * -3 - 1 = -2.5.
    # lr 1:   x1 = 1 + 3 = 4,       x2 = 4 + 2.5 = 6.5
    # lr 0.5: x1 = 1 + 1.5 = 2.5,   x2 = 2.5 + 1.25 = 3.75
    strategy = FedAvgM(momentum=0.5, server_lr=server_lr)

    x1, _ = strategy.aggregate_fit(1, [arr(1.0)], scalar_results([2.0, 4.0]), failures=0)
    x2, _ = strategy.aggregate_fit(2, x1, scalar_results([1.0, 1.0]), failures=0)

    assert x1[0][0] == after_1 and x2[0][0] == after_2


def adaptive_reference(variant: str, x: float, deltas: list[float], eta: float, b1: float, b2: float,
                       tau: float) -> list[float]:
    """Reddi et al. 2021 Algorithm 2 for one coordinate, written out: the x after each round."""
    m, v, xs = 0.0, tau**2, []
    for d in deltas:
        g = -d
        m = b1 * m + (1 - b1) * g
        if variant == "adagrad":
            v = v + g**2
        elif variant == "adam":
            v = b2 * v + (1 - b2) * g**2
        else:
            sign = (v > g**2) - (v < g**2)
            v = v - (1 - b2) * g**2 * sign
        x = x - eta * m / (math.sqrt(v) + tau)
        xs.append(x)
    return xs


@pytest.mark.parametrize(("cls", "variant"), [(FedAdagrad, "adagrad"), (FedAdam, "adam"), (FedYogi, "yogi")])
def test_adaptive_server_optimizers_two_rounds(cls, variant):
    # coordinate 0: a large then a small delta (Yogi's sign flips); coordinate 1: a sign change.
    eta, b1, b2, tau = 0.1, 0.9, 0.99, 1e-3
    strategy = cls(eta=eta, beta_1=b1, tau=tau) if cls is FedAdagrad else cls(eta=eta, beta_1=b1, beta_2=b2, tau=tau)
    x0 = [arr(1.0, -1.0)]
    rounds = [[("a", res([arr(0.4, 0.2)], 1)), ("b", res([arr(0.8, 0.2)], 3))],   # averages 0.7, 0.2
              [("a", res([arr(0.01, -0.5)], 1))]]                                 # averages 0.01, -0.5

    x1, _ = strategy.aggregate_fit(1, x0, rounds[0], failures=0)
    x2, _ = strategy.aggregate_fit(2, x1, rounds[1], failures=0)

    want0 = adaptive_reference(variant, 1.0, [0.7, 0.01], eta, b1, b2, tau)
    want1 = adaptive_reference(variant, -1.0, [0.2, -0.5], eta, b1, b2, tau)
    np.testing.assert_allclose([x1[0][0], x2[0][0]], want0, rtol=1e-12)
    np.testing.assert_allclose([x1[0][1], x2[0][1]], want1, rtol=1e-12)


def test_fedadam_first_step_closed_form():
    # one round: m = (1 - b1) g, v = b2 tau^2 + (1 - b2) g^2, x = x0 - eta m / (sqrt(v) + tau)
    g, eta, b1, b2, tau = -2.0, 0.5, 0.9, 0.99, 0.1
    m, v = 0.1 * g, 0.99 * 0.01 + 0.01 * 4.0

    x1, _ = FedAdam(eta=eta, beta_1=b1, beta_2=b2, tau=tau).aggregate_fit(
        1, [arr(0.0)], scalar_results([2.0]), failures=0)

    assert x1[0][0] == pytest.approx(-eta * m / (math.sqrt(v) + tau), rel=1e-12)


# ---------------------------------------------------------------- robust aggregation


@pytest.mark.parametrize(("values", "median"), [([1.0, 5.0, 3.0], 3.0), ([1.0, 2.0, 10.0, 4.0], 3.0)])
def test_coordinate_median_odd_and_even(values, median):
    out = agg.coordinate_median([[arr(v, -v)] for v in values])

    np.testing.assert_array_equal(out[0], [median, -median])


@pytest.mark.parametrize(("values", "beta", "mean"), [
    ([1.0, 2.0, 3.0, 4.0, 100.0], 0.2, 3.0),    # cut 1 each end: (2 + 3 + 4) / 3
    ([1.0, 2.0, 3.0, 100.0], 0.25, 2.5),        # cut 1 each end: (2 + 3) / 2
    ([1.0, 2.0, 3.0, 100.0], 0.2, 26.5),        # floor(0.8) = 0: plain mean
    ([-50.0, 1.0, 2.0, 3.0, 4.0, 90.0], 0.4, 2.5),  # cut 2 each end
])
def test_trimmed_mean_by_hand(values, beta, mean):
    out = agg.trimmed_mean([[arr(v)] for v in values], beta)

    assert out[0][0] == pytest.approx(mean)


@pytest.mark.parametrize("beta", [0.5, -0.1, 0.7])
def test_trimmed_mean_rejects_beta(beta):
    with pytest.raises(ValueError, match="beta must be in"):
        agg.trimmed_mean([[arr(1.0)], [arr(2.0)]], beta)


def test_fedmedian_and_trimmed_avg_apply_to_global():
    params = [arr(10.0)]
    results = scalar_results([1.0, 2.0, 30.0, 4.0, 5.0], ns=[1, 1, 1000, 1, 1])

    med, _ = FedMedian().aggregate_fit(1, params, results, failures=0)
    trim, _ = FedTrimmedAvg(beta=0.2).aggregate_fit(1, params, results, failures=0)

    assert med[0][0] == 14.0  # 10 + median 4, num_examples ignored
    assert trim[0][0] == pytest.approx(10.0 + (2.0 + 4.0 + 5.0) / 3)


def test_krum_scores_by_hand():
    # f = 0: each score sums the n - 2 = 2 smallest squared distances to the others
    updates = [[arr(0.0)], [arr(1.0)], [arr(3.0)], [arr(10.0)]]

    scores = agg.krum_scores(updates, num_byzantine=0)
    delta, chosen = agg.krum(updates, num_byzantine=0)

    np.testing.assert_array_equal(scores, [1 + 9, 1 + 4, 4 + 9, 49 + 81])
    assert chosen == [1] and delta[0][0] == 1.0


def test_krum_picks_the_honest_cluster():
    rng = np.random.default_rng(3)
    honest = [[rng.normal(1.0, 0.01, size=(2, 3)), rng.normal(-1.0, 0.01, size=4)] for _ in range(6)]
    byzantine = [[np.full((2, 3), 1e6), np.full(4, -1e6)], [np.full((2, 3), -1e6), np.full(4, 1e6)]]
    updates = byzantine[:1] + honest + byzantine[1:]   # indices 0 and 7 are attackers

    _, chosen_one = agg.krum(updates, num_byzantine=2)
    delta, chosen = agg.krum(updates, num_byzantine=2, num_selected=4)

    assert chosen_one[0] in range(1, 7)
    assert len(chosen) == 4 and set(chosen) <= set(range(1, 7))
    np.testing.assert_allclose(delta[0], 1.0, atol=0.05)
    np.testing.assert_allclose(delta[1], -1.0, atol=0.05)


def test_krum_strategy_ignores_a_byzantine_client():
    results = scalar_results([1.0, 1.1, 0.9, 1.05, 1e9])

    new, metrics = Krum(num_byzantine=1).aggregate_fit(1, [arr(0.0)], results, failures=0)

    assert 0.9 <= new[0][0] <= 1.1 and metrics["krum_selected"] == 1


@pytest.mark.parametrize(("n", "f"), [(6, 2), (2, 0), (4, 1)])
def test_krum_needs_more_than_2f_plus_2(n, f):
    with pytest.raises(ValueError, match=r"needs n > 2f \+ 2"):
        agg.krum([[arr(float(i))] for i in range(n)], num_byzantine=f)


def test_krum_strategy_fails_the_round_below_2f_plus_3():
    with pytest.raises(RoundFailed, match="need at least 5 usable"):
        Krum(num_byzantine=1).aggregate_fit(1, [arr(0.0)], scalar_results([1.0] * 4), failures=0)


# ---------------------------------------------------------------- secure-aggregation sums

SUM_STRATEGIES = [
    FedAvg, FedProx, lambda: FedAvgM(momentum=0.9, server_lr=0.5), FedAdam, FedYogi, FedAdagrad,
]


@pytest.mark.parametrize("make", SUM_STRATEGIES)
def test_aggregate_sum_equals_aggregate_fit(make):
    by_fit, by_sum = make(), make()
    params = [np.array([[1.0, -2.0], [0.5, 4.0]], dtype=np.float32), arr(3.0, dtype=np.float32)]
    rounds = [
        [("a", res([np.array([[0.5, 1.0], [-1.0, 0.25]], np.float32), arr(-1.0, dtype=np.float32)], 2)),
         ("b", res([np.array([[1.5, 0.0], [2.0, -0.75]], np.float32), arr(2.0, dtype=np.float32)], 6))],
        [("a", res([np.array([[-0.25, 0.5], [1.0, 1.0]], np.float32), arr(0.5, dtype=np.float32)], 4))],
    ]
    x_fit = x_sum = params
    for r, results in enumerate(rounds, start=1):
        # the secure sum is exact here: every value is a small dyadic number
        total = [sum(float(n.num_examples) * n.delta[k].astype(np.float64) for _, n in results) for k in range(2)]
        examples = sum(n.num_examples for _, n in results)

        x_fit, m_fit = by_fit.aggregate_fit(r, x_fit, results, failures=0)
        x_sum, m_sum = by_sum.aggregate_sum(r, x_sum, total, examples, num_results=len(results))

        for a, b in zip(x_fit, x_sum, strict=True):
            assert a.dtype == b.dtype == np.float32
            np.testing.assert_array_equal(a, b)
        assert m_sum["num_examples"] == m_fit["num_examples"] and m_sum["accepted"] == m_fit["accepted"]


@pytest.mark.parametrize("make", [FedMedian, FedTrimmedAvg, Krum])
def test_robust_strategies_refuse_sums(make):
    strategy = make()

    assert strategy.needs_individual_updates
    with pytest.raises(SumAggregationUnsupported, match="needs each client's update") as info:
        strategy.aggregate_sum(1, [arr(0.0)], [arr(1.0)], 1, 1)
    assert isinstance(info.value, NotImplementedError)


@pytest.mark.parametrize(("total", "examples", "error", "match"), [
    ([arr(math.nan)], 2, RoundFailed, "NaN or Inf"),
    ([arr(1.0)], 0, RoundFailed, "total_examples must be > 0"),
    ([arr(1.0, 2.0)], 2, ValueError, r"weighted_delta_sum\[0\]: expected shape"),
    ([arr(1.0), arr(2.0)], 2, ValueError, "expected 1 arrays, got 2"),
])
def test_aggregate_sum_rejects_bad_sums(total, examples, error, match):
    with pytest.raises(error, match=match):
        FedAvg().aggregate_sum(1, [arr(0.0)], total, examples, num_results=2)


def test_aggregate_sum_fails_with_too_few_results():
    with pytest.raises(RoundFailed, match="need at least 3 usable"):
        FedAvg(min_fit_results=3).aggregate_sum(1, [arr(0.0)], [arr(1.0)], 4, num_results=2, failures=1)


# ---------------------------------------------------------------- rejected client results

PARAMS = [np.array([[1.0, 2.0]], dtype=np.float32), arr(0.0, 0.0, 0.0, dtype=np.float32)]
GOOD = [
    ("a", res([np.array([[0.5, 1.0]], np.float32), arr(1.0, 2.0, 3.0, dtype=np.float32)], 1)),
    ("b", res([np.array([[1.0, 2.0]], np.float32), arr(3.0, 2.0, 1.0, dtype=np.float32)], 3)),
    ("c", res([np.array([[0.0, 0.5]], np.float32), arr(1.0, 1.0, 1.0, dtype=np.float32)], 2)),
    ("d", res([np.array([[2.0, 1.0]], np.float32), arr(0.0, 1.0, 0.0, dtype=np.float32)], 2)),
    ("e", res([np.array([[1.5, 1.5]], np.float32), arr(2.0, 0.0, 2.0, dtype=np.float32)], 1)),
]
BAD = {
    "shape": res([np.zeros((2, 1), np.float32), np.zeros(3, np.float32)], 1),
    "dtype": res([np.zeros((1, 2), np.float64), np.zeros(3, np.float32)], 1),
    "count": res([np.zeros((1, 2), np.float32)], 1),
    "nan": res([np.array([[math.nan, 0.0]], np.float32), np.zeros(3, np.float32)], 1),
    "inf": res([np.zeros((1, 2), np.float32), np.array([0.0, math.inf, 0.0], np.float32)], 1),
    "zero_examples": res([np.zeros((1, 2), np.float32), np.zeros(3, np.float32)], 0),
    "negative_examples": res([np.zeros((1, 2), np.float32), np.zeros(3, np.float32)], -5),
    "not_arrays": res([[0.0, 0.0], np.zeros(3, np.float32)], 1),
}
REASONS = {"shape": "expected shape", "dtype": "expected dtype", "count": "expected 2 arrays",
           "nan": "NaN or Inf", "inf": "NaN or Inf", "zero_examples": "num_examples",
           "negative_examples": "num_examples", "not_arrays": "expected an ndarray"}


@pytest.mark.parametrize("make", [FedAvg, FedAdam, FedMedian, FedTrimmedAvg, lambda: Krum(num_byzantine=1)])
@pytest.mark.parametrize("kind", sorted(BAD))
def test_bad_results_are_rejected_without_changing_the_aggregate(make, kind):
    clean, _ = make().aggregate_fit(1, PARAMS, GOOD, failures=0)
    strategy = make()

    new, metrics = strategy.aggregate_fit(1, PARAMS, GOOD[:2] + [("bad", BAD[kind])] + GOOD[2:], failures=0)

    for a, b in zip(clean, new, strict=True):
        np.testing.assert_array_equal(a, b)
    assert metrics["rejected"] == 1 and metrics["accepted"] == 5
    assert list(strategy.last_rejected) == ["bad"] and REASONS[kind] in strategy.last_rejected["bad"]


def test_a_second_result_from_the_same_client_is_rejected():
    strategy = FedAvg()

    new, metrics = strategy.aggregate_fit(1, [arr(0.0)], scalar_results([1.0, 3.0]) + [("c0", res([arr(100.0)]))], 0)

    assert new[0][0] == 2.0 and metrics["rejected"] == 1
    assert strategy.last_rejected == {"c0": "duplicate result for this client"}


def test_round_fails_when_every_result_is_rejected():
    with pytest.raises(RoundFailed, match=r"0 usable of 2 asked \(1 rejected, 1 failed\)"):
        FedAvg().aggregate_fit(1, [arr(0.0)], [("a", res([arr(math.nan)]))], failures=1)


def test_clip_by_global_norm_scales_down_to_the_bound_in_each_dtype():
    arrays = [arr(3.0, dtype=np.float32), arr(0.0, 4.0)]  # global norm 5
    clipped, norm = agg.clip_by_global_norm(arrays, 1.0)
    assert norm == 5.0 and [a.dtype for a in clipped] == [np.float32, np.float64]
    np.testing.assert_allclose(np.concatenate(clipped), [0.6, 0.0, 0.8], rtol=1e-6)


@pytest.mark.parametrize("bound", [None, 0.0, 5.0, 9.0])
def test_clip_by_global_norm_leaves_arrays_within_the_bound_or_without_one(bound):
    arrays = [arr(3.0), arr(4.0)]
    clipped, norm = agg.clip_by_global_norm(arrays, bound)
    assert norm == 5.0 and all(a is b for a, b in zip(clipped, arrays, strict=True))


def test_clip_by_global_norm_of_a_non_finite_update_is_nan():
    clipped, norm = agg.clip_by_global_norm([arr(np.inf, 1.0)], 1.0)
    assert math.isinf(norm) and np.isnan(clipped[0]).all()

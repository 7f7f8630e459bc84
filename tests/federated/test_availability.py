"""Device conditions (federated.availability) and the simulator under them.

Oracles: the daily curve itself (the fraction of many devices eligible at a local hour is
a binomial draw of it), a scripted fleet whose drops and round times are known in closed
form, and the always-available fleet on the same seed.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from edgerun.converters.training import make_trainable
from edgerun.federated.availability import (
    DAY,
    HOUR,
    NIGHTLY,
    AlwaysAvailable,
    DailyPattern,
    Fleet,
    RoundLog,
    curve_at,
    round_end,
)
from edgerun.federated.simulation import SimulationConfig, SimulationStalled, simulate
from edgerun.federated.strategies import FedAvg
from edgerun.runtime import save_model
from tests.converters.training.models import digits, mlp

LONG = 60.0  # a deadline no test may wait for
START = DAY + 16 * HOUR  # day 1, 16:00 UTC


@pytest.fixture
def model_path(tmp_path):
    graph = make_trainable(mlp((64, 8, 10), seed=0), optimizer=("sgd", {"lr": 0.1}))
    return save_model(graph, tmp_path / "mlp.train.erm")


def cohort(size: int) -> FedAvg:
    """Exactly `size` clients per round (a fixed goal count, as production rounds have)."""
    return FedAvg(fraction_fit=0.0, min_fit_clients=size, min_available_clients=size, local_epochs=1,
                  batch_size=32, client_lr=0.1)


def run(model_path, fleet: Fleet, rounds: int, size: int = 8, **settings):
    x, y, x_test, y_test = digits()
    config = SimulationConfig(**{"num_clients": 60, "rounds": rounds, "epochs": 1, "batch_size": 32, "lr": 0.1,
                                 "secagg": None, "engine": "thread", "availability": fleet, "round_timeout": LONG,
                                 **settings})
    return simulate(model_path, x[:300], y[:300], x_test, y_test, config, strategy=cohort(size))


# ---------------------------------------------------------------- the model


def binomial_bound(p: float, n: int) -> float:
    return 4 * math.sqrt(p * (1 - p) / n) + 1e-9


@pytest.mark.parametrize("hour", [2.0, 7.5, 13.0, 21.0])
def test_the_fraction_eligible_at_a_local_hour_is_the_curve(hour):
    model, n = DailyPattern(seed=0, utc_offsets=(0.0,)), 3000
    fraction = np.mean([model.eligible(i, DAY + hour * HOUR) for i in range(n)])
    want = float(curve_at(NIGHTLY, [hour])[0])
    assert abs(fraction - want) <= binomial_bound(want, n), (fraction, want)


def test_more_devices_are_eligible_at_night_than_in_the_daytime():
    model = DailyPattern(seed=1, utc_offsets=(0.0,))
    night = sum(model.eligible(i, DAY + 3 * HOUR) for i in range(500))
    day = sum(model.eligible(i, DAY + 12 * HOUR) for i in range(500))
    assert night > 5 * day > 0


def test_time_zones_shift_the_curve():
    model, n, utc = DailyPattern(seed=2, utc_offsets=(0.0, 6.0)), 4000, DAY + 20 * HOUR
    by_zone: dict[float, list[bool]] = {0.0: [], 6.0: []}
    for i in range(n):
        by_zone[model.utc_offset(i)].append(model.eligible(i, utc))
    for offset, flags in by_zone.items():
        want = float(curve_at(NIGHTLY, [(20 + offset) % 24])[0])  # 20:00 local and 02:00 local
        assert len(flags) > n / 3
        assert abs(np.mean(flags) - want) <= binomial_bound(want, len(flags)), (offset, np.mean(flags), want)


def test_the_model_is_deterministic_for_a_seed_whatever_is_asked_first():
    a, b, c = DailyPattern(seed=7), DailyPattern(seed=7), DailyPattern(seed=8)
    late = [b.sessions(i, 0, 3 * DAY) for i in reversed(range(20))][::-1]  # b: later days and devices first
    assert [a.sessions(i, 0, 3 * DAY) for i in range(20)] == late
    assert [a.work_seconds(i) for i in range(20)] == [b.work_seconds(i) for i in range(20)]
    assert [c.sessions(i, 0, 3 * DAY) for i in range(20)] != late


def test_sessions_session_ends_and_next_starts_agree_minute_by_minute():
    model = DailyPattern(seed=3, utc_offsets=(0.0,))
    sessions = model.sessions(5, 0, 2 * DAY)
    assert sessions and all(end > start for start, end in sessions)
    inside = {m for start, end in sessions for m in range(int(start // 60), int(end // 60))}
    last_end = int(sessions[-1][1] // 60)
    assert {m for m in range(last_end) if model.eligible(5, m * 60.0)} == inside
    start, end = sessions[1]
    assert model.session_end(5, start + 1) == end and model.next_start(5, end) == sessions[2][0]
    assert model.session_end(5, end) == end  # not eligible: its session ended then


def test_always_available_runs_the_same_devices_on_the_same_seed():
    always, daily = AlwaysAvailable(seed=4), DailyPattern(seed=4)
    assert all(always.eligible(i, 13 * HOUR) and always.session_end(i, 0.0) == math.inf for i in range(10))
    assert [always.work_seconds(i) for i in range(10)] == [daily.work_seconds(i) for i in range(10)]


@pytest.mark.parametrize(("settings", "message"), [
    ({"curve": (0.5,) * 23}, "curve must be 24 probabilities"),
    ({"curve": (1.5,) * 24}, "curve must be 24 probabilities"),
    ({"utc_offsets": ()}, "utc_offsets"),
    ({"work_seconds": 0.0}, "work_seconds"),
])
def test_bad_model_settings_are_one_clear_error(settings, message):
    with pytest.raises(ValueError, match=message):
        DailyPattern(**settings)


def test_a_round_closes_at_its_goal_or_when_everyone_reported_or_dropped():
    assert round_end(100.0, [150.0, 130.0, 170.0], [110.0], goal=2, report_drops=True, deadline=900.0) == 150.0
    assert round_end(100.0, [150.0], [160.0, 120.0], goal=2, report_drops=True, deadline=900.0) == 160.0
    assert round_end(100.0, [150.0], [160.0], goal=2, report_drops=False, deadline=900.0) == 1000.0
    assert round_end(100.0, [2000.0], [], goal=1, report_drops=True, deadline=900.0) == 1000.0


# ---------------------------------------------------------------- the simulator


class Scripted:
    """Devices 0-3 always eligible, 4-7 until START + 60 s; every round's work takes 120 s."""

    def eligible(self, i: int, t: float) -> bool:
        return i < 4 or t < START + 60

    def session_end(self, i: int, t: float) -> float:
        return math.inf if i < 4 else START + 60 if t < START + 60 else t

    def next_start(self, i: int, t: float) -> float:
        return t if self.eligible(i, t) else math.inf

    def sessions(self, i: int, since: float, until: float) -> list[tuple[float, float]]:
        return []

    def work_seconds(self, i: int) -> float:
        return 120.0


def test_devices_whose_conditions_end_mid_round_drop_out_and_are_not_waited_for(model_path):
    fleet = Fleet(Scripted(), start=START)
    started = time.monotonic()
    history = run(model_path, fleet, rounds=1, num_clients=8, over_selection=0.0)
    assert time.monotonic() - started < LONG / 2
    (log,) = fleet.rounds
    assert (log.round, log.opened, log.eligible, log.selected, log.dropped) == (1, START, 8, 8, 4)
    assert START + 120 <= log.closed < START + 121  # the last of the four that report (jitter < 1 s)
    assert history[0].status == "aggregated" and history[0].metrics["reports"] == 4


def test_unreported_drops_keep_the_round_open_until_its_deadline(model_path):
    fleet = Fleet(Scripted(), start=START, deadline=600.0)
    started = time.monotonic()
    history = run(model_path, fleet, rounds=1, num_clients=8, over_selection=0.0, report_drops=False,
                  round_timeout=2.0)
    assert time.monotonic() - started >= 2.0  # the coordinator was not told: it waited
    assert fleet.rounds == [RoundLog(1, START, START + 600.0, 8, 8, 4)]
    assert history[0].status == "aggregated" and history[0].metrics["reports"] == 4


def test_a_daily_pattern_has_fewer_devices_in_the_daytime_and_drops_that_always_available_has_not(model_path):
    noon = DAY + 12 * HOUR
    daily, always = (Fleet(DailyPattern(seed=0, utc_offsets=(0.0,)), start=noon),
                     Fleet(AlwaysAvailable(seed=0), start=noon))
    histories = {name: run(model_path, fleet, rounds=6, seed=0) for name, fleet in (("daily", daily),
                                                                                     ("always", always))}
    for history in histories.values():
        assert [r.status for r in history] == ["aggregated"] * 6
    assert all(r.eligible == 60 and r.dropped == 0 for r in always.rounds) and always.idle == 0
    first = daily.rounds[0]
    assert 8 <= first.eligible < 60 / 4  # the afternoon: few eligible, the clock waited for a cohort of 8
    assert daily.idle > 0 and first.opened > noon
    assert sum(r.dropped for r in daily.rounds) > 0
    for log, record in zip(daily.rounds, histories["daily"], strict=True):  # the goal of 8, short of the drops
        assert record.metrics["selected"] == log.selected
        assert record.metrics["reports"] == min(8, log.selected - log.dropped)
    assert daily.now - noon > always.now - noon


def test_nobody_ever_eligible_ends_with_an_error_not_a_hang(model_path):
    fleet = Fleet(DailyPattern(seed=0, curve=(0.0,) * 24), start=START)
    started = time.monotonic()
    with pytest.raises(SimulationStalled, match="too few devices were eligible"):
        run(model_path, fleet, rounds=2)
    assert time.monotonic() - started < LONG / 2


class _ShortSessions:
    """Every device eligible, but each session ends a minute in while its work takes four."""

    def eligible(self, index, t):
        return True

    def session_end(self, index, t):
        return t + 60.0

    def next_start(self, index, t):
        return t

    def sessions(self, index, since, until):
        return []

    def work_seconds(self, index):
        return 240.0


@pytest.mark.parametrize("settings", [{"availability": "fleet"}, {"availability": None, "drop_probability": 1.0}])
def test_a_run_whose_devices_never_finish_a_round_ends_with_an_error_not_endless_rounds(model_path, settings):
    fleet = Fleet(_ShortSessions()) if settings["availability"] == "fleet" else None
    started = time.monotonic()
    with pytest.raises(SimulationStalled, match=r"the last 20 rounds all failed .*cannot finish a round"):
        run(model_path, fleet, rounds=2, size=4, **{k: v for k, v in settings.items() if k != "availability"})
    assert time.monotonic() - started < LONG / 2


def test_weighting_by_past_availability_lowers_the_drop_out_rate(model_path):
    rates = {}
    for selection in ("uniform", "availability"):
        fleet = Fleet(DailyPattern(seed=1, utc_offsets=(0.0,), work_seconds=900.0, session_spread=2.0),
                      start=DAY + 20 * HOUR)
        history = run(model_path, fleet, rounds=40, seed=1, over_selection=0.0, selection=selection)
        assert [r.status for r in history].count("aggregated") == 40
        rates[selection] = fleet.dropout_rate()
    assert rates["availability"] < 0.9 * rates["uniform"], rates


@pytest.mark.parametrize(("settings", "message"), [
    ({"availability": "daily", "engine": "grpc"}, "need a simulated clock"),
    ({"selection": "availability"}, "needs device conditions"),
    ({"availability": "daily", "selection": "luck"}, "unknown selection 'luck'"),
    ({"availability": "hourly"}, "unknown availability model 'hourly'"),
])
def test_bad_availability_settings_fail_before_any_file_is_made(model_path, tmp_path, settings, message):
    x, y, xt, yt = digits()
    config = SimulationConfig(**{"num_clients": 4, "engine": "thread", "secagg": None, **settings})
    with pytest.raises(ValueError, match=message):
        simulate(model_path, x[:40], y[:40], xt, yt, config, store_path=tmp_path / "state.db")
    assert not (tmp_path / "state.db").exists()

"""Device conditions for the simulator: when a device may train, on a simulated clock.

Production fleets train only on devices that are charging, idle and on an unmetered
network, so who can take part follows the day: few devices in the local daytime, most at
night, and a device whose conditions end mid-round (unplugged, picked up, off Wi-Fi) drops
out (Bonawitz et al. 2019, "Towards Federated Learning at Scale: System Design", sections
2-3 and the operational profile, whose figures of connected and participating devices over
several days (a US-centric population) show that diurnal swing).

Time is simulated seconds, `t = 0` being midnight UTC of day 0 (DAY = 86,400 s). Nothing
here reads the machine's clock: a simulated round takes its devices' work time on this
clock however long its training took in wall-clock time (federated.engines.driver moves
the clock; `Fleet.rounds` logs it).

    DailyPattern      each device gets a UTC offset (drawn from `utc_offsets`) and is
                      eligible at local hour h with probability `curve` at h (linear
                      between the hours). Exactly that marginal: eligible iff z(t) <
                      Phi^-1(curve(h)), where z is a stationary Gaussian process (an AR(1)
                      on 15-minute knots, the same correlation exp(-dt / tau), normalized
                      between knots so z(t) ~ N(0, 1) at every minute). tau, the device's
                      session time scale, is log-normal across devices (some charge all
                      night, some in short top-ups), which makes past sessions predict
                      future ones. Resolution: one minute.
    AlwaysAvailable   every device always eligible: the comparison (and what the simulator
                      did before this module).

`NIGHTLY`, the default curve, has the shape of those figures: a trough through the local
working day, a rise in the evening, a peak in the small hours. Its numbers are ours (an
assumption), not values read off the paper. Both models draw every device's work time per
round (download, train, upload) as `work_seconds` times a log-normal speed factor, from the
same seed, so a comparison between them runs the same devices. Everything is a function of
(seed, device index): deterministic, whichever devices are asked about first.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Protocol

import numpy as np

from edgerun.runtime.errors import EdgerunError

DAY = 86_400.0
HOUR = 3_600.0
MINUTE = 60.0
KNOT_MINUTES = 15  # the Gaussian process's knots; eligibility is evaluated every minute
HORIZON_DAYS = 30  # how far ahead a session's end or start is looked for (beyond: never)

# P(charging, idle and unmetered) at local hour 0, 1, ..., 23 (see the module docstring).
NIGHTLY = (0.55, 0.65, 0.70, 0.72, 0.72, 0.68, 0.55, 0.30, 0.12, 0.08, 0.07, 0.07,
           0.08, 0.08, 0.08, 0.08, 0.09, 0.10, 0.12, 0.16, 0.22, 0.30, 0.38, 0.46)
US_OFFSETS = (-8.0, -7.0, -6.0, -5.0)  # Pacific to Eastern (standard time), hours from UTC
# Streams of the per-device draws (numpy SeedSequence keys).
_OFFSET, _SPEED, _SCALE, _PROCESS = 1, 2, 3, 4


class NoEligibleDevices(EdgerunError):
    """The simulated clock ran `max_wait` without enough devices eligible for a round."""


class AvailabilityModel(Protocol):
    """When device `i` may train (the engines' interface; DailyPattern, AlwaysAvailable)."""

    def eligible(self, i: int, t: float) -> bool: ...

    def session_end(self, i: int, t: float) -> float: ...

    def next_start(self, i: int, t: float) -> float: ...

    def sessions(self, i: int, since: float, until: float) -> list[tuple[float, float]]: ...

    def work_seconds(self, i: int) -> float: ...


def curve_at(curve: Sequence[float], local_hours: np.ndarray) -> np.ndarray:
    """`curve` (one value per local hour, 24 of them) at `local_hours`, linear between the
    hours and periodic over the day."""
    values = np.asarray(curve, dtype=np.float64)
    hours = np.mod(np.asarray(local_hours, dtype=np.float64), 24.0)
    below = np.floor(hours).astype(int)
    w = hours - below
    return (1 - w) * values[below % 24] + w * values[(below + 1) % 24]


def _rng(seed: int, i: int, stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, i, stream]))


def _speed(seed: int, i: int, spread: float) -> float:
    """Device i's work-time factor: log-normal, median 1 (the same in every model)."""
    return float(np.exp(spread * _rng(seed, i, _SPEED).standard_normal()))


class AlwaysAvailable:
    """Every device eligible all the time; work times as DailyPattern's for the same seed."""

    def __init__(self, seed: int = 0, work_seconds: float = 240.0, speed_spread: float = 0.4) -> None:
        _check_positive("work_seconds", work_seconds)
        self.seed, self._work, self.speed_spread = seed, work_seconds, speed_spread

    def eligible(self, i: int, t: float) -> bool:
        return True

    def session_end(self, i: int, t: float) -> float:
        return math.inf

    def next_start(self, i: int, t: float) -> float:
        return t

    def sessions(self, i: int, since: float, until: float) -> list[tuple[float, float]]:
        return []  # one session without end: nothing finished to learn from

    def work_seconds(self, i: int) -> float:
        return self._work * _speed(self.seed, i, self.speed_spread)


@dataclass
class _Track:
    """One device's process, generated a day at a time from its own random stream."""

    rng: np.random.Generator
    a: float  # correlation of consecutive knots
    offset_minutes: int
    knots: list[float]
    eligible: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))  # per minute from t = 0


class DailyPattern:
    """Eligibility that follows the local time of day (see the module docstring).

    `curve`: 24 probabilities by local hour; `utc_offsets`: hours from UTC, one drawn per
    device (uniformly); `session_hours`: the median time scale tau of a device's
    conditions, log-normal across devices with sigma `session_spread`; `work_seconds` and
    `speed_spread`: a device's work time per round (median, log-normal sigma). ValueError
    for a curve that is not 24 probabilities, no offsets or a non-positive time."""

    def __init__(self, seed: int = 0, curve: Sequence[float] = NIGHTLY, utc_offsets: Sequence[float] = US_OFFSETS,
                 session_hours: float = 1.0, session_spread: float = 1.0, work_seconds: float = 240.0,
                 speed_spread: float = 0.4) -> None:
        if len(curve) != 24 or not all(0.0 <= p <= 1.0 for p in curve):
            raise ValueError(f"curve must be 24 probabilities (local hours 0-23), got {list(curve)!r}")
        if not utc_offsets:
            raise ValueError("utc_offsets must name at least one offset from UTC (hours)")
        _check_positive("session_hours", session_hours)
        _check_positive("work_seconds", work_seconds)
        self.seed, self.curve, self.utc_offsets = seed, tuple(curve), tuple(float(o) for o in utc_offsets)
        self.session_hours, self.session_spread = session_hours, session_spread
        self._work, self.speed_spread = work_seconds, speed_spread
        minutes = np.arange(24 * 60) / 60.0
        normal = NormalDist()
        self._threshold = np.array([_quantile(normal, p) for p in curve_at(self.curve, minutes)])
        self._tracks: dict[int, _Track] = {}

    # ------------------------------------------------------------ per device
    def utc_offset(self, i: int) -> float:
        """Device i's offset from UTC in hours."""
        return self.utc_offsets[int(_rng(self.seed, i, _OFFSET).integers(len(self.utc_offsets)))]

    def time_scale(self, i: int) -> float:
        """Device i's session time scale tau in seconds."""
        return self.session_hours * HOUR * float(np.exp(self.session_spread * _rng(self.seed, i, _SCALE)
                                                        .standard_normal()))

    def work_seconds(self, i: int) -> float:
        return self._work * _speed(self.seed, i, self.speed_spread)

    def eligible(self, i: int, t: float) -> bool:
        """Whether device i may train at simulated time t (>= 0)."""
        minute = _minute(t)
        return bool(self._minutes(i, minute + 1)[minute])

    def session_end(self, i: int, t: float) -> float:
        """When the eligible session holding t ends (t itself when device i is not eligible
        at t; inf when it lasts beyond HORIZON_DAYS)."""
        return self._next(i, t, want=False) if self.eligible(i, t) else t

    def next_start(self, i: int, t: float) -> float:
        """The first time >= t device i is eligible (inf beyond HORIZON_DAYS)."""
        return t if self.eligible(i, t) else self._next(i, t, want=True)

    def sessions(self, i: int, since: float, until: float) -> list[tuple[float, float]]:
        """Device i's eligible sessions that ended in [since, until], as (start, end); one
        that began before t = 0 starts at 0."""
        first, last = _minute(max(since, 0.0)), _minute(until)
        flags = self._minutes(i, last + 1)
        edges = np.flatnonzero(np.diff(flags[: last + 1].astype(np.int8)))  # a change after minute k
        starts = [0] if flags[0] else []
        starts += [int(k) + 1 for k in edges if not flags[k]]
        ends = [int(k) + 1 for k in edges if flags[k]]
        return [(s * MINUTE, e * MINUTE) for s, e in zip(starts, ends, strict=False) if e >= first]

    # ------------------------------------------------------------ the process
    def _track(self, i: int) -> _Track:
        track = self._tracks.get(i)
        if track is None:
            a = math.exp(-KNOT_MINUTES * MINUTE / self.time_scale(i))
            rng = _rng(self.seed, i, _PROCESS)
            track = _Track(rng, a, round(self.utc_offset(i) * 60), [float(rng.standard_normal())])
            self._tracks[i] = track
        return track

    def _minutes(self, i: int, count: int) -> np.ndarray:
        """Device i's eligibility per minute from t = 0, at least `count` minutes of it."""
        track = self._track(i)
        while len(track.eligible) < count:
            self._extend(track)
        return track.eligible

    def _extend(self, track: _Track) -> None:
        """One more day of knots and per-minute eligibility."""
        per_day = 24 * 60 // KNOT_MINUTES
        day = len(track.eligible) // (24 * 60)
        noise = track.rng.standard_normal((day + 1) * per_day + 1 - len(track.knots))
        scale = math.sqrt(1 - track.a * track.a)
        for e in noise:
            track.knots.append(track.a * track.knots[-1] + scale * float(e))
        minute = day * 24 * 60 + np.arange(24 * 60)
        knots = np.asarray(track.knots)
        j, w = minute // KNOT_MINUTES, (minute % KNOT_MINUTES) / KNOT_MINUTES
        norm = np.sqrt((1 - w) ** 2 + w**2 + 2 * w * (1 - w) * track.a)  # keeps z(t) ~ N(0, 1)
        z = ((1 - w) * knots[j] + w * knots[j + 1]) / norm
        local = (minute + track.offset_minutes) % (24 * 60)
        track.eligible = np.concatenate([track.eligible, z < self._threshold[local]])

    def _next(self, i: int, t: float, want: bool) -> float:
        """The start of the first minute after t whose eligibility is `want` (inf beyond the horizon)."""
        minute = _minute(t)
        for days in range(1, HORIZON_DAYS + 1):
            flags = self._minutes(i, minute + 1 + days * 24 * 60)
            later = np.flatnonzero(flags[minute + 1 :] == want)
            if len(later):
                return (minute + 1 + int(later[0])) * MINUTE
        return math.inf


def _minute(t: float) -> int:
    if not t >= 0:
        raise ValueError(f"simulated time must be >= 0 seconds, got {t!r}")
    return int(t // MINUTE)


def _quantile(normal: NormalDist, p: float) -> float:
    """Phi^-1(p), -inf at 0 and inf at 1 (never / always eligible)."""
    return -math.inf if p <= 0 else math.inf if p >= 1 else normal.inv_cdf(p)


def _check_positive(name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number of seconds/hours > 0, got {value!r}")


def model_named(name: str, seed: int) -> AvailabilityModel:
    """The model called `name`: "daily" (DailyPattern over the US time zones) or "always"
    (AlwaysAvailable); ValueError for another name."""
    if name == "daily":
        return DailyPattern(seed)
    if name == "always":
        return AlwaysAvailable(seed)
    raise ValueError(f"unknown availability model {name!r}; use daily or always (or pass a model)")


# ---------------------------------------------------------------- the clock


@dataclass(frozen=True)
class RoundLog:
    """One training round on the simulated clock: opened and closed (s), devices eligible
    when it opened, selected, and dropped out because their conditions ended mid-round."""

    round: int
    opened: float
    closed: float
    eligible: int
    selected: int
    dropped: int


def round_end(opened: float, arrivals: Iterable[float], drops: Iterable[float], goal: int, report_drops: bool,
              deadline: float) -> float:
    """When a round opened at `opened` closes: at the `goal`-th report (`arrivals`: when
    each reporting device reports); short of the goal, when every selected device has
    reported or dropped (`drops`: when each dropping device leaves) if drops are reported,
    else at the deadline. Never after opened + deadline (all in simulated seconds)."""
    arrivals, drops = sorted(arrivals), list(drops)
    if len(arrivals) >= goal:
        closed = arrivals[goal - 1]
    elif report_drops:
        closed = max([*arrivals, *drops], default=opened)
    else:
        closed = opened + deadline
    return min(closed, opened + deadline)


class Fleet:
    """A simulated clock over `model`: `now` (simulated seconds, from `start`), the rounds
    it has run (`rounds`) and the time spent waiting for eligible devices (`idle`). The
    virtual-client driver moves it; one Fleet serves one run.

    `deadline`: a round's simulated deadline (s); `max_wait`: how long (s) the clock may
    wait for enough eligible devices before NoEligibleDevices; `lookback` and `prior`: how
    far back (s) `weight` reads a device's past sessions, and the length (s) of the one
    session it assumes besides them."""

    def __init__(self, model: AvailabilityModel, start: float = DAY + 12 * HOUR, deadline: float = 900.0,
                 max_wait: float = 2 * DAY, lookback: float = 7 * DAY, prior: float = HOUR) -> None:
        if not start >= 0:
            raise ValueError(f"start must be >= 0 simulated seconds, got {start!r}")
        self.model, self.start, self.now = model, float(start), float(start)
        self.deadline, self.max_wait, self.lookback, self.prior = deadline, max_wait, lookback, prior
        self.rounds: list[RoundLog] = []
        self.idle = 0.0
        self._waiting_since: float | None = None

    def eligible(self, indices: Iterable[int]) -> list[int]:
        """The devices of `indices` eligible now."""
        return [i for i in indices if self.model.eligible(i, self.now)]

    def record(self, log: RoundLog) -> None:
        """Log a round and move the clock to its close."""
        self.rounds.append(log)
        self.now = max(self.now, log.closed)
        self._waiting_since = None

    def wait_for_more(self, indices: Iterable[int]) -> None:
        """Move the clock to the next time a device of `indices` not eligible now becomes
        eligible. NoEligibleDevices when that is more than `max_wait` after this wait began."""
        if self._waiting_since is None:
            self._waiting_since = self.now
        later = min((self.model.next_start(i, self.now) for i in indices if not self.model.eligible(i, self.now)),
                    default=math.inf)
        if later - self._waiting_since > self.max_wait:
            raise NoEligibleDevices(f"too few devices were eligible for a round for {self.max_wait / HOUR:g} "
                                    f"simulated hours from t = {self._waiting_since / HOUR:.2f} h")
        self.idle += later - self.now
        self.now = later

    def weight(self, i: int) -> float:
        """Device i's selection weight from its past availability: the mean length (s) of
        its sessions that ended in the last `lookback` seconds, counting one more of `prior`
        seconds (no history: `prior`). A device's chance to drop out of a round falls as its
        sessions lengthen, so drawing in proportion to this asks fewer that drop."""
        past = self.model.sessions(i, max(0.0, self.now - self.lookback), self.now)
        return (sum(end - start for start, end in past) + self.prior) / (len(past) + 1)

    def dropout_rate(self) -> float:
        """Devices dropped by their conditions over devices selected, all rounds (0 when none)."""
        selected = sum(r.selected for r in self.rounds)
        return sum(r.dropped for r in self.rounds) / selected if selected else 0.0


def fleet_for(availability: str | AvailabilityModel | Fleet, seed: int) -> Fleet:
    """A Fleet for SimulationConfig.availability: a name (model_named), a model, or a Fleet."""
    if isinstance(availability, Fleet):
        return availability
    model = model_named(availability, seed) if isinstance(availability, str) else availability
    return Fleet(model)


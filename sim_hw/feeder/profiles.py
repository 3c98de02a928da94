"""Deterministic daily profiles for the bench: a load multiplier and plane-of-array irradiance.

Every profile is a table of 1440 points, one per minute of the day from 00:00, read with linear
interpolation at any instant ``t`` [s since the epoch]. The time of day is ``t`` modulo one day, shifted
by ``offset_s``: by default the bench's UTC clock is the feeder's local solar time (solar noon at 12:00
UTC); a bench placed elsewhere passes its offset. The same day repeats every day, so a run at any
speed and any start sees the same numbers.

- :func:`load_profile`: a residential/commercial mix, multiplier 0.4 (04:00) .. 1.0 (evening peak).
- :func:`irradiance_profile` ``"clear"``: a clear-sky bell, 0 from sunset to sunrise.
- :func:`irradiance_profile` ``"cloudy"``: the same bell times seeded cloud transients. A transient
  dims the sun by 50-80 % for 1-5 minutes (the time at full depth), entering and leaving over a ramp
  of 15-45 s; its edges are computed exactly, not from the minute table, so a 1 s bench step sees the
  ramp. Transients come every 5-25 minutes between 09:00 and 16:00.

References
----------
[1] B. Haurwitz, "Insolation in relation to cloud type", J. Meteorology 3 (1946) 123-124: clear-sky
    global irradiance GHI = 1098 cos(z) exp(-0.057 / cos(z)) [W/m2], z the solar zenith angle.
[2] Cooper's declination (0 at the equinox) and the hour angle 15 deg per hour from solar noon.
"""

from __future__ import annotations

import bisect
import math
import random
from dataclasses import dataclass

DAY_S = 86400.0
STEP_S = 60.0
POINTS_PER_DAY = 1440
LATITUDE_DEG = 35.0  # where the bench's sun shines (equinox day, declination 0) [deg]
CLOUD_DEPTH = (0.5, 0.8)  # fraction of the clear-sky irradiance a cloud removes
CLOUD_HOLD_S = (60.0, 300.0)  # time at full depth [s]
CLOUD_RAMP_S = (15.0, 45.0)  # time to enter or leave the shadow [s]
CLOUD_GAP_S = (300.0, 1500.0)  # from the end of one transient to the start of the next [s]
CLOUD_WINDOW_S = (9 * 3600.0, 16 * 3600.0)  # transients start and end inside this part of the day [s]
DAYS = ("clear", "cloudy")


class ProfileError(ValueError):
    """A profile asked for something it does not have (unknown day, malformed table)."""


@dataclass(frozen=True, slots=True)
class CloudEvent:
    """One cloud transient: the irradiance multiplier is ``1 - depth`` from ``start_s + ramp_s`` for
    ``hold_s``, with linear ramps of ``ramp_s`` either side (times of day [s])."""

    start_s: float
    ramp_s: float
    hold_s: float
    depth: float

    @property
    def end_s(self) -> float:
        return self.start_s + 2 * self.ramp_s + self.hold_s

    def factor(self, tod_s: float) -> float:
        x = tod_s - self.start_s
        if x <= 0 or tod_s >= self.end_s:
            return 1.0
        if x < self.ramp_s:
            return 1.0 - self.depth * x / self.ramp_s
        if x <= self.ramp_s + self.hold_s:
            return 1.0 - self.depth
        return 1.0 - self.depth * (self.end_s - tod_s) / self.ramp_s


class Profile:
    """A daily profile: 1440 minute values, linearly interpolated, optionally dimmed by cloud events."""

    __slots__ = ("_events", "_starts", "name", "offset_s", "points")

    def __init__(
        self, name: str, points: tuple[float, ...], events: tuple[CloudEvent, ...] = (), offset_s: float = 0.0
    ) -> None:
        if len(points) != POINTS_PER_DAY or not all(math.isfinite(p) for p in points):
            raise ProfileError(f"profile {name!r}: expected {POINTS_PER_DAY} finite points, got {len(points)}")
        if not math.isfinite(offset_s):
            raise ProfileError(f"profile {name!r}: offset_s={offset_s!r} must be finite")
        self.name = name
        self.points = tuple(float(p) for p in points)
        self._events = tuple(sorted(events, key=lambda e: e.start_s))
        self._starts = [e.start_s for e in self._events]
        self.offset_s = offset_s

    @property
    def events(self) -> tuple[CloudEvent, ...]:
        return self._events

    def value(self, t: float) -> float:
        """The profile at ``t`` [s since the epoch]."""
        tod = (t + self.offset_s) % DAY_S
        pos = tod / STEP_S
        i = int(pos)
        frac = pos - i
        a = self.points[i % POINTS_PER_DAY]
        b = self.points[(i + 1) % POINTS_PER_DAY]
        v = a + (b - a) * frac
        if self._events:
            v *= self._transient_at(tod)
        return v

    def transient(self, t: float) -> float:
        """The cloud transients' multiplier at ``t`` [s since the epoch]: 1.0 outside a transient (and on a day
        without clouds), ``1 - depth`` at a transient's full depth."""
        return self._transient_at((t + self.offset_s) % DAY_S) if self._events else 1.0

    def _transient_at(self, tod: float) -> float:
        k = bisect.bisect_right(self._starts, tod) - 1
        return self._events[k].factor(tod) if k >= 0 else 1.0


def _gauss(h: float, centre: float, width: float) -> float:
    return math.exp(-0.5 * ((h - centre) / width) ** 2)


def _load_shape(h: float) -> float:
    """Unnormalised mix at hour ``h``: 60 % residential (morning and evening peaks), 40 % commercial."""

    # circular distance so the curve joins smoothly at midnight
    def g(c: float, w: float) -> float:
        d = (h - c + 12.0) % 24.0 - 12.0
        return _gauss(d, 0.0, w)

    residential = 0.35 + 0.35 * g(7.5, 1.3) + 0.65 * g(19.5, 2.2) + 0.15 * g(13.0, 3.0)
    commercial = 0.30 + 0.70 * (1 / (1 + math.exp(-(h - 8.0) * 2.0))) * (1 / (1 + math.exp((h - 18.0) * 1.5)))
    return 0.6 * residential + 0.4 * commercial


def load_profile(low: float = 0.4, high: float = 1.0, offset_s: float = 0.0) -> Profile:
    """The load multiplier: a residential/commercial day scaled to ``low`` .. ``high``."""
    if not 0.0 <= low < high:
        raise ProfileError(f"load profile: low={low!r}, high={high!r}: allowed 0 <= low < high")
    raw = [_load_shape(m / 60.0) for m in range(POINTS_PER_DAY)]
    lo, hi = min(raw), max(raw)
    return Profile("load", tuple(low + (high - low) * (r - lo) / (hi - lo) for r in raw), offset_s=offset_s)


def clear_sky_pu(tod_s: float, latitude_deg: float = LATITUDE_DEG) -> float:
    """Haurwitz clear-sky irradiance [1] on the equinox [2], normalised to 1.0 at solar noon [pu]."""

    def ghi(h: float) -> float:
        cos_z = math.cos(math.radians(latitude_deg)) * math.cos(math.radians(15.0 * (h - 12.0)))
        return 0.0 if cos_z <= 0 else 1098.0 * cos_z * math.exp(-0.057 / cos_z)

    return ghi(tod_s / 3600.0) / ghi(12.0)


def cloud_events(seed: int) -> tuple[CloudEvent, ...]:
    """The seeded transients of the cloudy day (same seed, same events)."""
    rng = random.Random(seed)
    events = []
    t = CLOUD_WINDOW_S[0] + rng.uniform(0.0, CLOUD_GAP_S[0])
    while True:
        ev = CloudEvent(
            start_s=t,
            ramp_s=rng.uniform(*CLOUD_RAMP_S),
            hold_s=rng.uniform(*CLOUD_HOLD_S),
            depth=rng.uniform(*CLOUD_DEPTH),
        )
        if ev.end_s > CLOUD_WINDOW_S[1]:
            break
        events.append(ev)
        t = ev.end_s + rng.uniform(*CLOUD_GAP_S)
    return tuple(events)


def irradiance_profile(day: str = "clear", seed: int = 13, peak_pu: float = 1.0, offset_s: float = 0.0) -> Profile:
    """Plane-of-array irradiance [pu of 1000 W/m2] for a ``"clear"`` or ``"cloudy"`` day."""
    if day not in DAYS:
        raise ProfileError(f"irradiance day={day!r}: allowed {', '.join(DAYS)}")
    if not 0.0 < peak_pu <= 1.5:
        raise ProfileError(f"irradiance peak_pu={peak_pu!r}: allowed 0 < peak_pu <= 1.5")
    points = tuple(peak_pu * clear_sky_pu(m * STEP_S) for m in range(POINTS_PER_DAY))
    events = cloud_events(seed) if day == "cloudy" else ()
    return Profile(f"irradiance-{day}", points, events, offset_s=offset_s)

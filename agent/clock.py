"""The agent's injected clock: UTC time, a monotonic clock and sleep, real or scaled for bench runs.

Control decides on time (delays, dwell, wear budgets per day, hunting windows) and stamps everything it does,
so every part of it takes a :class:`Clock` instead of reading ``time`` and ``asyncio.sleep`` itself. In the
field the clock is :class:`SystemClock`. On the bench, a 24-hour day runs at ``--speed 60`` or more; a site
file's ``[clock]`` section then gives the agent a :class:`ScaledClock` that runs ``speed`` times faster from
``start``, so the agent's timers, budgets and timestamps are in the bench's time (docs/control.md, "The
clock"). That is a bench and commissioning feature: a production site has no ``[clock]`` section.

- ``time()``: seconds since the epoch, UTC (what readings and decisions are stamped with);
- ``monotonic()``: seconds that never step back, for waits and deadlines (same rate as ``time()``);
- ``await sleep(s)``: waits ``s`` seconds of this clock (``s / speed`` of wall time);
- ``speed``: how many of this clock's seconds pass per wall second (1 for the system clock).

A scaled clock is anchored once, when it is built, on the wall clock: ``time()`` is ``start`` at the wall
instant ``wall_start`` (default: when it is built) and advances ``speed`` seconds per monotonic wall second
from there, so a wall-clock step (NTP) does not move it. Giving ``wall_start`` the instant the bench started
puts the agent on the bench's clock even though the two processes start at different moments.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from protocols.configcheck import MISSING, Checker

CLOCK_KEYS = frozenset({"speed", "start", "wall_start"})
MAX_SPEED = 10_000.0  # a bound only: the bench runs a day at 60..1000


class Clock(Protocol):
    """What control (and the pollers) read time through; see the module docstring."""

    @property
    def speed(self) -> float: ...

    def time(self) -> float: ...

    def monotonic(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock: ``time.time``, ``time.monotonic``, ``asyncio.sleep``."""

    speed = 1.0

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class ScaledClock:
    """A clock running ``speed`` times faster than the wall, reading ``start`` at the wall instant ``wall_start``.

    ``wall`` and ``mono`` are the wall and monotonic clocks it is anchored on (injected by tests).
    """

    def __init__(
        self,
        speed: float,
        start: float | None = None,
        *,
        wall_start: float | None = None,
        wall: Callable[[], float] = time.time,
        mono: Callable[[], float] = time.monotonic,
    ) -> None:
        if not (isinstance(speed, int | float) and 0 < speed <= MAX_SPEED and math.isfinite(speed)):
            raise ValueError(f"speed = {speed!r}: a number in (0, {MAX_SPEED:g}]")
        self._speed = float(speed)
        self._mono = mono
        self._mono0 = mono()
        now = wall()
        start = now if start is None else float(start)
        anchor = now if wall_start is None else float(wall_start)
        # What time() reads now: start, plus the simulated time that has passed since the anchor instant.
        self._t0 = start + (now - anchor) * self._speed

    @property
    def speed(self) -> float:
        return self._speed

    def time(self) -> float:
        return self._t0 + (self._mono() - self._mono0) * self._speed

    def monotonic(self) -> float:
        return (self._mono() - self._mono0) * self._speed

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / self._speed)


@dataclass(frozen=True, slots=True)
class ClockConfig:
    """``[clock]``: absent in the field; on the bench, the speed and start of the simulated day."""

    speed: float = 1.0
    start: float | None = None  # s since the epoch, UTC; None: the wall time when the agent starts
    wall_start: float | None = None  # the wall instant at which the clock reads ``start``; None: at agent start

    @property
    def scaled(self) -> bool:
        return self.speed != 1.0 or self.start is not None


def make_clock(config: ClockConfig | None = None) -> Clock:
    """The clock a site's ``[clock]`` section asks for (the system clock when there is none)."""
    if config is None or not config.scaled:
        return SystemClock()
    return ScaledClock(config.speed, config.start, wall_start=config.wall_start)


def _utc_instant(c: Checker, raw: Mapping[str, Any], name: str) -> float | None:
    """An RFC 3339 instant with its offset (a TOML datetime or a string such as "2026-06-21T00:00:00Z")."""
    key = f"clock.{name}"
    value = raw.get(name, MISSING)
    if value is MISSING:
        return None
    parsed: datetime | None = None
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            parsed = None
    if parsed is None or parsed.tzinfo is None:
        c.fail(key, value, 'must be a UTC instant with its offset, e.g. "2026-06-21T00:00:00Z"')
        return None
    return parsed.astimezone(UTC).timestamp()


def parse_clock(c: Checker, raw: Mapping[str, Any]) -> ClockConfig:
    """``[clock]`` -> ClockConfig; problems are recorded in ``c`` with their key, value and what is allowed."""
    c.unknown(raw, "clock", set(CLOCK_KEYS))
    speed = c.get(raw, "clock", "speed", "number", 1.0, lo=0.001, hi=MAX_SPEED)
    start = _utc_instant(c, raw, "start")
    wall_start = _utc_instant(c, raw, "wall_start")
    if wall_start is not None and start is None:
        c.fail("clock.wall_start", raw["wall_start"], "needs clock.start: the instant the clock reads then")
    return ClockConfig(speed=float(speed or 1.0), start=start, wall_start=wall_start)


__all__ = ["CLOCK_KEYS", "Clock", "ClockConfig", "ScaledClock", "SystemClock", "make_clock", "parse_clock"]

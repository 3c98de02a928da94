"""The running dispatch's clock: the wall clock in the field; on a bench at speed, the agent's scaled clock
(docs/dispatch.md, "Running it").

A site on the bench runs a ``[clock]`` of ``speed`` simulated seconds per wall second that reads ``start`` at the
wall instant ``wall_start`` (the agent's ``[clock]`` section). Dispatch given the same three figures
(``--clock-speed``, ``--clock-start``, ``--clock-wall-start``) places its interval boundaries, what it plans from
and each command's ``until`` on that clock, so they agree with the agent's, which judges ``until`` on it. A
command's validity window (``not_before``, ``expires_at``) stays on the wall clock on both sides (the agent
verifies it against its wall clock with ``max_skew_s``), so central's command issuer keeps the wall clock.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

MAX_SPEED = 10_000.0


class ClockError(ValueError):
    """A clock option out of range."""


@dataclass(frozen=True, slots=True)
class DispatchClock:
    """``now()`` reads ``start + (wall() - wall_start) * speed``; the wall clock itself when ``start`` is None."""

    speed: float = 1.0
    start: float | None = None
    wall_start: float | None = None
    wall: Callable[[], float] = time.time

    def __post_init__(self) -> None:
        if not (math.isfinite(self.speed) and 0 < self.speed <= MAX_SPEED):
            raise ClockError(f"--clock-speed = {self.speed:g}: simulated seconds per wall second in (0, {MAX_SPEED:g}]")
        if (self.start is None) != (self.wall_start is None) or (self.start is None and self.speed != 1.0):
            raise ClockError("--clock-speed / --clock-wall-start need --clock-start (the instant the clock reads at "
                             "--clock-wall-start)")  # fmt: skip

    @property
    def scaled(self) -> bool:
        return self.start is not None

    def now(self) -> float:
        if self.start is None or self.wall_start is None:
            return self.wall()
        return self.start + (self.wall() - self.wall_start) * self.speed

    def wall_seconds(self, clock_s: float) -> float:
        """How long ``clock_s`` seconds of this clock last on the wall."""
        return clock_s / self.speed


def make_clock(speed: float | None, start: float | None, wall_start: float | None) -> DispatchClock:
    """The clock the options ask for; without ``--clock-wall-start`` a scaled clock is anchored now."""
    if start is None and (speed is not None or wall_start is not None):
        raise ClockError("--clock-speed / --clock-wall-start need --clock-start (the instant the clock reads at "
                         "--clock-wall-start)")  # fmt: skip
    if start is not None and wall_start is None:
        wall_start = time.time()
    return DispatchClock(1.0 if speed is None else float(speed), start, wall_start)


__all__ = ["ClockError", "DispatchClock", "make_clock"]

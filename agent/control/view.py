"""The snapshot as control sees it: every point an :class:`~agent.control.decision.Input` with its age at ``now``.

Control reads the snapshot (the latest reading of every point, agent/acquisition/poller.py), never a device, except
the actuators' readback after a write. A :class:`View` is taken once per decision cycle at one instant, so every
input of a decision is aged against the same clock reading; a point never read is an input of quality
``missing``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

from agent.control.decision import Input
from agent.points import Reading


class ReadingSource(Protocol):
    """What a view reads: agent.acquisition.Snapshot (``get(point) -> Reading | None``)."""

    def get(self, point: str) -> Reading | None: ...


class View:
    """The readings of ``source`` as inputs aged at ``now`` [s UTC, the agent's clock]."""

    def __init__(self, source: ReadingSource | Mapping[str, Reading], now: float) -> None:
        self._get: Callable[[str], Reading | None] = source.get  # type: ignore[assignment]
        self.now = now

    def input(self, point: str) -> Input:
        r = self._get(point)
        if r is None:
            return Input(point, None, None, None, "missing")
        value = r.value
        if isinstance(value, bool):
            value = int(value)  # JSON and SQLite hold flags as 0/1; the audit shows what the store has
        return Input(point, value, r.ts, max(0.0, self.now - r.ts), str(r.quality))

    def inputs(self, points: Iterable[str]) -> tuple[Input, ...]:
        return tuple(self.input(p) for p in points)

    def number(self, point: str, max_age_s: float) -> float | None:
        """The point's value if it is usable (good, present, fresh) and a number, else None."""
        i = self.input(point)
        if not i.usable(max_age_s) or isinstance(i.value, str):
            return None
        return float(i.value)  # type: ignore[arg-type]


__all__ = ["ReadingSource", "View"]

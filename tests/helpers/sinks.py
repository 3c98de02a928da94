"""Where a service under test sends its readings: sinks that keep them for the assertions."""

from __future__ import annotations

from agent.acquisition import Snapshot
from agent.points import Reading


class Taken:
    """Every reading in order; ``points(suffix)`` those whose point name ends so."""

    def __init__(self) -> None:
        self.readings: list[Reading] = []

    def __call__(self, readings: list[Reading]) -> None:
        self.readings.extend(readings)

    def points(self, suffix: str) -> list[Reading]:
        return [r for r in self.readings if r.point.endswith(suffix)]


class Collector:
    """The pollers' reading sink: every reading in order, and the latest per point."""

    def __init__(self) -> None:
        self.snapshot = Snapshot()
        self.readings: list[Reading] = []

    def __call__(self, readings: list[Reading]) -> None:
        self.snapshot.update(readings)
        self.readings.extend(readings)

    def of(self, prefix: str) -> list[Reading]:
        return [r for r in self.readings if r.point.startswith(prefix + ".")]

"""The measurement model: a point's reading with its UTC timestamp, unit and quality; an event for the store."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple


class Quality(StrEnum):
    """How far a reading can be trusted."""

    GOOD = "good"
    STALE = "stale"  # the device did not answer in time; the value is the last one known, or None
    INVALID = "invalid"  # the device answered with an exception or with a value that fails to decode
    ESTIMATED = "estimated"  # filled in by validation/estimation, not measured
    FLAGGED = "flagged"  # measured, but a dip, swell or interruption overlapped it (IEC 61000-4-30 4.7)


class Stream(StrEnum):
    """Which uplink stream a reading belongs to; the store's full policy depends on it."""

    TELEMETRY = "telemetry"  # may be dropped, oldest first, when the store is full
    ENERGY = "energy"  # metered energy: settlement-grade, never dropped


class Reading(NamedTuple):
    """One value of one point.

    ``point`` is ``<device>.<point name>``; ``ts`` is seconds since the Unix epoch, UTC.
    ``value`` is None when the quality is not GOOD and no value could be read.

    A NamedTuple rather than a frozen dataclass: immutable all the same, and built in less than half the
    time (~0.4 us against ~0.9 us here), which matters on the polling hot path (100 devices x 20 points a
    second; benchmarks/polling.py).
    """

    point: str
    ts: float
    value: float | int | str | bool | None
    unit: str
    quality: Quality = Quality.GOOD
    stream: Stream = Stream.TELEMETRY


@dataclass(frozen=True, slots=True)
class Event:
    """One event on its way to the store (the six fields of ``store.add_event``; agent/events.py spools them).
    Every producer makes these: PMU and voltage monitoring, power quality, the PQ worker's pipe, control's
    audit."""

    ts: float
    kind: str
    severity: str  # info | warning | error (docs/telemetry.md)
    source: str
    text: str
    data: dict[str, Any] | None

    @property
    def cleared(self) -> bool:
        """The event says a condition ended (``data["cleared"]``)."""
        return bool(self.data and self.data.get("cleared"))

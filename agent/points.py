"""The measurement model: a point's reading with its UTC timestamp, unit and quality."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Quality(StrEnum):
    """How far a reading can be trusted."""

    GOOD = "good"
    STALE = "stale"  # the device did not answer in time; the value is the last one known, or None
    INVALID = "invalid"  # the device answered with an exception or with a value that fails to decode
    ESTIMATED = "estimated"  # filled in by validation/estimation, not measured


class Stream(StrEnum):
    """Which uplink stream a reading belongs to; the store's full policy depends on it."""

    TELEMETRY = "telemetry"  # may be dropped, oldest first, when the store is full
    ENERGY = "energy"  # metered energy: settlement-grade, never dropped


@dataclass(frozen=True, slots=True)
class Reading:
    """One value of one point.

    ``point`` is ``<device>.<point name>``; ``ts`` is seconds since the Unix epoch, UTC.
    ``value`` is None when the quality is not GOOD and no value could be read.
    """

    point: str
    ts: float
    value: float | int | str | bool | None
    unit: str
    quality: Quality = Quality.GOOD
    stream: Stream = Stream.TELEMETRY

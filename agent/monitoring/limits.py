"""ANSI C84.1 service voltage ranges, as documented data: the one table every voltage check of the agent uses.

agent/monitoring checks each feeder bus and phase against it; agent/pmu/limits.py builds the PMU's per-unit
voltage limits from it. Values are the standard's own numbers, volts on the 120 V base [1]; per unit is
``volts / 120``.

Both limits of a range belong to it: Table 1 gives each range as a minimum and a maximum voltage, so 114 V
and 126 V are inside Range A, and a value is outside only when it is below the minimum or above the maximum.

The 120 V base rows are those of low-voltage service (120-600 V systems). Primary voltages measured on a
medium-voltage feeder are put on the same base (a PT's 120 V secondary, or primary / nominal x 120) and held
to the same limits, as feeder voltage practice does when primary voltage stands in for what customers get;
the distribution transformer and secondary drop come on top (docs/monitoring.md, "Which limits").

References
----------
[1] ANSI C84.1-2016, American National Standard for Electric Power Systems and Equipment - Voltage
    Ratings (60 Hz), Table 1: Range A and Range B, service voltage, 120 V base.
"""

from __future__ import annotations

from dataclasses import dataclass

#: The base ANSI C84.1 states its 120-600 V ranges on [V] [1].
BASE_V = 120.0

#: A value within this of a limit counts as at the limit [V on the 120 V base]: the float noise of the
#: conversion (263.15 V read on a 277 V nominal computes to 113.99999999999999 V; by hand it is 114 V).
LIMIT_TOLERANCE_V = 1e-9


class RangeLookupError(KeyError):
    """A range name the table does not hold; the message says which exist and where to look."""

    def __str__(self) -> str:  # KeyError quotes its argument; operators read the sentence
        return str(self.args[0])


@dataclass(frozen=True, slots=True)
class VoltageRange:
    """One ANSI C84.1 range of service voltage: ``lo_v`` .. ``hi_v`` on the 120 V base, both limits inside."""

    name: str  # "A" or "B"
    lo_v: float  # minimum service voltage [V, 120 V base]
    hi_v: float  # maximum service voltage [V, 120 V base]
    source: str  # the standard, table and range: travels in events
    note: str

    @property
    def lo_pu(self) -> float:
        """The minimum [pu of 120 V]."""
        return self.lo_v / BASE_V

    @property
    def hi_pu(self) -> float:
        """The maximum [pu of 120 V]."""
        return self.hi_v / BASE_V

    def below(self, v: float) -> bool:
        """True if ``v`` [V, 120 V base] is below the range's minimum (the minimum itself is inside)."""
        return v < self.lo_v - LIMIT_TOLERANCE_V

    def above(self, v: float) -> bool:
        """True if ``v`` [V, 120 V base] is above the range's maximum (the maximum itself is inside)."""
        return v > self.hi_v + LIMIT_TOLERANCE_V

    def contains(self, v: float) -> bool:
        """True if ``v`` [V, 120 V base] is inside the range, limits included."""
        return not (self.below(v) or self.above(v))


#: ANSI C84.1-2016 Table 1, service voltage on the 120 V base [1].
SERVICE_VOLTAGE_RANGES: dict[str, VoltageRange] = {
    "A": VoltageRange("A", 114.0, 126.0, "ANSI C84.1-2016 Table 1, Range A (service voltage)",
                      "Range A: the design range for service voltage; excursions should be infrequent."),
    "B": VoltageRange("B", 110.0, 127.0, "ANSI C84.1-2016 Table 1, Range B (service voltage)",
                      "Range B: outside it, corrective action should be taken promptly."),
}  # fmt: skip


def voltage_range(name: str) -> VoltageRange:
    """The range ``name`` ("A" or "B"); fails saying which exist."""
    try:
        return SERVICE_VOLTAGE_RANGES[name]
    except KeyError:
        raise RangeLookupError(
            f"ANSI C84.1 range {name!r} is not defined: one of {', '.join(SERVICE_VOLTAGE_RANGES)} "
            "(agent/monitoring/limits.py, docs/monitoring.md)"
        ) from None


__all__ = ["BASE_V", "LIMIT_TOLERANCE_V", "SERVICE_VOLTAGE_RANGES", "RangeLookupError", "VoltageRange", "voltage_range"]

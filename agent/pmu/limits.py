"""Default limits for PMU monitoring, as documented data (like pvlib's ``TEMPERATURE_MODEL_PARAMETERS``).

Every value carries its source. Where a standard gives no monitoring limit, the value is marked as a
configurable default of ours (``standard_limit=False``) and the note says why it was chosen.

The source strings travel in events to central and to operators: they name the standard, clause and
table, nothing else. How each value was checked, and how sure we are of each clause and table number, is
in docs/pmu-monitoring.md ("Sources and how sure we are"): read it before quoting a clause to a regulator.

References
----------
[1] ANSI C84.1-2016, American National Standard for Electric Power Systems and Equipment - Voltage
    Ratings (60 Hz), Table 1: Range A and Range B service voltage limits; the table itself, in volts on the
    120 V base, is agent/monitoring/limits.py, which agent/monitoring checks meters and PMUs against too.
[2] IEEE Std 1547-2018, Interconnection and Interoperability of Distributed Energy Resources with
    Associated Electric Power Systems Interfaces, clause 6.5.1 / Table 19 (default frequency trip
    settings, 60 Hz) and clause 6.5.2.5 / Table 21 (ROCOF ride-through per abnormal operating
    performance category).
[3] IEEE Std C37.118.1-2011, Standard for Synchrophasor Measurements for Power Systems, clause 4.3 /
    5.3: 1 % total vector error equals 0.573 degree, i.e. 26.5 us at 60 Hz (31.8 us at 50 Hz).
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.monitoring.limits import SERVICE_VOLTAGE_RANGES


class LimitLookupError(KeyError):
    """A limit name or category that the table does not hold; the message says where to look."""

    def __str__(self) -> str:  # KeyError quotes its argument; operators read the sentence
        return str(self.args[0])


@dataclass(frozen=True, slots=True)
class Limit:
    """One monitoring limit: ``lo``/``hi`` bound the normal band (None = no bound on that side)."""

    lo: float | None
    hi: float | None
    unit: str
    source: str  # the standard and clause, or "configurable default"
    standard_limit: bool  # False: a default of ours, not a limit a standard sets
    note: str = ""


#: Voltage magnitude, per unit of the nominal (phase-to-neutral for phase phasors) [1]: the ANSI C84.1 table of
#: agent/monitoring/limits.py in per unit to three decimals, the resolution of ``[pmu_monitoring]``'s
#: voltage_lo_pu/voltage_hi_pu (Range B's 0.917 pu is 110.04 V on the 120 V base; agent/monitoring checks
#: the table's volts exactly).
VOLTAGE_LIMITS: dict[str, Limit] = {
    name: Limit(round(r.lo_pu, 3), round(r.hi_pu, 3), "pu", r.source, True, r.note)
    for name, r in SERVICE_VOLTAGE_RANGES.items()
}

#: Frequency, as a deviation from nominal [Hz] for a 60 Hz system [2]. For 50 Hz, scaled by 50/60
#: (a configurable default: IEEE 1547 is written for 60 Hz).
FREQUENCY_LIMITS: dict[str, Limit] = {
    "1547-OF1-UF1": Limit(-1.5, 1.2, "Hz", "IEEE 1547-2018 clause 6.5.1, Table 19 (UF1 58.5 Hz, OF1 61.2 Hz)", True,
                          "The DER trip settings with 300 s clearing time, used here as alarm thresholds."),
    "1547-OF2-UF2": Limit(-3.5, 2.0, "Hz", "IEEE 1547-2018 clause 6.5.1, Table 19 (UF2 56.5 Hz, OF2 62.0 Hz)", True,
                          "The DER trip settings with 0.16 s clearing time."),
}  # fmt: skip

#: ROCOF magnitude the DER must ride through [Hz/s], per abnormal operating performance category [2].
ROCOF_LIMITS: dict[str, Limit] = {
    "I": Limit(-0.5, 0.5, "Hz/s", "IEEE 1547-2018 clause 6.5.2.5, Table 21 (Category I)", True),
    "II": Limit(-2.0, 2.0, "Hz/s", "IEEE 1547-2018 clause 6.5.2.5, Table 21 (Category II)", True),
    "III": Limit(-3.0, 3.0, "Hz/s", "IEEE 1547-2018 clause 6.5.2.5, Table 21 (Category III)", True),
}

#: Worst acceptable PMU time quality (STAT bits 8-6, C37.118.2-2011 Table 7): a code >= this raises
#: the time-sync event. 4 = "< 100 us", the first bucket that can exceed the 26.5 us that alone use up
#: the 1 % TVE budget at 60 Hz [3]. A configurable default derived from [3], not a limit it sets.
TIME_QUALITY_LIMIT = Limit(None, 4, "STAT time-quality code", "IEEE C37.118.1-2011 clause 4.3 (1 % TVE)", False,
                           "Derived: 1 % TVE = 0.573 deg = 26.5 us at 60 Hz; code 4 may exceed it.")  # fmt: skip

#: Phase-angle difference between two PMUs: no standard sets a default; it depends on the line
#: between them (loading, impedance). Each pair must give its own ``limit_deg`` in the configuration.
ANGLE_DIFFERENCE_SOURCE = "configured per pair (no standard default: depends on the path between the PMUs)"

#: Hysteresis and timing defaults (configurable, no standard): a value must come back inside the band
#: by ``deadband`` (a fraction of the band's width, or the unit given) and stay there ``hold_off_s``
#: before the condition clears, so a value hovering at a limit raises one event, not one per frame.
TIMING_DEFAULTS: dict[str, float] = {
    "voltage_pickup_s": 1.0,  # C84.1 speaks of sustained voltages but gives no duration
    "frequency_pickup_s": 0.1,
    "rocof_pickup_s": 0.1,  # PMU ROCOF is noisy frame to frame; 1547 measures it over >= 0.1 s windows
    "angle_pickup_s": 0.5,
    "hold_off_s": 5.0,
    "window_before_s": 2.0,
    "window_after_s": 2.0,
}

_TABLES = {"voltage": VOLTAGE_LIMITS, "frequency": FREQUENCY_LIMITS, "rocof": ROCOF_LIMITS}


def lookup(quantity: str, name: str) -> Limit:
    """The limit ``name`` of ``quantity`` ("voltage", "frequency", "rocof"); fails saying what exists."""
    table = _TABLES.get(quantity)
    if table is None:
        raise LimitLookupError(f"no limit table for {quantity!r}: one of {', '.join(_TABLES)} (agent/pmu/limits.py)")
    try:
        return table[name]
    except KeyError:
        raise LimitLookupError(
            f"{quantity} limit {name!r} is not defined: one of {', '.join(table)} (agent/pmu/limits.py, "
            "docs/pmu-monitoring.md)"
        ) from None


def frequency_limit_hz(name: str, nominal_hz: int) -> tuple[float, float]:
    """(lo, hi) deviation [Hz] of ``name`` for a ``nominal_hz`` system; 50 Hz scales the 60 Hz values by 50/60."""
    lim = lookup("frequency", name)
    k = nominal_hz / 60.0
    assert lim.lo is not None and lim.hi is not None
    return lim.lo * k, lim.hi * k

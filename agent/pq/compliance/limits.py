"""The limits of EN 50160:2010 (LV, MV) and IEEE 519-2014 (voltage distortion), each value with its clause.

Parameters are documented data with one lookup each (:func:`en50160_harmonic_limit_pct`, :func:`ieee519_row`)
that fails with a message saying where to look. The assessment periods are part of the standards too:
EN 50160 assesses "each period of one week" (frequency: a year), IEEE 519 5.1 days and weeks.

References
----------
[1] EN 50160:2010, Voltage characteristics of electricity supplied by public electricity networks.
    Clause 4 (low voltage), clause 5 (medium voltage).
[2] IEEE Std 519-2014, IEEE Recommended Practice and Requirements for Harmonic Control in Electric Power
    Systems. Clause 5.1, Table 1 (voltage distortion limits).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from agent.pq.standards import STANDARDS as STANDARDS  # the names, numpy-free for the site file's checks

WEEK_S = 7 * 86400.0
DAY_S = 86400.0
YEAR_S = 365 * 86400.0

# ---------------------------------------------------------------------------------------------------- EN 50160

#: Individual harmonic voltages in % of the fundamental, orders 2..25, assessed on 95 % of the 10-min mean
#: values of each week. LV: EN 50160:2010 4.2.6, Table 1; MV: 5.2.6, the MV table, whose values are the same
#: (its note: the 3rd may be substantially lower depending on the network design). Above order 25 the
#: standard gives no values ("usually small, but largely unpredictable due to resonance effects").
EN50160_HARMONIC_LIMITS_PCT: dict[int, float] = {
    2: 2.0,  # even
    3: 5.0,  # odd, multiple of 3
    4: 1.0,  # even
    5: 6.0,  # odd, not multiple of 3
    6: 0.5,  # even 6..24
    7: 5.0,  # odd, not multiple of 3
    8: 0.5,
    9: 1.5,  # odd, multiple of 3
    10: 0.5,
    11: 3.5,  # odd, not multiple of 3
    12: 0.5,
    13: 3.0,  # odd, not multiple of 3
    14: 0.5,
    15: 0.5,  # odd, multiple of 3
    16: 0.5,
    17: 2.0,  # odd, not multiple of 3
    18: 0.5,
    19: 1.5,  # odd, not multiple of 3
    20: 0.5,
    21: 0.5,  # odd, multiple of 3
    22: 0.5,
    23: 1.5,  # odd, not multiple of 3
    24: 0.5,
    25: 1.5,  # odd, not multiple of 3
}


@dataclass(frozen=True, slots=True)
class En50160Limits:
    """The EN 50160:2010 limits this module assesses, for one voltage level; ``clause`` is 4 (LV) or 5 (MV)."""

    level: str
    clause: int
    share_pct: float = 95.0  # 4.2.2.2 / 5.2.2, 4.2.3.2, 4.2.5, 4.2.6: "95 % of the 10 min mean values ... of each week"
    voltage_band_pct: float = 10.0  # 4.2.2.2 / 5.2.2: within Un (Uc) +- 10 % for 95 % (LV) / 99 % (MV) of 10-min means
    voltage_share_pct: float = 95.0  # 4.2.2.2 LV: 95 %; 5.2.2 MV: 99 % of the 10-min means of each week
    voltage_all_band_pct: tuple[float, float] = (-15.0, 10.0)  # 4.2.2.2 / 5.2.2: all 10-min means within +10/-15 %
    frequency_band_pct: float = 1.0  # 4.2.1 / 5.2.1, interconnected: 50 Hz +- 1 % during 99.5 % of a year
    frequency_share_pct: float = 99.5  # 4.2.1 / 5.2.1
    frequency_all_band_pct: tuple[float, float] = (-6.0, 4.0)  # 4.2.1 / 5.2.1: 50 Hz +4 % / -6 % during 100 %
    plt_limit: float = 1.0  # 4.2.3.2 / 5.2.3.2: Plt <= 1 for 95 % of the time
    unbalance_limit_pct: float = 2.0  # 4.2.5 / 5.2.5: u2 0..2 % for 95 % of the 10-min means of each week
    thd_limit_pct: float = 8.0  # 4.2.6 / 5.2.6: THD, including harmonics up to order 40, <= 8 %
    thd_max_order: int = 40  # 4.2.6 / 5.2.6

    def sub(self, item: str) -> str:
        """The clause number of an item for this level: ``sub("2.6")`` is "4.2.6" for LV."""
        return f"EN 50160:2010 {self.clause}.{item}"


EN50160_LIMITS: dict[str, En50160Limits] = {
    "en50160-lv": En50160Limits("LV", 4),
    "en50160-mv": En50160Limits("MV", 5, voltage_share_pct=99.0),  # 5.2.2: 99 % within Uc +- 10 % (docs/pq-report.md)
}

# ---------------------------------------------------------------------------------------------------- IEEE 519


@dataclass(frozen=True, slots=True)
class Ieee519Row:
    """One row of IEEE 519-2014 Table 1: bus voltage V at the PCC in ``(above_kv, up_to_kv]``."""

    label: str
    above_kv: float
    up_to_kv: float
    individual_pct: float
    thd_pct: float


#: IEEE 519-2014 Table 1, voltage distortion limits (bus voltage line to line at the PCC).
IEEE519_VOLTAGE_LIMITS: tuple[Ieee519Row, ...] = (
    Ieee519Row("V <= 1.0 kV", 0.0, 1.0, 5.0, 8.0),  # Table 1 row 1
    Ieee519Row("1 kV < V <= 69 kV", 1.0, 69.0, 3.0, 5.0),  # Table 1 row 2
    Ieee519Row("69 kV < V <= 161 kV", 69.0, 161.0, 1.5, 2.5),  # Table 1 row 3
    Ieee519Row("161 kV < V", 161.0, math.inf, 1.0, 1.5),  # Table 1 row 4 (footnote: up to 2.0 % THD near HVDC)
)
IEEE519_MAX_ORDER = 50  # 5.1 / Table 1: harmonics up to order 50
IEEE519_WEEKLY_PERCENTILE = 95.0  # 5.1 b): weekly 95th percentile short time (10 min) values < Table 1
IEEE519_DAILY_PERCENTILE = 99.0  # 5.1 a): daily 99th percentile very short time (3 s) values < 1.5 x Table 1
IEEE519_DAILY_FACTOR = 1.5  # 5.1 a)


class ComplianceError(ValueError):
    """Bad input to the compliance report: names the key, the value and what is allowed."""


def en50160_harmonic_limit_pct(order: int) -> float:
    """EN 50160:2010 Table 1 limit of harmonic ``order`` [% of the fundamental] (orders 2..25)."""
    if order not in EN50160_HARMONIC_LIMITS_PCT:
        raise ComplianceError(f"order={order!r}: EN 50160 Table 1 gives orders 2..25 (none above 25: see its note)")
    return EN50160_HARMONIC_LIMITS_PCT[order]


def ieee519_row(bus_kv: float) -> Ieee519Row:
    """The IEEE 519-2014 Table 1 row of a bus voltage [kV line to line]; the upper bound of a row is in it."""
    if isinstance(bus_kv, bool) or not isinstance(bus_kv, int | float) or not (math.isfinite(bus_kv) and bus_kv > 0):
        raise ComplianceError(f"bus_kv={bus_kv!r}: allowed a finite voltage > 0 kV (line to line at the PCC)")
    for row in IEEE519_VOLTAGE_LIMITS:
        if row.above_kv < bus_kv <= row.up_to_kv:
            return row
    raise AssertionError("IEEE519_VOLTAGE_LIMITS covers (0, inf)")  # pragma: no cover

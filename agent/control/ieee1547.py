"""IEEE 1547-2018 default settings, as one cited table, and one pure function per curve.

The defaults a DER function falls back to (``volt_var = "category-b"``, ``volt_watt = "default"``,
``freq_droop = "default"``) and the capability ranges the configuration is checked against live here as
documented data, like pvlib's ``TEMPERATURE_MODEL_PARAMETERS``: every entry carries the clause and table it
comes from, and :func:`default` is the one lookup, failing with a message that says where to look.

Units follow the standard: voltages in per unit of the nominal voltage VN, reactive power in percent of the
nameplate apparent power rating (Table 8 says "% of nameplate apparent power rating"), active power in percent
of the nameplate active power rating Prated, frequency in hertz on a 60 Hz system. A SunSpec device expresses
volt-var Q in percent of its VarMax (model 705 ``DeptRef`` = 1): :func:`q_pct_of_var_max` converts.

References
----------
[1] IEEE Std 1547-2018, Standard for Interconnection and Interoperability of Distributed Energy Resources with
    Associated Electric Power Systems Interfaces. Clause 5.2 / Table 7 (reactive power capability),
    5.3.2 (constant power factor), 5.3.3 / Table 8 (voltage-reactive power, "volt-var"), 5.3.4 (constant
    reactive power), 5.4.2 / Table 10 (voltage-active power, "volt-watt"), 6.5.2.7 / Table 24 (frequency
    droop).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

F_NOMINAL_HZ = 60.0  # IEEE 1547-2018 is written for 60 Hz systems (Table 24's equations use f_N = 60 Hz)
WHERE = "agent/control/ieee1547.py (DEFAULTS) and docs/control.md, 'IEEE 1547-2018 defaults'"


class DefaultLookupError(KeyError):
    """A default the table does not hold; the message says which exist and where to look."""

    def __str__(self) -> str:  # KeyError quotes its argument; an operator reads the sentence
        return str(self.args[0])


@dataclass(frozen=True, slots=True)
class VoltVarCurve:
    """Volt-var: Q [% of nameplate VA, + injection (over-excited)] against V [pu of VN], 4 points.

    ``v_pu`` are V1..V4 with VRef = 1.0 pu; the curve moves with ``v_ref_pu`` (Table 8 gives V1..V4 relative
    to VRef). ``response_s`` is the open-loop response time (90 % of a step).
    """

    v_pu: tuple[float, float, float, float]
    q_pct: tuple[float, float, float, float]
    v_ref_pu: float
    response_s: float
    source: str = "configured"

    def __post_init__(self) -> None:
        v, q = self.v_pu, self.q_pct
        if len(v) != 4 or len(q) != 4 or not all(math.isfinite(x) for x in (*v, *q)):
            raise ValueError(f"volt-var: 4 finite V and 4 finite Q points, got V={v!r} Q={q!r}")
        # Table 8: V1 < V2 <= V3 < V4 (V2 = V3 is a curve without dead band, Category A's default)
        if not (v[0] < v[1] <= v[2] < v[3]):
            raise ValueError(f"volt-var V = {v!r}: must be V1 < V2 <= V3 < V4 (IEEE 1547-2018 Table 8)")
        # Q falls (or stays) as V rises: injection at low voltage, absorption at high voltage
        if not (q[0] >= q[1] >= q[2] >= q[3]):
            raise ValueError(f"volt-var Q = {q!r}: must not rise with V (Q1 >= Q2 >= Q3 >= Q4)")
        if not all(-100.0 <= x <= 100.0 for x in q):
            raise ValueError(f"volt-var Q = {q!r}: each within -100..100 % of nameplate VA")
        if not 0.5 < self.v_ref_pu < 1.5 or not self.response_s > 0:
            raise ValueError(f"volt-var VRef = {self.v_ref_pu!r} pu, response {self.response_s!r} s")


@dataclass(frozen=True, slots=True)
class VoltWattCurve:
    """Volt-watt: the active power limit [% of Prated] against V [pu of VN], 2 points; flat outside them."""

    v_pu: tuple[float, float]
    p_pct: tuple[float, float]
    response_s: float
    source: str = "configured"

    def __post_init__(self) -> None:
        (v1, v2), (p1, p2) = self.v_pu, self.p_pct
        if not all(math.isfinite(x) for x in (v1, v2, p1, p2)):
            raise ValueError(f"volt-watt: finite points, got V={self.v_pu!r} P={self.p_pct!r}")
        if not v1 < v2:
            raise ValueError(f"volt-watt V = {self.v_pu!r}: must be V1 < V2 (IEEE 1547-2018 Table 10)")
        if not (0.0 <= p2 <= p1 <= 100.0):
            raise ValueError(f"volt-watt P = {self.p_pct!r}: 0 <= P2 <= P1 <= 100 % of Prated")
        if not self.response_s > 0:
            raise ValueError(f"volt-watt response {self.response_s!r} s: must be > 0")


@dataclass(frozen=True, slots=True)
class FreqDroop:
    """Frequency droop (frequency-power), IEEE 1547-2018 6.5.2.7: dead bands [Hz], droops [pu], response [s]."""

    db_of_hz: float
    db_uf_hz: float
    k_of: float
    k_uf: float
    response_s: float
    source: str = "configured"

    def __post_init__(self) -> None:
        vals = (self.db_of_hz, self.db_uf_hz, self.k_of, self.k_uf, self.response_s)
        if not all(math.isfinite(x) and x > 0 for x in vals):
            raise ValueError(f"frequency droop: dead bands, droops and response time must be > 0, got {vals!r}")


@dataclass(frozen=True, slots=True)
class ReactiveCapability:
    """Minimum reactive power capability [% of nameplate VA] of a normal operating performance category.

    The constant power factor (5.3.2) and constant reactive power (5.3.4) settings may ask at most this much.
    """

    q_inject_pct: float
    q_absorb_pct: float
    source: str

    @property
    def pf_min_inject(self) -> float:
        """The lowest injecting power factor that stays within the capability at full apparent power."""
        return math.sqrt(1.0 - (self.q_inject_pct / 100.0) ** 2)

    @property
    def pf_min_absorb(self) -> float:
        return math.sqrt(1.0 - (self.q_absorb_pct / 100.0) ** 2)


@dataclass(frozen=True, slots=True)
class SettingRange:
    """A range of allowable settings (inclusive), with its source."""

    lo: float
    hi: float
    unit: str
    source: str

    def __contains__(self, value: object) -> bool:
        return isinstance(value, int | float) and self.lo <= value <= self.hi


_T8 = "IEEE 1547-2018 clause 5.3.3, Table 8"
_T10 = "IEEE 1547-2018 clause 5.4.2, Table 10"
_T24 = "IEEE 1547-2018 clause 6.5.2.7, Table 24"
_T7 = "IEEE 1547-2018 clause 5.2, Table 7"

#: The defaults, by the name a site file uses. Every number is the standard's default; the comment on each
#: line gives the standard's own expression of it.
DEFAULTS: dict[str, VoltVarCurve | VoltWattCurve | FreqDroop | ReactiveCapability] = {
    # Table 8, Category A: no dead band (V2 = V3 = VRef), 25 % of nameplate VA both ways (Category A's
    # absorption capability, Table 7), a slower response.
    "volt_var.category-a": VoltVarCurve(
        v_pu=(0.90, 1.00, 1.00, 1.10),  # V1 = VRef - 0.10 VN, V2 = V3 = VRef, V4 = VRef + 0.10 VN
        q_pct=(25.0, 0.0, 0.0, -25.0),  # Q1 = 25 % of nameplate VA injection, Q4 = 25 % absorption
        v_ref_pu=1.0,  # VRef = VN
        response_s=10.0,  # open-loop response time 10 s
        source=f"{_T8}, Category A defaults",
    ),
    "volt_var.category-b": VoltVarCurve(
        v_pu=(0.92, 0.98, 1.02, 1.08),  # V1 = VRef - 0.08 VN, V2 = VRef - 0.02 VN, V3 = VRef + 0.02 VN, V4 = + 0.08
        q_pct=(44.0, 0.0, 0.0, -44.0),  # Q1 = 44 % of nameplate VA injection, Q4 = 44 % absorption
        v_ref_pu=1.0,  # VRef = VN
        response_s=5.0,  # open-loop response time 5 s
        source=f"{_T8}, Category B defaults",
    ),
    # Table 10 is the same for Categories A and B. P2 for a DER that only generates (PV) is "the lesser of
    # 0.2 Prated or Pmin": 20 % for a DER whose minimum output Pmin is at least 20 % of Prated, Pmin below
    # that (volt_watt_for_p_min gives the curve for a known Pmin).
    "volt_watt.default": VoltWattCurve(
        v_pu=(1.06, 1.10),  # V1 = 1.06 VN, V2 = 1.10 VN
        p_pct=(100.0, 20.0),  # P1 = Prated, P2 = the lesser of 0.2 Prated or Pmin (Pmin >= 0.2 Prated)
        response_s=10.0,  # open-loop response time 10 s
        source=f"{_T10}, Category A and B defaults (generation-only DER)",
    ),
    # Table 24 gives the same defaults for abnormal operating performance Categories I, II and III.
    "freq_droop.default": FreqDroop(
        db_of_hz=0.036,
        db_uf_hz=0.036,  # dbOF = dbUF = 0.036 Hz
        k_of=0.05,
        k_uf=0.05,  # kOF = kUF = 0.05 (5 % droop)
        response_s=5.0,  # small-signal open-loop response time 5 s
        source=f"{_T24}, Category I, II and III defaults",
    ),  # fmt: skip
    "reactive_capability.category-a": ReactiveCapability(44.0, 25.0, f"{_T7}, Category A"),
    "reactive_capability.category-b": ReactiveCapability(44.0, 44.0, f"{_T7}, Category B"),
}

#: Ranges of allowable settings used to check explicit curves in a site file.
RANGES: dict[str, SettingRange] = {
    "volt_var.v_ref_pu": SettingRange(0.95, 1.05, "pu", f"{_T8}: VRef"),
    "volt_var.response_s": SettingRange(1.0, 90.0, "s", f"{_T8}: open-loop response time"),
    "volt_watt.v1_pu": SettingRange(1.05, 1.09, "pu", f"{_T10}: V1"),
    "volt_watt.v2_pu": SettingRange(1.06, 1.10, "pu", f"{_T10}: V2 (V1 + 0.01 VN .. 1.10 VN)"),
    "volt_watt.response_s": SettingRange(0.5, 60.0, "s", f"{_T10}: open-loop response time"),
    "freq_droop.db_hz": SettingRange(0.017, 1.0, "Hz", f"{_T24}: dbOF, dbUF"),
    "freq_droop.k": SettingRange(0.02, 0.05, "", f"{_T24}: kOF, kUF (Category III)"),
    "freq_droop.response_s": SettingRange(0.2, 10.0, "s", f"{_T24}: small-signal response time (Category III)"),
    "active_power_limit.pct": SettingRange(0.0, 100.0, "% of Prated", "IEEE 1547-2018 clause 4.6.2"),
}

NAMES = {
    "volt_var": ("category-a", "category-b"),
    "volt_watt": ("default",),
    "freq_droop": ("default",),
    "reactive_capability": ("category-a", "category-b"),
}


def default(name: str) -> Any:
    """The default named ``name`` (``"volt_var.category-b"``...); a name the table lacks says where to look."""
    try:
        return DEFAULTS[name]
    except KeyError:
        raise DefaultLookupError(
            f"no IEEE 1547-2018 default {name!r}: the table holds {', '.join(sorted(DEFAULTS))} ({WHERE})"
        ) from None


def setting_range(name: str) -> SettingRange:
    try:
        return RANGES[name]
    except KeyError:
        raise DefaultLookupError(
            f"no IEEE 1547-2018 setting range {name!r}: the table holds {', '.join(sorted(RANGES))} ({WHERE})"
        ) from None


# ---- the curves --------------------------------------------------------------------------------------------


def _interp(x: float, xs: tuple[float, ...], ys: tuple[float, ...]) -> float:
    """Piecewise-linear through (xs, ys), flat beyond the first and last points; xs non-decreasing."""
    if x <= xs[0]:
        return ys[0]
    for i in range(1, len(xs)):
        if x <= xs[i]:
            x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
            return y1 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return ys[-1]


def volt_var_q_pct(v_pu: float, curve: VoltVarCurve) -> float:
    """Reactive power the volt-var curve asks at ``v_pu`` [% of nameplate VA, + injection].

    IEEE 1547-2018 5.3.3 / Table 8: piecewise linear through (V1, Q1)..(V4, Q4), the points taken relative to
    VRef, constant below V1 and above V4. Steady state (the response time filters it on the device).
    """
    shift = curve.v_ref_pu - 1.0
    return _interp(v_pu, tuple(v + shift for v in curve.v_pu), curve.q_pct)


def volt_watt_p_pct(v_pu: float, curve: VoltWattCurve) -> float:
    """Active power limit the volt-watt curve sets at ``v_pu`` [% of Prated].

    IEEE 1547-2018 5.4.2 / Table 10: P1 up to V1, linear to P2 at V2, P2 beyond V2.
    """
    return _interp(v_pu, curve.v_pu, curve.p_pct)


def freq_droop_p_pct(
    f_hz: float, p_pre_pct: float, settings: FreqDroop, *, p_avl_pct: float = 100.0, p_min_pct: float = 0.0
) -> float:
    """Active power under frequency droop at ``f_hz`` [% of Prated], from the pre-disturbance ``p_pre_pct``.

    IEEE 1547-2018 6.5.2.7.2 (over-frequency) and 6.5.2.7.3 (under-frequency), with f_N = 60 Hz:

        f > 60 + dbOF:  p = max(p_pre - (f - (60 + dbOF)) / (f_N x kOF), p_min)
        f < 60 - dbUF:  p = min(p_pre + ((60 - dbUF) - f) / (f_N x kUF), p_avl)
        otherwise:      p = p_pre

    in per unit of Prated (here times 100). Steady state: the response time filters it on the device.
    """
    if f_hz > F_NOMINAL_HZ + settings.db_of_hz:
        p = p_pre_pct - 100.0 * (f_hz - (F_NOMINAL_HZ + settings.db_of_hz)) / (F_NOMINAL_HZ * settings.k_of)
        return max(p, p_min_pct)
    if f_hz < F_NOMINAL_HZ - settings.db_uf_hz:
        p = p_pre_pct + 100.0 * ((F_NOMINAL_HZ - settings.db_uf_hz) - f_hz) / (F_NOMINAL_HZ * settings.k_uf)
        return min(p, p_avl_pct)
    return p_pre_pct


def volt_watt_for_p_min(p_min_pct: float) -> VoltWattCurve:
    """Table 10's default curve for a generation-only DER whose minimum output is ``p_min_pct`` [% of Prated].

    P2 = the lesser of 0.2 Prated or Pmin (IEEE 1547-2018 Table 10); the rest as ``volt_watt.default``.
    """
    base = DEFAULTS["volt_watt.default"]
    assert isinstance(base, VoltWattCurve)
    if not 0.0 <= p_min_pct <= 100.0:
        raise ValueError(f"Pmin = {p_min_pct!r} % of Prated: must be in 0..100")
    return VoltWattCurve(base.v_pu, (base.p_pct[0], min(20.0, p_min_pct)), base.response_s,
                         f"{_T10}, default for Pmin = {p_min_pct:g} % of Prated")  # fmt: skip


def q_pct_of_var_max(q_pct_of_va: float, var_max_pct_of_va: float) -> float:
    """Q in % of nameplate VA -> % of the device's VarMax (SunSpec 705 ``DeptRef`` = 1, VarMax in % of VA)."""
    if not var_max_pct_of_va > 0:
        raise ValueError(f"VarMax = {var_max_pct_of_va!r} % of VA: must be > 0")
    return 100.0 * q_pct_of_va / var_max_pct_of_va


__all__ = [
    "DEFAULTS",
    "F_NOMINAL_HZ",
    "NAMES",
    "RANGES",
    "DefaultLookupError",
    "FreqDroop",
    "ReactiveCapability",
    "SettingRange",
    "VoltVarCurve",
    "VoltWattCurve",
    "default",
    "freq_droop_p_pct",
    "q_pct_of_var_max",
    "setting_range",
    "volt_var_q_pct",
    "volt_watt_for_p_min",
    "volt_watt_p_pct",
]

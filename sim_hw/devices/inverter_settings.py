"""The simulated inverter's SunSpec settings: their power-up defaults, which a client may write, and the ranges and
rules a write is checked against (IEEE 1547-2018 ranges of allowable settings). Used by sim_hw/devices/inverter.py;
docs/devices/sim-inverter.md describes them."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

from protocols.modbus.registermap import DataType
from protocols.sunspec.layout import sf_for_range

VV_CURVES, VV_POINTS = 3, 4  # 705: curve 1 is the active curve (read-only), 2..3 are editable; 4 points each
VW_CURVES, VW_POINTS = 3, 2  # 706: same, 2 points (IEEE 1547-2018 Table 10: V1/P1, V2/P2)
FD_CTLS = 3  # 711: control 1 active (read-only), 2..3 editable
GROUP_COUNTS = {
    705: {"Crv": VV_CURVES, "Crv.Pt": VV_POINTS},
    706: {"Crv": VW_CURVES, "Crv.Pt": VW_POINTS},
    711: {"Ctl": FD_CTLS},
}
CAT_B_Q_PU = 0.44  # IEEE 1547-2018 5.2, Table 7: Category B reactive capability, 44 % of nameplate VA

RVRT_TMS_MAX_S = 86_400  # a reversion timer of at most a day: a longer one is no fallback

# Modbus exception codes (Modbus Application Protocol v1.1b3, 7)
ILLEGAL_ADDRESS, ILLEGAL_VALUE = 2, 3

VV, VW, FD, CTL, ES, MEAS, CAP, COMMON = (
    "DERVoltVar", "DERVoltWatt", "DERFreqDroop", "DERCtlAC", "DEREnterService", "DERMeasureAC", "DERCapacity", "common",
)  # fmt: skip


# --- settings -------------------------------------------------------------------------------------------


def _default_settings() -> dict[str, float | int]:
    s: dict[str, float | int] = {
        # 703 enter service: IEEE 1547-2018 4.10.2, Table 4 defaults
        f"{ES}.ES": 1,
        f"{ES}.ESVHi": 105.0,
        f"{ES}.ESVLo": 91.7,
        f"{ES}.ESHzHi": 60.1,
        f"{ES}.ESHzLo": 59.5,
        f"{ES}.ESDlyTms": 300,
        f"{ES}.ESRmpTms": 300,
        # 704 AC controls
        f"{CTL}.PFWInjEna": 0,
        f"{CTL}.PFWInj.PF": 1.0,
        f"{CTL}.PFWInj.Ext": 0,
        f"{CTL}.WMaxLimPctEna": 0,
        f"{CTL}.WMaxLimPct": 100.0,
        f"{CTL}.VarSetEna": 0,
        f"{CTL}.VarSetMod": 4,  # VARS
        f"{CTL}.VarSet": 0,
        f"{CTL}.VarSetPct": 0.0,
        # 704 reversion timers (REVERSIONS): off; what each function reverts to: disabled, neutral set points
        f"{CTL}.PFWInjEnaRvrt": 0,
        f"{CTL}.PFWInjRvrtTms": 0,
        f"{CTL}.PFWInjRvrt.PF": 1.0,
        f"{CTL}.PFWInjRvrt.Ext": 0,
        f"{CTL}.VarSetEnaRvrt": 0,
        f"{CTL}.VarSetRvrtTms": 0,
        f"{CTL}.VarSetRvrt": 0,
        f"{CTL}.VarSetPctRvrt": 0.0,
        f"{CTL}.WMaxLimPctEnaRvrt": 0,
        f"{CTL}.WMaxLimPctRvrtTms": 0,
        f"{CTL}.WMaxLimPctRvrt": 100.0,
        # 705, 706, 711 enables and adopt requests
        f"{VV}.Ena": 0,
        f"{VV}.AdptCrvReq": 0,
        f"{VW}.Ena": 0,
        f"{VW}.AdptCrvReq": 0,
        f"{FD}.Ena": 1,  # OpenDER default: frequency droop on
        f"{FD}.AdptCtlReq": 0,
        # 705, 706, 711 reversion timers: off; when one runs out the model adopts curve 3 (the power-up default)
        f"{VV}.RvrtTms": 0,
        f"{VV}.RvrtCrv": 3,
        f"{VW}.RvrtTms": 0,
        f"{VW}.RvrtCrv": 3,
        f"{FD}.RvrtTms": 0,
        f"{FD}.RvrtCtl": 3,
    }
    for c in range(1, VV_CURVES + 1):
        k = f"{VV}.Crv[{c}]"
        # IEEE 1547-2018 Table 8 (Category B defaults)
        s |= {f"{k}.ActPt": VV_POINTS, f"{k}.DeptRef": 1, f"{k}.Pri": 1, f"{k}.VRef": 100.0, f"{k}.VRefAutoEna": 0}
        s |= {f"{k}.VRefAutoTms": 300, f"{k}.RspTms": 5.0}
        for i, (v, q) in enumerate(zip((92.0, 98.0, 102.0, 108.0), (100.0, 0.0, 0.0, -100.0), strict=True), 1):
            s |= {f"{k}.Pt[{i}].V": v, f"{k}.Pt[{i}].Var": q}
    for c in range(1, VW_CURVES + 1):
        k = f"{VW}.Crv[{c}]"
        # IEEE 1547-2018 Table 10 defaults: V1 = 106 %, P1 = 100 %; V2 = 110 %, P2 = 20 % (PV); 10 s
        s |= {f"{k}.ActPt": VW_POINTS, f"{k}.DeptRef": 0, f"{k}.RspTms": 10.0}
        s |= {f"{k}.Pt[1].V": 106.0, f"{k}.Pt[1].W": 100.0, f"{k}.Pt[2].V": 110.0, f"{k}.Pt[2].W": 20.0}
    for c in range(1, FD_CTLS + 1):
        k = f"{FD}.Ctl[{c}]"
        # IEEE 1547-2018 Table 24 defaults (Category II/III): dbOF = dbUF = 0.036 Hz, kOF = kUF = 0.05, 5 s
        s |= {f"{k}.DbOf": 0.036, f"{k}.DbUf": 0.036, f"{k}.KOf": 0.05, f"{k}.KUf": 0.05, f"{k}.RspTms": 5.0}
    return s


# Points a client may change (everything else reads fixed, measured or "not implemented").
_ACTIVE_CURVE = (f"{VV}.Crv[1].", f"{VW}.Crv[1].", f"{FD}.Ctl[1].")
WRITABLE: frozenset[str] = frozenset(
    k for k in _default_settings() if not k.startswith(_ACTIVE_CURVE) and not k.endswith(".ActPt")
) | frozenset(f"{g}.Crv[{c}].ActPt" for g, n in ((VV, VV_CURVES), (VW, VW_CURVES)) for c in range(2, n + 1))

# SF exponents that do not depend on the ratings.
_FIXED_SF = {
    f"{MEAS}.PF_SF": -3, f"{MEAS}.Hz_SF": -3, f"{MEAS}.TotWh_SF": 0, f"{MEAS}.TotVarh_SF": 0, f"{MEAS}.Tmp_SF": 0,
    f"{CAP}.PF_SF": -3, f"{CAP}.S_SF": 0,
    f"{ES}.V_SF": -1, f"{ES}.Hz_SF": -2,
    f"{CTL}.PF_SF": -3, f"{CTL}.WMaxLimPct_SF": -1, f"{CTL}.WSet_SF": 0, f"{CTL}.WSetPct_SF": -1,
    f"{CTL}.VarSet_SF": 0, f"{CTL}.VarSetPct_SF": -1,
    f"{VV}.V_SF": -1, f"{VV}.DeptRef_SF": -1, f"{VV}.RspTms_SF": -1,
    f"{VW}.V_SF": -1, f"{VW}.DeptRef_SF": -1, f"{VW}.RspTms_SF": -1,
    f"{FD}.Db_SF": -3, f"{FD}.K_SF": -3, f"{FD}.RspTms_SF": -1,
}  # fmt: skip


def sf_values_for(kva: float, v_nom_ll_v: float) -> dict[str, int]:
    """Scale factors for an inverter of ``kva`` at ``v_nom_ll_v``: the finest resolution that holds 120 % of
    the rating in the SunSpec type (int16 in 701, uint16 in 702)."""
    amps = kva * 1000.0 / (math.sqrt(3) * v_nom_ll_v * 0.5)  # at half the nominal voltage (1-phase: less)
    out = dict(_FIXED_SF)
    for p in ("W", "VA", "Var"):
        out[f"{MEAS}.{p}_SF"] = sf_for_range(1.2 * kva * 1000.0, DataType.INT16)
        out[f"{CAP}.{p}_SF"] = sf_for_range(1.2 * kva * 1000.0, DataType.UINT16)
    out[f"{MEAS}.A_SF"] = sf_for_range(1.2 * amps, DataType.INT16)
    out[f"{CAP}.A_SF"] = sf_for_range(1.2 * amps, DataType.UINT16)
    out[f"{MEAS}.V_SF"] = sf_for_range(1.5 * v_nom_ll_v, DataType.UINT16)
    out[f"{CAP}.V_SF"] = sf_for_range(1.5 * v_nom_ll_v, DataType.UINT16)
    return out


# --- validation -----------------------------------------------------------------------------------------

Check = Callable[[float], bool]


def _in(lo: float, hi: float) -> Check:
    return lambda v: lo <= v <= hi


def _one_of(*allowed: int) -> Check:
    return lambda v: v in allowed


# Ranges of each writable setting, with the standard they come from.
_RANGES: dict[str, tuple[Check, str]] = {
    f"{ES}.ES": (_one_of(0, 1), "0 DISABLED or 1 ENABLED"),
    # IEEE 1547-2018 4.10.2, Table 4 (enter service criteria): ranges of allowable settings
    f"{ES}.ESVHi": (_in(105.0, 106.0), "105..106 %VNom (IEEE 1547-2018 Table 4)"),
    f"{ES}.ESVLo": (_in(88.0, 95.0), "88..95 %VNom (IEEE 1547-2018 Table 4)"),
    f"{ES}.ESHzHi": (_in(60.1, 61.0), "60.1..61.0 Hz (IEEE 1547-2018 Table 4)"),
    f"{ES}.ESHzLo": (_in(59.0, 59.9), "59.0..59.9 Hz (IEEE 1547-2018 Table 4)"),
    f"{ES}.ESDlyTms": (_in(0, 600), "0..600 s (IEEE 1547-2018 Table 4)"),
    f"{ES}.ESRmpTms": (_in(1, 1000), "1..1000 s (IEEE 1547-2018 Table 4)"),
    f"{CTL}.PFWInjEna": (_one_of(0, 1), "0 DISABLED or 1 ENABLED"),
    # the PF at which the Cat B var capability (44 % of VA, Table 7) is reached: sqrt(1 - 0.44^2) = 0.898
    f"{CTL}.PFWInj.PF": (_in(0.898, 1.0), "0.898..1.000 (IEEE 1547-2018 5.3.2 with the Table 7 capability)"),
    f"{CTL}.PFWInj.Ext": (_one_of(0, 1), "0 OVER_EXCITED or 1 UNDER_EXCITED"),
    f"{CTL}.WMaxLimPctEna": (_one_of(0, 1), "0 DISABLED or 1 ENABLED"),
    f"{CTL}.WMaxLimPct": (_in(0.0, 100.0), "0..100 % of WMax (IEEE 1547-2018 4.6.2)"),
    f"{CTL}.VarSetEna": (_one_of(0, 1), "0 DISABLED or 1 ENABLED"),
    f"{CTL}.VarSetMod": (_one_of(0, 1, 3, 4), "0 W_MAX_PCT, 1 VAR_MAX_PCT, 3 VA_MAX_PCT or 4 VARS"),
    f"{CTL}.VarSetPct": (_in(-100.0, 100.0), "-100..100 %"),
    f"{CTL}.PFWInjEnaRvrt": (_one_of(0, 1), "0 DISABLED or 1 ENABLED"),
    f"{CTL}.PFWInjRvrtTms": (_in(0, RVRT_TMS_MAX_S), f"0 (no timer) or 1..{RVRT_TMS_MAX_S} s"),
    f"{CTL}.PFWInjRvrt.PF": (_in(0.898, 1.0), "0.898..1.000 (as PFWInj.PF)"),
    f"{CTL}.PFWInjRvrt.Ext": (_one_of(0, 1), "0 OVER_EXCITED or 1 UNDER_EXCITED"),
    f"{CTL}.VarSetEnaRvrt": (_one_of(0, 1), "0 DISABLED or 1 ENABLED"),
    f"{CTL}.VarSetRvrtTms": (_in(0, RVRT_TMS_MAX_S), f"0 (no timer) or 1..{RVRT_TMS_MAX_S} s"),
    f"{CTL}.VarSetPctRvrt": (_in(-100.0, 100.0), "-100..100 %"),
    f"{CTL}.WMaxLimPctEnaRvrt": (_one_of(0, 1), "0 DISABLED or 1 ENABLED"),
    f"{CTL}.WMaxLimPctRvrtTms": (_in(0, RVRT_TMS_MAX_S), f"0 (no timer) or 1..{RVRT_TMS_MAX_S} s"),
    f"{CTL}.WMaxLimPctRvrt": (_in(0.0, 100.0), "0..100 % of WMax"),
    f"{VV}.Ena": (_one_of(0, 1), "0 DISABLED or 1 ENABLED"),
    f"{VW}.Ena": (_one_of(0, 1), "0 DISABLED or 1 ENABLED"),
    f"{FD}.Ena": (_one_of(0, 1), "0 DISABLED or 1 ENABLED"),
    f"{VV}.AdptCrvReq": (_in(0, VV_CURVES), f"0 (none) or a curve 1..{VV_CURVES}"),
    f"{VW}.AdptCrvReq": (_in(0, VW_CURVES), f"0 (none) or a curve 1..{VW_CURVES}"),
    f"{FD}.AdptCtlReq": (_in(0, FD_CTLS), f"0 (none) or a control 1..{FD_CTLS}"),
    f"{VV}.RvrtTms": (_in(0, RVRT_TMS_MAX_S), f"0 (no timer) or 1..{RVRT_TMS_MAX_S} s"),
    f"{VW}.RvrtTms": (_in(0, RVRT_TMS_MAX_S), f"0 (no timer) or 1..{RVRT_TMS_MAX_S} s"),
    f"{FD}.RvrtTms": (_in(0, RVRT_TMS_MAX_S), f"0 (no timer) or 1..{RVRT_TMS_MAX_S} s"),
    f"{VV}.RvrtCrv": (_in(1, VV_CURVES), f"a curve 1..{VV_CURVES}"),
    f"{VW}.RvrtCrv": (_in(1, VW_CURVES), f"a curve 1..{VW_CURVES}"),
    f"{FD}.RvrtCtl": (_in(1, FD_CTLS), f"a control 1..{FD_CTLS}"),
}
for _c in range(2, VV_CURVES + 1):
    _k = f"{VV}.Crv[{_c}]"
    _RANGES |= {
        f"{_k}.ActPt": (_one_of(VV_POINTS), f"{VV_POINTS} (the curve always has {VV_POINTS} points)"),
        f"{_k}.DeptRef": (_one_of(1, 3), "1 VAR_MAX_PCT or 3 VA_MAX_PCT"),
        f"{_k}.Pri": (_one_of(1), "1 REACTIVE"),
        # IEEE 1547-2018 Table 8 (Category B): VRef 95..105 %, VRef time 300..5000 s, response time 1..90 s
        f"{_k}.VRef": (_in(95.0, 105.0), "95..105 %VNom (IEEE 1547-2018 Table 8)"),
        f"{_k}.VRefAutoEna": (_one_of(0, 1), "0 DISABLED or 1 ENABLED"),
        f"{_k}.VRefAutoTms": (_in(300, 5000), "300..5000 s (IEEE 1547-2018 Table 8)"),
        f"{_k}.RspTms": (_in(1.0, 90.0), "1..90 s (IEEE 1547-2018 Table 8, Category B)"),
    }
    for _i in range(1, VV_POINTS + 1):
        _RANGES[f"{_k}.Pt[{_i}].V"] = (_in(50.0, 150.0), "50..150 %VNom")
        _RANGES[f"{_k}.Pt[{_i}].Var"] = (_in(-100.0, 100.0), "-100..100 % of the DeptRef")
for _c in range(2, VW_CURVES + 1):
    _k = f"{VW}.Crv[{_c}]"
    _RANGES |= {
        f"{_k}.ActPt": (_one_of(VW_POINTS), f"{VW_POINTS} (the curve always has {VW_POINTS} points)"),
        f"{_k}.DeptRef": (_one_of(0), "0 W_MAX_PCT"),
        f"{_k}.RspTms": (_in(0.5, 60.0), "0.5..60 s (IEEE 1547-2018 Table 10)"),
        # IEEE 1547-2018 Table 10: V1 105..109 %, V2 V1+1..110 %; P2 down to 0 for PV
        f"{_k}.Pt[1].V": (_in(105.0, 109.0), "105..109 %VNom (IEEE 1547-2018 Table 10)"),
        f"{_k}.Pt[2].V": (_in(106.0, 110.0), "106..110 %VNom (IEEE 1547-2018 Table 10)"),
        f"{_k}.Pt[1].W": (_in(0.0, 100.0), "0..100 % of WMax"),
        f"{_k}.Pt[2].W": (_in(0.0, 100.0), "0..100 % of WMax"),
    }
for _c in range(2, FD_CTLS + 1):
    _k = f"{FD}.Ctl[{_c}]"
    # IEEE 1547-2018 Table 24 (frequency droop, Category II/III ranges of allowable settings)
    _RANGES |= {
        f"{_k}.DbOf": (_in(0.017, 1.0), "0.017..1.0 Hz (IEEE 1547-2018 Table 24)"),
        f"{_k}.DbUf": (_in(0.017, 1.0), "0.017..1.0 Hz (IEEE 1547-2018 Table 24)"),
        f"{_k}.KOf": (_in(0.02, 0.07), "0.02..0.07 (IEEE 1547-2018 Table 24)"),
        f"{_k}.KUf": (_in(0.02, 0.07), "0.02..0.07 (IEEE 1547-2018 Table 24)"),
        f"{_k}.RspTms": (_in(0.2, 10.0), "0.2..10 s (IEEE 1547-2018 Table 24)"),
    }
_EPS = 1e-9


def _check_settings(
    s: Mapping[str, float | int], changes: Mapping[str, float | int], q_max_kvar: float
) -> tuple[str, str] | None:
    """The first problem of settings ``s`` as (point, allowed) — ``changes`` first, so the error names them."""
    for key in changes:
        check = _RANGES.get(key)
        if check is not None and not check[0](changes[key]):
            return key, check[1]
    for key in (f"{CTL}.VarSet", f"{CTL}.VarSetRvrt"):
        if abs(float(s[key])) > q_max_kvar * 1000.0 + 0.5:
            return key, f"-{q_max_kvar * 1000:g}..{q_max_kvar * 1000:g} var (VarMaxAbs..VarMaxInj)"
    enabled = [k for k in (f"{CTL}.PFWInjEna", f"{CTL}.VarSetEna", f"{VV}.Ena") if s[k]]
    if len(enabled) > 1:
        culprit = next((k for k in enabled if k in changes), enabled[-1])
        return culprit, f"one reactive power mode at a time (IEEE 1547-2018 5.3): {', '.join(enabled)} enabled"
    for c in range(2, VV_CURVES + 1):
        k = f"{VV}.Crv[{c}]"
        v = [float(s[f"{k}.Pt[{i}].V"]) for i in range(1, VV_POINTS + 1)]
        # IEEE 1547-2018 Table 8: V1 < V2 <= V3 < V4 (V2 = V3 is a curve without deadband)
        if not (v[0] < v[1] - _EPS and v[1] <= v[2] + _EPS and v[2] < v[3] - _EPS):
            bad = next((n for n in changes if n.startswith(f"{k}.Pt")), f"{k}.Pt[1].V")
            return bad, "curve points must increase in V: V1 < V2 <= V3 < V4"
        dept = int(s[f"{k}.DeptRef"])
        limit = 100.0 if dept == 1 else 100.0 * CAT_B_Q_PU
        for i in range(1, VV_POINTS + 1):
            if abs(float(s[f"{k}.Pt[{i}].Var"])) > limit + _EPS:
                return f"{k}.Pt[{i}].Var", f"-{limit:g}..{limit:g} % (beyond the var rating)"
    for c in range(2, VW_CURVES + 1):
        k = f"{VW}.Crv[{c}]"
        if not float(s[f"{k}.Pt[1].V"]) < float(s[f"{k}.Pt[2].V"]) - _EPS:
            bad = next((n for n in changes if n.startswith(f"{k}.Pt")), f"{k}.Pt[2].V")
            return bad, "curve points must increase in V: V1 < V2"
        if float(s[f"{k}.Pt[2].W"]) > float(s[f"{k}.Pt[1].W"]) + _EPS:
            return f"{k}.Pt[2].W", "P2 <= P1 (volt-watt only curtails)"
    return None

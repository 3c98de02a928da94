"""The numbers and DER curves of the ``[control]`` section as the site file gives them, checked.

A curve is named by the standard (``volt_var = "category-b"``, ``volt_watt = "default"``; the values are
IEEE 1547-2018's, agent/control/ieee1547.py) or given as an explicit table of points, each checked against the
standard's adjustable range with its clause in the error (agent/control/config.py parses the rest).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from agent.control import ieee1547
from protocols.configcheck import MISSING, Checker


def number(c: Checker, raw: Mapping[str, Any], p: str, name: str, default: Any, lo: float, hi: float) -> Any:
    v = c.get(raw, p, name, "number", default, lo=lo, hi=hi)
    return float(v) if isinstance(v, int | float) else v


def numbers(c: Checker, key: str, value: Any, n: int) -> tuple[float, ...] | None:
    ok = isinstance(value, list) and len(value) == n
    ok = ok and all(isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) for x in value)
    if not ok:
        c.fail(key, value, f"must be an array of {n} numbers")
        return None
    return tuple(float(x) for x in value)


def curve(c: Checker, raw: Mapping[str, Any], p: str, name: str, named: Sequence[str], build: Any) -> Any:
    """A curve by the standard's name (``"category-b"``, ``"default"``) or as an explicit table."""
    value = raw.get(name, MISSING)
    key = f"{p}.{name}"
    if value is MISSING:
        return None
    if isinstance(value, str):
        if value not in named:
            c.fail(key, value, f"must be one of {', '.join(repr(n) for n in named)} or a table of explicit points")
            return None
        return ieee1547.default(f"{name}.{value}")
    if not isinstance(value, Mapping):
        c.fail(key, value, f"must be one of {', '.join(repr(n) for n in named)} or a table of explicit points")
        return None
    return build(c, value, key)


def explicit_volt_var(c: Checker, raw: Mapping[str, Any], key: str) -> ieee1547.VoltVarCurve | None:
    c.unknown(raw, key, {"v_pu", "q_pct", "v_ref_pu", "response_s"})
    v = numbers(c, f"{key}.v_pu", raw.get("v_pu", MISSING), 4)
    q = numbers(c, f"{key}.q_pct", raw.get("q_pct", MISSING), 4)
    vref_r, resp_r = ieee1547.setting_range("volt_var.v_ref_pu"), ieee1547.setting_range("volt_var.response_s")
    vref = number(c, raw, key, "v_ref_pu", 1.0, vref_r.lo, vref_r.hi)
    resp = number(c, raw, key, "response_s", 5.0, resp_r.lo, resp_r.hi)
    if None in (v, q, vref, resp):
        return None
    try:
        return ieee1547.VoltVarCurve(v, q, vref, resp)  # type: ignore[arg-type]
    except ValueError as err:
        c.fail(key, dict(raw), str(err))
        return None


def explicit_volt_watt(c: Checker, raw: Mapping[str, Any], key: str) -> ieee1547.VoltWattCurve | None:
    c.unknown(raw, key, {"v_pu", "p_pct", "response_s"})
    v = numbers(c, f"{key}.v_pu", raw.get("v_pu", MISSING), 2)
    pp = numbers(c, f"{key}.p_pct", raw.get("p_pct", MISSING), 2)
    resp_r = ieee1547.setting_range("volt_watt.response_s")
    resp = number(c, raw, key, "response_s", 10.0, resp_r.lo, resp_r.hi)
    if v is not None:
        for i, rname in enumerate(("volt_watt.v1_pu", "volt_watt.v2_pu")):
            r = ieee1547.setting_range(rname)
            if v[i] not in r:
                c.fail(f"{key}.v_pu", list(v), f"V{i + 1} must be in {r.lo:g}..{r.hi:g} pu ({r.source})")
                v = None
                break
    if None in (v, pp, resp):
        return None
    try:
        return ieee1547.VoltWattCurve(v, pp, resp)  # type: ignore[arg-type]
    except ValueError as err:
        c.fail(key, dict(raw), str(err))
        return None


def explicit_droop(c: Checker, raw: Mapping[str, Any], key: str) -> ieee1547.FreqDroop | None:
    c.unknown(raw, key, {"db_of_hz", "db_uf_hz", "k_of", "k_uf", "response_s"})
    db, k = ieee1547.setting_range("freq_droop.db_hz"), ieee1547.setting_range("freq_droop.k")
    rr = ieee1547.setting_range("freq_droop.response_s")
    vals = (
        number(c, raw, key, "db_of_hz", MISSING, db.lo, db.hi),
        number(c, raw, key, "db_uf_hz", MISSING, db.lo, db.hi),
        number(c, raw, key, "k_of", MISSING, k.lo, k.hi),
        number(c, raw, key, "k_uf", MISSING, k.lo, k.hi),
        number(c, raw, key, "response_s", 5.0, rr.lo, rr.hi),
    )
    if None in vals:
        return None
    return ieee1547.FreqDroop(*vals)


__all__ = ["curve", "explicit_droop", "explicit_volt_var", "explicit_volt_watt", "number", "numbers"]

"""``[settlement]`` of central's file: VEE parameters, feeders to reconcile, check meters, NMIs.

```toml
[settlement]
tolerance_pct = 0.5                 # a feeder interval reconciles when |head - downstream - losses| <= this % of head
[settlement.vee]                    # central/settlement/vee.py VeeParams; every key optional
sum_tolerance_pct = 0.5
frozen_intervals = 8
replace_on = ["negative", "frozen"]
[settlement.nmi]                    # optional NMI (10 characters) per "site/meter" for the NEM12 file
"sub-07/meter1" = "GE00000001"
[[settlement.feeders]]
name = "f1"
head = {site = "sub-07", meter = "head", register = "energy_delivered_wh"}
downstream = [{site = "sub-07", meter = "m1", register = "energy_delivered_wh"}]
losses = 0.02                       # a fraction of head, "truth" (the bench's truth log) or "file" (a CSV series)
losses_file = "losses.csv"          # for "truth" (JSON lines, cumulative loss_kwh) and "file" (start,loss_kwh)
[[settlement.check_meters]]
meter = {site = "sub-07", meter = "m1", register = "energy_delivered_wh"}
check = {site = "sub-07", meter = "m1-check", register = "energy_delivered_wh"}
```
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from central.settlement.vee import CHECKS, VeeParams
from protocols.configcheck import Checker
from protocols.telemetry.schema import valid_site

_NMI_RE = re.compile(r"^[A-Z0-9]{10}$")  # NEM12 200 record: NMI, 10 characters (MDFF NEM12 200 record)

Point = tuple[str, str, str]  # (site, meter, register)


@dataclass(frozen=True, slots=True)
class Feeder:
    name: str
    head: Point
    downstream: tuple[Point, ...]
    losses: float | str  # a fraction of head, "truth" or "file"
    losses_file: Path | None = None


@dataclass(frozen=True, slots=True)
class SettlementConfig:
    tolerance_pct: float = 0.5
    vee: VeeParams = field(default_factory=VeeParams)
    feeders: tuple[Feeder, ...] = ()
    check_meters: Mapping[Point, Point] = field(default_factory=dict)
    nmi: Mapping[str, str] = field(default_factory=dict)


def _point(c: Checker, raw: Any, where: str) -> Point | None:
    if not isinstance(raw, Mapping):
        c.fail(where, raw, "a table {site, meter, register}")
        return None
    c.unknown(raw, where, {"site", "meter", "register"})
    site, meter, register = (c.get(raw, where, k, "string") for k in ("site", "meter", "register"))
    if site is not None and not valid_site(site):
        c.fail(f"{where}.site", site, "a site id: 1-64 letters, digits, '_', '.', '-'")
        return None
    if None in (site, meter, register):
        return None
    return (site, meter, register)


def parse_settlement(c: Checker, raw: Mapping[str, Any]) -> SettlementConfig:
    c.unknown(raw, "settlement", {"tolerance_pct", "vee", "feeders", "check_meters", "nmi"})
    tol = c.get(raw, "settlement", "tolerance_pct", "number", 0.5, lo=0.0, hi=100.0)
    vee_raw = c.get(raw, "settlement", "vee", "table", {}) or {}
    names = {f.name for f in fields(VeeParams)}
    c.unknown(vee_raw, "settlement.vee", names)
    kw: dict[str, Any] = {}
    limits = {"sum_tolerance_pct": ("number", 0, 100), "sum_tolerance_kwh": ("number", 0, 1e9),
              "like_weeks": ("integer", 1, 52), "high_low_factor": ("number", 1.0, 1000),
              "high_low_min_kwh": ("number", 0, 1e9), "frozen_intervals": ("integer", 2, 100_000),
              "clock_tolerance_s": ("number", 0, 86_400)}  # fmt: skip
    for name, (kind, lo, hi) in limits.items():
        v = c.get(vee_raw, "settlement.vee", name, kind, None, lo=lo, hi=hi)
        if v is not None:
            kw[name] = v
    if "replace_on" in vee_raw:
        rep = vee_raw["replace_on"]
        if not isinstance(rep, list) or not all(r in CHECKS for r in rep):
            c.fail("settlement.vee.replace_on", rep, f"an array of check names among {', '.join(CHECKS)}")
        else:
            kw["replace_on"] = tuple(rep)
    feeders: list[Feeder] = []
    seen: set[str] = set()
    for where, t in c.tables(raw, "feeders", "settlement"):
        c.unknown(t, where, {"name", "head", "downstream", "losses", "losses_file"})
        name = c.get(t, where, "name", "string")
        if name in seen:
            c.fail(f"{where}.name", name, "unique: another [[settlement.feeders]] has this name")
        seen.add(name)
        head = _point(c, t.get("head"), f"{where}.head")
        down_raw = t.get("downstream")
        down: list[Point] = []
        if not isinstance(down_raw, list) or not down_raw:
            c.fail(f"{where}.downstream", down_raw, "a non-empty array of {site, meter, register} tables")
        else:
            for i, d in enumerate(down_raw):
                p = _point(c, d, f"{where}.downstream[{i}]")
                if p is not None:
                    down.append(p)
        losses = t.get("losses", 0.0)
        ok = (isinstance(losses, int | float) and not isinstance(losses, bool) and 0 <= losses < 1) or losses in (
            "truth",
            "file",
        )
        if not ok:
            c.fail(f"{where}.losses", losses, 'a fraction of head in [0, 1), "truth" or "file"')
        lf = c.path(c.get(t, where, "losses_file", "string", None))
        if losses in ("truth", "file") and lf is None:
            c.fail(f"{where}.losses_file", None, f'required with losses = "{losses}"')
        elif lf is not None and not lf.is_file():
            c.fail(f"{where}.losses_file", t.get("losses_file"), "an existing file")
        if name and head and ok and down:
            feeders.append(
                Feeder(name, head, tuple(down), float(losses) if not isinstance(losses, str) else losses, lf)
            )
    checks: dict[Point, Point] = {}
    for where, t in c.tables(raw, "check_meters", "settlement"):
        c.unknown(t, where, {"meter", "check"})
        m, k = _point(c, t.get("meter"), f"{where}.meter"), _point(c, t.get("check"), f"{where}.check")
        if m and k:
            checks[m] = k
    nmi_raw = c.get(raw, "settlement", "nmi", "table", {}) or {}
    nmi: dict[str, str] = {}
    for key, value in nmi_raw.items():
        if not isinstance(value, str) or not _NMI_RE.match(value) or key.count("/") != 1:
            c.fail(f"settlement.nmi.{key}", value, '"site/meter" = 10 capital letters or digits (a NEM12 NMI)')
        else:
            nmi[key] = value
    return SettlementConfig(tolerance_pct=float(tol if tol is not None else 0.5), vee=VeeParams(**kw),
                            feeders=tuple(feeders), check_meters=checks, nmi=nmi)  # fmt: skip

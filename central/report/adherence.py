"""Schedule adherence of one day (docs/report.md, "Schedule adherence").

Per ``[[dispatch.sites]]`` meter and 15-minute interval where both exist: the metered energy against the latest
scheduled energy of that meter's channel (settlement's ``schedules`` table, which dispatch writes with source
``dispatch``). imbalance = metered - scheduled [kWh], as settlement defines it. An interval is *within* when
|imbalance| <= max(5 % of |scheduled|, floor), floor = 1 % of the meter's largest |scheduled| of the day and at
least 0.01 kWh: near-zero schedules (a curtailed inverter at night) are judged on the meter's scale, not on a
percentage of nothing.
"""

from __future__ import annotations

import numpy as np

from central.report.data import STEP_S, Inputs, Section, iso
from central.report.metered import N, metered
from central.settlement.schedules import allowed_imbalance, scheduled

TOLERANCE_PCT = 5.0  # of the scheduled energy
FLOOR_SHARE = 0.01  # of the meter's largest |scheduled| of the day


def adherence(inputs: Inputs, day: int) -> Section:
    sec = Section("adherence", "Schedule adherence (metered against scheduled per interval)")
    d = inputs.config.dispatch
    if d is None:
        sec.notes.append("no data: no [dispatch] section")
        return sec
    starts = day + STEP_S * np.arange(N, dtype=np.int64)
    for s in d.sites:
        for m in s.meters:
            sched = scheduled(inputs.db, s.site, m.meter, m.channel, starts)
            if np.isnan(sched).all():
                sec.notes.append(f"no data: {s.site}/{m.meter} {m.channel}: no schedule in the day")
                continue
            got = metered(inputs, s.site, m.meter, m.channel, day)
            both = ~np.isnan(sched) & ~np.isnan(got)
            if not both.any():
                sec.notes.append(f"no data: {s.site}/{m.meter} {m.channel}: scheduled but no metered interval")
                continue
            imb = got - sched
            allowed, floor = allowed_imbalance(sched, TOLERANCE_PCT, FLOOR_SHARE)
            within = both & (np.abs(imb) <= allowed)
            worst = int(np.nanargmax(np.where(both, np.abs(imb), np.nan)))
            sec.rows.append({
                "site": s.site, "meter": m.meter, "channel": m.channel, "compared": int(both.sum()),
                "unmetered": int((~np.isnan(sched) & np.isnan(got)).sum()), "within": int(within.sum()),
                "within_share": round(float(within.sum() / both.sum()), 4), "floor_kwh": round(floor, 4),
                "scheduled_kwh": round(float(sched[both].sum()), 4), "metered_kwh": round(float(got[both].sum()), 4),
                "worst_interval": iso(day + worst * STEP_S), "worst_imbalance_kwh": round(float(imb[worst]), 4),
            })  # fmt: skip
            for i in np.flatnonzero(both):
                sec.detail.append({"site": s.site, "meter": m.meter, "channel": m.channel,
                                   "start": iso(day + int(i) * STEP_S), "scheduled_kwh": float(sched[i]),
                                   "metered_kwh": float(got[i]), "imbalance_kwh": round(float(imb[i]), 6),
                                   "within": bool(within[i])})  # fmt: skip
    return sec

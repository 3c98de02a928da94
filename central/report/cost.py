"""Energy cost of one day against the no-dispatch baseline (docs/report.md, "Energy cost").

- metered cost = sum over intervals of (head kwh_delivered - kwh_received) x price, from the meters of
  ``[[dispatch.sites]]`` that measure ``head`` and the price of ``[dispatch]`` (``price`` or ``price_file``);
- planned and no-dispatch cost: from ``dispatch_runs`` (central/dispatch/runs.py, read with ``Store.dispatch_runs``
  on SQLite and PostgreSQL alike), per interval of the day the latest round whose first interval it was: that
  round's cost of the interval and dispatch's own evaluation of the same forecast with nothing moved. The baseline is a model figure on the forecast, not a measurement: what the
  feeder would have cost without dispatch cannot be metered on the day dispatch ran.
"""

from __future__ import annotations

import numpy as np

from central.dispatch.inputs import InputError, prices_csv
from central.report.data import DAY_S, STEP_S, Inputs, Section
from central.report.metered import N, metered


def energy_cost(inputs: Inputs, day: int) -> Section:
    sec = Section("cost", "Energy cost against the no-dispatch baseline")
    d = inputs.config.dispatch
    if d is None:
        sec.notes.append("no data: no [dispatch] section")
        return sec
    starts = day + STEP_S * np.arange(N, dtype=np.int64)
    try:
        price = prices_csv(d.price_file, starts) if d.price_file is not None else np.full(N, d.price, dtype=float)
    except InputError as err:
        sec.notes.append(f"no data: prices: {err}")
        return sec
    net = np.full(N, np.nan)
    for s in d.sites:
        for m in s.meters:
            if m.measures != "head":
                continue
            e = metered(inputs, s.site, m.meter, m.channel, day)
            signed = e if m.channel == "kwh_delivered" else -e
            net = np.where(np.isnan(net), signed, net + np.nan_to_num(signed))
    row: dict[str, object] = {"feeder": d.feeder}
    if np.isnan(net).all():
        sec.notes.append("no data: no metered head interval in the day (a [[dispatch.sites]] meter measuring head)")
    else:
        row |= {"metered_intervals": int((~np.isnan(net)).sum()), "metered_import_kwh": round(float(np.nansum(net)), 3),
                "metered_cost": round(float(np.nansum(net * price)), 4)}  # fmt: skip
    runs = inputs.store.dispatch_runs(d.feeder, day, day + DAY_S)
    if not runs:
        sec.notes.append("no data: no dispatch round recorded for the day (dispatch_runs)")
    else:
        # in the order issued, so the latest round of each interval is the one left
        per = {int(r["horizon_start"]): (float(r["first_cost"]), float(r["first_cost_no_dispatch"])) for r in runs}
        planned = sum(v[0] for v in per.values())
        base = sum(v[1] for v in per.values())
        row |= {"dispatched_intervals": len(per), "planned_cost": round(planned, 4),
                "no_dispatch_cost": round(base, 4), "planned_saving": round(base - planned, 4)}  # fmt: skip
    if len(row) > 1:
        sec.rows.append(row)
    return sec

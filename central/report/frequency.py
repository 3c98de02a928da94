"""Frequency deviation seen by the PMUs in one day (docs/report.md, "Frequency deviation").

Each point ``<pmu>.frequency`` [Hz] (and ``<pmu>.rocof`` [Hz/s]) a site's agent sent from its PMUs
(docs/pmu-monitoring.md): mean frequency, max |f - nominal|, and the time outside nominal +- band. A reading
stands for the time to the next one, at most the median step (a gap in the data counts as nothing).

The default band, 0.036 Hz, is IEEE 1547-2018's default frequency-droop deadband (clause 6.5.2.7, Table 24:
db_OF = db_UF = 0.036 Hz for categories I, II and III): outside it a DER is asked to respond. It is not NERC's
epsilon1 (BAL-001-2: 0.018 Hz for the Eastern Interconnection), which bounds one-minute average frequency error
for CPS1, a different quantity; ``--band-hz 0.018`` gives that figure on these samples.
"""

from __future__ import annotations

import numpy as np

from central.report.data import DAY_S, Inputs, Section, sites_of

NOMINAL_HZ = 60.0
BAND_HZ = 0.036  # IEEE 1547-2018 6.5.2.7 Table 24, default db_OF / db_UF


def _series(inputs: Inputs, site: str, point: str, day: int) -> tuple[np.ndarray, np.ndarray]:
    rows = inputs.store.point_readings(site, point, day, day + DAY_S)
    ok = [(float(t), float(v)) for t, v, _ in rows if isinstance(v, int | float) and not isinstance(v, bool)]
    if not ok:
        return np.zeros(0), np.zeros(0)
    a = np.array(ok)
    return a[:, 0], a[:, 1]


def frequency(inputs: Inputs, day: int, nominal_hz: float = NOMINAL_HZ, band_hz: float = BAND_HZ) -> Section:
    sec = Section(
        "frequency", f"Frequency deviation seen by the PMUs (nominal {nominal_hz:g} Hz, band +-{band_hz:g} Hz)"
    )
    for site in sites_of(inputs.config):
        points = inputs.sql(
            "SELECT DISTINCT point FROM readings WHERE site = ? AND ts >= ? AND ts < ? AND point LIKE ? ORDER BY point",
            (site, day, day + DAY_S, "%.frequency"),
        )
        if not points:
            sec.notes.append(f"no data: {site}: no PMU frequency reading in the day")
            continue
        for (point,) in points:
            pmu = point[: -len(".frequency")]
            t, f = _series(inputs, site, point, day)
            if not len(t):
                continue
            step = float(np.median(np.diff(t))) if len(t) > 1 else 1.0
            dt = np.minimum(np.append(np.diff(t), step), step)
            dev = f - nominal_hz
            _, rocof = _series(inputs, site, f"{pmu}.rocof", day)
            sec.rows.append({
                "site": site, "pmu": pmu, "samples": len(t), "mean_hz": round(float(f.mean()), 5),
                "max_abs_dev_hz": round(float(np.abs(dev).max()), 5),
                "outside_s": round(float(dt[np.abs(dev) > band_hz].sum()), 3),
                "rocof_max_abs_hz_per_s": round(float(np.abs(rocof).max()), 4) if len(rocof) else None,
            })  # fmt: skip
    return sec

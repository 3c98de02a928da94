"""Metered energy per meter channel and 15-minute interval of one day (the latest version of each interval, as
settlement reads it before VEE)."""

from __future__ import annotations

import numpy as np

from central.report.data import DAY_S, STEP_S, Inputs

N = DAY_S // STEP_S


def metered(inputs: Inputs, site: str, meter: str, channel: str, day: int) -> np.ndarray:
    """kWh per interval of the day (NaN where none); 15-minute intervals only."""
    out = np.full(N, np.nan)
    for r in inputs.db.latest_intervals(day, day + DAY_S, site, meter):
        start, end, ch, value = int(r[3]), int(r[5]), r[6], r[8]
        if ch == channel and value is not None and end - start == STEP_S:
            out[(start - day) // STEP_S] = float(value)
    return out

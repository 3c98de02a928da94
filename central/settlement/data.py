"""The latest version of each interval, out of central's ``intervals`` table onto grids of whole UTC days.

One ``Grid`` per (site, meter, register): days x slots numpy arrays, NaN where no value exists. The latest version
of each interval is what counts; the store's side of central/settlement/db.py streams it in one ordered query.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import groupby
from operator import itemgetter
from typing import Any

import numpy as np

from central.settlement.db import SettlementDb
from central.settlement.vee import SKIP_SUM_FLAGS, read_scale

DAY_S = 86_400
Key = tuple[str, str, str]  # (site, meter, register)


@dataclass(slots=True)
class Grid:
    """One register's intervals over ``days`` whole days from ``day0`` (00:00 UTC) [s since epoch]."""

    site: str
    meter: str
    register: str
    channel: str
    unit: str
    length_s: int
    day0: int
    value: np.ndarray  # days x slots [kWh or kvarh], NaN: no value
    quality: np.ndarray  # NEM12 quality, "N" where nothing arrived
    method: np.ndarray  # NEM12 method code, 0 for none
    version: np.ndarray  # the version used, 0 where nothing arrived
    reg_start: np.ndarray  # the register at the interval's start [raw], NaN when its reads do not bracket it
    reg_end: np.ndarray
    read_min: np.ndarray  # the interval's earliest and latest read [s]
    read_max: np.ndarray
    skip_sum: np.ndarray  # per day: a rollover or meter swap was flagged
    meter_id: str | None
    read_scale: float | None = None  # kWh (kvarh) per raw unit, as the agent said; None: not said

    def scale(self) -> float:
        """kWh (kvarh) per raw unit of the reads: the agent's word, else inferred from the register's name."""
        return self.read_scale if self.read_scale is not None else read_scale(self.register)

    @property
    def key(self) -> Key:
        return (self.site, self.meter, self.register)

    @property
    def slots(self) -> int:
        return DAY_S // self.length_s

    @property
    def days(self) -> int:
        return self.value.shape[0]

    def starts(self) -> np.ndarray:
        """The intervals' starts [s], days x slots."""
        return self.day0 + np.arange(self.days * self.slots, dtype=np.int64).reshape(self.days, -1) * self.length_s


def day_floor(t: float) -> int:
    return int(t // DAY_S) * DAY_S


def day_ceil(t: float) -> int:
    return -int(-t // DAY_S) * DAY_S


def load_rows(db: SettlementDb, t0: int, t1: int, site: str | None = None, meter: str | None = None) -> list[Any]:
    """The latest version of every interval starting in [t0, t1), ordered by site, meter, register, start
    (central/settlement/db.py LATEST_COLUMNS)."""
    return list(db.latest_intervals(t0, t1, site, meter))


def load_grids(db: SettlementDb, t0: int, t1: int, site: str | None = None) -> dict[Key, Grid]:
    """Every register with an interval in [t0, t1) on a grid of the whole days covering it (the latest versions).

    The rows are streamed and grouped one register at a time, so memory holds the grids, not every row's tuple
    (3.1 GB at its peak for 2.88 M intervals when they were all fetched at once).
    """
    day0, day1 = day_floor(t0), day_ceil(t1)
    grids: dict[Key, Grid] = {}
    for key, rows in groupby(db.latest_intervals(day0, day1, site), key=itemgetter(0, 1, 2)):
        grids[key] = _grid(list(rows), day0, (day1 - day0) // DAY_S)
    return grids


def _grid(rows: list[Any], day0: int, days: int) -> Grid:
    site, meter, register = rows[0][:3]
    lengths = [r[5] - r[3] for r in rows]
    length = max(set(lengths), key=lengths.count)  # one length per register; another is an agent's mistake
    slots = DAY_S // length
    cols = list(zip(*(r for r, n in zip(rows, lengths, strict=True) if n == length), strict=True))
    idx = (np.asarray(cols[3], dtype=np.int64) - day0) // length
    n = days * slots

    def put(values: Any, fill: Any, dtype: Any) -> np.ndarray:
        out = np.full(n, fill, dtype=dtype)
        out[idx] = np.asarray(values, dtype=dtype)
        return out.reshape(days, slots)

    flags = cols[11]
    skip = np.zeros(days, dtype=bool)
    for k, f in enumerate(flags):
        if f != "[]" and any(name in f for name in SKIP_SUM_FLAGS):
            skip[idx[k] // slots] = True
    meter_id = next((m for m in reversed(cols[16]) if m), None)
    read_scale = next((x for x in reversed(cols[17]) if x), None)
    return Grid(
        site=site, meter=meter, register=register, channel=rows[-1][6], unit=rows[-1][7], length_s=length, day0=day0,
        value=put(cols[8], np.nan, float), quality=put(cols[9], "N", "<U1"),
        method=put([m or 0 for m in cols[10]], 0, np.int16), version=put(cols[4], 0, np.int32),
        reg_start=put(cols[12], np.nan, float), reg_end=put(cols[13], np.nan, float),
        read_min=put(cols[14], np.nan, float), read_max=put(cols[15], np.nan, float), skip_sum=skip, meter_id=meter_id,
        read_scale=read_scale,
    )  # fmt: skip

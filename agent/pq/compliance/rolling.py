"""The rolling week of statistics the agent's PQ service keeps per stream, in fixed memory (docs/pq-service.md).

:class:`RollingStatistics` takes the stream's 10-min, 10-s, 2-h and 3-s values as they come and gives the
:class:`~agent.pq.compliance.assessment.Series` of the week that ends at any 10-min tick.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from agent.pq.compliance.assessment import DailyPercentiles, Series, percentile_nearest_rank_top, thd_from_harmonics_pct
from agent.pq.compliance.limits import DAY_S, IEEE519_DAILY_PERCENTILE, IEEE519_MAX_ORDER, WEEK_S

#: 3-s values kept per quantity for the day in progress (IEEE 519 5.1 a): the nearest-rank 99th percentile of
#: n values needs the n - ceil(0.99 n) + 1 largest, so 512 is exact up to 51,199 values a day: 3-s values of
#: 1.69 s or longer, i.e. a frequency up to 1.77 x nominal (the chain measures 0.5..1.5 x nominal; about 28,944
#: values a day at nominal frequency: 200 a 10-min interval plus the one cut short at each tick, IEC 61000-4-30 5.5.2).
TOP_KEEP = 512
TOP_BATCH = 256  # values added before the kept set is trimmed back to TOP_KEEP (one np.partition per 12.8 min)


class _ClockRing:
    """One row per interval of ``step_s`` of the clock, over the last ``period_s``: fixed memory, the oldest
    row overwritten by the newest. A row is found by the index of its interval (start / step)."""

    def __init__(self, step_s: float, period_s: float, width: int) -> None:
        self.step_s = step_s
        self.size = round(period_s / step_s)
        self.values = np.full((self.size, width), np.nan)
        self.index = np.full(self.size, -1, dtype=np.int64)
        self.flagged = np.zeros(self.size, dtype=bool)

    def put(self, start_s: float, row: np.ndarray, flagged: bool) -> None:
        k = math.floor(start_s / self.step_s + 1e-6)
        slot = k % self.size
        self.index[slot], self.flagged[slot] = k, flagged
        self.values[slot] = row

    def window(self, end_s: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(starts, rows, flagged) of the intervals starting in ``[end_s - period, end_s)``, oldest first."""
        k_end = math.floor(end_s / self.step_s + 1e-6)
        ok = np.flatnonzero((self.index >= k_end - self.size) & (self.index < k_end))
        ok = ok[np.argsort(self.index[ok])]
        return self.index[ok] * self.step_s, self.values[ok], self.flagged[ok]

    @property
    def nbytes(self) -> int:
        return self.values.nbytes + self.index.nbytes + self.flagged.nbytes


class _DayTop:
    """The largest values of each column over one UTC day, and how many values each column had."""

    def __init__(self, width: int, day: int) -> None:
        self.day = day
        self.buf = np.empty((TOP_KEEP + TOP_BATCH, width))
        self.rows = 0
        self.count = np.zeros(width, dtype=np.int64)
        self.excluded = 0

    def add(self, row: np.ndarray) -> None:
        missing = np.isnan(row)
        self.count += ~missing
        self.buf[self.rows] = np.where(missing, -np.inf, row)  # a missing value sorts below every real one
        self.rows += 1
        if self.rows == self.buf.shape[0]:
            self.buf[:TOP_KEEP] = np.partition(self.buf, self.rows - TOP_KEEP, axis=0)[self.rows - TOP_KEEP :]
            self.rows = TOP_KEEP

    def percentiles(self, percent: float) -> np.ndarray:
        top = self.buf[: self.rows]
        return np.array([percentile_nearest_rank_top(top[:, j], int(n), percent) if n else math.nan
                         for j, n in enumerate(self.count.tolist())])  # fmt: skip


class RollingStatistics:
    """What the EN 50160 and IEEE 519 criteria need of one stream, over the rolling week, in fixed memory.

    Kept (H = the stream's highest harmonic order, C channels):

    - 10-min values (IEC 61000-4-30 5.5.3) of the last week, 1008 rows: RMS per channel, harmonic subgroups
      2..H in % of the fundamental per channel, u2, and the 4.7 flag: ``8 (C H + 1) + 9`` bytes a row;
    - 10-s frequencies (5.1) of the last week, 60,480 rows of 17 bytes (only with ``frequency``);
    - Plt (IEC 61000-4-15) of the last week, 84 rows per channel;
    - 3-s values (5.5.2) for IEEE 519 5.1 a) (only with ``short``): for the UTC day in progress the
      :data:`TOP_KEEP` (+ :data:`TOP_BATCH`) largest THD and harmonic values per channel and order
      (``768 x 8 C H`` bytes), from which the daily 99th percentile is exact; for each finished day of the
      week only its percentiles and counts.

    :meth:`series` gives the criteria's :class:`Series` for the week that ends at ``end_s``.
    """

    def __init__(self, channels: Sequence[str], udin_v: float, nominal_hz: float, max_order: int, *,
                 short: bool = True, frequency: bool = True) -> None:  # fmt: skip
        self.channels = list(channels)
        self.udin_v, self.nominal_hz, self.max_order = float(udin_v), float(nominal_hz), int(max_order)
        c, orders = len(self.channels), self.max_order - 1
        self._orders = orders
        self.ten = _ClockRing(600.0, WEEK_S, c + c * orders + 1)  # rms [c], harmonics [c, orders], u2
        self.freq = _ClockRing(10.0, WEEK_S, 1) if frequency else None
        self.plt = _ClockRing(7200.0, WEEK_S, c)
        self.short = short
        self._day: _DayTop | None = None
        self._days: list[tuple[float, np.ndarray, np.ndarray, int]] = []  # (day start, percentiles, counts, excluded)
        self.since_s: float | None = None  # the start of the first value kept: how long the history is

    def _seen(self, start_s: float) -> None:
        if self.since_s is None or start_s < self.since_s:
            self.since_s = start_s

    def add_ten_min(self, start_s: float, rms_v: np.ndarray, harmonics_pct: np.ndarray, u2_pct: float,
                    flagged: bool) -> None:  # fmt: skip
        """A 10-min value; ``harmonics_pct`` is ``[channels, orders 2..H]``."""
        self._seen(start_s)
        row = np.concatenate([np.asarray(rms_v, float).ravel(), np.asarray(harmonics_pct, float).ravel(), [u2_pct]])
        self.ten.put(start_s, row, flagged)

    def add_frequency(self, start_s: float, freq_hz: float, flagged: bool) -> None:
        if self.freq is not None:
            self._seen(start_s)
            self.freq.put(start_s, np.array([freq_hz]), flagged)

    def add_plt(self, start_s: float, plt_values: np.ndarray, flagged: bool) -> None:
        """The Plt of each channel for the 2 h from ``start_s`` (NaN where a channel has none)."""
        self._seen(start_s)
        self.plt.put(start_s, np.asarray(plt_values, float), flagged)

    def add_short(self, start_s: float, harmonics_pct: np.ndarray, flagged: bool) -> None:
        """A 3-s value (harmonics ``[channels, orders 2..H]`` in %): THD (orders 2..min(50, H)) and each order."""
        if not self.short:
            return
        self._seen(start_s)
        day = math.floor(start_s / DAY_S)
        if self._day is None or day != self._day.day:
            self._close_day()
            self._day = _DayTop(len(self.channels) * (1 + self._orders), day)
        if flagged:
            self._day.excluded += 1
            return
        h = np.asarray(harmonics_pct, dtype=np.float64)
        top = min(IEEE519_MAX_ORDER, self.max_order)
        with np.errstate(invalid="ignore"):
            thd = np.where(np.isnan(h).all(axis=1), np.nan, thd_from_harmonics_pct(h, top))
        self._day.add(np.concatenate([thd[:, None], h], axis=1).ravel())

    def _close_day(self) -> None:
        if self._day is not None and (self._day.count.any() or self._day.excluded):
            d = self._day
            self._days.append((d.day * DAY_S, d.percentiles(IEEE519_DAILY_PERCENTILE), d.count.copy(), d.excluded))
            self._days = self._days[-8:]  # the days a week can overlap
        self._day = None

    def series(self, end_s: float) -> Series:
        """The criteria's input for the week ending at ``end_s`` (a 10-min tick of the clock)."""
        c, orders = len(self.channels), self._orders
        t, rows, flagged = self.ten.window(end_s)
        used = rows[~flagged]
        ten_t = t[~flagged]
        rms = used[:, :c]
        harm = used[:, c : c + c * orders].reshape(-1, c, orders)
        u2 = used[:, -1]
        if self.freq is not None:
            ft, fv, ff = self.freq.window(end_s)
            keep = ~ff & ~np.isnan(fv[:, 0])
            freq_t, freq_hz = ft[keep], fv[keep, 0]
            freq_excluded = int(np.count_nonzero(ff))
        else:
            freq_t = freq_hz = np.zeros(0)
            freq_excluded = 0
        _, pv, pf = self.plt.window(end_s)
        plt = {ch: pv[~pf, i][~np.isnan(pv[~pf, i])] for i, ch in enumerate(self.channels)}
        daily = self._daily(end_s) if self.short else None
        since = self.since_s if self.since_s is not None else end_s
        return Series(
            channels=list(self.channels), udin_v=self.udin_v, nominal_hz=self.nominal_hz,
            duration_s=max(0.0, end_s - since), max_order=self.max_order,
            ten_t=ten_t, ten_rms={ch: rms[:, i] for i, ch in enumerate(self.channels)},
            ten_h={ch: harm[:, i, :] for i, ch in enumerate(self.channels)}, ten_u2=u2,
            ten_excluded=int(np.count_nonzero(flagged)),
            short_t=np.zeros(0), short_h={ch: np.zeros((0, orders)) for ch in self.channels}, short_excluded=0,
            freq_t=freq_t, freq_hz=freq_hz, plt=plt, short_daily=daily, plt_excluded=int(np.count_nonzero(pf)),
            freq_excluded=freq_excluded,
        )  # fmt: skip

    def _daily(self, end_s: float) -> dict[str, DailyPercentiles]:
        """The UTC days that overlap the week ending at ``end_s``, the day in progress included."""
        days = [d for d in self._days if d[0] + DAY_S > end_s - WEEK_S]
        d = self._day
        if d is not None and (d.count.any() or d.excluded):
            days.append((d.day * DAY_S, d.percentiles(IEEE519_DAILY_PERCENTILE), d.count.copy(), d.excluded))
        c, w = len(self.channels), 1 + self._orders
        starts = np.array([d[0] for d in days])
        meas = np.array([d[1] for d in days]).reshape(len(days), c, w)
        counts = np.array([d[2] for d in days]).reshape(len(days), c, w)
        excluded = sum(d[3] for d in days)
        return {ch: DailyPercentiles(starts, meas[:, i, :], counts[:, i, :], excluded)
                for i, ch in enumerate(self.channels)}  # fmt: skip

    @property
    def nbytes(self) -> int:
        """Memory held by the kept statistics [bytes] (numpy buffers)."""
        n = self.ten.nbytes + self.plt.nbytes + (self.freq.nbytes if self.freq is not None else 0)
        if self.short:
            width = len(self.channels) * (1 + self._orders)
            n += (TOP_KEEP + TOP_BATCH) * width * 8 + 8 * 2 * width * 8  # the day in progress; 8 days' summaries
        return n

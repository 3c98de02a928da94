"""Dispatch's inputs: the feeder's forecasts (central's ``forecasts`` table, or a CSV for dry runs) and the energy
price series (a CSV, or a flat price from the config) on the dispatch intervals (docs/dispatch.md, "Inputs").

The ``forecasts`` table (written by central's forecasting)::

    forecasts(feeder, kind 'load_p'|'load_q'|'pv', horizon 'intraday'|'day-ahead', issued, start, end_ts,
              p10, p50, p90, unit 'kW'|'kvar', model)

Each dispatch interval takes, per kind, the p50 of the latest issued forecast row (issued at or before now)
whose [start, end_ts) covers the interval's start; at equal issue times an intraday row wins over a day-ahead
one. The rows come through the store's interface (``Store.forecasts_covering``, SQLite or PostgreSQL); the
choice among them is made here, once for both. A forecast CSV has the header ``start,load_kw,load_kvar,pv_kw`` (feeder totals; ``start`` in epoch seconds
or ISO-8601 UTC), one row per dispatch interval. A price CSV has the header ``start,price`` [currency/kWh]: each
price holds from its start until the next row's.
"""

from __future__ import annotations

import csv
import io
import math
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from central.store import CentralStoreError, Store
from central.times import parse_utc

FORECAST_KINDS = {"load_p": "kW", "load_q": "kvar", "pv": "kW"}
FORECAST_CSV = ("start", "load_kw", "load_kvar", "pv_kw")
PRICE_CSV = ("start", "price")


class InputError(ValueError):
    """A forecast or price input that does not cover the dispatch horizon or cannot be read; the text says which
    file or table, which row or interval, and what is needed."""


@dataclass(frozen=True, slots=True)
class Forecast:
    """Feeder totals per dispatch interval: load [kW], [kvar] and available PV [kW]."""

    starts: np.ndarray  # int64 epoch seconds
    load_kw: np.ndarray
    load_kvar: np.ndarray
    pv_kw: np.ndarray
    source: str


def horizon(first_start: int, interval_s: int, n: int) -> np.ndarray:
    return first_start + interval_s * np.arange(n, dtype=np.int64)


def next_start(now: float, interval_s: int) -> int:
    """The start of the interval after the one ``now`` is in (a schedule starts on a boundary still to come)."""
    return (math.floor(now / interval_s) + 1) * interval_s


def current_start(now: float, interval_s: int) -> int:
    return math.floor(now / interval_s) * interval_s


def parse_time(text: str, where: str) -> int:
    """Epoch seconds or ISO-8601 UTC; InputError naming ``where``."""
    try:
        return parse_utc(text, where)
    except ValueError as err:
        raise InputError(str(err)) from None


def _number(text: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise InputError(f"{where} = {text!r:.30}: a number") from None
    if not math.isfinite(value):
        raise InputError(f"{where} = {text!r:.30}: a finite number")
    return value


def _rows(path: Path, columns: tuple[str, ...]) -> list[tuple[int, list[str]]]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: cannot read it ({err})") from None
    reader = csv.reader(io.StringIO(text))
    header = [h.strip() for h in next(reader, [])]
    if header != list(columns):
        raise InputError(f"{path}: header = {','.join(header)!r:.80}: must be {','.join(columns)}")
    out = []
    for n, row in enumerate(reader, start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != len(columns):
            raise InputError(f"{path} line {n}: {len(row)} columns, {len(columns)} expected ({','.join(columns)})")
        out.append((n, [c.strip() for c in row]))
    return out


def forecast_csv(path: Path, starts: np.ndarray) -> Forecast:
    """The forecast CSV's rows at ``starts``; InputError naming the first interval it lacks."""
    by_start: dict[int, tuple[float, float, float]] = {}
    for n, row in _rows(path, FORECAST_CSV):
        t = parse_time(row[0], f"{path} line {n} start")
        vals = tuple(_number(v, f"{path} line {n} {col}") for v, col in zip(row[1:], FORECAST_CSV[1:], strict=True))
        if vals[0] < 0 or vals[2] < 0:
            raise InputError(f"{path} line {n}: load_kw and pv_kw must not be negative")
        by_start[t] = vals  # type: ignore[assignment]
    missing = [int(s) for s in starts if int(s) not in by_start]
    if missing:
        raise InputError(f"{path}: no row for {len(missing)} of the {len(starts)} intervals, the first at "
                         f"{_iso(missing[0])} ({missing[0]}); one row per interval start is needed")  # fmt: skip
    arr = np.array([by_start[int(s)] for s in starts], dtype=float)
    return Forecast(starts, arr[:, 0], arr[:, 1], arr[:, 2], str(path))


def forecast_db(store: Store, feeder: str, starts: np.ndarray, interval_s: int, now: float) -> Forecast:
    """The latest forecasts issued at or before ``now`` for ``feeder`` over ``starts`` (p50), read from central's
    store (SQLite or PostgreSQL: ``Store.forecasts_covering``); the selection is made here, the same on both."""
    t0, t1 = int(starts[0]), int(starts[-1]) + interval_s
    try:
        rows = store.forecasts_covering(feeder, t0, t1, int(now))
    except (CentralStoreError, sqlite3.Error) as err:
        raise InputError(f"central's store {store.path}: cannot read the forecasts ({err})") from None
    # later issues overwrite earlier ones; at equal issue times intraday comes after day-ahead and wins
    rows.sort(key=lambda r: (r["issued"], r["horizon"] == "intraday", r["start"]))
    out = {k: np.full(len(starts), np.nan) for k in FORECAST_KINDS}
    for r in rows:
        kind, p50, unit = r["kind"], r["p50"], r["unit"]
        if kind not in out or p50 is None:
            continue
        if unit != FORECAST_KINDS[kind]:
            raise InputError(
                f"forecasts: feeder {feeder} kind {kind} in {unit!r}; dispatch reads {FORECAST_KINDS[kind]}"
            )
        mask = (starts >= r["start"]) & (starts < r["end_ts"])
        out[kind][mask] = float(p50)
    for kind, arr in out.items():
        gap = np.flatnonzero(np.isnan(arr))
        if gap.size:
            first = int(starts[gap[0]])
            raise InputError(f"forecasts: feeder {feeder!r} has no {kind} forecast issued by {_iso(now)} for "
                             f"{gap.size} of the {len(starts)} intervals, the first at {_iso(first)}")  # fmt: skip
    return Forecast(starts, out["load_p"], out["load_q"], np.maximum(out["pv"], 0.0), f"forecasts table ({feeder})")


def prices_csv(path: Path, starts: np.ndarray) -> np.ndarray:
    """The price [currency/kWh] in force at each of ``starts``."""
    points = sorted((parse_time(r[0], f"{path} line {n} start"), _number(r[1], f"{path} line {n} price"))
                    for n, r in _rows(path, PRICE_CSV))  # fmt: skip
    if not points or points[0][0] > int(starts[0]):
        raise InputError(f"{path}: the prices start after the first interval ({_iso(int(starts[0]))}); a row at or "
                         "before it is needed")  # fmt: skip
    times = np.array([p[0] for p in points])
    idx = np.searchsorted(times, starts, side="right") - 1
    return np.array([points[i][1] for i in idx], dtype=float)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


__all__ = ["Forecast", "InputError", "current_start", "forecast_csv", "forecast_db", "horizon", "next_start",
           "parse_time", "prices_csv"]  # fmt: skip

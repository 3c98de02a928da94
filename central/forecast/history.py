"""History files for the forecaster: a CSV of 15-minute values with an ISO-8601 UTC timestamp (docs/forecast.md).

The reader is strict so that a backtest never runs on something other than what the user thinks it holds: the
timestamp column must be UTC and regular at 15 minutes (a gap is an error naming its times), every value a number.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

STEP_S = 900  # 15-minute intervals
WEATHER_COLUMNS = ("temperature", "irradiance")  # degC, W/m2 (GHI)
TIME_COLUMN = "timestamp"
MAX_NAMED = 5  # gaps or bad lines named in one error; the rest are counted


class HistoryError(ValueError):
    """The history file cannot be used; the message names the file, the line or column, and what is allowed."""


@dataclass(frozen=True)
class History:
    """One series at 15 minutes: value ``values[i]`` is the interval starting at ``start + i * 900`` (unix s UTC)."""

    start: int
    values: np.ndarray
    column: str
    temperature: np.ndarray | None = None
    irradiance: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.values)

    @property
    def timestamps(self) -> np.ndarray:
        return self.start + STEP_S * np.arange(len(self.values), dtype=np.int64)


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(text: str, where: str) -> int:
    try:
        dt = datetime.fromisoformat(text.strip())
    except ValueError as err:
        raise HistoryError(f"{where}: timestamp {text!r} is not ISO-8601 (e.g. 2025-01-01T00:15:00Z)") from err
    if dt.tzinfo is None or dt.utcoffset() != timedelta(0):
        raise HistoryError(f"{where}: timestamp {text!r} is not UTC: give it with Z or +00:00")
    return int(dt.timestamp())


def read_history(path: str | Path, column: str | None = None) -> History:
    """Read ``path``; ``column`` names the value column, else the only column that is neither time nor weather."""
    path = Path(path)
    try:
        f = path.open(newline="")
    except OSError as err:
        raise HistoryError(f"{path}: cannot open: {err.strerror}") from err
    with f:
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader, [])]
        if TIME_COLUMN not in header:
            raise HistoryError(f"{path}: no {TIME_COLUMN!r} column (columns: {', '.join(header) or 'none'})")
        candidates = [h for h in header if h != TIME_COLUMN and h not in WEATHER_COLUMNS]
        if column is None:
            if len(candidates) != 1:
                raise HistoryError(
                    f"{path}: choose the value column with --column: one of {', '.join(candidates) or 'none'}"
                )
            column = candidates[0]
        elif column not in candidates:
            raise HistoryError(f"{path}: --column {column!r} is not a value column: one of {', '.join(candidates)}")
        wanted = [TIME_COLUMN, column, *(w for w in WEATHER_COLUMNS if w in header)]
        index = [header.index(w) for w in wanted]
        rows: list[list[float]] = []
        times: list[int] = []
        bad: list[str] = []
        for lineno, row in enumerate(reader, start=2):
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) < len(header):
                bad.append(f"line {lineno}: {len(row)} fields, the header has {len(header)}")
                continue
            times.append(_parse_time(row[index[0]], f"{path} line {lineno}"))
            values = []
            for name, i in zip(wanted[1:], index[1:], strict=True):
                try:
                    v = float(row[i])
                except ValueError:
                    v = math.nan
                if not math.isfinite(v):
                    bad.append(f"line {lineno}: {name} = {row[i]!r} is not a number")
                values.append(v)
            rows.append(values)
            if len(bad) > MAX_NAMED:
                break
    if bad:
        raise HistoryError(f"{path}: " + "; ".join(bad[:MAX_NAMED]) + (" ..." if len(bad) > MAX_NAMED else ""))
    if len(times) < 2:
        raise HistoryError(f"{path}: {len(times)} rows: a history needs many days of 15-minute values")
    t = np.asarray(times, dtype=np.int64)
    _check_steps(path, t)
    data = np.asarray(rows, dtype=float)
    weather = {w: data[:, wanted.index(w) - 1] for w in WEATHER_COLUMNS if w in wanted}
    return History(int(t[0]), data[:, 0], column, weather.get("temperature"), weather.get("irradiance"))


def _check_steps(path: Path, t: np.ndarray) -> None:
    if t[0] % STEP_S:
        raise HistoryError(f"{path}: first timestamp {iso(t[0])} is not on a 15-minute boundary")
    d = np.diff(t)
    wrong = np.flatnonzero(d != STEP_S)
    if not len(wrong):
        return
    is_gap = (d[wrong] > STEP_S) & (d[wrong] % STEP_S == 0)
    gaps, others = list(wrong[is_gap]), list(wrong[~is_gap])
    if others:
        i = others[0]
        raise HistoryError(
            f"{path}: rows must be 15 minutes apart in time order: line {i + 2} {iso(t[i])} then line {i + 3} "
            f"{iso(t[i + 1])} ({len(others)} such steps)"
        )
    named = ", ".join(
        f"{iso(t[i] + STEP_S)}..{iso(t[i + 1] - STEP_S)} ({(d[i] // STEP_S) - 1} intervals)" for i in gaps[:MAX_NAMED]
    )
    more = f" and {len(gaps) - MAX_NAMED} more" if len(gaps) > MAX_NAMED else ""
    raise HistoryError(f"{path}: {len(gaps)} gaps in the 15-minute steps: missing {named}{more}")

"""Forecast error measures (docs/forecast.md): MASE, MAPE, nMAE, skill score, pinball loss, interval coverage.

Each takes arrays of the same shape and ignores positions where the truth or the forecast is NaN.
"""

from __future__ import annotations

import numpy as np

MAPE_FLOOR = 0.05  # MAPE skips truths below 5 % of the mean |truth|: a near-zero load would dominate it


def _pair(y: np.ndarray, f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y, f = np.asarray(y, dtype=float).ravel(), np.asarray(f, dtype=float).ravel()
    ok = np.isfinite(y) & np.isfinite(f)
    return y[ok], f[ok]


def mae(y: np.ndarray, f: np.ndarray) -> float:
    y, f = _pair(y, f)
    return float(np.mean(np.abs(y - f))) if len(y) else float("nan")


def seasonal_naive_scale(history: np.ndarray, m: int = 96) -> float:
    """In-sample MAE of the seasonal-naive forecast y[t-m] over ``history`` (MASE's denominator, Hyndman 2006)."""
    h = np.asarray(history, dtype=float)
    return mae(h[m:], h[:-m])


def mase(y: np.ndarray, f: np.ndarray, scale: float) -> float:
    """Mean absolute scaled error: MAE / ``scale`` (the in-sample seasonal-naive MAE)."""
    return mae(y, f) / scale if scale > 0 else float("nan")


def mape_pct(y: np.ndarray, f: np.ndarray) -> float:
    """Mean absolute percentage error [%] over truths at least MAPE_FLOOR of the mean |truth|."""
    y, f = _pair(y, f)
    if not len(y):
        return float("nan")
    keep = np.abs(y) >= MAPE_FLOOR * np.mean(np.abs(y))
    return float(100 * np.mean(np.abs((y[keep] - f[keep]) / y[keep]))) if keep.any() else float("nan")


def nmae(y: np.ndarray, f: np.ndarray, capacity: float) -> float:
    """MAE normalised by ``capacity`` (for PV: the largest value of the history before the backtest window)."""
    return mae(y, f) / capacity if capacity > 0 else float("nan")


def skill(error: float, reference_error: float) -> float:
    """Skill score 1 - error / reference error: 0 is as good as the reference, 1 is perfect."""
    return 1 - error / reference_error if reference_error > 0 else float("nan")


def pinball(y: np.ndarray, q: np.ndarray, tau: float) -> float:
    """Mean pinball (quantile) loss of quantile forecast ``q`` at level ``tau``: tau*(y-q) if y >= q else (1-tau)*(q-y)."""
    y, q = _pair(y, q)
    d = y - q
    return float(np.mean(np.maximum(tau * d, (tau - 1) * d))) if len(y) else float("nan")


def coverage(y: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> float:
    """The share of truths inside [lo, hi]."""
    y, lo, hi = (np.asarray(a, dtype=float).ravel() for a in (y, lo, hi))
    ok = np.isfinite(y) & np.isfinite(lo) & np.isfinite(hi)
    return float(np.mean((y[ok] >= lo[ok]) & (y[ok] <= hi[ok]))) if ok.any() else float("nan")

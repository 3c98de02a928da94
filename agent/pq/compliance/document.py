"""The compliance report of a ``gridedge pq analyze --json`` document (schema in docs/pq-report.md).

:func:`series_of_document` turns the document into the :class:`~agent.pq.compliance.assessment.Series` the
criteria read, leaving out flagged values and 10-min intervals that do not lie wholly in the record;
:func:`evaluate` gives the :class:`~agent.pq.compliance.assessment.ComplianceReport`. Input that is not such a
document raises :class:`~agent.pq.compliance.limits.ComplianceError` naming the key.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from agent.pq.compliance.assessment import (
    ComplianceReport,
    CriterionResult,
    Series,
    en50160_criteria,
    evaluate_series,
    ieee519_criteria,
)
from agent.pq.compliance.limits import EN50160_LIMITS, STANDARDS, ComplianceError, ieee519_row


def _need(data: dict[str, Any], key: str, where: str = "input") -> Any:
    if not isinstance(data, dict) or key not in data:
        raise ComplianceError(f"{where}.{key}: missing: the JSON of `gridedge pq analyze --json` has it")
    return data[key]


def series_of_document(data: dict[str, Any]) -> Series:
    """The :class:`Series` of an analyze document (docs/pq-report.md); bad input raises :class:`ComplianceError`."""
    try:
        return _series_of(data)
    except ComplianceError:
        raise
    except (KeyError, TypeError, ValueError, IndexError) as err:
        raise ComplianceError(
            f"input: not the JSON of `gridedge pq analyze --json` ({type(err).__name__}: {err})"
        ) from err


def _series_of(data: dict[str, Any]) -> Series:
    channels = list(_need(data, "channels"))
    if not channels:
        raise ComplianceError("input.channels: empty: allowed at least one voltage channel")
    udin = float(_need(data, "udin_v"))
    nominal = float(_need(data, "nominal_hz"))
    duration = float(_need(_need(data, "file"), "duration_s", "input.file"))
    order = int(_need(data, "max_order"))
    ten = [a for a in _need(data, "aggregates_10min") if a.get("complete", True)]
    used = [a for a in ten if not a.get("flagged", False)]
    short_all = _need(data, "aggregates_3s")
    short = [a for a in short_all if not a.get("flagged", False)]

    def rows(items: list[dict[str, Any]], key: str, ch: str) -> np.ndarray:
        out = [_nan(a[key][ch]) if key in a and ch in a[key] else math.nan for a in items]
        return np.asarray(out, dtype=np.float64)

    def matrix(items: list[dict[str, Any]], ch: str) -> np.ndarray:
        if not items:
            return np.zeros((0, max(order - 1, 0)))
        return np.array([[_nan(v) for v in a["harmonics_pct"][ch]] for a in items], dtype=np.float64)

    freq = [f for f in _need(data, "frequency_10s") if f.get("complete", True) and f.get("freq_hz") is not None]
    plts = {ch: np.array(data["channels"][ch].get("plt") or [], dtype=np.float64) for ch in channels}
    plt_flags = {ch: np.array(data["channels"][ch].get("plt_flagged") or [False] * plts[ch].size, dtype=bool)
                 for ch in channels}  # fmt: skip
    for ch in channels:
        if plt_flags[ch].shape != plts[ch].shape:
            raise ComplianceError(f"input.channels.{ch}.plt_flagged: {plt_flags[ch].size} flags for "
                                  f"{plts[ch].size} Plt values: allowed one flag per value")  # fmt: skip
    return Series(
        channels=channels,
        udin_v=udin,
        nominal_hz=nominal,
        duration_s=duration,
        max_order=order,
        ten_t=np.array([a["start_s"] for a in used], dtype=np.float64),
        ten_rms={ch: rows(used, "rms_v", ch) for ch in channels},
        ten_h={ch: matrix(used, ch) for ch in channels},
        ten_u2=np.array([_nan(a.get("u2_pct")) for a in used], dtype=np.float64),
        ten_excluded=len(ten) - len(used),
        short_t=np.array([a["start_s"] for a in short], dtype=np.float64),
        short_h={ch: matrix(short, ch) for ch in channels},
        short_excluded=len(short_all) - len(short),
        freq_t=np.array([f["start_s"] for f in freq], dtype=np.float64),
        freq_hz=np.array([f["freq_hz"] for f in freq], dtype=np.float64),
        plt={ch: plts[ch][~plt_flags[ch]] for ch in channels},
        plt_excluded=max((int(np.count_nonzero(f)) for f in plt_flags.values()), default=0),
    )


def _nan(v: Any) -> float:
    return math.nan if v is None else float(v)


def evaluate_en50160(data: dict[str, Any], standard: str = "en50160-lv") -> list[CriterionResult]:
    """EN 50160:2010 criteria over an analyze document; one line per criterion, channel and harmonic order."""
    if standard not in EN50160_LIMITS:
        raise ComplianceError(f"standard={standard!r}: allowed {', '.join(EN50160_LIMITS)}")
    return en50160_criteria(series_of_document(data), standard)


def default_bus_kv(data: dict[str, Any]) -> float:
    """The PCC bus voltage [kV line to line] implied by the record's Udin (phase to neutral): Udin * sqrt 3."""
    return float(_need(data, "udin_v")) * math.sqrt(3.0) / 1000.0


def evaluate_ieee519(data: dict[str, Any], bus_kv: float | None = None) -> list[CriterionResult]:
    """IEEE 519-2014 clause 5.1 voltage distortion criteria, Table 1 row chosen by ``bus_kv``."""
    kv = default_bus_kv(data) if bus_kv is None else bus_kv
    ieee519_row(kv)  # a bad bus_kv is named before the input is read
    return ieee519_criteria(series_of_document(data), kv)


def evaluate(data: dict[str, Any], standard: str, bus_kv: float | None = None) -> ComplianceReport:
    """Assess an analyze document against ``standard`` (one of :data:`STANDARDS`)."""
    if standard not in STANDARDS:
        raise ComplianceError(f"standard={standard!r}: allowed {', '.join(STANDARDS)}")
    _need(_need(data, "file"), "duration_s", "input.file")
    if standard == "ieee519":
        kv = default_bus_kv(data) if bus_kv is None else bus_kv
        ieee519_row(kv)
    elif bus_kv is not None:
        raise ComplianceError(f"bus_kv={bus_kv!r}: only for ieee519 (EN 50160 uses Udin)")
    return evaluate_series(series_of_document(data), standard, bus_kv)

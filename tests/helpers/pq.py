"""Power-quality test material: three synthetic phases (harmonics, magnitudes) written as CSV or COMTRADE for
`gridedge pq analyze`, and hand-made documents in the shape of its ``--json`` output for the compliance checks."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import numpy as np

from protocols import comtrade as ct

UDIN = 230.0
PEAK = UDIN * math.sqrt(2.0)


def phases(rate: float, seconds: float, *, f: float = 50.0, harmonics: dict[int, float] | None = None,
           mags=(1.0, 1.0, 1.0), peak: float = PEAK) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(t, [3, n]) phase voltages a, b, c at 0, -120, +120 deg with harmonics {order: fraction} in phase sequence."""
    t = np.arange(round(rate * seconds)) / rate
    out = []
    for k, mag in enumerate(mags):
        theta = 2 * np.pi * f * t - k * 2 * np.pi / 3
        v = np.sin(theta) + sum(a * np.sin(h * theta) for h, a in (harmonics or {}).items())
        out.append(mag * peak * v)
    return t, np.array(out)


def write_csv(path: Path, t: np.ndarray | None, data: np.ndarray, names=("va", "vb", "vc")) -> Path:
    cols = ([t] if t is not None else []) + list(data)
    header = ",".join((["t"] if t is not None else []) + list(names))
    np.savetxt(path, np.array(cols).T, delimiter=",", header=header, comments="", fmt="%.9g")
    return path


def write_comtrade(path: Path, rate: float, data: np.ndarray, *, rev: str = "2013", fmt: str = "BINARY",
                   names=("va", "vb", "vc"), lf: float = 50.0) -> Path:  # fmt: skip
    analog = tuple(
        ct.scaled_channel(n, data[i], unit="V", data_format=fmt, rev_year=rev, phase=n[1].upper())
        for i, n in enumerate(names)
    )
    start = dt.datetime(2024, 3, 1, 12, 0, 0)
    config = ct.Config("TEST", "REC", analog, (ct.SampleRate(rate, data.shape[1]),), start, start,
                       rev_year=rev, line_freq_hz=lf, data_format=fmt)  # fmt: skip
    cfg, _ = ct.write(path, config, data)
    return cfg


ORDERS = 50  # harmonics_pct lists orders 2..50


def doc(n10: int = 20, *, udin: float = 230.0, rms=None, harm=None, u2=None, flagged=(), incomplete=(),
        n3: int = 0, harm3=None, t3=None, freqs=None, plt=None, channels=("va", "vb", "vc")) -> dict:  # fmt: skip
    """An analyze document with ``n10`` 10-min values; ``harm(i) -> {order: pct}``, ``rms(i) -> V``."""

    def hlist(values: dict[int, float]) -> list[float]:
        return [values.get(h, 0.0) for h in range(2, ORDERS + 1)]

    ten = [
        {
            "start_s": 600.0 * i,
            "end_s": 600.0 * (i + 1),
            "complete": i not in incomplete,
            "flagged": i in flagged,
            "count": 3000,
            "rms_v": {c: (rms(i) if rms else udin) for c in channels},
            "harmonics_pct": {c: hlist(harm(i) if harm else {}) for c in channels},
            "u2_pct": u2(i) if u2 else 0.5,
            "u0_pct": 0.1,
        }
        for i in range(n10)
    ]
    short = [
        {
            "start_s": t3(i) if t3 else 3.0 * i,
            "end_s": (t3(i) if t3 else 3.0 * i) + 3.0,
            "flagged": False,
            "count": 15,
            "harmonics_pct": {c: hlist(harm3(i) if harm3 else {}) for c in channels},
        }
        for i in range(n3)
    ]
    f = freqs if freqs is not None else [50.0] * 10
    return {
        "file": {"duration_s": max(600.0 * n10, 3.0 * n3, 10.0 * len(f))},
        "nominal_hz": 50.0,
        "udin_v": udin,
        "max_order": ORDERS,
        "channels": {c: {"plt": plt} for c in channels},
        "aggregates_10min": ten,
        "aggregates_3s": short,
        "frequency_10s": [{"start_s": 10.0 * i, "freq_hz": v, "complete": True} for i, v in enumerate(f)],
    }

"""Synthetic 15-minute feeder history for the forecasting tests and benchmark (seeded, deterministic).

Load: a residential double hump plus a commercial weekday block, lower at weekends, heating below 15 degC and
cooling above 22 degC, multiplied by AR(1) noise. PV: a clear-sky bell from the sun's elevation (latitude 45 N,
longitude 0, so UTC is solar time) times a cloud process (a daily regime plus AR(1) within the day).
Columns written: timestamp, load_p_kw, load_q_kvar, pv_kw, temperature, irradiance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

STEP_S = 900
START = int(datetime(2025, 1, 1, tzinfo=UTC).timestamp())


@dataclass(frozen=True)
class Synthetic:
    start: int  # unix s of the first interval
    load_p_kw: np.ndarray
    load_q_kvar: np.ndarray
    pv_kw: np.ndarray
    temperature: np.ndarray  # degC
    irradiance: np.ndarray  # W/m2 GHI

    @property
    def timestamps(self) -> np.ndarray:
        return self.start + STEP_S * np.arange(len(self.load_p_kw), dtype=np.int64)


def _ar1(rng: np.random.Generator, n: int, phi: float, sd: float) -> np.ndarray:
    e = rng.normal(0.0, sd * math.sqrt(1 - phi * phi), n)
    out = np.empty(n)
    x = rng.normal(0.0, sd)
    for i in range(n):
        x = phi * x + e[i]
        out[i] = x
    return out


def make(
    days: int = 90, *, seed: int = 0, peak_kw: float = 1000.0, pv_kw: float = 400.0, start: int = START
) -> Synthetic:
    rng = np.random.default_rng(seed)
    n = days * 96
    t = start + STEP_S * np.arange(n, dtype=np.int64)
    hour = (t % 86400) / 3600.0
    doy = np.array([datetime.fromtimestamp(int(x), UTC).timetuple().tm_yday for x in t[::96]]).repeat(96)[:n]
    dow = ((t // 86400) + 3) % 7  # 1970-01-01 was a Thursday: 0 = Monday
    weekend = dow >= 5

    anomaly = _ar1(rng, n, 0.998, 3.0)
    temperature = 12 - 9 * np.cos(2 * np.pi * (doy - 15) / 365) + 4 * np.sin(2 * np.pi * (hour - 9) / 24) + anomaly

    residential = 0.35 + 0.25 * np.exp(-((hour - 7.5) ** 2) / 2) + 0.45 * np.exp(-((hour - 19) ** 2) / 4)
    commercial = np.where(weekend, 0.1, 0.55 / (1 + np.exp(-(hour - 7.5) * 2)) / (1 + np.exp((hour - 18) * 2)))
    shape = residential * np.where(weekend, 1.1, 1.0) + commercial
    weather = 1 + 0.02 * np.clip(15 - temperature, 0, None) + 0.03 * np.clip(temperature - 22, 0, None)
    noise = np.exp(_ar1(rng, n, 0.97, 0.03) + rng.normal(0, 0.01, n))
    load_p = peak_kw / 1.6 * shape * weather * noise
    load_q = 0.3 * load_p + peak_kw * 0.01 * _ar1(rng, n, 0.9, 1.0)

    decl = math.radians(23.44) * np.sin(2 * np.pi * (284 + doy) / 365)
    lat = math.radians(45.0)
    sin_elev = np.sin(lat) * np.sin(decl) + np.cos(lat) * np.cos(decl) * np.cos(np.radians(15 * (hour + 0.125 - 12)))
    clear = 1000 * np.clip(sin_elev, 0, None) ** 1.15
    regime = np.clip(0.75 + _ar1(rng, days, 0.6, 0.25), 0.15, 1.0).repeat(96)[:n]
    csi = np.clip(regime + _ar1(rng, n, 0.9, 0.12), 0.05, 1.05)
    irradiance = clear * csi
    pv = pv_kw * irradiance / 1000 * (1 - 0.004 * (temperature + irradiance / 40 - 25))
    pv = np.clip(pv, 0, None)
    return Synthetic(start, load_p, load_q, pv, temperature, irradiance)


def write_csv(path: Path, data: Synthetic, columns: tuple[str, ...] = ("load_p_kw", "load_q_kvar", "pv_kw")) -> Path:
    """The history file as `gridedge sim history` writes it: timestamp, value columns, temperature, irradiance."""
    cols = [*columns, "temperature", "irradiance"]
    arrays = [getattr(data, c) for c in cols]
    with path.open("w") as f:
        f.write(",".join(["timestamp", *cols]) + "\n")
        for i, ts in enumerate(data.timestamps):
            stamp = datetime.fromtimestamp(int(ts), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            f.write(stamp + "," + ",".join(f"{a[i]:.3f}" for a in arrays) + "\n")
    return path

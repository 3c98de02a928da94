"""Realistic profiles: BDEW standard load profiles per customer class, typical-year weather, PV through pvlib.

The bench's second profile source (``[profiles] source = "bdew"``; the first is the deterministic daily shapes
of :mod:`sim_hw.feeder.profiles`). Every number comes from files inside installed wheels; nothing is
downloaded:

- Load: each load of the feeder has a customer class (``CLASSES``: the BDEW standard load profiles H0
  household, G0-G6 commercial, L0-L2 agricultural, 15-minute values as demandlib ships them [1]). Holidays of
  the configured country and subdivision (the ``holidays`` package) load as Sundays, as the BDEW method
  prescribes; H0 is dynamised (BDEW's fourth-order day-of-year polynomial, demandlib's ``h0_dyn``). A class's
  profile is scaled so that its highest 15-minute value of the calendar year is 1.0; a load's P is its
  nominal kW (the OpenDSS script's) times that, times the temperature factor, times its AR(1) noise. Q follows
  P at the load's own power factor (the script's kvar/kW).
- Local time: the BDEW tables are wall-clock time. A row at UTC instant ``t`` takes the profile value of the
  local wall time of ``t`` in the configured IANA time zone, so a day of daylight saving time skips the
  hour that does not exist (spring) and repeats the one that happens twice (autumn): every UTC day has 96
  rows and people still wake at 07:00 on their clock.
- Weather: a TMY3 file shipped in pvlib's wheel (``TMY_FILES``; hourly, local standard time, hour-ending).
  The typical year is laid on the calendar year asked for by month, day and hour (a leap year repeats
  28 February). Temperature is interpolated linearly from the hour centres. GHI keeps the file's hourly
  clear-sky index (GHI over pvlib's Ineichen clear sky at the hour centre), interpolated linearly and
  multiplied by the clear sky at the 15-minute instant, so sunrise and sunset fall at the right minute.
- PV: the GHI split into beam and diffuse by Erbs, then pvlib's ModelChain with the PVWatts models [2]
  (Perez transposition, SAPM cell temperature, the PVWatts system losses of 14.08 %, a 96 % inverter sized
  to the array): ``pv_pu`` is the AC output per kW of array [kW/kWp], 0..1. A PV site rated ``kw`` makes
  ``kw * pv_pu`` (the bench's inverters take it as their available power).
- Temperature dependence (a modelling choice, not a standard): the load is multiplied by
  ``1 + COOLING_PER_K * max(0, T - COOLING_BALANCE_C) + HEATING_PER_K * max(0, HEATING_BALANCE_C - T)``.
  The BDEW seasons already carry Germany's seasonal swing (little electric heating, no air conditioning);
  the cooling term adds the air-conditioning load of a warm site (2 % per K above 20 degC), the heating term
  a small share of electric heating (0.5 % per K below 12 degC).
- Noise: each load's multiplier ``1 + x`` with ``x`` an AR(1) process per 15-minute step,
  ``x[k] = AR_PHI * x[k-1] + AR_SIGMA * sqrt(1 - AR_PHI**2) * e[k]``, ``e`` standard normal, stationary from
  the first step: standard deviation ``AR_SIGMA`` (5 %), correlation time ``-900 / ln(AR_PHI)`` s (2.4 h).
  One draw per load and UTC calendar year from ``numpy.random.default_rng([seed, crc32(load), year])``: the
  same seed gives the same history whatever window is asked for.

- Cloud transients (``clouds = "seeded"``, the running bench only): the PV per kWp times the transient factor of
  the daily profiles' seeded cloudy day (:meth:`sim_hw.feeder.profiles.Profile.transient`: 1.0 outside a
  transient, ``1 - depth`` at its full depth, ramps of 15-45 s), its 09:00-16:00 on the site's local mean solar
  time, computed at the bench's instant: the 1 s edges an hourly typical year lacks. The 15-minute history
  (:meth:`BdewProfiles.frame`) leaves them out.
- Their own clock (``start``): the bench reads the profiles at that instant plus the simulated time elapsed
  (``sim_hw.bench.Bench.profile_time``), so a bench on the wall clock replays one fixed day.

Each 15-minute point describes the interval that starts at its timestamp: load and PV are evaluated at the
interval's middle. The running bench (1 s steps) interpolates linearly between the points placed at their
intervals' middles, so an interval's mean on the bench is its point (exactly for a linear trend).

References
----------
[1] BDEW, "Repräsentative VDEW-Profile" (standard load profiles), as tabulated in demandlib 0.2
    (demandlib/bdew/bdew_data/selp_series.csv) with its ``ElecSlp`` class.
[2] A. P. Dobos, "PVWatts Version 5 Manual", NREL/TP-6A20-62641 (2014): the DC, inverter and loss models.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np

STEP_S = 900  # the BDEW profiles' interval [s]
POINTS_PER_DAY = 96
CLASSES = ("H0", "G0", "G1", "G2", "G3", "G4", "G5", "G6", "L0", "L1", "L2")
SOURCES = ("daily", "bdew")
CLOUDS = ("none", "seeded")
# The TMY3 files pvlib's wheel ships (pvlib/data) and the IANA zone of each site.
TMY_FILES = {"723170TYA.CSV": "America/New_York", "703165TY.csv": "America/Anchorage"}
COOLING_BALANCE_C = 20.0
COOLING_PER_K = 0.02
HEATING_BALANCE_C = 12.0
HEATING_PER_K = 0.005
AR_PHI = 0.9
AR_SIGMA = 0.05
PV_INVERTER_EFF = 0.96  # PVWatts' nominal inverter efficiency [2]
PV_GAMMA_PDC = -0.0037  # PVWatts "standard" module temperature coefficient [1/K] [2]
# IEEE 13-node default classes: the big three-phase and spot loads commercial, the rest residential.
DEFAULT_CLASSES = {"671": "G0", "634a": "G1", "634b": "G1", "634c": "G1", "675a": "G0", "675b": "G0", "675c": "G0"}


class ProfileError(ValueError):
    """A profile setting the feeder or the files cannot honour (unknown load, mismatched time zone)."""


@dataclass(frozen=True, slots=True)
class ProfileSettings:
    """The ``[profiles]`` table of a bench config."""

    source: str = "daily"
    seed: int = 1
    tmy: str = "723170TYA.CSV"
    timezone: str = "America/New_York"
    country: str = "US"
    subdiv: str | None = "NC"
    default_class: str = "H0"
    classes: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_CLASSES))
    noise_sigma: float = AR_SIGMA
    noise_phi: float = AR_PHI
    cooling_per_k: float = COOLING_PER_K
    heating_per_k: float = HEATING_PER_K
    pv_tilt_deg: float | None = None  # None: the site's latitude
    pv_azimuth_deg: float = 180.0
    clouds: str = "none"  # "seeded": the daily profiles' seeded 1 s cloud transients over the PV (the bench only)
    cloud_seed: int = 13
    start: float | None = None  # the profiles' instant at the bench's first step [s UTC]; None: the bench's clock


PROFILE_KEYS = {"source", "seed", "tmy", "timezone", "country", "subdiv", "default_class", "classes", "noise_sigma",
                "noise_phi", "cooling_per_k", "heating_per_k", "pv_tilt_deg", "pv_azimuth_deg", "clouds",
                "cloud_seed", "start"}  # fmt: skip


def parse_profiles(c: Any, raw: Any) -> ProfileSettings | None:
    """The ``[profiles]`` table checked with a :class:`protocols.configcheck.Checker` (issues recorded in ``c``)."""
    if not isinstance(raw, Mapping):
        c.fail("profiles", raw, "must be a table ([profiles])")
        return None
    start = len(c.issues)
    c.unknown(raw, "profiles", PROFILE_KEYS)
    d = ProfileSettings()
    source = c.get(raw, "profiles", "source", "string", d.source, choices=SOURCES)
    seed = c.get(raw, "profiles", "seed", "integer", d.seed)
    tmy = c.get(raw, "profiles", "tmy", "string", d.tmy, choices=tuple(TMY_FILES))
    tz = c.get(raw, "profiles", "timezone", "string", TMY_FILES.get(tmy or d.tmy, d.timezone))
    if tz is not None:
        try:
            ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            c.fail("profiles.timezone", tz, "must be an IANA time zone, e.g. 'America/New_York'")
    country = c.get(raw, "profiles", "country", "string", d.country)
    subdiv = c.get(raw, "profiles", "subdiv", "string", d.subdiv if "country" not in raw else None)
    if country is not None:
        import holidays

        supported = holidays.list_supported_countries()
        if country not in supported:
            c.fail(
                "profiles.country",
                country,
                "must be an ISO 3166 country code the holidays package knows, e.g. 'US', 'DE'",
            )
        elif subdiv is not None and subdiv not in supported[country]:
            c.fail("profiles.subdiv", subdiv, f"must be a subdivision of {country}: {', '.join(supported[country])}")
    default_class = c.get(raw, "profiles", "default_class", "string", d.default_class, choices=CLASSES)
    classes: dict[str, str] = dict(d.classes)
    raw_classes = raw.get("classes", {})
    if not isinstance(raw_classes, Mapping):
        c.fail("profiles.classes", raw_classes, 'must be a table of load = class, e.g. { "671" = "G0" }')
    else:
        for load, cls in raw_classes.items():
            if cls not in CLASSES:
                c.fail(f"profiles.classes.{load}", cls, "must be one of " + ", ".join(CLASSES))
            else:
                classes[str(load).lower()] = cls
    sigma = c.get(raw, "profiles", "noise_sigma", "number", d.noise_sigma, lo=0.0, hi=0.5)
    phi = c.get(raw, "profiles", "noise_phi", "number", d.noise_phi, lo=0.0, hi=0.999)
    cooling = c.get(raw, "profiles", "cooling_per_k", "number", d.cooling_per_k, lo=0.0, hi=0.2)
    heating = c.get(raw, "profiles", "heating_per_k", "number", d.heating_per_k, lo=0.0, hi=0.2)
    tilt = c.get(raw, "profiles", "pv_tilt_deg", "number", None, lo=0.0, hi=90.0)
    azimuth = c.get(raw, "profiles", "pv_azimuth_deg", "number", d.pv_azimuth_deg, lo=0.0, hi=360.0)
    clouds = c.get(raw, "profiles", "clouds", "string", d.clouds, choices=CLOUDS)
    cloud_seed = c.get(raw, "profiles", "cloud_seed", "integer", d.cloud_seed)
    at = _instant(c, raw.get("start"))
    if len(c.issues) != start:
        return None
    return ProfileSettings(source, seed, tmy, tz, country, subdiv, default_class, classes, float(sigma), float(phi),
                           float(cooling), float(heating), None if tilt is None else float(tilt), float(azimuth),
                           clouds, cloud_seed, at)  # fmt: skip


def _instant(c: Any, raw: Any) -> float | None:
    """``[profiles] start``: a TOML offset date-time or an ISO-8601 string with its UTC offset."""
    if raw is None:
        return None
    dt = raw if isinstance(raw, datetime) else None
    if isinstance(raw, str):
        try:
            dt = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            dt = None
    if dt is None or dt.tzinfo is None:
        c.fail("profiles.start", raw, "must be a date-time with its UTC offset, e.g. 2026-04-01T16:00:00Z")
        return None
    return dt.timestamp()


# ---------------------------------------------------------------------------------------------------------- weather
@lru_cache(maxsize=4)
def _tmy(name: str) -> tuple[Any, dict[str, Any]]:
    import os

    import pvlib

    if name not in TMY_FILES:
        raise ProfileError(f"profiles.tmy={name!r}: allowed {', '.join(TMY_FILES)} (the TMY3 files in pvlib's wheel)")
    path = Path(os.path.dirname(pvlib.__file__)) / "data" / name
    data, meta = pvlib.iotools.read_tmy3(str(path), map_variables=True)
    return data, meta


def tmy_site(name: str) -> dict[str, Any]:
    """The TMY3 file's station: name, latitude, longitude, altitude, TZ (standard offset [h])."""
    return dict(_tmy(name)[1])


def _hourly_centres(name: str, t0: float, t1: float) -> tuple[np.ndarray, Mapping[str, np.ndarray]]:
    """The typical year laid on every calendar year touching [t0, t1]: hour centres [s UTC] and the columns."""
    data, meta = _tmy(name)
    offset_s = float(meta["TZ"]) * 3600.0
    # the file's own date and hour-ending "HH:MM" (01:00..24:00, local standard time) -> the hour's start
    mdy = data["Date (MM/DD/YYYY)"].str.split("/", expand=True).astype(int)
    month, day = mdy[0].to_numpy(), mdy[1].to_numpy()
    hour = data["Time (HH:MM)"].str.slice(0, 2).astype(int).to_numpy() - 1
    order = np.lexsort((hour, day, month))
    month, day, hour = month[order], day[order], hour[order]
    cols = {k: data[k].to_numpy(dtype=float)[order] for k in ("ghi", "temp_air", "wind_speed")}
    y0 = datetime.fromtimestamp(t0 + offset_s - 86400, UTC).year
    y1 = datetime.fromtimestamp(t1 + offset_s + 86400, UTC).year
    times: list[np.ndarray] = []
    values: dict[str, list[np.ndarray]] = {k: [] for k in cols}
    for year in range(y0, y1 + 1):
        m, d, h, idx = month, day, hour, np.arange(len(month))
        if year % 4 == 0 and (year % 100 != 0 or year % 400 == 0):  # a leap year repeats 28 February
            feb28 = np.nonzero((month == 2) & (day == 28))[0]
            at = feb28[-1] + 1
            idx = np.concatenate([idx[:at], feb28, idx[at:]])
            m = month[idx]
            d = np.concatenate([day[:at], np.full(len(feb28), 29), day[at:]])
            h = hour[idx]
        base = np.array(
            [datetime(year, int(a), int(b), tzinfo=UTC).timestamp() for a, b in zip(m, d, strict=True)], dtype=float
        )
        times.append(base + h * 3600.0 + 1800.0 - offset_s)
        for k, v in cols.items():
            values[k].append(v[idx])
    return np.concatenate(times), {k: np.concatenate(v) for k, v in values.items()}


def solar_offset_s(site: Mapping[str, Any]) -> float:
    """Local mean solar time minus UTC at the site [s]: 240 s per degree of longitude east."""
    return float(site["longitude"]) * 240.0


@dataclass(frozen=True, slots=True)
class Weather:
    """Weather and PV at 15-minute points: ``times`` [s UTC], the value of each interval starting there."""

    times: np.ndarray
    temperature: np.ndarray  # [degC]
    ghi: np.ndarray  # [W/m2]
    pv_pu: np.ndarray  # AC output per kW of array [kW/kWp]


def weather(settings: ProfileSettings, start: float, n: int) -> Weather:
    """Temperature, GHI and PV per kWp for ``n`` 15-minute intervals from ``start`` [s UTC]."""
    import pandas as pd
    import pvlib

    data, meta = _tmy(settings.tmy)
    times = start + STEP_S * np.arange(n, dtype=float)
    mid = times + STEP_S / 2
    centres, cols = _hourly_centres(settings.tmy, float(times[0]), float(times[-1]) + STEP_S)
    loc = pvlib.location.Location(meta["latitude"], meta["longitude"], tz="UTC", altitude=meta["altitude"])
    cs_h = loc.get_clearsky(pd.DatetimeIndex(pd.to_datetime(centres, unit="s", utc=True)))["ghi"].to_numpy()
    ok = cs_h > 20.0
    kt = np.clip(cols["ghi"][ok] / cs_h[ok], 0.0, 1.3)
    index = pd.DatetimeIndex(pd.to_datetime(mid, unit="s", utc=True))
    solpos = loc.get_solarposition(index)
    cs = loc.get_clearsky(index, solar_position=solpos)["ghi"].to_numpy()
    ghi = np.interp(mid, centres[ok], kt) * cs
    temp = np.interp(mid, centres, cols["temp_air"])
    wind = np.interp(mid, centres, cols["wind_speed"])
    split = pvlib.irradiance.erbs(ghi, solpos["zenith"].to_numpy(), index)
    frame = pd.DataFrame(
        {"ghi": ghi, "dni": np.asarray(split["dni"]), "dhi": np.asarray(split["dhi"]), "temp_air": temp,
         "wind_speed": wind}, index=index)  # fmt: skip
    tilt = settings.pv_tilt_deg if settings.pv_tilt_deg is not None else abs(float(meta["latitude"]))
    system = pvlib.pvsystem.PVSystem(
        surface_tilt=tilt,
        surface_azimuth=settings.pv_azimuth_deg,
        module_parameters={"pdc0": 1.0, "gamma_pdc": PV_GAMMA_PDC},
        inverter_parameters={"pdc0": 1.0 / PV_INVERTER_EFF, "eta_inv_nom": PV_INVERTER_EFF},
        temperature_model_parameters=pvlib.temperature.TEMPERATURE_MODEL_PARAMETERS["sapm"]["open_rack_glass_polymer"],
    )
    mc = pvlib.modelchain.ModelChain.with_pvwatts(system, loc)
    mc.run_model(frame)
    pv = np.clip(np.nan_to_num(mc.results.ac.to_numpy(dtype=float)), 0.0, 1.0)
    return Weather(times, temp, np.maximum(ghi, 0.0), pv)


# ------------------------------------------------------------------------------------------------------------ loads
@lru_cache(maxsize=8)
def _class_year(year: int, country: str, subdiv: str | None) -> Mapping[str, np.ndarray]:
    """Every class's 15-minute profile of a local calendar year, 1.0 at its highest value."""
    import warnings

    import holidays
    from demandlib import bdew

    days = holidays.country_holidays(country, subdiv=subdiv, years=year)
    with warnings.catch_warnings():  # demandlib turns warnings into errors globally while it merges: undo after
        slp = bdew.ElecSlp(year, holidays=dict(days))
    frame = slp.get_profiles()
    out = {}
    for cls in CLASSES:
        v = frame["h0_dyn" if cls == "H0" else cls.lower()].to_numpy(dtype=float)
        out[cls] = v / v.max()
    return out


def class_profile(cls: str, times: np.ndarray, settings: ProfileSettings) -> np.ndarray:
    """A class's profile [pu of its yearly peak] at UTC instants ``times``, read at their local wall time."""
    import pandas as pd

    if cls not in CLASSES:
        raise ProfileError(f"class={cls!r}: allowed {', '.join(CLASSES)}")
    local = pd.DatetimeIndex(pd.to_datetime(times, unit="s", utc=True)).tz_convert(settings.timezone).tz_localize(None)
    years = local.year.to_numpy()
    pos = ((local - pd.to_datetime(years.astype(str), format="%Y")) // pd.Timedelta(seconds=STEP_S)).to_numpy()
    out = np.empty(len(times))
    for year in np.unique(years):
        sel = years == year
        out[sel] = _class_year(int(year), settings.country, settings.subdiv)[cls][pos[sel]]
    return out


def temperature_factor(temp_c: np.ndarray, settings: ProfileSettings) -> np.ndarray:
    return (
        1.0
        + settings.cooling_per_k * np.maximum(0.0, temp_c - COOLING_BALANCE_C)
        + settings.heating_per_k * np.maximum(0.0, HEATING_BALANCE_C - temp_c)
    )


def ar1_noise(name: str, times: np.ndarray, settings: ProfileSettings, seed: int) -> np.ndarray:
    """The AR(1) multiplier ``1 + x`` (clipped at 0) of one load at ``times`` [s UTC, multiples of 900 s]."""
    from scipy.signal import lfilter

    out = np.empty(len(times))
    years = np.array([datetime.fromtimestamp(float(t), UTC).year for t in (times[0], times[-1])])
    year_of = np.full(len(times), years[0])
    if years[1] != years[0]:
        year_of = np.array([datetime.fromtimestamp(float(t), UTC).year for t in times])
    for year in np.unique(year_of):
        y0 = datetime(int(year), 1, 1, tzinfo=UTC).timestamp()
        n = int((datetime(int(year) + 1, 1, 1, tzinfo=UTC).timestamp() - y0) // STEP_S)
        rng = np.random.default_rng([seed & 0xFFFFFFFF, zlib.crc32(name.encode()), int(year)])
        e = rng.standard_normal(n)
        x_prev = settings.noise_sigma * rng.standard_normal()
        b = settings.noise_sigma * math.sqrt(1.0 - settings.noise_phi**2)
        x, _ = lfilter([b], [1.0, -settings.noise_phi], e, zi=[settings.noise_phi * x_prev])
        sel = year_of == year
        k = ((times[sel] - y0) // STEP_S).astype(int)
        out[sel] = np.maximum(0.0, 1.0 + x[k])
    return out


@dataclass(frozen=True, slots=True)
class ProfileFrame:
    """Everything the feeder needs at 15-minute points from ``times[0]``."""

    weather: Weather
    load_p: Mapping[str, np.ndarray]  # load -> P [kW]
    load_q: Mapping[str, np.ndarray]  # load -> Q [kvar]

    @property
    def times(self) -> np.ndarray:
        return self.weather.times


class BdewProfiles:
    """Per-load P and Q and PV per kWp for a feeder whose loads' nominal (kW, kvar) are ``loads``."""

    def __init__(self, settings: ProfileSettings, loads: Mapping[str, tuple[float, float]], seed: int | None = None):
        unknown = sorted(set(settings.classes) - set(loads) - set(DEFAULT_CLASSES))
        if unknown:
            raise ProfileError(
                f"profiles.classes.{unknown[0]}: no such load on the feeder (loads: {', '.join(sorted(loads))})"
            )
        site = tmy_site(settings.tmy)
        std = ZoneInfo(settings.timezone).utcoffset(datetime(2001, 1, 15))
        if std is None or std != timedelta(hours=float(site["TZ"])):
            raise ProfileError(
                f"profiles.timezone={settings.timezone!r}: its standard offset must be the TMY file's UTC{site['TZ']:+g} h "
                f"({settings.tmy}: {site['Name'].strip(chr(34))}); e.g. {TMY_FILES[settings.tmy]!r}"
            )
        self.settings = settings
        self.seed = settings.seed if seed is None else seed
        self.loads = dict(loads)
        self.classes = {name: settings.classes.get(name, settings.default_class) for name in self.loads}
        self._days: dict[int, ProfileFrame] = {}
        self.clouds: Any = None  # sim_hw.feeder.profiles.Profile: the seeded transients on local mean solar time
        if settings.clouds == "seeded":
            from sim_hw.feeder.profiles import irradiance_profile

            self.clouds = irradiance_profile("cloudy", seed=settings.cloud_seed, offset_s=solar_offset_s(site))

    def frame(self, start: float, n: int) -> ProfileFrame:
        """``n`` 15-minute points from ``start`` [s UTC, a multiple of 900 s]."""
        if start % STEP_S:
            raise ProfileError(f"start={start!r}: must be on a 15-minute boundary (a multiple of {STEP_S} s)")
        w = weather(self.settings, start, n)
        mid = w.times + STEP_S / 2
        tf = temperature_factor(w.temperature, self.settings)
        shapes = {cls: class_profile(cls, mid, self.settings) for cls in set(self.classes.values())}
        p: dict[str, np.ndarray] = {}
        q: dict[str, np.ndarray] = {}
        for name, (kw, kvar) in self.loads.items():
            p[name] = kw * shapes[self.classes[name]] * tf * ar1_noise(name, w.times, self.settings, self.seed)
            q[name] = p[name] * (kvar / kw if kw else 0.0)
        return ProfileFrame(w, p, q)

    def _day(self, t: float) -> tuple[ProfileFrame, float]:
        day = int(t // 86400)
        fr = self._days.get(day)
        if fr is None:
            if len(self._days) > 3:
                self._days.clear()
            # from the previous day's last point: the day's first 7.5 minutes lie between it and the day's first
            fr = self._days[day] = self.frame(day * 86400.0 - STEP_S, POINTS_PER_DAY + 2)
        return fr, t - day * 86400.0

    def values(self, t: float) -> tuple[dict[str, tuple[float, float]], float]:
        """Each load's (P, Q) and PV per kWp at any instant ``t``, linear between the 15-minute points, each at
        its interval's middle (where it was evaluated)."""
        fr, tod = self._day(t)
        pos = (tod - STEP_S / 2) / STEP_S + 1  # frame index: point 0 is the previous day's last
        k = min(int(pos), POINTS_PER_DAY)
        a = pos - k
        loads = {
            n: (
                float(fr.load_p[n][k] + a * (fr.load_p[n][k + 1] - fr.load_p[n][k])),
                float(fr.load_q[n][k] + a * (fr.load_q[n][k + 1] - fr.load_q[n][k])),
            )
            for n in self.loads
        }
        pv = fr.weather.pv_pu
        transient = self.clouds.transient(t) if self.clouds is not None else 1.0
        return loads, float(pv[k] + a * (pv[k + 1] - pv[k])) * transient

    def apply(self, feeder: Any, t: float) -> float:
        """Set every load of ``feeder`` for instant ``t``; return the PV per kWp (the bench's irradiance_pu)."""
        loads, pv = self.values(t)
        feeder.set_load_scale(1.0)
        for name, (pk, qk) in loads.items():
            feeder.set_load(name, pk, qk)
        return pv

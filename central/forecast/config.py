"""``[forecast]`` of central's file: which points of which site make each feeder's load and PV (docs/forecast.md).

```toml
[forecast]
timezone = "Europe/Berlin"        # IANA name: local time of day and day of week; default for every feeder
holidays = "DE-BY"                # optional: public holidays (country code, -subdivision) count as Sundays
day_ahead_issue = "10:00"         # local time the day-ahead forecast (next local day, 96 intervals) is issued
history_days = 120                # days of readings each fit reads from the store (42..730)
weather_file = "weather.csv"      # optional: timestamp, temperature (degC), irradiance (W/m2) at 15 min
# weather_topic = "gridedge/v1/weather/forecast"   # or, instead of the file: forecasts over MQTT (docs/forecast.md)
mstl = false                      # also try statsforecast's MSTL per series (the `mstl` extra; docs/forecast.md)
[[forecast.feeders]]
name = "f1"                       # the feeder: the forecasts table's key and the MQTT topic's last level
site = "sub-07"
load_p = "head_p_kw"              # points of that site; at least one of load_p, load_q, pv
load_q = "head_q_kvar"
pv = "pv_p_kw"
timezone = "Europe/Berlin"        # optional: this feeder's own
```
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from protocols.configcheck import Checker
from protocols.telemetry.schema import valid_site

FORECAST_KINDS = ("load_p", "load_q", "pv")
_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")  # an MQTT topic level: no '/', '+', '#'
_TIME_RE = re.compile(r"^([01]\d|2[0-3]):(00|15|30|45)$")


@dataclass(frozen=True, slots=True)
class FeederForecast:
    name: str
    site: str
    points: Mapping[str, str]  # kind (load_p | load_q | pv) -> point
    timezone: str
    holidays: str | None = None  # a country code for the holidays package, e.g. US, DE-BY


@dataclass(frozen=True, slots=True)
class ForecastConfig:
    feeders: tuple[FeederForecast, ...] = ()
    day_ahead_issue: str = "10:00"
    history_days: int = 120
    weather_file: Path | None = None
    weather_topic: str | None = None
    mstl: bool = False  # statsforecast's MSTL among each series' candidates

    @property
    def issue_slot(self) -> int:
        h, m = self.day_ahead_issue.split(":")
        return int(h) * 4 + int(m) // 15


def _timezone(c: Checker, raw: Mapping[str, Any], where: str, default: str) -> str:
    tz = c.get(raw, where, "timezone", "string", default)
    if tz is None:
        return default
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        c.fail(f"{where}.timezone", tz, "an IANA time zone name, e.g. UTC or Europe/Berlin")
        return default
    return tz


def _holidays(c: Checker, raw: Mapping[str, Any], where: str, default: str | None) -> str | None:
    code = c.get(raw, where, "holidays", "string", default)
    if code is None or code == default:
        return code
    try:
        import holidays
    except ImportError:
        c.fail(f"{where}.holidays", code, "needs the holidays package: pip install 'gridedge[forecast]'")
        return default
    country, _, subdiv = code.partition("-")
    try:
        holidays.country_holidays(country, subdiv=subdiv or None)
    except NotImplementedError:
        c.fail(f"{where}.holidays", code, "a country code the holidays package knows, e.g. US, DE or DE-BY")
        return default
    return code


def parse_forecast(c: Checker, raw: Mapping[str, Any]) -> ForecastConfig:
    c.unknown(
        raw,
        "forecast",
        {"timezone", "holidays", "day_ahead_issue", "history_days", "weather_file", "weather_topic", "mstl", "feeders"},
    )
    tz = _timezone(c, raw, "forecast", "UTC")
    holidays = _holidays(c, raw, "forecast", None)
    issue = c.get(raw, "forecast", "day_ahead_issue", "string", "10:00")
    if issue is not None and not _TIME_RE.match(issue):
        c.fail("forecast.day_ahead_issue", issue, "a local time HH:MM on a 15-minute boundary, e.g. 10:00")
        issue = "10:00"
    days = c.get(raw, "forecast", "history_days", "integer", 120, lo=42, hi=730)
    weather = c.path(c.get(raw, "forecast", "weather_file", "string", None))
    if weather is not None and not weather.is_file():
        c.fail("forecast.weather_file", str(weather), "an existing CSV file (timestamp, temperature, irradiance)")
    topic = c.get(raw, "forecast", "weather_topic", "string", None)
    if topic is not None and (any(ch in topic for ch in "+#\0") or len(topic) > 256):
        c.fail("forecast.weather_topic", topic, "an MQTT topic name without wildcards (+, #), at most 256 characters")
        topic = None
    if topic is not None and weather is not None:
        c.fail("forecast", "(both weather_file and weather_topic)", "one weather input: weather_file or weather_topic")
    mstl = c.get(raw, "forecast", "mstl", "boolean", False)
    if mstl:
        try:
            import statsforecast  # noqa: F401
        except ImportError:
            c.fail("forecast.mstl", "true", "needs statsforecast: pip install 'gridedge[mstl]' (or mstl = false)")
            mstl = False
    feeders: list[FeederForecast] = []
    seen: set[str] = set()
    for where, t in c.tables(raw, "feeders", "forecast"):
        c.unknown(t, where, {"name", "site", "timezone", "holidays", *FORECAST_KINDS})
        name = c.get(t, where, "name", "string")
        site = c.get(t, where, "site", "string")
        if name is not None and not _NAME_RE.match(name):
            c.fail(f"{where}.name", name, "1-64 letters, digits, '_', '.', '-' (it is an MQTT topic level)")
            name = None
        elif name in seen:
            c.fail(f"{where}.name", name, "must be unique: another [[forecast.feeders]] has this name")
            name = None
        if site is not None and not valid_site(site):
            c.fail(f"{where}.site", site, "a site id: 1-64 letters, digits, '_', '.', '-'")
            site = None
        points = {k: c.get(t, where, k, "string") for k in FORECAST_KINDS if k in t}
        if not points:
            c.fail(where, "(no points)", f"at least one of {', '.join(FORECAST_KINDS)}: a point of the site")
        feeder_tz = _timezone(c, t, where, tz)
        feeder_holidays = _holidays(c, t, where, holidays)
        if name is not None and site is not None and points and all(points.values()):
            seen.add(name)
            feeders.append(FeederForecast(name, site, points, feeder_tz, feeder_holidays))
    return ForecastConfig(tuple(feeders), issue or "10:00", int(days or 120), weather, topic, bool(mstl))

"""``gridedge central forecast --config FILE [--once]``: forecasts from central's store, into it and onto MQTT.

Each cycle (every 15 minutes, on the boundary) reads, per configured feeder and kind, the last
``history_days`` of readings of its point, averages them into 15-minute intervals, fits the models (a fit is a
few seconds per series) and issues the intraday forecast (next 24 intervals); the day-ahead forecast (the next
local day's 96 intervals) is issued in the first cycle at or after the local issue time of each day (and by
every ``--once``). Rows go to the ``forecasts`` table; one message per feeder and cycle goes to
``gridedge/v1/central/forecast/<feeder>`` (QoS 1, retained; docs/forecast.md shows the payload).
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import math
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from central.forecast.config import FeederForecast, ForecastConfig
from central.forecast.history import STEP_S, HistoryError, iso
from central.forecast.models import Fit, Forecaster, ForecastError, Series, Weather
from central.readings import UNIT_FACTORS
from central.store import CentralStoreError, Store
from protocols.eventlog import EventLog

log = EventLog("central.forecast")

TOPIC = "gridedge/v1/central/forecast/{feeder}"
PAYLOAD_SCHEMA = 1
UNITS = {"load_p": "kW", "load_q": "kvar", "pv": "kW"}
REFIT_S = 6 * 3600.0  # between full fits, a cycle reuses a series' model on its new data (docs/forecast.md)
WEATHER_WAIT_S = 5.0  # at start, how long the service waits for the (retained) weather message
MODEL_KIND = {"load_p": "load", "load_q": "load", "pv": "pv"}


@dataclass(frozen=True)
class Issued:
    """One forecast as stored: feeder, kind, horizon, issue time, and per interval start P10/P50/P90."""

    feeder: str
    kind: str
    horizon: str
    issued: int
    model: str
    unit: str
    starts: np.ndarray
    p10: np.ndarray
    p50: np.ndarray
    p90: np.ndarray

    def rows(self) -> list[tuple[Any, ...]]:
        return [
            (self.feeder, self.kind, self.horizon, self.issued, int(s), int(s) + STEP_S,
             _num(a), _num(b), _num(c), self.unit, self.model)
            for s, a, b, c in zip(self.starts, self.p10, self.p50, self.p90, strict=True)
        ]  # fmt: skip


def _num(x: float) -> float | None:
    return None if not math.isfinite(x) else round(float(x), 4)


def intervals_from_readings(
    rows: Sequence[tuple[float, Any, str]], start: int, n: int, unit: str, where: str
) -> np.ndarray:
    """15-minute means of readings (ts, value, unit) over [start, start + n*900); NaN where an interval has none."""
    factors = UNIT_FACTORS[unit]
    sums, counts = np.zeros(n), np.zeros(n)
    for ts, value, got in rows:
        if got not in factors:
            raise ForecastError(f"{where}: a reading in {got!r}; the point must be in one of {', '.join(factors)}")
        if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
            continue
        i = int((ts - start) // STEP_S)
        if 0 <= i < n:
            sums[i] += value * factors[got]
            counts[i] += 1
    with np.errstate(invalid="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def read_weather_file(path: Path, start: int, n: int) -> Weather:
    """The weather file (timestamp, temperature, irradiance at 15 min) on the series' grid; NaN where it is silent.

    Its values stand for the history (what the model trains on) and for both horizons' forecasts.
    """
    cols: dict[str, np.ndarray] = {}
    try:
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            names = [c for c in ("temperature", "irradiance") if c in (reader.fieldnames or [])]
            if "timestamp" not in (reader.fieldnames or []) or not names:
                raise HistoryError(f"{path}: needs a timestamp column and temperature and/or irradiance columns")
            cols = {c: np.full(n, np.nan) for c in names}
            for lineno, row in enumerate(reader, start=2):
                try:
                    ts = datetime.fromisoformat(row["timestamp"]).timestamp()
                    values = [float(row[c]) for c in names]
                except (TypeError, ValueError) as err:
                    raise HistoryError(f"{path} line {lineno}: {err}") from err
                i = int((ts - start) // STEP_S)
                if 0 <= i < n:
                    for c, v in zip(names, values, strict=True):
                        cols[c][i] = v
    except OSError as err:
        raise HistoryError(f"{path}: cannot read: {err.strerror}") from err
    t, g = cols.get("temperature"), cols.get("irradiance")
    return Weather({"history": t}, {"history": g})


class WeatherFeed:
    """The latest weather forecasts from ``[forecast] weather_topic``, kept per 15-minute interval start.

    A message: ``{"start": <unix s UTC, on a 15-minute boundary>, "step_s": 900, "temperature": [degC, ...],
    "irradiance": [W/m2, ...]}`` (either list may be absent; null for a missing value). A later message replaces
    the values of the intervals it covers. Only the last ``keep_s`` seconds and the future are kept.
    """

    def __init__(self, keep_s: float) -> None:
        self.keep_s = keep_s
        self.values: dict[str, dict[int, float]] = {"temperature": {}, "irradiance": {}}
        self.received = 0  # messages taken
        self.heard = 0  # messages seen, taken or not

    def take(self, payload: bytes, now: float) -> None:
        self.heard += 1
        msg = json.loads(payload)
        if not isinstance(msg, dict) or not isinstance(msg.get("start"), int) or msg.get("step_s") != STEP_S:
            raise ValueError("a weather message needs start (unix s, integer) and step_s = 900")
        if msg["start"] % STEP_S:
            raise ValueError(f"start = {msg['start']}: not on a 15-minute boundary")
        for name, store in self.values.items():
            values = msg.get(name)
            if values is None:
                continue
            if not isinstance(values, list):
                raise ValueError(f"{name}: a list of numbers (or null) per 15-minute interval")
            for k, v in enumerate(values):
                if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
                    store[msg["start"] + k * STEP_S] = float(v)
        for store in self.values.values():
            for ts in [ts for ts in store if ts < now - self.keep_s]:
                del store[ts]
        self.received += 1

    def weather(self, start: int, n: int) -> Weather | None:
        if not self.received:
            return None
        arrays = {}
        for name, store in self.values.items():
            a = np.full(n, np.nan)
            for ts, v in store.items():
                i = (ts - start) // STEP_S
                if 0 <= i < n:
                    a[i] = v
            arrays[name] = a if np.isfinite(a).any() else None
        return Weather({"history": arrays["temperature"]}, {"history": arrays["irradiance"]})


def issue_due(store: Store, feeder: FeederForecast, kind: str, now: float, issue_slot: int) -> bool:
    """True when today's (local) day-ahead forecast is due: past the issue time and not yet issued today."""
    zone = ZoneInfo(feeder.timezone)
    local = datetime.fromtimestamp(now, zone)
    if local.hour * 4 + local.minute // 15 < issue_slot:
        return False
    latest = store.forecasts(feeder.name, kind, "day-ahead")
    if not latest:
        return True
    return datetime.fromtimestamp(latest[0]["issued"], zone).date() < local.date()


def forecast_feeder(
    store: Store,
    feeder: FeederForecast,
    config: ForecastConfig,
    now: float,
    *,
    day_ahead: bool | None = None,
    feed: WeatherFeed | None = None,
    fits: dict[tuple[str, str], tuple[float, Fit]] | None = None,
) -> list[Issued]:
    """Fit and issue every kind of one feeder at ``now``; ``day_ahead`` None: when due, True: always.

    ``fits`` (the service's memory, per feeder and kind: when fitted and the fit) lets a cycle reuse a fit younger
    than REFIT_S; without it every call fits in full.
    """
    end = int(now // STEP_S) * STEP_S  # the last complete interval ends here
    n = config.history_days * 96
    start = end - n * STEP_S
    weather = None
    if config.weather_file:
        weather = read_weather_file(config.weather_file, start, n + 2 * 96 + 8)
    elif feed is not None:
        weather = feed.weather(start, n + 2 * 96 + 8)
    out: list[Issued] = []
    for kind, point in feeder.points.items():
        unit = UNITS[kind]
        where = f"feeder {feeder.name} {kind} ({feeder.site}/{point})"
        try:
            rows = store.point_readings(feeder.site, point, start, end)
            values = intervals_from_readings(rows, start, n, unit, where)
            known = np.flatnonzero(np.isfinite(values))
            if not len(known):
                raise ForecastError(f"{where}: no readings in the last {config.history_days} days")
            values = values[known[0] :]  # the series starts with its first reading
            offset = known[0]
            w = None
            if weather is not None:
                w = Weather(
                    {k: None if a is None else a[offset:] for k, a in weather.temperature.items()},
                    {k: None if a is None else a[offset:] for k, a in weather.irradiance.items()},
                )
            series = Series(start + offset * STEP_S, values, MODEL_KIND[kind], tz=feeder.timezone,
                            holidays=feeder.holidays, weather=w)  # fmt: skip
            fc = Forecaster(series, issue_slot=config.issue_slot, use_mstl=config.mstl)
            cached = fits.get((feeder.name, kind)) if fits is not None else None
            fit = fc.reuse(cached[1], series.n) if cached and now - cached[0] < REFIT_S else None
            if fit is None:
                fit = fc.fit(series.n)
                if fits is not None:
                    fits[(feeder.name, kind)] = (now, fit)
            horizons = ["intraday"]
            if day_ahead or (day_ahead is None and issue_due(store, feeder, kind, now, config.issue_slot)):
                horizons.append("day-ahead")
            for h in horizons:
                model = fit.choice[h]
                f = fc.forecast(fit, model, h, np.array([series.n]))
                starts = series.start + f.targets[0] * STEP_S
                out.append(Issued(feeder.name, kind, h, int(now), model, unit, starts, f.p10[0], f.p50[0], f.p90[0]))
                log.info("forecast_issued", feeder=feeder.name, kind=kind, horizon=h, model=model,
                         first=iso(int(starts[0])), intervals=len(starts))  # fmt: skip
        except (ForecastError, HistoryError, CentralStoreError) as err:
            log.warning("forecast_skipped", feeder=feeder.name, kind=kind, reason=str(err))
    return out


def payload(feeder: FeederForecast, issued: float, forecasts: Sequence[Issued]) -> bytes:
    """The MQTT message of one feeder's cycle (docs/forecast.md, "MQTT")."""
    return json.dumps(
        {
            "schema": PAYLOAD_SCHEMA,
            "feeder": feeder.name,
            "site": feeder.site,
            "issued": int(issued),
            "step_s": STEP_S,
            "forecasts": [
                {
                    "kind": f.kind,
                    "horizon": f.horizon,
                    "unit": f.unit,
                    "model": f.model,
                    "start": int(f.starts[0]),
                    "p10": [_num(x) for x in f.p10],
                    "p50": [_num(x) for x in f.p50],
                    "p90": [_num(x) for x in f.p90],
                }
                for f in forecasts
            ],
        },
        separators=(",", ":"),
    ).encode()


Publish = Callable[[str, bytes], Awaitable[None]]


async def cycle(
    store: Store,
    config: ForecastConfig,
    now: float,
    publish: Publish | None,
    *,
    once: bool,
    feed: WeatherFeed | None = None,
    fits: dict[tuple[str, str], tuple[float, Fit]] | None = None,
) -> int:
    """One cycle over every feeder: forecasts stored, then published. Returns how many forecasts were issued."""
    issued = 0
    for feeder in config.feeders:
        found = await asyncio.to_thread(
            forecast_feeder, store, feeder, config, now, day_ahead=True if once else None, feed=feed, fits=fits
        )
        if not found:
            continue
        await asyncio.to_thread(store.write_forecasts, [r for f in found for r in f.rows()])
        issued += len(found)
        if publish is not None:
            topic = TOPIC.format(feeder=feeder.name)
            try:
                await publish(topic, payload(feeder, now, found))
            except Exception as err:  # ConnectionLost and the like: stored already; the next cycle publishes again
                log.warning("forecast_publish_failed", feeder=feeder.name, topic=topic, error=repr(err))
    return issued


async def run(central: Any, store: Store, *, once: bool, clock: Callable[[], float] = time.time) -> int:
    """Cycle every 15 minutes (or once), publishing through an MQTT session of its own."""
    from protocols.mqtt.session import MqttSession

    config: ForecastConfig = central.forecast
    session = MqttSession(
        central.broker.session_config(client_id=f"{central.broker.client_id}-forecast-{uuid.uuid4().hex[:8]}",
                                      backoff_max_s=min(central.backoff_max_s, 1.0))
    )  # fmt: skip
    feed: WeatherFeed | None = None
    if config.weather_topic:
        feed = WeatherFeed(config.history_days * 86400.0)

        def on_weather(topic: str, body: bytes) -> None:
            try:
                feed.take(body, clock())
            except ValueError as err:  # json.JSONDecodeError is one
                log.warning("forecast_weather_invalid", topic=topic, reason=str(err))

        session.subscribe(config.weather_topic, 1, on_weather)
    task = asyncio.create_task(session.run(), name="central-forecast-mqtt")
    if feed is not None:  # a retained forecast arrives just after the subscription: give it a moment
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(session.connected.wait(), WEATHER_WAIT_S)
            deadline = time.monotonic() + WEATHER_WAIT_S
            while not feed.heard and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        if not feed.received:
            log.warning("forecast_weather_missing", topic=config.weather_topic, waited_s=WEATHER_WAIT_S)

    async def publish(topic: str, body: bytes) -> None:
        await asyncio.wait_for(session.connected.wait(), 10)
        await session.publish(topic, body, qos=1, retain=True)

    total = 0
    fits: dict[tuple[str, str], tuple[float, Fit]] = {}
    try:
        while True:
            total += await cycle(store, config, clock(), publish, once=once, feed=feed, fits=fits)
            if once:
                return total
            now = clock()
            await asyncio.sleep(STEP_S - now % STEP_S + 1)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

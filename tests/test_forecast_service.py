"""`gridedge central forecast`: the [forecast] section, the forecasts table on both stores, the backtest command,
and one service cycle from readings in central's store to the table and a retained MQTT message."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from helpers import forecastdata
from helpers.stores import target_fixture  # noqa: F401 (the target fixture)

from central.cli import main as central_main
from central.config import CentralConfigError, parse_central_config
from central.store import CentralStore, open_store
from protocols.telemetry.schema import Batch

FORECAST_COLUMNS = [
    ("feeder", "TEXT"),
    ("kind", "TEXT"),
    ("horizon", "TEXT"),
    ("issued", "INTEGER"),
    ("start", "INTEGER"),
    ("end_ts", "INTEGER"),
    ("p10", "REAL"),
    ("p50", "REAL"),
    ("p90", "REAL"),
    ("unit", "TEXT"),
    ("model", "TEXT"),
]  # fmt: skip  (docs/forecast.md "The forecasts table": dispatch and the report read these columns)


def _raw(forecast: dict) -> dict:
    return {"broker": {"url": "mqtt://127.0.0.1:1883"}, "store": {"db": "c.db"}, "forecast": forecast}


def test_forecast_section_errors_name_key_and_allowed_values(tmp_path: Path) -> None:
    raw = _raw({
        "timezone": "Mars/Olympus",
        "day_ahead_issue": "10:07",
        "history_days": 5,
        "colour": "red",
        "holidays": "XX",
        "feeders": [{"name": "f/1", "site": "s1", "load_p": "p"}, {"name": "f2", "site": "s1"}],
    })  # fmt: skip
    with pytest.raises(CentralConfigError) as err:
        parse_central_config(raw, tmp_path / "central.toml")
    text = str(err.value)
    assert "forecast.timezone = 'Mars/Olympus': an IANA time zone name" in text
    assert "forecast.day_ahead_issue = '10:07': a local time HH:MM on a 15-minute boundary" in text
    assert "forecast.history_days = 5: must be in 42..730" in text
    assert "forecast.colour" in text
    assert "forecast.holidays = 'XX': a country code the holidays package knows" in text
    assert "forecast.feeders[0].name = 'f/1': 1-64 letters" in text
    assert "forecast.feeders[1] = '(no points)': at least one of load_p, load_q, pv" in text


def test_forecast_section_is_read_with_defaults(tmp_path: Path) -> None:
    feeders = [{"name": "f1", "site": "s1", "load_p": "p", "pv": "pv"}, {"name": "f2", "site": "s1", "pv": "pv",
               "holidays": "DE-BY"}]  # fmt: skip
    raw = _raw({"timezone": "Europe/Berlin", "holidays": "DE", "feeders": feeders})
    cfg = parse_central_config(raw, tmp_path / "central.toml").forecast
    assert cfg.day_ahead_issue == "10:00" and cfg.issue_slot == 40 and cfg.history_days == 120
    f, g = cfg.feeders
    assert (f.name, f.site, dict(f.points), f.timezone) == ("f1", "s1", {"load_p": "p", "pv": "pv"}, "Europe/Berlin")
    assert (f.holidays, g.holidays) == ("DE", "DE-BY")


def test_sqlite_forecasts_table_has_exactly_the_agreed_columns(tmp_path: Path) -> None:
    CentralStore(tmp_path / "c.db").close()
    import sqlite3

    with sqlite3.connect(tmp_path / "c.db") as db:
        info = db.execute("PRAGMA table_info(forecasts)").fetchall()
    assert [(r[1], r[2]) for r in info] == FORECAST_COLUMNS
    assert [r[1] for r in sorted(info, key=lambda r: r[5]) if r[5]] == ["feeder", "kind", "horizon", "issued", "start"]


def test_forecasts_written_and_read_back_on_both_stores(target: Path | str) -> None:
    store = open_store(target)
    try:
        rows = [("f1", "load_p", "intraday", 1000, 900 * k, 900 * k + 900, 1.0, 2.0, 3.0, "kW", "gbm") for k in (2, 1)]
        store.write_forecasts(rows)
        store.write_forecasts(
            [("f1", "load_p", "intraday", 2000, 900, 1800, None, 5.0, None, "kW", "seasonal-naive-daily")]
        )
        store.write_forecasts([("f1", "load_p", "intraday", 1000, 900, 1800, 1.5, 2.5, 3.5, "kW", "gbm")])  # replaces
        latest = store.forecasts("f1", "load_p", "intraday")
        assert [(r["issued"], r["start"], r["p10"], r["p50"]) for r in latest] == [(2000, 900, None, 5.0)]
        first = store.forecasts("f1", "load_p", "intraday", issued=1000)
        assert [(r["start"], r["end_ts"], r["p50"], r["p90"], r["unit"]) for r in first] == [
            (900, 1800, 2.5, 3.5, "kW"), (1800, 2700, 2.0, 3.0, "kW")
        ]  # fmt: skip
        assert store.forecasts("f2", "load_p", "intraday") == []
    finally:
        store.close()
    if isinstance(target, str):  # PostgreSQL: the columns and the migration that made them
        import psycopg

        with psycopg.connect(target) as conn:
            cols = conn.execute(
                "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'forecasts' "
                "ORDER BY ordinal_position"
            ).fetchall()
            versions = [r[0] for r in conn.execute("SELECT version FROM schema_version")]
        assert [c for c, _ in cols] == [c for c, _ in FORECAST_COLUMNS] and 3 in versions


# ---- gridedge central forecast backtest --------------------------------------------------------------------------


def test_backtest_command_prints_json_and_draws_the_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = forecastdata.write_csv(tmp_path / "h.csv", forecastdata.make(56, seed=2))
    png = tmp_path / "bt.png"
    rc = central_main(["forecast", "backtest", "--history", str(path), "--column", "load_p_kw", "--horizon",
                       "day-ahead", "--json", "--plot", str(png)])  # fmt: skip
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert report["kind"] == "load" and report["horizon"] == "day-ahead" and report["origins"] == 12
    assert set(report["models"]) >= {"ours", "seasonal-naive-daily", "seasonal-naive-weekly"}
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_backtest_mstl_without_statsforecast_exits_2_saying_how_to_install_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "statsforecast.models", None)
    path = forecastdata.write_csv(tmp_path / "h.csv", forecastdata.make(56, seed=2), columns=("load_p_kw",))
    assert central_main(["forecast", "backtest", "--history", str(path), "--horizon", "intraday", "--mstl"]) == 2
    assert "the mstl model needs statsforecast: pip install 'gridedge[mstl]'" in capsys.readouterr().err


def test_backtest_command_refuses_a_history_with_a_gap(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = ["timestamp,load_kw", "2025-03-01T00:00:00Z,1", "2025-03-01T00:15:00Z,1", "2025-03-01T01:00:00Z,1"]
    (tmp_path / "h.csv").write_text("\n".join(lines) + "\n")
    rc = central_main(["forecast", "backtest", "--history", str(tmp_path / "h.csv"), "--horizon", "intraday"])
    assert rc == 2
    assert "missing 2025-03-01T00:30:00Z..2025-03-01T00:45:00Z (2 intervals)" in capsys.readouterr().err


def test_backtest_command_refuses_a_short_history(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = forecastdata.write_csv(tmp_path / "h.csv", forecastdata.make(20, seed=2), columns=("load_p_kw",))
    assert central_main(["forecast", "backtest", "--history", str(path), "--horizon", "intraday"]) == 2
    assert "history too short" in capsys.readouterr().err


def test_forecast_without_config_or_subcommand_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert central_main(["forecast"]) == 2
    assert "--config FILE is required" in capsys.readouterr().err


# ---- one service cycle, store to store and broker ----------------------------------------------------------------


def _seed_readings(db: Path, end: int, days: int) -> forecastdata.Synthetic:
    data = forecastdata.make(days, seed=5, start=end - days * 86400)
    store = CentralStore(db)
    try:
        items = [
            {"point": p, "ts": float(ts) + 60.0, "value": float(v), "unit": u, "quality": "good"}
            for p, u, values in (("head_p_kw", "kW", data.load_p_kw), ("pv_w", "W", data.pv_kw * 1000))
            for ts, v in zip(data.timestamps, values, strict=True)
        ]
        batches = [Batch("sub-1", "telemetry", i + 1, f"m{i}", 1.0, tuple(items[k : k + 2000]))
                   for i, k in enumerate(range(0, len(items), 2000))]  # fmt: skip
        assert all(store.store_batches(batches, time.time()))
    finally:
        store.close()
    return data


def test_once_stores_and_publishes_every_kind_and_horizon(tmp_path: Path, broker) -> None:
    end = int(time.time() // 900) * 900
    data = _seed_readings(tmp_path / "central.db", end, 44)
    cfg = tmp_path / "central.toml"
    cfg.write_text(f"""
[broker]
url = "{broker.url}"
[store]
db = "central.db"
[forecast]
history_days = 42
[[forecast.feeders]]
name = "f1"
site = "sub-1"
load_p = "head_p_kw"
pv = "pv_w"
""")
    assert central_main(["forecast", "--config", str(cfg), "--once"]) == 0

    store = CentralStore(tmp_path / "central.db")
    try:
        tables = {(k, h): store.forecasts("f1", k, h) for k in ("load_p", "pv") for h in ("intraday", "day-ahead")}
    finally:
        store.close()
    for (kind, horizon), rows in tables.items():
        assert len(rows) == (24 if horizon == "intraday" else 96), (kind, horizon)
        assert all(r["unit"] == "kW" and r["end_ts"] - r["start"] == 900 for r in rows)
        assert all(r["p10"] <= r["p50"] <= r["p90"] for r in rows)
    assert tables[("load_p", "intraday")][0]["start"] == end
    assert tables[("load_p", "day-ahead")][0]["start"] % 86400 == 0  # the next UTC (the default zone) midnight
    # the PV point is in W: the forecast is in kW, the size of the history's kW values
    pv_peak = max(r["p50"] for r in tables[("pv", "day-ahead")])
    assert 0.2 * data.pv_kw.max() < pv_peak < 1.5 * data.pv_kw.max()
    load_mean = np.mean([r["p50"] for r in tables[("load_p", "day-ahead")]])
    assert 0.5 * data.load_p_kw.mean() < load_mean < 1.5 * data.load_p_kw.mean()

    got: list[bytes] = []
    arrived = threading.Event()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="forecast-reader")
    client.on_message = lambda _c, _u, msg: (got.append(msg.payload), arrived.set())
    client.on_connect = lambda c, *_: c.subscribe("gridedge/v1/central/forecast/+", qos=1)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    try:
        assert arrived.wait(10), "no retained forecast message"
    finally:
        client.loop_stop()
        client.disconnect()
    msg = json.loads(got[0])
    assert msg["schema"] == 1 and msg["feeder"] == "f1" and msg["site"] == "sub-1" and msg["step_s"] == 900
    by_key = {(f["kind"], f["horizon"]): f for f in msg["forecasts"]}
    assert set(by_key) == set(tables)
    for key, rows in tables.items():
        assert by_key[key]["start"] == rows[0]["start"]
        assert by_key[key]["p50"] == [r["p50"] for r in rows]
        assert by_key[key]["model"] == rows[0]["model"]


def test_weather_topic_feeds_the_model_and_a_bad_message_is_logged(tmp_path: Path, broker, caplog) -> None:
    end = int(time.time() // 900) * 900
    data = _seed_readings(tmp_path / "central.db", end, 44)
    future = 2 * 96  # the forecast part: the last two days' weather again
    weather = {
        "start": int(data.start),
        "step_s": 900,
        "temperature": [round(float(v), 2) for v in np.concatenate([data.temperature, data.temperature[-future:]])],
        "irradiance": [round(float(v), 1) for v in np.concatenate([data.irradiance, data.irradiance[-future:]])],
    }
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="weather-source")
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    try:
        client.publish("test/weather", json.dumps(weather), qos=1, retain=True).wait_for_publish(5)
        client.publish("test/weather-bad", b'{"start": 5, "step_s": 900}', qos=1, retain=True).wait_for_publish(5)
    finally:
        client.loop_stop()
        client.disconnect()
    cfg = tmp_path / "central.toml"
    common = f'[broker]\nurl = "{broker.url}"\n[store]\ndb = "central.db"\n'
    feeder = '[[forecast.feeders]]\nname = "f1"\nsite = "sub-1"\nload_p = "head_p_kw"\n'
    cfg.write_text(common + '[forecast]\nhistory_days = 42\nweather_topic = "test/weather"\n' + feeder)
    caplog.set_level("INFO", logger="gridedge.central.forecast")
    assert central_main(["forecast", "--config", str(cfg), "--once"]) == 0
    assert "forecast_issued" in caplog.text and "forecast_weather" not in caplog.text

    caplog.clear()
    cfg.write_text(common + '[forecast]\nhistory_days = 42\nweather_topic = "test/weather-bad"\n' + feeder)
    assert central_main(["forecast", "--config", str(cfg), "--once"]) == 0  # forecasts without weather
    assert "event=forecast_weather_invalid topic=test/weather-bad" in caplog.text
    assert "start = 5: not on a 15-minute boundary" in caplog.text
    assert "event=forecast_weather_missing" in caplog.text


def test_day_ahead_is_due_once_per_local_day_from_the_issue_time(tmp_path: Path) -> None:
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from central.forecast.config import FeederForecast
    from central.forecast.service import issue_due

    berlin = ZoneInfo("Europe/Berlin")
    feeder = FeederForecast("f1", "s1", {"load_p": "p"}, "Europe/Berlin")
    at = lambda d, h, m: datetime(2026, 7, d, h, m, tzinfo=berlin).timestamp()  # noqa: E731
    store = CentralStore(tmp_path / "c.db")
    try:
        slot = 40  # 10:00 local
        assert not issue_due(store, feeder, "load_p", at(1, 9, 45), slot)  # before the issue time
        assert issue_due(store, feeder, "load_p", at(1, 10, 0), slot)  # at it, nothing issued yet
        store.write_forecasts([("f1", "load_p", "day-ahead", int(at(1, 10, 0)), 0, 900, 1.0, 2.0, 3.0, "kW", "gbm")])
        assert not issue_due(store, feeder, "load_p", at(1, 23, 45), slot)  # issued today (local)
        assert issue_due(store, feeder, "pv", at(1, 10, 15), slot)  # another kind has its own
        assert not issue_due(store, feeder, "load_p", at(2, 9, 45), slot)
        assert issue_due(store, feeder, "load_p", at(2, 10, 0), slot)  # the next local day
    finally:
        store.close()


def test_a_cycle_reuses_a_fit_younger_than_refit_s_and_refits_after(tmp_path: Path) -> None:
    from central.forecast.config import FeederForecast, ForecastConfig
    from central.forecast.service import REFIT_S, forecast_feeder

    end = int(time.time() // 900) * 900
    _seed_readings(tmp_path / "central.db", end, 44)
    feeder = FeederForecast("f1", "sub-1", {"load_p": "head_p_kw"}, "UTC")
    cfg = ForecastConfig((feeder,), history_days=42)
    store = CentralStore(tmp_path / "central.db")
    fits: dict = {}
    try:
        now = end + 60.0
        (first,) = forecast_feeder(store, feeder, cfg, now, day_ahead=False, fits=fits)
        fitted_at, fit = fits[("f1", "load_p")]
        assert fitted_at == now
        (again,) = forecast_feeder(store, feeder, cfg, now, day_ahead=False, fits=fits)
        assert fits[("f1", "load_p")] == (now, fit)  # reused: the same fit object, not a new one
        assert np.allclose(again.p50, first.p50) and np.allclose(again.p90, first.p90)
        (later,) = forecast_feeder(store, feeder, cfg, now + 900, day_ahead=False, fits=fits)
        assert fits[("f1", "load_p")][1] is fit and later.starts[0] == end + 900
        forecast_feeder(store, feeder, cfg, now + REFIT_S + 1, day_ahead=False, fits=fits)
        assert fits[("f1", "load_p")][0] == now + REFIT_S + 1 and fits[("f1", "load_p")][1] is not fit
    finally:
        store.close()


def test_a_cycle_with_mstl_on_fits_it_with_the_others_and_reuses_its_days(tmp_path: Path, mocker) -> None:
    from central.forecast.config import FeederForecast, ForecastConfig
    from central.forecast.models import Forecaster
    from central.forecast.service import forecast_feeder

    end = int(time.time() // 900) * 900
    _seed_readings(tmp_path / "central.db", end, 44)
    feeder = FeederForecast("f1", "sub-1", {"load_p": "head_p_kw"}, "UTC")
    cfg = ForecastConfig((feeder,), history_days=42, mstl=True)
    store = CentralStore(tmp_path / "central.db")
    spy = mocker.spy(Forecaster, "mstl_block")
    fits: dict = {}
    try:
        (first,) = forecast_feeder(store, feeder, cfg, end + 60.0, day_ahead=False, fits=fits)
        fit = fits[("f1", "load_p")][1]
        full = spy.call_count
        assert "mstl" in fit.models and np.isfinite(fit.calib_mae["intraday"]["mstl"]) and full >= 15
        assert np.isfinite(first.p50).all()
        forecast_feeder(store, feeder, cfg, end + 960.0, day_ahead=False, fits=fits)
        assert fits[("f1", "load_p")][1] is fit and spy.call_count - full <= 2  # the days fitted are kept
    finally:
        store.close()

"""The closed-loop dispatch day's judging (benchmarks/dispatch_judge.py, benchmarks/dispatch_day.py's readers) on
hand-made inputs, and central dispatch's scaled clock (central/dispatch/clock.py): no processes."""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from dispatch_judge import caused, energy_cost, judge_following, outside_range_a  # noqa: E402

from central.dispatch.clock import ClockError, DispatchClock, make_clock  # noqa: E402
from central.dispatch.inputs import InputError  # noqa: E402

T0 = 1_775_001_600  # 2026-04-01T00:00:00Z


def test_an_interval_within_5_percent_of_its_schedule_follows_and_one_past_it_does_not() -> None:
    sched = {T0: 400.0, T0 + 900: 400.0, T0 + 1800: -300.0}
    metered = {T0: 419.9, T0 + 900: 421.0, T0 + 1800: -285.5}
    f = judge_following(metered, sched)
    # allowed: 5 % of 400 = 20 kWh, of 300 = 15; the floor, 1 % of the largest |schedule| (400), is below both
    assert f.floor_kwh == pytest.approx(4.0) and f.floored == 0
    assert [c.within for c in f.checks] == [True, False, True]  # 19.9 in; 21.0 out; -285.5 is 14.5 off: in
    assert f.share_pct == pytest.approx(200 / 3)
    assert f.checks[1].error_pct == pytest.approx(5.25)
    assert f.share_of({T0 + 900, T0 + 1800}) == (1, 2)


def test_a_near_zero_schedule_is_judged_by_the_floor_and_a_missing_meter_value_is_not_judged() -> None:
    sched = {T0: 1000.0, T0 + 900: 2.0, T0 + 1800: 0.0, T0 + 2700: 500.0, T0 + 3600: 150.0}
    metered = {T0: 1000.0, T0 + 900: 11.9, T0 + 1800: -10.5, T0 + 3600: 158.0}
    f = judge_following(metered, sched)
    assert f.floor_kwh == pytest.approx(10.0)  # 1 % of 1000 kWh
    # 2 kWh scheduled, 11.9 metered: 9.9 off, inside the floor; 0 scheduled, -10.5 metered: outside it; 150
    # scheduled: 5 % is 7.5 kWh, below the floor: 8 off is inside it
    assert [(c.start, c.within) for c in f.checks] == [(T0, True), (T0 + 900, True), (T0 + 1800, False),
                                                       (T0 + 3600, True)]  # fmt: skip
    assert f.checks[2].error_pct is None  # no percentage of a zero schedule
    assert f.missing == (T0 + 2700,) and f.judged == 4 and f.floored == 3


def test_following_refuses_a_tolerance_out_of_range() -> None:
    with pytest.raises(ValueError, match="tol_pct = 0"):
        judge_following({}, {}, tol_pct=0)
    with pytest.raises(ValueError, match="floor_share = 1"):
        judge_following({}, {}, floor_share=1)


def test_the_cost_prices_each_interval_at_the_price_in_force_at_its_start(tmp_path: Path) -> None:
    prices = tmp_path / "prices.csv"
    prices.write_text(f"start,price\n{T0},0.10\n{T0 + 1800},-0.02\n")
    assert energy_cost({T0 + 1799: 1.0}, prices) == 0.10 and energy_cost({T0 + 1800: 1.0}, prices) == -0.02
    # 100 kWh bought at 0.10, 50 kWh exported at 0.10 (earns 5), 200 kWh bought at -0.02 (earns 4)
    assert energy_cost({T0: 100.0, T0 + 900: -50.0, T0 + 1800: 200.0}, prices) == pytest.approx(10 - 5 - 4)
    with pytest.raises(InputError, match="the prices start after the first interval"):  # no price in force yet
        energy_cost({T0 - 1: 1.0}, prices)


def _step(ts: float, v: dict[str, list[float | None]]) -> dict[str, object]:
    return {"record": "step", "ts": ts, "v": v}


def test_range_a_excursions_by_bus_phase_and_minute_and_which_a_schedule_caused() -> None:
    run = [
        _step(T0 + 0, {"675": [1.0, 1.06, 1.0], "rg60": [1.07, 1.07, 1.07]}),
        _step(T0 + 30, {"675": [1.0, 1.062, 1.0], "680": [0.94, None, 1.0]}),
        _step(T0 + 60, {"675": [1.0, 1.0, 1.0], "680": [0.949, 1.0, 1.0]}),
    ]
    found = outside_range_a(run, {"675", "680"})  # rg60 (the regulator's output) is not judged
    m0, m1 = T0 // 60, T0 // 60 + 1
    assert found == {("675", "b", m0): 1.062, ("680", "a", m0): 0.94, ("680", "a", m1): 0.949}
    base = outside_range_a([_step(T0 + 10, {"675": [1.0, 1.055, 1.0], "680": [1.06, 1.0, 1.0]})], {"675", "680"})
    # 675.b was high in the same minute without the schedule too; 680.a was high there, not low: caused
    assert caused(found, base) == {("680", "a", m0): 0.94, ("680", "a", m1): 0.949}


def test_the_harness_reads_net_energy_from_central_intervals_and_the_latest_schedule(tmp_path: Path) -> None:
    from dispatch_day import metered_net, scheduled_net

    db = tmp_path / "central.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE intervals (site, meter, register, start, version, channel, value)")
    con.executemany("INSERT INTO intervals VALUES ('s', 'sub-meter', ?, ?, ?, ?, ?)", [
        ("d", T0, 1, "kwh_delivered", 300.0), ("d", T0, 2, "kwh_delivered", 310.0), ("r", T0, 1, "kwh_received", 10.0),
        ("d", T0 + 900, 1, "kwh_delivered", 5.0),  # no received value: not a net interval
    ])  # fmt: skip
    con.execute("CREATE TABLE schedules (site, meter, channel, start, version, energy)")
    con.executemany("INSERT INTO schedules VALUES ('s', 'sub-meter', ?, ?, ?, ?)", [
        ("kwh_delivered", T0, 1, 250.0), ("kwh_delivered", T0, 2, 290.0), ("kwh_received", T0, 2, 0.0),
        ("kwh_received", T0 + 900, 1, 40.0),
    ])  # fmt: skip
    con.commit()
    con.close()
    assert metered_net(db) == {T0: 300.0}  # the latest version, 310 delivered - 10 received
    assert scheduled_net(db) == {T0: 290.0, T0 + 900: -40.0}


def test_the_forecast_is_centrals_day_ahead_issued_from_the_past_only(tmp_path: Path) -> None:
    """The harness's forecast CSV comes from central's models fitted on the history before each issue: it covers the
    run's two days, and changing the history after the first issue leaves that issue's day as it was."""
    from dispatch_day import model_forecast
    from helpers import forecastdata

    first = 1_775_001_600  # 2026-04-01T00:00:00Z
    made = forecastdata.make(64, seed=3, start=first - 60 * 86400)
    data = SimpleNamespace(timestamps=made.timestamps, load_p_kw=made.load_p_kw.copy(), load_q_kvar=made.load_q_kvar,
                           pv_p_kw=made.pv_kw, temperature=made.temperature, irradiance=made.irradiance)  # fmt: skip
    hist = forecastdata.write_csv(tmp_path / "h.csv", data, ("load_p_kw", "load_q_kvar", "pv_p_kw"))  # type: ignore[arg-type]
    out = tmp_path / "f.csv"
    chosen = model_forecast(hist, out, first)
    assert set(chosen) == {"load_p_kw", "load_q_kvar", "pv_p_kw"}
    rows = out.read_text().splitlines()
    assert rows[0] == "start,load_kw,load_kvar,pv_kw"
    starts = [r.split(",")[0] for r in rows[1:]]
    assert (
        starts[0] <= "2026-04-01T00:00:00Z" and starts[-1] >= "2026-04-02T23:45:00Z" and len(set(starts)) == len(starts)
    )
    values = [[float(x) for x in r.split(",")[1:]] for r in rows[1:]]
    assert all(v >= 0 for row in values for v in row)
    # the truth of 2026-04-01 (and after) changed: the forecast issued the day before for 04-01's local day is not
    i = (first - (first - 60 * 86400)) // 900
    data.load_p_kw[i:] *= 3.0
    forecastdata.write_csv(tmp_path / "h2.csv", data, ("load_p_kw", "load_q_kvar", "pv_p_kw"))  # type: ignore[arg-type]
    model_forecast(tmp_path / "h2.csv", tmp_path / "f2.csv", first)
    again = {r.split(",")[0]: r for r in (tmp_path / "f2.csv").read_text().splitlines()[1:]}
    day = [r for r in rows[1:] if "2026-04-01T04:00:00Z" <= r.split(",")[0] < "2026-04-02T04:00:00Z"]
    assert len(day) == 96 and all(again[r.split(",")[0]] == r for r in day)


def test_the_dispatch_clock_runs_at_the_agents_speed_from_its_anchor() -> None:
    wall = [1000.0]
    c = DispatchClock(60.0, float(T0), 1000.0, wall=lambda: wall[0])
    assert c.scaled and c.now() == T0
    wall[0] = 1015.0
    assert c.now() == T0 + 900  # 15 wall seconds are a 15-minute interval at speed 60
    assert c.wall_seconds(900) == 15.0
    assert not DispatchClock().scaled and make_clock(None, None, None).speed == 1.0


def test_a_bad_clock_option_is_named() -> None:
    with pytest.raises(ClockError, match="--clock-speed = 0"):
        DispatchClock(0.0, float(T0), 1000.0)
    with pytest.raises(ClockError, match="need --clock-start"):
        make_clock(60.0, None, None)
    with pytest.raises(ClockError, match="need --clock-start"):
        DispatchClock(1.0, None, 1000.0)


def test_dispatch_names_a_bad_clock_option_and_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from central.cli import main

    conf = tmp_path / "central.toml"
    conf.write_text(f"""[broker]
url = "mqtt://127.0.0.1:1"
[store]
db = "central.db"
[dispatch]
network = "{ROOT / "config" / "ieee13" / "IEEE13.dss"}"
feeder = "ieee13"
price = 0.1
[[dispatch.sites]]
site = "s1"
inverters = [{{device = "pv675", kva = 2500}}]
""")
    for extra, said in ((["--clock-speed", "60"], "need --clock-start"),
                        (["--clock-start", "yesterday"], "--clock-start"),
                        (["--clock-start", str(T0), "--clock-speed", "-1"], "--clock-speed = -1")):  # fmt: skip
        assert main(["dispatch", "--config", str(conf), *extra]) == 2
        assert said in capsys.readouterr().err

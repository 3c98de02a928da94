"""Dispatch's nowcast (central/dispatch/nowcast.py, docs/dispatch.md "Nowcast"): the head's and the inverters'
measured power against what the round before predicted correct the load and PV forecasts of the intervals ahead,
fading by ``decay`` per interval, bounded, and carried from round to round; missing or bad readings leave the
forecast as it is."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pytest
from helpers.stores import target_fixture  # noqa: F401 (the target fixture)

from central.dispatch.cli import nowcasted
from central.dispatch.inputs import Forecast, horizon
from central.dispatch.nowcast import ClearSky, Nowcast, NowcastSpec, Planned, clear_sky_kw_per_kw, smoothed
from central.store import open_store
from protocols.telemetry.schema import Batch

T0 = 1_780_012_800  # 2026-05-29T00:00:00Z, on a 15-minute boundary
SPEC = NowcastSpec("sub-1", "sub-meter.p_total", window_s=300.0, decay=0.5, max_share=0.3)


def _plan(head: float, out: float = 0.0, avail: float = 0.0, limited: bool = False, load_corr: float = 0.0,
          pv_factor: float = 1.0) -> Planned:  # fmt: skip
    """One inverter "pv" predicted at ``out`` of ``avail`` kW."""
    return Planned(head, {"pv": out}, {"pv": avail}, {"pv": limited}, load_corr, pv_factor)


def _readings(kw: float, t0: float, t1: float, every: float = 10.0, unit: str = "W") -> list[tuple[float, object, str]]:
    scale = 1000.0 if unit == "W" else 1.0
    return [(t, kw * scale, unit) for t in np.arange(t0, t1, every).tolist()]


def _forecast(n: int, load: float = 2000.0, start: int = T0 + 900) -> Forecast:
    return Forecast(horizon(start, 900, n), np.full(n, load), np.full(n, 500.0), np.zeros(n), "file")


def test_the_error_seen_at_the_head_corrects_the_intervals_ahead_fading_by_decay() -> None:
    """The round planned 1000 kW at the head for the interval now running; the head reads 1100 kW (in W) over the
    last 5 minutes: the load is 100 kW above its forecast. The next interval gets 100 x 0.5, the one after
    100 x 0.25, and so on."""
    nc = Nowcast(SPEC)
    nc.remember([T0, T0 + 900], [_plan(1000.0), _plan(900.0)])
    now = T0 + 600.0
    c = nc.correction(_readings(1100.0, now - 300, now), {}, now, 900, horizon(T0 + 900, 900, 3), np.full(3, 2000.0))
    assert (c.measured_kw, c.predicted_kw, c.error_kw, c.readings) == (pytest.approx(1100.0), 1000.0,
                                                                       pytest.approx(100.0), 30)  # fmt: skip
    assert c.load_kw == pytest.approx([50.0, 25.0, 12.5])


def test_the_correction_a_round_applied_is_carried_into_the_next_error() -> None:
    """The plan of the running interval already carried +60 kW of correction and the head reads 20 kW above it:
    the load forecast's error is 80 kW, not 20."""
    nc = Nowcast(SPEC)
    nc.remember([T0], [_plan(1000.0, load_corr=60.0)])
    now = T0 + 700.0
    c = nc.correction(_readings(1020.0, now - 300, now, unit="kW"), {}, now, 900, horizon(T0 + 900, 900, 1),
                      np.full(1, 2000.0))  # fmt: skip
    assert c.error_kw == pytest.approx(80.0) and c.load_kw == pytest.approx([40.0])


def test_the_correction_is_bounded_by_max_share_of_the_forecast_load() -> None:
    nc = Nowcast(NowcastSpec("sub-1", "p", 300.0, 1.0, 0.1, ""))
    nc.remember([T0], [_plan(1000.0)])
    now = T0 + 600.0
    c = nc.correction(_readings(-5000.0, now - 300, now), {}, now, 900, horizon(T0 + 900, 900, 2),
                      np.array([2000.0, 100.0]))  # fmt: skip
    assert c.error_kw == pytest.approx(-6000.0) and c.load_kw == pytest.approx([-200.0, -10.0])


@pytest.mark.parametrize(
    ("rows", "remembered", "why"),
    [
        (_readings(1100.0, T0 + 300, T0 + 600), False, "no round planned the interval now running"),
        (_readings(1100.0, T0 + 500, T0 + 600), True, "under half of it covered"),  # 100 s of a 300 s window
        ([(T0 + 300.0 + i, "n/a", "W") for i in range(0, 300, 10)], True, r"0 reading\(s\)"),
        (_readings(1100.0, T0 + 300, T0 + 600, unit="V"), True, r"0 reading\(s\)"),  # not a power
        ([(T0 + 300.0 + i, float("nan"), "kW") for i in range(0, 300, 10)], True, r"0 reading\(s\)"),
    ],
)
def test_no_correction_without_a_prediction_or_enough_good_readings(rows: list, remembered: bool, why: str) -> None:
    nc = Nowcast(SPEC)
    if remembered:
        nc.remember([T0], [_plan(1000.0)])
    with pytest.raises(ValueError, match=why):
        nc.correction(rows, {}, T0 + 600.0, 900, horizon(T0 + 900, 900, 2), np.full(2, 2000.0))


def test_the_forecast_keeps_each_loads_power_factor_and_a_failed_nowcast_leaves_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    nc = Nowcast(SPEC)
    nc.remember([T0], [_plan(1000.0)])
    now = T0 + 600.0
    f = _forecast(2)
    out, applied = nowcasted(nc, f, _readings(1200.0, now - 300, now), {}, now, 900)
    assert out.load_kw == pytest.approx([2100.0, 2050.0])
    assert out.load_kvar == pytest.approx([500.0 * 2100 / 2000, 500.0 * 2050 / 2000])
    assert applied == {T0 + 900: (pytest.approx(100.0), 1.0), T0 + 1800: (pytest.approx(50.0), 1.0)}
    assert out.source == "file + nowcast" and f.load_kw.tolist() == [2000.0, 2000.0]  # the input is not changed
    same, none = nowcasted(nc, f, [], {}, now, 900)
    assert same is f and none == {}
    assert any("event=dispatch_nowcast " in r.getMessage() and "applied=false" in r.getMessage()
               for r in caplog.records)  # fmt: skip


def test_remember_keeps_a_few_horizons_only() -> None:
    nc = Nowcast(SPEC)
    for k in range(20):
        starts = [T0 + 900 * (k + i) for i in range(4)]
        nc.remember(starts, [_plan(1.0)] * 4)
    assert len(nc.planned) <= 16 and T0 + 900 * 22 in nc.planned and T0 not in nc.planned


def test_the_head_readings_come_from_centrals_store(target: Path | str) -> None:
    """The readings the agent sent (W, as the meter's map has them) read back from central's store, SQLite or
    PostgreSQL, give the same correction as the rows themselves."""
    now = T0 + 600.0
    rows = _readings(1150.0, now - 300, now)
    store = open_store(target)
    try:
        items = tuple({"point": SPEC.point, "ts": ts, "value": v, "unit": u, "quality": "good"} for ts, v, u in rows)
        assert all(store.store_batches([Batch("sub-1", "telemetry", 1, "m1", 1.0, items)], time.time()))
        read = store.point_readings(SPEC.site, SPEC.point, now - SPEC.window_s, now + 1e-3)
    finally:
        store.close()
    nc = Nowcast(SPEC)
    nc.remember([T0], [_plan(1000.0)])
    c = nc.correction(read, {}, now, 900, horizon(T0 + 900, 900, 1), np.full(1, 2000.0))
    assert c.readings == 30 and c.error_kw == pytest.approx(150.0)


def test_the_inverters_output_splits_the_error_between_the_sun_and_the_loads() -> None:
    """The round predicted 400 kW at the head: 1000 kW of load, the inverter free (no limit) at 600 kW of the
    forecast's sun. It gives 660 kW (the sun 10 % above the forecast) and the head reads 390 kW: the loads drew
    390 + 660 = 1050 kW, 50 above their forecast. The PV factor is 1.1 now, fading by decay (0.5) ahead."""
    nc = Nowcast(SPEC)
    nc.remember([T0], [_plan(400.0, out=600.0, avail=600.0)])
    now = T0 + 600.0
    c = nc.correction(_readings(390.0, now - 300, now), {"pv": _readings(660.0, now - 300, now)}, now, 900,
                      horizon(T0 + 900, 900, 2), np.full(2, 1000.0))  # fmt: skip
    assert c.error_kw == pytest.approx(50.0) and c.load_kw == pytest.approx([25.0, 12.5])
    assert c.pv_factor_now == pytest.approx(1.1) and c.pv_factor == pytest.approx([1.05, 1.025])
    assert c.pv_measured_kw == pytest.approx(660.0)


def test_a_limited_inverter_says_nothing_of_the_sun_and_a_factor_carries_on() -> None:
    """The inverter held at its 300 kW limit (the sun would give 600 by the forecast, which a factor of 1.2 had
    already raised): its output says nothing of the sun, so the factor stays 1.2; the loads' error is still the
    head plus the output against their prediction."""
    nc = Nowcast(SPEC)
    nc.remember([T0], [_plan(700.0, out=300.0, avail=600.0, limited=True, pv_factor=1.2)])
    now = T0 + 600.0
    c = nc.correction(_readings(680.0, now - 300, now), {"pv": _readings(300.0, now - 300, now)}, now, 900,
                      horizon(T0 + 900, 900, 1), np.full(1, 1000.0))  # fmt: skip
    assert c.pv_factor_now == pytest.approx(1.2) and c.error_kw == pytest.approx(-20.0)


def test_an_unread_inverter_puts_everything_on_the_load_and_the_factor_is_bounded() -> None:
    nc = Nowcast(SPEC)
    nc.remember([T0], [_plan(400.0, out=600.0, avail=600.0)])
    now = T0 + 600.0
    # the inverter's readings cover 60 s of the 300: the head alone (its 10 kW below the prediction on the loads)
    c = nc.correction(_readings(390.0, now - 300, now), {"pv": _readings(660.0, now - 60, now)}, now, 900,
                      horizon(T0 + 900, 900, 1), np.full(1, 1000.0))  # fmt: skip
    assert c.pv_measured_kw is None and c.error_kw == pytest.approx(-10.0) and c.pv_factor_now == 1.0
    # the sun at three times the forecast: the factor stops at 1 + max_share
    c = nc.correction(_readings(390.0, now - 300, now), {"pv": _readings(1800.0, now - 300, now)}, now, 900,
                      horizon(T0 + 900, 900, 1), np.full(1, 1000.0))  # fmt: skip
    assert c.pv_factor_now == pytest.approx(1.3)


def test_the_pv_point_is_named_per_inverter() -> None:
    assert Nowcast(SPEC).pv_points(["pv675", "pv680"]) == {"pv675": "pv675.DERMeasureAC.W",
                                                          "pv680": "pv680.DERMeasureAC.W"}  # fmt: skip
    assert Nowcast(NowcastSpec("s", "p", pv_point="")).pv_points(["pv675"]) == {}


# ---- clear-sky-index persistence -------------------------------------------------------------------------------

SKY = ClearSky(latitude=36.1, longitude=-79.95, tilt_deg=36.1, azimuth_deg=180.0)
EQUINOX_NOON = 1_774_027_620  # 2026-03-20T17:27:00Z: solar noon at 79.95 W (12:00 + 4 min/deg, equation of time -7 min)


def _boundary(ts: float) -> int:
    return int(ts) // 900 * 900


def test_the_clear_sky_on_the_plane_is_the_suns_shape() -> None:
    """Properties of the clear sky on a south-facing plane tilted at its latitude, independent of how it is computed:
    near 1 kW/m2 at an equinox noon (the sun square on the plane), nothing at night, the same an hour before and
    after solar noon, and a plane facing north gets less than one facing south."""
    noon = clear_sky_kw_per_kw(SKY, [EQUINOX_NOON - 180, EQUINOX_NOON - 3780, EQUINOX_NOON + 3420,
                                     EQUINOX_NOON + 12 * 3600])  # fmt: skip
    assert 0.85 < noon[0] < 1.1
    assert noon[1] == pytest.approx(noon[2], rel=0.02) and noon[1] < noon[0]
    assert noon[3] == 0.0
    north = clear_sky_kw_per_kw(ClearSky(36.1, -79.95, 36.1, 0.0), [EQUINOX_NOON])
    assert north[0] < 0.5 * noon[0]


def _sun_rows(index: float, kw: float, t0: float, t1: float) -> list[tuple[float, object, str]]:
    """An inverter of ``kw`` under a sky ``index`` times clear, read every 10 s (W)."""
    times = np.arange(t0, t1, 10.0)
    return [(float(t), float(v) * 1000.0, "W") for t, v in zip(times, index * kw * clear_sky_kw_per_kw(SKY, times),
                                                                  strict=True)]  # fmt: skip


def _sky_nowcast(decay: float = 0.5) -> Nowcast:
    spec = NowcastSpec("sub-1", "p", 300.0, decay, 0.3, clear_sky=SKY)
    return Nowcast(spec, {"big": 3000.0, "ref": 100.0})


def _sky_plan(limited_big: bool = True, avail: float = 2000.0) -> Planned:
    return Planned(0.0, {"big": 1800.0, "ref": 60.0}, {"big": avail, "ref": avail / 30},
                   {"big": limited_big, "ref": False})  # fmt: skip


def test_the_pv_ahead_is_the_clear_sky_index_now_times_the_clear_sky_ahead() -> None:
    """A morning (the sun rising fast): the free reference inverter gives 0.7 of its clear sky; the day-ahead
    forecast says a jumpy 1000 then 3000 kW. The next interval's PV is 0.7 x the clear sky of all 3100 kW of
    inverters over it (within 1 %: the interval's mean against its middle), whatever the forecast said; the one
    after is blended half-and-half with the forecast (decay 0.5)."""
    nc = _sky_nowcast()
    running = _boundary(EQUINOX_NOON - 4 * 3600)  # 13:15 UTC
    nc.remember([running], [_sky_plan()])
    now = running + 600.0
    starts = horizon(running + 900, 900, 2)
    c = nc.correction(_readings(0.0, now - 300, now), {"big": _readings(1800.0, now - 300, now),
                      "ref": _sun_rows(0.7, 100.0, now - 300, now)}, now, 900, starts, np.full(2, 1000.0),
                      np.array([1000.0, 3000.0]))  # fmt: skip
    assert c.clear_sky_index == pytest.approx(0.7, rel=0.005)
    truth = [0.7 * 3100.0 * float(np.mean(clear_sky_kw_per_kw(SKY, np.arange(s, s + 900, 30.0)))) for s in starts]
    assert truth[1] > 1.1 * truth[0]  # the sun rises through the two intervals
    assert c.pv_kw is not None
    assert c.pv_kw[0] == pytest.approx(truth[0], rel=0.01)
    assert c.pv_kw[1] == pytest.approx(0.5 * truth[1] + 0.5 * 3000.0, rel=0.01)


def test_without_a_free_inverter_the_last_index_carries_and_without_one_the_factor_does() -> None:
    nc = _sky_nowcast()
    running = _boundary(EQUINOX_NOON)
    now = running + 600.0
    starts = horizon(running + 900, 900, 1)
    head, big = _readings(0.0, now - 300, now), _readings(1800.0, now - 300, now)
    nc.remember([running], [Planned(0.0, {"big": 1800.0, "ref": 60.0}, {"big": 2000.0, "ref": 66.7},
                                    {"big": True, "ref": True})])  # fmt: skip
    c = nc.correction(head, {"big": big, "ref": _readings(60.0, now - 300, now)}, now, 900, starts,
                      np.full(1, 1000.0), np.array([2000.0]))  # fmt: skip
    assert c.pv_kw is None and c.clear_sky_index is None  # nothing measured yet: the factor (1 here)
    nc.remember([running], [_sky_plan()])
    nc.correction(head, {"big": big, "ref": _sun_rows(0.6, 100.0, now - 300, now)}, now, 900, starts,
                  np.full(1, 1000.0), np.array([2000.0]))  # fmt: skip
    nc.remember([running], [Planned(0.0, {"big": 1800.0, "ref": 60.0}, {"big": 2000.0, "ref": 66.7},
                                    {"big": True, "ref": True})])  # fmt: skip
    c = nc.correction(head, {"big": big, "ref": _readings(10.0, now - 300, now)}, now, 900, starts,
                      np.full(1, 1000.0), np.array([2000.0]))  # fmt: skip
    assert c.clear_sky_index == pytest.approx(0.6, rel=0.005)  # the reference was limited: its 10 kW say nothing


def test_at_dawn_the_clear_sky_is_too_small_to_measure_an_index() -> None:
    nc = _sky_nowcast()
    running = _boundary(EQUINOX_NOON - 6 * 3600 - 600)  # 11:15 UTC, the sun just up at 79.95 W
    now = running + 600.0
    assert clear_sky_kw_per_kw(SKY, [now - 150])[0] < 0.02
    nc.remember([running], [_sky_plan()])
    c = nc.correction(_readings(0.0, now - 300, now), {"big": _readings(5.0, now - 300, now),
                      "ref": _readings(1.0, now - 300, now)}, now, 900, horizon(running + 900, 900, 1),
                      np.full(1, 1000.0), np.array([50.0]))  # fmt: skip
    assert c.clear_sky_index is None and c.pv_kw is None


def test_the_load_forecasts_scatter_is_averaged_before_the_error_is_measured() -> None:
    """smooth_intervals = 3: a forecast that zigzags 1900/2100 around a level 2000 kW feeder is taken as its
    centred three-interval mean (the ends padded with their own value), each load's power factor kept; the head
    reading the planned 1000 kW then carries no error into the intervals ahead."""
    assert smoothed(np.array([1900.0, 2100.0, 1900.0, 2100.0]), 3) == pytest.approx(
        [1900 * 2 / 3 + 2100 / 3, 1900 * 2 / 3 + 2100 / 3, 2100 * 2 / 3 + 1900 / 3, 2100 * 2 / 3 + 1900 / 3]
    )
    assert smoothed(np.array([5.0, 7.0]), 1).tolist() == [5.0, 7.0]
    nc = Nowcast(NowcastSpec("sub-1", "sub-meter.p_total", 300.0, 0.5, 0.3, smooth_intervals=3))
    nc.remember([T0], [_plan(1000.0)])
    now = T0 + 600.0
    f = Forecast(horizon(T0 + 900, 900, 5), np.array([2000.0, 1900.0, 2100.0, 1900.0, 2000.0]), np.full(5, 500.0),
                 np.zeros(5), "file")  # fmt: skip
    out, _ = nowcasted(nc, f, _readings(1000.0, now - 300, now), {}, now, 900)
    assert out.load_kw == pytest.approx([1966.67, 2000.0, 1966.67, 2000.0, 1966.67], abs=0.01)
    assert out.load_kvar / out.load_kw == pytest.approx(f.load_kvar / f.load_kw)

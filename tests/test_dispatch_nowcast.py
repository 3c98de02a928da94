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
from central.dispatch.nowcast import Nowcast, NowcastSpec, Planned
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

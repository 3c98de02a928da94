"""Dispatch's trim (central/dispatch/trim.py, docs/dispatch.md "Trim"): part-way through an interval the head's
energy so far against its schedule moves the reserved inverters for the rest of it, within their limits, the
voltage limits and the head's reverse-power limit; small misses are left alone. Worked by hand on one inverter."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from central.dispatch.config import DispatchConfig, InverterSpec, SiteSpec
from central.dispatch.plan import Step
from central.dispatch.trim import head_scheduled_kwh, trim

T0 = 1_780_012_800  # on a 15-minute boundary
INV = InverterSpec("pv1", "pv1", 2000.0, 2000.0, "B", 0.0, reserve_pct=10.0)
FREE = InverterSpec("pv2", "pv2", 100.0, 100.0, "B", 0.0)
CFG = DispatchConfig(network=Path("feeder.dss"), feeder="f", sites=(SiteSpec("s1", (INV, FREE)),), margin_pu=0.01)
DEVICES = ["pv1", "pv2"]
NO_DV = np.zeros((1, 2))


def _step(head_kw: float = 1000.0, out_kw: float = 900.0, limit_pct: float = 45.0) -> Step:
    """pv1 limited to 45 % (900 kW of its 1000 available: the reserve), pv2 free; the head planned at 1000 kW."""
    return Step("s1", T0, T0 + 900, {"pv1": limit_pct, "pv2": 100.0}, {}, {"pv1": out_kw, "pv2": 50.0}, {}, {},
                None, None, 1.0, 1.0, 0.0, head_kw)  # fmt: skip


def _rows(kw: float, t0: float, t1: float) -> list[tuple[float, object, str]]:
    return [(t, kw * 1000.0, "W") for t in np.arange(t0, t1, 5.0).tolist()]


def test_the_head_importing_more_than_scheduled_raises_the_reserved_output_for_the_rest() -> None:
    """Scheduled 250 kWh (1000 kW over 15 min); the first 450 s averaged 1100 kW: 137.5 kWh so far. The other 450 s
    must average (250 - 137.5) / 0.125 h = 900 kW, 200 kW below the 1100 it draws: pv1 gives 200 kW more, 1100 kW,
    a limit of 55 %. The free pv2 is not moved."""
    tr = trim(CFG, _step(), 250.0, _rows(1100.0, T0, T0 + 450), T0 + 450.0, {"pv1": 1500.0, "pv2": 60.0}, NO_DV,
              np.array([1.0]), DEVICES)  # fmt: skip
    assert (tr.so_far_kwh, tr.elapsed_kw, tr.required_kw) == (pytest.approx(137.5), pytest.approx(1100.0),
                                                                pytest.approx(900.0))  # fmt: skip
    assert tr.delta_kw == {"pv1": pytest.approx(200.0)}
    assert tr.step.p_limit_pct == {"pv1": 55.0, "pv2": 100.0} and tr.step.p_out_kw["pv1"] == pytest.approx(1100.0)
    assert tr.scale == 1.0


def test_the_response_time_shortens_what_is_left_and_the_sun_bounds_the_move() -> None:
    """p_response_s = 90: the head stays at 1100 kW for 90 s more (27.5 kWh), so the last 360 s must average
    (250 - 137.5 - 27.5) / 0.1 h = 850 kW: 250 kW more from pv1, but the forecast's sun gives it 1000 kW at most
    (100 kW more than its 900)."""
    cfg = replace(CFG, p_response_s=90.0)
    tr = trim(cfg, _step(), 250.0, _rows(1100.0, T0, T0 + 450), T0 + 450.0, {"pv1": 1000.0}, NO_DV, np.array([1.0]),
              DEVICES)  # fmt: skip
    assert tr.required_kw == pytest.approx(850.0)
    assert tr.delta_kw == {"pv1": pytest.approx(100.0)} and tr.step.p_limit_pct["pv1"] == 50.0


def test_importing_less_than_scheduled_curtails_and_the_lowest_limit_bounds_it() -> None:
    """The head averaged 500 kW against 1000 scheduled: the rest must average 1500, so pv1 gives 1000 kW less,
    down to its lowest limit, 0 (900 kW less); the limit rounds down to 0 %."""
    tr = trim(CFG, _step(), 250.0, _rows(500.0, T0, T0 + 450), T0 + 450.0, {"pv1": 1000.0}, NO_DV, np.array([1.0]),
              DEVICES)  # fmt: skip
    assert tr.required_kw == pytest.approx(1500.0)
    assert tr.delta_kw == {"pv1": pytest.approx(-900.0)} and tr.step.p_limit_pct["pv1"] == 0.0


def test_the_voltage_limit_scales_the_move_down() -> None:
    """dV/dP of pv1 at the node 0.0001 pu/kW, the node predicted at 1.03 pu; limit 1.05 - 0.01 margin = 1.04: of
    the wanted +200 kW (+0.02 pu) half is kept, +100 kW; the node ends on its limit."""
    dv = np.array([[1e-4, 0.0]])
    tr = trim(CFG, _step(), 250.0, _rows(1100.0, T0, T0 + 450), T0 + 450.0, {"pv1": 1500.0}, dv, np.array([1.03]),
              DEVICES)  # fmt: skip
    assert tr.scale == pytest.approx(0.5) and tr.delta_kw["pv1"] == pytest.approx(100.0)
    assert 1.03 + dv[0, 0] * tr.delta_kw["pv1"] == pytest.approx(1.04)


def test_the_reverse_power_limit_bounds_what_the_rest_may_export() -> None:
    """Scheduled -250 kWh (exporting 1000 kW) with reverse_power_kw = 1000; the head exported only 500 kW so far.
    Landing on the schedule would take 1500 kW of export for the rest, over the limit: the rest is asked for 1000,
    so pv1 gives 500 kW more, not 1000."""
    cfg = replace(CFG, reverse_power_kw=1000.0)
    step = _step(head_kw=-1000.0)
    tr = trim(cfg, step, -250.0, _rows(-500.0, T0, T0 + 450), T0 + 450.0, {"pv1": 3000.0}, NO_DV, np.array([1.0]),
              DEVICES)  # fmt: skip
    assert tr.required_kw == pytest.approx(-1000.0) and tr.delta_kw["pv1"] == pytest.approx(500.0)


@pytest.mark.parametrize(
    ("rows", "step", "why"),
    [
        (_rows(1004.0, T0, T0 + 450), _step(), "under the trim's threshold"),  # 0.5 kWh of 250
        (_rows(1100.0, T0 + 400, T0 + 450), _step(), "under half of it covered"),
        (_rows(1100.0, T0, T0 + 450), _step(limit_pct=100.0), "no inverter holds a reserve"),
        (_rows(500.0, T0, T0 + 450), _step(out_kw=0.0, limit_pct=0.0), "at their bounds"),  # already at 0
    ],
)
def test_no_trim_for_a_small_miss_too_few_readings_or_no_reserve(rows: list, step: Step, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        trim(CFG, step, 250.0, rows, T0 + 450.0, {"pv1": 1500.0}, NO_DV, np.array([1.0]), DEVICES)


def test_the_head_schedule_is_what_settlement_holds_with_the_ramp_into_a_changed_limit() -> None:
    """p_response_s = 40: pv1 steps from 500 kW (limited) to 900, so the interval misses 400 x 40 / 2 s of it
    (2.22 kWh) and the head takes it: 250 + 2.22 kWh."""
    cfg = replace(CFG, p_response_s=40.0)
    kwh = head_scheduled_kwh(cfg, _step(), {"pv1": (500.0, True), "pv2": (50.0, False)})
    assert kwh == pytest.approx(250.0 + 400.0 * 40.0 / 2.0 / 3600.0)
    assert math.isclose(head_scheduled_kwh(CFG, _step(), {}), 250.0)

"""The bench inverter's curve reversion timers (SunSpec 705, 706, 711 ``RvrtTms``/``RvrtRem``/``RvrtCrv``): a curve
a controller adopted with a timer falls back to curve ``RvrtCrv`` when the timer runs out, unless the timer is
written again; a device built with ``curve_reversion = false`` serves them "not implemented" and refuses them.
Writes go through the device model's ``on_write``, as the Modbus server hands them over; time is the bench's."""

from __future__ import annotations

import math

import pytest
from helpers.sunspec import inverter, solution

from protocols.modbus.registermap import Table, encode_point
from sim_hw.devices.modbus_server import WriteRequest

VV = "DERVoltVar"
# IEEE 1547-2018 Table 8, Category B default volt-var curve: V [%VN]; what the device holds at power-up
CAT_B_V = [92.0, 98.0, 102.0, 108.0]
MINE_V = [93.0, 99.0, 101.0, 107.0]  # an explicit curve, inside Table 8's ranges


def write(inv, values: dict) -> int | None:
    points = {inv.register_map.point(n).name: v for n, v in values.items()}
    first = min(inv.register_map.point(n).address for n in values)
    return inv.on_write(WriteRequest(1, Table.HOLDING, first, (), points))


def steps(inv, t0: float, n: int) -> float:
    for i in range(1, n + 1):
        inv.observe(t0 + i, solution())
    return t0 + n


def active_v(inv) -> list[float]:
    return [inv.settings[f"{VV}.Crv[1].Pt[{i}].V"] for i in range(1, 5)]


def adopt_mine(inv, tms: int) -> None:
    assert write(inv, {f"{VV}.Crv[2].Pt[{i}].V": v for i, v in enumerate(MINE_V, 1)}) is None
    assert write(inv, {f"{VV}.RvrtTms": tms, f"{VV}.RvrtCrv": 3}) is None
    assert write(inv, {f"{VV}.AdptCrvReq": 2, f"{VV}.Ena": 1}) is None


def test_an_adopted_curve_falls_back_to_curve_3_when_its_timer_runs_out() -> None:
    inv = inverter()
    t = steps(inv, 1_780_000_000.0, 1)
    adopt_mine(inv, 20)
    assert active_v(inv) == MINE_V and inv.values()[f"{VV}.RvrtRem"] == 20
    t = steps(inv, t, 19)
    assert active_v(inv) == MINE_V and inv.values()[f"{VV}.RvrtRem"] == 1
    steps(inv, t, 1)
    assert active_v(inv) == CAT_B_V, "20 s after the adopt: curve 3, the power-up Category B default"
    assert inv.values()[f"{VV}.RvrtRem"] == 0 and inv.settings[f"{VV}.Ena"] == 1
    assert math.isclose(inv.der.der.der_file.QV_CURVE_V1, 0.92), "OpenDER runs the reverted curve"


def test_writing_the_timer_again_keeps_the_curve_and_a_zero_stops_it() -> None:
    inv = inverter()
    t = steps(inv, 1_780_000_000.0, 1)
    adopt_mine(inv, 20)
    for _ in range(4):  # refreshed every 15 s: 60 s, three times the timer, on the explicit curve
        t = steps(inv, t, 15)
        assert active_v(inv) == MINE_V
        assert write(inv, {f"{VV}.RvrtTms": 20}) is None
    assert write(inv, {f"{VV}.RvrtTms": 0}) is None
    steps(inv, t, 60)
    assert active_v(inv) == MINE_V and inv.values()[f"{VV}.RvrtRem"] == 0


@pytest.mark.parametrize(("model", "tms", "sel", "adopt", "curve"), [
    ("DERVoltWatt", "RvrtTms", "RvrtCrv", "AdptCrvReq", "Crv"),
    ("DERFreqDroop", "RvrtTms", "RvrtCtl", "AdptCtlReq", "Ctl"),
])  # fmt: skip
def test_volt_watt_and_frequency_droop_revert_the_same_way(model, tms, sel, adopt, curve) -> None:
    inv = inverter()
    t = steps(inv, 1_780_000_000.0, 1)
    # an explicit curve, inside IEEE 1547-2018 Table 10 (volt-watt) and Table 24 (droop) ranges
    point, mine, default = ((f"{model}.{curve}[2].Pt[1].V", 107.0, 106.0) if model == "DERVoltWatt"
                            else (f"{model}.{curve}[2].KOf", 0.03, 0.05))  # fmt: skip
    assert write(inv, {point: mine}) is None
    assert write(inv, {f"{model}.{tms}": 10, f"{model}.{sel}": 3}) is None
    assert write(inv, {f"{model}.{adopt}": 2}) is None
    active = point.replace(f"{curve}[2]", f"{curve}[1]")
    t = steps(inv, t, 9)
    assert inv.settings[active] == mine
    steps(inv, t, 1)
    assert inv.settings[active] == default


def test_a_device_without_curve_timers_serves_them_not_implemented_and_refuses_them() -> None:
    inv = inverter(curve_reversion=False)
    steps(inv, 1_780_000_000.0, 1)
    values = inv.values()
    for name in (f"{VV}.RvrtTms", f"{VV}.RvrtRem", f"{VV}.RvrtCrv", "DERFreqDroop.RvrtCtl"):
        reg = inv.register_map.point(name)
        assert encode_point(reg, values[name]) == [0xFFFF] * reg.words, f"{name}: SunSpec 'not implemented'"
    assert write(inv, {f"{VV}.RvrtTms": 20}) == 2  # illegal data address
    assert write(inv, {f"{VV}.AdptCrvReq": 2}) is None  # adopting still works, with no timer

"""Review of the issue-4 device models: inputs and behaviours found wrong, each pinned by a test."""

from __future__ import annotations

import math

import pytest

from sim_hw.devices.inverter import InverterError, SunSpecInverter
from sim_hw.feeder.solution import Solution

V_LN = 4160.0 / math.sqrt(3)  # IEEE 13-node feeder: 4.16 kV line-to-line


def _inverter() -> SunSpecInverter:
    return SunSpecInverter("inv1", site="pv675", bus="675", kva=500.0, kw=450.0)


def _bus(v: complex) -> Solution:
    return Solution(
        t=0.0,
        converged=True,
        bus_v={"675": dict.fromkeys("abc", v)},
        base_kv_ln={"675": V_LN / 1000},
        irradiance_pu=1.0,
    )


def test_inverter_refuses_a_non_numeric_bus_voltage_with_its_own_error_and_keeps_its_state() -> None:
    """A NaN voltage (a solve gone wrong) used to reach OpenDER, which raised a bare ValueError naming no
    device, after the inverter had already stored the NaN as its measured voltage."""
    inv = _inverter()
    inv.observe(1.0, _bus(V_LN + 0j))
    before = inv.values()
    with pytest.raises(InverterError, match=r"inverter 'inv1': bus '675' phase a voltage nan"):
        inv.observe(2.0, _bus(complex(math.nan, 0.0)))
    assert inv.values()["DERMeasureAC.LNV"] == pytest.approx(V_LN)  # the last good measurement stands
    assert inv.values()["DERMeasureAC.W"] == before["DERMeasureAC.W"]
    inv.observe(3.0, _bus(V_LN + 0j))  # and it carries on with the next good solution

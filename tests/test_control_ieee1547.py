"""IEEE 1547-2018 defaults and curves, checked against the standard's points and against the bench inverters.

Source of the expected values: IEEE Std 1547-2018 Table 8 (volt-var Category A and B defaults), Table 10
(volt-watt defaults), clause 6.5.2.7 / Table 24 (frequency droop). The points between breakpoints are the
straight lines between them; the tolerance 1e-9 is float rounding only, every value here is exact arithmetic.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from agent.control.ieee1547 import (
    DEFAULTS,
    DefaultLookupError,
    FreqDroop,
    VoltVarCurve,
    VoltWattCurve,
    default,
    freq_droop_p_pct,
    q_pct_of_var_max,
    setting_range,
    volt_var_q_pct,
    volt_watt_for_p_min,
    volt_watt_p_pct,
)

ROOT = Path(__file__).resolve().parents[1]
CAT_A = default("volt_var.category-a")
CAT_B = default("volt_var.category-b")
VW = default("volt_watt.default")
FD = default("freq_droop.default")


@pytest.mark.parametrize(
    ("v_pu", "q_pct"),
    [
        (0.80, 44.0),  # below V1: flat at Q1
        (0.92, 44.0),  # V1, Q1 = 44 % injection
        (0.95, 22.0),  # half way V1 -> V2: slope -44 / 0.06 pu
        (0.98, 0.0),  # V2
        (1.00, 0.0),  # inside the dead band
        (1.02, 0.0),  # V3
        (1.05, -22.0),  # half way V3 -> V4
        (1.08, -44.0),  # V4, Q4 = 44 % absorption
        (1.20, -44.0),  # above V4: flat at Q4
    ],
)
def test_category_b_volt_var_passes_through_table_8_points_and_the_lines_between(v_pu: float, q_pct: float) -> None:
    assert volt_var_q_pct(v_pu, CAT_B) == pytest.approx(q_pct, abs=1e-9)


@pytest.mark.parametrize(
    ("v_pu", "q_pct"),
    [(0.85, 25.0), (0.90, 25.0), (0.95, 12.5), (1.00, 0.0), (1.05, -12.5), (1.10, -25.0), (1.15, -25.0)],
)
def test_category_a_volt_var_has_no_dead_band_and_25_pct_either_way(v_pu: float, q_pct: float) -> None:
    assert volt_var_q_pct(v_pu, CAT_A) == pytest.approx(q_pct, abs=1e-9)


def test_the_volt_var_curve_moves_with_vref() -> None:
    """Table 8 gives V1..V4 relative to VRef: with VRef = 1.02 pu the dead band is 1.00..1.04 pu."""
    shifted = VoltVarCurve(CAT_B.v_pu, CAT_B.q_pct, 1.02, 5.0)
    assert volt_var_q_pct(1.02, shifted) == 0.0
    assert volt_var_q_pct(0.94, shifted) == pytest.approx(44.0)
    assert volt_var_q_pct(1.07, shifted) == pytest.approx(-22.0)


def test_the_default_response_times_are_the_standards() -> None:
    assert (CAT_A.response_s, CAT_B.response_s, VW.response_s, FD.response_s) == (10.0, 5.0, 10.0, 5.0)
    assert CAT_A.v_ref_pu == CAT_B.v_ref_pu == 1.0


@pytest.mark.parametrize(
    ("v_pu", "p_pct"), [(1.00, 100.0), (1.06, 100.0), (1.07, 80.0), (1.08, 60.0), (1.10, 20.0), (1.15, 20.0)]
)
def test_volt_watt_passes_through_table_10_points_and_the_line_between(v_pu: float, p_pct: float) -> None:
    assert volt_watt_p_pct(v_pu, VW) == pytest.approx(p_pct, abs=1e-9)


def test_volt_watt_p2_is_the_lesser_of_20_pct_and_pmin() -> None:
    assert volt_watt_for_p_min(30.0).p_pct == (100.0, 20.0)
    assert volt_watt_for_p_min(5.0).p_pct == (100.0, 5.0)


@pytest.mark.parametrize(
    ("f_hz", "p_pre", "p_pct"),
    [
        (60.000, 80.0, 80.0),  # nominal
        (60.036, 80.0, 80.0),  # at the over-frequency dead band edge: no change yet
        (59.964, 80.0, 80.0),  # at the under-frequency edge
        (60.336, 80.0, 70.0),  # 0.3 Hz past dbOF: 100 x 0.3 / (60 x 0.05) = 10 % down
        (60.636, 80.0, 60.0),  # 0.6 Hz past: 20 % down (the slope is linear)
        (62.000, 80.0, 14.5333333333),  # far up: 80 - 100 x 1.964 / 3
        (63.000, 80.0, 0.0),  # floored at Pmin
        (59.664, 50.0, 60.0),  # 0.3 Hz below dbUF: 10 % up
        (59.000, 50.0, 82.1333333333),  # 50 + 100 x 0.964 / 3
        (58.000, 50.0, 100.0),  # capped at the available power
    ],
)
def test_frequency_droop_follows_clause_6_5_2_7(f_hz: float, p_pre: float, p_pct: float) -> None:
    assert freq_droop_p_pct(f_hz, p_pre, FD) == pytest.approx(p_pct, abs=1e-6)


def test_frequency_droop_respects_a_lower_available_power_and_a_higher_minimum() -> None:
    assert freq_droop_p_pct(59.0, 50.0, FD, p_avl_pct=60.0) == 60.0
    assert freq_droop_p_pct(63.0, 80.0, FD, p_min_pct=15.0) == 15.0


def test_a_missing_default_says_which_exist_and_where_to_look() -> None:
    with pytest.raises(DefaultLookupError) as info:
        default("volt_var.category-c")
    text = str(info.value)
    assert "'volt_var.category-c'" in text and "volt_var.category-b" in text
    assert "agent/control/ieee1547.py" in text and "docs/control.md" in text
    with pytest.raises(DefaultLookupError, match="docs/control.md"):
        setting_range("volt_var.v9")


def test_every_default_names_its_clause_and_table() -> None:
    for name, entry in DEFAULTS.items():
        assert re.search(r"IEEE 1547-2018 clause [\d.]+, Table \d+", entry.source), name


@pytest.mark.parametrize(
    "build",
    [
        lambda: VoltVarCurve((0.92, 0.98, 0.97, 1.08), (44, 0, 0, -44), 1.0, 5.0),  # V3 < V2
        lambda: VoltVarCurve((0.92, 0.98, 1.02, 1.08), (-44, 0, 0, 44), 1.0, 5.0),  # Q rising: wrong direction
        lambda: VoltVarCurve((0.92, 0.98, 1.02, 1.08), (144, 0, 0, -44), 1.0, 5.0),
        lambda: VoltWattCurve((1.10, 1.06), (100, 20), 10.0),
        lambda: VoltWattCurve((1.06, 1.10), (20, 100), 10.0),
        lambda: FreqDroop(0.036, 0.036, 0.0, 0.05, 5.0),
    ],
)
def test_a_curve_that_would_act_the_wrong_way_cannot_be_built(build) -> None:
    with pytest.raises(ValueError):
        build()


def test_reactive_capability_by_category_bounds_pf_and_var_settings() -> None:
    a, b = default("reactive_capability.category-a"), default("reactive_capability.category-b")
    assert (a.q_inject_pct, a.q_absorb_pct, b.q_inject_pct, b.q_absorb_pct) == (44.0, 25.0, 44.0, 44.0)
    assert b.pf_min_inject == pytest.approx(0.898, abs=5e-4)  # sqrt(1 - 0.44^2)
    assert a.pf_min_absorb == pytest.approx(0.968, abs=5e-4)  # sqrt(1 - 0.25^2)


# ---- the bench inverters agree with the table -------------------------------------------------------------


def test_the_bench_inverters_power_up_defaults_are_this_tables() -> None:
    """sim_hw's inverter (its settings at power-up) holds Table 8 Category B, Table 10 and Table 24 defaults.

    Its volt-var Q is in % of VarMax, VarMax being Table 7's Category B 44 % of VA."""
    from sim_hw.devices import inverter

    s = inverter._default_settings()
    var_max_pct = 100.0 * inverter.CAT_B_Q_PU
    for c in range(1, inverter.VV_CURVES + 1):
        k = f"DERVoltVar.Crv[{c}]"
        assert tuple(s[f"{k}.Pt[{i}].V"] / 100.0 for i in range(1, 5)) == pytest.approx(CAT_B.v_pu)
        got_q = tuple(s[f"{k}.Pt[{i}].Var"] for i in range(1, 5))
        assert got_q == pytest.approx(tuple(q_pct_of_var_max(q, var_max_pct) for q in CAT_B.q_pct))
        assert (s[f"{k}.VRef"] / 100.0, s[f"{k}.RspTms"]) == (CAT_B.v_ref_pu, CAT_B.response_s)
    for c in range(1, inverter.VW_CURVES + 1):
        k = f"DERVoltWatt.Crv[{c}]"
        assert (s[f"{k}.Pt[1].V"] / 100.0, s[f"{k}.Pt[2].V"] / 100.0) == pytest.approx(VW.v_pu)
        assert (s[f"{k}.Pt[1].W"], s[f"{k}.Pt[2].W"], s[f"{k}.RspTms"]) == (*VW.p_pct, VW.response_s)
    for c in range(1, inverter.FD_CTLS + 1):
        k = f"DERFreqDroop.Ctl[{c}]"
        got = (s[f"{k}.DbOf"], s[f"{k}.DbUf"], s[f"{k}.KOf"], s[f"{k}.KUf"], s[f"{k}.RspTms"])
        assert got == (FD.db_of_hz, FD.db_uf_hz, FD.k_of, FD.k_uf, FD.response_s)


def test_the_bench_inverter_manual_states_this_tables_defaults() -> None:
    """docs/devices/sim-inverter.md's "Defaults at power-up" sentence gives the same numbers."""
    text = " ".join((ROOT / "docs" / "devices" / "sim-inverter.md").read_text().split())
    m = re.search(r"frequency droop on \(([\d.]+) Hz, (\d+) %, (\d+) s: IEEE 1547-2018 Table 24\)", text)
    assert m is not None
    assert (float(m[1]), float(m[2]) / 100, float(m[3])) == (FD.db_of_hz, FD.k_of, FD.response_s)
    m = re.search(r"Category B default of Table 8 \(([\d/]+) %, ([+\-\d/]+) % of VarMax, (\d+) s, VRef (\d+) %\)", text)
    assert m is not None
    assert tuple(float(v) / 100 for v in m[1].split("/")) == pytest.approx(CAT_B.v_pu)
    q_var_max = tuple(float(q) for q in m[2].split("/"))
    assert q_var_max == pytest.approx(tuple(q_pct_of_var_max(q, 44.0) for q in CAT_B.q_pct))
    assert (float(m[3]), float(m[4]) / 100) == (CAT_B.response_s, CAT_B.v_ref_pu)
    m = re.search(r"volt-watt curve Table 10's \((\d+) % -> (\d+) %, (\d+) % -> (\d+) %, (\d+) s\)", text)
    assert m is not None
    assert (float(m[1]) / 100, float(m[3]) / 100) == pytest.approx(VW.v_pu)
    assert (float(m[2]), float(m[4]), float(m[5])) == (*VW.p_pct, VW.response_s)

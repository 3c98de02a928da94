"""The feeder's physics (sim_hw/feeder/model.py over OpenDSS) and its daily profiles.

Expected values come from hand estimates stated beside each test (Thevenin reactances of the published
line data, the published regulator settings), never from the code under test. The published voltage
profile itself is checked in tests/test_sim_solve.py.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from sim_hw.feeder import Feeder, FeederError, Solution
from sim_hw.feeder.model import TAP_STEP_PU
from sim_hw.feeder.profiles import (
    CLOUD_DEPTH,
    CLOUD_HOLD_S,
    CLOUD_RAMP_S,
    DAY_S,
    Profile,
    ProfileError,
    irradiance_profile,
    load_profile,
)

DSS = Path(__file__).resolve().parent.parent / "config" / "ieee13" / "IEEE13.dss"
PUBLISHED_TAPS = (10, 8, 11)  # IEEE 13-node "Regulator Data" power-flow results: taps 10, 8, 11
KV_LN = 4.16 / math.sqrt(3)
# OpenDSS stops iterating when no node voltage moves more than 1e-4 pu (its default Tolerance), so two
# solves of the same state from different starting points agree to about that.
SOLVE_TOL = 1e-4


@pytest.fixture(scope="module")
def base() -> Solution:
    """The published case (published taps), solved once for the comparisons below."""
    feeder = Feeder.from_file(DSS)
    feeder.set_regulator_taps(PUBLISHED_TAPS)
    return feeder.solve()


@pytest.fixture
def feeder() -> Feeder:
    f = Feeder.from_file(DSS)
    f.set_regulator_taps(PUBLISHED_TAPS)
    return f


# ---------------------------------------------------------------------------- the solution's contents
def test_solution_has_every_bus_phase_and_the_metered_terminals(base: Solution) -> None:
    # Buses and phases of the published one-line diagram (plus the 115 kV source and rg60).
    expected = {
        "650": "abc", "rg60": "abc", "632": "abc", "633": "abc", "634": "abc", "645": "bc", "646": "bc",
        "671": "abc", "680": "abc", "684": "ac", "611": "c", "652": "a", "692": "abc", "675": "abc",
    }  # fmt: skip
    for bus, phases in expected.items():
        assert "".join(sorted(base.v(bus))) == phases, bus
        assert base.base_kv_ln[bus] == pytest.approx(0.48 / math.sqrt(3) if bus == "634" else KV_LN, rel=1e-6)
    assert base.converged
    head = base.terminal("Line.650632", 1)
    assert head.bus == "rg60" and set(head.v) == set(head.i) == {"a", "b", "c"}
    reg = base.terminal("Transformer.Reg1", 2)
    assert reg.bus == "rg60" and set(reg.v) == {"a"}
    assert base.terminal("Transformer.Reg3", 2).bus == "rg60" and set(base.terminal("Transformer.Reg3", 2).v) == {"c"}
    assert set(base.terminal("Line.632645", 1).v) == {"b", "c"}
    assert set(base.terminal("Generator.pv652", 1).v) == {"a"}
    assert base.terminal("Transformer.XFM1", 2).bus == "634"
    assert base.terminal("Capacitor.cap611", 1).bus == "611"
    assert base.terminals["Transformer.Reg2/2"].element == "Transformer.Reg2"  # the script's spelling


def test_kirchhoff_current_law_at_rg60(base: Solution) -> None:
    # Each regulator's output current (into the regulator at terminal 2) is the feeder head's current
    # flowing out of rg60 into Line.650632, with the opposite sign.
    head = base.terminal("Line.650632", 1)
    for phase, reg in zip("abc", ("Reg1", "Reg2", "Reg3"), strict=True):
        out = base.terminal(f"Transformer.{reg}", 2).i[phase]
        assert abs(out + head.i[phase]) < 1e-6 * abs(head.i[phase])


def test_feeder_head_power_is_the_published_load_plus_losses(base: Solution) -> None:
    # Published spot + distributed loads total 3466 kW and 2102 kvar at nominal voltage; with the
    # published voltages (constant-Z/I loads move a little), line losses (~110 kW) and the capacitors'
    # 700 kvar (scaled by V^2), the head carries roughly 3.5-3.7 MW and 1.6-1.9 Mvar.
    s = base.terminal("Line.650632", 1).s_total_va
    assert 3.45e6 < s.real < 3.7e6
    assert 1.55e6 < s.imag < 1.9e6


# ---------------------------------------------------------------------------- regulators
def test_automatic_regulator_control_holds_the_compensated_voltage_in_band() -> None:
    # Published RG60 settings: 122 V level, 2 V bandwidth, PT 20:1, CT 700 A, R = 3 V, X = 9 V. The
    # line-drop compensator's voltage V/PT - (R + jX) I/CT must end within 122 +- 1 V on every phase.
    feeder = Feeder.from_file(DSS)
    sol = feeder.solve()
    head = sol.terminal("Line.650632", 1)
    for phase, reg in zip("abc", ("Reg1", "Reg2", "Reg3"), strict=True):
        v = sol.terminal(f"Transformer.{reg}", 2).v[phase]
        v_comp = abs(v / 20 - (3 + 9j) * head.i[phase] / 700)
        assert 121.0 - 1e-6 <= v_comp <= 123.0 + 1e-6, (phase, v_comp)
    assert all(-16 <= t <= 16 for t in feeder.regulator_taps())


def test_fixed_taps_are_not_moved_by_opendss_control() -> None:
    feeder = Feeder.from_file(DSS)
    feeder.set_regulator_taps((0, 0, 0))
    sol = feeder.solve()
    assert feeder.regulator_taps() == (0, 0, 0)
    # tap 0: rg60 = 650 (ratio 1, the regulator's impedance is negligible)
    for phase in "abc":
        assert sol.v_pu("rg60")[phase] == pytest.approx(sol.v_pu("650")[phase], abs=2e-4)


def test_one_tap_step_on_phase_a_moves_rg60_a_by_0_625_percent(feeder: Feeder, base: Solution) -> None:
    feeder.set_regulator_taps((PUBLISHED_TAPS[0] + 1, *PUBLISHED_TAPS[1:]))
    sol = feeder.solve()
    assert feeder.regulator_taps() == (11, 8, 11)
    dv = sol.v_pu("rg60")["a"] - base.v_pu("rg60")["a"]
    assert dv == pytest.approx(TAP_STEP_PU * 1.0, abs=3e-4)  # 650 sits at 1.0 pu
    for phase in "bc":  # the other phases' taps did not move: only load coupling, tiny
        assert abs(sol.v_pu("rg60")[phase] - base.v_pu("rg60")[phase]) < 5e-4


@pytest.mark.parametrize(
    "taps", [(17, 0, 0), (0, -17, 0), (0, 0, 1.5), (0, 0), (0, 0, 0, 0), (True, 0, 0), "10,8,11"], ids=repr
)
def test_bad_taps_raise_naming_the_value_and_range(feeder: Feeder, taps: object) -> None:
    with pytest.raises(FeederError, match=r"tap") as err:
        feeder.set_regulator_taps(taps)  # type: ignore[arg-type]
    assert "-16..16" in str(err.value) or "3 integers" in str(err.value)


# ---------------------------------------------------------------------------- capacitors and PV
def test_opening_cap675_lowers_675_by_its_reactive_drop(feeder: Feeder, base: Solution) -> None:
    # 200 kvar per phase at 2.4 kV is 83 A; the positive-sequence reactance from rg60 to 675 is about
    # 0.38 mi x 0.59 ohm/mi (601) twice + 0.095 mi x 0.41 ohm/mi (606) = 0.48 ohm, so 40 V = 1.7 %.
    assert feeder.capacitor_closed("cap675")
    feeder.set_capacitor("cap675", False)
    assert not feeder.capacitor_closed("CAP675")
    opened = feeder.solve()
    for phase in "abc":
        drop = base.v_pu("675")[phase] - opened.v_pu("675")[phase]
        assert 0.010 < drop < 0.025, (phase, drop)
    feeder.set_capacitor("cap675", True)
    closed = feeder.solve()
    for phase in "abc":
        assert closed.v_pu("675")[phase] == pytest.approx(base.v_pu("675")[phase], abs=SOLVE_TOL)


def test_absorbing_vars_at_pv675_lowers_675(feeder: Feeder, base: Solution) -> None:
    # -300 kvar is 100 kvar per phase = 42 A through ~0.48 ohm: ~20 V = 0.8 %.
    feeder.set_pv("pv675", 0.0, -300.0)
    sol = feeder.solve()
    for phase in "abc":
        drop = base.v_pu("675")[phase] - sol.v_pu("675")[phase]
        assert 0.005 < drop < 0.013, (phase, drop)
    # The generator terminal shows the 300 kvar flowing INTO it (Solution's convention).
    assert sol.terminal("Generator.pv675").s_total_va.imag == pytest.approx(300e3, rel=1e-3)


def test_pv_output_appears_at_its_terminal_and_unloads_the_feeder_head(feeder: Feeder, base: Solution) -> None:
    feeder.set_pv("pv680", 400.0, 0.0)
    feeder.set_pv("pv652", 80.0, 60.0)
    sol = feeder.solve()
    assert sol.terminal("Generator.pv680").s_total_va.real == pytest.approx(-400e3, rel=1e-3)
    assert sol.terminal("Generator.pv652").s_va("a") == pytest.approx(complex(-80e3, -60e3), rel=1e-3)
    # 480 kW injected downstream: the head carries ~480 kW less (losses change by a few kW).
    dp = base.terminal("Line.650632").s_total_va.real - sol.terminal("Line.650632").s_total_va.real
    assert 440e3 < dp < 520e3


def test_pv_sites_describe_the_four_sites(feeder: Feeder) -> None:
    sites = feeder.pv_sites()
    assert {n: (s.bus, s.phases, s.kva) for n, s in sites.items()} == {
        "pv675": ("675", ("a", "b", "c"), 2500.0),
        "pv680": ("680", ("a", "b", "c"), 2000.0),
        "pv634": ("634", ("a", "b", "c"), 250.0),
        "pv652": ("652", ("a",), 100.0),
    }
    assert all(s.kw_peak == s.kva for s in sites.values())


@pytest.mark.parametrize(
    ("name", "p", "q", "match"),
    [
        ("pv999", 0.0, 0.0, "pv999.*sites: pv675"),
        ("pv675", -1.0, 0.0, "p_kw=-1.0.*2500 kVA"),
        ("pv675", 2000.0, 2000.0, "q_kvar=2000.0.*2500 kVA"),
        ("pv652", float("nan"), 0.0, "finite"),
        ("pv652", 0.0, "1", "finite"),
    ],
    ids=repr,
)
def test_bad_pv_setpoints_raise(feeder: Feeder, name: str, p: object, q: object, match: str) -> None:
    with pytest.raises(FeederError, match=match):
        feeder.set_pv(name, p, q)  # type: ignore[arg-type]


def test_unknown_capacitor_raises_naming_the_allowed(feeder: Feeder) -> None:
    with pytest.raises(FeederError, match=r"'cap999'.*cap675, cap611"):
        feeder.set_capacitor("cap999", True)
    with pytest.raises(FeederError, match=r"'cap1'"):
        feeder.capacitor_closed("cap1")


# ---------------------------------------------------------------------------- faults and switching
def test_three_phase_fault_at_671_collapses_voltage_and_multiplies_head_current(feeder: Feeder, base: Solution) -> None:
    # Positive-sequence impedance rg60 -> 671: 2 x 0.379 mi x (0.19 + j0.59) ohm/mi = 0.14 + j0.45 ohm,
    # so about 1.06 x 2400 V / 0.47 ohm = 5.4 kA, ten times the ~560 A load current.
    feeder.set_fault("671")
    sol = feeder.solve()
    assert sol.converged
    head = sol.terminal("Line.650632")
    for phase in "abc":
        assert sol.v_pu("671")[phase] < 0.1
        assert 3_500 < abs(head.i[phase]) < 9_000
        assert abs(head.i[phase]) > 5 * abs(base.terminal("Line.650632").i[phase])
    feeder.clear_fault()
    cleared = feeder.solve()
    assert cleared.v_pu("671")["a"] == pytest.approx(base.v_pu("671")["a"], abs=SOLVE_TOL)


def test_single_phase_fault_moves_and_only_collapses_its_phase(feeder: Feeder) -> None:
    feeder.set_fault("671")
    feeder.set_fault("675", phases="a", r_ohm=0.05)  # a new call moves the fault
    sol = feeder.solve()
    assert sol.v_pu("675")["a"] < 0.1
    assert sol.v_pu("675")["b"] > 0.9 and sol.v_pu("675")["c"] > 0.9
    assert sol.v_pu("671")["b"] > 0.9  # the three-phase fault at 671 is gone


@pytest.mark.parametrize(
    ("bus", "phases", "r", "match"),
    [
        ("999", "abc", 0.01, "'999'.*buses: 611"),
        ("652", "b", 0.01, "phases='b'.*'a'"),
        ("671", "", 0.01, "phases=''"),
        ("671", "aa", 0.01, "phases='aa'"),
        ("671", "abc", 0.0, "r_ohm=0.0"),
        ("671", "abc", float("inf"), "finite"),
    ],
)
def test_bad_faults_raise(feeder: Feeder, bus: str, phases: str, r: float, match: str) -> None:
    with pytest.raises(FeederError, match=match):
        feeder.set_fault(bus, phases, r)


def test_opening_switch_671692_deenergises_692_and_675(feeder: Feeder, base: Solution) -> None:
    feeder.set_switch("Line.671692", False)
    assert not feeder.switch_closed("line.671692")
    sol = feeder.solve()
    for bus in ("692", "675"):
        assert all(v < 1e-6 for v in sol.v_pu(bus).values()), bus
    assert all(v > 0.95 for v in sol.v_pu("671").values())
    feeder.set_switch("Line.671692", True)
    assert feeder.switch_closed("Line.671692")
    assert feeder.solve().v_pu("675")["a"] == pytest.approx(base.v_pu("675")["a"], abs=SOLVE_TOL)


def test_opening_the_feeder_breaker_deenergises_everything_downstream(feeder: Feeder) -> None:
    feeder.set_switch("Line.650632", False)
    sol = feeder.solve()
    assert all(max(sol.v_pu(b).values()) < 1e-6 for b in ("632", "634", "671", "675", "611", "652"))
    assert abs(sol.terminal("Line.650632").i["a"]) < 1e-6
    assert sol.v_pu("rg60")["a"] > 1.0  # the regulator side stays live


def test_unknown_switch_raises_naming_the_lines(feeder: Feeder) -> None:
    with pytest.raises(FeederError, match=r"'Line.999'.*Line.650632"):
        feeder.set_switch("Line.999", False)
    with pytest.raises(FeederError, match=r"'Transformer.Reg1'"):
        feeder.set_switch("Transformer.Reg1", False)


# ---------------------------------------------------------------------------- profiles into the physics
def test_load_scale_scales_the_head_power_and_reaches_the_solution(feeder: Feeder, base: Solution) -> None:
    feeder.set_load_scale(0.5)
    feeder.set_irradiance(0.7)
    feeder.set_frequency(59.95, -0.1)
    sol = feeder.solve(t=1234.0)
    ratio = sol.terminal("Line.650632").s_total_va.real / base.terminal("Line.650632").s_total_va.real
    assert 0.45 < ratio < 0.55  # half the load, losses fall with the square of the current
    assert (sol.t, sol.load_scale, sol.irradiance_pu, sol.frequency_hz, sol.rocof_hz_s) == (
        1234.0,
        0.5,
        0.7,
        59.95,
        -0.1,
    )


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda f: f.set_load_scale(-0.1), "load scale=-0.1: allowed 0..10"),
        (lambda f: f.set_load_scale(float("nan")), "load scale=nan"),
        (lambda f: f.set_irradiance(2.0), "irradiance=2.0: allowed 0..1.5"),
        (lambda f: f.set_frequency(0.0), "frequency=0.0: allowed 40..70"),
        (lambda f: f.set_frequency(60.0, float("inf")), "rocof=inf"),
    ],
)
def test_bad_profile_values_raise(feeder: Feeder, call: object, match: str) -> None:
    with pytest.raises(FeederError, match=match):
        call(feeder)  # type: ignore[operator]


# ---------------------------------------------------------------------------- engines and scripts
def test_two_feeders_in_one_process_do_not_share_an_engine() -> None:
    a = Feeder.from_file(DSS)
    b = Feeder.from_file(DSS)
    a.set_regulator_taps(PUBLISHED_TAPS)
    b.set_regulator_taps(PUBLISHED_TAPS)
    a.set_capacitor("cap675", False)
    va = a.solve().v_pu("675")["a"]
    vb = b.solve().v_pu("675")["a"]
    assert vb - va > 0.01  # b still has its capacitor in
    assert b.capacitor_closed("cap675") and not a.capacitor_closed("cap675")
    assert a.solve().v_pu("675")["a"] == pytest.approx(va, abs=SOLVE_TOL)


def test_compiling_does_not_change_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Feeder.from_file(DSS)
    assert Path.cwd() == tmp_path


def test_missing_or_broken_scripts_raise(tmp_path: Path) -> None:
    with pytest.raises(FeederError, match="cannot read the feeder script.*nope.dss"):
        Feeder.from_file(tmp_path / "nope.dss")
    bad = tmp_path / "bad.dss"
    bad.write_text("New Circuit.x basekv=4.16\nNew Line.l1 bus1=sourcebus bus2=b linecode=nosuchcode\n")
    with pytest.raises(FeederError, match="OpenDSS cannot compile"):
        Feeder.from_file(bad)
    empty = tmp_path / "empty.dss"
    empty.write_text("Clear\n")
    with pytest.raises(FeederError, match="no circuit"):
        Feeder.from_file(empty)


def test_a_collapsing_power_flow_reports_not_converged_without_raising(tmp_path: Path) -> None:
    # 20 MW of constant-power load (held constant down to 1 % voltage) behind a 1 ohm line at 4.16 kV:
    # past the nose of the PV curve (max transfer ~ V^2 / 2X = 8.7 MW), no solution exists.
    script = tmp_path / "collapse.dss"
    script.write_text(
        "Clear\nNew Circuit.c basekv=4.16 pu=1 bus1=src MVAsc3=1e6 MVAsc1=1e6\n"
        "New Line.l1 phases=3 bus1=src bus2=b r1=0.1 x1=1 r0=0.1 x0=1 c1=0 c0=0 length=1\n"
        "New Load.big bus1=b phases=3 kV=4.16 kW=20000 kvar=0 model=1 vminpu=0.01\n"
        "Set VoltageBases=[4.16]\nCalcVoltageBases\nSet MaxIterations=20\n"
    )
    feeder = Feeder.from_file(script)
    sol = feeder.solve()
    assert sol.converged is False
    with pytest.raises(FeederError, match="regulators on phases a, b, c"):
        feeder.set_regulator_taps((0, 0, 0))


# ---------------------------------------------------------------------------- profiles
MIN = 60.0


def test_load_profile_spans_0_4_to_1_0_with_a_night_trough_and_evening_peak() -> None:
    prof = load_profile()
    values = [prof.value(m * MIN) for m in range(1440)]
    assert min(values) == pytest.approx(0.4) and max(values) == pytest.approx(1.0)
    assert 2 * 60 <= values.index(min(values)) <= 5 * 60  # trough in the small hours
    assert 16 * 60 <= values.index(max(values)) <= 21 * 60  # evening peak
    assert prof.value(12 * 3600) > 0.7  # commercial daytime


def test_profiles_interpolate_linearly_and_repeat_daily() -> None:
    prof = load_profile()
    t0 = 1_700_000_000.0 - 1_700_000_000.0 % DAY_S + 8 * 3600  # 08:00 UTC on some day
    a, b = prof.value(t0), prof.value(t0 + MIN)
    assert prof.value(t0 + 15.0) == pytest.approx(a + (b - a) * 0.25, abs=1e-12)
    assert prof.value(t0 + DAY_S) == pytest.approx(a, abs=1e-12)
    assert prof.value(t0) == pytest.approx(prof.points[8 * 60])
    shifted = load_profile(offset_s=3600.0)
    assert shifted.value(t0) == pytest.approx(prof.value(t0 + 3600.0))


def test_clear_day_is_zero_at_night_and_peaks_at_noon() -> None:
    prof = irradiance_profile("clear")
    day = [prof.value(m * MIN) for m in range(1440)]
    assert all(v == 0.0 for v in day[: 6 * 60]) and all(v == 0.0 for v in day[18 * 60 + 1 :])
    assert day.index(max(day)) == 12 * 60 and max(day) == pytest.approx(1.0)
    # Haurwitz at 35 deg N on the equinox, 09:00: cos z = cos 35 cos 45 = 0.579;
    # GHI = 1098 * 0.579 * exp(-0.057 / 0.579) = 577 W/m2; noon: cos z = 0.819 -> 838 W/m2.
    assert prof.value(9 * 3600) == pytest.approx(577.0 / 838.6, abs=0.003)


def test_cloudy_day_never_exceeds_clear_and_has_seeded_transients() -> None:
    clear = irradiance_profile("clear")
    cloudy = irradiance_profile("cloudy", seed=13)
    step = 5.0
    samples = [(k * step, clear.value(k * step), cloudy.value(k * step)) for k in range(int(DAY_S / step))]
    assert all(cl <= c + 1e-12 for _, c, cl in samples)
    assert irradiance_profile("cloudy", seed=13).events == cloudy.events
    assert irradiance_profile("cloudy", seed=14).events != cloudy.events
    # Transients measured from the samples: runs where cloudy < 97 % of clear.
    runs: list[list[tuple[float, float]]] = []
    for t, c, cl in samples:
        if c > 0 and cl < 0.97 * c:
            if runs and t - runs[-1][-1][0] <= step:
                runs[-1].append((t, cl / c))
            else:
                runs.append([(t, cl / c)])
    assert len(runs) >= 10
    for run in runs:
        depth = 1 - min(r for _, r in run)
        assert CLOUD_DEPTH[0] - 0.01 <= depth <= CLOUD_DEPTH[1] + 0.01
        deep = [t for t, r in run if r <= 1 - depth + 1e-9]
        assert CLOUD_HOLD_S[0] - step <= deep[-1] - deep[0] <= CLOUD_HOLD_S[1] + step


def test_cloud_ramps_last_tens_of_seconds_at_one_second_resolution() -> None:
    clear = irradiance_profile("clear")
    cloudy = irradiance_profile("cloudy", seed=13)
    for ev in cloudy.events:
        start = int(ev.start_s)
        ratio = [cloudy.value(t) / clear.value(t) for t in range(start, start + 120)]
        floor = min(ratio)
        # time from leaving 99 % of clear to reaching 1 % above the floor
        t_in = next(k for k, r in enumerate(ratio) if r < 0.99)
        t_deep = next(k for k, r in enumerate(ratio) if r <= floor + 0.01)
        assert CLOUD_RAMP_S[0] * 0.9 - 1 <= t_deep - t_in <= CLOUD_RAMP_S[1] + 1
        # a ramp, not a step: no 1 s change exceeds depth / 15 s
        assert max(abs(a - b) for a, b in zip(ratio, ratio[1:], strict=False)) <= (1 - floor) / CLOUD_RAMP_S[0] + 1e-9


def test_bad_profile_arguments_raise() -> None:
    with pytest.raises(ProfileError, match="day='rainy': allowed clear, cloudy"):
        irradiance_profile("rainy")
    with pytest.raises(ProfileError, match="peak_pu=0"):
        irradiance_profile("clear", peak_pu=0)
    with pytest.raises(ProfileError, match="low=0.9, high=0.5"):
        load_profile(0.9, 0.5)
    with pytest.raises(ProfileError, match="expected 1440 finite points, got 3"):
        Profile("x", (1.0, 2.0, 3.0))
    with pytest.raises(ProfileError, match="offset_s=nan"):
        Profile("x", (0.0,) * 1440, offset_s=float("nan"))

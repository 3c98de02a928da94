"""The regulator function's rules, one row each: the direction of a band move, the comparison against ANSI
C84.1 Range A (114..126 V on the 120 V base, Table 1), the limits, the reverse-power hold and the manual tap steps
can each be caught wrong here. A tap step is 0.625 % of 120 V = 0.75 V (32 steps over +-10 %, ANSI C57.15)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import ConfigError, load_config
from agent.control.config import RegulatorConfig, VoltagePoint
from agent.control.regulator import BAND_CENTER, TAPS, BandCentreOwner, RegulatorFunction, assess, decide
from agent.control.view import View
from agent.points import Quality, Reading

NOW = 1_781_956_800.0
CFG = RegulatorConfig(
    device="reg", band_center_min_v=118.0, band_center_max_v=124.0, bandwidth_min_v=1.5, bandwidth_max_v=3.0,
    reverse_power="hold", head_power_point="meter.p", stale_after_s=30.0, band_center_v=122.0, bandwidth_v=2.0,
    voltage_points=(VoltagePoint("m1.v", 2401.8), VoltagePoint("m2.v", 120.0)), max_tap_step=1,
)  # fmt: skip
MANUAL = RegulatorConfig(**{**{k: getattr(CFG, k) for k in CFG.__slots__}, "operation": "manual"})


def view(bc: float = 122.0, bw: float = 2.0, p: float = 1e6, v: tuple[float, float] = (121.0, 119.0), *,
         age: float = 1.0, quality: Quality = Quality.GOOD, taps: tuple[int, int, int] = (5, 5, 5),
         v_reg: tuple[float, float, float] = (122.0, 122.0, 122.0)) -> View:  # fmt: skip
    snap = {
        "reg.band_center_v": Reading("reg.band_center_v", NOW - 1, bc, "V"),
        "reg.bandwidth_v": Reading("reg.bandwidth_v", NOW - 1, bw, "V"),
        "meter.p": Reading("meter.p", NOW - 1, p, "W"),
        "m1.v": Reading("m1.v", NOW - age, v[0] / 120.0 * 2401.8, "V", quality),  # primary volts
        "m2.v": Reading("m2.v", NOW - 1, v[1], "V"),  # a PT secondary, 120 V base
    }
    for ph, t, vr in zip("abc", taps, v_reg, strict=True):
        snap[f"reg.tap_{ph}"] = Reading(f"reg.tap_{ph}", NOW - 1, t, "")
        snap[f"reg.v_reg_{ph}"] = Reading(f"reg.v_reg_{ph}", NOW - 1, vr, "V")
    return View(snap, NOW)


@pytest.mark.parametrize(
    ("kw", "rule", "values"),
    [
        ({"v": (126.2, 120.0)}, "voltage_high", {"band_center_v": 121.2}),  # above Range A: one step lower
        ({"v": (126.0, 120.0)}, "none", None),  # 126 V is inside Range A (edges included)
        ({"v": (120.0, 113.9)}, "voltage_low", {"band_center_v": 122.8}),  # below Range A: one step higher
        ({"v": (120.0, 114.0)}, "none", None),  # 114 V is inside
        ({"v": (126.5, 114.5)}, "voltage_spread", None),  # lowering would put the lowest below 114
        ({"v": (125.5, 113.5)}, "voltage_spread", None),  # raising would put the highest above 126
        ({"v": (127.0, 113.0)}, "voltage_spread", None),  # both out: no move helps
        ({"v": (126.5, 120.0), "bc": 118.4}, "voltage_high", {"band_center_v": 118.0}),  # clamped at the minimum
        ({"v": (126.5, 120.0), "bc": 118.0}, "voltage_spread", None),  # at the minimum already: nothing left
        ({"bc": 125.0}, "band_center_limit", {"band_center_v": 124.0}),  # above its limit: brought back
        ({"bc": 117.0}, "band_center_limit", {"band_center_v": 118.0}),
        ({"bw": 1.0}, "bandwidth_limit", {"band_center_v": 122.0, "bandwidth_v": 1.5}),  # too narrow: widened
        ({"bw": 4.0, "bc": 125.0}, "bandwidth_limit", {"band_center_v": 124.0, "bandwidth_v": 3.0}),
        ({"v": (126.5, 120.0), "p": -2e5}, "reverse_power", None),  # the head exports: hold
        ({"bc": 125.0, "p": -2e5}, "band_center_limit", {"band_center_v": 124.0}),  # limits hold even so
        ({"v": (126.5, 120.0), "age": 31.0}, "inputs_stale", None),
        ({"v": (126.5, 120.0), "quality": Quality.STALE}, "inputs_stale", None),
    ],
)
def test_supervise_moves_the_band_centre_the_right_way_on_the_right_comparison(kw, rule, values) -> None:
    call = assess(view(**kw), CFG)
    assert call.rule == rule
    assert call.values == values
    assert (call.action == BAND_CENTER) == (values is not None)


def test_reverse_power_allow_moves_even_while_the_head_exports() -> None:
    cfg = RegulatorConfig(**{**{k: getattr(CFG, k) for k in CFG.__slots__}, "reverse_power": "allow",
                             "head_power_point": None})  # fmt: skip
    assert assess(view(v=(126.5, 120.0), p=-2e5), cfg).rule == "voltage_high"


def test_while_cvr_owns_the_band_centre_supervise_holds_its_range_a_moves_but_keeps_the_limits() -> None:
    owner = BandCentreOwner(cvr_engaged=True, cvr_target_v=120.0)
    assert assess(view(v=(126.5, 120.0)), CFG, owner).rule == "cvr_engaged"
    assert assess(view(bc=117.0), CFG, owner).rule == "band_center_limit"
    assert assess(view(v=(121.0, 119.0)), CFG, owner).rule == "none"  # nothing called for: nothing to hold


@pytest.mark.parametrize(
    ("taps", "v_reg", "rule", "targets"),
    [
        ((5, 5, 5), (122.0, 122.0, 122.0), "none", None),  # inside 121..123
        ((5, 5, 5), (123.0, 121.0, 122.0), "none", None),  # the edges count as inside
        ((5, 5, 5), (123.2, 122.0, 122.0), "tap_lower", (4, 5, 5)),  # phase a high: its tap down
        ((5, 5, 5), (122.0, 120.8, 122.0), "tap_raise", (5, 6, 5)),  # phase b low: its tap up
        ((5, 5, 5), (125.0, 119.0, 122.0), "tap_spread", (4, 6, 5)),  # far out: still max_tap_step (1) each
        ((-16, 5, 5), (120.0, 122.0, 122.0), "tap_raise", (-15, 5, 5)),
        ((16, 5, 5), (120.0, 122.0, 122.0), "none", None),  # at the end stop: nothing to move
    ],
)
def test_manual_steps_each_phase_toward_the_band(taps, v_reg, rule, targets) -> None:
    call = assess(view(taps=taps, v_reg=v_reg), MANUAL)
    assert call.rule == rule
    if targets is None:
        assert call.action is None
    else:
        assert call.action == TAPS
        assert tuple(int(call.values[f"tap_{p}"]) for p in "abc") == targets


def test_manual_moves_several_steps_when_allowed_and_follows_cvr_s_band_centre() -> None:
    cfg = RegulatorConfig(**{**{k: getattr(MANUAL, k) for k in MANUAL.__slots__}, "max_tap_step": 3})
    # 124.5 V is 2.5 V above the 122 V centre: about 3 steps of 0.75 V, all allowed
    call = assess(view(v_reg=(124.5, 122.0, 122.0)), cfg)
    assert int(call.values["tap_a"]) == 2
    # CVR has the centre at 120 V: 122 V is above 121 V, one step down per phase
    call = assess(view(), MANUAL, BandCentreOwner(cvr_engaged=True, cvr_target_v=120.0))
    assert call.rule == "tap_lower" and [int(call.values[f"tap_{p}"]) for p in "abc"] == [4, 4, 4]


def test_manual_with_stale_taps_proposes_nothing() -> None:
    stale = View({"reg.tap_a": Reading("reg.tap_a", NOW - 100, 5, "")}, NOW)
    assert assess(stale, MANUAL).rule == "inputs_stale"


def test_decide_builds_the_command_and_holds_with_a_reason() -> None:
    ids = iter(["d1", "d2", "d3"])
    d = decide(view(v=(126.2, 120.0)), NOW, CFG, "control", id_factory=lambda: next(ids))
    assert d is not None and d.command is not None
    assert (d.rule, d.command.action, dict(d.command.values)) == ("voltage_high", BAND_CENTER, {"band_center_v": 121.2})
    assert {i.point for i in d.inputs} >= {"reg.band_center_v", "meter.p", "m1.v", "m2.v"}
    held = decide(view(v=(126.5, 120.0), p=-1.0), NOW, CFG, "control", id_factory=lambda: next(ids))
    assert held is not None and held.command is None and held.outcome == "held" and held.rule == "reverse_power"
    assert decide(view(), NOW, CFG, "control") is None  # nothing called for, nothing said
    d = decide(view(v_reg=(123.2, 122.0, 122.0)), NOW, MANUAL, "control")
    assert d is not None and dict(d.command.values) == {"tap_a": 4, "tap_b": 5, "tap_c": 5}
    assert all(isinstance(v, int) for v in d.command.values.values())


def test_the_function_runs_in_layer_1_at_its_cadence() -> None:
    f = RegulatorFunction(CFG, "advise")
    assert (f.layer, f.cadence_s, f.devices, f.policy.mode, f.policy.min_dwell_s) == (1, 30.0, ("reg",), "advise", 60.0)


# ---- its configuration: the keys the function adds to [control.regulator], and the shipped demo site ----------

ROOT = Path(__file__).resolve().parents[1]
MAPS = ROOT / "config" / "maps"
SITE = f"""
site_id = "s1"
[store]
path = "db/agent.db"
[uplink]
broker = "mqtt://127.0.0.1:1"
[[devices]]
name = "meter"
protocol = "modbus-tcp"
host = "127.0.0.1"
port = 502
map = "{MAPS / "sim-meter.toml"}"
[[devices]]
name = "reg"
protocol = "modbus-tcp"
host = "127.0.0.1"
port = 503
map = "{MAPS / "sim-regulator.toml"}"
[control]
mode = "control"
"""


def _site(tmp_path: Path, regulator: str) -> Path:
    path = tmp_path / "site.toml"
    path.write_text(SITE + regulator + 'heartbeat_point = "heartbeat"\nhead_power_point = "meter.p_total"\n')
    return path


def test_the_normal_band_centre_must_lie_within_the_limits(tmp_path: Path) -> None:
    bad = '[control.regulator]\ndevice = "reg"\nband_center_v = 125.0\nband_center_max_v = 124.0\n'
    with pytest.raises(ConfigError) as info:
        load_config(_site(tmp_path, bad))
    (issue,) = [i for i in info.value.issues if i.key == "control.regulator.band_center_v"]
    assert "118..124" in str(issue)


def test_a_manual_band_narrower_than_a_tap_step_loads_with_a_warning(tmp_path: Path) -> None:
    raw = ('[control.regulator]\ndevice = "reg"\noperation = "manual"\nbandwidth_v = 0.5\nband_center_v = 121.0\n'
           'voltage_points = [{ point = "meter.v_a", nominal_v = 2401.8 }]\n')  # fmt: skip
    cfg = load_config(_site(tmp_path, raw))
    reg = cfg.control.regulator
    assert (reg.operation, reg.bandwidth_v, reg.band_center_v) == ("manual", 0.5, 121.0)
    assert reg.voltage_points[0].point == "meter.v_a"
    assert any(w.key == "control.regulator.bandwidth_v" and "0.75" in str(w) for w in cfg.warnings)


def test_the_shipped_sim_site_supervises_the_regulator_and_runs_cvr_in_advise() -> None:
    c = load_config(ROOT / "config" / "agent-sim.toml").control
    reg, cvr = c.regulator, c.cvr
    # [control] mode is "control" for the demo's cap bank (tests/test_control_config.py); these two advise
    assert c.function_mode(reg.mode) == "advise" and c.function_mode(cvr.mode) == "advise"
    assert (reg.device, reg.operation, reg.reverse_power) == ("reg-ctl", "supervise", "hold")
    assert reg.band_center_v == 122.0, "the bench regulator's panel band centre (docs/devices/sim-regulator.md)"
    assert reg.heartbeat_point == "heartbeat"
    assert cvr.enabled and cvr.floor_v == 116.0  # ANSI C84.1 Range A 114 V + 2 V
    assert {vp.point for vp in cvr.voltage_points} == {"cap675-ctl.v_a", "cap675-ctl.v_b", "cap675-ctl.v_c"}

"""The [control] section: typed, checked whole, every problem named with its key, value and what is allowed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agent.config import ConfigError, load_config
from agent.control import ieee1547
from agent.control.config import ControlConfig

ROOT = Path(__file__).resolve().parents[1]
MAPS = ROOT / "config" / "maps"


def device(name: str, port: int, map_file: str) -> str:
    return (f'[[devices]]\nname = "{name}"\nprotocol = "modbus-tcp"\nhost = "127.0.0.1"\nport = {port}\n'
            f'unit_id = 1\nmap = "{MAPS / map_file}"\n')  # fmt: skip


def sunspec_device(name: str, port: int) -> str:
    return f'[[devices]]\nname = "{name}"\nprotocol = "sunspec"\nhost = "127.0.0.1"\nport = {port}\nunit_id = 1\n'


SITE = (
    'site_id = "s1"\n[store]\npath = "db/agent.db"\n[uplink]\nbroker = "mqtt://127.0.0.1:1"\n'
    + device("meter", 502, "sim-meter.toml")
    + device("relay", 503, "sim-relay.toml")
    + device("cap", 504, "sim-capbank.toml")
    + device("reg", 505, "sim-regulator.toml")
    + sunspec_device("pv1", 506)
    + sunspec_device("pv2", 507)
)

CONTROL = """
[control]
mode = "control"
[control.interlocks]
relay = "relay"
head_voltage_points = [{ point = "meter.v_a", nominal_v = 2401.8 }]
[control.capbank]
device = "cap"
var_point = "meter.q_total"
q_close_above_var = 1200000
q_open_below_var = 300000
bank_var = 700000
voltage_points = [{ point = "cap.v_control", nominal_v = 120.0 }]
heartbeat_point = "auto_delay_s"
[control.regulator]
device = "reg"
head_power_point = "meter.p_total"
[control.cvr]
enabled = true
voltage_points = [{ point = "meter.v_c", nominal_v = 2401.8 }]
[[control.der]]
name = "west"
devices = ["pv1", "pv2"]
volt_var = "category-b"
volt_watt = "default"
freq_droop = "default"
"""


def load(tmp_path: Path, control: str = CONTROL) -> ControlConfig:
    path = tmp_path / "site.toml"
    path.write_text(SITE + control)
    cfg = load_config(path)
    assert cfg.control is not None
    return cfg.control


def issues(tmp_path: Path, control: str) -> dict[str, str]:
    path = tmp_path / "site.toml"
    path.write_text(SITE + control)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return {i.key: str(i) for i in info.value.issues}


def test_a_full_control_section_loads_with_the_standards_curves(tmp_path: Path) -> None:
    c = load(tmp_path)
    assert c.mode == "control" and c.interlocks.relay == "relay"
    assert c.interlocks.head_voltage_points[0].on_120v_base(2401.8) == pytest.approx(120.0)
    cap = c.capbank
    assert cap is not None and (cap.device, cap.var_point, cap.var_scale) == ("cap", "meter.q_total", 1.0)
    assert (cap.q_close_above_var, cap.q_open_below_var, cap.bank_var) == (1.2e6, 3e5, 7e5)
    assert cap.heartbeat_point == "auto_delay_s"
    assert c.regulator is not None and c.regulator.operation == "supervise"
    assert c.cvr is not None and c.cvr.floor_v == 116.0  # ANSI C84.1 Range A 114 V + the 2 V default margin
    (g,) = c.der
    assert g.devices == ("pv1", "pv2")
    assert g.volt_var is ieee1547.default("volt_var.category-b")
    assert g.volt_watt is ieee1547.default("volt_watt.default")
    assert g.freq_droop is ieee1547.default("freq_droop.default")
    assert c.controlled_devices() == ("cap", "reg", "pv1", "pv2")


def test_no_control_section_commands_nothing_and_the_default_mode_is_monitor(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text(SITE)
    assert load_config(path).control is None
    assert load(tmp_path, "[control]\n").mode == "monitor"


def test_a_function_mode_is_never_above_the_global_one(tmp_path: Path) -> None:
    c = load(tmp_path, CONTROL.replace('mode = "control"', 'mode = "advise"', 1))
    assert c.capbank is not None and c.capbank.mode == "control"
    assert c.function_mode(c.capbank.mode) == "advise"
    assert c.function_mode("monitor") == "monitor"


def test_explicit_curves_are_checked_against_the_standard(tmp_path: Path) -> None:
    explicit = CONTROL.replace('volt_var = "category-b"', 'volt_var = { v_pu = [0.9, 0.97, 1.03, 1.1], '
                               'q_pct = [30, 0, 0, -30], response_s = 8 }')  # fmt: skip
    (g,) = load(tmp_path, explicit).der
    assert g.volt_var == ieee1547.VoltVarCurve((0.9, 0.97, 1.03, 1.1), (30.0, 0.0, 0.0, -30.0), 1.0, 8.0)


@pytest.mark.parametrize(
    ("old", "new", "key", "text"),
    [
        ('mode = "control"', 'mode = "auto"', "control.mode", "must be one of 'monitor', 'advise', 'control'"),
        ('device = "cap"', 'device = "capx"', "control.capbank.device", "is not a device of [[devices]]"),
        (
            'device = "cap"',
            'device = "meter"',
            "control.capbank.device",
            "must be a capacitor bank controller: its register map lacks",
        ),
        ('device = "reg"', 'device = "cap"', "control.regulator.device", "must be a regulator control"),
        ('relay = "relay"', 'relay = "meter"', "control.interlocks.relay", "must be a relay"),
        ('var_point = "meter.q_total"', 'var_point = "meter.v_a"', "control.capbank.var_point", "must be in var"),
        (
            'var_point = "meter.q_total"',
            'var_point = "meter.q_sum"',
            "control.capbank.var_point",
            "has no point 'q_sum'",
        ),
        (
            "q_open_below_var = 300000",
            "q_open_below_var = 600000",
            "control.capbank.q_open_below_var",
            "a dead band wider than the bank's step",
        ),
        (
            'voltage_points = [{ point = "cap.v_control", nominal_v = 120.0 }]',
            'voltage_points = [{ point = "cap.v_control", nominal_v = 120.0 }]\nv_close_below_v = 124.0',
            "control.capbank.v_open_above_v",
            "a dead band wider than the bank's step",
        ),
        (
            'heartbeat_point = "auto_delay_s"',
            'heartbeat_point = "closed"',
            "control.capbank.heartbeat_point",
            "must be a holding register",
        ),
        ("bank_var = 700000", "", "control.capbank.bank_var", "is required with var_point"),
        ('devices = ["pv1", "pv2"]', 'devices = ["pv1", "cap"]', "control.der[0].devices[1]", "must be a DER"),
        (
            'devices = ["pv1", "pv2"]',
            'devices = ["pv1", "pv1"]',
            "control.der[0].devices[1]",
            "one DER group per device",
        ),
        (
            'volt_var = "category-b"',
            'volt_var = "category-c"',
            "control.der[0].volt_var",
            "must be one of 'category-a', 'category-b'",
        ),
        (
            'volt_var = "category-b"',
            "volt_var = { v_pu = [0.9, 0.97, 1.03, 1.1], q_pct = [-30, 0, 0, 30] }",
            "control.der[0].volt_var",
            "must not rise with V",
        ),
        (
            'volt_watt = "default"',
            "volt_watt = { v_pu = [1.02, 1.10], p_pct = [100, 20] }",
            "control.der[0].volt_watt.v_pu",
            "Table 10",
        ),
        (
            'freq_droop = "default"',
            "freq_droop = { db_of_hz = 0.036, db_uf_hz = 0.036, k_of = 0.2, k_uf = 0.05 }",
            "control.der[0].freq_droop.k_of",
            "must be in 0.02..0.05",
        ),
        (
            'freq_droop = "default"',
            'constant_pf = { pf = 0.95, excitation = "absorbing" }',
            "control.der[0].constant_pf",
            "one reactive power mode at a time (IEEE 1547-2018 5.3)",
        ),
        (
            'volt_var = "category-b"',
            'constant_pf = { pf = 0.85, excitation = "absorbing" }',
            "control.der[0].constant_pf.pf",
            "must be in 0.898..1.0",
        ),
        (
            'volt_var = "category-b"',
            'category = "A"\nconstant_var = { q_pct = -30 }',
            "control.der[0].constant_var.q_pct",
            "must be in -25.0..44.0",
        ),
        (
            "[control.cvr]\nenabled = true",
            "[control.cvr]\nenabled = true\nmargin_v = 20",
            "control.cvr.margin_v",
            "must be in 0..10",
        ),
        (
            'head_power_point = "meter.p_total"',
            "",
            "control.regulator.head_power_point",
            "is required with reverse_power = 'hold'",
        ),
        ("[control.capbank]", "[control.capbank]\nops_per_dey = 4", "control.capbank.ops_per_dey", "unknown key"),
    ],
)
def test_each_problem_names_its_key_value_and_what_is_allowed(
    tmp_path: Path, old: str, new: str, key: str, text: str
) -> None:
    assert old in CONTROL
    found = issues(tmp_path, CONTROL.replace(old, new, 1))
    assert key in found and text in found[key], found


def test_every_problem_of_the_section_is_listed_at_once(tmp_path: Path) -> None:
    bad = (CONTROL.replace('mode = "control"', 'mode = "auto"', 1).replace('device = "cap"', 'device = "capx"')
           .replace('volt_var = "category-b"', 'volt_var = "category-c"'))  # fmt: skip
    found = issues(tmp_path, bad)
    assert {"control.mode", "control.capbank.device", "control.der[0].volt_var"} <= set(found)


def test_cvr_needs_the_regulator_it_acts_on(tmp_path: Path) -> None:
    no_reg = CONTROL.replace('[control.regulator]\ndevice = "reg"\nhead_power_point = "meter.p_total"\n', "")
    found = issues(tmp_path, no_reg)
    assert "needs [control.regulator]" in found["control.cvr.enabled"]


def test_a_device_is_commanded_by_one_function_only(tmp_path: Path) -> None:
    found = issues(tmp_path, CONTROL.replace('device = "reg"', 'device = "cap"'))
    assert "control.regulator.device" in found


def test_the_shipped_sim_site_controls_the_cap_bank_on_vars_and_voltage() -> None:
    cfg = load_config(ROOT / "config" / "agent-sim.toml")
    c = cfg.control
    # the demo shows the controller acting (docs/control.md, "Modes"): a switching within its first seconds
    assert c is not None and c.mode == "control"
    assert c.capbank is not None and c.capbank.device == "cap675-ctl"
    assert c.function_mode(c.capbank.mode) == "control"
    assert c.capbank.cadence_s + c.capbank.delay_s <= 10, "a 20 s demo (DEMO_SECONDS=20) shows an operation"
    assert c.capbank.heartbeat_point is not None, "after a crash the bank's own timer puts it back"
    assert c.interlocks.relay == "head-relay" and len(c.interlocks.head_voltage_points) == 3


@pytest.mark.integration
def test_check_config_lists_every_control_problem_and_exits_nonzero(tmp_path: Path) -> None:
    bad = CONTROL.replace('device = "cap"', 'device = "capx"').replace('volt_var = "category-b"', 'volt_var = "x"')
    path = tmp_path / "site.toml"
    path.write_text(SITE + bad)
    proc = subprocess.run([sys.executable, "-m", "gridedge", "check-config", str(path)], capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "control.capbank.device = 'capx'" in out and "control.der[0].volt_var = 'x'" in out, out

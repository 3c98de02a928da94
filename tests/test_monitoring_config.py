"""The ``[monitoring]`` section: a good one loads into typed values; each mistake is its own error naming the key
path, the value and what is allowed (points checked against the device's register map at configuration time);
the shipped configurations pass `gridedge check-config`."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from helpers.processes import run_gridedge

from agent.config import ConfigError, load_config
from agent.monitoring.config import MonitoringConfig, VoltagePoint

ROOT = Path(__file__).resolve().parent.parent
METER_MAP = ROOT / "config" / "maps" / "sim-meter.toml"

SITE = f"""
site_id = "s1"
[store]
path = "agent.db"
[uplink]
broker = "mqtt://127.0.0.1:1"
[[devices]]
name = "fdr-671-meter"
protocol = "modbus-tcp"
host = "127.0.0.1"
port = 15021
poll_interval_s = 1.0
map = "{METER_MAP}"
[[pmus]]
name = "pmu-632"
host = "127.0.0.1"
port = 14712
idcode = 632
nominal_v = 2401.8
"""


def monitoring(*entries: str, head: str = "") -> str:
    return SITE + "[monitoring]\n" + head + "".join(f"[[monitoring.voltages]]\n{e}\n" for e in entries)


def entry(point: str, bus: str = "632", phase: str = "a", extra: str = "nominal_v = 2401.8") -> str:
    return f'point = "{point}"\nbus = "{bus}"\nphase = "{phase}"\n{extra}\n'


def load(tmp_path: Path, text: str):
    path = tmp_path / "site.toml"
    path.write_text(text)
    return load_config(path)


def issues(tmp_path: Path, text: str) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    return {i.key: str(i) for i in info.value.issues}


def test_a_good_section_loads_into_typed_values(tmp_path: Path) -> None:
    cfg = load(tmp_path, monitoring(
        entry("fdr-671-meter.v_a"),
        entry("pmu-632.VA.mag", bus="671", extra="nominal_v = 2401.8\nend_of_line = true"),
        entry("fdr-671-meter.v_b", phase="b", bus="rg60", extra="pt_ratio = 20"),
        head='range = "B"\npickup_s = 3\nhold_off_s = 7.5\nstale_after_s = 4\n',
    ))  # fmt: skip
    m = cfg.monitoring
    assert (m.range, m.pickup_s, m.hold_off_s, m.stale_after_s, m.alarm_ranges) == ("B", 3.0, 7.5, 4.0, ("B",))
    assert m.voltages == (
        VoltagePoint("fdr-671-meter.v_a", "632", "a", nominal_v=2401.8),
        VoltagePoint("pmu-632.VA.mag", "671", "a", nominal_v=2401.8, end_of_line=True),
        VoltagePoint("fdr-671-meter.v_b", "rg60", "b", pt_ratio=20.0),
    )
    assert cfg.warnings == ()


def test_no_section_monitors_nothing(tmp_path: Path) -> None:
    assert load(tmp_path, SITE).monitoring == MonitoringConfig()
    assert MonitoringConfig().alarm_ranges == ("A", "B")


@pytest.mark.parametrize(
    ("entries", "key", "says"),
    [
        ([entry("meter-9.v_a")], "monitoring.voltages[0].point",
         "'meter-9.v_a': must be <device>.<point> of a [[devices]] entry (fdr-671-meter) or <pmu>.<phasor>.mag of a "
         "[[pmus]] entry (pmu-632): no device or PMU has that name"),
        ([entry("fdr-671-meter.v_x")], "monitoring.voltages[0].point",
         "the register map of fdr-671-meter (sim-meter) has no point 'v_x'; its voltage points: v_a, v_b, v_c"),
        ([entry("fdr-671-meter.i_a")], "monitoring.voltages[0].point",
         "is not a voltage: i_a of fdr-671-meter has unit 'A'"),
        ([entry("pmu-632.VA")], "monitoring.voltages[0].point", "a PMU voltage is <pmu>.<phasor>.mag"),
        ([entry("pmu-632.mag")], "monitoring.voltages[0].point", "e.g. pmu-632.VA.mag"),
        ([entry("fdr-671-meter.v_a", phase="A")], "monitoring.voltages[0].phase", "must be one of 'a', 'b', 'c'"),
        ([entry("fdr-671-meter.v_a", phase="n")], "monitoring.voltages[0].phase", "'n': must be one of"),
        ([entry("fdr-671-meter.v_a", extra="")], "monitoring.voltages[0].pt_ratio",
         "(missing): one of pt_ratio (the reading is a PT's 120 V secondary"),
        ([entry("pmu-632.VB.mag", extra="")], "monitoring.voltages[0].pt_ratio",
         "(the [[pmus]] entry pmu-632 says nominal_v = 2401.8)"),
        ([entry("fdr-671-meter.v_a", extra="pt_ratio = 20\nnominal_v = 2401.8")], "monitoring.voltages[0].nominal_v",
         "2401.8: give pt_ratio or nominal_v, not both"),
        ([entry("fdr-671-meter.v_a", extra="pt_ratio = 0")], "monitoring.voltages[0].pt_ratio", "must be in"),
        ([entry("fdr-671-meter.v_a"), entry("fdr-671-meter.v_a", phase="b")], "monitoring.voltages[1].point",
         "is already tied to bus 632 phase a by monitoring.voltages[0]: one entry per point"),
        ([entry("fdr-671-meter.v_a"), entry("fdr-671-meter.v_a")], "monitoring.voltages[1].point",
         "is already tied to bus 632 phase a"),
        ([entry("fdr-671-meter.v_a", extra="nominal_v = 2401.8\nend_of_line = true"), entry("pmu-632.VB.mag", phase="b")],
         "monitoring.voltages[1].end_of_line", "monitoring.voltages[0] says end_of_line = true for bus 632"),
        ([entry("fdr-671-meter.v_a", extra="nominal_v = 2401.8\nratio = 20")], "monitoring.voltages[0].ratio",
         "unknown key; allowed: bus, end_of_line, nominal_v, phase, point, pt_ratio"),
        ([entry("fdr-671-meter.v_a", bus="")], "monitoring.voltages[0].bus", "must be a non-empty string"),
    ],
)  # fmt: skip
def test_each_mistake_names_its_key_value_and_what_is_allowed(tmp_path: Path, entries: list[str], key: str,
                                                              says: str) -> None:  # fmt: skip
    found = issues(tmp_path, monitoring(*entries))
    assert list(found) == [key], found
    assert says in found[key], found[key]


@pytest.mark.parametrize(
    ("head", "key", "says"),
    [
        ('range = "C"\n', "monitoring.range", "'C': must be one of 'A', 'B'"),
        ("pickup_s = -1\n", "monitoring.pickup_s", "must be in 0..3600"),
        ("stale_after_s = 0\n", "monitoring.stale_after_s", "must be in 0.1..86400"),
        ("hold_off = 5\n", "monitoring.hold_off", "unknown key; allowed: hold_off_s, pickup_s, range, stale_after_s"),
    ],
)  # fmt: skip
def test_each_mistake_in_the_sections_own_keys(tmp_path: Path, head: str, key: str, says: str) -> None:
    found = issues(tmp_path, monitoring(entry("fdr-671-meter.v_a"), head=head))
    assert list(found) == [key], found
    assert says in found[key], found[key]


def test_every_mistake_is_listed_at_once(tmp_path: Path) -> None:
    found = issues(tmp_path, monitoring(entry("meter-9.v_a"), entry("fdr-671-meter.v_a", phase="x", extra=""),
                                        head='range = "Z"\n'))  # fmt: skip
    assert set(found) == {"monitoring.range", "monitoring.voltages[0].point", "monitoring.voltages[1].phase",
                          "monitoring.voltages[1].pt_ratio"}  # fmt: skip


def test_a_point_of_a_device_with_its_own_errors_is_not_a_second_error(tmp_path: Path) -> None:
    text = monitoring(entry("fdr-671-meter.v_a")).replace("port = 15021", "port = 0")
    assert list(issues(tmp_path, text)) == ["devices[0].port"]


def test_a_pmu_block_of_a_pdc_stream_is_a_pmu_point(tmp_path: Path) -> None:
    cfg = load(tmp_path, monitoring(entry("pmu-632/SUB_B.VA.mag")))
    assert cfg.monitoring.voltages[0].point == "pmu-632/SUB_B.VA.mag"


def test_a_device_read_less_often_than_stale_after_s_allows_is_a_warning(tmp_path: Path) -> None:
    cfg = load(tmp_path, monitoring(entry("fdr-671-meter.v_a"), entry("fdr-671-meter.v_b", phase="b"),
                                    head="stale_after_s = 1.5\n"))  # fmt: skip
    assert [(w.key, w.value) for w in cfg.warnings] == [("monitoring.stale_after_s", 1.5)]
    assert "fdr-671-meter.v_a is read every 1 s" in str(cfg.warnings[0])


def test_the_shipped_bench_site_monitors_every_meter_controller_and_pmu_voltage(repo_root: Path) -> None:
    cfg = load_config(repo_root / "config" / "agent-sim.toml")
    m = cfg.monitoring
    by_bus: dict[str, set[str]] = {}
    for v in m.voltages:
        by_bus.setdefault(v.bus, set()).add(v.point.split(".")[0])
    # each meter at its line's terminal 1 (config/sim-ieee13.toml); the controllers at their PT's bus
    assert by_bus == {"rg60": {"sub-meter", "reg-ctl"}, "632": {"pmu-632", "fdr-671-meter", "fdr-633-meter",
                                                               "fdr-645-meter"},
                      "671": {"pmu-671"}, "675": {"cap675-ctl"}}  # fmt: skip
    assert {v.bus for v in m.voltages if v.end_of_line} == {"675"}
    assert {v.phase for v in m.voltages if v.point.startswith("fdr-645-meter")} == {"b", "c"}  # Line.632645: b, c
    assert cfg.warnings == ()


@pytest.mark.integration
def test_check_config_passes_the_shipped_bench_site(repo_root: Path) -> None:
    proc = run_gridedge("check-config", str(repo_root / "config" / "agent-sim.toml"))
    assert proc.returncode == 0, proc.stderr
    assert ": ok" in proc.stdout


@pytest.mark.integration
def test_check_config_lists_every_monitoring_mistake(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text(monitoring(entry("meter-9.v_a"), entry("fdr-671-meter.i_a", phase="d")))
    proc = run_gridedge("check-config", str(path))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "3 configuration error(s)" in proc.stderr, proc.stderr
    for key in ("monitoring.voltages[0].point", "monitoring.voltages[1].point", "monitoring.voltages[1].phase"):
        assert key in proc.stderr


def test_the_site_templates_example_is_valid_once_uncommented(tmp_path: Path, repo_root: Path) -> None:
    """The commented [monitoring] example names the template's own meters and loads as it stands."""
    template = (repo_root / "config" / "site-template.toml").read_text()
    example = template[template.index("#[monitoring]") :]
    uncommented = re.sub(r"(?m)^#(?=\[|[a-z_]+ = )", "", example)  # "#key = ..." is a setting, "# ..." a comment
    devices = template[template.index("\n[[devices]]") : template.index("# --- PMUs")]
    text = SITE.split("[[devices]]")[0] + devices.replace('map = "maps/', f'map = "{repo_root}/config/maps/')
    cfg = load(tmp_path, text + uncommented)
    assert [(v.point, v.bus, v.pt_ratio, v.nominal_v, v.end_of_line) for v in cfg.monitoring.voltages] == [
        ("sub_meter.v_a", "sub-12kv", 60.0, None, False),
        ("lv_meter_3.v_a", "feeder-end", None, 120.0, True),
    ]

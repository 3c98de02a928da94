"""The physics bench's configuration: [feeder], [[pmus]], scenario and each device model's options."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from sim_hw.bench import device_table
from sim_hw.config import BenchConfigError, load_bench_config, parse_bench_config, with_absolute_paths

ROOT = Path(__file__).resolve().parent.parent
IEEE13 = ROOT / "config" / "sim-ieee13.toml"


def parse(text: str, where: Path) -> object:
    return parse_bench_config(tomllib.loads(text), where / "bench.toml")


def messages(text: str, where: Path) -> list[str]:
    with pytest.raises(BenchConfigError) as err:
        parse(text, where)
    return [str(i) for i in err.value.issues]


FEEDER = f'[feeder]\ndss = "{ROOT / "config" / "ieee13" / "IEEE13.dss"}"\n'


def test_the_shipped_ieee13_bench_loads_with_every_kind_and_both_pmus() -> None:
    cfg = load_bench_config(IEEE13)
    kinds = {d.kind for d in cfg.devices}
    assert kinds == {"feeder-meter", "relay", "inverter", "capbank", "regulator"}
    assert [p.name for p in cfg.pmus] == ["pmu-632", "pmu-671"] and {p.rate for p in cfg.pmus} == {30, 60}
    assert cfg.feeder is not None and cfg.feeder.dss.is_file()
    assert sum(d.protocol == "modbus-rtu" for d in cfg.devices) >= 2  # several units on one serial line
    table = device_table(cfg)
    assert "pmu-671" in table and "127.0.0.1:14722" in table and "(SunSpec, built in)" in table


def test_bad_device_options_are_reported_at_load_naming_the_option(tmp_path: Path) -> None:
    text = FEEDER + (
        '[[devices]]\nname = "pv"\nkind = "inverter"\nprotocol = "modbus-tcp"\nport = 15999\n'
        'options = { site = "pv675", bus = "675", kva = -5.0, kw = 500.0 }\n'
        '[[devices]]\nname = "m"\nkind = "feeder-meter"\nprotocol = "modbus-tcp"\nport = 15997\n'
        f'map = "{ROOT / "config" / "maps" / "sim-meter.toml"}"\noptions = {{ elemnt = "Line.650632" }}\n'
    )
    got = messages(text, tmp_path)
    assert len(got) == 2
    assert got[0].startswith("devices[0].options") and "kva = -5.0" in got[0] and "> 0" in got[0]
    assert got[1].startswith("devices[1].options") and "elemnt" in got[1] and "allowed: element" in got[1]


def test_a_physics_device_without_a_feeder_is_refused(tmp_path: Path) -> None:
    text = (
        '[[devices]]\nname = "pv"\nkind = "inverter"\nprotocol = "modbus-tcp"\nport = 15999\n'
        'options = { site = "pv675", bus = "675", kva = 500.0, kw = 500.0 }\n'
    )
    got = messages(text, tmp_path)
    assert any(m.startswith("devices[0].kind = 'inverter'") and "[feeder]" in m for m in got)


def test_feeder_and_pmu_tables_are_checked_key_by_key(tmp_path: Path) -> None:
    text = (
        '[feeder]\ndss = "nope.dss"\nirradiance = "stormy"\n'
        '[[devices]]\nname = "m"\nkind = "meter"\nprotocol = "modbus-tcp"\nport = 15020\n'
        f'map = "{ROOT / "config" / "maps" / "sim-meter.toml"}"\n'
        '[[pmus]]\nname = "p"\nbus = "671"\nidcode = 0\nport = 15020\nrate = 200\ncurrent = "Line.632671"\n'
    )
    got = "\n".join(messages(text, tmp_path))
    assert "feeder.irradiance = 'stormy': must be one of 'clear', 'cloudy', 'none'" in got
    assert "pmus[0].idcode = 0: must be in 1..65534" in got
    assert "pmus[0].rate = 200: must be in 10..120" in got
    assert "pmus[0].port = 15020: is already used by another device or PMU" in got
    assert "pmus[0].current = 'Line.632671': must be \"<element>/<terminal>\"" in got


def test_a_missing_dss_file_and_scenario_file_are_named(tmp_path: Path) -> None:
    text = '[feeder]\ndss = "nope.dss"\nscenario = "missing.toml"\n'
    text = 'scenario = "missing.toml"\n' + text.replace('scenario = "missing.toml"\n', "")
    text += (
        '[[devices]]\nname = "m"\nkind = "meter"\nprotocol = "modbus-tcp"\nport = 15020\n'
        f'map = "{ROOT / "config" / "maps" / "sim-meter.toml"}"\n'
    )
    got = "\n".join(messages(text, tmp_path))
    assert "feeder.dss = 'nope.dss': no such OpenDSS file" in got
    assert "scenario = 'missing.toml': no such scenario file" in got


def test_sim_run_checks_the_scenario_before_starting(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from sim_hw.cli import main

    bad = tmp_path / "bad.toml"
    bad.write_text('[[events]]\nat_s = 5\naction = "silence"\ndevice = "no-such-device"\nduration_s = 3\n')
    assert main(["run", "--config", str(IEEE13), "--scenario", str(bad), "--seconds", "1"]) == 2
    assert "events[0].device = 'no-such-device': must be one of 'sub-meter'" in capsys.readouterr().err
    assert main(["run", "--config", str(IEEE13), "--scenario", str(tmp_path / "none.toml")]) == 2
    assert "no such file" in capsys.readouterr().err
    shipped = ROOT / "config" / "scenarios" / "ieee13-demo.toml"
    cfg = load_bench_config(IEEE13)
    from sim_hw.scenarios import load_scenario

    scn = load_scenario(shipped, start=0.0, devices=tuple(d.name for d in cfg.devices), pmus=("pmu-632", "pmu-671"))
    assert scn.pending == 9  # the demo's scenario is valid against the demo's bench


def test_a_waveform_following_a_bus_needs_the_feeder(tmp_path: Path) -> None:
    desc = ROOT / "config" / "waveforms" / "clean-feeder-120v.toml"
    got = messages(f'[[waveforms]]\nname = "w"\nport = 15999\nbus = "671"\ndescription = "{desc}"\n', tmp_path)
    assert got == ["waveforms[0].bus = '671': follows the feeder's physics: add a [feeder] table"]
    assert [w.bus for w in load_bench_config(IEEE13).waveforms] == ["671"]


def test_a_scenario_needs_the_feeder(tmp_path: Path) -> None:
    scn = tmp_path / "s.toml"
    scn.write_text('[[events]]\nat_s = 1\naction = "cloud"\nfactor = 0.5\nduration_s = 5\n')
    text = (
        f'scenario = "{scn}"\n[[devices]]\nname = "m"\nkind = "meter"\nprotocol = "modbus-tcp"\nport = 15020\n'
        f'map = "{ROOT / "config" / "maps" / "sim-meter.toml"}"\n'
    )
    assert messages(text, tmp_path) == [f"scenario = '{scn}': needs a [feeder] table (the physics plays the events)"]


def test_a_copy_with_absolute_paths_loads_the_same_files_from_another_folder(tmp_path: Path) -> None:
    shipped = load_bench_config(IEEE13)
    copy = tmp_path / "elsewhere" / "bench.toml"
    copy.parent.mkdir()
    copy.write_text(with_absolute_paths(IEEE13.read_text(), IEEE13.parent))
    got = load_bench_config(copy)
    assert got.feeder is not None and shipped.feeder is not None
    assert got.feeder.dss == shipped.feeder.dss
    assert [d.map_path for d in got.devices] == [d.map_path for d in shipped.devices]
    assert [w.description for w in got.waveforms] == [w.description for w in shipped.waveforms]
    assert got.waveforms, "the shipped bench has a waveform stream: the case the copy must carry"
    assert [b.link for b in got.buses] == [b.link for b in shipped.buses]
    assert "# Paths are relative to this file's folder." in copy.read_text()  # comments stay


def test_absolute_paths_cover_every_path_key_and_leave_other_strings(tmp_path: Path) -> None:
    text = (
        'scenario = "scn/day.toml"\n'
        'name = "maps/not-a-path"\n'
        "[feeder]\n"
        "dss = 'ieee13/IEEE13.dss'  # literal string\n"
        "[[buses]]\n"
        'link = "../run/rtu-bus1"\n'
        "[[devices]]\n"
        'map = "/abs/map.toml"\n'
        'kind = "meter"\n'
        "[[waveforms]]\n"
        'description = "waveforms/w.toml"\n'
    )
    out = tomllib.loads(with_absolute_paths(text, tmp_path / "cfg"))
    assert out["scenario"] == str(tmp_path / "cfg" / "scn" / "day.toml")
    assert out["name"] == "maps/not-a-path"
    assert out["feeder"]["dss"] == str(tmp_path / "cfg" / "ieee13" / "IEEE13.dss")
    assert out["buses"][0]["link"] == str(tmp_path / "run" / "rtu-bus1")
    assert out["devices"][0] == {"map": "/abs/map.toml", "kind": "meter"}
    assert out["waveforms"][0]["description"] == str(tmp_path / "cfg" / "waveforms" / "w.toml")


def test_a_path_the_rewrite_cannot_reach_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"feeder\.dss"):
        with_absolute_paths('feeder = { dss = "ieee13/IEEE13.dss" }\n', tmp_path)

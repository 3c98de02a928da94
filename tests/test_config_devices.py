"""Devices in the site file: one serial line has one set of line settings, one address holds one device, names are
log- and point-friendly words, unknown keys are reported; each error names the key path, the value and what is
allowed, and `gridedge run` refuses what check-config refuses."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers.processes import run_gridedge
from helpers.site import edit, issues, site

from agent.config import load_config


def test_the_four_device_site_loads(tmp_path: Path) -> None:
    cfg = load_config(site(tmp_path))
    assert [d.name for d in cfg.devices] == ["tcp1", "tcp2", "rtu1", "rtu2"]


# ---- one serial line, one set of line settings, one device per address ------------------------------------


def test_devices_on_one_serial_port_must_agree_on_the_line_settings(tmp_path: Path) -> None:
    text = edit('baudrate = 9600\nparity = "E"', 'baudrate = 19200\nparity = "O"\nstopbits = 2', nth=2)
    found = issues(site(tmp_path, text))
    # reported at the second device, one issue per setting that differs, naming the first device's value
    assert set(found) == {"devices[3].baudrate", "devices[3].parity", "devices[3].stopbits"}, found
    assert found["devices[3].baudrate"].startswith("devices[3].baudrate = 19200:"), found
    assert "devices[2] (rtu1) uses 9600" in found["devices[3].baudrate"], found
    assert "devices[2] (rtu1) uses 'E'" in found["devices[3].parity"], found
    assert "devices[2] (rtu1) uses 1" in found["devices[3].stopbits"], found


def test_a_default_line_setting_conflicts_like_an_explicit_one(tmp_path: Path) -> None:
    # rtu2 leaves baudrate out: the default 19200 is not rtu1's 9600
    found = issues(site(tmp_path, edit("baudrate = 9600\n", "", nth=2)))
    assert set(found) == {"devices[3].baudrate"}, found


def test_one_port_reached_through_a_symlink_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "ttyS7").write_text("")
    os.symlink(tmp_path / "ttyS7", tmp_path / "rs485")
    text = edit('serial_port = "/dev/ttyS7"', f'serial_port = "{tmp_path}/ttyS7"', nth=1)
    text = edit('serial_port = "/dev/ttyS7"', 'serial_port = "rs485"', nth=1, text=text)
    text = edit("baudrate = 9600\n", "baudrate = 4800\n", nth=2, text=text)
    assert set(issues(site(tmp_path, text))) == {"devices[3].baudrate"}


def test_two_devices_at_one_serial_address_are_refused(tmp_path: Path) -> None:
    found = issues(site(tmp_path, edit("unit_id = 2", "unit_id = 1", nth=2)))
    assert set(found) == {"devices[3].unit_id"}, found
    assert "devices[2] (rtu1)" in found["devices[3].unit_id"] and "/dev/ttyS7" in found["devices[3].unit_id"]


def test_two_devices_at_one_tcp_address_are_refused(tmp_path: Path) -> None:
    found = issues(site(tmp_path, edit("unit_id = 2", "unit_id = 1", nth=1)))
    assert set(found) == {"devices[1].unit_id"}, found
    assert "devices[0] (tcp1)" in found["devices[1].unit_id"] and "10.0.0.5:502" in found["devices[1].unit_id"]


def test_the_same_unit_id_on_another_line_or_host_is_fine(tmp_path: Path) -> None:
    text = edit('host = "10.0.0.5"', 'host = "10.0.0.6"', nth=2, text=edit("unit_id = 2", "unit_id = 1", nth=1))
    text = edit('serial_port = "/dev/ttyS7"', 'serial_port = "/dev/ttyS8"', nth=2, text=text)
    text = edit("unit_id = 2", "unit_id = 1", nth=1, text=text)
    cfg = load_config(site(tmp_path, text))
    assert [d.unit_id for d in cfg.devices] == [1, 1, 1, 1]


def test_modbus_rtu_frames_are_8_bit_bytes(tmp_path: Path) -> None:
    # Modbus over Serial Line V1.02, 2.5.1: RTU mode sends 8 data bits; 7 bits is ASCII mode only
    found = issues(site(tmp_path, edit('parity = "E"', 'parity = "E"\nbytesize = 7', nth=1)))
    assert "bytesize = 7" in found["devices[2].bytesize"] and "8 data bits" in found["devices[2].bytesize"]


def test_unit_id_255_is_allowed_on_tcp_and_not_on_a_serial_line(tmp_path: Path) -> None:
    # Modbus Messaging on TCP/IP Implementation Guide V1.0b, 4.4.2: a TCP device addressed by its IP takes 0xFF
    cfg = load_config(site(tmp_path, edit("unit_id = 1", "unit_id = 255", nth=1)))
    assert cfg.devices[0].unit_id == 255
    found = issues(site(tmp_path, edit("unit_id = 1", "unit_id = 255", nth=2)))
    assert found["devices[2].unit_id"] == "devices[2].unit_id = 255: must be in 1..247"


# ---- names, typos, protocol ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["meter 1", "a/b", "x=1", "-lead", "é"])
def test_a_device_name_is_a_log_and_point_id_friendly_word(tmp_path: Path, name: str) -> None:
    found = issues(site(tmp_path, edit('name = "tcp1"', f'name = "{name}"')))
    assert "letters, digits" in found["devices[0].name"], found


def test_unknown_keys_are_reported_even_when_the_protocol_is_wrong(tmp_path: Path) -> None:
    text = edit('protocol = "modbus-tcp"', 'protocol = "modbus_tcp"\nhots = "x"')
    found = issues(site(tmp_path, text))
    assert set(found) == {"devices[0].protocol", "devices[0].hots"}, found


@pytest.mark.integration
def test_run_refuses_conflicting_line_settings_before_starting(tmp_path: Path) -> None:
    # the check runs before anything starts: build_pollers would otherwise meet the conflict as a ValueError
    proc = run_gridedge("run", "--config", str(site(tmp_path, edit("baudrate = 9600", "baudrate = 4800", nth=2))))
    assert proc.returncode == 2
    assert "devices[3].baudrate = 4800" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr

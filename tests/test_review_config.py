"""Review of the site configuration (issue 2, part 2): hostile files found gaps, each pinned here.

Every bad file must give a ConfigError naming the key path, the bad value and what is allowed, from both
`gridedge check-config` and `gridedge run` (exit 2, no traceback); the shipped examples must validate.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent.config import ConfigError, load_config
from protocols.configcheck import Checker
from protocols.mqtt.config import broker_url

MAP = """
name = "m"
[[points]]
name = "v"
address = 0
type = "uint16"
"""

# Two TCP devices and two RTU devices on one serial line: the smallest site that can collide.
SITE = """
site_id = "s1"
[store]
path = "db/agent.db"
[uplink]
broker = "mqtt://127.0.0.1:1"
[[devices]]
name = "tcp1"
protocol = "modbus-tcp"
host = "10.0.0.5"
port = 502
unit_id = 1
map = "m.toml"
[[devices]]
name = "tcp2"
protocol = "modbus-tcp"
host = "10.0.0.5"
port = 502
unit_id = 2
map = "m.toml"
[[devices]]
name = "rtu1"
protocol = "modbus-rtu"
serial_port = "/dev/ttyS7"
baudrate = 9600
parity = "E"
unit_id = 1
map = "m.toml"
[[devices]]
name = "rtu2"
protocol = "modbus-rtu"
serial_port = "/dev/ttyS7"
baudrate = 9600
parity = "E"
unit_id = 2
map = "m.toml"
"""


def site(tmp_path: Path, text: str = SITE, map_text: str = MAP) -> Path:
    (tmp_path / "m.toml").write_text(map_text)
    path = tmp_path / "site.toml"
    path.write_text(text)
    return path


def issues(path: Path) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return {i.key: str(i) for i in info.value.issues}


def edit(old: str, new: str, nth: int = 1, text: str = SITE) -> str:
    """``text`` with the ``nth`` occurrence of ``old`` replaced by ``new``."""
    parts = text.split(old)
    assert len(parts) > nth, f"{old!r} occurs {len(parts) - 1} times"
    return old.join(parts[:nth]) + new + old.join(parts[nth:])


def test_the_review_site_itself_is_good(tmp_path: Path) -> None:
    cfg = load_config(site(tmp_path))
    assert [d.name for d in cfg.devices] == ["tcp1", "tcp2", "rtu1", "rtu2"]


# ---- the file itself -----------------------------------------------------------------------------------------


def test_a_file_that_is_not_utf8_is_a_config_error_naming_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_bytes(b'site_id = "s1"\n# caf\xe9 in Latin-1\n')
    found = issues(path)
    # the bad byte is the 5th of line 2 (0xe9, after "# caf")
    assert "not UTF-8" in found["(file)"] and "line 2, column 6" in found["(file)"], found


def test_a_toml_syntax_error_names_line_and_column(tmp_path: Path) -> None:
    found = issues(site(tmp_path, edit("port = 502", "port = 5 02")))
    assert found["(file)"].endswith("not valid TOML: Expected newline or end of document after a statement "
                                    "(at line 11, column 10)"), found  # fmt: skip


def test_a_utf8_byte_order_mark_is_named(tmp_path: Path) -> None:
    path = site(tmp_path)
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert "byte-order mark" in issues(path)["(file)"]


def test_a_folder_given_as_the_file_is_a_config_error(tmp_path: Path) -> None:
    assert issues(tmp_path)["(file)"].endswith(": is a folder, not a file")


def test_a_register_map_not_utf8_or_not_toml_is_an_error_of_that_device(tmp_path: Path) -> None:
    path = site(tmp_path)
    (tmp_path / "m.toml").write_bytes(b'name = "m\xff"\n')
    found = issues(path)
    assert "not UTF-8" in found["devices[0].map"] and "line 1, column 10" in found["devices[0].map"], found
    (tmp_path / "m.toml").write_text("name = \n")
    found = issues(path)
    assert "not valid TOML" in found["devices[3].map"] and "line 1" in found["devices[3].map"], found


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


# ---- store and uplink ----------------------------------------------------------------------------------------


def test_a_store_path_that_is_a_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "db" / "agent.db").mkdir(parents=True)
    found = issues(site(tmp_path))
    assert found["store.path"].startswith(f"store.path = '{tmp_path}/db/agent.db': ")
    assert "is a folder" in found["store.path"]


def test_a_store_path_under_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "db").write_text("not a folder")
    assert "is not a folder" in issues(site(tmp_path))["store.path"]


def test_a_store_folder_that_does_not_exist_yet_is_fine(tmp_path: Path) -> None:
    # the agent creates it at start (agent/service.py)
    assert load_config(site(tmp_path)).store.path == tmp_path / "db" / "agent.db"


@pytest.mark.parametrize("url", ["mqtt://h/topic", "mqtt://h:1883/x", "mqtt://h?tls=1", "mqtts://h#f"])
def test_a_broker_url_with_a_path_query_or_fragment_is_refused(url: str) -> None:
    # MQTT brokers have no path: "mqtt://h/topic" silently dropped the path before
    c = Checker(Path("/"))
    assert broker_url(c, "uplink.broker", url) is None
    assert [(i.key, i.value) for i in c.issues] == [("uplink.broker", url)]
    assert "no path" in c.issues[0].allowed


def test_a_wrong_type_reads_as_english() -> None:
    c = Checker(Path("/"))
    c.get({"port": "502"}, "devices[0]", "port", "integer")
    assert str(c.issues[0]) == "devices[0].port = '502': must be an integer"


# ---- the commands --------------------------------------------------------------------------------------------


def run_gridedge(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gridedge", *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("command", [("check-config",), ("run", "--config")])
def test_both_commands_refuse_a_bad_file_with_every_error_and_no_traceback(tmp_path: Path, command: tuple) -> None:
    text = edit("port = 502", "port = 0").replace('parity = "E"', 'parity = "Q"', 1)
    proc = run_gridedge(*command, str(site(tmp_path, text)))
    assert proc.returncode == 2
    assert "2 configuration error(s)" in proc.stderr, proc.stderr
    assert "devices[0].port = 0: must be in 1..65535" in proc.stderr
    assert "devices[2].parity = 'Q': must be one of 'N', 'E', 'O'" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


@pytest.mark.parametrize("command", [("check-config",), ("run", "--config")])
def test_both_commands_refuse_a_non_utf8_file_without_a_traceback(tmp_path: Path, command: tuple) -> None:
    path = tmp_path / "site.toml"
    path.write_bytes(b"site_id = '\xff'\n")
    proc = run_gridedge(*command, str(path))
    assert proc.returncode == 2
    assert "not UTF-8" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_run_refuses_conflicting_line_settings_before_starting(tmp_path: Path) -> None:
    # before: check-config passed this file and `gridedge run` died in build_pollers with a ValueError traceback
    proc = run_gridedge("run", "--config", str(site(tmp_path, edit("baudrate = 9600", "baudrate = 4800", nth=2))))
    assert proc.returncode == 2
    assert "devices[3].baudrate = 4800" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


# ---- the shipped examples ------------------------------------------------------------------------------------


def test_the_demo_agent_config_validates(repo_root: Path) -> None:
    cfg = load_config(repo_root / "config" / "agent-sim.toml")
    assert cfg.site_id == "sim-substation" and cfg.devices


def test_the_site_template_only_lacks_the_real_sites_files(repo_root: Path) -> None:
    # on a development machine the template's secrets and CA are absent; nothing else may be wrong
    found = issues(repo_root / "config" / "site-template.toml")
    assert set(found) == {"uplink.password_file", "uplink.ca_file"}, found


def test_the_site_template_validates_where_its_files_exist(tmp_path: Path, repo_root: Path) -> None:
    template = (repo_root / "config" / "site-template.toml").read_text()
    assert "/etc/gridedge/" in template and "/var/lib/gridedge/" in template
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "mqtt-password").write_text("s3cret\n")
    (etc / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    text = template.replace("/etc/gridedge/", f"{etc}/").replace("/var/lib/gridedge/", f"{tmp_path}/var/")
    text = text.replace('map = "maps/', f'map = "{repo_root}/config/maps/')  # its maps are relative to config/
    path = tmp_path / "site.toml"
    path.write_text(text)
    cfg = load_config(path)
    broker = cfg.uplink.broker
    assert broker.password == "s3cret" and broker.tls and broker.ca_file == etc / "ca.pem"
    assert {d.protocol for d in cfg.devices} == {"modbus-tcp", "modbus-rtu"}
    proc = run_gridedge("check-config", str(repo_root / "config" / "site-template.toml"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr

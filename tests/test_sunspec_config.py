"""A SunSpec device in the site file: ``protocol = "sunspec"`` with no map, over TCP or RTU, an optional list of
models to poll; every mistake named by its key path with what is allowed. The shipped demo site's inverters are
SunSpec devices and ``gridedge check-config`` passes it."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.processes import run_gridedge
from helpers.site import issues, site

from agent.config import SUNSPEC_DEFAULT_MODELS, load_config

ROOT = Path(__file__).resolve().parent.parent

SITE = """
site_id = "s1"
[store]
path = "db/agent.db"
[uplink]
broker = "mqtt://127.0.0.1:1"
[[devices]]
name = "pv1"
protocol = "sunspec"
host = "10.0.0.7"
port = 502
unit_id = 1
[[devices]]
name = "pv2"
protocol = "sunspec"
serial_port = "/dev/ttyS7"
baudrate = 9600
unit_id = 3
poll_interval_s = 2.0
models = [701, 702, 704, 705, 706, 711]
settings_poll_interval_s = 300
"""


def test_sunspec_devices_over_tcp_and_rtu_load_with_their_models(tmp_path: Path) -> None:
    pv1, pv2 = load_config(site(tmp_path, SITE)).devices
    assert (pv1.protocol, pv1.host, pv1.port, pv1.serial, pv1.transport) == ("sunspec", "10.0.0.7", 502, None, "tcp")
    assert pv1.models == SUNSPEC_DEFAULT_MODELS == (701, 704, 705, 706, 711)
    assert pv1.settings_poll_interval_s == 60.0 and pv1.register_map.points == ()
    assert pv2.transport == "rtu" and pv2.serial is not None and pv2.serial.port == "/dev/ttyS7"
    assert pv2.models == (701, 702, 704, 705, 706, 711) and pv2.settings_poll_interval_s == 300.0


@pytest.mark.parametrize(
    ("old", "new", "key", "text"),
    [
        ('host = "10.0.0.7"', 'host = "10.0.0.7"\nmap = "m.toml"', "devices[0].map",
         "a SunSpec device has no register map: its models are discovered from the device at connect"),
        ("models = [701, 702,", "models = [701, 9999,", "devices[1].models[1]",
         "devices[1].models[1] = 9999: must be a SunSpec model id pysunspec2 defines: 1-19, 101-103,"),
        ("models = [701, 702,", "models = [701, 701,", "devices[1].models[1]", "is listed twice (models[0])"),
        ("models = [701, 702, 704, 705, 706, 711]", "models = []", "devices[1].models",
         "must be a non-empty array of SunSpec model ids"),
        ('models = [701, 702,', 'models = ["701", 702,', "devices[1].models[0]", "must be a SunSpec model id"),
        ("settings_poll_interval_s = 300", "settings_poll_interval_s = 1", "devices[1].settings_poll_interval_s",
         "must be at least poll_interval_s (2.0)"),
        ('serial_port = "/dev/ttyS7"', 'serial_port = "/dev/ttyS7"\nhost = "10.0.0.8"', "devices[1].host",
         "give host (SunSpec over Modbus TCP) or serial_port (over Modbus RTU), not both"),
        ('host = "10.0.0.7"\n', "", "devices[0].host", "is required: host (SunSpec over Modbus TCP) or serial_port"),
        ("unit_id = 3", "unit_id = 250", "devices[1].unit_id", "must be in 1..247"),
        ('host = "10.0.0.7"', 'host = "10.0.0.7"\nmodel = [701]', "devices[0].model",
         "unknown key; allowed: host, max_block, max_gap, models, name, poll_interval_s, port, protocol, retries, "
         "settings_poll_interval_s, timeout_s, unit_id"),
    ],
)  # fmt: skip
def test_each_mistake_is_named_by_its_key_with_what_is_allowed(
    tmp_path: Path, old: str, new: str, key: str, text: str
) -> None:
    assert old in SITE
    found = issues(site(tmp_path, SITE.replace(old, new, 1)))
    assert list(found) == [key], found
    assert text in found[key]


def test_the_shipped_demo_sites_inverters_are_sunspec_devices_without_maps() -> None:
    cfg = load_config(ROOT / "config" / "agent-sim.toml")
    inverters = {d.name: d for d in cfg.devices if d.name.startswith("pv")}
    assert set(inverters) == {"pv675", "pv680", "pv634", "pv652"}
    assert {d.protocol for d in inverters.values()} == {"sunspec"}
    assert {d.port for d in inverters.values()} == {15030, 15031, 15032, 15033}
    assert not list((ROOT / "config" / "maps").glob("sunspec-*.toml")), "no hand-written SunSpec map ships"


@pytest.mark.integration
def test_check_config_passes_the_shipped_demo_site_and_lists_its_sunspec_devices() -> None:
    proc = run_gridedge("check-config", str(ROOT / "config" / "agent-sim.toml"))
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    line = next(x for x in proc.stdout.splitlines() if x.strip().startswith("pv675"))
    assert "sunspec" in line and "127.0.0.1:15030" in line
    assert "SunSpec models 701,704,705,706,711 (discovered at connect)" in line

"""A site file with two Modbus TCP devices and two RTU devices on one serial line: the smallest site in which
devices can collide. ``edit`` changes one occurrence of a text; ``issues`` maps each error's key to its text."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import ConfigError, load_config

MAP = """
name = "m"
[[points]]
name = "v"
address = 0
type = "uint16"
"""

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

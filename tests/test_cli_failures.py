"""The `gridedge` command's failures outside the configuration: a store it cannot use, a reader that goes away.

Each runs the real console script in its own process, as an operator would.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GRIDEDGE = Path(sys.executable).with_name("gridedge")
MAP = ROOT / "config" / "maps" / "sim-meter.toml"


def site(tmp_path: Path, store: str) -> Path:
    path = tmp_path / "site.toml"
    path.write_text(
        f'site_id = "s1"\n[store]\npath = "{store}"\n[uplink]\nbroker = "mqtt://127.0.0.1:1"\n'
        f'[[devices]]\nname = "m"\nprotocol = "modbus-tcp"\nhost = "127.0.0.1"\nport = 1\nunit_id = 1\nmap = "{MAP}"\n'
    )
    return path


@pytest.mark.parametrize(
    ("store", "why"),
    [
        ("foreign.db", "file is not a database"),  # someone else's file at the store's path
        ("/proc/gridedge-nope/x.db", "cannot create the store's folder /proc/gridedge-nope"),  # a folder never made
    ],
)
def test_run_with_a_store_it_cannot_use_says_so_in_one_line_and_exits_4(tmp_path: Path, store: str, why: str) -> None:
    if not store.startswith("/"):
        (tmp_path / store).write_bytes(b"these are not the bytes of an SQLite file" * 10)
        store = str(tmp_path / store)
    proc = subprocess.run([str(GRIDEDGE), "run", "--config", str(site(tmp_path, store))], capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 4, proc.stderr
    assert "Traceback" not in proc.stderr and why in proc.stderr, proc.stderr
    assert f"gridedge run: the store {store} cannot be used" in proc.stderr
    if not store.startswith("/proc"):
        assert Path(store).read_bytes().startswith(b"these are not"), "the foreign file is left as it was"


def test_check_config_into_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    # `gridedge check-config F | head -1` with a long listing: the reader closes early; no BrokenPipe traceback.
    config = ROOT / "config" / "agent-sim.toml"
    proc = subprocess.Popen(
        [str(GRIDEDGE), "check-config", str(config)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader went away before a line was read
    err = proc.stderr.read().decode()
    assert proc.wait(60) == 141 and "Traceback" not in err and "BrokenPipe" not in err, err

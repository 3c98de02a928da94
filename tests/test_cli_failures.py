"""The `gridedge` command's failures outside the configuration: a store it cannot use, a reader that goes away, an
install without the ``sim`` extra.

Each runs the real console script in its own process, as an operator would.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration  # every test runs the gridedge command in a process of its own

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


# ---- an install without the sim extra --------------------------------------------------------------------

_WITHOUT_SIM_EXTRA = """
import sys
class NoSimExtra:  # as on a Pi installed with `pip install gridedge`: the simulator's dependencies are absent
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("opendssdirect", "opender", "dss"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, NoSimExtra())
import importlib.util
_find = importlib.util.find_spec
def find_spec(name, package=None):
    if name.split(".")[0] in ("opendssdirect", "opender", "dss"):
        return None
    return _find(name, package)
importlib.util.find_spec = find_spec
import gridedge
sys.exit(gridedge.main(sys.argv[1:]))
"""


@pytest.mark.parametrize("args", [["sim", "run", "--config", "x.toml"], ["demo"]])
def test_sim_and_demo_without_the_sim_extra_say_how_to_install_it(args: list[str], tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _WITHOUT_SIM_EXTRA, *args], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert proc.returncode == 3, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "pip install 'gridedge[sim]'" in proc.stderr


def test_agent_commands_work_without_the_sim_extra(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _WITHOUT_SIM_EXTRA, "check-config", str(ROOT / "config" / "agent-sim.toml")],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert ": ok — site sim-substation" in proc.stdout

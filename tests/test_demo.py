"""``gridedge demo`` and the shipped demo site: where its runtime files land, its command line, its parts failing to
start, and the scenario it shows."""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

from agent.config import load_config
from agent.service import status_path
from central.config import load_central_config
from sim_hw.config import load_bench_config

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "config"
RUN = ROOT / "run"


# ---- where the runtime files land -------------------------------------------------------------------------


def test_runtime_files_of_the_shipped_configs_land_in_run_at_the_repository_root() -> None:
    """ptys, stores and status files of every shipped config are under <repository>/run, none under config/."""
    agent = load_config(CONFIG / "agent-sim.toml")
    central = load_central_config(CONFIG / "central.toml")
    links = [load_bench_config(CONFIG / name).bus("bus1") for name in ("sim-ieee13.toml", "sim-site.toml")]
    runtime = [agent.store.path, status_path(agent), central.db_path, central.status_file]
    runtime += [bus.link for bus in links] + [bus.sim_path for bus in links]
    runtime += [Path(d.serial.port) for d in agent.devices if d.serial is not None]
    assert all(path.parent == RUN for path in runtime), [str(p) for p in runtime if p.parent != RUN]


def test_the_demo_agent_opens_the_pty_the_demo_bench_serves() -> None:
    agent = load_config(CONFIG / "agent-sim.toml")
    bench = load_bench_config(CONFIG / "sim-ieee13.toml")
    ports = {Path(d.serial.port) for d in agent.devices if d.serial is not None}
    assert ports == {bench.bus("bus1").link}


def test_git_ignores_the_runtime_folder_and_nothing_of_the_same_name_elsewhere() -> None:
    ignored = subprocess.run(["git", "check-ignore", "-q", "run/central.db"], cwd=ROOT, check=False)
    assert ignored.returncode == 0
    kept = subprocess.run(["git", "check-ignore", "-q", "sim_hw/run/x.py"], cwd=ROOT, check=False)
    assert kept.returncode == 1


# ---- rooms --------------------------------------------------------------------------------------------------


def _imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_the_agent_imports_neither_the_bench_nor_central_nor_the_demo() -> None:
    """agent/ meets sim_hw/ and central/ only on the wire; the demo, which runs them all, sits beside gridedge.py."""
    offenders = {
        str(path.relative_to(ROOT)): sorted(_imported_roots(path) & {"sim_hw", "central", "gridedge_demo", "gridedge"})
        for path in (ROOT / "agent").rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}
    assert not (ROOT / "agent" / "demo.py").exists() and (ROOT / "gridedge_demo.py").is_file()

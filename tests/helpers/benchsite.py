"""The bench and the agent each as its own process (the broker a real Mosquitto, from the ``broker`` fixture), for
the tests that kill or stop the agent and judge what the bench's devices do after.

``site = BenchSite(tmp_path)``; ``cfg, link = site.start_bench(bench_path, speed)``; ``agent_site, db =
site.start_agent(cfg, control, speed=..., broker=broker.url)``; ``site.kill_all()`` in the test's ``finally``.
What the tests judge is read at the bench: over the RS-485 line (:func:`rtu_client`, :func:`read_cap`) or by its
log, never from the agent's belief; :func:`decisions` is the agent's own account, for waiting and cross-checks.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from pymodbus.client import AsyncModbusSerialClient
from pymodbus.framer import FramerType

from helpers.bench import NOON, free_ports_in
from helpers.controlbench import site_file
from helpers.db import query_db
from helpers.derrig import DEV, der_control
from helpers.net import wait_port
from helpers.processes import Processes
from helpers.wait import wait_for
from sim_hw.config import BenchConfig, load_bench_config


def decisions(db: Path) -> list[dict]:
    """The agent's control stream, oldest first ([] while the agent has not made its database yet)."""
    return [json.loads(r[0]) for r in query_db(db, "SELECT data FROM events WHERE stream='control' ORDER BY id")]


@dataclass
class BenchSite(Processes):
    workdir: Path
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    def start_bench(self, bench_path: Path, speed: float, *, ready: str = "sub-meter",
                    truth: Path | None = None) -> tuple[BenchConfig, Path]:  # fmt: skip
        """``gridedge sim run`` at ``speed`` (``truth``: its truth log there); returns once the bench is up (its
        ``bench_up`` line), device ``ready`` listens and the RS-485 pty is there: the bench's config and the line's
        pty. A bench that exits before it is up lost one of its ports to another test between the copy choosing it
        and the bench binding it (tests run in parallel): its file gets new free ports and it starts again."""
        extra = ["--truth", str(truth)] if truth is not None else []
        for _attempt in range(3):
            cfg = load_bench_config(bench_path)
            proc = self.start_gridedge("sim", "sim", "run", "--config", str(bench_path), "--speed", str(speed), *extra)
            wait_for(lambda p=proc: p.poll() is not None or "event=bench_up" in self.log("sim"), 90,
                     f"the bench coming up\n{self.logs('sim')}")  # fmt: skip
            if proc.poll() is None:
                break
            free_ports_in(bench_path)
        else:
            raise AssertionError(f"the bench did not come up in three tries\n{self.logs('sim')}")
        wait_port(next(d.port for d in cfg.devices if d.name == ready), 30)
        link = cfg.bus("bus1").link
        wait_for(link.exists, 15, "the bench's RTU pty")
        return cfg, link

    def start_agent(self, cfg: BenchConfig, control: str, *, speed: float, broker: str,
                    wall_start: float | None = None) -> tuple[Path, Path]:  # fmt: skip
        """``gridedge agent run`` on a site file (:func:`helpers.controlbench.site_file` with ``control``) in
        ``workdir/agent``, its clock the bench's (``speed``, starting at noon; ``wall_start``: the wall instant the
        bench was at noon, from its truth log's ``bench_up``, so an agent started again keeps the bench's clock):
        the site file and the agent's db."""
        folder = self.workdir / "agent"
        anchor = "" if wall_start is None else f'wall_start = "{datetime.fromtimestamp(wall_start, UTC).isoformat()}"\n'
        clock = f'[clock]\nspeed = {speed}\nstart = "{NOON}"\n{anchor}'
        agent_site = site_file(cfg, folder, control, extra=clock, broker=broker)
        self.start_gridedge("agent", "run", "--config", str(agent_site))
        return agent_site, folder / "agent.db"

    def start_der(self, bench_path: Path, speed: float, group: str, *, broker: str, what: str) -> tuple[int, Path]:
        """The bench, then the agent with one DER group on its inverter pv675 (``group``: the group's settings, for
        :func:`helpers.derrig.der_control`), until the agent has applied a command (``what``, for the failure):
        the inverter's Modbus TCP port and the agent's db."""
        cfg, _link = self.start_bench(bench_path, speed, ready=DEV)
        port = next(d.port for d in cfg.devices if d.name == DEV)
        _agent_site, db = self.start_agent(cfg, der_control(port, group), speed=speed, broker=broker)
        self.wait_applied(db, what)
        return port, db

    def wait_applied(self, db: Path, what: str) -> None:
        """Until the agent has applied a command (60 s), failing with ``what`` and both logs."""
        wait_for(lambda: any(d["outcome"] == "applied" for d in decisions(db)), 60,
                 f"{what}\n{self.logs('agent', 'sim')}")  # fmt: skip


@asynccontextmanager
async def rtu_client(link: Path) -> AsyncIterator[AsyncModbusSerialClient]:
    """pymodbus's own RTU client on the bench's RS-485 line (19200 baud, as the devices' manuals give it)."""
    client = AsyncModbusSerialClient(str(link), framer=FramerType.RTU, baudrate=19200, timeout=1, retries=2)
    assert await client.connect()
    try:
        yield client
    finally:
        client.close()


async def read_cap(link: Path, unit: int) -> tuple[int, bool]:
    """``mode`` (holding 10) and ``closed`` (discrete input 0) of the bench's cap bank controller, read over the
    RS-485 line as its manual (docs/devices/sim-capbank.md) says."""
    async with rtu_client(link) as client:
        mode = await client.read_holding_registers(10, count=1, device_id=unit)
        closed = await client.read_discrete_inputs(0, count=1, device_id=unit)
        assert not mode.isError() and not closed.isError()
        return mode.registers[0], bool(closed.bits[0])

"""The agent's control against the real bench: the IEEE 13-node bench running at speed in this process (OpenDSS,
Modbus TCP servers, the RS-485 line over a socat pty), and the agent's own pollers, store and control built from a
site file that points at the bench's addresses, exactly as a field engineer would configure them.

The agent's clock is the bench's (:class:`BenchClock`), so delays, dwell and deadlines are in simulated seconds.
What the tests judge is read at the bench (its device models and its solved feeder), never the agent's belief.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.acquisition import DevicePoller, Snapshot, build_pollers
from agent.config import AgentConfig, load_config
from agent.control.wiring import ControlSystem, build_control
from agent.store import AsyncStore
from helpers.bench import NOON, ROOT, ieee13_copy
from protocols.modbus.serialbus import SerialBusRegistry
from sim_hw.bench import Bench
from sim_hw.config import BenchConfig, load_bench_config
from sim_hw.devices.capbank import Action, CapBankController
from sim_hw.devices.modbus_server import WriteRequest
from sim_hw.truthlog import TruthLog

MAPS = ROOT / "config" / "maps"
CAP = "cap675-ctl"
# the bench's cap675 options: open, in local automatic (its autonomous state). A select stays live 60 simulated s:
# the device's 10 s default is 0.5 s of wall time at the bench's 20x, which the agent's operate can miss on a loaded
# machine (the RS-485 line is shared with the pollers), and the bank then refuses it as SELECT_EXPIRED.
OPEN_LOCAL_AUTO = ('options = { capacitor = "cap675" }',
                   'options = { capacitor = "cap675", closed = false, mode = "local_auto", select_timeout_s = 60 }')  # fmt: skip
OPEN_REMOTE = ('options = { capacitor = "cap675" }',
               'options = { capacitor = "cap675", closed = false, select_timeout_s = 60 }')  # fmt: skip


class BenchClock:
    """The agent's clock read from the bench's simulated clock (paced by wall time while the bench runs)."""

    def __init__(self, bench: Bench) -> None:
        self.bench = bench

    @property
    def speed(self) -> float:
        return self.bench.speed

    def time(self) -> float:
        return self.bench.clock()

    def monotonic(self) -> float:
        return self.bench.clock()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / self.bench.speed)


# the regulator held in manual from its panel (no master writes it, so its communication-loss fallback is off)
REGULATOR_MANUAL = ('kind = "regulator"', 'kind = "regulator"\noptions = { mode = "manual", revert_timeout_s = 0 }')


@asynccontextmanager
async def running_bench(tmp_path: Path, *, edit: tuple[str, str] | None = None, speed: float = 20.0,
                        start: str = NOON, more: tuple[tuple[str, str], ...] = (),
                        truth: Path | None = None) -> AsyncIterator[Bench]:  # fmt: skip
    """The shipped bench, privately copied (``edit`` and ``more``: text edits of the copy), started and stepping at
    ``speed`` until the block ends (``truth``: where its truth log goes, sim_hw/truthlog.py)."""
    path = ieee13_copy(tmp_path, start=start, edit=edit, irradiance="clear")
    text = path.read_text()
    for old, new in more:
        assert old in text, old
        text = text.replace(old, new)
    path.write_text(text)
    bench = Bench(load_bench_config(path), speed=speed, truth_log=None if truth is None else TruthLog(truth))
    await bench.start()
    stop = asyncio.Event()
    task = asyncio.create_task(bench.run(stop=stop))
    try:
        yield bench
    finally:
        stop.set()
        await task
        await bench.stop()


def site_file(bench: Bench | BenchConfig, folder: Path, control: str, *, cap_poll_s: float = 2.0, extra: str = "",
              broker: str = "mqtt://127.0.0.1:1") -> Path:  # fmt: skip
    """A site file reading the bench's sub meter, head relay and cap bank controller, with ``control`` appended
    (``extra``: more top-level tables, e.g. ``[clock]``)."""
    cfg = bench.config if isinstance(bench, Bench) else bench
    dev = {d.name: d for d in cfg.devices}
    link = cfg.bus("bus1").link
    text = f"""
site_id = "bench-site"
[store]
path = "{folder / "agent.db"}"
[uplink]
broker = "{broker}"
{extra}
[[devices]]
name = "sub-meter"
protocol = "modbus-tcp"
host = "127.0.0.1"
port = {dev["sub-meter"].port}
unit_id = 1
poll_interval_s = 2.0
timeout_s = 0.5
map = "{MAPS / "sim-meter.toml"}"

[[devices]]
name = "head-relay"
protocol = "modbus-tcp"
host = "127.0.0.1"
port = {dev["head-relay"].port}
unit_id = 1
poll_interval_s = 2.0
timeout_s = 0.5
map = "{MAPS / "sim-relay.toml"}"

[[devices]]
name = "{CAP}"
protocol = "modbus-rtu"
serial_port = "{link}"
baudrate = 19200
unit_id = {dev[CAP].unit_id}
poll_interval_s = {cap_poll_s}
timeout_s = 0.3
map = "{MAPS / "sim-capbank.toml"}"
"""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "site.toml"
    path.write_text(text + control)
    return path


INTERLOCKS = """
[control.interlocks]
relay = "head-relay"
head_voltage_points = [{ point = "sub-meter.v_a", nominal_v = 2401.8 }]
"""


def capbank_control(mode: str = "control", *, envelope: str = "min_command_interval_s = 0", cadence_s: float = 5,
                    delay_s: float = 10, more: str = "") -> str:  # fmt: skip
    """``[control]`` for the bench's cap bank under var switching, with :data:`INTERLOCKS`: close when the head
    draws more than 1.5 Mvar lagging, open below 0.2 Mvar, a 700 kvar bank, no dwell. ``envelope``: the lines of
    ``[control.envelope]`` ("" for none), ``more``: further lines of ``[control.capbank]``."""
    table = f"[control.envelope]\n{envelope}\n" if envelope else ""
    return f"""
[control]
mode = "{mode}"
{table}{INTERLOCKS}
[control.capbank]
device = "{CAP}"
cadence_s = {cadence_s}
delay_s = {delay_s}
var_point = "sub-meter.q_total"
q_close_above_var = 1500000
q_open_below_var = 200000
bank_var = 700000
min_dwell_s = 0
{more}
"""


@dataclass
class Agent:
    """The agent's side: config, snapshot, store, pollers, control; ``decisions()`` reads its control stream."""

    config: AgentConfig
    snapshot: Snapshot
    store: AsyncStore
    pollers: list[DevicePoller]
    control: ControlSystem
    clock: BenchClock
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def _rows(self, sql: str) -> list[tuple[Any, ...]]:
        """Read the store's file on a connection of its own (also once the agent has stopped)."""
        conn = sqlite3.connect(f"file:{self.config.store.path}?mode=ro", uri=True)
        try:
            return conn.execute(sql).fetchall()
        finally:
            conn.close()

    def decisions(self) -> list[dict[str, Any]]:
        return [json.loads(r[0]) for r in self._rows("SELECT data FROM events WHERE stream='control' ORDER BY id")]

    def events(self) -> list[tuple[str, dict[str, Any]]]:
        rows = self._rows("SELECT kind, data FROM events WHERE stream='events' ORDER BY id")
        return [(k, json.loads(d) if d else {}) for k, d in rows]

    def poller(self, name: str) -> DevicePoller:
        return next(p for p in self.pollers if p.device.name == name)


@asynccontextmanager
async def running_agent(bench: Bench, site: Path, *, run_pollers: bool = True) -> AsyncIterator[Agent]:
    """The agent's pollers and control against ``bench`` until the block ends; then control stops (handing back
    every device it holds) before the pollers, as the service does."""
    config = load_config(site)
    clock = BenchClock(bench)
    store = await AsyncStore.open(config.store.path, config.site_id, config.store.max_bytes)
    snapshot = Snapshot()
    registry = SerialBusRegistry()
    pollers = build_pollers(config.devices, snapshot.update, clock.time, registry=registry, speed=clock.speed)
    control = build_control(config, snapshot, store, clock, pollers)
    assert control is not None
    agent = Agent(config, snapshot, store, pollers, control, clock)
    poll_tasks = [asyncio.create_task(p.run()) for p in pollers] if run_pollers else []
    control_tasks = [asyncio.create_task(f()) for _, f in control.tasks()]
    agent.tasks = [*poll_tasks, *control_tasks]
    try:
        yield agent
    finally:
        for t in control_tasks:
            t.cancel()
        await asyncio.gather(*control_tasks, return_exceptions=True)
        await control.stop()
        for t in poll_tasks:
            t.cancel()
        await asyncio.gather(*poll_tasks, return_exceptions=True)
        for p in pollers:
            with contextlib.suppress(Exception):
                await p.transport.close()
        await registry.close()
        await store.aclose()


def cap_model(bench: Bench) -> CapBankController:
    model = bench.model_of(CAP)
    assert isinstance(model, CapBankController)
    return model


def panel_operate(bench: Bench, action: Action, token: int = 0x7777) -> None:
    """An operator at the controller's panel (a second master): select and operate, as the manual says."""
    model = cap_model(bench)
    sel = model.on_write(WriteRequest(1, None, 0, (), {"sbo_select": int(action), "sbo_token": token}))  # type: ignore[arg-type]
    assert sel is None, f"panel select refused: {model.last_result!r}"
    op = model.on_write(WriteRequest(1, None, 2, (), {"sbo_operate": int(action), "sbo_operate_token": token}))  # type: ignore[arg-type]
    assert op is None, f"panel operate refused: {model.last_result!r}"


async def bench_steps(bench: Bench, n: int = 2) -> None:
    """Wait for ``n`` more bench steps."""
    target = bench.steps + n
    while bench.steps < target:
        await asyncio.sleep(0.005)

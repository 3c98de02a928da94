"""The DER function on one bench inverter served on loopback: the agent's real SunSpec poller, snapshot, store,
envelope, actuator and controller, on the inverter's simulated clock (one bench step a second, stepped by a task).

``async with der_rig(tmp_path, group) as r``: ``await r.cycle()`` polls the inverter and runs one controller cycle;
``r.inv`` is the device model (what the device holds), ``r.decisions()`` the control stream.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.acquisition import Snapshot, SunSpecPoller
from agent.control.config import ControlConfig, DerGroupConfig, EnvelopeConfig, InterlockConfig
from agent.control.controller import Controller
from agent.control.der import DerFunction
from agent.control.envelope import ControlStream, Envelope
from agent.control.inverter import DerActuator
from agent.events import EventSpool, RecentActions
from agent.store import AsyncStore
from helpers.controlbench import INTERLOCKS
from helpers.devicerigs import RigClock
from helpers.sunspec import ServedInverter, inverter, served_inverter, sunspec_device
from protocols.modbus.client import TcpTransport

DEV = "pv675"


@dataclass
class DerRig:
    served: ServedInverter
    poller: SunSpecPoller
    snapshot: Snapshot
    store: AsyncStore
    envelope: Envelope
    actuator: DerActuator
    function: DerFunction
    controller: Controller
    clock: RigClock

    @property
    def inv(self) -> Any:
        return self.served.inv

    async def poll(self) -> None:
        self.poller._slow_next = 0.0  # the settings models too, at every poll of the test
        assert await self.poller.poll_once()

    async def cycle(self) -> list[Any]:
        """Poll the inverter (every model), then one controller cycle of layer 0."""
        await self.poll()
        self.controller._due.clear()
        return await self.controller.cycle(0)

    def decisions(self) -> list[dict[str, Any]]:
        rows = self.store.store.conn.execute("SELECT data FROM events WHERE stream='control' ORDER BY id")
        return [json.loads(d) for (d,) in rows]

    def events(self) -> list[str]:
        return [k for (k,) in self.store.store.conn.execute("SELECT kind FROM events WHERE stream='events'")]


@asynccontextmanager
async def der_rig(tmp_path: Path, group: DerGroupConfig, *, mode: str = "control", ignore_writes: bool = False,
                  readback_timeout_s: float = 10.0, refuse: str | None = None,
                  curve_reversion: bool = True, step_every_s: float = 0.002) -> AsyncIterator[DerRig]:  # fmt: skip
    """``refuse``: the device answers exception 3 (illegal data value) to every write touching a point whose name
    starts with it (a firmware that will not take those settings); other writes reach the model.
    ``curve_reversion`` False: an inverter whose 705/706/711 have no reversion timer (served "not implemented").
    ``step_every_s``: the wall-clock pause between bench steps (1 simulated s each), besides the step itself."""
    inv = inverter(curve_reversion=curve_reversion)
    async with served_inverter(inv, ignore_writes=ignore_writes) as served:
        if refuse is not None:
            model = served.inv

            def refusing(req: Any) -> int | None:
                return 3 if any(n.startswith(refuse) for n in req.points) else model.on_write(req)

            served.server.on_write(1, refusing)
        await served.step()
        clock = RigClock(lambda: served.t)
        stop = asyncio.Event()

        async def stepping() -> None:
            while not stop.is_set():
                await served.step()
                await asyncio.sleep(step_every_s)

        task = asyncio.create_task(stepping())
        snapshot = Snapshot()
        transport = TcpTransport("127.0.0.1", served.port, timeout_s=1.0, retries=0)
        poller = SunSpecPoller(sunspec_device(DEV, served.port), transport, snapshot.update, clock.time)
        store = await AsyncStore.open(tmp_path / "agent.db", "der-site", 16 << 20, max_age_s=0.0)
        cfg = ControlConfig(mode=mode, envelope=EnvelopeConfig(readback_timeout_s=readback_timeout_s,
                                                               min_command_interval_s=0.0),
                            interlocks=InterlockConfig(stale_after_s=30.0), der=(group,))  # fmt: skip
        actuator = DerActuator(poller.link, clock, category=group.category, reversion_s=group.reversion_s,
                               setpoint_changes_per_hour=group.setpoint_changes_per_hour)  # fmt: skip
        function = DerFunction(group, DEV, cfg.function_mode(group.mode))
        audit = EventSpool(ControlStream(store), name="control-audit", actions=None)
        events = EventSpool(store, name="control", actions=None)
        envelope = Envelope(config=cfg, store=store, clock=clock, snapshot=snapshot, actuators=[actuator],
                            policies=[function.policy], audit=audit, events=events,
                            actions=RecentActions(window_s=60.0))  # fmt: skip
        controller = Controller([function], envelope, snapshot, clock)
        try:
            yield DerRig(served, poller, snapshot, store, envelope, actuator, function, controller, clock)
        finally:
            stop.set()
            await task
            await transport.close()
            await store.aclose()


def read_volt_var(port: int) -> dict[str, Any]:
    """Model 705 as pysunspec2's own SunSpecModbusClientDeviceTCP reads it (its scan, its scale factors): the
    enable, the reversion points and the active curve 1 (V in %VN, Var in % of its DeptRef)."""
    import sunspec2.modbus.client as client

    d = client.SunSpecModbusClientDeviceTCP(slave_id=1, ipaddr="127.0.0.1", ipport=port)
    try:
        d.scan()
        vv = d.models[705][0]
        vv.read()
        crv = vv.Crv[0]
        return {"Ena": vv.Ena.value, "RvrtTms": vv.RvrtTms.value, "RvrtRem": vv.RvrtRem.value,
                "RvrtCrv": vv.RvrtCrv.value, "DeptRef": crv.DeptRef.value,
                "V": [p.V.cvalue for p in crv.Pt], "Var": [p.Var.cvalue for p in crv.Pt]}  # fmt: skip
    finally:
        d.close()


def der_control(port: int, group: str, *, mode: str = "control", readback_s: float | None = None) -> str:
    """The site file's part for one DER group on the bench inverter pv675 served at ``port`` (its ``[[devices]]``
    entry, then ``[control]`` with the interlocks and ``[[control.der]]`` named "pv", ``group`` its settings);
    for :func:`helpers.controlbench.site_file`. ``readback_s``: the envelope's readback timeout (else its default)."""
    readback = "" if readback_s is None else f"readback_timeout_s = {readback_s}\n"
    return f"""
[[devices]]
name = "{DEV}"
protocol = "sunspec"
host = "127.0.0.1"
port = {port}
unit_id = 1
poll_interval_s = 2.0
timeout_s = 0.5
settings_poll_interval_s = 5

[control]
mode = "{mode}"
[control.envelope]
{readback}min_command_interval_s = 0
{INTERLOCKS}
[[control.der]]
name = "pv"
devices = ["{DEV}"]
cadence_s = 5
stale_after_s = 30
{group}
"""

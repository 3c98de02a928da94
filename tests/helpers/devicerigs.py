"""The bench's capacitor bank and regulator controllers, each served alone over real Modbus TCP on a free port and
stepped by the test on a simulated clock: the devices the control tests command, without the feeder.

``await rig.step(n)`` advances the simulated clock n seconds, one controller scan per second (what the bench does
once per step), and serves the new registers. ``rig.t`` is the simulated time; ``rig.clock`` an agent-side clock
that reads it, so the agent's timers and the device's agree.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.config import DeviceConfig
from helpers.net import free_port
from protocols.modbus.client import TcpTransport
from protocols.modbus.registermap import parse_register_map
from sim_hw.devices.capbank import CapBankController
from sim_hw.devices.modbus_server import ModbusDeviceServer
from sim_hw.devices.regulator import RegulatorController

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_781_956_800.0  # 2026-06-20T12:00:00Z


def load_map(name: str):
    import tomllib

    return parse_register_map(tomllib.loads((ROOT / "config" / "maps" / name).read_text()), name)


CAPBANK_MAP = load_map("sim-capbank.toml")
REGULATOR_MAP = load_map("sim-regulator.toml")


class RigClock:
    """The agent's clock on the rig's simulated time; ``sleep`` yields to the loop (the test steps time)."""

    speed = 1.0

    def __init__(self, now: Callable[[], float]) -> None:
        self._now = now

    def time(self) -> float:
        return self._now()

    def monotonic(self) -> float:
        return self._now()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(0.001)


class _Feeder:
    def set_capacitor(self, name: str, closed: bool) -> None:
        pass

    def set_regulator_taps(self, *args: Any, **kw: Any) -> None:
        pass


class DeviceRig:
    """One controller model served on 127.0.0.1; ``async with`` starts and stops it."""

    def __init__(self, model: Any, register_map: Any, name: str, t0: float = T0) -> None:
        self.t = t0
        self.model = model
        self.name = name
        self.register_map = register_map
        self.port = free_port()
        self.server = ModbusDeviceServer.tcp("127.0.0.1", self.port, {1: register_map})
        self.feeder = _Feeder()
        self.clock = RigClock(lambda: self.t)
        self.ignore_operates = False  # a faulty controller: accepts SBO and never switches

    async def __aenter__(self) -> DeviceRig:
        await self.server.start()
        self.server.on_write(1, self.model.on_write)
        await self.step(1)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.server.stop()

    async def step(self, n: int = 1) -> None:
        for _ in range(n):
            self.t += 1.0
            if self.ignore_operates and getattr(self.model, "_pending", None) is not None:
                self.model._pending = None  # the switch never moves (a stuck vacuum switch)
            actuate = getattr(self.model, "actuate", None)
            if actuate is not None:
                actuate(self.t, self.feeder)
            await self.server.update(1, self.model.values(self.t))

    def device(self, **kw: Any) -> DeviceConfig:
        return DeviceConfig(name=self.name, protocol="modbus-tcp", unit_id=1, register_map=self.register_map,
                            host="127.0.0.1", port=self.port, timeout_s=kw.pop("timeout_s", 1.0), **kw)  # fmt: skip

    def transport(self) -> TcpTransport:
        return TcpTransport("127.0.0.1", self.port, timeout_s=1.0, retries=0)

    async def run(self, stop: asyncio.Event, period_s: float = 0.01) -> None:
        """Scan every ``period_s`` of wall time until ``stop`` (a device that keeps time while the agent works)."""
        while not stop.is_set():
            await self.step()
            await asyncio.sleep(period_s)


def capbank_rig(**options: Any) -> DeviceRig:
    model = CapBankController("cap", {"capacitor": "cap675", **options})
    rig = DeviceRig(model, CAPBANK_MAP, "cap")
    model.clock = lambda: rig.t  # writes are stamped with the rig's simulated time
    return rig


def regulator_rig(**options: Any) -> DeviceRig:
    model = RegulatorController("reg", options)
    return DeviceRig(model, REGULATOR_MAP, "reg")

"""A safety envelope on a real SQLite store with a fake actuator: every check of the envelope in isolation.

The fake actuator stands in for faults a real device cannot be made to show cheaply (a readback that never
comes, a link that dies mid-command); everything else (the store, the spools, the clock's arithmetic) is real.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.control.actuators import Actuator, Budget, Result
from agent.control.config import ControlConfig, EnvelopeConfig, FunctionPolicy, InterlockConfig, VoltagePoint
from agent.control.decision import Command, Decision, Input, propose
from agent.control.envelope import ControlStream, Envelope
from agent.control.view import View
from agent.events import EventSpool, RecentActions
from agent.points import Quality, Reading
from agent.store import AsyncStore

T0 = 1_781_956_800.0
DEV = "dev"


class FakeClock:
    speed = 1.0

    def __init__(self, t: float = T0) -> None:
        self.t = t

    def time(self) -> float:
        return self.t

    def monotonic(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.t += seconds
        await asyncio.sleep(0)


class FakeLink:
    device = DEV


class FakeActuator(Actuator):
    """A device with two actions (up +1, down -1), a budget of ``ops`` per day, and scripted results."""

    kind = "fake"
    actions = frozenset({"fake.up", "fake.down"})

    def __init__(self, clock: FakeClock, ops_per_day: int = 100, **kw: Any) -> None:
        super().__init__(FakeLink(), clock, budgets=(Budget("ops_per_day", "ops", ops_per_day, 86_400.0),), **kw)  # type: ignore[arg-type]
        self.results: list[Result] = []
        self.executed: list[Command] = []
        self.handed_back: list[Mapping[str, Any] | None] = []
        self.beats = 0
        self.lockout_why: str | None = None
        self.local_why: str | None = None
        self.handback_result = Result("applied", {"mode": 1}, released=True)

    def state_points(self) -> tuple[str, ...]:
        return (f"{DEV}.mode",)

    def cost(self, command: Command, view: View) -> dict[str, int]:
        return {"ops": 1}

    def direction(self, command: Command, view: View) -> int:
        return 1 if command.action == "fake.up" else -1

    def lockout(self, command: Command, view: View) -> str | None:
        return self.lockout_why

    def local_state(self, view: View, held: Mapping[str, Any] | None) -> str | None:
        return self.local_why

    async def carry_out(self, command: Command, held: Mapping[str, Any] | None, deadline_s: float) -> Result:
        self.executed.append(command)
        if self.results:
            return self.results.pop(0)
        return Result("applied", {"position": 1}, held=dict(held) if held else {"mode": "remote"})

    async def hand_back(self, held: Mapping[str, Any] | None, deadline_s: float) -> Result:
        self.handed_back.append(held)
        return self.handback_result

    async def heartbeat(self) -> bool:
        self.beats += 1
        return True


HEAD = tuple(VoltagePoint(f"meter.v_{p}", 2401.8) for p in "abc")


def control_config(mode: str = "control", **env: Any) -> ControlConfig:
    return ControlConfig(mode=mode, envelope=EnvelopeConfig(**{"min_command_interval_s": 0.0, **env}),
                         interlocks=InterlockConfig(relay="relay", head_voltage_points=HEAD, stale_after_s=30.0))  # fmt: skip


@dataclass
class Rig:
    """An envelope, its store, its snapshot and its fake actuator (``async with`` opens and closes the store)."""

    path: Path
    mode: str = "control"
    env: dict[str, Any] = field(default_factory=dict)
    ops_per_day: int = 100
    min_dwell_s: float = 0.0
    hunting_reversals: int | None = None  # the function's own hunting limit (None: the envelope's)

    def __post_init__(self) -> None:
        self.clock = FakeClock()
        self.snapshot: dict[str, Reading] = {}
        self.actions = RecentActions(window_s=60.0)
        self.fresh()

    def fresh(self, **override: Any) -> None:
        """Every interlock input good and fresh: feeder alive, relay closed, device in its mode."""
        t = self.clock.t
        vals = {"meter.v_a": 2450.0, "meter.v_b": 2440.0, "meter.v_c": 2445.0, "relay.relay_state": 0,
                "relay.breaker_closed": True, "relay.lockout": False, "dev.mode": 1, "meter.q": 1.2e6,
                **override}  # fmt: skip
        for point, v in vals.items():
            self.snapshot[point] = Reading(point, t, v, "", Quality.GOOD)

    def set(self, point: str, value: Any, *, age_s: float = 0.0, quality: Quality = Quality.GOOD) -> None:
        self.snapshot[point] = Reading(point, self.clock.t - age_s, value, "", quality)

    async def __aenter__(self) -> Rig:
        await self.open()
        return self

    async def open(self) -> None:
        self.store = await AsyncStore.open(self.path, "sub-1", 16 << 20, max_age_s=0.0)
        self.actuator = FakeActuator(self.clock, self.ops_per_day, heartbeat_point="hb")
        self.audit = EventSpool(ControlStream(self.store), name="control-audit", actions=None)
        self.events = EventSpool(self.store, name="control", actions=None)
        self.envelope = Envelope(config=control_config(self.mode, **self.env), store=self.store, clock=self.clock,
                                 snapshot=self.snapshot, actuators=[self.actuator],
                                 policies=[FunctionPolicy("fn", self.mode, 30.0, self.min_dwell_s,
                                                          hunting_reversals=self.hunting_reversals)],
                                 audit=self.audit,
                                 events=self.events, actions=self.actions)  # fmt: skip

    async def close(self) -> None:
        await self.store.aclose()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def decision(self, action: str = "fake.up", *, inputs: tuple[Input, ...] | None = None, mode: str | None = None,
                 function: str = "fn") -> Decision:  # fmt: skip
        view = View(self.snapshot, self.clock.t)
        ins = inputs if inputs is not None else (view.input("meter.q"),)
        return propose(function, DEV, mode or self.mode, self.clock.t, ins, "rule", Command(DEV, action, {"x": 1}))

    async def submit(self, action: str = "fake.up", **kw: Any) -> Decision:
        """Every input fresh at the rig's clock, then submit."""
        self.fresh()
        return await self.envelope.submit(self.decision(action, **kw))

    def rows(self, stream: str) -> list[tuple[str, dict]]:
        import json

        sql = "SELECT kind, data FROM events WHERE stream=? ORDER BY id"
        return [(k, json.loads(d) if d else {}) for k, d in self.store.store.conn.execute(sql, (stream,))]

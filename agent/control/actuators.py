"""Device adapters behind the safety envelope: each device's command, its readback, its hand-back.

An :class:`Actuator` knows one kind of device as its manual describes it (docs/devices/*.md) and nothing of
policy: the envelope (agent/control/envelope.py) decides whether a command may go, in order, and only then
calls :meth:`Actuator.carry_out`. The actuator says what the envelope's checks need to know of the device — the
snapshot points its checks read, its bounds, the wear a command costs and in which direction it moves, its
own lockouts, whether someone else has the device — and carries the command out through the device's link
(agent/devicelink.py), reading back until the device shows it or the deadline passes.

Every actuator can hand its device back to its autonomous safe state (docs/control.md, "Fallback"):

- capacitor bank controller (SIM-CBC-1): local automatic (``mode`` 1), its own voltage control;
- regulator control (SIM-REG-1): automatic (``mode`` 1) on the band centre it had before the agent changed it.

While the envelope holds a device out of that state it writes the device's heartbeat register (when the site
says it has one), so the device's communication-loss timer puts it back by itself if the agent dies.

Only the envelope holds actuators (tests/test_control_envelope.py checks that no other module calls them).
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agent.clock import Clock
from agent.control.decision import Command
from agent.control.view import View
from agent.devicelink import DeviceLink, LinkError
from protocols.modbus.errors import ModbusDeviceError, ModbusExceptionResponse

SCAN_S = 1.0  # a controller refreshes its registers once per scan (docs/devices/sim-capbank.md: one bench step)
STATUSES = ("applied", "refused", "readback_failed", "failed")


@dataclass(frozen=True, slots=True)
class Budget:
    """A wear budget: at most ``limit`` of ``cost`` in any ``window_s`` (e.g. 4 cap operations a day)."""

    name: str  # as reported in budgets_left: "cap_ops_per_day"
    cost: str  # the cost it counts: "cap_ops"
    limit: int
    window_s: float


@dataclass(frozen=True, slots=True)
class Result:
    """What carrying out a command (or a hand-back) did.

    ``status``: ``applied`` (the device shows it), ``refused`` (the device answered an exception: nothing done),
    ``readback_failed`` (accepted, not shown within the deadline), ``failed`` (no answer). ``held`` is what the
    envelope must remember while it holds the device out of its autonomous state (None: it does not);
    ``released`` says the device is back in that state.
    """

    status: str
    readback: dict[str, Any] = field(default_factory=dict)
    detail: dict[str, Any] = field(default_factory=dict)
    held: dict[str, Any] | None = None
    released: bool = False

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"result status = {self.status!r}: one of {', '.join(STATUSES)}")


class Actuator(ABC):
    """One device behind the envelope (module docstring)."""

    kind: str = ""
    actions: frozenset[str] = frozenset()

    def __init__(
        self,
        link: DeviceLink,
        clock: Clock,
        *,
        budgets: Sequence[Budget] = (),
        heartbeat_point: str | None = None,
        heartbeat_s: float = 30.0,
        scan_s: float = SCAN_S,
    ) -> None:
        self.link = link
        self.clock = clock
        self.budgets = tuple(budgets)
        self.heartbeat_point = heartbeat_point
        self.heartbeat_s = heartbeat_s
        self.scan_s = scan_s
        self._beat = random.randrange(1, 0x10000)
        self.heartbeats = 0

    @property
    def device(self) -> str:
        return self.link.device

    def point(self, name: str) -> str:
        return f"{self.device}.{name}"

    # -- what the envelope's checks read -------------------------------------------------------------
    @abstractmethod
    def state_points(self) -> tuple[str, ...]:
        """Snapshot points the checks below read (the envelope refuses when they are not fresh and good)."""

    def bounds(self, command: Command, view: View) -> str | None:
        """Why the command's values are out of bounds for this device, or None."""
        if command.action not in self.actions:
            return f"action {command.action} is not one of {', '.join(sorted(self.actions))}"
        return None

    @abstractmethod
    def cost(self, command: Command, view: View) -> dict[str, int]:
        """The wear the command costs, by budget cost name."""

    @abstractmethod
    def direction(self, command: Command, view: View) -> int:
        """+1 (close, raise), -1 (open, lower) or 0: what the hunting detector counts reversals of."""

    def lockout(self, command: Command, view: View) -> str | None:
        """The device's own lockout that forbids the command now, or None."""
        return None

    @abstractmethod
    def local_state(self, view: View, held: Mapping[str, Any] | None) -> str | None:
        """Why the device is not ours to command (local, manual, taken back while we held it), or None."""

    # -- carrying out ----------------------------------------------------------------------------------
    @abstractmethod
    async def carry_out(self, command: Command, held: Mapping[str, Any] | None, deadline_s: float) -> Result:
        """Write the command and read it back within ``deadline_s`` (the agent's clock)."""

    @abstractmethod
    async def hand_back(self, held: Mapping[str, Any] | None, deadline_s: float) -> Result:
        """Put the device back in its autonomous safe state and read it back."""

    async def heartbeat(self) -> bool:
        """Write the heartbeat register once (no register: nothing to do). True if written."""
        if self.heartbeat_point is None:
            return False
        self._beat = self._beat % 0xFFFF + 1  # 1..65535: every write a new value
        await self.link.write({self.heartbeat_point: self._beat})
        self.heartbeats += 1
        return True

    # -- helpers ------------------------------------------------------------------------------------------
    async def _wait_for(
        self, names: Sequence[str], ok: Callable[[dict[str, Any]], bool], deadline_s: float
    ) -> tuple[bool, dict[str, Any]]:
        """Read ``names`` until ``ok`` holds or ``deadline_s`` has passed (at least two reads, a scan apart)."""
        end = self.clock.monotonic() + deadline_s
        reads = 0
        while True:
            got = await self.link.read(names)
            reads += 1
            if ok(got):
                return True, got
            if reads >= 2 and self.clock.monotonic() >= end:
                return False, got
            await self.clock.sleep(self.scan_s)


def _failure(err: Exception) -> dict[str, Any]:
    return {"error": str(err), "error_type": type(err).__name__}


# ---- the capacitor bank controller ------------------------------------------------------------------------

# docs/devices/sim-capbank.md, "Result codes"
CAPBANK_RESULTS = {0: "NONE", 1: "OPERATED", 2: "SELECTED", 3: "SETTINGS_CHANGED", 10: "NO_SELECT", 11: "WRONG_TOKEN",
                   12: "SELECT_EXPIRED", 13: "ACTION_MISMATCH", 14: "LOCKOUT", 15: "NOT_REMOTE", 16: "BAD_REQUEST",
                   17: "ALREADY_IN_POSITION", 18: "BUSY", 19: "BAD_SETTING"}  # fmt: skip
CAPBANK_REMOTE, CAPBANK_LOCAL_AUTO = 0, 1  # register ``mode``
CAPBANK_CLOSE, CAPBANK_OPEN = 1, 2  # ``sbo_select`` / ``sbo_operate`` actions


class CapBankActuator(Actuator):
    """SIM-CBC-1 (docs/devices/sim-capbank.md): select-before-operate in remote; hand back = local automatic.

    ``capbank.close`` / ``capbank.open``: take the controller to remote (``mode`` 0) unless the envelope holds
    it already, SELECT (``sbo_select`` + ``sbo_token`` in one request), OPERATE (``sbo_operate`` + the same
    token in one request), then read ``closed`` until it shows the new position. An exception answer is a
    refusal: ``last_result`` is read after a scan for its reason, nothing is retried.
    """

    kind = "capbank"
    actions = frozenset({"capbank.close", "capbank.open"})

    def __init__(self, link: DeviceLink, clock: Clock, *, ops_per_day: int, **kw: Any) -> None:
        super().__init__(link, clock, budgets=(Budget("cap_ops_per_day", "cap_ops", ops_per_day, 86_400.0),), **kw)
        self._token = random.randrange(1, 0x10000)

    def state_points(self) -> tuple[str, ...]:
        return (self.point("mode"), self.point("closed"), self.point("lockout_active"))

    def bounds(self, command: Command, view: View) -> str | None:
        base = super().bounds(command, view)
        if base is not None:
            return base
        closed = view.input(self.point("closed")).value
        if closed is not None and bool(closed) == (command.action == "capbank.close"):
            return f"already_in_position: the bank is {'closed' if closed else 'open'}"
        return None

    def cost(self, command: Command, view: View) -> dict[str, int]:
        return {"cap_ops": 1}

    def direction(self, command: Command, view: View) -> int:
        return 1 if command.action == "capbank.close" else -1

    def lockout(self, command: Command, view: View) -> str | None:
        if command.action != "capbank.close":
            return None
        if view.input(self.point("lockout_active")).value:
            left = view.input(self.point("lockout_remaining_s")).value
            return f"discharge lockout ({left} s left)" if left is not None else "discharge lockout"
        return None

    def local_state(self, view: View, held: Mapping[str, Any] | None) -> str | None:
        mode = view.input(self.point("mode")).value
        if held is not None and mode == CAPBANK_LOCAL_AUTO:
            return "taken back to local automatic while the agent held it in remote"
        return None

    def _next_token(self) -> int:
        self._token = self._token % 0xFFFF + 1
        return self._token

    async def _last_result(self) -> int | None:
        """The reason of a refusal: ``last_result`` shows a write's effect from the next scan on, so it is read a
        scan later, and again (up to three scans) until it shows a refusal code (10 and above)."""
        value: int | None = None
        for _ in range(3):
            await self.clock.sleep(self.scan_s)
            try:
                got = (await self.link.read(["last_result"]))["last_result"]
            except (ModbusDeviceError, LinkError):
                return value
            value = int(got) if isinstance(got, int | float) else None
            if value is not None and value >= 10:
                break
        return value

    async def carry_out(self, command: Command, held: Mapping[str, Any] | None, deadline_s: float) -> Result:
        close = command.action == "capbank.close"
        code = CAPBANK_CLOSE if close else CAPBANK_OPEN
        now_held: dict[str, Any] | None = dict(held) if held is not None else None
        token = self._next_token()
        try:
            if now_held is None:
                await self.link.write({"mode": CAPBANK_REMOTE})
                now_held = {"mode": "remote"}
            await self.link.write({"sbo_select": code, "sbo_token": token})
            await self.link.write({"sbo_operate": code, "sbo_operate_token": token})
        except ModbusExceptionResponse as err:
            last = await self._last_result()
            detail = {"exception": err.code, "exception_name": err.name, "last_result": last,
                      "result": CAPBANK_RESULTS.get(last or 0, str(last))}  # fmt: skip
            return Result("refused", {"last_result": last}, detail, held=now_held)
        except (ModbusDeviceError, LinkError) as err:
            return Result("failed", {}, _failure(err), held=now_held)
        try:
            ok, got = await self._wait_for(["closed", "last_result", "operation_count"],
                                           lambda g: g.get("closed") == close, deadline_s)  # fmt: skip
        except (ModbusDeviceError, LinkError) as err:
            return Result("failed", {}, {**_failure(err), "token": token}, held=now_held)
        readback = {k: (int(v) if isinstance(v, bool) else v) for k, v in got.items()}
        detail = {"token": token, "result": CAPBANK_RESULTS.get(int(got.get("last_result") or 0), "?")}
        return Result("applied" if ok else "readback_failed", readback, detail, held=now_held)

    async def hand_back(self, held: Mapping[str, Any] | None, deadline_s: float) -> Result:
        try:
            await self.link.write({"mode": CAPBANK_LOCAL_AUTO})
            ok, got = await self._wait_for(["mode"], lambda g: g.get("mode") == CAPBANK_LOCAL_AUTO, deadline_s)
        except (ModbusDeviceError, LinkError) as err:
            return Result("failed", {}, _failure(err), held=dict(held) if held is not None else None)
        return Result("applied" if ok else "readback_failed", dict(got), {"mode": "local automatic"},
                      held=None if ok else dict(held or {}), released=ok)  # fmt: skip


# ---- the regulator control -------------------------------------------------------------------------------

REG_MANUAL, REG_AUTOMATIC = 0, 1  # register ``mode`` (docs/devices/sim-regulator.md)
TAP_MIN, TAP_MAX = -16, 16  # 32 steps of 0.625 %, ANSI C57.15
PHASES = ("a", "b", "c")


class RegulatorActuator(Actuator):
    """SIM-REG-1 (docs/devices/sim-regulator.md): band centre in automatic, or tap targets in manual; hand back =
    automatic on the band centre the control had before the agent changed it.

    ``regulator.band_center``: ``band_center_v`` (and optionally ``bandwidth_v``) written in one request, read
    back. ``regulator.taps``: ``mode`` = manual, then ``tap_target_a/b/c``; read back until the taps are there
    (one step per inter-tap delay). Nothing else is ever written.
    """

    kind = "regulator"
    actions = frozenset({"regulator.band_center", "regulator.taps"})

    def __init__(
        self,
        link: DeviceLink,
        clock: Clock,
        *,
        band_center_v: tuple[float, float],
        bandwidth_v: tuple[float, float],
        max_tap_step: int,
        taps_per_day: int,
        setpoint_changes_per_hour: int,
        **kw: Any,
    ) -> None:
        budgets = (Budget("taps_per_day", "taps", taps_per_day, 86_400.0),
                   Budget("setpoint_changes_per_hour", "setpoint_changes", setpoint_changes_per_hour, 3_600.0))  # fmt: skip
        super().__init__(link, clock, budgets=budgets, **kw)
        self.band_center_v = band_center_v
        self.bandwidth_v = bandwidth_v
        self.max_tap_step = max_tap_step

    def state_points(self) -> tuple[str, ...]:
        return (self.point("mode"), self.point("band_center_v"), *(self.point(f"tap_{p}") for p in PHASES))

    def _taps(self, view: View) -> list[int | None]:
        out: list[int | None] = []
        for p in PHASES:
            v = view.input(self.point(f"tap_{p}")).value
            out.append(int(v) if isinstance(v, int | float) else None)
        return out

    def bounds(self, command: Command, view: View) -> str | None:
        base = super().bounds(command, view)
        if base is not None:
            return base
        vals = command.values
        if command.action == "regulator.band_center":
            lo, hi = self.band_center_v
            bc = vals.get("band_center_v")
            if bc is None or not lo <= bc <= hi:
                return f"band_center_v = {bc}: must be in {lo:g}..{hi:g} V"
            if "bandwidth_v" in vals and not self.bandwidth_v[0] <= vals["bandwidth_v"] <= self.bandwidth_v[1]:
                return f"bandwidth_v = {vals['bandwidth_v']}: must be in {self.bandwidth_v[0]:g}..{self.bandwidth_v[1]:g} V"
            return None
        taps = self._taps(view)
        for p, now in zip(PHASES, taps, strict=True):
            target = vals.get(f"tap_{p}")
            if target is None:
                return f"tap_{p}: every phase's target is given"
            if int(target) != target or not TAP_MIN <= target <= TAP_MAX:
                return f"tap_{p} = {target}: an integer in {TAP_MIN}..{TAP_MAX}"
            if now is None:
                return f"tap_{p}: the present tap is not known"
            if abs(target - now) > self.max_tap_step:
                return f"tap_{p} = {target:g}: at most {self.max_tap_step} step(s) from {now}"
        return None

    def cost(self, command: Command, view: View) -> dict[str, int]:
        if command.action == "regulator.band_center":
            return {"setpoint_changes": 1}
        taps = self._taps(view)
        return {"taps": sum(abs(int(command.values[f"tap_{p}"]) - (t or 0)) for p, t in zip(PHASES, taps, strict=True))}

    def direction(self, command: Command, view: View) -> int:
        if command.action == "regulator.band_center":
            now = view.input(self.point("band_center_v")).value
            delta = command.values["band_center_v"] - float(now) if isinstance(now, int | float) else 0.0
        else:
            taps = self._taps(view)
            delta = sum(command.values[f"tap_{p}"] - (t or 0) for p, t in zip(PHASES, taps, strict=True))
        return (delta > 0) - (delta < 0)

    def local_state(self, view: View, held: Mapping[str, Any] | None) -> str | None:
        mode = view.input(self.point("mode")).value
        if held is None:
            return "in manual, not by the agent" if mode == REG_MANUAL else None
        wanted = held.get("held_mode", REG_AUTOMATIC)
        if mode is not None and mode != wanted:
            return f"put in {'manual' if mode == REG_MANUAL else 'automatic'} while the agent held it"
        return None

    async def _panel(self) -> dict[str, Any]:
        got = await self.link.read(["mode", "band_center_v", "bandwidth_v"])
        return {"panel_band_center_v": got["band_center_v"], "panel_bandwidth_v": got["bandwidth_v"]}

    async def carry_out(self, command: Command, held: Mapping[str, Any] | None, deadline_s: float) -> Result:
        vals = dict(command.values)
        now_held = dict(held) if held is not None else None
        try:
            if now_held is None:
                now_held = {**await self._panel(), "held_mode": REG_AUTOMATIC}
            if command.action == "regulator.band_center":
                write = {k: vals[k] for k in ("band_center_v", "bandwidth_v") if k in vals}
                await self.link.write(write)
                ok, got = await self._wait_for(list(write), lambda g: all(abs(g[k] - write[k]) < 0.05 for k in write),
                                               deadline_s)  # fmt: skip
            else:
                if now_held.get("held_mode") != REG_MANUAL:
                    await self.link.write({"mode": REG_MANUAL})
                    now_held["held_mode"] = REG_MANUAL
                targets = {f"tap_target_{p}": int(vals[f"tap_{p}"]) for p in PHASES}
                await self.link.write(targets)
                names = [*targets, *(f"tap_{p}" for p in PHASES)]
                ok, got = await self._wait_for(
                    names, lambda g: all(g[f"tap_{p}"] == targets[f"tap_target_{p}"] for p in PHASES), deadline_s
                )
        except ModbusExceptionResponse as err:
            return Result("refused", {}, {"exception": err.code, "exception_name": err.name}, held=now_held)
        except (ModbusDeviceError, LinkError) as err:
            return Result("failed", {}, _failure(err), held=now_held)
        return Result("applied" if ok else "readback_failed", dict(got), {}, held=now_held)

    async def hand_back(self, held: Mapping[str, Any] | None, deadline_s: float) -> Result:
        restore: dict[str, Any] = {"mode": REG_AUTOMATIC}
        if held is not None and held.get("panel_band_center_v") is not None:
            restore["band_center_v"] = held["panel_band_center_v"]
            if held.get("panel_bandwidth_v") is not None:
                restore["bandwidth_v"] = held["panel_bandwidth_v"]
        try:
            await self.link.write(restore)
            ok, got = await self._wait_for(
                list(restore), lambda g: all(abs(g[k] - v) < 0.05 for k, v in restore.items()), deadline_s
            )
        except (ModbusDeviceError, LinkError) as err:
            return Result("failed", {}, _failure(err), held=dict(held) if held is not None else None)
        return Result("applied" if ok else "readback_failed", dict(got), {"mode": "automatic", **restore},
                      held=None if ok else dict(held or {}), released=ok)  # fmt: skip


__all__ = [
    "CAPBANK_RESULTS",
    "Actuator",
    "Budget",
    "CapBankActuator",
    "RegulatorActuator",
    "Result",
]

"""Verified commands carried out through the safety envelope, and what they hold in force (docs/commands.md).

A command never reaches a device another way than a local decision does: it becomes a
:class:`~agent.control.decision.Decision` that the envelope checks (mode, suspensions, interlocks, bounds, rate,
wear budgets, dwell, lockouts, hunting), writes and reads back. Its result is that decision's outcome and readback.

What a command holds in force lives in *slots* (:class:`~agent.store.Override` rows, so a restart keeps them):

| slot | kind | effect while in force |
|---|---|---|
| ``mode:<target>`` | control.mode | the function's (or, for ``*``, the site's) mode; never above the site file's |
| ``der:<device>:setpoint`` | der.setpoint | the inverter's DER function holds the set point (and refreshes it) |
| ``der:<device>:curve:<curve>`` | der.curve | the DER function holds that curve |
| ``device:<device>`` | capbank.open/close, regulator.band_center | the local function leaves the device alone |
| ``schedule:<id>`` | schedule.load | each step's value, as a set point or band centre, from start to end |

When a slot's time runs out, when a schedule ends or is cancelled, on ``revert.all`` and when central has been
unheard longer than ``link_loss_s``, the slot ends and the device goes back to its autonomous fallback: a DER
function back to its group's own settings (written at once), a cap bank or regulator handed back by the envelope
to its own automatic control. Mode slots end only by ``revert.all`` or a new ``control.mode``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.commands.config import CommandsConfig
from agent.control import ieee1547
from agent.control.config import ConstantPf, DerGroupConfig
from agent.control.curveconfig import curve, explicit_droop, explicit_volt_var, explicit_volt_watt
from agent.control.decision import MODES, Command, Decision, lesser_mode, new_id, propose
from agent.control.der import DerFunction, wanted_state
from agent.control.view import View
from agent.control.wiring import ControlSystem
from agent.store import Override
from protocols.configcheck import Checker
from protocols.eventlog import EventLog
from protocols.telemetry.commands import Command as SignedCommand
from protocols.telemetry.commands import until_of

log = EventLog("commands")

FUNCTION = "central"  # the function name of a command's decisions on the control stream
CURVE_BUILDERS = {"volt_var": explicit_volt_var, "volt_watt": explicit_volt_watt, "freq_droop": explicit_droop}


@dataclass
class Outcome:
    """What executing a command came to: its result's status, reason and readback, the decisions that carried it
    out, and the slots it set or ended (stored with the result in one transaction)."""

    status: str  # applied | refused | failed
    reason: str = ""
    readback: dict[str, Any] = field(default_factory=dict)
    decisions: list[str] = field(default_factory=list)
    set_slots: list[Override] = field(default_factory=list)
    clear_slots: list[str] = field(default_factory=list)
    ended: list[Override] = field(default_factory=list)  # slots this command ended (their devices handed back)


def too_soon_s(d: Decision) -> float | None:
    """How long until ``d``, refused by the rate limit only for coming within ``min_command_interval_s`` of the
    device's last write, would be allowed [s of the agent's clock]; None for any other outcome (the hourly
    budget, the back-off after a device's refusal: no retry)."""
    if d.reason != "rate_limit" or "min_command_interval_s" not in d.detail or "since_last_s" not in d.detail:
        return None
    return max(float(d.detail["min_command_interval_s"]) - float(d.detail["since_last_s"]), 0.0) + 0.01


def outcome_of(d: Decision) -> Outcome:
    """A decision's outcome as a command's result."""
    readback = dict(d.readback or {})
    if d.outcome in ("applied", "reverted"):
        return Outcome("applied", "", readback, [d.id])
    if d.outcome == "advised":
        return Outcome("refused", f"advise_mode:{d.detail.get('would', 'allowed')}", readback, [d.id])
    if d.outcome == "refused":
        return Outcome("refused", d.verdict.removeprefix("refused:"), readback, [d.id])
    if d.outcome == "held":
        return Outcome("refused", d.rule, readback, [d.id])
    return Outcome("failed", d.outcome, readback, [d.id])


class Executor:
    """Carries out verified commands and keeps what they hold in force (module docstring)."""

    def __init__(self, control: ControlSystem, config: CommandsConfig) -> None:
        self.control = control
        self.config = config
        self.slots: dict[str, Override] = {}
        self._site_modes = {f.name: f.mode for f in control.controller.functions}
        self._site_mode = control.envelope.mode
        self._schedule_steps: dict[str, Any] = {}  # schedule id -> the value its current step applied

    # ---- what is there ------------------------------------------------------------------------------------------
    @property
    def clock(self) -> Any:
        return self.control.controller.clock

    def der_function(self, device: str) -> DerFunction | None:
        return next((f for f in self.control.controller.functions
                     if isinstance(f, DerFunction) and f.device == device), None)  # fmt: skip

    def view(self, now: float) -> View:
        return View(self.control.controller.snapshot, now)

    # ---- carrying out ------------------------------------------------------------------------------------------
    async def execute(self, cmd: SignedCommand, now: float) -> Outcome:
        """Carry out ``cmd`` (verified, taken); the slots it sets are applied here and returned to be stored."""
        until = until_of(cmd)
        if until is not None and cmd.kind != "schedule.load":
            if until <= now:
                return Outcome("refused", "until_passed", {"until": until, "now": round(now, 3)})
            if until - now > self.config.max_hold_s:
                return Outcome("refused", "hold_too_long", {"until": until, "max_hold_s": self.config.max_hold_s})
        handler = getattr(self, "_" + cmd.kind.replace(".", "_"))
        out: Outcome = await handler(cmd, now)
        return out

    # -- control.mode
    async def _control_mode(self, cmd: SignedCommand, now: float) -> Outcome:
        mode = cmd.body["mode"]
        slot = Override(f"mode:{cmd.target}", cmd.command_id, cmd.kind, cmd.target, dict(cmd.body), now, None)
        if cmd.target == "*":
            if MODES.index(mode) > MODES.index(self._site_mode):
                return Outcome("refused", "above_site_mode", {"site_mode": self._site_mode, "asked": mode})
            self._apply_mode(slot)
            self.slots[slot.slot] = slot
            return Outcome("applied", "", {"mode": self.control.envelope.mode}, set_slots=[slot])
        functions = self.control.controller.find(cmd.target)
        if not functions:
            return Outcome("refused", "unknown_function",
                           {"functions": [f.name for f in self.control.controller.functions]})  # fmt: skip
        self._apply_mode(slot)
        self.slots[slot.slot] = slot
        effective = {f.name: lesser_mode(f.mode, self.control.envelope.mode) for f in functions}
        return Outcome("applied", "", {"modes": effective}, set_slots=[slot])

    def _apply_mode(self, slot: Override) -> None:
        mode = slot.body["mode"]
        if slot.target == "*":
            self.control.envelope.mode = lesser_mode(mode, self._site_mode)
            return
        for f in self.control.controller.find(slot.target):
            self.control.controller.set_mode(f, mode)

    def _restore_modes(self) -> None:
        self.control.envelope.mode = self._site_mode
        for f in self.control.controller.functions:
            if f.mode != self._site_modes.get(f.name, f.mode):
                self.control.controller.set_mode(f, self._site_modes[f.name])

    # -- DER set points and curves
    async def _der_setpoint(self, cmd: SignedCommand, now: float) -> Outcome:
        return await self._der_slot(cmd, now, f"der:{cmd.target}:setpoint")

    async def _der_curve(self, cmd: SignedCommand, now: float) -> Outcome:
        f = self.der_function(cmd.target)
        if f is not None:
            _, why = _curve_of(cmd.body)
            if why is not None:
                return Outcome("refused", "bad_curve", {"why": why})
        return await self._der_slot(cmd, now, f"der:{cmd.target}:curve:{cmd.body['curve']}")

    async def _der_curve_revert(self, cmd: SignedCommand, now: float) -> Outcome:
        name = f"der:{cmd.target}:curve:{cmd.body['curve']}"
        old = self.slots.get(name)
        if old is None:
            return Outcome("refused", "no_curve_applied", {"slot": name})
        decisions = await self.end([name], now, "curve_revert")  # the group's own target, or the hand-back
        out = outcome_of(decisions[-1]) if decisions else Outcome("applied", "already_held")
        out.clear_slots.append(name)
        out.ended.append(old)
        return out

    async def _der_slot(self, cmd: SignedCommand, now: float, name: str) -> Outcome:
        if self.der_function(cmd.target) is None:
            return Outcome("refused", "no_der_function", {"device": cmd.target})
        slot = Override(name, cmd.command_id, cmd.kind, cmd.target, dict(cmd.body), now, until_of(cmd))
        out = await self._der_apply(cmd.target, now, extra=slot)
        if out.status == "applied":
            self.slots[name] = slot
            out.set_slots.append(slot)
        return out

    async def _der_apply(self, device: str, now: float, *, extra: Override | None = None) -> Outcome:
        """Give the DER function of ``device`` the target its slots make (with ``extra``), decide at once and carry
        it out; on anything but applied the function's target is put back."""
        f = self.der_function(device)
        assert f is not None
        before = f.commanded
        slots = list(self.slots.values())
        if extra is not None:
            slots = [s for s in slots if s.slot != extra.slot] + [extra]
        f.commanded = self.der_target(f, slots, now)
        f.commanded_mode = self.control.envelope.mode
        for attempt in range(2):
            written = self.control.envelope.written_until(device)
            d = f.decide_now(self.view(now), now, lesser_mode(self.control.envelope.mode, "control"), written)
            if d is None:  # the inverter holds it already, read after its last write
                target = f.target
                return Outcome("applied", "already_held", _der_readback(self.view(now), device, target))
            if d.command is None:
                await self.control.envelope.record(d)
                f.commanded = before
                return outcome_of(d)
            if extra is not None:  # the decision names the command it carries out (the audit's thread)
                d = d.replace(detail={**d.detail, "command_id": extra.command_id})
            done = await self.control.envelope.submit(d)
            f.after(done)
            wait = too_soon_s(done)
            if attempt or wait is None:
                break
            # refused only for coming within min_command_interval_s of the device's last write (the DER
            # function's own refresh, a moment before): once that interval has passed, decided again, once
            await self.clock.sleep(wait)
            now = self.clock.time()
        out = outcome_of(done)
        if out.status != "applied":
            f.commanded = before
        return out

    def der_target(self, f: DerFunction, slots: Sequence[Override], now: float) -> DerGroupConfig | None:
        """The group as the slots in force on ``f``'s device change it, or None when none does."""
        g = f.group
        changed = False
        for s in slots:
            if s.target != f.device or (s.until is not None and s.until <= now):
                continue
            if s.kind == "der.setpoint":
                g = _with_setpoint(g, s.body)
                changed = True
            elif s.kind == "der.curve":
                built, _ = _curve_of(s.body)
                if built is not None:
                    g = dataclasses.replace(g, **{s.body["curve"]: built})
                    if s.body["curve"] == "volt_var":
                        g = dataclasses.replace(g, constant_pf=None, constant_var_pct=None)
                    changed = True
            elif s.kind == "schedule.load" and s.body["quantity"] in ("p_limit_pct", "var_pct"):
                value = schedule_value(s.body, now)
                if isinstance(value, int | float):
                    g = _with_setpoint(g, {s.body["quantity"]: value})
                    changed = True
        return g if changed else None

    # -- cap bank and regulator
    async def _capbank_open(self, cmd: SignedCommand, now: float) -> Outcome:
        return await self._device(cmd, now, "capbank", Command(cmd.target, cmd.kind, {}, f"central {cmd.command_id}"))

    async def _capbank_close(self, cmd: SignedCommand, now: float) -> Outcome:
        return await self._device(cmd, now, "capbank", Command(cmd.target, cmd.kind, {}, f"central {cmd.command_id}"))

    async def _regulator_band_center(self, cmd: SignedCommand, now: float) -> Outcome:
        command = Command(cmd.target, "regulator.band_center", {"band_center_v": float(cmd.body["volts"])},
                          f"central {cmd.command_id}")  # fmt: skip
        return await self._device(cmd, now, "regulator", command)

    async def _device(self, cmd: SignedCommand, now: float, kind: str, command: Command) -> Outcome:
        if self.control.envelope.actuator_kind(cmd.target) != kind:
            return Outcome("refused", "no_such_device", {"device": cmd.target, "kind": kind})
        slot = Override(f"device:{cmd.target}", cmd.command_id, cmd.kind, cmd.target, dict(cmd.body), now,
                        until_of(cmd))  # fmt: skip
        ctl = self.control.controller
        before = ctl.commanded.get(cmd.target)
        ctl.commanded[cmd.target] = cmd.command_id  # the local function leaves it alone from now on
        out = await self.submit(command, now, {"command_id": cmd.command_id, "key_id": cmd.key_id})
        if out.status == "applied":
            self.slots[slot.slot] = slot
            out.set_slots.append(slot)
        elif before is None:
            ctl.commanded.pop(cmd.target, None)
        else:
            ctl.commanded[cmd.target] = before
        return out

    async def submit(self, command: Command, now: float, detail: Mapping[str, Any]) -> Outcome:
        """A decision of the ``central`` function carrying ``command``, through the envelope."""
        d = propose(FUNCTION, command.device, self.control.envelope.mode, now, (), "central_command", command,
                    detail=dict(detail), id_factory=new_id)  # fmt: skip
        done = await self.control.envelope.submit(d)
        return outcome_of(done)

    # -- schedules
    async def _schedule_load(self, cmd: SignedCommand, now: float) -> Outcome:
        b = cmd.body
        end = until_of(cmd)
        assert end is not None
        if end <= now:
            return Outcome("refused", "schedule_over", {"end": end})
        if end - max(now, b["start"]) > self.config.max_hold_s * 2:
            return Outcome("refused", "hold_too_long", {"end": end, "max_hold_s": self.config.max_hold_s})
        q = b["quantity"]
        if q == "band_center_v":
            if self.control.envelope.actuator_kind(cmd.target) != "regulator":
                return Outcome("refused", "no_such_device", {"device": cmd.target, "kind": "regulator"})
        elif self.der_function(cmd.target) is None:
            return Outcome("refused", "no_der_function", {"device": cmd.target})
        taken = [s for s in self.slots.values() if s.kind == "schedule.load" and s.target == cmd.target
                 and s.body["schedule_id"] != b["schedule_id"]]  # fmt: skip
        if taken:
            return Outcome("refused", "device_has_a_schedule", {"schedule_id": taken[0].body["schedule_id"]})
        slot = Override(f"schedule:{b['schedule_id']}", cmd.command_id, cmd.kind, cmd.target, dict(b), now, end)
        self.slots[slot.slot] = slot  # a schedule loaded again under its id replaces the one before
        self._schedule_steps.pop(slot.slot, None)
        readback = {"schedule_id": b["schedule_id"], "steps": len(b["values"]), "start": b["start"], "end": end}
        return Outcome("applied", "", readback, set_slots=[slot])

    async def _schedule_cancel(self, cmd: SignedCommand, now: float) -> Outcome:
        name = f"schedule:{cmd.body['schedule_id']}"
        if name not in self.slots:
            return Outcome("refused", "no_such_schedule", {"schedule_id": cmd.body["schedule_id"]})
        return Outcome("applied", "", {"schedule_id": cmd.body["schedule_id"]}, clear_slots=[name])

    # -- revert everything
    async def _revert_all(self, cmd: SignedCommand, now: float) -> Outcome:
        names = list(self.slots)
        self._restore_modes()
        return Outcome("applied", "", {"ended": names, "mode": self.control.envelope.mode}, clear_slots=names)

    # -- keys (the verifier's key ring does the work; the slot-free result is made here)
    async def _keys_update(self, cmd: SignedCommand, now: float) -> Outcome:
        return Outcome("applied", "", {"added": [k["key_id"] for k in cmd.body.get("add", [])],
                                       "revoked": list(cmd.body.get("revoke", []))})  # fmt: skip

    # ---- slots in force ------------------------------------------------------------------------------------------
    def restore(self, slots: Sequence[Override]) -> None:
        """Take the slots a previous run stored (the caller has ended the expired ones)."""
        for s in slots:
            self.slots[s.slot] = s
            if s.kind == "control.mode":
                self._apply_mode(s)
            elif s.kind in ("capbank.open", "capbank.close", "regulator.band_center"):
                self.control.controller.commanded[s.target] = s.command_id
        for f in self.control.controller.functions:
            if isinstance(f, DerFunction):
                f.commanded = self.der_target(f, list(self.slots.values()), self.clock.time())
                f.commanded_mode = self.control.envelope.mode

    def due_to_end(self, now: float) -> list[Override]:
        return [s for s in self.slots.values() if s.until is not None and s.until <= now]

    def device_slots(self) -> list[Override]:
        """Every slot that holds a device (all but the modes): what a link loss ends."""
        return [s for s in self.slots.values() if s.kind != "control.mode"]

    async def end(self, names: Sequence[str], now: float, rule: str) -> list[Decision]:
        """End the slots ``names``: their devices back to the autonomous fallback (module docstring)."""
        ended = [self.slots.pop(n) for n in names if n in self.slots]
        out: list[Decision] = []
        ders: set[str] = set()
        for s in ended:
            self._schedule_steps.pop(s.slot, None)
            if s.kind == "control.mode":
                self._restore_modes()
                for other in self.slots.values():  # the mode slots still in force
                    if other.kind == "control.mode":
                        self._apply_mode(other)
            elif s.kind in ("capbank.open", "capbank.close", "regulator.band_center") or (
                s.kind == "schedule.load" and s.body["quantity"] == "band_center_v"
            ):
                self.control.controller.commanded.pop(s.target, None)
                d = await self.control.envelope.give_back(s.target, f"handback:{rule}")
                if d is not None:
                    out.append(d)
            else:
                ders.add(s.target)
        for device in sorted(ders):
            d = await self._der_refresh(device, now, rule)
            if d is not None:
                out.append(d)
        return out

    async def _der_refresh(self, device: str, now: float, rule: str) -> Decision | None:
        """Set the DER function's target from the slots in force and, if the device differs from it, write it; with
        no slot left, the function's own target when it controls the inverter, else the inverter handed back."""
        f = self.der_function(device)
        if f is None:
            return None
        f.commanded = self.der_target(f, list(self.slots.values()), now)
        f.commanded_mode = self.control.envelope.mode
        if f.commanded is None and lesser_mode(f.mode, self.control.envelope.mode) != "control":
            # no command left and the function does not control the inverter itself: its autonomous state
            return await self.control.envelope.give_back(device, f"handback:{rule}")
        d = f.decide_now(self.view(now), now, self.control.envelope.mode, self.control.envelope.written_until(device))
        if d is None or d.command is None:
            return d
        done = await self.control.envelope.submit(d)
        f.after(done)
        return done

    async def step_schedules(self, now: float) -> list[tuple[Override, Any, Decision | None]]:
        """Apply each schedule's step when it changes: (schedule, the value now, the decision that wrote it)."""
        out: list[tuple[Override, Any, Decision | None]] = []
        for s in [s for s in self.slots.values() if s.kind == "schedule.load"]:
            if now < s.body["start"]:
                continue
            value = schedule_value(s.body, now)
            if self._schedule_steps.get(s.slot, "unset") == value:
                continue
            self._schedule_steps[s.slot] = value
            if s.body["quantity"] == "band_center_v":
                d = await self._band_step(s, value, now)
            else:
                d = await self._der_refresh(s.target, now, "schedule_step")
            out.append((s, value, d))
        return out

    async def _band_step(self, s: Override, value: Any, now: float) -> Decision | None:
        ctl = self.control.controller
        if not isinstance(value, int | float):  # an autonomous step: the regulator back to its own band centre
            ctl.commanded.pop(s.target, None)
            return await self.control.envelope.give_back(s.target, "handback:schedule_step_autonomous")
        ctl.commanded[s.target] = s.command_id
        command = Command(s.target, "regulator.band_center", {"band_center_v": float(value)},
                          f"schedule {s.body['schedule_id']}")  # fmt: skip
        d = propose(FUNCTION, s.target, self.control.envelope.mode, now, (), "central_schedule", command,
                    detail={"command_id": s.command_id, "schedule_id": s.body["schedule_id"]})  # fmt: skip
        return await self.control.envelope.submit(d)

    def status(self, now: float) -> dict[str, Any]:
        return {s.slot: {"kind": s.kind, "target": s.target, "command_id": s.command_id, "since": s.since,
                         "until": s.until, **({"value_now": schedule_value(s.body, now)}
                                             if s.kind == "schedule.load" else {})}
                for s in self.slots.values()}  # fmt: skip


def schedule_value(body: Mapping[str, Any], now: float) -> Any:
    """The set point a schedule asks at ``now``: its step's value, the fallback in a null step, None outside it
    (``"autonomous"`` when the fallback is)."""
    start, step, values = body["start"], body["step_s"], body["values"]
    if now < start:
        return None
    i = math.floor((now - start) / step)
    if i >= len(values):
        return None
    v = values[i]
    return body["fallback"] if v is None else v


def _with_setpoint(g: DerGroupConfig, body: Mapping[str, Any]) -> DerGroupConfig:
    changes: dict[str, Any] = {}
    if "p_limit_pct" in body:
        changes["p_limit_pct"] = float(body["p_limit_pct"])
    if "pf" in body:  # one reactive power mode at a time (IEEE 1547-2018 5.3): the others off
        changes.update(constant_pf=ConstantPf(float(body["pf"]), body["excitation"]), constant_var_pct=None,
                       volt_var=None)  # fmt: skip
    if "var_pct" in body:
        changes.update(constant_var_pct=float(body["var_pct"]), constant_pf=None, volt_var=None)
    return dataclasses.replace(g, **changes)


def _curve_of(body: Mapping[str, Any]) -> tuple[Any, str | None]:
    """The curve a ``der.curve`` body asks, checked as the site file's curves are (the standard's ranges)."""
    name = body["curve"]
    c = Checker(Path("."))  # a curve has no paths
    value = body.get("name", body.get("points"))
    built = curve(c, {name: value}, "body", name, ieee1547.NAMES[name], CURVE_BUILDERS[name])
    if c.issues:
        return None, "; ".join(f"{i.key} = {i.value!r}: {i.allowed}" for i in c.issues)
    return built, None


def _der_readback(view: View, device: str, g: DerGroupConfig) -> dict[str, Any]:
    wanted = wanted_state(g)
    return {k: view.input(f"{device}.{k}").value for k in sorted(wanted)[:24]}


__all__ = ["FUNCTION", "Executor", "Outcome", "outcome_of", "schedule_value"]

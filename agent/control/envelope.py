"""THE safety envelope: the one gate every write to a device passes, and the only holder of the actuators.

``await envelope.submit(decision)`` returns the decision with its verdict, readback and outcome filled in. A
function (or, next, a command from central) cannot reach a device another way: the actuators are built by the
composition root and handed to the envelope, and nothing else keeps them (tests/test_control_envelope.py reads
the source to hold that). The checks run in this order, each a refusal with its reason in the decision
(docs/control.md, "The envelope"):

1. mode: ``monitor`` makes no decisions (nothing recorded); ``advise`` records the decision and sends it
   uplink, writes nothing, and says in ``detail.would`` what the checks below would have answered;
2. suspension: the function is suspended on that device (a readback mismatch, hunting, the device taken back
   by someone else) until an operator clears it (``python -m agent.control.operator``);
3. interlocks: the feeder is dead (every head voltage below ``dead_below_pu``), the head relay is tripped or
   locked out, the decision's inputs are stale or not good, the device's own state is not known, or the device
   is in local/manual against us;
4. bounds per point (the actuator's);
5. rate limit: ``min_command_interval_s`` and ``max_commands_per_hour`` per device, and a back-off after the
   device refused a command (60 s, doubling to an hour), so a refusal never becomes a retry storm;
6. wear budgets (cap operations per day, taps per day, set-point changes per hour): a spent budget refuses,
   with one ``control_budget_spent`` event; what is left is in every decision and in the status;
7. minimum dwell of the function since the device's last operation;
8. the device's own lockouts (the cap bank's discharge lockout);
9. the hunting detector: the command would make ``hunting_reversals`` reversals within ``hunting_window_s``:
   refused, the function frozen (suspended) on that device, an alarm event, the device handed back;

then the write and its readback within ``readback_timeout_s``: a mismatch raises ``control_readback_failed``,
hands the device back to its autonomous state and suspends the function on it.

State that must survive a restart is in the agent's store (agent/store/controlstate.py): every operation
(budgets, dwell and hunting are judged from them), the suspensions, and the devices the envelope holds out of
their autonomous mode. It is read from the store at every decision, so an operator's clearing and a previous
run's spent budget count at once. Devices a previous run still held are handed back when the envelope starts;
on stop every device it holds is handed back before the links close (:meth:`Envelope.hand_back_all`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from typing import Any, Protocol

from agent.clock import Clock
from agent.control.actuators import Actuator
from agent.control.config import ControlConfig, FunctionPolicy
from agent.control.decision import Command, Decision, audit_event, lesser_mode, new_id
from agent.control.view import ReadingSource, View
from agent.events import RECENT_ACTIONS, EventSpool, RecentActions
from agent.points import Event
from agent.store import ControlFlag, ControlOp, StoreError
from protocols.eventlog import EventLog

log = EventLog("control")

REFUSAL_BACKOFF_S = (60.0, 3600.0)  # after a device refused a command: first back-off, longest
Refusal = tuple[str, dict[str, Any]]
HOUR_S = 3600.0
DAY_S = 86_400.0


class ControlStore(Protocol):
    """The envelope's state in the agent's store (agent/store: AsyncStore)."""

    async def control_record_op(self, ts: float, device: str, function: str, action: str, direction: int,
                                costs: dict[str, int], decision_id: str, keep_s: float) -> int: ...  # fmt: skip

    async def control_ops(self, since: float, device: str | None = None) -> list[ControlOp]: ...

    async def control_set_flag(self, flag: ControlFlag, event: Any = None) -> None: ...

    async def control_clear_flag(self, kind: str, function: str, device: str, event: Any = None) -> bool: ...

    async def control_flags(self, kind: str | None = None) -> list[ControlFlag]: ...


def _event(ts: float, kind: str, severity: str, device: str, text: str, data: dict[str, Any]) -> Event:
    return Event(ts, kind, severity, device, text, data)


class ControlStream:
    """The store as the audit spool's target: every event it is given goes on the ``control`` stream."""

    def __init__(self, store: Any) -> None:
        self.store = store

    async def add_event(self, ts: float, kind: str, severity: str, source: str, text: str,
                        data: dict[str, Any] | None = None) -> None:  # fmt: skip
        await self.store.add_event(ts, kind, severity, source, text, data, stream="control")


class Envelope:
    """The safety envelope (module docstring)."""

    def __init__(
        self,
        *,
        config: ControlConfig,
        store: ControlStore,
        clock: Clock,
        snapshot: ReadingSource,
        actuators: Sequence[Actuator],
        policies: Sequence[FunctionPolicy],
        audit: EventSpool,
        events: EventSpool,
        actions: RecentActions = RECENT_ACTIONS,
        id_factory: Callable[[], str] = new_id,
    ) -> None:
        self.config = config
        self.mode = config.mode  # the site's mode now: a central command may lower it, or raise it back to config's
        self.env = config.envelope
        self.interlocks = config.interlocks
        self._store = store
        self.clock = clock
        self._snapshot = snapshot
        self._actuators: dict[str, Actuator] = {a.device: a for a in actuators}
        self.policies = {p.name: p for p in policies}
        self.audit = audit
        self.events = events
        self.actions = actions
        self._new_id = id_factory
        self._lock = asyncio.Lock()
        # keep operations as long as the longest window that judges them needs
        self.keep_s = max(DAY_S, self.env.hunting_window_s, HOUR_S) + HOUR_S
        self._ops: dict[str, list[ControlOp]] = {}
        self._flags: list[ControlFlag] = []
        self._unstored_ops: list[ControlOp] = []  # the store failed: still counted in this run
        self._attempts: dict[str, list[float]] = {}  # device -> times of commands sent (any outcome)
        self._written_end: dict[str, float] = {}  # device -> when its last write (and readback) ended
        self._refused: dict[str, tuple[float, float]] = {}  # device -> (blocked until, back-off)
        self._budget_alarm: dict[tuple[str, str], int] = {}  # (device, reason) -> the cost that found no room
        self.last: dict[str, Decision] = {}  # function -> its last decision
        self.counts: dict[str, int] = {}  # outcome -> decisions
        self.heartbeats = 0
        self.heartbeat_failures = 0
        self._budgets_left: dict[str, dict[str, int]] = {}

    # ---- state --------------------------------------------------------------------------------------------
    async def refresh(self) -> None:
        """Read the persisted state (operations in the windows, flags) from the store."""
        now = self.clock.time()
        ops = await self._store.control_ops(now - self.keep_s)
        self._flags = await self._store.control_flags()
        by_dev: dict[str, list[ControlOp]] = {}
        for op in [*ops, *self._unstored_ops]:
            by_dev.setdefault(op.device, []).append(op)
        for lst in by_dev.values():
            lst.sort(key=lambda o: o.ts)
        self._ops = by_dev
        for dev, act in self._actuators.items():
            self._budgets_left[dev] = self._left(act, now)
        for (dev, reason), cost in list(self._budget_alarm.items()):  # room again for what was refused: alarms again
            if self._budgets_left.get(dev, {}).get(reason.removeprefix("budget:"), 0) >= max(1, cost):
                del self._budget_alarm[(dev, reason)]

    def held(self, device: str) -> ControlFlag | None:
        return next((f for f in self._flags if f.kind == "taken" and f.device == device), None)

    def suspension(self, function: str, device: str) -> ControlFlag | None:
        return next((f for f in self._flags if f.kind == "suspended" and f.function == function
                     and f.device == device), None)  # fmt: skip

    def last_operation(self, devices: Sequence[str]) -> float | None:
        """When the envelope last operated any of ``devices`` [s UTC], or None (the controller's settling rule)."""
        times = [ops[-1].ts for d in devices if (ops := self._ops.get(d))]
        return max(times) if times else None

    def written_until(self, device: str) -> float | None:
        """When the last write to ``device`` ended, its readback included [s UTC]; before any write this run, when
        it was last operated (:meth:`last_operation`, from the store); None if never.

        A reading stamped later was taken after the write: the device's link runs the poller's reads and the write
        one at a time, so a read stamped after the write was decided but before it went out (it waited for the
        read in progress) may still hold the value from before it."""
        times = [t for t in (self._written_end.get(device), self.last_operation([device])) if t is not None]
        return max(times) if times else None

    def _left(self, act: Actuator, now: float) -> dict[str, int]:
        ops = self._ops.get(act.device, [])
        return {b.name: max(0, b.limit - sum(o.costs.get(b.cost, 0) for o in ops if o.ts > now - b.window_s))
                for b in act.budgets}  # fmt: skip

    # ---- the gate -----------------------------------------------------------------------------------------
    async def submit(self, decision: Decision, *, record: bool = True) -> Decision:
        """Pass ``decision`` through the checks, carry it out if allowed; returns it with the outcome filled.

        ``record=False``: the caller records it (the controller, which leaves out repeats of one refusal). A
        decision that wrote to the device is recorded here whatever ``record`` says."""
        async with self._lock:
            done = await self._submit(decision)
        if record or done.verdict == "allowed" or (done.reason or "").startswith("device_refused"):
            await self.record(done)
        return done

    async def record(self, d: Decision) -> None:
        """Put a decision on the audit stream (the controller's held decisions come here too)."""
        if d.reason == "monitor":
            return  # monitor mode: no decisions
        self.last[d.function] = d
        self.counts[d.outcome] = self.counts.get(d.outcome, 0) + 1
        action = d.command.action if d.command is not None else ""
        log.info("control_decision", id=d.id, function=d.function, device=d.device, action=action, rule=d.rule,
                 verdict=d.verdict, outcome=d.outcome)  # fmt: skip
        self.audit.put(audit_event(d))
        await self.audit.flush()

    async def _submit(self, d: Decision) -> Decision:
        if d.command is None:
            return d
        act = self._actuators.get(d.device)
        if act is None:
            return d.refuse("unknown_device", why=f"the envelope holds no actuator for {d.device}")
        mode = lesser_mode(d.mode, self.mode)
        if mode == "monitor":
            return d.refuse("monitor")
        now = self.clock.time()
        try:
            await self.refresh()
        except StoreError as err:
            log.error("control_state_unavailable", device=d.device, error=err)
            return d.refuse("state_unavailable", error=str(err))
        view = View(self._snapshot, now)
        d = d.replace(budgets_left=self._budgets_left.get(d.device, {}))
        refusal = self._check(d, act, view, now)
        if mode == "advise":
            would = "allowed" if refusal is None else refusal[0]
            detail = {**d.detail, "would": would, **({"would_detail": refusal[1]} if refusal else {})}
            return d.replace(verdict="advise", outcome="advised", detail=detail)
        if refusal is not None:
            reason, detail = refusal
            d = d.refuse(reason, **detail)
            await self._on_refusal(d, act, reason, detail, now)
            return d
        return await self._carry_out(d, act, view, now)

    def _check(self, d: Decision, act: Actuator, view: View, now: float) -> Refusal | None:
        """The checks 2..9 in order; the first refusal, or None. Pure: no state is changed here."""
        for check in (self._suspended, self._interlocked, self._bounds, self._rate, self._budget, self._dwell,
                      self._lockout, self._hunting):  # fmt: skip
            refusal = check(d, act, view, now)
            if refusal is not None:
                return refusal
        return None

    # -- 2. suspension
    def _suspended(self, d: Decision, act: Actuator, view: View, now: float) -> Refusal | None:
        s = self.suspension(d.function, d.device)
        if s is None:
            return None
        return "suspended", {"suspended_since": s.since, "suspended_for": s.reason, "clear": "an operator clears it"}

    # -- 3. interlocks
    def _interlocked(self, d: Decision, act: Actuator, view: View, now: float) -> Refusal | None:
        il = self.interlocks
        if il.head_voltage_points:
            heads = [view.input(vp.point) for vp in il.head_voltage_points]
            bad = [i.point for i in heads if not i.usable(il.stale_after_s)]
            if bad:
                return "interlock_inputs_stale", {"points": bad}
            pu = [vp.on_120v_base(float(i.value)) / 120.0  # type: ignore[arg-type]
                  for vp, i in zip(il.head_voltage_points, heads, strict=True)]  # fmt: skip
            if all(v < il.dead_below_pu for v in pu):
                return "feeder_dead", {"head_pu": [round(v, 3) for v in pu], "dead_below_pu": il.dead_below_pu}
        if il.relay is not None:
            names = ("relay_state", "breaker_closed", "lockout")
            relay = {n: view.input(f"{il.relay}.{n}") for n in names}
            bad = [i.point for i in relay.values() if not i.usable(il.stale_after_s)]
            if bad:
                return "interlock_inputs_stale", {"points": bad}
            state = relay["relay_state"].value
            if state == 4 or relay["lockout"].value:
                return "relay_lockout", {"relay": il.relay, "relay_state": state}
            if state in (2, 3) or not relay["breaker_closed"].value:
                return "relay_tripped", {"relay": il.relay, "relay_state": state}
        policy = self.policies.get(d.function)
        max_age = policy.stale_after_s if policy is not None else il.stale_after_s
        stale = [i.point for i in d.inputs if not i.usable(max_age)]
        if stale:
            return "stale_inputs", {"points": stale, "max_age_s": max_age}
        state_inputs = view.inputs(act.state_points())
        bad = [i.point for i in state_inputs if not i.usable(il.stale_after_s)]
        if bad:
            return "device_state_stale", {"points": bad}
        held = self.held(d.device)
        why = act.local_state(view, None if held is None else held.data)
        if why is not None:
            return "device_local", {"why": why}
        return None

    # -- 4. bounds
    def _bounds(self, d: Decision, act: Actuator, view: View, now: float) -> Refusal | None:
        assert d.command is not None
        why = act.bounds(d.command, view)
        return None if why is None else ("bounds", {"why": why})

    # -- 5. rate limit
    def _rate(self, d: Decision, act: Actuator, view: View, now: float) -> Refusal | None:
        blocked = self._refused.get(d.device)
        if blocked is not None and now < blocked[0]:
            return "rate_limit", {"after_device_refusal": True, "blocked_for_s": round(blocked[0] - now, 1)}
        times = sorted({*self._attempts.get(d.device, []), *(o.ts for o in self._ops.get(d.device, []))})
        if times and now - times[-1] < self.env.min_command_interval_s:
            return "rate_limit", {"since_last_s": round(now - times[-1], 3),
                                  "min_command_interval_s": self.env.min_command_interval_s}  # fmt: skip
        in_hour = sum(1 for t in times if t > now - HOUR_S)
        if in_hour >= self.env.max_commands_per_hour:
            return "rate_limit", {"in_last_hour": in_hour, "max_commands_per_hour": self.env.max_commands_per_hour}
        return None

    # -- 6. wear budgets
    def _budget(self, d: Decision, act: Actuator, view: View, now: float) -> Refusal | None:
        assert d.command is not None
        cost = act.cost(d.command, view)
        left = self._budgets_left.get(d.device) or self._left(act, now)
        for b in act.budgets:
            c = cost.get(b.cost, 0)
            if c and c > left.get(b.name, 0):
                return f"budget:{b.name}", {"cost": c, "left": left.get(b.name, 0), "limit": b.limit,
                                             "window_s": b.window_s}  # fmt: skip
        return None

    # -- 7. minimum dwell
    def _dwell(self, d: Decision, act: Actuator, view: View, now: float) -> Refusal | None:
        policy = self.policies.get(d.function)
        ops = self._ops.get(d.device)
        if policy is None or not ops or not policy.min_dwell_s:
            return None
        since = now - ops[-1].ts
        if since < policy.min_dwell_s:
            return "dwell", {"since_last_operation_s": round(since, 1), "min_dwell_s": policy.min_dwell_s}
        return None

    # -- 8. device lockouts
    def _lockout(self, d: Decision, act: Actuator, view: View, now: float) -> Refusal | None:
        assert d.command is not None
        why = act.lockout(d.command, view)
        return None if why is None else ("lockout", {"why": why})

    # -- 9. hunting
    def _hunting(self, d: Decision, act: Actuator, view: View, now: float) -> Refusal | None:
        assert d.command is not None
        window = self.env.hunting_window_s
        dirs = [o.direction for o in self._ops.get(d.device, []) if o.ts > now - window and o.direction]
        new = act.direction(d.command, view)
        if new:
            dirs.append(new)
        reversals = sum(1 for a, b in zip(dirs, dirs[1:], strict=False) if a != b)
        policy = self.policies.get(d.function)
        limit = self.env.hunting_reversals
        if policy is not None and policy.hunting_reversals is not None:
            limit = policy.hunting_reversals
        if reversals >= limit:
            return "hunting", {"reversals": reversals, "window_s": window, "limit": limit}
        return None

    # ---- what a refusal does --------------------------------------------------------------------------------
    async def _on_refusal(self, d: Decision, act: Actuator, reason: str, detail: dict[str, Any], now: float) -> None:
        if reason.startswith("budget:"):
            key = (d.device, reason)
            if key not in self._budget_alarm:
                self._budget_alarm[key] = int(detail.get("cost", 1))  # a tap command costs several
                name = reason.removeprefix("budget:")
                log.warning("control_budget_spent", device=d.device, function=d.function, budget=name,
                            limit=detail.get("limit"), window_s=detail.get("window_s"))  # fmt: skip
                self.events.put(_event(now, "control_budget_spent", "warning", d.device,
                                       f"{d.function} on {d.device}: wear budget {name} spent, no further operation",
                                       {"function": d.function, "budget": name, "decision_id": d.id, **detail}))  # fmt: skip
                await self.events.flush()
        elif reason == "hunting":
            log.error("control_hunting", device=d.device, function=d.function, reversals=detail["reversals"],
                      window_s=detail["window_s"])  # fmt: skip
            await self._suspend(d, "hunting", now, "control_hunting",
                                f"{d.function} on {d.device}: {detail['reversals']} reversals within "
                                f"{detail['window_s']:g} s: frozen until an operator clears it", detail)  # fmt: skip
        elif reason == "device_local":
            held = self.held(d.device)
            if held is not None:  # someone took the device back from us: hands off until an operator says so
                log.warning("control_device_taken_back", device=d.device, function=d.function, why=detail["why"])
                await self._release(held)
                await self._suspend(d, "taken_back", now, "control_device_taken_back",
                                    f"{d.device}: {detail['why']}; {d.function} suspended", detail, hand_back=False)  # fmt: skip

    async def _suspend(self, d: Decision, why: str, now: float, kind: str, text: str, detail: Mapping[str, Any],
                       *, hand_back: bool = True) -> None:  # fmt: skip
        """Suspend ``d.function`` on ``d.device`` (with its alarm, in one transaction), then hand the device back."""
        flag = ControlFlag("suspended", d.function, d.device, now, why, {"decision_id": d.id, **detail})
        event = (now, kind, "error", d.device, text, {"function": d.function, "decision_id": d.id, **detail})
        self._flags = [f for f in self._flags if not (f.kind == "suspended" and f.function == d.function
                                                      and f.device == d.device)] + [flag]  # fmt: skip
        try:
            await self._store.control_set_flag(flag, event)
        except StoreError as err:
            log.error("control_state_not_stored", what="suspension", device=d.device, error=err)
        if hand_back and self.held(d.device) is not None:
            await self._hand_back(d.device, f"handback:{why}", d.function)

    async def _release(self, held: ControlFlag) -> None:
        self._flags = [f for f in self._flags if f is not held]
        try:
            await self._store.control_clear_flag("taken", held.function, held.device)
        except StoreError as err:
            log.error("control_state_not_stored", what="release", device=held.device, error=err)

    # ---- the write --------------------------------------------------------------------------------------------
    async def _carry_out(self, d: Decision, act: Actuator, view: View, now: float) -> Decision:
        assert d.command is not None
        held = self.held(d.device)
        direction = act.direction(d.command, view)
        costs = act.cost(d.command, view)
        d = d.replace(verdict="allowed")
        result = await act.carry_out(d.command, None if held is None else held.data, self.env.readback_timeout_s)
        self._written_end[d.device] = self.clock.time()  # whatever came of it, the device may have taken it
        self._attempts.setdefault(d.device, []).append(now)
        self._attempts[d.device] = [t for t in self._attempts[d.device] if t > now - HOUR_S]
        if result.held is not None and held is None:
            await self._hold(d, result.held, now)
        done = d.replace(readback=result.readback, detail={**d.detail, **result.detail})
        if result.status == "refused":
            first, longest = REFUSAL_BACKOFF_S
            backoff = min(longest, self._refused.get(d.device, (0.0, first / 2))[1] * 2)
            self._refused[d.device] = (now + backoff, backoff)
            code = result.detail.get("exception", "x")
            log.warning("control_device_refused", device=d.device, function=d.function, action=d.command.action,
                        exception=code, result=result.detail.get("result"), retry_after_s=backoff)  # fmt: skip
            return done.replace(verdict=f"refused:device_refused:{code}", outcome="refused")
        if result.status == "failed":
            log.error("control_command_failed", device=d.device, function=d.function, action=d.command.action,
                      error=result.detail.get("error"))  # fmt: skip
            first, _ = REFUSAL_BACKOFF_S
            self._refused[d.device] = (now + first, first)
            self.events.put(_event(now, "control_command_failed", "error", d.device,
                                   f"{d.function} {d.command.action} on {d.device}: no answer",
                                   {"function": d.function, "decision_id": d.id, **result.detail}))  # fmt: skip
            await self.events.flush()
            if self.held(d.device) is not None:
                await self._hand_back(d.device, "handback:command_failed", d.function)
            return done.replace(outcome="failed")
        # applied, or accepted and not shown: either may have moved the device, so it costs wear and counts
        await self._record_op(d, direction, costs, now)
        self._refused.pop(d.device, None)
        self.actions.note(d.id, now, d.function, d.device)
        if result.status == "readback_failed":
            log.error("control_readback_failed", device=d.device, function=d.function, action=d.command.action,
                      readback=result.readback)  # fmt: skip
            await self._suspend(done, "readback_failed", now, "control_readback_failed",
                                f"{d.function} {d.command.action} on {d.device}: the device did not show it within "
                                f"{self.env.readback_timeout_s:g} s; handed back, {d.function} suspended",
                                {"readback": result.readback, "wanted": dict(d.command.values)})  # fmt: skip
            return done.replace(outcome="readback_failed")
        return done.replace(outcome="applied", budgets_left=self._left(act, now))

    async def _record_op(self, d: Decision, direction: int, costs: dict[str, int], now: float) -> None:
        assert d.command is not None
        op = ControlOp(0, now, d.device, d.function, d.command.action, direction, costs, d.id)
        self._ops.setdefault(d.device, []).append(op)
        try:
            await self._store.control_record_op(now, d.device, d.function, d.command.action, direction, costs, d.id,
                                                self.keep_s)  # fmt: skip
        except StoreError as err:
            self._unstored_ops.append(op)
            log.error("control_state_not_stored", what="operation", device=d.device, error=err)

    async def _hold(self, d: Decision, data: dict[str, Any], now: float) -> None:
        flag = ControlFlag("taken", d.function, d.device, now, "commanded", data)
        self._flags.append(flag)
        log.info("control_device_held", device=d.device, function=d.function)
        try:
            await self._store.control_set_flag(flag)
        except StoreError as err:
            log.error("control_state_not_stored", what="held", device=d.device, error=err)

    # ---- hand-back -----------------------------------------------------------------------------------------------
    async def _hand_back(self, device: str, rule: str, function: str | None = None) -> Decision | None:
        """Hand ``device`` back to its autonomous state; the hand-back is a decision of its own (outcome
        ``reverted`` when the device shows it). Called with the lock held, or from :meth:`hand_back_all`."""
        held = self.held(device)
        act = self._actuators.get(device)
        if held is None or act is None:
            return None
        now = self.clock.time()
        fn = function or held.function
        d = Decision(id=self._new_id(), ts=now, function=fn, device=device, mode="control", inputs=(), rule=rule,
                     command=Command(device, "handback", {}, "back to the device's autonomous state"),
                     verdict="allowed", detail={"held_since": held.since})  # fmt: skip
        result = await act.hand_back(held.data, self.env.readback_timeout_s)
        d = d.replace(readback=result.readback, detail={**d.detail, **result.detail})
        if result.released:
            await self._release(held)
            log.info("control_handed_back", device=device, function=fn, rule=rule)
            d = d.replace(outcome="reverted")
        else:
            log.error("control_handback_failed", device=device, function=fn, rule=rule,
                      error=result.detail.get("error", result.status))  # fmt: skip
            self.events.put(_event(now, "control_handback_failed", "error", device,
                                   f"{device}: hand-back to the autonomous state failed ({result.status})",
                                   {"function": fn, "rule": rule, **result.detail}))  # fmt: skip
            await self.events.flush()
            d = d.replace(outcome="failed" if result.status == "failed" else "readback_failed")
        await self.record(d)
        return d

    async def give_back(self, device: str, rule: str) -> Decision | None:
        """Hand one device back to its autonomous state if the envelope holds it (a central command ended)."""
        async with self._lock:
            try:
                self._flags = await self._store.control_flags()
            except StoreError as err:
                log.error("control_state_unavailable", device=device, error=err)
            return await self._hand_back(device, rule)

    def actuator_kind(self, device: str) -> str | None:
        """The kind of the actuator the envelope holds for ``device`` (capbank, regulator, der), or None."""
        act = self._actuators.get(device)
        return None if act is None else act.kind

    async def hand_back_all(self, rule: str = "handback:agent_stopping") -> list[Decision]:
        """Hand every device the envelope holds back to its autonomous state (on stop, and at start)."""
        out: list[Decision] = []
        async with self._lock:
            try:
                self._flags = await self._store.control_flags()
            except StoreError as err:
                log.error("control_state_unavailable", device="*", error=err)
            for flag in [f for f in self._flags if f.kind == "taken"]:
                d = await self._hand_back(flag.device, rule)
                if d is not None:
                    out.append(d)
        return out

    # ---- the task: heartbeats while a device is held ---------------------------------------------------------------
    async def run(self) -> None:
        """Hand back what a previous run held, then write each held device's heartbeat until cancelled."""
        await self.hand_back_all("handback:agent_start")
        await self.refresh()
        while True:
            beats = [a.heartbeat_s for d, a in self._actuators.items() if a.heartbeat_point and self.held(d)]
            await self.clock.sleep(min(beats) if beats else 5.0)
            async with self._lock:
                for dev, act in self._actuators.items():
                    if act.heartbeat_point is None or self.held(dev) is None:
                        continue
                    try:
                        if await act.heartbeat():
                            self.heartbeats += 1
                    except Exception as err:  # noqa: BLE001 - a device or link fault: logged, tried next time
                        self.heartbeat_failures += 1
                        log.warning("control_heartbeat_failed", device=dev, error=err)
            try:
                await self.refresh()
            except StoreError as err:
                log.error("control_state_unavailable", device="*", error=err)

    # ---- operator ---------------------------------------------------------------------------------------------------
    async def clear(self, function: str, device: str, by: str = "operator") -> bool:
        """Clear a suspension (what ``python -m agent.control.operator clear`` does on the store file)."""
        now = self.clock.time()
        event = (now, "control_suspension_cleared", "info", device, f"{function} on {device}: suspension cleared",
                 {"function": function, "by": by})  # fmt: skip
        cleared = await self._store.control_clear_flag("suspended", function, device, event)
        await self.refresh()
        return cleared

    # ---- status ---------------------------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        devices: dict[str, Any] = {}
        for dev in self._actuators:
            held = self.held(dev)
            devices[dev] = {
                "held": held is not None,
                "held_since": None if held is None else held.since,
                "budgets_left": dict(self._budgets_left.get(dev, {})),
                "suspended": {f.function: {"reason": f.reason, "since": f.since} for f in self._flags
                              if f.kind == "suspended" and f.device == dev},
            }  # fmt: skip
            # -- operator view (gridedge status): who holds it and why, each budget's limit, the heartbeat
            act = self._actuators[dev]
            devices[dev].update(
                held_by=None if held is None else held.function, held_reason=None if held is None else held.reason,
                budgets={b.name: {"left": self._budgets_left.get(dev, {}).get(b.name), "limit": b.limit,
                                  "window_s": b.window_s} for b in act.budgets},
                heartbeat_s=act.heartbeat_s if act.heartbeat_point else None, kind=act.kind,
            )  # fmt: skip
        last = {fn: {"id": d.id, "ts": d.ts, "device": d.device, "rule": d.rule, "verdict": d.verdict,
                     "outcome": d.outcome, "action": d.command.action if d.command else None}
                for fn, d in self.last.items()}  # fmt: skip
        return {"mode": self.mode, "devices": devices, "last_decisions": last, "decisions": dict(self.counts),
                "heartbeats": self.heartbeats, "heartbeat_failures": self.heartbeat_failures,
                "functions": {p.name: p.mode for p in self.policies.values()}}  # fmt: skip

    # ---- control explain (agent/control/live.py publishes it, agent/control/explain.py reads it) --------------------
    def persisted_state(self) -> dict[str, Any]:
        """The operations in the windows and the flags, as :meth:`refresh` last read them (JSON-ready)."""
        ops = [asdict(o) for lst in self._ops.values() for o in lst]
        return {"ops": ops, "flags": [asdict(f) for f in self._flags]}


__all__ = ["REFUSAL_BACKOFF_S", "ControlStore", "ControlStream", "Envelope", "FunctionPolicy"]

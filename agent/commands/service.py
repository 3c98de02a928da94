"""The downlink at the agent: commands from ``gridedge/v1/<site>/cmd`` verified, taken once, carried out through the
safety envelope, answered with a signed result; what they hold in force kept, stepped, ended (docs/commands.md).

One task handles the messages one at a time, in arrival order (a command's result is written before the next is
read), and every half second of wall time it ends slots whose time ran out, steps schedules, and applies the
loss-of-comms contract: central unheard (no verified command, no ack of the uplink) for longer than
``link_loss_s`` ends every slot that holds a device (modes stay), so the devices go back to their autonomous
fallback; one ``commands_link_loss_fallback`` event says so.

Exactly once: a command is taken for execution (its key's sequence moved up, its id logged ``executing``) in one
transaction before anything is written to a device; a QoS 1 redelivery, or the same command again, finds it there
and is not executed again. Its result is stored, with the state it changed and its audit entries, in one
transaction, as an event of the ``results`` stream: the outbox carries it to central until central acknowledges
it, across broker restarts and an agent crash. A command cut short by a crash (``executing`` at start-up) is
answered ``failed: interrupted`` and never run again.

Times: the validity window (``not_before``, ``expires_at``) is central's, judged on the wall clock; what a
command holds (``until``, a schedule's steps) and the link-loss time are judged on the agent's clock, the same
clock in the field (a scaled bench ``[clock]`` puts them on the bench's time).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

from agent.commands.config import CommandsConfig
from agent.commands.execute import Executor, Outcome
from agent.commands.verify import KeyRing, Verdict, Verifier
from agent.control.wiring import ControlSystem
from agent.store import AsyncStore, AuditEntry, LoggedCommand, StoreError
from protocols.eventlog import EventLog
from protocols.mqtt.session import MqttSession
from protocols.telemetry.commands import Command, Result, canonical, read_signed, sign_result
from protocols.telemetry.schema import SchemaError, topic

log = EventLog("commands")

QUEUE_MAX = 256  # messages waiting to be verified; past it a message is refused unread (counted, audited)
TICK_S = 0.5  # wall seconds between looks at expiries, schedule steps and the link
AUDIT_UNVERIFIED_PER_MIN = 120  # audit entries for messages whose signature did not check, per wall minute
LOG_KEEP_S = 7 * 86_400.0  # logged commands are forgotten this long after their window closed


class CommandService:
    """The downlink's task at the agent (module docstring)."""

    def __init__(self, site: str, config: CommandsConfig, store: AsyncStore, session: MqttSession,
                 control: ControlSystem, *, wall: Callable[[], float] = time.time,
                 acks: Callable[[], int] | None = None, sent: Callable[[], None] | None = None) -> None:  # fmt: skip
        self.site = site
        self.config = config
        self.store = store
        self.control = control
        self.executor = Executor(control, config)
        self.ring = KeyRing(config)
        self.verifier = Verifier(site, config, self.ring)
        self.wall = wall
        self._acks = acks
        self._sent = sent or (lambda: None)  # a result was stored: the uplink sends it now
        self._acks_seen = 0
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=QUEUE_MAX)
        self.counts: dict[str, int] = {"received": 0, "applied": 0, "refused": 0, "failed": 0, "dropped": 0}
        self.refusals: dict[str, int] = {}
        self.last_heard: float | None = None
        self.link_lost = False
        self._audit_minute = (0, 0)  # (wall minute, unverified entries in it)
        self._suppressed = 0
        self.topic = topic(site, "cmd")
        session.subscribe(self.topic, 1, self._on_message)

    @property
    def clock(self) -> Any:
        return self.control.controller.clock

    # ---- from the session (the event loop's thread) -------------------------------------------------------------
    def _on_message(self, _topic: str, payload: bytes) -> None:
        try:
            self.queue.put_nowait(bytes(payload))
        except asyncio.QueueFull:
            self.counts["dropped"] += 1
            log.warning("command_dropped", site=self.site, bytes=len(payload), why="queue_full", queue=QUEUE_MAX)

    # ---- the task ----------------------------------------------------------------------------------------------------
    async def run(self) -> None:
        await self.start()
        while True:
            raw: bytes | None = None
            with contextlib.suppress(TimeoutError):
                raw = await asyncio.wait_for(self.queue.get(), TICK_S)
            try:
                if raw is not None:
                    await self.handle(raw)
                await self.tick()
            except StoreError as err:  # a full disk: nothing half-done was kept; the next message tries again
                log.error("commands_store_error", site=self.site, error=err)

    async def start(self) -> None:
        """Answer what a crash cut short, restore what is still in force, end what ran out meanwhile."""
        now = self.clock.time()
        self.last_heard = now  # a restart is not a link loss: central gets link_loss_s to be heard again
        for ch in await self.store.commands.key_changes():
            self.ring.apply(ch)
        for row in await self.store.commands.log_rows(status="executing", limit=1000):
            res = self._result_of(row, Outcome("failed", "interrupted"))
            await self.store.commands.finish(row.command_id, "failed", "interrupted", res, self.wall(), [
                AuditEntry(now, "command_failed", "failed", row.command_id, row.key_id, row.kind, "interrupted",
                           {"why": "the agent stopped while carrying it out; not run again"}, "warning")])  # fmt: skip
            log.warning("command_interrupted", site=self.site, command_id=row.command_id, kind=row.kind)
        slots = await self.store.commands.overrides()
        keep = [s for s in slots if (s.until is None or s.until > now) and not s.slot.startswith("device:")]
        gone = [s for s in slots if s not in keep]
        self.executor.restore(keep)
        if gone:  # ran out while the agent was down, or a device hold (the envelope hands devices back at start)
            entries = [AuditEntry(now, "override_ended", "ended", s.command_id, "", s.kind,
                                  "expired" if s.until is not None and s.until <= now else "agent_restart",
                                  {"slot": s.slot}) for s in gone]  # fmt: skip
            await self.store.commands.change(entries, clear_slots=[s.slot for s in gone])
        await self.store.commands.prune_log(self.wall() - LOG_KEEP_S)
        log.info("commands_ready", site=self.site, topic=self.topic, keys=len(self.ring.keys), restored=len(keep),
                 ended=len(gone))  # fmt: skip

    # ---- one message ---------------------------------------------------------------------------------------------------
    async def handle(self, raw: bytes) -> Verdict:
        """Verify, take, carry out and answer one message; returns the verdict (its reason None when executed)."""
        self.counts["received"] += 1
        now, wall = self.clock.time(), self.wall()
        try:
            key_id = read_signed(raw).key_id
        except SchemaError:
            key_id = ""
        last_seq, last_id = await self.store.commands.last_taken(key_id) if key_id else (0, None)
        v = self.verifier.check(raw, wall, last_seq, last_id)
        if v.reason is None and v.command is not None and await self.store.commands.logged(v.command.command_id):
            v = Verdict("already_executed", v.command, v.key_id, "this command id was executed before", True, True)
        if v.reason is not None:
            await self._refuse(v, raw, now)
            return v
        assert v.command is not None
        cmd = v.command
        self.last_heard = now
        row = LoggedCommand(cmd.command_id, cmd.key_id, cmd.seq, cmd.kind, cmd.target, wall, cmd.expires_at,
                            "executing", "", canonical(cmd.to_dict()).decode(), None)  # fmt: skip
        received = AuditEntry(now, "command_received", "taken", cmd.command_id, cmd.key_id, cmd.kind, "",
                              {"target": cmd.target, "seq": cmd.seq, "body": dict(cmd.body)})  # fmt: skip
        if not await self.store.commands.take(row, [received]):
            v = Verdict("already_executed", cmd, cmd.key_id, "taken by an earlier delivery", True, True)
            await self._refuse(v, raw, now)
            return v
        log.info("command_taken", site=self.site, command_id=cmd.command_id, kind=cmd.kind, target=cmd.target,
                 key_id=cmd.key_id, seq=cmd.seq)  # fmt: skip
        out, keys = await self._carry_out(cmd, now)
        await self._finish(cmd, out, keys, now)
        return v

    async def _carry_out(self, cmd: Command, now: float) -> tuple[Outcome, list[Any]]:
        if cmd.kind == "keys.update":
            changes, why = self.ring.changes_for(cmd, now)
            if why is not None:
                return Outcome("refused", why), []
            return await self.executor.execute(cmd, now), changes
        try:
            out = await self.executor.execute(cmd, now)
        except Exception as err:  # noqa: BLE001 - a fault in carrying it out must still be answered, never retried
            log.error("command_failed", site=self.site, command_id=cmd.command_id, kind=cmd.kind, error=repr(err))
            return Outcome("failed", f"error:{type(err).__name__}"), []
        if out.clear_slots:  # schedule.cancel, revert.all: the devices go back now, before the answer
            ended = [self.executor.slots[n] for n in out.clear_slots if n in self.executor.slots]
            decisions = await self.executor.end(out.clear_slots, now, "command_revert")
            out.decisions += [d.id for d in decisions]
            out.ended += ended
        return out, []

    async def _finish(self, cmd: Command, out: Outcome, keys: list[Any], now: float) -> None:
        result = Result(cmd.command_id, self.site, cmd.kind, cmd.target, cmd.key_id, cmd.seq, out.status, out.reason,
                        self.wall(), _plain(out.readback), tuple(out.decisions))  # fmt: skip
        data = sign_result(self.config.agent_key, self.config.agent_key_id, result)
        what = {"applied": "command_applied", "refused": "command_refused", "failed": "command_failed"}[out.status]
        entries = [AuditEntry(now, what, out.status, cmd.command_id, cmd.key_id, cmd.kind, out.reason,
                              {"target": cmd.target, "decisions": out.decisions, "readback": _plain(out.readback)},
                              "info" if out.status == "applied" else "warning")]  # fmt: skip
        entries += [AuditEntry(now, "override_set", "set", cmd.command_id, cmd.key_id, s.kind, "",
                               {"slot": s.slot, "until": s.until}) for s in out.set_slots]  # fmt: skip
        entries += [AuditEntry(now, "override_ended", "ended", s.command_id, cmd.key_id, s.kind, "by_command",
                               {"slot": s.slot, "ended_by": cmd.command_id}) for s in out.ended]  # fmt: skip
        entries += [AuditEntry(now, "key_" + k.state, k.state, cmd.command_id, cmd.key_id, cmd.kind, "",
                               {"key": k.key_id, "role": k.role}) for k in keys]  # fmt: skip
        await self.store.commands.finish(cmd.command_id, out.status, out.reason, data, self.wall(), entries,
                                         set_overrides=out.set_slots, clear_slots=out.clear_slots, keys=keys)  # fmt: skip
        self._sent()
        for k in keys:
            self.ring.apply(k)
        self.counts[out.status] += 1
        if out.status != "applied":
            why = out.reason.split(":")[0] or out.status
            self.refusals[why] = self.refusals.get(why, 0) + 1
        log.info("command_done", site=self.site, command_id=cmd.command_id, kind=cmd.kind, status=out.status,
                 reason=out.reason)  # fmt: skip
        if out.set_slots and any(s.kind == "schedule.load" for s in out.set_slots):
            await self.tick()  # a schedule already in its window applies its step now

    async def _refuse(self, v: Verdict, raw: bytes, now: float) -> None:
        assert v.reason is not None
        self.counts["refused"] += 1
        self.refusals[v.reason] = self.refusals.get(v.reason, 0) + 1
        cmd = v.command
        log.warning("command_refused", site=self.site, reason=v.reason, key_id=v.key_id or "-",
                    command_id=cmd.command_id if cmd else "-", bytes=len(raw))  # fmt: skip
        if not v.signed and not self._audit_room():
            self._suppressed += 1
            return
        entry = AuditEntry(now, "command_refused", "refused", cmd.command_id if cmd else "", v.key_id,
                           cmd.kind if cmd else "", v.reason,
                           {"detail": v.detail[:300], "bytes": len(raw), "signature_checked": v.signed,
                            **({"suppressed_before": self._suppressed} if self._suppressed else {})},
                           "warning")  # fmt: skip
        self._suppressed = 0
        if not v.signed or v.answered or cmd is None:
            await self.store.commands.append_audit([entry])
            return
        result = Result(cmd.command_id, self.site, cmd.kind, cmd.target, cmd.key_id, cmd.seq, "refused", v.reason,
                        self.wall(), {"detail": v.detail[:300]})  # fmt: skip
        await self.store.commands.refuse(sign_result(self.config.agent_key, self.config.agent_key_id, result),
                                         self.wall(), [entry])  # fmt: skip
        self._sent()

    def _audit_room(self) -> bool:
        minute = int(self.wall() // 60)
        m, n = self._audit_minute
        if m != minute:
            self._audit_minute = (minute, 1)
            return True
        self._audit_minute = (m, n + 1)
        return n < AUDIT_UNVERIFIED_PER_MIN

    def _result_of(self, row: LoggedCommand, out: Outcome) -> dict[str, Any]:
        result = Result(row.command_id, self.site, row.kind, row.target, row.key_id, row.seq, out.status, out.reason,
                        self.wall(), out.readback, tuple(out.decisions))  # fmt: skip
        return sign_result(self.config.agent_key, self.config.agent_key_id, result)

    # ---- time ------------------------------------------------------------------------------------------------------------
    async def tick(self) -> None:
        """Expiries, schedule steps and the link (module docstring)."""
        now = self.clock.time()
        if self._acks is not None:
            acks = self._acks()
            if acks != self._acks_seen:
                self._acks_seen = acks
                self.last_heard = now
        if self.link_lost and self.last_heard is not None and now - self.last_heard < self.config.link_loss_s:
            self.link_lost = False
            log.info("commands_link_back", site=self.site)
        due = self.executor.due_to_end(now)
        if due:
            names = [s.slot for s in due]
            decisions = await self.executor.end(names, now, "command_expired")
            entries = [AuditEntry(now, "override_ended", "ended", s.command_id, "", s.kind, "expired",
                                  {"slot": s.slot, "until": s.until, "decisions": [d.id for d in decisions]})
                       for s in due]  # fmt: skip
            await self.store.commands.change(entries, clear_slots=names)
            for s in due:
                log.info("command_override_ended", site=self.site, slot=s.slot, command_id=s.command_id, why="expired")
        for s, value, d in await self.executor.step_schedules(now):
            await self.store.commands.append_audit([AuditEntry(
                now, "schedule_step", "stepped" if d is None or d.outcome in ("applied", "reverted") else d.outcome,
                s.command_id, "", s.kind, "", {"schedule_id": s.body["schedule_id"], "value": value,
                                               "decision": None if d is None else d.id})])  # fmt: skip
        held = self.executor.device_slots()
        if (
            held
            and not self.link_lost
            and self.last_heard is not None
            and now - self.last_heard > self.config.link_loss_s
        ):
            names = [s.slot for s in held]
            decisions = await self.executor.end(names, now, "link_loss")
            detail = {"unheard_s": round(now - self.last_heard, 1), "link_loss_s": self.config.link_loss_s,
                      "ended": names, "decisions": [d.id for d in decisions]}  # fmt: skip
            entries = [AuditEntry(now, "link_loss_fallback", "ended", s.command_id, "", s.kind, "link_loss",
                                  {"slot": s.slot}, "warning") for s in held]  # fmt: skip
            await self.store.commands.change(entries, clear_slots=names)
            await self.store.add_event(now, "commands_link_loss_fallback", "warning", self.site,
                                       f"central unheard for {detail['unheard_s']} s (> {self.config.link_loss_s:g} s): "
                                       f"{len(names)} command hold(s) ended, devices back to autonomous", detail)  # fmt: skip
            log.warning("commands_link_loss_fallback", site=self.site, unheard_s=detail["unheard_s"], ended=len(names))
            self.link_lost = True

    def status(self) -> dict[str, Any]:
        now = self.clock.time()
        return {"topic": self.topic, "counts": dict(self.counts), "refusals": dict(self.refusals),
                "trusted_keys": sorted(self.ring.keys), "revoked_keys": sorted(self.ring.revoked),
                "in_force": self.executor.status(now), "link_loss_s": self.config.link_loss_s,
                "unheard_s": None if self.last_heard is None else round(now - self.last_heard, 1),
                "link_lost": self.link_lost, "queue": self.queue.qsize()}  # fmt: skip


def _plain(value: Any) -> Any:
    """JSON-ready: mappings -> dicts, tuples -> lists (readbacks come from the devices' values)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


__all__ = ["CommandService"]

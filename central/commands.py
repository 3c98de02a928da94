"""Central's commands room: sign commands for a site, send them, and keep what came of them (docs/commands.md).

A command is built here (a UUID id, issued now, valid from 5 s ago — the site's clock may run behind ours — until
``valid_s`` from now), numbered with its key's next sequence number from the store (allocated in one write
transaction, so several central processes and CLIs signing with one key never give out the same number and the
numbers only grow: the agent refuses any number not above the last it saw), signed, recorded in the store as
``sent`` BEFORE it is published (so the ingest can attach a result even if this process is gone by then), and
published at QoS 1 on ``gridedge/v1/<site>/cmd``.

The site answers on its ``results`` stream with a result signed by the agent's own key. Central believes a result
only when that signature checks with the site's key from ``[commands.sites]``; anything else is logged and
ignored (the ingest still stores it as an event, counted as unverified). The result is recorded on its command
once: the store's update applies only while the command has no result, so the agent's resends (it resends until
the ingest acks) and the ingest and this issuer both seeing it change nothing the second time.

The issuer waits for its result two ways: its own plain subscription to ``gridedge/v1/<site>/results`` (the
ingest's is shared, so without its own it might never see the message), and the store, where the ingest records
results too (a result that arrived while this issuer's link was down is not lost).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from central.config import NOT_BEFORE_S, CommandsConfig, SigningKey
from central.store import Store, VerifiedResult
from protocols.eventlog import EventLog
from protocols.mqtt.session import MqttError, MqttSession
from protocols.telemetry.commands import (
    KINDS,
    RESULT_KIND,
    Command,
    check_body,
    new_command_id,
    read_command,
    read_result,
    read_signed,
    sign_command,
)
from protocols.telemetry.schema import Batch, SchemaError, decode_batch, topic

log = EventLog("central.commands")
# The kinds whose body holds ``until`` (``--for N`` sets it to now + N): protocols/telemetry/commands.py check_body.
UNTIL_KINDS = ("der.setpoint", "der.curve", "capbank.open", "capbank.close", "regulator.band_center")
STORE_POLL_S = 0.25  # how often a waiting issuer looks in the store for a result the ingest recorded


class CommandError(ValueError):
    """A command that cannot be issued as asked; the text names the flag or config key, the value and what is
    allowed."""


def verify_result(site: str, data: Any, agent_keys: Mapping[str, Ed25519PublicKey]) -> VerifiedResult:
    """The result in a ``command_result`` event's data, believed only when it verifies with ``site``'s agent key
    and speaks for ``site``; SchemaError saying why otherwise."""
    key = agent_keys.get(site)
    if key is None:
        raise SchemaError(f"site {site}: no agent key in [commands.sites] to verify its results")
    try:
        result = read_result(data, key)
    except SchemaError:
        raise
    except (TypeError, ValueError, KeyError) as err:  # signed, but not shaped as a result (an agent's bug)
        raise SchemaError(f"command result: malformed ({type(err).__name__}: {err})") from None
    if result.site != site:
        raise SchemaError(f"result for site {result.site!r:.70} arrived from site {site}")
    shapes = {"command_id": str, "kind": str, "target": str, "key_id": str, "seq": int, "reason": str,
              "readback": Mapping}  # fmt: skip
    for name, kind in shapes.items():
        value = getattr(result, name)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise SchemaError(f"command result {name} = {value!r:.40}: wrong type")
    if not all(isinstance(d, str) for d in result.decisions):
        raise SchemaError("command result decisions: an array of decision ids (strings)")
    return VerifiedResult(result, data)


def results_of(batch: Batch, agent_keys: Mapping[str, Ed25519PublicKey]) -> tuple[list[VerifiedResult], list[str]]:
    """The verified results of a ``results`` message, and why each other item was not believed."""
    good: list[VerifiedResult] = []
    bad: list[str] = []
    if batch.stream != "results":
        return good, bad
    for item in batch.items:
        if item.get("kind") != RESULT_KIND:
            bad.append(f"item of kind {item.get('kind')!r:.40}")
            continue
        try:
            good.append(verify_result(batch.site, item.get("data"), agent_keys))
        except SchemaError as err:
            bad.append(str(err))
    return good, bad


@dataclass(frozen=True, slots=True)
class Outcome:
    """What came of one command: ``applied``, ``refused``, ``failed``, or ``sent`` (no result yet)."""

    command: Command
    status: str
    reason: str = ""
    readback: Mapping[str, Any] = field(default_factory=dict)
    decisions: tuple[str, ...] = ()
    sent_at: float | None = None
    result_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        c = self.command
        return {"command_id": c.command_id, "site": c.audience, "kind": c.kind, "target": c.target,
                "key_id": c.key_id, "seq": c.seq, "issued_at": c.issued_at, "expires_at": c.expires_at,
                "sent_at": self.sent_at, "status": self.status, "reason": self.reason,
                "readback": dict(self.readback), "decisions": list(self.decisions),
                "result_at": self.result_at}  # fmt: skip


def stored_outcome(row: Mapping[str, Any], command: Command) -> Outcome:
    """An Outcome from a ``commands`` row (its result was verified when it was recorded)."""
    if row.get("result") is None:
        return Outcome(command, row["status"], row.get("reason") or "", sent_at=row.get("sent_at"))
    r = read_result(json.loads(row["result"]), None)
    return Outcome(command, r.status, r.reason, r.readback, r.decisions, row.get("sent_at"), row.get("result_at"))


class CommandIssuer:
    """Signs, records and sends commands; waits for their results. One per process; its session is the caller's
    to run (``session.run()`` as a task), so one link can carry many commands."""

    def __init__(
        self,
        config: CommandsConfig,
        store: Store,
        session: MqttSession | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.store = store
        self.session = session
        self._clock = clock
        self._watched: set[str] = set()
        self._waiting: dict[str, asyncio.Future[VerifiedResult]] = {}
        self.unverified = 0  # results seen on the wire that did not verify (logged and ignored)

    # ---- building (blocking: the store) -------------------------------------------------------------------

    def check(
        self, site: str, kind: str, target: str, body: Mapping[str, Any], key_id: str | None = None
    ) -> SigningKey:
        """The signing key for a command, or CommandError naming the flag or key that is wrong (nothing recorded)."""
        key = self.config.key(key_id)
        if key is None:
            if key_id is None:
                raise CommandError("commands.keys: no signing key configured ([[commands.keys]] in central's config)")
            known = ", ".join(k.key_id for k in self.config.keys)
            raise CommandError(f"--key-id = {key_id!r}: not in [[commands.keys]] (configured: {known})")
        if site not in self.config.agent_keys:
            raise CommandError(f"--site = {site!r}: no [commands.sites.{site}] agent key, so its results could not be "
                               "verified; add the site's agent_key to central's config")  # fmt: skip
        if kind not in KINDS:
            raise CommandError(f"--kind = {kind!r}: one of {', '.join(KINDS)}")
        try:
            check_body(kind, target, body)
        except SchemaError as err:
            raise CommandError(f"--body/--target: {err}") from None
        return key

    def build(
        self,
        site: str,
        kind: str,
        target: str = "*",
        body: Mapping[str, Any] | None = None,
        key_id: str | None = None,
    ) -> tuple[Command, bytes]:
        """Check, number, sign and record a command (status ``sent``); returns it and its wire message."""
        key = self.check(site, kind, target, body or {}, key_id)
        body = dict(body or {})
        now = self._clock()
        seq = self.store.next_command_seq(key.key_id)
        command = Command(key_id=key.key_id, role=key.role, audience=site, target=target,
                          command_id=new_command_id(), seq=seq, issued_at=round(now, 3),
                          not_before=round(now - NOT_BEFORE_S, 3), expires_at=round(now + self.config.valid_s, 3),
                          kind=kind, body=body)  # fmt: skip
        try:
            message = sign_command(key.key, command)
        except SchemaError as err:
            raise CommandError(f"the command cannot be signed: {err}") from None
        self.store.add_command({"command_id": command.command_id, "site": site, "kind": kind, "target": target,
                                "key_id": key.key_id, "seq": seq, "issued_at": command.issued_at,
                                "expires_at": command.expires_at, "message": message.decode(),
                                "status": "sent"})  # fmt: skip
        return command, message

    # ---- sending and waiting ------------------------------------------------------------------------------

    def watch(self, site: str) -> None:
        """Subscribe (plain, not shared) to ``site``'s results; before ``session.run()`` it is in place at connect."""
        if self.session is None:
            raise RuntimeError("this issuer has no MQTT session")
        if site not in self._watched:
            self._watched.add(site)
            self.session.subscribe(topic(site, "results"), 1, self._on_results)

    def _on_results(self, t: str, payload: bytes) -> None:
        try:
            batch = decode_batch(payload)
            if t != topic(batch.site, "results") or batch.stream != "results":
                raise SchemaError(f"topic {t} does not match site={batch.site!r} stream={batch.stream!r}")
        except SchemaError as err:
            log.warning("command_result_unreadable", topic=t, reason=err)
            return
        good, bad = results_of(batch, self.config.agent_keys)
        for reason in bad:
            self.unverified += 1
            log.warning("command_result_unverified", site=batch.site, msg_id=batch.msg_id, reason=reason)
        for v in good:
            fut = self._waiting.get(v.result.command_id)
            if fut is not None and not fut.done():
                fut.set_result(v)

    async def send(
        self,
        site: str,
        kind: str,
        target: str = "*",
        body: Mapping[str, Any] | None = None,
        key_id: str | None = None,
        *,
        timeout_s: float | None = None,
    ) -> Outcome:
        """Build, publish and wait up to ``timeout_s`` (default ``result_timeout_s``) for the site's result.

        Raises CommandError before anything is recorded when the command is not valid, MqttError when the broker
        did not take it in time (the command stays recorded, ``sent_at`` empty)."""
        timeout = self.config.result_timeout_s if timeout_s is None else timeout_s
        command, fut, sent_at = await self._start(site, kind, target, body, key_id, timeout)
        return await self._finish(command, fut, sent_at, timeout)

    async def send_many(
        self, items: Sequence[tuple[str, str, str, Mapping[str, Any]]], key_id: str | None = None, *,
        timeout_s: float | None = None,
    ) -> list[Outcome]:  # fmt: skip
        """Several commands (site, kind, target, body) signed with one key: numbered and published one after the
        other, so they reach a site in the order of their sequence numbers (a site refuses a sequence number below
        one it took: ``old_sequence``), then their results awaited together."""
        timeout = self.config.result_timeout_s if timeout_s is None else timeout_s
        started = [await self._start(site, kind, target, body, key_id, timeout) for site, kind, target, body in items]
        return list(await asyncio.gather(*(self._finish(c, f, s, timeout) for c, f, s in started)))

    async def _start(self, site: str, kind: str, target: str, body: Mapping[str, Any] | None, key_id: str | None,
                     timeout: float) -> tuple[Command, asyncio.Future[VerifiedResult], float]:  # fmt: skip
        """Build, record and publish (TimeoutError when the broker did not take it within ``timeout``); the
        future its result will complete, and when it was sent."""
        assert self.session is not None
        self.watch(site)
        command, message = await asyncio.to_thread(self.build, site, kind, target, body, key_id)
        fut: asyncio.Future[VerifiedResult] = asyncio.get_running_loop().create_future()
        self._waiting[command.command_id] = fut
        try:
            async with asyncio.timeout(timeout):
                await self._publish(command, message)
        except BaseException:
            self._waiting.pop(command.command_id, None)
            raise
        sent_at = self._clock()
        await asyncio.to_thread(self.store.command_sent, command.command_id, sent_at)
        log.info("command_sent", site=site, command_id=command.command_id, kind=kind, target=target,
                 key_id=command.key_id, seq=command.seq)  # fmt: skip
        return command, fut, sent_at

    async def _finish(self, command: Command, fut: asyncio.Future[VerifiedResult], sent_at: float,
                      timeout: float) -> Outcome:  # fmt: skip
        try:
            outcome = await self._wait(command, fut, timeout, sent_at)
        finally:
            self._waiting.pop(command.command_id, None)
        site = command.audience
        if outcome.status == "sent":
            log.warning("command_no_result", site=site, command_id=command.command_id, timeout_s=timeout)
        else:
            log.info("command_result", site=site, command_id=command.command_id, status=outcome.status,
                     reason=outcome.reason)  # fmt: skip
        return outcome

    async def _publish(self, command: Command, message: bytes) -> None:
        """QoS 1 until the broker has it; a lost link is retried with the same bytes (the agent runs a command id
        once). Ends by the caller's timeout."""
        assert self.session is not None
        while True:
            await self.session.connected.wait()
            try:
                await self.session.publish(topic(command.audience, "cmd"), message, qos=1)
                return
            except MqttError as err:
                log.warning("command_publish_retry", site=command.audience, command_id=command.command_id, error=err)
                await asyncio.sleep(0.2)

    async def _wait(self, command: Command, fut: asyncio.Future[VerifiedResult], timeout: float,
                    sent_at: float) -> Outcome:  # fmt: skip
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            left = deadline - loop.time()
            if fut.done():
                v = fut.result()
                now = self._clock()
                recorded = await asyncio.to_thread(self.store.record_result, command.audience, v, now)
                row = await asyncio.to_thread(self.store.command, command.command_id)
                r = v.result
                result_at = row.get("result_at") if row and not recorded else now
                return Outcome(command, r.status, r.reason, r.readback, r.decisions, sent_at, result_at)
            row = await asyncio.to_thread(self.store.command, command.command_id)
            if row is not None and row.get("result") is not None:  # the ingest recorded it
                return stored_outcome(row, command)
            if left <= 0:
                return Outcome(command, "sent", f"no result within {timeout:g} s", sent_at=sent_at)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(fut), min(STORE_POLL_S, left))


def command_of(row: Mapping[str, Any]) -> Command:
    """The Command a ``commands`` row holds (its signed message, read back)."""
    return read_command(read_signed(row["message"].encode()))


def outcomes(store: Store, site: str | None = None) -> Sequence[Outcome]:
    """Every command central recorded (of ``site``), oldest first, with what came of it."""
    return [stored_outcome(row, command_of(row)) for row in store.commands(site)]

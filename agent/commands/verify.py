"""Verification of a command at the agent, in the order docs/commands.md gives:

1. the message reads (size, JSON, the outer fields)                   -> ``malformed``
2. its key is one this site trusts and has not revoked                 -> ``unknown_key`` / ``revoked_key``
3. the signature verifies with that key                               -> ``bad_signature``
4. the payload reads (canonical, every field, the kind's body)          -> ``malformed_payload``
5. the key's role is the role claimed, and that role may send the kind -> ``role_mismatch`` / ``role_not_allowed``
6. the audience is this site                                          -> ``wrong_audience``
7. the sequence is above the last one taken from that key              -> ``old_sequence`` (``duplicate`` when it
   is the very command taken last: a QoS 1 redelivery)
8. now is inside [not_before - skew, expires_at + skew] on the wall clock, and the window is at most a day
                                                                      -> ``not_yet_valid`` / ``expired`` /
                                                                         ``window_too_long``
9. the command id was not executed before                             -> ``already_executed``

then the controller's safety envelope (agent/commands/execute.py). Each refusal is an audit entry with its
reason; a refusal from step 5 on (the signature checked, so the command id is central's) also gets a signed
result, except a redelivery of a command already answered, whose one result is on its way. Nothing here raises:
any input ends in a :class:`Verdict`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from agent.commands.config import CommandsConfig, TrustedKey
from agent.store import KeyChange
from protocols.telemetry.commands import (
    Command,
    KeyFileError,
    SchemaError,
    Signed,
    parse_public_key,
    read_command,
    read_signed,
    verify_signed,
)

MAX_WINDOW_S = 86_400.0  # a command valid longer than a day is refused: a stolen one must not live for ever


@dataclass(frozen=True, slots=True)
class Verdict:
    """What verification made of a message: ``command`` when it passed the checks so far, else ``reason``."""

    reason: str | None  # None: verified up to step 8 (step 9 and the envelope come after)
    command: Command | None = None
    key_id: str = ""  # as claimed (unverified when the signature did not check)
    detail: str = ""
    signed: bool = False  # the signature checked: the command id is central's, a result may be sent
    answered: bool = False  # the command was answered before (a redelivery): no second result


class KeyRing:
    """The keys this site trusts: the site file's, changed by signed ``keys.update`` commands (kept in the store)."""

    def __init__(self, config: CommandsConfig, changes: Iterable[KeyChange] = ()) -> None:
        self.keys: dict[str, TrustedKey] = {k.key_id: k for k in config.keys}
        self.revoked: set[str] = set()
        for ch in changes:
            self.apply(ch)

    def apply(self, ch: KeyChange) -> None:
        if ch.state == "revoked":
            self.keys.pop(ch.key_id, None)
            self.revoked.add(ch.key_id)
            return
        if ch.key_id in self.revoked:
            return  # a revoked key id stays revoked: a new key needs a new id
        try:
            self.keys[ch.key_id] = TrustedKey(ch.key_id, ch.role, parse_public_key(ch.public_key), ch.public_key)
        except KeyFileError:
            return  # checked when the update was verified; a damaged row is not trusted

    def get(self, key_id: str) -> TrustedKey | None:
        return self.keys.get(key_id)

    def changes_for(self, cmd: Command, now: float) -> tuple[list[KeyChange], str | None]:
        """What a verified ``keys.update`` changes, or why it is refused (it may not revoke the last key that may
        update keys, nor re-add a revoked id, nor give a known id another key)."""
        out: list[KeyChange] = []
        revoke = set(cmd.body.get("revoke", []))
        for key_id in sorted(revoke):
            if key_id not in self.keys:
                return [], f"unknown_key_to_revoke:{key_id}"
            out.append(KeyChange(key_id, self.keys[key_id].role, self.keys[key_id].text, "revoked", now,
                                 cmd.command_id))  # fmt: skip
        for k in cmd.body.get("add", []):
            if k["key_id"] in self.revoked or k["key_id"] in revoke:
                return [], f"key_id_revoked:{k['key_id']}"
            known = self.keys.get(k["key_id"])
            if known is not None and known.text != k["public_key"].strip():
                return [], f"key_id_taken:{k['key_id']}"
            out.append(KeyChange(k["key_id"], k["role"], k["public_key"].strip(), "added", now, cmd.command_id))
        return out, None


class Verifier:
    """Steps 1-8 (module docstring); step 9 and the sequence are taken in one store transaction by the caller."""

    def __init__(self, site: str, config: CommandsConfig, ring: KeyRing) -> None:
        self.site = site
        self.config = config
        self.ring = ring

    def check(self, raw: bytes, wall_now: float, last_seq: int, last_id: str | None) -> Verdict:
        try:
            signed: Signed = read_signed(raw)
        except SchemaError as err:
            return Verdict("malformed", detail=str(err))
        key = self.ring.get(signed.key_id)
        if key is None:
            reason = "revoked_key" if signed.key_id in self.ring.revoked else "unknown_key"
            return Verdict(reason, key_id=signed.key_id)
        if not verify_signed(signed, key.public_key):
            return Verdict("bad_signature", key_id=signed.key_id)
        try:
            cmd = read_command(signed)
        except SchemaError as err:
            return Verdict("malformed_payload", key_id=signed.key_id, detail=str(err))
        v = _Signed(cmd)
        if cmd.role != key.role:
            return v.refuse("role_mismatch", f"the key's role is {key.role}, the command claims {cmd.role}")
        if not self.config.may_send(key.role, cmd.kind):
            return v.refuse("role_not_allowed", f"{key.role} may not send {cmd.kind}")
        if cmd.audience != self.site:
            return v.refuse("wrong_audience", f"for {cmd.audience}, this is {self.site}")
        if cmd.seq <= last_seq:
            if cmd.seq == last_seq and cmd.command_id == last_id:
                return Verdict("duplicate", cmd, cmd.key_id, "redelivered; executed once", True, True)
            return v.refuse("old_sequence", f"seq {cmd.seq}, last taken from {cmd.key_id}: {last_seq}")
        skew = self.config.max_skew_s
        if cmd.expires_at - cmd.not_before > MAX_WINDOW_S:
            return v.refuse("window_too_long", f"{cmd.expires_at - cmd.not_before:.0f} s > {MAX_WINDOW_S:.0f} s")
        if wall_now < cmd.not_before - skew:
            return v.refuse("not_yet_valid", f"valid from {cmd.not_before} (now {wall_now:.3f}, skew {skew:g} s)")
        if wall_now > cmd.expires_at + skew:
            return v.refuse("expired", f"expired at {cmd.expires_at} (now {wall_now:.3f}, skew {skew:g} s)")
        return Verdict(None, cmd, cmd.key_id, signed=True)


@dataclass(frozen=True, slots=True)
class _Signed:
    cmd: Command

    def refuse(self, reason: str, detail: str) -> Verdict:
        return Verdict(reason, self.cmd, self.cmd.key_id, detail, True)


__all__ = ["MAX_WINDOW_S", "KeyRing", "Verdict", "Verifier"]

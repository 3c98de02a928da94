"""The agent's command service on a real store, without a device: what survives a restart (sequences, executed ids,
keys, holds), key rotation and revocation, a command cut short by a crash, a full store, the append-only audit,
and the ``[commands]`` section's errors. The messages are handed to the service as the MQTT session would."""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

import pytest
from helpers.aio import async_test
from helpers.commandunit import SITE, Keys, service
from helpers.envelope import Rig

from agent.commands.config import parse_commands
from agent.store import LoggedCommand, Override, StoreFullError
from agent.store.commandstate import CommandState
from protocols.configcheck import Checker
from protocols.telemetry.commands import (
    canonical,
    generate_key,
    private_pem,
    public_text,
    read_result,
)


def results(rig: Rig, keys: Keys) -> list[Any]:
    rows = rig.store.store.conn.execute("SELECT data FROM events WHERE stream='results' ORDER BY id").fetchall()
    return [read_result(json.loads(d), keys.k["agent"].public_key()) for (d,) in rows]


@async_test
async def test_sequences_executed_ids_and_holds_survive_a_restart(tmp_path) -> None:
    keys = Keys(tmp_path / "keys")
    async with Rig(tmp_path / "a.db") as rig:
        svc = service(rig, keys)
        await svc.start()
        cmd, raw = keys.command("control.mode", {"mode": "advise"}, seq=5)
        assert (await svc.handle(raw)).reason is None
        assert rig.envelope.mode == "advise"
    async with Rig(tmp_path / "a.db") as rig:  # the agent restarted on the same store
        svc = service(rig, keys)
        await svc.start()
        assert rig.envelope.mode == "advise", "the mode a command set is in force again"
        assert (await svc.handle(raw)).reason == "duplicate"
        _, old = keys.command("control.mode", {"mode": "control"}, seq=3)
        assert (await svc.handle(old)).reason == "old_sequence"
        _, nxt = keys.command("control.mode", {"mode": "control"}, seq=6)
        assert (await svc.handle(nxt)).reason is None
        assert rig.envelope.mode == "control"
        got = results(rig, keys)
        assert [(r.seq, r.status, r.reason) for r in got] == [(5, "applied", ""), (3, "refused", "old_sequence"),
                                                              (6, "applied", "")]  # fmt: skip
        assert [r.command_id for r in got].count(cmd.command_id) == 1, "answered once"


@async_test
async def test_keys_are_rotated_and_revoked_by_signed_commands_and_stay_so(tmp_path) -> None:
    keys = Keys(tmp_path / "keys")
    async with Rig(tmp_path / "a.db") as rig:
        svc = service(rig, keys)
        await svc.start()
        _, raw = keys.command("keys.update", {"add": [{"key_id": "ops-2", "role": "operator",
                                                       "public_key": keys.pub("ops-2")}], "revoke": ["ops-1"]})  # fmt: skip
        assert (await svc.handle(raw)).reason is None
        _, by_new = keys.command("control.mode", {"mode": "advise"}, key="ops-2")
        assert (await svc.handle(by_new)).reason is None
        _, by_old = keys.command("control.mode", {"mode": "control"})
        assert (await svc.handle(by_old)).reason == "revoked_key"
        # a key list signed by a key the site does not trust is refused before it is read
        _, forged = keys.command("keys.update", {"add": [{"key_id": "intruder", "role": "operator",
                                                          "public_key": keys.pub("intruder")}]}, key="intruder")  # fmt: skip
        assert (await svc.handle(forged)).reason == "unknown_key"
        _, by_dispatch = keys.command("keys.update", {"revoke": ["ops-2"]}, key="dispatch-1")
        assert (await svc.handle(by_dispatch)).reason == "role_not_allowed"
        _, readd = keys.command("keys.update", {"add": [{"key_id": "ops-1", "role": "operator",
                                                         "public_key": keys.pub("ops-1")}]}, key="ops-2")  # fmt: skip
        assert (await svc.handle(readd)).reason is None  # verified; the ring refuses it
        assert results(rig, keys)[-1].reason == "key_id_revoked:ops-1"
        assert "ops-1" not in svc.ring.keys
    async with Rig(tmp_path / "a.db") as rig:
        svc = service(rig, keys)
        await svc.start()
        assert sorted(svc.ring.keys) == ["dispatch-1", "ops-2"] and svc.ring.revoked == {"ops-1"}
        _, again = keys.command("control.mode", {"mode": "control"})
        assert (await svc.handle(again)).reason == "revoked_key"
        status = str(svc.status())
        assert keys.pub("ops-2") not in status and "PRIVATE" not in status, "no key in the status"


@async_test
async def test_a_command_cut_short_by_a_crash_is_answered_failed_and_never_run_again(tmp_path) -> None:
    keys = Keys(tmp_path / "keys")
    cmd, raw = keys.command("control.mode", {"mode": "monitor"}, seq=1)
    async with Rig(tmp_path / "a.db") as rig:
        # taken for execution, and then the process died (nothing after the take happened)
        row = LoggedCommand(cmd.command_id, cmd.key_id, cmd.seq, cmd.kind, cmd.target, time.time(), cmd.expires_at,
                            "executing", "", canonical(cmd.to_dict()).decode(), None)  # fmt: skip
        assert await rig.store.commands.take(row, [])
    async with Rig(tmp_path / "a.db") as rig:
        svc = service(rig, keys)
        await svc.start()
        (r,) = results(rig, keys)
        assert (r.command_id, r.status, r.reason) == (cmd.command_id, "failed", "interrupted")
        assert (await svc.handle(raw)).reason == "duplicate", "the broker's redelivery is not run"
        assert rig.envelope.mode == "control"


@async_test
async def test_a_full_store_takes_nothing_and_the_resent_command_runs_once(tmp_path, mocker) -> None:
    keys = Keys(tmp_path / "keys")
    async with Rig(tmp_path / "a.db") as rig:
        svc = service(rig, keys)
        await svc.start()
        cmd, raw = keys.command("control.mode", {"mode": "advise"})
        real = CommandState.take
        mocker.patch.object(CommandState, "take", side_effect=StoreFullError("database or disk is full"))
        with pytest.raises(StoreFullError):
            await svc.handle(raw)
        assert rig.envelope.mode == "control", "nothing carried out: the command was not taken"
        mocker.patch.object(CommandState, "take", real)
        assert (await svc.handle(raw)).reason is None
        assert rig.envelope.mode == "advise"
        assert [r.command_id for r in results(rig, keys)] == [cmd.command_id]


@async_test
async def test_the_audit_log_is_append_only(tmp_path) -> None:
    keys = Keys(tmp_path / "keys")
    async with Rig(tmp_path / "a.db") as rig:
        svc = service(rig, keys)
        await svc.start()
        await svc.handle(b"garbage")
        conn = rig.store.store.conn
        assert conn.execute("SELECT what, reason FROM audit").fetchall() == [("command_refused", "malformed")]
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute("UPDATE audit SET reason='fine'")
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute("DELETE FROM audit")
        (data,) = conn.execute("SELECT data FROM events WHERE stream='audit'").fetchone()
        assert '"reason":"malformed"' in data, "each entry also goes uplink on the audit stream"


@pytest.mark.parametrize(
    ("raw", "key", "match"),
    [
        ({}, "commands.agent_key_file", "required"),
        ({"agent_key_file": "missing.key"}, "commands.agent_key_file", "cannot read"),
        (
            {"agent_key_file": "agent.key", "roles": {"dispatch": ["shell.exec"]}},
            "commands.roles.dispatch",
            "a command kind",
        ),
        ({"agent_key_file": "agent.key", "roles": {"admin": ["*"]}}, "commands.roles.admin", "unknown key"),
        (
            {"agent_key_file": "agent.key", "keys": [{"key_id": "a", "role": "root", "public_key": "x"}]},
            "commands.keys[0].role",
            "one of",
        ),
        (
            {"agent_key_file": "agent.key", "keys": [{"key_id": "a", "role": "operator"}]},
            "commands.keys[0]",
            "public_key or public_key_file",
        ),
        (
            {"agent_key_file": "agent.key", "keys": [{"key_id": "a", "role": "operator", "public_key": "AAAA"}]},
            "commands.keys[0].public_key",
            "32",
        ),
        ({"agent_key_file": "agent.key", "link_loss_s": 1}, "commands.link_loss_s", "10"),
        ({"agent_key_file": "agent.key", "max_skew": 1}, "commands.max_skew", "unknown key"),
    ],
)
def test_the_commands_section_names_each_bad_key(tmp_path, raw: dict, key: str, match: str) -> None:
    (tmp_path / "agent.key").write_bytes(private_pem(generate_key()))
    if "keys" not in raw:
        raw = {
            **raw,
            "keys": [{"key_id": "k", "role": "operator", "public_key": public_text(generate_key().public_key())}],
        }
    c = Checker(tmp_path)
    parse_commands(c, raw, SITE, True)
    hits = [i for i in c.issues if i.key == key]
    assert hits and match in str(hits[0]), c.issues


def test_commands_need_a_control_section(tmp_path) -> None:
    (tmp_path / "agent.key").write_bytes(private_pem(generate_key()))
    c = Checker(tmp_path)
    parse_commands(c, {"agent_key_file": "agent.key", "keys": []}, SITE, False)
    assert any(i.key == "commands" and "[control]" in str(i) for i in c.issues)
    assert any(i.key == "commands.keys" for i in c.issues) is False  # an empty array is the site's choice


def test_an_agent_key_others_can_read_is_warned_about(tmp_path) -> None:
    key = tmp_path / "agent.key"
    key.write_bytes(private_pem(generate_key()))
    raw = {"agent_key_file": "agent.key", "keys": []}
    key.chmod(0o644)
    c = Checker(tmp_path)
    assert parse_commands(c, raw, SITE, True) is not None and not c.issues
    assert [w.key for w in c.warnings] == ["commands.agent_key_file"] and "chmod 600" in str(c.warnings[0])
    key.chmod(0o600)
    c = Checker(tmp_path)
    parse_commands(c, raw, SITE, True)
    assert c.warnings == []


@async_test
async def test_a_schedule_in_force_survives_a_restart_and_one_that_ended_meanwhile_is_closed(tmp_path) -> None:
    keys = Keys(tmp_path / "keys")
    async with Rig(tmp_path / "a.db") as rig:
        now = rig.clock.t
        start = now - now % 300
        live = Override("schedule:s-live", "c-1", "schedule.load", "pv1",
                        {"schedule_id": "s-live", "quantity": "p_limit_pct", "step_s": 300, "start": start,
                         "values": [55, 45], "fallback": "autonomous"}, now, start + 600)  # fmt: skip
        over = Override("schedule:s-over", "c-2", "schedule.load", "pv2",
                        {"schedule_id": "s-over", "quantity": "p_limit_pct", "step_s": 300, "start": start - 900,
                         "values": [50], "fallback": "autonomous"}, now - 900, start - 600)  # fmt: skip
        await rig.store.commands.change([], set_overrides=[live, over])
    async with Rig(tmp_path / "a.db") as rig:
        svc = service(rig, keys)
        await svc.start()
        in_force = svc.status()["in_force"]
        assert list(in_force) == ["schedule:s-live"] and in_force["schedule:s-live"]["value_now"] == 55
        ended = rig.store.store.conn.execute("SELECT what, command_id, reason FROM audit").fetchall()
        assert ended == [("override_ended", "c-2", "expired")]
        assert [o.slot for o in await rig.store.commands.overrides()] == ["schedule:s-live"]

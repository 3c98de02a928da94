"""Central's commands: sequence numbers that only grow across issuers, signed commands sent over a real Mosquitto,
results believed only when the site's agent key signed them and recorded once, and the CLI's exit codes."""

from __future__ import annotations

import asyncio
import base64
import json
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from helpers.aio import async_test, running_tasks, until
from helpers.stores import store_toml, target_fixture  # noqa: F401 (the target fixture)

from central.cli import main as central_main
from central.commands import CommandError, CommandIssuer, results_of
from central.config import CentralConfig, CentralConfigError, load_central_config, parse_central_config
from central.ingest import CentralWorker
from central.store import CentralStore, VerifiedResult, open_store
from protocols.mqtt import MqttSession, SessionConfig
from protocols.telemetry.commands import (
    RESULT_DOMAIN,
    Result,
    canonical,
    generate_key,
    new_command_id,
    private_pem,
    public_text,
    read_command,
    read_result,
    read_signed,
    sign_result,
    verify_signed,
)
from protocols.telemetry.schema import decode_ack, decode_batch, encode_batch, topic

SITE = "site-a"


class Keys:
    """Central's operator key and the site's agent key, as files and text."""

    def __init__(self, folder: Path) -> None:
        self.central, self.agent = generate_key(), generate_key()
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "ops-1.key").write_bytes(private_pem(self.central))
        (folder / "dispatch-1.key").write_bytes(private_pem(generate_key()))
        self.agent_pub = public_text(self.agent.public_key())


def write_config(tmp_path: Path, keys: Keys, port: int = 1, extra: str = "", store: Path | str | None = None) -> Path:
    """Central's TOML with both keys; its store ``store`` (a SQLite file or a PostgreSQL URL), else central.db."""
    conf = tmp_path / "central.toml"
    conf.write_text(
        f'[broker]\nurl = "mqtt://127.0.0.1:{port}"\n'
        + store_toml(store if store is not None else Path("central.db"))
        + "[commands]\nresult_timeout_s = 10\nvalid_s = 60\n"
        '[[commands.keys]]\nkey_id = "dispatch-1"\nrole = "dispatch"\nkey_file = "keys/dispatch-1.key"\n'
        '[[commands.keys]]\nkey_id = "ops-1"\nrole = "operator"\nkey_file = "keys/ops-1.key"\n'
        f'[commands.sites.{SITE}]\nagent_key = "{keys.agent_pub}"\n' + extra
    )
    return conf


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    return Keys(tmp_path / "keys")


@pytest.fixture
def config(tmp_path: Path, keys: Keys) -> CentralConfig:
    return load_central_config(write_config(tmp_path, keys))


# ---- config ----------------------------------------------------------------------------------------------------


def test_commands_config_loads_keys_and_the_operator_default_and_never_shows_a_key(
    config: CentralConfig, keys: Keys
) -> None:
    cmds = config.commands
    assert (cmds.result_timeout_s, cmds.valid_s) == (10.0, 60.0)
    assert [k.key_id for k in cmds.keys] == ["dispatch-1", "ops-1"]
    assert cmds.key().key_id == "ops-1"  # the first operator key, though a dispatch key comes first
    assert cmds.key("dispatch-1").role == "dispatch" and cmds.key("nope") is None
    assert public_text(cmds.agent_keys[SITE]) == keys.agent_pub
    shown = repr(config)
    assert keys.agent_pub not in shown and "PRIVATE" not in shown and "Ed25519" not in shown


def test_an_agent_key_file_is_read_relative_to_the_config(tmp_path: Path, keys: Keys) -> None:
    (tmp_path / "keys" / "site-b.pub").write_text(keys.agent_pub + "\n")
    cfg = load_central_config(
        write_config(tmp_path, keys, extra='[commands.sites.site-b]\nagent_key_file = "keys/site-b.pub"\n')
    )
    assert public_text(cfg.commands.agent_keys["site-b"]) == keys.agent_pub


@pytest.mark.parametrize(
    ("commands", "key", "text"),
    [
        ({"valid_s": 1}, "commands.valid_s", "10..86400"),
        ({"result_timeout_s": "x"}, "commands.result_timeout_s", "number"),
        ({"colour": 1}, "commands.colour", "unknown key"),
        (
            {"keys": [{"key_id": "k", "role": "root", "key_file": "keys/ops-1.key"}]},
            "commands.keys[0].role",
            "'operator'",
        ),
        (
            {"keys": [{"key_id": "a b", "role": "operator", "key_file": "keys/ops-1.key"}]},
            "commands.keys[0].key_id",
            "letters",
        ),
        (
            {"keys": [{"key_id": "k", "role": "operator", "key_file": "keys/missing.key"}]},
            "commands.keys[0].key_file",
            "cannot read",
        ),
        (
            {"keys": [{"key_id": "k", "role": "operator", "key_file": "central.toml"}]},
            "commands.keys[0].key_file",
            "PEM",
        ),
        (
            {
                "keys": [
                    {"key_id": "k", "role": "operator", "key_file": "keys/ops-1.key"},
                    {"key_id": "k", "role": "dispatch", "key_file": "keys/dispatch-1.key"},
                ]
            },
            "commands.keys[1].key_id",
            "unique",
        ),
        ({"keys": [{"role": "operator", "key_file": "keys/ops-1.key"}]}, "commands.keys[0].key_id", "required"),
        ({"keys": {"key_id": "k"}}, "commands.keys", "array of tables"),
        ({"sites": {"a/b": {"agent_key": "x"}}}, "commands.sites.a/b", "site id"),
        ({"sites": {"s": {"agent_key": "AAAA"}}}, "commands.sites.s.agent_key", "32"),
        ({"sites": {"s": {"agent_key": "not base64!"}}}, "commands.sites.s.agent_key", "base64"),
        ({"sites": {"s": {}}}, "commands.sites.s", "one of agent_key"),
        ({"sites": {"s": {"agent_key_file": "nope.pub"}}}, "commands.sites.s.agent_key_file", "readable"),
        ({"sites": {"s": {"agent_key": "x", "agent_key_file": "y"}}}, "commands.sites.s", "one of agent_key"),
    ],
)
def test_bad_commands_config_names_key_value_and_allowed(
    tmp_path: Path, keys: Keys, commands: dict, key: str, text: str
) -> None:
    (tmp_path / "central.toml").write_text("x = 1\n")
    raw = {"broker": {"url": "mqtt://127.0.0.1"}, "store": {"db": "c.db"}, "commands": commands}
    with pytest.raises(CentralConfigError) as info:
        parse_central_config(raw, tmp_path / "central.toml")
    assert any(i.key == key and text in i.allowed for i in info.value.issues), str(info.value)


def test_a_bad_agent_key_is_not_echoed_whole_in_the_error(tmp_path: Path) -> None:
    long_bad = "Q" * 43 + "!"
    raw = {"broker": {"url": "mqtt://127.0.0.1"}, "store": {"db": "c.db"},
           "commands": {"sites": {"s": {"agent_key": long_bad}}}}  # fmt: skip
    with pytest.raises(CentralConfigError) as info:
        parse_central_config(raw, tmp_path / "central.toml")
    assert long_bad not in str(info.value)


# ---- sequences and the store -----------------------------------------------------------------------------------


def test_two_issuers_on_one_store_give_out_strictly_growing_sequences_never_the_same(
    target: Path | str, keys: Keys, tmp_path: Path
) -> None:
    """Each issuer has its own connection (as two processes would); they race for 150 commands each."""
    config = load_central_config(write_config(tmp_path, keys, store=target))
    seen: dict[str, list[int]] = {"a": [], "b": []}
    barrier = threading.Barrier(2)

    def issue(name: str) -> None:
        store = open_store(target)
        issuer = CommandIssuer(config.commands, store)
        barrier.wait()
        for _ in range(150):
            command, message = issuer.build(SITE, "revert.all")
            signed = read_signed(message)
            assert read_command(signed).seq == command.seq
            seen[name].append(command.seq)
        store.close()

    threads = [threading.Thread(target=issue, args=(n,)) for n in seen]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for seqs in seen.values():
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)  # strictly growing within an issuer
    assert sorted(seen["a"] + seen["b"]) == list(range(1, 301))  # never the same number twice
    assert set(seen["a"]) & set(seen["b"]) == set() and seen["a"] and seen["b"]
    store = open_store(target)
    assert store.count("commands") == 300
    store.close()


def test_each_key_has_its_own_sequence_and_a_built_command_is_signed_valid_and_recorded(
    target: Path | str, keys: Keys, tmp_path: Path
) -> None:
    config = load_central_config(write_config(tmp_path, keys, store=target))
    store = open_store(target)
    now = 1_800_000_000.0
    issuer = CommandIssuer(config.commands, store, clock=lambda: now)
    c1, m1 = issuer.build(SITE, "capbank.close", "cap675", {"until": now + 600})
    c2, _ = issuer.build(SITE, "control.mode", "*", {"mode": "advise"}, key_id="dispatch-1")
    c3, _ = issuer.build(SITE, "revert.all")
    assert (c1.seq, c2.seq, c3.seq) == (1, 1, 2) and (c1.key_id, c2.key_id) == ("ops-1", "dispatch-1")
    assert (c1.issued_at, c1.not_before, c1.expires_at) == (now, now - 5, now + 60)
    assert verify_signed(read_signed(m1), keys.central.public_key()) and c1.role == "operator"
    row = store.command(c1.command_id)
    assert row is not None and row["status"] == "sent" and row["message"] == m1.decode() and row["sent_at"] is None
    store.close()


@pytest.mark.parametrize(
    ("site", "kind", "target", "body", "key_id", "match"),
    [
        (SITE, "shell.exec", "*", {}, None, "--kind"),
        (SITE, "capbank.close", "*", {"until": 1e9}, None, "one device"),
        (SITE, "capbank.close", "cap1", {}, None, "body.until"),
        ("site-z", "revert.all", "*", {}, None, "commands.sites.site-z"),
        (SITE, "revert.all", "*", {}, "ops-9", "--key-id"),
    ],
)
def test_a_command_central_would_not_sign_is_refused_before_a_sequence_is_spent(
    config: CentralConfig, tmp_path: Path, site: str, kind: str, target: str, body: dict, key_id: str | None, match: str
) -> None:
    store = CentralStore(tmp_path / "central.db")
    with pytest.raises(CommandError, match=match):
        CommandIssuer(config.commands, store).build(site, kind, target, body, key_id)
    assert store.count("commands") == 0 and store.next_command_seq("ops-1") == 1
    store.close()


def result_for(command, key, status: str = "applied", reason: str = "", site: str = SITE) -> dict:  # type: ignore[no-untyped-def]
    r = Result(command.command_id, site, command.kind, command.target, command.key_id, command.seq, status, reason,
               time.time(), {"closed": 1}, ("d-1",))  # fmt: skip
    return sign_result(key, f"agent-{site}", r)


def test_a_result_is_recorded_once_and_only_on_its_own_sites_command(
    target: Path | str, keys: Keys, tmp_path: Path
) -> None:
    config = load_central_config(write_config(tmp_path, keys, store=target))
    store = open_store(target)
    command, _ = CommandIssuer(config.commands, store).build(SITE, "revert.all")
    data = result_for(command, keys.agent)
    v = VerifiedResult(read_result(data, keys.agent.public_key()), data)
    assert store.record_result("site-b", v, 1.0) is False  # another site cannot answer for it
    assert store.record_result(SITE, v, 2.0) is True
    later = result_for(command, keys.agent, "failed", "changed its mind")
    assert store.record_result(SITE, VerifiedResult(read_result(later, None), later), 3.0) is False
    row = store.command(command.command_id)
    assert row is not None and (row["status"], row["result_at"], json.loads(row["result"])) == ("applied", 2.0, data)
    store.close()


def test_a_store_written_before_commands_existed_opens_and_gains_the_tables(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "old.db")
    db.executescript(
        "CREATE TABLE messages (msg_id TEXT PRIMARY KEY, site TEXT NOT NULL, stream TEXT NOT NULL, seq INTEGER NOT NULL,"
        " count INTEGER NOT NULL, received REAL NOT NULL);"
        "INSERT INTO messages VALUES ('m1', 'site-a', 'telemetry', 1, 0, 1.0);"
    )
    db.close()
    store = CentralStore(tmp_path / "old.db")
    assert store.msg_ids() == ["m1"] and store.commands() == [] and store.next_command_seq("ops-1") == 1
    store.close()


# ---- over the real broker: a fake agent built from protocols/telemetry only -----------------------------------


class FakeAgent:
    """The site's side of the downlink: verifies each command with central's public key and answers with a signed
    result on the results stream — twice, byte for byte, as an agent whose ack was lost would."""

    def __init__(self, port: int, central_pub, sign_key, status: str = "applied") -> None:  # type: ignore[no-untyped-def]
        self.central_pub, self.sign_key, self.status = central_pub, sign_key, status
        self.commands: list = []
        self.acks: list[str] = []
        self.sent = 0
        self._tasks: set[asyncio.Task] = set()
        self.session = MqttSession(SessionConfig(host="127.0.0.1", port=port, client_id="fake-agent",
                                                 backoff_min_s=0.05, backoff_max_s=0.5))  # fmt: skip
        self.session.subscribe(topic(SITE, "cmd"), 1, self._on_cmd)
        self.session.subscribe(topic(SITE, "ack"), 1, lambda _t, p: self.acks.extend(decode_ack(p).msg_ids))

    def _on_cmd(self, _t: str, payload: bytes) -> None:
        signed = read_signed(payload)
        assert verify_signed(signed, self.central_pub)
        command = read_command(signed)
        self.commands.append(command)
        reason = "" if self.status == "applied" else "envelope: lockout"
        r = Result(command.command_id, SITE, command.kind, command.target, command.key_id, command.seq, self.status,
                   reason, time.time(), {"closed": 1}, ("d-1",))  # fmt: skip
        item = {"ts": time.time(), "kind": "command_result", "severity": "info", "source": "commands",
                "text": f"{command.kind}: {self.status}", "data": sign_result(self.sign_key, "agent-site-a", r)}  # fmt: skip
        batch = encode_batch(SITE, "results", len(self.commands), f"results-{len(self.commands)}", time.time(), [item])
        task = asyncio.get_running_loop().create_task(self._publish_twice(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _publish_twice(self, batch: bytes) -> None:
        for _ in range(2):
            await self.session.publish(topic(SITE, "results"), batch, qos=1)
            self.sent += 1


async def run_cli(*argv: str) -> tuple[int, str]:
    """``gridedge central command ...`` in a thread (it runs its own event loop), its stdout captured."""
    import contextlib
    import io

    out = io.StringIO()

    def call() -> int:
        with contextlib.redirect_stdout(out):
            return central_main(list(argv))

    code = await asyncio.to_thread(call)
    return code, out.getvalue()


@async_test
async def test_central_command_round_trip_applies_and_a_resent_result_is_stored_once(
    broker, tmp_path: Path, target: Path | str, keys: Keys
) -> None:
    conf = write_config(tmp_path, keys, broker.port, store=target)
    config = load_central_config(conf)
    worker = CentralWorker(config, "w1")
    agent = FakeAgent(broker.port, keys.central.public_key(), keys.agent)
    async with running_tasks(worker.run(), agent.session.run()):
        await asyncio.wait_for(worker.session.connected.wait(), 10)
        await asyncio.wait_for(agent.session.connected.wait(), 10)
        code, out = await run_cli("command", "--config", str(conf), "--site", SITE, "--kind", "capbank.close",
                                  "--target", "cap675", "--for", "600", "--json")  # fmt: skip
        assert code == 0, out
        await until(lambda: agent.sent == 2 and len(agent.acks) == 2)  # the ingest acked both copies
    shown = json.loads(out)
    (command,) = agent.commands
    assert shown["command_id"] == command.command_id and shown["status"] == "applied" and shown["reason"] == ""
    assert shown["readback"] == {"closed": 1} and shown["key_id"] == "ops-1" and shown["seq"] == 1
    assert command.body["until"] == pytest.approx(command.issued_at + 600, abs=1.0)
    assert worker.stats.stored == 1 and worker.stats.duplicates == 1 and worker.stats.results_unverified == 0
    store = open_store(target)
    row = store.command(command.command_id)
    assert row is not None and row["status"] == "applied" and row["sent_at"] is not None
    assert store.count("events") == 1  # the result, once, although it arrived twice
    store.close()


@async_test
async def test_the_ingest_records_a_result_even_when_the_sender_is_gone(
    broker, tmp_path: Path, target: Path | str, keys: Keys
) -> None:
    """The CLI timed out (exit 3, the command stays 'sent'); the site's refusal arrives later and the ingest
    records it, so `central commands` shows what came of it."""
    conf = write_config(tmp_path, keys, broker.port, store=target)
    config = load_central_config(conf)
    code, out = await run_cli(
        "command", "--config", str(conf), "--site", SITE, "--kind", "revert.all", "--timeout", "1"
    )
    assert code == 3 and "no result" in out
    store = open_store(target)
    (row,) = store.commands(SITE)
    assert row["status"] == "sent" and row["sent_at"] is not None
    command = read_command(read_signed(row["message"].encode()))
    worker = CentralWorker(config, "w1")
    late = FakeAgent(broker.port, keys.central.public_key(), keys.agent, status="refused")
    async with running_tasks(worker.run(), late.session.run()):
        await asyncio.wait_for(worker.session.connected.wait(), 10)
        await asyncio.wait_for(late.session.connected.wait(), 10)
        late._on_cmd(topic(SITE, "cmd"), row["message"].encode())  # as if it had been offline and came back
        await until(lambda: len(late.acks) == 2)
    assert store.command(command.command_id)["status"] == "refused"  # type: ignore[index]
    assert worker.stats.results_verified == 2  # both copies verified; the second changed nothing
    store.close()
    code, _ = await run_cli("commands", "--config", str(conf), "--site", SITE)
    listed = await run_cli("commands", "--config", str(conf), "--json")
    assert code == 0
    (entry,) = json.loads(listed[1])
    assert (entry["command_id"], entry["status"], entry["reason"]) == (
        command.command_id,
        "refused",
        "envelope: lockout",
    )


@async_test
async def test_a_result_signed_by_the_wrong_key_is_not_taken(
    broker, tmp_path: Path, target: Path | str, keys: Keys
) -> None:
    conf = write_config(tmp_path, keys, broker.port, store=target)
    worker = CentralWorker(load_central_config(conf), "w1")
    forger = FakeAgent(broker.port, keys.central.public_key(), generate_key())
    async with running_tasks(worker.run(), forger.session.run()):
        await asyncio.wait_for(worker.session.connected.wait(), 10)
        await asyncio.wait_for(forger.session.connected.wait(), 10)
        code, out = await run_cli("command", "--config", str(conf), "--site", SITE, "--kind", "revert.all",
                                  "--timeout", "2", "--json")  # fmt: skip
        await until(lambda: len(forger.acks) == 2)  # stored as events (and acked) all the same
    assert code == 3 and forger.commands
    shown = json.loads(out)
    assert shown["status"] == "sent" and "no result" in shown["reason"]
    assert worker.stats.results_unverified == 2 and worker.stats.results_verified == 0
    store = open_store(target)
    assert store.command(forger.commands[0].command_id)["status"] == "sent"  # type: ignore[index]
    assert store.count("events") == 1
    store.close()


def test_no_broker_is_exit_3_and_nothing_is_recorded(
    tmp_path: Path, keys: Keys, capsys: pytest.CaptureFixture[str]
) -> None:
    from helpers.net import free_port

    conf = write_config(tmp_path, keys, free_port())
    assert (
        central_main(["command", "--config", str(conf), "--site", SITE, "--kind", "revert.all", "--timeout", "0.5"])
        == 3
    )
    assert "did not take the command" in capsys.readouterr().err
    store = CentralStore(tmp_path / "central.db")
    assert store.count("commands") == 0
    store.close()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--kind", "revert.all", "--for", "60"], "--for: revert.all has no until"),
        (["--kind", "capbank.close", "--target", "c1", "--for", "0"], "--for = 0"),
        (["--kind", "revert.all", "--body", "{oops"], "--body"),
        (["--kind", "revert.all", "--body", "[1]"], "a JSON object"),
        (["--kind", "der.setpoint", "--target", "pv1", "--body", '{"p_limit_pct": 500}', "--for", "60"], "p_limit_pct"),
        (["--kind", "shell.exec"], "--kind = 'shell.exec'"),
        (["--kind", "revert.all", "--key-id", "ops-9"], "--key-id = 'ops-9'"),
        (["--kind", "revert.all", "--timeout", "0"], "--timeout"),
        (["--kind", "revert.all", "--site", "site-z"], "commands.sites.site-z"),
    ],
)
def test_bad_command_arguments_exit_2_naming_the_flag(
    tmp_path: Path, keys: Keys, capsys: pytest.CaptureFixture[str], args: list[str], needle: str
) -> None:
    conf = write_config(tmp_path, keys)  # port 1: nothing listens, and nothing may be tried
    site = [] if "--site" in args else ["--site", SITE]
    assert central_main(["command", "--config", str(conf), *site, *args]) == 2
    assert needle in capsys.readouterr().err


def test_a_config_without_commands_or_with_a_bad_key_is_exit_2(
    tmp_path: Path, keys: Keys, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = tmp_path / "plain.toml"
    conf.write_text('[broker]\nurl = "mqtt://127.0.0.1:1"\n[store]\ndb = "c.db"\n')
    assert central_main(["command", "--config", str(conf), "--site", SITE, "--kind", "revert.all"]) == 2
    assert "commands.keys" in capsys.readouterr().err
    (tmp_path / "keys" / "ops-1.key").write_text("not a key")
    assert (
        central_main(["command", "--config", str(write_config(tmp_path, keys)), "--site", SITE, "--kind", "revert.all"])
        == 2
    )
    err = capsys.readouterr().err
    assert "commands.keys[1].key_file" in err and "keys/ops-1.key" in err
    assert central_main(["commands", "--config", str(conf)]) == 0
    assert capsys.readouterr().out.strip() == "no commands"


def test_a_signed_result_of_the_wrong_shape_is_unverified_not_a_crash(keys: Keys) -> None:
    """Signed by the right key but built wrong (an agent's bug): the ingest must count it, not fail its flush."""
    good = Result(new_command_id(), SITE, "revert.all", "*", "ops-1", 1, "applied", "", 1.0, {}).to_dict()
    items = []
    for change in ({"decisions": 5}, {"readback": [1]}, {"seq": "1"}):
        payload = canonical({**good, **change})
        sig = base64.b64encode(keys.agent.sign(RESULT_DOMAIN + payload)).decode()
        items.append({"ts": 1.0, "kind": "command_result", "severity": "info", "source": "commands", "text": "",
                      "data": {"key_id": "agent", "result": payload.decode(), "sig": sig}})  # fmt: skip
    batch = decode_batch(encode_batch(SITE, "results", 1, "m", 1.0, items))
    verified, bad = results_of(batch, {SITE: keys.agent.public_key()})
    assert verified == [] and len(bad) == 3 and all("command result" in b for b in bad)


def test_results_and_audit_messages_are_stored_as_events(tmp_path: Path, target: Path | str) -> None:
    """Each item of an audit or a results message is an event (it has no ``point`` for the readings table), found
    again by its message's stream; a result is stored as an event even when it does not verify."""
    audit = {"ts": 1.0, "kind": "command_refused", "severity": "warning", "source": "cap675", "text": "old seq",
             "data": {"command_id": "c", "key_id": "ops-1", "kind": "capbank.close", "reason": "seq"}}  # fmt: skip
    unsigned = {"ts": 1.0, "kind": "command_result", "severity": "info", "source": "commands", "text": "",
                "data": {"key_id": "a", "result": "{}", "sig": "x"}}  # fmt: skip
    store = open_store(target)
    stored = store.store_batches([decode_batch(encode_batch(SITE, "audit", 1, "a1", 1.0, [audit, audit])),
                                  decode_batch(encode_batch(SITE, "results", 1, "r1", 1.0, [unsigned]))], 2.0)  # fmt: skip
    assert stored == [True, True]
    assert store.count("events") == 3 and store.count("readings") == 0
    assert store.streams() == [(SITE, "audit"), (SITE, "results")]
    store.close()


@async_test
async def test_a_result_whose_flush_failed_is_counted_once_and_recorded_on_the_retry(
    config: CentralConfig, keys: Keys, tmp_path: Path
) -> None:
    """The store locked by another writer: the flush is queued again; the result's signature was checked once, on
    arrival, and the retry records it."""
    worker = CentralWorker(config, "w1")
    worker._store = CentralStore(tmp_path / "central.db", busy_timeout_ms=50)
    command, _ = CommandIssuer(config.commands, worker._store).build(SITE, "revert.all")
    item = {"ts": 1.0, "kind": "command_result", "severity": "info", "source": "commands", "text": "",
            "data": result_for(command, keys.agent)}  # fmt: skip
    worker._on_data(topic(SITE, "results"), encode_batch(SITE, "results", 1, "r1", 1.0, [item]))
    other = CentralStore(tmp_path / "central.db")
    other._db.execute("BEGIN IMMEDIATE")
    batches, worker._queue = worker._queue, []
    assert await worker._flush(batches, []) is False and len(worker._queue) == 1
    other._db.execute("ROLLBACK")
    batches, worker._queue = worker._queue, []
    assert await worker._flush(batches, []) is True
    assert worker.stats.results_verified == 1 and worker.stats.store_errors == 1 and worker.stats.stored == 1
    assert other.command(command.command_id)["status"] == "applied"  # type: ignore[index]
    assert worker._verified == {}
    other.close()
    worker._store.close()

"""Commands from central against a running agent on the bench: the IEEE 13-node bench's cap bank (RS-485) and
inverter pv675 (SunSpec), the agent's command service on a real Mosquitto, a signing "central" on the other side.

What is judged is read at the bench (every write its devices' servers received, the inverter's settings, the cap
bank controller's state) and from the agent's signed results (verified with its public key) and audit log. Local
functions are in monitor mode: every write the bench sees is a command's. The bench runs at 20x; what a command
holds (``until``) is on the agent's clock, which is the bench's.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time

import pytest
from helpers.aio import async_test, until
from helpers.commandrig import SITE, command_site
from helpers.controlbench import CAP
from helpers.derrig import DEV

from protocols.telemetry.commands import Command, generate_key, sign_command

pytestmark = pytest.mark.integration

LIMIT = "DERCtlAC.WMaxLimPct"
LIMIT_ENA = "DERCtlAC.WMaxLimPctEna"


def _forged(raw: bytes, **changes: str) -> bytes:
    msg = json.loads(raw)
    msg.update(changes)
    return json.dumps(msg).encode()


@async_test
async def test_a_signed_set_point_is_applied_once_and_every_attack_is_refused_with_no_device_write(
    tmp_path, broker
) -> None:
    async with command_site(tmp_path, broker) as s:
        model = s.bench.model_of(DEV)
        await until(lambda: s.agent.snapshot.get(f"{DEV}.{LIMIT_ENA}") is not None, timeout=30)
        # -- the valid command, through the envelope to the inverter, read back
        valid = s.command("der.setpoint", DEV, {"p_limit_pct": 50, "until": s.now() + 3600})
        raw_valid = await s.send(valid)
        res = await s.wait_result(valid.command_id)
        assert (res.status, res.kind, res.key_id, res.seq) == ("applied", "der.setpoint", "ops-1", valid.seq), res
        assert model.settings[LIMIT_ENA] == 1 and model.settings[LIMIT] == pytest.approx(50)  # type: ignore[attr-defined]
        assert res.decisions, "carried out by a control decision"
        await asyncio.sleep(0.5)
        writes_before = s.write_count()
        audit_before = len(s.audit())

        # -- the attack matrix: each published as an attacker with broker access would
        intruder = generate_key()
        wall = time.time()
        fresh = s.command("der.setpoint", DEV, {"p_limit_pct": 50, "until": s.now() + 3600})
        fresh_raw = s.signed(fresh)
        bad_sig = base64.b64encode(intruder.sign(b"something else")).decode()
        tampered = json.loads(fresh_raw)
        tampered["payload"] = tampered["payload"].replace('"p_limit_pct":50', '"p_limit_pct":5')
        assert tampered["payload"] != json.loads(fresh_raw)["payload"]
        intruder_cmd = Command("intruder", "operator", SITE, DEV, fresh.command_id, 99, wall, wall - 5, wall + 60,
                               "der.setpoint", {"p_limit_pct": 0, "until": s.now() + 600})  # fmt: skip
        cases: list[tuple[str, bytes, str]] = [
            (
                "unsigned",
                json.dumps({"v": 1, "key_id": "ops-1", "payload": json.loads(fresh_raw)["payload"]}).encode(),
                "malformed",
            ),
            ("bad signature", _forged(fresh_raw, sig=bad_sig), "bad_signature"),
            ("unknown key", sign_command(intruder, intruder_cmd), "unknown_key"),
            ("role not allowed", s.signed(s.command("revert.all", "*", key="dispatch-1")), "role_not_allowed"),
            (
                "role claimed",
                s.signed(s.command("capbank.close", CAP, {"until": s.now() + 600}, key="dispatch-1", role="operator")),
                "role_mismatch",
            ),  # fmt: skip
            (
                "wrong site",
                s.signed(s.command("capbank.close", CAP, {"until": s.now() + 600}, audience="other-site")),
                "wrong_audience",
            ),
            (
                "expired",
                s.signed(
                    s.command("capbank.close", CAP, {"until": s.now() + 600}, not_before=wall - 600, valid_s=-300)
                ),
                "expired",
            ),  # fmt: skip
            (
                "not yet valid",
                s.signed(
                    s.command("capbank.close", CAP, {"until": s.now() + 600}, not_before=wall + 3600, valid_s=7200)
                ),
                "not_yet_valid",
            ),  # fmt: skip
            (
                "window too long",
                s.signed(s.command("capbank.close", CAP, {"until": s.now() + 600}, valid_s=3 * 86_400)),
                "window_too_long",
            ),  # fmt: skip
            ("replayed message", raw_valid, "duplicate"),
            (
                "replayed command id",
                s.signed(
                    s.command(
                        "der.setpoint", DEV, {"p_limit_pct": 0, "until": s.now() + 600}, command_id=valid.command_id
                    )
                ),
                "already_executed",
            ),  # fmt: skip
            (
                "old sequence",
                s.signed(s.command("der.setpoint", DEV, {"p_limit_pct": 0, "until": s.now() + 600}, seq=1)),
                "old_sequence",
            ),  # fmt: skip
            ("tampered body", json.dumps(tampered).encode(), "bad_signature"),
            ("oversized", b'{"v":1,"key_id":"ops-1","payload":"' + b"x" * 100_000 + b'","sig":"x"}', "malformed"),
            ("malformed", b"{not json", "malformed"),
            ("not an object", b"[1, 2, 3]", "malformed"),
        ]
        for _name, raw, _want in cases:
            await s.publish(raw)
        audit = await s.wait_audit(audit_before + len(cases))
        await asyncio.sleep(1.0)  # anything an attack would have written has reached the bench by now
        got = [(a["what"], a["reason"]) for a in audit[audit_before:]]
        want = [("command_refused", w) for _, _, w in cases]
        assert got == want
        leaked = s.write_count() - writes_before
        refused = sum(1 for w, _ in got if w == "command_refused")
        print(f"\nattack matrix: {len(cases)} attacks, {refused} refused, {leaked} device writes, "
              f"{len(got)} audit entries")  # fmt: skip
        for (name, _, _want), (_, reason) in zip(cases, got, strict=True):
            print(f"  {name:22s} refused: {reason}")
        assert leaked == 0, "no attack reached a device"
        assert model.settings[LIMIT] == pytest.approx(50)  # type: ignore[attr-defined]
        # a refusal of a command whose signature checked is answered (central learns why); a redelivery is not
        answered = {r.reason for r in s.results() if r.status == "refused"}
        assert {"role_not_allowed", "role_mismatch", "wrong_audience", "expired", "not_yet_valid",
                "window_too_long", "old_sequence"} <= answered  # fmt: skip
        assert len(s.result_of(valid.command_id)) == 1, "executed and answered once"
        assert s.service.counts["applied"] == 1


@async_test
async def test_set_points_sent_back_to_back_are_each_written_and_read_back(tmp_path, broker) -> None:
    """50, 60, 50 % within a settings poll: the snapshot still shows 50 % from before the write of 60 % when the
    third command comes; the agent must not answer "already held" from it. Each result's readback is what the
    inverter holds (judged at the bench)."""
    async with command_site(tmp_path, broker) as s:
        model = s.bench.model_of(DEV)
        await until(lambda: s.agent.snapshot.get(f"{DEV}.{LIMIT_ENA}") is not None, timeout=30)
        for pct in (50, 60, 50, 60):
            cmd = s.command("der.setpoint", DEV, {"p_limit_pct": pct, "until": s.now() + 3600})
            await s.send(cmd)
            res = await s.wait_result(cmd.command_id)
            assert res.status == "applied", res
            assert model.settings[LIMIT] == pytest.approx(pct), (
                f"asked {pct}, the inverter holds {model.settings[LIMIT]}"
            )  # type: ignore[attr-defined]
            assert res.readback[LIMIT] == pytest.approx(pct) and res.reason != "already_held"

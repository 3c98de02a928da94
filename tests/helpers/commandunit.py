"""The agent's command service on a real store without a device or a broker (helpers.envelope's Rig): signing keys
as files, commands as central would sign them, the service as ``gridedge run`` builds it."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

from agent.commands.config import parse_commands
from agent.commands.service import CommandService
from agent.control.controller import Controller
from agent.control.wiring import ControlSystem
from helpers.envelope import Rig
from protocols.configcheck import Checker
from protocols.mqtt.session import MqttSession, SessionConfig
from protocols.telemetry.commands import Command, generate_key, private_pem, public_text, sign_command

SITE = "sub-1"


class Keys:
    def __init__(self, folder: Path, site: str = SITE) -> None:
        self.folder = folder
        self.site = site
        self.k = {n: generate_key() for n in ("agent", "ops-1", "ops-2", "dispatch-1", "intruder")}
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "agent.key").write_bytes(private_pem(self.k["agent"]))
        self.seq: dict[str, int] = {}

    def pub(self, name: str) -> str:
        return public_text(self.k[name].public_key())

    def config(self) -> Any:
        c = Checker(self.folder)
        raw = {"agent_key_file": "agent.key",
               "keys": [{"key_id": "ops-1", "role": "operator", "public_key": self.pub("ops-1")},
                        {"key_id": "dispatch-1", "role": "dispatch", "public_key": self.pub("dispatch-1")}]}  # fmt: skip
        cfg = parse_commands(c, raw, self.site, True)
        assert not c.issues, c.issues
        return cfg

    def command(self, kind: str, body: dict[str, Any], *, key: str = "ops-1", target: str = "*",
                seq: int | None = None, signer: str | None = None) -> tuple[Command, bytes]:  # fmt: skip
        seq = seq if seq is not None else self.seq.get(key, 0) + 1
        self.seq[key] = max(self.seq.get(key, 0), seq)
        wall = time.time()
        cmd = Command(key, "dispatch" if key.startswith("dispatch") else "operator", self.site, target, str(uuid.uuid4()),
                      seq, wall, wall - 5, wall + 60, kind, body)  # fmt: skip
        return cmd, sign_command(self.k[signer or key], cmd)


def service(rig: Rig, keys: Keys, session: MqttSession | None = None) -> CommandService:
    """The service on ``rig``'s envelope (no control function); ``session`` None: one never run (no broker)."""
    if session is None:
        session = MqttSession(SessionConfig(host="127.0.0.1", port=1, client_id="unit"))
    control = ControlSystem(rig.envelope.config, rig.envelope, Controller([], rig.envelope, rig.snapshot, rig.clock))
    return CommandService(keys.site, keys.config(), rig.store, session, control)

"""The downlink on the bench, in one process: the IEEE 13-node bench (its cap bank on RS-485, its inverter pv675 on
SunSpec), the agent's pollers, control and command service, a real Mosquitto between a signing "central" and the
agent, and a count of every write each commanded device's server received (the bench's own account).

``async with command_site(tmp_path, broker) as s``: ``await s.send(s.command("capbank.close", CAP, until=...))``
signs and publishes; ``s.results()`` are the signed results the agent stored (checked with its public key),
``s.audit()`` its audit log, ``s.writes`` the writes the bench's devices received.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.commands.service import CommandService
from agent.points import Quality
from agent.uplink import Uplink, session_config_for
from helpers.aio import until
from helpers.controlbench import CAP, INTERLOCKS, Agent, running_agent, running_bench, site_file
from helpers.controlbench_reg import reg_device
from helpers.derrig import DEV
from protocols.mqtt.session import MqttSession
from protocols.telemetry.commands import (
    Command,
    generate_key,
    private_pem,
    public_text,
    read_result,
    sign_command,
)
from protocols.telemetry.schema import topic

SITE = "bench-site"


def command_control(pv_port: int, *, link_loss_s: float = 900, skew_s: float = 30, regulator: str = "",
                    min_interval_s: float = 0) -> str:  # fmt: skip
    """The site file's devices and sections past :func:`helpers.controlbench.site_file`'s: the inverter pv675, the
    cap bank and a DER group in monitor mode (nothing local writes: every write on the bench is a command's), and
    ``[commands]`` trusting ``keys/ops-1.pub`` (operator) and ``keys/dispatch-1.pub`` (dispatch). ``regulator``:
    the regulator control's ``[[devices]]`` entry (helpers.controlbench_reg.reg_device), supervised in monitor
    mode."""
    reg = "" if not regulator else REGULATOR
    return (
        regulator
        + f"""
[[devices]]
name = "{DEV}"
protocol = "sunspec"
host = "127.0.0.1"
port = {pv_port}
unit_id = 1
poll_interval_s = 2.0
timeout_s = 0.5
settings_poll_interval_s = 5

[control]
mode = "control"
[control.envelope]
min_command_interval_s = {min_interval_s:g}
{INTERLOCKS}
[control.capbank]
device = "{CAP}"
mode = "monitor"
cadence_s = 5
delay_s = 10
var_point = "sub-meter.q_total"
q_close_above_var = 1500000
q_open_below_var = 200000
bank_var = 700000
min_dwell_s = 0

{reg}
[[control.der]]
name = "pv"
devices = ["{DEV}"]
mode = "monitor"
cadence_s = 5
stale_after_s = 30

[commands]
agent_key_file = "keys/agent.key"
max_skew_s = {skew_s}
link_loss_s = {link_loss_s}

[[commands.keys]]
key_id = "ops-1"
role = "operator"
public_key_file = "keys/ops-1.pub"

[[commands.keys]]
key_id = "dispatch-1"
role = "dispatch"
public_key_file = "keys/dispatch-1.pub"
"""
    )


REGULATOR = """
[control.regulator]
device = "reg-ctl"
mode = "monitor"
heartbeat_point = "heartbeat"
cadence_s = 10
band_center_v = 122.0
band_center_min_v = 118.0
band_center_max_v = 126.0
reverse_power = "allow"
min_dwell_s = 0
setpoint_changes_per_hour = 50
"""


def make_keys(folder: Path) -> dict[str, Any]:
    """agent, ops-1 and dispatch-1 key pairs in ``folder/keys`` (PEM private, base64 public)."""
    keys = folder / "keys"
    keys.mkdir(parents=True, exist_ok=True)
    out = {}
    for name in ("agent", "ops-1", "dispatch-1"):
        k = generate_key()
        (keys / f"{name}.key").write_bytes(private_pem(k))
        (keys / f"{name}.pub").write_text(public_text(k.public_key()) + "\n")
        out[name] = k
    return out


@dataclass
class CommandSite:
    agent: Agent
    bench: Any
    service: CommandService
    central: MqttSession
    keys: dict[str, Any]
    writes: dict[str, list[Any]] = field(default_factory=dict)
    seqs: dict[str, int] = field(default_factory=dict)

    @property
    def db(self) -> Path:
        return self.agent.config.store.path

    def now(self) -> float:
        return self.agent.clock.time()

    def command(self, kind: str, target: str, body: dict[str, Any] | None = None, *, key: str = "ops-1",
                role: str | None = None, seq: int | None = None, audience: str = SITE, valid_s: float = 120.0,
                not_before: float | None = None, command_id: str | None = None) -> Command:  # fmt: skip
        """A command as central would issue it (wall-clock window), the next sequence of ``key`` unless given."""
        if seq is None:
            seq = self.seqs.get(key, 0) + 1
        self.seqs[key] = max(self.seqs.get(key, 0), seq)
        wall = time.time()
        return Command(key_id=key, role=role or ("dispatch" if key.startswith("dispatch") else "operator"),
                       audience=audience, target=target, command_id=command_id or str(uuid.uuid4()), seq=seq,
                       issued_at=wall, not_before=wall - 5 if not_before is None else not_before,
                       expires_at=wall + valid_s, kind=kind, body=body or {})  # fmt: skip

    def signed(self, cmd: Command, key: str | None = None) -> bytes:
        return sign_command(self.keys[key or cmd.key_id], cmd)

    async def publish(self, raw: bytes) -> None:
        await self.central.publish(topic(SITE, "cmd"), raw, qos=1)

    async def send(self, cmd: Command) -> bytes:
        raw = self.signed(cmd)
        await self.publish(raw)
        return raw

    def _rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()

    def results(self) -> list[Any]:
        """The agent's signed results, oldest first, each verified with the agent's public key."""
        rows = self._rows("SELECT data FROM events WHERE stream='results' ORDER BY id")
        return [read_result(json.loads(d), self.keys["agent"].public_key()) for (d,) in rows]

    def result_of(self, command_id: str) -> list[Any]:
        return [r for r in self.results() if r.command_id == command_id]

    def audit(self) -> list[dict[str, Any]]:
        rows = self._rows("SELECT what, command_id, key_id, kind, outcome, reason, data FROM audit ORDER BY id")
        names = ("what", "command_id", "key_id", "kind", "outcome", "reason", "data")
        return [dict(zip(names, r, strict=True)) for r in rows]

    async def wait_result(self, command_id: str, timeout: float = 30.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.result_of(command_id)
            if got:
                return got[0]
            await asyncio.sleep(0.05)
        raise AssertionError(f"no result for {command_id} in {timeout} s; audit: {self.audit()[-5:]}")

    async def wait_audit(self, n: int, timeout: float = 30.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            a = self.audit()
            if len(a) >= n:
                return a
            await asyncio.sleep(0.05)
        raise AssertionError(f"{len(self.audit())} audit entries, wanted {n}")

    def write_count(self) -> int:
        return sum(len(v) for v in self.writes.values())


# what helpers.controlbench.INTERLOCKS reads (agent/control/envelope.py, _interlocked)
INTERLOCK_INPUTS = ("sub-meter.v_a", "head-relay.relay_state", "head-relay.breaker_closed", "head-relay.lockout")


def _good(agent: Agent, point: str) -> bool:
    reading = agent.snapshot.get(point)
    return reading is not None and reading.quality is Quality.GOOD


def _count_writes(bench: Any, device: str, unit: int, writes: dict[str, list[Any]]) -> None:
    """Every write the device's server hands its model is counted here first (the bench's account of writes)."""
    model = bench.model_of(device)
    seen = writes.setdefault(device, [])

    def counting(req: Any) -> int | None:
        seen.append(req)
        return model.on_write(req)

    bench.server_of(device).on_write(unit, counting)


@asynccontextmanager
async def command_site(tmp_path: Path, broker: Any, *, link_loss_s: float = 900, speed: float = 20.0,
                       truth: Path | None = None, regulator: bool = False,
                       min_interval_s: float = 0) -> AsyncIterator[CommandSite]:  # fmt: skip
    async with running_bench(tmp_path, speed=speed, truth=truth) as bench:
        writes: dict[str, list[Any]] = {}
        units = {d.name: d.unit_id for d in bench.config.devices}
        for dev in (CAP, DEV):
            _count_writes(bench, dev, units[dev], writes)
        folder = tmp_path / "agent"
        keys = make_keys(folder)
        pv_port = {d.name: d.port for d in bench.config.devices}[DEV]
        reg = reg_device(bench) if regulator else ""
        site = site_file(bench, folder, command_control(pv_port, link_loss_s=link_loss_s, regulator=reg,
                                                     min_interval_s=min_interval_s),
                         broker=broker.url)  # fmt: skip
        async with running_agent(bench, site) as agent:
            cfg = agent.config
            assert cfg.commands is not None
            session = MqttSession(session_config_for(SITE, "127.0.0.1", broker.port, "agent-bench-site"))
            uplink = Uplink(SITE, agent.store, session, ack_timeout_s=5.0)
            service = CommandService(SITE, cfg.commands, agent.store, session, agent.control,
                                     acks=lambda: uplink.stats.acks_received, sent=uplink.nudge)  # fmt: skip
            central = MqttSession(session_config_for("central", "127.0.0.1", broker.port, "central-test"))
            tasks = [asyncio.create_task(t) for t in (session.run(), uplink.run(), service.run(), central.run())]
            try:
                await asyncio.wait_for(session.connected.wait(), 10)
                await asyncio.wait_for(central.connected.wait(), 10)
                await asyncio.sleep(0.3)  # the agent's subscription is in place
                # a command that comes before the interlocks' inputs are read is refused (interlock_inputs_stale)
                await until(lambda: all(_good(agent, p) for p in INTERLOCK_INPUTS), timeout=30)
                yield CommandSite(agent, bench, service, central, keys, writes)
            finally:
                for t in tasks:
                    t.cancel()
                for t in tasks:
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await t

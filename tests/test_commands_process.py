"""Commands end to end as processes: the bench (``gridedge sim run``), the agent (``gridedge run``), central's ingest
(``gridedge central run``) and its command tool (``gridedge central command``), on a real Mosquitto the test kills.

- A command is executed once although the broker dies three times and central sends the very same message again
  after each (what a QoS 1 redelivery is): one execution in the agent's log of commands, one result at central.
- A result stored by the agent reaches central exactly once although the agent is SIGKILLed before central's ingest
  was there to acknowledge it: the agent's outbox sends it again after the restart, central drops the duplicate.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from helpers.bench import ieee13_copy
from helpers.benchsite import BenchSite
from helpers.commandrig import command_control, make_keys
from helpers.controlbench import site_file
from helpers.db import query_db
from helpers.derrig import DEV
from helpers.processes import run_gridedge
from helpers.wait import wait_for

from protocols.telemetry.commands import public_text

pytestmark = pytest.mark.integration

SITE = "bench-site"


def central_config(folder: Path, keys: dict, broker_url: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    conf = folder / "central.toml"
    conf.write_text(
        f'[broker]\nurl = "{broker_url}"\n[store]\ndb = "central.db"\n'
        "[commands]\nresult_timeout_s = 30\nvalid_s = 120\n"
        '[[commands.keys]]\nkey_id = "ops-1"\nrole = "operator"\n'
        f'key_file = "{folder.parent / "agent" / "keys" / "ops-1.key"}"\n'
        f'[commands.sites.{SITE}]\nagent_key = "{public_text(keys["agent"].public_key())}"\n'
    )
    return conf


def agent_clock(db: Path) -> float:
    """The agent's clock now (its status file's control.clock_ts, a second old at most: the bench's time)."""
    status = json.loads(db.with_name(db.name + ".status.json").read_text())
    return float(status["control"]["clock_ts"])


def send(conf: Path, body: dict, *, timeout: float = 40) -> subprocess.CompletedProcess[str]:
    return run_gridedge("central", "command", "--config", str(conf), "--site", SITE, "--kind", "der.setpoint",
                        "--target", DEV, "--body", json.dumps(body), "--json", "--timeout", "30", timeout=timeout)  # fmt: skip


def central_results(db: Path, command_id: str) -> list[dict]:
    rows = query_db(db, "SELECT data FROM events WHERE kind='command_result'")
    out = [json.loads(json.loads(d)["result"]) for (d,) in rows]
    return [r for r in out if r["command_id"] == command_id]


def test_a_command_runs_once_across_a_broker_kill_and_a_redelivery_and_its_result_survives_an_agent_sigkill(
    tmp_path: Path, broker
) -> None:
    bench_path = ieee13_copy(tmp_path, irradiance="clear")
    site = BenchSite(tmp_path)
    try:
        cfg, _link = site.start_bench(bench_path, 20, ready=DEV)
        keys = make_keys(tmp_path / "agent")
        pv_port = next(d.port for d in cfg.devices if d.name == DEV)
        clock = '[clock]\nspeed = 20\nstart = "2026-06-21T12:00:00Z"\n'
        agent_site = site_file(cfg, tmp_path / "agent", command_control(pv_port), extra=clock, broker=broker.url)
        db = tmp_path / "agent" / "agent.db"
        site.start_gridedge("agent", "run", "--config", str(agent_site))
        wait_for(lambda: db.with_name(db.name + ".status.json").exists(), 30, site.logs("agent"))
        conf = central_config(tmp_path / "central", keys, broker.url)
        site.start_gridedge("central", "central", "run", "--config", str(conf))
        cdb = tmp_path / "central" / "central.db"
        wait_for(lambda: query_db(db, "SELECT count(*) FROM outbox")[0][0] == 0 if db.exists() else False, 30,
                 "central acknowledging the agent's backlog\n" + site.logs("agent", "central"))  # fmt: skip

        # -- 1. applied, through the CLI
        first = send(conf, {"p_limit_pct": 50, "until": agent_clock(db) + 3600})
        assert first.returncode == 0, first.stdout + first.stderr + site.logs("agent")
        res = json.loads(first.stdout)
        assert res["status"] == "applied" and res["readback"], res
        command_id = res["command_id"]
        (message,) = query_db(cdb, "SELECT message FROM commands WHERE command_id=?", (command_id,))[0:1]

        # -- 2. the broker dies, three times; each time central sends the same signed message again: executed once,
        #       answered once, whatever the broker redelivers
        for kill in range(3):
            broker.kill()
            time.sleep(0.5)
            broker.start()
            wait_for(lambda n=kill + 2: site.log("agent").count("mqtt_connected") >= n, 30, "the agent back")
            pub = subprocess.run(["mosquitto_pub", "-p", str(broker.port), "-q", "1", "-t", f"gridedge/v1/{SITE}/cmd",
                                  "-m", message[0]], capture_output=True, text=True, timeout=10)  # fmt: skip
            assert pub.returncode == 0, pub.stderr
            wait_for(lambda n=kill + 1: sum(r[0] == "duplicate" for r in query_db(db, "SELECT reason FROM audit")) >= n,
                     30, "the redelivery refused as a duplicate\n" + site.logs("agent"))  # fmt: skip
        assert query_db(db, "SELECT count(*) FROM command_log WHERE command_id=?", (command_id,)) == [(1,)]
        ran = [d for d in query_db(db, "SELECT data FROM events WHERE stream='control'") if command_id in d[0]]
        assert len(ran) == 1, "one decision carried it out"

        # -- 3. central's ingest away; a command is answered; the agent is SIGKILLed with the result unacked
        site.stop("central")
        second = send(conf, {"p_limit_pct": 40, "until": agent_clock(db) + 3600})
        assert second.returncode == 0, second.stdout + second.stderr
        second_id = json.loads(second.stdout)["command_id"]
        pending = query_db(db, "SELECT count(*) FROM outbox WHERE stream='results'")[0][0]
        assert pending >= 1, "the result waits in the agent's outbox for central's ack"
        site.kill("agent")
        site.start_gridedge("agent", "run", "--config", str(agent_site))
        site.start_gridedge("central", "central", "run", "--config", str(conf))
        wait_for(lambda: central_results(cdb, second_id), 60, "the result at central\n" + site.logs("agent", "central"))
        wait_for(lambda: query_db(db, "SELECT count(*) FROM outbox WHERE stream='results'")[0][0] == 0, 30,
                 "the agent's outbox emptied by central's acks")  # fmt: skip
        time.sleep(1.0)
        assert len(central_results(cdb, second_id)) == 1, "exactly once at central"
        assert len(central_results(cdb, command_id)) == 1
        status = query_db(cdb, "SELECT status FROM commands WHERE command_id=?", (second_id,))
        assert status == [("applied",)]
        assert query_db(db, "SELECT count(*) FROM command_log") == [(2,)], "nothing ran again after the restart"
    finally:
        site.kill_all()

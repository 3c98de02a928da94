"""Interval energy exactly once under chaos: the bench, the agent and central each a process, the broker a real
Mosquitto; during an hour and a half of simulated time (the bench at 120x) the broker is killed 20 times and the
agent SIGKILLed 5 times. Every 5-minute interval of the feeder-head meter's registers is at central once: no gap,
no duplicate, one version; the agent made each once, and what central lacks of them is only the newest, on its
way (the agent still runs when central is read)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from helpers.bench import ieee13_copy
from helpers.benchsite import BenchSite
from helpers.db import query_db
from helpers.wait import wait_for

from sim_hw.truthlog import read_records

pytestmark = pytest.mark.integration

SPEED = 120
METERING = """
[metering]
interval_s = 300
actual_span_s = 10

[[metering.meters]]
device = "sub-meter"
rated_kw = 10000
"""


def central_config(folder: Path, broker_url: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    conf = folder / "central.toml"
    conf.write_text(f'[broker]\nurl = "{broker_url}"\n[store]\ndb = "central.db"\n')
    return conf


def test_every_interval_reaches_central_once_through_broker_kills_and_agent_sigkills(tmp_path: Path, broker) -> None:
    site = BenchSite(tmp_path)
    try:
        truth = tmp_path / "truth.jsonl"
        cfg, _link = site.start_bench(ieee13_copy(tmp_path, irradiance="clear"), SPEED, truth=truth)
        up = wait_for(lambda: truth.exists() and next((r for r in read_records(truth) if r["record"] == "bench_up"), None),
                      30, "the bench's bench_up record")  # fmt: skip
        # the agent's clock anchored on the bench's: an agent started again keeps the bench's time
        agent_site, db = site.start_agent(cfg, METERING, speed=SPEED, broker=broker.url, wall_start=up["wall"])
        conf = central_config(tmp_path / "central", broker.url)
        site.start_gridedge("central", "central", "run", "--config", str(conf))
        cdb = tmp_path / "central" / "central.db"
        t_end = time.monotonic() + 45  # 90 simulated minutes
        # the 20 kills, however long a loaded machine takes to restart the broker and the agent (~30 s unloaded)
        deadline = time.monotonic() + 180
        kills = sigkills = 0
        while kills < 20:
            assert time.monotonic() < deadline, f"{kills} broker kills in 180 s"
            time.sleep(1.0)
            broker.kill()
            time.sleep(0.3)
            broker.start()
            kills += 1
            if kills % 4 == 0:
                site.kill("agent")
                site.start_gridedge("agent", "run", "--config", str(agent_site))
                sigkills += 1
        assert kills == 20 and sigkills == 5
        time.sleep(max(0.0, t_end - time.monotonic()))
        # the agent catches up: central acknowledges what it made (the newest may still be on their way)
        wait_for(lambda: query_db(cdb, "SELECT count(*) FROM intervals")[0][0] >= 12, 60,
                 "the intervals at central\n" + site.logs("agent", "central"))  # fmt: skip
        rows = query_db(cdb, "SELECT meter, register, start, version FROM intervals ORDER BY meter, register, start")
        qualities = query_db(cdb, "SELECT quality, count(*) FROM intervals GROUP BY quality ORDER BY quality")
        agent_items = [json.loads(r[0]) for r in query_db(db, "SELECT item FROM intervals")]
    finally:
        site.kill_all()
    by_register: dict[tuple[str, str], list[float]] = {}
    for meter, register, start, version in rows:
        assert version == 1, "no interval was made twice"
        by_register.setdefault((meter, register), []).append(float(start))
    assert set(by_register) == {("sub-meter", "energy_delivered_wh"), ("sub-meter", "energy_received_wh")}
    for key, starts in by_register.items():
        assert len(starts) >= 6, (key, len(starts))  # 90 simulated minutes if the bench kept its 120x; under load less
        gaps = [b - a for a, b in zip(starts, starts[1:], strict=False) if b - a != 300]
        assert gaps == [], f"{key}: intervals missing at central: {gaps}"
    made = sorted((i["meter"], i["register"], i["start"], i["version"]) for i in agent_items)
    central = sorted((m, r, float(s), v) for m, r, s, v in rows)
    assert len(made) == len(set(made)), "the agent made each interval once"
    assert set(central) <= set(made), "central has nothing the agent did not make"
    last = max(c[2] for c in central)
    assert all(m[2] >= last - 300 for m in set(made) - set(central)), "only the newest may still be on their way"
    print(f"\nchaos: {kills} broker kills, {sigkills} agent SIGKILLs; {len(rows)} intervals at central, each once, "
          f"no gap ({', '.join(f'{k[1]} {len(v)}' for k, v in by_register.items())}; quality {dict(qualities)})")  # fmt: skip

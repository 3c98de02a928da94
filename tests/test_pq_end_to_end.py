"""Power quality end to end, real parts only: the bench (`gridedge sim run`) serving the flicker + dip
wave stream of config/waveforms/flicker-dip.toml at full speed, the agent (`gridedge run`) measuring it,
central (`gridedge central run`) storing what arrives through our own Mosquitto.

The bench's clock starts 30 s before 2026-06-01T00:00:00Z, a 10-min tick of the UTC clock: the stream's
first 30 s are a partial interval (the dip is there, at 10 s), then one whole 10-min interval of flicker.
Expected values come from the description: a 70 % dip of 6 cycles on phase a, and dV/V 1.5 times the
IEC 61000-4-15:2010 Table 5 value for the 120 V lamp (Pst proportional to dV/V: 1.5, +-5 % per Table 5).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import subprocess
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest
from helpers.aio import async_test
from helpers.broker import Broker
from helpers.db import query_db
from helpers.net import free_port, wait_port
from helpers.processes import Processes
from helpers.wait import wait_for

from protocols import wavestream as ws
from sim_hw.bench import Bench, device_table
from sim_hw.config import BenchConfigError, parse_bench_config

ROOT = Path(__file__).resolve().parent.parent
DESCRIPTION = ROOT / "config" / "waveforms" / "flicker-dip.toml"
STREAM = "feeder-pq"
TICK = datetime(2026, 6, 1, tzinfo=UTC).timestamp()
START = TICK - 30.0
CYCLE_S = 1 / 60
PST_EXPECTED = 1.266 / 0.844  # Table 5, 120 V lamp / 60 Hz: 0.844 % -> Pst 1.00; the description has 1.266 %


@dataclass
class PqSite(Processes):
    workdir: Path
    broker: Broker
    port: int = field(default_factory=free_port)
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def central_db(self) -> Path:
        return self.workdir / "central.db"

    def write_configs(self) -> None:
        (self.workdir / "bench.toml").write_text(
            f"""
[bench]
start = "{datetime.fromtimestamp(START, UTC).isoformat().replace("+00:00", "Z")}"

[[waveforms]]
name = "{STREAM}"
port = {self.port}
description = "{DESCRIPTION}"
speed = inf        # as fast as the agent reads
duration_s = 640.0 # the partial interval, one whole 10-min interval and 10 s to finish it
"""
        )
        (self.workdir / "central.toml").write_text(
            f'[broker]\nurl = "{self.broker.url}"\n\n[store]\ndb = "central.db"\n'
        )
        (self.workdir / "agent.toml").write_text(
            f"""
site_id = "pq-e2e"

[store]
path = "agent.db"

[uplink]
broker = "{self.broker.url}"
ack_timeout_s = 3
keepalive_s = 5
drain_on_stop_s = 3

[[waveforms]]
name = "{STREAM}"
host = "127.0.0.1"
port = {self.port}
nominal_hz = 60
udin_v = 120.0
"""
        )

    def readings(self, point: str) -> list[tuple]:
        sql = "SELECT ts, value, unit, quality FROM readings WHERE point = ? ORDER BY ts"
        return query_db(self.central_db, sql, (point,))

    def events(self, kind: str) -> list[tuple]:
        sql = "SELECT ts, kind, severity, source, text, data FROM events WHERE kind = ? ORDER BY ts"
        return query_db(self.central_db, sql, (kind,))

    def logs(self) -> str:  # type: ignore[override]
        return Processes.logs(self, "bench", "agent", "central")


@pytest.fixture
def site(tmp_path: Path, broker: Broker) -> Iterator[PqSite]:
    s = PqSite(tmp_path, broker)
    s.write_configs()
    try:
        s.start_gridedge("central", "central", "run", "--config", "central.toml")
        s.start_gridedge("bench", "sim", "run", "--config", "bench.toml")
        wait_port(s.port, 15)
        yield s
    finally:
        s.kill_all()


def test_bench_dip_and_flicker_reach_central_as_events_and_pst(site: PqSite) -> None:
    site.start_gridedge("agent", "run", "--config", "agent.toml")
    pst_points = [f"{STREAM}.{ch}.pst" for ch in ("va", "vb", "vc")]
    wait_for(lambda: all(site.readings(p) for p in pst_points) and site.events("pq_flicker"), 40,
             f"the Pst readings and the flicker event in central\n{site.logs()}", 0.3)  # fmt: skip
    wait_for(lambda: site.events("pq_dip"), 10, "the dip event in central", 0.2)

    # One dip: phase a, 70 % of Udin (within 1 %), 6 cycles (within one), from the zero crossing at 10.0 s.
    dips = site.events("pq_dip")
    assert len(dips) == 1, dips
    ts, _kind, severity, source, text, data_json = dips[0]
    data = json.loads(data_json)
    assert (severity, source, data["phase"], data["phases"]) == ("warning", STREAM, "va", ["va"])
    assert abs(data["residual_pct"] - 70.0) <= 0.7, data
    assert abs(data["duration_s"] - 0.1) <= CYCLE_S, data
    assert START + 10.0 <= ts <= START + 10.0 + CYCLE_S + 1e-3, ts - START
    assert "dip on va" in text and data["clause"] == "IEC 61000-4-30:2015 5.4.2"

    # Pst of the 10-min interval [TICK, TICK + 600), per phase, 1.5 within Table 5's 5 %
    for point in pst_points:
        rows = site.readings(point)
        assert len(rows) == 1, (point, rows)
        pst_ts, value, unit, quality = rows[0]
        assert (pst_ts, unit, quality) == (TICK + 600, "", "good"), rows
        assert abs(value / PST_EXPECTED - 1) <= 0.05, (point, value)
    flicker = site.events("pq_flicker")
    assert len(flicker) == 1, flicker
    fts, _kind, fseverity, fsource, _ftext, fdata_json = flicker[0]
    fdata = json.loads(fdata_json)
    assert (fts, fseverity, fsource, fdata["limit_pst"]) == (TICK, "warning", STREAM, 1.0)
    assert set(fdata["pst"]) == {"va", "vb", "vc"} and fdata["interval_end_ts"] == TICK + 600

    # The 10-min RMS of the whole interval, and the flag on the 3-s value holding the dip (IEC 61000-4-30 4.7)
    rms10 = site.readings(f"{STREAM}.va.rms_10min")
    assert len(rms10) == 1 and rms10[0][0] == TICK + 600 and rms10[0][3] == "good", rms10
    assert abs(rms10[0][1] - 120.0 * math.sqrt(1 + (0.01266 / 2) ** 2)) < 0.05, rms10
    short = site.readings(f"{STREAM}.va.rms")
    flagged = [r for r in short if r[3] == "flagged"]
    assert len(flagged) == 1 and START + 10.0 < flagged[0][0] < START + 13.2, flagged
    assert all(abs(r[1] - 120.0) < 1.0 for r in short if r[3] == "good")

    # The stream ended (END) and the agent reconnected: the bench replays from sample 0 at full speed, which
    # the agent skips rather than measure twice. SIGTERM ends the agent cleanly.
    status = wait_for(lambda: _pq_status(site), 20, "the agent's status after a reconnection", 0.3)
    assert status["samples"] == round(640.0 * 1920) and status["gaps"] == 0, status
    assert site.stop("agent", 10) == 0, site.logs()
    assert len(site.events("pq_dip")) == 1 and len(site.events("pq_flicker")) == 1


def _pq_status(site: PqSite) -> dict | None:
    with contextlib.suppress(FileNotFoundError, json.JSONDecodeError, KeyError):
        status = json.loads((site.workdir / "agent.db.status.json").read_text())["pq"][STREAM]
        return status if status["replayed_samples"] > 0 else None
    return None


# ---- the bench's [[waveforms]]: served with the bench, configuration errors named ---------------------------


def bench_config(tmp_path: Path, entries: str) -> Path:
    path = tmp_path / "bench.toml"
    path.write_text('[bench]\nstart = "2026-06-01T00:00:00Z"\n' + entries)
    return path


def load(path: Path):
    with path.open("rb") as fh:
        return parse_bench_config(tomllib.load(fh), path)


@pytest.mark.integration
@async_test
async def test_bench_serves_its_waveform_streams_on_its_clock_and_stops_them(tmp_path: Path) -> None:
    port = free_port()
    cfg = load(bench_config(tmp_path, f'[[waveforms]]\nname = "w1"\nport = {port}\ndescription = "{DESCRIPTION}"\n'
                                      "speed = inf\n"))  # fmt: skip
    row = device_table(cfg).splitlines()[1].split()
    assert row == ["w1", "waveform", "wavestream", f"127.0.0.1:{port}", "1920", "Hz", str(DESCRIPTION)], row
    bench = Bench(cfg)
    await bench.start()
    try:
        async with ws.WaveStreamClient("127.0.0.1", port) as client:
            header = client.header
            block = await anext(aiter(client))
        assert header is not None and header.stream == "w1" and header.rate_hz == 1920.0
        assert header.t0 == TICK and header.nominal_hz == 60.0  # sample 0 at the bench clock's start
        assert header.channels == ("va", "vb", "vc", "ia", "ib", "ic") and block.first_sample == 0
    finally:
        await bench.stop()
    assert not bench.waveforms
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)


@pytest.mark.parametrize(
    ("entries", "key", "allowed"),
    [
        ('[[waveforms]]\nname = "w"\nport = 1\ndescription = "nope.toml"\n', "waveforms[0].description",
         "no such waveform description file"),
        ('[[waveforms]]\nname = "w"\nport = 1\ndescription = "bad.toml"\n',
         "waveforms[0].description(bad.toml).waveform.harmonics[0].order", "below the Nyquist frequency"),
        ('[[waveforms]]\nname = "w"\nport = 1\ndescription = "empty.toml"\n', "waveforms[0].description",
         "must hold a [waveform] table"),
        (f'[[waveforms]]\nname = "w"\nport = 0\ndescription = "{DESCRIPTION}"\n', "waveforms[0].port", "1..65535"),
        (f'[[waveforms]]\nname = "w"\nport = 2\nspeed = 0\ndescription = "{DESCRIPTION}"\n', "waveforms[0].speed",
         "0.001..inf"),
        (f'[[waveforms]]\nname = "w"\nport = 2\nhost = "localhost"\ndescription = "{DESCRIPTION}"\n',
         "waveforms[0].host", "must be an IP address"),
        (f'[[waveforms]]\nname = "w"\nport = 2\nrate = 3\ndescription = "{DESCRIPTION}"\n', "waveforms[0].rate",
         "unknown key"),
        (f'[[waveforms]]\nname = "w"\nport = 2\ndescription = "{DESCRIPTION}"\n'
         f'[[waveforms]]\nname = "w"\nport = 2\ndescription = "{DESCRIPTION}"\n', "waveforms[1].name",
         "must be unique"),
        (f'[[waveforms]]\nname = "w"\nport = 2\ndescription = "{DESCRIPTION}"\n'
         f'[[waveforms]]\nname = "x"\nport = 2\ndescription = "{DESCRIPTION}"\n', "waveforms[1].port",
         "already used"),
    ],
)  # fmt: skip
def test_bench_waveforms_config_errors_name_the_key(tmp_path: Path, entries: str, key: str, allowed: str) -> None:
    (tmp_path / "bad.toml").write_text(
        "[waveform]\nnominal_hz = 60\nrate_hz = 1000\nharmonics = [{order = 9, pct = 1}]\n"
    )
    (tmp_path / "empty.toml").write_text("# no table\n")
    with pytest.raises(BenchConfigError) as info:
        load(bench_config(tmp_path, entries))
    issues = {i.key: i for i in info.value.issues}
    assert key in issues, info.value
    assert allowed in issues[key].allowed, issues[key]

"""`gridedge pmu probe` as a subprocess against the simulated PMU (and against nothing)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import async_test, free_port

from agent.pmu.probe import ProbeUsageError, parse_address, utc_text
from protocols.c37118 import Timestamp
from sim_hw.devices.pmu import SimPmu

ROOT = Path(__file__).resolve().parent.parent


async def _probe(*args: str, timeout: float = 20) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent.pmu.probe", *args, cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode or 0, out.decode(), err.decode()


@async_test
async def test_probe_json_prints_config_then_each_frame() -> None:
    async with SimPmu(7734, "SIM A", port=0, rate=30) as sim:
        sim.lose_sync(since_s=20)
        code, out, err = await _probe(f"tcp://127.0.0.1:{sim.port}", "--id", "7734", "--frames", "3", "--json")
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [d["type"] for d in lines] == ["config", "data", "data", "data"]
    cfg = lines[0]
    assert cfg["frame"] == "CFG2" and cfg["data_rate"] == 30 and cfg["pmus"][0]["station"] == "SIM A"
    assert [p["name"] for p in cfg["pmus"][0]["phasors"]] == ["VA", "VB", "VC", "IA", "IB", "IC"]
    data = lines[1]
    assert (
        data["idcode"] == 7734
        and data["utc"].endswith("Z")
        and data["fracsec"] in {n * 1_000_000 // 30 for n in range(30)}
    )
    (pmu,) = data["pmus"]
    assert pmu["stat"]["sync_lost"] and pmu["stat"]["unlocked_time"] == 1 and data["time_quality"]["code"] == 8
    va = pmu["phasors"][0]
    assert va["unit"] == "V" and va["magnitude"] == pytest.approx(7200, rel=0.02)
    assert pmu["phasors"][3]["unit"] == "A" and pmu["phasors"][3]["magnitude"] == pytest.approx(200, rel=1e-5)
    assert (pmu["phasors"][0]["angle_deg"] - pmu["phasors"][1]["angle_deg"]) % 360 == pytest.approx(120, abs=0.01)
    assert pmu["frequency_hz"] == pytest.approx(60, abs=0.021) and "rocof_hz_per_s" in pmu
    assert set(pmu["analogs"]) == {"P", "Q"} and pmu["digitals"] == ["0x0001"]
    stamps = [d["soc"] + d["fracsec"] / 1e6 for d in lines[1:]]
    assert stamps == sorted(stamps) and len(set(stamps)) == 3


@async_test
async def test_probe_text_output_and_cfg3_over_udp() -> None:
    async with SimPmu(12, "SIM B", port=0, rate=20) as sim:
        code, out, err = await _probe(f"tcp://127.0.0.1:{sim.port}", "--id", "12", "--frames", "1")
        assert code == 0, err
        assert "CFG2 (version 2) from IDCODE 12" in out and "phasors: VA [V]" in out and " Hz  ROCOF " in out
        udp = free_port()
        code, out, err = await _probe(
            f"tcp://127.0.0.1:{sim.port}?udp={udp}", "--id", "12", "--frames", "2", "--cfg", "3", "--json"
        )
        assert code == 0, err
        lines = [json.loads(line) for line in out.splitlines()]
        assert lines[0]["frame"] == "CFG3" and len(lines) == 3


@async_test
async def test_probe_errors_are_one_line_with_distinct_exit_codes() -> None:
    code, out, err = await _probe(f"tcp://127.0.0.1:{free_port()}", "--timeout", "2")
    assert code == 1 and "connection refused" in err and len(err.strip().splitlines()) == 1 and not out
    async with SimPmu(5, "SIM", port=0, rate=20) as sim:
        code, out, err = await _probe(f"tcp://127.0.0.1:{sim.port}", "--id", "6", "--timeout", "0.5")
        assert code == 3 and "no CFG-2" in err and "--id 6" in err and len(err.strip().splitlines()) == 1
        sim.stop_sending()
        code, out, err = await _probe(f"tcp://127.0.0.1:{sim.port}", "--id", "5", "--timeout", "0.5", "--json")
        assert code == 3 and "no data frame" in err and json.loads(out.splitlines()[0])["type"] == "config"
        sim.resume_sending()
        server = await asyncio.start_server(_garbage, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            code, out, err = await _probe(f"tcp://127.0.0.1:{port}", "--timeout", "1")
        assert code == 4 and "bad frame" in err and len(err.strip().splitlines()) == 1
    code, _, err = await _probe("udp://127.0.0.1:4712")
    assert code == 2 and "tcp://" in err


async def _garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Not a PMU: answers anything with bytes that look like the start of a frame, then a CRC error."""
    await reader.read(100)
    writer.write(b"\xaa\x31\x00\x14" + bytes(16) + b"\xaa\x31")
    await writer.drain()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.sleep(2)
    writer.close()


def test_address_parsing() -> None:
    ep = parse_address("tcp://10.0.0.5", 3, 2)
    assert (ep.host, ep.port, ep.idcode, ep.cfg_version, ep.udp_port) == ("10.0.0.5", 4712, 3, 2, None)
    assert parse_address("tcp://h:4000?udp=4713", 1, 3).udp_port == 4713
    for bad in ("h:4712", "tcp://", "tcp://h:99999", "tcp://h?udp=x", "tcp://h?tls=1", "tcp://h?udp=0"):
        with pytest.raises(ProbeUsageError):
            parse_address(bad, 1, 2)


def test_utc_text_keeps_the_time_base_resolution() -> None:
    assert utc_text(Timestamp(1_700_000_000, 250_000, 1_000_000)) == "2023-11-14T22:13:20.250000Z"
    assert utc_text(Timestamp(0, 1, 30)) == "1970-01-01T00:00:00.03Z"
    assert math.isclose(Timestamp(0, 1, 30).as_float(), 1 / 30)

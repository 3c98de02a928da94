"""mbpoll (Debian's Modbus master, not pymodbus) reads the bench's meters as docs/devices/sim-meter.md says:
input registers from 0, float32, big-endian words; over Modbus TCP and over the RTU line's pty."""

from __future__ import annotations

import asyncio
import re
import shutil
from pathlib import Path

import pytest
from helpers.aio import async_test
from helpers.bench import bench_config

from sim_hw.bench import Bench

pytestmark = pytest.mark.integration  # the bench and mbpoll, a process

MBPOLL = shutil.which("mbpoll")  # installed by scripts/install-system-packages.sh --test (make test, .ci/run)


async def mbpoll(*args: str) -> list[float]:
    """Run mbpoll once; the values it printed, in register order."""
    assert MBPOLL is not None, "mbpoll is missing: run sh scripts/install-system-packages.sh --test"
    proc = await asyncio.create_subprocess_exec(
        MBPOLL, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 20)
    text = out.decode()
    assert proc.returncode == 0, text
    return [float(v) for v in re.findall(r"^\[\d+\]:\s+(-?[\d.]+(?:e[-+]?\d+)?)", text, re.M)]


@async_test
async def test_mbpoll_reads_the_tcp_and_rtu_meters_as_documented(tmp_path: Path) -> None:
    cfg = bench_config(tmp_path)
    bench = Bench(cfg)
    await bench.start()
    try:
        await bench.step_once()
        sub = next(d for d in cfg.devices if d.name == "sub-meter")
        # -t 3:float input registers as float32, -B big-endian word order, -0 PDU addresses, -1 once
        got = await mbpoll("-m", "tcp", "-p", str(sub.port), "-a", "1", "-t", "3:float", "-B", "-0", "-r", "0",
                           "-c", "6", "-1", "127.0.0.1")  # fmt: skip
        want = bench.model_of("sub-meter").values(bench.sim_time)
        expected = [want[k] for k in ("v_a", "v_b", "v_c", "i_a", "i_b", "i_c")]
        assert got == pytest.approx(expected, rel=1e-5)  # float32 as printed by mbpoll
        assert 2300 < got[0] < 2700  # a 4.16 kV feeder: ~2.4 kV phase-neutral
        link = cfg.bus("bus1").link
        got = await mbpoll("-m", "rtu", "-b", "19200", "-P", "none", "-a", "3", "-t", "3:float", "-B", "-0",
                           "-r", "0", "-c", "3", "-1", "-o", "1", str(link))  # fmt: skip
        want = bench.model_of("fdr-645-meter").values(bench.sim_time)
        assert got == pytest.approx([want["v_a"], want["v_b"], want["v_c"]], rel=1e-5)
    finally:
        await bench.stop()

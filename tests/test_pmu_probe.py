"""`gridedge pmu probe` as a subprocess against the simulated PMU (and against nothing)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from helpers.aio import async_test
from helpers.net import free_port

from agent.pmu.probe import ProbeUsageError, open_failure, parse_address, utc_text
from protocols.c37118 import SyncError, Timestamp
from protocols.c37118.codec import encode_frame
from protocols.c37118.pdc import ConnectionClosedError, PdcTimeoutError, PmuEndpoint, Received
from sim_hw.devices.pmu import SimPmu

ROOT = Path(__file__).resolve().parent.parent


async def _probe(*args: str, timeout: float = 20) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent.pmu.probe", *args, cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode or 0, out.decode(), err.decode()


@pytest.mark.integration
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


@pytest.mark.integration
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


@pytest.mark.integration
@async_test
async def test_probe_errors_are_one_line_with_distinct_exit_codes() -> None:
    code, out, err = await _probe(f"tcp://127.0.0.1:{free_port()}", "--timeout", "2")
    assert code == 1 and "connection refused" in err and len(err.strip().splitlines()) == 1 and not out
    async with SimPmu(5, "SIM", port=0, rate=20) as sim:
        sim.stop_sending()
        code, out, err = await _probe(f"tcp://127.0.0.1:{sim.port}", "--id", "5", "--timeout", "0.5", "--json")
        assert code == 3 and "no data frame" in err and json.loads(out.splitlines()[0])["type"] == "config"
        sim.resume_sending()
        async with _server(_garbage) as port:
            code, out, err = await _probe(f"tcp://127.0.0.1:{port}", "--timeout", "1")
        assert code == 4 and len(err.strip().splitlines()) == 1
        assert "received 22 bytes that are not C37.118 frames (SizeError" in err and "'aa 31 00 14 00 00" in err
    code, _, err = await _probe("udp://127.0.0.1:4712")
    assert code == 2 and "tcp://" in err


@asynccontextmanager
async def _server(
    handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> AsyncIterator[int]:
    """A real TCP server on a free loopback port, running ``handler`` for each connection; yields the port."""

    async def quiet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await handler(reader, writer)
        writer.close()

    server = await asyncio.start_server(quiet, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


async def _garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Not a PMU: answers anything with bytes that look like the start of a frame, then a CRC error."""
    await reader.read(100)
    writer.write(b"\xaa\x31\x00\x14" + bytes(16) + b"\xaa\x31")
    await writer.drain()
    await asyncio.sleep(2)


async def _silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Accepts the connection and reads everything, answering nothing."""
    while await reader.read(4096):
        pass


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Sends back every byte it reads."""
    while data := await reader.read(4096):
        writer.write(data)
        await writer.drain()


async def _banner(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Another protocol's server: greets with a line of text, then waits."""
    writer.write(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n")
    await writer.drain()
    await _silent(reader, writer)


async def _hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Reads the first request, then closes the connection without a word."""
    await reader.read(4096)
    await reader.read(4096)


@pytest.mark.integration
@async_test
async def test_probe_of_a_silent_peer_names_the_request_and_suggests_the_idcode() -> None:
    """No byte in the wait: the message says which request went unanswered and how to give another IDCODE."""
    async with _server(_silent) as port:
        code, out, err = await _probe(f"tcp://127.0.0.1:{port}", "--timeout", "1")
    assert code == 3 and not out and len(err.strip().splitlines()) == 1
    assert f"127.0.0.1:{port}: no answer in 1 s to the CFG-2 request with IDCODE 1" in err
    assert "--id N" in err


@pytest.mark.integration
@async_test
async def test_probe_of_a_pmu_with_another_idcode_says_it_stayed_silent() -> None:
    """A real PMU ignores commands to another IDCODE (6.6): the probe says so, and what to try."""
    async with SimPmu(5, "SIM", port=0, rate=20) as sim:
        code, _, err = await _probe(f"tcp://127.0.0.1:{sim.port}", "--id", "6", "--timeout", "0.5")
    assert code == 3 and len(err.strip().splitlines()) == 1
    assert "no answer in 0.5 s to the CFG-2 request with IDCODE 6" in err and "--id N" in err


@pytest.mark.integration
@async_test
async def test_probe_of_an_echo_server_says_it_is_not_a_pmu() -> None:
    """An echo server sends back the probe's own command frames: that is no PMU, and no IDCODE hint is given."""
    async with _server(_echo) as port:
        code, out, err = await _probe(f"tcp://127.0.0.1:{port}", "--timeout", "1")
    assert code == 4 and not out and len(err.strip().splitlines()) == 1
    assert "command frames" in err and "is this a PMU port?" in err and "--id" not in err


@pytest.mark.integration
@async_test
async def test_probe_of_another_protocol_shows_the_bytes_received() -> None:
    """A peer speaking something else: the message counts the bytes and shows the first of them."""
    async with _server(_banner) as port:
        code, out, err = await _probe(f"tcp://127.0.0.1:{port}", "--timeout", "1")
    assert code == 4 and not out and len(err.strip().splitlines()) == 1
    assert "received 32 bytes that are not C37.118 frames: '53 53 48 2d 32 2e 30" in err
    assert '"SSH-2.0-OpenSSH_9.2p1 Debian-2"' in err and "is this a PMU port?" in err and "--id" not in err


@pytest.mark.integration
@async_test
async def test_probe_of_a_peer_that_hangs_up_says_it_closed_the_connection() -> None:
    async with _server(_hang_up) as port:
        code, out, err = await _probe(f"tcp://127.0.0.1:{port}", "--timeout", "2")
    assert code == 1 and not out and len(err.strip().splitlines()) == 1
    assert "the peer closed the connection after the CFG-2 request with IDCODE 1" in err


# The resolver's answer for a name that does not exist, made in the probe's own process: a real lookup would ask
# the machine's nameserver, and tests talk to 127.0.0.1 only.
_NO_SUCH_HOST = (
    "import runpy, socket, sys\n"
    "def getaddrinfo(host, *args, **kwargs):\n"
    "    raise socket.gaierror(socket.EAI_NONAME, 'Name or service not known')\n"
    "socket.getaddrinfo = getaddrinfo\n"
    "sys.argv[0] = 'probe'\n"
    "runpy.run_module('agent.pmu.probe', run_name='__main__')\n"
)


@pytest.mark.integration
@async_test
async def test_probe_of_a_host_that_does_not_resolve_names_it() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _NO_SUCH_HOST, "tcp://nosuchhost.invalid:4712", "--timeout", "5", cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    out_b, err_b = await asyncio.wait_for(proc.communicate(), 20)
    code, out, err = proc.returncode, out_b.decode(), err_b.decode()
    assert code == 1 and not out and len(err.strip().splitlines()) == 1
    assert "cannot resolve host 'nosuchhost.invalid'" in err and "unknown error" not in err.lower()


@pytest.mark.integration
@async_test
async def test_probe_of_a_pmu_streaming_under_another_idcode_names_that_idcode() -> None:
    """A PMU that sends data unasked (before any configuration) shows its IDCODE: the probe suggests it."""
    pmu = SimPmu(7734, "SIM", port=0, rate=20)

    async def streaming(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for k in range(200):
            writer.write(encode_frame(pmu.data_frame(k)))
            await writer.drain()
            await asyncio.sleep(0.01)
        await _silent(reader, writer)

    async with _server(streaming) as port:
        code, out, err = await _probe(f"tcp://127.0.0.1:{port}", "--timeout", "1")
    assert code == 3 and not out and len(err.strip().splitlines()) == 1
    assert "no answer in 1 s to the CFG-2 request with IDCODE 1; received data frames from IDCODE 7734" in err
    assert "--id 7734" in err


ENDPOINT = PmuEndpoint("10.0.0.5", 4712, 3, 2)


@pytest.mark.parametrize(
    ("received", "errors", "code", "says"),
    [
        (Received(), [], 3, "10.0.0.5:4712: no answer in 5 s to the CFG-2 request with IDCODE 3 (the PMU may"),
        (Received(54, bytes(18), (("command", 3, 3),), 2), [], 4, "54 bytes in 5 s, all of them command frames"),
        (Received(60, b"\xaa\x21", (("CFG-1", 3, 1),), 2), [], 3, "received CFG-1 frames from IDCODE 3 (the PMU may send CFG-1 only: --cfg 1)"),
        (Received(60, b"\xaa\x31", (("CFG-2", 9, 1), ("header", 9, 1)), 2), [], 3, "CFG-2 frames from IDCODE 9, header frames from IDCODE 9 (the PMU's IDCODE may be 9: --id 9)"),
        (Received(40, b"GET / HTTP/1.1\r\n", (), 2), [], 4, "40 bytes that are not C37.118 frames: '47 45 54 20 2f 20 48 54 54 50 2f 31 2e 31 0d 0a …' (\"GET / HTTP/1.1…\")"),
        (Received(3, b"\x00\xff\x10", (), 1), [SyncError("garbage", 3)], 4, "3 bytes that are not C37.118 frames (SyncError: garbage): '00 ff 10'; is"),
    ],
)  # fmt: skip
def test_an_unanswered_configuration_request_is_explained_by_what_came(
    received: Received, errors: list, code: int, says: str
) -> None:
    err = PdcTimeoutError("no CFG-2", errors)
    err.received = received
    got_code, text = open_failure(err, ENDPOINT, 5.0)
    assert (got_code, says in text) == (code, True), text


def test_a_closed_connection_is_explained_with_what_came_before() -> None:
    err = ConnectionClosedError("the PMU closed the TCP connection")
    err.received = Received(5, b"hello", (), 1)
    code, text = open_failure(err, ENDPOINT, 5.0)
    assert code == 1 and text == (
        "10.0.0.5:4712: the peer closed the connection after the CFG-2 request with IDCODE 3; it had sent "
        "5 bytes that are not C37.118 frames: '68 65 6c 6c 6f' (\"hello\")"
    )
    err = ConnectionClosedError("TCP connection lost: Connection reset by peer")
    err.received = Received()
    code, text = open_failure(err, ENDPOINT, 5.0)
    assert text.endswith(
        "before the CFG-2 request with IDCODE 3 was sent (TCP connection lost: Connection reset by peer), sending nothing"
    )


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

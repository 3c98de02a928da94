"""The simulated PMU over real loopback sockets, read with our own codec (not with our PDC client)."""

from __future__ import annotations

import asyncio
import math

import pytest
from helpers.aio import async_test, until
from helpers.net import free_port

from protocols.c37118 import (
    NEED_DATA,
    Command,
    CommandFrame,
    Config3Frame,
    ConfigFrame,
    DataFormat,
    DataFrame,
    FrameType,
    HeaderFrame,
    PhasorKind,
    PmuTimeQuality,
    StreamReader,
    UnlockedTime,
    encode_frame,
)
from sim_hw.devices.pmu import PmuMeasurement, PmuSimError, SimPmu, balanced_source


class Raw:
    """A hand-driven PDC: send commands, collect frames."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, idcode: int) -> None:
        self.reader, self.writer, self.idcode = reader, writer, idcode
        self.stream = StreamReader()

    @classmethod
    async def connect(cls, port: int, idcode: int) -> Raw:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        return cls(r, w, idcode)

    def send(self, command: int, idcode: int | None = None) -> None:
        self.writer.write(encode_frame(CommandFrame(idcode=self.idcode if idcode is None else idcode, command=command)))

    async def frames(self, n: int, kind: type = object, timeout: float = 5.0) -> list:
        out: list = []
        async with asyncio.timeout(timeout):
            while len(out) < n:
                while (ev := self.stream.next_event()) is not NEED_DATA:
                    if isinstance(ev, kind):
                        out.append(ev)
                if len(out) < n:
                    chunk = await self.reader.read(65536)
                    assert chunk, "connection closed"
                    self.stream.feed(chunk)
        return out[:n]

    def close(self) -> None:
        self.writer.close()


@async_test
async def test_commands_answered_and_data_on_the_rate_grid() -> None:
    async with SimPmu(7734, "SIM A", port=0, rate=50) as sim:
        pdc = await Raw.connect(sim.port, 7734)
        pdc.send(Command.SEND_CFG1)
        (cfg1,) = await pdc.frames(1, ConfigFrame)
        assert cfg1.frame_type is FrameType.CFG1
        pdc.send(Command.SEND_CFG2)
        (cfg2,) = await pdc.frames(1, ConfigFrame)
        assert cfg2.frame_type is FrameType.CFG2 and cfg2.data_rate == 50 and cfg2.time_base == 1_000_000
        (pmu,) = cfg2.pmus
        assert (
            pmu.station == "SIM A" and pmu.idcode == 7734 and pmu.phasor_names == ("VA", "VB", "VC", "IA", "IB", "IC")
        )
        assert pmu.analog_names == ("P", "Q") and pmu.dgnmr == 1 and pmu.nominal_hz == 60
        pdc.send(Command.SEND_CFG3)
        (cfg3,) = await pdc.frames(1, Config3Frame)
        assert cfg3.pmus[0].phasor_names == pmu.phasor_names and cfg3.pmus[0].cfgcnt == pmu.cfgcnt
        pdc.send(Command.SEND_HEADER)
        (hdr,) = await pdc.frames(1, HeaderFrame)
        assert "SIM A" in hdr.text and "7734" in hdr.text
        await asyncio.sleep(0.1)
        assert not pdc.stream.buffered, "no data before DATA ON"

        pdc.send(Command.DATA_ON)
        frames = await pdc.frames(10, DataFrame)
        ticks = [f.soc * 50 + f.fracsec * 50 // 1_000_000 for f in frames]
        assert all(f.fracsec % 20_000 == 0 for f in frames), "timestamps on the 50 frames/s grid"
        assert ticks == sorted(set(ticks)), "strictly increasing, one frame per instant"
        assert ticks[-1] - ticks[0] <= 12, "no bunching: late ticks are skipped"
        values = frames[-1].pmus[0]
        va, vb, vc, ia, _, _ = values.phasor_values
        assert abs(va) == pytest.approx(7200, rel=0.02) and abs(vb) == pytest.approx(abs(va), rel=1e-6)
        assert math.remainder((_angle(va) - _angle(vb)) - 2 * math.pi / 3, 2 * math.pi) == pytest.approx(0, abs=1e-4)
        assert math.remainder(_angle(va) - _angle(vc) + 2 * math.pi / 3, 2 * math.pi) == pytest.approx(0, abs=1e-4)
        assert abs(ia) == pytest.approx(200, rel=1e-5)
        assert values.frequency_hz == pytest.approx(60, abs=0.021) and abs(values.rocof_hz_per_s) < 0.01
        assert values.analogs[0] > 0 and values.digitals == (1,)
        assert not values.stat.sync_lost and values.stat.time_quality == PmuTimeQuality.UNDER_1US

        pdc.send(Command.DATA_OFF)
        await until(lambda: not any(c.data_on for c in sim._clients))  # the PMU has taken the command
        await _drain(pdc.reader, 0.15)  # the frames it sent before that
        pdc.stream = StreamReader([cfg2])
        pdc.stream.feed(await _drain(pdc.reader, 0.15))
        assert not [e for e in pdc.stream.events() if isinstance(e, DataFrame)], "DATA OFF stops the data"
        pdc.close()


def _angle(z: complex) -> float:
    return math.atan2(z.imag, z.real)


async def _drain(reader: asyncio.StreamReader, wait: float) -> bytes:
    data = b""
    try:
        async with asyncio.timeout(wait):
            while chunk := await reader.read(65536):
                data += chunk
    except TimeoutError:
        pass
    return data


@async_test
async def test_commands_to_another_idcode_are_ignored_and_garbage_counted() -> None:
    async with SimPmu(5, "SIM", port=0, rate=10) as sim:
        pdc = await Raw.connect(sim.port, 5)
        pdc.send(Command.SEND_CFG2, idcode=6)
        pdc.writer.write(b"\x00\x01garbage")
        pdc.send(Command.SEND_CFG2)
        (cfg,) = await pdc.frames(1, ConfigFrame)
        assert cfg.idcode == 5
        assert sim.stats.ignored_commands == 1 and sim.stats.frame_errors == 1 and sim.stats.commands == 2
        pdc.close()


@async_test
async def test_several_clients_each_with_their_own_data_switch() -> None:
    async with SimPmu(9, "SIM", port=0, rate=20) as sim:
        a, b = await Raw.connect(sim.port, 9), await Raw.connect(sim.port, 9)
        for pdc in (a, b):
            pdc.send(Command.SEND_CFG2)
            await pdc.frames(1, ConfigFrame)
        a.send(Command.DATA_ON)
        got = await a.frames(3, DataFrame)
        assert len(got) == 3 and sim.clients == 2
        assert not b.stream.buffered and not await _drain(b.reader, 0.1)
        b.send(Command.DATA_ON)
        assert len(await b.frames(2, DataFrame)) == 2
        a.close()
        b.close()


@async_test
async def test_lost_sync_sets_stat_and_time_quality() -> None:
    async with SimPmu(3, "SIM", port=0, rate=20) as sim:
        pdc = await Raw.connect(sim.port, 3)
        pdc.send(Command.SEND_CFG2)
        await pdc.frames(1, ConfigFrame)
        sim.lose_sync(since_s=150)
        pdc.send(Command.DATA_ON)
        (frame,) = await pdc.frames(1, DataFrame)
        stat = frame.pmus[0].stat
        assert stat.sync_lost and stat.unlocked_time == UnlockedTime.UNDER_1000S
        assert stat.time_quality == PmuTimeQuality.OVER_10MS_OR_UNKNOWN and frame.time_quality.code == 9
        sim.regain_sync()
        await asyncio.sleep(0.1)
        frames = await pdc.frames(3, DataFrame)
        assert not frames[-1].pmus[0].stat.sync_lost and frames[-1].time_quality.code == 0
        pdc.close()


@async_test
async def test_config_change_bumps_cfgcnt_and_raises_stat_bit() -> None:
    async with SimPmu(4, "SIM", port=0, rate=20) as sim:
        pdc = await Raw.connect(sim.port, 4)
        pdc.send(Command.SEND_CFG2)
        (old,) = await pdc.frames(1, ConfigFrame)
        pdc.send(Command.DATA_ON)
        await pdc.frames(1, DataFrame)
        sim.change_config(phasors=[("V1", PhasorKind.VOLTAGE)], flag_s=1.0)
        pdc.send(Command.SEND_CFG2)
        (new,) = await pdc.frames(1, ConfigFrame)
        assert new.pmus[0].cfgcnt == old.pmus[0].cfgcnt + 1 and new.pmus[0].phasor_names == ("V1",)
        frames = await pdc.frames(2, DataFrame)
        assert frames[-1].pmus[0].stat.config_changed and len(frames[-1].pmus[0].phasors) == 1
        pdc.close()


@async_test
async def test_stop_sending_keeps_the_connection_but_no_data() -> None:
    async with SimPmu(2, "SIM", port=0, rate=20) as sim:
        pdc = await Raw.connect(sim.port, 2)
        pdc.send(Command.SEND_CFG2)
        await pdc.frames(1, ConfigFrame)
        pdc.send(Command.DATA_ON)
        await pdc.frames(1, DataFrame)
        sim.stop_sending()
        await _drain(pdc.reader, 0.1)
        assert not await _drain(pdc.reader, 0.3) and sim.clients == 1
        sim.resume_sending()
        assert len(await pdc.frames(1, DataFrame)) == 1
        pdc.close()


@async_test
async def test_udp_data_to_the_port_the_client_names() -> None:
    udp_port = free_port()
    got: asyncio.Queue[bytes] = asyncio.Queue()

    class Proto(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            got.put_nowait(data)

    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(Proto, local_addr=("127.0.0.1", udp_port))
    try:
        async with SimPmu(11, "SIM", port=0, rate=20) as sim:
            pdc = await Raw.connect(sim.port, 11)
            pdc.send(Command.SEND_CFG2)
            (cfg,) = await pdc.frames(1, ConfigFrame)
            pdc.writer.write(
                encode_frame(
                    CommandFrame(idcode=11, command=Command.EXTENDED, extended=b"UDPP" + udp_port.to_bytes(2, "big"))
                )
            )
            pdc.send(Command.DATA_ON)
            datagram = await asyncio.wait_for(got.get(), 3)
            reader = StreamReader([cfg])
            reader.feed(datagram)
            assert isinstance(reader.next_event(), DataFrame)
            assert not await _drain(pdc.reader, 0.1), "data goes over UDP, not TCP"
            pdc.close()
    finally:
        transport.close()


@async_test
async def test_integer_formats_and_2005_version() -> None:
    fmt = DataFormat(freq_float=False, analog_float=False, phasor_float=False, polar=False)
    async with SimPmu(12, "OLD", port=0, rate=10, version=2005, format=fmt, nominal_hz=50) as sim:
        pdc = await Raw.connect(sim.port, 12)
        pdc.send(Command.SEND_CFG2)
        (cfg,) = await pdc.frames(1, ConfigFrame)
        assert cfg.version == 1 and cfg.pmus[0].phasor_units[0].scale > 0
        pdc.send(Command.DATA_ON)
        (frame,) = await pdc.frames(1, DataFrame)
        va = frame.pmus[0].phasor_values[0]
        assert frame.version == 1 and abs(va) == pytest.approx(7200, rel=0.02)
        assert frame.pmus[0].frequency_hz == pytest.approx(50, abs=0.021)
        pdc.close()


def test_source_is_a_function_of_time_and_bad_parameters_are_refused() -> None:
    src = balanced_source()
    assert src(1000.0) == src(1000.0) and src(1000.0) != src(1000.5)
    with pytest.raises(PmuSimError, match="rate"):
        SimPmu(1, "X", rate=5)
    with pytest.raises(PmuSimError, match="version"):
        SimPmu(1, "X", version=2024)
    with pytest.raises(PmuSimError, match="16 bytes"):
        SimPmu(1, "A station name far too long")
    sim = SimPmu(1, "X", rate=10, source=lambda t: PmuMeasurement((1 + 0j,), 60.0, 0.0))
    with pytest.raises(PmuSimError, match="1 phasors"):
        sim.data_frame(100)


def test_default_port_is_the_standards() -> None:
    assert SimPmu(1, "X").port == 4712 and SimPmu(1, "X").udp_port == 4713

"""SerialBus: several RTU units on one real socat pty line, served by a real pymodbus RTU server."""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass

import pytest
from helpers.aio import arun
from helpers.modbus import rtu_server

from protocols.modbus.errors import ModbusConnectionError, ModbusExceptionResponse, ModbusTimeout
from protocols.modbus.registermap import Table
from protocols.modbus.serialbus import RtuTransport, SerialBus, SerialBusRegistry, inter_frame_silence_s


@dataclass
class Line:
    port: str
    baudrate: int = 9600
    parity: str = "N"
    bytesize: int = 8
    stopbits: int = 1


def test_inter_frame_silence_follows_the_serial_line_spec() -> None:
    # Modbus over Serial Line v1.02, 2.5.1.1: 3.5 characters of 11 bits; fixed 1.75 ms above 19200
    assert inter_frame_silence_s(9600) == pytest.approx(3.5 * 11 / 9600)  # 4.01 ms
    assert inter_frame_silence_s(19200) == pytest.approx(2.005e-3, rel=1e-3)
    assert inter_frame_silence_s(1200) == pytest.approx(32.08e-3, rel=1e-3)
    assert inter_frame_silence_s(38400) == inter_frame_silence_s(115200) == 1.75e-3
    with pytest.raises(ValueError):
        inter_frame_silence_s(0)


def test_registry_gives_one_bus_per_port(tmp_path) -> None:
    reg = SerialBusRegistry()
    link = tmp_path / "ttyLINK"
    os.symlink("/dev/null", link)
    a = reg.get(Line("/dev/null"))
    assert reg.get(Line("/dev/null")) is a
    assert reg.get(Line(str(link))) is a  # the same device under another name
    assert reg.get(Line(str(tmp_path / "other"))) is not a
    with pytest.raises(ValueError, match="conflict"):
        reg.get(Line("/dev/null", baudrate=19200))
    assert len(reg.buses) == 2


def test_two_units_on_one_line_read_back(pty_pair) -> None:
    async def go():
        async with rtu_server(pty_pair.a, {1: 100, 2: 200}):
            reg = SerialBusRegistry()
            t1 = RtuTransport(reg.get(Line(pty_pair.b)), timeout_s=0.5, retries=0)
            t2 = RtuTransport(reg.get(Line(pty_pair.b)), timeout_s=0.5, retries=0)
            assert t1.bus is t2.bus
            assert await t1.read(Table.HOLDING, 0, 3, 1) == [100, 101, 102]
            assert await t2.read(Table.HOLDING, 5, 2, 2) == [205, 206]
            with pytest.raises(ModbusExceptionResponse) as info:
                await t1.read(Table.HOLDING, 15, 10, 1)  # beyond the 20 registers
            assert info.value.code == 2
            await t1.close()
            assert await t2.read(Table.HOLDING, 0, 1, 2) == [200]  # the bus stays open for t2
            await t2.close()

    arun(go())


def test_concurrent_reads_are_serialised_with_the_silence_between(pty_pair) -> None:
    async def go():
        async with rtu_server(pty_pair.a, {1: 100, 2: 200}) as log:
            bus = SerialBus(pty_pair.b, 9600)
            t = RtuTransport(bus, timeout_s=0.5, retries=0)
            jobs = [t.read(Table.HOLDING, i % 10, 4, 1 + i % 2) for i in range(20)]
            results = await asyncio.gather(*jobs)
            for i, r in enumerate(results):
                base = 100 if i % 2 == 0 else 200
                assert r == [base + i % 10 + k for k in range(4)]
            await t.close()
            return bus, log

    bus, log = arun(go())
    hist = list(bus.history)
    assert len(hist) == 20 and all(h.outcome == "ok" for h in hist)
    assert {h.unit_id for h in hist} == {1, 2}
    for prev, nxt in zip(hist, hist[1:], strict=False):
        # never interleaved, and t3.5 of silence (4.01 ms at 9600 baud) by the arbiter's own clock
        assert nxt.started - prev.ended >= bus.silence_s - 1e-6
    # the server saw strictly request, answer, request, answer...: never two requests on the line
    dirs = [d for d, _, _ in log]
    assert dirs == ["rx", "tx"] * 20


def test_each_transport_says_when_its_request_went_out_after_waiting_for_the_line(pty_pair) -> None:
    async def go():
        async with rtu_server(pty_pair.a, {1: 100, 2: 200}) as log:
            bus = SerialBus(pty_pair.b, 9600)
            first, second = RtuTransport(bus, timeout_s=0.5, retries=0), RtuTransport(bus, timeout_s=0.5, retries=0)
            asked = time.monotonic()
            await asyncio.gather(first.read(Table.HOLDING, 0, 10, 1), second.read(Table.HOLDING, 0, 10, 2))
            await first.close()
            await second.close()
            return bus, log, asked, (first.sent_at, second.sent_at)

    bus, log, asked, sent = arun(go())
    rx = {unit: t for d, t, unit in log if d == "rx"}
    tx = {unit: t for d, t, unit in log if d == "tx"}
    assert [h.started for h in bus.history] == list(sent)
    assert asked <= sent[0] <= rx[1] and sent[0] < sent[1] <= rx[2]
    assert sent[1] >= tx[1]  # the second request waited for the first answer (and the silence) before going out


def test_dead_unit_times_out_and_lets_live_units_through_between_attempts(pty_pair) -> None:
    async def go():
        async with rtu_server(pty_pair.a, {1: 100}):
            bus = SerialBus(pty_pair.b, 9600)
            dead = RtuTransport(bus, timeout_s=0.3, retries=1)
            live = RtuTransport(bus, timeout_s=0.3, retries=0)

            async def dead_read():
                start = time.monotonic()
                with pytest.raises(ModbusTimeout) as info:
                    await dead.read(Table.HOLDING, 0, 2, 3)
                assert info.value.device == f"rtu:{pty_pair.b}/3"
                return time.monotonic() - start

            async def live_reads():
                await asyncio.sleep(0.05)
                return [await live.read(Table.HOLDING, 0, 1, 1) for _ in range(3)]

            elapsed, values = await asyncio.gather(dead_read(), live_reads())
            assert values == [[100]] * 3
            await dead.close()
            await live.close()
            return bus, elapsed

    bus, elapsed = arun(go())
    units = [h.unit_id for h in bus.history]
    # the dead unit's two attempts, each 0.3 s, with a live read taking its turn in between
    assert units.count(3) == 2
    first, second = (i for i, u in enumerate(units) if u == 3)
    assert 1 in units[first + 1 : second]
    for h in bus.history:
        if h.unit_id == 3:
            assert h.outcome == "ModbusTimeout"
            assert 0.25 <= h.ended - h.started < 1.0  # held the line about timeout_s, not more
    assert elapsed >= 0.55


def test_missing_port_is_a_connection_error(tmp_path) -> None:
    async def go():
        t = RtuTransport(SerialBus(str(tmp_path / "no-such-tty")), timeout_s=0.2, retries=1)
        with pytest.raises(ModbusConnectionError):
            await t.read(Table.HOLDING, 0, 1, 1)
        await t.close()

    arun(go())

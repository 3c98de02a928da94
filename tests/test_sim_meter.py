"""The simulated three-phase meter: its model, its map and doc, and its Modbus TCP/RTU server with faults."""

from __future__ import annotations

import asyncio
import math
import tomllib
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from helpers.docmap import doc_mismatches
from helpers.net import free_port
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ModbusIOException

from protocols.modbus.registermap import DataType, RegisterMap, Table, decode_point, encode_point, parse_register_map
from sim_hw.devices.meter import ENERGY_MODULUS, MODEL, MeterError, ThreePhaseMeter
from sim_hw.devices.modbus_server import ModbusDeviceServer, ModbusServerError

ROOT = Path(__file__).resolve().parent.parent
MAP_FILE = ROOT / "config" / "maps" / "sim-meter.toml"
DOC_FILE = ROOT / "docs" / "devices" / "sim-meter.md"
T0 = 1_780_000_000.0  # a fixed simulated instant (2026-05-28)
T = TypeVar("T")


def run(coro: Awaitable[T], timeout: float = 20.0) -> T:
    async def guarded() -> T:
        async with asyncio.timeout(timeout):
            return await coro

    return asyncio.run(guarded())


@pytest.fixture(scope="module")
def meter_map() -> RegisterMap:
    with MAP_FILE.open("rb") as fh:
        return parse_register_map(tomllib.load(fh), "sim-meter")


def constant_meter(load_kw: float, **kw: Any) -> ThreePhaseMeter:
    return ThreePhaseMeter("const", load_kw=load_kw, seed=1, daily_swing=0.0, noise=0.0, **kw)


# --- the model ---------------------------------------------------------------------------------------------


def test_values_move_over_time() -> None:
    m = ThreePhaseMeter("m1", load_kw=100.0, seed=7)
    a, b = m.values(T0), m.values(T0 + 3 * 3600)
    for name in ("v_a", "i_a", "p_total", "q_total"):
        assert a[name] != b[name], name
    assert 100e3 * 0.6 < a["p_total"] < 100e3 * 1.4
    assert all(110 < a[f"v_{ph}"] < 125 for ph in "abc")
    assert 59.9 < a["frequency"] < 60.1
    assert 0.93 < a["pf"] < 0.97
    assert a["model"] == MODEL and a["status_ok"] is True


def test_values_are_deterministic_for_a_seed_and_differ_between_seeds() -> None:
    times = [T0 + k * 7.5 for k in range(20)]
    one = [ThreePhaseMeter("m", load_kw=50, seed=3).values(t) for t in times[:1]]
    m1, m2, m3 = (ThreePhaseMeter("m", load_kw=50, seed=s) for s in (3, 3, 4))
    run1 = [m1.values(t) for t in times]
    run2 = [m2.values(t) for t in times]
    run3 = [m3.values(t) for t in times]
    assert run1 == run2
    assert run1[0] == one[0]
    assert [r["p_a"] for r in run1] != [r["p_a"] for r in run3]
    assert run1[0]["serial_number"] != ThreePhaseMeter("other", load_kw=50, seed=3).values(T0)["serial_number"]


def test_asking_twice_for_the_same_time_gives_the_same_values() -> None:
    m = ThreePhaseMeter("m", load_kw=50, seed=3)
    m.values(T0)
    assert m.values(T0 + 60) == m.values(T0 + 60)


def test_clock_is_used_when_no_time_is_given() -> None:
    now = [T0]
    m = ThreePhaseMeter("m", load_kw=50, seed=3, clock=lambda: now[0])
    twin = ThreePhaseMeter("m", load_kw=50, seed=3)
    assert m.values() == twin.values(T0)
    now[0] = T0 + 30
    assert m.values() == twin.values(T0 + 30)


def test_phase_powers_sum_to_total_and_voltage_sags_with_load() -> None:
    day = T0 - T0 % 86400
    m = ThreePhaseMeter("m", load_kw=500, seed=1, noise=0.0)
    light, heavy = m.values(day + 6 * 3600), m.values(day + 18 * 3600)  # the curve's low and peak
    assert heavy["p_total"] == pytest.approx(500e3 * 1.3) and light["p_total"] == pytest.approx(500e3 * 0.7)
    assert light["p_a"] + light["p_b"] + light["p_c"] == pytest.approx(light["p_total"])
    for ph in "abc":
        assert heavy[f"v_{ph}"] < light[f"v_{ph}"] - 1.0  # ~1.4 % of 120 V between low and peak
    # S = P / pf per phase: I = |P_a| / (V_a pf)
    assert light["i_a"] == pytest.approx(abs(light["p_a"]) / (light["v_a"] * light["pf"]))
    assert light["q_total"] == pytest.approx(light["p_total"] * math.tan(math.acos(light["pf"])))


def test_energy_integrates_constant_power() -> None:
    # 36 kW for 100 s: 36000 W x 100 s / 3600 s/h = 1000 Wh
    m = constant_meter(36.0)
    assert m.values(T0)["energy_delivered_wh"] == 0  # the meter starts counting when first asked
    v = m.values(T0 + 100)
    assert v["energy_delivered_wh"] == 1000
    assert v["energy_received_wh"] == 0
    # 30 more minutes: + 18000 Wh, integrated in pieces but exact for a constant load
    assert m.values(T0 + 100 + 1800)["energy_delivered_wh"] == 19000


def test_energy_received_when_power_flows_back() -> None:
    m = constant_meter(-7.2)  # exporting 7.2 kW: 7200 W x 500 s / 3600 = 1000 Wh received
    m.values(T0)
    v = m.values(T0 + 500)
    assert v["p_total"] == pytest.approx(-7200.0)
    assert v["energy_received_wh"] == 1000
    assert v["energy_delivered_wh"] == 0


def test_energy_register_rolls_over_at_2_pow_32() -> None:
    m = constant_meter(36.0, energy_delivered_wh=ENERGY_MODULUS - 400)
    assert m.values(T0)["energy_delivered_wh"] == ENERGY_MODULUS - 400
    assert m.values(T0 + 100)["energy_delivered_wh"] == 600  # 2^32 - 400 + 1000, modulo 2^32


def test_energy_integrates_the_curve_like_a_fine_sum() -> None:
    coarse, fine = ThreePhaseMeter("m", load_kw=100, seed=2), ThreePhaseMeter("m", load_kw=100, seed=2)
    coarse.values(T0)
    fine.values(T0)
    for k in range(1, 3601):
        fine.values(T0 + k)
    # one jump of an hour against 3600 one-second steps: the same integral within a few Wh of ~100 kWh
    assert coarse.values(T0 + 3600)["energy_delivered_wh"] == pytest.approx(
        fine.values(T0 + 3600)["energy_delivered_wh"], abs=5
    )


def test_time_running_backwards_is_refused() -> None:
    m = ThreePhaseMeter("m", load_kw=1, seed=1)
    m.values(T0)
    with pytest.raises(MeterError, match="backwards"):
        m.values(T0 - 1)


@pytest.mark.parametrize(
    ("kw", "key"),
    [
        ({"pf": 1.5}, "pf"),
        ({"nominal_v": 0}, "nominal_v"),
        ({"load_kw": math.nan}, "load_kw"),
        ({"daily_swing": -0.1}, "daily_swing"),
        ({"energy_delivered_wh": -1}, "energy_delivered_wh"),
    ],
)
def test_bad_meter_parameters_name_the_key(kw: dict[str, Any], key: str) -> None:
    args: dict[str, Any] = {"load_kw": 1.0} | kw
    with pytest.raises(MeterError, match=key):
        ThreePhaseMeter("m", seed=1, **args)


def test_no_time_and_no_clock_is_refused() -> None:
    with pytest.raises(MeterError, match="no clock"):
        ThreePhaseMeter("m", load_kw=1, seed=1).values()


def test_model_produces_exactly_the_maps_points_and_they_encode(meter_map: RegisterMap) -> None:
    values = ThreePhaseMeter("m", load_kw=4000, seed=1).values(T0)
    assert set(values) == {p.name for p in meter_map.points}
    for p in meter_map.points:
        encode_point(p, values[p.name])  # raises if a value does not fit its register


# --- map and doc ---------------------------------------------------------------------------------------


def test_map_has_a_gap_mixed_types_and_energy_points(meter_map: RegisterMap) -> None:
    tables = {p.table for p in meter_map.points}
    assert tables == set(Table)
    types = {p.dtype for p in meter_map.points}
    assert {DataType.FLOAT32, DataType.INT16, DataType.UINT32, DataType.STRING, DataType.BOOL} <= types
    energy = [p.name for p in meter_map.points if p.kind.value == "energy"]
    assert energy == ["energy_delivered_wh", "energy_received_wh"]
    holding = sorted((p for p in meter_map.points if p.table is Table.HOLDING), key=lambda p: p.address)
    gaps = [b.address - a.end for a, b in zip(holding, holding[1:], strict=False) if b.address > a.end]
    assert gaps == [6]


def test_doc_register_table_matches_the_map(meter_map: RegisterMap) -> None:
    assert doc_mismatches(DOC_FILE.read_text(), meter_map) == []


def test_doc_check_catches_a_drifted_address(meter_map: RegisterMap) -> None:
    text = DOC_FILE.read_text()
    drifted = text.replace("| v_b | input | 2 |", "| v_b | input | 3 |")
    assert drifted != text
    assert doc_mismatches(drifted, meter_map) == ["v_b.address: doc '3', map '2'"]


# --- served over Modbus ---------------------------------------------------------------------------------


async def _read_all(client: Any, unit: int, meter_map: RegisterMap) -> dict[str, Any]:
    """Read every table of the map with one request each (bridging the gap) and decode every point."""
    out: dict[str, Any] = {}
    for table in Table:
        points = [p for p in meter_map.points if p.table is table]
        lo, hi = min(p.address for p in points), max(p.end for p in points)
        read = {
            Table.HOLDING: client.read_holding_registers,
            Table.INPUT: client.read_input_registers,
            Table.COIL: client.read_coils,
            Table.DISCRETE: client.read_discrete_inputs,
        }[table]
        rr = await read(lo, count=hi - lo, device_id=unit)
        assert not rr.isError(), rr
        words = rr.bits if table.is_bits else rr.registers
        for p in points:
            out[p.name] = decode_point(p, words[p.address - lo : p.end - lo])
    return out


def _assert_served(decoded: dict[str, Any], expected: dict[str, Any], meter_map: RegisterMap) -> None:
    for p in meter_map.points:
        if p.dtype is DataType.FLOAT32:
            assert decoded[p.name] == pytest.approx(expected[p.name], rel=1e-6), p.name
        elif p.scale != 1.0:
            assert decoded[p.name] == pytest.approx(expected[p.name], abs=p.scale / 2), p.name
        else:
            assert decoded[p.name] == expected[p.name], p.name


def test_served_over_tcp_values_equal_the_models_at_that_step(meter_map: RegisterMap) -> None:
    meter = ThreePhaseMeter("tcp-meter", load_kw=250.0, seed=5, energy_delivered_wh=123_456)

    async def scenario() -> None:
        port = free_port()
        server = ModbusDeviceServer.tcp("127.0.0.1", port, {1: meter_map})
        await server.start()
        client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=1, retries=0)
        try:
            assert await client.connect()
            for step in range(3):
                expected = meter.values(T0 + 60 * step)
                await server.update(1, expected)
                _assert_served(await _read_all(client, 1, meter_map), expected, meter_map)
            # the gap reads as zeros, so a read plan may bridge it
            assert await server.registers(1, Table.HOLDING, 10, 6) == [0] * 6
            rr = await client.read_holding_registers(100, count=2, device_id=1)
            assert rr.isError() and rr.exception_code == 2  # outside the map: illegal data address
        finally:
            client.close()
            await server.stop()

    run(scenario())


def test_served_over_rtu_two_units_on_one_line(pty_pair: Any, meter_map: RegisterMap) -> None:
    meters = {1: ThreePhaseMeter("rtu-1", load_kw=40, seed=1), 2: ThreePhaseMeter("rtu-2", load_kw=-9, seed=1)}

    async def scenario() -> None:
        server = ModbusDeviceServer.rtu(pty_pair.a, {1: meter_map, 2: meter_map}, baudrate=19200)
        await server.start()
        client = AsyncModbusSerialClient(pty_pair.b, baudrate=19200, timeout=0.5, retries=0)
        try:
            assert await client.connect()
            expected = {u: m.values(T0) for u, m in meters.items()}
            for u in meters:
                await server.update(u, expected[u])
            for u in meters:
                _assert_served(await _read_all(client, u, meter_map), expected[u], meter_map)
            # a unit id nobody holds: the line stays silent, as RS-485 does
            with pytest.raises(ModbusIOException):
                await client.read_holding_registers(0, count=2, device_id=3)
            # the exception fault on one unit leaves its neighbour answering
            server.set_fault(2, "exception")
            rr = await client.read_input_registers(0, count=2, device_id=2)
            assert rr.isError() and rr.exception_code == 4
            assert not (await client.read_input_registers(0, count=2, device_id=1)).isError()
            server.set_fault(2, "silent")
            with pytest.raises(ModbusIOException):
                await client.read_input_registers(0, count=2, device_id=2)
            server.set_fault(2, "garbage")
            with pytest.raises(ModbusIOException):
                await client.read_input_registers(0, count=2, device_id=2)
            server.set_fault(2, None)
            await asyncio.sleep(0.05)  # let the client drop the noise left on the line
            rr = await client.read_input_registers(18, count=2, device_id=2)
            assert decode_point(meter_map.point("p_total"), rr.registers) == pytest.approx(expected[2]["p_total"])
        finally:
            client.close()
            await server.stop()

    run(scenario())


@pytest.mark.parametrize("fault", ["silent", "exception", "garbage"])
def test_each_fault_is_seen_by_a_tcp_client_and_heals(fault: str, meter_map: RegisterMap) -> None:
    seen_bytes: list[bytes] = []

    def trace(sending: bool, data: bytes) -> bytes:
        if not sending:
            seen_bytes.append(data)
        return data

    async def scenario() -> None:
        port = free_port()
        server = ModbusDeviceServer.tcp("127.0.0.1", port, {1: meter_map, 2: meter_map})
        await server.start()
        await server.update(1, ThreePhaseMeter("a", load_kw=1, seed=1).values(T0))
        client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=0.4, retries=0, trace_packet=trace)
        try:
            assert await client.connect()
            server.set_fault(1, fault)  # type: ignore[arg-type]
            assert server.fault(1) == fault
            seen_bytes.clear()
            if fault == "exception":
                rr = await client.read_holding_registers(0, count=8, device_id=1)
                assert rr.isError() and rr.exception_code == 4
            else:
                with pytest.raises(ModbusIOException):
                    await client.read_holding_registers(0, count=8, device_id=1)
                # silent: nothing came back; garbage: bytes came back but did not decode
                assert (b"".join(seen_bytes) != b"") == (fault == "garbage")
            # unit 2 on the same server is unaffected
            assert not (await client.read_holding_registers(0, count=8, device_id=2)).isError()
            server.set_fault(1, None)
            if not client.connected:
                await client.connect()
            rr = await client.read_holding_registers(0, count=8, device_id=1)
            assert decode_point(meter_map.point("model"), rr.registers) == MODEL
        finally:
            client.close()
            await server.stop()

    run(scenario())


def test_server_refuses_bad_requests_from_its_owner(meter_map: RegisterMap) -> None:
    async def scenario() -> None:
        server = ModbusDeviceServer.tcp("127.0.0.1", free_port(), {1: meter_map})
        with pytest.raises(ModbusServerError, match="not started"):
            await server.update(1, {"v_a": 120.0})
        await server.start()
        try:
            with pytest.raises(ModbusServerError, match="'flux'"):
                await server.update(1, {"flux": 1.0})
            with pytest.raises(ModbusServerError, match="out of range"):
                await server.update(1, {"frequency": 400.0})  # 40000 does not fit an int16
            with pytest.raises(ModbusServerError, match="unit_id = 9"):
                server.set_fault(9, "silent")
            with pytest.raises(ModbusServerError, match="must be None or one of"):
                server.set_fault(1, "smoke")  # type: ignore[arg-type]
            with pytest.raises(ModbusServerError, match="already started"):
                await server.start()
        finally:
            await server.stop()

    run(scenario())
    with pytest.raises(ModbusServerError, match="1..247"):
        ModbusDeviceServer.tcp("127.0.0.1", 1502, {0: meter_map})
    with pytest.raises(ModbusServerError, match="either"):
        ModbusDeviceServer({1: meter_map})


def test_a_taken_port_is_a_typed_error(meter_map: RegisterMap) -> None:
    async def scenario() -> None:
        port = free_port()
        first = ModbusDeviceServer.tcp("127.0.0.1", port, {1: meter_map})
        await first.start()
        try:
            with pytest.raises(ModbusServerError, match=str(port)):
                await ModbusDeviceServer.tcp("127.0.0.1", port, {1: meter_map}).start()
        finally:
            await first.stop()

    run(scenario())

"""The physics-driven feeder meter, served over real Modbus TCP with config/maps/sim-meter.toml.

Each bench step is done by hand: ``observe`` a hand-built Solution, ``server.update`` with ``values(t)``,
read with pymodbus and decode with the map. Expected values come from the phasors by hand
(P = |V| |I| cos(angle V - angle I) per phase), never from the model.
"""

from __future__ import annotations

import cmath
import math
import tomllib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from helpers.aio import async_test
from helpers.net import free_port
from pymodbus.client import AsyncModbusTcpClient

from protocols.modbus.registermap import RegisterMap, Table, decode_point, encode_point, parse_register_map
from sim_hw.devices.feeder_meter import ENERGY_MODULUS, MODEL, FeederMeter, FeederMeterError
from sim_hw.devices.modbus_server import ModbusDeviceServer
from sim_hw.feeder.solution import Solution, Terminal

ROOT = Path(__file__).resolve().parent.parent
with (ROOT / "config" / "maps" / "sim-meter.toml").open("rb") as _fh:
    MAP: RegisterMap = parse_register_map(tomllib.load(_fh), "sim-meter")
T0 = 1_780_000_000.0
ELEMENT = "Line.650632"


def phasor(mag: float, deg: float) -> complex:
    return cmath.rect(mag, math.radians(deg))


def solution(
    t: float,
    v: dict[str, tuple[float, float]],
    i: dict[str, tuple[float, float]],
    *,
    hz: float = 60.0,
    element: str = ELEMENT,
) -> Solution:
    """A solved feeder holding one metered terminal at bus rg60 (2.4 kV phase-neutral nominal)."""
    vv = {ph: phasor(*x) for ph, x in v.items()}
    ii = {ph: phasor(*x) for ph, x in i.items()}
    return Solution(
        t=t,
        converged=True,
        bus_v={"rg60": vv},
        base_kv_ln={"rg60": 2.4},
        terminals={f"{element}/1": Terminal(element, "rg60", vv, ii)},
        frequency_hz=hz,
    )


def balanced(t: float, amps: float, *, v: float = 2400.0, lag_deg: float = 0.0, hz: float = 60.0) -> Solution:
    """Three balanced phases, current lagging the voltage by ``lag_deg``."""
    angles = {"a": 0.0, "b": -120.0, "c": 120.0}
    return solution(
        t, {p: (v, a) for p, a in angles.items()}, {p: (amps, a - lag_deg) for p, a in angles.items()}, hz=hz
    )


DEAD = {"a": (0.0, 0.0), "b": (0.0, 0.0), "c": (0.0, 0.0)}


@asynccontextmanager
async def served(meter: FeederMeter) -> AsyncIterator[tuple[ModbusDeviceServer, AsyncModbusTcpClient]]:
    port = free_port()
    server = ModbusDeviceServer.tcp("127.0.0.1", port, {1: MAP})
    await server.start()
    server.on_write(1, meter.on_write)
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=2, retries=0)
    try:
        assert await client.connect()
        yield server, client
    finally:
        client.close()
        await server.stop()


async def step(server: ModbusDeviceServer, meter: FeederMeter, sol: Solution) -> None:
    """One bench step by hand: the meter observes, the server is updated with its values."""
    meter.actuate(sol.t, object())
    meter.observe(sol.t, sol)
    await server.update(1, meter.values(sol.t))


async def read_all(client: AsyncModbusTcpClient) -> dict[str, Any]:
    """Every point of the map as a client decodes it."""
    blocks = {
        Table.INPUT: (await client.read_input_registers(0, count=25, device_id=1)).registers,
        Table.HOLDING: (await client.read_holding_registers(0, count=20, device_id=1)).registers,
        Table.COIL: (await client.read_coils(0, count=1, device_id=1)).bits,
        Table.DISCRETE: (await client.read_discrete_inputs(0, count=1, device_id=1)).bits,
    }
    return {p.name: decode_point(p, blocks[p.table][p.address : p.end]) for p in MAP.points}


def f32(x: float) -> float:
    """What a float32 register holds."""
    p = MAP.point("v_a")
    return float(decode_point(p, encode_point(p, x)))


# --- values ------------------------------------------------------------------------------------------


@async_test
async def test_served_values_equal_the_hand_computation_from_the_phasors() -> None:
    # Roughly the published IEEE 13-node state at the regulator output (Kersting): 2.52 kV, ~600 A lagging.
    v = {"a": (2521.0, 0.0), "b": (2442.0, -120.3), "c": (2557.0, 119.8)}
    i = {"a": (593.3, -28.5), "b": (435.7, -140.9), "c": (626.6, 93.6)}
    meter = FeederMeter("fm-head", element=ELEMENT, terminal=1)
    async with served(meter) as (server, client):
        await step(server, meter, solution(T0, v, i, hz=59.98))
        got = await read_all(client)
    p = {ph: v[ph][0] * i[ph][0] * math.cos(math.radians(v[ph][1] - i[ph][1])) for ph in "abc"}
    q = {ph: v[ph][0] * i[ph][0] * math.sin(math.radians(v[ph][1] - i[ph][1])) for ph in "abc"}
    p_total, q_total = sum(p.values()), sum(q.values())
    for ph in "abc":
        assert got[f"v_{ph}"] == pytest.approx(v[ph][0], rel=1e-6)
        assert got[f"i_{ph}"] == pytest.approx(i[ph][0], rel=1e-6)
        assert got[f"p_{ph}"] == pytest.approx(p[ph], rel=1e-6)
    assert 3.0e6 < p_total < 4.0e6  # MW-scale, held in W by a float32 (7 significant digits)
    assert got["p_total"] == pytest.approx(p_total, rel=1e-6)
    assert got["q_total"] == pytest.approx(q_total, rel=1e-6)
    assert q_total > 0  # lagging current: inductive, positive
    assert got["pf"] == pytest.approx(abs(p_total) / math.hypot(p_total, q_total), rel=1e-6)
    assert got["frequency"] == pytest.approx(59.98, abs=0.005)
    assert got["model"] == MODEL
    assert got["serial_number"] == meter.serial_number
    assert got["status_ok"] is True and got["relay_closed"] is True
    assert got["energy_delivered_wh"] == 0 and got["energy_received_wh"] == 0  # nothing integrated yet


def test_model_produces_exactly_the_maps_points_and_they_encode() -> None:
    meter = FeederMeter("m")
    assert set(meter.values(T0)) == {p.name for p in MAP.points}  # before any observe: a dead meter
    meter.observe(T0, balanced(T0, 600.0, lag_deg=30.0))
    values = meter.values(T0)
    assert set(values) == {p.name for p in MAP.points}
    for p in MAP.points:
        encode_point(p, values[p.name])


def test_serial_numbers_differ_between_meters() -> None:
    assert FeederMeter("a").serial_number != FeederMeter("b").serial_number
    assert FeederMeter("a").serial_number == FeederMeter("a").serial_number
    assert 10_000_000 <= FeederMeter("a").serial_number < 100_000_000


def test_secondary_registers_divide_by_the_transformer_ratios() -> None:
    # PT 2400:120 (ratio 20), CT 600:5 (ratio 120): the meter shows what its terminals see.
    meter = FeederMeter("sec", pt_ratio=20.0, ct_ratio=120.0, registers="secondary")
    meter.observe(T0, balanced(T0, 600.0, lag_deg=0.0))
    v = meter.values(T0)
    assert v["v_a"] == pytest.approx(120.0) and v["i_b"] == pytest.approx(5.0)
    assert v["p_total"] == pytest.approx(3 * 120.0 * 5.0)
    meter.observe(T0 + 3600, balanced(T0 + 3600, 600.0))
    assert meter.values(T0 + 3600)["energy_delivered_wh"] == 1800  # 1800 W secondary for an hour


def test_reverse_ct_and_power_flowing_back() -> None:
    # current 180 deg from the voltage: power flows out of the element at this terminal
    meter, backwards = FeederMeter("r"), FeederMeter("r", reverse=True)
    for m in (meter, backwards):
        m.observe(T0, balanced(T0, 100.0, lag_deg=180.0))
    assert meter.values(T0)["p_total"] == pytest.approx(-3 * 2400.0 * 100.0)
    assert backwards.values(T0)["p_total"] == pytest.approx(3 * 2400.0 * 100.0)
    assert meter.values(T0)["pf"] == pytest.approx(1.0)


def test_a_missing_phase_reads_zero() -> None:
    # a single-phase lateral (phase c only)
    meter = FeederMeter("lat", element="Line.684611")
    meter.observe(T0, solution(T0, {"c": (2400.0, 120.0)}, {"c": (70.0, 100.0)}, element="Line.684611"))
    v = meter.values(T0)
    assert v["v_a"] == v["i_b"] == v["p_a"] == 0.0
    assert v["p_total"] == pytest.approx(2400.0 * 70.0 * math.cos(math.radians(20.0)))


# --- energy ------------------------------------------------------------------------------------------


@async_test
async def test_energy_integrates_over_simulated_steps() -> None:
    meter = FeederMeter("e")
    async with served(meter) as (server, client):
        # 500 A in phase with 2400 V on each phase: 3.6 MW for 10 one-second steps = 10 000 Wh
        for k in range(11):
            await step(server, meter, balanced(T0 + k, 500.0))
        got = await read_all(client)
        assert got["energy_delivered_wh"] == 10_000 and got["energy_received_wh"] == 0
        # 250 A at 60 deg lag from T0+11: P = 3 x 2400 x 250 x cos 60 = 900 kW. The second before T0+11 still
        # held 3.6 MW (+1000 Wh), then 900 kW for 3 s to T0+14 (+750 Wh): 11 750 Wh.
        for k in range(11, 15):
            await step(server, meter, balanced(T0 + k, 250.0, lag_deg=60.0))
        got = await read_all(client)
        assert got["energy_delivered_wh"] == 11_750
        assert got["pf"] == pytest.approx(0.5, rel=1e-6)
        # the flow reverses from T0+15 (an export of 3 x 2400 x 250 = 1.8 MW) to T0+34: the second before T0+15
        # held 900 kW (+250 Wh delivered), then 1 800 000 W x 19 s / 3600 = 9500 Wh received
        for k in range(15, 35):
            await step(server, meter, balanced(T0 + k, 250.0, lag_deg=180.0))
        got = await read_all(client)
        assert got["energy_delivered_wh"] == 12_000
        assert got["energy_received_wh"] == 9500


def test_a_long_gap_between_observes_integrates_the_held_power() -> None:
    # 1.2 MW (one phase of 2400 V x 500 A) held for 2.5 h: 3 000 000 Wh
    meter = FeederMeter("gap")
    meter.observe(T0, solution(T0, {"a": (2400.0, 0.0)}, {"a": (500.0, 0.0)}))
    meter.observe(T0 + 9000, solution(T0 + 9000, {"a": (2400.0, 0.0)}, {"a": (500.0, 0.0)}))
    assert meter.values(T0 + 9000)["energy_delivered_wh"] == 3_000_000


@async_test
async def test_energy_register_rolls_over_at_2_pow_32() -> None:
    meter = FeederMeter("roll", energy_delivered_wh=ENERGY_MODULUS - 4000, energy_received_wh=ENERGY_MODULUS - 1)
    async with served(meter) as (server, client):
        await step(server, meter, balanced(T0, 500.0))
        assert (await read_all(client))["energy_delivered_wh"] == ENERGY_MODULUS - 4000
        for k in range(1, 11):  # 3.6 MW x 10 s = 10 000 Wh: 2^32 - 4000 + 10 000 = 6000 modulo 2^32
            await step(server, meter, balanced(T0 + k, 500.0))
        got = await read_all(client)
        assert got["energy_delivered_wh"] == 6000
        assert got["energy_received_wh"] == ENERGY_MODULUS - 1  # untouched: no power flowed back


@async_test
async def test_a_de_energised_terminal_reads_zero_and_energy_stops() -> None:
    meter = FeederMeter("dead")
    async with served(meter) as (server, client):
        for k in range(3):
            await step(server, meter, balanced(T0 + k, 500.0))
        # the breaker opens: 0 V, 0 A from T0+3 (the held 3.6 MW counted up to then: 3 s = 3000 Wh)
        for k in range(3, 100):
            await step(server, meter, solution(T0 + k, DEAD, DEAD))
        got = await read_all(client)
    for name in ("v_a", "v_b", "v_c", "i_a", "i_b", "i_c", "p_a", "p_b", "p_c", "p_total", "q_total", "frequency"):
        assert got[name] == 0.0, name
    assert got["energy_delivered_wh"] == 3000 and got["energy_received_wh"] == 0
    assert got["status_ok"] is True  # powered from the station battery, still talking


@async_test
async def test_a_meter_swap_resets_the_energy_and_changes_the_serial_number() -> None:
    meter = FeederMeter("swapped", energy_delivered_wh=123_456)
    async with served(meter) as (server, client):
        for k in range(11):
            await step(server, meter, balanced(T0 + k, 500.0))
        before = await read_all(client)
        assert before["energy_delivered_wh"] == 133_456
        meter.swap(T0 + 10.5)  # the old meter's last half second is lost with it
        for k in range(11, 21):
            await step(server, meter, balanced(T0 + k, 500.0))
        after = await read_all(client)
    assert after["serial_number"] != before["serial_number"]
    assert 10_000_000 <= after["serial_number"] < 100_000_000
    # 3.6 MW from T0+10.5 to T0+20: 3 600 000 x 9.5 / 3600 = 9500 Wh
    assert after["energy_delivered_wh"] == 9500
    # what really flowed through the meter's place, for the truth log: 3.6 MW for 20 s = 20 000 Wh, the swap
    # notwithstanding
    assert meter.true_delivered_wh == pytest.approx(20_000) and meter.true_received_wh == 0


def test_the_true_energy_neither_wraps_nor_resets_where_the_register_does() -> None:
    meter = FeederMeter("wraps", energy_delivered_wh=ENERGY_MODULUS - 1000)
    for k in range(3):  # 3.6 MW for 2 s: 2000 Wh, through the register's 2**32
        meter.observe(T0 + k, balanced(T0 + k, 500.0))
    assert int(meter.values(T0 + 2)["energy_delivered_wh"]) == 1000
    assert meter.true_delivered_wh == pytest.approx(2000)


@async_test
async def test_a_read_between_steps_holds_the_energy_at_its_instant() -> None:
    meter = FeederMeter("instant", energy_delivered_wh=ENERGY_MODULUS - 500)
    clock = {"t": T0}
    async with served(meter) as (server, client):
        server.on_read(1, lambda: meter.read_values(clock["t"]))
        await step(server, meter, balanced(T0, 500.0))  # 3.6 MW from T0: 1000 Wh a second
        clock["t"] = T0 + 0.25  # a quarter of a second after the step: 250 Wh more
        assert (await read_all(client))["energy_delivered_wh"] == ENERGY_MODULUS - 250
        clock["t"] = T0 + 0.75  # through 2**32: 750 - 500 = 250
        assert (await read_all(client))["energy_delivered_wh"] == 250
        clock["t"] = T0 - 5  # an instant before the last observe: that observe's registers, never fewer
        assert (await read_all(client))["energy_delivered_wh"] == ENERGY_MODULUS - 500
        # the flow reverses at T0 + 1: the second before it still held 3.6 MW (500 Wh past 2**32); 1.8 MW back
        # for 0.5 s is 250 Wh received
        await step(server, meter, balanced(T0 + 1, 250.0, lag_deg=180.0))
        clock["t"] = T0 + 1.5
        got = await read_all(client)
        assert got["energy_delivered_wh"] == 500 and got["energy_received_wh"] == 250
        server.on_read(1, None)  # without a provider the clock no longer moves the registers
        clock["t"] = T0 + 1.9
        assert (await read_all(client))["energy_received_wh"] == 250


@async_test
async def test_a_read_provider_that_raises_leaves_the_last_steps_registers() -> None:
    meter = FeederMeter("buggy")

    def broken() -> dict[str, int]:
        raise RuntimeError("model bug")

    async with served(meter) as (server, client):
        for k in range(3):
            await step(server, meter, balanced(T0 + k, 500.0))
        server.on_read(1, broken)
        got = await read_all(client)
    assert got["energy_delivered_wh"] == 2000 and got["v_a"] == f32(2400.0)


# --- writes and errors -------------------------------------------------------------------------------


@async_test
async def test_every_write_is_refused_with_illegal_address_and_stores_nothing() -> None:
    meter = FeederMeter("ro")
    async with served(meter) as (server, client):
        await step(server, meter, balanced(T0, 500.0))
        rr = await client.write_coil(0, False, device_id=1)
        assert rr.isError() and rr.exception_code == 2
        rr = await client.write_registers(16, [0, 0], device_id=1)  # zeroing the energy register
        assert rr.isError() and rr.exception_code == 2
        got = await read_all(client)
    assert got["relay_closed"] is True


def test_time_running_backwards_is_refused() -> None:
    meter = FeederMeter("m")
    meter.observe(T0, balanced(T0, 1.0))
    with pytest.raises(FeederMeterError, match="backwards"):
        meter.observe(T0 - 1, balanced(T0 - 1, 1.0))
    with pytest.raises(FeederMeterError, match="backwards"):
        meter.swap(T0 - 1)


def test_an_element_missing_from_the_solution_is_named() -> None:
    meter = FeederMeter("m", element="Line.632645")
    with pytest.raises(FeederMeterError, match="Line.632645/1"):
        meter.observe(T0, balanced(T0, 1.0))


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"element": "650632"}, "element"),
        ({"terminal": 0}, "terminal"),
        ({"terminal": True}, "terminal"),
        ({"pt_ratio": 0}, "pt_ratio"),
        ({"ct_ratio": math.inf}, "ct_ratio"),
        ({"ct_ratio": "120"}, "ct_ratio"),
        ({"registers": "tertiary"}, "registers"),
        ({"reverse": "yes"}, "reverse"),
        ({"energy_delivered_wh": -1}, "energy_delivered_wh"),
        ({"energy_received_wh": ENERGY_MODULUS}, "energy_received_wh"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_options_name_the_key_and_value(options: dict[str, Any], key: str) -> None:
    with pytest.raises(FeederMeterError, match=rf"{key} = ") as err:
        FeederMeter.from_options("m", options)
    assert repr(next(iter(options.values()))) in str(err.value)


def test_unknown_option_lists_the_allowed_ones() -> None:
    with pytest.raises(FeederMeterError, match="allowed: element, terminal"):
        FeederMeter.from_options("m", {"ct": 120})
    assert FeederMeter.from_options("m", {"element": "Line.632671", "ct_ratio": 120}).element == "Line.632671"


# --- with the real feeder physics --------------------------------------------------------------------


def test_meters_on_the_ieee13_feeder_read_the_solution_and_an_open_breaker_de_energises_the_load_side() -> None:
    from sim_hw.feeder.model import Feeder

    feeder = Feeder.from_file(ROOT / "config" / "ieee13" / "IEEE13.dss")
    source_side, load_side = FeederMeter("head-1"), FeederMeter("head-2", terminal=2, reverse=True)
    sol = feeder.solve(T0)
    for m in (source_side, load_side):
        m.observe(T0, sol)
    head = sol.terminal(ELEMENT, 1)
    s = sum((head.v[p] * head.i[p].conjugate() for p in "abc"), 0j)
    got = source_side.values(T0)
    assert got["p_total"] == pytest.approx(s.real) and got["q_total"] == pytest.approx(s.imag)
    assert 3.0e6 < got["p_total"] < 4.0e6  # the IEEE 13-node feeder's ~3.5 MW
    assert load_side.values(T0)["p_total"] == pytest.approx(s.real, rel=0.05)  # less the line's losses
    feeder.set_switch(ELEMENT, False)
    sol = feeder.solve(T0 + 1)
    for m in (source_side, load_side):
        m.observe(T0 + 1, sol)
    dead, live = load_side.values(T0 + 1), source_side.values(T0 + 1)
    assert dead["v_a"] < 1e-6 and dead["i_a"] < 1e-6 and dead["frequency"] == 0.0
    assert live["v_a"] > 2000.0 and live["i_a"] < 1e-6 and live["frequency"] == 60.0  # the bus side stays live
    for p in MAP.points:  # tiny leftovers of the solver still encode
        encode_point(p, dead[p.name])

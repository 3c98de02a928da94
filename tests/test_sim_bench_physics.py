"""The physics bench's own guards: ratings checked at start, one broken device never stops the others."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.aio import async_test
from helpers.bench import bench_config
from helpers.net import free_port

from sim_hw.bench import Bench, BenchError

pytestmark = pytest.mark.integration  # every test starts the simulated bench

ROOT = Path(__file__).resolve().parent.parent


@async_test
async def test_an_inverter_rated_above_its_pv_site_is_refused_at_start(tmp_path: Path) -> None:
    cfg = bench_config(tmp_path, ("kva = 250.0, kw = 250.0", "kva = 300.0, kw = 250.0"))
    bench = Bench(cfg)
    with pytest.raises(BenchError, match=r"device 'pv634': kva = 300: above the feeder's pv634 rating \(250 kVA\)"):
        await bench.start()
    assert not (tmp_path / "rtu-bus1").exists()  # the failed start cleaned up its pty pair


@async_test
async def test_the_bench_refuses_a_pmu_current_terminal_the_feeder_lacks(tmp_path: Path) -> None:
    config = bench_config(tmp_path, ('current = "Line.632671/2"', 'current = "Line.632671/x"'))
    bench = Bench(config)
    with pytest.raises(BenchError, match=r"pmu '.*': current = 'Line.632671/x'"):
        await bench.start()
    assert bench.pmus == {}


@async_test
async def test_a_device_whose_model_fails_is_counted_and_the_others_go_on(tmp_path: Path, mocker) -> None:
    bench = Bench(bench_config(tmp_path))
    await bench.start()
    try:
        relay = bench.model_of("head-relay")
        mocker.patch.object(relay, "observe", side_effect=RuntimeError("model bug"))  # a bug cannot be made for real
        meter = bench.model_of("sub-meter")

        def energy() -> int:  # delivered + received: at noon the PV may reverse the flow
            v = meter.values(bench.sim_time)
            return v["energy_delivered_wh"] + v["energy_received_wh"]

        before = energy()
        for _ in range(5):
            await bench.step_once()
        assert bench.device_errors == {"head-relay": 5}
        assert energy() > before  # the meter kept integrating
    finally:
        await bench.stop()


@async_test
async def test_inverters_follow_the_physics_at_any_bench_step(tmp_path: Path) -> None:
    """A half-second step: OpenDER must be stepped at the bench's step, not a fixed 1 s (its output would freeze)."""
    cfg = bench_config(tmp_path, ("step_s = 1.0", "step_s = 0.5"))
    bench = Bench(cfg)
    await bench.start()
    try:
        bench._irradiance_profile = type("Flat", (), {"value": staticmethod(lambda t: 1.0)})()  # a clear sky all day
        for _ in range(40):
            await bench.step_once()
        inverter = bench.model_of("pv675")
        full = inverter.p_kw
        assert full > 2000  # 2.5 MW array at 1000 W/m2
        bench.set_irradiance_factor(0.2)
        for _ in range(40):  # 20 simulated seconds
            await bench.step_once()
        assert inverter.p_kw < 0.3 * full
    finally:
        await bench.stop()


def max_feeder_pu(bench: Bench) -> tuple[float, str]:
    """The highest phase voltage on the feeder's buses (the substation side of the regulator excluded)."""
    sol = bench.solution
    return max((v, f"{bus}.{ph}") for bus in sol.bus_v if bus not in ("sourcebus", "650", "rg60")
               for ph, v in sol.v_pu(bus).items())  # fmt: skip


@async_test
async def test_a_cloud_clearing_pushes_the_feeder_out_of_ansi_range_a_until_the_regulator_acts(tmp_path: Path) -> None:
    """With the regulator's taps set for no PV, the PV returning at noon lifts bus 680 above
    1.05 pu (ANSI C84.1-2016 Table 1, Range A, service voltage) until the regulator steps down after its 30 s."""
    from dataclasses import replace

    scenario = tmp_path / "cloud.toml"
    scenario.write_text('[[events]]\nat_s = 5\naction = "cloud"\nfactor = 0.0\nduration_s = 300\n')
    cfg = replace(bench_config(tmp_path), scenario=scenario)
    bench = Bench(cfg)
    await bench.start()
    try:
        for _ in range(300):  # under the cloud: the regulator settles for the load alone
            await bench.step_once()
        under_cloud = max_feeder_pu(bench)
        assert under_cloud[0] < 1.0505  # at the edge: the feeder's phase unbalance holds 675 b near 1.05
        peak = (0.0, "")
        for _ in range(25):  # the cloud clears at 305 s; the regulator waits 30 s
            await bench.step_once()
            peak = max(peak, max_feeder_pu(bench))
        assert peak[0] > 1.055, peak  # clearly out of Range A
        for _ in range(120):
            await bench.step_once()
        assert max_feeder_pu(bench)[0] < 1.0505  # the regulator brought it back
        assert [name for _, name in bench.scenario.played] == ["cloud factor=0", "cloud clears"]
    finally:
        await bench.stop()


@async_test
async def test_a_meter_swap_restarts_the_energy_registers_and_changes_the_serial_over_modbus(tmp_path: Path) -> None:
    from dataclasses import replace

    from pymodbus.client import AsyncModbusTcpClient

    scenario = tmp_path / "swap.toml"
    scenario.write_text('[[events]]\nat_s = 20\naction = "meter_swap"\ndevice = "fdr-671-meter"\n')
    cfg = replace(bench_config(tmp_path, irradiance="none"), scenario=scenario)
    bench = Bench(cfg)
    await bench.start()
    port = next(d.port for d in cfg.devices if d.name == "fdr-671-meter")
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=2, retries=0)
    assert await client.connect()

    async def serial_and_energy() -> tuple[int, int]:
        rr = await client.read_holding_registers(8, count=10, device_id=1)  # serial 8-9, delivered Wh 16-17
        assert not rr.isError()
        r = rr.registers
        return (r[0] << 16) | r[1], (r[8] << 16) | r[9]  # uint32, big-endian words (docs/devices/sim-meter.md)

    try:
        for _ in range(19):
            await bench.step_once()
        serial0, energy0 = await serial_and_energy()
        p_w = bench.model_of("fdr-671-meter").values(bench.sim_time)["p_total"]
        assert energy0 == pytest.approx(p_w * 19 / 3600, rel=0.05)  # ~19 s of the branch's power
        await bench.step_once()  # t = 20 s: the swap
        await bench.step_once()
        serial1, energy1 = await serial_and_energy()
        assert serial1 != serial0 and energy1 < energy0 / 10  # a new meter, counting from 0 again
    finally:
        client.close()
        await bench.stop()


@async_test
async def test_a_meter_read_between_two_steps_holds_the_energy_at_the_reads_instant(tmp_path: Path) -> None:
    import asyncio

    from pymodbus.client import AsyncModbusTcpClient

    cfg = bench_config(tmp_path, irradiance="none")
    bench = Bench(cfg, speed=0.5)  # one 1-s step every 2 s of wall time
    await bench.start()
    port = next(d.port for d in cfg.devices if d.name == "fdr-671-meter")
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=2, retries=0)
    assert await client.connect()
    try:
        for _ in range(3):
            await bench.step_once()
        values = bench.model_of("fdr-671-meter").values(bench.sim_time)
        stored, p_w, t_step = values["energy_delivered_wh"], values["p_total"], bench.sim_time
        assert p_w > 500_000  # the branch to 671 carries over half a megawatt: 0.5 s of it is over 69 Wh
        running = asyncio.create_task(bench.run(seconds=1.8))
        await asyncio.sleep(1.0)  # half a simulated second into the step, none taken yet
        before = bench.clock()
        rr = await client.read_holding_registers(16, count=2, device_id=1)  # delivered Wh, uint32 (16-17)
        after = bench.clock()
        await running
        assert not rr.isError() and bench.sim_time == t_step
        read = (rr.registers[0] << 16) | rr.registers[1]
        assert stored + p_w * (before - t_step) / 3600 - 1 <= read <= stored + p_w * (after - t_step) / 3600 + 1
        assert read >= stored + 60
    finally:
        client.close()
        await bench.stop()


@async_test
async def test_a_bench_pmu_with_a_udp_port_sends_its_data_as_datagrams(tmp_path: Path) -> None:
    """C37.118.2: commands over TCP, data over UDP to the port the bench config names."""
    import asyncio
    import contextlib

    from protocols.c37118 import NEED_DATA, Command, CommandFrame, ConfigFrame, DataFrame, StreamReader, encode_frame

    udp_port = free_port()
    cfg = bench_config(tmp_path, ("rate = 30\n", f"rate = 30\nudp_port = {udp_port}\n"))  # pmu-671
    got: asyncio.Queue[bytes] = asyncio.Queue()

    class Proto(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            got.put_nowait(data)

    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(Proto, local_addr=("127.0.0.1", udp_port))
    bench = Bench(cfg)
    await bench.start()
    runner = asyncio.create_task(bench.run(seconds=10))  # the PMU sends as the bench's clock moves
    try:
        spec = next(p for p in cfg.pmus if p.name == "pmu-671")
        reader, writer = await asyncio.open_connection("127.0.0.1", spec.port)
        writer.write(encode_frame(CommandFrame(idcode=671, command=Command.SEND_CFG2)))
        stream = StreamReader()
        config = None
        while config is None:
            stream.feed(await asyncio.wait_for(reader.read(65536), 5))
            while (ev := stream.next_event()) is not NEED_DATA:
                config = ev if isinstance(ev, ConfigFrame) else config
        writer.write(encode_frame(CommandFrame(idcode=671, command=Command.DATA_ON)))
        udp = StreamReader([config])
        udp.feed(await asyncio.wait_for(got.get(), 5))
        frame = udp.next_event()
        assert isinstance(frame, DataFrame) and frame.idcode == 671
        va = abs(frame.pmus[0].phasor_values[0])
        assert va == pytest.approx(abs(bench.solution.v("671")["a"]), rel=0.01)  # bus 671 phase a, volts
        writer.close()
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
        await bench.stop()
        transport.close()


@async_test
async def test_a_waveform_stream_on_a_bus_shows_the_feeders_fault_dip_trip_and_reclose(tmp_path: Path) -> None:
    """The shipped bench's [[waveforms]] pq671 (bus = "671"): the stream's voltages follow the solved bus, so a fault is a dip, the relay's
    trip an interruption and the reclose the return, each to within a block (20 ms) of its bench step."""
    import asyncio
    import contextlib
    from dataclasses import replace

    import numpy as np

    from protocols.wavestream import WaveStreamClient

    scenario = tmp_path / "fault.toml"
    scenario.write_text('[[events]]\nat_s = 3\naction = "fault"\nbus = "671"\nr_ohm = 0.01\nduration_s = 3\n')
    cfg = replace(bench_config(tmp_path, irradiance="none"), scenario=scenario)
    (stream,) = cfg.waveforms  # the shipped bench's pq671, on bus 671
    port = stream.port
    bench = Bench(cfg, speed=5.0)
    await bench.start()
    pre_fault_pu = bench.solution.v_pu("671")["a"]
    runner = asyncio.create_task(bench.run(seconds=3.0))  # 15 simulated seconds
    blocks = []
    try:
        async with WaveStreamClient("127.0.0.1", port) as client:
            async for block in client:
                blocks.append(block)
                if sum(b.n_samples for b in blocks) >= 12 * 7680:  # 12 s of signal at 7680 Hz
                    break
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
        await bench.stop()
    va = np.concatenate([b.data[0] for b in blocks])
    t0 = blocks[0].first_sample / 7680  # the stream's timeline starts at the bench's start
    cycles = va[: len(va) // 128 * 128].reshape(-1, 128)
    rms = np.sqrt((cycles**2).mean(axis=1))  # one value per 60 Hz cycle, computed here by hand
    t = t0 + np.arange(len(rms)) / 60.0

    def level(a: float, b: float) -> float:
        return float(np.median(rms[(t >= a) & (t < b)]))

    clean = 120.0 * np.sqrt(1 + 0.012**2 + 0.015**2 + 0.008**2)  # the description's va with its harmonics
    assert level(1.0, 2.9) == pytest.approx(clean * pre_fault_pu, rel=0.01)  # before the fault: the bus's own voltage
    # a bolted fault at 671 (~6 kA at the head, 7x the relay's pickup): the 51 element trips within 3 s
    assert level(3.05, 5.5) < 0.05 * clean  # the fault: a dip to a few per cent
    assert level(6.05, 6.95) < 0.01 * clean  # the head relay has tripped: an interruption until it recloses
    assert level(8.0, 11.0) == pytest.approx(clean * pre_fault_pu, rel=0.02)  # reclosed after 2 s, back to normal


@async_test
async def test_a_waveform_on_an_unknown_bus_is_refused_at_start(tmp_path: Path) -> None:
    bench = Bench(bench_config(tmp_path, ('bus = "671"                      # va', 'bus = "999"  # va')))
    with pytest.raises(BenchError, match=r"waveform 'pq671': bus = '999': not a bus of the feeder"):
        await bench.start()


@async_test
async def test_a_scenario_fault_on_a_bus_the_feeder_lacks_is_refused_at_start(tmp_path: Path) -> None:
    from dataclasses import replace

    scenario = tmp_path / "s.toml"
    scenario.write_text('[[events]]\nat_s = 5\naction = "fault"\nbus = "999"\nduration_s = 1\n')
    bench = Bench(replace(bench_config(tmp_path), scenario=scenario))
    with pytest.raises(BenchError, match=r"scenario: fault bus '999' is not a bus of the feeder"):
        await bench.start()


@async_test
async def test_a_device_whose_values_cannot_be_served_keeps_its_registers_and_the_others_go_on(
    tmp_path: Path, mocker
) -> None:
    bench = Bench(bench_config(tmp_path))
    await bench.start()
    try:
        meter = bench.model_of("sub-meter")
        mocker.patch.object(meter, "values", side_effect=RuntimeError("model bug"))  # a bug cannot be made for real
        relay, t0 = bench.model_of("head-relay"), bench.sim_time
        for _ in range(3):
            await bench.step_once()
        assert bench.device_errors == {"sub-meter": 3}
        assert bench.sim_time == t0 + 3 and relay.values(bench.sim_time)  # the bench went on
    finally:
        await bench.stop()

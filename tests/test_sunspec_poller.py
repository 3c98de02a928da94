"""The agent's SunSpec poller against the bench's inverter over real Modbus TCP (and, once, RTU over a socat pty):
discovery at connect, readings named <device>.<model>.<point> with the definition's units, every scaled value decoded
with the SF read in the same poll, "not implemented" values INVALID, settings models on their own schedule, a device
discovered again after it went away or changed, and writes with readback through the poller's own link."""

from __future__ import annotations

import asyncio
import logging

import pytest
from helpers.aio import async_test
from helpers.pty import PtyPair
from helpers.sunspec import inverter, served_image, served_inverter, solution, sunspec_device

from agent.acquisition import EVERY_POLL_MODELS, SunSpecPoller, build_pollers, sunspec_links
from agent.points import Quality, Reading, Stream
from protocols.modbus.client import TcpTransport
from protocols.modbus.serialbus import SerialBusRegistry
from protocols.sunspec.write import Applied
from sim_hw.devices.modbus_server import ModbusDeviceServer

MEAS, VV = "DERMeasureAC", "DERVoltVar"


class Batches:
    """The poller's sink: one list per poll."""

    def __init__(self) -> None:
        self.batches: list[list[Reading]] = []

    def __call__(self, readings: list[Reading]) -> None:
        self.batches.append(list(readings))

    def last(self) -> dict[str, Reading]:
        return {r.point: r for r in self.batches[-1]}

    def all(self) -> dict[str, Reading]:
        return {r.point: r for batch in self.batches for r in batch}


def poller(port: int, sink: Batches, **kw: object) -> SunSpecPoller:
    dev = sunspec_device("pv675", port, timeout_s=0.3, retries=0, **kw)
    (p,) = build_pollers([dev], sink)
    assert isinstance(p, SunSpecPoller)
    return p


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@async_test
async def test_readings_are_named_device_model_point_with_the_definitions_units() -> None:
    async with served_inverter() as rig:
        await rig.step(solution(v_pu=1.02), n=3)
        sink = Batches()
        p = poller(rig.port, sink)
        try:
            assert await p.poll_once()
        finally:
            await p.transport.close()
    got = sink.all()
    w = got[f"pv675.{MEAS}.W"]
    assert (w.unit, w.quality, w.stream) == ("W", Quality.GOOD, Stream.TELEMETRY)
    assert w.value == pytest.approx(rig.inv.p_kw * 1000, abs=10.0 ** rig.inv.layout.sf_of(f"{MEAS}.W"))
    assert got[f"pv675.{MEAS}.Hz"].value == 60.0 and got[f"pv675.{MEAS}.Hz"].unit == "Hz"
    assert got[f"pv675.{MEAS}.LNV"].value == pytest.approx(1.02 * 4160 / 3**0.5, abs=0.1)
    assert got["pv675.common.SN"].value == rig.inv.serial_number and got["pv675.common.Mn"].value == "GridEdge Sim"
    assert got[f"pv675.{VV}.Crv[1].Pt[1].V"].value == 92.0  # IEEE 1547-2018 Table 8, Category B: V1 = 92 %
    assert got[f"pv675.{MEAS}.TotWhInj"].stream is Stream.ENERGY and got[f"pv675.{MEAS}.TotWhInj"].unit == "Wh"
    names = [r.point for batch in sink.batches for r in batch]
    assert not [n for n in names if n.endswith(("_SF", ".ID", ".L", ".Pad"))], "SFs and headers are never emitted"
    assert not [n for n in names if ".DERCapacity." in n or ".DEREnterService." in n], "702, 703 are not polled"


@async_test
async def test_a_live_scale_factor_change_is_decoded_with_the_new_sf_at_the_next_poll() -> None:
    async with served_inverter() as rig:
        await rig.step()
        sf0 = rig.inv.layout.sf_of(f"{MEAS}.W")
        sink = Batches()
        p = poller(rig.port, sink)
        try:
            assert await p.poll_once()
            # the device now holds W = raw 1234 with W_SF one step coarser
            await rig.server.update(1, {f"{MEAS}.W": 1234 * 10.0**sf0, f"{MEAS}.W_SF": sf0 + 1})
            assert await p.poll_once()
            first = sink.last()[f"pv675.{MEAS}.W"]
            await rig.server.update(1, {f"{MEAS}.W_SF": sf0 - 1})  # only the SF changes
            assert await p.poll_once()
            second = sink.last()[f"pv675.{MEAS}.W"]
        finally:
            await p.transport.close()
    assert first.quality is Quality.GOOD and first.value == pytest.approx(1234 * 10.0 ** (sf0 + 1))
    assert second.quality is Quality.GOOD and second.value == pytest.approx(1234 * 10.0 ** (sf0 - 1))


@async_test
async def test_a_value_or_its_sf_reading_not_implemented_is_invalid_not_a_number() -> None:
    async with served_inverter() as rig:
        await rig.step()
        scale = 10.0 ** rig.inv.layout.sf_of(f"{MEAS}.W")
        sink = Batches()
        p = poller(rig.port, sink)
        try:
            assert await p.poll_once()
            await rig.server.update(1, {f"{MEAS}.W": -32768 * scale})  # int16 0x8000: not implemented
            assert await p.poll_once()
            value_absent = sink.last()
            assert await p.poll_once()
            again = sink.last()
            await rig.server.update(1, {f"{MEAS}.W": 1000 * scale})
            assert await p.poll_once()
            implemented = sink.last()
            await rig.server.update(1, {f"{MEAS}.W_SF": -32768})
            assert await p.poll_once()
            sf_absent = sink.last()
            await rig.server.update(1, {f"{MEAS}.W_SF": 0})
            assert await p.poll_once()
            back = sink.last()
        finally:
            await p.transport.close()
    w = f"pv675.{MEAS}.W"
    assert (value_absent[w].value, value_absent[w].quality) == (None, Quality.INVALID)
    assert w not in again, "a point that stays 'not implemented' is reported once, not at every poll"
    assert implemented[w].quality is Quality.GOOD
    assert (sf_absent[w].value, sf_absent[w].quality) == (None, Quality.INVALID)
    assert sf_absent[f"pv675.{MEAS}.VA"].quality is Quality.GOOD, "another SF's values are unaffected"
    assert (back[w].value, back[w].quality) == (1000.0, Quality.GOOD)


@async_test
async def test_settings_models_are_read_on_their_schedule_and_at_the_poll_after_a_write() -> None:
    async with served_inverter() as rig:
        sink = Batches()
        clock = FakeMonotonic()
        dev = sunspec_device("pv675", rig.port, timeout_s=0.3, settings_poll_interval_s=60.0)
        p = SunSpecPoller(dev, TcpTransport("127.0.0.1", rig.port, timeout_s=0.3), sink, monotonic=clock)
        v1 = f"pv675.{VV}.Crv[2].Pt[1].V"
        try:
            assert await p.poll_once()
            assert sink.last()[v1].value == 92.0
            assert await p.poll_once()
            assert v1 not in sink.last() and f"pv675.{MEAS}.W" in sink.last()
            pts = zip((93.0, 97.0, 103.0, 107.0), (40.0, 0.0, 0.0, -40.0), strict=True)
            points = {
                f"{VV}.Crv[2].Pt[{i}].{k}": x for i, (v, q) in enumerate(pts, 1) for k, x in (("V", v), ("Var", q))
            }
            outcome = await p.link.write_points(points)
            assert isinstance(outcome, Applied)
            assert await p.poll_once()
            assert sink.last()[v1].value == 93.0, "the written model is read at the next poll"
            assert await p.poll_once()
            assert v1 not in sink.last()
            clock.now += 60.0
            assert await p.poll_once()
            assert sink.last()[v1].value == 93.0
        finally:
            await p.transport.close()
    assert 701 in EVERY_POLL_MODELS and 704 in EVERY_POLL_MODELS and 705 not in EVERY_POLL_MODELS


@async_test
async def test_a_device_that_went_away_is_discovered_again_and_its_replacement_is_seen() -> None:
    async with served_inverter() as rig:
        sink = Batches()
        p = poller(rig.port, sink)
        assert await p.poll_once() and p.link.discoveries == 1
        first_sn = sink.all()["pv675.common.SN"].value
        port = rig.port
    try:
        assert not await p.poll_once()  # the server is gone: STALE, and the link forgets the layout
        assert p.link.layout is None
        assert not await p.poll_once()  # discovery finds nothing: the points it knew are STALE
        assert sink.last()[f"pv675.{MEAS}.W"].quality is Quality.STALE
        assert "SunSpec discovery" in p.stats.last_error
        # another inverter, with its map at 50000, answers on the same address
        async with served_inverter(inverter(base=50000, name="replacement"), port=port) as other:
            assert await p.poll_once()
            assert p.link.discoveries == 2 and p.link.layout is not None and p.link.layout.base == 50000
            assert sink.all()["pv675.common.SN"].value == other.inv.serial_number != first_sn
            assert sink.last()[f"pv675.{MEAS}.Hz"].quality is Quality.GOOD
    finally:
        await p.transport.close()


@async_test
async def test_a_changed_model_header_makes_the_poll_invalid_and_the_device_is_discovered_again(caplog) -> None:
    caplog.set_level(logging.WARNING, "gridedge.acquisition")
    async with served_inverter() as rig:
        sink = Batches()
        p = poller(rig.port, sink)
        try:
            assert await p.poll_once()
            await rig.server.update(1, {f"{MEAS}.L": 150})  # 701's length no longer what was discovered
            await p.poll_once()
            changed = sink.last()
            assert p.link.layout is None and "SunSpec layout changed" in p.stats.last_error
            await rig.server.update(1, {f"{MEAS}.L": 153})
            assert await p.poll_once()
            back = sink.last()
        finally:
            await p.transport.close()
    assert {r.quality for r in changed.values()} == {Quality.INVALID}
    assert back[f"pv675.{MEAS}.Hz"].quality is Quality.GOOD and p.link.discoveries == 2
    line = next(r.getMessage() for r in caplog.records if "event=sunspec_layout_changed" in r.getMessage())
    assert "point=DERMeasureAC.L" in line and "expected=153 found=150" in line


@async_test
async def test_a_device_without_sunspec_is_named_in_the_status_and_polled_again(caplog) -> None:
    caplog.set_level(logging.WARNING, "gridedge.acquisition")
    async with served_image({0: 100, 1: 101, 2: 102, 3: 103}) as port:
        sink = Batches()
        p = poller(port, sink)
        try:
            assert not await p.poll_once()
        finally:
            await p.transport.close()
    assert sink.batches == []
    assert p.stats.last_error.startswith("SunSpec discovery: no SunSpec marker 'SunS'")
    assert any("event=sunspec_discovery_failed device=pv675" in r.getMessage() for r in caplog.records)


@async_test
async def test_models_the_device_lacks_are_named_and_the_others_polled(caplog) -> None:
    caplog.set_level(logging.WARNING, "gridedge.acquisition")
    async with served_inverter() as rig:
        sink = Batches()
        p = poller(rig.port, sink, models=(701, 713))
        try:
            assert await p.poll_once()
        finally:
            await p.transport.close()
    assert f"pv675.{MEAS}.W" in sink.last()
    assert any("event=sunspec_model_missing device=pv675 models=713" in r.getMessage() for r in caplog.records)


@async_test
async def test_writes_and_polls_share_the_link_without_interleaving() -> None:
    async with served_inverter() as rig:
        sink = Batches()
        p = poller(rig.port, sink)
        links = sunspec_links([p])
        try:
            assert await p.poll_once()
            curves = [{f"{VV}.Crv[2].Pt[1].V": v} for v in (93.0, 94.0, 95.0)]
            results = await asyncio.gather(p.poll_once(), *(links["pv675"].write_points(c) for c in curves),
                                           p.poll_once())  # fmt: skip
        finally:
            await p.transport.close()
    assert results[0] is True and results[-1] is True
    assert [r.outcome for r in results[1:-1]] == ["applied"] * 3
    assert rig.inv.settings[f"{VV}.Crv[2].Pt[1].V"] == 95.0


@pytest.mark.integration
@async_test
async def test_a_sunspec_inverter_over_rtu_is_discovered_polled_and_written(pty_pair: PtyPair) -> None:
    inv = inverter()
    server = ModbusDeviceServer.rtu(pty_pair.b, {1: inv.register_map}, baudrate=19200)
    await server.start()
    server.on_write(1, inv.on_write)
    await server.update(1, inv.values())
    sink = Batches()
    registry = SerialBusRegistry()
    (p,) = build_pollers([sunspec_device("pv-rtu", serial_port=pty_pair.a, timeout_s=0.5)], sink, registry=registry)
    try:
        assert await p.poll_once()
        assert sink.all()["pv-rtu.common.SN"].value == inv.serial_number
        assert sink.last()[f"pv-rtu.{MEAS}.Hz"].value == 60.0
        outcome = await p.link.write_points({f"{VV}.Crv[2].Pt[1].V": 93.0})  # type: ignore[attr-defined]
        assert isinstance(outcome, Applied) and outcome.readback == {f"{VV}.Crv[2].Pt[1].V": 93.0}
    finally:
        await p.transport.close()
        await registry.close()
        await server.stop()
    assert inv.settings[f"{VV}.Crv[2].Pt[1].V"] == 93.0


@async_test
async def test_the_link_reads_points_now_with_their_sfs_discovering_the_device_first() -> None:
    async with served_inverter() as rig:
        await rig.step()
        sink = Batches()
        p = poller(rig.port, sink)
        try:
            got = await p.link.read_points([f"{MEAS}.Hz", f"{MEAS}.TmpAmb", f"{VV}.Crv[1].Pt[4].Var"])
        finally:
            await p.transport.close()
    assert got == {f"{MEAS}.Hz": (60.0, ""), f"{MEAS}.TmpAmb": (None, "not implemented"),
                   f"{VV}.Crv[1].Pt[4].Var": (-100.0, "")}  # fmt: skip
    assert p.link.discoveries == 1 and sink.batches == []


@async_test
async def test_capacity_and_enter_service_are_polled_when_listed_and_703_is_written_with_readback() -> None:
    """702 and 703, read from pysunspec2's definitions like every model: polled once listed in ``models``; an enter
    service setting (IEEE 1547-2018 4.10.2: the delay) written through the poller's link and read back."""
    async with served_inverter() as rig:
        await rig.step()
        sink = Batches()
        p = poller(rig.port, sink, models=(701, 702, 703, 704))
        try:
            assert await p.poll_once()
            got = sink.last()
            outcome = await p.link.write_points({"DEREnterService.ESDlyTms": 120})
            assert await p.poll_once()
            after = sink.last()
        finally:
            await p.transport.close()
    assert got["pv675.DERCapacity.WMaxRtg"].quality is Quality.GOOD and got["pv675.DERCapacity.WMaxRtg"].value > 0
    assert got["pv675.DEREnterService.ESVHi"].value == pytest.approx(105.0)  # IEEE 1547-2018 Table 4: 1.05 VN
    assert got["pv675.DEREnterService.ESDlyTms"].value == 300  # Table 4: 300 s
    assert isinstance(outcome, Applied) and rig.inv.settings["DEREnterService.ESDlyTms"] == 120
    assert after["pv675.DEREnterService.ESDlyTms"].value == 120, "the written model is read at the next poll"

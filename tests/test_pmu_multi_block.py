"""A PDC's stream (NUM_PMU > 1, IEEE C37.118.2-2011 6.4 Table 8): every PMU block monitored as a PMU of its own.

The stream comes from a real SimPmu with extra PMU blocks over TCP; each block's values come from its
own constant source, so the expected readings are the source's numbers (not the code under test's).
"""

from __future__ import annotations

import cmath
import json
import math
import sqlite3
from dataclasses import replace

import pytest
from helpers.aio import async_test, running_tasks, until
from helpers.sinks import Taken

from agent.pmu.config import AnglePairConfig, PmuMonitoringConfig, PmuStreamConfig
from agent.pmu.ingest import PmuIngest, PmuMonitoring, PmuStream, block_names, phasor_kinds
from agent.points import Quality
from agent.store import AsyncStore, Store
from protocols.c37118 import ConfigFrame, DataFrame, FrameType, PmuConfig, decode_frame, encode_frame
from sim_hw.devices.pmu import DEFAULT_PHASORS, PmuMeasurement, PmuSimError, SimPmu, SimPmuBlock

RATE = 30
MON = PmuMonitoringConfig(window_before_s=0.5, window_after_s=0.5, hold_off_s=1.0, frequency_pickup_s=0.1,
                          angle_pickup_s=0.2, buffer_s=10.0)  # fmt: skip
NOMINAL_V = 7200.0


class Const:
    """Balanced phasors of ``v`` volts at ``angle_deg`` (A phase), 200 A at 0.95 pf, at ``freq_hz``."""

    def __init__(self, freq_hz: float, v: float, angle_deg: float) -> None:
        self.freq_hz, self.v, self.angle_deg = freq_hz, v, angle_deg

    def __call__(self, t: float) -> PmuMeasurement:
        th = math.radians(self.angle_deg)
        volts = [cmath.rect(self.v, th - 2 * math.pi / 3 * k) for k in range(3)]
        amps = [cmath.rect(200.0, th - math.acos(0.95) - 2 * math.pi / 3 * k) for k in range(3)]
        return PmuMeasurement(tuple(volts + amps), self.freq_hz, 0.0, (1.0, 2.0), (1,))


def pdc(**kw) -> SimPmu:
    """IDCODE 7 streams three PMU blocks: 'SUB A' (itself), 'SUB B' and 'SUB.C' (8, 9)."""
    a, b, c = Const(60.0, 7200.0, 10.0), Const(60.01, 7100.0, -5.0), Const(59.99, 7300.0, 20.0)
    kw.setdefault("rate", RATE)
    return SimPmu(7, "SUB A", source=a, extra_blocks=(SimPmuBlock(8, "SUB B", b), SimPmuBlock(9, "SUB.C", c)), **kw)


def stream_cfg(pmu: SimPmu, **kw) -> PmuStreamConfig:
    return PmuStreamConfig(name="pdc", host="127.0.0.1", port=pmu.port, idcode=7, nominal_v=NOMINAL_V, **kw)


def test_block_names_one_block_keeps_the_stream_name_several_get_their_station() -> None:
    def cfg(*stations: tuple[str, int]) -> ConfigFrame:
        return ConfigFrame(idcode=1, pmus=tuple(PmuConfig(station=s, idcode=i) for s, i in stations))

    assert block_names("pmu1", cfg(("ANY", 1))) == ("pmu1",)
    assert block_names("pdc", cfg(("SUB A", 1), ("SUB.B", 2), ("N/E", 3))) == ("pdc/SUB_A", "pdc/SUB_B", "pdc/N_E")
    # repeated or empty stations: the IDCODE tells them apart
    assert block_names("pdc", cfg(("X", 1), ("X", 2), ("", 3))) == ("pdc/X#1", "pdc/X#2", "pdc/pmu#3")


def test_every_block_gets_its_own_readings_buffer_and_monitors() -> None:
    sim = pdc()
    taken, triggers = Taken(), []
    now = [0.0]
    s = PmuStream(stream_cfg(sim), MON, taken, lambda t, *_: triggers.append(t), clock=lambda: now[0])
    assert list(s.blocks) == ["pdc"]  # before any configuration: the stream itself (it can go stale)
    k0 = 1_700_000_000 * RATE
    for k in range(k0, k0 + 2 * RATE):
        now[0] = k / RATE + 0.01
        s.on_frame(sim.data_frame(k))
    assert list(s.blocks) == ["pdc/SUB_A", "pdc/SUB_B", "pdc/SUB_C"]
    for name, (freq, v, ang) in zip(s.blocks, [(60.0, 7200, 10.0), (60.01, 7100, -5.0), (59.99, 7300, 20.0)],
                                    strict=True):  # fmt: skip
        ing = s.blocks[name]
        assert ing.stats.frames == 2 * RATE and len(ing.buffer) == 2 * RATE
        got = {r.point: r.value for r in taken.readings if r.point.startswith(name + ".") and r.ts == 1_700_000_001}
        # integer FREQ is the mHz deviation (6.3 Table 6): 60.01 Hz travels as +10 mHz exactly
        assert got[f"{name}.frequency"] == pytest.approx(freq, abs=1e-9)
        assert got[f"{name}.VA.mag"] == pytest.approx(v, rel=1e-6)  # float32 phasors
        assert got[f"{name}.VA.ang"] == pytest.approx(ang, abs=1e-4)
        assert got[f"{name}.VB.ang"] == pytest.approx(ang - 120.0, abs=1e-4)
        assert got[f"{name}.IA.mag"] == pytest.approx(200.0, rel=1e-6)
    assert triggers == []


def test_a_condition_on_one_block_is_that_blocks_event_only() -> None:
    sim = pdc()
    sim._block_sources[0] = Const(61.5, 7100.0, -5.0)  # SUB B past OF1 (61.2 Hz, IEEE 1547-2018 Table 19)
    triggers = []
    s = PmuStream(stream_cfg(sim), MON, Taken(), lambda t, *_: triggers.append(t), clock=lambda: 0.0)
    k0 = 1_700_000_000 * RATE
    for k in range(k0, k0 + RATE):
        s.on_frame(sim.data_frame(k))
    assert [(t.kind, t.source) for t in triggers] == [("pmu_frequency", "pdc/SUB_B")]
    assert triggers[0].data["frequency_hz"] == pytest.approx(61.5)


def test_a_new_configuration_keeps_blocks_by_name_and_drops_the_gone() -> None:
    sim = pdc()
    seen = []
    s = PmuStream(stream_cfg(sim), MON, Taken(), lambda *_: None, on_blocks=lambda st: seen.append(list(st.blocks)))
    s.on_config(sim.config)
    a = s.blocks["pdc/SUB_A"]
    two = replace(sim.config, pmus=sim.config.pmus[:1] + sim.config.pmus[2:])  # SUB B leaves the PDC
    s.on_config(two)
    assert list(s.blocks) == ["pdc/SUB_A", "pdc/SUB_C"] and s.blocks["pdc/SUB_A"] is a
    assert s.blocks["pdc/SUB_C"].block == 1  # its values now sit where SUB B's were
    s.on_config(replace(sim.config, pmus=sim.config.pmus[:1]))  # one block: the stream's own name again
    assert seen == [["pdc/SUB_A", "pdc/SUB_B", "pdc/SUB_C"], ["pdc/SUB_A", "pdc/SUB_C"], ["pdc"]]
    assert DataFrame.block_offsets(two) == (5, 5 + 1 + 2 * len(DEFAULT_PHASORS) + 2 + 2 + 1)


def events(db) -> list[dict]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT ts, kind, severity, source, text, data FROM events ORDER BY id").fetchall()
    return [dict(zip(("ts", "kind", "severity", "source", "text", "data"), r, strict=True)) for r in rows]


@async_test
async def test_pdc_stream_over_tcp_with_cfg3_in_pieces_each_block_monitored_and_conditions_clear(tmp_path):
    # A CFG-3 of three blocks is ~1 kB: in frames of at most 200 bytes it goes in several pieces (CONT_IDX).
    db = tmp_path / "agent.db"
    store = AsyncStore(Store(db, "site1", 64 * 1024 * 1024))
    taken = Taken()
    pair = AnglePairConfig("pdc/SUB_A", "pdc/SUB_C", "VA", 5.0)  # SUB A at 10 deg, SUB C at 20 deg: 10 apart
    mon_cfg = replace(MON, angle_pairs=(pair,))
    async with pdc(port=0, cfg3_max_frame_size=200) as sim:
        assert len(encode_frame(sim.config_frame(FrameType.CFG3))) > 200  # so it cannot go in one frame
        mon = PmuMonitoring((stream_cfg(sim, cfg=3),), mon_cfg, taken, store)
        async with running_tasks(mon.clients["pdc"].run(), mon.run_events()):
            await until(lambda: "pdc/SUB_B" in mon.ingests and mon.ingests["pdc/SUB_B"].stats.frames >= RATE, 10)
            ingests = mon.ingests
            assert type(ingests["pdc/SUB_A"].config).__name__ == "Config3Frame"  # reassembled from its pieces
            sim._block_sources[0] = Const(61.5, 7100.0, -5.0)  # SUB B over frequency
            await until(lambda: ingests["pdc/SUB_B"].stats.triggers >= 1, 10)
            sim._block_sources[0] = Const(60.0, 7100.0, -5.0)  # and back: cleared after the 1 s hold-off
            await until(lambda: mon.events_stored >= 3, timeout=10)  # angle pair, frequency, frequency cleared
            status = mon.status()
        await store.aclose()
    got = events(db)
    kinds = sorted((e["kind"], e["severity"], e["source"]) for e in got)
    assert kinds == [("pmu_angle_difference", "warning", "pdc/SUB_A/pdc/SUB_C"),
                     ("pmu_frequency", "error", "pdc/SUB_B"), ("pmu_frequency", "info", "pdc/SUB_B")]  # fmt: skip
    angle = next(json.loads(e["data"]) for e in got if e["kind"] == "pmu_angle_difference")
    assert angle["angle_difference_deg"] == pytest.approx(-10.0, abs=0.01)
    raised, cleared = [e for e in got if e["kind"] == "pmu_frequency"]
    c = json.loads(cleared["data"])
    assert "cleared after" in cleared["text"] and c["cleared"] is True and c["raised_ts"] == raised["ts"]
    assert c["duration_s"] == pytest.approx(cleared["ts"] - raised["ts"], abs=1e-3) and c["duration_s"] > 0
    assert c["frequency_hz"] == pytest.approx(61.5) and "window" in c
    assert set(status) == {"pdc/SUB_A", "pdc/SUB_B", "pdc/SUB_C"}
    assert [status[n]["idcode"] for n in sorted(status)] == [7, 8, 9]
    assert all(s["stream"] == "pdc" and s["connected"] and s["frame_errors"] == 0 for s in status.values())
    mags = {r.point: r.value for r in taken.readings if r.point.endswith(".VA.mag") and r.quality is Quality.GOOD}
    assert mags["pdc/SUB_C.VA.mag"] == pytest.approx(7300.0, rel=1e-6)


def test_simulator_refuses_repeated_idcodes_and_a_cfg3_frame_size_too_small() -> None:
    with pytest.raises(PmuSimError, match="IDCODEs"):
        SimPmu(7, "A", extra_blocks=(SimPmuBlock(7, "B"),))
    with pytest.raises(PmuSimError, match="IDCODEs"):
        SimPmu(7, "A", extra_blocks=(SimPmuBlock(8, "B"), SimPmuBlock(8, "C")))
    with pytest.raises(PmuSimError, match="cfg3_max_frame_size"):
        SimPmu(7, "A", cfg3_max_frame_size=18)  # 14 header + 2 CONT_IDX + 2 CHK leave no byte of configuration


def test_an_ingest_for_a_block_the_configuration_does_not_have_says_so() -> None:
    sim = SimPmu(7, "A")
    ingest = PmuIngest(stream_cfg(sim), MON, Taken(), lambda *_: None, block=1, name="pdc/B")
    with pytest.raises(ValueError, match="block 1 of a configuration with 1"):
        ingest.on_config(sim.config)


def test_cfg3_phasor_kinds_come_from_phscale_bit_3() -> None:
    # 6.4 Table 11: PHSCALE type indicator bit 3 = 0 voltage, 1 current; CFG-3 has no PHUNIT on the wire
    cfg3 = decode_frame(encode_frame(pdc().config_frame(FrameType.CFG3)))
    assert cfg3.pmus[0].phasor_units == ()
    assert phasor_kinds(cfg3.pmus[0]) == tuple(k for _, k in DEFAULT_PHASORS) == (0, 0, 0, 1, 1, 1)

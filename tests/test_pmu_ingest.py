"""PMU ingest: a real SimPmu over TCP, the agent's PMU monitoring, events in the agent's SQLite store."""

from __future__ import annotations

import cmath
import json
import math
import sqlite3
import time
from dataclasses import asdict, replace

import pytest
from helpers.aio import async_test, running_tasks, until
from helpers.sinks import Taken

from agent.pmu.config import AnglePairConfig, PmuMonitoringConfig, PmuStreamConfig
from agent.pmu.ingest import (
    IDLE_TICK_S,
    READ_BATCH_S,
    TICK_S,
    PmuIngest,
    PmuMonitoring,
    batch_interval_s,
    phasor_layout,
)
from agent.points import Quality
from agent.store import AsyncStore, Store
from protocols.c37118 import DataFormat, DataFrame, FrameType, PhasorKind
from sim_hw.devices.pmu import SimPmu, balanced_source

RATE = 30
MON = PmuMonitoringConfig(window_before_s=0.5, window_after_s=0.5, hold_off_s=1.0, frequency_pickup_s=0.1,
                          buffer_s=10.0)  # fmt: skip


def events(db) -> list[dict]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT ts, kind, severity, source, text, data FROM events ORDER BY id").fetchall()
    return [dict(zip(("ts", "kind", "severity", "source", "text", "data"), r, strict=True)) for r in rows]


def stream(pmu: SimPmu, name: str = "pmu1", **kw) -> PmuStreamConfig:
    return PmuStreamConfig(name=name, host="127.0.0.1", port=pmu.port, idcode=pmu.idcode, nominal_v=7200.0, **kw)


# ---- ingest without sockets: frames built by the simulator's codec ---------------------------------------


def test_ingest_reports_once_per_second_with_units_and_stat_quality():
    pmu = SimPmu(7, "SUB A", rate=RATE)
    taken, triggers = Taken(), []
    now = [0.0]
    ing = PmuIngest(stream(pmu), MON, taken, lambda t, *_: triggers.append(t), clock=lambda: now[0])
    ing.on_config(pmu.config)
    k0 = 1_700_000_000 * RATE
    for k in range(k0, k0 + 3 * RATE):
        now[0] = k / RATE + 0.01
        ing.on_frame(pmu.data_frame(k))
    assert ing.stats.frames == 3 * RATE and len(ing.buffer) == 3 * RATE
    freq = taken.points(".frequency")
    assert [r.ts for r in freq] == [1_700_000_000.0, 1_700_000_001.0, 1_700_000_002.0]
    assert all(r.unit == "Hz" and r.quality is Quality.GOOD and 59.9 < r.value < 60.1 for r in freq)
    va = taken.points("pmu1.VA.mag")
    assert va[0].unit == "V" and 7100 < va[0].value < 7300
    assert taken.points("pmu1.IA.mag")[0].unit == "A" and taken.points("pmu1.VA.ang")[0].unit == "deg"
    assert taken.points(".rocof")[0].unit == "Hz/s"
    assert triggers == [] and ing.stats.late == 0
    # sync lost: the angles lose their quality (meaningless without UTC), the magnitudes keep it
    pmu.lose_sync()
    for k in range(k0 + 3 * RATE, k0 + 4 * RATE):
        ing.on_frame(pmu.data_frame(k))
    assert taken.points("pmu1.VA.ang")[-1].quality is Quality.INVALID
    assert taken.points("pmu1.VA.mag")[-1].quality is Quality.GOOD
    assert [t.kind for t in triggers] == ["pmu_time_sync"]


def test_ingest_out_of_order_frame_not_buffered_and_late_counted():
    pmu = SimPmu(7, "SUB A", rate=RATE)
    ing = PmuIngest(stream(pmu), MON, Taken(), lambda *a: None, clock=lambda: 2e9)
    k0 = 1_700_000_000 * RATE
    ing.on_frame(pmu.data_frame(k0 + 1))
    ing.on_frame(pmu.data_frame(k0))
    assert ing.stats.out_of_order == 1 and len(ing.buffer) == 1 and ing.stats.late == 2


def test_ingest_values_from_raw_words_equal_the_per_pmu_view_for_every_format():
    # on_frame reads STAT, FREQ/DFREQ and phasors from DataFrame.words through precomputed indices; the
    # reference is the codec's own per-PMU view (PmuData.frequency_hz, .phasor_values) of the same frame.
    k0 = 1_700_000_000 * RATE
    for bits in range(16):
        fmt = DataFormat.from_word(bits)
        pmu = SimPmu(7, "SUB A", rate=RATE, format=fmt)
        for cfg in (pmu.config, pmu.config_frame(FrameType.CFG3)):
            ing = PmuIngest(stream(pmu), MON, Taken(), lambda *a: None, clock=lambda: 2e9)
            ing.on_config(cfg)
            for k in range(k0, k0 + 5):
                frame = DataFrame(cfg, pmu.data_frame(k).words)
                ing.on_frame(frame)
                ref = frame.pmus[0]
                expected = [ref.frequency_hz, ref.rocof_hz_per_s]
                for v, u in zip(ref.phasor_values, cfg.pmus[0].phasor_units, strict=True):
                    expected += [
                        abs(v) / 7200.0 if u.kind == PhasorKind.VOLTAGE else abs(v),
                        math.degrees(cmath.phase(v)),
                    ]
                ((ts, row),) = ing.buffer.latest(1)
                assert ts == float(frame.timestamp.as_fraction())
                assert row == pytest.approx(expected, rel=1e-12, abs=1e-9), (fmt, type(cfg).__name__)


def test_buffer_of_a_replaced_configuration_still_reads_with_its_own_layout():
    # The buffer stores frames' words; a pending event may still cut its window from the old buffer after
    # a configuration change, so each buffer converts with the layout it was made for.
    pmu = SimPmu(7, "SUB A", rate=RATE)
    ing = PmuIngest(stream(pmu), MON, Taken(), lambda *a: None, clock=lambda: 2e9)
    k0 = 1_700_000_000 * RATE
    for k in range(k0, k0 + 5):
        ing.on_frame(pmu.data_frame(k))
    old = ing.buffer
    before = old.latest(5)
    pmu.change_config(phasors=[("V1", PhasorKind.VOLTAGE)], flag_s=0.0)
    ing.on_frame(pmu.data_frame(k0 + 5))
    assert ing.buffer is not old and [len(row) for _, row in ing.buffer.latest(1)] == [4]
    assert old.latest(5) == before and len(before[0][1]) == 2 + 2 * 6
    assert before[-1][1][2] == pytest.approx(1.0, abs=0.05), "VA magnitude in pu"


@async_test
async def test_sockets_read_in_batches_unless_told_not_to():
    a = PmuStreamConfig(name="a", host="127.0.0.1", port=1, idcode=1)
    b = replace(a, name="b", stale_after_s=0.2)
    assert batch_interval_s((a,)) == READ_BATCH_S and batch_interval_s((a, b)) == pytest.approx(0.05)
    assert PmuMonitoring((a, b), MON, Taken(), None).batcher.interval_s == pytest.approx(0.05)  # type: ignore[arg-type]
    assert PmuMonitoring((a,), MON, Taken(), None, read_batch_s=0).batcher is None  # type: ignore[arg-type]
    taken = Taken()
    async with SimPmu(14, "SUB E", rate=RATE, port=0) as pmu:
        mon = PmuMonitoring((stream(pmu),), MON, taken, None, read_batch_s=0)  # type: ignore[arg-type]
        async with running_tasks(mon.clients["pmu1"].run()):
            await until(lambda: mon.ingests["pmu1"].stats.frames >= RATE + 1)
        assert taken.points(".frequency"), "every read as it comes: the same readings"


class Switch:
    """A source whose frequency can be pushed off nominal from the test."""

    def __init__(self) -> None:
        self.base = balanced_source()
        self.offset_hz = 0.0

    def __call__(self, t: float):
        m = self.base(t)
        return replace(m, frequency_hz=m.frequency_hz + self.offset_hz)


# ---- over TCP ----------------------------------------------------------------------------------------------


@async_test
async def test_time_sync_loss_over_tcp_gives_exactly_one_event_with_window_in_sqlite(tmp_path):
    db = tmp_path / "agent.db"
    store = AsyncStore(Store(db, "site1", 64 * 1024 * 1024))
    taken = Taken()
    async with SimPmu(11, "SUB B", rate=RATE, port=0) as pmu:
        mon = PmuMonitoring((stream(pmu),), MON, taken, store)
        client = mon.clients["pmu1"]
        ingest = mon.ingests["pmu1"]
        async with running_tasks(client.run(), mon.run_events()):
            await until(lambda: ingest.stats.frames >= RATE, timeout=10)
            pmu.lose_sync()
            lost_at = time.time()
            await until(lambda: mon.events_stored >= 1, timeout=10)
            assert time.time() - lost_at >= MON.window_after_s  # emitted only once the after-window elapsed
            await until(lambda: ingest.stats.frames >= 4 * RATE, timeout=10)  # still lost for 2+ s
        await store.aclose()
    got = events(db)
    assert [e["kind"] for e in got] == ["pmu_time_sync"]
    ev = got[0]
    assert ev["source"] == "pmu1" and ev["severity"] == "error" and "STAT bit 13" in ev["text"]
    data = json.loads(ev["data"])
    assert "C37.118.2" in data["clause"]
    w = data["window"]
    assert w["decimation"] == 1
    assert w["t_ms"][0] <= -400 and w["t_ms"][-1] >= 400  # full-rate data before and after the trigger
    assert len(w["t_ms"]) >= RATE * (MON.window_before_s + MON.window_after_s) * 0.9
    assert len(w["VA_mag_pu"]) == len(w["t_ms"]) and 0.95 < w["VA_mag_pu"][0] < 1.05
    assert abs(w["t_ms"][1] - w["t_ms"][0] - 1000 / RATE) < 0.2


@async_test
async def test_frequency_excursion_and_stale_stream_over_tcp(tmp_path):
    db = tmp_path / "agent.db"
    store = AsyncStore(Store(db, "site1", 64 * 1024 * 1024))
    taken = Taken()
    source = Switch()
    async with SimPmu(12, "SUB C", rate=RATE, port=0, source=source) as pmu:
        mon = PmuMonitoring((stream(pmu, stale_after_s=0.5),), MON, taken, store)
        ingest = mon.ingests["pmu1"]
        async with running_tasks(mon.clients["pmu1"].run(), mon.run_events()):
            await until(lambda: ingest.stats.frames >= RATE, timeout=10)
            source.offset_hz = 1.5  # 61.5 Hz: past OF1 (61.2 Hz, IEEE 1547-2018 Table 19)
            await until(lambda: mon.events_stored >= 1, timeout=10)
            n = ingest.stats.frames
            await until(lambda: ingest.stats.frames >= n + RATE, timeout=10)  # stays high: no second event
            source.offset_hz = 0.0
            n = ingest.stats.frames
            await until(lambda: ingest.stats.frames >= n + RATE // 2, timeout=10)
            pmu.stop_sending()
            await until(lambda: mon.events_stored >= 2, timeout=10)
            assert taken.points(".frequency")[-1].quality is Quality.STALE
        await store.aclose()
    got = events(db)
    assert [e["kind"] for e in got] == ["pmu_frequency", "pmu_stale"]
    f = json.loads(got[0]["data"])
    assert f["limit_hi_hz"] == 61.2 and 61.4 < f["frequency_hz"] < 61.6 and "Table 19" in f["clause"]
    w = f["window"]
    before = [v for t, v in zip(w["t_ms"], w["frequency_hz"], strict=True) if t < 0]
    after = [v for t, v in zip(w["t_ms"], w["frequency_hz"], strict=True) if t >= 0]
    assert before and max(before) < 60.1 and after and min(after) > 61.4
    s = json.loads(got[1]["data"])
    assert s["stale_after_s"] == 0.5 and s["window"]["t_ms"][-1] <= 0  # data before the silence only


@async_test
async def test_angle_difference_between_two_pmus_aligned_by_timestamp(tmp_path):
    db = tmp_path / "agent.db"
    store = AsyncStore(Store(db, "site1", 64 * 1024 * 1024))
    base = balanced_source()

    def shifted(t: float):  # 40 degrees behind the first PMU
        m = base(t)
        return replace(m, phasors=tuple(p * complex(0.766044, -0.642788) for p in m.phasors))

    mon_cfg = replace(MON, angle_pairs=(AnglePairConfig("a", "b", "VA", 30.0),), angle_pickup_s=0.2)
    async with SimPmu(21, "A", rate=RATE, port=0) as pa, SimPmu(22, "B", rate=RATE, port=0, source=shifted) as pb:
        mon = PmuMonitoring((stream(pa, "a"), stream(pb, "b")), mon_cfg, Taken(), store)
        async with running_tasks(mon.clients["a"].run(), mon.clients["b"].run(), mon.run_events()):
            await until(lambda: mon.events_stored >= 1, timeout=10)
            n = mon.ingests["a"].stats.frames
            await until(lambda: mon.ingests["a"].stats.frames >= n + RATE, timeout=10)
        await store.aclose()
    got = events(db)
    assert [e["kind"] for e in got] == ["pmu_angle_difference"]
    d = json.loads(got[0]["data"])
    assert d["pmu_a"] == "a" and abs(d["angle_difference_deg"] - 40.0) < 0.1 and d["limit_deg"] == 30.0
    assert all(abs(x - 40.0) < 0.1 for x in d["window"]["difference_deg"])


@async_test
async def test_an_event_waits_while_the_store_is_locked_and_is_stored_once_when_it_frees(tmp_path, caplog, monkeypatch):
    # Another connection holds the write lock (an operator's sqlite3 shell in a transaction): the store's write
    # fails after its busy timeout, the event waits in the spool and the retry stores it once the lock goes.
    monkeypatch.setattr("agent.events.RETRY_S", 0.1)
    db = tmp_path / "agent.db"
    store = AsyncStore(Store(db, "site1", 64 * 1024 * 1024))
    store.store.conn.execute("PRAGMA busy_timeout = 100")
    async with SimPmu(13, "SUB D", rate=RATE, port=0) as pmu:
        mon = PmuMonitoring((stream(pmu),), MON, Taken(), store)
        ingest = mon.ingests["pmu1"]
        async with running_tasks(mon.clients["pmu1"].run(), mon.run_events()):
            await until(lambda: ingest.stats.frames >= RATE, timeout=10)
            other = sqlite3.connect(db, isolation_level=None)
            other.execute("BEGIN IMMEDIATE")
            pmu.lose_sync()
            await until(lambda: any(r.name == "gridedge.pmu" and r.getMessage().startswith("event=event_store_failed ")
                                    for r in caplog.records), timeout=10)  # fmt: skip
            assert mon.events_stored == 0 and mon.spool.waiting == 1
            other.execute("ROLLBACK")
            other.close()
            await until(lambda: mon.events_stored >= 1, timeout=10)
        await store.aclose()
    assert [e["kind"] for e in events(db)] == ["pmu_time_sync"]
    assert mon.spool.waiting == 0 and mon.events_refused == 0


def test_on_frames_in_batches_does_what_on_frame_does_frame_by_frame():
    # The frames of a read go through PmuIngest.on_frames with one clock reading; the same frames one at a time
    # through on_frame at the same clock must leave the same stats, triggers, readings and buffer: a frequency
    # excursion, a voltage sag, sync lost, bad data, a frame out of order, a listener raising on one frame and
    # a configuration change in the middle of a batch.
    pmu = SimPmu(7, "SUB A", rate=RATE)
    k0 = 1_700_000_000 * RATE
    stat_i, freq_i, freq_float, _, ph_i, _, polar, _, _ = phasor_layout(pmu.config)
    volts = [i for i, u in zip(ph_i, pmu.config.pmus[0].phasor_units, strict=True) if u.kind == PhasorKind.VOLTAGE]
    frames = []
    for k in range(k0, k0 + 4 * RATE):
        w = list(pmu.data_frame(k).words)
        if 26 <= k - k0 < 32:  # +2 Hz for 0.2 s, within one read (6.3 Table 6: integer FREQ is the deviation in mHz)
            w[freq_i] = w[freq_i] + 2.0 if freq_float else 2000
        if 2 * RATE <= k - k0 < 2 * RATE + 40:  # a sag to 0.8 pu for 1.3 s
            for i in volts:
                w[i] *= 0.8
                if not polar:
                    w[i + 1] *= 0.8
        if 3 * RATE + 10 <= k - k0 < 3 * RATE + 20:
            w[stat_i] |= 0x2000  # sync lost (6.3 Table 7 bit 13)
        if k - k0 in (40, 41):
            w[stat_i] |= 0x4000  # data error (bits 15-14)
        frames.append(DataFrame(pmu.config, tuple(w)))
    frames.insert(50, frames[45])  # out of order
    pmu.change_config(phasors=[("V1", PhasorKind.VOLTAGE)], flag_s=0.0)
    frames += [pmu.data_frame(k) for k in range(k0 + 4 * RATE, k0 + 4 * RATE + 15)]
    raise_at = frames[70].timestamp

    def run(batched: bool) -> tuple:
        taken, triggers, now = Taken(), [], [0.0]
        ing = PmuIngest(stream(pmu), MON, taken, lambda t, *_: triggers.append((t.kind, t.ts, t.cleared)),
                        clock=lambda: now[0])  # fmt: skip

        def listener(_ing, ts: float, _angles) -> None:
            if ts == float(raise_at.as_fraction()):
                raise RuntimeError("a listener's bug")

        ing.listeners.append(listener)
        failed = 0
        for b in range(0, len(frames), 12):  # one read: 12 frames, one arrival time
            batch = frames[b : b + 12]
            now[0] = float(batch[-1].timestamp.as_fraction()) + 0.05
            it = iter(batch)
            while True:
                try:
                    if batched:
                        ing.on_frames(it)
                    else:
                        for f in it:
                            ing.on_frame(f)
                    break
                except RuntimeError:
                    failed += 1
        return (asdict(ing.stats), triggers, taken.readings, ing.buffer.latest(len(ing.buffer)), failed,
                ing.stale.last_arrival, ing.stale.last_frame_ts)  # fmt: skip

    one_by_one, batched = run(False), run(True)
    assert batched == one_by_one
    stats, triggers, _, rows, failed, last_arrival, last_frame_ts = batched
    assert stats["frames"] == len(frames) and stats["out_of_order"] == 1 and stats["bad_data"] == 2
    assert stats["configs"] == 2 and len(rows) == 15 and failed == 1
    assert {(kind, cleared) for kind, _, cleared in triggers} >= {("pmu_frequency", False), ("pmu_frequency", True),
                                                                  ("pmu_voltage", False), ("pmu_time_sync", False)}  # fmt: skip
    assert last_frame_ts == float(frames[-1].timestamp.as_fraction()) and last_arrival == last_frame_ts + 0.05


def test_events_task_sleeps_until_the_first_stale_deadline_and_ticks_while_a_window_waits():
    # No window waiting: the next tick is due at the earliest stale deadline (a frame only moves one later), at
    # most IDLE_TICK_S away; a trigger's window waiting: every TICK_S, as its release is checked on the data.
    pmu = SimPmu(7, "SUB A", rate=RATE)
    now = [1_700_000_000.0]
    pmus = (stream(pmu, "a", stale_after_s=0.5), stream(pmu, "b", stale_after_s=3.0))
    mon = PmuMonitoring(pmus, MON, Taken(), None, clock=lambda: now[0])  # type: ignore[arg-type]
    for s in mon.streams.values():
        s.start()
    assert mon.next_tick_s() == pytest.approx(0.5)
    now[0] += 0.4
    assert mon.next_tick_s() == pytest.approx(0.1)
    now[0] += 0.2
    assert mon.next_tick_s() == 0.0 and mon.tick() == 1, "a is stale: its event goes out at once"
    assert mon.next_tick_s() == pytest.approx(IDLE_TICK_S), "b's deadline is 2.4 s away"
    ing = mon.ingests["b"]
    ing.on_frame(pmu.data_frame(int(now[0] * RATE)))
    pmu.lose_sync()
    ing.on_frame(pmu.data_frame(int(now[0] * RATE) + 1))  # a time-sync trigger: its window waits
    assert len(mon.windows) == 1 and mon.next_tick_s() == TICK_S

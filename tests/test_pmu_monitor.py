"""PMU monitoring, pure parts: ring buffer, hysteresis, each condition's monitor, event windows, limits, config."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from agent.config import ConfigError, parse_config
from agent.pmu.config import PmuMonitoringConfig
from agent.pmu.limits import (
    ANGLE_DIFFERENCE_SOURCE,
    FREQUENCY_LIMITS,
    ROCOF_LIMITS,
    TIME_QUALITY_LIMIT,
    VOLTAGE_LIMITS,
    LimitLookupError,
    lookup,
)
from agent.pmu.monitor import (
    ANGLE_DIFFERENCE,
    FREQUENCY,
    ROCOF,
    STALE,
    TIME_SYNC,
    VOLTAGE,
    AngleDifferenceMonitor,
    EventWindows,
    FrequencyMonitor,
    Hysteresis,
    RocofMonitor,
    StaleMonitor,
    TimeSyncMonitor,
    VoltageMonitor,
    compact_window,
    wrap_deg,
)
from agent.pmu.ringbuffer import RingBuffer
from agent.store import MAX_TEXT
from protocols.c37118 import PmuTimeQuality, Stat, TimeQuality, UnlockedTime

RATE = 60


def frames(values, t0=1000.0, rate=RATE):
    """(ts, value) on the rate grid."""
    return [(t0 + k / rate, v) for k, v in enumerate(values)]


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


# ---- ring buffer -----------------------------------------------------------------------------------------


def test_ringbuffer_keeps_last_capacity_and_extracts_windows():
    rb = RingBuffer(10)
    for k in range(25):
        assert rb.append(float(k), (k,))
    assert len(rb) == 10 and rb.first_ts == 15.0 and rb.last_ts == 24.0
    ts, rows = rb.window(17.0, 19.0)
    assert ts == [17.0, 18.0, 19.0] and rows == [(17,), (18,), (19,)]
    assert rb.window(0.0, 15.5)[0] == [15.0]  # what was overwritten is gone
    assert rb.window(24.5, 99.0) == ([], [])
    assert rb.window(20.0, 19.0) == ([], [])
    assert [t for t, _ in rb.latest(3)] == [22.0, 23.0, 24.0]


def test_ringbuffer_refuses_out_of_order_and_counts():
    rb = RingBuffer(4)
    rb.append(1.0, (1,))
    assert not rb.append(1.0, (2,)) and not rb.append(0.5, (3,))
    assert rb.out_of_order == 2 and len(rb) == 1


def test_ringbuffer_for_rate_and_bad_capacity():
    assert RingBuffer.for_rate(60, 60).capacity == 3600
    with pytest.raises(ValueError, match="capacity"):
        RingBuffer(0)


def test_ringbuffer_converts_stored_rows_when_read_and_wraps_in_order():
    rb = RingBuffer(3, convert=lambda row: (row[0] * 10,))
    for k in range(7):
        assert rb.append(float(k), (k,))
    assert len(rb) == 3 and rb.first_ts == 4.0 and rb.last_ts == 6.0
    assert rb.window(4.0, 6.0) == ([4.0, 5.0, 6.0], [(40,), (50,), (60,)])
    assert rb.latest(2) == [(5.0, (50,)), (6.0, (60,))]
    assert not rb.append(6.0, (9,)) and rb.out_of_order == 1 and rb.latest(1) == [(6.0, (60,))]
    rb.clear()
    assert len(rb) == 0 and rb.last_ts is None and rb.append(1.0, (1,)) and rb.window(0, 2) == ([1.0], [(10,)])


# ---- hysteresis ------------------------------------------------------------------------------------------


def test_hysteresis_hovering_at_the_limit_raises_once():
    h = Hysteresis(None, 1.0, deadband=0.1, pickup_s=0.0, hold_off_s=1.0)
    # hovering 0.99 / 1.01 for 3 s: inside but within the deadband never clears
    vals = [1.01 if k % 2 else 0.99 for k in range(3 * RATE)]
    raised = [t for ts, v in frames(vals) if (t := h.update(ts, v)) and t.raised]
    assert len(raised) == 1 and h.active


def test_hysteresis_clears_after_hold_off_then_raises_again():
    h = Hysteresis(None, 1.0, deadband=0.1, pickup_s=0.0, hold_off_s=1.0)
    seq = [1.2] * 10 + [0.5] * 30 + [1.2] * 10 + [0.5] * 70 + [1.3] * 5
    out = [t for ts, v in frames(seq) if (t := h.update(ts, v))]
    assert [t.raised for t in out] == [True, False, True]
    assert out[0].extreme == 1.2 and out[2].extreme == 1.3


def test_hysteresis_pickup_ignores_short_spikes_and_reports_start():
    h = Hysteresis(0.0, 1.0, pickup_s=0.1)
    seq = [2.0] * 3 + [0.5] * 5 + [2.0, 2.5, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0]
    out = [t for ts, v in frames(seq) if (t := h.update(ts, v))]
    assert len(out) == 1
    assert out[0].ts == pytest.approx(1000.0 + 8 / RATE)  # the excursion's first frame
    assert out[0].extreme == 2.5


def test_hysteresis_bad_band():
    with pytest.raises(ValueError):
        Hysteresis(1.0, 1.0)


# ---- conditions ------------------------------------------------------------------------------------------


def test_frequency_excursion_one_event_with_limit_and_clause():
    m = FrequencyMonitor("pmu1", 60, -1.5, 1.2, "IEEE 1547-2018 Table 19", pickup_s=0.1, hold_off_s=2.0)
    # past the limit for the pickup time, then hovering around it: one event
    seq = [60.0] * 30 + [61.3] * 10 + [61.25, 61.19, 61.21, 61.18] * 30 + [60.0] * 30
    trig = [t for ts, f in frames(seq) if (t := m.update(ts, f))]
    assert len(trig) == 1
    t = trig[0]
    assert t.kind == FREQUENCY and t.source == "pmu1" and t.severity == "error"
    assert t.data["limit_hi_hz"] == pytest.approx(61.2) and t.data["frequency_hz"] == pytest.approx(61.3)
    assert "1547" in t.data["clause"] and "61.300" in t.text


def test_frequency_below_limit_raises():
    m = FrequencyMonitor("p", 60, -1.5, 1.2, "c", pickup_s=0.0, hold_off_s=1.0)
    assert m.update(0.0, 58.6) is None
    assert m.update(0.1, 58.4).data["frequency_hz"] == pytest.approx(58.4)


def test_rocof_both_signs_and_noise_below_limit():
    m = RocofMonitor("p", 2.0, "IEEE 1547-2018 Table 21 Cat II", pickup_s=0.05, hold_off_s=1.0)
    assert not [ts for ts, r in frames([1.9, -1.9] * 60) if m.update(ts, r)]
    trig = [t for ts, r in frames([-2.5] * 10) if (t := m.update(ts, r))]
    assert len(trig) == 1 and trig[0].kind == ROCOF and trig[0].data["rocof_hz_per_s"] == -2.5


def test_voltage_per_phase_in_pu_of_nominal():
    m = VoltageMonitor("p", ["VA", "VB", "VC"], 7200.0, 0.95, 1.05, "ANSI C84.1-2016 Range A", pickup_s=0.0,
                       hold_off_s=1.0)  # fmt: skip
    assert m.update(0.0, [7200, 7200, 7200]) == []
    out = m.update(0.1, [7200, 6700, 7200])  # 0.9306 pu on B
    assert len(out) == 1 and out[0].kind == VOLTAGE and out[0].data["phase"] == "VB"
    assert out[0].data["voltage_pu"] == pytest.approx(6700 / 7200, abs=1e-5) and "below" in out[0].text
    assert m.update(0.2, [7200, 6700, 7600])[0].data["phase"] == "VC"  # C over 1.05 is its own excursion
    assert m.update(0.3, [7200, 6700, 7600]) == []


@pytest.mark.parametrize("polar", [True, False])
def test_voltage_update_words_is_update_on_the_magnitudes(polar: bool) -> None:
    # Words as a data frame holds them: (VA, VB, VC) at indices 6, 8, 10, each (magnitude, angle) polar or
    # (real, imaginary); scale 0.5 V per unit. Every step gives the same triggers both ways, bands included.
    pairs = ((6, 0.5), (8, 0.5), (10, 0.5))

    def words(va: float, vb: float, vc: float) -> tuple[float, ...]:
        out = [0.0] * 12
        for i, v in zip((6, 8, 10), (va, vb, vc), strict=True):
            out[i], out[i + 1] = (v / 0.5, 0.3) if polar else (v / 0.5 * math.cos(0.3), v / 0.5 * math.sin(0.3))
        return tuple(out)

    def mags(w: tuple[float, ...]) -> list[float]:
        return [abs(w[i] * k) if polar else math.hypot(w[i] * k, w[i + 1] * k) for i, k in pairs]

    def monitor() -> VoltageMonitor:
        return VoltageMonitor("p", ["VA", "VB", "VC"], 7200.0, 0.95, 1.05, "Range A", pickup_s=0.2, hold_off_s=0.3)

    a, b = monitor(), monitor()
    steps = [(7200, 7200, 7200), (7200, 6700, 7200), (7200, 6700, 7200), (7200, 6700, 7600), (7200, 6700, 7600),
             (7200, 6700, 7600), (7200, 6700, 7600), (-7200, 7200, 7200), (7200, 7200, 7200), (7200, 7200, 7200), (7200, 7200, 7200),
             (float("nan"), 7200, 7200), (7200, 7200, 7200)]  # fmt: skip
    seen = []
    for k, step in enumerate(steps):
        w = words(*step)
        t = 0.1 * k
        got = b.update_words(t, w, pairs, polar)
        assert got == a.update(t, mags(w)), step
        seen += got
    assert {(t.data["phase"], t.cleared) for t in seen} >= {("VB", False), ("VC", False), ("VB", True)}


def test_time_sync_update_words_is_update_on_the_decoded_words() -> None:
    # Every STAT bit the monitor reads (13 sync, 8-6 time quality, 5-4 unlocked time) and FRACSEC quality
    # codes 0, 5 and 15, in and out of alarm: the word path and the decoded path give the same triggers.
    stats = [0, 0x2000, 0x0010, 0x0030, 3 << 6, 4 << 6, 7 << 6, 0x2000 | 0x0030 | (5 << 6), 0x8000, 0x0400]
    a = TimeSyncMonitor("p", worst_time_quality=4, hold_off_s=0.25)
    b = TimeSyncMonitor("p", worst_time_quality=4, hold_off_s=0.25)
    t = 0.0
    raised = 0
    for stat in stats:
        for code in (0, 5, 15, 0, 0, 0, 0):
            fracsec = (code << 24) | 1234
            t += 0.1
            want = a.update(t, Stat.from_word(stat), TimeQuality.from_byte(fracsec >> 24))
            assert b.update_words(t, stat, fracsec) == want, (hex(stat), code)
            raised += want is not None and not want.cleared
    assert raised >= 3


def test_angle_difference_wraps_and_uses_configured_limit():
    assert wrap_deg(350) == pytest.approx(-10) and wrap_deg(-190) == pytest.approx(170) and wrap_deg(180) == 180
    m = AngleDifferenceMonitor("a", "b", "VA", 30.0, pickup_s=0.0, hold_off_s=1.0)
    # 179 deg and -179 deg are 2 degrees apart, not 358
    assert m.update(0.0, math.radians(179), math.radians(-179)) is None
    t = m.update(0.1, math.radians(20), math.radians(-15))
    assert t.kind == ANGLE_DIFFERENCE and t.data["angle_difference_deg"] == pytest.approx(35, abs=1e-3)
    assert "no standard default" in t.data["clause"]


@pytest.mark.parametrize(
    ("stat", "tq", "reason"),
    [
        (Stat(sync_lost=True), TimeQuality(), "bit 13"),
        (Stat(unlocked_time=UnlockedTime.UNDER_100S), TimeQuality(), "unlocked"),
        (Stat(time_quality=PmuTimeQuality.UNDER_100US), TimeQuality(), "time quality code 4"),
        (Stat(), TimeQuality(code=15), "clock failure"),
    ],
)
def test_time_sync_loss_each_indicator(stat, tq, reason):
    m = TimeSyncMonitor("p", worst_time_quality=4, hold_off_s=1.0)
    assert m.update(0.0, Stat(time_quality=PmuTimeQuality.UNDER_1US), TimeQuality()) is None
    t = m.update(0.1, stat, tq)
    assert t is not None and t.kind == TIME_SYNC and reason in t.text
    assert m.update(0.2, stat, tq) is None  # still lost: no second event


def test_stale_stream_one_event_per_outage_on_injected_clock():
    clock = Clock(100.0)
    m = StaleMonitor("p", 2.0, clock)
    m.start()
    clock.t = 101.9
    assert m.tick() is None
    clock.t = 102.0
    t = m.tick()
    assert t.kind == STALE and t.ts == 102.0 and t.data["silent_s"] == 2.0
    clock.t = 110.0
    assert m.tick() is None  # same outage
    c = m.frame(109.9)  # resumed at 110.0 (clock): stale since 102.0, silent since start() at 100.0
    assert c.kind == STALE and c.cleared and c.severity == "info" and "cleared after 8.0 s" in c.text
    assert (c.ts, c.window_ts, c.data["duration_s"], c.data["raised_ts"], c.data["silent_s"]) == (
        110.0, 109.9, 8.0, 102.0, 10.0)  # fmt: skip
    assert m.frame(109.95) is None  # not stale any more: nothing to clear
    clock.t = 112.5
    assert m.tick().kind == STALE  # a second outage


# ---- conditions clearing ---------------------------------------------------------------------------------


def test_hysteresis_clear_reports_when_the_excursion_began():
    h = Hysteresis(None, 1.0, deadband=0.1, pickup_s=0.0, hold_off_s=1.0)
    seq = [0.5] * 5 + [1.2] * 10 + [0.5] * (RATE + 10)  # out from frame 5, back from frame 15, hold-off 1 s
    out = [t for ts, v in frames(seq) if (t := h.update(ts, v))]
    assert [t.raised for t in out] == [True, False]
    assert out[1].since == pytest.approx(1000.0 + 5 / RATE) and out[1].ts == pytest.approx(1000.0 + 15 / RATE)


def test_each_condition_ends_in_one_cleared_info_event_with_its_duration():
    # Excursions from t = 1 s to t = 3 s (2 * RATE frames), then normal: cleared once the hold-off (1 s) has
    # passed, with duration = return - start = 2.0 s and the event time = the first frame back inside the band.
    start, back = 1001.0, 1003.0

    def run(update, normal, bad):
        seq = [normal] * RATE + [bad] * (2 * RATE) + [normal] * (2 * RATE)
        return [t for ts, v in frames(seq) for t in _as_list(update(ts, v))]

    f = FrequencyMonitor("p", 60, -1.5, 1.2, "IEEE 1547-2018 Table 19", pickup_s=0.0, hold_off_s=1.0)
    r = RocofMonitor("p", 2.0, "c", pickup_s=0.0, hold_off_s=1.0)
    v = VoltageMonitor("p", ["VA"], 7200.0, 0.95, 1.05, "c", pickup_s=0.0, hold_off_s=1.0)
    a = AngleDifferenceMonitor("a", "b", "VA", 30.0, pickup_s=0.0, hold_off_s=1.0)
    ts_mon = TimeSyncMonitor("p", worst_time_quality=4, hold_off_s=1.0)
    cases = [
        (FREQUENCY, run(f.update, 60.0, 61.5), "frequency back inside 58.500..61.200 Hz"),
        (ROCOF, run(r.update, 0.0, -3.0), "ROCOF back within +-2 Hz/s"),
        (VOLTAGE, run(lambda ts, x: v.update(ts, [x]), 7200.0, 6500.0), "VA voltage back inside 0.95..1.05 pu"),
        (ANGLE_DIFFERENCE, run(lambda ts, x: a.update(ts, math.radians(x), 0.0), 0.0, 40.0),
         "VA angle difference back within +-30 deg"),
        (TIME_SYNC, run(lambda ts, x: ts_mon.update(ts, Stat(sync_lost=x), TimeQuality()), False, True),
         "time synchronisation regained"),
    ]  # fmt: skip
    for kind, out, what in cases:
        assert [(t.kind, t.cleared) for t in out] == [(kind, False), (kind, True)], kind
        c = out[1]
        assert c.severity == "info" and c.data["cleared"] is True and what in c.text and "cleared after 2.0 s" in c.text
        # the raised and the cleared event name their source alike, so one grep finds both
        assert out[0].source == c.source and out[0].text.startswith(f"{c.source}: ")
        assert c.ts == pytest.approx(back) and c.data["raised_ts"] == pytest.approx(start)
        assert c.data["duration_s"] == pytest.approx(2.0, abs=1e-3)
    assert cases[0][1][1].data["frequency_hz"] == pytest.approx(61.5)  # the extreme of the excursion
    assert cases[4][1][1].data["reasons"] == ["STAT bit 13: PMU not in sync with UTC"]  # why it had raised


def _as_list(x) -> list:
    return x if isinstance(x, list) else [] if x is None else [x]


def test_a_short_return_inside_the_hold_off_does_not_clear():
    f = FrequencyMonitor("p", 60, -1.5, 1.2, "c", pickup_s=0.0, hold_off_s=1.0)
    seq = [61.5] * 10 + [60.0] * (RATE // 2) + [61.5] * 10 + [60.0] * (RATE - 1)  # back 0.5 s, then 0.98 s: < 1 s
    assert [t.cleared for ts, x in frames(seq) if (t := f.update(ts, x))] == [False]


# ---- windows ---------------------------------------------------------------------------------------------


def test_event_emitted_after_the_after_window_with_data_before_and_after():
    clock = Clock(1000.0)
    rb = RingBuffer.for_rate(RATE, 60)
    win = EventWindows(before_s=1.0, after_s=1.0, clock=clock)
    m = FrequencyMonitor("p", 60, -1.5, 1.2, "c", pickup_s=0.0, hold_off_s=1.0)
    events = []
    seq = [60.0] * 120 + [61.5] * 30 + [60.0] * 120
    for ts, f in frames(seq):
        rb.append(ts, (f, 0.0))
        clock.t = ts
        if t := m.update(ts, f):
            win.add(t, rb, ("frequency_hz", "rocof_hz_per_s"), (4, 3))
        for e in win.poll():
            events.append(e)
            assert ts >= e.ts + 1.0 - 1e-9  # not before the after-window has elapsed
    # the excursion (1002.0 .. 1002.5) and its clear (back at 1002.5, known once the 1 s hold-off has passed)
    assert [e.data.get("cleared", False) for e in events] == [False, True]
    assert events[1].ts == pytest.approx(1002.5) and events[1].data["duration_s"] == pytest.approx(0.5)
    assert events[1].data["window"]["frequency_hz"][RATE - 1 : RATE + 1] == [61.5, 60.0]  # centred on the return
    w = events[0].data["window"]
    assert w["t_ms"][0] == pytest.approx(-1000, abs=0.1) and w["t_ms"][-1] == pytest.approx(1000, abs=0.1)
    assert len(w["t_ms"]) == 2 * RATE + 1 and w["decimation"] == 1
    assert w["frequency_hz"][RATE] == 61.5 and w["frequency_hz"][0] == 60.0
    assert events[0].data["limit_hi_hz"] == pytest.approx(61.2)


def test_event_released_by_clock_when_the_stream_stops():
    clock = Clock(1000.0)
    rb = RingBuffer(100)
    rb.append(999.5, (1.0,))
    win = EventWindows(before_s=1.0, after_s=1.0, clock=clock, grace_s=0.5)
    m = StaleMonitor("p", 0.4, clock)
    m.frame(999.5)
    clock.t = 1000.5
    win.add(m.tick(), rb, ("x",), (3,), immediate=True)
    assert len(win.poll()) == 1  # immediate: no after-window for a stale stream
    win.add(FrequencyMonitor("p", 60, -1, 1, "c", pickup_s=0, hold_off_s=0).update(999.5, 62.0), rb, ("x",), (3,))
    assert win.poll() == []
    clock.t = 1002.0
    assert len(win.poll()) == 1


def test_compact_window_decimates_to_fit():
    n = 6000
    ts = [i / 60 for i in range(n)]
    rows = [(60.0 + i * 1e-5, 1.0 + i * 1e-6, 123.456) for i in range(n)]
    w = compact_window(ts, rows, ("f", "v", "a"), 0.0, digits=(4, 5, 2), max_chars=20_000)
    assert len(json.dumps(w)) <= 20_000 and w["decimation"] > 1 and len(w["f"]) == len(w["t_ms"])
    assert compact_window(ts[:10], rows[:10], ("f", "v", "a"), 0.0)["decimation"] == 1


def test_a_full_window_of_six_phasors_fits_the_store():
    # 2 s + 2 s at 120 frames/s, 14 channels: the event data must stay within the store's MAX_TEXT
    n = 481
    ts = [i / 120 for i in range(n)]
    rows = [tuple(12345.678 + i for i in range(14))] * n
    w = compact_window(ts, rows, [f"c{i}" for i in range(14)], 2.0)
    assert len(json.dumps({"window": w, "text": "x" * 500}, separators=(",", ":"))) < MAX_TEXT


# ---- limits table ----------------------------------------------------------------------------------------


def test_limits_are_cited_and_lookup_says_where_to_look():
    assert (VOLTAGE_LIMITS["A"].lo, VOLTAGE_LIMITS["A"].hi) == (0.95, 1.05)
    assert (VOLTAGE_LIMITS["B"].lo, VOLTAGE_LIMITS["B"].hi) == (0.917, 1.058)
    assert [ROCOF_LIMITS[c].hi for c in ("I", "II", "III")] == [0.5, 2.0, 3.0]
    for table in (VOLTAGE_LIMITS, FREQUENCY_LIMITS, ROCOF_LIMITS):
        for lim in table.values():
            assert lim.source and ("C84.1" in lim.source or "1547" in lim.source)
    with pytest.raises(LimitLookupError, match="one of I, II, III"):
        lookup("rocof", "IV")
    with pytest.raises(LimitLookupError, match="agent/pmu/limits.py"):
        lookup("thd", "x")


DOUBTS = ("memory", "check your copy")


def test_no_source_sent_in_events_carries_a_doubt():
    """Clause texts reach events, logs and central: they cite, and the doubts stay in docs/pmu-monitoring.md."""
    sources = [lim.source for table in (VOLTAGE_LIMITS, FREQUENCY_LIMITS, ROCOF_LIMITS) for lim in table.values()]
    sources += [TIME_QUALITY_LIMIT.source, ANGLE_DIFFERENCE_SOURCE]
    for m in (PmuMonitoringConfig(), parse().pmu_monitoring):
        sources += [m.voltage_clause, m.frequency_clause, m.rocof_clause]
    assert len(sources) == 15
    assert [s for s in sources if any(d in s.lower() for d in DOUBTS)] == []
    # and the event an operator reads
    m = FrequencyMonitor("p", 60, -1.5, 1.2, PmuMonitoringConfig().frequency_clause, pickup_s=0.0, hold_off_s=1.0)
    m.update(0.0, 60.0)
    t = m.update(0.1, 58.4)
    assert "Table 19" in t.text and not any(d in (t.text + json.dumps(t.data)).lower() for d in DOUBTS)


# ---- configuration ---------------------------------------------------------------------------------------

BASE = {"site_id": "s1", "uplink": {"broker": "mqtt://127.0.0.1:1883"}}


def parse(**extra):
    return parse_config({**BASE, **extra}, Path("/tmp/agent.toml"))


def issues(**extra):
    with pytest.raises(ConfigError) as exc:
        parse(**extra)
    return {i.key: i for i in exc.value.issues}


def test_config_without_pmus_is_unchanged():
    cfg = parse()
    assert cfg.pmus == () and cfg.pmu_monitoring.voltage_hi_pu == 1.05 and cfg.pmu_monitoring.rocof_hz_per_s == 2.0


def test_config_pmus_and_monitoring_defaults_and_overrides():
    cfg = parse(
        pmus=[{"name": "p1", "host": "127.0.0.1", "idcode": 7, "nominal_v": 7200},
              {"name": "p2", "host": "127.0.0.1", "idcode": 8, "port": 4800, "cfg": 3, "udp_port": 4713,
               "stale_after_s": 1.5}],
        pmu_monitoring={"voltage_range": "B", "rocof_category": "III", "hold_off_s": 3,
                        "angle_pairs": [{"pmu_a": "p1", "pmu_b": "p2", "phasor": "VA", "limit_deg": 20}]},
    )  # fmt: skip
    p1, p2 = cfg.pmus
    assert (p1.port, p1.cfg, p1.udp_port, p1.nominal_v) == (4712, 2, None, 7200.0)
    assert (p2.port, p2.cfg, p2.udp_port, p2.stale_after_s) == (4800, 3, 4713, 1.5)
    m = cfg.pmu_monitoring
    assert (m.voltage_lo_pu, m.voltage_hi_pu) == (0.917, 1.058) and "Range B" in m.voltage_clause
    assert m.rocof_hz_per_s == 3.0 and "Category III" in m.rocof_clause and m.hold_off_s == 3.0
    assert m.angle_pairs[0].limit_deg == 20.0
    pdc = parse(pmus=[{"name": "pdc", "host": "127.0.0.1", "idcode": 9}],
                pmu_monitoring={"angle_pairs": [{"pmu_a": "pdc/SUB-A", "pmu_b": "pdc/SUB-B", "phasor": "VA",
                                                 "limit_deg": 15}]})  # fmt: skip
    assert (pdc.pmu_monitoring.angle_pairs[0].pmu_a, pdc.pmu_monitoring.angle_pairs[0].pmu_b) == (
        "pdc/SUB-A",
        "pdc/SUB-B",
    )
    assert parse(pmu_monitoring={"rocof_hz_per_s": 1.0}).pmu_monitoring.rocof_clause.startswith("configured")


def test_config_pmu_errors_name_key_value_and_allowed():
    bad = issues(
        pmus=[{"name": "p1", "host": "127.0.0.1", "idcode": 70000, "cfg": 1, "colour": "red"},
              {"name": "p2", "host": "127.0.0.1", "idcode": 1, "stale_after_s": 0},
              {"name": "p3", "host": "127.0.0.1"},
              {"name": "p4", "host": "h", "idcode": 2}, {"name": "p4", "host": "h", "idcode": 3}],
        pmu_monitoring={"voltage_range": "C", "rocof_category": "IV", "window_before_s": -1, "buffer_s": 3,
                        "angle_pairs": [{"pmu_a": "p4", "pmu_b": "nope", "phasor": "VA", "limit_deg": 20},
                                        {"pmu_a": "p4", "pmu_b": "p4", "phasor": "VA"}], "typo": 1},
    )  # fmt: skip
    assert "65535" in bad["pmus[0].idcode"].allowed
    assert "2, 3" in bad["pmus[0].cfg"].allowed
    assert "unknown key" in bad["pmus[0].colour"].allowed
    assert bad["pmus[1].stale_after_s"].value == 0
    assert "required" in bad["pmus[2].idcode"].allowed
    assert "unique" in bad["pmus[4].name"].allowed
    assert "'A', 'B'" in bad["pmu_monitoring.voltage_range"].allowed
    assert "pmu_monitoring.rocof_category" in bad
    assert "pmu_monitoring.window_before_s" in bad
    assert "[[pmus]]" in bad["pmu_monitoring.angle_pairs[0].pmu_b"].allowed
    assert "another PMU" in bad["pmu_monitoring.angle_pairs[1].pmu_b"].allowed
    assert "required" in bad["pmu_monitoring.angle_pairs[1].limit_deg"].allowed
    assert "unknown key" in bad["pmu_monitoring.typo"].allowed


def test_config_buffer_must_hold_the_window_and_pmu_name_not_a_device_name():
    bad = issues(pmu_monitoring={"buffer_s": 4, "window_before_s": 2, "window_after_s": 2})
    assert "window" in bad["pmu_monitoring.buffer_s"].allowed
    bad = issues(pmu_monitoring={"voltage_lo_pu": 1.0, "voltage_hi_pu": 1.0})
    assert "below voltage_hi_pu" in bad["pmu_monitoring.voltage_lo_pu"].allowed

"""Feeder voltage monitoring, pure parts: the ANSI C84.1 table, per unit on the 120 V base, the picture of the
snapshot (the value used per bus and phase, extremes, stale data) and the alarms with pickup and hold-off.

Expected values are worked by hand from published numbers: ANSI C84.1-2016 Table 1 (Range A 114-126 V, Range B
110-127 V on the 120 V base, limits inside their range) and the IEEE 13-node test feeder (4.16 kV, 2401.8 V
phase-neutral; its published regulator taps 10, 8, 11 of 0.625 % per step give 1.0625, 1.0500 and 1.06875 pu
at bus RG60).
"""

from __future__ import annotations

import math

import pytest

from agent.acquisition import Snapshot
from agent.monitoring.alarms import DATA_STALE, LimitAlarm, VoltageAlarms
from agent.monitoring.config import MonitoringConfig, VoltagePoint
from agent.monitoring.limits import SERVICE_VOLTAGE_RANGES, RangeLookupError, voltage_range
from agent.monitoring.perunit import base_v, per_unit, primary_v
from agent.monitoring.picture import FUTURE, IN_A, IN_B, MISSING, OK, OUTSIDE_B, STALE, range_class, voltage_picture
from agent.pmu.limits import VOLTAGE_LIMITS
from agent.points import Quality, Reading

NOMINAL = 2401.8  # IEEE 13-node: 4160 V / sqrt 3, phase-neutral
A, B = SERVICE_VOLTAGE_RANGES["A"], SERVICE_VOLTAGE_RANGES["B"]


# ---- the ANSI C84.1 table ----------------------------------------------------------------------------------


def test_the_table_holds_c84_1_table_1_service_voltages_on_the_120_v_base() -> None:
    # ANSI C84.1-2016 Table 1, service voltage, 120 V base
    assert (A.lo_v, A.hi_v, B.lo_v, B.hi_v) == (114.0, 126.0, 110.0, 127.0)
    assert (A.lo_pu, A.hi_pu) == (0.95, 1.05)
    assert math.isclose(B.lo_pu, 110 / 120) and math.isclose(B.hi_pu, 127 / 120)
    assert all("ANSI C84.1-2016 Table 1" in r.source for r in SERVICE_VOLTAGE_RANGES.values())


@pytest.mark.parametrize(
    ("v", "in_a", "in_b"),
    [
        # Table 1 gives each range by its minimum and maximum: both limits are inside their range
        (114.0, True, True), (126.0, True, True), (110.0, False, True), (127.0, False, True),
        (113.99, False, True), (126.01, False, True), (109.99, False, False), (127.01, False, False),
        (120.0, True, True),
    ],
)  # fmt: skip
def test_range_limits_are_inside_their_range(v: float, in_a: bool, in_b: bool) -> None:
    assert (A.contains(v), B.contains(v)) == (in_a, in_b)
    assert range_class(v) == (IN_A if in_a else IN_B if in_b else OUTSIDE_B)


def test_pmu_limits_are_the_same_table_in_per_unit() -> None:
    """agent/pmu checks per unit to three decimals of the one table (110 V is 0.917 pu, 127 V 1.058 pu)."""
    assert (VOLTAGE_LIMITS["A"].lo, VOLTAGE_LIMITS["A"].hi) == (0.95, 1.05)
    assert (VOLTAGE_LIMITS["B"].lo, VOLTAGE_LIMITS["B"].hi) == (0.917, 1.058)
    assert {k: v.source for k, v in VOLTAGE_LIMITS.items()} == {k: r.source for k, r in SERVICE_VOLTAGE_RANGES.items()}


def test_an_unknown_range_says_which_exist_and_where_to_look() -> None:
    with pytest.raises(RangeLookupError, match=r"one of A, B \(agent/monitoring/limits.py"):
        voltage_range("C")


# ---- per unit on the 120 V base -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reading", "kw", "volts", "pu", "primary"),
    [
        # a PT's 120 V secondary is on the base as read; 2400:120 V is ratio 20
        (118.2, {"pt_ratio": 20}, 118.2, 0.985, 2364.0),
        (126.0, {"pt_ratio": 60}, 126.0, 1.05, 7560.0),  # 7200:120 V on a 12.47 kV feeder
        # IEEE 13-node RG60 at the published taps 10, 8, 11: 1.0625, 1.0500, 1.06875 pu of 2401.8 V
        (1.0625 * NOMINAL, {"nominal_v": NOMINAL}, 127.5, 1.0625, 1.0625 * NOMINAL),
        (1.05 * NOMINAL, {"nominal_v": NOMINAL}, 126.0, 1.05, 1.05 * NOMINAL),
        (1.06875 * NOMINAL, {"nominal_v": NOMINAL}, 128.25, 1.06875, 1.06875 * NOMINAL),
        (6840.0, {"nominal_v": 7200.0}, 114.0, 0.95, 6840.0),  # 12470Y/7200 V at 95 %
        (263.15, {"nominal_v": 277.0}, 114.0, 0.95, 263.15),  # 480Y/277 V at 95 %
    ],
)  # fmt: skip
def test_a_reading_on_the_120_v_base_and_in_per_unit(reading: float, kw: dict, volts: float, pu: float,
                                                     primary: float) -> None:  # fmt: skip
    v = base_v(reading, **kw)
    assert math.isclose(v, volts, rel_tol=1e-12)
    assert math.isclose(per_unit(v), pu, rel_tol=1e-12)
    assert math.isclose(primary_v(reading, **kw), primary, rel_tol=1e-12)


def test_the_ieee13_regulator_output_against_both_ranges() -> None:
    """RG60 at the published taps: phases a (127.5 V) and c (128.25 V) are above Range B's maximum, b (126.0 V)
    is Range A's maximum, inside."""
    classes = [range_class(base_v(pu * NOMINAL, nominal_v=NOMINAL)) for pu in (1.0625, 1.05, 1.06875)]
    assert classes == [OUTSIDE_B, IN_A, OUTSIDE_B]


def test_a_conversion_needs_exactly_one_of_pt_ratio_and_nominal_v() -> None:
    for kw in ({}, {"pt_ratio": 20, "nominal_v": NOMINAL}):
        with pytest.raises(ValueError, match="exactly one"):
            base_v(120.0, **kw)
    with pytest.raises(ValueError, match="nominal_v"):
        base_v(120.0, nominal_v=0.0)


# ---- the picture ---------------------------------------------------------------------------------------------


def vp(point: str, bus: str = "632", phase: str = "a", *, eol: bool = False, pt: float | None = None) -> VoltagePoint:
    return VoltagePoint(point, bus, phase, pt_ratio=pt, nominal_v=None if pt else NOMINAL, end_of_line=eol)


def snap(*readings: Reading) -> Snapshot:
    s = Snapshot()
    s.update(readings)
    return s


def volts(pu: float) -> float:
    return pu * NOMINAL


def r(point: str, ts: float, pu: float | None, quality: Quality = Quality.GOOD, unit: str = "V") -> Reading:
    return Reading(point, ts, None if pu is None else volts(pu), unit, quality)


CFG = MonitoringConfig(stale_after_s=10.0, voltages=(vp("meter.v_a"), vp("pmu.VA.mag")))


def test_the_freshest_usable_source_gives_the_bus_phase_its_value() -> None:
    pic = voltage_picture(CFG, snap(r("meter.v_a", 100.0, 1.00), r("pmu.VA.mag", 100.5, 1.02)), 101.0)
    bp = pic.get("632", "a")
    assert bp is not None and bp.source == "pmu.VA.mag" and math.isclose(bp.value_pu or 0, 1.02)
    assert bp.sources == ("meter.v_a", "pmu.VA.mag") and bp.ts == 100.5 and math.isclose(bp.age_s or 0, 0.5)
    # the newer one is not usable: the older good one is used
    pic = voltage_picture(CFG, snap(r("meter.v_a", 100.0, 1.00), r("pmu.VA.mag", 100.5, 1.02, Quality.INVALID)), 101)
    assert pic.get("632", "a").source == "meter.v_a"  # type: ignore[union-attr]
    # on equal timestamps the entry listed first wins
    pic = voltage_picture(CFG, snap(r("meter.v_a", 100.0, 1.00), r("pmu.VA.mag", 100.0, 1.02)), 101.0)
    assert pic.get("632", "a").source == "meter.v_a"  # type: ignore[union-attr]
    # a fresher reading that is too old to use loses to nothing: the bus-phase is stale
    pic = voltage_picture(CFG, snap(r("meter.v_a", 80.0, 1.00), r("pmu.VA.mag", 85.0, 1.02)), 101.0)
    bp = pic.get("632", "a")
    assert bp is not None and bp.stale and bp.value_v is None and bp.range_class is None


def test_each_source_says_why_it_is_not_usable() -> None:
    cfg = MonitoringConfig(stale_after_s=10.0, voltages=tuple(vp(f"d{i}.v") for i in range(8)))
    pic = voltage_picture(cfg, snap(
        r("d1.v", 100.0, 1.0),  # usable
        r("d2.v", 89.9, 1.0),  # 10.1 s old
        r("d3.v", 100.0, None, Quality.STALE),  # the poller's own verdict
        r("d4.v", 100.0, None, Quality.INVALID),
        r("d5.v", 100.0, 1.0, Quality.FLAGGED),
        r("d6.v", 100.0, 1.0, unit="A"),  # a current configured as a voltage
        r("d7.v", 111.0, 1.0),  # 11 s ahead of the picture: two clocks disagree
    ), 100.0)  # fmt: skip
    assert [s.state for s in pic.sources] == [MISSING, OK, STALE, STALE, "invalid", "flagged", "not_voltage", FUTURE]
    assert [s.point for s in pic.stale_sources] == [f"d{i}.v" for i in (0, 2, 3, 4, 5, 6, 7)]
    assert pic.sources[2].age_s == pytest.approx(10.1) and pic.sources[0].age_s is None


def test_lowest_and_highest_and_the_lowest_end_of_line() -> None:
    cfg = MonitoringConfig(voltages=(vp("m.v_a", "rg60", "a"), vp("m.v_b", "rg60", "b"),
                                     vp("c.v_a", "675", "a", eol=True, pt=20), vp("c.v_b", "675", "b", eol=True, pt=20),
                                     vp("c.v_c", "675", "c", eol=True, pt=20)))  # fmt: skip
    latest = snap(r("m.v_a", 10.0, 1.0625), r("m.v_b", 10.0, 0.97),
                  Reading("c.v_a", 10.0, 118.0, "V"), Reading("c.v_b", 10.0, 126.6, "V"))  # fmt: skip
    pic = voltage_picture(cfg, latest, 11.0)
    low, high, eol = pic.lowest(), pic.highest(), pic.lowest(end_of_line=True)
    assert (low.key, high.key, eol.key) == ("rg60/b", "rg60/a", "675/a")  # type: ignore[union-attr]
    assert eol.value_v == 118.0 and eol.source == "c.v_a" and eol.age_s == 1.0  # type: ignore[union-attr]
    assert eol.quality == "good" and high.range_class == OUTSIDE_B  # type: ignore[union-attr]
    assert [bp.key for bp in pic.stale_bus_phases(end_of_line=True)] == ["675/c"]
    high_eol = pic.highest(end_of_line=True)
    assert high_eol is not None and (high_eol.key, high_eol.range_class) == ("675/b", IN_B)
    nothing = voltage_picture(cfg, Snapshot(), 11.0)
    assert (
        nothing.lowest() is None and nothing.lowest(end_of_line=True) is None and len(nothing.stale_bus_phases()) == 5
    )


# ---- alarms: pickup and hold-off in measurement time ------------------------------------------------------


def test_pickup_and_hold_off_with_an_injected_clock() -> None:
    alarm = LimitAlarm(A, "high", pickup_s=5.0, hold_off_s=10.0)
    feed = {t: 120.0 for t in range(0, 60)}
    feed[10] = 127.0  # a one-second blip: never raises
    for t in range(20, 31):
        feed[t] = 126.5  # outside A for 11 s
    feed[23] = 126.0  # at the limit: inside, so the pickup starts again at 24
    feed[40] = 126.2  # outside once during the hold-off: the hold-off starts again at 41
    got = {t: tr for t in sorted(feed) if (tr := alarm.update(float(t), feed[t])) is not None}
    assert list(got) == [29, 51], got
    up, down = got[29], got[51]
    assert (up.raised, up.ts, up.decided_ts, up.extreme_v) == (True, 24.0, 29.0, 126.5)
    assert (down.raised, down.ts, down.decided_ts, down.since, down.extreme_v) == (False, 41.0, 51.0, 24.0, 126.5)


def test_zero_pickup_raises_on_the_first_value_outside() -> None:
    alarm = LimitAlarm(B, "low", pickup_s=0.0, hold_off_s=0.0)
    assert alarm.update(0.0, 110.0) is None  # B's minimum is inside B
    t = alarm.update(1.0, 109.9)
    assert t is not None and t.raised and t.ts == 1.0
    t = alarm.update(2.0, 110.0)
    assert t is not None and not t.raised and t.ts == 2.0


def site(*points: str, **kw: float | str) -> MonitoringConfig:
    """Pickup 2 s, hold-off 3 s, stale after 10 s; ``points`` (default: one) all measure bus 632 phase a."""
    return MonitoringConfig(**{"pickup_s": 2.0, "hold_off_s": 3.0, "stale_after_s": 10.0, **kw},  # type: ignore[arg-type]
                            voltages=tuple(vp(p) for p in points or ("meter.v_a",)))  # fmt: skip


def run(cfg: MonitoringConfig, steps: list[tuple[float, list[Reading]]], started: float = 0.0) -> list:
    """Feed the snapshot ``readings`` at each ``now``, a picture per step; every event with its step time."""
    alarms, latest, out = VoltageAlarms(cfg, started), Snapshot(), []
    for now, readings in steps:
        latest.update(readings)
        out += [(now, ev) for ev in alarms.update(voltage_picture(cfg, latest, now))]
    return out


def test_a_sustained_excursion_raises_range_a_then_b_and_clears_each_after_the_hold_off() -> None:
    pus = [1.0] * 3 + [1.055] * 4 + [1.07] * 4 + [1.0] * 6  # 126.6 V (A), then 128.4 V (A and B), then 120 V
    events = run(site(), [(float(t), [r("meter.v_a", float(t), pu)]) for t, pu in enumerate(pus)])
    summary = [(now, ev.kind, ev.severity, ev.ts, ev.data["side"], ev.data.get("cleared", False)) for now, ev in events]
    assert summary == [
        (5.0, "voltage_range_a", "warning", 3.0, "high", False),
        (9.0, "voltage_range_b", "error", 7.0, "high", False),
        (14.0, "voltage_range_a", "info", 11.0, "high", True),
        (14.0, "voltage_range_b", "info", 11.0, "high", True),
    ]
    raised = events[0][1]
    assert raised.source == "632/a" and raised.data["bus"] == "632" and raised.data["phase"] == "a"
    assert raised.data["source_point"] == "meter.v_a" and raised.data["limit_v"] == 126.0
    assert raised.data["value_v"] == pytest.approx(126.6) and raised.data["clause"] == A.source
    cleared = events[2][1].data
    assert cleared["raised_ts"] == 3.0 and cleared["duration_s"] == 8.0 and cleared["extreme_v"] == pytest.approx(128.4)


def test_only_range_b_alarms_when_the_site_says_b() -> None:
    pus = [1.0, 1.055, 1.055, 1.055, 1.055, 1.07, 1.07, 1.07]
    events = run(site(range="B"), [(float(t), [r("meter.v_a", float(t), pu)]) for t, pu in enumerate(pus)])
    assert [(ev.kind, ev.ts) for _, ev in events] == [("voltage_range_b", 5.0)]


def test_the_same_reading_seen_again_does_not_advance_the_pickup() -> None:
    """A meter read every 5 s stays in the snapshot between polls: one outside reading is one blip, however many
    pictures show it."""
    steps = [(float(t), [r("meter.v_a", 5.0 * (t // 5), 1.055 if 5 <= t < 10 else 1.0)]) for t in range(20)]
    assert run(site(), steps) == []


def test_a_source_that_stops_raises_stale_data_once_and_clears_when_it_updates() -> None:
    cfg = site()
    steps = [(float(t), [r("meter.v_a", float(t), 1.0)] if t <= 5 or t >= 20 else []) for t in range(25)]
    steps += [(30.0, [])]
    events = [(now, ev) for now, ev in run(cfg, steps) if ev.source == "meter.v_a"]
    assert [(now, ev.kind, ev.severity, ev.data.get("cleared", False)) for now, ev in events] == [
        (16.0, DATA_STALE, "warning", False),  # the last usable reading at 5 s; 10 s passed at 15 (not yet: >)
        (20.0, DATA_STALE, "info", True),
    ]
    stale = events[0][1]
    assert stale.ts == 16.0 and stale.data["last_usable_ts"] == 5.0 and stale.data["silent_s"] == 11.0
    assert stale.data["bus"] == "632" and stale.data["phase"] == "a" and stale.data["state"] == STALE
    assert events[1][1].data["duration_s"] == 4.0


def test_a_point_never_read_goes_stale_counted_from_the_start() -> None:
    cfg = site("meter.v_a", "pmu.VA.mag")
    events = run(cfg, [(float(t), [r("meter.v_a", float(t), 1.0)]) for t in range(100, 112)], started=100.0)
    assert [(ev.source, ev.ts, ev.data["state"]) for _, ev in events] == [("pmu.VA.mag", 111.0, MISSING)]


def test_invalid_readings_go_stale_after_the_last_usable_one() -> None:
    """A device answering with exceptions updates its point (INVALID) but gives no usable value."""
    steps = [(float(t), [r("meter.v_a", float(t), 1.0 if t < 3 else None, Quality.GOOD if t < 3 else Quality.INVALID),
                         r("pmu.VA.mag", float(t), 1.0)]) for t in range(15)]  # fmt: skip
    events = run(site("meter.v_a", "pmu.VA.mag"), steps)
    assert [(now, ev.source, ev.data["state"]) for now, ev in events] == [(13.0, "meter.v_a", "invalid")]


def test_a_stale_bus_phase_neither_raises_nor_clears() -> None:
    """Values outside, then no data at all, then values outside again: the excursion goes on, one event."""
    cfg = site("meter.v_a", "pmu.VA.mag")
    steps = [(float(t), [r("meter.v_a", float(t), 1.055)]) for t in range(0, 5)]  # raised at 2
    steps += [(float(t), []) for t in range(5, 30)]  # stale: the value is too old to use
    steps += [(float(t), [r("meter.v_a", float(t), 1.055)]) for t in range(30, 35)]
    kinds = [(now, ev.kind, ev.source, ev.data.get("cleared", False)) for now, ev in run(cfg, steps)]
    assert kinds == [
        (2.0, "voltage_range_a", "632/a", False),
        (11.0, DATA_STALE, "pmu.VA.mag", False),  # never read: counted from the start at 0
        (15.0, DATA_STALE, "meter.v_a", False),
        (30.0, DATA_STALE, "meter.v_a", True),
    ]

"""Compliance upstream: the PQ service keeps a week of statistics per stream and reports a verdict per standard.

The 10-min and 3-s aggregates are built by hand (their values written here) and handed to the service's
aggregate hook, so every expected verdict follows from the nearest-rank percentile worked by hand beside it
and the published limits (EN 50160:2010 4.2.5: u2 <= 2 % for 95 % of the 10-min values of each week; IEEE
519-2014 5.1 a), Table 1: daily 99th percentile of the 3-s values < 1.5 x 5 % for each harmonic at <= 1 kV).
One test streams a real unbalanced signal through a WaveformStreamServer on 127.0.0.1.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers.aio import async_test, running_tasks, until

from agent.config import ConfigError, parse_config
from agent.points import Quality, Reading
from agent.pq import compliance as cp
from agent.pq.classa import Aggregate
from agent.pq.config import WaveformStreamConfig, default_compliance
from agent.pq.events import EventConfig
from agent.pq.harmonics import max_order_for
from agent.pq.processor import COMPLIANCE_KIND, ComplianceTracker, PqOutput, PqProcessor
from agent.pq.service import PqStream
from sim_hw.waveforms import WaveformDesc
from sim_hw.waveforms.stream import WaveformStreamServer

TICK = 1_767_225_600.0  # 2026-01-01T00:00:00Z: a 10-min tick and a UTC day boundary
WEEK = 7 * 86400.0


def config(nominal: int = 50, udin: float = 230.0, **kw: Any) -> WaveformStreamConfig:
    kw.setdefault("compliance", default_compliance(nominal, udin))
    return WaveformStreamConfig(name="pq1", host="127.0.0.1", port=1, nominal_hz=nominal, lamp_v=230 if nominal == 50
                                else 120, events=EventConfig(udin_v=udin), **kw)  # fmt: skip


class Harness:
    """A PqProcessor (1600 Hz) with its stream's ComplianceTracker; aggregates are pushed through its hook."""

    def __init__(self, cfg: WaveformStreamConfig, start: float = TICK - 30) -> None:
        self.cfg = cfg
        self.tracker = ComplianceTracker(cfg)
        self.proc = PqProcessor(cfg, 1600.0, start, self.tracker)
        self.max_order = max_order_for(1600.0, cfg.nominal_hz)
        self.readings: list[Reading] = []
        self.events: list[Any] = []

    def push(self, kind: str, start: float, end: float, *, u2: float = 0.5, h5_pct: float = 0.0,
             flagged: bool = False) -> PqOutput:  # fmt: skip
        udin = self.cfg.udin_v
        sub = np.zeros((3, self.max_order + 1))
        sub[:, 1] = udin
        sub[:, 5] = udin * h5_pct / 100
        values = {"rms_v": np.full(3, udin), "thds_pct": np.full(3, h5_pct), "harmonic_subgroup_v": sub,
                  "u2_pct": np.array(u2), "u0_pct": np.array(0.0)}  # fmt: skip
        out = PqOutput()
        self.proc._aggregate(Aggregate(kind, start, end, values, flagged, 15), out)
        self.readings += out.readings
        self.events += out.events
        return out

    def ten_min(self, k: int, **kw: Any) -> PqOutput:
        """The 10-min value of [TICK + 600 k, TICK + 600 (k + 1))."""
        return self.push("10-min", TICK + 600 * k, TICK + 600 * (k + 1), **kw)

    def verdicts(self, std: str) -> list[Reading]:
        return [r for r in self.readings if r.point == f"pq1.compliance.{std}"]


# ---- EN 50160: u2 -------------------------------------------------------------------------------------------


def test_u2_above_2_pct_in_more_than_5_pct_of_the_10_min_values_fails_and_recovers_with_events() -> None:
    h = Harness(config())  # 50 Hz, 230 V: en50160-lv by default
    assert h.cfg.compliance == ("en50160-lv",)
    # 19 values at 0.5 % then one at 2.5 %: n = 20, the 95th percentile is the value at rank ceil(0.95 x 20) = 19
    # of the sorted values: 0.5 %, so 95 % of the values (19 of 20) are within 2 %: pass, on the boundary.
    for k in range(19):
        h.ten_min(k)
    h.ten_min(19, u2=2.5)
    assert [r.value for r in h.verdicts("en50160-lv")] == [1] * 20 and not h.events
    assert all(r.quality == Quality.ESTIMATED and r.unit == "" for r in h.verdicts("en50160-lv"))
    assert [r.ts for r in h.verdicts("en50160-lv")][:2] == [TICK + 600, TICK + 1200]
    # A second 2.5 %: n = 21, rank ceil(19.95) = 20, the 20th sorted value is 2.5 %: fail.
    h.ten_min(20, u2=2.5)
    assert h.verdicts("en50160-lv")[-1].value == 0
    (ev,) = h.events
    assert (ev.kind, ev.severity, ev.source, ev.ts) == (COMPLIANCE_KIND, "warning", "pq1", TICK + 21 * 600)
    assert "en50160-lv FAIL" in ev.text and "supply voltage unbalance u2 2.500 %" in ev.text, ev.text
    assert "limit 2 %" in ev.text and "95th percentile of the 10-min u2 values" in ev.text, ev.text
    (failed,) = ev.data["failed"]  # u2 is the only criterion failed: RMS, THD and harmonics are within limits
    assert (failed["measured"], failed["limit"], failed["clause"]) == (2.5, 2.0, "EN 50160:2010 4.2.5")
    assert (ev.data["verdict"], ev.data["previous"], ev.data["period_complete"]) == ("fail", "pass", False)
    # Back under: with 2 values above 2 %, n = 39 gives rank ceil(37.05) = 38 of 39 (2.5 %: still failing),
    # n = 40 gives rank 38 of 40 (0.5 %): 38 of 40 values, 95 %, within the limit: pass, and an event.
    for k in range(21, 39):
        h.ten_min(k)
    assert h.verdicts("en50160-lv")[-1].value == 0 and len(h.events) == 1
    h.ten_min(39)
    assert h.verdicts("en50160-lv")[-1].value == 1
    back = h.events[-1]
    assert (back.kind, back.severity, back.data["verdict"], back.data["previous"]) == (
        COMPLIANCE_KIND, "info", "pass", "fail")  # fmt: skip
    assert back.data["failed"] == [] and "pass again" in back.text
    assert len(h.events) == 2


def test_flagged_10_min_values_are_left_out_of_the_percentile() -> None:
    h = Harness(config())
    for k in range(19):
        h.ten_min(k)
    for k in range(19, 25):  # six intervals a dip overlapped (IEC 61000-4-30 4.7): not assessed
        h.ten_min(k, u2=9.0, flagged=True)
    assert [r.value for r in h.verdicts("en50160-lv")] == [1] * 25 and not h.events
    assert h.tracker.status()["en50160-lv"]["verdict"] == "pass"


def test_the_week_rolls_old_values_out_and_the_verdict_turns_good_when_the_week_is_whole() -> None:
    h = Harness(config())
    for k in range(100):  # 100 values above 2 %: fail from the first
        h.ten_min(k, u2=3.0)
    assert h.events[0].data["verdict"] == "fail" and h.events[0].data["previous"] is None
    for k in range(100, 1008 + 60):
        h.ten_min(k)
    got = h.verdicts("en50160-lv")
    # The week ending at TICK + 600 (k + 1) holds the values k - 1007 .. k. Fail while more than
    # 1008 - ceil(0.95 x 1008) = 50 of them are at 3 %: the 3 % values are 0..99, so while k - 1007 <= 49.
    first_pass = next(i for i, r in enumerate(got) if r.value == 1)
    assert first_pass == 1007 + 50, first_pass
    # quality: the history starts at TICK (the first whole 10-min value); it spans the week at TICK + 7 days
    assert got[1006].quality == Quality.ESTIMATED and got[1007].quality == Quality.GOOD
    assert got[1007].ts == TICK + WEEK
    assert [e.data["verdict"] for e in h.events] == ["fail", "pass"]
    assert h.events[1].ts == TICK + 600 * (first_pass + 1) and h.events[1].data["period_complete"] is True


def test_a_first_verdict_that_passes_is_not_an_event_and_no_verdict_without_an_assessed_criterion() -> None:
    h = Harness(config())
    out = h.push("10-min", TICK - 600, TICK)  # measurement began inside it: nothing kept, nothing assessed
    assert not out.readings and not out.events
    h.ten_min(0)
    assert [r.value for r in h.verdicts("en50160-lv")] == [1] and not h.events


def test_no_standards_configured_keeps_nothing_and_reports_nothing() -> None:
    h = Harness(config(compliance=()))
    h.ten_min(0, u2=5.0)
    assert h.tracker.statistics is None and h.proc.rolling is None
    assert not any(".compliance." in r.point for r in h.readings) and not h.events


# ---- IEEE 519: daily 99th percentile of the 3-s values ------------------------------------------------------


@pytest.mark.parametrize(("high", "verdict"), [(2, 1), (3, 0)])
def test_ieee519_daily_99th_percentile_of_3_s_values_at_its_boundary(high: int, verdict: int) -> None:
    h = Harness(config(60, 120.0))  # 60 Hz: ieee519 by default; bus 120 x sqrt 3 = 0.208 kV: Table 1 row <= 1 kV
    assert h.cfg.compliance == ("ieee519",)
    # 200 3-s values in the day: the 99th percentile is the value at rank ceil(0.99 x 200) = 198. With ``high``
    # values of the 5th at 8 % (>= 1.5 x 5 % = 7.5 %, IEEE 519-2014 5.1 a) and 198 - (high - 2) at 1 %, rank 198
    # is 1 % for 2 (pass) and 8 % for 3 (fail). A flagged value of 50 % is left out (4.7).
    for i in range(200):
        start = TICK + 3.0 * i
        h.push("150/180-cycle", start, start + 3.0, h5_pct=8.0 if i < high else 1.0)
    h.push("150/180-cycle", TICK + 600.0, TICK + 603.0, h5_pct=50.0, flagged=True)
    h.ten_min(0, h5_pct=1.0)  # the 10-min 5th: 1 % < 5 %, 5.1 b) passes
    (reading,) = h.verdicts("ieee519")
    assert (reading.value, reading.quality) == (verdict, Quality.ESTIMATED)
    report = h.tracker.last["ieee519"]
    if verdict:
        assert not h.events and report["failed"] == []
        return
    (ev,) = h.events
    names = {(f["criterion"], f["channel"]) for f in ev.data["failed"]}
    assert names == {("harmonic 5 (3 s)", ch) for ch in ("va", "vb", "vc")}, names
    f = ev.data["failed"][0]
    assert (f["measured"], f["limit"], f["values"]) == (8.0, 7.5, 200)
    assert "99th percentile of the 3 s values in each day" in ev.text and ev.data["bus_kv"] == pytest.approx(0.2078)


def test_days_of_3_s_values_are_kept_as_their_percentiles_for_the_week() -> None:
    st = cp.RollingStatistics(["va"], 120.0, 60.0, 7, short=True, frequency=False)
    h = np.zeros((1, 6))
    for day, h5 in ((0, 9.0), (1, 1.0)):  # day 0: every value of the 5th at 9 %, day 1 at 1 %
        for i in range(10):
            h[0, 3] = h5
            st.add_short(TICK + day * 86400 + 3.0 * i, h, False)
    s = st.series(TICK + 86400 + 600)
    d = s.short_daily["va"]
    assert list(d.day_start_s) == [TICK, TICK + 86400]
    assert list(d.measured[:, 4]) == [9.0, 1.0] and list(d.values[:, 4]) == [10, 10]  # column 0 is THD
    assert list(d.measured[:, 0]) == [9.0, 1.0]  # THD of a single harmonic is that harmonic
    # A week later day 0 no longer overlaps the week: only day 1 (ended TICK + 2 d > TICK + 8 d - 7 d)
    h[0, 3] = 1.0
    st.add_short(TICK + 8 * 86400, h, False)
    later = st.series(TICK + 8 * 86400 + 600).short_daily["va"]
    assert list(later.day_start_s) == [TICK + 86400, TICK + 8 * 86400]


def test_the_kept_largest_values_give_the_exact_99th_percentile_of_a_day() -> None:
    # 30,100 values (a day of 3-s values at +4 % frequency): the streaming top values against numpy's
    # inverted-CDF percentile, which is the nearest-rank definition, over the whole array.
    rng = np.random.default_rng(7)
    x = rng.gamma(2.0, 1.0, size=(30_100, 2))
    st = cp.RollingStatistics(["va"], 120.0, 60.0, 2, short=True, frequency=False)
    for row in x:
        st.add_short(TICK + 1.0, row[None, 1:], False)  # harmonic 2; THD of one order is that order
    d = st.series(TICK + 600).short_daily["va"]
    expected = np.percentile(x[:, 1], 99, method="inverted_cdf")
    assert d.measured[0, 1] == expected and d.measured[0, 0] == expected and d.values[0, 1] == 30_100


def test_percentile_of_the_largest_values_by_hand_and_its_errors() -> None:
    # Of 1..100, the 99th nearest-rank percentile is the 99th value: 99; only 100, 99, 98 were kept.
    assert cp.percentile_nearest_rank_top([98.0, 100.0, 99.0], 100, 99) == 99.0
    assert cp.percentile_nearest_rank_top([98.0, 100.0, 99.0], 100, 100) == 100.0
    with pytest.raises(cp.ComplianceError, match="needs the 6 largest"):
        cp.percentile_nearest_rank_top([98.0, 100.0, 99.0], 100, 95)  # rank 95: the 6th largest
    with pytest.raises(cp.ComplianceError, match="count: 0"):
        cp.percentile_nearest_rank_top([], 0, 99)
    with pytest.raises(cp.ComplianceError, match="percent=0"):
        cp.percentile_nearest_rank_top([1.0], 1, 0)


def test_memory_of_a_week_is_bounded_by_the_formula() -> None:
    # 3 channels, H = 50: 10-min rows of 8 (3 x 50 + 1) + 9 bytes, 10-s frequency rows of 17, Plt rows of 33,
    # the day in progress 768 x 8 x 150 and eight days' summaries 2 x 8 x 150 x 8.
    st = cp.RollingStatistics(["va", "vb", "vc"], 230.0, 50.0, 50)
    expected = 1008 * (8 * 151 + 9) + 60_480 * 17 + 84 * (8 * 3 + 9) + 768 * 8 * 150 + 2 * 8 * 150 * 8
    assert st.nbytes == expected


# ---- a real stream ------------------------------------------------------------------------------------------


@async_test
async def test_unbalanced_stream_fails_en50160_u2_at_the_10_min_tick() -> None:
    # Phase c at k = 0.91262 of 230 V, angles 0/-120/+120: U1 = (2 + k) / 3, U2 = (1 - k) / 3, so
    # u2 = (1 - k) / (2 + k) = 3.00 % (> 2 %, EN 50160:2010 4.2.5). The 10-min value of [TICK, TICK + 600)
    # is the only one: its 95th percentile is itself. Every other EN 50160 criterion holds (RMS -8.7 %).
    k = 0.91262
    d = WaveformDesc.from_dict({"nominal_hz": 50, "rate_hz": 1600.0, "v_rms": [230.0, 230.0, 230.0 * k],
                                "t0": TICK - 20})  # fmt: skip
    readings: list[Reading] = []
    events: list[dict[str, Any]] = []

    class Store:
        async def add_event(self, ts: float, kind: str, severity: str, source: str, text: str,
                            data: dict[str, Any] | None = None) -> None:  # fmt: skip
            events.append({"ts": ts, "kind": kind, "text": text, "data": data})

    async with WaveformStreamServer(d, speed=math.inf, duration_s=622.0) as srv:
        cfg = config()
        cfg = WaveformStreamConfig(**{**{f: getattr(cfg, f) for f in cfg.__slots__}, "port": srv.port})
        pq = PqStream(cfg, readings.extend, Store(), backoff_min_s=5.0)
        async with running_tasks(pq.run()):
            await until(lambda: pq.stats.disconnects >= 1, 30)
    got = [r for r in readings if r.point == "pq1.compliance.en50160-lv"]
    # At TICK only the 10-s frequencies of the first 20 s are kept: they pass; at TICK + 600 u2 fails.
    assert [(r.ts, r.value, r.quality) for r in got] == [(TICK, 1, Quality.ESTIMATED),
                                                          (TICK + 600, 0, Quality.ESTIMATED)]  # fmt: skip
    (ev,) = [e for e in events if e["kind"] == COMPLIANCE_KIND]
    (failed,) = ev["data"]["failed"]
    assert failed["criterion"] == "supply voltage unbalance u2"
    assert abs(failed["measured"] - (1 - k) / (2 + k) * 100) < 0.02, failed
    assert "supply voltage unbalance u2" in ev["text"]
    assert pq.status()["compliance"]["en50160-lv"]["failed"] == ["supply voltage unbalance u2"]


# ---- configuration ------------------------------------------------------------------------------------------

BASE = {"site_id": "s1", "uplink": {"broker": "mqtt://127.0.0.1:1883"}}
GOOD = {"name": "pq1", "host": "127.0.0.1", "port": 14800, "nominal_hz": 50, "udin_v": 230}


def load(**entry: Any) -> WaveformStreamConfig:
    return parse_config({**BASE, "waveforms": [{**GOOD, **entry}]}, Path("/tmp/site.toml")).waveforms[0]


def test_compliance_defaults_by_frequency_and_voltage_level() -> None:
    # EN 50160 clause 3: LV up to 1 kV, MV 1 kV..36 kV line to line (Udin x sqrt 3); 60 Hz and above: IEEE 519
    assert load().compliance == ("en50160-lv",)  # 230 x sqrt 3 = 398 V
    assert load(udin_v=577).compliance == ("en50160-lv",)  # 999.4 V
    assert load(udin_v=578).compliance == ("en50160-mv",)  # 1001.1 V
    assert load(udin_v=11000 / math.sqrt(3)).compliance == ("en50160-mv",)
    assert load(udin_v=20785).compliance == ("ieee519",)  # 36.0003 kV
    assert load(nominal_hz=60, udin_v=120).compliance == ("ieee519",)
    assert load(compliance=[]).compliance == ()
    both = load(compliance=["en50160-mv", "ieee519"], bus_kv=0.4)
    assert (both.compliance, both.bus_kv, load().bus_kv) == (("en50160-mv", "ieee519"), 0.4, None)


@pytest.mark.parametrize(
    ("entry", "key", "allowed"),
    [
        ({"compliance": "en50160-lv"}, "waveforms[0].compliance", "a list of distinct standards"),
        ({"compliance": ["en50160"]}, "waveforms[0].compliance", "'en50160' is not a standard"),
        ({"compliance": ["ieee519", "ieee519"]}, "waveforms[0].compliance", "names a standard twice"),
        ({"compliance": [519]}, "waveforms[0].compliance", "'en50160-lv', 'en50160-mv', 'ieee519'"),
        ({"bus_kv": 0.4}, "waveforms[0].bus_kv", "only used by ieee519"),
        ({"bus_kv": 0, "compliance": ["ieee519"]}, "waveforms[0].bus_kv", "0.001..1000"),
        ({"bus_kv": "13.8", "compliance": ["ieee519"]}, "waveforms[0].bus_kv", "must be a number"),
    ],
)
def test_bad_compliance_and_bus_kv_name_key_value_and_allowed(entry: dict, key: str, allowed: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(**entry)
    issues = {i.key: i for i in info.value.issues}
    assert key in issues, info.value
    assert allowed in issues[key].allowed, issues[key]
    assert issues[key].value == entry[key.rsplit(".", 1)[1]]


def test_plt_above_1_fails_en50160_flicker_severity() -> None:
    # Twelve Pst of 1.5 give Plt = cbrt(mean of cubes) = 1.5 > 1 (EN 50160:2010 4.2.3.2: Plt <= 1 for 95 % of
    # the time); a single Plt is its own 95th percentile.
    h = Harness(config(), start=TICK - 7200 - 30)

    class FixedPst:
        def pst_10min(self) -> float:
            return 1.5

    h.proc.flicker = [FixedPst(), FixedPst(), FixedPst()]  # type: ignore[list-item]
    for k in range(12):
        h.proc._pst_tick(TICK - 7200 + 600 * (k + 1), PqOutput())
    h.ten_min(0)
    assert h.verdicts("en50160-lv")[-1].value == 0
    failed = {(f["criterion"], f["channel"], f["measured"]) for f in h.events[-1].data["failed"]}
    assert failed == {("flicker severity Plt", ch, 1.5) for ch in ("va", "vb", "vc")}, failed


def test_an_assessment_that_raises_is_logged_and_counted_and_measurement_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A configuration built without the loader's checks: bus_kv = -1 has no IEEE 519 Table 1 row.
    h = Harness(config(60, 120.0, bus_kv=-1.0, compliance=("ieee519", "en50160-lv")))
    out = h.ten_min(0)
    assert h.tracker.errors == 1 and "event=pq_compliance_failed stream=pq1 standard=ieee519" in caplog.text
    assert "bus_kv=-1.0" in caplog.text
    assert [r.point for r in out.readings if ".compliance." in r.point] == ["pq1.compliance.en50160-lv"]
    assert any(r.point == "pq1.va.rms_10min" for r in out.readings)


def test_the_statistics_survive_a_new_processor_and_restart_when_the_harmonic_order_changes() -> None:
    h = Harness(config())
    h.ten_min(0, u2=3.0)
    kept = h.tracker.statistics
    again = PqProcessor(h.cfg, 1600.0, TICK + 700, h.tracker)  # a reconnection, same rate: same history
    assert again.rolling is kept and h.tracker.rebuilt == 0
    faster = PqProcessor(h.cfg, 3200.0, TICK + 800, h.tracker)  # H 15 -> 31: the rows no longer fit
    assert faster.rolling is not kept and faster.rolling.max_order == 31 and h.tracker.rebuilt == 1
    assert faster.rolling.since_s is None


def test_the_kept_week_assesses_like_the_report_on_the_same_10_min_values() -> None:
    # The same 30 10-min values (random harmonics per channel and order, RMS, u2) as an analyze document (the
    # file report's input, its criteria tested against the standards in test_pq_compliance.py) and through
    # RollingStatistics: every 10-min criterion must measure the same, order by order and channel by channel.
    rng = np.random.default_rng(3)
    chans, order = ["va", "vb", "vc"], 15
    harm = rng.gamma(1.0, 0.4, size=(30, 3, order - 1))
    rms = 230.0 * (1 + rng.normal(0, 0.04, size=(30, 3)))
    u2 = rng.gamma(2.0, 0.5, size=30)
    st = cp.RollingStatistics(chans, 230.0, 50.0, order, short=False, frequency=False)
    for i in range(30):
        st.add_ten_min(TICK + 600 * i, rms[i], harm[i], u2[i], False)
    doc = {
        "file": {"duration_s": 30 * 600.0}, "nominal_hz": 50.0, "udin_v": 230.0, "max_order": order,
        "channels": {c: {"plt": []} for c in chans}, "aggregates_3s": [], "frequency_10s": [],
        "aggregates_10min": [{"start_s": 600.0 * i, "complete": True, "flagged": False,
                              "rms_v": dict(zip(chans, rms[i].tolist(), strict=True)),
                              "harmonics_pct": {c: harm[i, j].tolist() for j, c in enumerate(chans)},
                              "u2_pct": float(u2[i])} for i in range(30)],
    }  # fmt: skip
    for std in ("en50160-lv", "ieee519"):
        streamed = cp.evaluate_series(st.series(TICK + 30 * 600), std).criteria
        filed = cp.evaluate(doc, std).criteria
        pairs = [(a, b) for a, b in zip(streamed, filed, strict=True) if "3 s" not in a.criterion]
        assert len(pairs) > 40
        for a, b in pairs:
            assert (a.criterion, a.channel, a.measured, a.passed, a.values) == (
                b.criterion, b.channel, b.measured, b.passed, b.values)  # fmt: skip

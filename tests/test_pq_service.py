"""Power quality from wave streams: a real WaveformStreamServer on 127.0.0.1, the agent's PqStream reading it.

Expected values come from the signal's description (residual, duration, the generator's switching instant)
and from IEC 61000-4-15:2010 Table 5 (the dV/V that gives Pst = 1.00), never from the code under test.
Low sample rates (1.6-3.2 kHz) and ``speed = inf`` stream ten minutes of signal in a few seconds.
"""

from __future__ import annotations

import asyncio
import logging
import math
from pathlib import Path
from typing import Any

import pytest
from helpers.aio import async_test, running_tasks, until
from helpers.net import free_port

from agent.config import ConfigError, parse_config
from agent.points import Quality, Reading
from agent.pq.config import WaveformStreamConfig
from agent.pq.events import EventConfig
from agent.pq.flicker import plt
from agent.pq.processor import PST_EVENT_LIMIT, PqOutput, PqProcessor
from agent.pq.service import PqStream
from protocols import wavestream as ws
from sim_hw.waveforms import WaveformDesc
from sim_hw.waveforms.stream import WaveformStreamServer

TICK = 1_767_225_600.0  # 2026-01-01T00:00:00Z: a 10-min (and 2-h) tick of the UTC clock
UDIN = 120.0
CYCLE_S = 1 / 60


class Collected:
    """The agent's two outlets: the reading sink (AgentService._take) and the store's add_event."""

    def __init__(self) -> None:
        self.readings: list[Reading] = []
        self.events: list[dict[str, Any]] = []

    def __call__(self, readings: list[Reading]) -> None:
        self.readings.extend(readings)

    async def add_event(self, ts: float, kind: str, severity: str, source: str, text: str,
                        data: dict[str, Any] | None = None) -> None:  # fmt: skip
        self.events.append({"ts": ts, "kind": kind, "severity": severity, "source": source, "text": text, "data": data})

    def points(self, point: str) -> list[Reading]:
        return [r for r in self.readings if r.point == point]


def stream_config(port: int, **kw: Any) -> WaveformStreamConfig:
    events = EventConfig(udin_v=UDIN)
    return WaveformStreamConfig(name="pq1", host="127.0.0.1", port=port, nominal_hz=60, lamp_v=120, events=events, **kw)


def desc(rate_hz: float = 3200.0, **kw: Any) -> WaveformDesc:
    return WaveformDesc.from_dict({"nominal_hz": 60, "rate_hz": rate_hz, "v_rms": [UDIN] * 3, **kw})


def make_stream(cfg: WaveformStreamConfig, out: Collected, **kw: Any) -> PqStream:
    kw.setdefault("backoff_min_s", 0.05)
    kw.setdefault("backoff_max_s", 0.2)
    return PqStream(cfg, out, out, **kw)


# ---- dips and swells ----------------------------------------------------------------------------------------


@async_test
async def test_dip_and_swell_each_give_one_event_with_residual_duration_and_flags() -> None:
    # Phase a to 70 % for 6 cycles from its zero crossing at 2.0 s (angle 0 at t = 0, so 2.0 s exactly);
    # phase b to 120 % for 3 cycles from its first zero crossing at or after 6.0 s.
    d = desc(t0=TICK - 30, events=[
        {"kind": "dip", "start_s": 2.0, "duration_s": 0.1, "magnitude_pct": 70.0, "phases": "a"},
        {"kind": "swell", "start_s": 6.0, "duration_s": 0.05, "magnitude_pct": 120.0, "phases": "b"},
    ])  # fmt: skip
    out = Collected()
    async with WaveformStreamServer(d, speed=math.inf, duration_s=12.0) as srv:
        pq = make_stream(stream_config(srv.port), out, backoff_min_s=5.0)
        async with running_tasks(pq.run()):
            await until(lambda: pq.stats.disconnects >= 1, 20)
    kinds = [e["kind"] for e in out.events]
    assert sorted(kinds) == ["pq_dip", "pq_swell"], out.events
    dip = next(e for e in out.events if e["kind"] == "pq_dip")
    data = dip["data"]
    assert (dip["severity"], dip["source"], data["phase"], data["phases"]) == ("warning", "pq1", "va", ["va"])
    # Residual: 70 % of Udin, within 1 % of the value
    assert abs(data["residual_pct"] - 70.0) <= 0.7, data
    assert abs(data["residual_v"] - 84.0) <= 0.84, data
    # Duration: 0.1 s within one cycle; the start is stamped at the end of the first Urms(1/2) cycle below
    # the threshold, so it lies within a cycle after the switching instant.
    assert abs(data["duration_s"] - 0.1) <= CYCLE_S, data
    assert TICK - 30 + 2.0 <= dip["ts"] <= TICK - 30 + 2.0 + CYCLE_S + 1e-3, dip["ts"] - (TICK - 30)
    assert data["clause"] == "IEC 61000-4-30:2015 5.4.2" and data["threshold_pct"] == 90.0
    assert "dip on va" in dip["text"] and "70.0 %" in dip["text"]
    swell = next(e for e in out.events if e["kind"] == "pq_swell")["data"]
    assert swell["phase"] == "vb" and abs(swell["max_pct"] - 120.0) <= 1.2, swell
    assert abs(swell["duration_s"] - 0.05) <= CYCLE_S, swell
    # IEC 61000-4-30 4.7: the 3-s values holding an event are flagged (quality flagged, value kept); the
    # others are good and read the 120 V of the description.
    rms = out.points("pq1.va.rms")
    assert len(rms) >= 3
    # what an event covers for flagging: from one cycle before its start (the Urms(1/2) cycle that stamps it)
    # to its end; the swell starts at phase b's first zero crossing after 6.0 s, at most half a cycle later
    spans = [(2.0 - CYCLE_S, 2.1 + CYCLE_S), (6.0 - CYCLE_S, 6.05 + 1.5 * CYCLE_S)]
    for r in rms:
        t0, t1 = r.ts - (TICK - 30) - 3.0, r.ts - (TICK - 30)  # 180 cycles of 60 Hz before its stamp
        holds_event = any(t0 <= b and t1 >= a for a, b in spans)
        assert r.quality == (Quality.FLAGGED if holds_event else Quality.GOOD), (r, r.ts - (TICK - 30))
        if not holds_event:
            assert abs(r.value - UDIN) < 0.05, r
    assert any(r.quality == Quality.FLAGGED for r in rms) and any(r.quality == Quality.GOOD for r in rms)
    # unbalance and THD of a balanced pure sine, and the 10-s frequency of 60 Hz
    assert all(r.value < 0.05 for r in out.points("pq1.u2") if r.quality == Quality.GOOD)
    assert all(r.value < 0.05 and r.unit == "%" for r in out.points("pq1.vc.thd") if r.quality == Quality.GOOD)
    freq = out.points("pq1.frequency")
    assert freq and all(abs(r.value - 60.0) < 0.001 and r.unit == "Hz" for r in freq), freq
    assert pq.stats.events_stored == 2 and pq.stats.gaps == 0


# ---- flicker: IEC 61000-4-15:2010 Table 5 -----------------------------------------------------------------


@async_test
async def test_table_5_point_streamed_gives_pst_one_on_the_10_min_clock_interval() -> None:
    # Table 5, 120 V lamp, 60 Hz systems: 110 rectangular changes per minute of dV/V = 0.844 % give Pst = 1.00
    # (+-5 %, the table's tolerance). The stream starts 25 s before a tick: the flickermeter settles
    # (FLICKER_SETTLE_S = 20 s), so [TICK, TICK + 600) is the first interval measured whole.
    d = desc(1600.0, t0=TICK - 25, flicker={"dv_v_pct": 0.844, "shape": "rect", "changes_per_min": 110})
    out = Collected()
    async with WaveformStreamServer(d, speed=math.inf, duration_s=627.0) as srv:
        pq = make_stream(stream_config(srv.port, channels=("va",)), out, backoff_min_s=5.0)
        async with running_tasks(pq.run()):
            await until(lambda: pq.stats.disconnects >= 1, 30)
    pst = out.points("pq1.va.pst")
    assert len(pst) == 1, pst  # the partial interval before TICK gives none
    assert pst[0].ts == TICK + 600 and pst[0].quality == Quality.GOOD and pst[0].unit == ""
    assert abs(pst[0].value - 1.00) <= 0.05, pst[0]
    # The 10-min RMS of the interval: 120 V x sqrt(1 + (dV/V / 2)^2) for a rectangular modulation
    rms10 = out.points("pq1.va.rms_10min")
    assert len(rms10) == 1 and rms10[0].ts == TICK + 600
    assert abs(rms10[0].value - UDIN * math.sqrt(1 + (0.00844 / 2) ** 2)) < 0.02, rms10
    assert not out.points("pq1.u2") and not out.points("pq1.u2_10min")  # unbalance needs three channels
    assert pq.stats.signal_s == pytest.approx(627.0)


def test_pst_above_the_limit_is_an_event_unless_flagged_and_plt_needs_the_12_pst_of_2_h() -> None:
    # The reporting around the flickermeter, with its Pst values given (the meter itself: test_pq_flicker.py).
    proc = PqProcessor(stream_config(1), 1600.0, TICK - 7200 - 30)

    class FixedPst:
        def __init__(self, values: list[float]) -> None:
            self.values = values

        def pst_10min(self) -> float:
            return self.values.pop(0)

        def reset_interval(self) -> None:
            raise AssertionError("a settled meter is read, not reset")

    # Plt = cbrt(mean of the cubes) = cbrt((27 + 5 * 1 + 6 * 8) / 12), IEC 61000-4-15 clause 4 (Block 5)
    va = [3.0] + [1.0] * 5 + [2.0] * 6
    proc.flicker = [FixedPst(list(va)), FixedPst([0.5] * 12), FixedPst([0.5] * 11 + [1.2])]  # type: ignore[list-item]
    proc._spans.append((TICK - 7200 + 60, TICK - 7200 + 60.1))  # a dip in the first interval: flagged
    outs = []
    for k in range(12):
        o = PqOutput()
        proc._pst_tick(TICK - 7200 + 600 * (k + 1), o)
        outs.append(o)
    first = {r.point: r for r in outs[0].readings}
    assert first["pq1.va.pst"].value == 3.0 and first["pq1.va.pst"].quality == Quality.FLAGGED
    assert not outs[0].events  # 3.0 is above the limit, but flagged: no flicker event
    seventh = outs[6]
    assert [e.kind for e in seventh.events] == ["pq_flicker"]  # va's 2.0 > 1.0, unflagged
    ev = seventh.events[0]
    assert ev.data["pst"] == {"va": 2.0} and ev.data["limit_pst"] == PST_EVENT_LIMIT == 1.0
    assert ev.ts == TICK - 7200 + 3600 and ev.data["interval_end_ts"] == TICK - 7200 + 4200
    last = {r.point: r for r in outs[11].readings}
    assert last["pq1.va.plt"].value == pytest.approx((80 / 12) ** (1 / 3), abs=1e-4)
    assert last["pq1.va.plt"].ts == TICK and last["pq1.va.plt"].quality == Quality.FLAGGED  # holds a flagged Pst
    assert last["pq1.vb.plt"].value == pytest.approx(0.5, abs=1e-4)
    assert last["pq1.vc.plt"].value == pytest.approx(((11 * 0.125 + 1.2**3) / 12) ** (1 / 3), abs=1e-4)
    assert plt([0.5] * 12) == pytest.approx(0.5)
    assert [e.data["pst"] for e in outs[11].events] == [{"va": 2.0, "vc": 1.2}]
    assert not any(r.point.endswith(".plt") for o in outs[:11] for r in o.readings)  # only at the 2-h tick


# ---- faults on the wire ---------------------------------------------------------------------------------------


@async_test
async def test_gap_crc_error_and_garbage_are_counted_and_the_windows_restart() -> None:
    d = desc(t0=TICK - 30)
    out = Collected()
    async with WaveformStreamServer(d, speed=math.inf, duration_s=20.0, block_s=0.02) as srv:
        srv.drop_blocks(200, 5)  # 5 blocks of 64 samples lost at 4.0 s
        srv.corrupt_blocks(500)  # one block's CRC fails at 10.0 s: the decoder reports it, then the gap
        srv.inject(b"\x00garbage\xff" * 3, before_seq=700)
        pq = make_stream(stream_config(srv.port), out, backoff_min_s=5.0)
        async with running_tasks(pq.run()) as (task,):
            await until(lambda: pq.stats.disconnects >= 1, 20)
            assert not task.done()
    st = pq.stats
    assert (st.gaps, st.missing_samples, st.bad_frames, st.garbage_bytes) == (2, 6 * 64, 1, 27), st
    assert st.resets == 2 and st.samples == 20 * 3200 - 6 * 64
    # The measurement restarts after each gap: a 3-s value ends after each restart, none spans a gap.
    ends = sorted(r.ts - (TICK - 30) for r in out.points("pq1.va.rms"))
    assert any(4.1 < t < 10.0 for t in ends) and any(t > 10.1 for t in ends), ends
    assert not any(t - 3.05 < 4.0 < t or t - 3.05 < 10.0 < t for t in ends), ends
    assert not out.events  # a gap is not a dip


@async_test
async def test_server_killed_mid_stream_is_logged_counted_and_reconnected(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gridedge.pq")
    port = free_port()
    out = Collected()
    pq = make_stream(stream_config(port), out)
    first = WaveformStreamServer(desc(t0=TICK), port=port, speed=50.0)
    await first.start()
    async with running_tasks(pq.run()) as (task,):
        await until(lambda: out.points("pq1.va.rms"), 15)
        await first.stop()  # killed mid-stream
        await until(lambda: pq.stats.disconnects >= 1 and pq.stats.connect_failures >= 2, 10)
        assert not task.done() and not pq.stats.connected
        # The recorder comes back (with a later clock); the agent reconnects and measures again.
        second = WaveformStreamServer(desc(t0=TICK + 3600), port=port, speed=50.0)
        await second.start()
        try:
            await until(lambda: [r for r in out.points("pq1.va.rms") if r.ts > TICK + 3600], 15)
        finally:
            await second.stop()
    st = pq.stats
    assert st.connects == 2 and st.reconnects >= 3 and st.resets >= 1, st
    down = [r.getMessage() for r in caplog.records if "event=pq_stream_down" in r.getMessage()]
    assert "closed by the peer" in down[0] and all("stream=pq1" in m for m in down), down
    assert any("ConnectionRefusedError" in m for m in down[1:]), down
    assert any("event=pq_stream_connected" in r.getMessage() for r in caplog.records)


@async_test
async def test_replayed_timeline_is_measured_once() -> None:
    # speed = inf restarts every connection at sample 0: after END the agent reconnects and gets the same
    # samples again, which must not give the dip twice.
    d = desc(t0=TICK - 30, events=[{"kind": "dip", "start_s": 1.0, "duration_s": 0.05, "magnitude_pct": 50.0}])
    out = Collected()
    async with WaveformStreamServer(d, speed=math.inf, duration_s=4.0) as srv:
        pq = make_stream(stream_config(srv.port), out, backoff_min_s=0.01, backoff_max_s=0.01)
        async with running_tasks(pq.run()):
            await until(lambda: pq.stats.replayed_samples >= 2 * 4 * 3200, 15)
    assert pq.stats.samples == 4 * 3200 and pq.stats.connects >= 3
    assert [e["kind"] for e in out.events] == ["pq_dip"]


@async_test
async def test_connection_refused_and_silent_stream_are_retried_with_backoff() -> None:
    out = Collected()
    refused = make_stream(stream_config(free_port()), out)
    silent_port = free_port()
    header = ws.encode_header(ws.Header(("va", "vb", "vc"), ("V", "V", "V"), 3200.0, TICK, 60.0))

    async def serve_header_then_nothing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(header)
        await writer.drain()
        await reader.read()  # until the agent gives up on it

    server = await asyncio.start_server(serve_header_then_nothing, "127.0.0.1", silent_port)
    silent = make_stream(stream_config(silent_port), out, stale_after_s=0.2)
    try:
        async with running_tasks(refused.run(), silent.run()) as tasks:
            await until(lambda: refused.stats.connect_failures >= 3 and silent.stats.disconnects >= 2, 10)
            assert not any(t.done() for t in tasks)
    finally:
        server.close()
        await server.wait_closed()
    assert refused.stats.connects == 0 and "ConnectionRefusedError" in str(refused.last_error)
    assert silent.stats.connects >= 2 and "no data for 0.2 s" in str(silent.last_error)
    assert not out.readings and not out.events


@async_test
async def test_stream_without_the_configured_channels_is_a_named_config_error() -> None:
    out = Collected()
    async with WaveformStreamServer(desc(), speed=math.inf, duration_s=2.0) as srv:
        pq = make_stream(stream_config(srv.port, channels=("va", "vx")), out)
        currents = make_stream(stream_config(srv.port, channels=("ia",)), out)
        async with running_tasks(pq.run(), currents.run()):
            await until(lambda: pq.stats.config_errors >= 2 and currents.stats.config_errors >= 1, 10)
    assert "channels ['vx'] not in the stream's" in str(pq.last_error)
    assert "allowed volts (V)" in str(currents.last_error)
    assert pq.stats.samples == 0 and not out.readings


@async_test
async def test_report_interval_keeps_one_short_value_per_clock_interval() -> None:
    out = Collected()
    async with WaveformStreamServer(desc(t0=TICK - 60), speed=math.inf, duration_s=40.0) as srv:
        pq = make_stream(stream_config(srv.port, report_interval_s=12.0), out, backoff_min_s=5.0)
        async with running_tasks(pq.run()):
            await until(lambda: pq.stats.disconnects >= 1, 15)
    stamps = [r.ts for r in out.points("pq1.va.rms")]
    buckets = [math.floor(t / 12.0) for t in stamps]
    assert len(stamps) >= 3 and len(set(buckets)) == len(buckets), stamps  # 13 values of 3 s, one per 12 s
    assert len(out.points("pq1.frequency")) == len({math.floor(r.ts / 12.0) for r in out.points("pq1.frequency")})


# ---- configuration ----------------------------------------------------------------------------------------


BASE = {"site_id": "s1", "uplink": {"broker": "mqtt://127.0.0.1:1883"}}


def test_waveforms_config_loads_typed_values_and_defaults() -> None:
    raw = {**BASE, "waveforms": [
        {"name": "pq1", "host": "127.0.0.1", "port": 14800, "nominal_hz": 60, "udin_v": 120},
        {"name": "pq2", "host": "10.0.0.2", "port": 14801, "nominal_hz": 50, "udin_v": 230.0, "channels": ["v1"],
         "dip_threshold_pct": 85, "hysteresis_pct": 1.5, "report_interval_s": 60, "lamp_v": 120},
    ]}  # fmt: skip
    a, b = parse_config(raw, Path("/tmp/site.toml")).waveforms
    assert (a.lamp_v, a.channels, a.report_interval_s, a.udin_v) == (120, ("va", "vb", "vc"), 3.0, 120.0)
    assert a.events == EventConfig(udin_v=120.0)  # IEC 61000-4-30 5.4 defaults
    assert (b.lamp_v, b.channels, b.events.dip_threshold_pct, b.events.hysteresis_pct) == (120, ("v1",), 85.0, 1.5)
    assert parse_config({**BASE, "waveforms": [{**raw["waveforms"][1], "lamp_v": 230}]}, Path("/t.toml")).waveforms
    only_50 = {k: v for k, v in raw["waveforms"][1].items() if k != "lamp_v"}
    assert parse_config({**BASE, "waveforms": [only_50]}, Path("/t.toml")).waveforms[0].lamp_v == 230


@pytest.mark.parametrize(
    ("entry", "key", "allowed"),
    [
        ({"nominal_hz": 55}, "waveforms[0].nominal_hz", "one of 50, 60"),
        ({"lamp_v": 110}, "waveforms[0].lamp_v", "one of 230, 120"),
        ({"udin_v": 0}, "waveforms[0].udin_v", "1..1000000"),
        ({"port": 70000}, "waveforms[0].port", "1..65535"),
        ({"channels": []}, "waveforms[0].channels", "1 to 3 distinct"),
        ({"channels": ["va", "va"]}, "waveforms[0].channels", "1 to 3 distinct"),
        ({"channels": "va"}, "waveforms[0].channels", "1 to 3 distinct"),
        ({"report_interval_s": 1}, "waveforms[0].report_interval_s", "3..3600"),
        ({"dip_threshold_pct": 99}, "waveforms[0].dip_threshold_pct", "<= 98"),
        ({"swell_threshold_pct": 101}, "waveforms[0].swell_threshold_pct", "102..200"),
        ({"interruption_threshold_pct": 89}, "waveforms[0].interruption_threshold_pct", "< dip_threshold_pct"),
        ({"hysteresis_pct": "2"}, "waveforms[0].hysteresis_pct", "must be a number"),
        ({"colour": "red"}, "waveforms[0].colour", "unknown key"),
        ({"host": ""}, "waveforms[0].host", "non-empty string"),
    ],
)
def test_each_bad_waveforms_value_names_its_key_and_what_is_allowed(entry: dict, key: str, allowed: str) -> None:
    good = {"name": "pq1", "host": "127.0.0.1", "port": 14800, "nominal_hz": 60, "udin_v": 120}
    with pytest.raises(ConfigError) as info:
        parse_config({**BASE, "waveforms": [{**good, **entry}]}, Path("/tmp/site.toml"))
    issues = {i.key: i for i in info.value.issues}
    assert key in issues, info.value
    assert allowed in issues[key].allowed, issues[key]


def test_waveforms_missing_keys_and_duplicate_names_are_each_reported() -> None:
    raw = {**BASE, "pmus": [{"name": "pq1", "host": "127.0.0.1", "idcode": 1}],
           "waveforms": [{"name": "pq1", "host": "h", "port": 1, "nominal_hz": 60, "udin_v": 120}, {}]}  # fmt: skip
    with pytest.raises(ConfigError) as info:
        parse_config(raw, Path("/tmp/site.toml"))
    got = {i.key: i.allowed for i in info.value.issues}
    assert got["waveforms[0].name"] == "must be unique among devices, PMUs and waveform streams"
    for k in ("name", "host", "port", "nominal_hz", "udin_v"):
        assert got[f"waveforms[1].{k}"].startswith("is required"), got


# ---- a recorder glitch on the wire ----------------------------------------------------------------------------
# Expected values come from the stream's layout (3200 Hz, blocks of 0.02 s = 64 samples), never from the code
# under test.

RATE = 3200.0
BLOCK = 64  # samples of a 0.02-s block at 3200 Hz
T0 = TICK - 30
GLITCH_S = 4.0  # the block starting 4.0 s into the stream holds a NaN on vb (block 200)


def nan_on_vb(t: float) -> tuple[float, float, float]:
    """WaveformStreamServer's per-block scale: vb of the block starting at GLITCH_S is NaN, a recorder glitch."""
    return (1.0, math.nan, 1.0) if abs(t - (T0 + GLITCH_S)) < 0.5 * BLOCK / RATE else (1.0, 1.0, 1.0)


@async_test
async def test_nan_samples_drop_their_block_like_a_gap_and_a_replayed_stream_gets_past_them() -> None:
    # speed = inf restarts every connection at sample 0 (a replayed timeline): a stream that refused the NaN block
    # by reconnecting would meet it again on every connection and never measure past 4.0 s.
    out = Collected()
    duration = 10.0
    async with WaveformStreamServer(desc(RATE, t0=T0), speed=math.inf, duration_s=duration, scale=nan_on_vb) as srv:
        pq = make_stream(stream_config(srv.port), out, backoff_min_s=0.01, backoff_max_s=0.01)
        async with running_tasks(pq.run()) as (task,):
            await until(lambda: pq.stats.disconnects >= 2 or pq.stats.config_errors >= 3, 20)
            assert not task.done()
    st = pq.stats
    assert st.config_errors == 0, pq.last_error  # a glitch is not a configuration error
    assert (st.nonfinite_blocks, st.nonfinite_samples) == (1, BLOCK), st
    assert st.samples == round(duration * RATE) - BLOCK, st  # every sample but the glitch's block, once
    # The windows restart after the glitch: 3-s values after it, none spanning it, no NaN value reported.
    ends = sorted(r.ts - T0 for r in out.points("pq1.va.rms"))
    assert any(t > GLITCH_S + 3 for t in ends), ends
    assert not any(t - 3.05 < GLITCH_S < t for t in ends), ends
    assert all(math.isfinite(r.value) for r in out.readings)
    assert not out.events  # a dropped block is not a dip

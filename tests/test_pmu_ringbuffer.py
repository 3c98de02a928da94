"""The PMU ring buffer's compact storage: rows packed in place, wrapping, read back as the frames carried them."""

from __future__ import annotations

import math
import struct

import pytest
from helpers.sinks import Taken

from agent.pmu.config import PmuMonitoringConfig, PmuStreamConfig
from agent.pmu.ingest import PmuIngest
from agent.pmu.ringbuffer import RingBuffer
from protocols.c37118 import DataFormat, DataFrame, PhasorKind
from sim_hw.devices.pmu import SimPmu

RATE = 30
NOMINAL_V = 7200.0
MON = PmuMonitoringConfig(window_before_s=0.5, window_after_s=0.5, hold_off_s=1.0, buffer_s=2.0)
K0 = 1_700_000_000 * RATE


def ingest(pmu: SimPmu, mon: PmuMonitoringConfig = MON) -> PmuIngest:
    cfg = PmuStreamConfig(name="pmu1", host="127.0.0.1", port=1, idcode=pmu.idcode, nominal_v=NOMINAL_V)
    return PmuIngest(cfg, mon, Taken(), lambda *a: None, clock=lambda: 2e9)


# ---- the buffer alone ------------------------------------------------------------------------------------

# Values exact in each type of the format "Hhff": uint16, int16, then two float32 (halves and quarters).
ROWS = [(k * 1000, -k, k + 0.5, -k * 0.25) for k in range(12)]


def test_rows_wrap_in_place_and_come_back_as_appended():
    rb = RingBuffer(5, row_format="Hhff")
    for k, row in enumerate(ROWS):
        assert rb.append(100.0 + k, row)
    assert len(rb) == 5 and rb.first_ts == 107.0 and rb.last_ts == 111.0
    assert rb.nbytes == 5 * (2 + 2 + 4 + 4) + 5 * 8  # the packed row and its timestamp, nothing per sample
    assert rb.window(0.0, 1e12) == ([107.0, 108.0, 109.0, 110.0, 111.0], ROWS[7:])
    assert rb.latest(2) == [(110.0, ROWS[10]), (111.0, ROWS[11])]


def test_a_window_across_the_physical_end_of_the_block():
    # Capacity 5, 7 samples: slots 0-1 hold samples 5-6, slots 2-4 samples 2-4; 3..6 spans the end.
    rb = RingBuffer(5, row_format="Hhff")
    for k, row in enumerate(ROWS[:7]):
        rb.append(100.0 + k, row)
    assert rb.window(103.0, 106.0) == ([103.0, 104.0, 105.0, 106.0], ROWS[3:7])
    assert rb.window(102.5, 104.0) == ([103.0, 104.0], ROWS[3:5])  # the tail of the block only
    assert rb.window(105.0, 106.5) == ([105.0, 106.0], ROWS[5:7])  # its head only
    assert rb.latest(4) == [(100.0 + k, ROWS[k]) for k in range(3, 7)]


def test_a_full_block_read_whole_from_any_starting_slot():
    for n in (5, 10, 13):  # the oldest sample in slot 0, 0 again after two turns, slot 3
        rb = RingBuffer(5, row_format="Hhff")
        for k, row in enumerate(ROWS[:n] if n <= len(ROWS) else ROWS + ROWS[: n - len(ROWS)]):
            rb.append(float(k), row)
        expected = (ROWS + ROWS)[n - 5 : n]
        assert rb.window(-1.0, 1e9) == ([float(k) for k in range(n - 5, n)], expected), n


def test_without_a_format_rows_are_doubles_of_the_first_rows_width():
    rb = RingBuffer(3)
    assert rb.row_format is None
    rb.append(1.0, (0.1, -2.5e9, 7))
    assert rb.row_format == "ddd" and rb.latest(1) == [(1.0, (0.1, -2.5e9, 7.0))]


def test_bad_row_format_and_rows_that_do_not_fit_are_refused():
    with pytest.raises(ValueError, match=r"row_format = 'Hq!': a struct format"):
        RingBuffer(3, row_format="Hq!")
    rb = RingBuffer(3, row_format="Hh")
    with pytest.raises(struct.error):
        rb.append(1.0, (1, 2, 3))
    with pytest.raises(struct.error):
        rb.append(1.0, (70000, 0))  # no uint16
    assert len(rb) == 0 and rb.last_ts is None


# ---- the PMU ingest's rows -------------------------------------------------------------------------------


def phasor_words(fmt: DataFormat, j: int) -> tuple[float, float]:
    """The two words of phasor ``j`` in ``fmt`` (6.3 Table 5), chosen exact in their type."""
    if fmt.phasor_float:
        return (7000.5 + 10 * j, 0.5 - 0.5 * j) if fmt.polar else (6000.5 - 5 * j, -3500.25 + 2 * j)
    return (60000 - 1000 * j, 12000 - 5000 * j) if fmt.polar else (-20000 + 3000 * j, 15000 - 4000 * j)


def expected_channels(words: tuple, fmt: DataFormat, units, nominal_hz: int) -> list[float]:
    """The channels of a one-block frame's words, written out from 6.3 Table 5/6 and 6.4 Table 9 here."""
    n = len(units)
    freq_w, dfreq_w = words[6 + 2 * n], words[7 + 2 * n]
    out = [float(freq_w), float(dfreq_w)] if fmt.freq_float else [nominal_hz + freq_w / 1000, dfreq_w / 100]
    for j, u in enumerate(units):
        a, b = words[6 + 2 * j], words[7 + 2 * j]
        k = 1.0 if fmt.phasor_float else u.scale * 1e-5  # V or A per bit of an integer phasor
        if fmt.polar:
            mag, ang = a * k, (b if fmt.phasor_float else b * 1e-4)
        else:
            mag, ang = math.hypot(a * k, b * k), math.atan2(b * k, a * k)
        out += [mag / NOMINAL_V if u.kind == PhasorKind.VOLTAGE else mag, math.degrees(ang)]
    return out


@pytest.mark.parametrize("bits", range(16))
def test_stored_rows_read_back_as_the_frames_carried_them(bits):
    fmt = DataFormat.from_word(bits)
    pmu = SimPmu(7, "SUB A", rate=RATE, format=fmt)
    cfg = pmu.config
    units = cfg.pmus[0].phasor_units
    ing = ingest(pmu)
    sent = []
    for k in range(K0, K0 + 3 * RATE):  # 90 frames in a 60-frame buffer: it has wrapped
        w = list(pmu.data_frame(k).words)
        for j in range(len(units)):
            w[6 + 2 * j : 8 + 2 * j] = phasor_words(fmt, j)
        if fmt.freq_float:
            w[6 + 2 * len(units) : 8 + 2 * len(units)] = [60.015625 + (k - K0) / 64, -0.25]
        frame = DataFrame(cfg, tuple(w))
        ing.on_frame(frame)
        sent.append((w[3] + (w[4] & 0xFFFFFF) / cfg.time_base, tuple(w)))
    rb = ing.buffer
    assert len(rb) == rb.capacity == 2 * RATE
    ts, rows = rb.window(sent[40][0], sent[70][0])  # starts in the block's tail, ends in its head
    assert ts == [t for t, _ in sent[40:71]]
    for row, (_, w) in zip(rows, sent[40:71], strict=True):
        assert row == pytest.approx(expected_channels(w, fmt, units, 60), rel=1e-12, abs=1e-12), fmt


def test_a_configuration_change_resizes_the_stored_rows():
    pmu = SimPmu(7, "SUB A", rate=RATE)  # 6 phasors, float polar, integer FREQ/DFREQ
    ing = ingest(pmu)
    for k in range(K0, K0 + 5):
        ing.on_frame(pmu.data_frame(k))
    old = ing.buffer
    assert old.row_format == "f" * 12 + "hh"
    assert old.nbytes == old.capacity * (12 * 4 + 2 * 2 + 8)
    new_fmt = DataFormat(freq_float=True, analog_float=False, phasor_float=False, polar=True)
    pmu.change_config(phasors=[("V1", PhasorKind.VOLTAGE)], rate=60, format=new_fmt, flag_s=0.0)
    frames = [pmu.data_frame(2 * K0 + 20 + k) for k in range(3)]  # 60 frames/s now
    for f in frames:
        ing.on_frame(f)
    rb = ing.buffer
    assert rb is not old and rb.row_format == "Hhff" and rb.capacity == 2 * 60
    assert rb.nbytes == rb.capacity * (2 + 2 + 4 + 4 + 8)
    units = pmu.config.pmus[0].phasor_units
    got = rb.latest(3)
    for (ts, row), f in zip(got, frames, strict=True):
        assert ts == f.words[3] + (f.words[4] & 0xFFFFFF) / pmu.config.time_base
        assert row == pytest.approx(expected_channels(f.words, new_fmt, units, 60), rel=1e-12, abs=1e-12)
    assert len(old) == 5 and len(old.latest(1)[0][1]) == 2 + 2 * 6  # a pending event still reads the old rows


# ---- the monitors behind the ingest's inlined idle checks ---------------------------------------------------


def _freq(w: list, v: int) -> None:
    w[18] = v  # FREQ of the default SimPmu (6 phasors): deviation in mHz (6.3 Table 6)


def _rocof(w: list, v: int) -> None:
    w[19] = v  # DFREQ: ROCOF x 100


def _stat(w: list, bits: int) -> None:
    w[5] |= bits  # STAT (6.3 Table 7)


def _fracsec_quality(w: list, code: int) -> None:
    w[4] = (w[4] & 0xFFFFFF) | (code << 24)  # FRACSEC bits 31-24: message time quality (6.2.2 Table 3)


@pytest.mark.parametrize(
    ("change", "kind"),
    [
        (lambda w: _freq(w, 2000), "pmu_frequency"),  # 62.0 Hz
        (lambda w: _freq(w, -3000), "pmu_frequency"),  # 57.0 Hz
        (lambda w: _rocof(w, 500), "pmu_rocof"),  # +5 Hz/s
        (lambda w: _rocof(w, -500), "pmu_rocof"),
        (lambda w: _stat(w, 5 << 6), "pmu_time_sync"),  # time quality code 5 (< 1 ms)
        (lambda w: _stat(w, 0x2000), "pmu_time_sync"),  # bit 13: not in sync
        (lambda w: _stat(w, 0x10), "pmu_time_sync"),  # bits 5-4: unlocked time
        (lambda w: _fracsec_quality(w, 15), "pmu_time_sync"),  # clock failure
    ],
)
def test_each_monitor_sees_an_excursion_through_the_ingest(change, kind):
    pmu = SimPmu(7, "SUB A", rate=RATE)
    triggers = []
    cfg = PmuStreamConfig(name="pmu1", host="127.0.0.1", port=1, idcode=7, nominal_v=NOMINAL_V)
    ing = PmuIngest(cfg, MON, Taken(), lambda t, *_: triggers.append(t), clock=lambda: 2e9)
    for k in range(K0, K0 + RATE):
        ing.on_frame(pmu.data_frame(k))
    assert triggers == []
    for k in range(K0 + RATE, K0 + 2 * RATE):
        w = list(pmu.data_frame(k).words)
        change(w)
        ing.on_frame(DataFrame(pmu.config, tuple(w)))
    assert [(t.kind, t.cleared) for t in triggers] == [(kind, False)]


def test_a_frame_after_a_stale_outage_clears_it():
    pmu = SimPmu(7, "SUB A", rate=RATE)
    triggers, now = [], [K0 / RATE]
    cfg = PmuStreamConfig(name="pmu1", host="127.0.0.1", port=1, idcode=7, nominal_v=NOMINAL_V, stale_after_s=1.0)
    ing = PmuIngest(cfg, MON, Taken(), lambda t, *_: triggers.append(t), clock=lambda: now[0])
    ing.on_frame(pmu.data_frame(K0))
    now[0] += 1.5
    ing.tick()
    ing.on_frame(pmu.data_frame(K0 + 45))
    assert [(t.kind, t.cleared) for t in triggers] == [("pmu_stale", False), ("pmu_stale", True)]
    assert ing.stale.last_arrival == now[0] and ing.stale.last_frame_ts == K0 / RATE + 1.5


@pytest.mark.parametrize("bits", [0b0000, 0b0001, 0b0010, 0b0011])  # integer / float x rectangular / polar
@pytest.mark.parametrize("pu", [0.90, 0.97, 1.03, 1.10])
def test_the_voltage_monitor_sees_a_phase_outside_its_band_in_every_phasor_format(bits, pu):
    fmt = DataFormat.from_word(bits)
    pmu = SimPmu(7, "SUB A", rate=RATE, format=fmt)
    k = 1.0 if fmt.phasor_float else pmu.config.pmus[0].phasor_units[1].scale * 1e-5  # V per bit
    magnitude_w = pu * NOMINAL_V / k  # VB's magnitude in words
    vb = (magnitude_w, 0.3) if fmt.polar else (magnitude_w * math.cos(0.3), magnitude_w * math.sin(0.3))
    if not fmt.phasor_float:
        vb = (round(vb[0]), round(vb[1] * 1e4)) if fmt.polar else (round(vb[0]), round(vb[1]))
    triggers = []
    cfg = PmuStreamConfig(name="pmu1", host="127.0.0.1", port=1, idcode=7, nominal_v=NOMINAL_V)
    ing = PmuIngest(cfg, MON, Taken(), lambda t, *_: triggers.append(t), clock=lambda: 2e9)
    for k_ in range(K0, K0 + 2 * RATE):
        w = list(pmu.data_frame(k_).words)
        w[8:10] = vb  # VB, the second phasor
        ing.on_frame(DataFrame(pmu.config, tuple(w)))
    outside = not MON.voltage_lo_pu <= pu <= MON.voltage_hi_pu
    assert [(t.kind, t.data["phase"]) for t in triggers] == ([("pmu_voltage", "VB")] if outside else [])

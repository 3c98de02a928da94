"""COMTRADE (IEEE C37.111) writer and reader: interop with the PyPI `comtrade` package, round trips, errors.

The independent peer is `comtrade` 0.2 (dparrini/python-comtrade). It only reads, so the reverse
direction uses files written byte by byte in these tests from the standard's layout, with the expected
engineering values worked out by hand (value = a * raw + b, C37.111-2013 7.4.3).
"""

from __future__ import annotations

import datetime as dt
import math
import struct
import warnings
from pathlib import Path

import comtrade as peer
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocols import comtrade as ct

START = dt.datetime(2026, 3, 14, 15, 9, 26, 535897)
TRIGGER = dt.datetime(2026, 3, 14, 15, 9, 26, 635897)
COMBOS = [
    ("1999", "ASCII"),
    ("1999", "BINARY"),
    ("2013", "ASCII"),
    ("2013", "BINARY"),
    ("2013", "BINARY32"),
    ("2013", "FLOAT32"),
]


def _signal(n: int = 640, rate: float = 3200.0) -> np.ndarray:
    """Three voltages and three currents written from first principles (not by the bench generator)."""
    t = np.arange(n) / rate
    rows = []
    for amp in (325.27, 320.0, 330.0):
        rows.append(amp * np.sin(2 * np.pi * 50 * t + len(rows) * 2.0944) + 0.04 * amp * np.sin(2 * np.pi * 250 * t))
    for amp in (14.1, 12.0, 16.5):
        rows.append(amp * np.sin(2 * np.pi * 50 * t - 0.5 - len(rows) * 2.0944) + 3.0)  # an offset tests b
    return np.array(rows)


def _config(data: np.ndarray, rev: str, fmt: str, rate: float = 3200.0, digital: int = 2) -> ct.Config:
    names = ("va", "vb", "vc", "ia", "ib", "ic")
    units = ("V", "V", "V", "A", "A", "A")
    chans = tuple(
        ct.scaled_channel(names[i], data[i], unit=units[i], data_format=fmt, rev_year=rev, phase=names[i][1].upper())
        for i in range(len(data))
    )
    return ct.Config(
        station="SUB NORTH",
        device="BENCH-WF",
        analog=chans,
        digital=tuple(ct.DigitalChannel(f"in{j}") for j in range(digital)),
        rates=(ct.SampleRate(rate, data.shape[1]),),
        start=START,
        trigger=TRIGGER,
        rev_year=rev,
        data_format=fmt,
    )


def _peer_load(cfg: Path) -> peer.Comtrade:
    rec = peer.Comtrade(use_numpy_arrays=True, use_double_precision=True, ignore_warnings=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rec.load(str(cfg))
    return rec


# ---- interop: ours -> the peer ---------------------------------------------------------------------------


@pytest.mark.parametrize(("rev", "fmt"), COMBOS)
def test_peer_reads_our_files_within_half_a_resolution_step(tmp_path: Path, rev: str, fmt: str) -> None:
    data = _signal()
    config = _config(data, rev, fmt)
    digital = np.array([np.arange(640) % 5 == 0, np.arange(640) % 3 == 0], dtype=np.uint8)
    cfg, _ = ct.write(tmp_path / "rec", config, data, digital)
    rec = _peer_load(cfg)
    assert rec.rev_year == rev
    assert rec.station_name == "SUB NORTH" and rec.rec_dev_id == "BENCH-WF"
    assert rec.analog_channel_ids == ["va", "vb", "vc", "ia", "ib", "ic"]
    assert rec.cfg.ft == fmt
    assert rec.frequency == 50.0
    assert rec.cfg.sample_rates == [[3200.0, 640]]
    assert rec.start_timestamp == START and rec.trigger_timestamp == TRIGGER
    got = np.array(rec.analog)
    for i, ch in enumerate(config.analog):
        # quantisation error of a * raw + b is at most a / 2; FLOAT32 rounds to 24 bits of mantissa
        tol = ch.a / 2 * (1 + 1e-9) if fmt != "FLOAT32" else np.abs(data[i]).max() * 2**-24
        assert np.abs(got[i] - data[i]).max() <= tol, ch.name
    np.testing.assert_array_equal(np.array(rec.status), digital)
    np.testing.assert_allclose(np.array(rec.time), np.arange(640) / 3200.0, atol=1e-9)


@pytest.mark.parametrize(("rev", "fmt"), [c for c in COMBOS if c[1] != "ASCII"])
def test_missing_binary_values_read_as_nan_by_both(tmp_path: Path, rev: str, fmt: str) -> None:
    data = _signal(64)
    config = _config(data, rev, fmt, digital=0)
    data_missing = data.copy()
    data_missing[1, 10] = np.nan
    cfg, dat = ct.write(tmp_path / "m", config, data_missing)
    if fmt == "BINARY":  # the marker on the wire is 0x8000 (C37.111-2013 8.5): little-endian 00 80
        record_size = 8 + 2 * 6
        off = 10 * record_size + 8 + 2 * 1
        assert dat.read_bytes()[off : off + 2] == b"\x00\x80"
    ours = ct.read(cfg)
    assert np.isnan(ours.analog[1, 10]) and np.isfinite(np.delete(ours.analog[1], 10)).all()
    if fmt != "FLOAT32":  # the peer takes sys.float_info.min as the FLOAT32 marker; the standard names none
        theirs = np.array(_peer_load(cfg).analog)
        assert np.isnan(theirs[1, 10])


def test_peer_reads_our_cff(tmp_path: Path) -> None:
    data = _signal(128)
    config = _config(data, "2013", "BINARY", digital=1)
    path = ct.write_cff(tmp_path / "combined", config, data, hdr="bench recording\nline 2", inf="")
    rec = peer.Comtrade(use_numpy_arrays=True, use_double_precision=True, ignore_warnings=True)
    rec.load(str(path))
    for i, ch in enumerate(config.analog):
        assert np.abs(np.array(rec.analog[i]) - data[i]).max() <= ch.a / 2 * (1 + 1e-9)
    ours, hdr, _ = ct.parse_cff(path.read_bytes())
    assert hdr == "bench recording\r\nline 2\r\n"
    assert np.abs(ours.analog - data).max(axis=1).max() <= max(c.a for c in config.analog)


# ---- interop: hand-written files (the standard's layout) -> ours and the peer ----------------------------

# C37.111-1999 style ASCII record: 2 analog (kV with a = 0.01, b = 0; A with a = 0.5, b = -1 and secondary
# values: primary/secondary = 600/5) and 2 status channels, 1200 Hz (20 per cycle at 60 Hz), 5 samples.
HAND_CFG = (
    "Hand Station,REL-7,1999\r\n"
    "4,2A,2D\r\n"
    "1,VAN,A,Line 1,kV,0.01,0,0,-99999,99998,138,0.115,P\r\n"
    "2,IA,A,Line 1,A,0.5,-1,12.5,-99999,99998,600,5,S\r\n"
    "1,52A,,,0\r\n"
    "2,TRIP,,,1\r\n"
    "60\r\n"
    "1\r\n"
    "1200,5\r\n"
    "01/06/2025,10:00:00.000000\r\n"
    "01/06/2025,10:00:00.002500\r\n"
    "ASCII\r\n"
    "1\r\n"
)
HAND_DAT = "1,0,0,10,0,1\r\n2,833,5000,12,0,1\r\n3,1667,8660,-4,1,1\r\n4,2500,99999,0,1,0\r\n5,3333,-8660,2,1,0\r\n"
# by hand: VAN = 0.01 * raw (kV); IA = 0.5 * raw - 1 (A secondary); 99999 = missing in 1999 ASCII
HAND_VAN = [0.0, 50.0, 86.6, math.nan, -86.6]
HAND_IA = [4.0, 5.0, -3.0, -1.0, 0.0]


def test_hand_written_ascii_1999_reads_with_hand_computed_values(tmp_path: Path) -> None:
    (tmp_path / "hand.cfg").write_text(HAND_CFG, newline="")
    (tmp_path / "hand.dat").write_text(HAND_DAT, newline="")
    rec = ct.read(tmp_path / "hand.cfg")
    np.testing.assert_allclose(rec.channel("VAN"), HAND_VAN, rtol=1e-12)
    np.testing.assert_allclose(rec.channel("IA"), HAND_IA, rtol=1e-12)
    np.testing.assert_array_equal(rec.digital, [[0, 0, 1, 1, 1], [1, 1, 1, 0, 0]])
    assert rec.config.analog[1].skew_us == 12.5 and rec.config.digital[1].normal == 1
    assert rec.config.trigger - rec.config.start == dt.timedelta(microseconds=2500)
    assert rec.config.line_freq_hz == 60.0 and rec.rate_hz == 1200.0
    np.testing.assert_allclose(rec.time_s, np.arange(5) / 1200.0)
    # .dat timestamps are in us: 833 us etc.
    np.testing.assert_allclose(rec.timestamp_s, [0, 833e-6, 1667e-6, 2500e-6, 3333e-6])
    # IA is a secondary value: primary = secondary * 600 / 5 (C37.111-2013 7.4.3 PS field)
    np.testing.assert_allclose(rec.primary()[1], np.array(HAND_IA) * 120.0)
    # the peer agrees on every value (it also reads 99999 as missing in 1999 ASCII)
    theirs = _peer_load(tmp_path / "hand.cfg")
    np.testing.assert_allclose(np.array(theirs.analog), rec.analog, rtol=1e-12)


def test_hand_written_binary_2013_reads_with_hand_computed_values(tmp_path: Path) -> None:
    cfg = (
        "B,DFR,2013\r\n2,1A,1D\r\n1,IB,B,,A,0.25,100,0,-32767,32767,1,1,P\r\n1,BKR,,,0\r\n50\r\n1\r\n4000,4\r\n"
        "02/01/2024,00:00:00.000000\r\n02/01/2024,00:00:00.000000\r\nBINARY\r\n1\r\n+1,x\r\n4,0\r\n"
    )
    raws = [0, -400, 32767, -0x8000]  # 100, 0, 8291.75, missing
    dat = b"".join(struct.pack("<IIhH", k + 1, k * 250, raw, k % 2) for k, raw in enumerate(raws))
    (tmp_path / "b.cfg").write_text(cfg, newline="")
    (tmp_path / "b.dat").write_bytes(dat)
    rec = ct.read(tmp_path / "b.cfg")
    np.testing.assert_allclose(rec.analog[0], [100.0, 0.0, 8291.75, math.nan])
    np.testing.assert_array_equal(rec.digital[0], [0, 1, 0, 1])
    assert (rec.config.time_code, rec.config.local_code, rec.config.tmq_code, rec.config.leapsec) == ("+1", "x", "4", 0)
    assert rec.config.start == dt.datetime(2024, 1, 2)  # dd/mm/yyyy: 2 January
    np.testing.assert_allclose(np.array(_peer_load(tmp_path / "b.cfg").analog[0]), rec.analog[0])


# ---- round trips -----------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    combo=st.sampled_from(COMBOS),
    n_ch=st.integers(1, 4),
    n=st.integers(1, 50),
    scale=st.floats(1e-3, 1e6),
    offset=st.floats(-1e6, 1e6),
    seed=st.integers(0, 2**32 - 1),
)
def test_round_trip_is_within_half_a_step(
    tmp_path: Path, combo: tuple[str, str], n_ch: int, n: int, scale: float, offset: float, seed: int
) -> None:
    rev, fmt = combo
    data = offset + scale * np.random.default_rng(seed).standard_normal((n_ch, n))
    chans = tuple(ct.scaled_channel(f"c{i}", data[i], data_format=fmt, rev_year=rev) for i in range(n_ch))
    config = ct.Config("S", "D", chans, (ct.SampleRate(1000.0, n),), START, START, rev_year=rev, data_format=fmt)
    got = ct.decode_dat(ct.parse_cfg(ct.format_cfg(config)), ct.encode_dat(config, data)).analog
    for i, ch in enumerate(chans):
        if fmt == "FLOAT32":
            tol = np.abs(data[i]).max() * 2**-23
        else:  # a / 2, plus the float rounding of a * raw + b at this magnitude
            tol = ch.a / 2 + 4 * np.finfo(float).eps * (abs(ch.b) + abs(ch.a) * 2**31)
        assert np.abs(got[i] - data[i]).max() <= tol


def test_cfg_text_round_trips_every_field() -> None:
    config = ct.Config(
        station="St",
        device="Dev",
        analog=(ct.AnalogChannel("x", "kV", "A", "bay 3", 0.125, -2.5, 40.0, -1000, 1000, 400, 0.11, "S"),),
        digital=(ct.DigitalChannel("t", "A", "bay 3", 1),),
        rates=(ct.SampleRate(4800.0, 100), ct.SampleRate(600.0, 160)),
        start=START,
        trigger=TRIGGER,
        line_freq_hz=60.0,
        data_format="FLOAT32",
        timemult=0.5,
        time_code="-5h30",
        local_code="x",
        tmq_code="B",
        leapsec=1,
    )
    assert ct.parse_cfg(ct.format_cfg(config)) == config


def test_two_sample_rates_give_the_time_axis_by_segments() -> None:
    config = ct.Config(
        "S", "D", (ct.AnalogChannel("x"),), (ct.SampleRate(1000.0, 3), ct.SampleRate(100.0, 5)), START, START
    )
    rec = ct.decode_dat(config, ct.encode_dat(config, np.zeros((1, 5))))
    np.testing.assert_allclose(rec.time_s, [0.0, 0.001, 0.002, 0.012, 0.022])


def test_nrates_zero_uses_the_dat_timestamps() -> None:
    text = "S,D,1999\n1,1A,0D\n1,x,,,V,1,0,0,-32767,32767,1,1,P\n50\n0\n0,3\n01/01/2020,00:00:00\n01/01/2020,00:00:00\nASCII\n2\n"
    config = ct.parse_cfg(text)
    assert config.rates == () and config.n_samples == 3
    rec = ct.decode_dat(config, b"1,0,5\n2,100,6\n3,350,7\n")
    np.testing.assert_allclose(rec.time_s, [0.0, 200e-6, 700e-6])  # timestamp x timemult 2 x 1 us


# ---- errors ----------------------------------------------------------------------------------------------

GOOD = HAND_CFG.split("\r\n")


def _cfg_with(line_no: int, text: str) -> str:
    lines = list(GOOD)
    lines[line_no - 1] = text
    return "\r\n".join(lines)


@pytest.mark.parametrize(
    ("line", "text", "field"),
    [
        (1, "Hand Station,REL-7,1987", "rev_year"),
        (2, "5,2A,2D", "TT"),
        (2, "4,2,2D", "##A"),
        (3, "1,VAN,A,Line 1,kV,zero,0,0,-99999,99998,138,0.115,P", "a"),
        (3, "1,VAN,A,Line 1,kV,0.01,0,0,-99999,99998,138,0.115,Q", "PS"),
        (3, "1,VAN,A", "An,ch_id,ph,ccbm,uu,a,b,skew,min,max,primary,secondary,PS"),
        (6, "2,TRIP,,,7", "y"),
        (7, "sixty", "lf"),
        (8, "-1", "nrates"),
        (9, "1200,x", "endsamp"),
        (10, "32/06/2025,10:00:00.000000", "start"),
        (10, "1/6/25,10:00:00", "start date"),
        (11, "01/06/2025,10:00", "trigger time"),
        (12, "BINARY32", "ft"),  # BINARY32 is a 2013 format: not in a 1999 file
        (13, "-3", "timemult"),
    ],
)
def test_malformed_cfg_names_line_and_field(line: int, text: str, field: str) -> None:
    with pytest.raises(ct.CfgError) as err:
        ct.parse_cfg(_cfg_with(line, text))
    assert err.value.line == line and err.value.field == field
    assert f"line {line}" in str(err.value)


def test_truncated_cfg_names_the_missing_line() -> None:
    with pytest.raises(ct.CfgError, match="line 9") as err:
        ct.parse_cfg("\r\n".join(GOOD[:8]))
    assert err.value.field == "samp,endsamp"


@pytest.mark.parametrize(
    ("line", "field"), [("+25h,0", "time_code"), ("0,utc", "local_code"), ("G,0", "tmq_code"), ("0,4", "leapsec")]
)
def test_malformed_2013_time_lines(line: str, field: str) -> None:
    base = "S,D,2013\n1,1A,0D\n1,x,,,V,1,0,0,-32767,32767,1,1,P\n50\n1\n1000,1\n01/01/2020,00:00:00\n01/01/2020,00:00:00\nBINARY\n1\n"
    text = base + (line + "\n" if field in ("time_code", "local_code") else "0,0\n" + line + "\n")
    with pytest.raises(ct.CfgError) as err:
        ct.parse_cfg(text)
    assert err.value.field == field


@pytest.mark.parametrize("fmt", ["BINARY", "ASCII"])
def test_dat_shorter_than_the_cfg_says(fmt: str) -> None:
    data = _signal(20)
    config = _config(data, "2013", fmt)
    dat = ct.encode_dat(config, data)
    cut = dat[: len(dat) * 3 // 4] if fmt == "BINARY" else b"\r\n".join(dat.split(b"\r\n")[:12])
    with pytest.raises(ct.DatTooShortError) as err:
        ct.decode_dat(config, cut)
    assert err.value.expected == 20 and err.value.actual == (15 if fmt == "BINARY" else 12)


def test_ascii_dat_with_a_short_line_or_text_value_names_the_line() -> None:
    config = ct.parse_cfg(HAND_CFG)
    bad = HAND_DAT.replace("3,1667,8660,-4,1,1", "3,1667,8660,1,1")
    with pytest.raises(ct.DatError, match="line 3: 5 fields, expected 6"):
        ct.decode_dat(config, bad.encode())
    with pytest.raises(ct.DatError, match=r"line 2: analog value 'x12'"):
        ct.decode_dat(config, HAND_DAT.replace("5000,12", "5000,x12").encode())


def test_empty_ascii_field_is_missing_in_2013() -> None:
    config = ct.parse_cfg(HAND_CFG.replace(",1999", ",2013"))
    rec = ct.decode_dat(config, HAND_DAT.replace("99999", "").encode())
    assert np.isnan(rec.analog[0, 3]) and rec.analog[0, 2] == pytest.approx(86.6)


def test_writer_refuses_what_it_cannot_represent(tmp_path: Path) -> None:
    data = _signal(10)
    config = _config(data, "1999", "BINARY")
    with pytest.raises(ct.ComtradeError, match="outside -32767..32767"):
        ct.encode_dat(config, data * 2)  # a, b chosen for the smaller data
    with pytest.raises(ct.ComtradeError, match=r"analog shape \(6, 9\)"):
        ct.encode_dat(config, data[:, :9])
    with pytest.raises(ct.ComtradeError, match="only ASCII or BINARY in rev 1999"):
        ct.format_cfg(_config(data, "1999", "FLOAT32"))
    with pytest.raises(ct.ComtradeError, match="raise timemult"):
        ct.encode_dat(config, data, timestamp_s=np.arange(10) * 1000.0)
    with pytest.raises(ct.ComtradeError, match="no comma"):
        ct.format_cfg(ct.Config("a,b", "D", (), (ct.SampleRate(1.0, 1),), START, START))
    with pytest.raises(ct.ComtradeError, match="only in rev 2013"):
        ct.format_cff(config, data)
    with pytest.raises(ct.ComtradeError, match="no CFG section"):
        ct.parse_cff(b"--- file type: HDR ---\r\nhello\r\n")

"""Wireshark's C37.118 dissector (tshark, Debian package ``tshark``) as an independent reader of our frames.

:func:`dissect` turns tshark's PDML into one :class:`Pdu` per ``synphasor`` layer, :func:`assert_clean` checks a
capture has no malformed layer, no expert info of severity warning or worse and no bad CHK, and
:func:`check_frame` compares a dissected frame with the frame we encoded, field by field.

tshark fields relied on (tshark 4.0, ``tshark -G fields | grep synphasor``):
``synphasor.frtype``, ``synphasor.version``, ``synphasor.frsize``, ``synphasor.idcode_stream_source``,
``synphasor.soc`` (shown as "Jun  6, 2006 08:00:00.000000000 UTC"), ``synphasor.fracsec_raw``,
``synphasor.timeqal.timequalindic``, ``synphasor.checksum`` and ``synphasor.checksum.status`` (1 = Good),
``synphasor.command``, ``synphasor.data`` (header text, raw), ``synphasor.conf.timebase``,
``synphasor.conf.numpmu``, ``synphasor.rate_of_transmission``, ``synphasor.idcode_data_source``,
``synphasor.num_phasors`` / ``num_analog_values`` / ``num_digital_status_words``, ``synphasor.channel_name``
(CFG-1/2), ``synphasor.station_name`` and ``synphasor.conf.chnam`` (CFG-3), ``synphasor.conf.cfgcnt``,
``synphasor.conf.phasor_scale_factor``, ``synphasor.conf.pmu_latitude``, ``synphasor.data.conf_frame``
(present only when a data frame was decoded with a configuration), ``synphasor.data.status`` (STAT bits 15-14),
``synphasor.phasor`` and ``synphasor.analog_value`` (values parsed from their display text, see ``PHASOR_RE``),
``synphasor.frequency_deviation_from_nominal`` (integer FREQ), ``synphasor.actual_frequency_value`` (float FREQ),
``synphasor.rate_change_frequency``, ``synphasor.digital_status_word``; and the generic ``_ws.malformed`` and
``_ws.expert`` / ``_ws.expert.severity`` / ``_ws.expert.message``. The CFG-1/2 station name has no field of
its own: it is the text item ``Station #n: "..."``.

tshark notes its own reading of STAT (``Data Error flag set``, ``PMU not sync flag set``) at severity Note:
those describe the data, not the encoding, and a warning threshold ignores them.
"""

from __future__ import annotations

import math
import re
import shutil
import struct
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest

from protocols.c37118 import CommandFrame, Config3Frame, ConfigFrame, DataFrame, Frame, HeaderFrame, encode_frame

PMU_PORT = 4712  # C37.118.2 Annex: TCP port of a PMU
UDP_DATA_PORT = 4713  # and the UDP port data goes to
PI_WARN = 0x00600000  # epan/proto.h: PI_NOTE 0x400000 < PI_WARN 0x600000 < PI_ERROR 0x800000
CHECKSUM_GOOD = 1  # epan/proto.h: PROTO_CHECKSUM_E_GOOD
# 'Phasor #1: "VA   ", 133987.376V ∠  0.000° alt 133987.376+j  0.000V; unscaled: 14635,     0'
PHASOR_RE = re.compile(
    r'", *(?P<mag>-?[\d.]+)[VA] ∠ *(?P<deg>-?[\d.]+)° alt *(?P<re>-?[\d.]+)\+j *(?P<im>-?[\d.]+)[VA]'
    r"(?:; unscaled: *(?P<a>-?\d+), *(?P<b>-?\d+))?$"
)
# 'Analog value #1: "P   ", 1500000.000' (float) or '..., -900 (conversion factor: 0x1000001)' (integer, ANUNIT)
ANALOG_RE = re.compile(r'", *(?P<v>-?[\d.]+)(?: \(conversion factor: 0x(?P<unit>[0-9a-f]+)\))?$')


def tshark() -> str:
    path = shutil.which("tshark")
    if path is None:
        pytest.fail(
            "tshark not found on PATH: these interop tests need Wireshark's dissector. "
            "Install the Debian package 'tshark' (scripts/install-system-packages.sh)."
        )
    return path


def dissect_options(tcp_port: int) -> list[str]:
    return [
        "-o",
        "tcp.check_checksum:FALSE",
        "-o",
        "udp.check_checksum:FALSE",
        "-d",
        f"tcp.port=={tcp_port},synphasor",
        "-d",
        f"udp.port=={UDP_DATA_PORT},synphasor",
    ]


def run_tshark(args: list[str], timeout: float = 20.0) -> str:
    proc = subprocess.run([tshark(), *args], capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        pytest.fail(f"tshark {' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


# ---- PDML: one Pdu per synphasor protocol layer (a TCP segment may hold several) -----------------------------


@dataclass
class Pdu:
    frame_number: int
    fields: dict[str, list[ET.Element]] = field(default_factory=dict)
    texts: list[str] = field(default_factory=list)  # unnamed text items ("Station #1: ...")

    def all(self, name: str) -> list[ET.Element]:
        return self.fields.get(name, [])

    def one(self, name: str) -> ET.Element:
        found = self.all(name)
        assert len(found) == 1, f"frame {self.frame_number}: {len(found)} x {name}"
        return found[0]

    def int(self, name: str) -> int:
        return int(self.one(name).get("show", ""), 0)

    def show(self, name: str) -> str:
        return self.one(name).get("show", "")

    def shows(self, name: str) -> list[str]:
        return [e.get("show", "") for e in self.all(name)]


@dataclass
class Dissection:
    pdus: list[Pdu]
    problems: list[str]  # malformed layers and expert infos of severity >= warning, with their frame numbers
    notes: list[str]  # every expert message, for the report


def dissect(path: Path, tcp_port: int) -> Dissection:
    root = ET.fromstring(run_tshark(["-r", str(path), *dissect_options(tcp_port), "-T", "pdml"]))
    pdus: list[Pdu] = []
    problems: list[str] = []
    notes: list[str] = []
    for packet in root.iter("packet"):
        number = int(next(f for f in packet.iter("field") if f.get("name") == "frame.number").get("show", "0"))
        for proto in packet.iter("proto"):
            if proto.get("name") == "_ws.malformed":
                problems.append(f"frame {number}: {proto.get('showname')}")
            if proto.get("name") != "synphasor":
                continue
            pdu = Pdu(number)
            for f in proto.iter("field"):
                name = f.get("name", "")
                if name:
                    pdu.fields.setdefault(name, []).append(f)
                else:
                    pdu.texts.append(f.get("show", ""))
            pdus.append(pdu)
        for expert in packet.iter("field"):
            if expert.get("name") != "_ws.expert":
                continue
            sub = {f.get("name"): f.get("show", "") for f in expert.iter("field")}
            message = f"frame {number}: {sub.get('_ws.expert.message') or expert.get('showname')}"
            notes.append(message)
            if int(sub.get("_ws.expert.severity", "0"), 0) >= PI_WARN:
                problems.append(message)
    return Dissection(pdus, problems, notes)


def filter_count(path: Path, tcp_port: int, display_filter: str) -> list[str]:
    """Frame numbers matching ``display_filter``: the second, independent look for warnings."""
    out = run_tshark(
        ["-r", str(path), *dissect_options(tcp_port), "-Y", display_filter, "-T", "fields", "-e", "frame.number"]
    )
    return out.split()


def assert_clean(path: Path, tcp_port: int, dissection: Dissection) -> None:
    assert dissection.problems == []
    assert filter_count(path, tcp_port, "_ws.malformed") == []
    assert filter_count(path, tcp_port, "_ws.expert.severity >= warning") == []
    assert filter_count(path, tcp_port, "synphasor.checksum.status != 1") == []


# ---- what tshark shows versus what we encoded ----------------------------------------------------------------


def soc_text(soc: int) -> str:
    """SOC as tshark 4.0 shows an FT_ABSOLUTE_TIME in UTC: 'Jun  6, 2006 08:00:00.000000000 UTC'."""
    t = datetime.fromtimestamp(soc, UTC)
    return f"{t:%b} {t.day:2d}, {t:%Y %H:%M:%S}.000000000 UTC"


def check_common(pdu: Pdu, frame: Frame, data: bytes) -> None:
    where = f"frame {pdu.frame_number}"
    assert pdu.int("synphasor.frtype") == data[1] >> 4, where
    assert pdu.int("synphasor.version") == data[1] & 0x0F, where
    assert pdu.int("synphasor.frsize") == len(data), where
    assert pdu.int("synphasor.idcode_stream_source") == frame.idcode, where
    assert pdu.show("synphasor.soc") == soc_text(frame.soc), where
    assert pdu.int("synphasor.fracsec_raw") == frame.fracsec, where
    assert pdu.int("synphasor.timeqal.timequalindic") == frame.time_quality.code, where
    assert pdu.int("synphasor.checksum") == struct.unpack(">H", data[-2:])[0], where
    assert pdu.int("synphasor.checksum.status") == CHECKSUM_GOOD, where


def check_config(pdu: Pdu, frame: ConfigFrame) -> None:
    assert pdu.int("synphasor.conf.timebase") == frame.time_base
    assert pdu.int("synphasor.conf.numpmu") == len(frame.pmus)
    assert pdu.int("synphasor.rate_of_transmission") == frame.data_rate
    assert [int(x) for x in pdu.shows("synphasor.idcode_data_source")] == [p.idcode for p in frame.pmus]
    assert [int(x) for x in pdu.shows("synphasor.num_phasors")] == [p.phnmr for p in frame.pmus]
    assert [int(x) for x in pdu.shows("synphasor.num_analog_values")] == [p.annmr for p in frame.pmus]
    assert [int(x) for x in pdu.shows("synphasor.num_digital_status_words")] == [p.dgnmr for p in frame.pmus]
    assert [int(x) for x in pdu.shows("synphasor.conf.cfgcnt")] == [p.cfgcnt for p in frame.pmus]
    names = [n for p in frame.pmus for n in (*p.phasor_names, *p.analog_names, *p.digital_names)]
    if isinstance(frame, Config3Frame):
        assert pdu.shows("synphasor.station_name") == [p.station for p in frame.pmus]
        assert pdu.shows("synphasor.conf.chnam") == names
        scales = [s.scale for p in frame.pmus for s in p.phasor_scales]
        assert [float(x) for x in pdu.shows("synphasor.conf.phasor_scale_factor")] == scales
        assert [float(x) for x in pdu.shows("synphasor.conf.pmu_latitude")] == [p.latitude for p in frame.pmus]
    else:
        stations = [t for t in pdu.texts if t.startswith("Station #")]
        assert stations == [f'Station #{i}: "{p.station:<16}"' for i, p in enumerate(frame.pmus, 1)]
        assert [n.rstrip() for n in pdu.shows("synphasor.channel_name")] == names


def check_data(pdu: Pdu, frame: DataFrame) -> None:
    where = f"frame {pdu.frame_number}"
    assert pdu.all("synphasor.data.conf_frame"), f"{where}: decoded without a configuration"
    pmus = frame.pmus
    assert [int(x, 0) for x in pdu.shows("synphasor.data.status")] == [p.stat.data_error for p in pmus], where
    phasors = [PHASOR_RE.search(e.get("showname", "")) for e in pdu.all("synphasor.phasor")]
    expected = [(v, pair, p) for p in pmus for v, pair in zip(p.phasor_values, p.phasors, strict=True)]
    assert len(phasors) == len(expected), where
    for m, (value, pair, p) in zip(phasors, expected, strict=True):
        assert m is not None, where
        # tshark prints 3 decimals and computes in float32: 1e-5 relative covers both.
        got = complex(float(m["re"]), float(m["im"]))
        assert got.real == pytest.approx(value.real, rel=1e-5, abs=2e-3), where
        assert got.imag == pytest.approx(value.imag, rel=1e-5, abs=2e-3), where
        assert float(m["mag"]) == pytest.approx(abs(value), rel=1e-5, abs=2e-3), where
        if abs(value) > 1e-3:
            turn = math.radians(float(m["deg"])) - math.atan2(value.imag, value.real)
            assert (turn + math.pi) % math.tau - math.pi == pytest.approx(0.0, abs=1e-4), where  # -180 deg = 180
        if not p.config.format.phasor_float:
            assert (int(m["a"]), int(m["b"])) == pair, where  # the raw 16-bit words, exactly
    int_freq = [p for p in pmus if not p.config.format.freq_float]
    float_freq = [p for p in pmus if p.config.format.freq_float]
    assert [int(x) for x in pdu.shows("synphasor.frequency_deviation_from_nominal")] == [p.freq for p in int_freq]
    assert [float(x) for x in pdu.shows("synphasor.actual_frequency_value")] == pytest.approx(
        [p.frequency_hz for p in float_freq], rel=1e-6
    )
    assert [float(x) for x in pdu.shows("synphasor.rate_change_frequency")] == pytest.approx(
        [p.rocof_hz_per_s for p in pmus], rel=1e-6, abs=1e-3
    )
    analogs = [ANALOG_RE.search(e.get("showname", "")) for e in pdu.all("synphasor.analog_value")]
    assert all(analogs), where
    assert [float(m["v"]) for m in analogs if m] == pytest.approx(
        [v for p in pmus for v in p.analogs], rel=1e-6, abs=1e-3
    )
    int_units = [  # tshark shows the ANUNIT word beside an integer analog; float analogs have none
        None if p.config.format.analog_float else (u.kind << 24) | (u.scale & 0xFFFFFF)
        for p in pmus
        for u in (p.config.analog_units if not p.config.format.analog_float else [None] * p.config.annmr)
    ]
    assert [int(m["unit"], 16) if m and m["unit"] else None for m in analogs] == int_units, where
    assert [int(x, 0) for x in pdu.shows("synphasor.digital_status_word")] == [d for p in pmus for d in p.digitals]


def check_frame(pdu: Pdu, frame: Frame) -> None:
    data = encode_frame(frame)
    check_common(pdu, frame, data)
    if isinstance(frame, CommandFrame):
        assert pdu.int("synphasor.command") == frame.command
    elif isinstance(frame, HeaderFrame):
        assert bytes.fromhex(pdu.one("synphasor.data").get("value", "")) == frame.data
    elif isinstance(frame, ConfigFrame):
        check_config(pdu, frame)
    else:
        check_data(pdu, frame)

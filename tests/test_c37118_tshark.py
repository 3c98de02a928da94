"""Wireshark's own C37.118 dissector (tshark, Debian package ``tshark``) reads our frames without complaint.

An independent implementation of IEEE C37.118.2 checks our codec: every frame we build is dissected as
``synphasor``, none is malformed, none raises an expert info of severity warning or error, every CHK is
reported good, and the decoded values equal what we encoded. Two captures:

* offline: a pcap written by ``helpers/pcap.py`` with several TCP conversations to port 4712 (commands,
  CFG-1, CFG-2, CFG-3, header, many data frames: integer and float, polar and rectangular phasors, integer
  and float analogs, digitals, one and two PMUs, 2005 and 2011 versions; frames coalesced into one segment
  and split across segments) and a spontaneous UDP stream to port 4713 (CFG-2 and data in datagrams);
* live: tshark captures a real :class:`SimPmu` <-> :class:`PdcSession` exchange on ``lo``; every data frame
  our client decoded, tshark decoded with the same values.

The dissection (PDML parsed into one record per ``synphasor`` layer) and the field-by-field comparison are
in helpers/tshark.py, which lists the tshark fields relied on.
"""

from __future__ import annotations

import asyncio
import math
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from helpers.aio import async_test
from helpers.net import free_port
from helpers.pcap import PcapWriter, TcpConversation
from helpers.tshark import (
    PHASOR_RE,
    PMU_PORT,
    UDP_DATA_PORT,
    Dissection,
    assert_clean,
    check_data,
    check_frame,
    dissect,
    filter_count,
    soc_text,
    tshark,
)

from protocols.c37118 import (
    AnalogScale,
    AnalogUnit,
    Command,
    CommandFrame,
    Config3Frame,
    ConfigFrame,
    DataError,
    DataFormat,
    DataFrame,
    DigitalUnit,
    Frame,
    FrameType,
    HeaderFrame,
    PhasorScale,
    PhasorUnit,
    PmuConfig,
    PmuConfig3,
    PmuData,
    PmuTimeQuality,
    Stat,
    TimeQuality,
    crc_ccitt,
    encode_config3,
    encode_frame,
)
from protocols.c37118.pdc import PdcSession, PmuEndpoint
from sim_hw.devices.pmu import SimPmu

# ---- the offline capture ---------------------------------------------------------------------------------------

STATION_A = PmuConfig(  # as in helpers/c37118.py: integer rectangular phasors, float analogs
    station="Station A",
    idcode=7734,
    format=DataFormat(freq_float=False, analog_float=True, phasor_float=False, polar=False),
    phasor_names=("VA", "VB", "VC", "I1"),
    analog_names=("ANALOG1", "ANALOG2", "ANALOG3"),
    digital_names=tuple(f"BREAKER {c} STATUS" for c in "123456789ABCDEFG"),
    phasor_units=(PhasorUnit(0, 915527),) * 3 + (PhasorUnit(1, 45776),),
    analog_units=(AnalogUnit(0, 1), AnalogUnit(1, 1), AnalogUnit(2, 1)),
    digital_units=(DigitalUnit(0x0000, 0xFFFF),),
    nominal_hz=60,
    cfgcnt=22,
)
FLOAT_POLAR = PmuConfig(
    station="FLOAT POLAR",
    idcode=11,
    format=DataFormat(True, True, True, True),
    phasor_names=("V1", "I1"),
    analog_names=("P",),
    phasor_units=(PhasorUnit(0, 0), PhasorUnit(1, 0)),
    analog_units=(AnalogUnit(1, -5),),
    nominal_hz=50,
)
INT_POLAR = PmuConfig(
    station="INT POLAR",
    idcode=12,
    format=DataFormat(False, False, False, True),
    phasor_names=("V1",),
    phasor_units=(PhasorUnit(0, 1000),),
    digital_names=tuple(f"S{i}" for i in range(32)),
    digital_units=(DigitalUnit(0, 0xFFFF), DigitalUnit(0xFFFF, 0x00FF)),
    nominal_hz=60,
)
CFG3_PMU = PmuConfig3(
    station="CFG3 STATION",
    idcode=3,
    global_id=bytes(range(16)),
    format=DataFormat(True, True, True, False),
    phasor_names=("VA", "IA"),
    analog_names=("TEMP",),
    digital_names=tuple(f"D{i}" for i in range(16)),
    phasor_scales=(PhasorScale(0x8001, 0x01, 7, 1.5, -0.25), PhasorScale(0, 0x09, 0, 2.0, 0.0)),
    analog_scales=(AnalogScale(0.5, -40.0),),
    digital_units=(DigitalUnit(0x00FF, 0x0F0F),),
    latitude=47.5,
    longitude=8.25,
    elevation=400.0,
    service_class="M",
    window=20_000,
    group_delay=1000,
    nominal_hz=50,
    cfgcnt=65535,
)


def data_frames(config: ConfigFrame, n: int, soc: int, *, version: int | None = None) -> list[DataFrame]:
    """``n`` data frames at DATA_RATE whose values move from frame to frame (signs, both polar halves)."""
    out = []
    rate = config.data_rate
    for k in range(n):
        blocks = []
        for j, pmu in enumerate(config.pmus):
            fmt = pmu.format
            phasors = []
            for i in range(pmu.phnmr):
                if fmt.phasor_float and fmt.polar:
                    pair = (1000.0 * (i + 1) + k, ((k * 0.37 + i * 2.1) % (2 * math.pi)) - math.pi)
                elif fmt.phasor_float:
                    pair = (100.0 * math.cos(k + i), -50.0 * math.sin(k + i) + 0.5)
                elif fmt.polar:
                    pair = (1000 * (i + 1) + 37 * k, int(31415 * math.sin(k * 0.7 + i)))
                else:
                    pair = (int(14635 * math.cos(k * 0.3 + i)), int(-12676 * math.sin(k * 0.3 + i)))
                phasors.append(pair)
            if fmt.freq_float:
                freq, dfreq = pmu.nominal_hz + 0.001 * (k - n // 2), 0.0625 * (k % 5 - 2)
            else:
                freq, dfreq = 5 * (k - n // 2) + j, 3 * (k % 7) - 9
            analogs = tuple(
                (float(k * 10 + i) - 3.5) if fmt.analog_float else (k * 100 - 900 + i) for i in range(pmu.annmr)
            )
            digitals = tuple((0x1234 * (k + 1) + i) & 0xFFFF for i in range(pmu.dgnmr))
            stat = Stat(time_quality=PmuTimeQuality.UNDER_1US) if (config.version == 2 and k % 2) else Stat()
            blocks.append(PmuData(pmu, stat, tuple(phasors), freq, dfreq, analogs, digitals))
        out.append(
            DataFrame.build(
                config,
                blocks,
                soc=soc + k // max(rate, 1),
                fracsec=(k % rate) * config.time_base // rate,
                version=version,
            )
        )
    return out


@dataclass
class OfflineCapture:
    pcap: PcapWriter = field(default_factory=PcapWriter)
    frames: list[Frame] = field(default_factory=list)  # in the order tshark will list them
    _client_port: int = 50_000

    def conversation(self) -> TcpConversation:
        self._client_port += 1
        return TcpConversation(self.pcap, ("127.0.0.1", self._client_port), ("127.0.0.1", PMU_PORT)).open()

    def send(self, conv: TcpConversation, frames: list[Frame], *, from_client: bool = False) -> None:
        """One segment per frame."""
        for f in frames:
            conv.send(from_client, encode_frame(f))
            self.frames.append(f)

    def command(self, conv: TcpConversation, idcode: int, cmd: int, version: int = 2, **kw: object) -> None:
        soc = 1_700_000_000
        self.send(
            conv,
            [CommandFrame(idcode=idcode, soc=soc, fracsec=123_456, command=cmd, version=version, **kw)],
            from_client=True,
        )


def build_offline_capture() -> OfflineCapture:
    cap = OfflineCapture()
    soc = 1_700_000_000

    # 1. Station A, 2011: the PDC's handshake, then CFG-1, CFG-2, header and 40 data frames.
    cfg_a = ConfigFrame(
        frame_type=FrameType.CFG2, idcode=7734, soc=soc, time_base=1_000_000, pmus=(STATION_A,), data_rate=30
    )
    conv = cap.conversation()
    cap.command(conv, 7734, Command.DATA_OFF)
    cap.command(conv, 7734, Command.SEND_CFG1)
    cap.send(conv, [ConfigFrame(frame_type=FrameType.CFG1, idcode=7734, soc=soc, pmus=(STATION_A,), data_rate=30)])
    cap.command(conv, 7734, Command.SEND_CFG2)
    cap.send(conv, [cfg_a])
    cap.command(conv, 7734, Command.SEND_HEADER)
    cap.send(conv, [HeaderFrame(idcode=7734, soc=soc, fracsec=5, data=b"Station A, PMU model X, 1 cycle filter")])
    cap.command(conv, 7734, Command.DATA_ON)
    cap.send(conv, data_frames(cfg_a, 40, soc))
    cap.command(conv, 7734, Command.EXTENDED, extended=b"UDPP\x12\x61")
    cap.command(conv, 7734, Command.DATA_OFF)
    conv.close()

    # 2. Two PMUs (float polar + integer polar, two digital words), negative DATA_RATE, time quality flags;
    #    frames coalesced several to a segment and one split across three segments (TCP reassembly).
    cfg_two = ConfigFrame(
        frame_type=FrameType.CFG2, idcode=1, soc=soc, time_base=1_000_000, data_rate=-5, pmus=(FLOAT_POLAR, INT_POLAR)
    )
    conv = cap.conversation()
    cap.command(conv, 1, Command.SEND_CFG2)
    cap.send(conv, [cfg_two])
    cap.command(conv, 1, Command.DATA_ON)
    frames = data_frames(cfg_two, 20, soc) + [
        DataFrame.build(
            cfg_two,
            [
                PmuData(FLOAT_POLAR, Stat(), ((230000.0, 0.5), (100.0, -2.75)), 49.98, -0.125, (1.5e6,), ()),
                PmuData(INT_POLAR, Stat(), ((65535, -31416),), -32767, 32767, (), (0xFFFF, 0)),
            ],
            soc=soc + 99,
            fracsec=999_999,
            time_quality=TimeQuality(leap_pending=True, code=5),
        )
    ]
    blobs = [encode_frame(f) for f in frames]
    conv.send(False, b"".join(blobs[:5]))
    conv.send(False, blobs[5][:7])
    conv.send(False, blobs[5][7:30])
    conv.send(False, blobs[5][30:] + blobs[6] + blobs[7][:3])
    conv.send(False, blobs[7][3:])
    for b in blobs[8:]:
        conv.send(False, b)
    cap.frames.extend(frames)
    conv.close()

    # 3. CFG-3 (2011 only): float rectangular phasors, PHSCALE, ANSCALE, WGS 84 position, then data.
    cfg3 = Config3Frame(idcode=3, soc=soc, time_base=16_777_215, data_rate=60, pmus=(CFG3_PMU,))
    conv = cap.conversation()
    cap.command(conv, 3, Command.SEND_CFG3)
    cap.send(conv, [cfg3])
    cap.command(conv, 3, Command.DATA_ON)
    cap.send(conv, data_frames(cfg3, 30, soc))
    conv.close()

    # 4. C37.118-2005 (SYNC version 1): integer polar phasors and integer analogs, commands in version 1.
    pmu05 = PmuConfig(
        station="OLD PMU 2005",
        idcode=2005,
        format=DataFormat(freq_float=False, analog_float=False, phasor_float=False, polar=True),
        phasor_names=("VA", "VB", "VC", "IA"),
        analog_names=("MW", "MVAR"),
        phasor_units=(PhasorUnit(0, 915527),) * 3 + (PhasorUnit(1, 45776),),
        analog_units=(AnalogUnit(1, 1), AnalogUnit(2, 1)),
        digital_names=tuple(f"B{i}" for i in range(16)),
        digital_units=(DigitalUnit(0, 0xFFFF),),
        nominal_hz=50,
        cfgcnt=3,
    )
    cfg05 = ConfigFrame(frame_type=FrameType.CFG2, idcode=2005, soc=soc, pmus=(pmu05,), data_rate=25, version=1)
    conv = cap.conversation()
    cap.command(conv, 2005, Command.SEND_CFG2, version=1)
    cap.send(conv, [cfg05])
    cap.command(conv, 2005, Command.DATA_ON, version=1)
    cap.send(conv, data_frames(cfg05, 30, soc))
    conv.close()

    # 5. UDP, spontaneous (C37.118.2 Annex: data to port 4713): CFG-2 then data, one frame per datagram.
    cfg_udp = ConfigFrame(
        frame_type=FrameType.CFG2,
        idcode=4713,
        soc=soc,
        pmus=(
            PmuConfig(
                station="UDP PMU",
                idcode=4713,
                format=DataFormat(True, True, True, True),
                phasor_names=("V1", "V2", "V3"),
                phasor_units=(PhasorUnit(0, 0),) * 3,
                analog_names=("F",),
                analog_units=(AnalogUnit(0, 1),),
            ),
        ),
        data_rate=50,
    )
    for f in [cfg_udp, *data_frames(cfg_udp, 30, soc)]:
        cap.pcap.udp(("127.0.0.1", 40_000), ("127.0.0.1", UDP_DATA_PORT), encode_frame(f))
        cap.frames.append(f)
    return cap


@pytest.fixture(scope="module")
def tshark_offline(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, OfflineCapture, Dissection]:
    cap = build_offline_capture()
    path = tmp_path_factory.mktemp("tshark") / "c37118.pcap"
    cap.pcap.save(path)
    return path, cap, dissect(path, PMU_PORT)


def test_every_frame_we_write_is_one_synphasor_pdu_of_the_same_type(
    tshark_offline: tuple[Path, OfflineCapture, Dissection],
) -> None:
    _, cap, dissection = tshark_offline
    assert len(cap.frames) > 150
    assert len(dissection.pdus) == len(cap.frames)
    assert [p.int("synphasor.frtype") for p in dissection.pdus] == [encode_frame(f)[1] >> 4 for f in cap.frames]
    kinds = {type(f).__name__ for f in cap.frames}
    assert kinds == {"CommandFrame", "ConfigFrame", "Config3Frame", "HeaderFrame", "DataFrame"}


def test_no_malformed_frame_no_warning_and_every_chk_good(
    tshark_offline: tuple[Path, OfflineCapture, Dissection],
) -> None:
    path, _, dissection = tshark_offline
    assert_clean(path, PMU_PORT, dissection)


def test_decoded_fields_equal_what_we_encoded(tshark_offline: tuple[Path, OfflineCapture, Dissection]) -> None:
    _, cap, dissection = tshark_offline
    for pdu, frame in zip(dissection.pdus, cap.frames, strict=True):
        check_frame(pdu, frame)


def test_station_a_values_as_tshark_shows_them(tshark_offline: tuple[Path, OfflineCapture, Dissection]) -> None:
    """Spelled out for one frame, so a reader sees the numbers: IDCODE, station, SOC, VA, FREQ."""
    _, cap, dissection = tshark_offline
    i = next(i for i, f in enumerate(cap.frames) if isinstance(f, DataFrame) and f.idcode == 7734)
    pdu = dissection.pdus[i]
    assert pdu.int("synphasor.idcode_stream_source") == 7734
    assert pdu.show("synphasor.soc") == "Nov 14, 2023 22:13:20.000000000 UTC"  # SOC 1 700 000 000
    assert 'Station: "Station A       "' in pdu.texts
    va = pdu.all("synphasor.phasor")[0].get("showname", "")
    # VA = 14635 x 915527e-5 V = 133 987.376 V at 0 degrees (PHUNIT 6.4 Table 9).
    assert va.startswith('Phasor #1: "VA              ", 133987.376V ∠  0.000°'), va
    assert va.endswith("unscaled: 14635,     0"), va
    assert pdu.int("synphasor.frequency_deviation_from_nominal") == -100  # 5 x (0 - 40 // 2) mHz


@pytest.mark.integration
def test_the_checks_can_fail_bad_chk_and_short_frame_are_flagged(tmp_path: Path) -> None:
    """The negative control: a damaged CHK is an error; a frame shorter than its configuration stays undecoded."""
    cfg = ConfigFrame(frame_type=FrameType.CFG2, idcode=9, soc=1, pmus=(STATION_A,), data_rate=30)
    good = encode_frame(data_frames(cfg, 1, 1)[0])
    bad_chk = good[:-1] + bytes([good[-1] ^ 0x01])
    body = good[:4] + good[4:-8]  # 6 value bytes missing; FRAMESIZE and CHK made consistent with that
    short = bytearray(body + b"\0\0")
    short[2:4] = len(short).to_bytes(2, "big")
    short[-2:] = crc_ccitt(bytes(short[:-2])).to_bytes(2, "big")
    pcap = PcapWriter()
    for f in (encode_frame(cfg), bad_chk, bytes(short)):
        pcap.udp(("127.0.0.1", 40_000), ("127.0.0.1", UDP_DATA_PORT), f)
    path = tmp_path / "bad.pcap"
    pcap.save(path)
    dissection = dissect(path, PMU_PORT)
    assert [p for p in dissection.problems if "Bad checksum" in p] == [
        f"frame 2: Bad checksum [should be 0x{crc_ccitt(good[:-2]):04x}]"
    ]
    assert filter_count(path, PMU_PORT, "_ws.expert.severity >= warning") == ["2"]
    assert filter_count(path, PMU_PORT, "synphasor.checksum.status != 1") == ["2"]
    # tshark 4.0 says nothing (no expert info) about a data frame whose size does not match its configuration:
    # it only leaves it undecoded ("no configuration frame found"). check_data's conf_frame assertion is what
    # catches that, so it must fail here.
    with pytest.raises(AssertionError, match="decoded without a configuration"):
        check_data(dissection.pdus[2], data_frames(cfg, 1, 1)[0])


@pytest.mark.integration
def test_cfg3_in_pieces_each_piece_is_one_clean_cfg3_pdu_with_our_cont_idx(tmp_path: Path) -> None:
    """A CFG-3 in three frames (6.4 Table 10 CONT_IDX 1, 2, 0xFFFF): tshark frames each as a CFG-3 with a good CHK.

    What tshark 4.0 can check is checked: frame boundaries, type, FRAMESIZE, CHK, no malformed layer, no
    warning, and CONT_IDX (the first two bytes of its ``synphasor.data``). It does not reassemble the
    pieces: its dissector says "CFG-3 Fragmented Frame (Not Supported)" (packet-synphasor.c: "The
    C37.118-2.2011 standard is vague on how to handle fragmented frames"), so the data frames after it are
    left undecoded ("no configuration frame found"); that is recorded in docs/c37118.md, not asserted.
    """
    cfg3 = Config3Frame(idcode=3, soc=1_700_000_000, time_base=16_777_215, data_rate=60, pmus=(CFG3_PMU,))
    whole = encode_frame(cfg3)
    pieces = encode_config3(cfg3, (len(whole) - 18) // 3 + 19)
    assert len(pieces) == 3
    pcap = PcapWriter()
    conv = TcpConversation(pcap, ("127.0.0.1", 50_100), ("127.0.0.1", PMU_PORT)).open()
    conv.send(True, encode_frame(CommandFrame(idcode=3, soc=1_700_000_000, command=Command.SEND_CFG3)))
    for piece in pieces:
        conv.send(False, piece)
    conv.close()
    path = tmp_path / "cfg3_pieces.pcap"
    pcap.save(path)
    dissection = dissect(path, PMU_PORT)
    assert_clean(path, PMU_PORT, dissection)
    frags = dissection.pdus[1:]
    assert [p.int("synphasor.frtype") for p in frags] == [FrameType.CFG3] * 3
    assert [p.int("synphasor.frsize") for p in frags] == [len(x) for x in pieces]
    assert [p.int("synphasor.checksum.status") for p in frags] == [1, 1, 1]  # 1 = Good
    data = [bytes.fromhex(p.one("synphasor.data").get("value", "")) for p in frags]
    assert [int.from_bytes(d[:2], "big") for d in data] == [1, 2, 0xFFFF]
    assert b"".join(d[2:] for d in data) == whole[16:-2]  # the pieces as tshark cut them: our configuration
    shown = [p.one("synphasor.data").get("showname", "") for p in frags]
    if not all("Fragmented" in x for x in shown):  # a later tshark that reads pieces: then its index must be ours
        assert [p.int("synphasor.conf.contindx") for p in frags if p.all("synphasor.conf.contindx")] == [1, 2, 65535]


# ---- the live capture ------------------------------------------------------------------------------------------


class LiveCapture:
    """tshark capturing ``tcp port <port>`` on lo into a pcapng file; stopped with SIGINT (it then flushes)."""

    def __init__(self, path: Path, port: int) -> None:
        self.path = path
        self.stderr_path = path.with_suffix(".stderr")
        self._stderr = self.stderr_path.open("wb")
        self.proc = subprocess.Popen(
            [tshark(), "-i", "lo", "-f", f"tcp port {port}", "-a", "duration:20", "-w", str(path)],
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
            start_new_session=True,  # its own group: dumpcap (its child) is stopped with it
        )

    def wait_capturing(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while b"Capturing on" not in self.stderr_path.read_bytes():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"tshark did not start capturing on lo: {self.stderr_path.read_text(errors='replace')}")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        self._stderr.close()


@pytest.mark.integration
@async_test
async def test_live_simpmu_exchange_captured_on_lo_is_clean(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.fail("capturing on lo needs root (or dumpcap with cap_net_raw): run as root as CI does")
    port = free_port()
    capture = LiveCapture(tmp_path / "live.pcapng", port)
    received: list[DataFrame] = []
    try:
        await asyncio.to_thread(capture.wait_capturing)
        async with SimPmu(7734, "LIVE PMU", port=port, rate=60) as sim:
            for cfg_version in (2, 3):
                session = await PdcSession.open(PmuEndpoint("127.0.0.1", port, 7734, cfg_version=cfg_version))
                try:
                    await session.send_command(Command.SEND_HEADER)
                    await session.start()
                    n = 0
                    while n < 20:
                        event = await session.next_event(2.0)
                        if isinstance(event, DataFrame):
                            received.append(event)
                            n += 1
                    await session.send_command(Command.DATA_OFF)
                finally:
                    await session.close()
            assert sim.stats.frame_errors == 0
        await asyncio.sleep(0.3)  # let the last segments reach tshark's buffer before it stops
    finally:
        await asyncio.to_thread(capture.stop)

    dissection = dissect(capture.path, port)
    assert_clean(capture.path, port, dissection)
    types = [p.int("synphasor.frtype") for p in dissection.pdus]
    for t in (FrameType.CFG2, FrameType.CFG3, FrameType.HEADER, FrameType.COMMAND):
        assert t in types, f"no frame of type {t.name} in the capture"
    data = [p for p in dissection.pdus if p.int("synphasor.frtype") == FrameType.DATA]
    decoded = [p for p in data if p.all("synphasor.data.conf_frame")]
    # Data still flowing just after a reconnect may precede the CFG in its conversation; everything we read did not.
    by_time = {
        (p.int("synphasor.idcode_stream_source"), p.show("synphasor.soc"), p.int("synphasor.fracsec_raw")): p
        for p in decoded
    }
    assert len(received) == 40
    for frame in received:
        pdu = by_time.get((frame.idcode, soc_text(frame.soc), frame.fracsec))
        assert pdu is not None, f"tshark did not decode the data frame at {frame.soc}.{frame.fracsec}"
        check_frame(pdu, frame)
        assert pdu.all("synphasor.data.status") and pdu.int("synphasor.data.status") == DataError.GOOD
    for pdu in decoded:  # and the values are sane: around 60 Hz, ~7200 V phase-neutral
        assert abs(pdu.int("synphasor.frequency_deviation_from_nominal")) <= 25
        mags = [float(m["mag"]) for e in pdu.all("synphasor.phasor") if (m := PHASOR_RE.search(e.get("showname", "")))]
        assert len(mags) == 6 and all(7000 < v < 7400 for v in mags[:3]) and all(150 < v < 250 for v in mags[3:])

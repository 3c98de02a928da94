"""The sans-IO Modbus TCP codec (protocols/modbus/mbap.py): frames whole, in halves and one byte at a time;
requests byte for byte as the specification's examples give them; answers checked against their requests.

[MB-AP]: Modbus Application Protocol Specification V1.1b3; [MB-TCP]: Modbus Messaging on TCP/IP
Implementation Guide V1.0b.
"""

from __future__ import annotations

import pytest

from protocols.modbus.mbap import (
    AnswerError,
    ExceptionAnswer,
    Frame,
    FrameReader,
    FramingError,
    encode_frame,
    read_answer,
    read_request,
    write_answer,
    write_coil_request,
    write_registers_request,
)

# (frame bytes, the Frame they hold): one table drives the writer and the reader.
FRAMES = [
    (bytes.fromhex("0001 0000 0006 11 03006b0003"), Frame(1, 0x11, bytes.fromhex("03006b0003"))),
    (bytes.fromhex("ffff 0000 0009 01 0306022b00000064"), Frame(0xFFFF, 1, bytes.fromhex("0306022b00000064"))),
    (bytes.fromhex("1234 0000 0003 ff 8302"), Frame(0x1234, 0xFF, b"\x83\x02")),
    (bytes.fromhex("0007 0000 00fe 02") + b"\x03\xfa" + bytes(251), Frame(7, 2, b"\x03\xfa" + bytes(251))),
]


def feed_all(reader: FrameReader, data: bytes, step: int) -> list[Frame]:
    got: list[Frame] = []
    for k in range(0, len(data), step):
        reader.feed(data[k : k + step])
        while (frame := reader.next_frame()) is not None:
            got.append(frame)
    return got


@pytest.mark.parametrize("raw,frame", FRAMES)
def test_a_frame_is_written_as_the_table_says(raw: bytes, frame: Frame) -> None:
    assert encode_frame(frame.tid, frame.unit, frame.pdu) == raw


@pytest.mark.parametrize("step", [1, 2, 5, 7, 1000])
def test_frames_come_out_whole_however_the_bytes_are_cut(step: int) -> None:
    stream = b"".join(raw for raw, _ in FRAMES)
    reader = FrameReader()
    assert feed_all(reader, stream, step) == [f for _, f in FRAMES]
    assert reader.buffered == 0


def test_half_a_frame_is_need_more_not_an_error() -> None:
    raw = FRAMES[1][0]
    reader = FrameReader()
    reader.feed(raw[:4])
    assert reader.next_frame() is None
    reader.feed(raw[4:9])
    assert reader.next_frame() is None
    reader.feed(raw[9:])
    assert reader.next_frame() == FRAMES[1][1]
    assert reader.next_frame() is None


@pytest.mark.parametrize(
    "header",
    [
        pytest.param("0001 0001 0006 01", id="protocol-id-1"),
        pytest.param("0001 0000 0001 01", id="length-1-no-pdu"),
        pytest.param("0001 0000 0000 01", id="length-0"),
        pytest.param("0001 0000 00ff 01", id="length-255-pdu-over-253"),
        pytest.param("dead beef dead be", id="junk"),
    ],
)
@pytest.mark.parametrize("step", [1, 1000])
def test_a_header_no_frame_can_have_is_an_error_for_good(header: str, step: int) -> None:
    reader = FrameReader()
    with pytest.raises(FramingError):
        feed_all(reader, bytes.fromhex(header) + b"\x03\x02\x00\x01", step)
    with pytest.raises(FramingError):  # no way to find the next frame: the reader stays broken
        reader.next_frame()
    with pytest.raises(FramingError):
        reader.feed(FRAMES[0][0])


@pytest.mark.parametrize(
    "tid,unit,pdu", [(-1, 1, b"\x03"), (0x10000, 1, b"\x03"), (1, 256, b"\x03"), (1, 1, b""), (1, 1, bytes(254))]
)
def test_a_frame_out_of_range_is_not_written(tid: int, unit: int, pdu: bytes) -> None:
    with pytest.raises(ValueError):
        encode_frame(tid, unit, pdu)


# ---- requests: [MB-AP] 6.x examples ------------------------------------------------------------------------------


def test_requests_are_the_specifications_examples() -> None:
    assert read_request(3, 0x6B, 3) == bytes.fromhex("03006b0003")  # [MB-AP] 6.3
    assert read_request(1, 0x13, 19) == bytes.fromhex("0100130013")  # [MB-AP] 6.1
    assert read_request(4, 0x08, 1) == bytes.fromhex("0400080001")  # [MB-AP] 6.4
    assert write_coil_request(0xAC, True) == bytes.fromhex("0500acff00")  # [MB-AP] 6.5
    assert write_coil_request(0xAC, False) == bytes.fromhex("0500ac0000")
    assert write_registers_request(1, [0x000A, 0x0102]) == bytes.fromhex("100001000204000a0102")  # [MB-AP] 6.12


@pytest.mark.parametrize(
    "fc,start,count", [(3, 0, 0), (3, 0, 126), (4, 65535, 2), (1, 0, 2001), (2, -1, 1), (5, 0, 1), (6, 0, 1)]
)
def test_a_read_out_of_spec_is_refused(fc: int, start: int, count: int) -> None:
    with pytest.raises(ValueError):
        read_request(fc, start, count)


# ---- answers -----------------------------------------------------------------------------------------------------


def test_read_answers_give_the_values() -> None:
    assert read_answer(3, 3, bytes.fromhex("0306022b00000064")) == [0x022B, 0, 0x64]  # [MB-AP] 6.3
    # [MB-AP] 6.1: 19 coils from 20: CD 6B 05 -> 20..27 = 1,0,1,1,0,0,1,1 (LSB first); padding dropped
    bits = read_answer(1, 19, bytes.fromhex("0103cd6b05"))
    assert bits[:8] == [True, False, True, True, False, False, True, True] and len(bits) == 19
    assert bits[16:] == [True, False, True]


@pytest.mark.parametrize(
    "fc,count,pdu,err",
    [
        pytest.param(3, 2, "83 02", ExceptionAnswer, id="exception"),
        pytest.param(3, 2, "83 02 00", AnswerError, id="exception-too-long"),
        pytest.param(3, 2, "83", AnswerError, id="exception-without-code"),
        pytest.param(3, 2, "04 04 0001 0002", AnswerError, id="other-function"),
        pytest.param(3, 2, "03 02 0001", AnswerError, id="one-register-for-two"),
        pytest.param(3, 2, "03 04 0001", AnswerError, id="byte-count-over-data"),
        pytest.param(3, 2, "03 02 0001 0002", AnswerError, id="byte-count-under-data"),
        pytest.param(3, 2, "03", AnswerError, id="function-only"),
        pytest.param(1, 9, "01 01 ff", AnswerError, id="one-byte-for-nine-bits"),
        pytest.param(1, 9, "01 03 ffff ff", AnswerError, id="three-bytes-for-nine-bits"),
    ],
)
def test_an_answer_that_does_not_fit_its_read_is_refused(fc: int, count: int, pdu: str, err: type) -> None:
    with pytest.raises(err):
        read_answer(fc, count, bytes.fromhex(pdu))


def test_an_exception_answer_carries_its_code_and_function() -> None:
    with pytest.raises(ExceptionAnswer) as info:
        read_answer(4, 1, b"\x84\x0b")
    assert (info.value.function, info.value.code) == (4, 11)


def test_write_answers_must_echo_the_request() -> None:
    req = write_registers_request(1, [10, 258])
    write_answer(req, bytes.fromhex("1000010002"))  # [MB-AP] 6.12
    with pytest.raises(AnswerError):
        write_answer(req, bytes.fromhex("1000010001"))
    with pytest.raises(ExceptionAnswer):
        write_answer(req, b"\x90\x04")
    coil = write_coil_request(0xAC, True)
    write_answer(coil, coil)  # [MB-AP] 6.5: the answer is the request
    with pytest.raises(AnswerError):
        write_answer(coil, write_coil_request(0xAC, False))

"""A tiny classic-pcap writer, so tests can hand our frames to Wireshark's dissectors without a capture.

Each packet is Ethernet II + IPv4 + TCP (or UDP) built with ``struct``, lengths exact. TCP and UDP checksums
are left 0 (tshark is told not to validate them: ``-o tcp.check_checksum:FALSE``; a UDP checksum of 0 means
"none" in IPv4, RFC 768); the IPv4 header checksum is computed, so no IP expert warning appears.

Format: the libpcap file format (global header, magic 0xA1B2C3D4, version 2.4, LINKTYPE_ETHERNET = 1,
then per packet a 16-byte record header: seconds, microseconds, captured length, original length).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

LINKTYPE_ETHERNET = 1
_TCP_FIN, _TCP_SYN, _TCP_PSH, _TCP_ACK = 0x01, 0x02, 0x08, 0x10


def _ipv4_checksum(header: bytes) -> int:
    total = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _ip(src: str, dst: str, proto: int, payload: bytes, ident: int) -> bytes:
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,  # version 4, IHL 5 words
        0,
        20 + len(payload),
        ident & 0xFFFF,
        0x4000,  # don't fragment
        64,
        proto,
        0,
        bytes(int(x) for x in src.split(".")),
        bytes(int(x) for x in dst.split(".")),
    )
    header = header[:10] + struct.pack("!H", _ipv4_checksum(header)) + header[12:]
    return header + payload


def _ethernet(payload: bytes) -> bytes:
    return b"\x02\x00\x00\x00\x00\x02" + b"\x02\x00\x00\x00\x00\x01" + struct.pack("!H", 0x0800) + payload


@dataclass
class PcapWriter:
    """Packets collected in memory, written by :meth:`save`; ``t`` is the capture time of the next packet [s]."""

    t: float = 1_700_000_000.0
    step_s: float = 0.001
    packets: list[tuple[float, bytes]] = field(default_factory=list)
    _ident: int = 1

    def add(self, frame: bytes) -> None:
        self.packets.append((self.t, frame))
        self.t += self.step_s
        self._ident += 1

    def udp(self, src: tuple[str, int], dst: tuple[str, int], payload: bytes) -> None:
        udp = struct.pack("!HHHH", src[1], dst[1], 8 + len(payload), 0) + payload
        self.add(_ethernet(_ip(src[0], dst[0], 17, udp, self._ident)))

    def tcp_segment(
        self, src: tuple[str, int], dst: tuple[str, int], seq: int, ack: int, flags: int, payload: bytes = b""
    ) -> None:
        tcp = struct.pack("!HHIIBBHHH", src[1], dst[1], seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, 5 << 4, flags, 65535, 0, 0)
        self.add(_ethernet(_ip(src[0], dst[0], 6, tcp + payload, self._ident)))

    def save(self, path: Path) -> None:
        out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, LINKTYPE_ETHERNET)]
        for t, frame in self.packets:
            sec = int(t)
            usec = round((t - sec) * 1_000_000)
            out.append(struct.pack("<IIII", sec, usec, len(frame), len(frame)) + frame)
        path.write_bytes(b"".join(out))


@dataclass
class TcpConversation:
    """One TCP connection (handshake, data both ways with correct SEQ/ACK, FIN) written into a :class:`PcapWriter`."""

    pcap: PcapWriter
    client: tuple[str, int]
    server: tuple[str, int]
    _seq: dict[bool, int] = field(default_factory=lambda: {True: 1000, False: 5000})

    def open(self) -> TcpConversation:
        c, s = self.client, self.server
        self.pcap.tcp_segment(c, s, self._seq[True], 0, _TCP_SYN)
        self._seq[True] += 1
        self.pcap.tcp_segment(s, c, self._seq[False], self._seq[True], _TCP_SYN | _TCP_ACK)
        self._seq[False] += 1
        self.pcap.tcp_segment(c, s, self._seq[True], self._seq[False], _TCP_ACK)
        return self

    def send(self, from_client: bool, payload: bytes) -> None:
        """One segment carrying ``payload`` (which may hold several frames, or part of one)."""
        src, dst = (self.client, self.server) if from_client else (self.server, self.client)
        self.pcap.tcp_segment(
            src, dst, self._seq[from_client], self._seq[not from_client], _TCP_PSH | _TCP_ACK, payload
        )
        self._seq[from_client] += len(payload)

    def close(self) -> None:
        c, s = self.client, self.server
        self.pcap.tcp_segment(c, s, self._seq[True], self._seq[False], _TCP_FIN | _TCP_ACK)
        self._seq[True] += 1
        self.pcap.tcp_segment(s, c, self._seq[False], self._seq[True], _TCP_FIN | _TCP_ACK)
        self._seq[False] += 1
        self.pcap.tcp_segment(c, s, self._seq[True], self._seq[False], _TCP_ACK)

"""The original's internal binary RPC framing (rpc.md 1.3), byte for byte.

A packet is a 36-byte little-endian header, then ``ext`` (``ext_size`` bytes), then ``body``
(``body_size`` bytes)::

    offset  size  field
         0     4  magic      0x70656562
         4     4  command    command number; 0 = heartbeat
         8     2  pkg_type   0 request, 1 reply, 2 push
        10     4  result     unused (0)
        14     4  crc32      IEEE CRC-32 (zlib.crc32) of the whole packet with this field 0
        18     4  sequence   caller's correlation id, echoed
        22     8  req_id     client request id, echoed (servers write it into JSON "id")
        30     4  body_size
        34     2  ext_size

A reply is a copy of the request header with ``pkg_type`` = 1 and a new body.  Heartbeats
(command 0) carry a TLV body: (type u16, len u16, value); type 1 = the client's heartbeat timeout
in milliseconds (u32).

:class:`Decoder` is the streaming decoder for stream sockets: it takes whatever ``recv`` gave
and returns the complete packets, keeping the rest for the next call; a bad magic, a bad CRC or
a packet larger than ``max_pkg_size`` raises :class:`ProtocolError`, after which the caller
closes the connection (as the original does).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

MAGIC = 0x70656562
HEADER = struct.Struct("<IIHIIIQIH")
HEADER_SIZE = HEADER.size  # 36
CRC_OFFSET = 14

TYPE_REQUEST = 0
TYPE_REPLY = 1
TYPE_PUSH = 2

CMD_HEARTBEAT = 0
HEARTBEAT_TYPE_TIMEOUT = 1
HEARTBEAT_INTERVAL = 1.0
HEARTBEAT_TIMEOUT_DEFAULT = 3.0
HEARTBEAT_TIMEOUT_MIN = 2.0
HEARTBEAT_TIMEOUT_MAX = 600.0

#: The original's limit on a body (``RPC_PKG_MAX_BODY_SIZE``).
MAX_BODY_SIZE = (0xFFFFFFFF // 2) - 0xFFFF - 52

U32 = 0xFFFFFFFF
U64 = 0xFFFFFFFFFFFFFFFF

_ZERO_CRC = b"\x00\x00\x00\x00"
_TLV = struct.Struct("<HH")
_U32 = struct.Struct("<I")


def crc32(data: bytes | bytearray | memoryview, value: int = 0) -> int:
    """IEEE CRC-32 (zlib's), continuing from ``value``: the original's packet checksum.

    The original's function is named ``crc32c`` but its table is the IEEE one (0x00000000,
    0x77073096, ...), so every packet it sends or accepts carries ``zlib.crc32``.
    """
    return zlib.crc32(data, value)


class ProtocolError(Exception):
    """A stream that cannot be decoded: the connection must be closed."""


@dataclass(slots=True)
class Packet:
    command: int
    pkg_type: int
    sequence: int
    req_id: int
    body: bytes = b""
    ext: bytes = b""
    result: int = 0
    crc32: int = 0

    def reply(self, body: bytes) -> bytes:
        """The packed reply: a copy of this header with pkg_type=reply and ``body``."""
        return pack(self.command, TYPE_REPLY, self.sequence, self.req_id, body, self.ext,
                    self.result)


def pack(command: int, pkg_type: int, sequence: int, req_id: int, body: bytes = b"",
         ext: bytes = b"", result: int = 0) -> bytes:
    """One packet on the wire (req_id is taken modulo 2**64, so a negative id round-trips)."""
    if len(body) > MAX_BODY_SIZE or len(ext) > 0xFFFF:
        raise ValueError("rpc packet too large")
    header = HEADER.pack(MAGIC, command, pkg_type, result, 0, sequence & U32, req_id & U64,
                         len(body), len(ext))
    crc = crc32(header)
    if ext:
        crc = crc32(ext, crc)
    if body:
        crc = crc32(body, crc)
    return b"".join((header[:CRC_OFFSET], _U32.pack(crc), header[CRC_OFFSET + 4:], ext, body))


def packet_crc(data: bytes | bytearray | memoryview, size: int) -> int:
    """CRC-32 of ``data[:size]`` with the crc field taken as zero."""
    view = memoryview(data)
    crc = crc32(view[:CRC_OFFSET])
    crc = crc32(_ZERO_CRC, crc)
    return crc32(view[CRC_OFFSET + 4:size], crc)


def _check_header(data: bytes | bytearray | memoryview, max_pkg_size: int) -> tuple[int, ...]:
    fields = HEADER.unpack_from(data, 0)
    if fields[0] != MAGIC:
        raise ProtocolError(f"bad magic 0x{fields[0]:08x}")
    size = HEADER_SIZE + fields[8] + fields[7]
    if size > max_pkg_size:
        raise ProtocolError(f"packet of {size} bytes exceeds max_pkg_size {max_pkg_size}")
    return fields


def _build(data: bytes | bytearray | memoryview, fields: tuple[int, ...]) -> Packet:
    ext_end = HEADER_SIZE + fields[8]
    view = memoryview(data)
    ext = bytes(view[HEADER_SIZE:ext_end]) if fields[8] else b""
    body = bytes(view[ext_end:ext_end + fields[7]])
    return Packet(command=fields[1], pkg_type=fields[2], sequence=fields[5], req_id=fields[6],
                  body=body, ext=ext, result=fields[3], crc32=fields[4])


def decode_datagram(data: bytes, max_pkg_size: int) -> Packet:
    """A packet that arrived alone (UDP): it must be complete and exact."""
    if len(data) < HEADER_SIZE:
        raise ProtocolError("short datagram")
    fields = _check_header(data, max_pkg_size)
    size = HEADER_SIZE + fields[8] + fields[7]
    if len(data) < size:
        raise ProtocolError("truncated datagram")
    if packet_crc(data, size) != fields[4]:
        raise ProtocolError("bad crc32")
    return _build(data, fields)


class Decoder:
    """Streaming decoder: feed it bytes, get the complete packets."""

    __slots__ = ("buf", "max_pkg_size")

    def __init__(self, max_pkg_size: int) -> None:
        self.buf = bytearray()
        self.max_pkg_size = max_pkg_size

    def feed(self, data: bytes) -> list[Packet]:
        buf = self.buf
        buf += data
        packets: list[Packet] = []
        pos = 0
        end = len(buf)
        max_size = self.max_pkg_size
        while end - pos >= HEADER_SIZE:
            fields = HEADER.unpack_from(buf, pos)
            if fields[0] != MAGIC:
                raise ProtocolError(f"bad magic 0x{fields[0]:08x}")
            size = HEADER_SIZE + fields[8] + fields[7]
            if size > max_size:
                raise ProtocolError(f"packet of {size} bytes exceeds max_pkg_size {max_size}")
            if end - pos < size:
                break
            view = memoryview(buf)[pos:pos + size]
            try:
                if packet_crc(view, size) != fields[4]:
                    raise ProtocolError("bad crc32")
                packets.append(_build(view, fields))
            finally:
                view.release()
            pos += size
        if pos:
            del buf[:pos]
        return packets

    @property
    def pending(self) -> int:
        """Bytes received but not yet part of a complete packet."""
        return len(self.buf)


# -- heartbeat ---------------------------------------------------------------------------------


def heartbeat_body(timeout: float) -> bytes:
    """The client's heartbeat TLV: type 1, the timeout in milliseconds."""
    return _TLV.pack(HEARTBEAT_TYPE_TIMEOUT, 4) + _U32.pack(int(timeout * 1000) & U32)


def clamp_heartbeat_timeout(timeout: float) -> float:
    """0 (or less) means the default; otherwise clamped to 2..600 s, as the original does."""
    if timeout <= 0:
        return HEARTBEAT_TIMEOUT_DEFAULT
    return min(max(timeout, HEARTBEAT_TIMEOUT_MIN), HEARTBEAT_TIMEOUT_MAX)


def parse_heartbeat_body(body: bytes) -> float | None:
    """The heartbeat timeout (seconds, clamped) a client announced, or None if it sent none.

    A malformed TLV list raises :class:`ProtocolError` (the original closes the connection).
    """
    timeout: float | None = None
    pos = 0
    size = len(body)
    while pos < size:
        if size - pos < 4:
            raise ProtocolError("truncated heartbeat tlv")
        tlv_type, length = _TLV.unpack_from(body, pos)
        pos += 4
        if size - pos < length:
            raise ProtocolError("truncated heartbeat tlv value")
        if tlv_type == HEARTBEAT_TYPE_TIMEOUT:
            if length != 4:
                raise ProtocolError("bad heartbeat timeout length")
            ms = _U32.unpack_from(body, pos)[0]
            timeout = min(max(ms / 1000, HEARTBEAT_TIMEOUT_MIN), HEARTBEAT_TIMEOUT_MAX)
        pos += length
    return timeout


def hexdump(data: bytes, limit: int = 4096) -> str:
    """The original's hexdump layout (16 bytes a line), for logging a rejected body."""
    data = data[:limit]
    lines = []
    for pos in range(0, len(data), 16):
        chunk = data[pos:pos + 16]
        groups = " ".join(chunk[i:i + 2].hex() for i in range(0, len(chunk), 2))
        text = "".join(chr(c) if 0x20 < c < 0x7F else "." for c in chunk)
        lines.append(f"0x{pos:04x}:  {groups:<40} {text}")
    return "\n".join(lines)

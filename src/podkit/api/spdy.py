"""SPDY/3.1 framing, server side, as much as kubectl's port-forward uses; sans-I/O (bytes in,
events and bytes out), as h11 does for HTTP/1.1.

kubectl 1.37 sends SPDY inside a WebSocket (`SPDY/3.1+portforward.k8s.io`). For each local
connection it opens two streams (SYN_STREAM) with the headers streamtype (error or data),
port and requestid, and waits for each one's SYN_REPLY. Then DATA frames carry the bytes each
way, FIN ends a direction. Header blocks are zlib-compressed with the SPDY/3 dictionary, one
compression context per direction. PING is echoed; RST_STREAM, SETTINGS and GOAWAY are
reported.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from podkit.api.spdy_dictionary import DICTIONARY

SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS, PING, GOAWAY = 1, 2, 3, 4, 6, 7
FLAG_FIN = 0x01


class SpdyError(ValueError):
    pass


@dataclass(frozen=True)
class Opened:
    stream: int
    headers: dict[str, str]


@dataclass(frozen=True)
class Data:
    stream: int
    payload: bytes
    fin: bool


@dataclass(frozen=True)
class Reset:
    stream: int


@dataclass(frozen=True)
class Ping:
    body: bytes


@dataclass(frozen=True)
class GoAway:
    pass


Event = Opened | Data | Reset | Ping | GoAway


class Session:
    def __init__(self) -> None:
        self._buffer = b""
        self._inflate = zlib.decompressobj(zdict=DICTIONARY)
        self._deflate = zlib.compressobj(zdict=DICTIONARY)

    def receive(self, data: bytes) -> list[Event]:
        """The events of every whole frame received so far (frames may span messages)."""
        self._buffer += data
        events: list[Event] = []
        while len(self._buffer) >= 8:
            first, second = struct.unpack(">II", self._buffer[:8])
            length, flags = second & 0xFFFFFF, second >> 24
            if len(self._buffer) < 8 + length:
                break
            body, self._buffer = self._buffer[8 : 8 + length], self._buffer[8 + length :]
            if first & 0x80000000:
                event = self._control(first & 0xFFFF, body)
                if event is not None:
                    events.append(event)
            else:
                events.append(Data(first & 0x7FFFFFFF, body, bool(flags & FLAG_FIN)))
        return events

    def _control(self, kind: int, body: bytes) -> Event | None:
        if kind == SYN_STREAM:
            stream = struct.unpack(">I", body[:4])[0] & 0x7FFFFFFF
            try:
                block = self._inflate.decompress(body[10:])
            except zlib.error as exc:
                raise SpdyError(f"a header block does not decompress: {exc}") from None
            return Opened(stream, _headers(block))
        if kind == RST_STREAM:
            return Reset(struct.unpack(">I", body[:4])[0] & 0x7FFFFFFF)
        if kind == PING:
            return Ping(body)
        if kind == GOAWAY:
            return GoAway()
        return None  # SETTINGS, WINDOW_UPDATE: nothing to do here

    def reply(self, stream: int) -> bytes:
        """SYN_REPLY with no headers: the stream is accepted."""
        block = self._deflate.compress(struct.pack(">I", 0)) + self._deflate.flush(
            zlib.Z_SYNC_FLUSH
        )
        return _control(SYN_REPLY, 0, struct.pack(">I", stream) + block)

    def data(self, stream: int, payload: bytes, fin: bool = False) -> bytes:
        return struct.pack(">II", stream, ((FLAG_FIN if fin else 0) << 24) | len(payload)) + payload

    def ping(self, body: bytes) -> bytes:
        return _control(PING, 0, body)


def _control(kind: int, flags: int, body: bytes) -> bytes:
    return struct.pack(">HHI", 0x8003, kind, (flags << 24) | len(body)) + body


def _headers(block: bytes) -> dict[str, str]:
    """A decompressed header block: a count, then length-prefixed names and values."""
    try:
        (count,) = struct.unpack(">I", block[:4])
        headers, i = {}, 4
        for _ in range(count):
            (size,) = struct.unpack(">I", block[i : i + 4])
            name, i = block[i + 4 : i + 4 + size].decode(), i + 4 + size
            (size,) = struct.unpack(">I", block[i : i + 4])
            value, i = block[i + 4 : i + 4 + size].decode(), i + 4 + size
            headers[name] = value
    except (struct.error, UnicodeDecodeError) as exc:
        raise SpdyError(f"a malformed header block: {exc}") from None
    return headers

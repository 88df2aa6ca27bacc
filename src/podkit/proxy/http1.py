"""Small HTTP/1.1 pieces with no I/O: the proxy's own responses (errors, direct answers,
redirects), request ids, chunk framing. Parsing and header rules are in h1.py."""

from __future__ import annotations

import os
from http import HTTPStatus

from podkit.common.httpserver import http_date

_REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}


def response(
    status: int,
    body: bytes = b"",
    *,
    content_type: bytes = b"text/plain; charset=utf-8",
    headers: list[tuple[bytes, bytes]] | None = None,
    close: bool = False,
    head: bool = False,
) -> bytes:
    """A whole response written by the proxy itself (errors, direct responses, redirects)."""
    parts = [
        b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b"")),
        b"date: ",
        http_date().encode(),
        b"\r\nserver: podkit\r\n",
    ]
    if body or status not in (204, 304):
        parts += [b"content-type: ", content_type, b"\r\ncontent-length: %d\r\n" % len(body)]
    for name, value in headers or ():
        parts += [name, b": ", value, b"\r\n"]
    if close:
        parts.append(b"connection: close\r\n")
    parts.append(b"\r\n")
    if not head:
        parts.append(body)
    return b"".join(parts)


def error_body(status: int, reason: str) -> bytes:
    """A short plain-text body: the status and why, so a user reading curl's output knows."""
    return b"%d %s: %s\n" % (status, _REASONS.get(status, b""), reason.encode())


_id_prefix = b""
_id_high = b""  # the prefix and the counter's high 9 hex digits
_id_counter = 0
_ID_LOW = [b"%03x" % i for i in range(4096)]  # its low 3 digits: looked up, not formatted


def request_id() -> bytes:
    """A UUID-shaped id for x-request-id: a random prefix per process and a counter, so ids are
    unique across processes and restarts (122 random bits would be no more unique, and drawing
    them costs more than proxying a small request)."""
    global _id_prefix, _id_high, _id_counter
    n = _id_counter = _id_counter + 1
    low = n & 0xFFF
    if not low or not _id_high:
        if not _id_prefix or n > 0xFFFFFFFFFFFF:
            h = os.urandom(10).hex().encode()
            _id_prefix = b"%s-%s-4%s-a%s-" % (h[:8], h[8:12], h[12:15], h[15:18])
            n = _id_counter = low = 1
        _id_high = b"%s%09x" % (_id_prefix, n >> 12)
    return _id_high + _ID_LOW[low]


def host_without_port(host: bytes) -> bytes:
    """'Example.COM:8443' -> b'example.com'; '[::1]:80' -> b'[::1]'."""
    host = host.lower()
    if host.startswith(b"["):
        end = host.find(b"]")
        return host[: end + 1] if end > 0 else host
    colon = host.rfind(b":")
    return host[:colon] if colon >= 0 else host


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"

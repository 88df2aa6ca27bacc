"""The proxy's HTTP/1.1 framing core (podkit.proxy.h1), with no sockets: a table of raw requests
and the outcome each must have (smuggling attempts among them), response framing, chunked
bodies fed whole and at every split point, and a differential run against llhttp (httptools, in
its default strict mode) over the table and a few hundred seeded mutations of it."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any

import httptools
import pytest

from podkit.proxy import h1
from podkit.proxy.h1 import (
    CHUNKED,
    CLOSE,
    LENGTH,
    NO_BODY,
    ChunkedScanner,
    ProtocolError,
    check_partial_head,
    head_end,
    parse_request,
    parse_response,
    without,
)

LIMITS = {"max_request_line": 8192, "max_headers": 100, "max_head": 65536}


def request(raw: bytes, **limits: int) -> h1.RequestHead:
    """Parse the head at the start of raw as the session does; ProtocolError when refused."""
    end = head_end(raw)
    if end < 0:
        check_partial_head(raw, 65536 + 8192)
        raise AssertionError(f"incomplete head, not refused: {raw!r}")
    return parse_request(raw, end, **{**LIMITS, **limits})


def response(raw: bytes, method: bytes = b"GET") -> h1.ResponseHead:
    end = head_end(raw)
    assert end >= 0, raw
    return parse_response(raw, end, request_method=method)


REQUEST_FIELDS = (
    "method", "target", "version", "fields", "host", "content_length", "chunked",
    "keep_alive", "expect_continue", "upgrade", "request_id", "xff", "xfp", "xfh",
    "conn_tokens",
)  # fmt: skip
RESPONSE_FIELDS = (
    "status", "version", "status_line", "fields", "content_length", "framing", "keep_alive",
    "upgrade", "conn_tokens",
)  # fmt: skip


def summary(head: Any, names: tuple[str, ...]) -> dict[str, Any]:
    out = {name: getattr(head, name) for name in names}
    out["conn_tokens"] = list(out["conn_tokens"])
    out["drop"] = list(head.drop)
    return out


# ---------------------------------------------------------------------------------------------
# requests: what is accepted, and as what

H = b"Host: example.com"


def req(first: bytes, *lines: bytes, body: bytes = b"") -> bytes:
    return first + b"\r\n" + b"".join(line + b"\r\n" for line in lines) + b"\r\n" + body


CHUNKED_BODY = b'5;name=value;flag\r\nhello\r\n6;q="a \\"b\\""\r\n world\r\n0\r\n\r\n'

ACCEPTED: list[tuple[str, bytes, dict[str, Any]]] = [
    (
        "get",
        req(b"GET / HTTP/1.1", b"Host: 127.0.0.1:18083"),
        {"method": b"GET", "target": b"/", "version": b"1.1", "host": b"127.0.0.1:18083",
         "keep_alive": True, "chunked": False, "content_length": 0, "drop": []},
    ),
    (
        "get-curl",
        req(b"GET /a/b?c=d&e HTTP/1.1", b"Host: example.com", b"User-Agent: curl/7.88.1",
            b"Accept: */*"),
        {"target": b"/a/b?c=d&e", "host": b"example.com", "upgrade": None},
    ),
    (
        "post-content-length",
        req(b"POST /submit HTTP/1.1", b"Host: a", b"Content-Type: text/plain",
            b"Content-Length: 5", body=b"hello"),
        {"method": b"POST", "content_length": 5, "chunked": False, "drop": []},
    ),
    (
        "content-length-ows-and-zeros",
        req(b"PUT /x HTTP/1.1", b"Host: a", b"Content-Length: \t 003 \t", body=b"abc"),
        {"content_length": 3},
    ),
    (
        "chunked-with-extensions",
        req(b"POST /up HTTP/1.1", b"Host: a", b"Transfer-Encoding: chunked", body=CHUNKED_BODY),
        {"chunked": True, "content_length": 0, "drop": [(9, 37)]},
    ),
    (
        "chunked-any-case-with-ows",
        req(b"POST /up HTTP/1.1", b"Host: a", b"transfer-ENCODING:  Chunked  ",
            body=b"0\r\n\r\n"),
        {"chunked": True},
    ),
    (
        "http10-no-keepalive",
        req(b"GET / HTTP/1.0"),
        {"version": b"1.0", "keep_alive": False, "host": b""},
    ),
    (
        "http10-keepalive",
        req(b"GET / HTTP/1.0", b"Host: a", b"Connection: Keep-Alive"),
        {"version": b"1.0", "keep_alive": True, "drop": [(9, 33)], "conn_tokens": []},
    ),
    (
        "http11-close",
        req(b"GET / HTTP/1.1", b"Host: a", b"Connection: close"),
        {"keep_alive": False, "drop": [(9, 28)]},
    ),
    (
        "absolute-form",
        req(b"GET http://example.com/path?q=1 HTTP/1.1", b"Host: Example.COM"),
        {"target": b"http://example.com/path?q=1", "host": b"Example.COM"},
    ),
    (
        "absolute-form-https",
        req(b"GET HTTPS://example.com HTTP/1.1", b"Host: example.com"),
        {"target": b"HTTPS://example.com", "host": b"example.com"},
    ),
    (
        "absolute-form-http10-no-host",
        req(b"GET http://example.com:8080 HTTP/1.0"),
        {"host": b"example.com:8080", "version": b"1.0"},
    ),
    ("options-asterisk", req(b"OPTIONS * HTTP/1.1", H), {"method": b"OPTIONS", "target": b"*"}),
    (
        "connect-authority-form",
        req(b"CONNECT example.com:443 HTTP/1.1", b"Host: example.com:443"),
        {"method": b"CONNECT", "target": b"example.com:443"},
    ),
    (
        "extension-method",
        req(b"PROPFIND-X /dav HTTP/1.1", H),  # methods are extensible (RFC 9110 9.1)
        {"method": b"PROPFIND-X"},
    ),
    (
        "leading-empty-line",  # RFC 9112 2.2: a server SHOULD ignore one
        b"\r\n" + req(b"GET / HTTP/1.1", H),
        {"method": b"GET", "host": b"example.com"},
    ),
    (
        "http12-is-http11",  # RFC 9110 2.5: the highest minor version implemented
        req(b"GET / HTTP/1.2", H),
        {"version": b"1.1", "keep_alive": True},
    ),
    (
        "expect-continue",
        req(b"PUT /x HTTP/1.1", H, b"Expect: 100-Continue", b"Content-Length: 1", body=b"x"),
        {"expect_continue": True},
    ),
    (
        "expect-continue-ignored-in-http10",  # RFC 9110 10.1.1
        req(b"PUT /x HTTP/1.0", b"Expect: 100-continue", b"Content-Length: 1", body=b"x"),
        {"expect_continue": False},
    ),
    (
        "upgrade",
        req(b"GET /ws HTTP/1.1", H, b"Connection: Upgrade", b"Upgrade: websocket"),
        {"upgrade": b"websocket", "keep_alive": True, "drop": [(19, 40), (40, 60)]},
    ),
    (
        "upgrade-without-connection-upgrade",
        req(b"GET /ws HTTP/1.1", H, b"Upgrade: websocket"),
        {"upgrade": None, "drop": [(19, 39)]},
    ),
    (
        "upgrade-ignored-in-http10",  # RFC 9110 7.8
        req(b"GET /ws HTTP/1.0", b"Connection: upgrade", b"Upgrade: websocket"),
        {"upgrade": None, "keep_alive": False},
    ),
    (
        "x-forwarded-collected-and-dropped",
        req(b"GET / HTTP/1.1", b"X-Forwarded-For: 10.0.0.1", H, b"x-forwarded-for: 10.0.0.2",
            b"X-Forwarded-Proto: https", b"X-Forwarded-Host: front.example"),
        {"xff": b"10.0.0.1, 10.0.0.2", "xfp": b"https", "xfh": b"front.example",
         "drop": [(0, 27), (46, 73), (73, 99), (99, 132)]},
    ),
    (
        "x-request-id",
        req(b"GET / HTTP/1.1", H, b"X-Request-Id: AbC-123"),
        {"request_id": b"AbC-123", "drop": []},
    ),
    (
        "connection-names-fields",
        req(b"GET / HTTP/1.1", H, b"Connection: close, X-Secret, Host, Content-Length, bad/x",
            b"X-Secret: 1", b"Content-Length: 0", b"Keep-Alive: timeout=5", b"x-secret: 2"),
        {"keep_alive": False, "conn_tokens": [b"x-secret"], "content_length": 0,
         "host": b"example.com"},
    ),
    ("ipv6-host", req(b"GET / HTTP/1.1", b"Host: [::1]:8080"), {"host": b"[::1]:8080"}),
    ("empty-host", req(b"GET / HTTP/1.1", b"Host:"), {"host": b""}),  # RFC 9110 7.2
    (
        "obs-text-and-tab-in-value",
        req(b"GET / HTTP/1.1", H, b"X-Name:\tcaf\xe9 \t", b"X-Empty:"),
        {"host": b"example.com"},
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    ("raw", "want"), [(r, w) for _, r, w in ACCEPTED], ids=[i for i, *_ in ACCEPTED]
)
def test_request_accepted(raw: bytes, want: dict[str, Any]) -> None:
    head = request(raw)
    got = summary(head, REQUEST_FIELDS)
    assert {k: got[k] for k in want} == want
    # fields are the header lines exactly as received
    start = raw.index(b"\r\n", 2 if raw.startswith(b"\r\n") else 0) + 2
    assert head.fields == raw[start : head_end(raw) + 2]


def test_connection_named_fields_are_dropped_but_never_host_or_length() -> None:
    raw = ACCEPTED[[i for i, *_ in ACCEPTED].index("connection-names-fields")][1]
    head = request(raw)
    assert without(head.fields, head.drop) == b"Host: example.com\r\nContent-Length: 0\r\n"


POST = b"POST / HTTP/1.1"
TE = b"Transfer-Encoding: chunked"


def test_connection_with_many_and_repeated_names() -> None:
    names = b", ".join(b"x-%d" % i for i in range(3000))
    raw = req(b"GET / HTTP/1.1", H, b"Connection: " + names + b", X-A, x-a", b"X-A: 1",
              b"x-2999: 2", b"X-B: 3", b"x-a: 4")  # fmt: skip
    head = request(raw)
    assert len(head.conn_tokens) == 3002
    assert without(head.fields, head.drop) == b"Host: example.com\r\nX-B: 3\r\n"
    assert list(head.drop) == sorted(set(head.drop))


def test_request_id_named_by_connection_is_not_passed_on() -> None:
    head = request(req(b"GET / HTTP/1.1", H, b"X-Request-Id: abc", b"Connection: x-request-id"))
    assert head.request_id is None
    assert without(head.fields, head.drop) == b"Host: example.com\r\n"
    head = request(req(b"GET / HTTP/1.1", H, b"X-Request-Id:"))  # empty: dropped, made anew
    assert head.request_id is None and without(head.fields, head.drop) == H + b"\r\n"


REJECTED: list[tuple[str, bytes, int]] = [
    # framing conflicts (request smuggling)
    ("cl-and-te", req(POST, H, b"Content-Length: 5", TE), 400),
    ("te-and-cl", req(POST, H, TE, b"Content-Length: 5"), 400),
    ("cl-twice-same", req(POST, H, b"Content-Length: 3", b"Content-Length: 3"), 400),
    ("cl-twice-different", req(POST, H, b"Content-Length: 3", b"content-length: 4"), 400),
    ("cl-list", req(POST, H, b"Content-Length: 3, 3"), 400),
    ("cl-plus", req(POST, H, b"Content-Length: +3"), 400),
    ("cl-minus", req(POST, H, b"Content-Length: -3"), 400),
    ("cl-space-inside", req(POST, H, b"Content-Length: 1 2"), 400),
    ("cl-hex", req(POST, H, b"Content-Length: 0x3"), 400),
    ("cl-empty", req(POST, H, b"Content-Length:"), 400),
    ("cl-19-digits", req(POST, H, b"Content-Length: 1000000000000000000"), 400),
    ("cl-non-ascii-digit", req(POST, H, b"Content-Length: \xd9\xa3"), 400),
    ("te-twice", req(POST, H, TE, TE), 400),
    ("te-chunked-gzip", req(POST, H, b"Transfer-Encoding: chunked, gzip"), 400),
    ("te-gzip-chunked", req(POST, H, b"Transfer-Encoding: gzip, chunked"), 501),
    ("te-chunked-twice", req(POST, H, b"Transfer-Encoding: chunked, chunked"), 400),
    ("te-empty-element", req(POST, H, b"Transfer-Encoding: chunked,"), 400),
    ("te-empty", req(POST, H, b"Transfer-Encoding:"), 400),
    ("te-xchunked", req(POST, H, b"Transfer-Encoding: xchunked"), 400),
    ("te-chunkedx", req(POST, H, b"Transfer-Encoding: chunkedx"), 400),
    ("te-identity", req(POST, H, b"Transfer-Encoding: identity"), 400),
    ("te-quoted", req(POST, H, b'Transfer-Encoding: "chunked"'), 400),
    ("te-trailing-tab", req(POST, H, b"Transfer-Encoding: chunked\t"), 400),
    ("te-space-before-colon", req(POST, H, b"Transfer-Encoding : chunked"), 400),
    ("te-vertical-tab", req(POST, H, b"Transfer-Encoding: \x0bchunked"), 400),
    ("te-in-http10", req(b"POST / HTTP/1.0", TE), 400),
    # line endings and controls
    ("bare-lf-request-line", b"GET / HTTP/1.1\n" + H + b"\r\n\r\n", 400),
    ("bare-lf-field", req(b"GET / HTTP/1.1", b"Host: a\nX-Smuggle: 1"), 400),
    ("bare-lf-end-of-head", b"GET / HTTP/1.1\r\nHost: a\r\n\n", 400),
    ("lf-only-head", b"GET / HTTP/1.1\nHost: a\n\n", 400),
    ("bare-cr-field", req(b"GET / HTTP/1.1", b"Host: a\rX-Smuggle: 1"), 400),
    ("bare-cr-request-line", b"GET /\r HTTP/1.1\r\n" + H + b"\r\n\r\n", 400),
    ("obs-fold", req(b"GET / HTTP/1.1", H, b"X-Long: a", b" b"), 400),
    ("obs-fold-tab", req(b"GET / HTTP/1.1", H, b"X-Long: a", b"\tb"), 400),
    ("leading-space-first-field", req(b"GET / HTTP/1.1", b" Host: a"), 400),
    ("nul-in-value", req(b"GET / HTTP/1.1", H, b"X-A: a\x00b"), 400),
    ("del-in-value", req(b"GET / HTTP/1.1", H, b"X-A: a\x7fb"), 400),
    ("escape-in-value", req(b"GET / HTTP/1.1", H, b"X-A: \x1b[31m"), 400),
    # header names
    ("name-with-space", req(b"GET / HTTP/1.1", H, b"Bad Name: x"), 400),
    ("name-with-at", req(b"GET / HTTP/1.1", H, b"B@d: x"), 400),
    ("name-empty", req(b"GET / HTTP/1.1", H, b": x"), 400),
    ("name-non-ascii", req(b"GET / HTTP/1.1", H, b"N\xc3\xa4me: x"), 400),
    ("name-no-colon", req(b"GET / HTTP/1.1", H, b"NoColon"), 400),
    ("name-tab-before-colon", req(b"GET / HTTP/1.1", H, b"Host\t: a"), 400),
    # Host
    ("host-missing-http11", req(b"GET / HTTP/1.1"), 400),
    ("host-twice", req(b"GET / HTTP/1.1", b"Host: a", b"Host: b"), 400),
    ("host-twice-same", req(b"GET / HTTP/1.1", b"Host: a", b"host: a"), 400),
    ("host-slash", req(b"GET / HTTP/1.1", b"Host: a/b"), 400),
    ("host-at", req(b"GET / HTTP/1.1", b"Host: user@a"), 400),
    ("host-space-inside", req(b"GET / HTTP/1.1", b"Host: a b"), 400),
    ("host-two-ports", req(b"GET / HTTP/1.1", b"Host: a:1:2"), 400),
    ("host-port-letters", req(b"GET / HTTP/1.1", b"Host: a:http"), 400),
    ("host-differs-from-absolute-target", req(b"GET http://a/ HTTP/1.1", b"Host: b"), 400),
    # request line and target
    ("http20", req(b"GET / HTTP/2.0", H), 505),
    ("http09", req(b"GET / HTTP/0.9", H), 505),
    ("http31", req(b"GET / HTTP/3.1", H), 505),
    ("http09-no-version", b"GET /\r\n\r\n", 400),
    ("version-lowercase", req(b"GET / http/1.1", H), 400),
    ("version-two-digits", req(b"GET / HTTP/1.10", H), 400),
    ("double-space", req(b"GET  / HTTP/1.1", H), 400),
    ("tab-separator", req(b"GET\t/ HTTP/1.1", H), 400),
    ("trailing-space", req(b"GET / HTTP/1.1 ", H), 400),
    ("method-not-token", req(b"G(T / HTTP/1.1", H), 400),
    ("target-relative", req(b"GET foo HTTP/1.1", H), 400),
    ("target-fragment", req(b"GET /index.html#.png HTTP/1.1", H), 400),
    ("target-control", req(b"GET /a\x7fb HTTP/1.1", H), 400),
    ("target-obs-text", req(b"GET /caf\xe9 HTTP/1.1", H), 400),
    ("asterisk-not-options", req(b"GET * HTTP/1.1", H), 400),
    ("connect-origin-form", req(b"CONNECT / HTTP/1.1", H), 400),
    ("connect-no-port", req(b"CONNECT example.com HTTP/1.1", H), 400),
    ("absolute-other-scheme", req(b"GET ftp://example.com/ HTTP/1.1", H), 400),
    ("absolute-odd-scheme", req(b"GET htt-p://example.com/ HTTP/1.1", H), 400),
    ("absolute-userinfo", req(b"GET http://user@example.com/ HTTP/1.1", H), 400),
    ("absolute-empty-host", req(b"GET http:///x HTTP/1.1", b"Host:"), 400),
    ("absolute-query-without-path", req(b"GET http://a?x HTTP/1.1", b"Host: a"), 400),
    ("two-leading-empty-lines", b"\r\n\r\nGET / HTTP/1.1\r\n" + H + b"\r\n\r\n", 400),
]  # fmt: skip


@pytest.mark.parametrize(
    ("raw", "status"), [(r, s) for _, r, s in REJECTED], ids=[i for i, *_ in REJECTED]
)
def test_request_rejected(raw: bytes, status: int) -> None:
    with pytest.raises(ProtocolError) as err:
        request(raw)
    assert err.value.status == status, err.value.reason
    assert err.value.reason


def test_limits() -> None:
    line = b"GET /" + b"a" * 95 + b" HTTP/1.1"  # 109 bytes
    raw = req(line, H)
    assert request(raw, max_request_line=109).target == b"/" + b"a" * 95
    with pytest.raises(ProtocolError) as err:
        request(raw, max_request_line=108)
    assert err.value.status == 414
    # a very long request line is 414, even when the head is also over every other limit
    with pytest.raises(ProtocolError) as err:
        request(req(b"GET /" + b"a" * 10000 + b" HTTP/1.1", H), max_request_line=100, max_head=300)
    assert err.value.status == 414

    fields = [b"X-%d: %d" % (i, i) for i in range(9)]
    raw = req(b"GET / HTTP/1.1", H, *fields)  # 10 field lines
    assert request(raw, max_headers=10).host == b"example.com"
    with pytest.raises(ProtocolError) as err:
        request(raw, max_headers=9)
    assert err.value.status == 431

    size = head_end(raw) + 2 - raw.index(b"\r\n") - 2  # the field lines with their CRLFs
    assert request(raw, max_head=size).host == b"example.com"
    with pytest.raises(ProtocolError) as err:
        request(raw, max_head=size - 1)
    assert err.value.status == 431


def test_check_partial_head() -> None:
    check_partial_head(b"GET / HTTP/1.1\r\nHost: a\r", 100)  # a CR waiting for its LF
    for bad in (b"GET / HTTP/1.1\nHost", b"GET / HTTP/1.1\r\nHost: a\rb"):
        with pytest.raises(ProtocolError) as err:
            check_partial_head(bad, 100)
        assert err.value.status == 400
    with pytest.raises(ProtocolError) as err:
        check_partial_head(b"GET / HTTP/1.1\r\nX: " + b"a" * 200, 100)
    assert err.value.status == 431
    check_partial_head(b"GET /" + b"a" * 90, 1000, max_request_line=100)
    with pytest.raises(ProtocolError) as err:
        check_partial_head(b"GET /" + b"a" * 200, 1000, max_request_line=100)
    assert err.value.status == 414


def test_bytearray_buffer() -> None:
    raw = req(b"POST / HTTP/1.1", H, b"Content-Length: 2", b"X-Forwarded-For: 1.2.3.4")
    head = parse_request(bytearray(raw), head_end(raw), **LIMITS)
    assert (head.host, head.content_length, head.xff) == (b"example.com", 2, b"1.2.3.4")
    assert type(head.fields) is bytes
    resp = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    assert parse_response(bytearray(resp), head_end(resp), request_method=b"GET").framing == LENGTH


def test_field_values_one_per_line_in_order() -> None:
    fields = b"X-User: b\r\nAccept: */*\r\nx-user:  a, c \r\nX-Users: no\r\n"
    assert h1.field_values(fields, b"x-user") == [b"b", b"a, c"]
    assert h1.field_value(fields, b"x-user") == b"b,a, c"  # RFC 9110 5.3: joined by commas
    assert h1.field_values(fields, b"cookie") == []
    assert h1.field_value(fields, b"cookie") is None


def test_without() -> None:
    fields = b"A: 1\r\nB: 2\r\nC: 3\r\n"
    assert without(fields, []) is fields
    assert without(fields, [(0, 6)]) == b"B: 2\r\nC: 3\r\n"
    assert without(fields, [(6, 12), (12, 18)]) == b"A: 1\r\n"
    assert without(fields, ((0, 6), (0, 6), (12, 18))) == b"B: 2\r\n"


# ---------------------------------------------------------------------------------------------
# responses

NGINX = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Mon, 01 Jan 2024 00:00:00 GMT\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 17\r\nConnection: keep-alive\r\n\r\n"
)


def resp(first: bytes, *lines: bytes) -> bytes:
    return req(first, *lines)


RESPONSES: list[tuple[str, bytes, bytes, dict[str, Any]]] = [
    ("nginx", NGINX, b"GET", {"status": 200, "framing": LENGTH, "content_length": 17,
     "keep_alive": True, "status_line": b"HTTP/1.1 200 OK\r\n", "drop": [(105, 129)]}),
    ("no-reason", resp(b"HTTP/1.1 200", b"Content-Length: 0"), b"GET",
     {"status_line": b"HTTP/1.1 200\r\n", "framing": LENGTH, "content_length": 0}),
    ("empty-reason", resp(b"HTTP/1.1 404 ", b"Content-Length: 0"), b"GET",
     {"status": 404, "status_line": b"HTTP/1.1 404 \r\n"}),
    ("reason-obs-text", resp(b"HTTP/1.1 200 Tr\xe8s bien", b"Content-Length: 0"), b"GET",
     {"status": 200}),
    ("http10-rewritten", resp(b"HTTP/1.0 200 OK", b"Content-Length: 3"), b"GET",
     {"version": b"1.0", "status_line": b"HTTP/1.1 200 OK\r\n", "keep_alive": False,
      "framing": LENGTH}),
    ("http10-keep-alive", resp(b"HTTP/1.0 200 OK", b"Content-Length: 3", b"Connection: keep-alive"),
     b"GET", {"version": b"1.0", "keep_alive": True, "drop": [(19, 43)]}),
    ("http12-is-http11", resp(b"HTTP/1.2 200 OK", b"Content-Length: 3"), b"GET",
     {"version": b"1.1", "status_line": b"HTTP/1.1 200 OK\r\n", "keep_alive": True}),
    ("close", resp(b"HTTP/1.1 200 OK", b"Content-Length: 3", b"Connection: close"), b"GET",
     {"keep_alive": False, "framing": LENGTH}),
    ("head-has-no-body", resp(b"HTTP/1.1 200 OK", b"Content-Length: 17"), b"HEAD",
     {"framing": NO_BODY, "content_length": 17, "keep_alive": True}),
    ("head-chunked-has-no-body", resp(b"HTTP/1.1 200 OK", b"Transfer-Encoding: chunked"), b"HEAD",
     {"framing": NO_BODY}),
    ("100-continue", resp(b"HTTP/1.1 100 Continue"), b"POST", {"status": 100, "framing": NO_BODY}),
    ("101-upgrade", resp(b"HTTP/1.1 101 Switching Protocols", b"Upgrade: websocket",
     b"Connection: Upgrade"), b"GET", {"status": 101, "framing": NO_BODY, "upgrade": b"websocket",
     "drop": [(0, 20), (20, 41)]}),
    ("204", resp(b"HTTP/1.1 204 No Content", b"Content-Length: 5"), b"GET", {"framing": NO_BODY}),
    ("304", resp(b"HTTP/1.1 304 Not Modified", b"Transfer-Encoding: chunked"), b"GET",
     {"framing": NO_BODY, "keep_alive": True}),
    ("connect-2xx-is-a-tunnel", resp(b"HTTP/1.1 200 Connection established"), b"CONNECT",
     {"framing": NO_BODY}),
    ("connect-407-has-a-body", resp(b"HTTP/1.1 407 Auth", b"Content-Length: 3"), b"CONNECT",
     {"framing": LENGTH}),
    ("chunked", resp(b"HTTP/1.1 200 OK", b"Transfer-Encoding: chunked"), b"GET",
     {"framing": CHUNKED, "keep_alive": True, "content_length": -1, "drop": [(0, 28)]}),
    ("neither-is-close", resp(b"HTTP/1.1 200 OK", b"Content-Type: text/plain"), b"GET",
     {"framing": CLOSE, "keep_alive": False, "content_length": -1}),
    ("hop-by-hop", resp(b"HTTP/1.1 200 OK", b"Connection: keep-alive, X-Hop, Content-Length",
     b"Keep-Alive: timeout=5", b"X-Hop: 1", b"Proxy-Connection: keep-alive", b"Trailer: X-T",
     b"TE: trailers", b"Content-Length: 2", b"X-Kept: 1"), b"GET",
     {"framing": LENGTH, "keep_alive": True, "conn_tokens": [b"x-hop"]}),
]  # fmt: skip


@pytest.mark.parametrize(
    ("raw", "method", "want"), [r[1:] for r in RESPONSES], ids=[r[0] for r in RESPONSES]
)
def test_response(raw: bytes, method: bytes, want: dict[str, Any]) -> None:
    head = response(raw, method)
    got = summary(head, RESPONSE_FIELDS)
    assert {k: got[k] for k in want} == want
    assert head.fields == raw[raw.index(b"\r\n") + 2 : head_end(raw) + 2]


def test_response_hop_by_hop_lines_removed_exactly() -> None:
    raw = RESPONSES[[r[0] for r in RESPONSES].index("hop-by-hop")][1]
    head = response(raw)
    assert without(head.fields, head.drop) == b"Content-Length: 2\r\nX-Kept: 1\r\n"
    head = response(NGINX)
    assert without(head.fields, head.drop) == NGINX[17:-2].replace(
        b"Connection: keep-alive\r\n", b""
    )


RESPONSES_REJECTED: list[tuple[str, bytes]] = [
    # Codings other than chunked would reach the client unannounced (it gets plain chunked).
    ("gzip-chunked", resp(b"HTTP/1.1 200 OK", b"Transfer-Encoding: gzip, chunked")),
    ("te-not-chunked", resp(b"HTTP/1.1 200 OK", b"Transfer-Encoding: gzip")),
    ("te-chunked-gzip", resp(b"HTTP/1.1 200 OK", b"Transfer-Encoding: chunked, gzip")),
    ("cl-and-te", resp(b"HTTP/1.1 200 OK", b"Content-Length: 3", b"Transfer-Encoding: chunked")),
    ("cl-twice", resp(b"HTTP/1.1 200 OK", b"Content-Length: 3", b"Content-Length: 3")),
    ("cl-twice-different", resp(b"HTTP/1.1 200 OK", b"Content-Length: 3", b"Content-Length: 4")),
    ("cl-list", resp(b"HTTP/1.1 200 OK", b"Content-Length: 3, 3")),
    ("cl-negative", resp(b"HTTP/1.1 200 OK", b"Content-Length: -1")),
    ("te-twice", resp(b"HTTP/1.1 200 OK", TE, TE)),
    ("te-empty-element", resp(b"HTTP/1.1 200 OK", b"Transfer-Encoding: chunked,")),
    ("te-in-http10", resp(b"HTTP/1.0 200 OK", b"Transfer-Encoding: chunked")),
    ("invalid-name", resp(b"HTTP/1.1 200 OK", b"Bad Name: 1", b"Content-Length: 0")),
    ("space-before-colon", resp(b"HTTP/1.1 200 OK", b"Content-Length : 0")),
    ("obs-fold", resp(b"HTTP/1.1 200 OK", b"X-A: 1", b" 2", b"Content-Length: 0")),
    ("nul", resp(b"HTTP/1.1 200 OK", b"X-A: \x00", b"Content-Length: 0")),
    ("bare-lf", b"HTTP/1.1 200 OK\r\nX-A: 1\nContent-Length: 0\r\n\r\n"),
    ("bare-cr", b"HTTP/1.1 200 OK\r\nX-A: 1\rContent-Length: 0\r\n\r\n"),
    ("http20", resp(b"HTTP/2.0 200 OK", b"Content-Length: 0")),
    ("http09", resp(b"HTTP/0.9 200 OK", b"Content-Length: 0")),
    ("lowercase-http", resp(b"http/1.1 200 OK", b"Content-Length: 0")),
    ("status-099", resp(b"HTTP/1.1 099 Low", b"Content-Length: 0")),
    ("status-600", resp(b"HTTP/1.1 600 High", b"Content-Length: 0")),
    ("status-2-digits", resp(b"HTTP/1.1 20 OK", b"Content-Length: 0")),
    ("status-4-digits", resp(b"HTTP/1.1 2000 OK", b"Content-Length: 0")),
    ("control-in-reason", resp(b"HTTP/1.1 200 O\x01K", b"Content-Length: 0")),
]  # fmt: skip


@pytest.mark.parametrize(
    "raw", [r for _, r in RESPONSES_REJECTED], ids=[i for i, _ in RESPONSES_REJECTED]
)
def test_response_rejected(raw: bytes) -> None:
    with pytest.raises(ProtocolError) as err:
        response(raw)
    assert err.value.status == 502


# ---------------------------------------------------------------------------------------------
# the fast paths give exactly what the general path gives


def general_request(raw: bytes) -> Any:
    end = head_end(raw)
    try:
        return summary(h1._parse_request(raw, end, *LIMITS.values()), REQUEST_FIELDS)
    except ProtocolError as exc:
        return exc.status


def any_request(raw: bytes) -> Any:
    try:
        return summary(parse_request(raw, head_end(raw), **LIMITS), REQUEST_FIELDS)
    except ProtocolError as exc:
        return exc.status


def general_response(raw: bytes, method: bytes) -> Any:
    try:
        return summary(h1._parse_response(raw, head_end(raw), method), RESPONSE_FIELDS)
    except ProtocolError as exc:
        return exc.status


def any_response(raw: bytes, method: bytes) -> Any:
    try:
        return summary(parse_response(raw, head_end(raw), request_method=method), RESPONSE_FIELDS)
    except ProtocolError as exc:
        return exc.status


def test_fast_paths_are_taken() -> None:
    raw = ACCEPTED[0][1]
    assert h1._FAST_REQUEST.fullmatch(raw, 0, len(raw)) is not None
    assert h1._FAST_RESPONSE.fullmatch(NGINX) is not None


# ---------------------------------------------------------------------------------------------
# chunked bodies

NEXT = b"GET /next HTTP/1.1\r\n"  # a pipelined request after the body

CHUNKED_OK: list[tuple[str, bytes, bytes]] = [
    ("one-chunk", b"5\r\nhello\r\n0\r\n\r\n", b"hello"),
    ("empty", b"0\r\n\r\n", b""),
    ("hex-sizes", b"a\r\n0123456789\r\nA\r\nabcdefghij\r\n0\r\n\r\n", b"0123456789abcdefghij"),
    ("leading-zeros", b"0000000000000003\r\nabc\r\n000\r\n\r\n", b"abc"),
    ("ext-token", b"3;foo\r\nabc\r\n0;bar\r\n\r\n", b"abc"),
    ("ext-token-value", b"3;foo=bar;baz=1\r\nabc\r\n0\r\n\r\n", b"abc"),
    ("ext-quoted", b'3;foo="a b;c=\\"d\\""\r\nabc\r\n0\r\n\r\n', b"abc"),
    ("trailers", b"3\r\nabc\r\n0\r\nX-Checksum: 123\r\nX-Empty:\r\n\r\n", b"abc"),
    ("crlf-in-data", b"4\r\n\r\n\r\n\r\n0\r\n\r\n", b"\r\n\r\n"),
    ("binary", b"3\r\n\x00\xff\n\r\n0\r\n\r\n", b"\x00\xff\n"),
]

CHUNKED_BAD: list[tuple[str, bytes]] = [
    ("non-hex-size", b"g\r\nabc\r\n0\r\n\r\n"),
    ("no-size", b"\r\nabc\r\n0\r\n\r\n"),
    ("negative-size", b"-3\r\nabc\r\n0\r\n\r\n"),
    ("0x-size", b"0x3\r\nabc\r\n0\r\n\r\n"),
    ("size-overflow", b"10000000000000000\r\n"),  # 17 hex digits
    ("space-before-size", b" 3\r\nabc\r\n0\r\n\r\n"),
    ("space-after-size", b"3 \r\nabc\r\n0\r\n\r\n"),
    ("space-before-ext", b"3 ;a\r\nabc\r\n0\r\n\r\n"),
    ("ext-empty", b"3;\r\nabc\r\n0\r\n\r\n"),
    ("ext-empty-value", b"3;a=\r\nabc\r\n0\r\n\r\n"),
    ("ext-unterminated-quote", b'3;a="b\r\nabc\r\n0\r\n\r\n'),
    ("ext-control", b"3;a=\x01\r\nabc\r\n0\r\n\r\n"),
    ("missing-crlf-after-data", b"3\r\nabcX"),
    ("lf-after-data", b"3\r\nabc\n0\r\n\r\n"),
    ("cr-only-after-data", b"3\r\nabc\rX"),
    ("data-longer-than-size", b"3\r\nabcd\r\n0\r\n\r\n"),
    ("lf-only-size-line", b"3\nabc\r\n0\r\n\r\n"),
    ("bare-cr-in-size-line", b"3\r;a\r\nabc\r\n0\r\n\r\n"),
    ("lf-only-last-chunk", b"0\n\r\n"),
    ("lf-only-end", b"0\r\n\n"),
    ("invalid-trailer-name", b"0\r\nBad Trailer: 1\r\n\r\n"),
    ("trailer-without-colon", b"0\r\nX-T\r\n\r\n"),
    ("trailer-obs-fold", b"0\r\nX-T: 1\r\n 2\r\n\r\n"),
    ("trailer-lf-only", b"0\r\nX-T: 1\n\r\n"),
    ("chunk-line-too-long", b"3;" + b"a" * (h1.MAX_CHUNK_LINE + 10)),
    ("trailer-content-length", b"0\r\nContent-Length: 3\r\n\r\n"),
    ("trailer-transfer-encoding", b"0\r\ntransfer-encoding: chunked\r\n\r\n"),
    ("trailer-host", b"0\r\nHost: evil\r\n\r\n"),
    ("trailer-line-too-long", b"0\r\nX-T: " + b"a" * (h1.MAX_CHUNK_LINE + 10)),
]


def scan_whole(body: bytes, start: int = 0) -> tuple[int, bytes]:
    payload: list[bytes] = []
    scanner = ChunkedScanner(payload=payload)
    end = scanner.feed(body, start)
    assert scanner.done == (end >= 0)
    return end, b"".join(payload)


def scan_pieces(pieces: list[bytes]) -> tuple[int, bytes]:
    """Feed the pieces in turn; the end offset counted from the first piece's start."""
    payload: list[bytes] = []
    scanner = ChunkedScanner(payload=payload)
    offset = 0
    for piece in pieces:
        end = scanner.feed(piece)
        if end >= 0:
            return offset + end, b"".join(payload)
        offset += len(piece)
    return -1, b"".join(payload)


@pytest.mark.parametrize(
    ("body", "data"), [c[1:] for c in CHUNKED_OK], ids=[c[0] for c in CHUNKED_OK]
)
def test_chunked_valid_at_every_split(body: bytes, data: bytes) -> None:
    stream = b"PREFIX" + body + NEXT
    assert scan_whole(stream, 6) == (6 + len(body), data)
    assert stream[6 + len(body) :] == NEXT
    whole = body + NEXT
    assert scan_pieces([whole]) == (len(body), data)
    for k in range(len(whole) + 1):
        assert scan_pieces([whole[:k], whole[k:]]) == (len(body), data), k
    assert scan_pieces([whole[i : i + 1] for i in range(len(whole))]) == (len(body), data)
    # without `payload` nothing is collected, the end is the same
    scanner = ChunkedScanner()
    assert scanner.feed(whole) == len(body) and scanner.payload is None
    assert scanner.feed(b"more", 1) == 1  # once done, a feed consumes nothing


@pytest.mark.parametrize("body", [c[1] for c in CHUNKED_BAD], ids=[c[0] for c in CHUNKED_BAD])
def test_chunked_invalid_whole_and_byte_by_byte(body: bytes) -> None:
    for status in (400, 502):
        with pytest.raises(ProtocolError) as err:
            ChunkedScanner(status=status).feed(body)
        assert err.value.status == status
    scanner = ChunkedScanner()
    with pytest.raises(ProtocolError):
        for i in range(len(body)):
            scanner.feed(body[i : i + 1])


def test_chunked_errors_are_found_without_waiting() -> None:
    """The missing CRLF after chunk data is an error at once, not when a LF turns up later."""
    scanner = ChunkedScanner()
    assert scanner.feed(b"3\r\nabc") == -1
    with pytest.raises(ProtocolError):
        scanner.feed(b"X")
    scanner = ChunkedScanner()
    with pytest.raises(ProtocolError):
        scanner.feed(b"1;" + b"a" * h1.MAX_CHUNK_LINE)  # no LF yet, already too long
    for pieces in ([b"3;a\rb"], [b"3", b";a\r", b"b"], [b"0\r\nX-T: 1\r", b"2"]):
        scanner = ChunkedScanner()  # a CR that is not followed by LF
        with pytest.raises(ProtocolError):
            for piece in pieces:
                assert scanner.feed(piece) == -1


def test_chunked_incomplete() -> None:
    for body in (b"", b"5", b"5\r", b"5\r\nhel", b"5\r\nhello", b"5\r\nhello\r\n0\r\n",
                 b"5\r\nhello\r\n0\r\nX-T: 1\r\n", b"5\r\nhello\r\n0\r\n\r"):  # fmt: skip
        assert scan_whole(body)[0] == -1, body


# ---------------------------------------------------------------------------------------------
# differential: llhttp (httptools, strict by default) on the same bytes


class _Collector:
    def __init__(self) -> None:
        self.body: list[bytes] = []
        self.complete_at: int | None = None
        self.pos = 0

    def on_body(self, body: bytes) -> None:
        if self.complete_at is None:
            self.body.append(body)

    def on_message_complete(self) -> None:
        if self.complete_at is None:
            self.complete_at = self.pos


@dataclass(frozen=True)
class Outcome:
    verdict: str  # accept, reject, incomplete, upgrade (llhttp: the rest is not HTTP)
    body: bytes = b""
    end: int = -1  # where the next message starts


def llhttp(raw: bytes, parser_class: Any = httptools.HttpRequestParser) -> Outcome:
    """Fed a byte at a time, so that the end of the first message is known exactly."""
    collector = _Collector()
    parser = parser_class(collector)
    for i in range(len(raw)):
        collector.pos = i + 1
        try:
            parser.feed_data(raw[i : i + 1])
        except httptools.HttpParserUpgrade:
            return Outcome("upgrade")
        except httptools.HttpParserError:
            if collector.complete_at is None:
                return Outcome("reject")
        if collector.complete_at is not None:
            return Outcome("accept", b"".join(collector.body), collector.complete_at)
    return Outcome("incomplete")


def ours(raw: bytes) -> Outcome:
    """As the proxy frames it: the head, then Content-Length bytes or the chunked payload."""
    end = head_end(raw)
    try:
        if end < 0:
            check_partial_head(raw, 65536 + 8192)
            return Outcome("incomplete")
        head = parse_request(raw, end, **LIMITS)
        start = end + 4
        if head.chunked:
            payload: list[bytes] = []
            stop = ChunkedScanner(payload=payload).feed(raw, start)
            if stop < 0:
                return Outcome("incomplete")
            return Outcome("accept", b"".join(payload), stop)
    except ProtocolError:
        return Outcome("reject")
    stop = start + head.content_length
    if stop > len(raw):
        return Outcome("incomplete")
    return Outcome("accept", raw[start:stop], stop)


def justified(raw: bytes, mine: Outcome) -> str | None:
    """Why h1 may accept what llhttp refuses: the two documented differences. Undo each (any
    token as the method, RFC 9110 9.1, where llhttp knows a fixed list; HTTP/1.x with x > 1
    taken as HTTP/1.1, RFC 9110 2.5, where llhttp refuses) and llhttp must then agree."""
    end = head_end(raw)
    head = parse_request(raw, end, **LIMITS)
    start = raw.index(head.method)
    normal = raw[:start] + b"PUT" + raw[start + len(head.method) :]
    shift = 3 - len(head.method)
    normal = re.sub(rb"HTTP/1\.[2-9]\r\n", b"HTTP/1.1\r\n", normal, count=1)
    theirs = llhttp(normal)
    if theirs.verdict == "upgrade" or theirs == Outcome(mine.verdict, mine.body, mine.end + shift):
        return "method or minor version"
    return None


INTERESTING = [
    b"\r", b"\n", b"\r\n", b"\t", b" ", b":", b",", b";", b"0", b"1", b"a", b"f", b"-",
    b"\x00", b"\x0b", b'"', b"=", b"chunked", b"content-length", b"transfer-encoding",
    b"Transfer-Encoding: chunked\r\n", b"Content-Length: 3\r\n", b"\r\n\r\n", b"host",
    b"HTTP/1.1", b"\xff", b"#", b"@", b"/", b"close", b"keep-alive",
]  # fmt: skip


def mutate(seeds: list[bytes], seed: int, count: int) -> list[bytes]:
    """Seeded random variants: 1-3 inserts, deletes or replacements of interesting bytes, half
    the time only in the body (chunk framing), else anywhere."""
    rng = random.Random(seed)
    out = []
    while len(out) < count:
        raw = bytearray(rng.choice(seeds))
        low = head_end(bytes(raw)) + 4 if rng.random() < 0.5 else 0
        for _ in range(rng.randint(1, 3)):
            pos = rng.randint(min(low, len(raw)), len(raw))
            op = rng.random()
            if op < 0.45:
                raw[pos:pos] = rng.choice(INTERESTING)
            elif op < 0.75:
                del raw[pos : pos + rng.randint(1, 3)]
            else:
                raw[pos : pos + 1] = rng.choice(INTERESTING)
        out.append(bytes(raw))
    return out


def mutations(seed: int, count: int) -> list[bytes]:
    seeds = [raw for _, raw, _ in ACCEPTED] + [
        req(b"POST / HTTP/1.1", H, b"Transfer-Encoding: chunked", body=body)
        for _, body, _ in CHUNKED_OK
    ]
    seeds.append(req(b"POST / HTTP/1.1", H, b"Content-Length: 3", body=b"abcdef"))
    return mutate(seeds, seed, count)


DIFFERENTIAL = (
    [raw for _, raw, _ in ACCEPTED]
    + [raw for _, raw, _ in REJECTED]
    + [body for _, body in [(i, req(b"POST / HTTP/1.1", H, b"Transfer-Encoding: chunked", body=b))
                            for i, b, _ in CHUNKED_OK]]
    + [req(b"POST / HTTP/1.1", H, b"Transfer-Encoding: chunked", body=b) for _, b in CHUNKED_BAD]
    + mutations(seed=5, count=600)
)  # fmt: skip


def compare(raw: bytes) -> tuple[str, Outcome, Outcome]:
    """(how they relate, ours, llhttp's); raises AssertionError on an unsafe disagreement."""
    mine, theirs = ours(raw), llhttp(raw)
    if mine.verdict == "reject":
        return ("stricter" if theirs.verdict in ("accept", "upgrade") else "same"), mine, theirs
    if mine.verdict == "incomplete":
        assert theirs.verdict != "accept", f"llhttp ended a message h1 waits on: {raw!r}"
        return "same", mine, theirs
    if theirs.verdict == "upgrade":
        return "same", mine, theirs  # the head is accepted by both; llhttp stops there
    if theirs == mine:
        return "same", mine, theirs
    why = justified(raw, mine)
    assert why is not None, f"h1 {mine} but llhttp {theirs}: {raw!r}"
    return "justified", mine, theirs


def test_differential_against_llhttp() -> None:
    kinds: dict[str, int] = {}
    bodies = 0
    for raw in DIFFERENTIAL:
        kind, mine, theirs = compare(raw)
        kinds[kind] = kinds.get(kind, 0) + 1
        bodies += kind == "same" and theirs.verdict == "accept" and mine.body != b""
    # the run is not vacuous: many both refuse, many both accept with the same body
    assert kinds["same"] > 400 and kinds.get("stricter", 0) > 10 and bodies > 50, (kinds, bodies)


def test_fast_and_general_paths_agree() -> None:
    for raw in DIFFERENTIAL:
        if head_end(raw) >= 0:
            assert any_request(raw) == general_request(raw), raw
    responses = [raw for _, raw, *_ in RESPONSES] + [raw for _, raw in RESPONSES_REJECTED]
    rng = random.Random(7)
    for _ in range(400):
        raw = bytearray(rng.choice(responses[:1] + responses))
        pos = rng.randint(0, head_end(bytes(raw)))
        raw[pos:pos] = rng.choice(
            [b" ", b"\t", b",", b"close", b"keep-alive", b"1", b"\r\n", b"x",
             b"Connection: close\r\n", b"Content-Length: 1\r\n"]
        )  # fmt: skip
        responses.append(bytes(raw))
    for raw in responses:
        if head_end(raw) >= 0:
            for method in (b"GET", b"HEAD", b"CONNECT"):
                assert any_response(raw, method) == general_response(raw, method), raw


# responses: llhttp's response parser after a GET


def llhttp_response(raw: bytes) -> Outcome:
    return llhttp(raw, httptools.HttpResponseParser)


def ours_response(raw: bytes) -> Outcome:
    end = head_end(raw)
    if end < 0:
        return Outcome("incomplete")
    try:
        head = parse_response(raw, end, request_method=b"GET")
        start = end + 4
        if head.framing == CHUNKED:
            payload: list[bytes] = []
            stop = ChunkedScanner(status=502, payload=payload).feed(raw, start)
            if stop < 0:
                return Outcome("incomplete")
            return Outcome("accept", b"".join(payload), stop)
    except ProtocolError:
        return Outcome("reject")
    if head.framing == CLOSE:
        return Outcome("incomplete")  # the body ends with the connection
    if head.framing == NO_BODY:
        return Outcome("upgrade" if head.status == 101 else "accept", b"", start)
    stop = start + head.content_length
    if stop > len(raw):
        return Outcome("incomplete")
    return Outcome("accept", raw[start:stop], stop)


def response_mutations(seed: int, count: int) -> list[bytes]:
    seeds = [
        NGINX + b"0123456789abcdefg" + b"HTTP/1.1 204 No Content\r\n\r\n",
        resp(b"HTTP/1.1 200 OK", b"Transfer-Encoding: chunked") + b"3;x=y\r\nabc\r\n0\r\n\r\n",
        resp(b"HTTP/1.0 200 OK", b"Content-Length: 3", b"Connection: keep-alive") + b"abc",
        resp(b"HTTP/1.1 100 Continue") + resp(b"HTTP/1.1 200 OK", b"Content-Length: 0"),
        resp(b"HTTP/1.1 304 Not Modified", b"ETag: x"),
        resp(b"HTTP/1.1 200 OK", b"Content-Type: text/plain") + b"until the close",
    ]
    return mutate(seeds, seed, count)


RESPONSE_DIFFERENTIAL = response_mutations(seed=9, count=400)


def test_response_differential_against_llhttp() -> None:
    """h1 never takes a response llhttp refuses, except HTTP/1.x with x > 1 (as HTTP/1.1), and
    where both take one they agree on its body and on where the next response starts."""
    same = bodies = 0
    for raw in RESPONSE_DIFFERENTIAL:
        mine, theirs = ours_response(raw), llhttp_response(raw)
        if mine.verdict == "reject" or mine == theirs:
            same += mine == theirs
            bodies += mine == theirs and mine.body != b""
            continue
        if mine.verdict == "incomplete":
            assert theirs.verdict != "accept", f"llhttp ended a response h1 waits on: {raw!r}"
            continue
        normal = re.sub(rb"^HTTP/1\.[2-9] ", b"HTTP/1.1 ", raw)
        assert normal != raw and llhttp_response(normal) == mine, (raw, mine, theirs)
    assert same > 200 and bodies > 30, (same, bodies)

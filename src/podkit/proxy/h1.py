"""HTTP/1.1 message framing with no I/O (RFC 9112), strict where strictness stops request
smuggling: the proxy's own parser, as in h11 a plain core that takes bytes and returns decisions.

Why not llhttp (httptools): its per-header callbacks into Python cost more than everything else
the proxy does for a small request. Here a head is checked by a few compiled regular expressions
that run in C over the whole head at once, and the header block is forwarded as received, minus
the lines a proxy must drop. The commonest heads (a GET with Host first and no other field the
proxy acts on; a response with Content-Length and at most Connection) are recognised by one
regular expression each; anything else takes the general path, which gives the same result.

What is refused (ProtocolError with the status to answer):
- a head that is not CRLF-delimited lines (bare LF or CR, obs-fold, NUL or other controls);
- header names that are not tokens, whitespace before the colon;
- Content-Length that is not plain digits, repeated Content-Length (even with equal values),
  Content-Length together with Transfer-Encoding, Transfer-Encoding repeated, not a plain list
  of tokens, or not ending in chunked (requests: 400; codings before chunked: 501), and
  Transfer-Encoding in an HTTP/1.0 message (RFC 9112 6.1: its framing is faulty);
- invalid chunk sizes or extensions (no whitespace inside a chunk line, as llhttp), chunk data
  not ended by CRLF;
- more than one Host, none in HTTP/1.1, one that is not a valid authority, or one that differs
  from the authority of an absolute-form target;
- request targets other than origin-form ("/..."), absolute-form ("scheme://authority/..."
  without userinfo), "*" (OPTIONS only) and authority-form (CONNECT only); a "#" in a target;
- versions with a major other than 1 (505); HTTP/1.x with x > 1 is taken as HTTP/1.1, the
  highest minor version this side implements (RFC 9110 2.5);
- request lines longer than max_request_line (414); header fields over max_head bytes or
  max_headers lines (431).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

_TCHAR = rb"[!#$%&'*+.^_`|~0-9A-Za-z-]"
TOKEN = _TCHAR + rb"+"
# A field line: a token, a colon, then visible characters, obs-text, spaces and tabs.
_VALUE = rb"[^\x00-\x08\x0a-\x1f\x7f]*+"
_LINE = _TCHAR + rb"++:" + _VALUE + rb"\r\n"
_FIELDS = re.compile(rb"(?:" + _LINE + rb")*+")
_FIELD_LINE = re.compile(TOKEN + rb":[^\x00-\x08\x0a-\x1f\x7f]*")
# A target: visible ASCII but "#" (a fragment is no part of a request-target; routing on a path
# with one in it is CVE-2023-45539 in HAProxy).
_TARGET_CHAR = rb"[\x21\x22\x24-\x7e]"
_TARGET = _TARGET_CHAR + rb"++"
_REQUEST_LINE = re.compile(rb"(" + TOKEN + rb") (" + _TARGET + rb") HTTP/([0-9])\.([0-9])\r\n")
_ANY_REQUEST_LINE = re.compile(rb"[^ \r\n]+ [^ \r\n]+ HTTP/[0-9]\.[0-9]\r\n")
_STATUS_LINE = re.compile(rb"HTTP/([0-9])\.([0-9]) ([0-9]{3})(?: [\t\x20-\x7e\x80-\xff]*+)?\r\n")
_AUTHORITY_RE = rb"[A-Za-z0-9._~!$&'()*+,;=%-]*+(?::[0-9]*+)?|\[[0-9A-Fa-f:.]++\](?::[0-9]*+)?"
_AUTHORITY = re.compile(_AUTHORITY_RE)
# absolute-form: http or https only (this is an HTTP proxy; llhttp, too, refuses odd schemes)
_ABSOLUTE_FORM = re.compile(rb"[Hh][Tt][Tt][Pp][Ss]?://([^/]*)(?:/.*)?", re.S)
_CONNECT_TARGET = re.compile(rb"(?:[A-Za-z0-9._~!$&'()*+,;=%-]++|\[[0-9A-Fa-f:.]++\]):[0-9]++")

_REQUEST_SPECIAL_NAMES = (
    rb"host|content-length|transfer-encoding|connection|keep-alive|proxy-connection|te|"
    rb"trailer|upgrade|expect|x-request-id|x-forwarded-for|x-forwarded-proto|x-forwarded-host|"
    rb"forwarded|x-real-ip|proxy-authorization"
)
_RESPONSE_SPECIAL_NAMES = (
    rb"content-length|transfer-encoding|connection|keep-alive|proxy-connection|te|trailer|upgrade"
)
# Run over the lower-cased field lines, preceded by the "\n" ending the start line: the fields
# the proxy acts on. "\n" anchors each at a line start; the value is without leading OWS.
_REQUEST_SPECIAL = re.compile(rb"\n(" + _REQUEST_SPECIAL_NAMES + rb"):[ \t]*+([^\r]*)\r")
_RESPONSE_SPECIAL = re.compile(rb"\n(" + _RESPONSE_SPECIAL_NAMES + rb"):[ \t]*+([^\r]*)\r")

# The fast paths: one regular expression for a whole common head, with the fields above
# excluded by a lookahead at each line start (any of them sends the head to the general path).
_PLAIN_REQUEST_LINE = rb"(?!(?i:" + _REQUEST_SPECIAL_NAMES + rb"):)" + _LINE
_PLAIN_RESPONSE_LINE = rb"(?!(?i:" + _RESPONSE_SPECIAL_NAMES + rb"):)" + _LINE
_FAST_REQUEST = re.compile(
    rb"(" + TOKEN + rb") (/" + _TARGET_CHAR + rb"*+) HTTP/1\.([01])\r\n"
    rb"(?i:host):[ \t]*+(" + _AUTHORITY_RE + rb")[ \t]*+\r\n"
    rb"(?:" + _PLAIN_REQUEST_LINE + rb")*+\r\n"
)
_FAST_RESPONSE = re.compile(
    rb"(HTTP/1\.1 ([1-5][0-9][0-9])(?: [\t\x20-\x7e\x80-\xff]*+)?\r\n)"
    rb"(?:" + _PLAIN_RESPONSE_LINE + rb")*+"
    rb"(?i:content-length):[ \t]*+([0-9]{1,18}+)[ \t]*+\r\n"
    rb"(?:" + _PLAIN_RESPONSE_LINE + rb")*+"
    rb"(?:((?i:connection):[ \t]*+(?:(?i:keep-alive)|((?i:close)))[ \t]*+\r\n)"
    rb"(?:" + _PLAIN_RESPONSE_LINE + rb")*+)?\r\n"
)
# status code -> (status, whether a response with it never has a body: 1xx, 204, 304)
_CODES = {b"%d" % c: (c, c < 200 or c == 204 or c == 304) for c in range(100, 600)}

_CHUNK_LINE = re.compile(
    rb"([0-9A-Fa-f]{1,16}+)(?:;" + TOKEN + rb"(?:=(?:" + TOKEN
    + rb'|"(?:[^"\\\x00-\x08\x0a-\x1f\x7f]|\\[\t\x20-\x7e\x80-\xff])*+"))?)*+\r\n'
)  # fmt: skip
_TRAILER_LINE = re.compile(rb"(" + TOKEN + rb"):[^\x00-\x08\x0a-\x1f\x7f]*+\r\n")

_TOKEN = re.compile(TOKEN)
_ANY_FIELD = re.compile(rb"\n([^:]*):[^\r]*\r")  # over lowered fields, as _REQUEST_SPECIAL

# Fields never forwarded: hop-by-hop (RFC 9110 7.6.1) plus Trailer (trailers are the sender's
# business with the next hop), and the X-Forwarded-* the proxy writes itself.
HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"transfer-encoding",
     b"upgrade"}
)  # fmt: skip
FORWARDED = frozenset({b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host"})
# Never in trailers: fields that frame or route a message, and hop-by-hop ones (RFC 9110 6.5.1);
# a recipient that merged one into the header section would see another message than we did.
_NOT_TRAILERS = HOP_BY_HOP | {b"content-length", b"host"}

# Connection may name fields to drop, but never these: dropping one would change the framing
# or the routing the upstream sees from what the proxy saw.
_NOT_DROPPABLE = frozenset({b"close", b"keep-alive", b"upgrade", b"host", b"content-length"})

# How a response body ends.
NO_BODY, LENGTH, CHUNKED, CLOSE = range(4)

MAX_CHUNK_LINE = 4096  # a chunk-size line with its extensions, or one trailer line


class ProtocolError(Exception):
    """The peer broke HTTP/1.1: answer `status` (to a client) and close the connection."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class RequestHead:
    """A parsed request head. Read-only by convention (callers cache and share heads): the
    defaults are class attributes and a parse sets only what differs, which is cheaper than
    sixteen assignments per request."""

    method = b""
    target = b""
    version = b"1.1"
    fields = b""  # header lines as received, each ending in CRLF
    host = b""
    content_length = 0
    chunked = False
    keep_alive = True
    expect_continue = False
    upgrade: bytes | None = None  # the Upgrade value of an HTTP/1.1 Connection: upgrade request
    request_id: bytes | None = None
    xff: bytes | None = None
    xfp: bytes | None = None
    xfh: bytes | None = None
    # (start, end) spans of `fields` the proxy drops, sorted: hop-by-hop, X-Forwarded-*, and
    # fields named by Connection; an empty tuple when there are none
    drop: Sequence[tuple[int, int]] = ()
    conn_tokens: Sequence[bytes] = ()  # other fields named by Connection (hop-by-hop too)
    # spans of Forwarded and X-Real-IP (kept from trusted clients only, as X-Forwarded-*), and
    # of Proxy-Authorization (for this hop: forwarded only where a route asks)
    client_forwarded: Sequence[tuple[int, int]] = ()
    proxy_authorization: Sequence[tuple[int, int]] = ()


class ResponseHead:
    """A parsed response head; read-only by convention, defaults as in RequestHead."""

    status = 0
    version = b"1.1"
    status_line = b""  # "HTTP/1.1 200 OK\r\n" as the client gets it
    fields = b""
    content_length = -1  # -1: none given
    framing = NO_BODY
    keep_alive = True
    upgrade: bytes | None = None
    drop: Sequence[tuple[int, int]] = ()
    conn_tokens: Sequence[bytes] = ()


def head_end(buf: bytes | bytearray, start: int = 0) -> int:
    """Index of the CRLFCRLF ending a head that starts at `start`, or -1 while incomplete."""
    return buf.find(b"\r\n\r\n", start)


def check_partial_head(
    buf: bytes | bytearray, max_bytes: int, *, max_request_line: int | None = None
) -> None:
    """An incomplete head: refuse early what can never become valid (and stop a slow flood).
    With `max_request_line`, a request line that has already grown past it answers 414."""
    n = len(buf)
    if (
        max_request_line is not None
        and n >= max_request_line + 2
        and buf.find(b"\r\n", 0, max_request_line + 2) < 0
    ):
        raise ProtocolError(414, "request line too long")
    if n > max_bytes:
        raise ProtocolError(431, "request header fields too large")
    crlf = buf.count(b"\r\n")
    if buf.count(b"\n") != crlf:
        raise ProtocolError(400, "bare LF in the request head (lines must end in CRLF)")
    if buf.count(b"\r") != crlf + (buf[-1:] == b"\r"):
        raise ProtocolError(400, "bare CR in the request head (lines must end in CRLF)")


def _tokens(value: bytes) -> list[bytes]:
    """A lower-cased comma-separated list, empty elements ignored (RFC 9110 5.6.1)."""
    return [t for t in (t.strip(b" \t") for t in value.lower().split(b",")) if t]


def _codings(value: bytes) -> list[bytes] | None:
    """Transfer-Encoding's codings, lower-cased; None unless it is a plain list of tokens with
    no empty element and no tab (llhttp takes neither "chunked," nor "chunked<TAB>" as
    chunked: refusing both keeps the two from ever disagreeing on chunked)."""
    if b"\t" in value:
        return None
    codings = [t.strip(b" \t") for t in value.lower().split(b",")]
    for coding in codings:
        if _TOKEN.fullmatch(coding) is None:
            return None
    return codings


def _too_large(buf: bytes, max_request_line: int) -> ProtocolError:
    line_end = buf.find(b"\r\n")
    if line_end > max_request_line:
        return ProtocolError(414, "request line too long")
    return ProtocolError(431, "request header fields too large")


def parse_request(
    buf: bytes, end: int, *, max_request_line: int, max_headers: int, max_head: int
) -> RequestHead:
    """The head in buf[:end + 4] (end from head_end). Raises ProtocolError.

    max_request_line bounds the request line without its CRLF (414); max_head the header
    lines after it with their CRLFs, and max_headers their number (431)."""
    if type(buf) is not bytes:
        buf = bytes(buf[: end + 4])
    # A head shorter than every limit is within them all (a field line has at least 4 bytes).
    if end < max_request_line and end < max_head and end < 4 * max_headers:
        m = _FAST_REQUEST.fullmatch(buf, 0, end + 4)
        if m is not None:
            method, target, minor, host = m.groups()
            if method != b"CONNECT":  # CONNECT takes an authority, not a path
                head = RequestHead()
                head.method = method
                head.target = target
                head.host = host
                head.fields = buf[m.end(3) + 2 : end + 2]
                if minor == b"0":
                    head.version = b"1.0"
                    head.keep_alive = False
                return head
    return _parse_request(buf, end, max_request_line, max_headers, max_head)


def _parse_request(
    buf: bytes, end: int, max_request_line: int, max_headers: int, max_head: int
) -> RequestHead:
    if end > max_head + max_request_line:
        raise _too_large(buf, max_request_line)
    # RFC 9112 2.2: ignore one empty line before the request line (old clients sent a CRLF
    # after a POST body); llhttp ignores them too.
    line_start = 2 if buf[:2] == b"\r\n" else 0
    m = _REQUEST_LINE.match(buf, line_start)
    if m is None:
        line_end = buf.find(b"\r\n", line_start)
        if line_end - line_start > max_request_line:
            raise ProtocolError(414, "request line too long")
        if _ANY_REQUEST_LINE.match(buf, line_start) is not None:
            if re.match(rb"[^ ]+ [^ ]+ HTTP/1\.", buf[line_start:]) is None:
                raise ProtocolError(505, "only HTTP/1.0 and HTTP/1.1 are supported")
            if b"#" in buf[line_start:line_end]:
                raise ProtocolError(400, "a fragment (#) in the request target")
        raise ProtocolError(400, "invalid request line")
    fields_start = m.end()
    if fields_start - line_start - 2 > max_request_line:
        raise ProtocolError(414, "request line too long")
    method, target, major, minor = m.groups()
    if major != b"1":
        raise ProtocolError(505, "only HTTP/1.0 and HTTP/1.1 are supported")
    v11 = minor != b"0"
    fields_end = end + 2
    if fields_end - fields_start > max_head:
        raise ProtocolError(431, "request header fields too large")
    if _FIELDS.fullmatch(buf, fields_start, fields_end) is None:
        raise ProtocolError(400, _field_problem(buf[fields_start:fields_end]))
    fields = buf[fields_start:fields_end]
    if fields.count(b"\r\n") > max_headers:
        raise ProtocolError(431, "too many header fields")
    authority = _target_authority(method, target)
    head = RequestHead()
    head.method = method
    head.target = target
    head.fields = fields
    if not v11:
        head.version = b"1.0"
    base = fields_start - 1  # `lowered` starts at the "\n" ending the request line
    lowered = buf[base:fields_end].lower()
    hosts = 0
    lengths = 0
    te: bytes | None = None
    connection: list[bytes] = []
    drop: list[tuple[int, int]] = []
    upgrade: bytes | None = None
    client_forwarded: list[tuple[int, int]] = []
    for sm in _REQUEST_SPECIAL.finditer(lowered):
        name = sm[1]
        start, stop = sm.span(2)
        if name == b"forwarded" or name == b"x-real-ip":
            client_forwarded.append(sm.span())
        elif name == b"proxy-authorization":
            head.proxy_authorization = (*head.proxy_authorization, sm.span())
        elif name == b"host":
            hosts += 1
            head.host = buf[base + start : base + stop].rstrip(b" \t")
        elif name == b"content-length":
            lengths += 1
            value = sm[2].rstrip(b" \t")
            if not value.isdigit() or len(value) > 18:
                raise ProtocolError(400, "invalid Content-Length")
            head.content_length = int(value)
        elif name == b"x-request-id":
            value = buf[base + start : base + stop].rstrip(b" \t")
            if value:
                head.request_id = value
            else:
                drop.append(sm.span())  # an empty one: the proxy generates its own
        elif name == b"expect":
            head.expect_continue = v11 and sm[2].rstrip(b" \t") == b"100-continue"
        elif name in FORWARDED:
            value = buf[base + start : base + stop].rstrip(b" \t")
            if name == b"x-forwarded-for":
                head.xff = value if head.xff is None else head.xff + b", " + value
            elif name == b"x-forwarded-proto":
                head.xfp = value
            else:
                head.xfh = value
            drop.append(sm.span())
        else:
            if name == b"transfer-encoding":
                if te is not None:
                    raise ProtocolError(400, "Transfer-Encoding given twice")
                te = sm[2]
            elif name == b"connection":
                connection += _tokens(sm[2])
            elif name == b"upgrade":
                upgrade = buf[base + start : base + stop].rstrip(b" \t")
            drop.append(sm.span())
    if hosts > 1:
        raise ProtocolError(400, "more than one Host header")
    if hosts:
        if _AUTHORITY.fullmatch(head.host) is None:
            raise ProtocolError(400, "invalid Host header")
        if authority is not None and head.host.lower() != authority.lower():
            # RFC 9112 3.2.2 has the target win; the proxy and the upstream must not see two
            # different hosts, so refuse rather than pick one (as HAProxy does)
            raise ProtocolError(400, "Host header differs from the request target's authority")
    elif v11:
        raise ProtocolError(400, "missing Host header")
    elif authority is not None:
        head.host = authority
    if lengths > 1:
        raise ProtocolError(400, "more than one Content-Length")
    if te is not None:
        if not v11:
            raise ProtocolError(400, "Transfer-Encoding in an HTTP/1.0 request")
        if lengths:
            raise ProtocolError(400, "both Content-Length and Transfer-Encoding")
        codings = _codings(te)
        if codings is None or codings[-1] != b"chunked" or codings.count(b"chunked") > 1:
            raise ProtocolError(400, "Transfer-Encoding must end in chunked, once")
        if len(codings) > 1:
            # the proxy forwards the body re-framed as plain chunked: other codings would be lost
            raise ProtocolError(501, "transfer codings other than chunked are not supported")
        head.chunked = True
    if connection:
        if b"close" in connection or not (v11 or b"keep-alive" in connection):
            head.keep_alive = False
        extra = [t for t in connection if t not in _NOT_DROPPABLE and _TOKEN.fullmatch(t)]
        if extra:
            head.conn_tokens = extra
            _drop_named(lowered, extra, drop)
            if b"x-request-id" in extra:
                head.request_id = None  # dropped as hop-by-hop: the proxy makes its own
        # RFC 9110 7.8: an Upgrade in an HTTP/1.0 request is ignored. One with a body is sent
        # on as a plain request (HAProxy's rule): a server that declines the upgrade reads the
        # body as the request's, one that switches would read it as the new protocol's.
        body = head.chunked or head.content_length
        if upgrade and v11 and b"upgrade" in connection and not body:
            head.upgrade = upgrade
    elif not v11:
        head.keep_alive = False
    if drop:
        drop.sort()
        head.drop = drop
    if client_forwarded:
        head.client_forwarded = client_forwarded
    return head


def _target_authority(method: bytes, target: bytes) -> bytes | None:
    """Check the form of a request target (RFC 9112 3.2); the authority of an absolute-form."""
    if target[0] == 47:  # "/": origin-form
        if method == b"CONNECT":
            raise ProtocolError(400, "CONNECT needs an authority-form target (host:port)")
        return None
    if method == b"CONNECT":
        if _CONNECT_TARGET.fullmatch(target) is None:
            raise ProtocolError(400, "CONNECT needs an authority-form target (host:port)")
        return None
    if target == b"*":
        if method != b"OPTIONS":
            raise ProtocolError(400, "the target * is for OPTIONS only")
        return None
    m = _ABSOLUTE_FORM.fullmatch(target)
    if m is None:
        raise ProtocolError(400, "invalid request target")
    authority = m[1]
    if b"@" in authority:
        raise ProtocolError(400, "userinfo in the request target")  # RFC 9110 4.2.4
    if _AUTHORITY.fullmatch(authority) is None or authority[:1] in (b"", b":"):
        raise ProtocolError(400, "invalid authority in the request target")
    return authority


def _drop_named(lowered: bytes, names: Iterable[bytes], drop: list[tuple[int, int]]) -> None:
    """Add the lines of the named fields (those a Connection lists, or any) to `drop`: spans in
    the un-prefixed fields, in the order found. One pass over the lines, however many names."""
    wanted = set(names)
    have = set(drop)
    for m in _ANY_FIELD.finditer(lowered):
        if m[1] in wanted and m.span() not in have:
            drop.append(m.span())


def without_fields(fields: bytes, names: Sequence[bytes]) -> bytes:
    """`fields` minus every line of the named fields (lower-case names)."""
    drop: list[tuple[int, int]] = []
    _drop_named(b"\n" + fields.lower(), names, drop)
    return without(fields, drop)


def _field_problem(fields: bytes) -> str:
    for line in fields.split(b"\r\n")[:-1]:
        if line[:1] in (b" ", b"\t"):
            return "obsolete line folding in a header"
        if b"\n" in line or b"\r" in line:
            return "bare CR or LF in the request head"
        if _FIELD_LINE.fullmatch(line) is None:
            name = line.split(b":", 1)[0]
            if b":" not in line or _TOKEN.fullmatch(name) is None:
                return "invalid header name"
            return "invalid character in a header value"
    return "invalid header line"


def check_partial_response(buf: bytes, max_bytes: int) -> str | None:
    """An upstream's head still without its CRLFCRLF: why it can never become valid (a bare LF
    ends no head here, and waiting for one would only end in a timeout), or None."""
    if len(buf) > max_bytes:
        return "response head too large"
    if buf.count(b"\n") != buf.count(b"\r\n"):
        return "bare LF in the response head (lines must end in CRLF)"
    return None


def parse_response(buf: bytes, end: int, *, request_method: bytes) -> ResponseHead:
    """An upstream's head in buf[:end + 4]. Raises ProtocolError (status 502)."""
    if type(buf) is not bytes:
        buf = bytes(buf[: end + 4])
    m = _FAST_RESPONSE.fullmatch(buf, 0, end + 4)
    if m is None:
        return _parse_response(buf, end, request_method)
    status_line, code, length, conn_line, close = m.groups()
    fields_start = len(status_line)
    head = ResponseHead()
    head.status_line = status_line
    head.fields = buf[fields_start : end + 2]
    status, bodyless = _CODES[code]
    head.status = status
    head.content_length = int(length)
    if conn_line is not None:
        start, stop = m.span(4)
        head.drop = ((start - fields_start, stop - fields_start),)
        if close is not None:
            head.keep_alive = False
    if bodyless or request_method == b"HEAD" or (request_method == b"CONNECT" and status < 300):
        return head  # framing NO_BODY (a 2xx to CONNECT: a tunnel follows, RFC 9112 6.3)
    head.framing = LENGTH
    return head


def _parse_response(buf: bytes, end: int, request_method: bytes) -> ResponseHead:
    m = _STATUS_LINE.match(buf)
    if m is None or m[1] != b"1":
        raise ProtocolError(502, "invalid status line from the upstream")
    status = int(m[3])
    if not 100 <= status <= 599:
        raise ProtocolError(502, "invalid status code from the upstream")
    fields_start = m.end()
    fields_end = end + 2
    if _FIELDS.fullmatch(buf, fields_start, fields_end) is None:
        raise ProtocolError(502, "invalid header from the upstream")
    head = ResponseHead()
    head.status = status
    v11 = m[2] != b"0"
    if not v11:
        head.version = b"1.0"
    # the client always gets HTTP/1.1 (an HTTP/1.2 is taken as 1.1, RFC 9110 2.5)
    head.status_line = buf[:fields_start] if m[2] == b"1" else b"HTTP/1.1" + buf[8:fields_start]
    fields = buf[fields_start:fields_end]
    head.fields = fields
    base = fields_start - 1
    lowered = buf[base:fields_end].lower()
    lengths = 0
    te: bytes | None = None
    connection: list[bytes] = []
    drop: list[tuple[int, int]] = []
    upgrade: bytes | None = None
    for sm in _RESPONSE_SPECIAL.finditer(lowered):
        name = sm[1]
        if name == b"content-length":
            lengths += 1
            value = sm[2].rstrip(b" \t")
            if not value.isdigit() or len(value) > 18:
                raise ProtocolError(502, "invalid Content-Length from the upstream")
            head.content_length = int(value)
            continue
        if name == b"transfer-encoding":
            if te is not None:
                raise ProtocolError(502, "Transfer-Encoding given twice by the upstream")
            te = sm[2]
        elif name == b"connection":
            connection += _tokens(sm[2])
        elif name == b"upgrade":
            start, stop = sm.span(2)
            upgrade = buf[base + start : base + stop].rstrip(b" \t")
        drop.append(sm.span())
    if lengths > 1:
        raise ProtocolError(502, "more than one Content-Length from the upstream")
    if te is not None:
        if lengths:
            raise ProtocolError(502, "both Content-Length and Transfer-Encoding from the upstream")
        if not v11:
            raise ProtocolError(502, "Transfer-Encoding in an HTTP/1.0 response")
    keep_alive = b"close" not in connection and (v11 or b"keep-alive" in connection)
    if upgrade:
        head.upgrade = upgrade  # a 101 names its protocol here, whatever its Connection says
    extra = [t for t in connection if t not in _NOT_DROPPABLE and _TOKEN.fullmatch(t)]
    if extra:
        head.conn_tokens = extra
        _drop_named(lowered, extra, drop)
    if drop:
        drop.sort()
        head.drop = drop
    if (
        request_method == b"HEAD"
        or status < 200
        or status == 204
        or status == 304
        or (request_method == b"CONNECT" and status < 300)
    ):
        pass  # NO_BODY (a 2xx to CONNECT: the connection becomes a tunnel, RFC 9112 6.3)
    elif te is not None:
        codings = _codings(te)
        if codings is None:
            raise ProtocolError(502, "invalid Transfer-Encoding from the upstream")
        if codings != [b"chunked"]:
            # The client gets the body re-framed as plain chunked (or close-delimited): another
            # coding (gzip, chunked) would reach it unannounced. Rare enough to refuse.
            raise ProtocolError(502, "transfer codings other than chunked are not supported")
        head.framing = CHUNKED
    elif head.content_length >= 0:
        head.framing = LENGTH
    else:
        head.framing = CLOSE
        keep_alive = False
    if not keep_alive:
        head.keep_alive = False
    return head


def field_value(fields: bytes, lname: bytes) -> bytes | None:
    """The value of header `lname` (lower-case) in raw header lines; repeated ones joined by
    commas (RFC 9110 5.3); None when absent."""
    values = field_values(fields, lname)
    return b",".join(values) if values else None


def field_values(fields: bytes, lname: bytes) -> list[bytes]:
    """The values of header `lname` (lower-case) in raw header lines, one per line, in order."""
    lowered = b"\n" + fields.lower()
    needle = b"\n" + lname + b":"
    values = []
    pos = 0
    while (i := lowered.find(needle, pos)) >= 0:
        start = i - 1 + len(needle)
        end = fields.find(b"\r\n", start)
        values.append(fields[start:end].strip(b" \t"))
        pos = end + 1
    return values


def without(fields: bytes, drop: Sequence[tuple[int, int]]) -> bytes:
    """`fields` minus the dropped line spans (sorted, not overlapping)."""
    if not drop:
        return fields
    parts = []
    pos = 0
    for start, stop in drop:
        if start < pos:
            continue
        parts.append(fields[pos:start])
        pos = stop
    parts.append(fields[pos:])
    return b"".join(parts)


# -- chunked bodies -------------------------------------------------------------------------

_SIZE, _DATA, _DATA_CR, _DATA_LF, _TRAILER, _DONE = range(6)
_BARE_CR = "bad chunk framing: lines must end in CRLF"


class ChunkedScanner:
    """Finds where a chunked body ends, checking its framing as strictly as llhttp does. The bytes
    themselves are forwarded as they are; with `payload` set, the chunk data is collected too
    (to send a body unchunked to an HTTP/1.0 client)."""

    __slots__ = ("state", "remaining", "line", "payload", "status")

    def __init__(self, *, status: int = 400, payload: list[bytes] | None = None) -> None:
        self.state = _SIZE
        self.remaining = 0
        self.line = b""  # the start of a chunk-size or trailer line split between feeds
        self.payload = payload
        self.status = status  # what a framing error answers: 400 from a client, 502 upstream

    @property
    def done(self) -> bool:
        return self.state == _DONE

    def feed(self, data: bytes, start: int = 0) -> int:
        """Scan data[start:]; the index just past the body's last byte (where a pipelined
        message starts), or -1 when the body goes on. Once done, feeding consumes nothing."""
        state = self.state
        if state == _DONE:
            return start
        i = start
        n = len(data)
        try:
            while i < n:
                if state == _DATA:
                    take = n - i
                    if take >= self.remaining:
                        take = self.remaining
                        state = _DATA_CR
                    if self.payload is not None:
                        self.payload.append(data[i : i + take])
                    i += take
                    self.remaining -= take
                elif state == _DATA_CR:
                    if data[i] != 13:
                        raise ProtocolError(self.status, "chunk data not followed by CRLF")
                    i += 1
                    state = _DATA_LF
                elif state == _DATA_LF:
                    if data[i] != 10:
                        raise ProtocolError(self.status, "chunk data not followed by CRLF")
                    i += 1
                    state = _SIZE
                else:
                    j = data.find(b"\n", i)
                    if self.line:
                        if j < 0:
                            j = n - 1
                        line = self.line + data[i : j + 1]
                        if len(line) > MAX_CHUNK_LINE:
                            raise ProtocolError(self.status, "chunk line too long")
                        if line[-1] != 10:
                            if b"\r" in line[:-1]:  # a CR not before the LF: refuse now
                                raise ProtocolError(self.status, _BARE_CR)
                            self.line = line
                            return -1
                        self.line = b""
                        text, lo, hi = line, 0, len(line)
                    elif j < 0:
                        if n - i > MAX_CHUNK_LINE:
                            raise ProtocolError(self.status, "chunk line too long")
                        if data.find(b"\r", i, n - 1) >= 0:
                            raise ProtocolError(self.status, _BARE_CR)
                        self.line = data[i:]
                        return -1
                    else:
                        if j + 1 - i > MAX_CHUNK_LINE:
                            raise ProtocolError(self.status, "chunk line too long")
                        text, lo, hi = data, i, j + 1
                    i = j + 1
                    if state == _SIZE:
                        m = _CHUNK_LINE.fullmatch(text, lo, hi)
                        if m is None:
                            raise ProtocolError(self.status, _chunk_problem(text[lo:hi]))
                        size = int(m[1], 16)
                        if size:
                            self.remaining = size
                            state = _DATA
                        else:
                            state = _TRAILER
                    else:  # _TRAILER
                        if hi - lo == 2 and text[lo] == 13:
                            state = _DONE
                            return i
                        m = _TRAILER_LINE.fullmatch(text, lo, hi)
                        if m is None:
                            raise ProtocolError(self.status, "invalid trailer field")
                        if m[1].lower() in _NOT_TRAILERS:
                            raise ProtocolError(self.status, "a framing field in the trailers")
            return -1
        finally:
            self.state = state


def _chunk_problem(line: bytes) -> str:
    if line[-2:] != b"\r\n" or b"\r" in line[:-2]:
        return _BARE_CR
    if re.match(rb"[0-9A-Fa-f]{17}", line):
        return "chunk size too large"
    if re.match(rb"[0-9A-Fa-f]+[;\r]", line):
        return "invalid chunk extension"
    return "invalid chunk size"

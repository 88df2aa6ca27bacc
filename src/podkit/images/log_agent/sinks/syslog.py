"""The syslog sink (Fluent Bit `syslog`): RFC 5424 messages over TCP (RFC 6587) or UDP (RFC 5426).

    <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [SD-ID pod_name="…" …] MSG

Encoding (`SyslogEncoder`, framing helpers) is pure; `SyslogSink` only moves bytes. A payload is
octet-counted frames ("LEN SP MSG") unless TCP with newline framing: over UDP, `send` splits it
into one datagram per message.

Delivery is at least once: a TCP connection that breaks while a payload is being written is
dropped, and the retry sends the whole payload again on a new connection, so the receiver may see
the messages that had already made it twice. A connection the receiver closed (a restart) is
noticed before the next payload is written to it. UDP cannot tell what arrived; the sink only
notices when the receiver's host answers "port unreachable", and then holds events (retrying)
until it listens again.

MSG carries no UTF-8 BOM although RFC 5424 asks for one: rsyslog, syslog-ng and Fluent Bit omit
it too, and rsyslog would keep it as part of the message text.
"""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import Callable, Iterator
from typing import Annotated, Any, Literal

import orjson
from pydantic import AfterValidator, BeforeValidator, Field

from podkit.common.config import parse_hostport
from podkit.common.config_section import Section
from podkit.images.log_agent.event import Batch, Event, full_event
from podkit.images.log_agent.sinks.base import Batching, RetryableError

FACILITIES = {
    "kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6, "news": 7,
    "uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11, "ntp": 12, "security": 13, "console": 14,
    "solaris-cron": 15, **{f"local{i}": 16 + i for i in range(8)},
}  # fmt: skip
# RFC 5424 names, syslog(3) aliases, and the level names applications commonly log.
SEVERITIES = {
    "emerg": 0, "emergency": 0, "panic": 0, "alert": 1, "crit": 2, "critical": 2, "fatal": 2,
    "err": 3, "error": 3, "warn": 4, "warning": 4, "notice": 5, "info": 6, "informational": 6,
    "debug": 7, "trace": 7,
}  # fmt: skip
NIL = b"-"
# RFC 5424 6.2: header fields are PRINTUSASCII (33..126) of at most these lengths.
HOSTNAME_MAX, APP_NAME_MAX, PROCID_MAX, MSGID_MAX = 255, 48, 128, 32
SD_PARAMS = ("pod_name", "namespace_name", "container_name")
# RFC 5426 3.2: every receiver should take 2048 bytes (and must take 480); Fluent Bit's RFC 5424
# default too. Larger datagrams risk being dropped by receivers that stop there.
DEFAULT_MAX_UDP_BYTES = 2048
MAX_UDP_PAYLOAD = 65507  # IPv4: 65535 - 20 (IP header) - 8 (UDP header)


def _code(names: dict[str, int], highest: int, what: str) -> Callable[[Any], Any]:
    def parse(value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip().lower()
            if text.isdigit():
                value = int(text)
            elif text in names:
                return names[text]
            else:
                raise ValueError(f"unknown {what} {value!r}: use one of {', '.join(names)}")
        if isinstance(value, int) and not isinstance(value, bool) and not 0 <= value <= highest:
            raise ValueError(f"{what} must be 0-{highest}, got {value}")
        return value

    return parse


def _check_address(value: str) -> str:
    _, port = parse_hostport(value)
    if port == 0:
        raise ValueError(f"invalid address {value!r}: the port must not be 0")
    return value


def _check_sd_name(value: str) -> str:
    # RFC 5424 6.3.2: SD-NAME is 1-32 PRINTUSASCII except '=', SP, ']', '"'.
    if not 1 <= len(value) <= 32 or any(c in '= ]"' or not "!" <= c <= "~" for c in value):
        raise ValueError(f"invalid SD-ID {value!r}: 1-32 printable ASCII, no '=', ' ', ']', '\"'")
    return value


Facility = Annotated[int, BeforeValidator(_code(FACILITIES, 23, "facility"))]
Severity = Annotated[int, BeforeValidator(_code(SEVERITIES, 7, "severity"))]


class SyslogConfig(Section):
    type: Literal["syslog"]
    name: str | None = None
    address: Annotated[str, AfterValidator(_check_address)]  # HOST:PORT of the receiver
    mode: Literal["tcp", "udp"] = "tcp"
    # tcp only. octet-counting: RFC 6587 "LEN SP MSG", a message may hold newlines; newline:
    # one message a line, newlines inside a message become spaces.
    framing: Literal["octet-counting", "newline"] = "octet-counting"
    facility: Facility = FACILITIES["user"]  # a name (local0) or a number 0-23
    severity: Severity = SEVERITIES["info"]  # a name (warning) or a number 0-7
    severity_key: str | None = None  # event field holding a level; unknown values: `severity`
    app_name: str | None = None  # default: kubernetes.container_name, else "log-agent"
    hostname: str | None = None  # default: kubernetes.pod_name, else the machine's hostname
    procid: str = "-"
    msgid: str = "-"
    sd_id: Annotated[str, AfterValidator(_check_sd_name)] | None = None  # e.g. "k8s@32473"
    message_format: Literal["text", "json"] = "text"  # MSG: the message, or the whole event
    max_udp_bytes: int = Field(
        default=DEFAULT_MAX_UDP_BYTES, ge=480, le=MAX_UDP_PAYLOAD, description="bytes"
    )
    timeout: float = Field(default=30.0, gt=0, description="seconds to connect or write (tcp)")


# --- pure encoding ---------------------------------------------------------------------------

_PRINTUSASCII = bytes(b if 33 <= b <= 126 else ord("_") for b in range(256))
_TIME = re.compile(
    r"(\d{4}-\d\d-\d\d)[Tt ]((?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d)(\.\d+)?([Zz]|[+-]\d\d:\d\d)"
)


def header_field(value: object, limit: int) -> bytes:
    """A header field as RFC 5424 allows it: printable ASCII, cut to `limit`, "-" when empty."""
    text = "" if value is None else str(value)
    return text.encode("ascii", "replace").translate(_PRINTUSASCII)[:limit] or NIL


def timestamp(value: object) -> bytes:
    """RFC 3339 text as an RFC 5424 TIMESTAMP (upper case, at most 6 fraction digits), else "-".

    "-" makes the receiver stamp the time it got the message: `time` may be what a sender wrote.
    """
    match = _TIME.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        return NIL
    date, clock, fraction, offset = match.groups()
    return f"{date}T{clock}{(fraction or '')[:7]}{offset.upper()}".encode("ascii")


def severity_of(value: object, default: int) -> int:
    """A level field's value (name in any case, or number 0-7) as a severity."""
    if isinstance(value, str):
        text = value.strip().lower()
        if not text.isdigit():
            return SEVERITIES.get(text, default)
        value = int(text)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 7:
        return value
    return default


def sd_escape(value: str) -> str:
    # RFC 5424 6.3.3: '"', '\' and ']' are escaped with a backslash inside PARAM-VALUE.
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def sd_element(sd_id: str, kubernetes: dict[str, Any]) -> bytes:
    params = "".join(
        f' {name}="{sd_escape(str(value))}"'
        for name in SD_PARAMS
        if (value := kubernetes.get(name)) not in (None, "")
    )
    return f"[{sd_id}{params}]".encode("utf-8", "replace")


def cut_utf8(data: bytes, limit: int) -> bytes:
    """`data` cut to at most `limit` bytes, never inside a UTF-8 character."""
    if len(data) <= limit:
        return data
    end = limit
    while end > 0 and data[end] & 0xC0 == 0x80:  # a continuation byte: its character started before
        end -= 1
    return data[:end]


def octet_frame(message: bytes) -> bytes:
    return b"%d %s" % (len(message), message)


def newline_frame(message: bytes) -> bytes:
    return message.replace(b"\n", b" ") + b"\n"


def split_octet_frames(payload: bytes) -> Iterator[memoryview]:
    """The messages of a payload of octet-counted frames."""
    view, pos = memoryview(payload), 0
    while pos < len(payload):
        space = payload.index(b" ", pos)
        end = space + 1 + int(payload[pos:space])
        yield view[space + 1 : end]
        pos = end


class SyslogEncoder:
    """Batches as framed RFC 5424 messages. Pure, but counts what it had to cut (`truncated`)."""

    def __init__(self, cfg: SyslogConfig, machine_hostname: str) -> None:
        self.cfg = cfg
        self.machine_hostname = machine_hostname
        self.truncated = 0  # messages cut to max_udp_bytes (each event is encoded once)
        self._ids = b" %s %s " % (
            header_field(cfg.procid, PROCID_MAX),
            header_field(cfg.msgid, MSGID_MAX),
        )
        self._frame = (
            newline_frame if cfg.mode == "tcp" and cfg.framing == "newline" else octet_frame
        )
        self._limit = cfg.max_udp_bytes if cfg.mode == "udp" else None
        self._json = cfg.message_format == "json"

    def encode(self, batch: Batch) -> bytes:
        common, frame, limit = batch.common, self._frame, self._limit
        facility8, key = self.cfg.facility * 8, self.cfg.severity_key
        default_severity = self.cfg.severity
        # Per batch, computed once: " HOSTNAME APP-NAME PROCID MSGID SD" by id(kubernetes dict)
        # (one for the whole batch but for events with their own), TIMESTAMP by time text.
        middles: dict[int, bytes] = {}
        stamps: dict[str, bytes] = {}
        frames = []
        for event in batch.events:
            kubernetes = event.get("kubernetes") or common.get("kubernetes")
            middle = middles.get(id(kubernetes))
            if middle is None:
                middle = middles[id(kubernetes)] = self._middle(kubernetes)
            time_text = event.get("time")
            time_text = time_text if isinstance(time_text, str) else ""
            stamp = stamps.get(time_text)
            if stamp is None:
                stamp = stamps[time_text] = timestamp(time_text)
            severity = default_severity
            if key is not None:
                severity = severity_of(_field(event, common, key), default_severity)
            message = b"<%d>1 %s%s %s" % (
                facility8 + severity,
                stamp,
                middle,
                self._msg(event, common),
            )
            if limit is not None and len(message) > limit:
                message = cut_utf8(message, limit)
                self.truncated += 1
            frames.append(frame(message))
        return b"".join(frames)

    def _msg(self, event: Event, common: Event) -> bytes:
        if self._json:
            return orjson.dumps(full_event(event, common), default=str)
        return str(event.get("message", "")).encode("utf-8", "replace")

    def _middle(self, kubernetes: object) -> bytes:
        if not isinstance(kubernetes, dict):
            kubernetes = {}
        cfg = self.cfg
        hostname = cfg.hostname or kubernetes.get("pod_name") or self.machine_hostname
        app_name = cfg.app_name or kubernetes.get("container_name") or "log-agent"
        sd = sd_element(cfg.sd_id, kubernetes) if cfg.sd_id else NIL
        return b" %s %s%s%s" % (
            header_field(hostname, HOSTNAME_MAX),
            header_field(app_name, APP_NAME_MAX),
            self._ids,
            sd,
        )


def _field(event: Event, common: Event, key: str) -> Any:
    value = event.get(key)
    return common.get(key) if value is None else value


# --- sending ---------------------------------------------------------------------------------


class SyslogSink:
    batching: Batching | None = None  # a record a send, in order

    def __init__(self, id: str, cfg: SyslogConfig) -> None:
        self.id = id
        self.cfg = cfg
        self.host, self.port = parse_hostport(cfg.address)
        self.encoder = SyslogEncoder(cfg, socket.gethostname())
        self._lock = asyncio.Lock()  # one payload on the wire at a time
        self._sock: socket.socket | None = None

    @property
    def truncated(self) -> int:
        """UDP messages cut to `max_udp_bytes`."""
        return self.encoder.truncated

    def encode(self, batch: Batch) -> bytes:
        return self.encoder.encode(batch)

    async def start(self) -> None:
        # Nothing to open yet: the receiver may start after the agent; send connects.
        return None

    async def send(self, payload: bytes) -> None:
        if not payload:
            return
        async with self._lock:
            try:
                if self.cfg.mode == "udp":
                    await self._send_udp(payload)
                else:
                    await self._send_tcp(payload)
            except OSError as e:  # refused, reset, broken pipe, or TimeoutError: a stuck receiver
                self._drop()
                reason = str(e) or type(e).__name__
                raise RetryableError(
                    f"syslog sink {self.id}: {self.cfg.address}: {reason} (the payload is sent "
                    "again whole: messages that made it may arrive twice)"
                ) from e
            except asyncio.CancelledError:
                self._drop()  # a frame may be half written: the connection cannot carry more
                raise

    async def close(self) -> None:
        self._drop()

    async def _send_tcp(self, payload: bytes) -> None:
        if self._sock is not None and peer_closed(self._sock):
            self._drop()
        sock = self._sock or await self._socket(socket.SOCK_STREAM)
        loop = asyncio.get_running_loop()
        await asyncio.wait_for(loop.sock_sendall(sock, payload), self.cfg.timeout)

    async def _send_udp(self, payload: bytes) -> None:
        loop = asyncio.get_running_loop()
        sock = self._sock or await self._socket(socket.SOCK_DGRAM)
        for message in split_octet_frames(payload):
            await loop.sock_sendall(sock, message)

    async def _socket(self, kind: socket.SocketKind) -> socket.socket:
        """A connected socket; UDP too, so that "port unreachable" comes back as an error."""
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(self.host, self.port, type=kind)
        family, kind, proto, _, addr = infos[0]
        sock = socket.socket(family, kind, proto)
        sock.setblocking(False)
        try:
            await asyncio.wait_for(loop.sock_connect(sock, addr), self.cfg.timeout)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        return sock

    def _drop(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()


def peer_closed(sock: socket.socket) -> bool:
    """Whether a TCP receiver has closed (or reset) the connection.

    Checked before each payload: a receiver that restarted has sent FIN, and writing to that
    connection would succeed locally while the peer's RST loses the payload. Plain syslog
    receivers send nothing, so anything read is discarded.
    """
    try:
        while sock.recv(65536, socket.MSG_DONTWAIT):
            pass
    except BlockingIOError:
        return False  # no EOF: still open
    except OSError:
        return True
    return True  # recv returned b"": EOF

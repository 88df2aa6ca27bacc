"""Run one probe against one container: the I/O half of the kubelet's prober.

Network probes open their socket inside the pod's network namespace (`socket_in_netns`), so an
image needs no curl and a port bound only to the pod's localhost is reachable. Exec probes run
their command inside the container, under the container's own confinement (enter.py). Results
and messages follow the kubelet's pkg/probe/{http,tcp,exec,grpc} so the events read the same as
on a cluster.

The thresholds, schedule and events live in the pure `probes` module; this one runs a probe
once, bounded by timeoutSeconds, and never raises for anything the probed side does.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote, urljoin, urlsplit

import httptools

from podkit.common.config import format_hostport
from podkit.common.helpers import helper_argv
from podkit.manifest.probe_spec import (
    ExecAction,
    GRPCAction,
    HTTPGetAction,
    ProbeSpec,
    TCPSocketAction,
)
from podkit.runtime.confine import Confinement
from podkit.runtime.enter import enter_spec, send_spec
from podkit.runtime.forward import SocketFactory

USER_AGENT = "kube-probe/1.37"  # the kubelet sends kube-probe/<major.minor>
MAX_OUTPUT = 10 * 1024  # kubelet: maxRespBodyLength / exec maxReadLength
MAX_REDIRECTS = 10  # Go's http.Client default, which the kubelet keeps
ENTER = helper_argv("podkit.runtime.enter")
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"  # containerd's


@dataclass(frozen=True)
class ProbeTarget:
    sockets: SocketFactory  # makes sockets inside the pod's network namespace
    container_pid: int  # host pid of the container's PID 1 (exec probes)
    ports: Mapping[str, int] = field(default_factory=dict)  # named containerPorts
    pod_ip: str = "127.0.0.1"
    # exec probes and hooks run under the container's own confinement, in its cgroups
    confinement: Confinement = field(default_factory=Confinement)
    cgroup_procs: tuple[str, ...] = ()


@dataclass(frozen=True)
class ProbeResult:
    success: bool
    message: str  # the kubelet's probe output: why it failed, or the body / command output
    warning: bool = False  # a success the kubelet reports as a ProbeWarning event


async def run_probe(spec: ProbeSpec, target: ProbeTarget) -> ProbeResult:
    """Run `spec`'s handler once against `target`, within spec.timeout_seconds."""
    h = spec.handler
    timeout = spec.timeout_seconds
    if isinstance(h, HTTPGetAction):
        return await _http_probe(h, target, timeout)
    if isinstance(h, TCPSocketAction):
        return await _tcp_probe(h, target, timeout)
    if isinstance(h, ExecAction):
        return await _exec_probe(h, target, timeout)
    return await _grpc_probe(h, target, timeout)


# --- shared -----------------------------------------------------------------------------------


class _PortNotFound(Exception):
    pass


class _DialError(Exception):
    """Connecting failed (as opposed to failing later, mid-exchange)."""

    def __init__(self, where: str, exc: OSError) -> None:
        super().__init__(f"dial tcp {where}: connect: {_os_error(exc)}")


def _resolve_port(port: int | str, target: ProbeTarget) -> int:
    if isinstance(port, int):
        return port
    if port in target.ports:
        return target.ports[port]
    if port.isdigit():  # kubelet's last-ditch: a number stored as a string
        return int(port)
    raise _PortNotFound(f"port {port} not found")


def _ip_family(host: str) -> int | None:
    """AF_INET/AF_INET6 for an address literal, None for a name (ipaddress costs 5 ms to import)."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
            return family
        except OSError:
            continue
    return None


async def _connect(target: ProbeTarget, host: str, port: int) -> socket.socket:
    """A connected non-blocking socket from inside the pod's network namespace."""
    loop = asyncio.get_running_loop()
    host = host.strip("[]")
    family = _ip_family(host)
    if family is not None:
        candidates: list[tuple[int, Any]] = [(family, (host, port))]
    else:  # a name: resolved as the node resolves it; each address tried in turn, as Go does
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        candidates = [(info[0], info[4]) for info in infos]
    error: OSError | None = None
    for family, addr in candidates:
        sock = target.sockets(family)
        try:
            sock.setblocking(False)
            await loop.sock_connect(sock, addr)
            return sock
        except OSError as exc:
            sock.close()
            error = exc
        except BaseException:
            sock.close()
            raise
    assert error is not None
    raise error


def _os_error(exc: OSError) -> str:
    # Go spells these in lower case: "connect: connection refused".
    # asyncio's sock_connect replaces strerror with "Connect call failed (...)": use errno.
    if isinstance(exc, socket.gaierror | ssl.SSLError) or not exc.errno:
        text = exc.strerror or str(exc) or type(exc).__name__
    else:
        text = os.strerror(exc.errno)
    return text[0].lower() + text[1:] if text else text


# --- tcpSocket --------------------------------------------------------------------------------


async def _tcp_probe(h: TCPSocketAction, target: ProbeTarget, timeout: float) -> ProbeResult:
    try:
        port = _resolve_port(h.port, target)
    except _PortNotFound as exc:
        return ProbeResult(False, str(exc))
    host = h.host or target.pod_ip
    where = format_hostport(host, port)
    try:
        async with asyncio.timeout(timeout):
            sock = await _connect(target, host, port)
    except TimeoutError:
        return ProbeResult(False, f"dial tcp {where}: i/o timeout")
    except OSError as exc:
        return ProbeResult(False, f"dial tcp {where}: connect: {_os_error(exc)}")
    sock.close()
    return ProbeResult(True, "")


# --- httpGet ----------------------------------------------------------------------------------

_ssl_context: ssl.SSLContext | None = None


def _insecure_tls() -> ssl.SSLContext:
    # The kubelet's probe transport skips certificate verification (InsecureSkipVerify).
    global _ssl_context
    if _ssl_context is None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        _ssl_context = ctx
    return _ssl_context


class _Response:
    """httptools callbacks: status line and headers, and the first MAX_OUTPUT body bytes."""

    def __init__(self) -> None:
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = bytearray()
        self.headers_done = False
        self.complete = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.headers_done = True

    def on_body(self, body: bytes) -> None:
        room = MAX_OUTPUT - len(self.body)
        if room > 0:
            self.body += body[:room]

    def on_message_complete(self) -> None:
        self.complete = True

    def header(self, name: bytes) -> str | None:
        for k, v in self.headers:
            if k.lower() == name:
                return v.decode("latin-1")
        return None


_PATH_SAFE = "/:@!$&'()*+,;=-._~%?[]"


def _request(path: str, host_header: str, headers: list[tuple[str, str]]) -> bytes:
    lines = [f"GET {quote(path, safe=_PATH_SAFE)} HTTP/1.1", f"Host: {host_header}"]
    lines += [f"{k}: {v}" for k, v in headers]
    lines.append("Connection: close")  # the kubelet's transport disables keep-alives
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _http_get(
    target: ProbeTarget, url: str, host_header: str | None, headers: list[tuple[str, str]]
) -> _Response:
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        sock = await _connect(target, host, port)
    except OSError as exc:
        raise _DialError(format_hostport(host, port), exc) from None
    tls = _insecure_tls() if parts.scheme == "https" else None
    is_ip = _ip_family(host) is not None
    try:
        # SNI is sent for names only, as Go does; "" turns it off for addresses.
        reader, writer = await asyncio.open_connection(
            sock=sock, ssl=tls, server_hostname=(None if tls is None else "" if is_ip else host)
        )
    except BaseException:
        sock.close()
        raise
    try:
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        writer.write(_request(path, host_header or parts.netloc, headers))
        response = _Response()
        parser = httptools.HttpResponseParser(response)
        while not response.complete and not (
            response.headers_done and len(response.body) >= MAX_OUTPUT
        ):
            data = await reader.read(65536)
            if not data:
                if not response.headers_done:
                    raise EOFError("EOF")
                break  # body delimited by the connection closing
            parser.feed_data(data)
        response.status = parser.get_status_code()
        return response
    finally:
        writer.close()


def _split_headers(h: HTTPGetAction) -> tuple[str | None, list[tuple[str, str]]]:
    """(Host override, headers to send) with the kubelet's User-Agent and Accept defaults."""
    names = {k.lower() for k, _ in h.headers}
    host = next((v for k, v in h.headers if k.lower() == "host" and v), None)
    out = [(k, v) for k, v in h.headers if k.lower() != "host"]
    if "user-agent" not in names:
        out.append(("User-Agent", USER_AGENT))
    else:  # Go sends no User-Agent at all when it is set to ""
        out = [(k, v) for k, v in out if k.lower() != "user-agent" or v]
    if "accept" not in names:
        out.append(("Accept", "*/*"))
    return host, out


async def _http_probe(h: HTTPGetAction, target: ProbeTarget, timeout: float) -> ProbeResult:
    try:
        port = _resolve_port(h.port, target)
    except _PortNotFound as exc:
        return ProbeResult(False, str(exc))
    host = h.host or target.pod_ip
    path = h.path if h.path.startswith("/") else "/" + h.path
    url = f"{h.scheme.lower()}://{format_hostport(host, port)}{path}"
    host_header, headers = _split_headers(h)
    if any(c in "\r\n" for kv in headers for c in "".join(kv)) or "\r" in (host_header or ""):
        return ProbeResult(False, f'Get "{url}": invalid header field value')
    first_host = urlsplit(url).hostname
    try:
        async with asyncio.timeout(timeout):
            for _ in range(MAX_REDIRECTS + 1):
                resp = await _http_get(target, url, host_header, headers)
                status = resp.status
                location = resp.header(b"location")
                if not (300 <= status < 400 and location):
                    break
                nxt = urljoin(url, location)
                # Redirects are followed only to the same host (kubelet: followNonLocalRedirects
                # is false); elsewhere the 3xx itself is the answer, reported as a warning.
                if urlsplit(nxt).hostname != first_host:
                    break
                if urlsplit(location).netloc:  # Go keeps a Host override for relative ones only
                    host_header = None
                url = nxt
            else:
                return ProbeResult(False, f'Get "{url}": stopped after {MAX_REDIRECTS} redirects')
    except TimeoutError:
        return ProbeResult(
            False,
            f'Get "{url}": context deadline exceeded (Client.Timeout exceeded while awaiting '
            "headers)",
        )
    except _DialError as exc:
        return ProbeResult(False, f'Get "{url}": {exc}')
    except OSError as exc:  # reset, TLS handshake failure...
        return ProbeResult(False, f'Get "{url}": {_os_error(exc)}')
    except EOFError:
        return ProbeResult(False, f'Get "{url}": EOF')
    except httptools.HttpParserError as exc:
        return ProbeResult(False, f'Get "{url}": malformed HTTP response: {exc}')
    body = resp.body.decode("utf-8", "replace")
    if 200 <= status < 300:
        return ProbeResult(True, body)
    if 300 <= status < 400:
        return ProbeResult(True, f"Probe terminated redirects, Response body: {body}", warning=True)
    return ProbeResult(False, f"HTTP probe failed with statuscode: {status}")


# --- exec -------------------------------------------------------------------------------------


def container_env(pid: int) -> dict[str, str]:
    """The environment of the container's PID 1: what an exec in it starts with."""
    with open(f"/proc/{pid}/environ", "rb") as f:
        raw = f.read()
    env: dict[str, str] = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep and key:
            env[os.fsdecode(key)] = os.fsdecode(value)
    env.setdefault("PATH", DEFAULT_PATH)  # the command is looked up on this PATH
    return env


def _go_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


async def _exec_probe(h: ExecAction, target: ProbeTarget, timeout: float) -> ProbeResult:
    pid = target.container_pid
    try:
        env = container_env(pid)
    except OSError:
        return ProbeResult(False, f"container process {pid} is not running")
    spec = enter_spec(pid, list(h.command), env, target.confinement, list(target.cgroup_procs))
    spec_r, spec_w = os.pipe()
    try:
        proc = await asyncio.create_subprocess_exec(
            *ENTER,
            str(spec_r),
            pass_fds=[spec_r],
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={},
            start_new_session=True,  # its own process group, so a timeout can kill all of it
        )
    except OSError as exc:
        os.close(spec_w)
        return ProbeResult(False, f"cannot exec in container process {pid}: {_os_error(exc)}")
    finally:
        os.close(spec_r)
    send_spec(spec_w, spec)  # far below the pipe buffer: this write does not block
    assert proc.stdout is not None
    stdout = proc.stdout
    output = bytearray()

    async def collect() -> None:
        while chunk := await stdout.read(65536):
            output.extend(chunk[: MAX_OUTPUT - len(output)])  # keep the head, drain the rest

    try:
        async with asyncio.timeout(timeout):
            await asyncio.gather(collect(), proc.wait())
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        return ProbeResult(False, f"command {_go_quote(' '.join(h.command))} timed out")
    except BaseException:  # cancelled: leave nothing behind
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        raise
    text = output.decode("utf-8", "replace")
    return ProbeResult(proc.returncode == 0, text)


# --- grpc -------------------------------------------------------------------------------------

_GRPC_CODES = [
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
]
_HTTP_TO_GRPC = {400: 13, 401: 16, 403: 7, 404: 12, 429: 14, 502: 14, 503: 14, 504: 14}
_SERVING_STATUS = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def encode_health_request(service: str) -> bytes:
    """HealthCheckRequest{service} as a length-prefixed gRPC message."""
    raw = service.encode()
    msg = b"\x0a" + _varint(len(raw)) + raw if raw else b""  # field 1, length-delimited
    return b"\x00" + len(msg).to_bytes(4, "big") + msg


def decode_health_status(message: bytes) -> int:
    """HealthCheckResponse.status (field 1, varint) from one protobuf message; 0 if absent."""
    i, status = 0, 0

    def varint() -> int:
        nonlocal i
        value = shift = 0
        while True:
            b = message[i]
            i += 1
            value |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return value

    while i < len(message):
        key = varint()
        number, wire = key >> 3, key & 7
        if wire == 0:
            value = varint()
            if number == 1:
                status = value
        elif wire == 1:
            i += 8
        elif wire == 2:
            i += varint()
        elif wire == 5:
            i += 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
    return status


class _RpcError(Exception):
    def __init__(self, code: int, desc: str) -> None:
        name = _GRPC_CODES[code] if 0 <= code < len(_GRPC_CODES) else f"Code({code})"
        super().__init__(f"rpc error: code = {name} desc = {desc}")
        self.code = code


async def _health_check(sock: socket.socket, authority: str, service: str, timeout: float) -> int:
    """One grpc.health.v1.Health/Check over HTTP/2 cleartext; the serving status."""
    import h2.config  # only a grpc probe pays for importing h2
    import h2.connection
    import h2.events

    reader, writer = await asyncio.open_connection(sock=sock)
    conn = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
    )
    conn.initiate_connection()
    sid = conn.get_next_available_stream_id()
    conn.send_headers(
        sid,
        [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", "/grpc.health.v1.Health/Check"),
            (":authority", authority),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
            ("user-agent", USER_AGENT),
            ("grpc-timeout", f"{max(1, int(timeout * 1000))}m"),
        ],
    )
    conn.send_data(sid, encode_health_request(service), end_stream=True)
    writer.write(conn.data_to_send())
    headers: dict[str, str] = {}
    body = bytearray()
    try:
        ended = False
        while not ended:
            data = await reader.read(65536)
            if not data:
                raise _RpcError(14, "connection closed before the response ended")
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.ResponseReceived | h2.events.TrailersReceived):
                    headers.update((str(k), str(v)) for k, v in ev.headers)
                elif isinstance(ev, h2.events.DataReceived):
                    body += ev.data
                    conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id == sid:
                    ended = True
                elif isinstance(ev, h2.events.StreamReset) and ev.stream_id == sid:
                    raise _RpcError(
                        13, f"stream terminated by RST_STREAM with code {ev.error_code}"
                    )
                elif isinstance(ev, h2.events.ConnectionTerminated):
                    raise _RpcError(14, f"connection closed by GOAWAY ({ev.error_code})")
            writer.write(conn.data_to_send())
    finally:
        writer.close()
    http_status = int(headers.get(":status", "0"))
    if http_status != 200:
        raise _RpcError(
            _HTTP_TO_GRPC.get(http_status, 2),
            f"unexpected HTTP status code received from server: {http_status}",
        )
    code = int(headers.get("grpc-status", "2"))
    if code != 0:
        raise _RpcError(code, unquote(headers.get("grpc-message", "")))
    if len(body) < 5:
        raise _RpcError(13, "response has no message")
    length = int.from_bytes(body[1:5], "big")
    return decode_health_status(bytes(body[5 : 5 + length]))


async def _grpc_probe(h: GRPCAction, target: ProbeTarget, timeout: float) -> ProbeResult:
    host = target.pod_ip  # a grpc probe has no host field: always the pod IP
    addr = format_hostport(host, h.port)
    within = f"{timeout:g}s"  # Go's time.Duration spelling
    try:
        async with asyncio.timeout(timeout):
            sock = await _connect(target, host, h.port)
    except TimeoutError:
        return ProbeResult(
            False, f"timeout: failed to connect service {_go_quote(addr)} within {within}"
        )
    except OSError as exc:
        return ProbeResult(
            False,
            f"timeout: failed to connect service {_go_quote(addr)} within {within}: "
            f"dial tcp {addr}: connect: {_os_error(exc)}",
        )
    try:
        async with asyncio.timeout(timeout):
            status = await _health_check(sock, addr, h.service, timeout)
    except TimeoutError:
        return ProbeResult(False, f"timeout: health rpc did not complete within {within}")
    except _RpcError as exc:
        if exc.code == 12:
            return ProbeResult(
                False,
                "this server doesn't implement the grpc health protocol "
                f"(grpc.health.v1.Health): {str(exc).split('desc = ', 1)[1]}",
            )
        return ProbeResult(False, f"error: health rpc probe failed: {exc}")
    except (OSError, ValueError, IndexError) as exc:
        return ProbeResult(False, f"error: health rpc probe failed: {exc}")
    except Exception as exc:  # h2's protocol errors
        return ProbeResult(False, f"error: health rpc probe failed: {type(exc).__name__}: {exc}")
    finally:
        sock.close()
    if status != 1:
        name = _SERVING_STATUS.get(status, str(status))
        return ProbeResult(False, f"service unhealthy (responded with {_go_quote(name)})")
    return ProbeResult(True, "service healthy")

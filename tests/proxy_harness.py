"""Shared pieces of the ambassador tests: the ambassador as a real process, backend servers run by
the test, raw-socket clients, and certificates."""

from __future__ import annotations

import datetime
import ipaddress
import json
import socket
import socketserver
import ssl
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

import podkit_harness
from log_agent_harness import ImageProcess, image_env


def free_port() -> int:
    return podkit_harness.free_port()


class Ambassador:
    """`python -m podkit.images.ambassador --config <file>`, started and waited for."""

    def __init__(
        self,
        tmp: Path,
        config: dict[str, Any],
        *,
        wait_ready: bool = True,
        env: dict[str, str] | None = None,
    ) -> None:
        self.admin_port = free_port()
        config = {"admin": {"listen": f"127.0.0.1:{self.admin_port}"}, **config}
        self.config_path = tmp / f"ambassador-{time.monotonic_ns()}.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.process = ImageProcess(
            "podkit.images.ambassador",
            ["--config", str(self.config_path)],
            image_env(**(env or {})),
            tmp,
        )
        if wait_ready:
            self.process.wait_for(lambda recs: any(r.get("msg") == "ready" for r in recs), 10.0)

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.admin + "/stats", timeout=5) as resp:
            return json.loads(resp.read())

    def metrics(self) -> str:
        with urllib.request.urlopen(self.admin + "/metrics", timeout=5) as resp:
            return resp.read().decode()

    def access_logs(self) -> list[dict[str, Any]]:
        return [r for r in self.process.records() if "status" in r and "listener" in r]

    def stop(self) -> tuple[int, float]:
        return self.process.terminate(timeout=10.0)


# -- a backend that says what it received ---------------------------------------------------


class EchoHandler(BaseHTTPRequestHandler):
    """GET/POST/... anything: 200 with a JSON body of the request as received.

    /status/<code>  answers that status        /slow/<ms>   waits, then answers
    /close          closes without answering  /chunked     answers with a chunked body
    /bytes/<n>      answers n bytes
    """

    protocol_version = "HTTP/1.1"
    server: EchoServer

    def setup(self) -> None:
        super().setup()
        # Without it the head and body writes meet the proxy's delayed ACK: 40 ms a response.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = _read_chunked(self.rfile)
        self.server.seen.append(
            {
                "method": self.command,
                "path": self.path,
                "headers": [[k, v] for k, v in self.headers.items()],
                "body": body.decode("latin-1"),
            }
        )
        parts = self.path.split("/")
        if self.path.startswith("/close"):
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if self.path.startswith("/slow/"):
            time.sleep(int(parts[2]) / 1000)
        status = int(parts[2]) if self.path.startswith("/status/") else 200
        if self.path.startswith("/bytes/"):
            out = b"x" * int(parts[2])
        else:
            out = json.dumps(
                {
                    "server": self.server.name,
                    "method": self.command,
                    "path": self.path,
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                    "body": body.decode("latin-1"),
                }
            ).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        if self.path.startswith("/chunked"):
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            if self.command != "HEAD":
                for i in range(0, len(out), 7):
                    piece = out[i : i + 7]
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                self.wfile.write(b"0\r\n\r\n")
            return
        if status in (204, 304):
            self.end_headers()
            return
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(out)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_OPTIONS = do_PATCH = _answer  # noqa: N815

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _read_chunked(rfile: Any) -> bytes:
    out = b""
    while True:
        size = int(rfile.readline().split(b";")[0], 16)
        if size == 0:
            while rfile.readline() not in (b"\r\n", b""):
                pass
            return out
        out += rfile.read(size)
        rfile.readline()


class BackgroundServer:
    """What the tests' socketserver servers share: served from a daemon thread, their port,
    and stop(). Put it first among the bases."""

    daemon_threads = True
    allow_reuse_address = True
    # socketserver's listen backlog is 5: a proxy opening 20 connections at once (after a
    # reload, its pool empty) would see SYNs dropped and retried a second later. A real
    # backend's is in the hundreds (nginx: 511).
    request_queue_size = 128
    server_address: Any

    def serve_in_background(self) -> None:
        threading.Thread(target=self.serve_forever, daemon=True).start()  # type: ignore[attr-defined]

    @property
    def port(self) -> int:
        return self.server_address[1]

    @property
    def address(self) -> str:
        return f"{self.server_address[0]}:{self.port}"

    def stop(self) -> None:
        self.shutdown()  # type: ignore[attr-defined]
        self.server_close()  # type: ignore[attr-defined]


class EchoServer(BackgroundServer, ThreadingHTTPServer):
    def __init__(self, name: str = "echo", port: int = 0, host: str = "127.0.0.1") -> None:
        super().__init__((host, port), EchoHandler)
        self.name = name
        self.seen: list[dict[str, Any]] = []
        self.serve_in_background()


class TcpBanner(BackgroundServer, socketserver.ThreadingTCPServer):
    """A server-speaks-first protocol (like SMTP): greets, then echoes lines back."""

    def __init__(self, banner: bytes = b"220 podkit-test ready\r\n") -> None:
        banner_ = banner

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                self.wfile.write(banner_)
                for line in self.rfile:
                    self.wfile.write(b"echo " + line)

        super().__init__(("127.0.0.1", 0), Handler)
        self.serve_in_background()


class Unanswering(BackgroundServer, socketserver.ThreadingTCPServer):
    """A hung backend: accepts connections and reads requests, never answers. `received`
    counts the request heads that came in (body-less requests)."""

    def __init__(self) -> None:
        server = self
        self.received = 0
        self.lock = threading.Lock()

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                pending = b""
                while True:
                    try:
                        data = self.request.recv(65536)
                    except OSError:
                        return
                    if not data:
                        return
                    pending += data
                    with server.lock:
                        server.received += pending.count(b"\r\n\r\n")
                    pending = (
                        pending[pending.rfind(b"\r\n\r\n") + 4 :]
                        if b"\r\n\r\n" in pending
                        else pending
                    )

        super().__init__(("127.0.0.1", 0), Handler)
        self.serve_in_background()


class TlsServerMixin:
    """Makes a socketserver server speak TLS: the handshake runs in the request's own thread
    (a stalled client holds up no one), the SNI names clients sent are kept in `server_names`,
    and failed handshakes are counted in `handshake_failures`."""

    tls: ssl.SSLContext
    server_names: list[str | None]
    handshake_failures: int

    def _setup_tls(self, cert: Path, key: Path) -> None:
        self.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.tls.load_cert_chain(str(cert), str(key))
        self.server_names = []
        self.handshake_failures = 0

        def remember(_sock: Any, name: str | None, _ctx: Any) -> None:
            self.server_names.append(name)

        self.tls.sni_callback = remember  # type: ignore[assignment]

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(5.0)
        try:
            conn = self.tls.wrap_socket(request, server_side=True)
        except OSError:
            self.handshake_failures += 1
            return
        conn.settimeout(None)
        try:
            super().finish_request(conn, client_address)  # type: ignore[misc]
        finally:
            conn.close()


class TlsEchoServer(TlsServerMixin, EchoServer):
    """EchoServer over HTTPS with the given certificate."""

    def __init__(self, cert: Path, key: Path, name: str = "tls-echo") -> None:
        self._setup_tls(cert, key)
        super().__init__(name)


class TlsTcpBanner(TlsServerMixin, TcpBanner):
    """TcpBanner over TLS with the given certificate."""

    def __init__(self, cert: Path, key: Path, banner: bytes = b"220 podkit-tls ready\r\n") -> None:
        self._setup_tls(cert, key)
        super().__init__(banner)


# -- clients --------------------------------------------------------------------------------


def raw_exchange(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send raw bytes, read until the server closes (or `timeout` passes); everything read."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1]) if response.startswith(b"HTTP/1.") else 0


# -- certificates ---------------------------------------------------------------------------


def make_ca(tmp: Path, name: str = "podkit test CA") -> tuple[Any, Any, Path]:
    """A CA key and certificate (the PEM written to tmp/<name>.pem)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    path = tmp / f"{name.replace(' ', '-')}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key, cert, path


def issue_cert(
    tmp: Path,
    ca: tuple[Any, Any, Path],
    names: list[str],
    stem: str,
    *,
    client: bool = False,
    key_type: str = "ec",
) -> tuple[Path, Path]:
    """A leaf certificate for `names` (DNS names or IPs) signed by `ca`: (cert path, key path).

    key_type "ec" (P-256) or "rsa" (2048 bits: lets a server offer RSA key exchange suites, so a
    test can show they are refused)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca_key, ca_cert, _ = ca
    key: Any
    if key_type == "rsa":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    else:
        key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = []
    for n in names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            sans.append(x509.DNSName(n))
    now = datetime.datetime.now(datetime.UTC)
    usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert_path = tmp / f"{stem}.crt"
    key_path = tmp / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def http_route(cluster: str = "app", **extra: Any) -> dict[str, Any]:
    return {"match": {"prefix": "/"}, "cluster": cluster, **extra}


def simple_config(
    port: int, endpoints: list[str], *, cluster: dict[str, Any] | None = None, **listener: Any
) -> dict[str, Any]:
    """One HTTP listener on `port` routing everything to cluster "app" over `endpoints`."""
    return {
        "access_log": {"enabled": True},
        "listeners": [
            {
                "name": "main",
                "listen": f"127.0.0.1:{port}",
                "routes": [http_route()],
                **listener,
            }
        ],
        "clusters": [
            {"name": "app", "endpoints": [{"address": e} for e in endpoints], **(cluster or {})}
        ],
    }


# -- failure-injection backends and helpers (tests/test_ambassador_safety.py) ---------------


def poll_until(predicate: Any, timeout: float, interval: float = 0.02) -> Any:
    """predicate()'s first truthy value, checked every `interval` until `timeout`; else None."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def read_until_closed(sock: socket.socket, timeout: float) -> tuple[bytes, str]:
    """Everything the peer sends until it closes: (bytes, "eof" | "reset" | "open"), "open"
    when `timeout` passed with the connection still up."""
    chunks = []
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return b"".join(chunks), "open"
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            return b"".join(chunks), "open"
        except ConnectionResetError:
            return b"".join(chunks), "reset"
        if not chunk:
            return b"".join(chunks), "eof"
        chunks.append(chunk)


class BackendHandler(BaseHTTPRequestHandler):
    """Answers every request with the server's `status` (or `overrides[path]`), a small JSON
    body, keep-alive; records (method, path) in `server.seen`."""

    protocol_version = "HTTP/1.1"
    server: ControlledBackend

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def handle(self) -> None:
        if self.server.killed:
            return  # accepted as it died: closed unanswered
        super().handle()

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        with self.server.lock:
            if self.server.killed:
                self.close_connection = True
                return
            self.server.seen.append((self.command, self.path))
            status = self.server.overrides.get(self.path, self.server.status)
            body = json.dumps({"server": self.server.name, "path": self.path}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_OPTIONS = _answer  # noqa: N815

    def log_message(self, format: str, *args: Any) -> None:
        pass


class ControlledBackend(BackgroundServer, ThreadingHTTPServer):
    """A backend the test steers: `status` for every path (mutable at any time), `overrides`
    per exact path (a health-check path, say), `seen` = (method, path) answered, and `kill()`:
    the process dying, not a polite stop (open connections are cut, requests not yet answered
    never are, new connections are refused)."""

    def __init__(self, name: str = "backend", status: int = 200) -> None:
        super().__init__(("127.0.0.1", 0), BackendHandler)
        self.name = name
        self.status = status
        self.overrides: dict[str, int] = {}
        self.seen: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self.killed = False
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        self.serve_in_background()

    def requests(self, method: str | None = None, path: str | None = None) -> int:
        """How many answered requests match `method` and `path` (None = any)."""
        return sum(
            1
            for m, p in list(self.seen)
            if (method is None or m == method) and (path is None or p == path)
        )

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._conns_lock:
            self._conns.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._conns_lock:
            self._conns.discard(request)
        super().shutdown_request(request)

    def kill(self) -> None:
        import contextlib

        with self.lock:
            self.killed = True
            with self._conns_lock:
                conns = list(self._conns)
            for conn in conns:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
        BackgroundServer.stop(self)

    def stop(self) -> None:
        if not self.killed:
            self.kill()


class Blackhole:
    """A port where connections hang: a listening socket whose accept queue is full (Linux drops
    further SYNs), so a connect neither succeeds nor is refused until the client gives up."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(0)
        self.host, self.port = self.sock.getsockname()
        self.fillers: list[socket.socket] = []
        for _ in range(2):  # backlog 0 still queues one; fill it, the next connect hangs
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", self.port))  # EINPROGRESS: the handshake goes on
            self.fillers.append(s)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def close(self) -> None:
        for s in self.fillers:
            s.close()
        self.sock.close()


class RawBackend(BackgroundServer, socketserver.ThreadingTCPServer):
    """A backend that misbehaves on purpose, per request path; `seen` = (connection number,
    path), so a test can tell which upstream connection carried which request.

    /ok              200, Content-Length 2, keep-alive
    /partial         Content-Length 100, 10 bytes, then close
    /partial-chunked a chunked body with one chunk and no last chunk, then close
    /partial-hang    Content-Length 100, 10 bytes, then silence (the connection stays open)
    /extra           Content-Length 2 but more bytes after them, keep-alive

    With `keepalive_timeout` set, a request that arrives on a connection idle for longer is
    not answered: the connection closes instead, as when a backend's keep-alive close crosses
    a request on the wire (the race, made certain).
    """

    def __init__(self, keepalive_timeout: float | None = None) -> None:
        backend = self
        self.seen: list[tuple[int, str]] = []
        self.raced: list[tuple[int, str]] = []  # requests met by a keep-alive close
        self.connections = 0
        self.keepalive_timeout = keepalive_timeout
        self._lock = threading.Lock()

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                sock: socket.socket = self.request
                with backend._lock:
                    backend.connections += 1
                    conn_id = backend.connections
                buf = b""
                idle_since = time.monotonic()

                def more() -> bool:
                    nonlocal buf
                    try:
                        data = sock.recv(65536)
                    except OSError:
                        return False
                    buf += data
                    return bool(data)

                while True:
                    while b"\r\n\r\n" not in buf:
                        if not more():
                            return
                    head, _, buf = buf.partition(b"\r\n\r\n")
                    path = head.split(b" ", 2)[1].decode("latin-1")
                    length = 0
                    for line in head.split(b"\r\n")[1:]:
                        name, _, value = line.partition(b":")
                        if name.strip().lower() == b"content-length":
                            length = int(value)
                    while len(buf) < length:
                        if not more():
                            return
                    buf = buf[length:]
                    limit = backend.keepalive_timeout
                    if limit is not None and time.monotonic() - idle_since > limit:
                        backend.raced.append((conn_id, path))
                        return
                    backend.seen.append((conn_id, path))
                    if not backend.respond(sock, path):
                        return
                    idle_since = time.monotonic()

        super().__init__(("127.0.0.1", 0), Handler)
        self.serve_in_background()

    def respond(self, sock: socket.socket, path: str) -> bool:
        """Answer one request; False to end the connection."""
        if path == "/partial":
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 10)
            return False
        if path == "/partial-chunked":
            sock.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
            return False
        if path == "/partial-hang":
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 10)
            while True:
                try:
                    if not sock.recv(65536):
                        return False
                except OSError:
                    return False
        if path == "/extra":
            sock.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 204 Smuggled\r\n\r\n"
            )
            return True
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        return True

    def connection_of(self, path: str) -> int:
        """The connection number that carried the last request for `path`."""
        return [c for c, p in self.seen if p == path][-1]


NGINX_CONF = """
worker_processes 1;
master_process off;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 256; }}
http {{
  access_log off;
  client_body_temp_path {dir}/client_body;
  proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi;
  scgi_temp_path {dir}/scgi;
  {http_extra}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      {location}
    }}
  }}
}}
"""


NGINX_HELLO = 'default_type text/plain; return 200 "hello from nginx\\n";'


class Nginx:
    """Debian's nginx as a backend (one process, `master_process off`), answering 200 to
    everything; `http_extra` goes into its http block (e.g. `keepalive_timeout 1s;`), `location`
    into its one location (e.g. a `proxy_pass`)."""

    def __init__(self, tmp: Path, http_extra: str = "", location: str = NGINX_HELLO) -> None:
        import subprocess

        self.port = free_port()
        self.dir = tmp / f"nginx-{self.port}"
        self.dir.mkdir()
        conf = self.dir / "nginx.conf"
        conf.write_text(
            NGINX_CONF.format(
                dir=self.dir, port=self.port, http_extra=http_extra, location=location
            )
        )
        self.proc = subprocess.Popen(
            [
                "/usr/sbin/nginx",
                "-p",
                f"{self.dir}/",
                "-e",
                str(self.dir / "error.log"),
                "-c",
                str(conf),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=(self.dir / "stderr.log").open("wb"),
        )

        def up() -> bool:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
            except OSError:
                return False
            return True

        if not poll_until(up, 5.0):
            self.stop()
            raise AssertionError(f"nginx did not start: {(self.dir / 'error.log').read_text()}")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except Exception:
                self.proc.kill()
                self.proc.wait(5)

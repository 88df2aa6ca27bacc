"""The ambassador's TLS, raw TCP and drain, as a user meets them: a real ambassador process, real
backends, and the clients people use (curl, openssl s_client, testssl.sh, Python's ssl).

Issue 5: "TLS: certificates per SNI name, ALPN, modern defaults (TLS 1.2+), optional
client-certificate verification (mTLS), TLS origination to upstreams with CA verification,
certificate files reloaded when they change"; raw TCP listeners for server-speaks-first protocols;
"SIGTERM drains (stop accepting, finish in-flight, configurable drain time)"; "TLS checked with
sslyze or testssl.sh".
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import socketserver
import ssl
import subprocess
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from podkit.proxy.config import ListenerTls
from podkit.proxy.tls import ServerTls
from proxy_harness import (
    Ambassador,
    BackgroundServer,
    EchoServer,
    TcpBanner,
    TlsEchoServer,
    TlsTcpBanner,
    free_port,
    issue_cert,
    make_ca,
    simple_config,
)

StartAmbassador = Callable[[dict[str, Any]], Ambassador]


# -- fixtures -------------------------------------------------------------------------------


@pytest.fixture
def start(tmp_path: Path) -> Iterator[StartAmbassador]:
    """Start ambassadors with `start(config)`; any still running at the end is killed."""
    started: list[Ambassador] = []

    def run(config: dict[str, Any]) -> Ambassador:
        amb = Ambassador(tmp_path, config)
        started.append(amb)
        return amb

    yield run
    for amb in started:
        amb.process.kill()


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    server = EchoServer("backend")
    yield server
    server.stop()


@pytest.fixture
def ca(tmp_path: Path) -> tuple[Any, Any, Path]:
    return make_ca(tmp_path, "server CA")


@pytest.fixture
def server_cert(tmp_path: Path, ca: tuple[Any, Any, Path]) -> tuple[Path, Path]:
    return issue_cert(tmp_path, ca, ["127.0.0.1", "localhost"], "server")


def tls_listener(port: int, cert: tuple[Path, Path], backend: str, **tls: Any) -> dict[str, Any]:
    """One https listener with one certificate, routing everything to `backend`."""
    return simple_config(
        port,
        [backend],
        protocol="https",
        tls={"certificates": [{"cert_file": str(cert[0]), "key_file": str(cert[1])}], **tls},
    )


@dataclass
class HttpsProxy:
    port: int
    ca_file: Path
    echo: EchoServer
    ambassador: Ambassador


@pytest.fixture(scope="module")
def https_proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpsProxy]:
    """One https listener with an RSA certificate (so RSA key exchange suites could be offered,
    and a test can show they are not) in front of an echo backend, shared by the read-only
    checks of this module."""
    tmp = tmp_path_factory.mktemp("https")
    ca = make_ca(tmp, "module CA")
    cert = issue_cert(tmp, ca, ["127.0.0.1", "localhost"], "rsa-server", key_type="rsa")
    backend = EchoServer("backend")
    port = free_port()
    amb = Ambassador(tmp, tls_listener(port, cert, backend.address))
    yield HttpsProxy(port, ca[2], backend, amb)
    amb.process.kill()
    backend.stop()


# -- clients --------------------------------------------------------------------------------


@dataclass
class Handshake:
    """What `openssl s_client` reports about one handshake."""

    rc: int
    output: str

    @property
    def cipher(self) -> str:
        m = re.search(r"^New, (\S+), Cipher is (\S+)", self.output, re.M)
        return m.group(2) if m else "(NONE)"

    @property
    def protocol(self) -> str:
        """The version the session runs (or, on a failed handshake, the one the client tried)."""
        # TLS 1.2 and older print an SSL-Session block; TLS 1.3 sessions come later, so there
        # the "New, <version>, Cipher is" line (the cipher's version, which is the session's).
        m = re.search(r"^\s+Protocol\s*: (\S+)", self.output, re.M) or re.search(
            r"^New, (\S+), Cipher is", self.output, re.M
        )
        return m.group(1) if m else "(NONE)"

    @property
    def ok(self) -> bool:
        return self.rc == 0 and self.cipher != "(NONE)"

    @property
    def alpn(self) -> str | None:
        m = re.search(r"^ALPN protocol: (\S+)", self.output, re.M)
        return m.group(1) if m else None

    @property
    def alert(self) -> int | None:
        """The number of the TLS alert the server sent, if it sent one."""
        m = re.search(r"SSL alert number (\d+)", self.output)
        return int(m.group(1)) if m else None

    @property
    def offered(self) -> bool:
        """The client got as far as sending a ClientHello (it accepted its own options)."""
        return "CONNECTED(" in self.output


def s_client(port: int, *args: str, ca_file: Path | None = None) -> Handshake:
    cmd = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", *args]
    if ca_file is not None:
        cmd += ["-CAfile", str(ca_file), "-verify_return_error"]
    if "-servername" not in args:
        cmd.append("-noservername")
    proc = subprocess.run(cmd, input="", capture_output=True, text=True, timeout=15, check=False)
    return Handshake(proc.returncode, proc.stdout + proc.stderr)


@dataclass
class CurlResult:
    rc: int
    status: int
    body: str
    stderr: str


def curl(url: str, *args: str) -> CurlResult:
    proc = subprocess.run(
        ["curl", "-sS", "--max-time", "5", "-w", "\n%{http_code}", *args, url],
        capture_output=True,
        text=True,
        timeout=15,
        check=False,
    )
    body, _, code = proc.stdout.rpartition("\n")
    return CurlResult(proc.returncode, int(code or 0), body, proc.stderr)


def peer_cert(port: int, server_name: str | None = None) -> x509.Certificate:
    """The certificate the listener presents to a client sending `server_name` (None: no SNI)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname=server_name) as sock,
    ):
        der = sock.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def serial_of(cert_file: Path) -> int:
    return x509.load_pem_x509_certificate(cert_file.read_bytes()).serial_number


def client_context(ca_file: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca_file))


def wait_until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def recv_until(sock: socket.socket, marker: bytes, timeout: float = 5.0) -> bytes:
    """Read until `marker` has arrived (or EOF/timeout: then the test's assertion says why)."""
    sock.settimeout(timeout)
    data = b""
    deadline = time.monotonic() + timeout
    while marker not in data and time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        if not chunk:
            break
        data += chunk
    return data


def recv_to_eof(sock: socket.socket, timeout: float = 5.0) -> tuple[bytes, bool]:
    """Everything until the peer closes: (data, closed). A TLS peer that closes without
    close_notify, or a reset, counts as closed too."""
    sock.settimeout(timeout)
    data = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            return data, False
        except (ssl.SSLEOFError, ConnectionResetError):
            return data, True
        if not chunk:
            return data, True
        data += chunk
    return data, False


def read_response(sock: socket.socket, timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response with a Content-Length body: (status, lower-case headers, body)."""
    head = recv_until(sock, b"\r\n\r\n", timeout)
    assert b"\r\n\r\n" in head, f"no complete response head: {head!r}"
    head, _, body = head.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    sock.settimeout(timeout)
    while len(body) < length:
        more = sock.recv(65536)
        if not more:
            break
        body += more
    return status, headers, body


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except ConnectionRefusedError:
        return True
    return False


# == 1. TLS termination ======================================================================


def test_https_listener_answers_with_the_backend_and_says_https(
    https_proxy: HttpsProxy,
) -> None:
    res = curl(
        f"https://localhost:{https_proxy.port}/hello?x=1", "--cacert", str(https_proxy.ca_file)
    )
    assert res.rc == 0, res.stderr
    assert res.status == 200
    seen = json.loads(res.body)
    assert seen["server"] == "backend"
    assert seen["path"] == "/hello?x=1"
    assert seen["headers"]["x-forwarded-proto"] == "https"


def test_tls_1_2_and_1_3_are_accepted_and_1_1_is_refused(
    https_proxy: HttpsProxy, tmp_path: Path, ca: tuple[Any, Any, Path]
) -> None:
    port, ca_file = https_proxy.port, https_proxy.ca_file
    v12 = s_client(port, "-tls1_2", ca_file=ca_file)
    assert v12.ok and v12.protocol == "TLSv1.2", v12.output
    v13 = s_client(port, "-tls1_3", ca_file=ca_file)
    assert v13.ok and v13.protocol == "TLSv1.3", v13.output

    legacy = ("-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0")
    v11 = s_client(port, *legacy)
    assert v11.offered, v11.output
    assert not v11.ok, f"TLS 1.1 was accepted:\n{v11.output}"

    # The same client does reach TLS 1.1 with a server that allows it: the refusal above is
    # the ambassador's, not the client's own.
    old = TlsEchoServer(*issue_cert(tmp_path, ca, ["127.0.0.1"], "legacy"), name="legacy")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # that is the point here
            old.tls.minimum_version = ssl.TLSVersion.TLSv1_1
        old.tls.set_ciphers("DEFAULT:@SECLEVEL=0")
        control = s_client(old.port, *legacy)
    finally:
        old.stop()
    assert control.ok and control.protocol == "TLSv1.1", control.output


@pytest.mark.parametrize(
    "cipher",
    [
        "AES128-SHA",  # RSA key exchange (no forward secrecy), CBC
        "AES256-GCM-SHA384",  # RSA key exchange: AEAD but no forward secrecy
        "AES128-GCM-SHA256",  # the same
        "ECDHE-RSA-AES128-SHA",  # forward secret but CBC (Lucky13 family)
        "ECDHE-RSA-AES256-SHA384",  # the same
        "ECDHE-RSA-NULL-SHA",  # no encryption at all
        "DHE-RSA-AES128-SHA",  # CBC with finite-field DH
    ],
)
def test_weak_tls_1_2_ciphers_are_refused(https_proxy: HttpsProxy, cipher: str) -> None:
    result = s_client(https_proxy.port, "-tls1_2", "-cipher", f"{cipher}@SECLEVEL=0")
    assert result.offered, f"the client could not offer {cipher}:\n{result.output}"
    assert not result.ok, f"{cipher} was accepted:\n{result.output}"


def test_a_strong_tls_1_2_cipher_is_accepted(https_proxy: HttpsProxy) -> None:
    # The counterpart of the refusals above: the same way of asking does get a good suite.
    result = s_client(
        https_proxy.port, "-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256",
        ca_file=https_proxy.ca_file,
    )  # fmt: skip
    assert result.ok and result.cipher == "ECDHE-RSA-AES128-GCM-SHA256", result.output


def test_alpn_picks_http_1_1_when_h2_is_offered_first(https_proxy: HttpsProxy) -> None:
    result = s_client(https_proxy.port, "-alpn", "h2,http/1.1", ca_file=https_proxy.ca_file)
    assert result.ok, result.output
    assert result.alpn == "http/1.1", result.output
    # And curl asking for h2 speaks HTTP/1.1 through it.
    proc = subprocess.run(
        [
            "curl", "-sS", "--max-time", "5", "--http2", "-o", "/dev/null",
            "-w", "%{http_version} %{http_code}", "--cacert", str(https_proxy.ca_file),
            f"https://localhost:{https_proxy.port}/alpn",
        ],
        capture_output=True, text=True, timeout=15, check=False,
    )  # fmt: skip
    assert proc.stdout == "1.1 200", proc.stderr


def test_min_version_1_3_refuses_tls_1_2(
    start: StartAmbassador, echo: EchoServer, server_cert: tuple[Path, Path], ca: Any
) -> None:
    port = free_port()
    start(tls_listener(port, server_cert, echo.address, min_version="1.3"))
    v12 = s_client(port, "-tls1_2", ca_file=ca[2])
    assert v12.offered and not v12.ok, v12.output
    v13 = s_client(port, "-tls1_3", ca_file=ca[2])
    assert v13.ok and v13.protocol == "TLSv1.3", v13.output
    res = curl(f"https://localhost:{port}/", "--cacert", str(ca[2]), "--tls-max", "1.2")
    assert res.rc != 0 and res.status == 0
    assert curl(f"https://localhost:{port}/", "--cacert", str(ca[2])).status == 200


# == 2. SNI ==================================================================================


def test_sni_picks_the_certificate_for_the_name(
    start: StartAmbassador, echo: EchoServer, tmp_path: Path, ca: tuple[Any, Any, Path]
) -> None:
    a = issue_cert(tmp_path, ca, ["a.test"], "a")
    b = issue_cert(tmp_path, ca, ["*.b.test"], "b")
    default = issue_cert(tmp_path, ca, ["default.test", "127.0.0.1"], "default")
    port = free_port()

    def cert(pair: tuple[Path, Path], names: list[str]) -> dict[str, Any]:
        return {"cert_file": str(pair[0]), "key_file": str(pair[1]), "server_names": names}

    # The default (no names) is listed last: it is the default for having no names, not for
    # its place in the list.
    config = simple_config(
        port,
        [echo.address],
        protocol="https",
        tls={"certificates": [cert(a, ["a.test"]), cert(b, ["*.b.test"]), cert(default, [])]},
    )
    start(config)

    # curl checks the name against the certificate, so a 200 means the right one was served.
    for host in ("a.test", "x.b.test"):
        res = curl(
            f"https://{host}:{port}/",
            "--resolve", f"{host}:{port}:127.0.0.1", "--cacert", str(ca[2]),
        )  # fmt: skip
        assert res.rc == 0 and res.status == 200, (host, res.stderr)
        assert json.loads(res.body)["headers"]["host"] == f"{host}:{port}"

    expected = {
        "a.test": a,
        "A.Test": a,  # names are case-insensitive
        "x.b.test": b,
        "y.b.test": b,
        "b.test": default,  # *.b.test does not cover b.test itself
        "y.x.b.test": default,  # nor two labels
        "unknown.test": default,
        None: default,  # no SNI at all (a client connecting by IP)
    }
    for name, pair in expected.items():
        assert peer_cert(port, name).serial_number == serial_of(pair[0]), name


# == 3. mTLS =================================================================================


@pytest.fixture
def client_certs(tmp_path: Path) -> dict[str, Any]:
    client_ca = make_ca(tmp_path, "client CA")
    stranger_ca = make_ca(tmp_path, "stranger CA")
    return {
        "ca_file": client_ca[2],
        "good": issue_cert(tmp_path, client_ca, ["client-1"], "client-good", client=True),
        "stranger": issue_cert(tmp_path, stranger_ca, ["client-1"], "client-bad", client=True),
    }


@pytest.mark.parametrize("tls_max", ["1.2", "1.3"])
def test_mtls_required_lets_in_only_clients_with_a_certificate_from_the_ca(
    start: StartAmbassador,
    echo: EchoServer,
    server_cert: tuple[Path, Path],
    ca: Any,
    client_certs: dict[str, Any],
    tls_max: str,
) -> None:
    port = free_port()
    start(
        tls_listener(
            port,
            server_cert,
            echo.address,
            client_ca_file=str(client_certs["ca_file"]),
            require_client_cert=True,
        )
    )
    url = f"https://localhost:{port}/mtls"
    base = ("--cacert", str(ca[2]), "--tls-max", tls_max)

    def with_cert(which: str) -> tuple[str, ...]:
        crt, key = client_certs[which]
        return ("--cert", str(crt), "--key", str(key))

    anonymous = curl(url, *base)
    assert anonymous.rc != 0 and anonymous.status == 0, anonymous
    stranger = curl(url, *base, *with_cert("stranger"))
    assert stranger.rc != 0 and stranger.status == 0, stranger
    assert echo.seen == []  # neither reached the backend

    good = curl(url, *base, *with_cert("good"))
    assert good.rc == 0 and good.status == 200, good.stderr
    assert [r["path"] for r in echo.seen] == ["/mtls"]


def test_mtls_optional_lets_in_clients_with_and_without_a_certificate(
    start: StartAmbassador,
    echo: EchoServer,
    server_cert: tuple[Path, Path],
    ca: Any,
    client_certs: dict[str, Any],
) -> None:
    port = free_port()
    start(
        tls_listener(
            port,
            server_cert,
            echo.address,
            client_ca_file=str(client_certs["ca_file"]),
            require_client_cert=False,
        )
    )
    url = f"https://localhost:{port}/"
    crt, key = client_certs["good"]
    assert curl(url, "--cacert", str(ca[2])).status == 200
    assert curl(url, "--cacert", str(ca[2]), "--cert", str(crt), "--key", str(key)).status == 200
    # A certificate that is presented is still checked: a forged one is no better than none
    # only if it is refused.
    crt, key = client_certs["stranger"]
    res = curl(url, "--cacert", str(ca[2]), "--cert", str(crt), "--key", str(key))
    assert res.rc != 0 and res.status == 0, res


# == 4. certificate reload ===================================================================


def _install(src: tuple[Path, Path], dst: tuple[Path, Path]) -> None:
    """Put a certificate and key in place the way a deploy tool does: each file replaced
    atomically (key first, so the pair is never a new certificate with an old key for long)."""
    for s, d in ((src[1], dst[1]), (src[0], dst[0])):
        tmp = d.with_suffix(".new")
        shutil.copyfile(s, tmp)
        os.replace(tmp, d)


def test_certificate_files_are_reloaded_and_a_broken_file_keeps_the_old_one(
    start: StartAmbassador, echo: EchoServer, tmp_path: Path, ca: tuple[Any, Any, Path]
) -> None:
    live = (tmp_path / "live.crt", tmp_path / "live.key")
    first = issue_cert(tmp_path, ca, ["127.0.0.1", "first.test"], "first")
    second = issue_cert(tmp_path, ca, ["127.0.0.1", "second.test"], "second")
    third = issue_cert(tmp_path, ca, ["127.0.0.1", "third.test"], "third")
    _install(first, live)
    port = free_port()
    amb = start(tls_listener(port, live, echo.address))
    assert peer_cert(port).serial_number == serial_of(first[0])

    # A keep-alive connection opened before the change.
    before = http.client.HTTPSConnection("127.0.0.1", port, context=client_context(ca[2]))
    before.request("GET", "/before")
    assert before.getresponse().read() and before.sock is not None

    _install(second, live)
    wait_until(
        lambda: peer_cert(port).serial_number == serial_of(second[0]),
        5.0,
        "new connections to get the new certificate",
    )
    assert curl(f"https://127.0.0.1:{port}/", "--cacert", str(ca[2])).status == 200
    # The old connection still works, on the certificate it was opened with.
    before.request("GET", "/still-open")
    resp = before.getresponse()
    assert resp.status == 200 and json.loads(resp.read())["path"] == "/still-open"
    der = before.sock.getpeercert(binary_form=True)
    assert der is not None
    assert x509.load_der_x509_certificate(der).serial_number == serial_of(first[0])
    before.close()

    # A broken file: an error in the log, and the last good certificate keeps serving.
    errors_before = len([r for r in amb.process.records() if r.get("level") == "error"])
    tmp = live[0].with_suffix(".new")
    tmp.write_text("-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n")
    os.replace(tmp, live[0])
    error = amb.process.wait_for(
        lambda recs: [r for r in recs if r.get("level") == "error"][errors_before:], 5.0
    )[0]
    assert "certificate" in error["msg"], error
    assert str(error.get("listener")) == "main", error
    for _ in range(3):
        assert peer_cert(port).serial_number == serial_of(second[0])
    assert curl(f"https://127.0.0.1:{port}/", "--cacert", str(ca[2])).status == 200
    assert amb.process.proc.poll() is None

    # Fixing the file is picked up too.
    _install(third, live)
    wait_until(
        lambda: peer_cert(port).serial_number == serial_of(third[0]),
        5.0,
        "the repaired certificate to be served",
    )


# == 5. TLS origination ======================================================================


def test_tls_to_upstreams_verifies_the_backend(
    start: StartAmbassador, tmp_path: Path, ca: tuple[Any, Any, Path]
) -> None:
    other_ca = make_ca(tmp_path, "other CA")
    trusted = TlsEchoServer(*issue_cert(tmp_path, ca, ["127.0.0.1"], "up-trusted"), "trusted")
    stranger = TlsEchoServer(*issue_cert(tmp_path, other_ca, ["127.0.0.1"], "up-other"), "other")
    named = TlsEchoServer(*issue_cert(tmp_path, ca, ["backend.internal"], "up-named"), "named")
    try:
        port = free_port()
        ca_file = str(ca[2])

        def cluster(name: str, backend: TlsEchoServer, **tls: Any) -> dict[str, Any]:
            return {"name": name, "endpoints": [{"address": backend.address}], "tls": tls}

        routes = ["trusted", "untrusted", "noverify", "named", "unnamed"]
        start(
            {
                "listeners": [
                    {
                        "name": "main",
                        "listen": f"127.0.0.1:{port}",
                        "routes": [{"match": {"prefix": f"/{r}"}, "cluster": r} for r in routes],
                    }
                ],
                "clusters": [
                    cluster("trusted", trusted, ca_file=ca_file),
                    cluster("untrusted", stranger, ca_file=ca_file),
                    cluster("noverify", stranger, verify=False),
                    cluster("named", named, ca_file=ca_file, server_name="backend.internal"),
                    cluster("unnamed", named, ca_file=ca_file),
                ],
            }
        )
        base = f"http://127.0.0.1:{port}"

        res = curl(base + "/trusted")
        assert res.status == 200, res
        assert json.loads(res.body)["server"] == "trusted"  # only reachable over TLS

        res = curl(base + "/untrusted")
        assert res.status == 503, res
        assert "TLS" in res.body and "certificate" in res.body.lower(), res.body
        assert stranger.seen == [] and stranger.handshake_failures >= 1

        res = curl(base + "/noverify")
        assert res.status == 200, res
        assert json.loads(res.body)["server"] == "other"

        res = curl(base + "/named")
        assert res.status == 200, res
        assert json.loads(res.body)["server"] == "named"
        assert "backend.internal" in named.server_names  # sent as SNI

        # Without server_name the name checked is the endpoint's (127.0.0.1): not in the cert.
        seen = len(named.seen)
        res = curl(base + "/unnamed")
        assert res.status == 503, res
        assert "TLS" in res.body, res.body
        assert len(named.seen) == seen
    finally:
        for server in (trusted, stranger, named):
            server.stop()


def test_tcp_listener_originates_tls_with_server_name(
    start: StartAmbassador, tmp_path: Path, ca: tuple[Any, Any, Path]
) -> None:
    """A tcp listener to a cluster with tls: the same server_name rules as HTTP clusters."""
    backend = TlsTcpBanner(*issue_cert(tmp_path, ca, ["backend.internal"], "tcp-named"))
    try:
        port = free_port()
        start(
            {
                "listeners": [
                    {"name": "tcp", "listen": f"127.0.0.1:{port}", "protocol": "tcp",
                     "cluster": "smtp"}
                ],
                "clusters": [
                    {
                        "name": "smtp",
                        "endpoints": [{"address": f"127.0.0.1:{backend.port}"}],
                        "tls": {"ca_file": str(ca[2]), "server_name": "backend.internal"},
                    }
                ],
            }
        )  # fmt: skip
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            greeting = recv_until(sock, b"\r\n")
            assert greeting == b"220 podkit-tls ready\r\n", (
                f"the backend saw SNI {backend.server_names} and "
                f"{backend.handshake_failures} failed handshakes"
            )
            sock.sendall(b"EHLO me\r\n")
            assert recv_until(sock, b"me\r\n") == b"echo EHLO me\r\n"
        assert "backend.internal" in backend.server_names
    finally:
        backend.stop()


# == 6. raw TCP ==============================================================================


def tcp_config(port: int, backend_port: int, **listener: Any) -> dict[str, Any]:
    return {
        "listeners": [
            {
                "name": "tcp",
                "listen": f"127.0.0.1:{port}",
                "protocol": "tcp",
                "cluster": "backend",
                **listener,
            }
        ],
        "clusters": [{"name": "backend", "endpoints": [{"address": f"127.0.0.1:{backend_port}"}]}],
    }


@pytest.fixture
def banner() -> Iterator[TcpBanner]:
    server = TcpBanner()
    yield server
    server.stop()


def test_tcp_listener_passes_a_server_speaks_first_protocol(
    start: StartAmbassador, banner: TcpBanner
) -> None:
    port = free_port()
    start(tcp_config(port, banner.port))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        # Nothing sent yet: the backend's greeting must still come through.
        assert recv_until(sock, b"\r\n", timeout=3) == b"220 podkit-test ready\r\n"
        sock.sendall(b"HELO a\r\nHELO b\r\n")
        assert recv_until(sock, b"b\r\n") == b"echo HELO a\r\necho HELO b\r\n"


class _CountToEof(BackgroundServer, socketserver.ThreadingTCPServer):
    """Reads until the client's EOF (or, given `expect`, until that many bytes came), only then
    answers how much it got, and closes."""

    def __init__(self, expect: int | None = None) -> None:
        self.received = 0  # so far, over all connections
        outer = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                total = 0
                while expect is None or total < expect:
                    chunk = self.request.recv(65536)
                    if not chunk:
                        break
                    total += len(chunk)
                    outer.received += len(chunk)
                self.request.sendall(b"got %d bytes\n" % total)

        super().__init__(("127.0.0.1", 0), Handler)
        self.serve_in_background()


@contextlib.contextmanager
def _unanswering_port() -> Iterator[int]:
    """A port whose connection attempts hang (the SYN is dropped, as by a firewall or a host that
    is down): a listener with a backlog of 0 whose one queue slot is already taken."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            yield port


def _slow_start_config(port: int, backend_port: int, dead_port: int) -> dict[str, Any]:
    """A tcp listener whose first connection attempt goes (weight 2 against 1: the first pick of
    smooth weighted round robin) to a port that does not answer and gives up after 0.5 s; the
    second goes to the backend. For half a second the client is connected and the upstream is
    not."""
    config = tcp_config(port, backend_port)
    config["clusters"][0]["endpoints"] = [
        {"address": f"127.0.0.1:{dead_port}", "weight": 2},
        {"address": f"127.0.0.1:{backend_port}", "weight": 1},
    ]
    config["clusters"][0]["timeouts"] = {"connect": 0.5}
    return config


def _upstream_connections(amb: Ambassador) -> int:
    return int(amb.stats()["clusters"]["backend"]["connections"])


class _SpeaksThenListens(BackgroundServer, socketserver.ThreadingTCPServer):
    """Says its piece, closes its sending side, then keeps reading until the client's EOF."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        outer = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                self.request.sendall(b"bye\n")
                self.request.shutdown(socket.SHUT_WR)
                data = b""
                while chunk := self.request.recv(65536):
                    data += chunk
                outer.received.append(data)

        super().__init__(("127.0.0.1", 0), Handler)
        self.serve_in_background()


def test_tcp_half_close_from_the_client(start: StartAmbassador) -> None:
    backend = _CountToEof()
    try:
        port = free_port()
        amb = start(tcp_config(port, backend.port))
        payload = os.urandom(64 * 1024)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            wait_until(lambda: _upstream_connections(amb) == 1, 5.0, "the upstream connection")
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
            # The answer only exists after the backend saw our EOF: it must still reach us.
            data, closed = recv_to_eof(sock)
        assert data == b"got %d bytes\n" % len(payload)
        assert closed
    finally:
        backend.stop()


def test_tcp_client_eof_before_the_upstream_is_up_is_passed_on(start: StartAmbassador) -> None:
    """`printf 'QUIT\\r\\n' | nc -N host port`: the client has said everything and shut down
    its side before the ambassador's upstream connection is up; the EOF must still reach the
    backend once it is, or the backend waits for more forever."""
    backend = _CountToEof()
    try:
        with _unanswering_port() as dead_port:
            port = free_port()
            amb = start(_slow_start_config(port, backend.port, dead_port))
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.sendall(b"QUIT\r\n")
                sock.shutdown(socket.SHUT_WR)
                data, closed = recv_to_eof(sock, timeout=3.0)
            # The scenario happened: the first attempt went to the port that does not answer.
            assert amb.stats()["clusters"]["backend"]["connect_failures"] == 1
        assert data == b"got 6 bytes\n", f"the backend got {backend.received} bytes, no EOF"
        assert closed
    finally:
        backend.stop()


def test_tcp_client_talking_before_the_upstream_is_up_is_not_stalled(
    start: StartAmbassador,
) -> None:
    """A client that sends a lot at once (an upload, a replayed queue) while the upstream
    connection is still being set up: what arrives meanwhile is held back (up to a limit, then
    the client is paused), and everything flows once the upstream is there."""
    size = 1 << 20
    backend = _CountToEof(expect=size)
    try:
        with _unanswering_port() as dead_port:
            port = free_port()
            amb = start(_slow_start_config(port, backend.port, dead_port))
            payload = os.urandom(size)
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sent: list[BaseException | None] = []

                def send() -> None:
                    try:
                        sock.sendall(payload)
                        sent.append(None)
                    except OSError as exc:
                        sent.append(exc)

                sender = threading.Thread(target=send, daemon=True)
                sender.start()
                reply = recv_until(sock, b"\n", timeout=3.0)
                sender.join(2.0)
            assert amb.stats()["clusters"]["backend"]["connect_failures"] == 1
        assert reply == b"got %d bytes\n" % size, (
            f"the backend got {backend.received} of {size} bytes; sender: {sent}"
        )
    finally:
        backend.stop()


def test_tcp_half_close_from_the_server(start: StartAmbassador) -> None:
    backend = _SpeaksThenListens()
    try:
        port = free_port()
        start(tcp_config(port, backend.port))
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            data, closed = recv_to_eof(sock)
            assert (data, closed) == (b"bye\n", True)
            # Our side is still open: what we say now still reaches the backend.
            sock.sendall(b"late words\n")
            sock.shutdown(socket.SHUT_WR)
            wait_until(lambda: backend.received, 5.0, "the backend to read to EOF")
        assert backend.received == [b"late words\n"]
    finally:
        backend.stop()


def test_tcp_listener_with_tls_passes_plain_bytes_to_the_backend(
    start: StartAmbassador, banner: TcpBanner, server_cert: tuple[Path, Path], ca: Any
) -> None:
    port = free_port()
    cert = {"cert_file": str(server_cert[0]), "key_file": str(server_cert[1])}
    start(tcp_config(port, banner.port, tls={"certificates": [cert]}))
    ctx = client_context(ca[2])
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname="localhost") as sock,
    ):
        assert recv_until(sock, b"\r\n") == b"220 podkit-test ready\r\n"
        # The backend echoes lines: it can only do so if it got our bytes decrypted.
        sock.sendall(b"HELO tls\r\n")
        assert recv_until(sock, b"tls\r\n") == b"echo HELO tls\r\n"


# == 7. drain on SIGTERM =====================================================================


def _open(port: int, scheme: str, ca_file: Path) -> socket.socket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    if scheme == "https":
        return client_context(ca_file).wrap_socket(raw, server_hostname="localhost")
    return raw


def _listener(port: int, scheme: str, backend: str, cert: tuple[Path, Path]) -> dict[str, Any]:
    if scheme == "https":
        config = tls_listener(port, cert, backend)
    else:
        config = simple_config(port, [backend])
    return {**config, "drain_time": 5}


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_sigterm_finishes_the_request_in_flight_and_stops_accepting(
    start: StartAmbassador,
    echo: EchoServer,
    server_cert: tuple[Path, Path],
    ca: Any,
    scheme: str,
) -> None:
    port = free_port()
    amb = start(_listener(port, scheme, echo.address, server_cert))
    with _open(port, scheme, ca[2]) as sock:
        sock.sendall(b"GET /slow/1500 HTTP/1.1\r\nHost: app\r\n\r\n")
        wait_until(lambda: echo.seen, 5.0, "the backend to get the slow request")
        sent = time.monotonic()
        amb.process.proc.send_signal(signal.SIGTERM)

        wait_until(lambda: refused(port), 1.0, "new connections to be refused")
        assert time.monotonic() - sent < 1.0  # long before the slow response is due

        status, headers, body = read_response(sock, timeout=5.0)
        assert status == 200
        assert headers.get("connection", "").lower() == "close"
        assert json.loads(body)["path"] == "/slow/1500"
        _, closed = recv_to_eof(sock, timeout=2.0)
        assert closed

    code = amb.process.proc.wait(timeout=10)
    elapsed = time.monotonic() - sent
    assert code == 0, amb.process.stderr()
    assert elapsed < 3.0, f"exited {elapsed:.1f} s after SIGTERM (drain_time 5, request 1.5 s)"


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_sigterm_closes_idle_keepalive_connections_at_once(
    start: StartAmbassador,
    echo: EchoServer,
    server_cert: tuple[Path, Path],
    ca: Any,
    scheme: str,
) -> None:
    port = free_port()
    amb = start(_listener(port, scheme, echo.address, server_cert))
    with _open(port, scheme, ca[2]) as sock:
        sock.sendall(b"GET /first HTTP/1.1\r\nHost: app\r\n\r\n")
        status, headers, _ = read_response(sock)
        assert status == 200 and headers.get("connection", "").lower() != "close"

        sent = time.monotonic()
        amb.process.proc.send_signal(signal.SIGTERM)
        _, closed = recv_to_eof(sock, timeout=1.0)
        assert closed, "the idle keep-alive connection was still open 1 s after SIGTERM"

    code = amb.process.proc.wait(timeout=10)
    elapsed = time.monotonic() - sent
    assert code == 0, amb.process.stderr()
    assert elapsed < 1.5, f"exited {elapsed:.1f} s after SIGTERM: it waited out drain_time"


# == 8. testssl.sh ===========================================================================

TESTSSL = "testssl"  # Debian's testssl.sh, installed by make


def test_testssl_finds_only_modern_protocols_and_ciphers(
    https_proxy: HttpsProxy, tmp_path: Path
) -> None:
    """testssl.sh -p (protocols) -E (every cipher, per protocol, over raw sockets, so ciphers
    the local openssl lacks are tried too): about 15 s."""
    report = tmp_path / "testssl.json"
    proc = subprocess.run(
        [
            TESTSSL, "--quiet", "--color", "0", "--warnings", "batch", "--nodns", "none",
            "-p", "-E", "--jsonfile", str(report), f"https://127.0.0.1:{https_proxy.port}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )  # fmt: skip
    assert report.exists(), proc.stdout + proc.stderr
    findings = json.loads(report.read_text())
    by_id = {f["id"]: f for f in findings}

    for proto in ("SSLv2", "SSLv3", "TLS1", "TLS1_1"):
        assert by_id[proto]["finding"].startswith("not offered"), by_id[proto]
    for proto in ("TLS1_2", "TLS1_3"):
        assert by_id[proto]["finding"].startswith("offered"), by_id[proto]

    tls12 = [f["finding"].split() for f in findings if f["id"].startswith("cipher-tls1_2_")]
    tls13 = [f for f in findings if f["id"].startswith("cipher-tls1_3_")]
    assert tls12 and tls13, proc.stdout
    for fields in tls12:
        # "TLS 1.2 xc02f ECDHE-RSA-AES128-GCM-SHA256 ECDH 253 AESGCM 128 TLS_ECDHE_..."
        name, kx, enc = fields[3], fields[4], fields[6]
        assert kx in ("ECDH", "DH"), f"{name}: key exchange without forward secrecy"
        assert enc in ("AESGCM", "ChaCha20", "AESCCM"), f"{name}: not an AEAD cipher"
    older = [
        f["id"]
        for f in findings
        if f["id"].startswith("cipher")
        and not f["id"].startswith(("cipher-tls1_2_", "cipher-tls1_3_"))
    ]
    assert older == [], "ciphers offered with SSL or TLS 1.0/1.1"

    bad = [f for f in findings if f["severity"] in ("HIGH", "CRITICAL", "FATAL")]
    assert bad == [], bad


def test_an_unreadable_certificate_or_key_is_named(tmp_path: Path) -> None:
    """OpenSSL says only "PEM lib" or "No such file": the error says which files."""
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert.write_text("not a certificate\n")
    config = ListenerTls.model_validate({"certificates": [{"cert_file": cert, "key_file": key}]})
    with pytest.raises(OSError, match=f"certificate {cert}, key {key}: .*PEM lib"):
        ServerTls(config)
    cert.unlink()
    with pytest.raises(OSError, match=f"certificate {cert}, key {key}: No such file"):
        ServerTls(config)

"""Probes against real servers and processes inside a real network namespace.

Servers listen only inside a netns made for this module (`ip netns add`), so a probe that
succeeds proves it connected from inside it; the exec target is a chrooted process in its own
PID and mount namespaces, the way podkit runs a container.
"""

from __future__ import annotations

import asyncio
import http.server
import os
import shutil
import socket
import ssl
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from podkit.manifest.probe_spec import ProbeSpec
from podkit.runtime import linux
from podkit.runtime.prober import USER_AGENT, ProbeResult, ProbeTarget, run_probe

_HOST_NETNS = os.open("/proc/self/ns/net", os.O_RDONLY)


def socket_in_netns(netns_fd: int, family: int = socket.AF_INET) -> socket.socket:
    """A socket made inside the test's netns (setns on this thread for one socket() call)."""
    linux.setns(netns_fd, linux.CLONE_NEWNET)
    try:
        return socket.socket(family, socket.SOCK_STREAM)
    finally:
        linux.setns(_HOST_NETNS, linux.CLONE_NEWNET)


def netns_sockets(netns_fd: int) -> Callable[[int], socket.socket]:
    return lambda family: socket_in_netns(netns_fd, family)


NETNS = f"podkit-test-{os.getpid()}"


def wait_for(cond: Any, what: str, timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def netns() -> Iterator[int]:
    subprocess.run(["ip", "netns", "add", NETNS], check=True)
    try:
        subprocess.run(["ip", "-n", NETNS, "link", "set", "lo", "up"], check=True)
        fd = os.open(f"/var/run/netns/{NETNS}", os.O_RDONLY)
        try:
            yield fd
        finally:
            os.close(fd)
    finally:
        subprocess.run(["ip", "netns", "delete", NETNS], check=False)


def probe(netns: int, raw: dict[str, Any], **target: Any) -> ProbeResult:
    target.setdefault("container_pid", os.getpid())
    return asyncio.run(
        run_probe(ProbeSpec.from_k8s(raw), ProbeTarget(netns_sockets(netns), **target))
    )


def listener_in(netns: int) -> socket.socket:
    sock = socket_in_netns(netns)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    return sock


# --- HTTP server inside the netns -------------------------------------------------------------


class Handler(http.server.BaseHTTPRequestHandler):
    seen: list[dict[str, Any]] = []

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.seen.append({"path": self.path, "headers": list(self.headers.items())})
        routes = {
            "/ok": (200, {}, b"all good"),
            "/fail": (500, {}, b"broken"),
            "/same": (302, {"Location": "/fail"}, b""),
            "/away": (301, {"Location": "http://elsewhere.invalid/"}, b"moved"),
            "/loop": (302, {"Location": "/loop"}, b""),
            "/big": (200, {}, b"x" * 100_000),
        }
        status, headers, body = routes.get(self.path, (404, {}, b"no such page"))
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def serve(sock: socket.socket, tls: ssl.SSLContext | None = None) -> http.server.HTTPServer:
    server = http.server.ThreadingHTTPServer(sock.getsockname(), Handler, bind_and_activate=False)
    server.socket.close()
    server.socket = tls.wrap_socket(sock, server_side=True) if tls else sock
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def http_port(netns: int) -> Iterator[int]:
    server = serve(listener_in(netns))
    yield server.server_address[1]
    server.shutdown()


@pytest.fixture(scope="module")
def https_port(netns: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    assert shutil.which("openssl"), "the Makefile installs openssl (DEBS): it makes the test cert"
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
        + ["-subj", "/CN=probe-test", "-keyout", str(d / "k.pem"), "-out", str(d / "c.pem")],
        check=True,
        capture_output=True,
    )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(d / "c.pem", d / "k.pem")
    server = serve(listener_in(netns), ctx)
    yield server.server_address[1]
    server.shutdown()


def test_http_200_is_success(netns: int, http_port: int) -> None:
    r = probe(netns, {"httpGet": {"path": "/ok", "port": http_port}})
    assert r == ProbeResult(True, "all good")


def test_http_500_fails_with_the_status(netns: int, http_port: int) -> None:
    r = probe(netns, {"httpGet": {"path": "/fail", "port": http_port}})
    assert r == ProbeResult(False, "HTTP probe failed with statuscode: 500")


def test_named_port_and_headers_reach_the_server(netns: int, http_port: int) -> None:
    Handler.seen.clear()
    headers = [{"name": "X-Probe", "value": "yes"}, {"name": "Host", "value": "app.local"}]
    r = probe(
        netns,
        {"httpGet": {"path": "/ok", "port": "http", "httpHeaders": headers}},
        ports={"http": http_port},
    )
    assert r.success
    got = dict(Handler.seen[-1]["headers"])
    assert got["X-Probe"] == "yes" and got["Host"] == "app.local"
    assert got["User-Agent"] == USER_AGENT == "kube-probe/1.37" and got["Accept"] == "*/*"


def test_default_host_header_and_user_agent_override(netns: int, http_port: int) -> None:
    Handler.seen.clear()
    hdr = [{"name": "User-Agent", "value": "mine"}]
    assert probe(netns, {"httpGet": {"path": "/ok", "port": http_port, "httpHeaders": hdr}}).success
    got = dict(Handler.seen[-1]["headers"])
    assert got["Host"] == f"127.0.0.1:{http_port}" and got["User-Agent"] == "mine"


def test_unknown_named_port_fails(netns: int) -> None:
    r = probe(netns, {"httpGet": {"port": "admin"}}, ports={"http": 1})
    assert r == ProbeResult(False, "port admin not found")


def test_redirects_same_host_followed_other_host_is_a_warning(netns: int, http_port: int) -> None:
    same = probe(netns, {"httpGet": {"path": "/same", "port": http_port}})
    assert same == ProbeResult(False, "HTTP probe failed with statuscode: 500")
    away = probe(netns, {"httpGet": {"path": "/away", "port": http_port}})
    assert away.success and away.warning
    assert away.message == "Probe terminated redirects, Response body: moved"
    loop = probe(netns, {"httpGet": {"path": "/loop", "port": http_port}})
    assert not loop.success and loop.message.endswith("stopped after 10 redirects")


def test_body_is_capped_at_10_kib(netns: int, http_port: int) -> None:
    r = probe(netns, {"httpGet": {"path": "/big", "port": http_port}})
    assert r.success and len(r.message) == 10 * 1024


def test_https_without_certificate_verification(netns: int, https_port: int) -> None:
    r = probe(netns, {"httpGet": {"path": "/ok", "port": https_port, "scheme": "HTTPS"}})
    assert r == ProbeResult(True, "all good")


def test_https_against_plain_http_fails(netns: int, http_port: int) -> None:
    r = probe(netns, {"httpGet": {"path": "/ok", "port": http_port, "scheme": "HTTPS"}})
    assert not r.success and r.message.startswith(f'Get "https://127.0.0.1:{http_port}/ok": ')


def test_host_by_name(netns: int, http_port: int) -> None:
    r = probe(netns, {"httpGet": {"path": "/ok", "port": http_port, "host": "localhost"}})
    assert r == ProbeResult(True, "all good")


def test_http_timeout(netns: int) -> None:
    silent = listener_in(netns)  # connections queue in the backlog; nobody ever answers
    port = silent.getsockname()[1]
    t0 = time.monotonic()
    r = probe(netns, {"httpGet": {"path": "/", "port": port}, "timeoutSeconds": 1})
    elapsed = time.monotonic() - t0
    silent.close()
    assert not r.success and "Client.Timeout exceeded" in r.message
    assert 0.9 < elapsed < 1.6


def test_http_connection_refused(netns: int) -> None:
    closed = listener_in(netns)
    port = closed.getsockname()[1]
    closed.close()
    r = probe(netns, {"httpGet": {"path": "/x", "port": port}})
    assert r == ProbeResult(
        False,
        f'Get "http://127.0.0.1:{port}/x": dial tcp 127.0.0.1:{port}: connect: connection refused',
    )


# --- tcpSocket --------------------------------------------------------------------------------


def test_tcp_open_and_closed(netns: int, http_port: int) -> None:
    assert probe(netns, {"tcpSocket": {"port": http_port}}) == ProbeResult(True, "")
    # Listening on the host's loopback is not listening in the pod.
    host = socket.create_server(("127.0.0.1", 0))
    port = host.getsockname()[1]
    try:
        r = probe(netns, {"tcpSocket": {"port": port}})
    finally:
        host.close()
    assert r == ProbeResult(False, f"dial tcp 127.0.0.1:{port}: connect: connection refused")


# --- exec -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def container_pid(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A 'container': PID 1 of new PID + mount namespaces, chrooted, with its own env."""
    root = tmp_path_factory.mktemp("rootfs")
    for d in ("usr", "proc", "tmp", "work"):
        (root / d).mkdir()
    for link in ("bin", "sbin", "lib", "lib64"):
        if Path("/", link).is_symlink():  # merged /usr: the links are all a root needs
            (root / link).symlink_to(os.readlink(Path("/", link)))
    (root / "work" / "marker").write_text("inside the container\n")
    script = f"""
        mount --bind /usr {root}/usr
        mount -t proc proc {root}/proc
        exec chroot {root} sh -c 'cd /work && exec env -i FOO=bar PATH=/usr/bin:/bin sleep 300'
    """
    outer = subprocess.Popen(
        [
            "unshare",
            "--pid",
            "--mount",
            "--fork",
            "--kill-child",
            "--mount-proc",
            "sh",
            "-c",
            script,
        ]
    )

    def sleeper() -> int | None:
        for child in Path(f"/proc/{outer.pid}/task/{outer.pid}/children").read_text().split():
            if Path(f"/proc/{child}/cmdline").read_bytes().startswith(b"sleep\0"):
                return int(child)
        return None

    try:
        yield wait_for(sleeper, "the container process")
    finally:
        outer.kill()  # --kill-child: its child, PID 1 of the namespace, and so all of it, die
        outer.wait()


def exec_probe(pid: int, *command: str, timeout: int = 1) -> ProbeResult:
    raw = {"exec": {"command": list(command)}, "timeoutSeconds": timeout}
    return asyncio.run(
        run_probe(ProbeSpec.from_k8s(raw), ProbeTarget(netns_sockets(-1), container_pid=pid))
    )


def test_exec_runs_inside_the_container(container_pid: int) -> None:
    # Relative path: the container's working directory; /proc/1: its PID namespace; FOO: its env.
    r = exec_probe(
        container_pid, "sh", "-c", 'cat marker && echo "$FOO" && tr "\\0" " " </proc/1/cmdline'
    )
    assert r == ProbeResult(True, "inside the container\nbar\nsleep 300 ")


def test_exec_failure_reports_output(container_pid: int) -> None:
    r = exec_probe(container_pid, "cat", "/tmp/healthy")
    assert not r.success
    assert r.message == "cat: /tmp/healthy: No such file or directory\n"
    r = exec_probe(container_pid, "no-such-command")
    assert not r.success and "no-such-command" in r.message


def test_exec_timeout_kills_the_command(container_pid: int) -> None:
    t0 = time.monotonic()
    r = exec_probe(container_pid, "sleep", "7.25", timeout=1)
    assert 0.9 < time.monotonic() - t0 < 1.8
    assert r == ProbeResult(False, 'command "sleep 7.25" timed out')

    def left() -> list[str]:
        found = []
        for p in Path("/proc").iterdir():
            try:
                if (p / "cmdline").read_bytes() == b"sleep\x007.25\x00":
                    state = (p / "stat").read_text().rsplit(")", 1)[1].split()[0]
                    if state != "Z":
                        found.append(p.name)
            except OSError:
                continue
        return found

    wait_for(lambda: not left(), "the timed-out command to die", timeout=2)


def test_exec_on_a_gone_process() -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    r = exec_probe(dead.pid, "true")
    assert r == ProbeResult(False, f"container process {dead.pid} is not running")


# --- grpc -------------------------------------------------------------------------------------

GRPC_SERVER = textwrap.dedent(
    """
    import sys
    from concurrent import futures
    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    servicer = health.HealthServicer()
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    servicer.set("down", health_pb2.HealthCheckResponse.NOT_SERVING)
    with_health = grpc.server(futures.ThreadPoolExecutor(2))
    health_pb2_grpc.add_HealthServicer_to_server(servicer, with_health)
    p1 = with_health.add_insecure_port("127.0.0.1:0")
    without = grpc.server(futures.ThreadPoolExecutor(2))
    p2 = without.add_insecure_port("127.0.0.1:0")
    with_health.start()
    without.start()
    print(p1, p2, flush=True)
    sys.stdin.read()
    """
)


@pytest.fixture(scope="module")
def grpc_ports(netns: int) -> Iterator[tuple[int, int]]:
    import grpc_health.v1.health  # noqa: F401  (the test extra: a real grpc health server)

    server = subprocess.Popen(
        ["ip", "netns", "exec", NETNS, sys.executable, "-c", GRPC_SERVER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None and server.stdin is not None
    p1, p2 = (int(p) for p in server.stdout.readline().split())
    yield p1, p2
    server.stdin.close()
    server.wait(timeout=5)


def test_grpc_serving(netns: int, grpc_ports: tuple[int, int]) -> None:
    r = probe(netns, {"grpc": {"port": grpc_ports[0]}})
    assert r == ProbeResult(True, "service healthy")


def test_grpc_not_serving_and_unknown_service(netns: int, grpc_ports: tuple[int, int]) -> None:
    r = probe(netns, {"grpc": {"port": grpc_ports[0], "service": "down"}})
    assert r == ProbeResult(False, 'service unhealthy (responded with "NOT_SERVING")')
    r = probe(netns, {"grpc": {"port": grpc_ports[0], "service": "nope"}})
    assert not r.success
    assert r.message.startswith("error: health rpc probe failed: rpc error: code = NotFound")


def test_grpc_server_without_health_service(netns: int, grpc_ports: tuple[int, int]) -> None:
    r = probe(netns, {"grpc": {"port": grpc_ports[1]}})
    assert not r.success
    assert r.message.startswith(
        "this server doesn't implement the grpc health protocol (grpc.health.v1.Health)"
    )


def test_grpc_closed_port(netns: int) -> None:
    closed = listener_in(netns)
    port = closed.getsockname()[1]
    closed.close()
    r = probe(netns, {"grpc": {"port": port}})
    assert not r.success
    assert r.message == (
        f'timeout: failed to connect service "127.0.0.1:{port}" within 1s: '
        f"dial tcp 127.0.0.1:{port}: connect: connection refused"
    )

"""The ambassador under hostile clients and failing backends (issue 5: "HTTP correctness and
safety", "Resilience", "Tests"): request smuggling and malformed requests, slowloris, an endpoint
dying mid-load, outlier ejection, active health checks, timeouts and circuit breaking, keep-alive
races and partial responses, and which requests may be retried.

Everything runs for real: the ambassador as its own process, backends on real sockets (Python
servers the test steers, Debian's nginx), raw sockets and wrk as clients.
"""

from __future__ import annotations

import contextlib
import http.client
import itertools
import json
import re
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from proxy_harness import (
    Ambassador,
    Blackhole,
    ControlledBackend,
    EchoServer,
    Nginx,
    RawBackend,
    Unanswering,
    free_port,
    http_route,
    poll_until,
    raw_exchange,
    read_until_closed,
    simple_config,
    status_of,
)

# -- helpers --------------------------------------------------------------------------------


def fetch(
    port: int,
    path: str = "/",
    *,
    method: str = "GET",
    body: bytes | None = None,
    timeout: float = 5.0,
) -> tuple[int, bytes, float]:
    """One request on a fresh connection: (status, body, seconds taken)."""
    started = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body)
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, data, time.monotonic() - started
    finally:
        conn.close()


def parse_responses(data: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """Whole responses in `data`, in order: (status, lower-case headers, body). Bodies framed
    by Content-Length or chunked; anything incomplete at the end is left out."""
    out = []
    while data:
        end = data.find(b"\r\n\r\n")
        if end < 0:
            break
        head = data[:end].decode("latin-1").split("\r\n")
        headers = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        rest = data[end + 4 :]
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while True:
                line_end = rest.find(b"\r\n")
                if line_end < 0:
                    return out
                size = int(rest[:line_end].split(b";")[0], 16)
                if size == 0:
                    trailer_end = rest.find(b"\r\n\r\n", line_end)
                    if trailer_end < 0:
                        return out
                    rest = rest[trailer_end + 4 :]
                    break
                body += rest[line_end + 2 : line_end + 2 + size]
                rest = rest[line_end + 2 + size + 2 :]
        else:
            length = int(headers.get("content-length", "0"))
            if len(rest) < length:
                break
            body, rest = rest[:length], rest[length:]
        out.append((int(head[0].split(" ", 2)[1]), headers, body))
        data = rest
    return out


def cluster_stats(amb: Ambassador, name: str = "app") -> dict[str, Any]:
    return amb.stats()["clusters"][name]


def endpoint_available(amb: Ambassador, address: str, cluster: str = "app") -> bool:
    for ep in cluster_stats(amb, cluster)["endpoints"]:
        if ep["address"] == address:
            return bool(ep["available"])
    raise AssertionError(f"{address} not in /stats of cluster {cluster}")


def listener(name: str, port: int, cluster: str, **extra: Any) -> dict[str, Any]:
    route = extra.pop("route", {})
    return {
        "name": name,
        "listen": f"127.0.0.1:{port}",
        "routes": [http_route(cluster, **route)],
        **extra,
    }


_ids = itertools.count()


def sentinel_path() -> str:
    return f"/sentinel/{next(_ids)}"


# ===========================================================================================
# 1. Smuggling and malformed requests

LIMITS = {"max_request_line": 1024, "max_header_bytes": 4096, "max_headers": 20}


class Front:
    def __init__(self, amb: Ambassador, echo: EchoServer, port: int) -> None:
        self.amb, self.echo, self.port = amb, echo, port


@pytest.fixture(scope="module")
def front(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Front]:
    with contextlib.ExitStack() as stack:
        echo = EchoServer("echo")
        stack.callback(echo.stop)
        port = free_port()
        config = simple_config(port, [echo.address], limits=LIMITS)
        amb = Ambassador(tmp_path_factory.mktemp("smuggling"), config)
        stack.callback(amb.stop)
        yield Front(amb, echo, port)


def post(fields: bytes, body: bytes = b"", version: bytes = b"1.1") -> bytes:
    """POST / with Host: x, the header lines in `fields` (each ending in CRLF), then `body`."""
    return b"POST / HTTP/" + version + b"\r\nHost: x\r\n" + fields + b"\r\n" + body


def get(fields: bytes = b"", line: bytes = b"GET / HTTP/1.1", host: bytes = b"x") -> bytes:
    """A request without a body: `line`, Host (unless host is empty), then `fields`."""
    return line + b"\r\n" + (b"Host: " + host + b"\r\n" if host else b"") + fields + b"\r\n"


def te(value: bytes = b"chunked") -> bytes:
    return b"Transfer-Encoding: " + value + b"\r\n"


def cl(value: bytes | int) -> bytes:
    return b"Content-Length: " + (b"%d" % value if isinstance(value, int) else value) + b"\r\n"


ABC = b"3\r\nabc\r\n0\r\n\r\n"  # a chunked body: abc
END = b"0\r\n\r\n"

# The classic desync payloads (PortSwigger's CL.TE, TE.CL, TE.TE): had the proxy framed them
# by one header and the backend by the other, the backend would see a request the proxy never
# did.
SMUGGLED_GET = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
TE_CL_BODY = b"%x\r\n%s\r\n0\r\n\r\n" % (len(SMUGGLED_GET), SMUGGLED_GET)


def refused(name: str, raw: bytes, status: int = 400) -> Any:
    return pytest.param(raw, status, id=name)


REJECTED = [
    # Content-Length together with Transfer-Encoding, both orders, and the classic payloads
    refused("cl-then-te", post(cl(5) + te(), END)),
    refused("te-then-cl", post(te() + cl(5), END)),
    refused("classic-cl-te", post(cl(6) + te(), END + b"G")),
    refused("classic-te-cl", post(cl(4) + te(), TE_CL_BODY)),
    refused("cl-te-smuggled-get", post(cl(5) + te(), END + SMUGGLED_GET)),
    refused("te-tab-with-cl", post(cl(5) + b"Transfer-Encoding:\tchunked\r\n", END)),
    refused("te-te-obfuscated", post(te() + te(b"cow"), ABC)),
    refused("te-given-twice", post(te() + te(), ABC)),
    # Content-Length that is not one plain number
    refused("cl-duplicate-same", post(cl(3) + cl(3), b"abc")),
    refused("cl-duplicate-different", post(cl(3) + cl(4), b"abcd")),
    refused("cl-list", post(cl(b"3, 3"), b"abc")),
    refused("cl-plus", post(cl(b"+3"), b"abc")),
    refused("cl-negative", post(cl(b"-1"), b"abc")),
    refused("cl-hex", post(cl(b"0x3"), b"abc")),
    refused("cl-vtab", post(b"Content-Length:\x0b3\r\n", b"abc")),
    refused("cl-space-before-colon", post(b"Content-Length : 3\r\n", b"abc")),
    # Transfer-Encoding that does not end in exactly one chunked
    refused("te-chunked-chunked", post(te(b"chunked, chunked"), ABC)),
    refused("te-xchunked", post(te(b"xchunked"), ABC)),
    refused("te-chunked-gzip", post(te(b"chunked, gzip"), ABC)),
    refused("te-identity", post(te(b"identity"), b"abc")),
    refused("te-space-before-colon", post(b"Transfer-Encoding : chunked\r\n", ABC)),
    refused("te-vtab", post(b"Transfer-Encoding:\x0bchunked\r\n", ABC)),
    refused("te-folded", post(b"Transfer-Encoding:\r\n chunked\r\n", ABC)),
    # RFC 9112 6.1: Transfer-Encoding in HTTP/1.0 means faulty framing (nginx answers 400)
    refused("te-in-http10", post(te(), ABC, version=b"1.0")),
    # line endings and characters
    refused("bare-lf-everywhere", b"GET / HTTP/1.1\nHost: x\n\n"),
    refused("bare-lf-after-request-line", b"GET / HTTP/1.1\nHost: x\r\n\r\n"),
    refused("bare-lf-in-headers", b"GET / HTTP/1.1\r\nHost: x\nX-A: b\r\n\r\n"),
    refused("bare-cr", b"GET / HTTP/1.1\r\nHost: x\rX-A: b\r\n\r\n"),
    refused("obs-fold", get(b"X-A: a\r\n b\r\n")),
    refused("nul-in-value", get(b"X-A: a\x00b\r\n")),
    refused("name-with-space", get(b"Bad Name: x\r\n")),
    refused("name-with-at", get(b"B@d: x\r\n")),
    refused("name-empty", get(b": x\r\n")),
    refused("line-without-colon", get(b"NoColon\r\n")),
    refused("request-line-double-space", get(line=b"GET  / HTTP/1.1")),
    # Host
    refused("missing-host", get(b"X-A: b\r\n", host=b"")),
    refused("two-hosts", get(b"Host: y\r\n")),
    refused("host-with-slash", get(host=b"x/y")),
    refused("host-with-userinfo", get(host=b"user@x")),
    # versions and limits (this listener: request line 1024, headers 4096 bytes and 20 lines)
    refused("http-2.0", get(line=b"GET / HTTP/2.0"), 505),
    refused("request-line-too-long", get(line=b"GET /" + b"a" * 1100 + b" HTTP/1.1"), 414),
    refused("headers-over-max-header-bytes", get(b"X-Big: " + b"a" * 4400 + b"\r\n"), 431),
    refused("headers-far-over-max-header-bytes", get(b"X-Big: " + b"a" * 9000 + b"\r\n"), 431),
    refused("too-many-headers", get(b"".join(b"X-%d: v\r\n" % i for i in range(25))), 431),
    # chunk framing
    refused("chunk-size-zz", post(te(), b"zz\r\nabc\r\n" + END)),
    refused("chunk-data-without-crlf", post(te(), b"3\r\nabcX\r\n" + END)),
    refused("chunk-size-overflow", post(te(), b"10000000000000000\r\nabc\r\n" + END)),
    refused("chunk-size-negative", post(te(), b"-3\r\nabc\r\n" + END)),
    refused("chunk-size-leading-space", post(te(), b" 3\r\nabc\r\n" + END)),
    refused("chunk-size-bare-lf", post(te(), b"3\nabc\r\n" + END)),
    # RFC 9112 7.1.1 allows BWS around ";" and "=" in chunk extensions, but llhttp (so Node
    # backends) refuses it, and the proxy forwards chunk lines as they are: refusing it keeps
    # every hop agreeing on where the body ends.
    refused("chunk-extension-bws", post(te(), b"3 ; a = b\r\nabc\r\n" + END)),
    refused("chunk-longer-than-its-size", post(te(), b"3\r\nabc" + SMUGGLED_GET + b"\r\n" + END)),
]


@pytest.mark.parametrize(("raw", "status"), REJECTED)
def test_malformed_request_is_refused_and_nothing_reaches_the_backend(
    front: Front, raw: bytes, status: int
) -> None:
    before = len(front.echo.seen)
    with socket.create_connection(("127.0.0.1", front.port), timeout=5) as sock:
        sock.sendall(raw)
        data, how = read_until_closed(sock, 3.0)
    responses = parse_responses(data)
    assert [s for s, _, _ in responses] == [status], data[:300]
    assert how in ("eof", "reset"), "the connection must be closed after a refused request"
    assert responses[0][1].get("connection") == "close"
    # The next request (another client) is served as itself: no request, smuggled or whole, of
    # the refused one reached the backend, and nothing is left queued on an upstream connection.
    path = sentinel_path()
    answer = raw_exchange(
        front.port, b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path.encode()
    )
    assert status_of(answer) == 200, answer[:300]
    assert json.loads(parse_responses(answer)[0][2])["path"] == path
    assert [r["path"] for r in front.echo.seen[before:]] == [path]


PIPELINED_BODY = b"GET /inner HTTP/1.1\r\nHost: x\r\n\r\n"
TWENTY = b"".join(b"X-%d: v\r\n" % i for i in range(19))  # with Host: 20 header lines


def accepted(name: str, raw: bytes, method: str, path: str, body: str = "") -> Any:
    return pytest.param(raw, (method, path, body), id=name)


ACCEPTED = [
    accepted(
        "chunk-extensions",
        post(te(), b'3;name=value\r\nabc\r\n2;q="a b";flag\r\nde\r\n' + END),
        "POST",
        "/",
        "abcde",
    ),
    accepted(
        "trailers",
        post(te(), b"3\r\nabc\r\n0\r\nX-Trailer: t\r\nX-Other: u\r\n\r\n"),
        "POST",
        "/",
        "abc",
    ),
    accepted("te-capitalised", post(te(b"Chunked"), ABC), "POST", "/", "abc"),
    accepted("te-with-whitespace", post(te(b"\t chunked "), ABC), "POST", "/", "abc"),
    accepted(
        "chunk-size-upper-hex", post(te(), b"A\r\n0123456789\r\n" + END), "POST", "/", "0123456789"
    ),
    accepted("chunked-empty", post(te(), END), "POST", "/"),
    accepted("cl-tab-before-value", post(b"Content-Length:\t3\r\n", b"abc"), "POST", "/", "abc"),
    accepted("cl-leading-zeros", post(cl(b"003"), b"abc"), "POST", "/", "abc"),
    accepted("cl-zero", post(cl(0)), "POST", "/"),
    accepted(
        "body-that-looks-like-a-request",
        post(cl(len(PIPELINED_BODY)), PIPELINED_BODY),
        "POST",
        "/",
        PIPELINED_BODY.decode(),
    ),
    accepted("options-asterisk", get(line=b"OPTIONS * HTTP/1.1"), "OPTIONS", "*"),
    accepted("absolute-form", get(line=b"GET http://x/abs?q=1 HTTP/1.1"), "GET", "/abs?q=1"),
    accepted(
        "http10-without-host",
        get(b"Connection: keep-alive\r\n", line=b"GET /old HTTP/1.0", host=b""),
        "GET",
        "/old",
    ),
    accepted(
        "obs-text-in-value", get(b"X-Name: caf\xe9\r\n", b"GET /latin HTTP/1.1"), "GET", "/latin"
    ),
    accepted("headers-at-count-limit", get(TWENTY, b"GET /twenty HTTP/1.1"), "GET", "/twenty"),
]


@pytest.mark.parametrize(("raw", "expected"), ACCEPTED)
def test_valid_edge_case_is_forwarded_with_its_framing_intact(
    front: Front, raw: bytes, expected: tuple[str, str, str]
) -> None:
    """The request and a second one pipelined right behind it on the same connection: both
    answered, in order, the backend seeing exactly those two (so the proxy found where the first
    ended)."""
    before = len(front.echo.seen)
    path = sentinel_path()
    sentinel = b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path.encode()
    with socket.create_connection(("127.0.0.1", front.port), timeout=5) as sock:
        sock.sendall(raw + sentinel)
        data, how = read_until_closed(sock, 3.0)
    responses = parse_responses(data)
    assert [s for s, _, _ in responses] == [200, 200], data[:400]
    first = json.loads(responses[0][2])
    assert (first["method"], first["path"], first["body"]) == expected
    assert json.loads(responses[1][2])["path"] == path
    assert how == "eof"
    seen = [(r["method"], r["path"], r["body"]) for r in front.echo.seen[before:]]
    assert seen == [expected, ("GET", path, "")]


def test_absolute_form_target_decides_the_host_the_backend_sees(front: Front) -> None:
    """RFC 9112 3.2.2: given an absolute-form target, a proxy ignores the Host field and sends
    the target's authority instead; refusing the mismatch (HAProxy answers 400) is as safe. What
    must never happen: routing by one host while the backend is told the other."""
    before = len(front.echo.seen)
    answer = raw_exchange(
        front.port,
        get(b"Connection: close\r\n", b"GET http://a.example/abs HTTP/1.1", b"b.example"),
    )
    assert status_of(answer) in (200, 400), answer[:300]
    hosts = [[v for k, v in r["headers"] if k.lower() == "host"] for r in front.echo.seen[before:]]
    assert hosts == ([["a.example"]] if status_of(answer) == 200 else [])


def test_refused_requests_are_counted(front: Front) -> None:
    before = front.amb.stats()["listeners"]["main"]["rejected"]
    raw_exchange(front.port, post(cl(1) + cl(2), b"ab"))
    raw_exchange(front.port, get(line=b"GET / HTTP/2.0"))
    after = front.amb.stats()["listeners"]["main"]["rejected"]
    assert after.get("400", 0) == before.get("400", 0) + 1
    assert after.get("505", 0) == before.get("505", 0) + 1


# ===========================================================================================
# 2. Slowloris: header-read, body-idle and keep-alive timeouts

SLOW = {"header_read": 1.0, "body_idle": 1.0, "keepalive": 1.0}


@pytest.fixture(scope="module")
def slow_front(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Front]:
    with contextlib.ExitStack() as stack:
        echo = EchoServer("echo")
        stack.callback(echo.stop)
        port = free_port()
        config = simple_config(port, [echo.address], timeouts=SLOW)
        amb = Ambassador(tmp_path_factory.mktemp("slowloris"), config)
        stack.callback(amb.stop)
        yield Front(amb, echo, port)


def trickle(sock: socket.socket, data: bytes, gap: float, stop: threading.Event) -> None:
    """Send `data` one byte every `gap` seconds until done, stopped or the peer is gone."""
    for i in range(len(data)):
        if stop.wait(gap if i else 0):
            return
        try:
            sock.send(data[i : i + 1])
        except OSError:
            return


def test_head_trickled_byte_by_byte_is_cut_at_header_read(slow_front: Front) -> None:
    stop = threading.Event()
    head = b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 200 + b"\r\n\r\n"
    with socket.create_connection(("127.0.0.1", slow_front.port), timeout=5) as sock:
        started = time.monotonic()
        sender = threading.Thread(target=trickle, args=(sock, head, 0.1, stop), daemon=True)
        sender.start()
        data, how = read_until_closed(sock, 4.0)
        elapsed = time.monotonic() - started
        stop.set()
        sender.join()
    assert how in ("eof", "reset")
    assert data == b"" or status_of(data) == 408, data[:200]
    assert 0.85 <= elapsed <= 1.5, f"closed after {elapsed:.2f} s (header_read 1 s)"


def test_silent_connection_is_closed_at_header_read(slow_front: Front) -> None:
    with socket.create_connection(("127.0.0.1", slow_front.port), timeout=5) as sock:
        started = time.monotonic()
        data, how = read_until_closed(sock, 4.0)
        elapsed = time.monotonic() - started
    assert how in ("eof", "reset")
    assert data == b"" or status_of(data) == 408, data[:200]
    assert 0.85 <= elapsed <= 1.5, f"closed after {elapsed:.2f} s (header_read 1 s)"


def test_body_stalled_longer_than_body_idle_gets_408(slow_front: Front) -> None:
    with socket.create_connection(("127.0.0.1", slow_front.port), timeout=5) as sock:
        sock.sendall(b"POST /stalled HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab")
        last_byte = time.monotonic()
        data, how = read_until_closed(sock, 4.0)
        elapsed = time.monotonic() - last_byte
    assert status_of(data) == 408, data[:200]
    assert how in ("eof", "reset")
    assert 0.85 <= elapsed <= 1.5, f"408 after {elapsed:.2f} s of silence (body_idle 1 s)"


def test_body_with_gaps_shorter_than_body_idle_is_accepted(slow_front: Front) -> None:
    """body_idle bounds the silence between body bytes, not the whole body: 4 bytes over 1.2 s
    with 0.4 s gaps arrive whole."""
    stop = threading.Event()
    with socket.create_connection(("127.0.0.1", slow_front.port), timeout=5) as sock:
        sock.sendall(b"POST /patient HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\n")
        trickle(sock, b"abcd", 0.4, stop)
        sock.sendall(b"GET /after HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data, _ = read_until_closed(sock, 4.0)
    responses = parse_responses(data)
    assert [s for s, _, _ in responses] == [200, 200], data[:300]
    assert json.loads(responses[0][2])["body"] == "abcd"


def test_idle_keepalive_connection_is_closed_after_keepalive(slow_front: Front) -> None:
    with socket.create_connection(("127.0.0.1", slow_front.port), timeout=5) as sock:
        sock.sendall(b"GET /once HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while not parse_responses(data):
            chunk = sock.recv(65536)
            assert chunk, "closed before the response"
            data += chunk
        answered = time.monotonic()
        rest, how = read_until_closed(sock, 4.0)
        elapsed = time.monotonic() - answered
    assert status_of(data) == 200
    assert (rest, how) == (b"", "eof")
    assert 0.85 <= elapsed <= 1.5, f"idle connection closed after {elapsed:.2f} s (keepalive 1 s)"


def test_clients_are_served_promptly_during_a_slowloris_attack(slow_front: Front) -> None:
    """60 connections trickle never-ending heads (reconnecting whenever cut) while a normal client
    sends requests for 2.5 s (two header_read periods): every one is answered within 1 s."""
    stop = threading.Event()
    cut = [0]
    endless = b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 100_000

    def attack() -> None:
        socks: list[tuple[socket.socket, int]] = []
        try:
            while not stop.is_set():
                while len(socks) < 60:
                    s = socket.create_connection(("127.0.0.1", slow_front.port), timeout=5)
                    s.setblocking(False)
                    socks.append((s, 0))
                alive = []
                for s, sent in socks:
                    try:
                        s.send(endless[sent : sent + 1])
                        alive.append((s, sent + 1))
                    except (BlockingIOError, InterruptedError):
                        alive.append((s, sent))
                    except OSError:
                        cut[0] += 1
                        s.close()
                socks = alive
                stop.wait(0.1)
        finally:
            for s, _ in socks:
                s.close()

    attacker = threading.Thread(target=attack, daemon=True)
    attacker.start()
    latencies = []
    statuses = []
    try:
        started = time.monotonic()
        while time.monotonic() - started < 2.5:
            status, _, took = fetch(slow_front.port, "/normal", timeout=5)
            statuses.append(status)
            latencies.append(took)
            time.sleep(0.1)  # a client's own pace, not a wait for anything
    finally:
        stop.set()
        attacker.join()
    assert statuses and set(statuses) == {200}
    assert max(latencies) < 1.0, f"slowest normal request {max(latencies):.2f} s"
    # The attack was on throughout: its connections were cut by header_read and came back.
    assert cut[0] >= 60, f"only {cut[0]} attacking connections were cut"


# ===========================================================================================
# 3. An endpoint dies mid-load; outlier ejection


def wrk(port: int, seconds: int, connections: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["/usr/bin/wrk", "-t1", f"-c{connections}", f"-d{seconds}s", f"http://127.0.0.1:{port}/"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wrk_counts(output: str) -> dict[str, int]:
    """requests, non_2xx and socket errors from wrk's report (absent lines count 0)."""
    m = re.search(r"(\d+) requests in", output)
    assert m is not None, output
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    return {
        "requests": int(m.group(1)),
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": sum(int(g) for g in errors.groups()) if errors else 0,
    }


class MidLoad:
    def __init__(self, output: str, stats: dict[str, Any], failed: list[dict[str, Any]]) -> None:
        self.output, self.stats, self.failed = output, stats, failed
        self.counts = wrk_counts(output)

    def evidence(self) -> str:
        stats = {k: v for k, v in self.stats.items() if k not in ("endpoints", "latency")}
        failed = [
            {k: e[k] for k in ("status", "attempts", "upstream", "duration_ms")}
            for e in self.failed[:5]
        ]
        return f"{self.output}\ncluster: {stats}\nfirst failures: {failed}"


def endpoint_dies_under_wrk(tmp: Path, cluster: dict[str, Any] | None = None) -> MidLoad:
    """wrk (16 connections, 3 s) on three endpoints, round robin; one dies as soon as it has
    served 200 requests: its open connections are cut, requests it had not answered never are,
    new connections are refused."""
    backends = [ControlledBackend(f"b{i}") for i in range(3)]
    victim = backends[1]
    port = free_port()
    amb = Ambassador(tmp, simple_config(port, [b.address for b in backends], cluster=cluster))
    try:
        load = wrk(port, 3, 16)
        try:
            assert poll_until(lambda: victim.requests() >= 200, 5.0), "the load did not start"
            victim.kill()
            taken = victim.requests()
            output, _ = load.communicate(timeout=15)
        finally:
            if load.poll() is None:
                load.kill()
                load.wait()
        # wrk's connections close when it stops: those requests are the client's own (499)
        failed = [e for e in amb.access_logs() if e["status"] not in (200, 499)]
        result = MidLoad(output, cluster_stats(amb), failed)
        assert victim.requests() == taken
        assert all(b.requests() > taken for b in (backends[0], backends[2]))
        return result
    finally:
        amb.stop()
        for b in backends:
            b.stop()


def test_endpoint_dying_mid_load_fails_no_request(tmp_path: Path) -> None:
    """The default cluster settings (no health checks, no outlier detection): every request
    that meets the dead endpoint is retried on another, so none fails."""
    run = endpoint_dies_under_wrk(tmp_path)
    assert run.counts["requests"] > 1000, run.evidence()
    assert run.counts["non_2xx"] == 0, run.evidence()
    assert run.counts["socket_errors"] == 0, run.evidence()
    # The failure was met (refused connects or cut connections) and absorbed by retries.
    assert run.stats["connect_failures"] + run.stats["resets"] >= 1, run.evidence()
    assert run.stats["retries"] >= 1, run.evidence()


def test_endpoint_dying_mid_load_is_ejected_and_fails_no_request(tmp_path: Path) -> None:
    """With outlier detection the dead endpoint is ejected after its first failures (all
    retried). The retry budget is opened wide here so that this test is about ejection alone:
    the requests the dying endpoint held fail together, more at once than the default budget
    (20 %, at least 3) lets retry; the test above is the one about the defaults."""
    cluster = {
        "outlier_detection": {"consecutive_5xx": 3},
        "retry_budget": {"percent": 100, "min_concurrency": 16},
    }
    run = endpoint_dies_under_wrk(tmp_path, cluster)
    assert run.counts["requests"] > 1000, run.evidence()
    assert run.counts["non_2xx"] == 0, run.evidence()
    assert run.counts["socket_errors"] == 0, run.evidence()
    assert run.stats["ejections"] == 1, run.evidence()
    assert run.stats["retries"] >= 1, run.evidence()


def test_failing_endpoint_is_ejected_and_comes_back(tmp_path: Path) -> None:
    bad = ControlledBackend("bad", status=500)
    good = [ControlledBackend("good1"), ControlledBackend("good2")]
    port = free_port()
    cluster = {"outlier_detection": {"consecutive_5xx": 3, "base_ejection": "1s"}}
    config = simple_config(port, [bad.address] + [g.address for g in good], cluster=cluster)
    amb = Ambassador(tmp_path, config)
    try:
        statuses = []
        while endpoint_available(amb, bad.address) and len(statuses) < 30:
            statuses.append(fetch(port)[0])
        ejected_at = time.monotonic()
        assert not endpoint_available(amb, bad.address), f"not ejected after {statuses}"
        assert statuses.count(500) == 3, statuses  # ejected right at consecutive_5xx
        families = {f.name: f for f in text_string_to_metric_families(amb.metrics())}
        ejections = {
            s.labels["cluster"]: s.value
            for s in families["podkit_proxy_upstream_ejections"].samples
            if s.name == "podkit_proxy_upstream_ejections_total"
        }
        assert ejections == {"app": 1.0}
        assert cluster_stats(amb)["ejections"] == 1
        # While ejected, nothing goes to it.
        seen = bad.requests()
        assert [fetch(port)[0] for _ in range(10)] == [200] * 10
        assert bad.requests() == seen
        # After base_ejection it takes requests again (checked about once a second).
        back = poll_until(lambda: endpoint_available(amb, bad.address), 4.0, interval=0.05)
        out_for = time.monotonic() - ejected_at
        assert back, "still ejected long after base_ejection"
        assert 0.8 <= out_for <= 2.6, f"ejected for {out_for:.2f} s (base_ejection 1 s)"
        statuses = [fetch(port)[0] for _ in range(3)]
        assert 500 in statuses and bad.requests() == seen + 1
    finally:
        amb.stop()
        bad.stop()
        for g in good:
            g.stop()


# ===========================================================================================
# 4. Active health checks

HEALTH = {
    "type": "http",
    "path": "/health",
    "interval": "0.2s",
    "timeout": "0.2s",
    "unhealthy_threshold": 2,
    "healthy_threshold": 2,
}


def test_unhealthy_and_dead_endpoints_leave_the_rotation(tmp_path: Path) -> None:
    live = ControlledBackend("live")
    sick = ControlledBackend("sick")
    dying = ControlledBackend("dying")
    port = free_port()
    config = simple_config(
        port, [live.address, sick.address, dying.address], cluster={"health_check": HEALTH}
    )
    amb = Ambassador(tmp_path, config)
    try:
        assert poll_until(lambda: sick.requests(path="/health") >= 2, 2.0), "no health checks"
        sick.overrides["/health"] = 503
        dying.kill()
        changed = time.monotonic()
        out = poll_until(
            lambda: (
                not endpoint_available(amb, sick.address)
                and not endpoint_available(amb, dying.address)
            ),
            3.0,
        )
        took = time.monotonic() - changed
        assert out, cluster_stats(amb)["endpoints"]
        # unhealthy_threshold 2 x interval 0.2 s, plus a round in progress and the poll
        assert took <= 1.0, f"out of the rotation after {took:.2f} s"
        assert endpoint_available(amb, live.address)
        before = cluster_stats(amb)
        sick_requests = sick.requests() - sick.requests(path="/health")
        results = [fetch(port) for _ in range(12)]
        assert [s for s, _, _ in results] == [200] * 12
        assert {json.loads(b)["server"] for _, b, _ in results} == {"live"}
        assert sick.requests() - sick.requests(path="/health") == sick_requests
        after = cluster_stats(amb)
        assert after["connect_failures"] == before["connect_failures"]
        assert after["retries"] == before["retries"]
    finally:
        amb.stop()
        for b in (live, sick, dying):
            b.stop()


def test_no_healthy_endpoint_answers_503_fast_and_recovers(tmp_path: Path) -> None:
    backends = [ControlledBackend("a"), ControlledBackend("b")]
    port = free_port()
    config = simple_config(port, [b.address for b in backends], cluster={"health_check": HEALTH})
    amb = Ambassador(tmp_path, config)
    try:
        assert fetch(port)[0] == 200
        for b in backends:
            b.overrides["/health"] = 503

        def none_available() -> bool:
            return not any(ep["available"] for ep in cluster_stats(amb)["endpoints"])

        assert poll_until(none_available, 3.0), cluster_stats(amb)["endpoints"]
        served = sum(b.requests() for b in backends) - sum(
            b.requests(path="/health") for b in backends
        )
        status, body, took = fetch(port)
        assert status == 503
        assert b"no healthy upstream" in body
        assert took < 0.1, f"503 took {took * 1000:.0f} ms"
        assert sum(b.requests() - b.requests(path="/health") for b in backends) == served
        assert cluster_stats(amb)["no_healthy"] >= 1
        for b in backends:
            del b.overrides["/health"]
        assert poll_until(lambda: fetch(port)[0] == 200, 3.0)
    finally:
        amb.stop()
        for b in backends:
            b.stop()


# ===========================================================================================
# 5. Timeouts and circuit breaking


class Limited:
    def __init__(self, amb: Ambassador, ports: dict[str, int], echo: EchoServer) -> None:
        self.amb, self.ports, self.echo = amb, ports, echo


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Limited]:
    with contextlib.ExitStack() as stack:
        echo = EchoServer("echo")
        stack.callback(echo.stop)
        hole = Blackhole()
        stack.callback(hole.close)
        names = ["timeout", "connect", "breaker", "no_pending", "queue"]
        ports = {n: free_port() for n in names}
        no_retry = {"retry": {"retries": 0}}
        config = {
            "access_log": {"enabled": True},
            "listeners": [
                listener("timeout", ports["timeout"], "timeout", route={"timeout": "0.5s"}),
                listener("connect", ports["connect"], "connect", route=no_retry),
                listener("breaker", ports["breaker"], "breaker"),
                listener("no_pending", ports["no_pending"], "no_pending"),
                listener("queue", ports["queue"], "queue"),
            ],
            "clusters": [
                {"name": "timeout", "endpoints": [{"address": echo.address}]},
                {
                    "name": "connect",
                    "endpoints": [{"address": hole.address}],
                    "timeouts": {"connect": "0.3s"},
                },
                {
                    "name": "breaker",
                    "endpoints": [{"address": echo.address}],
                    "circuit_breaker": {"max_requests": 2},
                },
                {
                    "name": "no_pending",
                    "endpoints": [{"address": echo.address}],
                    "circuit_breaker": {"max_connections": 1, "max_pending_requests": 0},
                },
                {
                    "name": "queue",
                    "endpoints": [{"address": echo.address}],
                    "circuit_breaker": {"max_connections": 1},
                },
            ],
        }
        amb = Ambassador(tmp_path_factory.mktemp("limits"), config)
        stack.callback(amb.stop)
        yield Limited(amb, ports, echo)


def test_route_timeout_answers_504_no_sooner_and_not_much_later(limited: Limited) -> None:
    """Four requests a quarter of the proxy's 100 ms tick apart, so they start at different
    points between ticks: each gets its 504 after the route timeout (0.5 s), within 0.3 s more."""
    port = limited.ports["timeout"]
    results: list[Any] = [None] * 4

    def one(i: int) -> None:
        time.sleep(i * 0.025)  # staggered starts are the scenario
        results[i] = fetch(port, f"/slow/2000/{i}")

    threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert [r[0] for r in results] == [504] * 4, results
    took = sorted(round(r[2], 3) for r in results)
    assert took[0] >= 0.5 and took[-1] <= 0.8, f"504 after {took} s (route timeout 0.5 s)"
    assert cluster_stats(limited.amb, "timeout")["timeouts"] == 4


def test_connect_timeout_answers_503(limited: Limited) -> None:
    status, body, took = fetch(limited.ports["connect"])
    assert status == 503, body
    assert b"connect timeout" in body
    assert 0.3 <= took <= 0.7, f"503 after {took:.2f} s (connect timeout 0.3 s)"
    assert cluster_stats(limited.amb, "connect")["connect_failures"] == 1


def concurrently(n: int, call: Any) -> list[Any]:
    """`call()` in n threads released together; their results in thread order."""
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = call()
        except Exception as exc:  # reported through the result
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    return results


def test_circuit_breaker_max_requests_refuses_the_excess_at_once(limited: Limited) -> None:
    results = concurrently(5, lambda: fetch(limited.ports["breaker"], "/slow/500"))
    statuses = sorted(r[0] for r in results)
    assert statuses == [200, 200, 503, 503, 503], results
    assert all(took < 0.25 for status, _, took in results if status == 503), results
    assert all(b"too many requests" in body for status, body, _ in results if status == 503)
    assert cluster_stats(limited.amb, "breaker")["overflows"] == 3


def test_no_pending_slot_refuses_a_second_concurrent_request(limited: Limited) -> None:
    port = limited.ports["no_pending"]
    path = f"/slow/500/{next(_ids)}"
    first: list[Any] = []
    holder = threading.Thread(target=lambda: first.append(fetch(port, path)))
    holder.start()
    try:
        assert poll_until(lambda: any(r["path"] == path for r in limited.echo.seen), 3.0)
        status, body, took = fetch(port, "/second")
    finally:
        holder.join(5)
    assert status == 503, body
    assert took < 0.25
    assert first and first[0][0] == 200
    assert cluster_stats(limited.amb, "no_pending")["overflows"] == 1


def test_requests_over_max_connections_wait_for_a_free_connection(limited: Limited) -> None:
    results = concurrently(3, lambda: fetch(limited.ports["queue"], "/slow/300"))
    assert sorted(r[0] for r in results) == [200, 200, 200], results
    # one connection: the three responses came one after another
    assert max(r[2] for r in results) >= 0.85
    stats = cluster_stats(limited.amb, "queue")
    assert stats["overflows"] == 0
    assert stats["connections"] <= 1


# ===========================================================================================
# 6. Keep-alive races and partial responses


class Pair:
    def __init__(
        self, amb: Ambassador, ports: dict[str, int], raw: RawBackend, racer: RawBackend
    ) -> None:
        self.amb, self.ports, self.raw, self.racer = amb, ports, raw, racer
        self.raw_port = ports["raw"]


RACER_KEEPALIVE = 0.6  # the racing backend's keep-alive timeout; the ambassador's idle: 0.3 s


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    tmp = tmp_path_factory.mktemp("keepalive")
    with contextlib.ExitStack() as stack:
        nginx = Nginx(tmp, "keepalive_timeout 1s;")
        stack.callback(nginx.stop)
        raw = RawBackend()
        stack.callback(raw.stop)
        racer = RawBackend(keepalive_timeout=RACER_KEEPALIVE)
        stack.callback(racer.stop)
        ports = {"nginx": free_port(), "raw": free_port(), "racer": free_port()}
        config = {
            "access_log": {"enabled": True},
            "listeners": [
                listener("nginx", ports["nginx"], "nginx"),
                listener("raw", ports["raw"], "raw", route={"timeout": "0.5s"}),
                listener("racer", ports["racer"], "racer"),
            ],
            "clusters": [
                {
                    "name": "nginx",
                    "endpoints": [{"address": nginx.address}],
                    "timeouts": {"idle": "0.5s"},
                },
                {"name": "raw", "endpoints": [{"address": raw.address}]},
                {
                    "name": "racer",
                    "endpoints": [{"address": racer.address}],
                    "timeouts": {"idle": "0.3s"},
                },
            ],
        }
        amb = Ambassador(tmp, config)
        stack.callback(amb.stop)
        yield Pair(amb, ports, raw, racer)


def spaced_posts(port: int, gaps: list[float]) -> list[int]:
    """POSTs (never retried) on one client connection, spaced by `gaps`: their statuses."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    statuses = []
    try:
        for gap in [0.0, *gaps]:
            time.sleep(gap)  # the spacing is the scenario, not a wait for anything
            conn.request("POST", "/race", body=b"x" * 16)
            resp = conn.getresponse()
            resp.read()
            statuses.append(resp.status)
    finally:
        conn.close()
    return statuses


def test_upstream_idle_timeout_below_the_backends_avoids_keepalive_races(pair: Pair) -> None:
    """A backend that closes connections idle for more than 0.6 s, and closes one that a request
    arrives on after that instead of answering (the keep-alive race, made certain). The
    ambassador's upstream idle timeout is 0.3 s, so requests 0.7-0.8 s apart each go on a fresh
    connection and never meet that close. POSTs: one that did would not be retried (a 502)."""
    statuses = spaced_posts(pair.ports["racer"], [0.7, 0.8, 0.7])
    assert statuses == [200] * 4
    assert pair.racer.raced == []
    assert len({conn for conn, _ in pair.racer.seen}) == 4  # one fresh connection each
    assert cluster_stats(pair.amb, "racer")["resets"] == 0


def test_no_502_against_nginx_closing_idle_connections(pair: Pair) -> None:
    """Debian's nginx with keepalive_timeout 1s, requests spaced around that second: none
    fails (a pooled connection nginx has closed, or is closing, is never used)."""
    statuses = spaced_posts(pair.ports["nginx"], [0.95, 1.05, 1.0])
    assert statuses == [200] * 4
    stats = cluster_stats(pair.amb, "nginx")
    assert stats["resets"] == 0
    assert set(stats["requests"]) == {"200"}


@pytest.mark.slow
def test_no_502_against_nginx_closing_idle_connections_soak(pair: Pair) -> None:
    gaps = [0.85 + 0.05 * (i % 7) for i in range(30)]
    assert spaced_posts(pair.ports["nginx"], gaps) == [200] * 31


def test_upstream_connections_are_pooled(pair: Pair) -> None:
    """The baseline the tests below depend on: a whole response leaves its connection for the
    next request of the same client at once, and for another client's once it has been quiet
    for the settle time (1 s); another client's request sooner gets a fresh connection (HAProxy's
    http-reuse safe: late bytes of one client's exchange never reach another's)."""
    client = http.client.HTTPConnection("127.0.0.1", pair.raw_port, timeout=5)
    try:
        for _ in range(2):
            client.request("GET", "/ok")
            assert client.getresponse().read() == b"ok"
    finally:
        client.close()
    kept = [conn for conn, path in pair.raw.seen[-2:]]
    assert kept[0] == kept[1]  # the same client: the same upstream connection
    assert fetch(pair.raw_port, "/ok")[0] == 200
    fresh = pair.raw.connection_of("/ok")
    assert fresh != kept[0]  # another client, at once: a fresh connection
    opened = pair.raw.connections
    time.sleep(1.2)  # the settle time passing is the scenario
    assert fetch(pair.raw_port, "/ok")[0] == 200
    assert pair.raw.connection_of("/ok") in (kept[0], fresh)  # a pooled one, settled
    assert pair.raw.connections == opened


def raw_get(port: int, path: str) -> tuple[bytes, str, float]:
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path.encode())
        data, how = read_until_closed(sock, 3.0)
    return data, how, time.monotonic() - started


def test_truncated_response_reaches_the_client_as_an_abort(pair: Pair) -> None:
    data, how, _ = raw_get(pair.raw_port, "/partial")
    head, _, body = data.partition(b"\r\n\r\n")
    assert status_of(data) == 200
    assert b"content-length: 100" in head.lower()
    assert body == b"x" * 10 and how in ("eof", "reset")  # short of its length: an error
    assert fetch(pair.raw_port, "/ok")[0] == 200
    assert pair.raw.connection_of("/ok") != pair.raw.connection_of("/partial")


def test_truncated_chunked_response_never_gets_a_last_chunk(pair: Pair) -> None:
    data, how, _ = raw_get(pair.raw_port, "/partial-chunked")
    assert status_of(data) == 200
    assert how in ("eof", "reset")
    body = data.partition(b"\r\n\r\n")[2]
    assert b"hello" in body
    assert not body.endswith(b"0\r\n\r\n"), "a cut body was ended as if it were whole"
    assert parse_responses(data) == []
    assert fetch(pair.raw_port, "/ok")[0] == 200
    assert pair.raw.connection_of("/ok") != pair.raw.connection_of("/partial-chunked")


def test_response_stalled_midway_is_aborted_at_the_route_timeout(pair: Pair) -> None:
    data, how, took = raw_get(pair.raw_port, "/partial-hang")
    assert status_of(data) == 200
    assert data.partition(b"\r\n\r\n")[2] == b"x" * 10
    assert how in ("eof", "reset")
    # the route timeout (0.5 s), give or take the proxy's 100 ms tick
    assert 0.4 <= took <= 0.9, f"cut after {took:.2f} s (route timeout 0.5 s)"
    assert fetch(pair.raw_port, "/ok")[0] == 200
    assert pair.raw.connection_of("/ok") != pair.raw.connection_of("/partial-hang")


def test_connection_with_bytes_past_the_response_is_not_reused(pair: Pair) -> None:
    """The backend sends more than its Content-Length: the response is passed on as framed, and
    the connection, out of step, is never used again (its extra bytes would be taken for the
    next request's response)."""
    status, body, _ = fetch(pair.raw_port, "/extra")
    assert (status, body) == (200, b"ok")
    status, body, _ = fetch(pair.raw_port, "/ok")
    assert (status, body) == (200, b"ok")
    assert pair.raw.connection_of("/ok") != pair.raw.connection_of("/extra")


# ===========================================================================================
# 7. Only idempotent requests are retried


class Retrying:
    def __init__(
        self, amb: Ambassador, ports: dict[str, int], live: EchoServer, failing: ControlledBackend
    ) -> None:
        self.amb, self.ports, self.live, self.failing = amb, ports, live, failing


@pytest.fixture(scope="module")
def retrying(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Retrying]:
    with contextlib.ExitStack() as stack:
        live = EchoServer("live")
        stack.callback(live.stop)
        failing = ControlledBackend("failing", status=503)
        stack.callback(failing.stop)
        dead = f"127.0.0.1:{free_port()}"  # nothing listens: connections are refused
        ports = {"connect": free_port(), "5xx": free_port()}
        config = {
            "access_log": {"enabled": True},
            "listeners": [
                listener("connect", ports["connect"], "connect"),
                listener(
                    "5xx", ports["5xx"], "5xx", route={"retry": {"retry_on": ["5xx"], "retries": 1}}
                ),
            ],
            "clusters": [
                {"name": "connect", "endpoints": [{"address": dead}, {"address": live.address}]},
                {
                    "name": "5xx",
                    "endpoints": [{"address": failing.address}, {"address": live.address}],
                },
            ],
        }
        amb = Ambassador(tmp_path_factory.mktemp("retries"), config)
        stack.callback(amb.stop)
        yield Retrying(amb, ports, live, failing)


def logged(amb: Ambassador, listener_name: str, path: str, count: int) -> list[dict[str, Any]]:
    def entries() -> list[dict[str, Any]]:
        found = [
            r for r in amb.access_logs() if r["listener"] == listener_name and r["target"] == path
        ]
        return found if len(found) >= count else []

    found = poll_until(entries, 3.0)
    assert found, f"{count} access log lines for {path} on {listener_name} never came"
    return found


def test_post_is_not_retried_after_a_connect_failure(retrying: Retrying) -> None:
    port = retrying.ports["connect"]
    path = sentinel_path().replace("/sentinel", "/post")
    before_live = sum(1 for r in retrying.live.seen if r["path"] == path)
    before = cluster_stats(retrying.amb, "connect")
    results = [fetch(port, path, method="POST", body=b"data") for _ in range(6)]
    statuses = [s for s, _, _ in results]
    assert set(statuses) == {200, 503}, statuses  # round robin: each endpoint got some
    assert all(b"connect" in body for s, body, _ in results if s == 503)
    live_got = sum(1 for r in retrying.live.seen if r["path"] == path) - before_live
    assert live_got == statuses.count(200)
    after = cluster_stats(retrying.amb, "connect")
    assert after["retries"] == before["retries"]
    for entry in logged(retrying.amb, "connect", path, 6):
        assert entry["attempts"] == 1, entry


def test_get_is_retried_on_another_endpoint_after_a_connect_failure(retrying: Retrying) -> None:
    port = retrying.ports["connect"]
    path = sentinel_path().replace("/sentinel", "/get")
    before = cluster_stats(retrying.amb, "connect")
    statuses = [fetch(port, path)[0] for _ in range(6)]
    assert statuses == [200] * 6
    entries = logged(retrying.amb, "connect", path, 6)
    retried = [e for e in entries if e["attempts"] == 2]
    assert retried, entries  # round robin sent some to the dead endpoint first
    assert all(e["attempts"] in (1, 2) for e in entries)
    after = cluster_stats(retrying.amb, "connect")
    assert after["retries"] - before["retries"] == len(retried)
    assert after["connect_failures"] - before["connect_failures"] == len(retried)


def test_get_answered_5xx_is_retried_on_another_endpoint(retrying: Retrying) -> None:
    port = retrying.ports["5xx"]
    path = sentinel_path().replace("/sentinel", "/five")
    before = cluster_stats(retrying.amb, "5xx")
    failing_before = retrying.failing.requests("GET", path)
    results = [fetch(port, path) for _ in range(6)]
    assert [s for s, _, _ in results] == [200] * 6
    assert {json.loads(b)["server"] for _, b, _ in results} == {"live"}
    failed_first = retrying.failing.requests("GET", path) - failing_before
    assert failed_first >= 1  # round robin sent some to the failing endpoint first
    assert cluster_stats(retrying.amb, "5xx")["retries"] - before["retries"] == failed_first


def test_post_answered_5xx_is_passed_on_not_retried(retrying: Retrying) -> None:
    port = retrying.ports["5xx"]
    path = sentinel_path().replace("/sentinel", "/five-post")
    before = cluster_stats(retrying.amb, "5xx")
    statuses = [fetch(port, path, method="POST", body=b"x")[0] for _ in range(6)]
    assert set(statuses) == {200, 503}, statuses
    assert retrying.failing.requests("POST", path) == statuses.count(503)
    assert cluster_stats(retrying.amb, "5xx")["retries"] == before["retries"]


class PerTry:
    def __init__(self, amb: Ambassador, ports: dict[str, int], hung: Unanswering) -> None:
        self.amb, self.ports, self.hung = amb, ports, hung


@pytest.fixture(scope="module")
def per_try(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PerTry]:
    with contextlib.ExitStack() as stack:
        hung = Unanswering()
        stack.callback(hung.stop)
        live = EchoServer("live")
        stack.callback(live.stop)
        ports = {n: free_port() for n in ("retried", "whole", "not_retried")}
        per_try_retry = {"per_try_timeout": "0.3s", "retries": 3}
        config = {
            "access_log": {"enabled": True},
            "listeners": [
                listener(
                    "retried",
                    ports["retried"],
                    "pair",
                    route={"retry": {**per_try_retry, "retry_on": ["gateway-error"]}},
                ),
                listener(
                    "whole",
                    ports["whole"],
                    "hung",
                    route={"timeout": "0.5s", "retry": {**per_try_retry, "retry_on": ["5xx"]}},
                ),
                listener(
                    "not_retried", ports["not_retried"], "hung", route={"retry": per_try_retry}
                ),
            ],
            "clusters": [
                {
                    "name": "pair",
                    "endpoints": [{"address": hung.address}, {"address": live.address}],
                },
                {"name": "hung", "endpoints": [{"address": hung.address}]},
            ],
        }
        amb = Ambassador(tmp_path_factory.mktemp("per-try"), config)
        stack.callback(amb.stop)
        yield PerTry(amb, ports, hung)


def test_a_per_try_timeout_is_retried_on_another_endpoint(per_try: PerTry) -> None:
    """Envoy's per_try_timeout: a try that times out counts as a 504, and retry_on gateway-error
    (or 5xx) sends the request to the next endpoint instead of answering 504."""
    path = sentinel_path()
    before = per_try.hung.received
    results = [fetch(per_try.ports["retried"], path) for _ in range(4)]
    assert [s for s, _, _ in results] == [200] * 4, results
    assert {json.loads(b)["server"] for _, b, _ in results} == {"live"}
    entries = logged(per_try.amb, "retried", path, 4)
    retried = [e for e in entries if e["attempts"] == 2]
    assert retried, entries  # round robin sent some to the hung endpoint first
    assert all(e["attempts"] in (1, 2) for e in entries), entries
    assert per_try.hung.received - before == len(retried)
    took = sorted(t for _, _, t in results)
    slow = took[len(took) - len(retried) :]
    assert all(0.3 <= t < 1.0 for t in slow), took  # one per-try timeout each, no more
    assert all(t < 0.3 for t in took[: len(took) - len(retried)]), took


def test_the_route_timeout_bounds_all_tries_together(per_try: PerTry) -> None:
    before = per_try.hung.received
    status, body, took = fetch(per_try.ports["whole"], sentinel_path())
    assert status == 504, body
    # tries at 0 and 0.3 s, the second cut at the route's 0.5 s (not at its own 0.6 s)
    assert 0.5 <= took < 0.8, took
    assert poll_until(lambda: per_try.hung.received - before == 2, 2.0), per_try.hung.received


def test_a_per_try_timeout_is_not_retried_without_a_status_retry_policy(per_try: PerTry) -> None:
    before = per_try.hung.received
    status, body, took = fetch(per_try.ports["not_retried"], sentinel_path())
    assert status == 504, body
    assert 0.3 <= took < 0.6, took
    assert poll_until(lambda: per_try.hung.received - before == 1, 2.0)


def test_a_post_is_not_retried_after_a_per_try_timeout(per_try: PerTry) -> None:
    path = sentinel_path()
    before = per_try.hung.received
    statuses = [
        fetch(per_try.ports["retried"], path, method="POST", body=b"x")[0] for _ in range(4)
    ]
    assert sorted(statuses) == [200, 200, 504, 504], statuses
    assert per_try.hung.received - before == 2  # the two 504s, each sent once
    for entry in logged(per_try.amb, "retried", path, 4):
        assert entry["attempts"] == 1, entry


def test_a_retried_request_never_carries_an_earlier_requests_body(tmp_path: Path) -> None:
    """A POST's body is kept for a replay; the next request on the same client connection must
    not send it again. Here the next request is a GET whose pooled upstream connection is closed
    by the backend as it arrives (the keep-alive race, made certain), so it is retried: the
    retry must carry the GET alone, not the POST body after it (which here reads as a request)."""
    racer = RawBackend(keepalive_timeout=0.3)
    port = free_port()
    config = simple_config(port, [racer.address], cluster={"timeouts": {"idle": "5s"}})
    amb = Ambassador(tmp_path, config)
    get = b"GET /ok HTTP/1.1\r\nHost: a\r\n\r\n"
    smuggled = b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"
    post = b"POST /ok HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n%s" % (
        len(smuggled),
        smuggled,
    )
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            for request in (get, get, post):  # the GET head is known: its next one is fast
                sock.sendall(request)
                assert status_of(sock.recv(65536)) == 200
            time.sleep(0.5)  # the stimulus, not a wait: idle past the backend's keep-alive
            sock.sendall(get)
            assert status_of(sock.recv(65536)) == 200
        assert racer.raced, "the keep-alive race did not happen: nothing was retried"
        paths = [path for _, path in racer.seen]
        assert "/smuggled" not in paths, paths
    finally:
        amb.stop()
        racer.stop()

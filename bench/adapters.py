"""auth-adapter against calling the API directly: the same API, the same wrk load, the same run.

The API is one nginx (Debian; worker_processes 1, access_log off, keepalive_requests 100000 so
the adapter's pooled connections are never cut) answering any path with a small JSON body.
The token endpoint is authlib's own AuthorizationServer core (client_credentials,
client_secret_basic, bearer tokens from authlib's BearerTokenGenerator) served by http.server
in a thread of this script, counting the token requests it receives.
- direct: wrk straight at nginx, carrying `Authorization: Bearer <token>` (a token from the
  same endpoint), as an app that handles OAuth2 itself would;
- adapter: wrk at podkit's auth-adapter (`python -m podkit.images.auth_adapter --config ...`,
  access log off), whose one upstream is that nginx; it is measured once /readyz says it holds
  its first token, so every request is served from the token cache.
Each measurement is `wrk -t1 -c50 -d<DURATION>s --latency` (DURATION, default 10 s) after a 2 s
warm-up run that is not recorded. With 50 connections wrk keeps every connection busy, so the
latencies there are mostly queueing (about connections / requests per second) and the added
latency is mostly the adapter's lower throughput; the same pair is therefore also measured with
one connection (`-c1`, the `c1_*` figures; SINGLE_CONNECTION=0 skips it), where the added
latency is what the extra hop through the adapter costs one request. The pairs run ROUNDS times
(default 3), direct then adapter, and each figure is the median over the rounds: this machine's
speed drifts by tens of percent within a minute. The added latency (adapter minus direct, p50
and p99) is taken within each round and the median of those is reported. After the rounds the
adapter's peak RSS (VmHWM summed over its process tree) is read, and the token requests it made
during the load (expected: 0, the cache holds).
Cold cache: a fresh adapter is started with `readiness: {require_token: false}`, so it serves
before it has a token; the token endpoint holds its answers until all 200 of the app's requests
have been sent (and at least COLD_DELAY_MS, default 300 ms), so they all arrive while the
first token request is still open. The 200 requests go at once (one thread and connection
each); all must get 200, and the token requests the endpoint received are reported (expected:
1, single flight); anything else (a status other than 200, no token request open while the
requests were sent) is reported in a `cold_problems` field.
A table goes to stderr; the last stdout line is one JSON object.
Target (issue 6): p50 added latency under 1 ms.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from base64 import b64encode
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import parse_qsl

from authlib.oauth2.rfc6749 import (
    AuthorizationServer,
    ClientCredentialsGrant,
    ClientMixin,
    OAuth2Request,
)
from authlib.oauth2.rfc6749.requests import BasicOAuth2Payload
from authlib.oauth2.rfc6750 import BearerTokenGenerator

DURATION = int(os.environ.get("DURATION", "10"))
ROUNDS = int(os.environ.get("ROUNDS", "3"))
COLD_REQUESTS = int(os.environ.get("COLD_REQUESTS", "200"))
COLD_DELAY = int(os.environ.get("COLD_DELAY_MS", "300")) / 1000
SINGLE_CONNECTION = os.environ.get("SINGLE_CONNECTION", "1") != "0"
WARMUP = 2
CONNECTIONS = 50
START_TIMEOUT = 20.0
BODY = '{"ok":true,"from":"nginx"}\n'
CLIENT_ID = "bench-app"


# --- processes --------------------------------------------------------------------------------


@dataclass
class Server:
    """A process this script started (in its own process group) and where its output goes."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    port: int = 0
    extra: dict[str, int] = field(default_factory=dict)

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


STARTED: list[Server] = []
ENDPOINTS: list[TokenEndpoint] = []


def start(name: str, argv: list[str], log: Path) -> Server:
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopping it reaches its children
        )
    server = Server(name, proc, log)
    STARTED.append(server)
    return server


def stop(server: Server) -> None:
    """Stop one process group: SIGTERM, SIGKILL after 5 s."""
    if server.proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        server.proc.wait(5)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(server.proc.pid, signal.SIGKILL)  # leftovers of the group (nginx workers)
    if server.proc.poll() is None:
        server.proc.wait(5)
    if server in STARTED:
        STARTED.remove(server)


def stop_all() -> None:
    """Stop every process this script started (SIGTERM to each group, SIGKILL after 5 s) and
    the token endpoints it serves."""
    for server in STARTED:
        if server.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + 5
    for server in STARTED:
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.proc.wait(max(0.0, deadline - time.monotonic()))
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(server.proc.pid, signal.SIGKILL)
        if server.proc.poll() is None:
            server.proc.wait(5)
    STARTED.clear()
    for endpoint in ENDPOINTS:
        endpoint.stop()
    ENDPOINTS.clear()


def on_signal(signum: int, frame: FrameType | None) -> None:
    print(f"{signal.Signals(signum).name}: stopping everything started", file=sys.stderr)
    raise SystemExit(128 + signum)  # unwinds through the finally blocks that clean up


def free_ports(n: int) -> list[int]:
    """n distinct free ports on 127.0.0.1 (held open together so none is handed out twice)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def get(port: int, path: str = "/", timeout: float = 2.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def wait_until(server: Server, what: str, check: Callable[[], bool]) -> None:
    """Poll `check` until it holds; fail clearly if the process dies or the deadline passes."""
    deadline = time.monotonic() + START_TIMEOUT
    last_error = "no answer"
    while True:
        if server.proc.poll() is not None:
            raise SystemExit(
                f"{server.name} exited with {server.proc.returncode} before {what}; "
                f"its output:\n{server.log_tail()}"
            )
        try:
            if check():
                return
            last_error = "unexpected answer"
        except (OSError, http.client.HTTPException) as exc:
            last_error = f"{type(exc).__name__}: {exc}"
        if time.monotonic() > deadline:
            raise SystemExit(
                f"{server.name}: no {what} within {START_TIMEOUT:.0f} s ({last_error}); "
                f"its output:\n{server.log_tail()}"
            )
        time.sleep(0.05)


# --- the token endpoint: authlib's AuthorizationServer core -------------------------------------


@dataclass
class Client(ClientMixin):
    client_id: str
    secret: str

    def get_client_id(self) -> str:
        return self.client_id

    def check_client_secret(self, client_secret: str) -> bool:
        return secrets.compare_digest(self.secret.encode(), client_secret.encode())

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method == "client_secret_basic"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == "client_credentials"

    def get_allowed_scope(self, scope: str | None) -> str:
        return scope or ""


class TokenRequest(OAuth2Request):
    def __init__(self, uri: str, headers: Any, form: dict[str, str]) -> None:
        super().__init__("POST", uri, headers=headers)
        self.payload = BasicOAuth2Payload(form)

    @property
    def form(self) -> dict[str, str]:  # type: ignore[override]
        return self.payload.data

    @property
    def args(self) -> dict[str, str]:
        return {}


class Authlib(AuthorizationServer):
    """The framework-independent core, with the few hooks a framework integration provides."""

    def __init__(self, clients: dict[str, Client]) -> None:
        super().__init__()
        self.clients = clients
        self.register_grant(ClientCredentialsGrant)
        generator = BearerTokenGenerator(lambda **_: "at-" + secrets.token_urlsafe(24))
        self.register_token_generator("default", generator)

    def query_client(self, client_id: str) -> Client | None:
        return self.clients.get(client_id)

    def save_token(self, token: dict[str, Any], request: OAuth2Request) -> None:
        pass  # nobody checks the tokens: nginx answers whatever the bearer

    def create_oauth2_request(self, request: TokenRequest) -> TokenRequest:
        return request

    def handle_response(self, status: int, body: Any, headers: Any) -> tuple[int, Any, Any]:
        return status, body, headers

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        pass


class TokenEndpoint:
    """POST /token on 127.0.0.1, counting requests. `hold` (an Event) and `delay` make every
    answer wait: for the event (at most 10 s) and then until `delay` s after the request came."""

    def __init__(self, secret: str, delay: float = 0.0, hold: threading.Event | None = None):
        self.authlib = Authlib({CLIENT_ID: Client(CLIENT_ID, secret)})
        self.delay, self.hold = delay, hold
        self.requests = 0
        self.errors: list[str] = []
        self.lock = threading.Lock()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802
                came = time.monotonic()
                with endpoint.lock:
                    endpoint.requests += 1
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if endpoint.hold is not None:
                    endpoint.hold.wait(10)
                time.sleep(max(0.0, came + endpoint.delay - time.monotonic()))
                form = dict(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
                with endpoint.lock:
                    status, body, headers = endpoint.authlib.create_token_response(
                        TokenRequest(endpoint.url, self.headers, form)
                    )
                    if status != 200:
                        endpoint.errors.append(f"{status} {body}")
                out = json.dumps(body).encode()
                self.send_response(status)
                for key, value in headers:
                    if key.lower() != "content-type":
                        self.send_header(key, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Httpd(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 1024

        self.httpd = Httpd(("127.0.0.1", 0), Handler)
        self.port = int(self.httpd.server_address[1])
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()
        ENDPOINTS.append(self)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    def token(self, secret: str) -> str:
        """A token for the bench client, fetched as any OAuth2 client would."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        basic = b64encode(f"{CLIENT_ID}:{secret}".encode()).decode()
        try:
            conn.request(
                "POST",
                "/token",
                body="grant_type=client_credentials",
                headers={
                    "Authorization": f"Basic {basic}",
                    "Content-Type": "application/x-www-form-urlencoded",
                },
            )
            response = conn.getresponse()
            body = response.read()
        finally:
            conn.close()
        if response.status != 200:
            raise SystemExit(f"the token endpoint answered {response.status}: {body[:200]!r}")
        return str(json.loads(body)["access_token"])

    def stop(self) -> None:
        if self.hold is not None:
            self.hold.set()
        self.httpd.shutdown()
        self.httpd.server_close()


# --- the API and the adapter ------------------------------------------------------------------


# One worker, no logging, temporary files in the run's own directory; JSON on any path.
NGINX_API = """
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {dir}/client_body;
  proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi;
  scgi_temp_path {dir}/scgi;
  keepalive_requests 100000;
  server {{
    listen 127.0.0.1:{port};
    location / {{
      default_type application/json;
      return 200 '{body}';
    }}
  }}
}}
"""

ADAPTER = """
listen: 127.0.0.1:{port}
admin:
  listen: 127.0.0.1:{admin}
access_log:
  enabled: false
readiness:
  require_token: {require_token}
upstreams:
  - name: api
    prefix: /
    url: http://127.0.0.1:{api}/
    oauth2:
      token_url: {token_url}
      client_id: {client_id}
      client_secret_file: {secret_file}
"""


def start_api(tmp: Path) -> Server:
    work = tmp / "nginx"
    work.mkdir()
    port = free_ports(1)[0]
    conf = work / "nginx.conf"
    conf.write_text(NGINX_API.format(dir=work, port=port, body=BODY.replace("\n", "\\n")))
    argv = ["nginx", "-p", f"{work}/", "-e", str(work / "error.log"), "-c", str(conf)]
    server = start("nginx", argv, work / "output.log")
    server.log = work / "error.log"  # nginx reports its problems there, not on stderr
    server.port = port
    wait_until(
        server, f"200 on http://127.0.0.1:{port}/", lambda: get(port) == (200, BODY.encode())
    )
    return server


def start_adapter(
    tmp: Path, name: str, api: int, endpoint: TokenEndpoint, secret_file: Path, wait_token: bool
) -> Server:
    """The auth-adapter, waited for until /readyz says 200: with its first token when
    `wait_token`, else as soon as it serves."""
    work = tmp / name
    work.mkdir()
    port, admin = free_ports(2)
    conf = work / "auth-adapter.yaml"
    conf.write_text(
        ADAPTER.format(
            port=port,
            admin=admin,
            require_token="true" if wait_token else "false",
            api=api,
            token_url=endpoint.url,
            client_id=CLIENT_ID,
            secret_file=secret_file,
        )
    )
    argv = [sys.executable, "-m", "podkit.images.auth_adapter", "--config", str(conf)]
    server = start(name, argv, work / "output.log")
    server.port, server.extra["admin"] = port, admin
    try:
        wait_until(
            server,
            f"200 on http://127.0.0.1:{admin}/readyz",
            lambda: get(admin, "/readyz")[0] == 200,
        )
    except SystemExit as exc:
        raise SystemExit(
            f"the podkit auth-adapter could not be started ({' '.join(argv)}): {exc}"
        ) from None
    return server


# --- wrk --------------------------------------------------------------------------------------

UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


@dataclass
class Result:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: dict[str, int]


def to_ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if match is None:
        raise ValueError(f"unexpected wrk latency {text!r}")
    return float(match[1]) * UNITS_MS[match[2]]


def parse_wrk(output: str) -> Result:
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.M)
    p50 = re.search(r"^\s+50(?:\.000)?%\s+(\S+)", output, re.M)
    p99 = re.search(r"^\s+99(?:\.000)?%\s+(\S+)", output, re.M)
    if rps is None or p50 is None or p99 is None:
        raise SystemExit(f"cannot read wrk's output:\n{output}")
    errors: dict[str, int] = {}
    sockets = re.search(r"Socket errors: (.*)$", output, re.M)
    if sockets is not None:
        for kind, count in re.findall(r"(\w+) (\d+)", sockets[1]):
            if int(count):
                errors[kind] = int(count)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if non2xx is not None and int(non2xx[1]):
        errors["non_2xx_3xx"] = int(non2xx[1])
    return Result(float(rps[1]), to_ms(p50[1]), to_ms(p99[1]), errors)


def wrk(url: str, connections: int, seconds: int, latency: bool, headers: list[str]) -> str:
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s"] + (["--latency"] if latency else [])
    for header in headers:
        argv += ["-H", header]
    done = subprocess.run(
        argv + [url], capture_output=True, text=True, timeout=seconds + 60, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"wrk {url} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return done.stdout


def median_result(runs: list[Result]) -> Result:
    errors: dict[str, int] = {}
    for r in runs:
        for kind, count in r.errors.items():
            errors[kind] = errors.get(kind, 0) + count
    return Result(
        statistics.median(r.rps for r in runs),
        statistics.median(r.p50_ms for r in runs),
        statistics.median(r.p99_ms for r in runs),
        errors,
    )


def measure(label: str, url: str, connections: int, headers: list[str]) -> Result:
    # The warm-up (connections, caches, CPU frequency) is not recorded.
    wrk(url, connections, WARMUP, False, headers)
    result = parse_wrk(wrk(url, connections, DURATION, True, headers))
    note = f", ERRORS {result.errors}" if result.errors else ""
    print(
        f"{label:<10} {result.rps:>10,.0f} req/s  p50 {result.p50_ms:.3f} ms  "
        f"p99 {result.p99_ms:.3f} ms{note}",
        file=sys.stderr,
    )
    return result


# --- memory -----------------------------------------------------------------------------------


def process_tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    tree: list[int] = []
    todo = [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def peak_rss_mb(root: int) -> float:
    """VmHWM (peak resident set) summed over the process and all its descendants."""
    total_kb = 0
    for pid in process_tree(root):
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        total_kb += int(line.split()[1])
        except OSError:
            continue
    return total_kb / 1024


# --- cold cache -------------------------------------------------------------------------------


def cold_burst(tmp: Path, api: int, secret: str, secret_file: Path) -> tuple[int, list[str]]:
    """A fresh adapter with no token yet, COLD_REQUESTS requests at once: the token requests
    the endpoint received, and what went wrong (statuses other than 200, failures)."""
    sent = threading.Event()
    endpoint = TokenEndpoint(secret, delay=COLD_DELAY, hold=sent)
    adapter = start_adapter(tmp, "adapter-cold", api, endpoint, secret_file, wait_token=False)
    statuses: list[int | str] = []
    lock = threading.Lock()
    written = threading.Semaphore(0)

    def one(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", adapter.port, timeout=30)
        outcome: int | str
        try:
            try:
                conn.request("GET", f"/cold/{i}")
            finally:
                written.release()  # sent, or failed to: either way, no longer on its way
            response = conn.getresponse()
            response.read()
            outcome = response.status
        except (OSError, http.client.HTTPException) as exc:
            outcome = f"{type(exc).__name__}: {exc}"
        finally:
            conn.close()
        with lock:
            statuses.append(outcome)

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(COLD_REQUESTS)]
    try:
        for t in threads:
            t.start()
        for _ in threads:
            written.acquire(timeout=30)
        time.sleep(0.05)  # let the adapter read what was written before the token comes
        tokens_before_answer = endpoint.requests
        sent.set()
        for t in threads:
            t.join(30)
    finally:
        sent.set()
        stop(adapter)
    problems = [f"{s}" for s in statuses if s != 200]
    if len(statuses) != COLD_REQUESTS:
        problems.append(f"only {len(statuses)} of {COLD_REQUESTS} requests finished")
    if tokens_before_answer == 0:
        problems.append("no token request was open while the requests were sent")
    problems += [f"token endpoint: {e}" for e in endpoint.errors]
    return endpoint.requests, problems


# --- the run ----------------------------------------------------------------------------------


def added_per_round(adapter: list[Result], direct: list[Result], label: str) -> dict[str, float]:
    """Adapter minus direct within each round (the two runs seconds apart, not minutes), then
    the median over the rounds."""
    added: dict[str, float] = {}
    for figure in ("p50", "p99"):
        per_round = [
            getattr(a, f"{figure}_ms") - getattr(d, f"{figure}_ms")
            for a, d in zip(adapter, direct, strict=True)
        ]
        added[figure] = statistics.median(per_round)
        shown = ", ".join(f"{x:.3f}" for x in per_round)
        print(f"{label} added {figure}: {added[figure]:.3f} ms (rounds: {shown})", file=sys.stderr)
    return added


def print_table(
    medians: dict[int, dict[str, Result]], added: dict[int, dict[str, float]], rss: float
) -> None:
    err = sys.stderr
    print(f"\n{'':<6}{'':<10}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}", file=err)
    for connections, results in medians.items():
        load = f"c{connections}"
        for name, r in results.items():
            print(
                f"{load:<6}{name:<10}{r.rps:>10,.0f}{r.p50_ms:>10.3f}{r.p99_ms:>10.3f}"
                + (f"  ERRORS {r.errors}" if r.errors else ""),
                file=err,
            )
        a = added[connections]
        print(f"{load:<6}{'added':<10}{'':>10}{a['p50']:>10.3f}{a['p99']:>10.3f}", file=err)
    verdict = "met" if added[CONNECTIONS]["p50"] < 1.0 else "NOT met"
    print(
        f"target: p50 added < 1 ms at c{CONNECTIONS}: {verdict}; adapter peak RSS {rss:.1f} MB",
        file=err,
    )


def run(tmp: Path) -> dict[str, object]:
    tmp.chmod(0o755)  # nginx workers run as nobody when started as root
    secret = secrets.token_urlsafe(24)
    secret_file = tmp / "client_secret"
    secret_file.write_text(secret)
    secret_file.chmod(0o600)
    api = start_api(tmp)
    endpoint = TokenEndpoint(secret)
    token = endpoint.token(secret)
    adapter = start_adapter(tmp, "adapter", api.port, endpoint, secret_file, wait_token=True)
    if get(adapter.port) != (200, BODY.encode()):
        raise SystemExit(f"the adapter does not pass the API's answer through: {get(adapter.port)}")
    loads = [CONNECTIONS] + ([1] if SINGLE_CONNECTION else [])
    print(
        f"all up; wrk -t1 -c{'/-c'.join(map(str, loads))} -d{DURATION}s "
        f"(after {WARMUP} s warm-up) each",
        file=sys.stderr,
    )
    targets = {
        "direct": (f"http://127.0.0.1:{api.port}/v1/items", [f"Authorization: Bearer {token}"]),
        "adapter": (f"http://127.0.0.1:{adapter.port}/v1/items", []),
    }
    rounds: dict[int, dict[str, list[Result]]] = {c: {n: [] for n in targets} for c in loads}
    for number in range(1, ROUNDS + 1):
        print(f"round {number} of {ROUNDS}", file=sys.stderr)
        for connections in loads:
            for name, (url, headers) in targets.items():
                label = f"c{connections} {name}"
                rounds[connections][name].append(measure(label, url, connections, headers))
    tokens_during_load = endpoint.requests - 2  # the direct one and the adapter's first
    rss = peak_rss_mb(adapter.proc.pid)
    stop(adapter)
    added = {
        c: added_per_round(runs["adapter"], runs["direct"], f"c{c}") for c, runs in rounds.items()
    }

    print(f"cold cache: {COLD_REQUESTS} requests at once on a fresh adapter", file=sys.stderr)
    cold_tokens, problems = cold_burst(tmp, api.port, secret, secret_file)
    print(
        f"cold cache: {cold_tokens} token request(s)"
        + (f"; PROBLEMS: {problems[:5]}" if problems else "; all 200"),
        file=sys.stderr,
    )

    medians = {
        c: {name: median_result(results) for name, results in runs.items()}
        for c, runs in rounds.items()
    }
    print_table(medians, added, rss)
    out: dict[str, object] = {}
    errors: dict[str, dict[str, int]] = {}
    for connections in loads:
        prefix = "" if connections == CONNECTIONS else f"c{connections}_"
        for name, r in medians[connections].items():
            out[f"{prefix}{name}_p50_ms"] = round(r.p50_ms, 3)
            out[f"{prefix}{name}_p99_ms"] = round(r.p99_ms, 3)
            if r.errors:
                errors[f"c{connections}_{name}"] = r.errors
        out[f"{prefix}added_p50_ms"] = round(added[connections]["p50"], 3)
        out[f"{prefix}added_p99_ms"] = round(added[connections]["p99"], 3)
        if connections == CONNECTIONS:
            out["token_requests_cold_200"] = cold_tokens
    for name, r in medians[CONNECTIONS].items():
        out[f"{name}_rps"] = round(r.rps)
    out["adapter_peak_rss_mb"] = round(rss, 1)
    out["token_requests_during_load"] = tokens_during_load
    if errors:
        out["errors"] = errors
    if problems:
        out["cold_problems"] = problems[:10]
    return out


def main() -> None:
    for tool in ("nginx", "wrk"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found: `make debs` installs Debian's {tool}")
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    with tempfile.TemporaryDirectory(prefix="bench-adapters-") as name:
        try:
            out = run(Path(name))
        except KeyboardInterrupt:
            print("interrupted: stopping everything started", file=sys.stderr)
            raise SystemExit(130) from None
        finally:
            stop_all()
    print(json.dumps(out))


if __name__ == "__main__":
    main()

"""auth-adapter against calling the API directly: the same API, the same wrk load, the same run.

The API is one nginx (Debian; worker_processes 1, access_log off, keepalive_requests 100000 so
the adapter's pooled connections are never cut) answering any path with a small JSON body.
The token endpoint is the oauth-demo image's authlib AuthorizationServer core
(podkit.images.oauth_demo.server: client_credentials, client_secret_basic, opaque bearer
tokens) served by http.server in a thread of this script, which counts the token requests it
receives and can hold its answers (the cold-cache burst below).
- direct: wrk straight at nginx, carrying `Authorization: Bearer <token>` (a token from the
  same endpoint), as an app that handles OAuth2 itself would;
- adapter: wrk at podkit's auth-adapter (`python -m podkit.images.auth_adapter --config ...`,
  access log off), whose one upstream is that nginx; it is measured once /readyz says it holds
  its first token, so every request is served from the token cache;
- haproxy: a reference, not a competitor: HAProxy (Debian; nbthread 1) in front of the same
  nginx, setting one fixed `Authorization: Bearer <token>` on every request (no token endpoint,
  no refresh: the least a credential injector can do). Its added latency (`haproxy_added_*`)
  says how much of the target a fast C proxy's extra hop already takes on this machine.
Each measurement is `wrk -t1 -c50 -d<DURATION>s --latency` (DURATION, default 10 s) after a 2 s
warm-up run that is not recorded. With 50 connections wrk keeps every connection busy, so the
latencies there are mostly queueing (about connections / requests per second) and the added
latency is mostly the adapter's lower throughput; the same pair is therefore also measured with
one connection (`-c1`, the `c1_*` figures; SINGLE_CONNECTION=0 skips it), where the added
latency is what the extra hop through the adapter costs one request. The runs go ROUNDS times
(default 3), direct, adapter, haproxy, and each figure is the median over the rounds: this machine's
speed drifts by tens of percent within a minute. The added latency (adapter minus direct, p50
and p99) is taken within each round and the median of those is reported. After the rounds the
adapter's peak RSS (VmHWM summed over its process tree) is read, and the token requests it made
during the load (expected: 0, the cache holds). The adapter's CPU time per request (user +
system, from /proc, over the requests wrk made) is printed and in the JSON
(`adapter_cpu_us_per_request`): it drifts less with the machine than latency does, so it says
better whether the adapter itself got faster or slower.
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

import http.client
import json
import os
import secrets
import statistics
import sys
import threading
import time
from base64 import b64encode
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from authlib.oauth2.rfc6749 import OAuth2Error

import benchlib
from benchlib import (
    CLEANUPS,
    CONNECTIONS,
    DURATION,
    NGINX_COMMON,
    ROUNDS,
    WARMUP,
    Result,
    Server,
    free_ports,
    get,
    measure,
    median_result,
    peak_rss_mb,
    start,
    start_nginx,
    stop,
    wait_until,
)
from podkit.images.oauth_demo.server import Client, Demo, Headers, TokenRequest

COLD_REQUESTS = int(os.environ.get("COLD_REQUESTS", "200"))
COLD_DELAY = int(os.environ.get("COLD_DELAY_MS", "300")) / 1000
SINGLE_CONNECTION = os.environ.get("SINGLE_CONNECTION", "1") != "0"
BODY = '{"ok":true,"from":"nginx"}\n'
CLIENT_ID = "bench-app"


# --- the token endpoint: authlib's AuthorizationServer core -------------------------------------


class TokenEndpoint:
    """POST /token on 127.0.0.1, counting requests. `hold` (an Event) and `delay` make every
    answer wait: for the event (at most 10 s) and then until `delay` s after the request came."""

    def __init__(self, secret: str, delay: float = 0.0, hold: threading.Event | None = None):
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
                fields = Headers({k.lower(): v for k, v in self.headers.items()})
                with endpoint.lock:
                    try:
                        status, body, headers = endpoint.demo.create_token_response(
                            TokenRequest(endpoint.url, fields, raw)
                        )
                    except OAuth2Error as exc:
                        status, body, headers = exc()
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
        self.demo = Demo(Client(CLIENT_ID, secret), 3600.0, self.url)
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()
        CLEANUPS.append(self.stop)

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
NGINX_API = (
    NGINX_COMMON
    + """
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
)

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


# HAProxy as the simplest credential injector there is: one fixed token, set on every request.
HAPROXY = """
global
  nbthread 1
  maxconn 2000

defaults
  mode http
  option http-keep-alive
  timeout connect 5s
  timeout client 30s
  timeout server 30s

frontend app
  bind 127.0.0.1:{port}
  http-request set-header Authorization "Bearer {token}"
  default_backend api

backend api
  server nginx 127.0.0.1:{api}
"""


def start_haproxy(tmp: Path, api: int, token: str) -> Server:
    work = tmp / "haproxy"
    work.mkdir()
    port = free_ports(1)[0]
    conf = work / "haproxy.cfg"
    conf.write_text(HAPROXY.format(port=port, token=token, api=api))
    server = start("haproxy", ["haproxy", "-db", "-f", str(conf)], work / "output.log")
    server.http_port = port
    wait_until(
        server,
        f"200 on http://127.0.0.1:{port}/v1/items",
        lambda: get(port, "/v1/items") == (200, BODY.encode()),
    )
    return server


def start_api(tmp: Path) -> Server:
    port = free_ports(1)[0]
    server = start_nginx("nginx", tmp, NGINX_API, port=port, body=BODY.replace("\n", "\\n"))
    server.http_port = port
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
    server.http_port, server.extra["admin"] = port, admin
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


# --- cold cache -------------------------------------------------------------------------------


def waiting_for_token(adapter: Server) -> int:
    """The requests the adapter holds (its /stats: its one cluster's active requests)."""
    status, body = get(adapter.extra["admin"], "/stats")
    return int(json.loads(body)["clusters"]["api"]["active_requests"]) if status == 200 else 0


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
        conn = http.client.HTTPConnection("127.0.0.1", adapter.http_port, timeout=30)
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
        # The adapter has read them all once each waits for the token (held until `sent`).
        deadline = time.monotonic() + 10
        while waiting_for_token(adapter) < COLD_REQUESTS and time.monotonic() < deadline:
            time.sleep(0.01)
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
    medians: dict[int, dict[str, Result]],
    added: dict[int, dict[str, float]],
    reference: dict[int, dict[str, float]],
    rss: float,
) -> None:
    err = sys.stderr
    print(f"\n{'':<6}{'':<10}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'cpu us/req':>12}", file=err)
    for connections, results in medians.items():
        load = f"c{connections}"
        for name, r in results.items():
            cpu = f"{r.cpu_us:>12.1f}" if r.cpu_us else f"{'-':>12}"
            print(
                f"{load:<6}{name:<10}{r.rps:>10,.0f}{r.p50_ms:>10.3f}{r.p99_ms:>10.3f}{cpu}"
                + (f"  ERRORS {r.errors}" if r.errors else ""),
                file=err,
            )
        for label, a in (("added", added[connections]), ("hap. added", reference[connections])):
            print(f"{load:<6}{label:<10}{'':>10}{a['p50']:>10.3f}{a['p99']:>10.3f}", file=err)
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
    adapter = start_adapter(tmp, "adapter", api.http_port, endpoint, secret_file, wait_token=True)
    haproxy = start_haproxy(tmp, api.http_port, token)
    if get(adapter.http_port) != (200, BODY.encode()):
        raise SystemExit(
            f"the adapter does not pass the API's answer through: {get(adapter.http_port)}"
        )
    loads = [CONNECTIONS] + ([1] if SINGLE_CONNECTION else [])
    print(
        f"all up; wrk -t1 -c{'/-c'.join(map(str, loads))} -d{DURATION}s "
        f"(after {WARMUP} s warm-up) each",
        file=sys.stderr,
    )
    targets = {
        "direct": (
            f"http://127.0.0.1:{api.http_port}/v1/items",
            [f"Authorization: Bearer {token}"],
            None,
        ),
        "adapter": (f"http://127.0.0.1:{adapter.http_port}/v1/items", [], adapter),
        "haproxy": (f"http://127.0.0.1:{haproxy.http_port}/v1/items", [], haproxy),
    }
    rounds: dict[int, dict[str, list[Result]]] = {c: {n: [] for n in targets} for c in loads}
    for number in range(1, ROUNDS + 1):
        print(f"round {number} of {ROUNDS}", file=sys.stderr)
        for connections in loads:
            for name, (url, headers, server) in targets.items():
                label = f"c{connections} {name}"
                rounds[connections][name].append(measure(label, url, server, connections, headers))
    tokens_during_load = endpoint.requests - 2  # the direct one and the adapter's first
    rss = peak_rss_mb(adapter.proc.pid)
    stop(adapter)
    added = {
        c: added_per_round(runs["adapter"], runs["direct"], f"c{c}") for c, runs in rounds.items()
    }
    reference = {
        c: added_per_round(runs["haproxy"], runs["direct"], f"c{c} haproxy")
        for c, runs in rounds.items()
    }

    print(f"cold cache: {COLD_REQUESTS} requests at once on a fresh adapter", file=sys.stderr)
    cold_tokens, problems = cold_burst(tmp, api.http_port, secret, secret_file)
    print(
        f"cold cache: {cold_tokens} token request(s)"
        + (f"; PROBLEMS: {problems[:5]}" if problems else "; all 200"),
        file=sys.stderr,
    )

    medians = {
        c: {name: median_result(results) for name, results in runs.items()}
        for c, runs in rounds.items()
    }
    print_table(medians, added, reference, rss)
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
        out[f"{prefix}haproxy_added_p50_ms"] = round(reference[connections]["p50"], 3)
        out[f"{prefix}haproxy_added_p99_ms"] = round(reference[connections]["p99"], 3)
        if connections == CONNECTIONS:
            out["token_requests_cold_200"] = cold_tokens
    for name, r in medians[CONNECTIONS].items():
        out[f"{name}_rps"] = round(r.rps)
    out["adapter_cpu_us_per_request"] = round(medians[CONNECTIONS]["adapter"].cpu_us, 1)
    out["adapter_peak_rss_mb"] = round(rss, 1)
    out["token_requests_during_load"] = tokens_during_load
    if errors:
        out["errors"] = errors
    if problems:
        out["cold_problems"] = problems[:10]
    return out


def main() -> None:
    benchlib.main("adapters", ["nginx", "wrk", "haproxy"], run)


if __name__ == "__main__":
    main()

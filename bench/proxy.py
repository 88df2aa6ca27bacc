"""ambassador against HAProxy and nginx: the same backend, the same wrk load, the same run.

The backend is one nginx (worker_processes 1, access_log off, keepalive_requests 100000 so no
proxy's pooled connections are cut) answering `GET /` with a small
body ("hello from nginx\\n"). In front of it, each on its own ports, one HTTP and one HTTPS
listener (TLS 1.2+, a self-signed ECDSA P-256 certificate for localhost / 127.0.0.1 made for
the run):
- HAProxy (Debian), nbthread 1, mode http, http-keep-alive, no logging;
- nginx (Debian) as a proxy, a second instance, worker_processes 1, proxy_pass to an upstream
  with keepalive 64, proxy_http_version 1.1, access_log off, and nginx's defaults otherwise
  (as the issue names it; its keepalive_requests stays 1000, so wrk reconnects every 1000
  requests, as any client of a stock nginx does);
- podkit ambassador, 1 worker (`python -m podkit.images.ambassador --config ...`).
Each measurement is `wrk -t1 -c50 -d<DURATION>s --latency` (DURATION, default 10 s) after a 2 s
warm-up run that is not recorded: over HTTP the backend directly, then HAProxy, nginx and the
ambassador; then over HTTPS HAProxy, nginx and the ambassador. Requests/s, p50 and p99 latency
are taken from wrk's output; a run where wrk saw socket errors or non-2xx/3xx responses gets an
"errors" field with the counts. Each server's CPU time (user + system, its whole process tree,
from /proc) during the run, divided by the requests wrk made, is its CPU per request: the
`cpu_ratio_*` figures (the peer's CPU per request over the ambassador's) say how the work of a
request compares without the machine's drift in it. After all runs the ambassador's peak RSS
(VmHWM summed over its process tree) is read. A table goes to stderr; the last stdout line is
one JSON object.
The whole sequence runs ROUNDS times (default 3) and each figure is the median over the rounds:
this machine's speed drifts by tens of percent within a minute, and a single pass would favour
whoever ran in a fast stretch. Then PAIRS (default 12; 0 skips them) quick rounds of 2 s HTTP
runs, the three proxies back to back: `paired_ratio_vs_*` is the median of the ambassador's
requests/s over each peer's within a round, and `paired_ambassador_ahead_of_*` in how many rounds
it was at least as fast. ONLY=direct,haproxy,nginx,ambassador (any subset) measures only
those.
Targets (issue 5): ambassador >= 0.8x HAProxy and >= 1.0x nginx in requests/s, p99 <= 1.5x
HAProxy's, peak RSS < 80 MB.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
import statistics
import subprocess
import sys
from pathlib import Path

import benchlib
from benchlib import (
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
    parse_wrk,
    peak_rss_mb,
    start,
    start_nginx,
    wait_until,
)

NAMES = ["direct", "haproxy", "nginx", "ambassador"]
PAIRS = int(os.environ.get("PAIRS", "12"))
PAIR_SECONDS = 2
PROXIES = ["haproxy", "nginx", "ambassador"]
BODY = "hello from nginx\n"


def wait_serving(server: Server, tls: ssl.SSLContext) -> None:
    """Ready: every listener accepts and answers GET / with 200 and the backend's body."""
    for port, ctx, scheme in ((server.http_port, None, "http"), (server.https_port, tls, "https")):
        if port:
            wait_until(
                server,
                f"200 on {scheme}://127.0.0.1:{port}/",
                lambda port=port, ctx=ctx: get(port, "/", ctx) == (200, BODY.encode()),
            )


# --- certificate ------------------------------------------------------------------------------


def make_certificate(tmp: Path) -> tuple[Path, Path]:
    """A self-signed ECDSA P-256 certificate for localhost and 127.0.0.1, valid for a day."""
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError:  # not (yet) a dependency of the virtualenv: the openssl command line
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]
            + ["-nodes", "-days", "1", "-subj", "/CN=localhost", "-keyout", str(key)]
            + ["-out", str(cert), "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
            check=True,
            capture_output=True,
        )
        return cert, key
    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(private, hashes.SHA256())
    )
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key.chmod(0o600)
    return cert, key


# --- the servers ------------------------------------------------------------------------------


# One worker, no logging, temporary files in the run's own directory.
NGINX_BACKEND = (
    NGINX_COMMON
    + """
  keepalive_requests 100000;
  server {{
    listen 127.0.0.1:{port};
    location / {{
      default_type text/plain;
      return 200 "hello from nginx\\n";
    }}
  }}
}}
"""
)

NGINX_PROXY = (
    NGINX_COMMON
    + """
  upstream backend {{
    server 127.0.0.1:{backend};
    keepalive 64;
  }}
  server {{
    listen 127.0.0.1:{http};
    listen 127.0.0.1:{https} ssl;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    ssl_protocols TLSv1.2 TLSv1.3;
    location / {{
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
}}
"""
)

HAPROXY = """
global
  nbthread 1
  maxconn 2000
  ssl-default-bind-options ssl-min-ver TLSv1.2

defaults
  mode http
  option http-keep-alive
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  timeout http-keep-alive 30s
  timeout http-request 10s

frontend http
  bind 127.0.0.1:{http}
  default_backend backend

frontend https
  bind 127.0.0.1:{https} ssl crt {pem} alpn http/1.1
  default_backend backend

backend backend
  server nginx 127.0.0.1:{backend}
"""

AMBASSADOR = """
admin:
  listen: 127.0.0.1:{admin}
access_log:
  enabled: false
listeners:
  - name: http
    listen: 127.0.0.1:{http}
    protocol: http
    routes:
      - match: {{prefix: /}}
        cluster: backend
  - name: https
    listen: 127.0.0.1:{https}
    protocol: https
    tls:
      certificates:
        - cert_file: {cert}
          key_file: {key}
    routes:
      - match: {{prefix: /}}
        cluster: backend
clusters:
  - name: backend
    endpoints:
      - address: 127.0.0.1:{backend}
"""


def start_haproxy(tmp: Path, backend: int, cert: Path, key: Path) -> Server:
    work = tmp / "haproxy"
    work.mkdir()
    pem = work / "haproxy.pem"  # HAProxy takes certificate and key from one file
    pem.write_text(cert.read_text() + key.read_text())
    http_port, https_port = free_ports(2)
    conf = work / "haproxy.cfg"
    conf.write_text(HAPROXY.format(http=http_port, https=https_port, pem=pem, backend=backend))
    server = start("haproxy", ["haproxy", "-db", "-f", str(conf)], work / "output.log")
    server.http_port, server.https_port = http_port, https_port
    return server


def start_ambassador(tmp: Path, backend: int, cert: Path, key: Path) -> Server:
    work = tmp / "ambassador"
    work.mkdir()
    http_port, https_port, admin = free_ports(3)
    conf = tmp / "ambassador.yaml"
    conf.write_text(
        AMBASSADOR.format(
            admin=admin, http=http_port, https=https_port, cert=cert, key=key, backend=backend
        )
    )
    argv = [sys.executable, "-m", "podkit.images.ambassador", "--config", str(conf)]
    server = start("ambassador", argv, work / "output.log")
    server.http_port, server.https_port, server.extra["admin"] = http_port, https_port, admin
    try:
        wait_until(
            server,
            f"200 on http://127.0.0.1:{admin}/ready",
            lambda: get(admin, "/ready")[0] == 200,
        )
    except SystemExit as exc:
        raise SystemExit(
            f"the podkit ambassador could not be started ({' '.join(argv)}): {exc}"
        ) from None
    return server


# --- the run ----------------------------------------------------------------------------------


def selected() -> list[str]:
    only = [n.strip() for n in os.environ.get("ONLY", ",".join(NAMES)).split(",") if n.strip()]
    unknown = sorted(set(only) - set(NAMES))
    if unknown or not only:
        raise SystemExit(f"ONLY={os.environ.get('ONLY')!r}: choose among {','.join(NAMES)}")
    return [n for n in NAMES if n in only]


def print_table(results: dict[str, dict[str, Result]]) -> None:
    """The medians over the rounds, with their ratios (the JSON's ratios are per round)."""
    err = sys.stderr
    print(
        f"\n{'':<6}{'':<12}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}"
        f"{'rps/haproxy':>13}{'rps/nginx':>11}{'p99/haproxy':>13}{'cpu us/req':>12}",
        file=err,
    )
    for proto, runs in results.items():
        for name, r in runs.items():
            cols: list[str] = []
            for peer in ("haproxy", "nginx"):
                cols.append(f"{r.rps / runs[peer].rps:.2f}" if peer in runs else "-")
            cols.append(f"{r.p99_ms / runs['haproxy'].p99_ms:.2f}" if "haproxy" in runs else "-")
            print(
                f"{proto:<6}{name:<12}{r.rps:>10,.0f}{r.p50_ms:>10.3f}{r.p99_ms:>10.3f}"
                f"{cols[0]:>13}{cols[1]:>11}{cols[2]:>13}{r.cpu_us:>12.1f}"
                + (" ERRORS" if r.errors else ""),
                file=err,
            )


def run(tmp: Path, names: list[str]) -> dict[str, object]:
    tmp.chmod(0o755)  # nginx workers run as nobody when started as root
    cert, key = make_certificate(tmp)
    tls = ssl.create_default_context(cafile=str(cert))  # checks the certificate on the way
    backend_port = free_ports(1)[0]
    backend = start_nginx("backend", tmp, NGINX_BACKEND, port=backend_port)
    backend.http_port = backend_port
    wait_serving(backend, tls)
    servers: dict[str, Server] = {"direct": backend}
    if "haproxy" in names:
        servers["haproxy"] = start_haproxy(tmp, backend_port, cert, key)
    if "nginx" in names:
        http_port, https_port = free_ports(2)
        servers["nginx"] = start_nginx(
            "nginx",
            tmp,
            NGINX_PROXY,
            backend=backend_port,
            http=http_port,
            https=https_port,
            cert=cert,
            key=key,
        )
        servers["nginx"].http_port, servers["nginx"].https_port = http_port, https_port
    if "ambassador" in names:
        servers["ambassador"] = start_ambassador(tmp, backend_port, cert, key)
    for name in names:
        wait_serving(servers[name], tls)
    print(
        f"all up; wrk -t1 -c{CONNECTIONS} -d{DURATION}s (after {WARMUP} s warm-up) each",
        file=sys.stderr,
    )

    # Rounds, each measuring every server in turn; each figure is the median over the rounds.
    # This machine's speed drifts by tens of percent over a minute: measured one after the
    # other only once, whoever ran in a fast stretch would win.
    rounds: dict[str, dict[str, list[Result]]] = {"http": {}, "https": {}}
    for number in range(1, ROUNDS + 1):
        print(f"round {number} of {ROUNDS}", file=sys.stderr)
        for name in names:
            url = f"http://127.0.0.1:{servers[name].http_port}/"
            rounds["http"].setdefault(name, []).append(measure(f"http  {name}", url, servers[name]))
        for name in names:
            if name in PROXIES:
                url = f"https://127.0.0.1:{servers[name].https_port}/"
                rounds["https"].setdefault(name, []).append(
                    measure(f"https {name}", url, servers[name])
                )
    results = {
        proto: {name: median_result(runs) for name, runs in by_name.items()}
        for proto, by_name in rounds.items()
    }
    rss = peak_rss_mb(servers["ambassador"].proc.pid) if "ambassador" in servers else None
    print_table(results)

    out: dict[str, object] = {
        proto: {name: r.as_json() for name, r in runs.items()}
        for proto, runs in results.items()
        if runs
    }
    # Ratios are taken within each round (the two servers measured seconds apart, not minutes)
    # and the median of those is reported.
    pairs = (
        ("ratio_vs_haproxy", "http", "haproxy", "rps"),
        ("ratio_vs_nginx", "http", "nginx", "rps"),
        ("p99_ratio_vs_haproxy", "http", "haproxy", "p99_ms"),
        ("https_ratio_vs_haproxy", "https", "haproxy", "rps"),
        ("https_ratio_vs_nginx", "https", "nginx", "rps"),
        # CPU per request, theirs over ours: above 1, the ambassador does a request's work with
        # less CPU; the same kind of ratio as requests/s, without the machine's drift in it.
        ("cpu_ratio_vs_haproxy", "http", "haproxy", "cpu_us"),
        ("cpu_ratio_vs_nginx", "http", "nginx", "cpu_us"),
        ("https_cpu_ratio_vs_haproxy", "https", "haproxy", "cpu_us"),
    )
    for key, proto, peer, figure in pairs:
        mine, theirs = rounds[proto].get("ambassador"), rounds[proto].get(peer)
        if mine and theirs:
            pairs_ = zip(mine, theirs, strict=True)
            if figure == "cpu_us":
                per_round = [b.cpu_us / a.cpu_us if a.cpu_us else 0.0 for a, b in pairs_]
            else:
                per_round = [getattr(a, figure) / getattr(b, figure) for a, b in pairs_]
            out[key] = round(statistics.median(per_round), 2)
            shown = ", ".join(f"{x:.2f}" for x in per_round)
            print(f"{key}: {out[key]} (rounds: {shown})", file=sys.stderr)
    if all(name in servers for name in PROXIES) and PAIRS:
        out.update(quick_pairs(servers))
    if rss is not None:
        out["ambassador_peak_rss_mb"] = round(rss, 1)
        print(f"ambassador peak RSS: {rss:.1f} MB", file=sys.stderr)
    return out


def quick_pairs(servers: dict[str, Server]) -> dict[str, object]:
    """PAIRS more rounds of PAIR_SECONDS-long HTTP runs, the three proxies back to back (the
    order rotating): a figure that says who is ahead with less of the machine's drift in it
    than the 10 s rounds, whose runs are a minute apart."""
    per_round: dict[str, list[float]] = {"haproxy": [], "nginx": []}
    order = list(PROXIES)
    print(f"quick pairs: {PAIRS} rounds of {PAIR_SECONDS} s runs", file=sys.stderr)
    for number in range(PAIRS):
        turn = order[number % 3 :] + order[: number % 3]
        rps = {
            name: parse_wrk(
                benchlib.wrk(f"http://127.0.0.1:{servers[name].http_port}/", PAIR_SECONDS, True)
            ).rps
            for name in turn
        }
        for peer, ratios in per_round.items():
            ratios.append(rps["ambassador"] / rps[peer])
    out: dict[str, object] = {}
    for peer, ratios in per_round.items():
        key = f"paired_ratio_vs_{peer}"
        out[key] = round(statistics.median(ratios), 2)
        ahead = sum(r >= 1.0 for r in ratios)
        out[f"paired_ambassador_ahead_of_{peer}"] = f"{ahead}/{len(ratios)}"
        shown = ", ".join(f"{x:.2f}" for x in ratios)
        print(
            f"{key}: {out[key]}, ambassador ahead in {ahead} of {PAIRS} ({shown})", file=sys.stderr
        )
    return out


def main() -> None:
    names = selected()
    tools = ["nginx", "wrk"] + (["haproxy"] if "haproxy" in names else [])
    benchlib.main("proxy", tools, lambda tmp: run(tmp, names))


if __name__ == "__main__":
    main()

"""What the benchmarks that drive servers with wrk share: processes started in their own group
and always stopped, readiness polled with a deadline, nginx from a config template, wrk's
output read, CPU per request from /proc, and peak RSS.

Settings from the environment: DURATION (s of each measured wrk run, default 10) and ROUNDS
(default 3); each run follows a WARMUP (2 s) that is not recorded.
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
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

DURATION = int(os.environ.get("DURATION", "10"))
ROUNDS = int(os.environ.get("ROUNDS", "3"))
WARMUP = 2
CONNECTIONS = 50
START_TIMEOUT = 20.0


# --- processes --------------------------------------------------------------------------------


@dataclass
class Server:
    """A process this script started (in its own process group) and where its output goes."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    http_port: int = 0
    https_port: int = 0
    extra: dict[str, int] = field(default_factory=dict)

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


STARTED: list[Server] = []
CLEANUPS: list[Callable[[], None]] = []  # run by stop_all too (servers in this process)


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
    STARTED.remove(server)
    _stop([server])


def stop_all() -> None:
    """Stop every process this script started (SIGTERM to each group, SIGKILL after 5 s), and
    run the cleanups."""
    _stop(STARTED)
    STARTED.clear()
    for cleanup in CLEANUPS:
        cleanup()
    CLEANUPS.clear()


def _stop(servers: list[Server]) -> None:
    for server in servers:
        if server.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + 5
    for server in servers:
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.proc.wait(max(0.0, deadline - time.monotonic()))
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(server.proc.pid, signal.SIGKILL)  # leftovers of the group (nginx workers)
        if server.proc.poll() is None:
            server.proc.wait(5)


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


def get(
    port: int, path: str = "/", tls: ssl.SSLContext | None = None, timeout: float = 2.0
) -> tuple[int, bytes]:
    conn: http.client.HTTPConnection
    if tls is None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    else:
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout, context=tls)
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


NGINX_COMMON = """
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
"""


def start_nginx(name: str, tmp: Path, template: str, **values: object) -> Server:
    work = tmp / name
    work.mkdir()
    conf = work / "nginx.conf"
    conf.write_text(template.format(dir=work, **values))
    argv = ["nginx", "-p", f"{work}/", "-e", str(work / "error.log"), "-c", str(conf)]
    server = start(name, argv, work / "output.log")
    server.log = work / "error.log"  # nginx reports its problems there, not on stderr
    return server


# --- wrk --------------------------------------------------------------------------------------

UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


@dataclass
class Result:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: dict[str, int]
    cpu_us: float = 0.0  # the server's CPU time (user + system) per request during the run

    def as_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "rps": round(self.rps),
            "p50_ms": round(self.p50_ms, 3),
            "p99_ms": round(self.p99_ms, 3),
            "cpu_us_per_request": round(self.cpu_us, 1),
        }
        if self.errors:
            out["errors"] = self.errors
        return out


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


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time so far of these processes (/proc/<pid>/stat)."""
    ticks = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def wrk(
    url: str,
    seconds: int,
    latency: bool,
    connections: int = CONNECTIONS,
    headers: Sequence[str] = (),
) -> str:
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
        statistics.median(r.cpu_us for r in runs),
    )


def measure(
    label: str,
    url: str,
    server: Server | None = None,
    connections: int = CONNECTIONS,
    headers: Sequence[str] = (),
) -> Result:
    """wrk against `url` (DURATION s, after a WARMUP run not recorded), and with `server` the
    CPU time it spent per request meanwhile: a figure that drifts less than requests/s on this
    shared VM (it depends less on how much of the machine the server got)."""
    wrk(url, WARMUP, False, connections, headers)  # connections, caches, CPU frequency
    pids = process_tree(server.proc.pid) if server is not None else []
    before = cpu_seconds(pids)
    output = wrk(url, DURATION, True, connections, headers)
    spent = cpu_seconds(pids) - before
    result = parse_wrk(output)
    total = re.search(r"^\s*(\d+) requests in", output, re.M)
    if server is not None and total is not None and int(total[1]):
        result.cpu_us = spent * 1e6 / int(total[1])
    cpu = f"  cpu {result.cpu_us:.1f} us/req" if server is not None else ""
    note = f", ERRORS {result.errors}" if result.errors else ""
    print(
        f"{label:<18} {result.rps:>10,.0f} req/s  p50 {result.p50_ms:.3f} ms  "
        f"p99 {result.p99_ms:.3f} ms{cpu}{note}",
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


# --- the script around it ---------------------------------------------------------------------


def main(name: str, tools: Sequence[str], run: Callable[[Path], dict[str, object]]) -> None:
    """Check the tools are there, run `run` in a temporary directory with everything it starts
    stopped however it ends (SIGTERM, SIGHUP and Ctrl-C included), and print its JSON as the
    last stdout line."""
    for tool in tools:
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found: `make debs` installs Debian's {tool}")
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp:
        try:
            out = run(Path(tmp))
        except KeyboardInterrupt:
            print("interrupted: stopping everything started", file=sys.stderr)
            raise SystemExit(130) from None
        finally:
            stop_all()
    print(json.dumps(out))

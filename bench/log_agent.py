"""log-agent against rsyslog: file -> file with JSON enrichment, same input, same run.

The input is LINES access-log lines (about 110 bytes each), written once to a file. Each shipper
starts with the file already there, reads it from its start, wraps every line in a JSON object
with pod metadata, and appends it to an output file; the clock runs from starting the shipper to
the last line in its output.
- rsyslog (Debian): imfile -> omfile with a JSON template (time, host, tag, message, pod_name).
- log-agent: file source (offsets committed to SQLite as sinks acknowledge) -> file sink, with
  pod metadata and a static field on every event.
While log-agent runs, its committed file offset is read from its state database every 50 ms, to
show how often offsets are committed (`max_commit_gap_s`); once done, its CPU use while idle
is measured over 5 s. The last line is one JSON object.
Targets (issue 4): ratio >= 2.0, offsets committed at least every second, peak RSS < 100 MB.

Slow receiver (after the file -> file case): file -> log-agent `http` sink -> a receiver in this
process (a real HTTP server) that takes 40 ms per request. SLOW_LINES (200,000) access-log
lines are written to a file at 20,000 lines/s (100 every 5 ms, paced by the clock) while the
agent tails it; the receiver reads each NDJSON body and keeps the line numbers of the messages.
Small writes as an application makes them: with 1,000 lines every 50 ms, each read of the file
would be 1,000 lines, and a sink sending one read per 40 ms request would keep up by chance.
- `slow_sink_lines_per_s`: lines delivered / (arrival of the last new line - first line written);
  with every line delivered and a sink that keeps up, this is the writing rate, 20,000.
- `slow_sink_lost_lines`: lines whose number never arrived (within 120 s of the first write).
- `slow_sink_peak_buffer_mb`: the peak of the sink's disk buffer (10^6 bytes), polled every
  50 ms as the larger of `log_agent_buffer_disk_bytes{sink="slow"}` (admin /metrics) and the
  sizes of the files under <data_dir>/buffers/slow/.
- `recovery_s`, in a second run of the same workload: once lines were delivered, the receiver
  closes its socket (connection refused; it answers as HTTP/1.0, so no connection outlives it)
  for 10 s while lines are still written, then listens on the same port again; the time from
  then to the first request with events. Retry and request timeout are the agent's defaults.
Targets (issue 15): 20k lines/s flow to the 40 ms receiver without growing the disk
buffer; delivery resumes within 5 s of the receiver's recovery.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

LINES = int(os.environ.get("LINES", "1000000"))
TIMEOUT = 300.0
PATHS = ["/", "/api/info", "/api/echo", "/healthz", "/static/app.js", "/images/logo.png"]
SLOW_LINES = int(os.environ.get("SLOW_LINES", "200000"))
SLOW_RATE = 20_000  # lines/s written in the slow-receiver case
SLOW_BATCH = 100  # lines per write: one write every 5 ms
SLOW_TIMEOUT = 120.0  # s from the first line written
RECEIVER_DELAY = 0.040  # s the receiver takes per request
OUTAGE_S = 10.0
LINE_NUMBER = re.compile(r"\?id=(\d+) ")


def access_line(i: int) -> str:
    return (
        f"10.88.{i % 250}.{i % 200} - - [25/Nov/2026:22:15:{i % 60:02d} +0000] "
        f'"GET {PATHS[i % 6]}?id={i} HTTP/1.1" {404 if i % 10 == 0 else 200} '
        f'{512 + i % 1000} "-" "curl/7.88.1" 0.00{i % 9}\n'
    )


def write_input(path: Path) -> int:
    with path.open("w") as f:
        for i in range(LINES):
            f.write(access_line(i))
    return path.stat().st_size


class LineCounter:
    """Counts the lines of a growing file, reading only what was added since the last call."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.lines = 0

    def poll(self) -> int:
        try:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return 0
        self.offset += len(data)
        self.lines += data.count(b"\n")
        return self.lines


def peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def idle_cpu_percent(pid: int, seconds: float = 5.0) -> float:
    """CPU the agent uses with nothing to do: the input read, everything delivered."""
    before, t0 = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)  # the measurement window itself
    return 100 * (cpu_seconds(pid) - before) / (time.monotonic() - t0)


def wait_lines(counter: LineCounter, proc: subprocess.Popen[bytes], on_tick=None) -> float:
    deadline = time.monotonic() + TIMEOUT
    while counter.poll() < LINES:
        if proc.poll() is not None:
            raise SystemExit(f"{proc.args[0]} exited early with {proc.returncode}")
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out with {counter.lines} of {LINES} lines")
        if on_tick is not None:
            on_tick()
        time.sleep(0.05)
    return time.monotonic()


RSYSLOG_CONF = """
global(workDirectory="{work}")
module(load="imfile")
template(name="json" type="list" option.jsonf="on") {{
  property(outname="time" name="timereported" dateFormat="rfc3339" format="jsonf")
  property(outname="host" name="hostname" format="jsonf")
  property(outname="tag" name="syslogtag" format="jsonf")
  property(outname="message" name="msg" format="jsonf")
  constant(outname="pod_name" value="web-7f9c" format="jsonf")
}}
ruleset(name="ship") {{ action(type="omfile" file="{out}" template="json") }}
input(type="imfile" File="{input}" Tag="web" ruleset="ship")
"""


def run_rsyslog(tmp: Path, input_path: Path) -> float:
    work = tmp / "rsyslog"
    work.mkdir()
    out = work / "out.json"
    conf = work / "rsyslog.conf"
    conf.write_text(RSYSLOG_CONF.format(work=work, out=out, input=input_path))
    t0 = time.monotonic()
    proc = subprocess.Popen(
        ["rsyslogd", "-n", "-f", str(conf), "-i", str(work / "pid")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        end = wait_lines(LineCounter(out), proc)
    finally:
        proc.terminate()
        proc.wait(10)
    return LINES / (end - t0)


AGENT_CONF = """
data_dir: {data}
sources:
  - type: file
    paths: ["{input}"]
    container_name: simple-webapp
transforms:
  parse: raw
  add_fields: {{env: bench}}
sinks:
  - type: file
    path: {out}
    max_bytes: 0  # no rotation: the bench counts the lines of one file
admin:
  listen: 127.0.0.1:0
log_level: warning
"""


def committed_offset(db: Path) -> int | None:
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.05)
        try:
            rows = con.execute("SELECT value FROM state WHERE scope LIKE 'file:%'").fetchall()
        finally:
            con.close()
    except sqlite3.Error:
        return None
    best = None
    for (value,) in rows:
        record = json.loads(value)
        offset = record.get("offset") if isinstance(record, dict) else None
        if isinstance(offset, int):
            best = offset if best is None else max(best, offset)
    return best


def run_log_agent(tmp: Path, input_path: Path) -> tuple[float, float, float, float]:
    work = tmp / "log-agent"
    work.mkdir()
    out = work / "out.json"
    conf = work / "agent.yaml"
    conf.write_text(AGENT_CONF.format(data=work / "data", input=input_path, out=out))
    env = dict(os.environ, POD_NAME="web-7f9c", POD_NAMESPACE="shop", NODE_NAME="node-a")
    commits: list[float] = []
    last = [None]

    def sample() -> None:
        offset = committed_offset(work / "data" / "state.db")
        if offset is not None and offset != last[0]:
            last[0] = offset
            commits.append(time.monotonic())

    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "podkit.images.log_agent", "--config", str(conf)], env=env
    )
    try:
        end = wait_lines(LineCounter(out), proc, sample)
        rss = peak_rss_mb(proc.pid)
        idle = idle_cpu_percent(proc.pid)
    finally:
        proc.terminate()
        proc.wait(30)
    gaps = [b - a for a, b in zip(commits, commits[1:], strict=False)]
    return LINES / (end - t0), rss, max(gaps, default=float("nan")), idle


# -- slow receiver: file -> http sink -> 40 ms a request -------------------------------------

SLOW_CONF = """
sources:
  - type: file
    paths: ["{input_dir}/*.log"]
    container_name: simple-webapp
transforms:
  parse: raw
  add_fields: {{env: bench}}
sinks:
  - type: http
    name: slow
    endpoint: {endpoint}
admin:
  listen: 127.0.0.1:0
"""


class _ReceiverServer(ThreadingHTTPServer):
    daemon_threads = True
    receiver: Receiver


class _ReceiverHandler(BaseHTTPRequestHandler):
    """HTTP/1.0 (BaseHTTPRequestHandler's default): one request a connection."""

    server: _ReceiverServer

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        arrived = time.monotonic()
        numbers: list[int] = []
        bad = 0
        for line in body.splitlines():
            try:
                numbers.append(int(LINE_NUMBER.findall(json.loads(line)["message"])[0]))
            except (ValueError, KeyError, IndexError, TypeError):
                bad += 1
        time.sleep(RECEIVER_DELAY)  # the receiver's latency
        self.server.receiver.record(arrived, numbers, bad)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return None


class Receiver:
    """The http sink's receiver: records which numbered lines arrived, and when.

    `down()` closes its socket (connection refused), `up()` listens on the same port again."""

    def __init__(self, port: int = 0) -> None:
        self.port = port
        self.lock = threading.Lock()
        self.seen: set[int] = set()
        self.lines = 0  # repeats included
        self.bad_lines = 0  # not JSON, or no line number in the message
        self.arrivals: list[float] = []  # of each answered request with events
        self.last_new = 0.0  # arrival of the last request that brought a line not seen before
        self._server: _ReceiverServer | None = None

    def record(self, arrived: float, numbers: list[int], bad: int) -> None:
        with self.lock:
            before = len(self.seen)
            self.seen.update(numbers)
            if len(self.seen) > before:
                self.last_new = arrived
            self.lines += len(numbers)
            self.bad_lines += bad
            if numbers or bad:
                self.arrivals.append(arrived)

    def delivered(self) -> int:
        with self.lock:
            return len(self.seen)

    def first_arrival_after(self, t: float) -> float | None:
        with self.lock:
            return next((a for a in self.arrivals if a >= t), None)

    def up(self) -> float:
        server = _ReceiverServer(("127.0.0.1", self.port), _ReceiverHandler)
        server.receiver = self
        self.port = server.server_address[1]
        self._server = server
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return time.monotonic()

    def down(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def port_outside_ephemeral_range() -> int:
    """A port the receiver can close and open again: none of the agent's outgoing connections
    (ephemeral ports) can take it meanwhile, or connect to itself through it."""
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        low, high = (int(x) for x in f.read().split())
    candidates = range(10000, low) if low > 11000 else range(high + 1, 65536)
    while True:
        port = random.choice(candidates)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port


class Producer(threading.Thread):
    """Writes numbered access-log lines at SLOW_RATE: SLOW_BATCH lines a write, each write at
    its time on the clock (the workload's pace), until `lines` are written or `stop` is set."""

    def __init__(self, path: Path, lines: int) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.lines = lines
        self.stop = threading.Event()
        self.first_written = 0.0
        self.written = 0

    def run(self) -> None:
        with self.path.open("w") as f:
            t0 = time.monotonic()
            for n, start in enumerate(range(0, self.lines, SLOW_BATCH)):
                delay = t0 + n * SLOW_BATCH / SLOW_RATE - time.monotonic()
                if self.stop.wait(max(delay, 0)):
                    return
                end = min(start + SLOW_BATCH, self.lines)
                if n == 0:
                    self.first_written = time.monotonic()
                f.write("".join(access_line(i) for i in range(start, end)))
                f.flush()
                self.written = end


def disk_buffer_metric(admin: str, sink: str) -> float | None:
    try:
        with urllib.request.urlopen(f"http://{admin}/metrics", timeout=2) as resp:
            text = resp.read().decode()
    except OSError:
        return None
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "log_agent_buffer_disk_bytes" and s.labels.get("sink") == sink:
                return float(s.value)
    return None


def files_bytes(directory: Path) -> int:
    total = 0
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return 0
    for entry in entries:
        with contextlib.suppress(FileNotFoundError):  # a segment deleted meanwhile
            total += entry.stat().st_size
    return total


class BufferSampler(threading.Thread):
    """Every 50 ms: the sink's disk buffer from the agent's metric and from its files; keeps
    the peak of each."""

    def __init__(self, admin: str, data_dir: Path, sink: str) -> None:
        super().__init__(daemon=True)
        self.admin = admin
        self.directory = data_dir / "buffers" / sink
        self.sink = sink
        self.done = threading.Event()
        self.peak_metric = 0.0
        self.peak_files = 0
        self.scrapes = 0  # metric samples read

    def run(self) -> None:
        while not self.done.wait(0.05):
            value = disk_buffer_metric(self.admin, self.sink)
            if value is not None:
                self.scrapes += 1
                self.peak_metric = max(self.peak_metric, value)
            self.peak_files = max(self.peak_files, files_bytes(self.directory))


class Agent:
    """log-agent with its stdout (JSON log lines) read in a thread, for its "ready" line."""

    def __init__(self, work: Path, endpoint: str) -> None:
        self.data_dir = work / "data"
        self.input_dir = work / "in"
        self.input_dir.mkdir(parents=True)
        conf = work / "agent.yaml"
        conf.write_text(SLOW_CONF.format(input_dir=self.input_dir, endpoint=endpoint))
        env = dict(
            os.environ,
            LOG_AGENT_DATA_DIR=str(self.data_dir),
            POD_NAME="web-7f9c",
            POD_NAMESPACE="shop",
            NODE_NAME="node-a",
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "podkit.images.log_agent", "--config", str(conf)],
            env=env,
            stdout=subprocess.PIPE,
        )
        self.listening: dict[str, str] = {}
        self.ready = threading.Event()
        self.log: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            self.log.append(line)
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("msg") == "ready":
                self.listening = record["listening"]
                self.ready.set()

    def admin(self) -> str:
        if not self.ready.wait(20):
            raise SystemExit("log-agent not ready:\n" + "\n".join(self.log[-20:]))
        return self.listening["admin"]

    def check(self) -> None:
        if self.proc.poll() is not None:
            tail = "\n".join(self.log[-20:])
            raise SystemExit(f"log-agent exited early with {self.proc.returncode}:\n{tail}")

    def stop(self) -> None:
        self.proc.terminate()  # it drains its buffer for up to shutdown_timeout: not needed here
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def run_slow_sink(tmp: Path) -> tuple[float, float, int]:
    """Lines/s delivered to the slow receiver, peak disk buffer (MB), lines lost."""
    receiver = Receiver()
    receiver.up()
    agent = Agent(tmp / "slow", f"http://127.0.0.1:{receiver.port}/ingest")
    producer = Producer(agent.input_dir / "access.log", SLOW_LINES)
    sampler: BufferSampler | None = None
    try:
        sampler = BufferSampler(agent.admin(), agent.data_dir, "slow")
        sampler.start()
        producer.start()
        deadline = time.monotonic() + SLOW_TIMEOUT
        while receiver.delivered() < SLOW_LINES:
            agent.check()
            if time.monotonic() > deadline:
                print(f"slow sink: timed out after {SLOW_TIMEOUT:.0f} s", file=sys.stderr)
                break
            time.sleep(0.05)
    finally:
        producer.stop.set()
        if sampler is not None:
            sampler.done.set()
            sampler.join()
        agent.stop()
        receiver.down()
    delivered = receiver.delivered()
    elapsed = receiver.last_new - producer.first_written
    rate = delivered / elapsed if delivered and elapsed > 0 else 0.0
    assert sampler is not None
    print(
        f"slow sink: {delivered:,} of {SLOW_LINES:,} lines in {elapsed:.1f} s "
        f"({receiver.lines - delivered:,} repeats, {receiver.bad_lines} unreadable, "
        f"{len(receiver.arrivals)} requests); disk buffer peak: metric "
        f"{sampler.peak_metric / 1e6:.2f} MB ({sampler.scrapes} scrapes), "
        f"files {sampler.peak_files / 1e6:.2f} MB",
        file=sys.stderr,
    )
    peak = max(sampler.peak_metric, sampler.peak_files) / 1e6
    return rate, peak, SLOW_LINES - delivered


def run_outage(tmp: Path) -> float | None:
    """Seconds from the receiver listening again after OUTAGE_S to the first request with
    events; None if none came within 60 s."""
    receiver = Receiver(port_outside_ephemeral_range())
    receiver.up()
    agent = Agent(tmp / "outage", f"http://127.0.0.1:{receiver.port}/ingest")
    # Lines are written all through the outage; it ends long before the producer would.
    producer = Producer(agent.input_dir / "access.log", SLOW_RATE * 600)
    try:
        agent.admin()
        producer.start()
        deadline = time.monotonic() + 30
        while not receiver.delivered():
            agent.check()
            if time.monotonic() > deadline:
                raise SystemExit("outage: nothing delivered in 30 s")
            time.sleep(0.05)
        receiver.down()
        time.sleep(OUTAGE_S)  # the outage itself
        t_up = receiver.up()
        deadline = t_up + 60
        while (first := receiver.first_arrival_after(t_up)) is None:
            agent.check()
            if time.monotonic() > deadline:
                print("outage: no delivery within 60 s of recovery", file=sys.stderr)
                return None
            time.sleep(0.05)
    finally:
        producer.stop.set()
        agent.stop()
        receiver.down()
    print(
        f"outage: {producer.written:,} lines written, first request {first - t_up:.2f} s "
        "after recovery",
        file=sys.stderr,
    )
    return first - t_up


def main() -> None:
    if shutil.which("rsyslogd") is None:
        raise SystemExit("rsyslogd not found: `make debs` installs Debian's rsyslog")
    with tempfile.TemporaryDirectory(prefix="bench-log-agent-") as name:
        tmp = Path(name)
        input_path = tmp / "access.log"
        size = write_input(input_path)
        print(f"input: {LINES} lines, {size / 1e6:.1f} MB", file=sys.stderr)
        rsyslog = run_rsyslog(tmp, input_path)
        print(f"rsyslog: {rsyslog:,.0f} lines/s", file=sys.stderr)
        agent, rss, gap, idle = run_log_agent(tmp, input_path)
        print(f"log-agent: {agent:,.0f} lines/s, peak RSS {rss:.1f} MB", file=sys.stderr)
        slow_rate, slow_peak, slow_lost = run_slow_sink(tmp)
        recovery = run_outage(tmp)
    print(
        json.dumps(
            {
                "log_agent_lines_per_s": round(agent),
                "rsyslog_lines_per_s": round(rsyslog),
                "ratio": round(agent / rsyslog, 2),
                "log_agent_peak_rss_mb": round(rss, 1),
                "max_commit_gap_s": round(gap, 2),
                "log_agent_idle_cpu_percent": round(idle, 2),
                "slow_sink_lines_per_s": round(slow_rate),
                "slow_sink_peak_buffer_mb": round(slow_peak, 2),
                "slow_sink_lost_lines": slow_lost,
                "recovery_s": None if recovery is None else round(recovery, 2),
            }
        )
    )


if __name__ == "__main__":
    main()

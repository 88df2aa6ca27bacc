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
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LINES = int(os.environ.get("LINES", "1000000"))
TIMEOUT = 300.0
PATHS = ["/", "/api/info", "/api/echo", "/healthz", "/static/app.js", "/images/logo.png"]


def write_input(path: Path) -> int:
    with path.open("w") as f:
        for i in range(LINES):
            f.write(
                f"10.88.{i % 250}.{i % 200} - - [25/Nov/2026:22:15:{i % 60:02d} +0000] "
                f'"GET {PATHS[i % 6]}?id={i} HTTP/1.1" {404 if i % 10 == 0 else 200} '
                f'{512 + i % 1000} "-" "curl/7.88.1" 0.00{i % 9}\n'
            )
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
    print(
        json.dumps(
            {
                "log_agent_lines_per_s": round(agent),
                "rsyslog_lines_per_s": round(rsyslog),
                "ratio": round(agent / rsyslog, 2),
                "log_agent_peak_rss_mb": round(rss, 1),
                "max_commit_gap_s": round(gap, 2),
                "log_agent_idle_cpu_percent": round(idle, 2),
            }
        )
    )


if __name__ == "__main__":
    main()

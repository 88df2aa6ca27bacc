"""log-agent's local sinks as a user meets them: the agent's stdout, real files (rotated by the
sink, rotated by logrotate, removed, on a full disk) and a real rsyslogd parsing what the syslog
sink sends over TCP and UDP."""

from __future__ import annotations

import asyncio
import datetime
import json
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal, TypeVar

import pytest

from podkit.images.log_agent.event import Batch, Event, full_event
from podkit.images.log_agent.sinks.base import RetryableError
from podkit.images.log_agent.sinks.file import REOPEN_CHECK_INTERVAL, FileConfig, FileSink
from podkit.images.log_agent.sinks.stdout import StdoutConfig, StdoutSink
from podkit.images.log_agent.sinks.syslog import SyslogConfig, SyslogSink

T = TypeVar("T")

K8S = {
    "pod_name": "web-7f9c",
    "namespace_name": "shop",
    "pod_id": "0d5a6e4c-1111-2222-3333-444455556666",
    "labels": {"app": "shop"},
    "container_name": "webapp",
    "host": "node-a",
}
COMMON: Event = {"source": "tcp", "kubernetes": K8S}
TIME = "2026-11-25T22:15:08.123Z"


def make_batch(messages: list[str], common: Event | None = None, **fields: Any) -> Batch:
    events = [
        {"time": TIME, "message": m, "_id": f"tcp:{i}", **fields} for i, m in enumerate(messages)
    ]
    return Batch("tcp", events, dict(COMMON if common is None else common))


def poll(condition: Callable[[], T], what: str, timeout: float = 10.0) -> T:
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)
    return result


async def apoll(condition: Callable[[], T], what: str, timeout: float = 10.0) -> T:
    # The event loop keeps running while waiting (the sink's sockets stay serviced).
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)
    return result


# --- stdout ------------------------------------------------------------------------------------


def test_stdout_formats(capfdbinary: pytest.CaptureFixture[bytes]) -> None:
    batch = make_batch(["GET / 200", 'say "hi"\tgrüße'])
    full = [full_event(e, batch.common) for e in batch.events]

    def printed(fmt: Literal["json", "pretty", "text"]) -> str:
        sink = StdoutSink(fmt, StdoutConfig(type="stdout", format=fmt))
        asyncio.run(sink.send(sink.encode(batch)))
        return capfdbinary.readouterr().out.decode()

    # json: one line per event, the batch's shared fields in every line
    assert [json.loads(line) for line in printed("json").splitlines()] == full
    # pretty: the same events, indented
    expected = "".join(json.dumps(e, indent=2, ensure_ascii=False) + "\n" for e in full)
    assert printed("pretty") == expected
    # text: the messages alone
    assert printed("text") == 'GET / 200\nsay "hi"\tgrüße\n'


# --- file --------------------------------------------------------------------------------------


def read_lines(path: Path) -> list[dict[str, Any]]:
    data = path.read_bytes()
    assert data == b"" or data.endswith(b"\n"), f"{path} ends in a cut line"
    return [json.loads(line) for line in data.splitlines()]


def numbered_batch(payload: int, lines: int) -> Batch:
    return make_batch([f"payload {payload} line {j}" for j in range(lines)], seq=payload)


def test_file_rotates_by_size_between_payloads(tmp_path: Path) -> None:
    path = tmp_path / "out.log"
    cfg = FileConfig(type="file", path=str(path), max_bytes=2000, max_files=2)
    sink = FileSink("file", cfg)
    sizes = [1, 3, 2, 4, 1, 1, 3, 2, 2, 4, 1, 3]  # lines per payload: uneven, to vary the cuts
    payloads = [sink.encode(numbered_batch(p, n)) for p, n in enumerate(sizes)]

    async def scenario() -> None:
        await sink.start()
        for payload in payloads:
            await sink.send(payload)
        await sink.close()

    asyncio.run(scenario())

    files = [Path(f"{path}.2"), Path(f"{path}.1"), path]  # oldest first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.log", "out.log.1", "out.log.2"]
    kept: list[int] = []  # payload numbers, file by file
    for f in files:
        assert 0 < f.stat().st_size <= 2000, f"{f.name} is {f.stat().st_size} bytes"
        events = read_lines(f)
        numbers = [e["seq"] for e in events]
        kept += sorted(set(numbers), key=numbers.index)
        # every line is the full event, and payloads are whole: all their lines in one file
        for e in events:
            p, j = e["seq"], int(e["message"].rsplit(" ", 1)[1])
            assert e == {**numbered_batch(p, sizes[p]).events[j], **COMMON}
        for p in set(numbers):
            assert numbers.count(p) == sizes[p], f"payload {p} is split across files"
        # rotated only when the next payload would not have fit
        if f != path:
            following = files[files.index(f) + 1]
            first_next = read_lines(following)[0]["seq"]
            assert f.stat().st_size + len(payloads[first_next]) > 2000
    # the newest payloads, in order, the oldest ones dropped with the file that fell off the end
    assert kept == list(range(len(sizes) - len(kept), len(sizes)))
    assert len(kept) < len(sizes)


def test_file_payload_larger_than_max_bytes_gets_a_file_of_its_own(tmp_path: Path) -> None:
    path = tmp_path / "out.log"
    sink = FileSink("file", FileConfig(type="file", path=str(path), max_bytes=1000))
    small, big = sink.encode(numbered_batch(0, 1)), sink.encode(numbered_batch(1, 20))
    assert len(big) > 1000

    async def scenario() -> None:
        for payload in (big, small, big, small):
            await sink.send(payload)
        await sink.close()

    asyncio.run(scenario())
    names = ["out.log.3", "out.log.2", "out.log.1", "out.log"]  # oldest first
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)
    # whole, never split, and no empty file rotated away before a big one
    assert [(tmp_path / n).read_bytes() for n in names] == [big, small, big, small]


def test_file_text_format_creates_parents_and_appends_after_restart(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "app.log"
    cfg = FileConfig(type="file", path=str(path), format="text")

    async def run_once(messages: list[str]) -> None:
        sink = FileSink("file", cfg)
        await sink.start()
        await sink.send(sink.encode(make_batch(messages)))
        await sink.close()

    asyncio.run(run_once(["first", "second with ünïcode"]))
    asyncio.run(run_once(["third"]))
    assert path.read_text() == "first\nsecond with ünïcode\nthird\n"
    assert not path.with_name("app.log.1").exists()


def test_file_path_that_cannot_be_written_fails_start_naming_it(tmp_path: Path) -> None:
    (tmp_path / "plain-file").write_text("")
    path = tmp_path / "plain-file" / "out.log"
    sink = FileSink("file", FileConfig(type="file", path=str(path)))
    with pytest.raises(RetryableError, match=f"{path}: Not a directory"):
        asyncio.run(sink.start())


def send_until(sink: FileSink, done: Callable[[int], bool], first: int, what: str) -> int:
    """Send numbered one-line payloads (as the pipeline would, every 50 ms) until `done(last)`."""

    async def scenario() -> int:
        n = first
        deadline = time.monotonic() + REOPEN_CHECK_INTERVAL + 3.0
        while True:
            await sink.send(sink.encode(numbered_batch(n, 1)))
            if done(n):
                return n
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            n += 1
            await asyncio.sleep(0.05)

    return asyncio.run(scenario())


def test_file_recreated_after_someone_removes_it(tmp_path: Path) -> None:
    path = tmp_path / "out.log"
    sink = FileSink("file", FileConfig(type="file", path=str(path)))
    asyncio.run(sink.send(sink.encode(numbered_batch(0, 3))))
    path.unlink()
    removed = time.monotonic()

    last = send_until(sink, lambda n: path.exists(), 1, "the file to be created again")
    assert time.monotonic() - removed < REOPEN_CHECK_INTERVAL + 1.0
    asyncio.run(sink.send(sink.encode(numbered_batch(last + 1, 2))))
    asyncio.run(sink.close())
    # lines written before the sink noticed went to the removed file; from then on all are here
    assert [e["seq"] for e in read_lines(path)] == [last, last + 1, last + 1]


def test_file_follows_logrotate(tmp_path: Path) -> None:
    path = tmp_path / "out.log"
    conf = tmp_path / "logrotate.conf"
    conf.write_text(f"{path} {{\n  rotate 3\n  create\n  nocompress\n}}\n")
    sink = FileSink("file", FileConfig(type="file", path=str(path), max_bytes=0))
    asyncio.run(sink.send(sink.encode(numbered_batch(0, 2))))

    state = tmp_path / "logrotate.state"
    subprocess.run(["logrotate", "-f", "-s", str(state), str(conf)], check=True)
    assert path.exists() and path.stat().st_size == 0  # logrotate's `create`

    def in_new_file(n: int) -> bool:
        return any(e["seq"] == n for e in read_lines(path))

    last = send_until(sink, in_new_file, 1, "writes to move to the new file")
    asyncio.run(sink.close())
    rotated = [e["seq"] for e in read_lines(path.with_name("out.log.1"))]
    current = [e["seq"] for e in read_lines(path)]
    # nothing lost or doubled: the old file took lines until the sink noticed, then the new one
    assert rotated + current == [0, 0, *range(1, last + 1)]
    assert current == [last]


@pytest.fixture
def tiny_disk(tmpfs: Callable[[str], Path]) -> Path:
    return tmpfs("64k")  # so that the disk really fills up


def test_file_full_disk_is_retried_without_cut_or_doubled_lines(tiny_disk: Path) -> None:
    filler = tiny_disk / "filler"
    filler.write_bytes(b"x" * 56 * 1024)  # 8 KiB left
    path = tiny_disk / "out.log"
    sink = FileSink("file", FileConfig(type="file", path=str(path), format="text"))

    def payload(n: int) -> bytes:  # 3000 bytes: the third one fits only in part
        return sink.encode(make_batch([f"{n:02d}-{j:02d} ".ljust(99, "=") for j in range(30)]))

    async def scenario() -> None:
        try:
            await sink.send(payload(1))
            await sink.send(payload(2))
            with pytest.raises(RetryableError, match=f"{path}: No space left on device"):
                await sink.send(payload(3))
            assert path.read_bytes() == payload(1) + payload(2)  # the part that fit taken back
            filler.unlink()
            await sink.send(payload(3))  # the pipeline's retry
        finally:
            await sink.close()  # the disk is unmounted next

    asyncio.run(scenario())
    assert path.read_bytes() == payload(1) + payload(2) + payload(3)


# --- syslog ------------------------------------------------------------------------------------

RSYSLOG_CONF = """\
global(workDirectory="{work}" maxMessageSize="64k")
module(load="imtcp")
module(load="imudp")
module(load="mmpstrucdata")
input(type="imtcp" address="127.0.0.1" port="{port}" ruleset="in")
input(type="imudp" address="127.0.0.1" port="{port}" ruleset="in")
template(name="fields" type="list" option.jsonf="on") {{
  property(outname="pri" name="pri" format="jsonf")
  property(outname="time" name="timereported" dateFormat="rfc3339" format="jsonf")
  property(outname="hostname" name="hostname" format="jsonf")
  property(outname="app_name" name="app-name" format="jsonf")
  property(outname="procid" name="procid" format="jsonf")
  property(outname="msgid" name="msgid" format="jsonf")
  property(outname="sd" name="structured-data" format="jsonf")
  property(outname="sd_parsed" name="$!rfc5424-sd" format="jsonf")
  property(outname="msg" name="msg" format="jsonf")
}}
ruleset(name="in") {{
  action(type="mmpstrucdata")
  action(type="omfile" file="{out}" template="fields")
}}
"""


def free_port() -> int:
    """A port free for both TCP and UDP on 127.0.0.1 (rsyslogd listens on both)."""
    while True:
        with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            tcp.bind(("127.0.0.1", 0))
            port = tcp.getsockname()[1]
            try:
                udp.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


def listening(port: int) -> bool:
    """rsyslogd's TCP port is in LISTEN state and its UDP port is bound (/proc/net)."""
    local = f"0100007F:{port:04X}"
    found = set()
    for proto, state in (("tcp", "0A"), ("udp", "07")):
        for line in Path(f"/proc/net/{proto}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[1] == local and fields[3] == state:
                found.add(proto)
    return found == {"tcp", "udp"}


class Rsyslogd:
    """A real rsyslogd on 127.0.0.1:port (TCP and UDP) writing each message's parsed fields as
    a JSON line to `out`."""

    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.dir = tmp / "rsyslog"
        self.dir.mkdir()
        self.out = self.dir / "messages.json"
        self.conf = self.dir / "rsyslog.conf"
        self.conf.write_text(RSYSLOG_CONF.format(work=self.dir, port=self.port, out=self.out))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = (self.dir / "rsyslogd.log").open("ab")
        cmd = ["rsyslogd", "-n", "-f", str(self.conf), "-i", str(self.dir / "rsyslogd.pid")]
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        poll(self._ready, "rsyslogd to listen")

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"rsyslogd exited: {(self.dir / 'rsyslogd.log').read_text()}")
        return listening(self.port)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def records(self) -> list[dict[str, Any]]:
        if not self.out.exists():
            return []
        # strict UTF-8: a message cut inside a character would fail here
        lines = self.out.read_bytes().decode("utf-8").splitlines()
        return [json.loads(line) for line in lines]

    async def wait_records(self, count: int) -> list[dict[str, Any]]:
        def enough() -> list[dict[str, Any]] | None:
            records = self.records()
            return records if len(records) >= count else None

        records = await apoll(enough, f"{count} messages in rsyslogd's output")
        assert len(records) == count, records  # none doubled
        return records


@pytest.fixture
def rsyslogd(tmp_path: Path) -> Iterator[Rsyslogd]:
    server = Rsyslogd(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def by_msg(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["msg"]: r for r in records}


def sd(record: dict[str, Any]) -> dict[str, Any]:
    return json.loads(record["sd_parsed"]) if record["sd_parsed"] else {}


def test_syslog_tcp_fields_as_rsyslog_parses_them(rsyslogd: Rsyslogd) -> None:
    cfg = SyslogConfig(
        type="syslog",
        address=f"127.0.0.1:{rsyslogd.port}",
        facility="local3",  # 19
        severity="notice",  # 5, for levels that are missing or unknown
        severity_key="level",
        sd_id="k8s@32473",
    )
    sink = SyslogSink("syslog", cfg)
    big = "".join(f'{i:05d} ünïcødé, [x] "q" ' for i in range(400))[:10240]
    events: list[tuple[str, Any, str]] = [  # message, level, time
        ("plain message with spaces", "ERROR", TIME),
        ('quotes "q", [brackets], a \\ backslash and a | pipe', "warn", TIME),
        ("non-ASCII: grüße, 日本語, 🚀", "7", "2026-11-25T22:15:08.123456789Z"),
        ("first line\nsecond line", 2, "2026-11-25T23:15:08+01:00"),
        (big, "bogus", TIME),
        ("no level at all", None, TIME),
    ]
    batch = Batch(
        "tcp",
        [
            {"time": t, "message": m, **({"level": v} if v is not None else {})}
            for m, v, t in events
        ],
        dict(COMMON),
    )
    # a second batch whose events have no pod name, no container and an odd namespace
    odd = {"namespace_name": 'we"ird]ns\\', "labels": {}}
    other = make_batch(["from elsewhere"], common={"source": "http", "kubernetes": odd})

    async def scenario() -> list[dict[str, Any]]:
        await sink.start()
        await sink.send(sink.encode(batch))
        await sink.send(sink.encode(other))
        await sink.close()
        return await rsyslogd.wait_records(len(events) + 1)

    got = by_msg(asyncio.run(scenario()))
    pod_sd = {
        "k8s@32473": {"pod_name": "web-7f9c", "namespace_name": "shop", "container_name": "webapp"}
    }
    expected = {  # msg as rsyslog shows it (control characters escaped) -> pri, time
        "plain message with spaces": (19 * 8 + 3, TIME),
        'quotes "q", [brackets], a \\ backslash and a | pipe': (19 * 8 + 4, TIME),
        "non-ASCII: grüße, 日本語, 🚀": (19 * 8 + 7, "2026-11-25T22:15:08.123456Z"),
        "first line#012second line": (19 * 8 + 2, "2026-11-25T23:15:08+01:00"),
        big: (19 * 8 + 5, TIME),  # 10 KB in one message
        "no level at all": (19 * 8 + 5, TIME),
    }
    for msg, (pri, stamp) in expected.items():
        r = got[msg]
        assert (r["pri"], r["time"], r["hostname"], r["app_name"]) == (
            str(pri),
            stamp,
            "web-7f9c",
            "webapp",
        ), msg
        assert (r["procid"], r["msgid"]) == ("-", "-")
        assert sd(r) == pod_sd
    r = got["from elsewhere"]
    assert (r["pri"], r["hostname"], r["app_name"]) == (
        str(19 * 8 + 5),
        socket.gethostname(),
        "log-agent",
    )
    assert r["sd"] == '[k8s@32473 namespace_name="we\\"ird\\]ns\\\\"]'  # escaped on the wire
    assert sd(r) == {"k8s@32473": {"namespace_name": 'we"ird]ns\\'}}  # and read back as sent


def test_syslog_tcp_newline_framing_and_receiver_time(rsyslogd: Rsyslogd) -> None:
    cfg = SyslogConfig(
        type="syslog", address=f"127.0.0.1:{rsyslogd.port}", framing="newline", app_name="shop"
    )
    sink = SyslogSink("syslog", cfg)
    batch = make_batch(["one\ntwo", "three"])
    batch.events[1]["time"] = "yesterday at noon"  # a sender's idea of time: not RFC 3339

    async def scenario() -> list[dict[str, Any]]:
        await sink.send(sink.encode(batch))
        await sink.close()
        return await rsyslogd.wait_records(2)

    got = by_msg(asyncio.run(scenario()))
    assert got.keys() == {"one two", "three"}  # one record each: the newline did not split it
    assert got["one two"]["time"] == TIME
    received = datetime.datetime.fromisoformat(got["three"]["time"])
    assert abs(received - datetime.datetime.now(datetime.UTC)) < datetime.timedelta(minutes=1)
    assert {r["app_name"] for r in got.values()} == {"shop"}
    assert {(r["pri"], r["sd"]) for r in got.values()} == {("14", "-")}  # user.info, no SD


def test_syslog_tcp_reconnects_after_the_receiver_restarts(rsyslogd: Rsyslogd) -> None:
    sink = SyslogSink("syslog", SyslogConfig(type="syslog", address=f"127.0.0.1:{rsyslogd.port}"))
    first, second, third = (
        make_batch([f"{name} {i}" for i in range(3)]) for name in ("first", "second", "third")
    )

    async def scenario() -> list[dict[str, Any]]:
        await sink.send(sink.encode(first))
        await rsyslogd.wait_records(3)
        rsyslogd.stop()
        payload = sink.encode(second)
        with pytest.raises(RetryableError, match="Connect call failed|refused"):
            await sink.send(payload)  # the connection is gone and nobody listens
        rsyslogd.start()
        await sink.send(payload)  # the pipeline's retry, on a new connection
        await sink.send(sink.encode(third))
        await sink.close()
        return await rsyslogd.wait_records(9)

    msgs = sorted(r["msg"] for r in asyncio.run(scenario()))
    assert msgs == sorted(f"{name} {i}" for name in ("first", "second", "third") for i in range(3))


def test_syslog_udp_one_datagram_per_message_cut_to_max_bytes(rsyslogd: Rsyslogd) -> None:
    cfg = SyslogConfig(type="syslog", address=f"127.0.0.1:{rsyslogd.port}", mode="udp")
    sink = SyslogSink("syslog", cfg)
    long = "ü" * 3000  # 6000 bytes; 2-byte characters, so a cut by bytes alone would split one
    batch = make_batch(["short one", 'with "quotes" and [brackets]', long, "after the long one"])

    async def scenario() -> list[dict[str, Any]]:
        await sink.send(sink.encode(batch))
        await sink.close()
        return await rsyslogd.wait_records(4)

    got = asyncio.run(scenario())
    assert sink.truncated == 1
    msgs = {r["msg"] for r in got}
    assert {"short one", 'with "quotes" and [brackets]', "after the long one"} < msgs
    (cut,) = msgs - {"short one", 'with "quotes" and [brackets]', "after the long one"}
    header = f"<14>1 {TIME} web-7f9c webapp - - - ".encode()
    size = len(header) + len(cut.encode())
    assert long.startswith(cut) and 2048 - 2 < size <= 2048  # the default max_udp_bytes
    assert {(r["pri"], r["hostname"], r["app_name"]) for r in got} == {("14", "web-7f9c", "webapp")}


def test_syslog_json_message_is_the_whole_event(rsyslogd: Rsyslogd) -> None:
    cfg = SyslogConfig(
        type="syslog",
        address=f"127.0.0.1:{rsyslogd.port}",
        mode="udp",
        message_format="json",
        hostname="my-host",
        msgid="access",
    )
    sink = SyslogSink("syslog", cfg)
    batch = make_batch(["GET /cart 404\nsecond line"], status=404)

    async def scenario() -> list[dict[str, Any]]:
        await sink.send(sink.encode(batch))
        await sink.close()
        return await rsyslogd.wait_records(1)

    (record,) = asyncio.run(scenario())
    assert json.loads(record["msg"]) == full_event(batch.events[0], batch.common)
    assert (record["hostname"], record["msgid"]) == ("my-host", "access")


def test_syslog_config_names_and_errors() -> None:
    cfg = SyslogConfig(type="syslog", address="logs:514", facility="LOCAL7", severity="warn")
    assert (cfg.facility, cfg.severity, cfg.mode, cfg.framing) == (23, 4, "tcp", "octet-counting")
    assert SyslogConfig(type="syslog", address="logs:514", facility=3).facility == 3
    for bad, reason in (
        ({"facility": "local8"}, "unknown facility 'local8'"),
        ({"severity": 9}, "severity must be 0-7"),
        ({"sd_id": "k8s pod"}, "invalid SD-ID"),
        ({"address": "logs"}, "expected HOST:PORT"),
        ({"max_udp_bytes": 100}, "greater than or equal to 480"),
    ):
        with pytest.raises(ValueError, match=reason):
            SyslogConfig(**{"type": "syslog", "address": "logs:514", **bad})

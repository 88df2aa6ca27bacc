"""log-agent's file source: real files, real rotation (Debian's logrotate), a real StateStore.

The pipeline is stood in for by `Sink`: it takes batches and acknowledges them at once, or
leaves the acknowledgement to the test (restart tests). Waiting is polling with a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import logging
import os
import re
import subprocess
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from podkit.images.log_agent.cri import CriAssembler, pod_metadata
from podkit.images.log_agent.event import Batch, Event, full_event
from podkit.images.log_agent.file_tracker import Identity, file_key, is_excluded, plan_start
from podkit.images.log_agent.lines import Line, LineReader
from podkit.images.log_agent.multiline import Multiline
from podkit.images.log_agent.offsets import OffsetTracker
from podkit.images.log_agent.sources.file_config import FileSourceConfig
from podkit.images.log_agent.sources.file_source import FileSource
from podkit.images.log_agent.state import StateStore
from podkit.runtime.logs import ContainerLog, cri_records

POD_UID = "0d5a6e4c-1111-2222-3333-444455556666"
NUMBERED = re.compile(r"^line (\d{10}) x{95}$")  # a whole line of numbered()


class Sink:
    """The pipeline as a source sees it."""

    def __init__(self, *, auto_ack: bool = True) -> None:
        self.auto_ack = auto_ack
        self.batches: list[Batch] = []
        self.events: list[Event] = []

    async def ingest(self, batch: Batch) -> None:
        assert batch.ack is not None and batch.replayable
        self.batches.append(batch)
        self.events.extend(full_event(e, batch.common) for e in batch.events)
        batch.ack.add(1)
        if self.auto_ack:
            batch.ack.done()

    def messages(self) -> list[str]:
        return [e["message"] for e in self.events]


class Cuts:
    """The source's line counts: `n` lines cut, `empty` and `invalid` lines."""

    def __init__(self) -> None:
        self.n = self.empty = self.invalid = 0

    def lines(self, source_id: str, counts: tuple[int, int, int]) -> None:
        assert source_id == "files"
        self.n += counts[0]
        self.empty += counts[1]
        self.invalid += counts[2]


async def until(cond: Callable[[], bool], what: str, timeout: float = 10.0) -> float:
    """Poll `cond` until it holds; returns the seconds it took."""
    start = time.monotonic()
    while not cond():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.005)
    return time.monotonic() - start


def config(*paths: Path | str, **settings: Any) -> FileSourceConfig:
    return FileSourceConfig.model_validate(
        {"type": "file", "paths": [str(p) for p in paths], **settings}
    )


@contextlib.asynccontextmanager
async def running(
    cfg: FileSourceConfig,
    ingest: Callable[[Batch], Awaitable[None]],
    state_dir: Path,
    cuts: Cuts | None = None,
    **kw: Any,
) -> AsyncIterator[FileSource]:
    state = StateStore(state_dir)
    source = FileSource("files", cfg, ingest, state, cuts or Cuts(), **kw)
    await source.start()
    try:
        yield source
    finally:
        await source.stop()
        state.close()


def append(path: Path, text: str) -> None:
    with path.open("a") as f:
        f.write(text)


def numbered(i: int) -> str:
    return f"line {i:010d} " + "x" * 95


def is_cut_line(m: str) -> bool:
    """Whether `m` is the start of some numbered() line, short of its end."""
    digits = m[5:15]
    if not digits.isdigit() and digits:
        return False
    return len(m) < len(numbered(0)) and numbered(int(digits.ljust(10, "0"))).startswith(m)


def lines_on_disk(directory: Path) -> tuple[Counter[str], set[str]]:
    """Whole lines in the files, and the unterminated tails (a copy made mid-write)."""
    whole: Counter[str] = Counter()
    tails: set[str] = set()
    for path in directory.iterdir():
        *lines, tail = path.read_text().split("\n")
        whole.update(lines)
        if tail:
            tails.add(tail)
    return whole, tails


def open_paths(directory: Path) -> list[str]:
    """The log files this process holds open under `directory` (rotated ones being drained)."""
    out = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith(str(directory)) and ".log" in os.path.basename(target):
                out.append(target)
    return out


# -- pure parts ------------------------------------------------------------------------------


def test_config_defaults_and_errors_name_the_field() -> None:
    cfg = config("/var/log/*.log")
    assert (cfg.read_from, cfg.format, cfg.multiline) == ("head", "text", None)
    assert (cfg.max_line_bytes, cfg.fingerprint_bytes, cfg.read_chunk) == (2**20, 256, 2**18)
    assert (cfg.poll_interval, cfg.glob_interval, cfg.rotate_idle_timeout) == (0.25, 1.0, 60.0)
    ml = config("/l/*.log", multiline={"start_pattern": "^\\d"}).multiline
    assert ml is not None and (ml.flush_timeout, ml.max_lines, ml.max_bytes) == (1.0, 500, 2**20)
    with pytest.raises(ValidationError) as bad:
        config("/l/*.log", multiline={"start_pattern": "(unclosed"})
    assert bad.value.errors()[0]["loc"] == ("multiline", "start_pattern")
    assert "regular expression" in str(bad.value)
    with pytest.raises(ValidationError) as bad:
        config("/l/*.log", format="json")
    assert bad.value.errors()[0]["loc"] == ("format",)
    assert (cfg.rotate_wait, cfg.empty_lines) == (5.0, "drop")
    assert (cfg.rotated, cfg.rotated_compressed) == (["{name}.[0-9]*", "{name}-[0-9]*"], "read")
    with pytest.raises(ValidationError) as bad:
        config("/l/*.log", rotated=["{name}.old", "app.1", "../{name}"])
    assert bad.value.errors()[0]["loc"] == ("rotated",)
    assert "'app.1' does not contain {name}" in str(bad.value)
    assert "no '/'" in str(bad.value)
    with pytest.raises(ValidationError) as bad:
        config("/l/*.log", rotate_wiat=5)
    assert bad.value.errors()[0]["loc"] == ("rotate_wiat",)
    with pytest.raises(ValidationError) as bad:
        config("relative/*.log")
    assert bad.value.errors()[0]["loc"] == ("paths",)


def test_line_reader_offsets_crlf_blank_lines_and_bad_utf8() -> None:
    r = LineReader(1024, offset=100)
    offsets, texts = r.feed(b"one\r\n\ntwo\nth")
    assert (offsets, texts) == ([100, 106], ["one", "two"])
    assert r.held_start == 110  # "th" is held: a restart reads it again
    offsets, texts = r.feed(b"ree \xe2\x82\xac\xff\n")  # a euro sign, then an invalid byte
    assert offsets == [110] and texts == ["three €\ufffd"]
    assert r.counts.take() == (0, 1, 1)  # (cut, empty, invalid): nothing changed unseen
    assert r.held_start == 121
    assert r.feed(b"last") == ([], []) and r.flush() == ([121], ["last"])


def test_line_reader_cuts_long_lines_once_each() -> None:
    r = LineReader(4)
    offsets, texts = r.feed(b"abcdefghij\nxy\n")
    assert texts == ["abcd", "efgh", "ij", "xy"] and offsets == [0, 4, 8, 11] and r.cut == 1
    # A long line arriving in pieces: its head goes out before its newline, counted once.
    r = LineReader(4)
    assert r.feed(b"0123456789") == ([0, 4], ["0123", "4567"])
    assert r.feed(b"abcdef\n") == ([8, 12], ["89ab", "cdef"]) and r.cut == 1
    # Never in the middle of a UTF-8 character.
    r = LineReader(4)
    _, texts = r.feed("aaa€€\n".encode())
    assert texts == ["aaa", "€", "€"]


def test_offset_tracker_commits_only_the_done_prefix() -> None:
    t = OffsetTracker(10)
    a, b, c = t.add(20), t.add(30), t.add(40)
    assert not t.done(b) and t.committed == 10  # b is done, a before it is not
    assert not t.done(c) and t.committed == 10
    assert t.done(a) and t.committed == 40 and t.in_flight == 0
    assert not t.done(a)  # a repeated ack changes nothing
    d = t.add(50)
    assert not t.advance(60) and t.committed == 40  # nothing to deliver, still after d
    assert t.done(d) and t.committed == 60


def test_identity_and_start_plan() -> None:
    head = b"2026-11-25 first line\n"
    new = plan_start(None, 1, 2, head, 500, tail=False)
    assert (new.offset, new.reason) == (0, "new") and new.identity is not None
    assert len(new.identity.id) == 16 and new.identity.fp_len == len(head)
    assert plan_start(None, 1, 2, head, 500, tail=True).offset == 500
    cp = new.identity.checkpoint(300, "/l/a.log")
    assert plan_start(cp, 1, 2, head + b"more", 500, tail=True).offset == 300  # checkpoint wins
    resumed = plan_start(cp, 1, 2, head + b"more", 500, tail=False)
    assert resumed.reason == "resume" and resumed.identity is not None
    assert resumed.identity.id == new.identity.id and resumed.identity.fp_len == len(head) + 4
    reused = plan_start(cp, 1, 2, b"another file entirely\n", 900, tail=False)
    assert (reused.offset, reused.reason) == (0, "replaced") and reused.identity is not None
    assert reused.identity.id != new.identity.id
    truncated = plan_start(cp, 1, 2, head, 100, tail=False)  # same start, shorter: truncated
    assert (truncated.offset, truncated.reason) == (0, "truncated")
    assert truncated.identity is not None and truncated.identity.gen == 1
    assert truncated.identity.id != new.identity.id  # same first bytes, other _ids
    assert Identity.new(1, 2, head).id == new.identity.id  # derived, not random
    assert is_excluded("/l/a.log.gz", ["*.gz"]) and not is_excluded("/l/a.log", ["*.gz"])
    assert is_excluded("/l/old/a.log", ["/l/old/*"]) and not is_excluded("/l/a.log", ["/l/old/*"])


def test_cri_records_joined_per_stream_and_pod_metadata() -> None:
    a = CriAssembler(max_bytes=1000)
    records = [
        "2026-11-25T22:15:08.000000001Z stdout P hel",
        "2026-11-25T22:15:08.000000002Z stderr F oops",
        "2026-11-25T22:15:08.000000003Z stdout P lo ",
        "2026-11-25T22:15:08.000000004Z stdout F world",
        "not a cri record",
        "2026-11-25T22:15:08.000000005Z stdout P dangling",
    ]
    offsets = [0, 50, 100, 150, 200, 220]
    lines = a.feed(offsets, records, "received")
    assert lines == [
        (50, "2026-11-25T22:15:08.000000002Z", "stderr", "oops"),
        (0, "2026-11-25T22:15:08.000000001Z", "stdout", "hello world"),
        (200, "received", None, "not a cri record"),
    ]
    assert a.held_start() == 220
    assert a.flush() == [(220, "2026-11-25T22:15:08.000000005Z", "stdout", "dangling")]
    kubelet = f"/var/log/pods/shop_web-7f9c_{POD_UID}/app/0.log"
    podkit = f"/s/pods/shop_web-7f9c_{POD_UID}/logs/app/3.log"
    expect = {"namespace_name": "shop", "pod_name": "web-7f9c", "pod_id": POD_UID}
    assert pod_metadata(kubelet) == pod_metadata(podkit) == {**expect, "container_name": "app"}
    link = "/var/log/containers/web-7f9c_shop_app-" + "ab" * 32 + ".log"
    assert pod_metadata(link) == {
        "namespace_name": "shop",
        "pod_name": "web-7f9c",
        "container_name": "app",
    }
    assert pod_metadata("/var/log/app.log", "web") == {"container_name": "web"}


def test_multiline_joins_by_start_pattern_limits_and_timeout() -> None:
    ml = Multiline(re.compile(r"^\d"), max_lines=3, max_bytes=1000, flush_timeout=1.0)
    lines: list[Line] = [(0, "t", None, "1 a"), (4, "t", None, " b"), (7, "t", None, " c")]
    lines += [(10, "t", None, " d")]
    out = ml.feed(lines, now=100.0)
    assert out == [(0, "t", None, "1 a\n b\n c")]  # max_lines reached: out at once
    assert ml.held_start() == 10 and ml.deadline() == 101.0  # " d" starts one anyway
    assert ml.feed([(13, "t", None, " e")], 100.5) == [] and ml.deadline() == 101.5
    assert ml.due(101.4) == []
    assert ml.due(101.5) == [(10, "t", None, " d\n e")]
    assert ml.feed([(16, "t", "stderr", "2 f"), (20, "t", None, "3 g")], 102) == []
    assert ml.held_start() == 16  # one held event per stream
    assert ml.flush() == [(16, "t", "stderr", "2 f"), (20, "t", None, "3 g")]
    assert ml.held_start() is None
    big = Multiline(re.compile(r"^\d"), max_lines=500, max_bytes=10, flush_timeout=1.0)
    assert big.feed([(0, "t", None, "1 abcdef"), (9, "t", None, " ghijk")], 0) == [
        (0, "t", None, "1 abcdef")  # max_bytes: the next line starts the next event
    ]


# -- the source on real files ----------------------------------------------------------------


def test_new_files_found_within_a_second_symlinks_excludes_recursive(tmp_path: Path) -> None:
    logs, elsewhere = tmp_path / "logs", tmp_path / "elsewhere"
    logs.mkdir()
    elsewhere.mkdir()
    cfg = config(logs / "**" / "*.log", exclude=["*.skip.log", f"{logs}/private/*"])
    (logs / "private").mkdir()
    append(logs / "private" / "p.log", "private\n")
    append(logs / "x.skip.log", "skipped\n")

    async def main() -> None:
        sink = Sink()
        async with running(cfg, sink.ingest, tmp_path / "state") as source:
            assert "inotify" in source.describe()
            append(logs / "a.log", "hello a\n")
            took = await until(lambda: "hello a" in sink.messages(), "a new file")
            assert took < 1.0
            (logs / "pod" / "container").mkdir(parents=True)  # a new directory, then a file
            append(logs / "pod" / "container" / "0.log", "deep\n")
            assert await until(lambda: "deep" in sink.messages(), "a nested new file") < 1.0
            append(elsewhere / "target.txt", "via link\n")
            (logs / "link.log").symlink_to(elsewhere / "target.txt")
            await until(lambda: "via link" in sink.messages(), "a symlinked file")
            append(elsewhere / "target.txt", "more via link\n")
            await until(lambda: "more via link" in sink.messages(), "growth of a link target")
            append(logs / "private" / "p2.log", "private\n")
            append(logs / "y.skip.log", "skipped\n")
            append(logs / "a.log", "marker\n")
            await until(lambda: "marker" in sink.messages(), "a line after the excluded ones")
            assert source.lag_bytes()[str(logs / "a.log")] == 0
        by_message = {e["message"]: e for e in sink.events}
        assert "private" not in by_message and "skipped" not in by_message
        link = by_message["via link"]
        assert link["file"] == str(logs / "link.log") and link["source"] == "file"
        # identity is the target's: the same id, however the file was reached
        assert link["_id"].split(":")[0] == by_message["more via link"]["_id"].split(":")[0]
        assert by_message["hello a"]["_id"].endswith(":0")
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", link["time"])

    asyncio.run(main())


def test_polling_fallback_finds_files_and_follows_rotation(tmp_path: Path) -> None:
    cfg = config(tmp_path / "*.log", poll_interval=0.05, glob_interval=0.2)
    log_path = tmp_path / "app.log"

    async def main() -> None:
        sink = Sink()
        async with running(cfg, sink.ingest, tmp_path / "state", use_inotify=False) as source:
            assert "polling" in source.describe()
            append(log_path, "one\n")
            assert await until(lambda: "one" in sink.messages(), "a new file by polling") < 1.0
            with log_path.open("a") as old:
                log_path.rename(tmp_path / "app.log.1")
                old.write("two, after the rename\n")
                old.flush()
                append(log_path, "three, in the new file\n")
                old.write("four, the last line of the old file\n")
            await until(lambda: len(sink.events) == 4, "both files read")
        assert sorted(sink.messages()) == sorted(
            ["one", "two, after the rename", "three, in the new file",
             "four, the last line of the old file"]
        )  # fmt: skip

    asyncio.run(main())


def test_renamed_file_drained_then_let_go_rotate_wait_after_its_successor(
    tmp_path: Path,
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    log_path = logs / "app.log"
    cfg = config(log_path, rotate_idle_timeout=60, rotate_wait=1.0)

    async def main() -> None:
        sink = Sink()
        append(log_path, "before\n")
        async with running(cfg, sink.ingest, tmp_path / "state"):
            await until(lambda: sink.messages() == ["before"], "the first line")
            writer = log_path.open("a")
            log_path.rename(logs / "app.log.1")
            append(log_path, "")  # the successor exists but is not written yet
            writer.write("still to the old file\n")
            writer.flush()
            await until(lambda: "still to the old file" in sink.messages(), "the renamed file")
            old = str(logs / "app.log.1")
            assert open_paths(logs).count(old) == 2  # the writer's and ours: it may still write
            append(log_path, "new file, first\n")
            await until(lambda: "new file, first" in sink.messages(), "the successor's line")
            # A writer that reopens late (nginx workers on USR1) still writes here meanwhile:
            # half a second late is the scenario.
            await asyncio.sleep(0.5)
            writer.write("old file, written after the successor\n")
            writer.write("partial, completed by close")  # no newline: held until finished
            writer.close()
            await until(lambda: "old file, written after the successor" in sink.messages(), "late")
            took = await until(lambda: old not in open_paths(logs), "the old file let go")
            assert took < 2.0  # rotate_wait after the rotation, not rotate_idle_timeout
        assert Counter(sink.messages()) == Counter(
            ["before", "still to the old file", "new file, first",
             "old file, written after the successor", "partial, completed by close"]
        )  # fmt: skip

    asyncio.run(main())


def test_file_renamed_before_any_scan_saw_it_is_still_read(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    log_path = logs / "app.log"

    async def main() -> Sink:
        sink = Sink()
        async with running(config(log_path), sink.ingest, tmp_path / "state"):
            # No await in between: no scan can run between the create and the rename.
            append(log_path, "created and rotated at once\n")
            log_path.rename(logs / "app.log.1")
            append(log_path, "in the successor\n")
            await until(lambda: len(sink.events) == 2, "both files read")
            await until(lambda: len(open_paths(logs)) == 1, "the renamed file let go")
        return sink

    sink = asyncio.run(main())
    assert sorted(sink.messages()) == ["created and rotated at once", "in the successor"]
    assert {e["file"] for e in sink.events} == {str(log_path)}


def test_a_file_rotated_away_between_two_looks_is_read_and_a_copy_of_a_read_one_is_not(
    tmp_path: Path,
) -> None:
    """Polling (no inotify), two rotations between two looks: the second file was never at its
    name when the source looked. It is read whole, from app.log.1; the first file's compressed
    copy is not read again."""
    cfg = config(tmp_path / "*.log", poll_interval=0.2, glob_interval=0.2, rotate_wait=0)
    log_path = tmp_path / "app.log"

    async def main() -> Sink:
        sink = Sink()
        async with running(cfg, sink.ingest, tmp_path / "state", use_inotify=False):
            append(log_path, "first file\n")
            await until(lambda: len(sink.events) == 1, "the first file read")
            # No await from here on: no look in between. logrotate with `compress`.
            log_path.rename(tmp_path / "app.log.1")
            append(log_path, "second file, never seen at its name\n")
            (tmp_path / "app.log.1").rename(tmp_path / "app.log.2")
            log_path.rename(tmp_path / "app.log.1")
            with gzip.open(tmp_path / "app.log.2.gz", "wb") as gz:
                gz.write((tmp_path / "app.log.2").read_bytes())
            (tmp_path / "app.log.2").unlink()
            append(log_path, "third file\n")
            await until(lambda: len(sink.events) >= 3, "the three files read")
            await until(lambda: len(open_paths(tmp_path)) == 1, "the rotated files let go")
        return sink

    sink = asyncio.run(main())
    assert sorted(sink.messages()) == [
        "first file", "second file, never seen at its name", "third file"
    ]  # fmt: skip
    assert {e["file"] for e in sink.events} == {str(log_path)}


def test_rotated_file_without_successor_let_go_after_idle_timeout(tmp_path: Path) -> None:
    log_path = tmp_path / "app.log"
    append(log_path, "one\npartial")

    async def main() -> tuple[Sink, float]:
        sink = Sink()
        async with running(config(log_path, rotate_idle_timeout=0.3), sink.ingest, tmp_path / "s"):
            await until(lambda: sink.messages() == ["one"], "the first line")
            log_path.rename(tmp_path / "app.log.old")  # no successor, not deleted
            took = await until(lambda: "partial" in sink.messages(), "the file let go")
        return sink, took

    sink, took = asyncio.run(main())
    assert sink.messages() == ["one", "partial"] and took >= 0.25
    assert not open_paths(tmp_path)


def test_truncated_and_rewritten_past_our_offset_read_from_its_start(tmp_path: Path) -> None:
    log_path = tmp_path / "app.log"
    append(log_path, "".join(f"before {i}\n" for i in range(10)))

    async def main() -> Sink:
        sink = Sink()
        async with running(config(log_path), sink.ingest, tmp_path / "state"):
            await until(lambda: len(sink.events) == 10, "the first content")
            # No await in between: by the next read the file is longer than our offset again,
            # so only its first bytes tell it was truncated.
            os.truncate(log_path, 0)
            append(log_path, "".join(f"after the truncate {i}\n" for i in range(30)))
            await until(lambda: len(sink.events) == 40, "the new content")
        return sink

    sink = asyncio.run(main())
    assert sink.messages()[10:] == [f"after the truncate {i}" for i in range(30)]
    ids = [e["_id"] for e in sink.events]
    assert len(set(ids)) == 40  # new content, new file id: no _id clashes with the old lines


def test_truncated_while_stopped_unread_part_read_from_the_copy(tmp_path: Path) -> None:
    log_path = tmp_path / "app.log"
    append(log_path, "".join(f"first run {i}\n" for i in range(5)))
    cfg = config(log_path)

    async def run(n: int) -> list[str]:
        sink = Sink()
        async with running(cfg, sink.ingest, tmp_path / "state"):
            await until(lambda: len(sink.events) == n, f"{n} lines")
            await until(lambda: len(open_paths(tmp_path)) == 1, "the copy let go")
        return sink.messages()

    assert len(asyncio.run(run(5))) == 5
    append(log_path, "unread when stopped 1\nunread when stopped 2\n")
    (tmp_path / "app.log.1").write_bytes(log_path.read_bytes())  # what copytruncate does
    os.truncate(log_path, 0)
    append(log_path, "after the truncate\n")
    assert sorted(asyncio.run(run(3))) == [
        "after the truncate",
        "unread when stopped 1",
        "unread when stopped 2",
    ]


class Writer(threading.Thread):
    """Writes numbered lines as fast as it can, one write per line. With `reopen`, it reopens
    the path once rotation put another file there (as an app does on SIGHUP)."""

    def __init__(self, path: Path, *, reopen: bool) -> None:
        super().__init__(daemon=True)
        self.path, self.reopen = path, reopen
        self.count = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        while not self.stopping.is_set():
            for _ in range(64):
                os.write(fd, (numbered(self.count) + "\n").encode())
                self.count += 1
            if self.reopen:
                with contextlib.suppress(FileNotFoundError):
                    if os.stat(self.path).st_ino != os.fstat(fd).st_ino:
                        os.close(fd)
                        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.close(fd)


def logrotate(tmp_path: Path, log_path: Path, mode: str) -> None:
    conf = tmp_path / f"logrotate-{mode}.conf"
    conf.write_text(f"{log_path} {{\n  rotate 50\n  missingok\n  nocompress\n  {mode}\n}}\n")
    cmd = ["logrotate", "-f", "-s", str(tmp_path / "logrotate.state"), str(conf)]
    subprocess.run(cmd, check=True, capture_output=True)


async def rotate_under_load(tmp_path: Path, mode: str, rotations: int) -> tuple[Sink, Writer]:
    logs = tmp_path / "logs"
    logs.mkdir()
    log_path = logs / "app.log"
    sink = Sink()
    writer = Writer(log_path, reopen=mode == "create")

    def size() -> int:
        with contextlib.suppress(FileNotFoundError):
            return log_path.stat().st_size
        return 0

    async with running(config(log_path), sink.ingest, tmp_path / "state"):
        writer.start()
        try:
            for _ in range(rotations):
                await until(lambda: size() > 1_000_000, "the writer filling the file")
                await asyncio.to_thread(logrotate, tmp_path, log_path, mode)
            await until(lambda: size() > 1_000_000, "the writer filling the last file")
        finally:
            writer.stopping.set()
            await asyncio.to_thread(writer.join)
        # A file is read in order, a rotated one drained before it is let go: so all is read
        # once the last line written is, and only the current file is still open.
        last = numbered(writer.count - 1)
        await until(lambda: sink.events[-1]["message"] == last, "the last line", 60)
        await until(lambda: len(open_paths(logs)) == 1, "the rotated files let go")
    return sink, writer


def test_rename_rotation_under_load_with_logrotate_loses_nothing(tmp_path: Path) -> None:
    sink, writer = asyncio.run(rotate_under_load(tmp_path, "create", rotations=4))
    numbers = [int(m.group(1)) for m in map(NUMBERED.match, sink.messages()) if m]
    assert len(numbers) == len(sink.events)  # every line whole
    assert len(set(numbers)) == len(numbers), "duplicates"
    assert sorted(numbers) == list(range(writer.count)), "lines lost"
    assert len(list((tmp_path / "logs").glob("app.log.*"))) == 4


def test_copytruncate_under_load_with_logrotate_loses_only_its_gap(tmp_path: Path) -> None:
    sink, writer = asyncio.run(rotate_under_load(tmp_path, "copytruncate", rotations=4))
    on_disk, tails = lines_on_disk(tmp_path / "logs")
    received = Counter(sink.messages())
    assert not on_disk - received, "lines on disk not read"
    # A copy made while a line was being written ends in part of it: we deliver that part,
    # unless we had read the whole line from the original before the truncate. And a line we
    # had begun to read from the original past the copy's end is cut by the truncate: we
    # deliver the part we read, the rest is in the gap.
    numbers = sorted(int(m[5:15]) for m in received if len(m) >= 15)  # tails may be short
    assert len(set(numbers)) == len(numbers) and len(received) == len(sink.events), "duplicates"
    cut = [m for m in received if not (NUMBERED.match(m) or m in tails)]
    assert all(map(is_cut_line, cut)), f"neither a line nor part of one: {[m[:40] for m in cut]}"
    assert len(cut) <= 4, f"more lines cut than truncates: {cut}"
    # What we did not get is in no file either: written between logrotate's copy and its
    # truncate, and not read by us before the truncate. That gap is copytruncate's own.
    gaps = [(a, b) for a, b in zip(numbers, numbers[1:], strict=False) if b != a + 1]
    assert numbers[0] == 0 and numbers[-1] == writer.count - 1
    assert len(gaps) <= 4, f"more gaps than rotations: {gaps}"
    print(f"copytruncate gap: {writer.count - len(numbers)} of {writer.count} lines, {gaps}")


def file_on_inode(ino: int, text: str, name: Path) -> Path:
    """A new file holding `text` at `name`, on the inode `ino` freed just before. Each file
    created takes the lowest free inode: make files (not matched by the globs) until one gets
    it, then rename that one."""
    misses: list[Path] = []
    for attempt in range(5000):
        candidate = name.parent / f"candidate-{attempt}.tmp"
        append(candidate, text)
        if candidate.stat().st_ino == ino:
            break
        misses.append(candidate)
    else:
        pytest.fail("the filesystem did not reuse the inode")
    for miss in misses:
        miss.unlink()
    return candidate.rename(name)


def test_inode_reuse_reads_the_new_file_from_its_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    first = logs / "a.log"
    append(first, "".join(f"old file line {i}\n" for i in range(50)))
    cfg = config(logs / "*.log")

    async def read_all(sink: Sink, n: int) -> None:
        async with running(cfg, sink.ingest, tmp_path / "state"):
            await until(lambda: len(sink.events) >= n, f"{n} lines")

    asyncio.run(read_all(Sink(), 50))
    ino = first.stat().st_ino
    first.unlink()
    candidate = file_on_inode(ino, "".join(f"new file line {i}\n" for i in range(80)),
                              logs / "b.log")  # fmt: skip
    sink = Sink()
    asyncio.run(read_all(sink, 80))
    assert sink.messages() == [f"new file line {i}" for i in range(80)]
    assert [r.__dict__.get("reason") for r in caplog.records if r.levelname == "WARNING"] == [
        "replaced"
    ]
    state = StateStore(tmp_path / "state")
    saved = state.load("file:files")
    assert saved[file_key(candidate.stat().st_dev, ino)]["path"] == str(candidate)
    state.close()


def test_a_compressed_copy_whose_inode_the_new_file_took_is_read_from_its_checkpoint(
    tmp_path: Path,
) -> None:
    """Stopped mid-file; meanwhile logrotate compressed it (app.log.1.gz, another inode) and
    the new app.log got the old file's inode (ext4 gives the lowest free one; a CI run saw it).
    The copy is read from its checkpoint, what the last run had handed on as replays; the new
    file from its start."""
    logs = tmp_path / "logs"
    logs.mkdir()
    log_path = logs / "app.log"
    cfg = config(logs / "*.log")

    async def first_run() -> None:
        sink = Sink(auto_ack=False)
        async with running(cfg, sink.ingest, tmp_path / "state"):
            for b in range(3):
                append(log_path, "".join(f"old {b}.{i}\n" for i in range(3)))
                await until(partial(lambda n: len(sink.batches) == n, b + 1), f"batch {b}")
            assert sink.batches[0].ack is not None
            sink.batches[0].ack.done()  # 1 and 2 handed on, not delivered (as far as we know)

    asyncio.run(first_run())
    ino = log_path.stat().st_ino
    with log_path.open("rb") as src, gzip.open(logs / "app.log.1.gz", "wb") as dst:
        dst.write(src.read())
    log_path.unlink()
    file_on_inode(ino, "".join(f"new {i}\n" for i in range(4)), log_path)

    async def second_run() -> Sink:
        sink = Sink()
        async with running(cfg, sink.ingest, tmp_path / "state"):
            await until(lambda: len(sink.events) >= 10, "10 lines")
            await until(lambda: not open_paths(logs)[1:], "the copy let go")
        return sink

    sink = asyncio.run(second_run())
    old = [f"old {b}.{i}" for b in (1, 2) for i in range(3)]
    assert sorted(sink.messages()) == sorted([*old, *(f"new {i}" for i in range(4))])
    replays = [
        full_event(e, b.common)["message"] for b in sink.batches if b.replay for e in b.events
    ]
    assert sorted(replays) == old


def test_long_lines_cut_and_counted_unless_within_the_limit(tmp_path: Path) -> None:
    line = "".join(chr(ord("a") + i % 26) for i in range(1_000_000))
    log_path = tmp_path / "big.log"
    append(log_path, line + "\nafter\n")

    async def read(max_line_bytes: int | None) -> tuple[Sink, Cuts]:
        sink, cuts = Sink(), Cuts()
        settings = {} if max_line_bytes is None else {"max_line_bytes": max_line_bytes}
        cfg = config(log_path, **settings)
        state_dir = tmp_path / f"state-{max_line_bytes}"
        async with running(cfg, sink.ingest, state_dir, cuts):
            await until(lambda: "after" in sink.messages(), "the line after the long one")
        return sink, cuts

    sink, cuts = asyncio.run(read(64 * 1024))
    pieces = sink.messages()[:-1]
    assert len(pieces) == 16 and all(len(p) <= 64 * 1024 for p in pieces)
    assert "".join(pieces) == line and cuts.n == 1
    assert [int(e["_id"].split(":")[1]) for e in sink.events[:3]] == [0, 65536, 131072]
    sink, cuts = asyncio.run(read(None))
    assert sink.messages() == [line, "after"] and cuts.n == 0


def test_restart_resumes_after_the_acknowledged_prefix(tmp_path: Path) -> None:
    log_path = tmp_path / "app.log"
    cfg = config(log_path)
    state_dir = tmp_path / "state"

    async def first_run() -> list[Event]:
        sink = Sink(auto_ack=False)
        async with running(cfg, sink.ingest, state_dir):
            for b in range(3):
                append(log_path, "".join(f"batch {b} line {i}\n" for i in range(3)))
                await until(partial(lambda n: len(sink.batches) == n, b + 1), f"batch {b}")
            append(log_path, "held partial")  # no newline yet: never committed
            acks = [b.ack for b in sink.batches if b.ack is not None]
            acks[0].done()
            acks[2].done()  # 0 and 2 done, 1 still in flight
        return sink.events

    first = asyncio.run(first_run())
    assert len(first) == 9
    append(log_path, " now whole\n")

    async def second_run() -> list[Event]:
        sink = Sink()
        async with running(cfg, sink.ingest, state_dir):
            await until(lambda: "held partial now whole" in sink.messages(), "the completed line")
        return sink.events

    second = asyncio.run(second_run())
    assert [e["message"] for e in second] == [
        *(f"batch {b} line {i}" for b in (1, 2) for i in range(3)),
        "held partial now whole",
    ]
    # Re-delivered lines carry the same _id as the first time: a sink can drop them.
    assert [e["_id"] for e in second[:6]] == [e["_id"] for e in first[3:]]


def test_renamed_while_stopped_is_drained_and_gone_checkpoints_dropped(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    log_path, gone = logs / "app.log", logs / "gone.log"
    append(log_path, "one\n")
    append(gone, "bye\n")
    cfg = config(logs / "*.log")

    async def run(sink: Sink, lines: int, files: int) -> None:
        async with running(cfg, sink.ingest, tmp_path / "state"):
            await until(lambda: len(sink.events) == lines, f"{lines} lines")
            await until(lambda: len(open_paths(logs)) == files, f"{files} files open")

    first = Sink()
    asyncio.run(run(first, lines=2, files=2))
    gone_key = file_key(gone.stat().st_dev, gone.stat().st_ino)
    append(log_path, "two, unread when it was rotated\n")
    log_path.rename(logs / "app.log.1")  # not matched by the glob any more
    append(log_path, "three\n")
    gone.unlink()
    second = Sink()
    asyncio.run(run(second, lines=2, files=1))  # app.log.1 drained and let go
    assert sorted(second.messages()) == ["three", "two, unread when it was rotated"]
    state = StateStore(tmp_path / "state")
    saved = state.load("file:files")
    state.close()
    assert gone_key not in saved
    live = [cp["path"] for cp in saved.values() if isinstance(cp, dict) and not cp.get("done")]
    assert live == [str(log_path)]
    # app.log.1, drained and let go, keeps its checkpoint marked done while it is there
    rotated = (logs / "app.log.1").stat()
    assert saved[file_key(rotated.st_dev, rotated.st_ino)]["done"] is True


def test_rotated_copies_found_at_start_up_by_the_patterns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """What the second start reads: the rest of the file it followed (renamed to app.log.2),
    not the copy that was there before it ever ran, and the successor; the compressed copy
    (app.log.1.gz) it skips with a warning, as asked."""
    logs = tmp_path / "logs"
    logs.mkdir()
    log_path = logs / "app.log"
    append(log_path, "a1\n")
    append(logs / "app.log.7", "ancient\n")
    os.utime(logs / "app.log.7", (time.time() - 86400,) * 2)
    cfg = config(logs / "*.log", rotated_compressed="skip", rotate_wait=0.1)

    async def run(n: int) -> list[str]:
        sink = Sink()
        async with running(cfg, sink.ingest, tmp_path / "state"):
            await until(lambda: len(sink.events) >= n, f"{n} lines")
            await until(lambda: not open_paths(logs)[1:], "the rotated copies let go")
        return sorted(sink.messages())

    assert asyncio.run(run(1)) == ["a1"]
    # While stopped, rotated twice; the second copy compressed (logrotate's `compress`).
    append(log_path, "a2\n")
    log_path.rename(logs / "app.log.1")
    append(log_path, "b1\nb2\n")
    (logs / "app.log.1").rename(logs / "app.log.2")
    with log_path.open("rb") as src, gzip.open(logs / "app.log.1.gz", "wb") as dst:
        dst.write(src.read())
    log_path.unlink()
    append(log_path, "c1\n")
    caplog.set_level(logging.WARNING, "log-agent.file")
    assert asyncio.run(run(2)) == ["a2", "c1"]
    skipped = [r for r in caplog.records if "compressed rotated copy" in r.getMessage()]
    assert [(r.path, r.unread_bytes) for r in skipped] == [  # type: ignore[attr-defined]
        (str(logs / "app.log.1.gz"), 6)
    ]


def test_cri_files_parts_joined_with_stream_time_and_pod(tmp_path: Path) -> None:
    container_dir = tmp_path / "pods" / f"shop_web-7f9c_{POD_UID}" / "logs" / "app"
    cfg = config(tmp_path / "pods" / "*" / "logs" / "*" / "*.log", format="cri")
    long_line = b"L" * 40_000  # podkit writes it as 16 KiB P records and an F record

    async def main() -> Sink:
        sink = Sink()
        async with running(cfg, sink.ingest, tmp_path / "state"):
            out = cri_records("stdout", long_line + b"\n")
            err = cri_records("stderr", b"oops\n")
            log = ContainerLog(container_dir, 0)
            log.close()
            with (container_dir / "0.log").open("ab") as f:
                for record in [out[0], err[0], *out[1:]]:  # stderr between stdout's parts
                    f.write(record)
            ContainerLog(container_dir, 0).write("stdout", b"short\n")
            await until(lambda: len(sink.events) == 3, "three lines")
        return sink

    sink = asyncio.run(main())
    oops, joined, short = sink.events
    assert (oops["message"], oops["stream"]) == ("oops", "stderr")
    assert (joined["message"], joined["stream"]) == (long_line.decode(), "stdout")
    assert joined["_id"].endswith(":0")  # the offset of its first part
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z", joined["time"])
    assert short["message"] == "short"
    assert joined["kubernetes"] == {
        "namespace_name": "shop",
        "pod_name": "web-7f9c",
        "pod_id": POD_UID,
        "container_name": "app",
    }


def test_multiline_stack_traces_joined_and_flushed_after_timeout(tmp_path: Path) -> None:
    log_path = tmp_path / "app.log"
    cfg = config(
        log_path,
        multiline={"start_pattern": r"^\d{4}-\d\d-\d\d ", "flush_timeout": 0.3},
        container_name="web",
    )
    trace = [
        "2026-11-25 22:15:08 ERROR request failed",
        "java.lang.IllegalStateException: no cart",
        "    at shop.Cart.get(Cart.java:42)",
        "    at shop.Api.handle(Api.java:7)",
    ]

    async def main() -> tuple[Sink, float]:
        sink = Sink()
        async with running(cfg, sink.ingest, tmp_path / "state"):
            append(log_path, "\n".join([*trace, "2026-11-25 22:15:09 INFO next"]) + "\n")
            await until(lambda: len(sink.events) == 1, "the stack trace")
            took = await until(lambda: len(sink.events) == 2, "the last event, by timeout")
        return sink, took

    sink, took = asyncio.run(main())
    assert sink.messages() == ["\n".join(trace), "2026-11-25 22:15:09 INFO next"]
    assert took >= 0.2  # held for flush_timeout, as no next line came
    assert sink.events[0]["kubernetes"] == {"container_name": "web"}
    assert sink.events[1]["_id"].endswith(f":{len(chr(10).join(trace)) + 1}")


def test_read_from_tail_only_at_the_first_start(tmp_path: Path) -> None:
    log_path = tmp_path / "app.log"
    append(log_path, "old\n")
    cfg = config(tmp_path / "*.log", read_from="tail")

    async def run(write: Callable[[], None], n: int) -> list[str]:
        sink = Sink()
        async with running(cfg, sink.ingest, tmp_path / "state"):
            write()
            await until(lambda: len(sink.events) == n, f"{n} lines")
        return sorted(sink.messages())

    def first() -> None:
        append(log_path, "new\n")
        append(tmp_path / "later.log", "later file, from its start\n")

    assert asyncio.run(run(first, 2)) == ["later file, from its start", "new"]
    append(tmp_path / "while-stopped.log", "written while stopped\n")
    append(log_path, "after the restart\n")
    # Not the first start: a file without a checkpoint is new, read whole.
    assert asyncio.run(run(lambda: None, 2)) == ["after the restart", "written while stopped"]


def test_throughput_a_million_lines(tmp_path: Path) -> None:
    n = 1_000_000
    log_path = tmp_path / "big.log"
    with log_path.open("w") as f:
        for start in range(0, n, 100_000):
            f.write("".join(numbered(i) + "\n" for i in range(start, start + 100_000)))

    async def main() -> float:
        count = 0

        async def ingest(batch: Batch) -> None:
            nonlocal count
            assert batch.ack is not None
            batch.ack.add(1)
            batch.ack.done()
            count += len(batch.events)

        began = time.perf_counter()
        async with running(config(log_path), ingest, tmp_path / "state") as source:
            await until(lambda: count == n, "a million lines", timeout=60)
            took = time.perf_counter() - began
            await asyncio.sleep(0)  # the last commit runs on the next loop turn
            assert source.lag_bytes() == {str(log_path): 0}
        return n / took

    rate = asyncio.run(main())
    print(f"file source: {rate:,.0f} lines/s")
    assert rate > 100_000

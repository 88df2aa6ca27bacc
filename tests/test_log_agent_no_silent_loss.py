"""log-agent loses nothing without a trace (issue 15): config changes that renamed sinks and
sources, a full disk, drop_oldest's bound, empty and invalid lines, replays after a crash, and
the time to recover from an outage. Numbered lines, a real receiver, real agent processes."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from log_agent_harness import (
    ImageProcess,
    RecordingReceiver,
    StartAgent,
    hostport,
    http,
    metric_samples,
    ready_listeners,
)
from numbered_lines import LINE, all_arrived, lost_and_twice, numbers, write_lines
from podkit_harness import wait_for
from proxy_harness import Nginx


def file_source(logs: Path, name: str = "", extra: str = "", read_chunk: int = 65536) -> str:
    named = f"\n    name: {name}" if name else ""
    return f"""
  - type: file{named}
    paths: ["{logs}/*.log"]
    read_chunk: {read_chunk}{extra}"""


def http_sink(
    receiver: RecordingReceiver, name: str = "", buffer: str = "", retry: str = ""
) -> str:
    named = f"\n    name: {name}" if name else ""
    return f"""
  - type: http{named}
    endpoint: {receiver.url}
    buffer: {{{buffer}}}
    retry: {{{retry or "initial_backoff: 0.1, max_backoff: 0.5"}}}"""


def write_config(tmp_path: Path, sources: str, sinks: str) -> Path:
    config = tmp_path / "agent.yaml"
    config.write_text(
        f"""
shutdown_timeout: 3
sources:{sources}
transforms:
  parse: raw
sinks:{sinks}
admin:
  listen: 127.0.0.1:0
"""
    )
    return config


def start(
    start_agent: StartAgent, config: Path, data: Path, **env: str
) -> tuple[ImageProcess, str]:
    agent = start_agent("--config", str(config), LOG_AGENT_DATA_DIR=str(data), **env)
    return agent, ready_listeners(agent)["admin"]


def metric(admin: str, name: str, **labels: str) -> float:
    return metric_samples(admin).get((name, tuple(sorted(labels.items()))), 0)


def events_out(admin: str, sink: str = "http") -> tuple[float, float]:
    """(first deliveries, replays) of a sink."""
    return (
        metric(admin, "log_agent_events_out_total", delivery="first", sink=sink),
        metric(admin, "log_agent_events_out_total", delivery="replay", sink=sink),
    )


# -- config changes


def test_config_mistakes_that_lost_data_are_refused(
    start_agent: StartAgent, receiver: RecordingReceiver, tmp_path: Path, logs: Path
) -> None:
    # A second `sinks:` silently replaced the first one.
    config = tmp_path / "agent.yaml"
    config.write_text(
        f"sources:{file_source(logs)}\nsinks:{http_sink(receiver)}\nsinks:\n  - type: stdout\n"
    )
    agent = start_agent("--config", str(config))
    assert agent.proc.wait(10) == 2
    err = agent.stderr()
    assert str(config) in err and "duplicate key 'sinks'" in err
    assert "line 10" in err and "first given on line 5" in err

    # Two sinks of a type without names: ids by position would move when one is added.
    config.write_text(
        f"sources:{file_source(logs)}\nsinks:{http_sink(receiver)}{http_sink(receiver)}\n"
    )
    agent = start_agent("--config", str(config))
    assert agent.proc.wait(10) == 2
    err = agent.stderr()
    assert "sinks[0]" in err and "give each a `name`" in err


def test_a_renamed_sink_keeps_its_buffer_reported_and_delivered_when_named_back(
    start_agent: StartAgent, receiver: RecordingReceiver, tmp_path: Path, logs: Path
) -> None:
    data = tmp_path / "data"
    buffered = 5_000
    receiver.down()
    first = write_config(tmp_path, file_source(logs), http_sink(receiver))
    agent, admin = start(start_agent, first, data)
    write_lines(logs / "app.log", 0, buffered)
    wait_for(
        "lines read",
        lambda: metric(admin, "log_agent_events_in_total", source="file") == buffered,
        timeout=20,
    )
    assert agent.terminate(10)[0] == 0  # what the sink held is on disk, the offsets committed

    # The sink renamed (as adding a second http sink used to do: http -> http_1).
    receiver.up()
    renamed = write_config(tmp_path, file_source(logs), http_sink(receiver, name="shipper"))
    agent, admin = start(start_agent, renamed, data)
    write_lines(logs / "app.log", buffered, 1_000)
    wait_for("new lines delivered", lambda: len(receiver.events) >= 1_000, timeout=20)
    warning = [
        r for r in agent.records() if str(r.get("msg")).startswith("a disk buffer no configured")
    ]
    assert [(w["buffer"], w["events"]) for w in warning] == [("http", buffered)]
    assert int(warning[0]["bytes"]) > 0  # type: ignore[call-overload]
    assert metric(admin, "log_agent_orphaned_buffer_events", buffer="http") == buffered
    assert (data / "buffers" / "http").is_dir()  # kept, not deleted
    assert agent.terminate(10)[0] == 0
    assert sorted(numbers(receiver.messages())) == list(range(buffered, buffered + 1_000))

    # Named back: the buffer is delivered, each line once.
    back = write_config(tmp_path, file_source(logs), http_sink(receiver, name="http"))
    agent, admin = start(start_agent, back, data)
    wait_for(
        "the kept buffer delivered", lambda: all_arrived(receiver, buffered + 1_000), timeout=30
    )
    assert lost_and_twice(receiver, buffered + 1_000) == ([], 0)
    assert metric(admin, "log_agent_orphaned_buffer_events", buffer="http") == 0
    assert agent.terminate(10)[0] == 0


def test_a_renamed_file_source_takes_over_its_checkpoints(
    start_agent: StartAgent, receiver: RecordingReceiver, tmp_path: Path, logs: Path
) -> None:
    data = tmp_path / "data"
    config = write_config(tmp_path, file_source(logs), http_sink(receiver))
    agent, _ = start(start_agent, config, data)
    write_lines(logs / "app.log", 0, 5_000)
    wait_for("first lines delivered", lambda: all_arrived(receiver, 5_000), timeout=20)
    assert agent.terminate(10)[0] == 0

    write_lines(logs / "app.log", 5_000, 2_000)  # while the agent is stopped
    # Renamed, and reading from the tail: before, it started at the end, losing the 2,000.
    renamed = file_source(logs, name="app", extra="\n    read_from: tail")
    agent, admin = start(start_agent, write_config(tmp_path, renamed, http_sink(receiver)), data)
    write_lines(logs / "app.log", 7_000, 1_000)
    wait_for("every line delivered", lambda: all_arrived(receiver, 8_000), timeout=20)
    assert lost_and_twice(receiver, 8_000) == ([], 0)  # and none read again from the start
    assert metric(admin, "log_agent_events_in_total", source="app") == 3_000
    assert agent.terminate(10)[0] == 0


# -- a full disk


@pytest.fixture
def small_disk(tmpfs: Callable[[str], Path]) -> Path:
    return tmpfs("2m")  # a disk that fills


def write_incompressible(path: Path, start: int, count: int) -> None:
    """Numbered lines with 64 random hex digits each: about 2.5x what zlib makes of them."""
    with path.open("a") as f:
        f.writelines(
            f"{LINE.format(n=n)} {os.urandom(32).hex()}\n" for n in range(start, start + count)
        )


def test_full_disk_blocks_file_input_and_loses_nothing(
    start_agent: StartAgent,
    receiver: RecordingReceiver,
    tmp_path: Path,
    logs: Path,
    small_disk: Path,
) -> None:
    buffer = "max_memory_bytes: 65536, max_disk_bytes: 104857600"  # far more than the disk
    config = write_config(tmp_path, file_source(logs), http_sink(receiver, buffer=buffer))
    receiver.down()
    agent, admin = start(start_agent, config, small_disk)
    total = 60_000  # about 10 MB: the 2 MiB disk fills
    write_incompressible(logs / "app.log", 0, total)

    def blocked() -> bool:
        return any(
            name == "log_agent_sink_blocked" and "No space left" in dict(labels)["reason"]
            for name, labels in metric_samples(admin)
        )

    wait_for("the sink blocked on the full disk", blocked, timeout=30)
    # The file is the buffer: reading stopped, nothing was dropped.
    read = metric(admin, "log_agent_events_in_total", source="file")
    assert read < total
    assert (
        metric(admin, "log_agent_events_dropped_total", component="http", reason="disk_error") == 0
    )
    lines_before = len(agent.records())
    time.sleep(5)  # the disk stays full for 5 s: what does the agent write meanwhile?
    spam = len(agent.records()) - lines_before
    assert spam <= 1, [r.get("msg") for r in agent.records()[lines_before:]]
    assert metric(admin, "log_agent_events_in_total", source="file") == read  # still waiting

    receiver.up()
    wait_for("every line delivered", lambda: all_arrived(receiver, total), timeout=90)
    assert lost_and_twice(receiver, total) == ([], 0)
    assert not blocked()
    assert any(r.get("msg") == "sink input flows again" for r in agent.records())
    assert agent.terminate(10)[0] == 0


def test_full_disk_drops_only_input_that_cannot_be_read_again_and_counts_it(
    start_agent: StartAgent,
    receiver: RecordingReceiver,
    tmp_path: Path,
    small_disk: Path,
) -> None:
    """TCP input has no file to wait in: what the full disk cannot take is dropped, counted."""
    tcp = "\n  - type: tcp\n    listen: 127.0.0.1:0"
    buffer = "max_memory_bytes: 65536, max_disk_bytes: 104857600"
    config = write_config(tmp_path, tcp, http_sink(receiver, buffer=buffer))
    receiver.down()
    agent = start_agent("--config", str(config), LOG_AGENT_DATA_DIR=str(small_disk))
    listening = ready_listeners(agent)
    admin = listening["admin"]
    total = 60_000
    with socket.create_connection(hostport(listening["tcp"]), timeout=10) as sock:
        for start_n in range(0, total, 1_000):
            sock.sendall(
                "".join(
                    f"{LINE.format(n=n)} {os.urandom(32).hex()}\n"
                    for n in range(start_n, start_n + 1_000)
                ).encode()
            )
    wait_for(
        "every line taken",
        lambda: metric(admin, "log_agent_events_in_total", source="tcp") == total,
        timeout=30,
    )
    dropped = metric(admin, "log_agent_events_dropped_total", component="http", reason="disk_error")
    assert dropped > 0
    assert any("No space left" in str(r.get("reason")) for r in agent.records())
    receiver.up()
    wait_for(
        "the buffer delivered",
        lambda: metric(admin, "log_agent_buffer_events", sink="http") == 0,
        timeout=60,
    )
    delivered = numbers(receiver.messages())
    assert len(delivered) + dropped == total  # every line delivered or counted
    assert agent.terminate(10)[0] == 0


# -- drop_oldest's bound


def disk_size(directory: Path) -> int:
    """The segments' sizes added up, newest first. The agent appends only to the newest and
    deletes whole older ones, so what this adds was all on disk at once, when the newest was
    read. Read in the directory's own order, a segment deleted meanwhile could be added to
    what was written after it: more than was ever there (CI saw 15 KB over)."""
    try:
        names = sorted(os.listdir(directory), reverse=True)
    except FileNotFoundError:
        return 0
    size = 0
    for name in names:
        with contextlib.suppress(FileNotFoundError):  # deleted since: it counts for nothing
            size += (directory / name).stat().st_size
    return size


def test_drop_oldest_keeps_the_disk_buffer_within_max_disk_bytes(
    start_agent: StartAgent, receiver: RecordingReceiver, tmp_path: Path, logs: Path
) -> None:
    limit = 4 * 1024 * 1024  # segments of 128 KiB
    buffer = f"max_memory_bytes: 65536, max_disk_bytes: {limit}, when_full: drop_oldest"
    config = write_config(tmp_path, file_source(logs), http_sink(receiver, buffer=buffer))
    receiver.down()
    data = tmp_path / "data"
    agent, admin = start(start_agent, config, data)
    peak = 0
    done = threading.Event()

    def watch() -> None:  # the files on disk, as `du` would see them
        nonlocal peak
        while not done.is_set():
            peak = max(peak, disk_size(data / "buffers" / "http"))
            time.sleep(0.005)  # sampling pace

    watcher = threading.Thread(target=watch)
    watcher.start()
    total = 120_000  # about 20 MB raw, 7 MB stored: more than the buffer holds
    try:
        write_incompressible(logs / "app.log", 0, total)
        wait_for(
            "the file read",
            lambda: metric(admin, "log_agent_events_in_total", source="file") == total,
            timeout=60,
        )
    finally:
        done.set()
        watcher.join()
    dropped = metric(
        admin, "log_agent_events_dropped_total", component="http", reason="buffer_full"
    )
    assert dropped > total / 4
    # Never over, and dropped a segment (max_disk_bytes / 32) at a time.
    assert limit * (1 - 2 / 32) < peak <= limit, peak
    receiver.up()
    wait_for(
        "the buffer delivered",
        lambda: metric(admin, "log_agent_buffer_events", sink="http") == 0,
        timeout=30,
    )
    assert len(numbers(receiver.messages())) + dropped == total
    assert agent.terminate(10)[0] == 0


# -- what used to vanish without a count


def test_empty_lines_and_invalid_utf8_are_counted_or_kept(
    start_agent: StartAgent, receiver: RecordingReceiver, tmp_path: Path, logs: Path
) -> None:
    content = b"one\n\n\nbad \xff\xfe byte\n\ntwo\n"
    (logs / "app.log").write_bytes(content)
    config = write_config(tmp_path, file_source(logs), http_sink(receiver))
    agent, admin = start(start_agent, config, tmp_path / "data")
    wait_for("lines delivered", lambda: len(receiver.events) == 3, timeout=20)
    assert receiver.messages() == ["one", "bad \ufffd\ufffd byte", "two"]
    assert metric(admin, "log_agent_empty_lines_total", source="file") == 3
    assert metric(admin, "log_agent_invalid_utf8_lines_total", source="file") == 1
    assert agent.terminate(10)[0] == 0

    (logs / "other.log").write_bytes(content)
    keep = file_source(logs, name="keeper", extra="\n    empty_lines: keep")
    config = write_config(tmp_path, keep, http_sink(receiver))
    agent, admin = start(start_agent, config, tmp_path / "data-keep")
    wait_for("lines delivered", lambda: len(receiver.events) == 3 + 2 * 6, timeout=20)
    assert receiver.messages()[3:].count("") == 2 * 3
    assert metric(admin, "log_agent_empty_lines_total", source="keeper") == 0
    assert agent.terminate(10)[0] == 0


def test_replays_after_a_crash_are_counted_apart_from_first_deliveries(
    start_agent: StartAgent, receiver: RecordingReceiver, tmp_path: Path, logs: Path
) -> None:
    total = 30_000
    write_lines(logs / "app.log", 0, total)
    receiver.delay = 0.5  # a request is surely in flight at the kill, and the receiver keeps it
    config = write_config(tmp_path, file_source(logs), http_sink(receiver))
    data = tmp_path / "data"
    agent, _ = start(start_agent, config, data)
    wait_for("a first request delivered", lambda: len(receiver.requests) >= 1, timeout=20)
    agent.proc.send_signal(signal.SIGKILL)
    agent.proc.wait(10)
    wait_for("the receiver done with what it read", lambda: receiver.active == 0, timeout=5)
    before = len(receiver.events)

    receiver.delay = 0
    agent, admin = start(start_agent, config, data)
    wait_for("every line delivered", lambda: all_arrived(receiver, total), timeout=30)
    lost, twice = lost_and_twice(receiver, total)
    assert lost == [] and twice > 0
    first, replay = events_out(admin)
    assert first + replay == len(receiver.events) - before  # what this run sent, all counted
    assert replay >= twice  # every duplicate was counted as a replay
    assert agent.terminate(10)[0] == 0


def test_delivery_resumes_within_5s_of_the_receivers_return(
    start_agent: StartAgent, receiver: RecordingReceiver, tmp_path: Path, logs: Path
) -> None:
    """The default retry policy: backoff capped at 5 s (jitter inside it)."""
    config = write_config(tmp_path, file_source(logs), http_sink(receiver, retry=" "))
    agent, admin = start(start_agent, config, tmp_path / "data")
    write_lines(logs / "app.log", 0, 100)
    wait_for("first lines delivered", lambda: all_arrived(receiver, 100), timeout=20)
    receiver.down()
    write_lines(logs / "app.log", 100, 100)
    wait_for(
        "retries backed off to the cap",
        lambda: metric(admin, "log_agent_retries_total", sink="http") >= 5,
        timeout=30,
    )
    receiver.up()
    back = time.monotonic()
    wait_for("delivery resumed", lambda: all_arrived(receiver, 200), timeout=30)
    assert time.monotonic() - back <= 5.5
    assert agent.terminate(10)[0] == 0


# -- rotation


def test_a_late_writer_to_a_rotated_file_is_read_for_rotate_wait(
    start_agent: StartAgent, receiver: RecordingReceiver, tmp_path: Path, logs: Path
) -> None:
    """Debian's logrotate renames app.log and creates a new one; the new one gets lines; a
    worker that has not reopened yet writes on to the old file, now app.log.1."""
    log_file = logs / "app.log"
    rotate_conf = tmp_path / "logrotate.conf"
    rotate_conf.write_text(f"{log_file} {{\n  rotate 5\n  create\n}}\n")
    config = write_config(tmp_path, file_source(logs), http_sink(receiver))
    agent, _ = start(start_agent, config, tmp_path / "data")
    late_writer = log_file.open("a")  # the worker's file descriptor
    write_lines(log_file, 0, 1_000)
    wait_for("lines delivered", lambda: all_arrived(receiver, 1_000), timeout=20)
    subprocess.run(
        ["logrotate", "-f", "-s", str(tmp_path / "logrotate.state"), str(rotate_conf)], check=True
    )
    write_lines(log_file, 1_000, 1_000)  # the successor has content: before, the end of app.log.1
    wait_for("the successor's lines delivered", lambda: all_arrived(receiver, 2_000), timeout=20)
    late_writer.writelines(LINE.format(n=n) + "\n" for n in range(2_000, 2_500))
    late_writer.close()
    wait_for("the late lines delivered", lambda: all_arrived(receiver, 2_500), timeout=20)
    assert lost_and_twice(receiver, 2_500) == ([], 0)
    assert agent.terminate(10)[0] == 0


ROTATION_SCHEMES = {
    "numbered": "",  # app.log.1, app.log.2
    "dateext": "  dateext\n  dateformat -%Y%m%d-%s\n",  # app.log-20261205-1764932345
    "compressed": "  compress\n",  # app.log.1.gz, app.log.2.gz
}


def rotation_config(tmp_path: Path, log_file: Path, scheme: str) -> Path:
    conf = tmp_path / "logrotate.conf"
    how = ROTATION_SCHEMES.get(scheme, f"  {scheme}\n")
    conf.write_text(f"{log_file} {{\n  rotate 5\n  create\n{how}}}\n")
    return conf


def logrotate(conf: Path) -> None:
    """Debian's logrotate, forced; its state file next to `conf`. dateext names have seconds:
    one rotation a second. logrotate reads time(2), the kernel's coarse clock, up to a tick
    behind time.time(): wait past the tick too."""
    if "dateext" in conf.read_text():
        second = int(time.time())
        wait_for("the next second", lambda: time.time() > second + 1.05, timeout=3)
    state = conf.with_suffix(".state")
    subprocess.run(["logrotate", "-f", "-s", str(state), str(conf)], check=True)


@pytest.mark.parametrize("scheme", sorted(ROTATION_SCHEMES))
def test_files_rotated_while_the_agent_was_killed_are_drained(
    start_agent: StartAgent,
    receiver: RecordingReceiver,
    tmp_path: Path,
    logs: Path,
    scheme: str,
) -> None:
    """Killed mid-file; while it is down, logrotate runs twice: the file it was reading is
    now the second copy, and a whole file it never saw was written and rotated to the first."""
    log_file = logs / "app.log"
    rotate_conf = rotation_config(tmp_path, log_file, scheme)
    receiver.delay = 0.3  # requests in flight at the kill, and more to send after it
    # A memory buffer that holds the whole file: its offset is committed only as lines are
    # delivered, so most of it is left to read from the file (its copy) after the kill.
    sink = http_sink(receiver, buffer="max_memory_bytes: 67108864")
    config = write_config(tmp_path, file_source(logs), sink)
    data = tmp_path / "data"
    agent, _ = start(start_agent, config, data)
    write_lines(log_file, 0, 20_000)
    wait_for("a part delivered", lambda: len(receiver.events) > 2_000, timeout=20)
    agent.proc.send_signal(signal.SIGKILL)
    agent.proc.wait(10)
    assert len(receiver.events) < 20_000, "the kill came too late to test anything"

    logrotate(rotate_conf)
    write_lines(log_file, 20_000, 30_000)  # a file the agent never sees at its name
    logrotate(rotate_conf)
    write_lines(log_file, 50_000, 1_000)
    copies = sorted(p.name for p in logs.iterdir())
    assert len(copies) == 3 and copies[0] == "app.log", copies

    receiver.delay = 0
    agent, admin = start(start_agent, config, data)
    wait_for("every line delivered", lambda: all_arrived(receiver, 51_000), timeout=60)
    lost, twice = lost_and_twice(receiver, 51_000)
    assert lost == []
    assert twice <= events_out(admin)[1]  # only what the killed run had handed on, as replays
    draining = {
        os.path.basename(str(r["path"]))
        for r in agent.records()
        if str(r.get("msg")).startswith("draining")
    }
    assert draining == set(copies[1:])  # both copies: one from its checkpoint, one whole
    assert agent.terminate(10)[0] == 0

    # The next start reads nothing again.
    agent, admin = start(start_agent, config, data)
    write_lines(log_file, 51_000, 1)
    wait_for("the new line delivered", lambda: all_arrived(receiver, 51_001), timeout=20)
    assert metric(admin, "log_agent_events_in_total", source="file") == 1
    assert agent.terminate(10)[0] == 0


@pytest.mark.parametrize("scheme", sorted([*ROTATION_SCHEMES, "copytruncate"]))
def test_rotations_while_the_agent_is_starved_of_cpu_lose_nothing(
    start_agent: StartAgent,
    receiver: RecordingReceiver,
    tmp_path: Path,
    logs: Path,
    scheme: str,
) -> None:
    """The agent does not run while logrotate rotates three times, as on a node so busy that
    the agent falls behind (SIGSTOP stands in for the starved CPU; a CI run found it so). Two
    whole files (with copytruncate, two contents) are written and rotated away before the agent
    ever sees them at their name: they are read from their copies, once each."""
    log_file = logs / "app.log"
    rotate_conf = rotation_config(tmp_path, log_file, scheme)
    config = write_config(tmp_path, file_source(logs), http_sink(receiver))
    agent, _ = start(start_agent, config, tmp_path / "data")
    write_lines(log_file, 0, 1_000)
    wait_for("the first lines delivered", lambda: all_arrived(receiver, 1_000), timeout=20)

    agent.proc.send_signal(signal.SIGSTOP)
    try:
        for n in range(3):
            write_lines(log_file, 1_000 + n * 5_000, 5_000)
            logrotate(rotate_conf)
    finally:
        agent.proc.send_signal(signal.SIGCONT)
    write_lines(log_file, 16_000, 1_000)

    wait_for("every line delivered", lambda: all_arrived(receiver, 17_000), timeout=30)
    assert lost_and_twice(receiver, 17_000) == ([], 0)  # the copies of what it read: not again
    assert {e["file"] for e in receiver.events} == {str(log_file)}
    assert agent.terminate(10)[0] == 0


# -- HTTP sinks: request size, refusals, a slow receiver


def nginx_in_front(tmp_path: Path, receiver: RecordingReceiver) -> Nginx:
    """Debian's nginx with its default client_max_body_size (1 MiB), passing to the receiver."""
    return Nginx(tmp_path, location=f"proxy_pass http://127.0.0.1:{receiver.port};")


@pytest.mark.parametrize("max_bytes", [None, 5_000_000])
def test_a_big_backlog_fits_nginx_body_limit_and_only_an_event_too_large_is_dropped(
    start_agent: StartAgent,
    receiver: RecordingReceiver,
    tmp_path: Path,
    logs: Path,
    max_bytes: int | None,
) -> None:
    """Records of 4 MiB (read_chunk), 100,000 lines; one line of 1.5 MB, larger than nginx
    takes in a body. With max_bytes at 5 MB the requests start too large: nginx's 413 halves
    them until they fit."""
    nginx = nginx_in_front(tmp_path, receiver)
    try:
        total = 100_000
        write_lines(logs / "app.log", 0, total // 2)
        with (logs / "app.log").open("a") as f:
            f.write(LINE.format(n=total) + " " + "x" * 1_500_000 + "\n")
        write_lines(logs / "app.log", total // 2, total // 2)
        source = file_source(logs, extra="\n    max_line_bytes: 2097152", read_chunk=4194304)
        sink = http_sink(receiver).replace(str(receiver.port), str(nginx.port))
        if max_bytes:
            sink += f"\n    max_bytes: {max_bytes}"
        agent, admin = start(start_agent, write_config(tmp_path, source, sink), tmp_path / "data")
        wait_for("every line delivered", lambda: all_arrived(receiver, total), timeout=60)
        assert lost_and_twice(receiver, total) == ([], 0)
        assert total not in numbers(receiver.messages())
        wait_for(
            "the large line counted as dropped",
            lambda: metric(admin, "log_agent_events_dropped_total", component="http",
                           reason="http_413") == 1,
            timeout=10,
        )  # fmt: skip
        cut = [r for r in agent.records() if "as too large" in str(r.get("msg"))]
        assert bool(cut) == bool(max_bytes)  # the default never hits nginx's limit
        assert agent.terminate(10)[0] == 0
    finally:
        nginx.stop()


def test_a_refusing_receiver_blocks_the_sink_and_readiness_until_it_takes_the_data(
    start_agent: StartAgent, receiver: RecordingReceiver, tmp_path: Path, logs: Path
) -> None:
    receiver.fail_status = 401  # credentials expired
    config = write_config(tmp_path, file_source(logs), http_sink(receiver))
    agent, admin = start(start_agent, config, tmp_path / "data")
    write_lines(logs / "app.log", 0, 1_000)
    refused = (
        "log_agent_sink_blocked",
        (("reason", "receiver refuses: HTTP 401"), ("sink", "http")),
    )
    wait_for("the sink shown blocked", lambda: metric_samples(admin).get(refused) == 1, timeout=10)
    status, body = http("GET", f"http://{admin}/readyz")
    assert (status, body) == (503, b"not ready: sink http: receiver refuses: HTTP 401\n")
    assert metric(admin, "log_agent_events_dropped_total", component="http", reason="http_401") == 0

    receiver.fail_status = None  # fixed
    wait_for("every line delivered", lambda: all_arrived(receiver, 1_000), timeout=10)
    assert lost_and_twice(receiver, 1_000) == ([], 0)
    assert http("GET", f"http://{admin}/readyz")[0] == 200
    assert refused not in metric_samples(admin)
    assert agent.terminate(10)[0] == 0


def test_a_receiver_taking_40ms_a_request_keeps_up_with_20k_lines_a_second(
    start_agent: StartAgent, receiver: RecordingReceiver, tmp_path: Path, logs: Path
) -> None:
    receiver.delay = 0.04
    data = tmp_path / "data"
    config = write_config(tmp_path, file_source(logs), http_sink(receiver))
    agent, admin = start(start_agent, config, data)
    # 20,000 lines a second for 3 s, in small writes as an application makes them (a read of
    # 1,000 lines every 50 ms would let a sink that sends one read a request keep up by chance)
    total, step, pace = 60_000, 100, 0.005
    peak_disk = 0.0
    began = time.monotonic()
    for n in range(0, total, step):
        write_lines(logs / "app.log", n, step)
        if n % 5_000 == 0:
            peak_disk = max(peak_disk, metric(admin, "log_agent_buffer_disk_bytes", sink="http"))
        time.sleep(max(began + (n + step) / step * pace - time.monotonic(), 0))  # the app's pace
    written = time.monotonic()
    wait_for("every line delivered", lambda: all_arrived(receiver, total), timeout=30)
    behind = time.monotonic() - written
    assert lost_and_twice(receiver, total) == ([], 0)
    assert behind < 1.5, f"{behind:.1f} s behind the writer"  # it kept up
    assert peak_disk == 0  # from memory all along: the disk buffer never grew
    assert agent.terminate(10)[0] == 0


def test_a_backlog_on_disk_takes_at_most_1_5x_its_raw_lines(
    start_agent: StartAgent, receiver: RecordingReceiver, tmp_path: Path, logs: Path
) -> None:
    """Each event is the line plus pod metadata and fields as JSON; on disk it is compressed.
    Lines with 64 random hex digits each, a worst case for compression."""
    buffer = "max_memory_bytes: 65536"  # the backlog goes to disk
    config = write_config(tmp_path, file_source(logs), http_sink(receiver, buffer=buffer))
    receiver.down()
    agent, admin = start(start_agent, config, tmp_path / "data")
    total = 20_000
    write_incompressible(logs / "app.log", 0, total)
    raw = (logs / "app.log").stat().st_size
    wait_for(
        "the file read",
        lambda: metric(admin, "log_agent_events_in_total", source="file") == total,
        timeout=30,
    )
    on_disk = metric(admin, "log_agent_buffer_disk_bytes", sink="http")
    assert 0 < on_disk <= raw * 1.5, on_disk / raw
    receiver.up()
    wait_for("every line delivered", lambda: all_arrived(receiver, total), timeout=30)
    assert agent.terminate(10)[0] == 0

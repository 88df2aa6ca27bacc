"""log-agent's delivery promise, end to end: real agent processes, real files, a real HTTP
receiver. Nothing lost across kill -9, sink outages, full buffers and SIGTERM; duplicates only
for what was in flight, recognisable by the events' deterministic `_id`."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from log_agent_harness import (
    ImageProcess,
    RecordingReceiver,
    StartAgent,
    metric_samples,
    ready_listeners,
)
from numbered_lines import all_arrived, numbers, write_lines
from podkit_harness import wait_for


def agent_config(
    tmp_path: Path, logs: Path, receiver: RecordingReceiver, buffer: str = "", retry: str = ""
) -> Path:
    """The agent's config; its data_dir is tmp_path/data (given as LOG_AGENT_DATA_DIR)."""
    config = tmp_path / "agent.yaml"
    config.write_text(
        f"""
shutdown_timeout: 3
sources:
  - type: file
    paths: ["{logs}/*.log"]
    read_chunk: 65536
transforms:
  parse: raw
sinks:
  - type: http
    endpoint: {receiver.url}
    timeout: 5
    buffer: {{{buffer}}}
    retry: {{initial_backoff: 0.1, max_backoff: 0.5{retry}}}
admin:
  listen: 127.0.0.1:0
"""
    )
    return config


def start(start_agent: StartAgent, config: Path, tmp_path: Path) -> tuple[ImageProcess, str]:
    """Start the agent on tmp_path/data (the same for a restart); return it and its admin."""
    agent = start_agent("--config", str(config), LOG_AGENT_DATA_DIR=str(tmp_path / "data"))
    return agent, ready_listeners(agent)["admin"]


def dropped(admin: str, reason: str = "buffer_full") -> float:
    key = ("log_agent_events_dropped_total", (("component", "http"), ("reason", reason)))
    return metric_samples(admin).get(key, 0)


def events_in(admin: str) -> float:
    return metric_samples(admin)[("log_agent_events_in_total", (("source", "file"),))]


def test_kill_9_while_shipping_then_restart_loses_nothing(
    start_agent: StartAgent, receiver: RecordingReceiver, tmp_path: Path, logs: Path
) -> None:
    total = 60_000
    write_lines(logs / "app.log", 0, total)
    # Requests stay in flight long enough to be cut by the kill, and the whole file takes
    # several rounds of `concurrency` (4) requests: the kill comes mid-way.
    receiver.delay = 0.3
    config = agent_config(tmp_path, logs, receiver)

    first, _ = start(start_agent, config, tmp_path)
    wait_for("a part delivered", lambda: len(receiver.events) > 5_000, timeout=30)
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait(10)
    before = len(receiver.events)
    assert before < total, "the kill came too late to test anything"

    second, _ = start(start_agent, config, tmp_path)
    wait_for("every line delivered", lambda: all_arrived(receiver, total), timeout=60)

    counts = numbers(receiver.messages())
    duplicates = sum(c - 1 for c in counts.values())
    assert set(counts) == set(range(total))
    # Only what was in flight at the kill comes twice: `concurrency` (4) requests, and what
    # finished after the oldest of them (requests finish out of order): 8 requests at most.
    assert duplicates <= 8 * max(receiver.requests), (duplicates, max(receiver.requests))
    # Duplicates carry the same _id, so a receiver can drop them.
    ids = receiver.ids()
    assert len(set(ids)) == total
    assert second.terminate(10)[0] == 0


def outage(
    start_agent: StartAgent,
    receiver: RecordingReceiver,
    tmp_path: Path,
    logs: Path,
    seconds: float,
) -> None:
    config = agent_config(tmp_path, logs, receiver, buffer="max_memory_bytes: 65536")
    agent, admin = start(start_agent, config, tmp_path)
    write_lines(logs / "app.log", 0, 1_000)
    wait_for("first lines delivered", lambda: all_arrived(receiver, 1_000), timeout=20)

    receiver.down()  # connection refused for `seconds` while the app keeps logging
    written = 1_000
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        write_lines(logs / "app.log", written, 2_000)
        written += 2_000
        time.sleep(0.1)  # the app's pace, not a wait for a condition
    samples = metric_samples(admin)
    assert samples[("log_agent_retries_total", (("sink", "http"),))] > 0
    # Held on disk: more than the memory part of the buffer can take.
    assert samples[("log_agent_buffer_disk_bytes", (("sink", "http"),))] > 65536

    receiver.up()
    wait_for("every line delivered", lambda: all_arrived(receiver, written), timeout=60)
    counts = numbers(receiver.messages())
    assert set(counts) == set(range(written))
    assert sum(counts.values()) == written  # and nothing twice: no restart happened
    samples = metric_samples(admin)
    assert (
        samples[("log_agent_events_out_total", (("delivery", "first"), ("sink", "http")))]
        == written
    )
    assert dropped(admin) == 0
    assert agent.terminate(10)[0] == 0


def test_sink_outage_loses_nothing(
    start_agent: StartAgent, receiver: RecordingReceiver, tmp_path: Path, logs: Path
) -> None:
    outage(start_agent, receiver, tmp_path, logs, seconds=5)


@pytest.mark.slow
def test_30s_sink_outage_loses_nothing(
    start_agent: StartAgent, receiver: RecordingReceiver, tmp_path: Path, logs: Path
) -> None:
    outage(start_agent, receiver, tmp_path, logs, seconds=30)


def test_full_buffer_drop_oldest_counts_every_drop(
    start_agent: StartAgent, receiver: RecordingReceiver, tmp_path: Path, logs: Path
) -> None:
    config = agent_config(
        tmp_path,
        logs,
        receiver,
        buffer="max_memory_bytes: 65536, max_disk_bytes: 262144, when_full: drop_oldest",
    )
    receiver.down()
    agent, admin = start(start_agent, config, tmp_path)
    # about 10 MB of events: far more than the 320 KiB buffer holds, compressed as it is on disk
    total = 100_000
    write_lines(logs / "app.log", 0, total)

    # Input is not blocked: the whole file is read while the receiver is down.
    wait_for("the file read to its end", lambda: events_in(admin) == total, timeout=30)
    assert dropped(admin) > 0
    receiver.up()
    wait_for(
        "buffer delivered",
        lambda: metric_samples(admin)[("log_agent_buffer_events", (("sink", "http"),))] == 0,
        timeout=30,
    )
    delivered = numbers(receiver.messages())
    # Every event is either delivered or counted as dropped.
    assert len(delivered) + dropped(admin) == total
    # What was dropped is the oldest queued run: after the batch that was being sent when the
    # buffer filled (never dropped: it may be arriving), up to the newest ones, which survived.
    missing = sorted(set(range(total)) - set(delivered))
    assert missing == list(range(missing[0], missing[-1] + 1))
    assert 0 in delivered and total - 1 in delivered
    assert agent.terminate(10)[0] == 0


def test_full_buffer_blocks_input_by_default_then_catches_up(
    start_agent: StartAgent, receiver: RecordingReceiver, tmp_path: Path, logs: Path
) -> None:
    config = agent_config(
        tmp_path, logs, receiver, buffer="max_memory_bytes: 65536, max_disk_bytes: 262144"
    )
    receiver.down()
    agent, admin = start(start_agent, config, tmp_path)
    total = 20_000
    write_lines(logs / "app.log", 0, total)

    def lag() -> float:
        samples = metric_samples(admin)
        return sum(v for (name, _), v in samples.items() if name == "log_agent_file_lag_bytes")

    # The buffer fills and the source stops reading: the rest waits in the file, counted as lag.
    wait_for("input blocked with lag", lambda: lag() > 500_000, timeout=30)
    receiver.up()
    wait_for("every line delivered", lambda: all_arrived(receiver, total), timeout=60)
    wait_for("no lag left", lambda: lag() == 0, timeout=10)
    assert dropped(admin) == 0
    assert agent.terminate(10)[0] == 0


def test_sigterm_with_sink_down_keeps_everything_for_the_next_run(
    start_agent: StartAgent, receiver: RecordingReceiver, tmp_path: Path, logs: Path
) -> None:
    config = agent_config(tmp_path, logs, receiver)
    receiver.down()
    agent, admin = start(start_agent, config, tmp_path)
    total = 5_000
    write_lines(logs / "app.log", 0, total)
    wait_for("lines read", lambda: events_in(admin) == total, timeout=20)
    code, took = agent.terminate(10)
    assert code == 0
    assert took < 3 + 2  # shutdown_timeout, then out

    receiver.up()
    again, _ = start(start_agent, config, tmp_path)
    wait_for("every line delivered", lambda: all_arrived(receiver, total), timeout=30)
    counts = numbers(receiver.messages())
    assert sum(counts.values()) == total  # offsets were recorded: nothing read twice
    assert again.terminate(10)[0] == 0


def test_logrotate_under_load_loses_nothing(
    start_agent: StartAgent, receiver: RecordingReceiver, tmp_path: Path, logs: Path
) -> None:
    """Debian's logrotate renames the file and creates a new one while the app writes."""
    log_file = logs / "app.log"
    rotate_conf = tmp_path / "logrotate.conf"
    rotate_conf.write_text(f"{log_file} {{\n  rotate 20\n  create\n  missingok\n}}\n")
    config = agent_config(tmp_path, logs, receiver)
    agent, _ = start(start_agent, config, tmp_path)

    written = 0
    for _ in range(5):
        write_lines(log_file, written, 3_000)
        written += 3_000
        subprocess.run(
            ["logrotate", "-f", "-s", str(tmp_path / "logrotate.state"), str(rotate_conf)],
            check=True,
        )
        write_lines(log_file.with_name("app.log.1"), written, 500)  # late writes to the old fd
        written += 500
    write_lines(log_file, written, 1_000)
    written += 1_000
    assert os.path.exists(logs / "app.log.5")
    wait_for("every line delivered", lambda: all_arrived(receiver, written), timeout=60)
    counts = numbers(receiver.messages())
    assert sum(counts.values()) == written
    assert agent.terminate(10)[0] == 0

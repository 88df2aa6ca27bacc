"""log-agent as a user meets it: a real process, real sockets, real files, its stdout."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from log_agent_harness import (
    ACCESS_LINE,
    EPHEMERAL,
    POD_ENV,
    ImageProcess,
    StartAgent,
    hostport,
    http,
    image_env,
    metric_samples,
    ready_listeners,
)
from podkit.common.config import ConfigError, load
from podkit.images.log_agent.config import ENV_PREFIX, FOREIGN_ENV, AgentConfig
from podkit_harness import wait_for


def send_tcp(addr: str, data: bytes) -> None:
    with socket.create_connection(hostport(addr), timeout=5) as sock:
        sock.sendall(data)


def test_tcp_access_line_comes_out_parsed_with_pod_metadata(start_agent: StartAgent) -> None:
    agent = start_agent(**EPHEMERAL)
    tcp = ready_listeners(agent)["tcp"]
    webapp_record = {"message": ACCESS_LINE, "container": "simple-webapp", "stream": "access"}
    send_tcp(tcp, f"{ACCESS_LINE}\n{json.dumps(webapp_record)}\nplain text, no newline".encode())

    plain = agent.wait_event(lambda e: e["message"] == ACCESS_LINE and "stream" not in e)
    assert plain["source"] == "tcp"
    assert plain["kubernetes"] == {
        "pod_name": "web-7f9c",
        "namespace_name": "shop",
        "pod_id": "0d5a6e4c-1111-2222-3333-444455556666",
        "labels": {"app": "shop", "tier": "web"},
        "container_name": "log-agent",  # no sender named: the agent's own container
        "host": "node-a",
    }
    assert plain["status"] == 404 and plain["bytes"] == 153
    assert (plain["method"], plain["path"], plain["protocol"]) == ("GET", "/cart?id=7", "HTTP/1.1")
    assert plain["remote_addr"] == "10.1.2.3" and plain["request_time"] == 0.0031
    assert plain["time"].endswith("Z") and "T" in plain["time"]

    sent = agent.wait_event(lambda e: e.get("stream") == "access")
    assert sent["kubernetes"]["container_name"] == "simple-webapp"
    assert sent["message"] == ACCESS_LINE and sent["status"] == 404

    # The sender closed the connection: its last line counts without a newline.
    last = agent.wait_event(lambda e: e["message"] == "plain text, no newline")
    assert "status" not in last


def test_downward_api_names_win_over_podkit_ones(start_agent: StartAgent) -> None:
    agent = start_agent(**EPHEMERAL, POD_NAME="from-downward-api", CONTAINER_NAME="shipper")
    send_tcp(ready_listeners(agent)["tcp"], b"hello\n")
    event = agent.wait_event(lambda e: e["message"] == "hello")
    assert event["kubernetes"]["pod_name"] == "from-downward-api"
    assert event["kubernetes"]["container_name"] == "shipper"
    assert event["kubernetes"]["namespace_name"] == "shop"


def test_http_post_json_array_object_and_lines(start_agent: StartAgent) -> None:
    agent = start_agent(**EPHEMERAL)
    url = f"http://{ready_listeners(agent)['http']}/"

    status, _ = http(
        "POST", url, json.dumps([{"message": "one", "n": 1}, {"message": "two"}]).encode()
    )
    assert status in (201, 204)
    status, _ = http("POST", url, json.dumps({"log": ACCESS_LINE, "container": "web"}).encode())
    assert status in (201, 204)
    status, _ = http(
        "POST", url, b'{"message": "three"}\n{"message": "four"}\n', "application/x-ndjson"
    )
    assert status in (201, 204)
    status, _ = http("POST", url, b"{not json", "application/json")
    assert status == 400

    for message in ("one", "two", "three", "four"):
        event = agent.wait_event(lambda e, m=message: e["message"] == m)
        assert event["source"] == "http"
    assert agent.wait_event(lambda e: e["message"] == "one")["n"] == 1
    access = agent.wait_event(lambda e: e["message"] == ACCESS_LINE)
    assert access["status"] == 404 and access["kubernetes"]["container_name"] == "web"


def test_metrics_count_events_and_readiness(start_agent: StartAgent) -> None:
    agent = start_agent(**EPHEMERAL)
    listening = ready_listeners(agent)
    admin = f"http://{listening['admin']}"
    assert http("GET", f"{admin}/healthz")[0] == 200
    assert http("GET", f"{admin}/readyz")[0] == 200

    send_tcp(listening["tcp"], b"a\nb\nc\n")
    http("POST", f"http://{listening['http']}/", b'[{"message": "d"}, {"message": "e"}]')
    agent.wait_for(lambda _: len(agent.events()) >= 5)

    samples = metric_samples(listening["admin"])
    assert samples[("log_agent_events_in_total", (("source", "tcp"),))] == 3
    assert samples[("log_agent_events_in_total", (("source", "http"),))] == 2
    assert samples[("log_agent_events_out_total", (("delivery", "first"), ("sink", "stdout")))] == 5
    assert samples[("log_agent_bytes_in_total", (("source", "tcp"),))] == 6
    assert samples[("log_agent_parse_failures_total", ())] == 0


def write_config(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_file_source_follows_new_files_appends_and_rename_rotation(
    start_agent: StartAgent, tmp_path: Path
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "old.log").write_text("already here\n")
    (logs / "skipped.log.gz").write_text("never read\n")
    config = write_config(
        tmp_path / "agent.yaml",
        f"""
sources:
  - type: file
    paths: ["{logs}/*.log", "{logs}/*.gz"]
    exclude: ["*.gz"]
    read_from: tail
    container_name: simple-webapp
transforms:
  parse: auto
  add_fields: {{env: test}}
sinks:
  - type: stdout
admin:
  listen: 127.0.0.1:0
""",
    )
    agent = start_agent("--config", str(config))
    ready_listeners(agent)

    access = logs / "access.log"  # appears after start: read from its first line
    with access.open("a") as f:
        f.write(ACCESS_LINE + "\n")
        f.flush()
        first = agent.wait_event(lambda e: e["message"] == ACCESS_LINE)
        assert first["file"] == str(access) and first["source"] == "file"
        assert first["status"] == 404 and first["env"] == "test"
        assert first["kubernetes"]["container_name"] == "simple-webapp"

        f.write("partial")  # held until its newline arrives
        f.flush()
        with (logs / "old.log").open("a") as old:
            old.write("appended to old\n")  # read_from: tail skips only what was there
        agent.wait_event(lambda e: e["message"] == "appended to old")
        assert not any(e["message"].startswith("partial") for e in agent.events())
        f.write(" line\nbefore rotation\n")

    # Rename rotation: the old file is read to its end, the new one from its start.
    access.rename(logs / "access.log.1")
    with (logs / "access.log.1").open("a") as f:
        f.write("written after rename\n")
    with access.open("a") as f:
        f.write("new file line 1\nnew file line 2\n")

    expected = [
        "partial line",
        "before rotation",
        "written after rename",
        "new file line 1",
        "new file line 2",
    ]
    agent.wait_for(lambda _: {e["message"] for e in agent.events()} >= set(expected))
    assert agent.terminate()[0] == 0

    messages = [e["message"] for e in agent.events()]
    for message in [ACCESS_LINE, "appended to old", *expected]:
        assert messages.count(message) == 1, (message, messages)
    assert "already here" not in messages  # read_from: tail
    assert "never read" not in messages  # excluded


def test_bad_config_exits_2_naming_file_and_field(start_agent: StartAgent, tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "bad.yaml",
        """
sources:
  - type: tcp
    listen: 127.0.0.1:5170
  - type: file
    paths: ["/var/log/*.log"]
    read_from: middle
admin:
  listn: 127.0.0.1:2020
""",
    )
    agent = start_agent("--config", str(config))
    assert agent.proc.wait(10) == 2
    err = agent.stderr()
    assert str(config) in err
    assert "sources[1].read_from" in err and "'head' or 'tail'" in err
    assert "admin.listn" in err and "unknown field" in err

    missing = start_agent("--config", str(tmp_path / "nope.yaml"))
    assert missing.proc.wait(10) == 2
    assert "nope.yaml" in missing.stderr() and "No such file" in missing.stderr()

    bad_env = start_agent(LOG_AGENT_ADMIN__LISTEN="localhost:http")
    assert bad_env.proc.wait(10) == 2
    assert "environment LOG_AGENT_ADMIN__LISTEN" in bad_env.stderr()
    assert "admin.listen" in bad_env.stderr()


def test_sigterm_exits_0_quickly_and_flushes(start_agent: StartAgent) -> None:
    agent = start_agent(**EPHEMERAL)
    tcp = ready_listeners(agent)["tcp"]
    sock = socket.create_connection(hostport(tcp))  # an open client must not hold up exit
    sock.sendall(b"last words\n")
    agent.wait_event(lambda e: e["message"] == "last words")
    code, took = agent.terminate()
    sock.close()
    assert code == 0
    assert took < 2.0


def test_classic_pod_webapp_access_lines_reach_agent(
    start_agent: StartAgent, tmp_path: Path
) -> None:
    """The two containers of examples/pod-definition.yaml, meeting on 127.0.0.1."""
    agent = start_agent(**EPHEMERAL)
    tcp = ready_listeners(agent)["tcp"]
    webapp = ImageProcess(
        "podkit.images.webapp",
        [],
        image_env(
            **{**POD_ENV, "PODKIT_CONTAINER_NAME": "simple-webapp"},
            PORT="0",
            LOG_AGENT_ADDR=tcp,
        ),
        tmp_path,
    )
    try:
        serving = webapp.wait_for(
            lambda recs: next((r for r in recs if r.get("msg") == "serving"), None), timeout=10
        )
        port = hostport(serving["listen"][0])[1]
        assert http("GET", f"http://127.0.0.1:{port}/?from=test")[0] == 200
        event = agent.wait_event(lambda e: e.get("path") == "/?from=test")
        assert event["kubernetes"]["container_name"] == "simple-webapp"
        assert event["kubernetes"]["pod_name"] == "web-7f9c"
        assert event["status"] == 200 and event["method"] == "GET"
        assert event["stream"] == "access"
        assert webapp.terminate()[0] == 0
    finally:
        webapp.kill()


def test_env_overrides_and_error_paths() -> None:
    env = {"LOG_AGENT_SOURCES__1__LISTEN": ":6000", "LOG_AGENT_ADDR": "webapp's, ignored"}
    config = load(AgentConfig, None, env_prefix=ENV_PREFIX, environ=env, ignore_env=FOREIGN_ENV)
    assert [s.listen for s in config.sources] == ["127.0.0.1:5170", ":6000"]
    with pytest.raises(ConfigError, match=r"environment LOG_AGENT_SOURCES__0__TYPE: sources\[0\]"):
        load(AgentConfig, None, env_prefix=ENV_PREFIX, environ={"LOG_AGENT_SOURCES__0__TYPE": "x"})


def test_routing_sends_each_event_to_the_sinks_that_match(
    start_agent: StartAgent, tmp_path: Path
) -> None:
    """Every event to one file, only errors to another; JSON lines parsed on the way."""
    logs = tmp_path / "logs"
    logs.mkdir()
    everything, errors = tmp_path / "out" / "all.log", tmp_path / "out" / "errors.log"
    config = write_config(
        tmp_path / "agent.yaml",
        f"""
sources:
  - type: file
    paths: ["{logs}/*.log"]
    container_name: api
transforms:
  parse: json
  time_key: ts
  time_format: epoch_ms
sinks:
  - type: file
    name: all
    path: {everything}
  - type: file
    name: errors
    path: {errors}
    match: {{level: [error, fatal], kubernetes.container_name: api}}
admin:
  listen: 127.0.0.1:0
""",
    )
    agent = start_agent("--config", str(config))
    admin = ready_listeners(agent)["admin"]
    lines = [
        {"level": "info", "message": "started", "ts": 1764108908000},
        {"level": "error", "message": "db down", "ts": 1764108909500},
        {"level": "fatal", "message": "giving up", "ts": 1764108910000},
    ]
    (logs / "app.log").write_text("".join(json.dumps(line) + "\n" for line in lines))

    def read(path: Path) -> list[dict[str, object]]:
        return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []

    wait_for("all three shipped", lambda: len(read(everything)) == 3 and len(read(errors)) == 2)
    assert [e["message"] for e in read(errors)] == ["db down", "giving up"]
    shipped = read(everything)
    assert [e["message"] for e in shipped] == ["started", "db down", "giving up"]
    assert shipped[1]["time"] == "2025-11-25T22:15:09.500000Z"  # from ts, in UTC
    assert shipped[1]["kubernetes"]["container_name"] == "api"
    assert len({e["_id"] for e in shipped}) == 3
    samples = metric_samples(admin)
    assert samples[("log_agent_events_out_total", (("delivery", "first"), ("sink", "all")))] == 3
    assert samples[("log_agent_events_out_total", (("delivery", "first"), ("sink", "errors")))] == 2
    assert agent.terminate()[0] == 0


def test_bad_pipeline_config_names_every_field(start_agent: StartAgent, tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "bad.yaml",
        """
sources:
  - type: file
    paths: ["logs/*.log"]
    multiline: {start_pattern: "(unclosed"}
transforms:
  parse: regex
  timezone: Mars/Olympus
sinks:
  - type: loki
    labels: {"0bad": x}
  - type: elasticsearch
    buffer: {when_full: drop_newest}
  - type: syslog
    address: nowhere
""",
    )
    agent = start_agent("--config", str(config))
    assert agent.proc.wait(10) == 2
    err = agent.stderr()
    for field in (
        "sources[0].paths",
        "sources[0].multiline.start_pattern",
        "transforms",
        "sinks[0]",
        "sinks[1].buffer.when_full",
        "sinks[2].address",
    ):
        assert field in err, (field, err)
    assert "Mars/Olympus" in err and "absolute" in err
    assert not (tmp_path / "agent-data-0").exists()  # nothing half-started

"""log-agent as a user meets it: a real process, real sockets, real files, its stdout."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from podkit.common.config import ConfigError, load
from podkit.common.podinfo import PodInfo
from podkit.images.log_agent.config import ENV_PREFIX, FOREIGN_ENV, AgentConfig
from podkit.images.log_agent.event import RawRecord
from podkit.images.log_agent.file_tracker import diff_scan, is_excluded
from podkit.images.log_agent.lines import LineSplitter
from podkit.images.log_agent.transforms import Transformer

ACCESS_LINE = '10.1.2.3 - - [25/Nov/2026:22:15:08 +0000] "GET /cart?id=7 HTTP/1.1" 404 153 0.0031'
# Variables that would leak this machine's identity into the images under test.
_SCRUB_PREFIXES = ("PODKIT_", "LOG_AGENT_", "SIMPLE_WEBAPP_")
_SCRUB = {"POD_NAME", "POD_NAMESPACE", "POD_UID", "POD_LABELS", "NODE_NAME", "CONTAINER_NAME"}
_SCRUB |= {"PORT", "HOST", "ACCESS_LOG_DIR"}

POD_ENV = {
    "PODKIT_POD_NAME": "web-7f9c",
    "PODKIT_POD_NAMESPACE": "shop",
    "PODKIT_POD_UID": "0d5a6e4c-1111-2222-3333-444455556666",
    "PODKIT_NODE_NAME": "node-a",
    "PODKIT_CONTAINER_NAME": "log-agent",
    "PODKIT_POD_LABELS": '{"app": "shop", "tier": "web"}',
    "HOSTNAME": "web-7f9c",
}


def image_env(**extra: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if k not in _SCRUB and not k.startswith(_SCRUB_PREFIXES)
    }
    env.update(extra)
    return env


class ImageProcess:
    """An image under test: stdout lines collected as they come, waitable with a deadline."""

    def __init__(self, module: str, args: list[str], env: dict[str, str], tmp: Path) -> None:
        self.stderr_path = tmp / f"{module.rsplit('.', 1)[-1]}-{time.monotonic_ns()}.stderr"
        with self.stderr_path.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", module, *args], env=env, stdout=subprocess.PIPE, stderr=err
            )
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._eof = False
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            with self._cond:
                self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def records(self) -> list[dict[str, Any]]:
        out = []
        with self._cond:
            lines = list(self.lines)
        for line in lines:
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                out.append(value)
        return out

    def events(self) -> list[dict[str, Any]]:
        """What the stdout sink printed (the agent's own logs carry `logger` instead)."""
        return [r for r in self.records() if "kubernetes" in r and "logger" not in r]

    def wait_for(
        self, predicate: Callable[[list[dict[str, Any]]], Any], timeout: float = 5.0
    ) -> Any:
        """Wait until predicate(all JSON records so far) is truthy; return its value."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                self._cond.release()
                try:
                    result = predicate(self.records())
                finally:
                    self._cond.acquire()
                if result:
                    return result
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self._eof and self.proc.poll() is not None):
                    break
                self._cond.wait(remaining)
        raise AssertionError(
            f"timed out; exit={self.proc.poll()}\nstdout:\n"
            + "\n".join(self.lines[-40:])
            + f"\nstderr:\n{self.stderr()}"
        )

    def wait_event(self, match: Callable[[dict[str, Any]], bool], timeout: float = 5.0) -> Any:
        return self.wait_for(lambda _: next((e for e in self.events() if match(e)), None), timeout)

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def terminate(self, timeout: float = 2.0) -> tuple[int, float]:
        start = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        return code, time.monotonic() - start

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def ready_listeners(agent: ImageProcess) -> dict[str, str]:
    ready = agent.wait_for(
        lambda recs: next((r for r in recs if r.get("msg") == "ready"), None), timeout=10
    )
    return ready["listening"]


def hostport(addr: str) -> tuple[str, int]:
    host, port = addr.rsplit(":", 1)
    return host, int(port)


def http(
    method: str, url: str, body: bytes | None = None, ctype: str = "application/json"
) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers={"Content-Type": ctype})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


EPHEMERAL = {
    "LOG_AGENT_SOURCES__0__LISTEN": "127.0.0.1:0",
    "LOG_AGENT_SOURCES__1__LISTEN": "127.0.0.1:0",
    "LOG_AGENT_ADMIN__LISTEN": "127.0.0.1:0",
}


@pytest.fixture
def start_agent(tmp_path: Path) -> Iterator[StartAgent]:
    started: list[ImageProcess] = []

    def start(*args: str, **env: str) -> ImageProcess:
        proc = ImageProcess(
            "podkit.images.log_agent", list(args), image_env(**POD_ENV, **env), tmp_path
        )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.kill()


StartAgent = Callable[..., ImageProcess]


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

    status, body = http("GET", f"{admin}/metrics")
    assert status == 200
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }
    assert samples[("log_agent_events_in_total", (("source", "tcp"),))] == 3
    assert samples[("log_agent_events_in_total", (("source", "http"),))] == 2
    assert samples[("log_agent_events_out_total", (("sink", "stdout"),))] == 5
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


# Pure logic, no processes: the rules the sources and transforms rely on.


def test_line_splitter_holds_partial_lines_and_cuts_runaways() -> None:
    splitter = LineSplitter(max_line_bytes=8)
    assert splitter.feed(b"one\r\ntw") == [b"one"]
    assert splitter.pending == 2
    assert splitter.feed(b"o\n\nthree") == [b"two"]
    assert splitter.feed(b"-and-more-and-more") == [b"three-an", b"d-more-a"]
    assert splitter.cut_lines == 2
    assert splitter.flush() == b"nd-more"
    assert splitter.flush() is None


def test_scan_diff_tells_rotation_from_new_files() -> None:
    tracked = {(1, 10): "/l/access.log", (1, 11): "/l/err.log"}
    # access.log was renamed away and recreated (new inode); err.log was renamed within the glob.
    found = {(1, 12): "/l/access.log", (1, 11): "/l/err-1.log"}
    diff = diff_scan(tracked, [], found)
    assert diff.new == [((1, 12), "/l/access.log")]
    assert diff.moved == [((1, 11), "/l/err-1.log")]
    assert diff.gone == [(1, 10)]
    assert is_excluded("/l/a.log.gz", ["*.gz"]) and not is_excluded("/l/a.log", ["*.gz"])


def test_transformer_container_and_parse_rules() -> None:
    pod = PodInfo(pod_name="p", container_name="log-agent", labels={"a": "b"})
    t = Transformer(parse="auto", add_fields={"env": "dev"}, pod=pod)
    sent = t.apply(RawRecord(json.dumps({"message": ACCESS_LINE, "container": "web"}), "tcp", 0.0))
    assert sent["kubernetes"]["container_name"] == "web" and sent["status"] == 404
    assert sent["env"] == "dev" and sent["time"] == "1970-01-01T00:00:00.000Z"
    from_file = t.apply(RawRecord("x", "file", 0.0, file="/l/a.log", container=None))
    assert from_file["kubernetes"]["container_name"] is None and from_file["file"] == "/l/a.log"
    strict = Transformer(parse="common_log", add_fields={}, pod=pod)
    strict.apply(RawRecord("not an access line", "tcp", 0.0))
    assert strict.parse_failures == 1


def test_env_overrides_and_error_paths() -> None:
    env = {"LOG_AGENT_SOURCES__1__LISTEN": ":6000", "LOG_AGENT_ADDR": "webapp's, ignored"}
    config = load(AgentConfig, None, env_prefix=ENV_PREFIX, environ=env, ignore_env=FOREIGN_ENV)
    assert [s.listen for s in config.sources] == ["127.0.0.1:5170", ":6000"]
    with pytest.raises(ConfigError, match=r"environment LOG_AGENT_SOURCES__0__TYPE: sources\[0\]"):
        load(AgentConfig, None, env_prefix=ENV_PREFIX, environ={"LOG_AGENT_SOURCES__0__TYPE": "x"})

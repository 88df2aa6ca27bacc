"""Operating the ambassador: reloads under load and several worker processes."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import yaml

from podkit_harness import wait_for
from proxy_harness import Ambassador, EchoServer, free_port, simple_config


@pytest.fixture
def ambassador(tmp_path: Path):
    """Starts ambassadors; whatever a failing test leaves running is killed at teardown."""
    started: list[Ambassador] = []

    def start(config: dict) -> Ambassador:
        amb = Ambassador(tmp_path, config)
        started.append(amb)
        return amb

    yield start
    for amb in started:
        if amb.process.proc.poll() is None:
            amb.process.kill()


@pytest.fixture
def backend():
    server = EchoServer("one")
    yield server
    server.stop()


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _wrk(url: str, seconds: int, connections: int = 20) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", url],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wrk_result(proc: subprocess.Popen[str]) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=60)
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    return requests, out


def test_reload_under_load_drops_no_request(backend: EchoServer, ambassador) -> None:
    port = free_port()
    config = simple_config(port, [backend.address])
    config["access_log"] = {"enabled": False}
    amb = ambassador(config)
    base = f"http://127.0.0.1:{port}"
    assert _get(base + "/teapot")[0] == 200  # no such route yet: the backend answers
    load = _wrk(base + "/", 4)
    wait_for(
        "the load running", lambda: amb.stats()["listeners"]["main"]["requests"].get("200", 0) > 500
    )
    amb.process.proc.send_signal(signal.SIGHUP)
    wait_for(
        "the SIGHUP reload",
        lambda: sum(r.get("msg") == "config reloaded" for r in amb.process.records()) >= 1,
    )
    # A changed file reloads too, with what it changed: a new route answers at once.
    config["listeners"][0]["routes"].insert(
        0, {"match": {"path": "/teapot"}, "direct_response": {"status": 418, "body": "tea\n"}}
    )
    amb.config_path.write_text(
        yaml.safe_dump({"admin": {"listen": f"127.0.0.1:{amb.admin_port}"}, **config})
    )
    wait_for(
        "the file reload",
        lambda: sum(r.get("msg") == "config reloaded" for r in amb.process.records()) >= 2,
    )
    assert _get(base + "/teapot") == (418, "tea\n")
    requests, out = _wrk_result(load)
    assert requests > 1000, out
    assert "Socket errors" not in out, out
    assert "Non-2xx" not in out, out
    # The counters went on across both reloads: every request wrk completed is counted, plus
    # this test's first GET, plus at most one a connection that wrk stopped waiting for.
    counted = wait_for(
        "the old proxies done",
        lambda: (n := amb.stats()["listeners"]["main"]["requests"].get("200", 0)) >= requests and n,
    )
    assert requests + 1 <= counted <= requests + 1 + 20
    assert amb.stop()[0] == 0


def test_a_bad_new_config_keeps_the_running_one(backend: EchoServer, ambassador) -> None:
    port = free_port()
    amb = ambassador(simple_config(port, [backend.address]))
    amb.config_path.write_text("listeners: [{name: x, listen: nowhere}]\n")
    amb.process.proc.send_signal(signal.SIGHUP)
    failed = wait_for(
        "the failed reload",
        lambda: next(
            (
                r
                for r in amb.process.records()
                if r.get("msg", "").startswith("config reload failed")
            ),
            None,
        ),
    )
    assert "listeners[0].listen" in failed["error"]
    status, body = _get(f"http://127.0.0.1:{port}/still")
    assert status == 200 and json.loads(body)["path"] == "/still"
    assert amb.stop()[0] == 0


def test_a_reload_asked_for_while_starting_is_done_once_serving(
    backend: EchoServer, tmp_path: Path
) -> None:
    port = free_port()
    # SIGHUP held back in the child from its first instruction: it arrives while the
    # ambassador is still importing, the moment at which its default action would end it.
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
    try:
        amb = Ambassador(tmp_path, simple_config(port, [backend.address]), wait_ready=False)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)
    try:
        amb.process.proc.send_signal(signal.SIGHUP)
        wait_for(
            "the reload",
            lambda: any(r.get("msg") == "config reloaded" for r in amb.process.records()),
        )
        status, body = _get(f"http://127.0.0.1:{port}/after")
        assert status == 200 and json.loads(body)["path"] == "/after"
        assert amb.stop()[0] == 0
    finally:
        if amb.process.proc.poll() is None:
            amb.process.kill()


def test_two_workers_share_the_port_and_the_admin_counts_both(
    backend: EchoServer, ambassador
) -> None:
    port = free_port()
    config = simple_config(port, [backend.address])
    config["workers"] = 2
    config["access_log"] = {"enabled": False}
    amb = ambassador(config)
    wait_for("both workers ready", lambda: _get(amb.admin + "/ready")[0] == 200)
    children = subprocess.run(
        ["pgrep", "-P", str(amb.process.proc.pid)], capture_output=True, text=True
    ).stdout.split()
    assert len(children) == 1
    # Many short connections: the kernel spreads them over both processes.
    sent = 0
    for _ in range(200):
        assert _get(f"http://127.0.0.1:{port}/x")[0] == 200
        sent += 1

    def counted() -> bool:
        stats = amb.stats()
        return stats["listeners"]["main"]["requests"].get("200") == sent

    wait_for("the merged count", counted, timeout=5)
    # ...and worker 1 did take part of them (its own stats file, as worker 0 reads it).
    cmdline = Path(f"/proc/{children[0]}/cmdline").read_bytes().split(b"\0")
    stats_dir = Path(cmdline[cmdline.index(b"--stats-dir") + 1].decode())
    mine = json.loads((stats_dir / "worker-1.json").read_text())["stats"]
    assert 0 < mine["listeners"]["main"]["requests"].get("200", 0) < sent
    worker_lines = [r for r in amb.process.records() if r.get("worker") == 1]
    assert worker_lines, "worker 1 logged nothing"
    code, took = amb.stop()
    assert code == 0 and took < 5
    wait_for(
        "worker 1 gone",
        lambda: subprocess.run(["kill", "-0", children[0]], capture_output=True).returncode != 0,
    )


def test_dns_endpoints_are_resolved_again(tmp_path: Path) -> None:
    """An endpoint given by name follows its DNS answer. The ambassador runs in a mount namespace
    of its own where /etc/hosts is a file the test rewrites: real name resolution (glibc reads
    /etc/hosts on every lookup), no change to the machine's own file."""
    port = free_port()
    first, second = EchoServer("first", host="127.0.0.2"), EchoServer("second", host="127.0.0.3")
    backend_port = first.port
    second.stop()
    second = EchoServer("second", port=backend_port, host="127.0.0.3")
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n127.0.0.2 backend.podkit.test\n")
    config = simple_config(port, [f"backend.podkit.test:{backend_port}"])
    config["clusters"][0]["dns_refresh"] = "200ms"
    admin_port = free_port()
    config["admin"] = {"listen": f"127.0.0.1:{admin_port}"}
    path = tmp_path / "amb.yaml"
    path.write_text(yaml.safe_dump(config))
    script = (
        f"mount --bind {hosts} /etc/hosts && exec {sys.executable} -m podkit.images.ambassador"
        f" --config {path}"
    )
    proc = subprocess.Popen(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for("ready", lambda: _ready(admin_port), 10)

        def server() -> str:
            status, body = _get(f"http://127.0.0.1:{port}/")
            return json.loads(body)["server"] if status == 200 else ""

        assert server() == "first"
        with hosts.open("r+") as f:  # in place: the bind mount shows this very inode
            f.write("127.0.0.1 localhost\n127.0.0.3 backend.podkit.test\n")
            f.truncate()
        wait_for("the new address in use", lambda: server() == "second", 5)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        first.stop()
        second.stop()


def _ready(admin_port: int) -> bool:
    try:
        return _get(f"http://127.0.0.1:{admin_port}/ready")[0] == 200
    except OSError:
        return False

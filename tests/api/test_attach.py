"""`kubectl attach -i/-t` and `kubectl run -it` through podkit serve: a container with
`stdin: true` reads what the client types, one with `tty: true` is a terminal (its size the
client's), and `stdinOnce` closes its stdin when the first session ends, as the kubelet and
containerd do it. Containers run host programs (tests/host-images.yaml)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from serve_harness import KUBECTL, Served, Terminal, serving

from podkit_harness import PODKIT_ENV, wait_for


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serving(tmp_path_factory.mktemp("attach"), env=PODKIT_ENV) as s:
        yield s


def test_kubectl_run_it_gives_a_terminal_and_rm_removes_the_pod(served: Served) -> None:
    term = Terminal(
        served, "run", "-it", "--rm", "--restart=Never", "shell", "--image=busybox",
        "--command", "--", "sh",
    )  # fmt: skip
    try:
        term.read_until(b"If you don't see a command prompt")
        term.type("echo hello-$((6*7)); tty; stty size\r")
        shown = term.read_until(b"hello-42\r\n/dev/console\r\n40 100\r\n")
        assert b"echo hello-$((6*7))" in shown  # the terminal echoes what is typed
        term.type("exit 3\r")
        term.read_until(b'pod "shell" deleted')
        assert term.exit_code() == 3  # kubectl run exits with the container's code
    finally:
        term.kill()
    assert served.kubectl("get", "pod", "shell").returncode == 1


READER = """apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  terminationGracePeriodSeconds: 1
  restartPolicy: Never
  containers:
  - name: reader
    image: busybox
    stdin: true
    stdinOnce: {once}
    command: ["sh", "-c", "while read line; do echo \\"got $line\\"; done; echo stdin-closed"]
"""


def attach_i(served: Served, name: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [str(KUBECTL), "attach", "-i", name], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, env=served.env,
    )  # fmt: skip


def say(attached: subprocess.Popen[bytes], line: str) -> bytes:
    """A line into the attached stdin; the container's answer."""
    assert attached.stdin is not None and attached.stdout is not None
    attached.stdin.write(line.encode() + b"\n")
    attached.stdin.flush()
    return attached.stdout.readline()


@pytest.mark.parametrize("once", [False, True])
def test_attach_i_feeds_a_containers_stdin(served: Served, once: bool) -> None:
    name = f"reader-{str(once).lower()}"
    applied = served.kubectl("apply", "-f", "-", stdin=READER.format(name=name, once=once))
    assert applied.returncode == 0, applied.stderr
    ready = served.kubectl("wait", "--for=condition=Ready", f"pod/{name}", "--timeout=30s")
    assert ready.returncode == 0, ready.stderr
    first = attach_i(served, name)
    try:
        assert say(first, "one") == b"got one\n"
        assert first.stdin is not None and first.stdout is not None
        first.stdin.close()  # the client's stdin ends: with stdinOnce, the container's too
        if once:
            assert first.stdout.readline() == b"stdin-closed\n"
            assert first.wait(15) == 0  # the session ends with the container

            def phase() -> str:
                got = served.kubectl("get", "pod", name, "-o", "jsonpath={.status.phase}")
                return got.stdout

            wait_for("the reader done", lambda: phase() == "Succeeded", 15)
        else:
            first.kill()  # the session is over; the container reads on, for the next one
            second = attach_i(served, name)
            try:
                assert say(second, "two") == b"got two\n"
            finally:
                second.kill()
                second.wait()
    finally:
        first.kill()
        first.wait()
    assert "got one" in served.kubectl("logs", name).stdout


def test_attach_i_to_a_container_without_stdin_is_refused(served: Served, tmp_path: Path) -> None:
    plain = (
        READER.format(name="plain", once=False)
        .replace("    stdin: true\n", "")
        .replace("while read line", "trap 'exit 0' TERM; while sleep 0.2")
    )
    assert served.kubectl("apply", "-f", "-", stdin=plain).returncode == 0
    served.kubectl("wait", "--for=condition=Ready", "pod/plain", "--timeout=30s")
    refused = served.kubectl("attach", "-i", "plain", stdin="x\n")
    assert refused.returncode == 1
    assert "stdin is not enabled for container reader" in refused.stderr


def test_a_file_piped_to_attach_reaches_the_container_whole(served: Served) -> None:
    counter = (
        READER.format(name="counter", once=True)
        .replace('while read line; do echo \\"got $line\\"; done; echo stdin-closed', "wc -c")
    )  # fmt: skip
    assert "wc -c" in counter
    assert served.kubectl("apply", "-f", "-", stdin=counter).returncode == 0
    ready = served.kubectl("wait", "--for=condition=Ready", "pod/counter", "--timeout=30s")
    assert ready.returncode == 0, ready.stderr
    data = "x" * 999 + "\n"
    got = served.kubectl("attach", "-i", "counter", stdin=data * 300)  # 300 kB: many pipefuls
    assert got.stdout.split() == ["300000"], got.stderr
